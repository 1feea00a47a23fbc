"""A blocking SMTP client socket that keeps a byte-exact transcript, for the checks.

The checks talk to servers written in any language, so they speak raw bytes
rather than through smtpcore's client machine (which would refuse to send
the broken input the checks are made of). Every byte sent and received is
recorded in order, each write and each read as its own entry, so a failure
can be shown exactly as it happened on the wire.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from smtpcore._dial_name import dial_name
from smtpcore._ip import host_port
from smtpcore._textsafe import escape_unsafe

__all__ = [
    "Exchange",
    "LineOverLimit",
    "ServerFlood",
    "ServerReply",
    "WireClient",
    "checked_host",
    "excerpt_reads",
    "format_transcript",
]

#: A reply longer than this is a broken server, not a reason to eat memory.
MAX_REPLY: Final = 1 << 20
#: More replies than this on one connection is a flood: no check is owed a tenth of it.
MAX_REPLIES: Final = 10_000
#: More octets than this from the server on one connection is a flood (the
#: transcript keeps every octet read, so this bounds its memory too).
MAX_RECEIVED: Final = 8 << 20

_NOTHING_WAITING: Final = (BlockingIOError, ssl.SSLWantReadError)
"""What a read that must not wait raises when no bytes are waiting."""

_STATUS: Final = re.compile(rb"^[245]\.\d{1,3}\.\d{1,3}")


def checked_host(host: object) -> str:
    """``host`` as the socket calls should be given it, as the clients give it
    (:func:`~smtpcore._dial_name.dial_name`: a non-ASCII name in A-label form), else
    ValueError naming it: an empty label (``a..b``) or one over 63 octets would
    otherwise fail only at the first connection, halfway through a run, and asked
    first, it is the caller's mistake."""
    if not isinstance(host, str):
        raise ValueError(f"{host!r} is no host name or address")
    return dial_name(host)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One write by the client or one read from the server, as bytes on the wire.

    ``note`` marks what is not bytes: a TLS handshake, a half-close, a
    timeout, a new connection.
    """

    side: Literal["client", "server", "note"]
    data: bytes = b""
    note: str = ""


@dataclass(frozen=True, slots=True)
class ServerReply:
    """One whole reply (RFC 5321 §4.2): its code and its raw bytes, every line."""

    code: int
    """The reply code, or 0 when the first line does not start with three digits."""
    raw: bytes

    @property
    def status(self) -> str | None:
        """The enhanced status code of the last line (RFC 3463), if it has one."""
        last = self.raw.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        found = _STATUS.match(last[4:])
        return found.group().decode() if found else None

    @property
    def lines(self) -> list[bytes]:
        """The text of each line, without the code and separator."""
        return [line[4:].rstrip(b"\r") for line in self.raw.rstrip(b"\n").split(b"\n")]

    def __str__(self) -> str:
        """The reply as one line of text, its lines joined by `` | ``, and every control,
        format character and separator escaped (:func:`~smtpcore._textsafe.escape_unsafe`):
        the server chose these bytes, and summaries are read on a terminal."""
        text = self.raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r\n", " | ")
        return escape_unsafe(text)


class ServerFlood(ConnectionError):
    """The server sent more than any check is owed (:data:`MAX_REPLY`,
    :data:`MAX_REPLIES`, :data:`MAX_RECEIVED`): a failure, not something to wait out."""


class LineOverLimit(ServerFlood):
    """A line ran past the ``limit`` its reader gave (:meth:`WireClient.read_line`):
    the client stopped reading, and the reader says what the limit was for."""


def _code(line: bytes) -> int:
    digits = line[:3]
    if len(digits) == 3 and digits.isdigit() and digits.isascii():
        return int(digits)
    return 0


class WireClient:
    """One connection to an SMTP server, written to and read from as bytes.

    ``pause`` is slept between the pieces of a chunked write, so that the
    server's reads see the pieces apart (a hint, not a guarantee: TCP may
    still join them). ``timeout`` bounds each wait: a whole reply, a write,
    the TLS handshake, the wait for the server to close; each has one
    deadline, so a server that trickles bytes cannot stretch it. A caller
    that bounds several waits together passes its own ``deadline`` (a
    ``time.monotonic()`` value) to each.
    """

    def __init__(self, host: str, port: int, *, timeout: float, pause: float = 0.0) -> None:
        host = self.host = dial_name(host)  # A-labels, for the socket calls and TLS
        self.timeout = timeout
        self.pause = pause
        connect = Exchange("note", note=f"connect to {host_port(host, port)}")
        self.transcript: list[Exchange] = [connect]
        self.closed = False
        """Whether this client stopped reading: the server closed (a read found the end
        of the stream or a reset), or sent more than any check is owed. A failed write
        does not set it: the replies the server sent before it closed are still read."""
        self.server_closed = False
        """Whether the server ended the stream: a read found its end, or a reset.
        Only a read sets it, so a flood leaves it False."""
        self.write_failed = False
        """Whether a write did not go out whole (a reset, or its deadline passed); no
        later write goes out."""
        self.received = 0
        """Octets read from the server so far (at most :data:`MAX_RECEIVED`)."""
        self.replies = 0
        """Replies taken so far (at most :data:`MAX_REPLIES`)."""
        self._buffer = bytearray()
        self._scanned = 0
        """Where in the buffer the search for the end of a reply goes on: the lines
        before it are continuation lines."""
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=timeout
        )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- writing ----------------------------------------------------------

    def send(
        self, data: bytes, pieces: Sequence[bytes] | None = None, *, deadline: float | None = None
    ) -> None:
        """Write ``data``, in ``pieces`` (which join to ``data``) if given, by
        ``deadline`` (by default ``timeout`` from now for each piece).

        A failed write sets :attr:`write_failed` only: a server that answered and
        closed while a long write was going out (allowed after a refusal, RFC 5321
        §3.8) leaves its replies in the kernel, and the reads take them before they
        find the close. Nothing is written after a failed write, whose tail the
        server would read as the start of the next line.
        """
        if pieces is None:
            pieces = [data]
        assert b"".join(pieces) == data
        if self.write_failed:
            self.transcript.append(Exchange("note", note="not written: a write failed"))
            return
        for index, piece in enumerate(pieces):
            if index and self.pause:
                time.sleep(self.pause)
            self.transcript.append(Exchange("client", piece))
            try:
                # sendall's bound is the whole write (Python 3.5 and later).
                self.sock.settimeout(self._remaining(deadline))
                self.sock.sendall(piece)
            except OSError as exc:
                self.transcript.append(Exchange("note", note=f"write failed: {exc}"))
                self.write_failed = True
                return

    def shutdown_write(self) -> None:
        """Half-close: tell the server nothing more is coming (TCP FIN)."""
        self.transcript.append(Exchange("note", note="client half-closes (no more data)"))
        try:
            self.sock.settimeout(self.timeout)
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock = self.sock.unwrap()
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def start_tls(self, context: ssl.SSLContext, deadline: float | None = None) -> None:
        """The TLS handshake, by ``deadline`` (by default ``timeout`` from now); raises
        ``ssl.SSLError`` or ``OSError`` (``TimeoutError`` at the deadline) if it fails."""
        self.transcript.append(Exchange("note", note="TLS handshake"))
        if self._buffer:
            # The server wrote after its 220: plaintext that came before the handshake.
            self.transcript.append(Exchange("note", note="plaintext left unread before TLS"))
        # The handshake's timeout bounds the whole handshake (Python 3.5 and later).
        self.sock.settimeout(self._remaining(deadline))
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.transcript.append(Exchange("note", note=f"TLS up ({self.sock.version()})"))

    # -- reading ----------------------------------------------------------

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _remaining(self, deadline: float | None) -> float:
        """Seconds left until ``deadline`` (``timeout`` when there is none); raises
        ``TimeoutError`` once it has passed (a socket takes no timeout of zero or less)."""
        if deadline is None:
            return self.timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the deadline passed")
        return remaining

    def _fill(self, deadline: float) -> bool:
        """Read once more, by ``deadline``; False when the server closed (or reset)
        the connection. Raises ``TimeoutError`` at the deadline, ``ServerFlood``
        past the limits."""
        if self.closed:
            return False
        self.sock.settimeout(self._remaining(deadline))
        return self._took(self._recv())

    def _fill_if_waiting(self) -> bool:
        """Read once without waiting; False when nothing was waiting, or the server
        closed (or reset) the connection. Raises ``ServerFlood`` past the limits."""
        if self.closed:
            return False
        self.sock.settimeout(0.0)
        try:
            data = self._recv()
        except _NOTHING_WAITING:
            return False
        return self._took(data)

    def _recv(self) -> bytes:
        """One read: ``b""`` at the end of the stream, or a reset (a close, for what
        the checks need)."""
        try:
            return self.sock.recv(65536)
        except (TimeoutError, *_NOTHING_WAITING):
            raise
        except OSError as exc:
            self.transcript.append(Exchange("note", note=f"connection lost: {exc}"))
            return b""

    def _took(self, data: bytes) -> bool:
        """Keep ``data`` read from the server; False when it is the end of the stream."""
        if not data:
            self.transcript.append(Exchange("note", note="server closed the connection"))
            self.closed = self.server_closed = True
            return False
        self.received += len(data)
        if self.received > MAX_RECEIVED:
            self._flood(f"over {MAX_RECEIVED} octets on one connection")
        self.transcript.append(Exchange("server", data))
        self._buffer += data
        if len(self._buffer) > MAX_REPLY:
            self._flood(f"a reply over {MAX_REPLY} octets")
        return True

    def stop_reading(self, what: str) -> None:
        """Read no more from this connection, ``what`` saying why in the transcript: a
        reader gave up on a response, and what follows it is out of step."""
        self.transcript.append(Exchange("note", note=f"stopped reading: {what}"))
        self.closed = True

    def _flood(self, what: str, kind: type[ServerFlood] = ServerFlood) -> None:
        self.stop_reading(what)
        raise kind(what)

    @property
    def unread(self) -> bytes:
        """Bytes received and not yet taken as a reply."""
        return bytes(self._buffer)

    def _buffered_reply(self) -> ServerReply | None:
        """The first whole reply in the buffer, taken out of it, or None. Lines seen to
        be continuation lines (``250-``) are not scanned again: a reply trickled in
        costs time linear in its length."""
        start = self._scanned
        while (end := self._buffer.find(b"\n", start)) >= 0:
            if self._buffer[start + 3 : start + 4] != b"-":
                raw = bytes(self._buffer[: end + 1])
                self._take(end + 1)
                self.replies += 1
                if self.replies > MAX_REPLIES:
                    self._flood(f"over {MAX_REPLIES} replies on one connection")
                return ServerReply(_code(raw), raw)
            start = end + 1
        self._scanned = start
        return None

    def _take(self, size: int) -> None:
        """Drop the first ``size`` octets of the buffer, taken as a reply or a line."""
        del self._buffer[:size]
        self._scanned = 0

    def _next_reply(self, deadline: float) -> ServerReply | None:
        # Each read brings an octet at least, or ends the stream, and the octets
        # a connection may bring are bounded (MAX_RECEIVED).
        for _ in range(MAX_RECEIVED + 1):
            reply = self._buffered_reply()
            if reply is not None or not self._fill(deadline):
                return reply
        raise AssertionError("unreachable: each read brings an octet, or the close")

    def read_reply(self, deadline: float | None = None) -> ServerReply | None:
        """The next whole reply, or None if the server closed first.

        Raises ``TimeoutError`` if the whole reply is not in by ``deadline``, by
        default within ``timeout`` (one deadline, however its bytes trickle in).
        """
        started = time.monotonic()
        try:
            return self._next_reply(self._deadline() if deadline is None else deadline)
        except TimeoutError:
            waited = self.timeout if deadline is None else max(deadline - started, 0.0)
            note = f"no whole reply within {waited:.3g} s"
            self.transcript.append(Exchange("note", note=note))
            raise

    def read_waiting_replies(self) -> list[ServerReply]:
        """Every whole reply the server has already sent, without waiting: those
        buffered, and those that reads finding bytes waiting bring. A reply still on
        its way is left for a later read."""
        replies: list[ServerReply] = []
        # Each reply taken counts toward MAX_REPLIES, each read toward MAX_RECEIVED.
        for _ in range(MAX_RECEIVED + MAX_REPLIES + 1):
            reply = self._buffered_reply()
            if reply is not None:
                replies.append(reply)
            elif not self._fill_if_waiting():
                return replies
        raise AssertionError("unreachable: the limits end a flood first")

    def read_replies(self, count: int) -> list[ServerReply]:
        """Up to ``count`` replies, each within ``timeout``: fewer if the server closes first."""
        replies = []
        for _ in range(count):
            answer = self.read_reply()
            if answer is None:
                break
            replies.append(answer)
        return replies

    def receive(self, deadline: float | None = None) -> bytes:
        """What the server sent next, unframed: what is buffered, or one read by
        ``deadline`` (a ``time.monotonic()`` value; by default ``timeout`` from now);
        ``b""`` once it closed. Raises ``TimeoutError`` at the deadline. For a
        protocol framed by someone else (the POP3 client machine)."""
        if not self._buffer:
            self._fill(self._deadline() if deadline is None else deadline)
        data = bytes(self._buffer)
        self._take(len(data))
        return data

    def read_line(
        self, deadline: float | None = None, *, limit: int | None = None
    ) -> bytes | None:
        """The next line, its LF (and any CR) included, or None once the server closed
        with no whole line left; for a protocol framed by lines of its own (POP3).
        Raises ``TimeoutError`` if no whole line is in by ``deadline`` (by default
        ``timeout`` from now), and :class:`LineOverLimit`, having stopped reading,
        where the line, whole or not, passes ``limit`` octets: what the reader keeps
        is bounded by its own need, not only by :data:`MAX_REPLY`."""
        deadline = self._deadline() if deadline is None else deadline
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if limit is not None and (end + 1 if end >= 0 else len(self._buffer)) > limit:
                self._flood(f"a line past the {limit} octets left to its reader", LineOverLimit)
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                self._take(end + 1)
                return line
            start = len(self._buffer)
            try:
                if not self._fill(deadline):
                    return None
            except TimeoutError:
                note = "no whole line by the deadline"
                self.transcript.append(Exchange("note", note=note))
                raise

    def read_lines_until_closed(self) -> list[bytes]:
        """Every line until the server closes, or until ``timeout`` has passed (one
        deadline for the whole wait): :meth:`read_until_closed` for lines."""
        deadline = self._deadline()
        lines: list[bytes] = []
        while True:
            try:
                line = self.read_line(deadline)
            except TimeoutError:
                return lines
            if line is None:
                return lines
            lines.append(line)

    def command(self, line: bytes) -> ServerReply | None:
        """Send one line (CRLF added) and read its reply."""
        self.send(line + b"\r\n")
        return self.read_reply()

    def read_until_closed(self) -> list[ServerReply]:
        """Every reply until the server closes, or until ``timeout`` has passed
        (one deadline for the whole wait, however busy the server keeps it)."""
        deadline = self._deadline()
        replies: list[ServerReply] = []
        while True:
            try:
                answer = self._next_reply(deadline)
            except TimeoutError:
                note = f"the server did not close within {self.timeout:g} s"
                self.transcript.append(Exchange("note", note=note))
                return replies
            if answer is None:
                return replies
            replies.append(answer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


_SHOWN_WHOLE: Final = 400
_SHOWN_HEAD: Final = 200
_SHOWN_TAIL: Final = 100
"""Of a read or write over :data:`_SHOWN_WHOLE` octets, :func:`format_transcript` shows
this many last octets and :data:`_SHOWN_HEAD` first ones, and :func:`excerpt_reads`
keeps as many."""


def excerpt_reads(transcript: Sequence[Exchange]) -> list[Exchange]:
    """``transcript`` with each long server read cut to the octets
    :func:`format_transcript` would show of it, its first and last, with a note
    between that counts the octets dropped: for a session whose reads no longer
    matter, that a check of many sessions holds little of each. Hide what must not
    be shown first: a secret cut here is no longer found whole."""
    out: list[Exchange] = []
    for entry in transcript:
        data = entry.data
        if entry.side != "server" or len(data) <= _SHOWN_WHOLE:
            out.append(entry)
            continue
        dropped = len(data) - _SHOWN_HEAD - _SHOWN_TAIL
        out += (
            Exchange("server", data[:_SHOWN_HEAD]),
            Exchange("note", note=f"{dropped} octets of this read not kept"),
            Exchange("server", data[-_SHOWN_TAIL:]),
        )
    return out


def format_transcript(transcript: Sequence[Exchange]) -> str:
    """The transcript as text: ``C:`` and ``S:`` lines holding each write and read as a
    Python bytes literal (exact, CR, LF and NUL included), and ``--`` notes."""
    out = []
    for entry in transcript:
        if entry.side == "note":
            out.append(f"-- {entry.note}")
        else:
            mark = "C:" if entry.side == "client" else "S:"
            data = entry.data
            if len(data) > _SHOWN_WHOLE:
                dropped = len(data) - _SHOWN_HEAD - _SHOWN_TAIL
                head, tail = data[:_SHOWN_HEAD], data[-_SHOWN_TAIL:]
                shown = f"{head!r} ... ({dropped} octets) ... {tail!r}"
            else:
                shown = repr(data)
            out.append(f"{mark} {shown}")
    return "\n".join(out)
