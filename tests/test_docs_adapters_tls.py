"""The adapters page's throwaway certificate for STARTTLS runs as written, and a
client trusting its CA sends a message over STARTTLS with the certificate checked;
one that does not trust it (a default context) fails the handshake."""

from __future__ import annotations

import asyncio
import re
import ssl
import textwrap
from pathlib import Path
from typing import Any

import pytest

from smtpcore.asyncio import SMTPClient, SMTPConnectionError, SMTPServer
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply

PAGE = Path(__file__).resolve().parent.parent / "docs" / "adapters.rst"


def throwaway_certificate_block() -> str:
    """The code block that makes the throwaway certificate (the one using trustme)."""
    blocks = re.findall(
        r"\.\. code-block:: python\n\n((?:[ ]+\S.*\n|\n)+)", PAGE.read_text(encoding="utf-8")
    )
    (block,) = [block for block in blocks if "trustme.CA()" in block]
    return textwrap.dedent(block)


class Inbox(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.over_tls: list[bool] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        self.over_tls.append(session.tls is not None)
        return None


def page_contexts() -> dict[str, Any]:
    """The names the page's block makes: ``server_context``, ``client_context``."""
    names: dict[str, Any] = {}
    exec(compile(throwaway_certificate_block(), str(PAGE), "exec"), names)
    return names


def send_one(inbox: Inbox, server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> None:
    """One message over STARTTLS, to a server on loopback with ``server_context``."""

    async def one_message() -> None:
        async with (
            SMTPServer(
                inbox, "127.0.0.1", 0, hostname="localhost", ssl_context=server_context
            ) as server,
            SMTPClient(
                "127.0.0.1", server.port, starttls=True, ssl_context=client_context
            ) as client,
        ):
            await client.send_message(
                b"Subject: hi\r\n\r\nover TLS\r\n", "a@b.example", ["c@d.example"]
            )

    asyncio.run(asyncio.wait_for(one_message(), 30))


def test_the_throwaway_certificate_serves_starttls_to_a_client_that_checks_it() -> None:
    names = page_contexts()
    inbox = Inbox()
    send_one(inbox, names["server_context"], names["client_context"])
    assert inbox.messages == [b"Subject: hi\r\n\r\nover TLS\r\n"]
    assert inbox.over_tls == [True]
    client_context = names["client_context"]
    assert client_context.verify_mode is ssl.CERT_REQUIRED and client_context.check_hostname


def test_a_client_that_does_not_trust_the_throwaway_ca_fails_the_handshake() -> None:
    """The negative control: the certificate is checked, so a default client context,
    which does not trust the throwaway CA, must not get a message through."""
    inbox = Inbox()
    with pytest.raises(SMTPConnectionError, match="CERTIFICATE_VERIFY_FAILED") as failed:
        send_one(inbox, page_contexts()["server_context"], ssl.create_default_context())
    assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
    assert inbox.messages == []
