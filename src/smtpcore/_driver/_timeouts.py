"""Timeouts, and the clock each framework adapter supplies (RFC 5321 §4.5.3.2).

The machines never look at a clock, and neither does a transport: the
shared driver does, through the :class:`Clock` of the framework that runs
the session, which implements deadlines and the session watchdog with its
own cancellation (a task cancelled by a loop timer on asyncio, cancel
scopes on trio).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Final, NoReturn, Protocol, TypeAlias, TypeVar, cast

__all__ = [
    "Clock",
    "DEFAULT_POP3_TIMEOUTS",
    "DEFAULT_TIMEOUTS",
    "Deadline",
    "DeadlineFactory",
    "Pump",
    "POP3Timeouts",
    "Timeouts",
    "Watchdog",
    "Within",
    "as_limit",
    "as_rate",
    "as_seconds",
    "as_wait",
    "checked_delay",
    "deadline_when_waiting",
    "finish_when_waiting",
    "new_pump",
    "rest_of",
    "rest_of_answer",
    "rest_pumped",
]

T = TypeVar("T")

Steps = Generator[Any, Any, T] | Coroutine[Any, Any, T]
"""A call under way, as :func:`rest_of` carries it on: a coroutine, or what another
awaitable's ``__await__`` gave."""


def as_seconds(name: str, value: object, unit: str = "seconds") -> float:
    """``value``, the option ``name``, as a finite float number of seconds, or a
    ``ValueError`` naming the option. A string, None or a bool is no duration (compared,
    it would raise ``TypeError``), and an int past a float's range (``10**400``) compares
    as finite but makes every deadline built from it an ``OverflowError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number of {unit}, not {_quoted(value)}")
    try:
        seconds = float(value)
    except OverflowError:
        raise ValueError(f"{name} is past the range of a number of {unit}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{name} must be a finite number of {unit}, not {seconds!r}")
    return seconds


def _quoted(value: object, limit: int = 40) -> str:
    """``value``'s repr for an error message, cut to ``limit`` characters with an
    ellipsis that says it was cut."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_wait(name: str, value: object, unit: str = "seconds") -> float:
    """``value``, the option ``name``, as a number of seconds a session can wait: what
    :func:`as_seconds` takes, zero or more (``ValueError`` otherwise). A negative wait
    has no meaning, and a negative rate would take time away with each read."""
    seconds = as_seconds(name, value, unit)
    if seconds < 0:
        raise ValueError(f"{name} must be 0 or more {unit}, not {seconds!r}")
    return seconds


