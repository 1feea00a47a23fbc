"""Check any SMTP server, in any language, for the bugs that split two readers of a session.

:func:`check_server` connects to a host and port; :func:`check_handler`
first serves an smtpcore :class:`~smtpcore.handler.Handler` with the asyncio
adapter on a loopback port. Either runs a battery of checks (:data:`CHECKS`)
over real sockets, each on fresh connections, and returns a
:class:`CheckReport`: every check passed, failed or skipped (an extension the
server does not offer), and every failure carries the transcript that shows
it, byte for byte.

The checks send ordinary mail (to ``recipient``, from ``sender``): point them
at a server whose recipient is a sink. Every check ends its sessions with
``QUIT`` (``bdat-octets`` by closing its side of the connection instead) and
reads until the server closes, so a reply the server owes no one (the mark of
a command read from inside a message, a line or a chunk) is counted, not
missed; a server that leaves QUIT unanswered, or the connection open after the
session's end, fails rather than pass on the replies that came. Nothing here
needs Hypothesis; the checks are deterministic but for the seed of the
chunkings they try.

Each check opens its own sessions, watches the replies and how each session
ends, and returns a summary, or fails or skips saying why. They come in
families: stream checks (chunking, smuggling, pipelining), the pipelined end
of a message (pipelined-end), state checks (state-order,
starttls-injection), limits (line lengths, recipients, SIZE), ascii-digits,
and BDAT; :data:`CHECKS` names them all, in the order they run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import ssl
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from smtpcore._ip import host_port
from smtpcore.testing._battery import (
    CheckReport,
    CheckResult,
    Outcome,
    ServerUnreachable,
    check_run_arguments,
    run_one,
    selected,
)
from smtpcore.testing._server import CollectingHandler
from smtpcore.testing._smtp_bdat_checks import (
    check_bdat_bare_lf,
    check_bdat_octets,
    check_bdat_refused_chunk,
)
from smtpcore.testing._smtp_digit_checks import check_ascii_digits
from smtpcore.testing._smtp_end_checks import check_pipelined_end
from smtpcore.testing._smtp_limit_checks import (
    check_command_line_length,
    check_recipient_limit,
    check_size_limit,
    check_text_line_length,
)
from smtpcore.testing._smtp_probe import Probe as Probe  # re-exported: tests build one
from smtpcore.testing._smtp_probe import check_session_words, checked_helo, checked_mailbox
from smtpcore.testing._smtp_state_checks import check_starttls_injection, check_state_order
from smtpcore.testing._smtp_stream_checks import SMUGGLING_ENDINGS as _ENDINGS
from smtpcore.testing._smtp_stream_checks import (
    check_chunking,
    check_pipelining,
    check_smuggling,
)
from smtpcore.testing._wire import Exchange, ServerReply, checked_host

if TYPE_CHECKING:
    from smtpcore.handler import Handler

__all__ = [
    "CHECKS",
    "SMUGGLING_ENDINGS",
    "CheckReport",
    "CheckResult",
    "Exchange",
    "Outcome",
    "ServerReply",
    "ServerUnreachable",
    "check_handler",
    "check_server",
    "checked_helo",
    "checked_mailbox",
]


# Bound again here, where users import it: autodoc reads a data docstring from this module.
SMUGGLING_ENDINGS: Final[Mapping[str, bytes]] = _ENDINGS
"""End-of-data look-alikes that a server must not take for ``CRLF.CRLF`` (SMTP
smuggling: a second reader of the same message ends it elsewhere); the
``smuggling`` check sends each in a message."""


CHECKS: Final[Mapping[str, Callable[[Probe], str]]] = {
    "chunking": check_chunking,
    "smuggling": check_smuggling,
    "pipelining": check_pipelining,
    "pipelined-end": check_pipelined_end,
    "state-order": check_state_order,
    "starttls-injection": check_starttls_injection,
    "command-line-length": check_command_line_length,
    "text-line-length": check_text_line_length,
    "recipient-limit": check_recipient_limit,
    "size-limit": check_size_limit,
    "ascii-digits": check_ascii_digits,
    "bdat-octets": check_bdat_octets,
    "bdat-bare-lf": check_bdat_bare_lf,
    "bdat-refused-chunk": check_bdat_refused_chunk,
}
"""The battery, by name, in the order it runs. Each check returns a summary, or
raises to fail or be skipped; :func:`check_server` runs them."""


def _check_arguments(
    host: str, port: int, timeout: float, pause: float, checks: object, words: Sequence[object]
) -> None:
    """Refuse a host the socket calls cannot take, then ``words``, the helo, sender
    and recipient, that would send commands of the caller's (a CR or LF) or cannot
    be encoded, then what :func:`~smtpcore.testing._battery.check_run_arguments`
    refuses."""
    checked_host(host)
    check_session_words(*words)
    check_run_arguments(port, timeout, pause, checks)


def _check_stored_wait(stored_wait: float | None) -> None:
    """Refuse a wait for the store that is no number of seconds, zero or more."""
    if stored_wait is not None and (not math.isfinite(stored_wait) or stored_wait < 0):
        raise ValueError(f"stored_wait must be zero or more seconds, not {stored_wait!r}")


def check_server(
    host: str,
    port: int,
    *,
    checks: Sequence[str] | None = None,
    helo: str = "check.smtpcore.test",
    sender: str = "check@smtpcore.test",
    recipient: str = "postmaster@smtpcore.test",
    timeout: float = 10.0,
    pause: float = 0.002,
    seed: int = 0,
    tls_context: ssl.SSLContext | None = None,
    max_size_probe: int = 2 << 20,
    stored: Callable[[], Sequence[bytes]] | None = None,
    stored_wait: float | None = None,
) -> CheckReport:
    """Run the checks named in ``checks`` (all of :data:`CHECKS` by default) against
    the SMTP server at ``host:port``.

    ``recipient`` must be an address the server accepts (a sink: the checks
    send a few small messages to it). ``timeout`` bounds each wait: for a
    whole reply (one deadline, however slowly its bytes come), a write, the
    TLS handshake, the server closing after ``QUIT``. ``pause`` is slept
    between the pieces of a chunked write; ``seed`` picks the random
    chunkings; ``tls_context`` is used for STARTTLS (by default, one that
    checks no certificate); ``max_size_probe`` is the largest SIZE limit the
    size check sends a whole message over; ``stored``, where you can see what
    the server stores, returns the content (bytes, CRLF or LF line ends) of the
    messages it has stored (``pipelined-end`` then checks that each message it
    sent is seen in the store, not only answered 250, calling ``stored`` again
    while one is missing, as a server may store a message after its 250; a
    ``stored`` that raises skips it); ``stored_wait`` is how many seconds it
    goes on asking (by default ``timeout``, for a store that a delivery agent
    writes later; 0 asks once, for a store known complete when the 250 is sent,
    so that a lost message fails at once).

    Raises ``ValueError`` for a host name the socket calls cannot take (an
    empty label, as in ``a..b``, or one over 63 octets), a port outside 1 to
    65535, a ``timeout`` that is not a positive number of seconds, an
    unknown check name, a ``helo`` that is not one word, or a ``sender`` or
    ``recipient`` that is no mailbox (a CR, LF, NUL or lone surrogate in any
    of them; the sender may be empty, the null path, and the recipient
    ``Postmaster`` in any letter case with no domain, RFC 5321 §4.1.1.3);
    ``TypeError`` when ``checks`` is one str rather than a list of names;
    :class:`ServerUnreachable` when the run's first connection fails (a
    refused connection, a host that does not resolve): a server that cannot
    be reached fails no check. A connection that fails later fails its check.
    A connection the server refuses with a 421 or 554 greeting or a 421 to EHLO
    (busy, or a connection rate limit, RFC 5321 §3.8, §3.1), the run's first
    included, skips its check: the server turned the session away, which says
    nothing of what the check looks for.

    An LMTP server (one that refuses EHLO with a 5xx and takes LHLO, RFC 2033
    §4.1) stops the run at the first check that says EHLO: that check and the
    rest are skipped, saying so, and the report's ``stopped`` names it.
    """
    _check_arguments(host, port, timeout, pause, checks, (helo, sender, recipient))
    _check_stored_wait(stored_wait)
    names = selected(CHECKS, checks)
    results: list[CheckResult] = []
    for index, name in enumerate(names):
        probe = Probe(
            host,
            port,
            helo=helo,
            sender=sender,
            recipient=recipient,
            timeout=timeout,
            pause=pause,
            seed=seed,
            tls_context=tls_context,
            max_size_probe=max_size_probe,
            after_session=bool(results),
            stored=stored,
            stored_wait=stored_wait,
        )
        result = run_one(name, CHECKS[name], probe, first=not results)
        results.append(result)
        if result.stopped:
            unrun = f"not run: {result.stopped}"
            results += [CheckResult(left, Outcome.SKIPPED, unrun) for left in names[index + 1 :]]
            return CheckReport(host_port(host, port), tuple(results), stopped=result.stopped)
    return CheckReport(host_port(host, port), tuple(results))


@contextlib.contextmanager
def serving(handler: Handler, **server_options: Any) -> Iterator[tuple[str, int]]:
    """Serve ``handler`` with :class:`smtpcore.asyncio.SMTPServer` on a loopback port,
    from a thread with its own event loop, for the block; yields (host, port)."""
    import asyncio

    from smtpcore.asyncio import SMTPServer

    server_options.setdefault("hostname", "check.smtpcore.test")
    started: list[tuple[str, int]] = []
    failure: list[BaseException] = []
    ready = threading.Event()
    loop_box: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        async with SMTPServer(handler, "127.0.0.1", 0, **server_options) as server:
            loop_box.append((asyncio.get_running_loop(), stop))
            started.append(("127.0.0.1", server.port))
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="smtpcore-check-server", daemon=True)
    thread.start()
    ready.wait()
    if not started:
        thread.join()
        raise RuntimeError("the handler's server did not start") from (
            failure[0] if failure else None
        )
    try:
        yield started[0]
    finally:
        loop, stop = loop_box[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join()


def _contents(messages: Sequence[object]) -> list[object]:
    """The content of each envelope a :class:`~smtpcore.testing.CollectingHandler`
    kept; what is no envelope (a subclass may keep bytes) as it is, for the check to
    judge."""
    return [getattr(message, "content", message) for message in messages]


def check_handler(
    handler: Handler, *, server_options: Mapping[str, Any] | None = None, **options: Any
) -> CheckReport:
    """Serve ``handler`` in-process (asyncio, loopback) and run :func:`check_server` on it.

    ``server_options`` go to :class:`smtpcore.asyncio.SMTPServer` (for
    example ``ssl_context`` to offer STARTTLS); ``options`` to
    :func:`check_server`. A :class:`~smtpcore.testing.CollectingHandler` gives
    ``stored`` (the content of each envelope in its ``messages``) unless
    ``options`` do, and ``stored_wait`` 0 unless they give one: the handler keeps
    a message before its 250 is sent, so one missing after QUIT is lost, not late.
    """
    if isinstance(handler, CollectingHandler) and "stored" not in options:
        options["stored"] = functools.partial(_contents, handler.messages)
        options.setdefault("stored_wait", 0)
    with serving(handler, **dict(server_options or {})) as (host, port):
        report = check_server(host, port, **options)
    where = host_port(host, port)
    return dataclasses.replace(report, target=f"handler {type(handler).__name__} at {where}")
