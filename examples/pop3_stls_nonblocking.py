"""STLS in a non-blocking loop: the TLS layer as ssl.SSLObject over two MemoryBIOs.

A loop that never blocks (select, an event loop of its own) cannot call
``wrap_socket``; it runs TLS in memory instead. Ciphertext read from the socket
goes into ``incoming``; ``SSLObject.read()`` gives plaintext for the machine;
what the machine sends goes through ``SSLObject.write()``, and ``outgoing``
holds the ciphertext to write to the socket. Here the two ends are joined by
hand, so the whole session runs in one thread with no socket at all.

When to call ``tls_started()`` (RFC 2595 §4): after ``do_handshake()`` returns
without ``SSLWantReadError``, and before any decrypted byte reaches the machine.
Bytes the machine held when it answered STLS are plaintext from before the
handshake: it drops them (and any that arrive before ``tls_started()``), so a
command injected behind STLS is never run. End of file: ``SSLObject.read()``
raising ``SSLZeroReturnError`` (the peer's close_notify), or the socket's own
end, is ``receive_data(b"")``; a read that yields no plaintext yet
(``SSLWantReadError``: a record read in part) is not, and is no data at all.
Each read gives at most one record: read until ``SSLWantReadError``.
"""

from __future__ import annotations

import ssl

from smtpcore import NEED_DATA, PAUSED, pop3


class MemoryTLS:
    """One end of a TLS connection whose ciphertext lives in memory."""

    def __init__(self, context: ssl.SSLContext, *, server_side: bool) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        hostname = None if server_side else "localhost"
        self.tls = context.wrap_bio(
            self.incoming, self.outgoing, server_side=server_side, server_hostname=hostname
        )
        self.done = False

    def handshake(self) -> bool:
        """One more step of the handshake; True once it is complete."""
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            return False
        self.done = True
        return True

    def read(self) -> bytes | None:
        """Plaintext for the machine, ``b""`` at the peer's end, None for none yet."""
        try:
            return self.tls.read(65536)
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLZeroReturnError:
            return b""


def shuttle(a: MemoryTLS, b: MemoryTLS) -> None:
    """The network: each end's ciphertext to the other."""
    b.incoming.write(a.outgoing.read())
    a.incoming.write(b.outgoing.read())


def handshake(client: MemoryTLS, server: MemoryTLS) -> None:
    """Both ends' handshakes, to the end: it takes a few round trips."""
    for _ in range(10):
        client.handshake()
        shuttle(client, server)
        server.handshake()
        shuttle(client, server)
        if client.done and server.done:
            return
    raise ssl.SSLError("the TLS handshake did not finish")


def feed(machine: pop3.ServerConnection | pop3.ClientConnection, end: MemoryTLS) -> None:
    """Give the machine all that TLS has decrypted, then stop at ``SSLWantReadError``.

    One ``SSLObject.read()`` gives at most one TLS record; a peer that wrote
    several leaves the rest in memory, where no socket event will ever announce
    them. So read until there is nothing more: no plaintext yet feeds nothing,
    and the peer's close_notify feeds ``b""``. Each read consumes at least one
    octet of ciphertext, which bounds the loop.
    """
    for _ in range(end.incoming.pending + end.tls.pending() + 1):
        data = end.read()
        if data is None:
            return
        machine.receive_data(data)
        if not data:
            return
    raise AssertionError("unreachable: every read consumes ciphertext")  # pragma: no cover


def run(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> list[str]:
    """A server machine and a client machine: STLS, then CAPA over TLS; the CAPA
    lines the client read. The client pipelines a command behind STLS, which the
    server machine drops."""
    server = pop3.ServerConnection("pop.test", stls=True)
    client = pop3.ClientConnection("client.test")
    client.receive_data(server.send(server.greeting()))
    assert isinstance(client.next_event(), pop3.Ok)

    server.receive_data(client.send(pop3.Stls()) + b"USER injected\r\n")
    assert isinstance(server.next_event(), pop3.Stls)
    client.receive_data(server.send(pop3.Ok("Begin TLS")))
    assert isinstance(client.next_event(), pop3.Ok)
    assert server.next_event() is PAUSED  # TLS_PENDING: the handshake is ours to do

    server_tls = MemoryTLS(server_context, server_side=True)
    client_tls = MemoryTLS(client_context, server_side=False)
    handshake(client_tls, server_tls)
    server.tls_started()  # now, before any decrypted byte is fed
    client.tls_started()
    assert server.next_event() is NEED_DATA  # "USER injected" is gone

    client_tls.tls.write(client.send(pop3.Capa()))
    shuttle(client_tls, server_tls)
    feed(server, server_tls)
    assert isinstance(server.next_event(), pop3.Capa)
    # Each piece goes out as it comes, one TLS record each, as a loop writes them.
    server_tls.tls.write(server.send(pop3.Ok("Capability list follows")))
    server_tls.tls.write(server.send(pop3.ResponseData(pop3.format_lines(server.capabilities()))))
    server_tls.tls.write(server.send(pop3.EndOfResponse()))
    shuttle(client_tls, server_tls)
    feed(client, client_tls)

    lines: list[str] = []
    for _ in range(100):
        event = client.next_event()
        if isinstance(event, pop3.EndOfResponse):
            break
        if isinstance(event, pop3.ResponseData):
            lines += event.data.decode().splitlines()
    return lines