def _is_infinity(value: object) -> bool:
    """Whether ``value`` is positive infinity (``math.inf``), as a number; an int past a
    float's range (``10**400``) is not: it compares below infinity."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == math.inf


def as_limit(name: str, value: object) -> float | None:
    """``value``, the option ``name``, as a limit on a wait: None, no limit, for None or
    positive infinity (which sessions took as no limit before the fields were
    checked, as smtplib's sockets do), else what :func:`as_wait` gives."""
    if value is None or _is_infinity(value):
        return None
    return as_wait(name, value)


def as_rate(name: str, value: object) -> float | None:
    """``value``, the option ``name``, as a minimum rate (octets a second): None, no
    rate, is kept; positive infinity is a rate no client keeps up, which earns no
    credit, so the wait it paces is a bound on the whole content; else what
    :func:`as_wait` gives."""
    if value is None:
        return None
    return math.inf if _is_infinity(value) else as_wait(name, value, "octets a second")


_RATES: Final = frozenset({"min_data_rate"})
"""The fields of :class:`Timeouts` that are rates, not waits (:func:`as_rate`)."""


def check_waits(timeouts: Timeouts | POP3Timeouts) -> None:
    """Each field of ``timeouts`` checked by :func:`as_limit` (or :func:`as_rate`), or a
    ``ValueError`` naming it (``Timeouts.data_block``), when it is built: a value past
    a float's range would otherwise fail every session later, in each deadline built
    from it, with ``OverflowError``."""
    kind = type(timeouts).__name__
    for field in dataclasses.fields(timeouts):
        check = as_rate if field.name in _RATES else as_limit
        value = check(f"{kind}.{field.name}", getattr(timeouts, field.name))
        object.__setattr__(timeouts, field.name, value)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts in seconds; ``None`` waits forever. The defaults are RFC 5321 §4.5.3.2's.

    The RFC states most of them for the client; the server uses ``command``
    as the time a whole command line may take to arrive (§4.5.3.2.7),
    ``data_block`` and ``min_data_rate`` for message content, and
    ``data_termination`` as the time the handler may take to answer a
    message, so that the reply arrives before the client's own 10 minutes
    run out.

    The server's limits hold however slowly the client trickles its bytes,
    as Postfix's ``smtpd_per_request_deadline`` and ``smtpd_min_data_rate``
    do: a timeout per read would let a client that sends a byte a minute
    hold its session forever.
    """

    connect: float | None = 30.0
    """Client: opening the TCP connection (not in the RFC)."""
    greeting: float | None = 300.0
    """Client: waiting for the 220 greeting (§4.5.3.2.1); server: the connect hook."""
    command: float | None = 300.0
    """Server: the time from the start of the wait for a command until its line is
    complete, however many reads it takes; and the handler's answer to a command
    (``handle_hello``, ``handle_mail``, ``handle_rcpt``, ``handle_data``,
    ``handle_vrfy``, ``handle_expn``, ``handle_auth``, and ``handle_connect`` after
    XCLIENT), each step of an ``Authenticator(in_thread=True)``'s AUTH exchange with
    them (past it: ``454 4.7.0``). Client: the reply to MAIL, RCPT and the others
    (§4.5.3.2.2, §4.5.3.2.3). Also bounds each write of replies or commands. A
    server's session whose write of replies it cuts off (a client that pipelines
    and does not read) ends then: its ``421`` has a second at most to follow the
    replies not yet taken (on asyncio; on trio it gets none), and the close does
    not wait for the client to take what is left (but over a transport of yours
    without ``closes_when_cancelled``: see :mod:`smtpcore.transport`). So a client
    that reads, but too slowly to take a write within it, loses the tail of the
    replies and the ``421``, the last reply perhaps cut mid-line."""
    data_initiation: float | None = 120.0
    """Client: waiting for the 354 reply to DATA (§4.5.3.2.4)."""
    data_block: float | None = 180.0
    """Client: each block of message content written (§4.5.3.2.5); server: the longest
    the content may be waited for, less the credit ``min_data_rate`` gives."""
    data_termination: float | None = 600.0
    """Client: the reply after the final dot (§4.5.3.2.6); server: the handler's answer."""
    tls_handshake: float | None = 60.0
    """The TLS handshake, after STARTTLS or on connect."""
    min_data_rate: float | None = 500.0
    """Server: octets per second a client must keep up while it sends message content
    (DATA or BDAT), as Postfix's ``smtpd_min_data_rate``. The content starts with
    ``data_block`` seconds to arrive in; each read of ``n`` octets adds ``n /
    min_data_rate`` seconds, but never more than ``data_block`` from now. So a
    client that sends at this rate or faster is never cut off, and one that
    trickles is cut off after about ``data_block`` seconds. ``None``: no credit,
    and ``data_block`` bounds each read (a trickling client is never cut off)."""
    quit: float | None = 300.0
    """Client: writing QUIT and waiting for its reply, as Postfix's ``smtp_quit_timeout``
    (300 s by default there too). The session's mail is settled before QUIT: a relay
    that must not be held by a server that never answers it sets this short."""

    def __post_init__(self) -> None:
        check_waits(self)

    @classmethod
    def uniform(cls, seconds: float | None) -> Timeouts:
        """The same timeout everywhere, for tests and tight deployments."""
        return cls(seconds, seconds, seconds, seconds, seconds, seconds, seconds, quit=seconds)


DEFAULT_TIMEOUTS: Final = Timeouts()


class Deadline(Protocol):
    """An armed deadline, as entered; :meth:`expire` makes it pass at once."""

    def expire(self) -> None:
        """Time out now: the operation waiting under this deadline raises ``TimeoutError``.

        Graceful shutdown uses it to wake sessions that wait idle for a command.
        """


