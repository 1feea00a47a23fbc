"""The ``pipelined-end`` check: commands in the same write as a message's end.

RFC 2920 §3.1 lets a pipelining client write RSET, or the next transaction's MAIL
and RCPTs, right behind the final dot, in the same write. A server that looks at
what follows in its buffer before it commits the message (or that resets on a
command read with the end) loses the message yet answers 250: the client thinks
it delivered, and nothing in the reply count shows the loss but the replies'
own codes, when the server gets them wrong too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._smtp_probe import Probe, _ask, _codes, _headers, _owed, _quit, _show
from smtpcore.testing._wire import ServerReply

__all__ = ["check_pipelined_end"]

_END: Final = b".\r\n"


def _message(probe: Probe, number: int) -> bytes:
    """A probing message, its end included, told apart from the other by its subject."""
    return _headers(probe, f"smtpcore pipelined end {number}") + b"body\r\n" + _END


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
    or the wrong ones. Where messages stored can be seen (:func:`check_handler`
    with a :class:`~smtpcore.testing.CollectingHandler`), compare them too.
    """
    client, offered = probe.hello()
    if "PIPELINING" not in offered:
        raise _Skipped("PIPELINING is not offered")
    before = len(probe.stored()) if probe.stored else 0
    problems: list[str] = []
    codes: list[int] = []
    writes = [
        ("RSET", _message(probe, 1), [b"RSET"]),
        ("MAIL and RCPT", _message(probe, 2), [probe.mail_line(), probe.rcpt_line(), b"RSET"]),
    ]
    for write, message, behind in writes:
        probe.transaction(client)
        data = _ask(client, b"DATA")
        if data.code != 354:
            raise _Skipped(f"DATA was answered {data}")
        codes.append(data.code)
        client.send(message + b"".join(line + b"\r\n" for line in behind))
        lines = [_END, *behind]
        replies = _owed(client, len(lines), f"a message's end and {write} behind it")
        codes += _codes(replies)
        _judged(lines, replies, write, problems)
        if problems:
            break
    codes += _codes(_quit(client))
    if problems:
        raise _Failed(f"{'; '.join(problems)} (codes {_show(codes)}): a message may be lost")
    said = f"two messages, each ended in the same write as the next commands, got {codes}"
    if probe.stored is None:
        return said
    lost = _lost(probe.stored()[before:], [message for _, message, _ in writes])
    if lost:
        raise _Failed(f"{said}, but {lost}")
    return f"{said}, and both were stored"


def _lost(stored: Sequence[bytes], sent: Sequence[bytes]) -> str:
    """Which of the messages ``sent`` are not among those ``stored`` since the check
    began (each found by its subject line), in words, or ""."""
    missing = []
    for number, message in enumerate(sent, 1):
        subject = message.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0]
        if not any(b"Subject: " + subject + b"\r\n" in kept for kept in stored):
            missing.append(str(number))
    if not missing:
        return ""
    which = " and ".join(f"message {n}" for n in missing)
    return (
        f"{which} (of {len(sent)}) never reached the store ({len(stored)} stored during "
        "the check): a message was lost though its end got 250"
    )
