"""The ``pipelined-end`` check: commands in the same write as a message's end.

RFC 2920 §3.1 lets a pipelining client write RSET, or the next transaction's MAIL
and RCPTs, right behind the final dot, in the same write. A server that looks at
what follows in its buffer before it commits the message (or that resets on a
command read with the end) loses the message yet answers 250: the client thinks
it delivered, and nothing in the reply count shows the loss but the replies'
own codes, when the server gets them wrong too. Where the store can be seen, each
message is looked for there and its body compared whole: a server may lose or
mangle one (unstuff only some dot lines, put BDAT chunks out of order) and still
answer every command as a good one does.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._delivery import first_difference
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


_DOT_LINES: Final = (b".one leading dot", b"..", b".", b"...three leading dots", b"last line")
"""Body lines after the mark: a dot line of each kind, which DATA stuffs (RFC 5321
§4.5.2) and a server must unstuff every one of, and which BDAT sends as they are
(RFC 3030 §2), never to be unstuffed."""


def _content(probe: Probe, token: str, number: int) -> bytes:
    """Probing message ``number`` as the client means it (unstuffed, no end), told
    apart from the others by its Message-ID and its body's mark, both of this run."""
    headers = probe_headers(probe, f"smtpcore pipelined end {number} {token}")
    body = [_mark(token, number), *_DOT_LINES]
    return headers + b"".join(line + b"\r\n" for line in body)


def _stuffed(content: bytes) -> bytes:
    """``content`` as DATA sends it: each line that starts with a dot gets one more
    (RFC 5321 §4.5.2), and the end line follows."""
    lines = content.split(b"\r\n")[:-1]
    return b"".join((b"." if line[:1] == b"." else b"") + line + b"\r\n" for line in lines) + _END


def _chunked(content: bytes, token: str, number: int) -> list[bytes]:
    """``content`` cut into three BDAT chunks: inside the first dot line, then between
    the CR and the LF of the ``..`` line, so that a server that joins chunks other
    than in order, or unstuffs them, stores another body."""
    first = content.index(_mark(token, number)) + len(_mark(token, number)) + 5
    second = content.index(b"..\r\n", first) + 3
    return [content[:first], content[first:second], content[second:]]


@dataclass(frozen=True)
class _Ending:
    """One message sent and ended in the same write as the commands ``behind`` it:
    by DATA (its ``write`` follows the 354), or in BDAT chunks (``bdat``: the write
    holds every BDAT line and chunk). ``lines`` are what that write owes replies to."""

    what: str
    content: bytes
    write: bytes
    lines: tuple[bytes, ...]
    bdat: bool = False


def _data_ending(content: bytes, what: str, behind: Sequence[bytes]) -> _Ending:
    write = _stuffed(content) + b"".join(line + b"\r\n" for line in behind)
    return _Ending(what, content, write, (_END, *behind))


def _bdat_ending(content: bytes, chunks: Sequence[bytes]) -> _Ending:
    heads = [b"BDAT %d" % len(chunk) for chunk in chunks]
    heads[-1] += b" LAST"
    write = b"".join(head + b"\r\n" + chunk for head, chunk in zip(heads, chunks, strict=True))
    return _Ending("RSET, in BDAT chunks", content, write + b"RSET\r\n", (*heads, b"RSET"), True)


def _endings(probe: Probe, token: str, chunking: bool) -> list[_Ending]:
    """The check's messages: one ended with RSET behind it, one with the next MAIL,
    RCPT and RSET; where CHUNKING is offered, a third in three BDAT chunks, the
    last with RSET behind it."""
    endings = [
        _data_ending(_content(probe, token, 1), "RSET", [b"RSET"]),
        _data_ending(
            _content(probe, token, 2),
            "MAIL and RCPT",
            [probe.mail_line(), probe.rcpt_line(), b"RSET"],
        ),
    ]
    if chunking:
        content = _content(probe, token, 3)
        endings.append(_bdat_ending(content, _chunked(content, token, 3)))
    return endings


def _ends_message(line: bytes) -> bool:
    """Whether ``line`` carries the message (DATA's end line, a BDAT line)."""
    return line == _END or line[:4].upper() == b"BDAT"