class Watchdog(Protocol):
    """A timer over the waits of a whole session, entered once and armed per wait.

    ``async with transport.watchdog() as watchdog:`` wraps a session's event
    loop. A wait for the client (a command line, or a message's content) may
    take several reads: :meth:`arm` starts timing it before its first read,
    :meth:`resume` carries on timing it before each further read, and
    :meth:`disarm` stops the timer after each read. If it goes off, whatever
    the session was waiting for is interrupted and the block raises
    ``TimeoutError`` at its end. One long-lived timer costs far less than a
    deadline entered for every read (a cancel scope, under trio), and the
    reads are the hot path. It may go off a little late (a timeout is a
    minimum), never early; disarming after it went off is harmless.
    """

    def arm(self, seconds: float | None, min_rate: float | None = None) -> None:
        """A new wait: go off ``seconds`` from now (never, for ``None``). With
        ``min_rate`` (octets a second), each :meth:`resume` earns more time."""

    def resume(self, received: int = 0) -> None:
        """The wait armed last goes on, its time still running, after a read of
        ``received`` octets. With a ``min_rate``, the time left grows by
        ``received / min_rate`` seconds, to at most the armed ``seconds``."""

    def disarm(self) -> None:
        """Do not go off until armed or resumed: the session is not waiting for its
        client."""

    def expire(self) -> None:
        """Go off now (graceful shutdown wakes idle sessions with it)."""

    @property
    def expired(self) -> bool:
        """True once the watchdog ended its block."""


class DeadlineFactory(Protocol):
    """``async with factory(seconds) as deadline:`` raises ``TimeoutError`` once the
    block has run ``seconds`` (never if ``None``)."""

    def __call__(self, seconds: float | None) -> AbstractAsyncContextManager[Deadline]: ...


class Within(Protocol):
    """``await within(seconds, call)``: ``call``'s result, or ``TimeoutError`` once it
    has run ``seconds`` (never for ``None``)."""

    def __call__(self, seconds: float | None, call: Awaitable[T]) -> Awaitable[T]: ...


