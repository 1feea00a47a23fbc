"""Checks that a server reads the stream of a session as its peers do: ``chunking``,
``smuggling`` and ``pipelining``.

However the network splits a session (only CRLF ends a line, RFC 5321 §2.3.8),
whatever looks like the end of data without being ``CRLF.CRLF`` (§4.1.1.4), and
however many commands come in one write (RFC 2920 §3.1), the replies must be the
same: a server that reads otherwise lets two readers of one session disagree, the
raw material of SMTP smuggling.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Refused as _Refused
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._smtp_probe import (
    CLOSING,
    PlainMail,
    Probe,
    ask,
    message_then_quit,
    owed_replies,
    quit_session,
    reply_codes,
    session_end,
    shown_codes,
    temporary_refusal,
)
from smtpcore.testing._wire import ServerReply, WireClient

__all__ = ["SMUGGLING_ENDINGS", "check_chunking", "check_pipelining", "check_smuggling"]


_CONTENT: Final = (
    b"From: <check@smtpcore.test>\r\n"
    b"Subject: smtpcore check\r\n"
    b"\r\n"
    b"..a line that starts with a dot\r\n"
    b"..\r\n"
    b"last line\r\n"
    b".\r\n"
)


def _session_steps(probe: Probe) -> list[bytes]:
    """A whole session, one item per lock-step write (each answered by one reply)."""
    return [
        b"EHLO " + probe.helo.encode() + b"\r\n",
        probe.mail_line() + b"\r\n",
        probe.rcpt_line() + b"\r\n",
        b"DATA\r\n",
        _CONTENT,
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
    ]


def _cut(data: bytes, points: Sequence[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p for p in points if 0 < p < len(data))})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _chunkings(seed: int) -> dict[str, Callable[[bytes], list[bytes]]]:
    rng = random.Random(seed)

    def at_random(data: bytes) -> list[bytes]:
        return _cut(data, rng.sample(range(1, max(len(data), 2)), min(3, len(data) - 1)))

    return {
        "one byte at a time": lambda data: [data[i : i + 1] for i in range(len(data))],
        "split inside every CRLF": lambda data: _cut(
            data, [i + 1 for i in range(len(data)) if data[i : i + 2] == b"\r\n"]
        ),
        f"three random splits a write (seed {seed})": at_random,
        "a split after every line's first octet": lambda data: _cut(
            data, [1, *(i + 2 for i in range(len(data)) if data[i : i + 1] == b"\n")]
        ),
    }


def _run_chunked(probe: Probe, chunking: Callable[[bytes], list[bytes]] | None) -> list[int]:
    """The session's reply codes, -1 where the connection closed with a reply due.

    Its first line is EHLO. Whole, its answer is taken as in :meth:`Probe.hello`
    (:meth:`Probe.ehlo_answered`: a 421 refuses the connection, an LMTP server stops
    the run), and the session ends there where the connection fell out of step. Split,
    EHLO is a line the check tests, and a 421 to it may be the server's answer to
    the split: the session is then played again on a new connection after a whole
    EHLO (:meth:`Probe.hello`, where a refused connection skips the check), and a
    421 to the split EHLO there is its answer, compared as any other reply."""
    steps = _session_steps(probe)[:-1]
    client = probe.connect()
    first = _written(client, steps[0], chunking)
    if chunking is None:
        if not probe.ehlo_answered(client, first):
            return [first.code if first else -1]  # out of step: nothing more can be read
    elif first is not None and first.code == 421:
        client, _ = probe.hello()
        first = _written(client, steps[0], chunking)
    codes = [first.code if first else -1]
    for step in steps[1:] if first else ():
        answer = _written(client, step, chunking)
        codes.append(answer.code if answer else -1)
        if answer is None:
            break
    return codes + reply_codes(quit_session(client))


_MESSAGE_STEP: Final = 4
"""Where the message stands in :func:`_session_steps`."""


def _step_line(step: bytes, index: int) -> bytes:
    """The line of :func:`_session_steps` at ``index`` as a summary names it: the
    message as ``.``, its end."""
    return b"." if index == _MESSAGE_STEP else step.rstrip(b"\r\n")


def _refused_step(probe: Probe, reference: Sequence[int]) -> str:
    """The skip for an unsplit session that a step of it was refused in: the step
    named, and what to give where the server refused the sender or the recipient."""
    steps = _session_steps(probe)
    index = next(i for i, code in enumerate(reference) if code // 100 not in (2, 3))
    line = _step_line(steps[index], index)
    shown = "the message" if line == b"." else repr(line.decode("utf-8", "replace"))
    advice = {
        b"MAIL": ": give a sender the server accepts",
        b"RCPT": ": give a recipient the server accepts",
    }
    return (
        f"the unsplit session was refused: {shown} got {reference[index]} (codes "
        f"{reference}){advice.get(line[:4].upper(), '')}"
    )


def _temporary_step(probe: Probe, codes: Sequence[int]) -> str | None:
    """The first step of the transaction (MAIL, RCPT, DATA, the message) answered
    with a 4xx but 421 in ``codes``, named and its code, or None."""
    steps = _session_steps(probe)
    for index in range(1, _MESSAGE_STEP + 1):
        code = codes[index] if index < len(codes) else None
        if temporary_refusal(code):
            line = _step_line(steps[index], index)
            shown = "the message" if line == b"." else repr(line.decode("utf-8", "replace"))
            return f"{shown} got {code}"
    return None


def _refusing_mail(probe: Probe, codes: Sequence[int]) -> str | None:
    """Why a split session whose replies differ is left untested, or None. A 4xx (but
    421) to a step of its transaction may answer the split or refuse any mail for now
    (RFC 5321 §4.2.1; a message-rate limit): the unsplit session, played again on a
    new connection, tells which. A 4xx there too is the server refusing mail, and
    the check is skipped; anything else leaves the split session's replies to be
    compared, as they are. A refused new connection raises
    :class:`~smtpcore.testing._battery.Refused`: nothing then tells the 4xx for a
    limit, and :func:`check_chunking` fails on the difference, unconfirmed."""
    split = _temporary_step(probe, codes)
    if split is None:
        return None
    probe.close()
    again = _run_chunked(probe, None)
    unsplit = _temporary_step(probe, again)
    if unsplit is None:
        return None
    return (
        f"{split}, and the unsplit session played again {unsplit} (codes {again}): the "
        "server refuses mail for now (RFC 5321 §4.2.1; a message-rate limit?), which "
        "leaves the check untested"
    )


def _written(
    client: WireClient, step: bytes, chunking: Callable[[bytes], list[bytes]] | None
) -> ServerReply | None:
    """``step`` written in the pieces ``chunking`` cuts it into, then its reply."""
    client.send(step, chunking(step) if chunking else None)
    return client.read_reply()


def check_chunking(probe: Probe) -> str:
    """The same session gives the same replies however the network splits it.

    A server that takes one read for one command, or loses a CR at a read's
    end, answers differently when a command arrives in pieces (RFC 5321
    §2.3.8: only CRLF ends a line, wherever the reads fall).
    """
    reference = _run_chunked(probe, None)
    for code in reference[: len(_session_steps(probe)) - 1]:  # QUIT's replies after
        if code == -1:
            raise _Failed(
                f"unsplit, the session got {shown_codes(reference)}: the server closed the "
                "connection where a reply was due (-1)"
            )
        if code // 100 not in (2, 3):
            raise _Skipped(_refused_step(probe, reference))
    for compared, (name, chunking) in enumerate(_chunkings(probe.seed).items()):
        probe.close()
        codes = _run_chunked(probe, chunking)
        if codes == reference:
            probe.forget(keep=1)  # keep the unsplit run, to compare with a failing one
        else:
            closed = " (-1: the connection closed where a reply was due)" if -1 in codes else ""
            differing = (
                f"written {name}, the session got {shown_codes(codes)} instead of "
                f"{shown_codes(reference)}{closed}"
            )
            try:
                refused = _refusing_mail(probe, codes)
            except _Refused as refusal:
                raise _Failed(
                    f"{differing}, not confirmed as the server refusing mail for now "
                    f"({_temporary_step(probe, codes)}): the new connection to play the "
                    f"unsplit session again was refused ({refusal})"
                ) from None
            if refused:
                raise _Skipped(
                    f"written {name}, {refused} ({compared} of {len(_chunkings(0))} "
                    "chunkings gave the unsplit session's replies before)"
                )
            raise _Failed(differing)
    return f"{len(_chunkings(0))} chunkings gave the replies {reference}"


SMUGGLING_ENDINGS: Final[Mapping[str, bytes]] = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "LF.CRLF": b"\n.\r\n",
    "CRLF.LF": b"\r\n.\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CRLF NUL.CRLF": b"\r\n\x00.\r\n",
    "CRLF.NUL CRLF": b"\r\n.\x00\r\n",
    "LF NUL.LF": b"\n\x00.\n",
    "CRLF.SP CRLF": b"\r\n. \r\n",
    "CRLF.TAB CRLF": b"\r\n.\t\r\n",
    "CRLF SP.CRLF": b"\r\n .\r\n",
}
"""End-of-data look-alikes that a server must not take for ``CRLF.CRLF``
(SMTP smuggling: a second reader of the same message ends it elsewhere). The
end is exactly ``CRLF.CRLF`` (RFC 5321 §4.1.1.4): a dot line with a space or tab
after the dot, or a space before it, is content, ``". "`` unstuffed to ``" "``,
and a server that strips the blanks before it looks for the end takes it for one."""


MARKER: Final = b"NOOP smtpcore-smuggling-marker\r\n"


def check_smuggling(probe: Probe) -> str:
    """No end-of-data look-alike ends a message (SMTP smuggling).

    For each sequence in :data:`SMUGGLING_ENDINGS`, a message holds the
    sequence followed by a ``NOOP`` marker line, then ends properly, and
    ``QUIT`` follows. The replies must be the message's and then QUIT's
    (221, or after a refused message a 421 or 521 that ends the session, RFC
    5321 §3.8), and then the close; a message answered 421 or 521 owes QUIT
    nothing. A server that
    ended the message at the look-alike answers the marker (and the rest) as
    commands: more than two replies, or a second one that cannot answer QUIT
    (:func:`message_then_quit`). Refusing the message (RFC 5321 §4.1.1.4 allows only CRLF.CRLF;
    Postfix replies 550 or 521 for a bare LF) is fine.

    The message goes in two writes, the probe's pause apart, split after the
    look-alike: a server that ends the message there and drops the rest of
    that read (its pipelined commands) would answer one reply to a single
    write, yet run the marker when it comes in a read of its own, as an
    attacker's relay may send it. Where both writes still come in one read,
    such a server drops QUIT with the marker: QUIT left unanswered fails too.
    """
    ran: list[str] = []
    out_of_order: list[str] = []
    unanswered: list[str] = []
    unfinished: list[str] = []
    untested = ""
    for index, (name, ending) in enumerate(SMUGGLING_ENDINGS.items()):
        try:  # a refused connection, or a message rate limit at MAIL, RCPT or DATA
            client, _ = probe.hello()
            probe.transaction(client)
            answer = ask(client, b"DATA")
            if answer.code != 354:
                raise _Skipped(f"DATA was answered {answer}")
        except _Skipped as exc:  # what an earlier look-alike showed still fails the check
            if not (ran or out_of_order or unanswered or unfinished):
                raise
            untested = f" (untested: {', '.join(list(SMUGGLING_ENDINGS)[index:])}, as {exc})"
            break
        head = b"Subject: smtpcore smuggling check\r\n\r\nbefore" + ending
        tail = MARKER + b"after\r\n.\r\n" + b"QUIT\r\n"
        client.send(head + tail, [head, tail])
        replies = client.read_until_closed()
        codes = reply_codes(replies)
        if not codes:  # the message is owed a reply, refusal or not
            unanswered.append(name)
        elif len(codes) > 2:
            ran.append(f"{name} ({len(codes)} replies: {shown_codes(codes)})")
        elif not message_then_quit(codes):
            out_of_order.append(f"{name} ({codes})")
        elif wrong := session_end(client, replies):
            unfinished.append(f"{name} ({codes}: {wrong})")
        else:
            probe.clients.remove(client)
            client.close()
            continue
        probe.close()
    problems = []
    if ran:
        problems.append(
            "a message and QUIT got more than two replies, so the message ended early and "
            f"the marker line after the look-alike was run as a command: {'; '.join(ran)}"
        )
    if out_of_order:
        problems.append(
            "a message and QUIT got two replies, the second no answer to QUIT (221; after "
            "a refusal 421 or 521), so the message ended early and the marker line after "
            f"the look-alike was answered in QUIT's place: {'; '.join(out_of_order)}"
        )
    if unfinished:
        problems.append(
            "a message and QUIT did not end with QUIT's 221 and the close, so the server "
            "left unread what came after the message (one that ends the message at the "
            "look-alike and drops the rest of its read, the marker, the real end and QUIT, "
            f"does): {'; '.join(unfinished)}"
        )
    if unanswered:
        problems.append(
            f"a message holding {', '.join(unanswered)} got no reply before the server "
            "closed the connection or fell silent"
        )
    if problems:
        raise _Failed("; ".join(problems) + untested)
    return f"none of {len(SMUGGLING_ENDINGS)} look-alikes ended a message"


def check_pipelining(probe: Probe) -> str:
    """Pipelined commands get one reply each, in order (RFC 2920 §3.1).

    A group mixing accepted and refused commands is sent one command at a
    time on one connection and in a single write on another; both must get
    the same codes, and a RCPT with no transaction open (after RSET with no
    MAIL, or after a MAIL that was not accepted) must be refused, which a server
    that takes it does both ways alike (RFC 5321 §3.3; ``state-order`` tries
    more). A server that ends the session inside the group sent one command at a
    time (421 to any command, RFC 5321 §3.8: Postfix does at its
    ``smtpd_hard_error_limit``) leaves nothing to compare: the check is skipped.
    So does a MAIL of the group refused with a 4xx, in either run, that
    :meth:`Probe.plain_mail_after` confirms is the server refusing mail for now (a
    message-rate limit met before or during the check), unless a RCPT was taken
    with no transaction open or the runs differ where no MAIL's answer reaches
    (:func:`_refused_mail_explains`). A MAIL refused for now in both runs, where a
    plain one was taken, skips it only where every code compared equal and the
    MAIL's transaction held RCPTs whose answers went untested
    (:func:`_untested_both_ways`).
    """
    client, offered = probe.hello()
    if "PIPELINING" not in offered:
        raise _Skipped("PIPELINING is not offered")
    group = [
        probe.mail_line(),
        _MALFORMED_RCPT,
        probe.rcpt_line(),
        b"RSET",
        probe.rcpt_line(),  # no MAIL: refused (_taken_without_mail)
        probe.mail_line(),
        b"RSET",
        b"NOOP",
    ]
    one_at_a_time = []
    for line in group:
        answer = ask(client, line)
        if answer.code in CLOSING:
            raise _Skipped(f"the server ended the session at {line.decode()!r} ({answer})")
        one_at_a_time.append(answer)
    lock_step = reply_codes(one_at_a_time) + reply_codes(quit_session(client))
    taken = _taken_without_mail(group, lock_step)
    probe.problems.extend(taken)  # defects whatever comes next
    client, _ = probe.hello()
    client.send(b"".join(line + b"\r\n" for line in group))
    replies = owed_replies(client, len(group), "the pipelined group")
    pipelined = reply_codes(replies)
    taken_pipelined = [
        f"pipelined, {found}"
        for found in _taken_without_mail(group, pipelined)
        if found not in taken
    ]
    untested = None
    if not taken and not taken_pipelined and _refused_mail_explains(group, lock_step, pipelined):
        untested = _skip_if_mail_refused_for_now(probe, client, group, one_at_a_time, replies)
    pipelined += reply_codes(quit_session(client))
    if pipelined != lock_step:
        # The same replies in another order: the server answered them out of turn.
        swapped = "replies out of order: " if sorted(pipelined) == sorted(lock_step) else ""
        raise _Failed(
            "; ".join(
                [
                    f"{swapped}pipelined, the group got {shown_codes(pipelined)}; one at a "
                    f"time it got {shown_codes(lock_step)}",
                    *taken_pipelined,
                ]
            )
        )
    if taken:
        raise _Failed(
            f"the group got {shown_codes(pipelined)} both ways, but {', and '.join(taken)}"
        )
    if untested:
        raise _Skipped(untested)
    return f"one reply per command, in order: {pipelined}"


def _skip_if_mail_refused_for_now(
    probe: Probe,
    client: WireClient,
    group: Sequence[bytes],
    one_at_a_time: Sequence[ServerReply],
    pipelined: Sequence[ServerReply],
) -> str | None:
    """Skip the check where a MAIL of the group got a 4xx (but 421) in either run and
    :meth:`Probe.plain_mail_after`, asked on ``client``, the pipelined connection
    with QUIT still to come, finds the server refusing mail for now (RFC 5321
    §4.2.1): a message-rate limit met before the check, or during it (Postfix's
    ``smtpd_client_message_rate_limit`` answers ``450 4.7.1`` from the n-th MAIL on),
    refuses one run's MAILs and not the other's, or all of them, so the codes tell
    nothing of how the server reads a pipelined group. Where the plain MAIL is taken,
    the 4xx was the group's own, and the codes are compared as ever: a server that
    refuses a MAIL only when it comes pipelined fails. Returns why the check is
    untested should the codes compare equal, where that MAIL was refused both ways
    (:func:`_untested_both_ways`), else None."""
    for index, line in enumerate(group):
        if not line.startswith(b"MAIL"):
            continue
        for run, answer in (
            ("pipelined", pipelined[index]),
            ("one at a time", one_at_a_time[index]),
        ):
            if temporary_refusal(answer):
                plain = probe.plain_mail_after(client, line, answer)
                if plain and plain.refusing:
                    raise _Skipped(f"{run}, {plain.refusing}")
                both = temporary_refusal(one_at_a_time[index]) and temporary_refusal(
                    pipelined[index]
                )
                if plain and both and _opens_untested_transaction(group, index):
                    return _untested_both_ways(line, one_at_a_time[index], pipelined[index], plain)
                return None
    return None


def _opens_untested_transaction(group: Sequence[bytes], index: int) -> bool:
    """Whether the transaction the group's MAIL at ``index`` opens holds commands
    (a RCPT, DATA or BDAT before the next RSET or MAIL): refused, that MAIL leaves
    their answers to a transaction never opened, and untested. A MAIL followed by
    RSET alone leaves nothing out: every reply was compared."""
    for line in group[index + 1 :]:
        verb = line[:4].upper()
        if verb in (b"RCPT", b"DATA", b"BDAT"):
            return True
        if verb in (b"RSET", b"MAIL"):
            return False
    return False


def _untested_both_ways(
    line: bytes, one_at_a_time: ServerReply, pipelined: ServerReply, plain: PlainMail
) -> str:
    """Why the check is skipped where a MAIL of the group was refused for now (a 4xx
    but 421, RFC 5321 §4.2.1) one at a time and pipelined alike, though a plain MAIL
    after it was not (a server that refuses a session's first MAIL for now, as
    greylisting at MAIL does): the codes compare equal, but the group's transaction
    that MAIL opens, its RCPTs taken or refused, was never opened either way, so
    nothing shows how the server answers it pipelined, and the check must not pass
    on it. Each run's reply is quoted, once where their texts are the same."""
    if str(one_at_a_time) == str(pipelined):
        got = f'got "{one_at_a_time}" both one at a time and pipelined'
    else:
        got = f'got "{one_at_a_time}" one at a time and "{pipelined}" pipelined'
    return (
        f"{line.decode('utf-8', 'replace')!r} {got}, though {plain.said}: the server "
        "refused that MAIL for now (RFC 5321 §4.2.1) both ways, so the transaction it "
        "opens in the group was never opened, and how the server answers that "
        "transaction pipelined went untested"
    )


