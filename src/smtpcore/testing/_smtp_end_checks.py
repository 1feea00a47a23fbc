"""The ``pipelined-end`` check: commands in the same write as a message's end.

RFC 2920 §3.1 lets a pipelining client write RSET, or the next transaction's MAIL
and RCPTs, right behind the final dot, in the same write. A server that looks at
what follows in its buffer before it commits the message (or that resets on a
command read with the end) loses the message yet answers 250: the client thinks
it delivered, and nothing in the reply count shows the loss but the replies'
own codes, when the server gets them wrong too.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Final, Protocol, runtime_checkable

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._smtp_probe import (
    Probe,
    ask,
    owed_replies,
    probe_headers,
    quit_session,
    reply_codes,
    shown_codes,
)
from smtpcore.testing._wire import ServerReply

__all__ = ["check_pipelined_end"]

_END: Final = b".\r\n"

_FIRST_LOOK_AGAIN: Final = 0.05
_LONGEST_LOOK_AGAIN: Final = 1.0
"""Seconds between two calls of ``stored()`` while a message is not yet seen: from
the first, doubling up to the longest, so that a store that is quick costs little
wait and a slow one few calls (each may list a big Maildir)."""

MARK_PREFIX: Final = b"smtpcore pipelined-end "
"""How each body line that finds a message (:func:`_mark`) starts, whatever the run."""


@runtime_checkable
class Relisting(Protocol):
    """A ``stored`` that may pass over what it judged unchanged since it last looked
    (:class:`~smtpcore.testing._stored_files.StoredFiles`, a Maildir folder whose
    time stayed) and can look at everything again: asked before a message is said
    lost, which such a judgement must never decide."""

    def relisted(self) -> Sequence[bytes]: ...


def _mark(token: str, number: int) -> bytes:
    """The body line that finds message ``number`` in the store: a server may rewrite
    headers (a tagged subject) but keeps the body, and the run's ``token`` keeps a
    message from an earlier run (a Maildir keeps them all) from passing for this one."""
    return MARK_PREFIX + f"{token} message {number}".encode()


def _message(probe: Probe, token: str, number: int) -> bytes:
    """A probing message, its end included, told apart from the other by its body."""
    headers = probe_headers(probe, f"smtpcore pipelined end {number}")
    return headers + _mark(token, number) + b"\r\n" + _END


def _expected(line: bytes) -> tuple[int, ...]:
    """The codes a correct server that takes the check's mail answers ``line`` with."""
    verb = line[:4].upper()
    if verb == b"DATA":
        return (354,)
    if verb == b"RSET":
        return (250,)
    return (250, 251)  # MAIL, RCPT (§4.1.1.3: 251 forwards), a message's end


def _judged(
    lines: list[bytes], replies: list[ServerReply], write: str, problems: list[str]
) -> None:
    """Add to ``problems`` each reply in ``replies`` that does not answer its line of
    ``lines`` as a server taking the check's mail does; a refused message skips the
    check, which then tests nothing."""
    for line, reply in zip(lines, replies, strict=True):
        if reply.code in _expected(line):
            continue
        if line == _END and reply.code // 100 in (4, 5):
            raise _Skipped(
                f"the message ended in the same write as {write} was refused ({reply}): "
                "whether the server keeps such a message went untested"
            )
        shown = "the message's end" if line == _END else repr(line.decode("utf-8", "replace"))
        problems.append(f"in the write of the end and {write}, {shown} got {reply}")


