"""What an idle session of the trio server keeps (docs/performance.rst, Round 30): its
task named with one shared string, no ``receive_some`` coroutine of the transport's
while it waits for its client, and the host strings of its
addresses shared with the other sessions from the same address."""

from __future__ import annotations

import gc
from typing import Any

import trio

from smtpcore._trio_listener import _SESSION_TASK
from smtpcore.handler import Handler
from smtpcore.trio import SMTPServer, TrioTransport

SESSIONS = 3


def _tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found = [task]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found += _tasks(child)
    return found


def _awaiting(coroutine: Any) -> list[str]:
    """The names of the coroutines ``coroutine`` awaits, down to trio's wait."""
    names = []
    while coroutine is not None and hasattr(coroutine, "cr_code"):
        names.append(coroutine.cr_code.co_name)
        coroutine = coroutine.cr_await
    return names


def test_an_idle_trio_session_keeps_none_of_the_objects_it_no_longer_needs() -> None:
    async def main() -> None:
        server = SMTPServer(
            Handler(), host="127.0.0.1", port=0, hostname="mx.test", max_sessions_per_address=None
        )
        async with server:
            clients = []
            for _ in range(SESSIONS):
                client = await trio.open_tcp_stream("127.0.0.1", server.port)
                clients.append(client)
                await client.receive_some(1000)
                await client.send_all(b"EHLO client.test\r\n")
                await client.receive_some(1000)
            await trio.testing.wait_all_tasks_blocked()
            root = trio.lowlevel.current_root_task()
            assert root is not None
            sessions = [task for task in _tasks(root) if task.name == _SESSION_TASK]
            assert len(sessions) == SESSIONS
            assert all(task.name is _SESSION_TASK for task in sessions)  # one string
            for task in sessions:
                chain = _awaiting(task.coro)
                assert chain[:3] == ["_run_contained", "run", "_receive_plain"], chain
                assert "receive_some" not in chain
            gc.collect()
            transports = [o for o in gc.get_objects() if type(o) is TrioTransport]
            served = [t for t in transports if t._writes is not None]
            assert len(served) == SESSIONS
            peers = [t.peer_address for t in served]
            locals_ = [t.local_address for t in served]
            assert all(p is not None and p[0] is peers[0][0] for p in peers)  # type: ignore[index]
            assert all(a is not None and a[0] is locals_[0][0] for a in locals_)  # type: ignore[index]
            for client in clients:
                await client.aclose()
            await server.aclose(grace=5)

    trio.run(main)


class _Recording(TrioTransport):
    """A wire recorder: its override must see every read, fast path or not."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        super().__init__(stream)
        self.seen: list[bytes] = []

    async def receive_some(self, max_bytes: int) -> bytes:
        data = await super().receive_some(max_bytes)
        self.seen.append(data)
        return data


def test_a_subclass_that_overrides_receive_some_sees_every_read_of_a_session() -> None:
    async def main() -> list[bytes]:
        server = SMTPServer(Handler(), host=None, hostname="mx.test")
        async with server:
            near, far = trio.socket.socketpair()
            transport = _Recording(trio.SocketStream(near))
            client = trio.SocketStream(far)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_transport, transport)
                await client.receive_some(1000)
                for line in (b"EHLO c.test\r\n", b"NOOP\r\n", b"QUIT\r\n"):
                    await client.send_all(line)
                    await client.receive_some(4000)
            await client.aclose()
            await server.aclose(grace=1)
        return transport.seen

    assert trio.run(main) == [b"EHLO c.test\r\n", b"NOOP\r\n", b"QUIT\r\n"]