class Clock(Protocol):
    """The timing of one connection's session, supplied by the framework adapter that
    runs it (never by the transport): one implementation per framework.

    Its waits are the framework's own, so it can interrupt whatever the
    session waits on, a transport's read included.
    """

    def deadline(self, seconds: float | None) -> AbstractAsyncContextManager[Deadline]:
        """A block that raises ``TimeoutError`` after ``seconds`` (never if ``None``): its
        subclass :class:`~smtpcore._driver._own_timeouts.DeadlinePassed`, raised by the
        block itself, so that a ``TimeoutError`` of the code inside stays its own."""
        ...

    def watchdog(self) -> AbstractAsyncContextManager[Watchdog]:
        """The timer of a session's waits for its peer (see :class:`Watchdog`)."""
        ...

    def within(self, seconds: float | None, call: Awaitable[T]) -> Awaitable[T]:
        """Await ``call``, raising ``TimeoutError`` if it takes over ``seconds``.

        ``async with self.deadline(seconds): return await call`` is always
        correct; the adapters enter the deadline only once the call waits,
        where their framework allows it (:func:`deadline_when_waiting`).
        """
        ...

    def start_within(self, seconds: float | None, call: Awaitable[T]) -> tuple[T] | Awaitable[T]:
        """:meth:`within`, started now where the framework allows it: ``(result,)``
        when ``call`` answers without waiting, else what to await for its result
        (``within(seconds, call)`` itself, where nothing can start)."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Wait ``seconds`` (a failed login's delay), the session's other waits aside:
        a cancellation of the session (a shutdown's, past its grace) ends it early."""
        ...

    def run_in_thread(self, call: Callable[[], T]) -> Awaitable[T]:
        """``call()`` run in a worker thread, its result (or exception) awaited, so
        that a slow credential check (a key derivation, a database query) never
        holds the event loop and its other sessions. The threads are the credential
        checks' own (:data:`smtpcore._threads.AUTH`): a backend that stopped
        answering holds them, not the framework's shared ones.

        A cancelled wait (a deadline, a shutdown) ends at once, and never holds a
        shutdown: a thread cannot be interrupted, so ``call`` runs on in its thread
        to its end, and what it gives is dropped.
        """
        ...

    def close(self) -> None:
        """The connection is gone: drop any timer still scheduled for it."""
        ...

    def stray_cancellation(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised out of the application's code (a handler's hook, a
        mailstore's method), is a cancellation that does not cancel the session:
        the code's own failure (it awaited a future that other code cancelled),
        to answer as one, where the session's own cancellation (a shutdown, a
        timeout) must end it."""
        ...


async def deadline_when_waiting(
    deadline: DeadlineFactory, seconds: float | None, call: Awaitable[T]
) -> T:
    """Await ``call`` under ``deadline(seconds)``, entering the deadline only if it waits.

    Most handler hooks and mailstore calls answer without waiting for anything,
    and entering a deadline costs more than such a call. So the call runs
    first; only when it yields, waiting on its framework, does the deadline
    start, around the rest of it. Time spent before that first wait runs
    without a deadline, as it could not be interrupted anyway.

    Only for frameworks whose deadlines may start while a call is under way,
    as asyncio's task cancellation may. Not for trio: a cancel scope entered
    here would sit inside the scopes the call has open at its first wait, and
    trio requires scopes to nest.
    """
    steps: Steps[T] = call if type(call) is types.CoroutineType else call.__await__()
    try:
        waiting_on = steps.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    async with deadline(seconds):
        return await rest_of(steps, waiting_on)


async def finish_when_waiting(
    deadline: DeadlineFactory, seconds: float | None, rest: Awaitable[T]
) -> T:
    """The ``rest`` of a call started as :func:`deadline_when_waiting` starts it
    (:func:`rest_of`, or :func:`rest_pumped`): under ``deadline(seconds)``. For a
    caller that took the first step itself, to have the result at once where the
    call waits for nothing (the asyncio server's hooks, see
    ``LinkBase.start_within``)."""
    async with deadline(seconds):
        return await rest


@types.coroutine
def rest_of(steps: Steps[T], waiting_on: Any) -> Generator[Any, Any, T]:
    """Carry on a started call: what it waits on goes to the framework, and what the
    framework sends or throws back goes to it (what ``await`` does from its start)."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # cancellation too: the call must see it
            try:
                waiting_on = steps.throw(exc)
            except StopIteration as done:
                result: T = done.value
                return result
        else:
            try:
                waiting_on = steps.send(sent)
            except StopIteration as done:
                result = done.value
                return result


Pump: TypeAlias = "types.GeneratorType[Any, Any, NoReturn]"
"""A pump (:func:`new_pump`): sent a coroutine, it gives what the coroutine answers or
what it waits on first."""


@types.coroutine  # so that it may yield from a coroutine
def _pump() -> Generator[Any, Any, NoReturn]:
    """The pump's code (see :func:`new_pump`): the answer of each call sent to it is
    what it yields next, with nothing of the call kept once it is asked for the
    next."""
    call = yield
    while True:
        call = yield (yield from call)


def new_pump() -> Pump:
    """A generator that runs each coroutine sent to it, and gives back its answer
    without the ``StopIteration`` that ``call.send(None)`` raises when the call
    answers at once.

    ``pump.send(call)`` takes the first step of ``call``, as ``call.send(None)``
    does, through ``yield from``, where the interpreter hands a coroutine's
    answer on without an exception: made, raised and caught, that exception
    costs about 1,500 instructions of a handler's hook that answers at once,
    the everyday ``handle_rcpt``. What ``send`` gave is the call's answer when
    the pump is back at its own ``yield`` (``pump.gi_yieldfrom is None``),
    else what the call waits on; the rest of the call then goes through the
    pump (:func:`rest_pumped`). An exception of the call leaves through
    ``send``, as from ``call.send(None)``, and ends the pump.

    A pump runs one call at a time, and a call started while another runs in
    it (``ValueError: generator already executing``) or waits in it would get
    the other's steps. So whoever keeps one lends it to one call at a time: it
    takes the pump out of its place for the call's first step, puts it back
    only if the call answered then (the pump is then idle at its own
    ``yield``, as a new one is), and otherwise makes a new one, the lent one
    staying with its call to the end (a wait, a cancellation, a close), and
    going with it. A call started while the pump is out (a hook that starts
    another in its first step) takes ``call.send(None)``'s way instead. The
    keeper is one event loop's (an asyncio server's), whose sessions all run
    in its thread: no two threads ever reach for the same pump.

    What a call sees is what it sees started without: the same values sent
    and exceptions thrown in (``yield from`` passes each on as it comes, a
    cancellation and a close included), the same context and task. Only a
    traceback through the pump shows its frame.
    """
    pump = cast("Pump", _pump())  # a generator: types.coroutine only flags its code
    pump.send(None)
    return pump


