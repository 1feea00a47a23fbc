"""The client side of a POP3 session, with no I/O (RFC 1939 and its extensions).

Send commands with :meth:`ClientConnection.send` and write the bytes it
returns; feed what the server sends to :meth:`ClientConnection.receive_data`
and take ``Ok``, ``Err`` or ``Continue`` events from
:meth:`ClientConnection.next_event`. The machine knows from each command
whether a ``+OK`` opens multi-line content, which it unstuffs and streams as
``ResponseData`` chunks ending with ``EndOfResponse``: no message is held
whole, and a server that never ends a line or a response cannot grow memory.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Final

from smtpcore._dotstuff import HELD_BACK, DotDecoder
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import BYTES_LIKE, LINE_TOO_LONG, FramingPolicy, ReceiveBuffer, not_bytes
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore._words import ascii_upper
from smtpcore.pop3._apop import find_apop_timestamp
from smtpcore.pop3._commands import format_command
from smtpcore.pop3._events import (
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    Capa,
    Command,
    ConnectionClosed,
    Continue,
    EndOfResponse,
    Err,
    Event,
    Ok,
    Response,
    ResponseData,
    Stls,
    Utf8,
    non_ascii_login,
)
from smtpcore.pop3._responses import parse_capabilities, parse_status_line
from smtpcore.pop3._state import ALONE, COMMAND_STATES, DISCARDING, MOVES, Move, State

__all__ = ["ClientConnection"]

_MAX_CAPABILITIES: Final = 16384
"""Octets of CAPA content the machine keeps to learn about PIPELINING."""
_MECHANISM_RE: Final = re.compile(rb"[A-Za-z0-9_-]{1,20}")
"""A SASL mechanism name (RFC 4422 §3.1: upper case on the wire, compared in any case)."""
_MAX_MECHANISM_LINE: Final = 22
"""A mechanism name and its CRLF."""

Sent = Command | AuthResponse


class ClientConnection:
    """A sans-I/O POP3 client session.

    ``hostname`` is this host's own name (POP3 never sends it; it is kept for
    logs and for symmetry with SMTP). ``pipelining`` forces RFC 2449
    pipelining on or off; by default it is used once CAPA lists PIPELINING.
    """

    def __init__(
        self,
        hostname: str,
        *,
        max_response_line: int = 2048,
        max_command_line: int = 255,
        max_auth_line: int = 12288,
        pipelining: bool | None = None,
    ) -> None:
        self.hostname = hostname
        self.max_response_line = max_response_line
        self.max_command_line = max_command_line
        self.max_auth_line = max_auth_line
        self._pipelining = pipelining

        self._buffer = ReceiveBuffer()
        self._state = State.GREETING
        self._outstanding: deque[Sent] = deque()
        self._head_move: Move | None = None
        self._decoder: DotDecoder | None = None
        self._content_ended = False
        self._capa: bytearray | None = None
        self._mechanism_line: bytearray | None = None
        self._error: RemoteProtocolError | None = None
        self.tls = False
        """Whether TLS is active (set by :meth:`tls_started`)."""
        self.utf8 = False
        """Whether the server accepted UTF8 (RFC 6856)."""
        self.capabilities: dict[str, tuple[str, ...]] | None = None
        """What the last CAPA answer listed; ``None`` before CAPA and after STLS."""
        self.apop_timestamp: str | None = None
        """The ``<...@...>`` timestamp of the greeting, for :func:`apop_digest`."""
        self.answered: Sent | None = None
        """The command the last ``Ok``, ``Err`` or ``Continue`` answered."""
        self.bare_lf_status_line = False
        """Whether the last status line read ended with a bare LF (RFC 1939 §3 requires
        CRLF). Such a line is read, as poplib and mpop read it. While a multi-line
        answer is under way, the last status line is the ``+OK`` that opened it: an
        adapter names the bare LF when that answer never ends, since that server's
        LF.LF is content here. A later line ended by CRLF clears it, so a server that
        ended only its greeting with LF is not blamed for every later timeout."""
        self._answer_tail = b""
        """The last three octets the multi-line answer under way consumed, for
        :attr:`bare_lf_dot_line`."""
        self.unread_after_end = 0
        """Octets the server sent that the session's end left unread: those behind
        QUIT's answer or an error in the read that brought it, and any received after
        (dropped, so that :attr:`buffered` stays bounded). Nothing should follow QUIT's
        answer but the close (RFC 1939 §6): a strict client or a fuzzer can tell a
        server that says more than it was asked."""

    # -- the four verbs -------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def buffered(self) -> int:
        """Octets received from the server and not yet turned into events.

        Counts the unread bytes and the CAPA listing kept to learn about
        PIPELINING; once :meth:`next_event` has returned ``NEED_DATA``, at
        most :attr:`max_buffered` beyond the last piece given to
        :meth:`receive_data`. A fuzzer asserts memory stays bounded with it.
        In ERROR or CLOSED, none: no response will be read from it.
        """
        return len(self._buffer) + len(self._capa or b"") + len(self._mechanism_line or b"")

    @property
    def bare_lf_dot_line(self) -> bool:
        """Whether the multi-line answer under way, not ended, has so far ended with a
        line "." ended by a bare LF (LF "." LF, or "." LF as its first line): how a
        server that ends its lines with LF (RFC 1939 §3 requires CRLF) ends an answer,
        which only CRLF.CRLF ends here, so that the answer goes on waiting for more.
        An adapter whose wait for the rest times out names that cause. Told from the
        last octets read when asked: nothing is scanned as content streams."""
        if self._decoder is None or self._content_ended:
            return False
        return (self._answer_tail + self._buffer.view()[-3:]).endswith(b"\n.\n")

    @property
    def max_buffered(self) -> int:
        """The bound on :attr:`buffered` now: the limit on the line under way
        (``max_auth_line`` while AUTH awaits its answer, ``max_response_line``
        otherwise) or, in a multi-line response, the octets that may
        start the terminator and what the machine keeps of the listing: CAPA's, or
        the mechanism name under way of a bare AUTH's. A driver reading what no
        command asked for stops past it, and a fuzzer holds the machine to it."""
        if self._decoder is None:
            return self._line_limit()
        if self._capa is not None:
            return HELD_BACK + _MAX_CAPABILITIES
        if self._mechanism_line is not None:
            return HELD_BACK + _MAX_MECHANISM_LINE
        return HELD_BACK

    @property
    def pipelining(self) -> bool:
        """Whether commands may be sent before the previous ones are answered."""
        if self._pipelining is not None:
            return self._pipelining
        return self.capabilities is not None and "PIPELINING" in self.capabilities

    @property
    def utf8_login(self) -> bool:
        """Whether CAPA listed ``UTF8 USER``: only then may a user name or password in
        USER, PASS or APOP be non-ASCII (RFC 6856 §2.1). AUTH needs no capability for
        it, nor the UTF8 command first."""
        arguments = (self.capabilities or {}).get("UTF8", ())
        return any(ascii_upper(argument) == "USER" for argument in arguments)

    @property
    def outstanding(self) -> tuple[Sent, ...]:
        """The commands sent and not yet (completely) answered, oldest first."""
        return tuple(self._outstanding)

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the server; ``b""`` means it closed its side.

        In TLS_PENDING, bytes are plaintext from before the handshake: a man
        in the middle's injected responses (RFC 2595 §4). Dropped, as are bytes
        that come once the session is CLOSED or in ERROR (counted first, so the
        type is checked before anything changes).
        """
        if not isinstance(data, BYTES_LIKE):
            raise not_bytes(data)
        discard = self._state in DISCARDING
        if discard and self._state is not State.TLS_PENDING:
            self.unread_after_end += len(data)
        self._buffer.receive(data, discard=discard)

    def next_event(self) -> Event | NoEvent:
        """The next event from the server, ``NEED_DATA`` or ``PAUSED``.

        ``PAUSED`` means nothing is outstanding: send a command first.
        """
        if self._state is State.ERROR:
            raise RemoteProtocolError("the connection is in the ERROR state")
        try:
            return self._next_event()
        except RemoteProtocolError as exc:
            self._end(State.ERROR)
            self._error = exc
            raise

    def send(self, event: Event) -> bytes:
        """Check ``event`` against the state, queue it, and return its bytes."""
        if isinstance(event, AuthResponse):
            return self._send_auth_response(event)
        if not isinstance(event, Command):
            raise LocalProtocolError(f"a client does not send {type(event).__name__}")
        state = self._state
        if state not in COMMAND_STATES:
            raise LocalProtocolError(f"no command may be sent in the {state.name} state")
        if not self._outstanding and self._decoder is None and self._buffer:
            self._end(State.ERROR)
            self._error = RemoteProtocolError("the server sent a response no command asked for")
            raise self._error
        if (self._outstanding or self._decoder is not None) and not self.pipelining:
            raise LocalProtocolError(
                "wait for the answer first: the server did not list PIPELINING (RFC 2449 §6.6)"
            )
        last = self._outstanding[-1] if self._outstanding else self.answered
        possible = self._possible_states()
        if not possible <= COMMAND_STATES or (
            type(last) in ALONE and (self._outstanding or self._decoder is not None)
        ):
            raise LocalProtocolError(f"nothing may be pipelined behind {type(last).__name__}")
        if non_ascii_login(event) and not self.utf8_login:
            raise LocalProtocolError(
                f"a non-ASCII name or password in {event.keyword} needs a server that lists "
                "UTF8 USER in CAPA (RFC 6856 §2.1); AUTH carries UTF-8 without it"
            )
        if isinstance(event, Apop) and " " in event.name:
            # RFC 1939 §3 and §7 have name and digest one space apart: Dovecot answers
            # "-ERR Invalid parameters" and may count it. USER takes the rest of its line.
            raise LocalProtocolError(f"APOP name may not hold a space: {event.name!r}")
        if not any((s, type(event)) in MOVES for s in possible):
            raise LocalProtocolError(f"{event.keyword} is not valid in the {state.name} state")
        data = format_command(event)
        if len(data) > self.max_command_line:
            raise LocalProtocolError(
                f"a command line is at most {self.max_command_line} octets (RFC 2449 §4)"
            )
        self._outstanding.append(event)
        if len(self._outstanding) == 1 and self._decoder is None:
            self._enter_head()
        return data

    def send_failed(self) -> None:
        """The bytes of the last ``send`` never reached the server."""
        self._end(State.ERROR)

    def _end(self, state: State) -> None:
        """Enter CLOSED or ERROR, where no response is read any more: what is held of
        one (unread bytes, a multi-line response begun, a CAPA listing) is dropped,
        so that a machine kept around holds no more than :attr:`max_buffered`."""
        self._state = state
        self.unread_after_end += len(self._buffer)
        self._buffer.clear()
        self._decoder = None
        self._content_ended = False
        self._capa = None
        self._mechanism_line = None

    def _move(self, state: State) -> None:
        """Take a move of the state table (RFC 1939 §6: QUIT's answer ends the session)."""
        if state is State.CLOSED:
            self._end(state)
        else:
            self._state = state

    def tls_started(self) -> None:
        """The TLS handshake after STLS is done: capabilities must be asked again."""
        if self._state is not State.TLS_PENDING:
            raise LocalProtocolError("tls_started() outside the TLS_PENDING state")
        self._buffer.clear()
        self.tls = True
        self.capabilities = None
        self._state = State.AUTHORIZATION

    # -- sending --------------------------------------------------------

    def _send_auth_response(self, event: AuthResponse) -> bytes:
        if self._state is not State.SASL or self._outstanding:
            raise LocalProtocolError("an AUTH response answers a continuation")
        data = format_command(event)
        if len(data) > self.max_auth_line:
            raise LocalProtocolError(f"an AUTH response line is at most {self.max_auth_line}")
        self._outstanding.append(event)
        self._enter_head()
        return data

    def _possible_states(self) -> set[State]:
        """Every state the outstanding commands may leave the session in."""
        states = {self._state}
        for index, command in enumerate(self._outstanding):
            following: set[State] = set()
            for state in states:
                move = (self._head_move if index == 0 else None) or MOVES.get(
                    (state, type(command))
                )
                if move is None:
                    following.add(state)
                    continue
                following.add(move.on_ok or state)
                following.add(move.on_err or state)
                if move.on_continue is not None:
                    following.add(move.on_continue)
            states = following
        return states

    def _enter_head(self) -> None:
        """The oldest outstanding command is the one the next answer is for."""
        if not self._outstanding:
            self._head_move = None
            return
        move = MOVES.get((self._state, type(self._outstanding[0])))
        self._head_move = move
        if move is not None and move.during is not None:
            self._state = move.during

    # -- reading --------------------------------------------------------

    def _next_event(self) -> Event | NoEvent:
        state = self._state
        if state is State.CLOSED:
            return ConnectionClosed()
        if state is State.TLS_PENDING:
            if self._buffer.peer_closed:
                self._end(State.CLOSED)  # the server left before the handshake
                return ConnectionClosed()
            return PAUSED
        if self._decoder is not None:
            return self._next_content()
        if state is not State.GREETING and not self._outstanding:
            if self._buffer:
                raise RemoteProtocolError("the server sent a response no command asked for")
            if self._buffer.peer_closed:
                self._end(State.CLOSED)
                return ConnectionClosed()
            return PAUSED
        head = self._outstanding[0] if self._outstanding else None
        sasl = isinstance(head, (Auth, AuthResponse))
        line = self._next_line(self._line_limit())
        if line is None:
            if self._buffer.peer_closed:
                if self._buffer:
                    raise RemoteProtocolError("the server closed in the middle of a line")
                self._end(State.CLOSED)
                return ConnectionClosed()
            return NEED_DATA
        response = parse_status_line(line, continuation=sasl)
        if head is None:
            return self._greeted(response)
        return self._answered(head, response)

    def _line_limit(self) -> int:
        """The octets the line under way may have: an AUTH continuation's
        ``max_auth_line`` while AUTH awaits its answer (RFC 5034 §4), a status
        line's ``max_response_line`` otherwise."""
        head = self._outstanding[0] if self._outstanding else None
        if isinstance(head, (Auth, AuthResponse)):
            return self.max_auth_line
        return self.max_response_line

    def _next_line(self, limit: int) -> bytes | None:
        view = self._buffer.view()
        if len(view) > limit and view.find(b"\n", 0, limit) < 0:
            raise RemoteProtocolError(f"a response line is longer than {limit} octets")
        line = self._buffer.next_line(limit)
        if line is LINE_TOO_LONG:
            raise RemoteProtocolError(f"a response line is longer than {limit} octets")
        if line is None:
            return None
        self.bare_lf_status_line = not line.endswith(b"\r\n")
        return line[:-1] if self.bare_lf_status_line else line[:-2]

    def _greeted(self, response: Response) -> Event:
        if isinstance(response, Ok):
            self._state = State.AUTHORIZATION
            self.apop_timestamp = find_apop_timestamp(response.text)
        else:
            self._end(State.CLOSED)
        return response

    def _answered(self, head: Sent, response: Response) -> Event:
        move = self._head_move
        self._head_move = None
        self._outstanding.popleft()
        self.answered = head
        if isinstance(response, Continue):
            if move is None or move.on_continue is None:
                # AUTH pipelined behind a PASS the server accepted, say: it is no
                # longer in the state where a challenge can come.
                raise RemoteProtocolError(
                    f"a continuation to {type(head).__name__}, "
                    f"which is not valid in the {self._state.name} state"
                )
            self._state = move.on_continue
            self._enter_head()
            return response
        if isinstance(response, Err):
            if move is not None and move.on_err is not None:
                self._move(move.on_err)
            self._enter_head()
            return response
        assert isinstance(response, Ok)
        if move is None:
            raise RemoteProtocolError(
                f"+OK to {type(head).__name__}, which is not valid in the {self._state.name} state"
            )
        if move.on_ok is not None:
            self._move(move.on_ok)
        if isinstance(head, Stls):
            # Anything already behind the +OK was injected before TLS (RFC 2595 §4).
            self._buffer.clear()
        elif isinstance(head, Utf8):
            self.utf8 = True
        if isinstance(head, Command) and head.multiline:
            self._decoder = DotDecoder(FramingPolicy.lenient())
            self._answer_tail = b"\n"  # the status line's end: "." LF may come first
            self._capa = bytearray() if isinstance(head, Capa) else None
            self._mechanism_line = bytearray() if isinstance(head, AuthMechanisms) else None
        else:
            self._enter_head()
        return response

    def _next_content(self) -> Event | NoEvent:
        if self._content_ended:
            return self._end_content()
        decoder = self._decoder
        assert decoder is not None
        while self._buffer:
            view = self._buffer.view()
            data, consumed, ended = decoder.decode(view)
            if consumed:  # no call here: this runs once per decode, on RETR's path
                start = consumed - 3 if consumed > 3 else 0
                self._answer_tail = (self._answer_tail + view[start:consumed])[-3:]
            self._buffer.consume(consumed)
            capa = self._capa
            if capa is not None and len(capa) < _MAX_CAPABILITIES:
                capa += data[: _MAX_CAPABILITIES - len(capa)]
            if self._mechanism_line is not None:
                self._check_mechanisms(data, ended)
            if ended:
                self._content_ended = True
                return ResponseData(data) if data else self._end_content()
            if data:
                return ResponseData(data)
            if not consumed:
                break
        if self._buffer.peer_closed:
            raise RemoteProtocolError("the server closed in the middle of a multi-line response")
        return NEED_DATA

    def _check_mechanisms(self, data: bytes, ended: bool) -> None:
        """Every line of the answer to a bare AUTH must be a SASL mechanism name (RFC
        4422 §3.1). No RFC defines the command: a server that answered it with one
        line would have the client read what follows (the server's next answer, or
        nothing ever) as the listing; a line that is no name, such as ``+OK ...`` or
        ``-ERR``, shows that, rather than an answer taken for the wrong command."""
        pending = self._mechanism_line
        assert pending is not None
        pending += data
        *lines, rest = bytes(pending).split(b"\n")
        for line in lines:
            name = line.removesuffix(b"\r")
            if not _MECHANISM_RE.fullmatch(name) or name.upper() == b"-ERR":
                raise RemoteProtocolError(
                    f"the answer to a bare AUTH has a line that is no SASL mechanism name "
                    f"(RFC 4422 §3.1): {name[:40]!r}; the server may answer it with one line"
                )
        if len(rest) > _MAX_MECHANISM_LINE or (ended and rest):
            raise RemoteProtocolError(
                "the answer to a bare AUTH has a line longer than a SASL mechanism name "
                "(RFC 4422 §3.1)"
            )
        pending[:] = rest

    def _end_content(self) -> Event:
        self._decoder = None
        self._content_ended = False
        self._mechanism_line = None
        if self._capa is not None:
            self.capabilities = parse_capabilities(bytes(self._capa))
            self._capa = None
        self._enter_head()
        return EndOfResponse()
