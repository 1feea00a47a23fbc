"""SMTPTestServer: a threaded server that a synchronous test talks to with smtplib."""

from __future__ import annotations

import smtplib

import pytest

from smtpcore.handler import Envelope, Handler, Session
from smtpcore.smtp import Rcpt, Reply
from smtpcore.testing import SMTPTestServer


def test_collects_messages_from_smtplib() -> None:
    with SMTPTestServer() as server, smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
        refused = smtp.sendmail(
            "john@abc.example",
            ["brendon@pqr.example", "carol@pqr.example"],
            b"Subject: hi\r\n\r\n.leading dot\r\n",
        )
        assert refused == {}
        smtp.sendmail("john@abc.example", ["x@xyz.example"], b"Subject: two\r\n\r\nbye\r\n")
    assert [str(r.mailbox) for r in server.messages[0].recipients] == [
        "brendon@pqr.example",
        "carol@pqr.example",
    ]
    assert server.messages[0].content == b"Subject: hi\r\n\r\n.leading dot\r\n"
    assert len(server.messages) == 2


def test_starttls_with_a_throwaway_certificate() -> None:
    with SMTPTestServer(starttls=True) as server:
        assert server.client_context is not None
        with smtplib.SMTP(server.host, server.port, timeout=10) as smtp:
            smtp.starttls(context=server.client_context)
            smtp.sendmail("john@abc.example", ["b@pqr.example"], b"Subject: tls\r\n\r\nx\r\n")
    assert server.messages[0].content.startswith(b"Subject: tls")


def test_a_handler_of_ones_own() -> None:
    class Picky(Handler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        async def handle_rcpt(
            self, session: Session, envelope: Envelope, command: Rcpt
        ) -> Reply | None:
            self.seen.append(str(command.recipient))
            return Reply(550, "no such user", "5.1.1")

    handler = Picky()
    with SMTPTestServer(handler) as server, smtplib.SMTP(server.host, server.port) as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("john@abc.example", ["nobody@pqr.example"], b"x\r\n")
        with pytest.raises(AttributeError):
            server.messages  # noqa: B018
    assert handler.seen == ["nobody@pqr.example"]
