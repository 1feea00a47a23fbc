"""Two small pieces of the POP3 server session: the SASL exchange and the TOP cut.

:class:`SASLExchange` runs one ``AUTH`` (RFC 5034) between the machine's
events and an :mod:`smtpcore.sasl` server mechanism; :func:`top_chunks`
cuts a message after its header and ``n`` body lines (RFC 1939 §7, TOP).
Neither does any I/O.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

from smtpcore.handler import _runs_in_thread
from smtpcore.maildrop import MechanismFactory
from smtpcore.pop3 import Auth, AuthResponse, Continue, Err
from smtpcore.sasl import (
    Challenge,
    ChannelBindings,
    Failure,
    ServerMechanism,
    Step,
    Success,
    UnexpectedInitialResponse,
    needs_channel_binding,
)

__all__ = ["BrokenByClient", "SASLAnswer", "SASLExchange", "top_chunks", "top_chunks_now"]

logger = logging.getLogger("smtpcore.pop3.server")

_TEMPORARY: Final = Err("Temporary authentication failure", code="SYS/TEMP")


@dataclass(frozen=True, slots=True)
class BrokenByClient:
    """An exchange the client broke in a way only the mechanism can tell (an initial
    response sent to CRAM-MD5, RFC 5034 §4): answer ``response`` at once, as no
    failed login, and tell the machine it was a bad command
    (:meth:`~smtpcore.pop3.ServerConnection.count_bad_command`)."""

    response: Err


SASLAnswer: TypeAlias = Continue | Err | Success | Failure | BrokenByClient
"""What a step of an exchange asks the session to do (:class:`SASLExchange`)."""


class SASLExchange:
    """One session's AUTH exchanges: each answer is a ``Continue`` to send, an ``Err``
    to send, a :class:`~smtpcore.sasl.Success` (log the user in), a
    :class:`~smtpcore.sasl.Failure` (a failed login) or a :class:`BrokenByClient`
    (a bad command).

    Additional data with success (SCRAM's server-final message) cannot ride
    on POP3's ``+OK``: it goes out in a last ``+`` line, whose answer must be
    empty (RFC 5034 §4).

    ``channel_bindings`` (the TLS layer's channel binding data, by type) go
    to every mechanism; set both attributes anew after a handshake.
    """

    def __init__(
        self,
        mechanisms: Mapping[str, MechanismFactory],
        channel_bindings: ChannelBindings | None = None,
    ) -> None:
        self.mechanisms = dict(mechanisms)
        self.channel_bindings = dict(channel_bindings or {})
        self.name = ""
        """The mechanism of the exchange under way, or of the last one."""
        self._mechanism: ServerMechanism | None = None
        self._final: Success | None = None
        self._in_thread = False

    def in_thread(self, event: Auth | AuthResponse) -> bool:
        """Whether to work out the answer to ``event`` in a worker thread: a step of a
        mechanism of an ``Authenticator(in_thread=True)``, whose checks may be slow."""
        if isinstance(event, Auth):
            return _runs_in_thread(self.mechanisms.get(event.mechanism))
        return self._in_thread and self._mechanism is not None

    def start(self, event: Auth) -> SASLAnswer:
        """The answer to ``AUTH mechanism [initial-response]``.

        What a mechanism or its callables raise comes out: the session tells the
        application's failure from its own cancellation, and starts afresh."""
        factory = self.mechanisms.get(event.mechanism)
        if factory is None:
            return Err("Unsupported authentication mechanism")
        self.name, self._final, self._mechanism = event.mechanism, None, None
        self._in_thread = _runs_in_thread(factory)
        mechanism = factory()
        bindings = self.channel_bindings
        plus_offered = bool(bindings) and any(map(needs_channel_binding, self.mechanisms))
        mechanism.bind_channel(bindings, plus_offered=plus_offered)
        self._mechanism = mechanism
        return self._answer(mechanism.start(event.initial_response))

    def step(self, event: AuthResponse) -> SASLAnswer:
        """The answer to a line that answers a ``+`` challenge (what the mechanism
        raises comes out, as from :meth:`start`)."""
        mechanism = self._mechanism
        if event.cancel or mechanism is None:
            refusal = self.abandon()
            # RFC 5034 §4: "*" gets -ERR; after the mechanism refused the credentials
            # (a token's error challenge, RFC 7628 §3.2.2) that -ERR is a failed login.
            return Err("Authentication cancelled") if refusal is None else refusal
        final = self._final
        if final is not None:
            self._final = None
            return self._answer(final if not event.data else Failure("unexpected data"))
        return self._answer(mechanism.step(event.data))

    def abandon(self) -> Failure | None:
        """End the exchange under way without a step: the client cancelled it (``*``),
        or the machine could not read its answer (not base64, too long: RFC 5034 §4).
        Gives the mechanism's :attr:`~smtpcore.sasl.ServerMechanism.refusal`: once it
        judged and refused the credentials (a token's error challenge, RFC 7628
        §3.2.2) the exchange was a failed login however it ends. None when nothing
        was judged, or no exchange is under way."""
        mechanism = self._mechanism
        self._mechanism = self._final = None
        return None if mechanism is None else mechanism.refusal

    def fresh(self) -> SASLExchange:
        """A new exchange with the same mechanisms and channel bindings, for a session
        whose exchange was abandoned to a worker thread still running its step."""
        return SASLExchange(self.mechanisms, self.channel_bindings)

    def _answer(self, step: Step) -> SASLAnswer:
        if isinstance(step, Challenge):
            return Continue(step.data)
        if isinstance(step, Success) and step.data is not None:
            self._final = Success(step.authzid, step.authcid)
            return Continue(step.data)
        self._mechanism = None
        if isinstance(step, Failure) and step.callback_error:
            # The application's mistake, never the client's failed login.
            logger.error("SASL %s failed: %s", self.name, step.reason)
        if isinstance(step, UnexpectedInitialResponse):
            # RFC 5034 §4: "-ERR", and no login was tried, so none failed.
            return BrokenByClient(Err(f"{self.name} takes no initial response"))
        if isinstance(step, Failure) and step.temporary:
            return _TEMPORARY
        return step


class _Top:
    """Cuts content after the header and ``lines`` body lines, fed content whose line
    ends are LF alone (the caller folds CRLF and CR)."""

    __slots__ = ("_body_lines", "_last", "_lines")

    def __init__(self, lines: int) -> None:
        self._lines = lines
        self._body_lines: int | None = None
        self._last = b"\n"

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """The part of ``data`` to send, and whether the cut is reached."""
        start = 0
        if self._body_lines is None:
            index = (self._last + data).find(b"\n\n")
            if index < 0:
                self._last = data[-1:] or self._last
                return data, False
            start = index + 1
            self._body_lines = 0
        position = start
        while self._body_lines < self._lines:
            newline = data.find(b"\n", position)
            if newline < 0:
                self._last = data[-1:] or self._last
                return data, False
            self._body_lines += 1
            position = newline + 1
        return data[:position], True


class _TopReader:
    """Cuts raw message chunks (any line ends) at the end of ``TOP``'s body lines."""

    def __init__(self, lines: int) -> None:
        self._cutter = _Top(lines)
        self._pending_cr = False

    def feed(self, raw: bytes) -> tuple[bytes, bool]:
        """The part of ``raw`` to send, line ends as LF, and whether the cut is reached."""
        chunk = b"\r" + raw if self._pending_cr else raw
        self._pending_cr = chunk.endswith(b"\r")  # maybe half of a CRLF
        if self._pending_cr:
            chunk = chunk[:-1]
        return self._cutter.feed(chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))

    def finish(self) -> bytes:
        """What is left once the message ended before the cut (a last bare CR)."""
        return self._cutter.feed(b"\n")[0] if self._pending_cr else b""


async def top_chunks(chunks: AsyncIterator[bytes], lines: int) -> AsyncIterator[bytes]:
    """The header of a message and its first ``lines`` body lines (RFC 1939 §7).

    Line ends come out as LF; the server machine sends them as CRLF. A chunk
    comes out for each chunk in, empty or not, so that the reader can tell a
    message that gives nothing but empty chunks.
    """
    reader = _TopReader(lines)
    async for raw in chunks:
        data, done = reader.feed(raw)
        yield data
        if done:
            return
    if last := reader.finish():
        yield last


def top_chunks_now(chunks: Iterator[bytes], lines: int) -> Iterator[bytes]:
    """:func:`top_chunks` of a message read without waiting (a plain iterator)."""
    reader = _TopReader(lines)
    for raw in chunks:
        data, done = reader.feed(raw)
        yield data
        if done:
            return
    if last := reader.finish():
        yield last
