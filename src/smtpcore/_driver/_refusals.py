"""The ``reject:`` line: one refusal, as Postfix writes it and fail2ban's filters read it.

One builder for the driver (a handler's hook that met a full disk) and the reference
server (every refusal it decides), so that a refusal reads alike whoever logs it.
"""

from __future__ import annotations

from collections.abc import Sequence

from smtpcore._driver._logtext import loggable, loggable_reply
from smtpcore._driver._proxied import SeenClient, client_text, peer_text

__all__ = ["only_recipient", "path_text", "refusal_line"]


def refusal_line(
    listener: str | None,
    peer: SeenClient | tuple[str, int] | None,
    command: str,
    reply: object,
    *,
    queue_id: str | None = None,
    sender: str | None = None,
    recipient: str | None = None,
    helo: str | None = None,
    user: str | None = None,
    detail: str | None = None,
) -> str:
    """One refused command, as Postfix's ``reject:`` lines read (and fail2ban's filters
    expect): ``NOQUEUE: reject: RCPT from [192.0.2.1]:40312: 550 5.1.1 <x@y>: no such
    mailbox here; listener=smtp from=<a@b> to=<x@y> helo=<h>``. ``peer`` is the session,
    named as :func:`client_text` names it (with the proxy that stands in for it), or, as
    earlier versions took it, a ``(host, port)`` or None, named by :func:`peer_text`;
    ``reply`` prints as its wire form without the line breaks. ``listener`` None (the
    driver, which serves no named listener) leaves its field out; ``detail``, the
    server's own reason (a write's ``No space left on device``), ends the line in
    parentheses, as in Postfix's ``status=`` lines. With none of these the line ends
    with the reply."""
    fields = [] if listener is None else [f"listener={listener}"]
    for name, value in (("from", sender), ("to", recipient), ("user", user), ("helo", helo)):
        if value is not None:
            fields.append(f"{name}=<{loggable(value)}>")
    if detail is not None:
        fields.append(f"({loggable(detail)})")
    line = f"{queue_id or 'NOQUEUE'}: reject: {command} from {_refused_text(peer)}: "
    line += loggable_reply(reply)
    return f"{line}; {' '.join(fields)}" if fields else line


def _refused_text(peer: SeenClient | tuple[str, int] | None) -> str:
    """The refused client as :func:`refusal_line` names it: a session by
    :func:`client_text`, an address (or None) by :func:`peer_text`."""
    if peer is None or isinstance(peer, tuple):
        return peer_text(peer)
    return client_text(peer)


def path_text(path: object | None) -> str:
    """A reverse path for ``from=``: the address, or empty for the null path ``<>``."""
    return "" if path is None else str(path)


def only_recipient(mailboxes: Sequence[object]) -> str | None:
    """The ``to=`` of a refused message: its only recipient, as Postfix logs a refused
    DATA; None for several, which one field could not name."""
    return str(mailboxes[0]) if len(mailboxes) == 1 else None
