"""Envelope addresses real senders use, through ``python -m smtpcore serve`` end to end
(the conformance audit's findings, each a permanent 501 where Postfix 3.7 and
aiosmtpd answer 250): a long SRS sender, local parts with stray dots (old Japanese
carriers' addresses), and paths without angle brackets. Taken by default, as Postfix
takes them; queued, delivered to a Maildir and fetched over POP3, or relayed to
Postfix's smtp-sink in the quoted form Postfix's own client writes."""

from __future__ import annotations

import smtplib
from pathlib import Path

from peers import LOOPBACK, RawSmtpSession, smtp_sink
from smtpcore.address import MAX_RECEIVED_PATH_OCTETS
from test_cli_serve import _pop3, _until, serve

SRS_SENDER = "SRS0=q8Zt=7K=customer-department.example=firstname.lastname.sales@fwd.example"
"""The audit's forwarded sender: a local part of 65 octets (RFC 5321 §4.5.3.1.1: 64 is
what a receiver must take, not a limit)."""
ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"


def _transaction(session: RawSmtpSession, mail: bytes, rcpt: bytes) -> list[bytes]:
    replies = [session.command(mail), session.command(rcpt), session.command(b"DATA")]
    replies.append(session.command(b"Subject: legacy\r\n\r\nhello\r\n."))
    return [reply[:3] for reply in replies]


def test_serve_takes_legacy_and_long_senders_delivers_and_pop3_serves_them(
    tmp_path: Path,
) -> None:
    """A sender with doubled dots, unbracketed with a SIZE parameter; a 65-octet SRS
    sender; both to a user whose local part ends in a dot, named unbracketed. The
    Return-Path names each sender in its RFC 5321 spelling, quoted where the
    Dot-string does not hold it, as Postfix writes it."""
    with serve(tmp_path / "abc", "abc.example", ["hanako.@abc.example:hanako-pw"]) as abc:
        session = RawSmtpSession.connect(LOOPBACK, abc.ports["smtp"])
        try:
            assert session.recv_reply()[:3] == b"220"
            assert session.command(b"EHLO client.example")[:3] == b"250"
            first = _transaction(
                session,
                b"MAIL FROM: taro..yamada@docomo.ne.jp SIZE=100",
                b"RCPT TO: hanako.@abc.example",
            )
            second = _transaction(
                session, f"MAIL FROM:<{SRS_SENDER}>".encode(), b"RCPT TO:<hanako.@abc.example>"
            )
            assert session.command(b"MAIL FROM:")[:3] == b"501"  # no null path: that is <>
            assert session.command(b"QUIT")[:3] == b"221"
        finally:
            session.close()
        assert first == second == [b"250", b"250", b"354", b"250"]
        _until(lambda: len(abc.mailbox("hanako.@abc.example")) == 2, "two deliveries", abc)
        fetched = _pop3(abc.ports["pop3"], "hanako.@abc.example", "hanako-pw")
        assert abc.stop() == 0
    assert "Traceback" not in abc.log()
    return_paths = sorted(message.split(b"\r\n", 1)[0] for message in fetched)
    assert return_paths == sorted(
        [b'Return-Path: <"taro..yamada"@docomo.ne.jp>', f"Return-Path: <{SRS_SENDER}>".encode()]
    )
    assert all(b'\tfor <"hanako."@abc.example>; ' in message for message in fetched)


