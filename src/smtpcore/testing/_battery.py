"""What every check battery shares, whatever protocol it speaks: results, a report, a runner.

:mod:`smtpcore.testing.check` (SMTP) and :mod:`smtpcore.testing.check_pop3`
(POP3) each keep their own checks and their own way of starting a session;
the outcome of a check, the report of a run, the failure that no server was
reached, the connections a check made and their transcript, and the rules
for a check's arguments are one thing, kept here.
"""

from __future__ import annotations

import enum
import math
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar

from smtpcore._ip import host_port
from smtpcore._textsafe import escape_unsafe
from smtpcore.testing._wire import (
    Exchange,
    ServerFlood,
    WireClient,
    format_transcript,
)

__all__ = [
    "BUSY_PAUSES",
    "CheckReport",
    "CheckResult",
    "Failed",
    "OtherProtocol",
    "Outcome",
    "Refused",
    "SESSION_ENDINGS",
    "ServerUnreachable",
    "Skipped",
    "busy_retry_pause",
    "check_run_arguments",
    "close_all",
    "ending_said",
    "insecure_context",
    "open_wire",
    "refused_connection",
    "run_one",
    "selected",
    "transcript_of",
    "unjudged",
]


class Outcome(enum.Enum):
    """How a check ended; ``SKIPPED`` when the server does not offer what it tests."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """What one check found: its outcome, a one-line summary and the wire transcript."""

    name: str
    outcome: Outcome
    summary: str
    """One line, every control, format character and separator in it escaped
    (:func:`~smtpcore._textsafe.escape_unsafe`): a summary quotes what the server
    sent, and a hostile server must not drive the terminal it is read on."""
    transcript: tuple[Exchange, ...] = ()
    """Every write and read of the connections the check made, in order (for a
    failure, the connection that shows it)."""
    stopped: str = ""
    """Why the run stops at this check, or empty: the check found the server speaks
    another protocol than the battery's (:class:`OtherProtocol`), so no check left
    can test it (:attr:`CheckReport.stopped`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", escape_unsafe(self.summary))
        object.__setattr__(self, "stopped", escape_unsafe(self.stopped))

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASSED

    def transcript_text(self) -> str:
        """The transcript as ``C:``/``S:`` lines of exact bytes (see :attr:`transcript`)."""
        return format_transcript(self.transcript)

    def __str__(self) -> str:
        return f"{self.outcome.value.upper():7} {self.name}: {self.summary}"


@dataclass(frozen=True)
class CheckReport:
    """The results of a battery, in the order the checks ran."""

    target: str
    results: tuple[CheckResult, ...]
    notes: tuple[str, ...] = ()
    """What the run did besides its checks that the user must know (the test messages
    it delivered and left in the mailbox, say), printed after the counts."""
    stopped: str = ""
    """Why the run stopped before its last check, or empty: the server speaks another
    protocol than the battery's (an LMTP server, RFC 2033 §4.1), so the checks left
    were skipped unrun, and the run is not :attr:`tested`. Printed after the counts."""

    @property
    def ok(self) -> bool:
        """True when no check failed (skipped checks do not count against), and so
        also when every check was skipped, as against a server that refuses every
        connection: such a run tested nothing. A caller that asserts ``ok`` asserts
        :attr:`tested` too."""
        return not self.failures

    @property
    def tested(self) -> bool:
        """True when a check passed or failed: a run whose every check was skipped
        (a server refusing each connection, a login refused, nothing it offers)
        says nothing of the server, and is no pass; nor does a run :attr:`stopped`
        because the server speaks another protocol, whatever a check before said."""
        if self.stopped:
            return False
        return any(result.outcome is not Outcome.SKIPPED for result in self.results)

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if result.outcome is Outcome.FAILED]

    def __getitem__(self, name: str) -> CheckResult:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)

    def format(self, *, transcripts: bool = True) -> str:
        """A human-readable report; each failure followed by its transcript."""
        lines = [f"smtpcore check of {self.target}"]
        for result in self.results:
            lines.append(str(result))
            if transcripts and result.outcome is Outcome.FAILED and result.transcript:
                lines += ["    " + line for line in result.transcript_text().splitlines()]
        counts = {outcome: 0 for outcome in Outcome}
        for result in self.results:
            counts[result.outcome] += 1
        lines.append(
            f"{counts[Outcome.PASSED]} passed, {counts[Outcome.FAILED]} failed, "
            f"{counts[Outcome.SKIPPED]} skipped"
        )
        if self.stopped:
            lines.append(f"stopped: {self.stopped}")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


