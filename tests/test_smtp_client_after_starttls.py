"""The EHLO after STARTTLS goes out at once, session tickets or not.

A TLS 1.3 server sends its session tickets after the handshake (RFC 8446
§4.6.1): records with no reply in them, and nothing behind them until the
client speaks. The SMTP clients' look at what reached the socket before a
command that stands alone would read them and then wait out its whole bound
before EHLO. Here the tickets are at the client's socket before EHLO, always
(the handshake waits until they are), and the look's bound is 30 seconds: a
session that looked would not finish under the 10 seconds it is given.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from peers import TLSFiles, module, run, running_smtp_server
from smtpcore._driver import _arrived
from smtpcore.handler import Handler

_GIVEN: float = 10.0
"""How long the session may take: a third of the look's patched bound."""


def _ticketed(client: Any) -> None:
    """Make ``client``'s STARTTLS handshake return only once more has reached its
    socket (the server's session tickets), so that EHLO finds them there."""
    handshake = client._handshake

    async def and_tickets() -> None:
        await handshake()
        transport = client._transport
        for _ in range(500):  # blocks the loop: nothing reads the tickets meanwhile
            if transport.arrived():
                return
            time.sleep(0.01)
        pytest.fail("no session ticket reached the socket after the handshake")

    client._handshake = and_tickets


@pytest.mark.timeout(60)
def test_the_ehlo_after_starttls_does_not_wait_for_the_tickets(
    adapter: str, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_arrived, "ARRIVED_LOOK", 3 * _GIVEN)
    mod = module(adapter)
    done: list[str] = []

    async def session(port: int) -> None:
        client = mod.SMTPClient("127.0.0.1", port, starttls=True, ssl_context=tls.client_context)
        _ticketed(client)
        await client.connect()
        done.append("connected")
        assert client.connection.tls
        await client.noop()
        await client.quit()
        done.append("quit")

    async def within(port: int) -> None:
        if adapter == "trio":
            import trio

            with trio.move_on_after(_GIVEN):
                await session(port)
        else:
            import asyncio

            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(session(port), _GIVEN)

    # The asyncio server sends its tickets as its handshake ends: the client of either
    # adapter finds them before its EHLO.
    with running_smtp_server("asyncio", Handler(), ssl_context=tls.server_context) as server:
        run(adapter, lambda: within(server.port))
    assert done == ["connected", "quit"]
