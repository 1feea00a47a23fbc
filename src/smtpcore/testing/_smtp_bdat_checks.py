"""Checks of BDAT (RFC 3030 §2): ``bdat-octets``, ``bdat-bare-lf`` and
``bdat-refused-chunk``. A chunk's octets are its chunk, never commands, whatever a
line before it or a refusal of it, and a chunk is answered only once all its octets
are in.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Final

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._smtp_probe import (
    CLOSING,
    Probe,
    offered_size,
    probe_headers,
    reply_codes,
    session_end,
    shown_codes,
)
from smtpcore.testing._smtp_stream_checks import MARKER
from smtpcore.testing._wire import ServerReply, WireClient

__all__ = ["check_bdat_bare_lf", "check_bdat_octets", "check_bdat_refused_chunk"]


def check_bdat_octets(probe: Probe) -> str:
    """BDAT is answered only once all its octets are in (RFC 3030 §2).

    ``BDAT 20 LAST`` and 5 octets, then the client closes its side: the
    server never got the chunk, so a 2xx for it is a message accepted
    before it arrived. This session ends with that close, not QUIT; the
    server must close too, since only at its close are all its replies in
    (:func:`session_end`).
    """
    client, offered = probe.hello()
    if "CHUNKING" not in offered:
        raise _Skipped("CHUNKING is not offered")
    probe.transaction(client)
    client.send(b"BDAT 20 LAST\r\nhello")
    client.shutdown_write()
    replies = client.read_until_closed()
    if any(answer.code // 100 == 2 for answer in replies):
        raise _Failed(
            f"BDAT 20 LAST with 5 of its octets got {reply_codes(replies)}: answered before "
            "the chunk was in"
        )
    wrong = session_end(client, replies, by_quit=False)
    if wrong:
        got = f"got {reply_codes(replies)}" if replies else "got no reply"
        raise _Failed(f"BDAT 20 LAST with 5 of its octets {got}: {wrong}")
    return f"an unfinished chunk got {reply_codes(replies) or 'no reply'}"


def check_bdat_bare_lf(probe: Probe) -> str:
    """A bare LF does not hide a BDAT and its chunk (RFC 5321 §2.3.8, RFC 3030 §2).

    ``NOOP<LF>BDAT n LAST<CRLF>``, then n octets holding three ``NOOP``
    marker lines, then ``QUIT``; then the same on a new connection with
    ``RCPT TO:<recipient>`` for ``NOOP``. A reader that ends lines at the
    bare LF (some intermediaries do) passes the octets on as BDAT's chunk.
    The server must agree, or refuse the line and skip the octets, or refuse
    it and close (:func:`_refused_then_closed`): a server that answers the
    markers ran as commands what such a reader took for content, the BDAT
    form of SMTP smuggling. Both lines are tried because a refusal and close
    shows only that the server never read past the command it refused:
    Postfix with ``smtpd_forbid_unauth_pipelining`` refuses a ``NOOP`` with
    more behind it (RFC 2920 §3.1 lets NOOP only end a group), Exim's
    ``drop`` ACL a malformed ``RCPT``; either way the BDAT behind it went
    untested, and the other line tests it.
    """
    client: WireClient | None
    client, offered = probe.hello()
    if "CHUNKING" not in offered:
        raise _Skipped("CHUNKING is not offered")
    summaries: list[str] = []
    problems: list[str] = []
    for lead in (b"NOOP", probe.rcpt_line()):
        try:
            if client is None:
                client, _ = probe.hello()
            probe.transaction(client)
        except _Skipped:
            if not problems:
                raise
            break  # the failure found on the first line stands
        try:
            summaries.append(_bare_lf_bdat(client, lead))
        except _Failed as exc:
            problems.append(str(exc))
        client = None
    if problems:
        raise _Failed("; ".join(problems))
    return "; ".join(summaries)


def _bare_lf_bdat(client: WireClient, lead: bytes) -> str:
    """``lead<LF>BDAT n LAST``, its chunk of markers and QUIT in one write, on a
    client inside a transaction: the summary, or :class:`_Failed` where a marker
    was answered or the session did not end as it should."""
    chunk = MARKER * 3
    client.send(lead + b"\nBDAT %d LAST\r\n" % len(chunk) + chunk + b"QUIT\r\n")
    replies = client.read_until_closed()
    sent = (
        f"{lead[:4].decode()}<LF>BDAT, its chunk and QUIT got {shown_codes(reply_codes(replies))}"
    )
    if not replies:
        raise _Failed(f"{sent}: no reply before the server closed or fell silent")
    if len(replies) > 3:  # the lead, BDAT and QUIT at most
        raise _Failed(f"{sent}: the marker lines in the chunk were answered as commands")
    if _refused_then_closed(client, replies):
        return f"{sent}: the line was refused and the session closed"
    wrong = session_end(client, replies)
    if wrong:
        raise _Failed(f"{sent}: {wrong}")
    return sent


def _refused_then_closed(client: WireClient, replies: Sequence[ServerReply]) -> bool:
    """Whether the server answered what was sent with one refusal and closed: it
    read no further than the line it refused, so nothing behind it ran, and
    nothing behind it was tested either. Postfix does so (554) where a command
    comes pipelined where RFC 2920 §3.1 does not allow it; 421 and 521
    (:data:`CLOSING`) are such refusals too."""
    return client.closed and len(replies) == 1 and replies[0].code // 100 in (4, 5)


_REFUSED_CHUNK_MARKER: Final = b"NOOP smtpcore-bdat-refused-chunk-marker\r\n"
"""The refused chunk's first line: answered, it shows the chunk's octets read as
commands; delivered, it shows the chunk taken as content."""


def check_bdat_refused_chunk(probe: Probe) -> str:
    """After a BDAT refused, no later chunk completes the message (RFC 3030 §2).

    In a transaction, one write: ``BDAT n`` and a first chunk, a BDAT refused
    and its chunk, ``BDAT n LAST`` and a last chunk, then ``QUIT``. The refused
    line is malformed (``BDAT n LAST junk``, ``BDAT n  LAST``, ``BDAT n FIRST``)
    or, where SIZE offers a limit of at most ``max_size_probe``, a chunk over
    it. After a 4xx or 5xx to any BDAT the transaction has failed: the server
    discards the chunks pipelined behind it, so the last BDAT gets a 4xx or
    5xx (503), or the server closes. A 2xx to it delivers the message with a
    hole where the refused chunk was, and the client, told of the refusal,
    sends it again: smtpcore's own server did so before it failed the
    transaction on a malformed BDAT line. A server that takes the line
    (reads ``FIRST`` as nothing) refused no chunk; the summary says what it
    did. Needs CHUNKING and PIPELINING (unpipelined, the client stops at the
    refusal).
    """
    client: WireClient | None
    client, offered = probe.hello()
    for needed in ("CHUNKING", "PIPELINING"):
        if needed not in offered:
            raise _Skipped(f"{needed} is not offered")
    summaries: list[str] = []
    problems: list[str] = []
    lines = _refused_chunk_lines(probe, offered)
    for index, (line, chunk) in enumerate(lines):
        try:
            if client is None:
                client, _ = probe.hello()
            probe.transaction(client)
            summaries.append(_chunks_around_a_refusal(probe, client, line, chunk))
        except _Skipped as exc:
            if not problems and not summaries:
                raise
            # What the earlier lines found stands; the rest is named, not passed.
            untested = ", ".join(repr(later.decode()) for later, _ in lines[index:])
            (problems or summaries).append(f"(later lines untested: {untested}, as {exc})")
            break
        except _Failed as exc:
            problems.append(str(exc))
        client = None
    if problems:
        raise _Failed("; ".join(problems))
    return "; ".join(summaries)


def _refused_chunk_lines(probe: Probe, offered: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """The BDAT lines to be refused, each with its chunk: three malformed against
    RFC 3030 §2's ``"BDAT" SP chunk-size [SP end-marker]``, and, where SIZE offers a
    limit the probe may send (RFC 1870 §4), a well-formed one whose chunk is over it."""
    chunk = _REFUSED_CHUNK_MARKER
    lines = [
        (b"BDAT %d LAST junk" % len(chunk), chunk),
        (b"BDAT %d  LAST" % len(chunk), chunk),
        (b"BDAT %d FIRST" % len(chunk), chunk),
    ]
    limit = offered_size(offered)
    if limit is not None and limit <= probe.max_size_probe:
        filler = b"x" * 78 + b"\r\n"
        big = (chunk + filler * (limit // len(filler) + 1))[: limit + 1]
        lines.append((b"BDAT %d" % len(big), big))
    return lines


def _chunks_around_a_refusal(probe: Probe, client: WireClient, line: bytes, chunk: bytes) -> str:
    """``BDAT n`` and a first chunk, ``line`` and ``chunk``, ``BDAT n LAST`` and a
    last chunk, and QUIT, in one write: the summary, or :class:`_Failed` where a
    chunk after a refusal completed the message, the refused chunk's octets were
    answered, or the session did not end as it should."""
    first = probe_headers(probe, "smtpcore bdat-refused-chunk check") + (
        b"Chunk 1 of 3. Chunk 2 comes with a BDAT line to be refused: delivered\r\n"
        b"without it, this copy has a hole.\r\n"
    )
    last = b"Chunk 3 of 3: do not deliver what follows a refused chunk.\r\n"
    client.send(
        b"BDAT %d\r\n" % len(first)
        + first
        + line
        + b"\r\n"
        + chunk
        + b"BDAT %d LAST\r\n" % len(last)
        + last
        + b"QUIT\r\n"
    )
    replies = client.read_until_closed()
    codes = reply_codes(replies)
    over = "" if len(chunk) == len(_REFUSED_CHUNK_MARKER) else " (over SIZE)"
    sent = (
        f"BDAT {len(first)}, {line.decode()!r}{over}, BDAT {len(last)} LAST and QUIT got "
        f"{shown_codes(codes)}"
    )
    wrong = _refused_chunk_problem(client, replies)
    if wrong:
        raise _Failed(f"{sent}: {wrong}")
    return f"{sent}: {_refused_chunk_outcome(codes)}"


_CHUNK_READ_AS_COMMANDS: Final = (
    "the refused chunk's octets were read as commands (RFC 3030 §2: a refused BDAT's "
    "chunk is still read as its chunk)"
)


def _refused_chunk_problem(client: WireClient, replies: Sequence[ServerReply]) -> str | None:
    """What is wrong with the replies to the three BDATs and QUIT, or None.

    Replies come in order (RFC 2920 §3.1), so the codes before QUIT's 221 answer
    the BDATs. A 221 shows QUIT was read, and so every BDAT before it: a BDAT
    reply missing then was dropped, not cut off by a close.
    """
    codes = reply_codes(replies)
    if len(codes) > 4:
        return f"more replies than the three BDATs and QUIT: {_CHUNK_READ_AS_COMMANDS}"
    chunks = list(itertools.takewhile(lambda code: code != 221, codes))[:3]
    refused = next((index for index, code in enumerate(chunks) if code >= 400), None)
    if refused is not None and any(code // 100 == 2 for code in chunks[refused + 1 :]):
        return _accepted_after_refusal(client, codes)
    if refused is not None and client.closed and len(codes) == refused + 1:
        return None  # refused and closed: nothing after the refusal was taken
    if len(chunks) < 3:
        return _unanswered_chunks(3 - len(chunks), quit_answered=221 in codes)
    return session_end(client, replies)


def _accepted_after_refusal(client: WireClient, codes: Sequence[int]) -> str:
    """Why a 2xx after a refused BDAT fails. Four replies ending in a closing one
    (:data:`CLOSING`) with no 221 mean the server closed where the last BDAT's
    reply was due (QUIT gets 221, RFC 5321 §4.1.1.10): the 2xx before it answered
    the refused chunk's NOOP marker. Otherwise it answered a later chunk."""
    if len(codes) == 4 and codes[-1] in CLOSING and client.closed:
        return f"{_CHUNK_READ_AS_COMMANDS}, its NOOP marker answered {codes[2]}"
    return (
        "a chunk after the refused BDAT was accepted, so the message was delivered "
        "with a hole where the refused chunk was, and the client, told of the "
        "refusal, will send it again (RFC 3030 §2: after a 4xx or 5xx to a BDAT the "
        "transaction has failed and later chunks are discarded, 503 expected)"
    )