def _refused_mail_explains(
    group: Sequence[bytes], lock_step: Sequence[int], pipelined: Sequence[int]
) -> bool:
    """Whether the two runs' codes differ, if at all, only where a MAIL's answer
    reaches: at a MAIL one run took (2xx) and the other refused for now (a 4xx but
    421, RFC 5321 §4.2.1), and the RCPTs after it, which that MAIL's answer opens or
    leaves without a transaction. Anywhere else a difference is the server's
    reading of the group (replies out of order, a 503 where the MAIL's answer was
    due), which no refusal of mail explains, and which fails the check: RSET and
    NOOP get 250 whatever came before (§4.1.1.5, §4.1.1.9), a RCPT after RSET with
    no MAIL is refused (§3.3), and a MAIL answered alike both ways, or otherwise
    than 2xx against 4xx, leaves its RCPTs to answer alike."""
    after_mail = False
    for line, one, other in zip(group, lock_step, pipelined, strict=False):
        verb = line[:4].upper()
        if verb == b"MAIL":
            after_mail = _taken_and_refused_for_now(one, other)
        elif verb != b"RCPT":
            after_mail = False
        if not after_mail and one != other:
            return False
    return True


def _taken_and_refused_for_now(one: int, other: int) -> bool:
    """Whether one of a MAIL's two codes is a 2xx and the other a 4xx but 421."""
    return {one // 100, other // 100} == {2, 4} and 421 not in (one, other)


def _taken_without_mail(group: Sequence[bytes], codes: Sequence[int]) -> list[str]:
    """What the pipelining group's RCPTs sent with no transaction open show where
    ``codes`` accept them (2xx, or a 3xx): one wording for each, whether the second
    connection then compares, is refused, or a refused MAIL leaves the rest
    untested. No transaction is open after RSET, before any MAIL, or after a MAIL
    that was not accepted, and a RCPT then must be refused (RFC 5321 §3.3: 503); a
    server that answers MAIL ``450`` yet opens the transaction takes it."""
    found = []
    without: str | None = "with no MAIL before it"
    for line, code in zip(group, codes, strict=False):
        verb = line[:4].upper()
        if verb == b"MAIL":
            accepted = code // 100 == 2
            without = None if accepted else f"after a MAIL answered {code}, so with no transaction"
        elif verb == b"RSET":
            without = "after RSET, with no MAIL"
        elif verb == b"RCPT" and without and code // 100 in (2, 3):
            rcpt = "its malformed RCPT" if line == _MALFORMED_RCPT else "its RCPT"
            found.append(
                f"{rcpt} {without}, got {code}, not a refusal (503 expected, RFC 5321 §3.3)"
            )
    return found


_MALFORMED_RCPT: Final = b"RCPT TO:<no-closing-bracket@smtpcore.test"
"""The pipelining group's RCPT that no server can take (its path lacks the closing
bracket): refused whether a transaction is open or not, a reply that differs from
the well-formed RCPT's."""
