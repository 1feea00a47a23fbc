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

import pytest

from arrived import GIVEN, run_within, ticketed
from peers import TLSFiles, module, running_smtp_server
from smtpcore._driver import _arrived
from smtpcore.handler import Handler


@pytest.mark.timeout(60)
def test_the_ehlo_after_starttls_does_not_wait_for_the_tickets(
    adapter: str, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_arrived, "ARRIVED_LOOK", 3 * GIVEN)
    mod = module(adapter)
    done: list[str] = []

    async def session(port: int) -> None:
        client = mod.SMTPClient("127.0.0.1", port, starttls=True, ssl_context=tls.client_context)
        ticketed(client)
        await client.connect()
        done.append("connected")
        assert client.connection.tls
        await client.noop()
        await client.quit()
        done.append("quit")

    # The asyncio server sends its tickets as its handshake ends: the client of either
    # adapter finds them before its EHLO.
    with running_smtp_server("asyncio", Handler(), ssl_context=tls.server_context) as server:
        run_within(adapter, lambda: session(server.port))
    assert done == ["connected", "quit"]