def _unanswered_chunks(missing: int, *, quit_answered: bool) -> str:
    """BDATs left without a reply; with QUIT answered, their replies were dropped,
    which may hide a message delivered with a hole (RFC 3030 §2: each BDAT gets one
    reply, after its chunk)."""
    what = "the last BDAT" if missing == 1 else f"{missing} of the three BDATs"
    if not quit_answered:
        return f"{what} went unanswered"
    return (
        f"{what} went unanswered, yet QUIT got 221: the server read past it and dropped "
        "its reply, so whether it delivered the message with a hole cannot be told"
    )


def _refused_chunk_outcome(codes: Sequence[int]) -> str:
    """What a server that delivered no hole did, for the summary."""
    chunks = list(itertools.takewhile(lambda code: code != 221, codes))[:3]
    if chunks[0] >= 400:
        raise _Skipped(
            f"the first chunk was refused ({chunks[0]}), so the line after it went "
            "untested: give a recipient the server accepts"
        )
    if chunks[1] >= 400:
        if len(chunks) == 2:
            return "refused, then the session closed"
        return "refused, and the last chunk with it"
    if chunks[2] // 100 == 2:
        return "the line was taken as a chunk: none was refused, the message went whole"
    if chunks[2] == 503:
        return (
            "the line was taken as a chunk that ended the message, so a message of chunks "
            "1-2 was probably delivered while the client got 503 for its real last chunk"
        )
    return f"the line was taken as a chunk, and the message refused at its end ({chunks[2]})"