class ServerUnreachable(ConnectionError):
    """The run's first connection failed (refused, unresolvable host, timeout): no
    server was reached, so no check has anything to say about one."""


class Failed(Exception):
    """Raised by a check that found the server wrong; its text is the summary."""


class Skipped(Exception):
    """Raised by a check with nothing to test (an extension not offered, no mail)."""


class Refused(Skipped):
    """Raised where the server refused service on a new connection, at its greeting
    (SMTP's 421 or 554, RFC 5321 §3.8, §3.1; POP3's ``-ERR``, RFC 1939 §4) or its
    first command: busy, or a limit on how often a client may connect. The server
    cannot be tested through that connection, which says nothing of how it speaks
    the protocol, so the check that opened it is skipped, the run's first connection
    included; a check that found a defect before keeps it (:func:`run_one`)."""


class OtherProtocol(Skipped):
    """Raised where the server answers in another protocol than the battery's (an LMTP
    server refuses EHLO and takes LHLO, RFC 2033 §4.1): no check of the battery can
    test it, so the check is skipped and its result says the run stops there
    (:attr:`CheckResult.stopped`, set by :func:`run_one`). Its text says what the
    server is."""


def refused_connection(answer: object, why: str) -> Refused:
    """The skip for a new connection refused with ``answer``; ``why`` cites the RFC
    that lets the server refuse so and names the likely cause. One wording for both
    batteries, so that a report reads alike whichever protocol was refused."""
    return Refused(f"the server refused a new connection: {answer}, {why}")


BUSY_PAUSES: Final = (0.05, 0.15, 0.3)
"""Seconds to wait before each new try of a connection greeted busy right after the
battery's own last session ended (:func:`busy_retry_pause`)."""


def busy_retry_pause(tried: int, started: float, timeout: float) -> float | None:
    """The pause before trying again a new connection greeted busy (SMTP's 421, POP3's
    ``-ERR [SYS/TEMP]`` or ``[IN-USE]``; RFC 5321 §3.8, RFC 3206 §4, RFC 2449 §8.1.2) after
    ``tried`` tries begun at ``started`` (``time.monotonic()``), or None to give up.

    A server with a per-address limit of sessions frees the slot of the battery's
    last session a moment after it closed; a connection opened at once meets the
    battery's own session, not a busy server. A few tries, within ``timeout``, tell
    the two apart before the refusal counts (:func:`refused_connection`)."""
    if tried > len(BUSY_PAUSES):
        return None
    pause = BUSY_PAUSES[tried - 1]
    if time.monotonic() + pause - started > timeout:
        return None
    return pause


class Prober(Protocol):
    """What :func:`run_one` needs of a battery's probe."""

    @property
    def timeout(self) -> float: ...

    @property
    def clients(self) -> Sequence[WireClient]: ...

    @property
    def problems(self) -> Sequence[str]:
        """The defects a check found and went on past: they fail it, whatever ends it
        (:func:`run_one`)."""
        ...

    def transcript(self) -> tuple[Exchange, ...]: ...

    def close(self) -> None: ...


P = TypeVar("P", bound=Prober)
W = TypeVar("W", bound=WireClient)


def open_wire(host: str, port: int, *, timeout: float, pause: float, kind: type[W]) -> W:
    """A new connection of ``kind``, or :class:`ServerUnreachable` saying why there is none."""
    try:
        return kind(host, port, timeout=timeout, pause=pause)
    except OSError as exc:
        raise ServerUnreachable(f"could not connect to {host_port(host, port)}: {exc}") from exc


def transcript_of(clients: Sequence[WireClient]) -> tuple[Exchange, ...]:
    """The transcripts of ``clients`` in order, each headed by a note where there are several."""
    out: list[Exchange] = []
    for number, client in enumerate(clients, 1):
        if len(clients) > 1:
            out.append(Exchange("note", note=f"connection {number}"))
        out += client.transcript
    return tuple(out)


def close_all(clients: Sequence[WireClient]) -> None:
    for client in clients:
        client.close()