@types.coroutine
def rest_pumped(pump: Pump, waiting_on: Any) -> Generator[Any, Any, Any]:
    """:func:`rest_of` for a call started in ``pump`` (:func:`new_pump`) that waits on
    ``waiting_on``: each step goes to the call through the pump, and the call has
    answered once the pump is back at its own ``yield``, its answer given, where
    :func:`rest_of` meets a ``StopIteration``."""
    while True:
        try:
            sent = yield waiting_on
        except GeneratorExit:
            pump.close()  # and the call in it, as yield from does
            raise
        except BaseException as exc:  # cancellation too: the call must see it
            waiting_on = pump.throw(exc)
        else:
            waiting_on = pump.send(sent)
        if pump.gi_yieldfrom is None:
            return waiting_on


@dataclass(frozen=True, slots=True)
class POP3Timeouts:
    """Timeouts of a POP3 session in seconds; ``None`` waits forever.

    RFC 1939 §3 sets only the server's autologout timer, at 10 minutes or
    more; the others bound what the RFC leaves open, as Dovecot does.
    """

    connect: float | None = 30.0
    """Client: opening the TCP connection."""
    greeting: float | None = 60.0
    """Client: waiting for the greeting, for its first bytes and again from there for
    its end. (A server's wait for a PROXY header is its ``proxy_protocol_timeout``.)"""
    autologout: float | None = 600.0
    """Server: waiting for the next command; then the connection is closed without a
    response and without entering UPDATE (RFC 1939 §3)."""
    response: float | None = 300.0
    """Client: waiting for a status line, for its first bytes and again from there for
    its end (a server dripping an octet at a time cannot hold the session); and for
    each next block of multi-line content (a large message over a slow link may take
    longer than one wait in all), except content the client reads only to go past it
    (a CAPA listing, the rest of a message a loop left early, each answer still owed
    to one), each answer of which must end within it in all."""
    send: float | None = 300.0
    """Either side: each write, while the peer is slow to read. A server's session
    whose write it cuts off (a client that does not read) is closed then, without
    waiting for the client to take what is left (but over a transport of yours
    without ``closes_when_cancelled``: see :mod:`smtpcore.transport`)."""
    store: float | None = 120.0
    """Server: each call to the mailstore (a login check, opening or updating the
    maildrop, reading a chunk of a message), and each step of an AUTH exchange of the
    store's mechanisms that runs in a worker thread (an
    ``Authenticator(in_thread=True)``'s). Past it: ``-ERR [SYS/TEMP]``."""
    tls_handshake: float | None = 60.0
    """The TLS handshake, after STLS or on connect."""

    def __post_init__(self) -> None:
        check_waits(self)

    @classmethod
    def uniform(cls, seconds: float | None) -> POP3Timeouts:
        """The same timeout everywhere, for tests and tight deployments."""
        return cls(seconds, seconds, seconds, seconds, seconds, seconds, seconds)


DEFAULT_POP3_TIMEOUTS: Final = POP3Timeouts()


def rest_of_answer(timeout: float, begun: float | None) -> tuple[float, float]:
    """A client's wait for the rest of an answer begun (a reply, a status line), which
    must end within ``timeout`` of its start: the start (now, the first time) and
    the seconds left, nothing or less once it is over. RFC 5321 §4.5.3.2 times
    answers, not reads: a server dripping an octet at a time cannot hold a client."""
    now = time.monotonic()
    if begun is None:
        begun = now
    return begun, timeout - (now - begun)


def checked_delay(seconds: float) -> float:
    """``auth_failure_delay`` as a float, if it is a number of seconds a session can
    wait: zero or more, and finite (``ValueError`` otherwise)."""
    return as_wait("auth_failure_delay", seconds)