def test_serve_relays_legacy_and_long_recipients_as_postfix_writes_them(tmp_path: Path) -> None:
    """Queued, then relayed to smtp-sink: a local part with stray dots goes quoted
    (Postfix's ``smtp_quote_rfc821_envelope``), a long one as it is, each with its
    ORCPT as given; a copy delivered here is reported with the quoted form."""
    (tmp_path / "zone.txt").write_text(ZONE)
    srs_recipient = SRS_SENDER.replace("fwd.example", "pqr.example")
    recipients = ["taro..yamada@pqr.example", "hanako.@pqr.example", ".c@pqr.example"]
    with smtp_sink(dump_dir=tmp_path / "sink") as sink:
        options = ("--resolver", f"static:{tmp_path / 'zone.txt'}", "--remote-port")
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw", "hanako.@abc.example:hanako-pw"],
            listeners=("submission",),
            extra=(*options, str(sink.port)),
        ) as abc:
            with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
                smtp.login("john@abc.example", "john-pw")
                refused = smtp.sendmail(
                    "john@abc.example",
                    [*recipients, srs_recipient, "hanako.@abc.example"],
                    b"Subject: legacy\r\n\r\nhello\r\n",
                    rcpt_options=["NOTIFY=SUCCESS", "ORCPT=rfc822;taro..yamada@pqr.example"],
                )
                assert refused == {}
            _until(lambda: abc.queued() == 0 and bool(sink.messages()), "the relay", abc)
            _until(lambda: bool(abc.mailbox("john@abc.example")), "the success report", abc)
            assert abc.stop() == 0
    assert "Traceback" not in abc.log()
    (message,) = sink.messages()
    (report,) = abc.mailbox("john@abc.example")  # the local delivery's: smtp-sink's DSN
    assert b'Final-Recipient: rfc822; "hanako."@abc.example\n' in report
    assert b"Original-Recipient: rfc822; taro..yamada@pqr.example\n" in report
    assert sorted(arg.split()[0] for arg in message.rcpt_args) == sorted(
        [
            '<"taro..yamada"@pqr.example>',
            '<"hanako."@pqr.example>',
            '<".c"@pqr.example>',
            f"<{srs_recipient}>",
        ]
    )


def test_serve_with_strict_addresses_refuses_what_rfc_5321_refuses(tmp_path: Path) -> None:
    """``--strict-addresses``: RFC 5321 §4.1.2's grammar alone, as the library machine's
    default; a long local part is still taken (§4.5.3.1 sets no limit)."""
    with serve(
        tmp_path / "abc",
        "abc.example",
        ["john@abc.example:john-pw"],
        listeners=("smtp",),
        extra=("--strict-addresses",),
    ) as abc:
        session = RawSmtpSession.connect(LOOPBACK, abc.ports["smtp"])
        try:
            assert session.recv_reply()[:3] == b"220"
            assert session.command(b"EHLO client.example")[:3] == b"250"
            assert session.command(b"MAIL FROM:a@b.example")[:9] == b"501 5.1.7"
            assert session.command(b"MAIL FROM:<taro..yamada@docomo.ne.jp>")[:9] == b"501 5.1.7"
            assert session.command(f"MAIL FROM:<{SRS_SENDER}>".encode())[:3] == b"250"
            assert session.command(b"RCPT TO:<hanako.@abc.example>")[:9] == b"501 5.1.3"
            assert session.command(b"QUIT")[:3] == b"221"
        finally:
            session.close()
        assert abc.stop() == 0


def test_serve_relays_the_longest_path_it_takes_to_a_smtpcore_next_hop(tmp_path: Path) -> None:
    """A sender past the path limit is refused 501 (RFC 5321 §4.5.3.1.10) rather than
    taken and written into lines a next hop refuses (500 5.6.0, and the mail bounced);
    the longest taken goes through a second smtpcore server, every line within 998."""
    longest = "SRS0=" + "s" * (MAX_RECEIVED_PATH_OCTETS - 19) + "@fwd.example"
    assert len(longest) + 2 == MAX_RECEIVED_PATH_OCTETS
    zone = tmp_path / "zone.txt"
    zone.write_text(ZONE)
    with serve(tmp_path / "pqr", "pqr.example", ["brendon@pqr.example:brendon-pw"]) as pqr:
        options = ("--resolver", f"static:{zone}", "--remote-port", str(pqr.ports["smtp"]))
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=(*options, "--no-sender-login-match"),
        ) as abc:
            with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
                smtp.login("john@abc.example", "john-pw")
                assert smtp.mail("s" + longest)[0] == 501
                smtp.rset()
                message = b"Subject: long\r\n\r\nhello\r\n"
                assert smtp.sendmail(longest, ["brendon@pqr.example"], message) == {}
            _until(lambda: bool(pqr.mailbox("brendon@pqr.example")), "the relay", pqr)
            _until(lambda: abc.queued() == 0, "the queue to empty", abc)
            assert abc.stop() == 0
        assert pqr.stop() == 0
    (delivered,) = pqr.mailbox("brendon@pqr.example")
    lines = delivered.replace(b"\r\n", b"\n").split(b"\n")  # as the Maildir holds it
    assert lines[0] == f"Return-Path: <{longest}>".encode()
    assert max(map(len, lines)) <= 998
    assert "Traceback" not in abc.log() + pqr.log()
