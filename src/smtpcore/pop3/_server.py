"""The server side of a POP3 session, with no I/O (RFC 1939 and its extensions).

Feed it the client's bytes with :meth:`ServerConnection.receive_data`, take
commands from :meth:`ServerConnection.next_event`, answer each with ``Ok`` or
``Err`` (then, for a multi-line command, ``ResponseData`` chunks and
``EndOfResponse``) through :meth:`ServerConnection.send`, and write the bytes
it returns. The machine parses one command at a time and pauses until it has
been answered, so pipelined commands (RFC 2449 §6.6) are answered in order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, Final, NamedTuple

from smtpcore._dotstuff import DotEncoder
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._hostname import checked_hostname
from smtpcore._lines import LINE_TOO_LONG, FramingPolicy, ReceiveBuffer
from smtpcore._numbers import is_digits
from smtpcore._sentinels import NEED_DATA, PAUSED, NoEvent
from smtpcore._words import ascii_upper, listed
from smtpcore.pop3._apop import apop_timestamp, find_apop_timestamp, timestamp_host
from smtpcore.pop3._commands import (
    KEYWORDS,
    CommandSyntaxError,
    Parser,
    parse_auth_response,
    parse_command_line,
)
from smtpcore.pop3._events import (
    MECHANISM_NAME,
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    BadCommand,
    Command,
    ConnectionClosed,
    Continue,
    EndOfResponse,
    Err,
    Event,
    Ok,
    Pass,
    ResponseData,
    Stls,
    User,
    Utf8,
)
from smtpcore.pop3._state import DISCARDING, MOVES, Move, State
from smtpcore.pop3._utf8_content import HeaderScan

__all__ = ["ServerConnection"]


def _mechanism_names(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` upper-cased in ASCII alone, each a SASL mechanism name (RFC 4422 §3.1)
    as CAPA's SASL line lists them; ValueError otherwise (a space would list two
    names, a line break end the line, and ``"pla\u0131n"``, which ``str.upper()``
    made PLAIN, is none); TypeError for one str."""
    upper = tuple(map(ascii_upper, listed("sasl_mechanisms", names)))
    for name in upper:
        if not MECHANISM_NAME.fullmatch(name):
            raise ValueError(f"not a SASL mechanism name: {name!r}")
    return upper


_AUTHORIZATION: Final = frozenset({State.AUTHORIZATION, State.USER})
_SECRET_LINE: Final = re.compile(rb"[ \t]*(?:PASS|AUTH)", re.IGNORECASE)
"""A line that starts as PASS (its argument is the password) or as AUTH (its initial
response may be), a space left out after the keyword included."""
_NEED_TLS: Final = Err("Authentication needs TLS: send STLS first", code="AUTH")
_SEQUENCE_ERRORS: Final[dict[tuple[str, State], Err]] = {
    ("PASS", State.AUTHORIZATION): Err("Send USER first"),
    ("PASS", State.TRANSACTION): Err("Already logged in"),
    ("USER", State.TRANSACTION): Err("Already logged in"),
    ("APOP", State.TRANSACTION): Err("Already logged in"),
    ("AUTH", State.TRANSACTION): Err("Already logged in"),
    ("STLS", State.TRANSACTION): Err("STLS is only valid before logging in"),
    ("STLS", State.USER): Err("STLS is only valid before USER"),
    ("UTF8", State.TRANSACTION): Err("UTF8 is only valid before logging in"),
}
_NOT_LOGGED_IN: Final = Err("Not logged in")
_WRONG_STATE: Final = Err("Command not valid in this state")


class _Offered(NamedTuple):
    """The optional commands a machine offers: the key of its command tables."""

    user: bool
    apop: bool
    stls: bool
    top: bool
    uidl: bool
    utf8: bool


@functools.lru_cache(maxsize=64)
def _command_tables(offered: _Offered) -> tuple[dict[str, Parser], dict[str, Parser]]:
    """The commands a session knows, by keyword, without AUTH and with it (AUTH is a
    command only while there are mechanisms to offer): built once per configuration
    and shared, never changed, by every connection of a server, which then holds
    no table of its own."""
    excluded = set()
    if not offered.user:
        excluded |= {"USER", "PASS"}
    if not offered.apop:
        excluded.add("APOP")
    if not offered.stls:
        excluded.add("STLS")
    if not offered.top:
        excluded.add("TOP")
    if not offered.uidl:
        excluded.add("UIDL")
    if not offered.utf8:
        excluded.add("UTF8")
    with_auth = {keyword: parse for keyword, parse in KEYWORDS.items() if keyword not in excluded}
    without_auth = {keyword: parse for keyword, parse in with_auth.items() if keyword != "AUTH"}
    return without_auth, with_auth


