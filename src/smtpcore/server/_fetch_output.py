"""What ``fetch`` writes on its standard streams: a message's line on standard output
the moment it is known, and its errors and warnings on standard error.

Apart because every step of a run reports through them, the login and the record's
reading as much as the run over the listing, and each must word them alike
(``smtpcore fetch: ...``, escaped by :func:`printable`)."""

from __future__ import annotations

import sys

from smtpcore.server.tools import (
    declined_certificate,
    failed_certificate_check,
    printable,
)


def _fetch_failed(exc: Exception | str, *, checked_name: str | None = None) -> None:
    """An error on standard error, as ``send`` reports its own: standard output is
    for the messages. A server certificate that failed this client's check (against
    ``checked_name``) is this client's refusal, not the server's."""
    if isinstance(exc, Exception):
        failure = failed_certificate_check(exc)
        if failure is not None:
            exc = declined_certificate(exc, failure, checked_name)
    print(printable(f"smtpcore fetch: {exc}"), file=sys.stderr)


def _warn(text: str) -> None:
    """A warning on standard error; fetch goes on."""
    print(printable(f"smtpcore fetch: warning: {text}"), file=sys.stderr)


def _say_at_once(line: str) -> None:
    """``line`` on standard output, flushed: a reader gone (``fetch --delete | head``)
    is found at the message it is about, and no later one is retrieved or deleted,
    however the output is buffered (a pipe's is by blocks)."""
    print(line, flush=True)
