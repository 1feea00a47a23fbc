"""The ``ascii-digits`` check: a number on the wire is ASCII digits (RFC 5234's DIGIT,
%x30-39), never whatever else ``int()`` or ``str.isdigit()`` accepts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Refused as _Refused
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._smtp_probe import (
    Probe,
    offered_size,
    quit_session,
    reply_codes,
    temporary_refusal,
)
from smtpcore.testing._wire import ServerReply, WireClient

__all__ = ["check_ascii_digits"]


_NOT_A_NUMBER: Final = " SIZE=abc"
"""The control of ``ascii-digits``: a SIZE that is no number in any script."""


_ARABIC_INDIC_TEN: Final = " SIZE=\u0661\u0660"
"""Ten in Arabic-Indic digits, which ``int()`` reads: under every limit, so only an
``abc`` control that is refused tells a size read from it (:func:`_size_read_unseen`)."""


@dataclass(frozen=True)
class _DigitLine:
    """A line ``ascii-digits`` sends, and what its answer is judged against."""

    line: bytes
    control: bytes | None = None
    """The same line with ``abc`` for the number: where both are answered alike, the
    server read no number from either (it may ignore a SIZE it cannot read)."""
    number: int | None = None
    """What the digits stand for, when that is over the offered SIZE: a 552 then
    means they were read as a size, as their ASCII twin is."""

    @property
    def text(self) -> str:
        return self.line.decode()


def _arabic_indic(number: int) -> str:
    """``number`` in Arabic-Indic digits (U+0660 to U+0669), which ``int()`` reads."""
    return "".join(chr(0x0660 + int(digit)) for digit in str(number))


def _digit_lines(probe: Probe, offered: Mapping[str, str]) -> list[_DigitLine]:
    """The lines of ``ascii-digits``, each control before the lines judged by it."""
    control = probe.mail_line(_NOT_A_NUMBER)
    lines = [
        _DigitLine(control),
        _DigitLine(probe.mail_line(" SIZE=²"), control),
        _DigitLine(probe.mail_line(_ARABIC_INDIC_TEN), control),
    ]
    limit = offered_size(offered)
    if limit is not None:
        big = probe.mail_line(f" SIZE={_arabic_indic(limit + 1)}")
        lines.append(_DigitLine(big, control, number=limit + 1))
    if "SMTPUTF8" in offered:  # where non-ASCII is allowed, it still is no digit
        utf8_control = probe.mail_line(" SMTPUTF8" + _NOT_A_NUMBER)
        lines += [
            _DigitLine(utf8_control),
            _DigitLine(probe.mail_line(" SMTPUTF8 SIZE=²"), utf8_control),
        ]
    if "CHUNKING" in offered:
        lines.append(_DigitLine(b"BDAT \xc2\xb2 LAST"))  # the superscript two, no octets after
    return lines


def _digit_problem(
    item: _DigitLine, answer: ServerReply | None, control: ServerReply | None, limit: int | None
) -> str | None:
    """What is wrong with the answer to a line of non-ASCII digits, or None.

    A dropped connection is a crash. A SIZE answered as its ``abc`` control is
    (both 250: the server ignores a SIZE it cannot read) read no number, and
    RFC 1870 wants no 501 there; a 552 to digits over the limit, or a 2xx where
    ``abc`` is refused, means a size was read from them. ``BDAT ²`` must be
    refused, or end the session (421, RFC 5321 §3.8): no one knows where its
    chunk would end.
    """
    if answer is None:
        return f"{item.text!r} was answered by a dropped connection"
    if item.line.startswith(b"BDAT"):
        if answer.code // 100 != 5 and answer.code != 421:
            return f"{item.text!r} was answered {answer}, not a 5xx refusal"
        return None
    if item.control is None:  # a control: any answer is its own
        return None
    if control is not None and answer.code == control.code:
        return None
    if item.number is not None and answer.code == 552:
        return (
            f"{item.text!r} ({item.number}, over the offered SIZE {limit}) was answered "
            f"{answer}, as its ASCII twin is: a size was read from its digits"
        )
    if answer.code // 100 == 2:
        refused = f"{control}" if control is not None else "no reply"
        return (
            f"{item.text!r} was answered {answer}, where {_NOT_A_NUMBER.strip()!r} got "
            f"{refused}: a size was read from its digits"
        )
    if answer.code // 100 != 5:
        return f"{item.text!r} was answered {answer}, not a 5xx refusal"
    return None


def _ignored_like_control(
    lines: Sequence[_DigitLine], answers: Mapping[bytes, ServerReply | None]
) -> list[str]:
    """The SIZE lines accepted just as their ``abc`` control was: leniency, no size."""
    ignored = []
    for item in lines:
        answer = answers.get(item.line)
        control = answers.get(item.control) if item.control else None
        control_text = item.control.decode() if item.control else ""
        if answer and control and answer.code // 100 == 2 and answer.code == control.code:
            ignored.append(f"{item.text!r} got {answer.code} as {control_text!r} did")
    return ignored


def _size_read_unseen(
    probe: Probe, answers: Mapping[bytes, ServerReply | None], limit: int | None
) -> str | None:
    """Why the SIZE lines show nothing, or None. Where ``SIZE=abc`` is accepted (the
    server ignores a SIZE it cannot read) and no limit is offered to go over, a size
    read from Arabic-Indic ten is accepted just as one ignored: the same 250 for a
    server that reads them with ``int()`` and for one that does not."""
    control = probe.mail_line(_NOT_A_NUMBER)
    accepted = answers.get(control)
    ten = answers.get(probe.mail_line(_ARABIC_INDIC_TEN))
    if limit is not None or accepted is None or accepted.code // 100 != 2:
        return None
    if ten is None or ten.code != accepted.code:
        return None
    return (
        f"{control.decode()!r} got {accepted.code} and no SIZE limit is offered, so a "
        "size read from non-ASCII digits would be answered as a SIZE ignored: the check "
        "cannot tell them apart"
    )


def check_ascii_digits(probe: Probe) -> str:
    """Numbers on the wire are ASCII digits (RFC 5234's DIGIT is %x30-39).

    ``SIZE=²`` (a superscript two, which ``str.isdigit()`` accepts and
    ``int()`` does not), ``SIZE=`` ten in Arabic-Indic digits (which
    ``int()`` reads), the limit plus one in Arabic-Indic digits when SIZE is
    offered, ``SMTPUTF8 SIZE=²`` when SMTPUTF8 is and, with CHUNKING,
    ``BDAT ²``: none may be a crash, a dropped connection or a size
    (:func:`_digit_problem`). The SIZE lines are judged against ``SIZE=abc``,
    sent first: a server that answers a non-ASCII number as it answers no
    number at all read none (Exim ignores a SIZE it cannot read), while one
    that answers it as its ASCII twin (552 over the limit, 250 where ``abc``
    is refused) read a size. Where ``abc`` is accepted and no SIZE limit is
    offered, nothing tells the two apart, and the check is skipped
    (:func:`_size_read_unseen`) unless another line fails it. Each line is
    followed by RSET, which must get 250 (RFC 5321 §4.1.1.5) or 421: a server
    that read a size from ``²`` and refused BDAT at once would take RSET's
    first octets for the chunk and answer the rest. Every line is tried, on a
    new connection where the server closed the last one, so that one refusal
    cannot hide a size taken from another line. ``BDAT ²`` goes inside a transaction (MAIL and RCPT
    accepted first, RFC 3030 §2): outside one, a server may refuse BDAT
    before it reads the size at all, which would test nothing; where the
    transaction is refused, the check is skipped rather than passed. So is
    it where a plain MAIL from the sender is refused
    (:meth:`Probe.sender_accepted`): every line would be refused for the
    sender, which would pass for a refusal of its digits.
    """
    client: WireClient | None
    client, offered = probe.hello()
    probe.sender_accepted(client)
    lines = _digit_lines(probe, offered)
    answers: dict[bytes, ServerReply | None] = {}
    problems: list[str] = []
    closed_after = untried = ""
    for index, item in enumerate(lines):
        text, line = item.text, item.line
        if client is None:
            try:
                client, _ = probe.hello()
            except _Refused as exc:
                later = ", ".join(repr(rest.text) for rest in lines[index:])
                untried = f"{later} not tried: {exc}"
                break
        bdat = line.startswith(b"BDAT")
        if bdat:
            try:
                probe.transaction(client)
            except _Skipped as exc:  # as anywhere a transaction is refused: no QUIT
                untried = f"{text!r} was not tried: {exc}"
                client = None
                continue
        answer = answers[line] = client.command(line)
        refused = None if bdat else probe.mail_refused_for_now(client, line, answer)
        if refused:
            del answers[line]  # it says nothing of the digits
            later = ", ".join(repr(rest.text) for rest in lines[index + 1 :])
            untried = refused + (f", and {later} not tried" if later else "")
            break
        if answer is None:
            client = None
            continue
        if client.closed and not bdat and temporary_refusal(answer):
            client = None  # closed at RSET or the plain MAIL after it: the 4xx is judged
            continue
        closing = answer.code == 421 and bdat
        after = client.command(b"RSET")
        if after is None and bdat:
            # Closing after a refused BDAT is fine: no one knows where its chunk would end.
            closed_after = f", {text!r} with {answer.code}, then closed"
        elif after is None:
            problems.append(
                f"the server closed the connection instead of answering RSET after {text!r}"
            )
        elif closing:
            problems.append(f"{text!r} was answered {answer}, and the session went on")
        elif after.code not in (250, 421):
            wrong = f"RSET after {text!r} got {after}, not 250 (RFC 5321 §4.1.1.5)"
            if bdat:
                wrong += (
                    ", as from a server that read a size from '²' and took the start of "
                    "RSET for the chunk's octets"
                )
            problems.append(wrong)
        if after is None or after.code == 421:  # a session ended the proper way, §3.8
            client = None
    limit = offered_size(offered)
    judged = [
        _digit_problem(item, answers[item.line], answers.get(item.control or b""), limit)
        for item in lines
        if item.line in answers
    ]
    problems[:0] = [problem for problem in judged if problem]
    if problems:
        raise _Failed("; ".join(problems))
    if client is not None:
        after_quit = quit_session(client)
        if reply_codes(after_quit) != [221]:
            raise _Failed(f"QUIT after the refusals got {reply_codes(after_quit)}")
    unseen = _size_read_unseen(probe, answers, limit)
    if unseen:
        raise _Skipped(f"{unseen}; {untried}" if untried else unseen)
    ignored = _ignored_like_control(lines, answers)
    sized = "the SIZE= lines were refused with 5xx"
    if ignored:
        sized = (
            "no size was read from non-ASCII digits: the server ignores a SIZE it cannot "
            f"read ({'; '.join(ignored)})"
        )
    if untried:
        tried = any(item.control is not None and item.line in answers for item in lines)
        raise _Skipped(f"{sized}, but {untried}" if tried else untried)
    if ignored:
        return sized + closed_after
    if closed_after:
        return f"non-ASCII digits were refused{closed_after}"
    return "non-ASCII digits were refused with 5xx"
