"""The mail log: one line per session, per accepted message and per delivery attempt.

The lines read like Postfix's, which is what a mail administrator already
knows how to grep: a queue id first, then ``key=value`` fields, the outcome
last with the reply in parentheses::

    3F2A1B0C9D: from=<john@abc.example>, size=412, nrcpt=1, client=[127.0.0.1]:40312
    3F2A1B0C9D: to=<brendon@pqr.example>, relay=mx.pqr.example[127.0.0.1]:2525,
        delay=0.05, tls=yes, tls_policy=may, dsn=2.0.0,
        status=sent (250 2.0.0 Ok: queued as 7C81D0E2AA)

They go to the ``smtpcore.mail`` logger at INFO level. What a peer chose
(addresses, a HELO or user name, a reply's text) has its control characters,
line separators and bidi controls escaped, so that it can neither drive the
terminal the log is read on nor write a line of its own.
"""

from __future__ import annotations

import logging

from smtpcore._driver._logtext import loggable, printable
from smtpcore._driver._proxied import client_text, peer_text
from smtpcore._driver._refusals import refusal_line

__all__ = [
    "client_text",
    "delivery_line",
    "loggable",
    "logger",
    "peer_text",
    "printable",
    "refusal_line",
]

logger = logging.getLogger("smtpcore.mail")


def delivery_line(
    queue_id: str,
    recipient: str,
    *,
    relay: str,
    delay: float,
    dsn: str,
    status: str,
    detail: str,
    tls: str | bool | None = None,
    tls_policy: str | None = None,
) -> str:
    """One recipient's outcome of one delivery attempt; ``tls`` is ``no``, ``yes``
    (encrypted) or ``verified``, and ``tls_policy`` the relay's ``--relay-tls``.
    ``detail`` is often the remote server's reply, escaped as the rest."""
    if isinstance(tls, bool):
        tls = "yes" if tls else "no"
    tls_field = "" if tls is None else f", tls={tls}"
    if tls_policy is not None:
        tls_field += f", tls_policy={tls_policy}"
    return (
        f"{queue_id}: to=<{loggable(recipient)}>, relay={loggable(relay)}, "
        f"delay={delay:.2f}{tls_field}, dsn={dsn}, status={status} ({loggable(detail)})"
    )
