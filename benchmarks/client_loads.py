"""The SMTP client loads, and the call counter that ``compare.py``, ``client_calls.py`` and
``calls_by_function.py`` share.

Each client function sends ``messages`` 1 KB messages over one connection to
``127.0.0.1:port`` (Postfix's smtp-sink in both benchmarks). Python calls are
counted with ``sys.setprofile``: exact, and deaf to the machine's load.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import smtplib
import socket
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import adapters_smtp

SENDER = "a@abc.example"
RECIPIENT = "b@pqr.example"
BODY_1K = adapters_smtp.BODY_1K


def smtplib_client(port: int, messages: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("bench.test")
        for _ in range(messages):
            client.sendmail(SENDER, [RECIPIENT], BODY_1K)


def sync_client(port: int, messages: int) -> None:
    from smtpcore.sync import SMTPClient

    with SMTPClient("127.0.0.1", port, timeout=60) as client:
        for _ in range(messages):
            client.send_message(BODY_1K, SENDER, [RECIPIENT])


def asyncio_client(port: int, messages: int) -> None:
    from smtpcore.asyncio import SMTPClient

    async def main() -> None:
        async with SMTPClient("127.0.0.1", port) as client:
            for _ in range(messages):
                await client.send_message(BODY_1K, SENDER, [RECIPIENT])

    asyncio.run(main())


def aiosmtplib_client(port: int, messages: int) -> None:
    """``aiosmtplib``, the asyncio client most used: the asyncio client's own kind of peer."""
    import aiosmtplib

    async def main() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port,
            local_hostname="bench.test",
            timeout=60,
            start_tls=False,
        )
        async with client:
            for _ in range(messages):
                await client.sendmail(SENDER, [RECIPIENT], BODY_1K)

    asyncio.run(main())


class StepNow(asyncio.Future[bytes]):
    """A future that runs the task awaiting it as soon as :meth:`resolve_now` resolves
    it, rather than at the event loop's next pass: it keeps the task's wake-up (the
    one callback a task adds) back from the future's own callbacks."""

    wake_up: Callable[[Any], object] | None = None
    context: contextvars.Context | None = None

    def add_done_callback(
        self, fn: Callable[[Any], object], *, context: contextvars.Context | None = None
    ) -> None:
        if self.wake_up is None and context is not None and not self.done():
            self.wake_up, self.context = fn, context
        else:
            super().add_done_callback(fn, context=context)

    def resolve_now(self, data: bytes) -> None:
        self.set_result(data)
        if self.wake_up is not None and self.context is not None:
            self.context.run(self.wake_up, self)  # in the task's context, as the loop would


