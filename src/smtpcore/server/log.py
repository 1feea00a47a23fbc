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

from smtpcore._driver._logtext import loggable, loggable_reply, printable
from smtpcore._driver._proxied import SeenClient, client_text, peer_text

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


def refusal_line(
    listener: str,
    peer: SeenClient | tuple[str, int] | None,
    command: str,
    reply: object,
    *,
    queue_id: str | None = None,
    sender: str | None = None,
    recipient: str | None = None,
    helo: str | None = None,
    user: str | None = None,
) -> str:
    """One refused command, as Postfix's ``reject:`` lines read (and fail2ban's filters
    expect): ``NOQUEUE: reject: RCPT from [192.0.2.1]:40312: 550 5.1.1 <x@y>: no such
    mailbox here; listener=smtp from=<a@b> to=<x@y> helo=<h>``. ``peer`` is the session,
    named as :func:`client_text` names it (with the proxy that stands in for it), or, as
    earlier versions took it, a ``(host, port)`` or None, named by :func:`peer_text`;
    ``reply`` prints as its wire form without the line breaks."""
    fields = [f"listener={listener}"]
    for name, value in (("from", sender), ("to", recipient), ("user", user), ("helo", helo)):
        if value is not None:
            fields.append(f"{name}=<{loggable(value)}>")
    return (
        f"{queue_id or 'NOQUEUE'}: reject: {command} from {_refused_text(peer)}: "
        f"{loggable_reply(reply)}; " + " ".join(fields)
    )


def _refused_text(peer: SeenClient | tuple[str, int] | None) -> str:
    """The refused client as :func:`refusal_line` names it: a session by
    :func:`client_text`, an address (or None) by :func:`peer_text`."""
    if peer is None or isinstance(peer, tuple):
        return peer_text(peer)
    return client_text(peer)


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