def check_pipelined_end(probe: Probe) -> str:
    """A message ended in the same write as RSET, then one ended in the same write as
    the next transaction's MAIL and RCPT (RFC 2920 §3.1), each get their own reply
    (250), and so do the commands behind them.

    The first write holds the first message's end and RSET; after MAIL, RCPT and
    DATA one at a time, the second holds the second message's end, MAIL, RCPT and
    RSET. A server that loses a message when a command comes in the same read as
    its end, or answers that command as part of the message, gives too few replies
    or the wrong ones. Where messages stored can be seen (``stored``, or
    :func:`check_handler` with a :class:`~smtpcore.testing.CollectingHandler`), look
    for each in them too, by a body line holding a token of this run.
    """
    client, offered = probe.hello()
    if "PIPELINING" not in offered:
        raise _Skipped("PIPELINING is not offered")
    token = secrets.token_hex(8)
    problems: list[str] = []
    codes: list[int] = []
    writes = [
        ("RSET", _message(probe, token, 1), [b"RSET"]),
        (
            "MAIL and RCPT",
            _message(probe, token, 2),
            [probe.mail_line(), probe.rcpt_line(), b"RSET"],
        ),
    ]
    for write, message, behind in writes:
        probe.transaction(client)
        data = ask(client, b"DATA")
        if data.code != 354:
            raise _Skipped(f"DATA was answered {data}")
        codes.append(data.code)
        client.send(message + b"".join(line + b"\r\n" for line in behind))
        lines = [_END, *behind]
        replies = owed_replies(client, len(lines), f"a message's end and {write} behind it")
        codes += reply_codes(replies)
        _judged(lines, replies, write, problems)
        if problems:
            break
    codes += reply_codes(quit_session(client))
    if problems:
        raise _Failed(f"{'; '.join(problems)} (codes {shown_codes(codes)}): a message may be lost")
    said = f"two messages, each ended in the same write as the next commands, got {codes}"
    if probe.stored is None:
        return said
    wait = probe.timeout if probe.stored_wait is None else probe.stored_wait
    unseen = _unseen_in_time(probe.stored, token, len(writes), wait)
    if unseen:
        raise _Failed(f"{said}, but {unseen}")
    return f"{said}, and both were seen in the store"


def _contents(stored: Callable[[], Sequence[bytes]]) -> list[bytes]:
    """What ``stored`` returns, each message's line ends made LF (a Maildir keeps LF).

    ``stored`` is the caller's code: an exception from it, or something other than
    bytes, says nothing of the server, so the check is skipped, never crashed."""
    try:
        messages = list(stored())
    except Exception as exc:  # the caller's code: reported, never raised
        raise _Skipped(
            f"stored() raised {type(exc).__name__}: {exc}: whether the server keeps "
            "the messages it answered 250 went untested"
        ) from exc
    for content in messages:
        if not isinstance(content, bytes | bytearray | memoryview):
            raise _Skipped(
                f"stored() returned a {type(content).__name__} among the messages, not "
                "their content as bytes: whether the server keeps the messages went untested"
            )
    return [bytes(content).replace(b"\r\n", b"\n") for content in messages]


def _unseen_in_time(
    stored: Callable[[], Sequence[bytes]], token: str, count: int, wait: float
) -> str:
    """:func:`_unseen`, asked again while a message is missing, for ``wait`` seconds
    at most (0: asked once): a server may store a message after its 250 (it queued
    it, and a delivery agent writes the file later, as Postfix's local(8) does). A
    :class:`Relisting` ``stored`` is asked once more, everything looked at, before a
    message is said unseen."""
    deadline = time.monotonic() + wait
    pause = _FIRST_LOOK_AGAIN
    while True:
        unseen = _unseen(_contents(stored), token, count)
        left = deadline - time.monotonic()
        if unseen and left <= 0 and isinstance(stored, Relisting):
            unseen = _unseen(_contents(stored.relisted), token, count)
        if not unseen or left <= 0:
            return unseen
        time.sleep(min(pause, left))
        pause = min(2 * pause, _LONGEST_LOOK_AGAIN)


def _unseen(stored: Sequence[bytes], token: str, count: int) -> str:
    """Which of the ``count`` messages sent are not in ``stored`` (each found by its
    body line, :func:`_mark`), in words, or ""."""
    missing = [
        number
        for number in range(1, count + 1)
        if not any(b"\n" + _mark(token, number) + b"\n" in kept for kept in stored)
    ]
    if not missing:
        return ""
    which = " and ".join(f"message {n}" for n in missing)
    return (
        f"{which} (of {count}) not seen in the store though its end got 250 (found by "
        f"its body line, {_mark(token, missing[0]).decode()!r}, among the {len(stored)} "
        "messages stored() returned)"
    )