def _nonblocking_connection(port: int) -> socket.socket:
    """A TCP connection to the sink at ``port``, non-blocking, with Nagle's algorithm
    off (as ``smtpcore.asyncio`` connects)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _on_readable(
    sock: socket.socket, waiting: list[StepNow], early: Callable[[bytes], object]
) -> Callable[[], None]:
    """The floors' reader callback: each read resolves the future waiting for it,
    running the waiting task at once (:class:`StepNow`), or goes to ``early`` when
    nothing waits."""

    def readable() -> None:
        data = sock.recv(65536)
        if waiting:
            waiting.pop().resolve_now(data)
        else:
            early(data)

    return readable


def asyncio_floor_client(port: int, messages: int) -> None:
    """What asyncio itself costs a client that waits for its replies: the bytes
    ``smtpcore.asyncio`` writes (MAIL, RCPT and DATA in one write where the server
    offers PIPELINING, else one at a time; the content with its end), each write a
    ``socket.send`` and each wait a future that one ``loop.add_reader`` callback
    resolves, running the waiting task in that callback (:class:`StepNow`, as
    smtpcore's client does: no pass of the loop between a reply and its reader);
    replies are counted by their line ends, nothing is parsed or checked. The
    floor under any asyncio client of this load."""
    content = BODY_1K.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    envelope = (
        f"MAIL FROM:<{SENDER}>\r\n".encode(),
        f"RCPT TO:<{RECIPIENT}>\r\n".encode(),
        b"DATA\r\n",
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = _nonblocking_connection(port)
        waiting: list[StepNow] = []
        early: list[bytes] = []  # what came while nothing waited
        readable = _on_readable(sock, waiting, early.append)

        async def lines(data: bytes, due: int) -> bytes:
            """Write ``data``; what came back once it holds ``due`` line ends."""
            if data:
                sock.send(data)
            received = b"".join(early)
            early.clear()
            while received.count(b"\n") < due:
                future = StepNow(loop=loop)
                waiting.append(future)
                received += await future
            return received

        loop.add_reader(sock.fileno(), readable)
        try:
            await lines(b"", 1)  # the greeting
            offer = await lines(b"EHLO bench.test\r\n", 1)
            while b"\n250 " not in offer and not offer.startswith(b"250 "):
                offer += await lines(b"", 1)
            groups = [b"".join(envelope)] if b"PIPELINING" in offer else list(envelope)
            for _ in range(messages):
                for group in groups:
                    await lines(group, group.count(b"\n"))
                await lines(content, 1)
            await lines(b"QUIT\r\n", 1)
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    asyncio.run(main())


_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
"""``smtplib``'s own dot-stuffing (its ``_quote_periods``)."""


def asyncio_minimal_client(port: int, messages: int) -> None:
    """The asyncio floor with the least an SMTP client does for each message, and
    no more: each command built from its address, the content's leading dots
    doubled by a regular expression as ``smtplib`` doubles them, and each reply
    read to its last line and its code checked (the envelope in one write where
    the server offers PIPELINING). No timeout, no state, no limit and no check of
    what the server sends: less than ``smtplib`` does (it parses each address,
    and reads each reply under a timeout). What ``smtpcore.asyncio`` does beyond
    this is its machine, its checks and its deadlines."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = _nonblocking_connection(port)
        waiting: list[StepNow] = []
        received = bytearray()  # what came and is not read yet
        readable = _on_readable(sock, waiting, received.extend)

        async def reply() -> int:
            """The code of the next reply, once its last line has come."""
            start = 0
            while True:
                end = received.find(b"\n", start)
                if end < 0:
                    future = StepNow(loop=loop)
                    waiting.append(future)
                    received.extend(await future)
                elif received[start + 3 : start + 4] == b"-":  # a line before the last
                    start = end + 1
                else:
                    code = int(received[:3])
                    del received[: end + 1]
                    return code

        async def send_message(sender: str, recipients: list[str], content: bytes) -> None:
            envelope = [
                f"MAIL FROM:<{sender}>\r\n".encode(),
                *(f"RCPT TO:<{recipient}>\r\n".encode() for recipient in recipients),
                b"DATA\r\n",
            ]
            if pipelining:
                sock.send(b"".join(envelope))
                codes = [await reply() for _ in envelope]
            else:
                codes = []
                for command in envelope:
                    sock.send(command)
                    codes.append(await reply())
                    if codes[0] != 250:
                        break
            if codes[0] != 250 or codes[-1] != 354 or not {250, 251} & set(codes[1:-1]):
                raise ValueError(f"the envelope was refused: {codes}")
            stuffed = _LEADING_DOT.sub(b"..", content)
            if not stuffed.endswith(b"\r\n"):
                stuffed += b"\r\n"
            sock.send(stuffed + b".\r\n")
            if await reply() != 250:
                raise ValueError("the message was refused")

        loop.add_reader(sock.fileno(), readable)
        try:
            await reply()  # the greeting
            sock.send(b"EHLO bench.test\r\n")
            while b"\n250 " not in received and not received.startswith(b"250 "):
                future = StepNow(loop=loop)
                waiting.append(future)
                received.extend(await future)
            pipelining = b"PIPELINING" in received
            received.clear()
            for _ in range(messages):
                await send_message(SENDER, [RECIPIENT], BODY_1K)
            sock.send(b"QUIT\r\n")
            await reply()
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()

    asyncio.run(main())


def asyncio_woken_client(port: int, messages: int) -> None:
    """The asyncio minimal client, its task woken as ``smtpcore.asyncio`` wakes its
    own: a plain future for each read, resolved in the reader's callback, which
    then runs the task at once (``SocketClientTransport._run``), rather than
    :class:`StepNow`'s Python methods. Beside :func:`asyncio_callback_client`,
    what waking the task costs for each reply."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = _nonblocking_connection(port)
        fd = sock.fileno()
        waiting: list[asyncio.Future[bytes]] = []
        received = bytearray()  # what came and is not read yet

        def readable() -> None:
            data = os.read(fd, 65536)
            if waiting:
                _wake_now(waiting.pop(), data)
            else:
                received.extend(data)

        async def more() -> None:
            future = loop.create_future()
            waiting.append(future)
            received.extend(await future)

        async def reply() -> int:
            """The code of the next reply, once its last line has come."""
            start = 0
            while True:
                end = received.find(b"\n", start)
                if end < 0:
                    await more()
                elif received[start + 3 : start + 4] == b"-":  # a line before the last
                    start = end + 1
                else:
                    code = int(received[:3])
                    del received[: end + 1]
                    return code

        async def send_message(sender: str, recipients: list[str], content: bytes) -> None:
            envelope = [
                f"MAIL FROM:<{sender}>\r\n".encode(),
                *(f"RCPT TO:<{recipient}>\r\n".encode() for recipient in recipients),
                b"DATA\r\n",
            ]
            codes = []
            for command in envelope:  # one at a time: this client is for servers without it
                os.write(fd, command)
                codes.append(await reply())
                if codes[0] != 250:
                    break
            if codes[0] != 250 or codes[-1] != 354 or not {250, 251} & set(codes[1:-1]):
                raise ValueError(f"the envelope was refused: {codes}")
            os.write(fd, _stuffed(content))
            if await reply() != 250:
                raise ValueError("the message was refused")

        loop.add_reader(fd, readable)
        try:
            await reply()  # the greeting
            os.write(fd, b"EHLO bench.test\r\n")
            while b"\n250 " not in received and not received.startswith(b"250 "):
                await more()
            received.clear()
            for _ in range(messages):
                await send_message(SENDER, [RECIPIENT], BODY_1K)
            os.write(fd, b"QUIT\r\n")
            await reply()
        finally:
            loop.remove_reader(fd)
            sock.close()

    asyncio.run(main())


def asyncio_callback_client(port: int, messages: int) -> None:
    """:func:`asyncio_woken_client` with the replies read in the reader's callback:
    each reply that lets the next command go (250 and 251, 354) is read there and
    the next command written at once, and the task is woken once a message, with
    the reply to its content, or with any other reply. One command at a time, as
    for a server without PIPELINING."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sock = _nonblocking_connection(port)
        fd = sock.fileno()
        received = bytearray()
        to_send: list[bytes] = []  # what goes after each success, the next one last
        codes: list[int] = []  # the codes read for the commands sent
        waiting: list[asyncio.Future[bytes]] = []

        def readable() -> None:
            received.extend(os.read(fd, 65536))
            read_replies()

        def read_replies() -> None:
            """Read what replies have come; send on while each lets the next command go;
            wake the task with any other, or once nothing is left to send."""
            while waiting:
                end = received.find(b"\n")
                if end < 0:
                    return
                if received[3:4] == b"-":  # a line before the last
                    del received[: end + 1]
                    continue
                code = int(received[:3])
                del received[: end + 1]
                codes.append(code)
                if to_send and code in (250, 251, 354):
                    os.write(fd, to_send.pop())
                    continue
                _wake_now(waiting.pop(), b"")

        async def exchange(commands: list[bytes]) -> list[int]:
            """Send ``commands``, each once the one before it succeeded; their codes."""
            codes.clear()
            to_send[:] = reversed(commands)
            future = loop.create_future()
            waiting.append(future)
            if to_send:
                os.write(fd, to_send.pop())
            read_replies()  # what came already (the greeting, say)
            if waiting:
                await future
            return list(codes)

        async def send_message(sender: str, recipients: list[str], content: bytes) -> None:
            commands = [
                f"MAIL FROM:<{sender}>\r\n".encode(),
                *(f"RCPT TO:<{recipient}>\r\n".encode() for recipient in recipients),
                b"DATA\r\n",
                _stuffed(content),
            ]
            codes = await exchange(commands)
            if codes != [250, *(250 for _ in recipients), 354, 250]:
                raise ValueError(f"the message was refused: {codes}")

        loop.add_reader(fd, readable)
        try:
            await exchange([])  # the greeting
            await exchange([b"EHLO bench.test\r\n"])
            for _ in range(messages):
                await send_message(SENDER, [RECIPIENT], BODY_1K)
            await exchange([b"QUIT\r\n"])
        finally:
            loop.remove_reader(fd)
            sock.close()

    asyncio.run(main())


def _wake_now(future: asyncio.Future[bytes], data: bytes) -> None:
    """Resolve ``future`` with ``data``, and run the task that awaits it at once, in its
    context, as ``smtpcore.asyncio``'s transport does (``SocketClientTransport._run``)."""
    if not future._callbacks:  # nothing awaits it yet
        future.set_result(data)
        return
    wake_up, context = future._callbacks[0]
    future.remove_done_callback(wake_up)
    future.set_result(data)
    context.run(wake_up, future)


def _stuffed(content: bytes) -> bytes:
    """The content with its leading dots doubled as ``smtplib`` doubles them, and its
    end (RFC 5321 §4.5.2)."""
    stuffed = _LEADING_DOT.sub(b"..", content)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def blocking_floor_client(port: int, messages: int) -> None:
    """What a blocking socket with a timeout costs a client that waits for its
    replies, as ``smtplib``'s does (a ``poll`` before each ``send`` and each
    ``recv``): the bytes :func:`asyncio_floor_client` writes, each reply read
    until it ends a line, nothing parsed or checked. The floor under
    ``smtplib`` on this load, beside the asyncio floor: the difference is the
    event loop's share of a message."""
    content = BODY_1K.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    envelope = [
        f"MAIL FROM:<{SENDER}>\r\n".encode(),
        f"RCPT TO:<{RECIPIENT}>\r\n".encode(),
        b"DATA\r\n",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:

        def reply() -> bytes:
            data = sock.recv(65536)
            while data and not data.endswith(b"\n"):
                data += sock.recv(65536)
            return data

        reply()  # the greeting
        sock.sendall(b"EHLO bench.test\r\n")
        offer = reply()
        while b"\n250 " not in offer and not offer.startswith(b"250 "):
            offer += reply()
        groups = [b"".join(envelope)] if b"PIPELINING" in offer else envelope
        for _ in range(messages):
            for group in groups:
                sock.sendall(group)
                received = reply()
                while received.count(b"\n") < group.count(b"\n"):
                    received += reply()
            sock.sendall(content)
            reply()
        sock.sendall(b"QUIT\r\n")
        reply()


def trio_client(port: int, messages: int) -> None:
    import trio

    from smtpcore.trio import SMTPClient

    async def main() -> None:
        async with SMTPClient("127.0.0.1", port) as client:
            for _ in range(messages):
                await client.send_message(BODY_1K, SENDER, [RECIPIENT])

    trio.run(main)


def file_and_qualname(code: CodeType) -> str:
    """``smtp/_client.py:284 ClientConnection.next_event``: the key ``client_calls.py`` prints."""
    where = "/".join(Path(code.co_filename).parts[-2:])
    return f"{where}:{code.co_firstlineno} {code.co_qualname}"


class CallCounter:
    """Counts Python function calls (``sys.setprofile``), in all and, given a ``label`` for a
    function's code, by label (the label costs time, not calls)."""

    def __init__(self, label: Callable[[CodeType], str] | None = None) -> None:
        self.calls = 0
        self.label = label
        self.by_function: Counter[str] = Counter()

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            self.calls += 1
            if self.label is not None:
                self.by_function[self.label(frame.f_code)] += 1


class BytecodeCounter(CallCounter):
    """Counts the bytecodes Python runs (``sys.settrace`` with opcode events), by the
    function's ``label``: where a call count says how often, this says how much
    each call does, and it is as deaf to the machine's load. Installed with
    :meth:`install` in the thread to count; as a profile hook it counts nothing."""

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        return None

    def install(self) -> None:
        label = self.label or (lambda code: code.co_name)
        by_function = self.by_function

        def each_opcode(frame: FrameType, event: str, arg: Any) -> Any:
            if event == "opcode":
                self.calls += 1
                by_function[label(frame.f_code)] += 1
            return each_opcode

        def each_call(frame: FrameType, event: str, arg: Any) -> Any:
            frame.f_trace_opcodes = True
            return each_opcode

        sys.settrace(each_call)


def counted(
    work: Callable[[], object], label: Callable[[CodeType], str] | None = None
) -> CallCounter:
    """The Python calls made by ``work()`` in this thread (by ``label`` too, if given)."""
    counter = CallCounter(label)
    sys.setprofile(counter)
    try:
        work()
    finally:
        sys.setprofile(None)
    return counter


def bytecodes_run(
    work: Callable[[], object], label: Callable[[CodeType], str] | None = None
) -> CallCounter:
    """The bytecodes ``work()`` runs in this thread (by ``label`` too, if given)."""
    counter = BytecodeCounter(label)
    counter.install()
    try:
        work()
    finally:
        sys.settrace(None)
    return counter


def message_calls(
    client: Callable[[int, int], None], port: int, messages: int, *, bytecodes: bool = False
) -> Counter[str]:
    """Python calls of ``messages`` messages, by function (or with ``bytecodes``, the
    bytecodes they run): the difference between sessions of ``messages`` and twice as
    many, so that connecting, EHLO and QUIT drop out."""
    count = bytecodes_run if bytecodes else counted
    short = count(lambda: client(port, messages), file_and_qualname).by_function
    long = count(lambda: client(port, 2 * messages), file_and_qualname).by_function
    long.subtract(short)
    return long
