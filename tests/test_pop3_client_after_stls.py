"""The first command after STLS goes out at once, session tickets or not.

A TLS 1.3 server sends its session tickets after the handshake (RFC 8446
§4.6.1): records with no application data, and nothing behind them until
the client speaks. The clients' look at what reached the socket before a
command (``_driver._arrived``) would read them and then wait out its whole
bound for a response that never comes: a pause on every STLS connect. Here
the tickets are at the client's socket before CAPA, always (the handshake
waits until they are), and the look's bound is 30 seconds: a session that
looked would not finish under the 10 seconds it is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arrived import GIVEN, run_within, ticketed
from peers import TLSFiles, module, running_pop3_server, write_maildir
from smtpcore._driver import _arrived
from smtpcore.maildrop import MaildirStore


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    write_maildir(tmp_path / "mail" / "alice", [b"Subject: one\r\n\r\nhi\r\n"])
    return MaildirStore(tmp_path / "mail", {"alice": "wonderland"})


@pytest.mark.timeout(60)
def test_the_first_command_after_stls_does_not_wait_for_the_tickets(
    adapter: str, store: MaildirStore, tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_arrived, "ARRIVED_LOOK", 3 * GIVEN)
    mod = module(adapter)
    done: list[str] = []

    async def session(port: int) -> None:
        client = mod.POP3Client("127.0.0.1", port, stls=True, ssl_context=tls.client_context)
        ticketed(client)
        await client.connect()
        done.append("connected")
        assert client.tls
        await client.login("alice", "wonderland")
        assert (await client.stat())[0] == 1
        await client.quit()
        done.append("quit")

    # The asyncio server sends its tickets as its handshake ends (trio's, with CAPA's
    # answer): the client of either adapter finds them before its first command.
    with running_pop3_server("asyncio", store, ssl_context=tls.server_context) as server:
        run_within(adapter, lambda: session(server.port))
    assert done == ["connected", "quit"]
