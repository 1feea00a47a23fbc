"""The relay end to end through ``python -m smtpcore serve`` against scripted remotes
(issue 13): a remote whose SIZE is smaller than the message, one that answers STARTTLS
with 454, per-recipient 550 and 452, a connection dropped in the middle of DATA."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from relay_remote import LOOPBACK, remote
from test_cli_serve import Served, _submit, _until, serve

ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
BIG = b"From: john@abc.example\r\nTo: b@pqr.example\r\nSubject: big\r\n\r\n" + b"x" * 500 + b"\r\n"


def _relay_options(tmp_path: Path, port: int, *extra: str) -> tuple[str, ...]:
    zone = tmp_path / "zone.txt"
    zone.write_text(ZONE)
    return ("--resolver", f"static:{zone}", "--remote-port", str(port), *extra)


def test_serve_bounces_a_message_over_the_remote_size_at_once(tmp_path: Path) -> None:
    with remote(size=100) as server:
        options = _relay_options(tmp_path, server.port)
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=options,
        ) as abc:
            _submit(abc.ports["submission"], BIG, ("b@pqr.example",))
            _until(lambda: bool(abc.mailbox("john@abc.example")), "the bounce", abc)
            _until(lambda: abc.queued() == 0, "the queue to empty", abc)
            _until(lambda: server.open_connections == 0, "the connection closed", abc)
            assert abc.stop() == 0
    (bounce,) = abc.mailbox("john@abc.example")
    assert b"Status: 5.3.4" in bounce
    assert server.connections == 1 and server.mail_lines == []
    log = abc.log()
    assert "status=bounced (552 5.3.4" in log and "Traceback" not in log


def test_serve_goes_on_in_plaintext_after_starttls_454_and_per_recipient_replies(
    tmp_path: Path,
) -> None:
    replies = {
        "gone@pqr.example": b"550 5.1.1 user unknown",
        "full@pqr.example": b"452 4.2.2 mailbox full",
    }
    with remote(starttls="refuse", rcpt_replies=replies) as server:
        options = _relay_options(tmp_path, server.port)
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=options,
        ) as abc:
            rcpts = ("ok@pqr.example", "gone@pqr.example", "full@pqr.example")
            _submit(abc.ports["submission"], rcpts=rcpts)
            _until(lambda: bool(abc.mailbox("john@abc.example")), "the bounce", abc)
            _until(lambda: "to=<full@pqr.example>" in abc.log(), "the 452", abc)
            assert abc.queued() == 1  # full@ waits; gone@ bounced at once
            server.rcpt_replies.pop("full@pqr.example")
            _until(lambda: abc.queued() == 0, "the retry", abc)
            assert abc.stop() == 0
    (bounce,) = abc.mailbox("john@abc.example")
    assert b"Diagnostic-Code: smtp; 550 5.1.1 user unknown" in bounce
    assert [t.recipients for t in server.transactions] == [
        ["ok@pqr.example"],
        ["full@pqr.example"],
    ]
    assert not any(t.tls for t in server.transactions)
    log = abc.log()
    assert "STARTTLS refused: 454 4.7.0" in log
    assert log.count("tls=no, tls_policy=may, dsn=2.") == 2


def test_serve_retries_a_connection_dropped_in_data(tmp_path: Path) -> None:
    with remote(drop_in_data=True) as server:
        options = _relay_options(tmp_path, server.port)
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=options,
        ) as abc:
            _submit(abc.ports["submission"])
            _until(lambda: "status=deferred" in abc.log(), "a deferral", abc)
            server.drop_in_data = False
            _until(lambda: abc.queued() == 0, "the retry", abc)
            assert abc.stop() == 0
    assert len(server.transactions) == 1 and abc.mailbox("john@abc.example") == []


def test_serve_refuses_relay_to_internal_address_literals_by_default(tmp_path: Path) -> None:
    with remote() as server:
        options = _relay_options(tmp_path, server.port)
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=options,
            allow_internal_relay=False,
        ) as abc:
            with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
                smtp.login("john@abc.example", "john-pw")
                smtp.mail("john@abc.example")
                for literal in ("[10.0.0.1]", "[IPv6:::1]"):
                    code, text = smtp.rcpt(f"x@{literal}")
                    assert (code, text[:5]) == (550, b"5.7.1"), text
                # The server's own address (--host) is local (RFC 1123 §5.2.17): no user x.
                code, text = smtp.rcpt("x@[127.0.0.1]")
                assert (code, text[:5]) == (550, b"5.1.1"), text
                # An MX on loopback: accepted, then bounced without a connection.
                assert smtp.rcpt("b@pqr.example")[0] == 250
                smtp.data(b"Subject: hi\r\n\r\nhello\r\n")
            _until(lambda: bool(abc.mailbox("john@abc.example")), "the bounce", abc)
            assert abc.stop() == 0
    assert server.connections == 0
    (bounce,) = abc.mailbox("john@abc.example")
    assert b"Status: 5.4.4" in bounce


def test_serve_accepts_a_utf8_orcpt_under_smtputf8_and_reports_per_rfc_6533(
    tmp_path: Path,
) -> None:
    with serve(
        tmp_path / "abc",
        "abc.example",
        ["john@abc.example:john-pw", "mary@abc.example:mary-pw"],
        listeners=("submission",),
    ) as abc:
        with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
            smtp.login("john@abc.example", "john-pw")
            refused = smtp.sendmail(
                "john@abc.example",
                ["mary@abc.example"],
                "Subject: grüße\r\n\r\nhallo\r\n".encode(),
                mail_options=["SMTPUTF8", "BODY=8BITMIME"],
                rcpt_options=["NOTIFY=SUCCESS", "ORCPT=utf-8;jösé@abc.example"],
            )
            assert refused == {}
        _until(lambda: bool(abc.mailbox("john@abc.example")), "the success report", abc)
        assert abc.stop() == 0
    (report,) = abc.mailbox("john@abc.example")
    text = report.decode("utf-8")
    assert "Content-Type: message/global-delivery-status" in text
    assert "Content-Type: message/global-headers" in text
    assert "Original-Recipient: utf-8; jösé@abc.example" in text
    assert "Action: delivered" in text and "\\x" not in text


def _relayed_under_smtputf8(
    tmp_path: Path, port: int, zone: str, recipient: str, message: bytes
) -> Served:
    """``message`` to ``recipient``, submitted under SMTPUTF8 to a ``serve`` whose
    relay finds the remote on ``port`` through ``zone``; the server, stopped once
    its queue is empty."""
    options = _relay_options(tmp_path, port)
    (tmp_path / "zone.txt").write_text(zone)
    with serve(
        tmp_path / "abc",
        "abc.example",
        ["john@abc.example:john-pw"],
        listeners=("submission",),
        extra=options,
    ) as abc:
        with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
            smtp.login("john@abc.example", "john-pw")
            refused = smtp.sendmail(
                "john@abc.example", [recipient], message, mail_options=["SMTPUTF8"]
            )
            assert refused == {}
        _until(lambda: abc.queued() == 0, "the queue to empty", abc)
        assert abc.stop() == 0
    return abc


def test_serve_relays_an_idn_recipient_under_smtputf8_to_a_hop_without_it(
    tmp_path: Path,
) -> None:
    """An ASCII message to ``u3@bücher.pqr.example``, submitted with SMTPUTF8, goes to
    a next hop without SMTPUTF8 with the domain in A-labels (RFC 5890 §2.3.2.1): our
    own Received line names it so too, where its U-labels made the header 8-bit and
    the message bounce ``553 5.6.7`` (RFC 6531 §3.4)."""
    zone = "xn--bcher-kva.pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
    with remote(smtputf8=False) as server:
        abc = _relayed_under_smtputf8(
            tmp_path,
            server.port,
            zone,
            "u3@bücher.pqr.example",
            b"From: john@abc.example\r\nSubject: idn\r\n\r\nascii body\r\n",
        )
    assert abc.mailbox("john@abc.example") == []
    (transaction,) = server.transactions
    assert transaction.rcpt_lines == [b"RCPT TO:<u3@xn--bcher-kva.pqr.example>\r\n"]
    assert b"\tfor <u3@xn--bcher-kva.pqr.example>; " in transaction.content
    assert transaction.content.isascii()


WIDER_IN_A_LABELS = "a" * 64 + "@" + "ü." * 30 + "example"
"""164 octets as a path in U-labels, 314 in A-labels (RFC 5321 §4.5.3.1.3: 256, a size
every receiver must take, not a limit)."""


@pytest.mark.parametrize("smtputf8", [True, False], ids=["SMTPUTF8", "no SMTPUTF8"])
def test_serve_takes_a_recipient_long_in_a_labels_and_relays_it_in_them(
    tmp_path: Path, smtputf8: bool
) -> None:
    """A single recipient whose A-label form passes 256 octets as a path: the Received
    line's ``for`` clause tried to write it so and raised (451 4.3.0 at receipt); then
    it was held to have no ASCII form and bounced ``553 5.6.7`` at a next hop without
    SMTPUTF8. 256 octets is a minimum (RFC 5321 §4.5.3.1.3): it goes in A-labels,
    which name the same domain (RFC 5890 §2.3.2.1), to either next hop."""
    local, domain = WIDER_IN_A_LABELS.split("@")
    a_form = f"{local}@{domain.encode('idna').decode('ascii')}"
    with remote(smtputf8=smtputf8) as server:
        abc = _relayed_under_smtputf8(
            tmp_path,
            server.port,
            f"{a_form.split('@')[1]} MX 10 mx.pqr.example\n{ZONE}",
            WIDER_IN_A_LABELS,
            b"From: john@abc.example\r\nSubject: long\r\n\r\nbody\r\n",
        )
    assert "Traceback" not in abc.log()
    assert abc.mailbox("john@abc.example") == []
    (transaction,) = server.transactions
    assert f"\tfor <{a_form}>; ".encode() in transaction.content
    if not smtputf8:
        assert transaction.rcpt_lines == [f"RCPT TO:<{a_form}>\r\n".encode()]
