"""docs/tutorials/transport.rst runs as written, and its transport passes the session,
timeout and STARTTLS tests over a ``socket.socketpair()`` (issue 15, "done when").

The page's code blocks run in order as one script (the last one sends a
message over a socket pair); the transport class they define is then put
through a timeout and STARTTLS, using nothing but the page and public names.
"""

from __future__ import annotations

import asyncio
import re
import socket
import textwrap
from pathlib import Path
from typing import Any

import pytest

from peers import TLSFiles
from smtpcore.asyncio import SMTPClient, SMTPServer, Timeouts
from smtpcore.transport import Transport

PAGE = Path(__file__).parent.parent / "docs" / "tutorials" / "transport.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")


def run_page() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "transport_tutorial"}
    blocks = [textwrap.dedent(block) for block in _BLOCK.findall(PAGE.read_text())]
    assert len(blocks) >= 2
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{PAGE.name}, code block {number}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def page() -> dict[str, Any]:
    return run_page()


def test_the_page_runs_and_its_transport_is_one(page: dict[str, Any]) -> None:
    assert page["inbox"].messages == [b"Subject: hi\r\n\r\nover a socket pair\r\n"]
    a, b = socket.socketpair()
    with a, b:
        assert isinstance(page["SocketTransport"](a), Transport)


def test_a_silent_peer_gets_421_when_the_command_timeout_runs_out(page: dict[str, Any]) -> None:
    async def body() -> bytes:
        server_end, client_end = socket.socketpair()
        server = SMTPServer(page["Inbox"](), hostname="mx.test", timeouts=Timeouts(command=0.2))
        serving = asyncio.ensure_future(
            server.serve_transport(page["SocketTransport"](server_end))
        )
        client_end.setblocking(False)
        received = b""
        loop = asyncio.get_running_loop()
        while chunk := await asyncio.wait_for(loop.sock_recv(client_end, 4096), 10):
            received += chunk
        await serving
        client_end.close()
        return received

    received = asyncio.run(body())
    assert received.startswith(b"220 ") and b"\r\n421 4.4.2 " in received


def test_starttls_through_the_transport(page: dict[str, Any], tls: TLSFiles) -> None:
    inbox = page["Inbox"]()
    seen: list[object] = []

    async def body() -> None:
        server_end, client_end = socket.socketpair()
        server = SMTPServer(inbox, hostname="mx.test", ssl_context=tls.server_context)
        serving = asyncio.ensure_future(
            server.serve_transport(page["SocketTransport"](server_end))
        )
        client = SMTPClient.over_transport(
            page["SocketTransport"](client_end),
            host="mx.test",
            hostname="client.test",
            starttls=True,
            ssl_context=tls.client_context,
        )
        async with client:
            await client.send_message(
                b"Subject: tls\r\n\r\nsecret\r\n", "a@abc.example", ["b@pqr.example"]
            )
            seen.append(client.connection.tls)
        await serving

    asyncio.run(body())
    assert seen == [True]
    assert inbox.messages == [b"Subject: tls\r\n\r\nsecret\r\n"]


def test_the_pages_transport_has_no_plaintext_way_back_from_a_cancelled_handshake(
    page: dict[str, Any], tls: TLSFiles
) -> None:
    """The page's contract (RFC 3207 §4): a handshake cancelled midway (a shutdown's
    cut-off) leaves reads and writes failing, never reaching the peer in clear."""

    async def body() -> bytes:
        server_end, client_end = socket.socketpair()
        transport = page["SocketTransport"](server_end)
        client_end.sendall(b"\x16\x03\x01")  # a ClientHello begins; no more comes
        starting = transport.start_tls(tls.server_context, server_side=True)
        handshake = asyncio.ensure_future(starting)
        for _ in range(20):
            await asyncio.sleep(0)
        handshake.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handshake
        with pytest.raises(OSError):
            await transport.send_all(b"421 4.3.2 mx.test Service shutting down\r\n")
        with pytest.raises(OSError) as failed:  # not a wait for the handshake's rest
            await asyncio.wait_for(transport.receive_some(100), 10)
        assert not isinstance(failed.value, TimeoutError)
        await transport.aclose()
        with client_end:
            return client_end.recv(100)

    assert asyncio.run(body()) == b""