_USER_TAG: Final = " USER"
_LOGGED_IN: Final = frozenset({State.TRANSACTION, State.UPDATE})


_NEVER: Final = "NEVER"


def _checked_policy(name: str, value: str | int | None, *, never: bool) -> str | None:
    """``value`` as CAPA writes it, if it can: RFC 2449 §9's ``1*DIGIT [SP "USER"]``
    (``delay-secs``; ``expire-policy`` takes ``NEVER`` too), an int as its decimal
    digits. The literals ``USER`` and ``NEVER`` are case-insensitive (RFC 5234 §2.3),
    taken in any ASCII case and written upper-case. ``ValueError`` for another value,
    ``TypeError`` for a value neither str nor int (a bool is no number of days), as
    for any option the machine could not write."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"{name} is a str or an int, not {type(value).__name__}")
    text = str(value)  # a negative int's "-" is refused below, as "-1" is
    number, tag = text, ""
    if ascii_upper(text[-len(_USER_TAG) :]) == _USER_TAG:
        number, tag = text[: -len(_USER_TAG)], _USER_TAG
    if is_digits(number):
        return number + tag
    if never and ascii_upper(text) == _NEVER:
        return _NEVER
    grammar = '1*DIGIT [SP "USER"] or "NEVER"' if never else '1*DIGIT [SP "USER"]'
    raise ValueError(f"{name} is {grammar} (RFC 2449 §9), not {value!r}")


class ServerConnection:
    """A sans-I/O POP3 server session.

    ``hostname`` is this host's own name: one word of at most 255 octets, no
    white space or control character in it (``ValueError`` otherwise), as the
    SMTP machine's. Every limit and extension is a keyword argument with a safe
    default; :meth:`capabilities` lists what is
    switched on, for the answer to CAPA.
    """

    def __init__(
        self,
        hostname: str,
        *,
        max_command_line: int = 255,
        max_auth_line: int = 12288,
        max_response_line: int = 512,
        max_bad_commands: int = 10,
        framing: FramingPolicy | None = None,
        user: bool = True,
        apop: bool = True,
        sasl_mechanisms: Sequence[str] = (),
        stls: bool = False,
        require_tls: bool = False,
        top: bool = True,
        uidl: bool = True,
        utf8: bool = False,
        pipelining: bool = True,
        resp_codes: bool = True,
        expire: str | int | None = None,
        login_delay: str | int | None = None,
        implementation: str | None = None,
        extra_capabilities: Sequence[str] = (),
    ) -> None:
        self.hostname = hostname  # checked by the property
        self.max_command_line = max_command_line
        self.max_auth_line = max_auth_line
        self.max_response_line = max_response_line
        self.max_bad_commands = max_bad_commands
        self.framing = framing or FramingPolicy()
        self.require_tls = require_tls
        self.pipelining = pipelining
        self.resp_codes = resp_codes
        self.expire = expire  # checked by the property
        self.login_delay = login_delay  # checked by the property
        self.implementation = implementation
        self.extra_capabilities = tuple(listed("extra_capabilities", extra_capabilities))

        self._offered = _Offered(
            bool(user), bool(apop), bool(stls), bool(top), bool(uidl), bool(utf8)
        )
        self._command_tables = _command_tables(self._offered)
        self._keywords: dict[str, Parser]
        self.sasl_mechanisms = sasl_mechanisms  # AUTH is a command only with mechanisms

        self._buffer = ReceiveBuffer()
        self._state = State.GREETING
        self._pending: Event | None = None
        self._move: Move | None = None
        self._encoder: DotEncoder | None = None
        self._error: RemoteProtocolError | None = None
        self._bad_commands = 0
        self.tls = False
        """Whether TLS is active (set by :meth:`tls_started`)."""
        self.utf8 = False
        """Whether the client switched the session to UTF-8 (RFC 6856)."""
        self.user: str | None = None
        """The name of the USER command that got ``+OK``, for checking PASS."""
        self.apop_timestamp: str | None = None
        """The ``<...@...>`` timestamp of the greeting, when APOP is served."""

    # -- the four verbs -------------------------------------------------

    if TYPE_CHECKING:

        @property
        def state(self) -> State: ...

    else:
        # Read in C, without a Python call: the server's session asks before every
        # read (as the SMTP machine's).
        state = property(attrgetter("_state"), doc="The state the session is in.")

    @property
    def in_multiline_response(self) -> bool:
        """Whether a multi-line response is under way: its ``+OK`` sent, its
        :class:`EndOfResponse` not yet. Nothing else may go out meanwhile, not even
        an ``-ERR`` (RFC 1939 §3): a session that must end then closes."""
        return self._encoder is not None

    @property
    def buffered(self) -> int:
        """Octets received from the client and not yet turned into events.

        Once :meth:`next_event` has returned ``NEED_DATA``, at most
        :attr:`max_buffered` beyond the last piece given to
        :meth:`receive_data`. A fuzzer asserts memory stays bounded with it.
        """
        return len(self._buffer)

    @property
    def max_buffered(self) -> int:
        """The bound on :attr:`buffered` once :meth:`next_event` has returned
        ``NEED_DATA``: the limit on the line under way now, which a fuzzer holds the
        machine to; not the longest line of any state. That is ``max_auth_line`` in
        a SASL exchange and for an ``AUTH`` line where AUTH may be sent (its initial
        response may run longer, RFC 5034 §4), ``max_command_line`` otherwise
        (RFC 2449 §4).
        While the machine is ``PAUSED`` it parses nothing, so what a loop goes on
        reading then is held whole: stop reading until ``NEED_DATA``."""
        return self._line_limit()

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the client; ``b""`` means it closed its side.

        In TLS_PENDING, bytes are plaintext from before the handshake: dropped; so
        are bytes that come once the session is CLOSED or in ERROR.
        """
        self._buffer.receive(data, discard=self._state in DISCARDING)

    def next_event(self) -> Event | NoEvent:
        """The next event from the client, ``NEED_DATA`` or ``PAUSED``.

        While ``PAUSED`` (a command awaits its answer), an I/O loop should
        stop reading, so that a client cannot fill the buffer with commands.
        """
        state = self._state
        if state is State.ERROR:
            raise RemoteProtocolError(
                "the connection is in the ERROR state",
                reply_hint=self._error.reply_hint if self._error else None,
            )
        if state is State.CLOSED:
            return ConnectionClosed()
        if state is State.TLS_PENDING and self._buffer.peer_closed:
            self._end(State.CLOSED)  # the client left before the handshake
            return ConnectionClosed()
        if (
            self._pending is not None
            or self._encoder is not None
            or state in (State.GREETING, State.TLS_PENDING)
        ):
            return PAUSED
        if state is State.SASL:
            return self._next_auth_response()
        return self._next_command()

    def send(self, event: Event) -> bytes:
        """Check ``event`` against the state, apply it, and return its bytes."""
        if not isinstance(event, (Ok, Err, Continue, ResponseData, EndOfResponse)):
            raise LocalProtocolError(f"a server does not send {type(event).__name__}")
        state = self._state
        if state is State.ERROR:
            if isinstance(event, (Ok, Err)):
                return event.to_bytes()  # the reply_hint, before closing
            raise LocalProtocolError("the connection is in the ERROR state")
        if state is State.CLOSED:
            raise LocalProtocolError("the session is closed")
        if self._encoder is not None:
            return self._send_content(event)
        if isinstance(event, (ResponseData, EndOfResponse)):
            raise LocalProtocolError("content follows only a +OK to a multi-line command")
        line = b""  # a Continue's is made by _continue
        if isinstance(event, (Ok, Err)):
            line = event.to_bytes()
            if len(line) > self.max_response_line:
                raise LocalProtocolError(
                    f"a status line is at most {self.max_response_line} octets (RFC 2449 §4)"
                )
        if state is State.GREETING:
            return self._greet(event)
        pending, move = self._pending, self._move
        if pending is None or move is None:
            raise LocalProtocolError("there is no command to answer")
        if isinstance(event, Continue):
            return self._continue(pending, move, event)
        if isinstance(pending, BadCommand) and not isinstance(event, Err):
            raise LocalProtocolError("a bad command is answered with -ERR")
        cancelled = isinstance(pending, AuthResponse) and pending.cancel
        if cancelled and isinstance(event, Ok):
            raise LocalProtocolError("a cancelled AUTH exchange is answered with -ERR")
        self._pending = self._move = None
        if isinstance(event, Ok):
            self._accepted(pending)
            target = move.on_ok
        else:
            target = move.on_err
        if target is State.CLOSED:
            self._end(target)  # QUIT answered: RFC 1939 §6, the session is over
        elif target is not None:
            self._state = target
            if target is State.AUTHORIZATION:
                self.user = None
        if cancelled:
            # RFC 5034 §4: "*" abandons the exchange; a client that repeats it
            # forever holds the session, so it counts as a bad command.
            self._count_bad_command()
        return line

    def send_failed(self) -> None:
        """The bytes of the last ``send`` never reached the client."""
        self._end(State.ERROR)

    def _end(self, state: State) -> None:
        """Enter ERROR or CLOSED. No received octet is read after it (RFC 1939 §6:
        nothing follows QUIT; after an unrecoverable error the session is over), and
        :meth:`receive_data` drops what comes, so what is held goes too: an ended
        machine holds nothing."""
        self._state = state
        self._buffer.clear()

    def tls_started(self) -> None:
        """The TLS handshake after STLS is done: back to AUTHORIZATION (RFC 2595 §4)."""
        if self._state is not State.TLS_PENDING:
            raise LocalProtocolError("tls_started() outside the TLS_PENDING state")
        self._buffer.clear()
        self.tls = True
        self.user = None
        self._state = State.AUTHORIZATION

    def greeting(self, process: int | str | None = None, clock: int | str | None = None) -> Ok:
        """A greeting naming this host, with an APOP timestamp when both values are given.

        ``process`` and ``clock`` must make the timestamp unique to this
        greeting (RFC 1939 §7): a process id and a counter or clock reading
        that the application supplies, since the machine has neither. The host
        is named in ASCII, a non-ASCII name in its A-label form (RFC 6856 §2: no
        UTF-8 in a response before UTF8 mode). The timestamp comes whole and
        last; the name that heads the text is left
        out when the line would not fit ``max_response_line`` (RFC 2449 §4: a
        255-octet hostname twice does not), so every name the machine takes
        makes a greeting it can send.
        """
        text = "POP3 server ready"
        if process is not None and clock is not None and "APOP" in self._keywords:
            text += " " + apop_timestamp(process, clock, self.hostname)
        named = Ok(f"{timestamp_host(self.hostname)} {text}")
        if len(named.to_bytes()) <= self.max_response_line:
            return named
        unnamed = Ok(text)
        if len(unnamed.to_bytes()) > self.max_response_line:
            raise LocalProtocolError(
                f"the APOP timestamp of {process!r} and {clock!r} does not fit a status line "
                f"of {self.max_response_line} octets (RFC 2449 §4)"
            )
        return unnamed

    # -- capabilities ---------------------------------------------------

    def capabilities(self) -> list[str]:
        """The CAPA lines for this session as it stands (RFC 2449 §6).

        Answer :class:`Capa` with ``Ok``, then
        ``ResponseData(format_lines(conn.capabilities()))``, then ``EndOfResponse``.
        """
        lines = []
        if "TOP" in self._keywords:
            lines.append("TOP")
        if "USER" in self._keywords and self._login_allowed:
            lines.append("USER")
        if mechanisms := self.offered_mechanisms():
            lines.append("SASL " + " ".join(mechanisms))
        if self.resp_codes:
            lines += ["RESP-CODES", "AUTH-RESP-CODE"]
        if self.pipelining:
            lines.append("PIPELINING")
        if "UIDL" in self._keywords:
            lines.append("UIDL")
        if self.stls and not self.tls and self._state is State.AUTHORIZATION:
            lines.append("STLS")  # not once USER is accepted: STLS is refused there
        if "UTF8" in self._keywords:
            lines.append("UTF8 USER")  # UTF-8 names and passwords are taken (RFC 6856 §2.1)
        for keyword, policy in (("EXPIRE", self._expire), ("LOGIN-DELAY", self._login_delay)):
            if policy is not None:
                lines.append(f"{keyword} {self._policy_now(policy)}")
        if self.implementation is not None:
            lines.append(f"IMPLEMENTATION {self.implementation}")
        lines.extend(self.extra_capabilities)
        return lines

    def offered_mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms a login may use now: CAPA's SASL line (RFC 2449 §6.3)
        and the answer to a bare ``AUTH`` (:class:`AuthMechanisms`: ``Ok``, then
        ``ResponseData(format_lines(conn.offered_mechanisms()))``, then
        ``EndOfResponse``). None while TLS must come first (RFC 2595 §4)."""
        return self.sasl_mechanisms if self._login_allowed else ()

    @property
    def _login_allowed(self) -> bool:
        return self.tls or not self.require_tls

    # -- reading commands -----------------------------------------------

    def _next_command(self) -> Event | NoEvent:
        line = self._buffer.next_line(self._line_limit(), lf_ends=self.framing.lf_ends_command)
        if line is None:
            return self._no_line()
        if line is LINE_TOO_LONG:
            return self._bad(b"", Err("Line too long"))
        text = self._decode(line)
        if isinstance(text, BadCommand):
            return text
        try:
            command = parse_command_line(text, self._keywords)
        except CommandSyntaxError as exc:
            return self._bad(line, exc.response)
        problem = self._check(command)
        if problem is not None:
            return self._bad(line, problem)
        move = MOVES[(self._state, type(command))]
        if move.during is not None:
            self._state = move.during
        self._pending, self._move = command, move
        return command

    def _line_limit(self) -> int:
        """The octets the line under way may have: ``max_auth_line`` for a SASL
        response (RFC 5034 §4), ``max_command_line`` for a command (RFC 2449 §4:
        255, CRLF included), or ``max_auth_line`` for an ``AUTH`` line where AUTH
        may be sent, whose initial response may run longer (RFC 5034 §4 has a
        client send a longer one after an empty challenge; one that does not is
        taken). Told by the line's first five octets, there whenever the limit is
        reached: any other line is cut off at its own limit, not buffered to the
        longer one. Read by the line readers and :attr:`max_buffered` alike."""
        if self._state is State.SASL:
            return self.max_auth_line
        limit = self.max_command_line
        if (
            self.max_auth_line > limit
            and "AUTH" in self._keywords
            and self._state in _AUTHORIZATION
            and self._buffer[:5].upper() == b"AUTH "
        ):
            return self.max_auth_line
        return limit

    def _next_auth_response(self) -> Event | NoEvent:
        line = self._buffer.next_line(self._line_limit(), lf_ends=self.framing.lf_ends_command)
        if line is None:
            return self._no_line()
        if line is LINE_TOO_LONG:
            return self._bad(b"", Err("Line too long"))
        text = self._decode(line)
        if isinstance(text, BadCommand):
            return text
        try:
            event = parse_auth_response(text.strip(" "))
        except CommandSyntaxError as exc:
            return self._bad(line, exc.response)
        self._pending, self._move = event, MOVES[(State.SASL, AuthResponse)]
        return event

    def _no_line(self) -> Event | NoEvent:
        if self._buffer.peer_closed:
            self._end(State.CLOSED)  # a line the client left unfinished is never read
            return ConnectionClosed()
        return NEED_DATA

    def _decode(self, line: bytes) -> str | BadCommand:
        if not self.framing.lf_ends_command and line.find(b"\n", 0, len(line) - 2) >= 0:
            # Only CRLF ends a line (RFC 1939 §3): a bare LF is inside this one.
            return self._bad(line, Err("Command must end with CRLF"))
        try:
            return line.rstrip(b"\n").removesuffix(b"\r").decode("utf-8")
        except UnicodeDecodeError:
            return self._bad(line, Err("Invalid UTF-8 in command", code="UTF8"))

    def _bad(self, line: bytes, response: Err) -> BadCommand:
        self._count_bad_command()
        if self._error is not None:
            raise self._error
        secret = self._state is State.SASL or _SECRET_LINE.match(line) is not None
        event = BadCommand(line, response, secret)
        self._pending = event
        self._move = MOVES.get((self._state, BadCommand), Move())
        return event

    def count_bad_command(self) -> None:
        """Count a command the client got wrong that only the application can tell,
        after answering it: an initial response sent to a mechanism where the server
        speaks first (RFC 5034 §4), which the machine parses as a well-formed AUTH.
        It counts toward ``max_bad_commands`` as the lines the machine refuses
        itself; at the limit :meth:`next_event` raises as for those.

        A failed login is no bad command, with or without a response code: count
        those yourself (RFC 3206's codes are optional)."""
        if self._state in (State.ERROR, State.CLOSED):
            raise LocalProtocolError(f"the session is over ({self._state.name})")
        self._count_bad_command()

    def _count_bad_command(self) -> None:
        """One more command the client got wrong: at ``max_bad_commands`` the session
        is over (ERROR, with the ``-ERR`` to send before closing), whether the
        machine refused the line itself, the client cancelled an AUTH exchange, or
        the application said so (:meth:`count_bad_command`)."""
        self._bad_commands += 1
        if self._bad_commands >= self.max_bad_commands:
            self._end(State.ERROR)
            self._error = RemoteProtocolError(
                "too many bad commands", reply_hint=Err("Too many bad commands, closing")
            )

    @property
    def sasl_mechanisms(self) -> tuple[str, ...]:
        """The SASL mechanisms AUTH offers (RFC 5034), upper case; none turns AUTH off
        (a list: one ``str`` is a TypeError).

        May change during a session: a server may offer the mechanisms that
        show a password only once TLS is up (RFC 2595 §6).
        """
        return self._sasl_mechanisms

    @sasl_mechanisms.setter
    def sasl_mechanisms(self, names: Sequence[str]) -> None:
        self._sasl_mechanisms = _mechanism_names(names)
        self._keywords = self._command_tables[bool(self._sasl_mechanisms)]

    @property
    def offers_user(self) -> bool:
        """Whether USER and PASS are commands (the constructor's ``user``). May be set
        before the greeting: a server learns per session what its mailstore serves."""
        return self._offered.user

    @offers_user.setter
    def offers_user(self, value: bool) -> None:
        self._offer(self._offered._replace(user=bool(value)))

    @property
    def offers_apop(self) -> bool:
        """Whether APOP is a command (the constructor's ``apop``). Set before the
        greeting, it decides whether the greeting carries a timestamp (RFC 1939 §7)."""
        return self._offered.apop

    @offers_apop.setter
    def offers_apop(self, value: bool) -> None:
        self._offer(self._offered._replace(apop=bool(value)))

    @property
    def stls(self) -> bool:
        """Whether STLS is offered (RFC 2595 §4): a command, and a CAPA line until TLS
        is up."""
        return self._offered.stls

    @stls.setter
    def stls(self, value: bool) -> None:
        self._offer(self._offered._replace(stls=bool(value)))

    @property
    def offers_utf8(self) -> bool:
        """Whether UTF8 is offered (the constructor's ``utf8``, RFC 6856);
        :attr:`utf8` says whether the client switched to it."""
        return self._offered.utf8

    def header_scan(self) -> HeaderScan | None:
        """What reads a message's header before RETR or TOP is answered, to refuse it
        with :data:`NEEDS_UTF8` where the header holds UTF-8: a server that offers
        UTF8 sends such a message only in UTF-8 mode (RFC 6856 §2.1, §4, §5). None
        where UTF8 is not offered (a ``[UTF8]`` code would name a mode the client
        cannot enter: every message goes as stored) and in UTF-8 mode (every message
        goes as stored), so that those sessions pay nothing for it."""
        return HeaderScan() if self._offered.utf8 and not self.utf8 else None

    def _offer(self, offered: _Offered) -> None:
        """Offer the commands ``offered`` from the next command on."""
        self._offered = offered
        self._command_tables = _command_tables(offered)
        self._keywords = self._command_tables[bool(self._sasl_mechanisms)]

    @property
    def expire(self) -> str | None:
        """CAPA's ``EXPIRE`` argument (RFC 2449 §6.7): the days a message is kept at
        least, or ``NEVER``; ``"30 USER"`` where it varies by user. CAPA writes the
        ``USER`` tag in the AUTHORIZATION state alone (RFC 2449 §6.7); once a user
        is logged in it gives the value without it, that user's. A write is
        checked against RFC 2449 §9's ``expire-policy`` (``ValueError``); an int is
        taken as its decimal digits, ``never`` and ``user`` in any case."""
        return self._expire

    @expire.setter
    def expire(self, value: str | int | None) -> None:
        self._expire = _checked_policy("expire", value, never=True)

    @property
    def login_delay(self) -> str | None:
        """CAPA's ``LOGIN-DELAY`` argument (RFC 2449 §6.5): the seconds a client
        waits between logins at least, ``"900 USER"`` where it varies by user. A
        write is checked against RFC 2449 §9's ``delay-secs`` (``ValueError``); an
        int is taken as its decimal digits, ``user`` in any case."""
        return self._login_delay

    @login_delay.setter
    def login_delay(self, value: str | int | None) -> None:
        self._login_delay = _checked_policy("login_delay", value, never=False)

    def _policy_now(self, policy: str) -> str:
        """``policy`` as CAPA gives it in this state. RFC 2449 §6.5, §6.7: the USER
        tag follows the value "in AUTHORIZATION state" only, saying it may vary by
        user; once a user is logged in, the value is that user's: the configured
        one (a bound that holds for every user) unless the application has set the
        user's own."""
        if self._state in _LOGGED_IN:
            return policy.removesuffix(_USER_TAG)
        return policy

    @property
    def hostname(self) -> str:
        """This host's own name, which heads the greeting and the APOP timestamp (in
        A-label form where it is not ASCII). A
        write is checked as the constructor's argument is (``ValueError``): a space or
        a line break would break the greeting line."""
        return self._hostname

    @hostname.setter
    def hostname(self, hostname: str) -> None:
        self._hostname = checked_hostname(hostname)

    def _check(self, command: Command) -> Err | None:
        """The -ERR that refuses ``command`` here, or None if it may proceed."""
        state = self._state
        if (state, type(command)) not in MOVES:
            default = _NOT_LOGGED_IN if state in _AUTHORIZATION else _WRONG_STATE
            return _SEQUENCE_ERRORS.get((command.keyword, state), default)
        if (
            isinstance(command, (User, Pass, Apop, Auth, AuthMechanisms))
            and not self._login_allowed
        ):
            return _NEED_TLS
        if isinstance(command, Apop) and self.apop_timestamp is None:
            return Err("APOP not available: no timestamp in the greeting")
        if isinstance(command, Auth) and command.mechanism not in self.sasl_mechanisms:
            return Err("Unsupported authentication mechanism")
        if isinstance(command, Stls) and self.tls:
            return Err("TLS already active")
        return None

    # -- answering ------------------------------------------------------

    def _greet(self, event: Event) -> bytes:
        if isinstance(event, Ok):
            self._state = State.AUTHORIZATION
            if "APOP" in self._keywords:
                self.apop_timestamp = find_apop_timestamp(event.text)
            return event.to_bytes()
        if isinstance(event, Err):
            data = event.to_bytes()
            self._end(State.CLOSED)
            return data
        raise LocalProtocolError("the greeting is +OK (or -ERR before closing)")

    def _continue(self, pending: Event, move: Move, event: Continue) -> bytes:
        if move.on_continue is None or (isinstance(pending, AuthResponse) and pending.cancel):
            raise LocalProtocolError("a continuation answers only AUTH or an AUTH response")
        self._pending = self._move = None
        self._state = move.on_continue
        return event.to_bytes()

    def _accepted(self, command: Event) -> None:
        if isinstance(command, User):
            self.user = command.name
        elif isinstance(command, Stls):
            self._buffer.clear()  # plaintext pipelined behind STLS is never read
        elif isinstance(command, Utf8):
            self.utf8 = True
        if isinstance(command, Command) and command.multiline:
            self._encoder = DotEncoder()

    def _send_content(self, event: Event) -> bytes:
        encoder = self._encoder
        assert encoder is not None
        if isinstance(event, ResponseData):
            return encoder.encode(event.data)
        if isinstance(event, EndOfResponse):
            self._encoder = None
            return encoder.end()
        raise LocalProtocolError("finish the multi-line response with EndOfResponse first")
