"""CHUNKING (RFC 3030) and DSN (RFC 3461) against Exim, both ways: our client sends
BDAT and typed DSN values to Exim's server, and Exim's client sends BDAT, and the
DSN values it was given, to our server. Postfix's client never uses BDAT, so Exim
is the peer that exercises it (see tests/exim_peer.py)."""

from __future__ import annotations

from typing import Any

from exim_peer import exim
from peers import module, run, running_smtp_server
from smtpcore.smtp import (
    Bdat,
    Data,
    EnvelopeId,
    Event,
    Expn,
    Help,
    Notify,
    OriginalRecipient,
    Reply,
    Ret,
)
from smtpcore.testing import CollectingHandler
from test_adapters_chunking import recording_factory

BODY = b"".join(b".line %d of a message sent in chunks\r\n" % n for n in range(300))
MESSAGE = b"Subject: chunks\r\nFrom: a@abc.test\r\n\r\n" + BODY


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
    handler = CollectingHandler()
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


def test_dsn_values_cross_exim_both_ways(adapter: str) -> None:
    """Our client's typed DSN values go to Exim's server, which queues them; Exim's
    client passes them on to our server (which offers DSN), whose machine reads
    back the values our client sent."""
    orcpt = OriginalRecipient("rfc822", "bob+tag@pqr.test")
    notify = Notify.FAILURE | Notify.DELAY
    envid = EnvelopeId("QQ314159+x")
    handler = CollectingHandler()
    with (
        running_smtp_server(adapter, handler, dsn=True) as server,
        exim(next_port=server.port) as peer,
    ):
        with peer.daemon():

            async def go() -> Any:
                async with module(adapter).SMTPClient("127.0.0.1", peer.port) as client:
                    assert client.connection.extensions.dsn
                    return await client.send_message(
                        MESSAGE,
                        "a@abc.test",
                        ["bob@pqr.test"],
                        mail_params={"RET": Ret.HDRS, "ENVID": envid},
                        rcpt_params={"NOTIFY": notify, "ORCPT": orcpt},
                    )

            result = run(adapter, go)
            assert [str(r.recipient) for r in result.accepted] == ["bob@pqr.test"]
        peer.deliver_queue()
        log = peer.main_log()
    assert " => bob@pqr.test " in log, log
    [envelope] = handler.messages
    assert Ret.parse(envelope.mail_params["RET"] or "") is Ret.HDRS
    assert EnvelopeId.parse(envelope.mail_params["ENVID"] or "") == envid
    [recipient] = envelope.recipients
    assert Notify.parse(recipient.params["NOTIFY"] or "") == notify
    assert OriginalRecipient.parse(recipient.params["ORCPT"] or "") == orcpt


def test_our_client_reads_exims_help_and_expn(adapter: str) -> None:
    """HELP and EXPN to a real server: Exim's multi-line 214 names BDAT (its CHUNKING
    is offered), and its EXPN refusal is a reply like any other, not an error."""
    with exim() as peer, peer.daemon():

        async def go() -> list[Reply]:
            async with module(adapter).SMTPClient("127.0.0.1", peer.port) as client:
                return [await client.command(Help("")), await client.command(Expn("bob@pqr.test"))]

        help_reply, expn_reply = run(adapter, go)
    assert help_reply.code == 214 and len(help_reply.lines) > 1
    assert {"MAIL", "RCPT", "BDAT"} <= set(" ".join(help_reply.lines).split())
    assert expn_reply.code == 550  # Exim's "Administrative prohibition"