def insecure_context() -> ssl.SSLContext:
    """TLS without certificate checks: the checks test the protocol, not the PKI."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


SESSION_ENDINGS: Final = (Failed, Skipped, OSError)
"""What ends a check's sessions early, and :func:`run_one` judges: a failure, a skip,
a timeout, a server that sent more than owed, a connection or TLS error (the last
three are :class:`OSError`)."""


def ending_said(exc: Failed | Skipped | OSError, timeout: float) -> str:
    """What ``exc``, one of :data:`SESSION_ENDINGS`, says in a summary; ``timeout`` the
    seconds a reply was waited for."""
    if isinstance(exc, (Failed, Skipped)):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no whole reply came within {timeout:g} s where one was due"
    if isinstance(exc, ServerFlood):
        return f"the server sent more than owed: {exc}"
    return f"connection error: {exc}"


def run_one(
    name: str, function: Callable[[P], str], probe: P, *, first: bool = False
) -> CheckResult:
    """``function``'s result on ``probe``. In the ``first`` check of a run, a first
    connection that fails raises :class:`ServerUnreachable` rather than fail the
    check: no server was reached to fail.

    A check that recorded problems in ``probe.problems`` fails with them however it
    ends: a skip part way, a connection or a login refused on a later session, hides
    none of them. The rule lives here, once, so that no check can forget it where it
    opens a new connection.

    A check that found the server speaks another protocol (:class:`OtherProtocol`)
    is skipped, and its result's :attr:`~CheckResult.stopped` says so: the result is
    the one way the runner learns the run ends there."""
    try:
        summary = function(probe)
    except SESSION_ENDINGS as exc:
        if isinstance(exc, ServerUnreachable) and first and not probe.clients:
            raise
        outcome = Outcome.SKIPPED if isinstance(exc, Skipped) else Outcome.FAILED
        stopped = str(exc) if isinstance(exc, OtherProtocol) else ""
        return _judged(name, outcome, ending_said(exc, probe.timeout), probe, stopped)
    finally:
        probe.close()
    return _judged(name, Outcome.PASSED, summary, probe)


def _judged(
    name: str, outcome: Outcome, summary: str, probe: Prober, stopped: str = ""
) -> CheckResult:
    """The result of check ``name`` that ended with ``outcome`` and ``summary``, the
    problems ``probe`` recorded first: any of them fails the check, and the summary
    names those it does not already name, then what ended the check (a skip, as
    "then the check stopped: ..."; a pass says nothing more). ``stopped`` is why the
    run stops here, or empty."""
    found = [problem for problem in probe.problems if problem not in summary]
    if found:
        ending = {
            Outcome.PASSED: [],
            Outcome.SKIPPED: [f"then the check stopped: {summary}"],
            Outcome.FAILED: [summary],
        }[outcome]
        outcome, summary = Outcome.FAILED, "; ".join([*found, *ending])
    return CheckResult(name, outcome, summary, probe.transcript(), stopped)


def check_run_arguments(port: int, timeout: float, pause: float, checks: object) -> None:
    """Refuse what would test something else than asked (a port past 65535 wraps
    around in the resolver). Each battery first checks the host
    (:func:`~smtpcore.testing._wire.checked_host`) and what its sessions say, in
    that order, then these."""
    if isinstance(checks, str):
        raise TypeError(f"checks is a list of names, not the str {checks!r}: write [{checks!r}]")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an int from 1 to 65535, not {port!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    if not math.isfinite(pause) or pause < 0:
        raise ValueError(f"pause must be zero or more seconds, not {pause!r}")


def unjudged(client: WireClient, why: str) -> None:
    """Record in ``client``'s transcript that a part of a check could not be judged,
    and why: the rest of the check still runs, and can still fail."""
    client.transcript.append(Exchange("note", note=f"not judged: {why}"))


def selected(battery: Mapping[str, object], checks: Sequence[str] | None) -> list[str]:
    """The names of ``checks`` (all of ``battery`` when None), each one known, else
    ValueError naming it."""
    names = list(battery) if checks is None else list(checks)
    for name in names:
        if name not in battery:
            raise ValueError(f"no check named {name!r} (known: {', '.join(battery)})")
    return names


for _public in (CheckReport, CheckResult, Outcome, ServerUnreachable):
    _public.__module__ = "smtpcore.testing.check"  # where users import them from