def _expected(line: bytes) -> tuple[int, ...]:
    """The codes a correct server that takes the check's mail answers ``line`` with."""
    verb = line[:4].upper()
    if verb == b"DATA":
        return (354,)
    if verb in (b"RSET", b"BDAT"):
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
        if _ends_message(line) and reply.code // 100 in (4, 5):
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
    RSET. Where CHUNKING is offered, a third message goes in three BDAT chunks in
    one write, RSET behind the last (RFC 3030 §4 allows BDAT to be pipelined). A
    server that loses a message when a command comes in the same read as its end,
    or answers that command as part of the message, gives too few replies or the
    wrong ones. Where messages stored can be seen (``stored``, or
    :func:`check_handler` with a :class:`~smtpcore.testing.CollectingHandler`), look
    for each in them too (:func:`_unseen`), and compare its body whole: the bodies
    hold dot lines, which DATA stuffs and the server must unstuff, every one.
    """
    client, offered = probe.hello()
    if "PIPELINING" not in offered:
        raise _Skipped("PIPELINING is not offered")
    token = secrets.token_hex(8)
    problems: list[str] = []
    codes: list[int] = []
    endings = _endings(probe, token, "CHUNKING" in offered)
    for ending in endings:
        probe.transaction(client)
        if not ending.bdat:
            data = ask(client, b"DATA")
            if data.code != 354:
                raise _Skipped(f"DATA was answered {data}")
            codes.append(data.code)
        client.send(ending.write)
        lines = list(ending.lines)
        replies = owed_replies(client, len(lines), f"a message's end and {ending.what} behind it")
        codes += reply_codes(replies)
        _judged(lines, replies, ending.what, problems)
        if problems:
            break
    codes += reply_codes(quit_session(client))
    if problems:
        raise _Failed(f"{'; '.join(problems)} (codes {shown_codes(codes)}): a message may be lost")
    how = ", the third in BDAT chunks," if len(endings) > 2 else ","
    said = (
        f"{_COUNTED[len(endings)]} messages{how} each ended in the same write as the next "
        f"commands, got {codes}"
    )
    if probe.stored is None:
        return said
    wait = probe.timeout if probe.stored_wait is None else probe.stored_wait
    sent = [ending.content for ending in endings]
    unseen = _unseen_in_time(probe.stored, token, sent, wait)
    if unseen:
        raise _Failed(f"{said}, but {unseen}")
    return f"{said}, and each was seen in the store with the body sent"


_COUNTED: Final = {2: "two", 3: "three"}


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
    stored: Callable[[], Sequence[bytes]], token: str, sent: Sequence[bytes], wait: float
) -> str:
    """:func:`_unseen`, asked again while a message is missing or differs, for ``wait`` seconds
    at most (0: asked once): a server may store a message after its 250 (it queued
    it, and a delivery agent writes the file later, as Postfix's local(8) does). A
    :class:`Relisting` ``stored`` is asked once more, everything looked at, before a
    message is said unseen."""
    deadline = time.monotonic() + wait
    pause = _FIRST_LOOK_AGAIN
    while True:
        unseen = _unseen(_contents(stored), token, sent)
        left = deadline - time.monotonic()
        if unseen and left <= 0 and isinstance(stored, Relisting):
            unseen = _unseen(_contents(stored.relisted), token, sent)
        if not unseen or left <= 0:
            return unseen
        time.sleep(min(pause, left))
        pause = min(2 * pause, _LONGEST_LOOK_AGAIN)


def _unseen(stored: Sequence[bytes], token: str, sent: Sequence[bytes]) -> str:
    """Which of the messages ``sent`` (numbered from 1) are not in ``stored``, or are
    there with another body, in words, or "".

    ``stored`` has LF line ends. A message is found by its Message-ID line or its
    body's mark (:func:`_mark`), so a server that rewrote the one still shows it; its
    body is what follows the first empty line, so trace and filter headers a server
    adds (Received:, Return-Path:) change nothing, and it must be the body sent,
    octet for octet, as delivered-intact has check-pop3 ask, but for empty lines
    after its end, which a store may add (Postfix's ``smtp-sink -d`` ends every
    dump with one)."""
    missing: list[int] = []
    differing: list[str] = []
    for number, content in enumerate(sent, 1):
        content = content.replace(b"\r\n", b"\n")
        header, _, body = content.partition(b"\n\n")
        message_id = next(line for line in header.split(b"\n") if line.startswith(b"Message-ID:"))
        found = [
            kept
            for kept in stored
            if b"\n" + message_id + b"\n" in b"\n" + kept
            or b"\n" + _mark(token, number) + b"\n" in kept
        ]
        bodies = [kept.partition(b"\n\n")[2] for kept in found]
        if not found:
            missing.append(number)
        elif body.rstrip(b"\n") not in [kept.rstrip(b"\n") for kept in bodies]:
            differing.append(
                f"message {number} (of {len(sent)}) is in the store with another body "
                f"than the one sent: it differs {first_difference(bodies[0], body)} (line "
                "ends counted as LF)"
            )
    said = []
    if missing:
        numbers = [str(n) for n in missing]
        which = (
            f"messages {', '.join(numbers[:-1])} and {numbers[-1]}"
            if missing[1:]
            else (f"message {numbers[0]}")
        )
        ends = "their ends" if missing[1:] else "its end"
        said.append(
            f"{which} (of {len(sent)}) not seen in the store though {ends} got 250 (found "
            f"by its Message-ID or its body line, {_mark(token, missing[0]).decode()!r}, "
            f"among the {len(stored)} messages stored() returned)"
        )
    return "; ".join(said + differing)
