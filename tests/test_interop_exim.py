"""CHUNKING against Exim (RFC 3030), both ways: our client sends BDAT to Exim's
server, and Exim's client sends BDAT to our server. Postfix's client never uses
BDAT, so Exim is the peer that exercises it (see tests/exim_peer.py)."""

from __future__ import annotations

from typing import Any

import pytest

from exim_peer import exim
from peers import ADAPTERS, running_smtp_server
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Bdat, Data, Event, Rcpt, Reply
from test_adapters_chunking import recording_factory
from test_adapters_client import module, run

BODY = b"".join(b".line %d of a message sent in chunks\r\n" % n for n in range(300))
MESSAGE = b"Subject: chunks\r\nFrom: a@abc.test\r\n\r\n" + BODY


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


class Sink(Handler):
    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope)
        return None


def test_our_client_sends_bdat_to_exim(adapter: str) -> None:
    with exim() as peer:
        with peer.daemon():

            async def go() -> Any:
                client = module(adapter).SMTPClient("127.0.0.1", peer.port, chunk_size=1000)
                async with client:
                    assert client.connection.extensions.chunking
                    return await client.send_message(MESSAGE, "a@abc.test", ["b@pqr.test"])

            result = run(adapter, go)
        assert [str(r.recipient) for r in result.accepted] == ["b@pqr.test"]
        log = peer.main_log()
        bodies = peer.spooled_bodies()
    received = [line for line in log.splitlines() if " <= a@abc.test " in line]
    assert len(received) == 1 and " K " in received[0], log  # K: received by CHUNKING
    assert bodies == [BODY.replace(b"\r\n", b"\n")]


def test_exim_sends_bdat_to_our_server(adapter: str) -> None:
    handler = Sink()
    seen: list[type[Event]] = []
    factory = recording_factory(seen)
    with (
        running_smtp_server(adapter, handler, connection_factory=factory) as server,
        exim(next_port=server.port) as peer,
    ):
        peer.send(MESSAGE, "a@abc.test", "bob@pqr.test")
        log = peer.main_log()
    assert " => bob@pqr.test " in log, log
    assert Bdat in seen and Data not in seen
    [envelope] = handler.messages
    assert envelope.content.endswith(BODY)
    assert b"Subject: chunks\r\n" in envelope.content
