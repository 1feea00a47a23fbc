"""A client a stopping server turns away (its ``421 4.3.2`` at once, POP3's ``-ERR
[SYS/TEMP]``) is logged, as Postfix logs the connections it refuses, through the
same bounded lines as a client a session limit turns away."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
import trio

import smtpcore.asyncio as smtp_asyncio
import smtpcore.trio as smtp_trio
from smtpcore._driver._session_registry import SessionRegistry
from smtpcore._driver._transport import Link
from smtpcore.handler import Handler
from test_adapters_session_end import ScriptedTransport

STOPPING = "server stopping: session from [192.0.2.1]"


class _Peer:
    """All the registry reads of a connection it refuses: its peer's address."""

    def __init__(self, port: int) -> None:
        self.peer_address = ("192.0.2.1", port)


class _Registry(SessionRegistry[Any]):
    def new_session(self, transport: Link, peer: tuple[str, int] | None) -> Any:
        raise AssertionError("no session while stopping")


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("server ")]


def test_clients_refused_during_the_shutdown_are_a_line_then_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The refusal was written nowhere. Now the first is a line, and those after it a
    count, written when the shutdown ends, as for a session limit's refusals."""
    caplog.set_level(logging.INFO, "smtpcore")
    registry = _Registry(10, b"421 busy\r\n", stopping_reply=b"421 4.3.2 stopping\r\n")
    registry.begin_shutdown()
    for port in (40000, 40001, 40002):
        assert registry.admit(cast(Link, _Peer(port))) == b"421 4.3.2 stopping\r\n"
    assert _lines(caplog) == [f"{STOPPING}:40000: refused (shutting down)"]
    registry.end_shutdown()
    assert _lines(caplog)[1:] == [
        f"{STOPPING}: 2 more refused (shutting down) since the last line"
    ]


@pytest.mark.parametrize("adapter", ["asyncio", "trio"])
def test_a_session_given_after_aclose_is_refused_and_logged(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the shutdown is over no stop is left to write a count: each refusal is its
    own line."""
    caplog.set_level(logging.INFO, "smtpcore")
    transports = [ScriptedTransport(b"QUIT\r\n") for _ in range(2)]

    async def asyncio_body() -> None:
        server = smtp_asyncio.SMTPServer(Handler(), hostname="mx.test")
        await server.aclose()
        for transport in transports:
            await server.serve_transport(transport)

    async def trio_body() -> None:
        server = smtp_trio.SMTPServer(Handler(), hostname="mx.test")
        await server.aclose()
        for transport in transports:
            await server.serve_transport(transport)

    if adapter == "asyncio":
        asyncio.run(asyncio_body())
    else:
        trio.run(trio_body)
    for transport in transports:
        assert b"".join(transport.written).startswith(b"421 4.3.2 ")
        assert transport.closed
    assert _lines(caplog) == [f"{STOPPING}:40000: refused (shutting down)"] * 2


def test_the_refusals_after_the_shutdown_stay_within_the_budget(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the shutdown each refusal was written at once, past any budget: 3,000
    refusals, 3,000 lines. They are written at once still, but 1,000 a minute at most;
    those past it wait, counted, for a refusal that finds room."""
    caplog.set_level(logging.INFO, "smtpcore")
    registry = _Registry(10, b"421 busy\r\n", stopping_reply=b"421 4.3.2 stopping\r\n")
    registry.begin_shutdown()
    registry.end_shutdown()
    for n in range(1500):
        peer = _Peer(40000)
        peer.peer_address = (f"10.0.{n >> 8}.{n & 255}", 40000)
        for _ in range(2):
            registry.admit(cast(Link, peer))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1000
    first = "server stopping: session from [10.0.0.0]:40000: refused (shutting down)"
    assert lines[:2] == [first, first]
