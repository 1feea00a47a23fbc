"""The relay end to end with a private Postfix as the remote exchanger (issue 13): mail
delivered into its mailboxes, its 550 for an unknown user bounced at once with its own
words, a message over its SIZE bounced before MAIL."""

from __future__ import annotations

from pathlib import Path

from postfix_peer import private_postfix
from test_cli_serve import _submit, _until, serve

ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
BIG = b"From: john@abc.example\r\nSubject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100


def test_relay_to_a_private_postfix(tmp_path: Path) -> None:
    with private_postfix("pqr.example", ["brendon"], message_size_limit=4000) as pf:
        zone = tmp_path / "zone"
        zone.write_text(ZONE)
        relay = ("--resolver", f"static:{zone}", "--remote-port", str(pf.port))
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=relay,
        ) as abc:
            _submit(abc.ports["submission"])
            _until(lambda: bool(pf.maildir_messages("brendon")), "Postfix's delivery", abc)
            _submit(abc.ports["submission"], rcpts=("nobody@pqr.example",))
            _until(lambda: len(abc.mailbox("john@abc.example")) == 1, "the 550 bounce", abc)
            _submit(abc.ports["submission"], BIG, rcpts=("brendon@pqr.example",))
            _until(lambda: len(abc.mailbox("john@abc.example")) == 2, "the size bounce", abc)
            _until(lambda: abc.queued() == 0, "the queue to empty", abc)
            assert abc.stop() == 0
        (delivered,) = pf.maildir_messages("brendon")
        assert b"Subject: through two servers" in delivered
    bounces = b"\n".join(abc.mailbox("john@abc.example"))
    assert b"Status: 5.1.1" in bounces and b"User unknown in virtual mailbox table" in bounces
    assert b"Status: 5.3.4" in bounces
    assert "dsn=2.0.0, status=sent" in abc.log() and "Traceback" not in abc.log()
