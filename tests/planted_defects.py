"""smtpcore machines with a defect planted on purpose, for the fuzzer's tests to find.

``python -m smtpcore.testing fuzz smtp-server --machine planted_defects:nul_crash_server``
fuzzes one of them (with tests/ on ``sys.path``).
"""

from __future__ import annotations

from smtpcore import NEED_DATA, pop3
from smtpcore._lines import LineTooLong, ReceiveBuffer
from smtpcore._sentinels import NoEvent
from smtpcore.smtp import BadCommand, ClientConnection, Event, ServerConnection, State

__all__ = [
    "HoardingBuffer",
    "NulCrashServer",
    "SpinningTlsServer",
    "StallingServer",
    "StuckTlsServer",
    "hoarding_client",
    "hoarding_pop3_server",
    "hoarding_server",
    "nul_crash_server",
    "spinning_tls_server",
    "stalling_server",
    "stuck_tls_server",
]


class NulCrashServer(ServerConnection):
    """Crashes on a refused command line holding a NUL (as C string code might)."""

    def next_event(self) -> Event | NoEvent:
        event = super().next_event()
        if isinstance(event, BadCommand) and b"\x00" in event.line:
            raise ZeroDivisionError("planted: a NUL in a refused command line")
        return event


class StallingServer(ServerConnection):
    """Stops reading once a command line says XSTALL, and keeps buffering what comes."""

    def next_event(self) -> Event | NoEvent:
        if b"XSTALL" in self._buffer.view():
            return NEED_DATA
        return super().next_event()


class StuckTlsServer(ServerConnection):
    """Never leaves TLS_PENDING: ``tls_started()`` forgets to move on, so a driver
    that keeps telling it the handshake is done goes round for ever, raising nothing."""

    def tls_started(self) -> None:
        pass


class SpinningTlsServer(ServerConnection):
    """``tls_started()`` never returns: it waits for a change of state only it could make."""

    def tls_started(self) -> None:
        while self.state is State.TLS_PENDING:
            pass


class HoardingBuffer(ReceiveBuffer):
    """A receive buffer that ignores the line limit it is given: it keeps an
    unfinished line whole, however long, where the real one drops it."""

    __slots__ = ()

    def next_line(self, limit: int, *, lf_ends: bool = True) -> bytes | LineTooLong | None:
        return super().next_line(2**40, lf_ends=lf_ends)


def nul_crash_server() -> NulCrashServer:
    return NulCrashServer("fuzz.test")


def stalling_server() -> StallingServer:
    return StallingServer("fuzz.test")


def hoarding_client() -> ClientConnection:
    """An SMTP client that says it keeps replies to 100 lines, but whose reply
    parser was left unbounded: it holds a never-ending multi-line reply whole."""
    conn = ClientConnection("fuzz.test", max_reply_lines=100)
    conn._parser.max_lines = 10**9  # the planted defect
    return conn


def hoarding_server() -> ServerConnection:
    """An SMTP server that holds a command line past its limit until the line ends
    (a few KB below the longest AUTH line: the bound follows the state)."""
    conn = ServerConnection("fuzz.test")
    conn._buffer = HoardingBuffer()  # the planted defect
    return conn


def hoarding_pop3_server() -> pop3.ServerConnection:
    """A POP3 server that holds a command line past its limit until the line ends."""
    conn = pop3.ServerConnection("fuzz.test")
    conn._buffer = HoardingBuffer()  # the planted defect
    return conn


def stuck_tls_server() -> StuckTlsServer:
    return StuckTlsServer("fuzz.test", starttls=True)


def spinning_tls_server() -> SpinningTlsServer:
    return SpinningTlsServer("fuzz.test", starttls=True)
