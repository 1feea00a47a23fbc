"""smtpcore.testing.check: each check finds its planted defect, and what it finds in real servers.

The broken servers of tests/broken_servers.py each carry one defect; every
check must fail on the server made for it and pass on the correct
:class:`~broken_servers.SmallServer`. Then the battery runs against
smtpcore's own asyncio server, aiosmtpd and a private Postfix, and the
tests pin what it finds there (docs/testing-check.rst records it).
"""

from __future__ import annotations

import gc
import itertools
import re
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Final

import pytest

from broken_servers import (
    BareLfBdatServer,
    DigitSizeBdatServer,
    DotSpaceEndServer,
    DroppedReplyServer,
    EagerBdatServer,
    EhloKeepsRecipientsServer,
    FewRecipientsServer,
    HardErrorLimitServer,
    HoleBdatServer,
    LfDotLfClosingServer,
    LfDotLfDroppingServer,
    LfDotLfOneCommandServer,
    LfDotLfServer,
    LongLineTailServer,
    LongTextLineServer,
    MailKeepsRecipientsServer,
    NewTransactionMailServer,
    NonAsciiDigitServer,
    OutOfOrderServer,
    PipelinedRsetServer,
    PlaintextAfterStartTlsServer,
    RateLimitedServer,
    RcptBeforeMailServer,
    ReversedChunksServer,
    RsetKeepsRecipientsServer,
    RunningServer,
    SilentHoleServer,
    SizeIgnoringServer,
    SlowLfDotLfDroppingServer,
    SmallServer,
    SplitCommandServer,
    StateFirstBdatServer,
    UnstuffFirstOnlyServer,
    rate_limited,
    raw_server,
    serve,
)
from peers import TLSFiles, free_port, ipv6_loopback_port
from private_postfix import private_postfix
from smtpcore._textsafe import unsafe_in_text
from smtpcore.handler import Envelope, Handler, Session
from smtpcore.smtp import Rcpt, Reply
from smtpcore.testing import CollectingHandler, _battery, _wire
from smtpcore.testing.__main__ import NOTHING_TESTED, main
from smtpcore.testing.check import (
    CHECKS,
    CheckReport,
    CheckResult,
    Outcome,
    Probe,
    ServerUnreachable,
    check_handler,
    check_server,
    serving,
)

PLANTED = [
    (LfDotLfServer, "smuggling"),
    (EagerBdatServer, "bdat-octets"),
    (BareLfBdatServer, "bdat-bare-lf"),
    (HoleBdatServer, "bdat-refused-chunk"),
    (NonAsciiDigitServer, "ascii-digits"),
    (OutOfOrderServer, "pipelining"),
    (SplitCommandServer, "chunking"),
    (PlaintextAfterStartTlsServer, "starttls-injection"),
    (LongLineTailServer, "command-line-length"),
    (LongTextLineServer, "text-line-length"),
    (FewRecipientsServer, "recipient-limit"),
    (SizeIgnoringServer, "size-limit"),
    (RcptBeforeMailServer, "state-order"),
    (PipelinedRsetServer, "pipelined-end"),
]


def test_every_check_has_a_planted_defect() -> None:
    assert sorted(name for _, name in PLANTED) == sorted(CHECKS)


@pytest.mark.parametrize(("server_class", "name"), PLANTED, ids=[n for _, n in PLANTED])
def test_each_check_finds_its_planted_defect(
    server_class: type[SmallServer], name: str, tls: TLSFiles
) -> None:
    with serve(server_class, tls=tls.server_context) as server:
        report = check_server(
            server.host,
            server.port,
            checks=[name],
            timeout=5,
            stored=lambda: server.messages,
            stored_wait=0,  # complete at the 250: a loss is known at once
        )
    result = report[name]
    assert result.outcome is Outcome.FAILED, result
    # The transcript holds the exact bytes, both ways.
    assert any(entry.side == "client" for entry in result.transcript)
    assert any(entry.side == "server" for entry in result.transcript)
    assert str(result) in report.format()


SEEN_WHOLE: Final = "and each was seen in the store with the body sent"
"""How pipelined-end ends where every message was stored with the body sent."""


def test_the_correct_server_passes_every_check(tls: TLSFiles) -> None:
    with serve(SmallServer, tls=tls.server_context) as server:
        report = check_server(server.host, server.port, timeout=5, stored=lambda: server.messages)
    assert report.ok, report.format()
    assert [r.outcome for r in report.results] == [Outcome.PASSED] * len(CHECKS)
    assert report["pipelined-end"].summary.endswith(SEEN_WHOLE)
    assert not server.crashes


def test_a_server_that_loses_a_message_at_a_pipelined_rset_answers_as_a_good_one() -> None:
    """Its replies are a correct server's: only the messages stored show the loss, so
    without ``stored`` the check passes, saying what it saw, and with it fails."""
    with serve(PipelinedRsetServer) as server:
        blind = check_server(server.host, server.port, checks=["pipelined-end"], timeout=5)
        seeing = check_server(
            server.host,
            server.port,
            checks=["pipelined-end"],
            timeout=5,
            stored=lambda: server.messages,
            stored_wait=0,
        )
    codes = "[354, 250, 250, 354, 250, 250, 250, 250, 250, 250, 250, 250, 221]"
    assert blind["pipelined-end"].summary == (
        "three messages, the third in BDAT chunks, each ended in the same write as the next "
        f"commands, got {codes}"
    ), blind.format()
    result = seeing["pipelined-end"]
    assert result.outcome is Outcome.FAILED, seeing.format()
    # The third, in BDAT chunks, had RSET behind its last chunk too.
    assert "messages 1 and 3 (of 3) not seen in the store though their ends got 250" in (
        result.summary
    ), result.summary


@pytest.mark.parametrize(
    ("server_class", "mangled"),
    [(UnstuffFirstOnlyServer, "message 1 (of 3)"), (ReversedChunksServer, "message 3 (of 3)")],
)
def test_pipelined_end_fails_a_server_that_stores_another_body(
    server_class: type[SmallServer], mangled: str
) -> None:
    """Each message was found by its body line, whatever else the body held: a server
    that unstuffed only a message's first dot line, or joined BDAT chunks out of order,
    passed with --stored-dir. The bodies now hold dot lines, the third message goes in
    BDAT chunks, and each body is compared whole."""
    with serve(server_class) as server:
        report = check_server(
            server.host,
            server.port,
            checks=["pipelined-end"],
            timeout=5,
            stored=lambda: server.messages,
            stored_wait=0,
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.FAILED, report.format()
    said = f"{mangled} is in the store with another body than the one sent: it differs at octet"
    assert said in result.summary, result.summary
    assert "not seen" not in result.summary, result.summary


def test_pipelined_end_passes_a_store_that_adds_an_empty_line_after_the_body() -> None:
    """Postfix's ``smtp-sink -d`` ends every dump with one empty line more: a correct
    server, failed by the whole-body compare until the empty lines after a body's end
    were let be."""

    def an_empty_line_more() -> list[bytes]:
        return [message + b"\r\n" for message in server.messages]

    with serve(SmallServer) as server:
        report = check_server(
            server.host,
            server.port,
            checks=["pipelined-end"],
            timeout=5,
            stored=an_empty_line_more,
            stored_wait=0,
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.PASSED, report.format()


def test_pipelined_end_says_a_stored_message_with_another_body_is_stored() -> None:
    """A message found in the store by its Message-ID whose body lost its last line was
    said to be "not seen in the store ... among the 0 messages stored() returned"."""

    def last_line_dropped() -> list[bytes]:
        return [message.replace(b"last line\r\n", b"") for message in server.messages]

    with serve(SmallServer) as server:
        report = check_server(
            server.host,
            server.port,
            checks=["pipelined-end"],
            timeout=5,
            stored=last_line_dropped,
            stored_wait=0,
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert "message 2 (of 3) is in the store with another body" in result.summary, result.summary
    assert "not seen" not in result.summary, result.summary
    assert "sent b'.three leading dots\\nlast line\\n'" in result.summary, result.summary


def test_pipelined_end_finds_a_message_stored_with_lf_line_ends() -> None:
    """A Maildir (the reference server's) keeps LF line ends: each message was
    looked for by its ``Subject:`` line and CRLF, and was said to be lost."""
    with serve(SmallServer) as server:
        report = check_server(
            server.host,
            server.port,
            checks=["pipelined-end"],
            timeout=5,
            stored=lambda: [message.replace(b"\r\n", b"\n") for message in server.messages],
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.PASSED, report.format()
    assert result.summary.endswith(SEEN_WHOLE)


class SubjectTagging(CollectingHandler):
    """Tags the subject of every message, as a spam filter does."""

    async def handle_message(self, session: Session, envelope: Envelope) -> None:
        envelope.content = envelope.content.replace(b"Subject: ", b"Subject: [ext] ", 1)
        await super().handle_message(session, envelope)


class BytesKeeping(CollectingHandler):
    """Keeps each message's bytes in ``messages``, as many test handlers do."""

    async def handle_message(self, session: Session, envelope: Envelope) -> None:
        self.messages.append(envelope.content)  # type: ignore[arg-type]  # the point


class PairKeeping(CollectingHandler):
    """Keeps (sender, content) pairs in ``messages``: no content to be read."""

    async def handle_message(self, session: Session, envelope: Envelope) -> None:
        self.messages.append((envelope.sender, envelope.content))  # type: ignore[arg-type]


class MessagesOfItsOwn(Handler):
    """Not a CollectingHandler, with a list named ``messages`` that is not mail."""

    def __init__(self) -> None:
        self.messages: list[str] = ["not", "mail"]

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")


@pytest.mark.parametrize("handler_class", [SubjectTagging, BytesKeeping])
def test_pipelined_end_finds_the_messages_a_collecting_handler_changed_or_kept_as_bytes(
    handler_class: type[CollectingHandler],
) -> None:
    result = check_handler(handler_class(), checks=["pipelined-end"], timeout=5)["pipelined-end"]
    assert result.outcome is Outcome.PASSED, result
    assert result.summary.endswith(SEEN_WHOLE), result.summary


def test_pipelined_end_reads_messages_only_from_a_collecting_handler() -> None:
    result = check_handler(MessagesOfItsOwn(), checks=["pipelined-end"], timeout=5)
    assert result["pipelined-end"].outcome is Outcome.PASSED, result.format()
    assert "store" not in result["pipelined-end"].summary


def test_pipelined_end_waits_for_a_store_that_keeps_messages_after_its_250() -> None:
    """A server that queues a message, a delivery agent writing it later (Postfix's
    local(8)), was said to lose both: ``stored()`` was asked once, right after QUIT.
    It is asked again until it shows every message, within the check's timeout."""
    asked: list[int] = []

    def stored_late() -> list[bytes]:
        asked.append(len(asked))
        return [] if len(asked) < 3 else list(server.messages)

    with serve(SmallServer) as server:
        report = check_server(
            server.host, server.port, checks=["pipelined-end"], timeout=5, stored=stored_late
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.PASSED, report.format()
    assert result.summary.endswith(SEEN_WHOLE)
    assert len(asked) == 3


def test_pipelined_end_asks_a_store_that_never_shows_a_message_a_bounded_number_of_times() -> None:
    """Within the timeout and no more: the calls are spaced, never a busy loop."""
    asked: list[float] = []

    def stored_lost() -> list[bytes]:
        asked.append(time.monotonic())
        return []

    with serve(SmallServer) as server:
        report = check_server(
            server.host, server.port, checks=["pipelined-end"], timeout=1, stored=stored_lost
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert "messages 1, 2 and 3 (of 3) not seen in the store" in result.summary
    assert 2 <= len(asked) <= 10, asked  # 0.05 s, doubling to 1 s: 1 s holds 5 pauses


class _CountedReads(list[Envelope]):
    """A list that counts how often it is read through."""

    reads = 0

    def __iter__(self) -> Iterator[Envelope]:
        self.reads += 1
        return super().__iter__()


class LosingFirst(CollectingHandler):
    """Answers every message 250 and keeps all but the first; its ``kept`` counts how
    often they are read, which is how often ``stored`` is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.kept = self.messages = _CountedReads()
        self.answered = 0

    async def handle_message(self, session: Session, envelope: Envelope) -> None:
        self.answered += 1
        if self.answered > 1:
            await super().handle_message(session, envelope)


def test_check_handler_asks_a_collecting_handler_once_for_a_lost_message() -> None:
    """Its messages are complete when the 250 is sent: asked again and again for the
    whole timeout (10 s by default), a lost message failed only at its end."""
    handler = LosingFirst()
    result = check_handler(handler, checks=["pipelined-end"], timeout=5)["pipelined-end"]
    assert result.outcome is Outcome.FAILED, result
    assert "message 1 (of 3) not seen in the store" in result.summary, result.summary
    assert handler.kept.reads == 1


def test_check_handler_waits_for_a_collecting_handler_when_told_to() -> None:
    handler = LosingFirst()
    report = check_handler(handler, checks=["pipelined-end"], timeout=5, stored_wait=0.2)
    assert report["pipelined-end"].outcome is Outcome.FAILED, report.format()
    assert handler.kept.reads >= 2


@pytest.mark.parametrize("wait", [-1, float("nan"), float("inf")])
def test_a_stored_wait_that_is_no_number_of_seconds_is_refused(wait: float) -> None:
    with pytest.raises(ValueError, match="stored_wait must be zero or more seconds"):
        check_server("127.0.0.1", 25, stored=list, stored_wait=wait)


def _stored_raises() -> list[bytes]:
    raise OSError("the mailbox is gone")


@pytest.mark.parametrize(
    ("stored", "said"),
    [
        (_stored_raises, "stored() raised OSError: the mailbox is gone: "),
        (lambda: ["a str"], "stored() returned a str among the messages, not their content"),
    ],
)
def test_a_stored_that_fails_skips_pipelined_end(
    stored: Callable[[], list[bytes]], said: str
) -> None:
    with serve(SmallServer) as server:
        report = check_server(
            server.host, server.port, checks=["pipelined-end"], timeout=5, stored=stored
        )
    result = report["pipelined-end"]
    assert result.outcome is Outcome.SKIPPED, report.format()
    assert said in result.summary, result.summary


def test_a_collecting_handler_with_other_messages_skips_pipelined_end_in_the_battery() -> None:
    """The handler's list held no envelopes: AttributeError escaped the whole battery."""
    report = check_handler(PairKeeping(), timeout=5)
    result = report["pipelined-end"]
    assert result.outcome is Outcome.SKIPPED, report.format()
    assert "stored() returned a tuple among the messages" in result.summary


class EndAndCommandAsOneServer(SmallServer):
    """Answers a message's end and the command read with it in one reply: one too few."""

    def end_of_message(self, content: bytes) -> bytes:
        answer = super().end_of_message(content)
        if bytes(self.buffer[:4]).upper() in (b"RSET", b"MAIL"):
            line = self.next_line()
            assert line is not None
            self.command(line)
        return answer


def test_a_reply_missing_behind_a_messages_end_fails_pipelined_end() -> None:
    with serve(EndAndCommandAsOneServer) as server:
        report = check_server(server.host, server.port, checks=["pipelined-end"], timeout=2)
    result = report["pipelined-end"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary == "no whole reply came within 2 s where one was due", result.summary


def test_a_server_that_takes_rcpt_before_mail_fails_the_battery() -> None:
    """Before state-order, no check judged the reply to RCPT with no MAIL (pipelining
    sent one, but only compared its reply pipelined and not), so a server that took
    it passed every check (RFC 5321 §3.3: 503; §4.1.4's order binds the client)."""
    with serve(RcptBeforeMailServer) as server:
        report = check_server(server.host, server.port, timeout=5)
    failed = [result.name for result in report.failures]
    assert failed == ["pipelining", "state-order"], report.format()
    assert report["pipelining"].summary.endswith(
        "but its RCPT after RSET, with no MAIL, got 250, not a refusal (503 expected, "
        "RFC 5321 §3.3)"
    )
    summary = report["state-order"].summary
    assert "RCPT before MAIL: 'RCPT TO:<postmaster@smtpcore.test>' got 250 2.1.5 OK" in summary
    assert "got 250 2.1.5 OK, not a refusal: 503 expected (RFC 5321 §3.3)" in summary
    assert "RCPT after RSET" in summary and "DATA before MAIL" not in summary


def test_the_chunking_check_closes_the_connections_it_forgets() -> None:
    """The runs that matched the unsplit one were dropped from the transcript unclosed:
    a ResourceWarning ("unclosed socket") each, an error under ``-W error``."""
    with serve(SmallServer) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        report = check_server(server.host, server.port, checks=["chunking"], timeout=5)
        gc.collect()
    assert report["chunking"].passed, report["chunking"]
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_a_smuggling_failure_shows_the_bytes_and_every_look_alike() -> None:
    with serve(LfDotLfServer) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=5)
    result = report["smuggling"]
    assert "LF.LF" in result.summary and "CR.CR" not in result.summary
    sent = b"".join(e.data for e in result.transcript if e.side == "client")
    assert b"before\n.\nNOOP smtpcore-smuggling-marker\r\n" in sent
    # Two writes, split after the look-alike (see check_smuggling).
    assert r"before\n.\n'" in result.transcript_text()
    assert r"C: b'NOOP smtpcore-smuggling-marker\r\nafter" in result.transcript_text()
    # The server took the marker for a command: the smuggled part became a session of its own.
    assert server.sessions[0].commands[-4:] == [
        b"NOOP smtpcore-smuggling-marker\r\n",
        b"after\r\n",
        b".\r\n",
        b"QUIT\r\n",
    ]


def test_a_dot_line_with_blanks_around_the_dot_is_no_end_of_data() -> None:
    """RFC 5321 §4.1.1.4: only CRLF.CRLF ends data. A server that strips blanks
    before it compares ends the message at ``. `` or `` .`` and runs the marker."""
    with serve(DotSpaceEndServer) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=5)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, result
    for name in ("CRLF.SP CRLF", "CRLF.TAB CRLF", "CRLF SP.CRLF"):
        assert f"{name} (5 replies: [250, 250, 500, 500, 221])" in result.summary, result.summary
    assert "LF.LF" not in result.summary
    assert any(b"NOOP smtpcore-smuggling-marker\r\n" in s.commands for s in server.sessions)


def test_a_server_that_drops_the_rest_of_its_read_is_caught_by_the_split_write() -> None:
    """One write of the look-alike, the marker and QUIT got one reply from a server that
    drops its read's rest after the end of a message, and passed; the marker in a read
    of its own is run as a command."""
    with serve(LfDotLfDroppingServer) as server:
        report = check_server(
            server.host, server.port, checks=["smuggling"], timeout=2, pause=0.05
        )
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, result
    assert "LF.LF" in result.summary and "CR.CR" not in result.summary
    sent = [e.data for e in result.transcript if e.side == "client"]
    assert any(data.endswith(b"before\n.\n") for data in sent)
    assert b"NOOP smtpcore-smuggling-marker\r\n" in server.sessions[0].commands


def test_a_message_answered_once_with_quit_left_unanswered_fails() -> None:
    """Where both writes come in one read, a server that ends the message at LF.LF and
    drops the rest of the read drops QUIT too: one reply and no close passed, counted as
    a message read whole."""
    with serve(SlowLfDotLfDroppingServer) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=0.5)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, result
    unanswered = "([250]: QUIT was left unanswered: no 221 and no close within 0.5 s)"
    assert f"LF.LF {unanswered}; CRLF.LF {unanswered}" in result.summary
    assert "CR.CR" not in result.summary
    assert b"Subject: smtpcore smuggling check\r\n\r\nbefore\n" in server.messages
    assert "-- the server did not close within 0.5 s" in result.transcript_text()


def test_a_marker_answered_in_place_of_quit_fails() -> None:
    """Two replies passed whatever they were: here the marker's 250 after a message
    ended at LF.LF, and QUIT dropped with the rest of its read."""
    with serve(LfDotLfOneCommandServer) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=0.5)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary.startswith(
        "a message and QUIT got two replies, the second no answer to QUIT (221; after "
        "a refusal 421 or 521), so the message ended early and the marker line after "
        "the look-alike was answered in QUIT's place: LF.LF ([250, 250]); CRLF.LF ([250, 250])"
    ), result.summary
    assert "CR.CR" not in result.summary
    assert any(b"smtpcore-smuggling-marker" in s.commands[-1] for s in server.sessions)


class QuitIgnoringServer(SmallServer):
    """Leaves QUIT unanswered and the connection open."""

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"QUIT"):
            return b""
        return super().command(line)


class QuitClosingServer(SmallServer):
    """Closes the connection at QUIT without its 221 (RFC 5321 §4.1.1.10)."""

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"QUIT"):
            self.closed = True
            return b""
        return super().command(line)


class OpenAfterQuitServer(SmallServer):
    """Answers QUIT with 221 and keeps the connection open."""

    def command(self, line: bytes) -> bytes:
        answer = super().command(line)
        if line.upper().startswith(b"QUIT"):
            self.closed = False
        return answer


@pytest.mark.parametrize(
    ("server_class", "summary", "quit_got"),
    [
        (QuitIgnoringServer, "QUIT was left unanswered: no 221 and no close within 0.3 s", ""),
        (
            QuitClosingServer,
            "the server closed the connection with QUIT unanswered (no 221)",
            "",
        ),
        (
            OpenAfterQuitServer,
            "the server answered QUIT but did not close the connection within 0.3 s "
            "(RFC 5321 §4.1.1.10)",
            "QUIT got [221]: ",
        ),
    ],
    ids=["unanswered", "closed", "not-closed"],
)
def test_a_session_that_does_not_end_as_quit_asks_fails_every_check(
    server_class: type[SmallServer], summary: str, quit_got: str
) -> None:
    """Every check reads to the close after QUIT, so that no reply is missed; a server
    still open at the timeout passed on the replies that had come (chunking and
    pipelining compared two runs that both lacked the 221). Where QUIT got no reply
    the summary says so in words: it printed "QUIT got []: " before them."""
    names = ["chunking", "pipelining", "text-line-length", "command-line-length"]
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=names, timeout=0.3)
    for result in report.results:
        assert result.outcome is Outcome.FAILED, result
        assert result.summary.endswith(summary), result
    assert report["chunking"].summary == quit_got + summary
    assert report["text-line-length"].summary.startswith(
        "a message of long lines and QUIT got [552"
    )


def ascii_digits_against(server_class: type[SmallServer]) -> tuple[CheckResult, RunningServer]:
    """The ``ascii-digits`` check's result against ``server_class``, and what its
    sessions did."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["ascii-digits"], timeout=5)
    return report["ascii-digits"], server


def test_a_crash_is_a_dropped_connection_in_the_transcript() -> None:
    result, server = ascii_digits_against(NonAsciiDigitServer)
    assert "dropped connection" in result.summary
    assert "SIZE=\\xc2\\xb2" in result.transcript_text()
    assert "-- server closed the connection" in result.transcript_text()
    assert {type(crash) for crash in server.crashes} == {ValueError}


class ChallengesMailServer(SmallServer):
    """A confused state machine: it answers MAIL with a SASL challenge (334)."""

    def mail(self, argument: str) -> bytes:
        return b"334 VXNlcm5hbWU6\r\n"


def test_a_command_after_a_334_shows_byte_for_byte() -> None:
    """The battery's own commands are no secrets: what it writes after a broken
    server's 334 is printed as written, as every other write is."""
    with serve(ChallengesMailServer) as server:
        report = check_server(server.host, server.port, checks=["chunking"], timeout=5)
    result = report["chunking"]
    challenged = [entry.data for entry in result.transcript].index(b"334 VXNlcm5hbWU6\r\n")
    after = b"".join(
        entry.data for entry in result.transcript[challenged:] if entry.side == "client"
    )
    assert after.startswith(b"RCPT TO:<"), result.transcript_text()
    assert "<hidden>" not in result.transcript_text(), result.transcript_text()


class RefuseThenCloseDigitServer(SmallServer):
    """Trusts ``str.isdigit()`` too, but catches ``int("²")``: 501 and a close, as a
    crashed worker with a last word does; ``SIZE=`` in Arabic-Indic digits is a size."""

    def parse_number(self, text: str) -> int | None:
        if not text.isdigit():
            return None
        try:
            return int(text)
        except ValueError:
            self.closed = True
            return None


def test_a_refusal_then_a_close_does_not_hide_a_size_read_from_other_digits() -> None:
    result, server = ascii_digits_against(RefuseThenCloseDigitServer)
    assert result.outcome is Outcome.FAILED, result
    # Only BDAT may close after its refusal; every line is still tried, on a new connection.
    assert "instead of answering RSET after 'MAIL FROM:<check@smtpcore.test> SIZE=²'" in (
        result.summary
    )
    assert (
        "SIZE=\u0661\u0660' was answered 250 2.1.0 OK, where 'SIZE=abc' got 501" in result.summary
    )
    assert len(server.sessions) >= 2


class LenientSizeServer(SmallServer):
    """Ignores a SIZE it cannot read as ASCII digits, as Exim 4.96 does: ``SIZE=abc``,
    ``SIZE=²`` and ``SIZE=`` in Arabic-Indic digits all get 250, and none is a size."""

    def check_size(self, value: str) -> bytes | None:
        return None if self.parse_number(value) is None else super().check_size(value)


class LenientIntSizeServer(SmallServer):
    """Ignores a SIZE ``int()`` cannot read, and reads one ``int()`` can: Arabic-Indic
    digits are a size, which only a number over the limit shows."""

    def parse_number(self, text: str) -> int | None:
        try:
            return int(text)
        except ValueError:
            return None

    def check_size(self, value: str) -> bytes | None:
        return None if self.parse_number(value) is None else super().check_size(value)


def test_a_server_that_ignores_a_size_it_cannot_read_passes_ascii_digits() -> None:
    """Exim answers 250 to ``SIZE=²`` and ``SIZE=abc`` alike and reads no size from
    either (RFC 1870 wants no 501 there); the check failed it for not refusing."""
    result, _ = ascii_digits_against(LenientSizeServer)
    assert result.outcome is Outcome.PASSED, result
    assert "got 250 as 'MAIL FROM:<check@smtpcore.test> SIZE=abc' did" in result.summary


def test_non_ascii_digits_over_the_limit_show_a_size_read() -> None:
    result, _ = ascii_digits_against(LenientIntSizeServer)
    assert result.outcome is Outcome.FAILED, result
    big = "".join(chr(0x0660 + int(digit)) for digit in "10001")
    assert result.summary == (
        f"'MAIL FROM:<check@smtpcore.test> SIZE={big}' (10001, over the offered SIZE "
        "10000) was answered 552 5.3.4 Message too big, as its ASCII twin is: a size "
        "was read from its digits"
    )


class LenientIntNoLimitServer(LenientIntSizeServer):
    """Reads Arabic-Indic digits as a size, ignores ``SIZE=abc``, and offers
    ``offered`` for SIZE in EHLO: no number (no fixed limit, RFC 1870 §4), or
    no SIZE at all (None), so no size it reads is ever over a limit it names."""

    offered: bytes | None = b"SIZE"

    def command(self, line: bytes) -> bytes:
        answer = super().command(line)
        if line[:4].upper() != b"EHLO":
            return answer
        size_line = f"250-SIZE {self.max_size}\r\n".encode()
        return answer.replace(
            size_line, b"" if self.offered is None else b"250-" + self.offered + b"\r\n"
        )


class LenientIntNoSizeServer(LenientIntNoLimitServer):
    """The same, with no SIZE in EHLO."""

    offered = None


@pytest.mark.parametrize(
    "server_class", [LenientIntNoLimitServer, LenientIntNoSizeServer], ids=["bare-SIZE", "no-SIZE"]
)
def test_ascii_digits_cannot_tell_without_a_control_or_a_limit(
    server_class: type[SmallServer],
) -> None:
    """Where ``SIZE=abc`` is ignored and no limit is offered, a size read from
    Arabic-Indic digits and one ignored are both answered 250: the check passed,
    saying "no size was read from non-ASCII digits", which nothing had shown."""
    result, _ = ascii_digits_against(server_class)
    assert result.outcome is Outcome.SKIPPED, result
    assert result.summary == (
        "'MAIL FROM:<check@smtpcore.test> SIZE=abc' got 250 and no SIZE limit is "
        "offered, so a size read from non-ASCII digits would be answered as a SIZE "
        "ignored: the check cannot tell them apart"
    )


def test_bdat_with_non_ascii_digits_goes_inside_a_transaction() -> None:
    """After RSET, with no transaction, a server may refuse BDAT before it reads the
    size: this one passed, though ``BDAT ²`` crashes it once MAIL and RCPT are in."""
    result, server = ascii_digits_against(StateFirstBdatServer)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == "'BDAT ² LAST' was answered by a dropped connection"
    assert "C: b'RCPT TO:<postmaster@smtpcore.test>\\r\\n'" in result.transcript_text()
    assert {type(crash) for crash in server.crashes} == {ValueError}


def test_rset_after_a_refused_bdat_must_get_250() -> None:
    """A server that reads ``²`` as 2 and refuses ``BDAT ²`` at once takes "RS" of the
    RSET after it for the chunk and answers "ET" with 500: any reply to RSET passed."""
    result, server = ascii_digits_against(DigitSizeBdatServer)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        "RSET after 'BDAT ² LAST' got 500 5.5.2 Command unrecognized, not 250 "
        "(RFC 5321 §4.1.1.5), as from a server that read a size from '²' and took the "
        "start of RSET for the chunk's octets"
    )
    assert b"ET\r\n" in server.sessions[0].commands


class RecipientRefusingServer(SmallServer):
    """Refuses every recipient (a sink the check was not pointed at)."""

    def rcpt(self, argument: str) -> bytes:
        return b"550 5.1.1 No such user\r\n"


def test_bdat_with_non_ascii_digits_is_skipped_not_passed_without_a_transaction() -> None:
    result, _ = ascii_digits_against(RecipientRefusingServer)
    assert result.outcome is Outcome.SKIPPED, result
    assert result.summary.startswith(
        "the SIZE= lines were refused with 5xx, but 'BDAT ² LAST' was not tried: "
        "'RCPT TO:<postmaster@smtpcore.test>' was answered 550 5.1.1 No such user"
    ), result.summary


class SenderPolicyServer(SmallServer):
    """Takes mail only from senders at ok.example, refusing the others (550) before it
    reads MAIL's parameters, as a server may; offers no CHUNKING; and reads SIZE with
    ``int()``, so that Arabic-Indic digits are a size."""

    def command(self, line: bytes) -> bytes:
        return super().command(line).replace(b"250-CHUNKING\r\n", b"")

    def mail(self, argument: str) -> bytes:
        if self.hello and not self.in_transaction and "@ok.example>" not in argument:
            return b"550 5.7.1 Sender not allowed\r\n"
        return super().mail(argument)

    def parse_number(self, text: str) -> int | None:
        try:
            return int(text)
        except ValueError:
            return None


def test_a_refused_sender_skips_the_checks_that_probe_mail_parameters() -> None:
    """The refusal of the sender passed for a refusal of the digits (ascii-digits passed
    a server that reads Arabic-Indic digits as a size), and failed size-limit on a
    server whose SIZE is right: neither says anything until the sender is accepted."""
    names = ["ascii-digits", "size-limit"]
    with serve(SenderPolicyServer) as server:
        refused = check_server(server.host, server.port, checks=names, timeout=5)
        accepted = check_server(
            server.host, server.port, checks=names, sender="check@ok.example", timeout=5
        )
    for result in refused.results:
        assert result.outcome is Outcome.SKIPPED, result
        assert result.summary == (
            "'MAIL FROM:<check@smtpcore.test>' was answered 550 5.7.1 Sender not allowed: "
            "give a sender the server accepts"
        )
    result = accepted["ascii-digits"]
    assert result.outcome is Outcome.FAILED, result
    assert (
        "SIZE=\u0661\u0660' was answered 250 2.1.0 OK, where 'SIZE=abc' got 501" in result.summary
    )
    assert accepted["size-limit"].passed, accepted["size-limit"]


class CrashOnMailServer(SmallServer):
    """The session dies on any MAIL (a crash in its parser): the connection drops."""

    def mail(self, argument: str) -> bytes:
        raise RuntimeError("planted: crash in MAIL")


class CrashOnLongTextLineServer(SmallServer):
    """The session dies on a message line over 1000 octets (a fixed-size buffer)."""

    def read_content(self) -> bytes | None:
        if any(len(line) > 1000 for line in bytes(self.buffer).split(b"\r\n")[:-1]):
            raise RuntimeError("planted: a text line overflows a 1000-octet buffer")
        return super().read_content()


class CrashOnBareLfServer(SmallServer):
    """The session dies on a bare LF in a message, with no reply."""

    def read_content(self) -> bytes | None:
        if b"\n" in bytes(self.buffer).replace(b"\r\n", b""):
            raise RuntimeError("planted: a bare LF in DATA")
        return super().read_content()


def test_a_session_that_dies_where_replies_are_owed_fails_never_passes() -> None:
    with serve(CrashOnMailServer) as server:
        report = check_server(server.host, server.port, timeout=2)
    outcomes = {result.name: result.outcome for result in report.results}
    # Only the checks that send no MAIL can pass (or skip: no STARTTLS offered).
    assert outcomes.pop("command-line-length") is Outcome.PASSED
    assert outcomes.pop("starttls-injection") is Outcome.SKIPPED
    assert set(outcomes.values()) == {Outcome.FAILED}, report.format(transcripts=False)
    assert report["pipelining"].summary == (
        "the server closed the connection instead of answering 'MAIL FROM:<check@smtpcore.test>'"
    )
    assert "(-1)" in report["chunking"].summary
    assert "closed the connection instead of answering" in report["bdat-octets"].summary
    assert server.crashes


def test_a_message_of_long_lines_that_kills_the_session_gets_no_reply() -> None:
    with serve(CrashOnLongTextLineServer) as server:
        report = check_server(server.host, server.port, checks=["text-line-length"], timeout=2)
    result = report["text-line-length"]
    assert result.outcome is Outcome.FAILED
    assert result.summary.startswith("the message of long lines got no reply")


def test_a_look_alike_that_kills_the_session_gets_no_reply() -> None:
    with serve(CrashOnBareLfServer) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=2)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED
    assert result.summary.startswith("a message holding LF.LF, LF.CRLF, CRLF.LF")
    assert "CR.CR" not in result.summary


def test_a_marker_answered_421_after_an_accepted_message_fails() -> None:
    """[250, 421] passed as the message's reply and QUIT's 421, here the 421 of the
    marker after a message ended at LF.LF: after an accepted message only a 221
    answers QUIT."""
    with serve(LfDotLfClosingServer) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=2)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, result
    assert "LF.LF ([250, 421]); CRLF.LF ([250, 421])" in result.summary, result.summary
    assert "CR.CR" not in result.summary


class ErrorLimitServer(SmallServer):
    """Refuses every message (554), and after one refusal answers the next command,
    QUIT included, 421 and closes: Postfix at ``smtpd_hard_error_limit = 1`` (its
    limit under stress), which RFC 5321 §3.8 allows."""

    errors = 0

    def command(self, line: bytes) -> bytes:
        if self.errors:
            self.closed = True
            return b"421 4.7.0 Error: too many errors\r\n"
        answer = super().command(line)
        self.errors += answer.startswith(b"5")
        return answer

    def end_of_message(self, content: bytes) -> bytes:
        self.reset()
        self.errors += 1
        return b"554 5.7.1 Message refused\r\n"


def test_a_session_the_server_ends_with_421_after_a_refusal_is_no_failure() -> None:
    """[554, 421] to a message and QUIT failed smuggling as a marker answered in
    QUIT's place, and text-line-length as out of order; pipelining failed on the
    close after a 421 inside its group, where it has nothing to compare."""
    checks = ["smuggling", "text-line-length", "pipelining"]
    with serve(ErrorLimitServer) as server:
        report = check_server(server.host, server.port, checks=checks, timeout=2)
    assert report["smuggling"].outcome is Outcome.PASSED, report.format()
    assert report["text-line-length"].summary == "the message of long lines got 554"
    assert report["text-line-length"].outcome is Outcome.PASSED
    assert report["pipelining"].outcome is Outcome.SKIPPED, report.format()
    assert report["pipelining"].summary == (
        "the server ended the session at 'RCPT TO:<postmaster@smtpcore.test>' "
        "(421 4.7.0 Error: too many errors)"
    )


def state_order_against(factory: Callable[..., SmallServer]) -> CheckReport:
    """The ``state-order`` check's report against the server ``factory`` makes."""
    with serve(factory) as server:
        return check_server(server.host, server.port, checks=["state-order"], timeout=5)


ALL_REFUSED: Final = (
    "RCPT before MAIL got 503, DATA before MAIL got 503, DATA with no recipient got 554, "
    "a second MAIL in a transaction got 503, RCPT after RSET got 503, RCPT after a new "
    "EHLO got 503, DATA after RSET and a new MAIL got 554, DATA after a new EHLO and MAIL "
    "got 554, BDAT before MAIL got 503"
)
"""What state-order says of SmallServer: every command out of sequence refused."""


def test_a_second_mail_that_starts_a_new_transaction_passes_state_order() -> None:
    """A second MAIL answered 250 failed state-order ("503 expected (§4.1.4)"), but RFC
    5321 §3.3 has MAIL start a new transaction and reset every state table, recipients
    included; §4.1.4's "MUST NOT" binds the client, and qmail-smtpd answers 250. The
    defect is a taken MAIL that keeps the old recipients, which DATA shows."""
    report = state_order_against(NewTransactionMailServer)
    result = report["state-order"]
    assert result.passed, report.format()
    assert result.summary == ALL_REFUSED.replace(
        "a second MAIL in a transaction got 503",
        "a second MAIL in a transaction got 250, then DATA got 554",
    )


def test_a_second_mail_that_keeps_the_recipients_fails_and_delivers_nothing() -> None:
    """The DATA after the taken MAIL gets 354: the old recipient carried over. The
    check ends that message by closing the connection, never with its end, so that no
    message goes to the recipient."""
    with serve(MailKeepsRecipientsServer) as server:
        report = check_server(server.host, server.port, checks=["state-order"], timeout=5)
    result = report["state-order"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith(
        "commands out of sequence were accepted: a second MAIL in a transaction: "
        "'MAIL FROM:<check@smtpcore.test>' got 250 2.1.0 OK, then 'DATA' got 354 End data "
        "with <CR><LF>.<CR><LF>, not a refusal: "
    ), result.summary
    assert "§3.3" in result.summary and "§4.1.4" not in result.summary
    assert "RCPT" not in result.summary.partition("not a refusal")[0]  # the one defect
    assert server.messages == []
    assert "client half-closes" in result.transcript_text()


@pytest.mark.parametrize(
    ("server_class", "what", "reset", "section"),
    [
        (RsetKeepsRecipientsServer, "DATA after RSET and a new MAIL", "RSET", "§4.1.1.5"),
        (EhloKeepsRecipientsServer, "DATA after a new EHLO and MAIL", "EHLO", "§4.1.4"),
    ],
)
def test_recipients_kept_through_a_reset_fail_state_order_and_deliver_nothing(
    server_class: type[SmallServer], what: str, reset: str, section: str
) -> None:
    """MAIL, RCPT, then RSET (or a new EHLO), MAIL and DATA: a server that kept the
    recipient answered 354 and passed, as no step had a recipient before the reset.
    The message is cut off inside, so nothing is delivered."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["state-order"], timeout=5)
    result = report["state-order"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith(
        f"commands out of sequence were accepted: {what}: 'DATA' got 354 End data "
        "with <CR><LF>.<CR><LF>, not a refusal: "
    ), result.summary
    assert section in result.summary and reset in result.summary.partition("not a refusal")[2]
    assert result.summary.count("not a refusal") == 1  # the one defect
    assert server.messages == []


class ClosingRefusalServer(SmallServer):
    """Ends the session at a command out of sequence: 421 in place of the 503, then the
    close (RFC 5321 §3.8 allows it at any command)."""

    def command(self, line: bytes) -> bytes:
        answer = super().command(line)
        if answer.startswith(b"503"):
            self.closed = True
            return b"421 4.5.1 Bad sequence, goodbye\r\n"
        return answer


@pytest.mark.parametrize(
    "server_class", [ErrorLimitServer, HardErrorLimitServer, ClosingRefusalServer]
)
def test_a_server_that_ends_the_session_after_refusals_passes_state_order(
    server_class: type[SmallServer],
) -> None:
    """Every command state-order sends is a refusal. On one connection, a server with an
    error limit (Postfix's ``smtpd_hard_error_limit``, which drops to 1 under stress;
    RFC 5321 §3.8) answered a later RSET or setup line 421, and the check failed at
    "RSET got 421". Each command now has a connection of its own, and a 421 in its
    place is a refusal that owes QUIT nothing."""
    report = state_order_against(server_class)
    result = report["state-order"]
    assert result.passed, report.format()
    if server_class is ClosingRefusalServer:
        # BDAT's 503 follows its (empty) chunk, which this server reads elsewhere.
        closing = ALL_REFUSED.replace("503", "421").replace("BDAT before MAIL got 421", "")
        assert result.summary == closing + "BDAT before MAIL got 503", result.summary
    else:
        assert result.summary == ALL_REFUSED, result.summary


@pytest.mark.interop
def test_postfix_at_a_hard_error_limit_of_one_passes_state_order() -> None:
    """Postfix answers the command after its ``smtpd_hard_error_limit``-th error 421 and
    closes; at 5 errors the one-connection state-order failed it with "RSET got 421"."""
    main_cf = {"smtpd_soft_error_limit": "1", "smtpd_hard_error_limit": "1"}
    with private_postfix(main_cf=main_cf) as postfix:
        report = check_server(postfix.host, postfix.port, checks=["state-order"], timeout=10)
    result = report["state-order"]
    assert result.passed, report.format()
    assert "not tried" not in result.summary, result.summary


class AuthRequiredServer(SmallServer):
    """A submission port: MAIL before AUTH gets 530 (RFC 4954 §6)."""

    def mail(self, argument: str) -> bytes:
        return b"530 5.7.0 Authentication required\r\n"


class RcptBeforeMailAuthServer(AuthRequiredServer, RcptBeforeMailServer):
    """The planted RCPT before MAIL, on a port that wants AUTH before MAIL."""


class RcptBeforeMailNoReEhloServer(RcptBeforeMailServer):
    """The planted RCPT before MAIL, and a new EHLO inside a transaction refused."""

    def command(self, line: bytes) -> bytes:
        if self.in_transaction and line[:5].upper() == b"EHLO ":
            self.commands.append(line)
            return b"503 5.5.1 EHLO inside a transaction\r\n"
        return super().command(line)


_MAIL_530: Final = (
    "('MAIL FROM:<check@smtpcore.test>' was answered 530 5.7.0 Authentication required: "
    "the server wants authentication first, RFC 4954 §6, which the checks do not give)"
)


def test_an_auth_port_passes_state_order_and_names_what_it_could_not_try() -> None:
    """A 530 to MAIL skipped the whole check, telling to "give a sender the server
    accepts"; the commands that need no MAIL are tried all the same."""
    report = state_order_against(AuthRequiredServer)
    result = report["state-order"]
    assert result.passed, report.format()
    assert result.summary == (
        "RCPT before MAIL got 503, DATA before MAIL got 503, BDAT before MAIL got 503; not "
        f"tried: DATA with no recipient {_MAIL_530}; a second MAIL in a transaction "
        f"{_MAIL_530}; RCPT after RSET {_MAIL_530}; RCPT after a new EHLO {_MAIL_530}; "
        f"DATA after RSET and a new MAIL {_MAIL_530}; DATA after a new EHLO and MAIL "
        f"{_MAIL_530}"
    ), result.summary


@pytest.mark.parametrize(
    ("server_class", "not_tried"),
    [
        (RcptBeforeMailAuthServer, f"not tried: DATA with no recipient {_MAIL_530}; "),
        (
            RcptBeforeMailNoReEhloServer,
            "not tried: RCPT after a new EHLO ('EHLO check.smtpcore.test' was answered 503 "
            "5.5.1 EHLO inside a transaction)",
        ),
    ],
)
def test_a_step_that_cannot_be_tried_keeps_the_defects_found(
    server_class: type[SmallServer], not_tried: str
) -> None:
    """A refused setup line in a later step raised a skip that threw away the RCPT
    before MAIL already taken: the planted defect came out SKIPPED."""
    report = state_order_against(server_class)
    result = report["state-order"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith(
        "commands out of sequence were accepted: RCPT before MAIL: "
        "'RCPT TO:<postmaster@smtpcore.test>' got 250 2.1.5 OK"
    ), result.summary
    assert not_tried in result.summary, result.summary


TRIES: Final = len(_battery.BUSY_PAUSES) + 1
"""How many times the battery tries a connection greeted 421 after its own last
session (:func:`~smtpcore.testing._battery.busy_retry_pause`): a rate limit that
refuses a connection refuses the tries right behind it too."""


def refused_from(first: int) -> Callable[[int], bool]:
    """The ``first`` connection refused, and the tries again right behind it."""
    return lambda number: first <= number < first + TRIES


_RATE_REFUSALS: Final[Mapping[str, Callable[[int], bool]]] = {
    "from the fourth": lambda number: number > 3,
    "every third": lambda number: (number // TRIES) % 3 == 2,
    "every second": lambda number: (number // TRIES) % 2 == 1,
}
"""Which connections a rate-limited server refuses, by connection number from 1: an
anvil-like limit met at the fourth, and refusals scattered among connections taken,
each a run of :data:`TRIES`, so that one is refused however often it is tried."""

_REFUSED_CONNECTION: Final = "the server refused a new connection: "


@pytest.mark.parametrize("at", ["greeting", "ehlo"])
@pytest.mark.parametrize("refuse", list(_RATE_REFUSALS))
def test_a_connection_rate_limit_fails_no_check(at: str, refuse: str) -> None:
    """A server that limits a client's connection rate (Postfix's
    ``smtpd_client_connection_rate_limit``; postscreen) answers a new connection, or
    its EHLO, 421 and closes, as RFC 5321 §3.8 allows. Any connection after the run's
    first so refused failed its check ("the greeting was 421 ... rather than 220",
    "EHLO was answered 421"): the battery opens 39. Such a check is skipped now, and a
    state-order step so refused is not tried."""
    with serve(rate_limited(_RATE_REFUSALS[refuse], at=at)) as server:
        report = check_server(server.host, server.port, timeout=5)
    assert report.ok, report.format(transcripts=False)
    refused = [result for result in report.results if _REFUSED_CONNECTION in result.summary]
    assert refused, report.format(transcripts=False)
    for result in refused:
        assert "RFC 5321 §3.8" in result.summary and "rate limit?" in result.summary
    if refuse != "from the fourth":  # some checks still ran whole
        assert any(result.passed for result in report.results), report.format()


def test_state_order_names_a_step_whose_connection_was_refused() -> None:
    """The third connection, DATA with no recipient's, is refused; the other steps go
    on and the check passes, naming the step not tried and why."""
    report = state_order_against(rate_limited(refused_from(3)))
    result = report["state-order"]
    assert result.passed, report.format()
    assert result.summary == (
        ALL_REFUSED.replace(" DATA with no recipient got 554,", "")
        + "; not tried: DATA with no recipient (the server refused a new connection: 421 "
        "4.7.0 Error: too many connections from 127.0.0.1, RFC 5321 §3.8: a connection "
        "rate limit?)"
    ), result.summary


class RateLimitedRcptBeforeMailServer(RateLimitedServer, RcptBeforeMailServer):
    """The planted RCPT before MAIL, behind a connection-rate limit."""


class RateLimitedLfDotLfServer(RateLimitedServer, LfDotLfServer):
    """The planted LF.LF end of data, behind a connection-rate limit."""


def test_a_rate_limit_keeps_the_smuggling_found_before_it() -> None:
    """LF.LF, the first look-alike, is found on the first connection; the second is
    refused, and the failure stands, naming the look-alikes left untested."""
    with serve(rate_limited(refused_from(2), cls=RateLimitedLfDotLfServer)) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=5)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert "LF.LF (" in result.summary, result.summary
    assert result.summary.endswith(
        "(untested: CR.CR, LF.CRLF, CRLF.LF, CR.CRLF, CRLF.CR, "
        "LF.CR, CRLF NUL.CRLF, CRLF.NUL CRLF, LF NUL.LF, CRLF.SP CRLF, CRLF.TAB CRLF, "
        "CRLF SP.CRLF, as the server refused a new connection: 421 4.7.0 Error: too many "
        "connections from 127.0.0.1, RFC 5321 §3.8: a connection rate limit?)"
    ), result.summary


class MessageLimitedLfDotLfServer(RateLimitedServer, LfDotLfServer):
    """The planted LF.LF end of data, behind a message-rate limit (Postfix's
    ``smtpd_client_message_rate_limit``): a refused session is greeted and answers MAIL
    ``450``."""

    def mail(self, argument: str) -> bytes:
        if self.refused:
            return b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"
        return super().mail(argument)


def test_a_message_rate_limit_keeps_the_smuggling_found_before_it() -> None:
    """LF.LF is found on the first connection; the second's MAIL meets a message-rate
    limit (450), which skips what is left, not the defect found: the check fails."""
    factory = rate_limited(lambda n: n >= 2, at="mail", cls=MessageLimitedLfDotLfServer)
    with serve(factory) as server:
        report = check_server(server.host, server.port, checks=["smuggling"], timeout=5)
    result = report["smuggling"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert "LF.LF (" in result.summary and "was answered 450 4.7.1" in result.summary


def message_rate_limited(allowed: int) -> Callable[..., SmallServer]:
    """A correct server with a message-rate limit per client (Postfix's
    ``smtpd_client_message_rate_limit``): across its sessions, MAIL is taken
    ``allowed`` times, then answered ``450 4.7.1 Error: too much mail``, a temporary
    refusal (RFC 5321 §4.2.1) that says nothing of how the server reads MAIL."""
    taken = itertools.count(1)
    lock = threading.Lock()

    class MessageRateLimited(SmallServer):
        def mail(self, argument: str) -> bytes:
            with lock:
                number = next(taken)
            if number > allowed:
                return b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"
            return super().mail(argument)

    return MessageRateLimited


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("chunking", 1),
        ("size-limit", 1),
        ("ascii-digits", 2),
        ("ascii-digits", 3),
        ("pipelining", 1),
        ("pipelining", 2),
        ("pipelining", 3),
    ],
)
def test_a_message_rate_limit_fails_no_check(name: str, allowed: int) -> None:
    """A ``450`` to MAIL, the setup or the line tested, where a plain MAIL after it
    (chunking: the unsplit session played again) gets a 450 too, is the server
    refusing mail for now: chunking compared it with the unsplit session's 250,
    size-limit wanted 552 for SIZE over the limit, ascii-digits a 5xx, and
    pipelining, its limit met during the check (after 1, 2 or 3 MAILs), compared
    a run whose MAILs were taken with one whose MAILs got 450. The check is
    skipped, saying what went untested."""
    with serve(message_rate_limited(allowed)) as server:
        report = check_server(server.host, server.port, checks=[name], timeout=5)
    result = report[name]
    assert result.outcome is Outcome.SKIPPED, report.format()
    assert "450 4.7.1 Error: too much mail" in result.summary or "got 450" in result.summary
    assert "refuses mail for now" in result.summary, result.summary


class MailRefusingRcptBeforeMailServer(RcptBeforeMailServer):
    """The planted RCPT with no MAIL taken, behind a message-rate limit met already:
    every MAIL gets ``450 4.7.1``."""

    def mail(self, argument: str) -> bytes:
        return b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"


class MailRefusingOutOfOrderServer(OutOfOrderServer):
    """The planted pipelined replies out of order, behind a message-rate limit met
    already: every MAIL gets ``450 4.7.1``."""

    def mail(self, argument: str) -> bytes:
        return b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"


class Mail450OpensTransactionServer(SmallServer):
    """Answers MAIL ``450 4.7.1`` yet opens the transaction: the RCPT after it is taken,
    where one with no transaction open must be refused (RFC 5321 §3.3: 503)."""

    def mail(self, argument: str) -> bytes:
        answer = super().mail(argument)
        return b"450 4.7.1 try later\r\n" if answer.startswith(b"250") else answer


class PipelinedMail450Server(SmallServer):
    """Answers MAIL ``450 4.3.0`` only when it came in one read with other commands: a
    server that cannot take MAIL pipelined (RFC 2920 §3.1), whatever a plain MAIL on
    its own, after RSET, gets."""

    pipelined = False

    def receive(self, data: bytes) -> bytes:
        self.pipelined = data.count(b"\r\n") > 1
        return super().receive(data)

    def mail(self, argument: str) -> bytes:
        if self.pipelined:
            return b"450 4.3.0 pipelined MAIL not handled\r\n"
        return super().mail(argument)


@pytest.mark.parametrize(
    ("factory", "outcome", "said"),
    [
        (
            message_rate_limited(0),
            Outcome.SKIPPED,
            "pipelined, 'MAIL FROM:<check@smtpcore.test>' was answered 450 4.7.1 Error: too "
            "much mail from 127.0.0.1, a plain MAIL after RSET got 450 4.7.1 Error: too much "
            "mail from 127.0.0.1, and a plain MAIL on a new connection got 450",
        ),
        (
            MailRefusingRcptBeforeMailServer,
            Outcome.FAILED,
            "the group got [450, 501, 250, 250, 250, 450, 250, 250, 221] both ways, but its "
            "RCPT after a MAIL answered 450, so with no transaction, got 250, not a refusal "
            "(503 expected, RFC 5321 §3.3), and its RCPT after RSET, with no MAIL, got 250",
        ),
        (
            MailRefusingOutOfOrderServer,
            Outcome.FAILED,
            "replies out of order: pipelined, the group got [250, 250,",
        ),
        (
            Mail450OpensTransactionServer,
            Outcome.FAILED,
            "the group got [450, 501, 250, 250, 503, 450, 250, 250, 221] both ways, but its "
            "RCPT after a MAIL answered 450, so with no transaction, got 250, not a refusal "
            "(503 expected, RFC 5321 §3.3)",
        ),
        (
            PipelinedMail450Server,
            Outcome.FAILED,
            "pipelined, the group got [450, 503, 503, 250, 503, 450, 250, 250, 221]; one at a "
            "time it got [250, 501, 250, 250, 503, 250, 250, 250, 221]",
        ),
    ],
    ids=["correct", "rcpt-before-mail", "out-of-order", "450-opens-transaction", "450-pipelined"],
)
def test_a_group_whose_every_mail_got_450_is_untested_not_passed(
    factory: Callable[..., SmallServer], outcome: Outcome, said: str
) -> None:
    """A message-rate limit met already answers the group's every MAIL 450, so its
    RCPTs get 503 both ways and the codes compare equal, though the group never
    mixed accepted commands with refused ones: the check passed, "one reply per
    command, in order". It is skipped now where a plain MAIL after RSET, and one on
    a new connection, get a 4xx too (:meth:`Probe.mail_refused_for_now`), saying
    why; a defect the group still shows (a RCPT taken with no transaction open,
    replies out of order, a MAIL refused only when pipelined) fails it."""
    with serve(factory) as server:
        report = check_server(server.host, server.port, checks=["pipelining"], timeout=5)
    result = report["pipelining"]
    assert result.outcome is outcome, report.format()
    assert result.summary.startswith(said), result.summary


def swaps_first_two_when_refused(allowed: int) -> Callable[..., SmallServer]:
    """The message-rate limit of :func:`message_rate_limited` on a server with a defect
    it shows only then: a read whose replies include a 450 gets its first two
    replies swapped (RFC 2920 §3.1 wants them in order)."""

    class SwapsFirstTwo(message_rate_limited(allowed)):  # type: ignore[misc]  # a factory's class
        def emit(self, replies: list[bytes]) -> bytes:
            if len(replies) > 1 and any(reply.startswith(b"450") for reply in replies):
                replies = [replies[1], replies[0], *replies[2:]]
            return b"".join(replies)

    return SwapsFirstTwo


@pytest.mark.parametrize(
    ("allowed", "said"),
    [
        (
            0,
            "replies out of order: pipelined, the group got [503, 450, 503, 250, 503, 450, "
            "250, 250, 221]; one at "
            "a time it got [450, 503, 503, 250, 503, 450, 250, 250, 221]",
        ),
        (
            2,
            "pipelined, the group got [503, 450, 503, 250, 503, 450, 250, 250, 221]; one at "
            "a time it got [250, 501, 250, 250, 503, 250, 250, 250, 221]",
        ),
    ],
    ids=["limit-at-mail-1", "limit-at-mail-3"],
)
def test_replies_swapped_behind_a_met_rate_limit_fail(allowed: int, said: str) -> None:
    """Any difference at a MAIL and the RCPTs after it was put down to the rate limit,
    so replies swapped where a MAIL's 450 was due (``503`` first, then ``450``) were
    skipped as the server refusing mail for now. A difference there is explained
    only where one run's MAIL got a 2xx and the other's a 4xx: here one got 450
    and the other 503, and the check fails."""
    with serve(swaps_first_two_when_refused(allowed)) as server:
        report = check_server(server.host, server.port, checks=["pipelining"], timeout=5)
    result = report["pipelining"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary == said, result.summary


class OneMailASessionServer(SmallServer):
    """Takes the first MAIL of a session and answers every later one ``451 4.3.2``: a
    server that refuses mail for the rest of a session once it took a message's MAIL
    (a per-session message limit), though a new connection gets its MAIL taken."""

    mails = 0

    def mail(self, argument: str) -> bytes:
        self.mails += 1
        if self.mails > 1:
            return b"451 4.3.2 one message a session, connect again\r\n"
        return super().mail(argument)


class OneMailASessionSwapsServer(OneMailASessionServer):
    """:class:`OneMailASessionServer` that, in a read of several commands, sends its
    451 before the reply to the command ahead of that MAIL (RFC 2920 §3.1 wants them
    in order): the 503 of the RCPT after RSET comes where the MAIL's 451 was due."""

    def emit(self, replies: list[bytes]) -> bytes:
        for at in range(1, len(replies)):
            if replies[at].startswith(b"451"):
                replies = [*replies[: at - 1], replies[at], replies[at - 1], *replies[at + 1 :]]
                break
        return b"".join(replies)


class FirstMailDeferredServer(SmallServer):
    """Answers the first MAIL of a session ``451 4.7.1`` and takes every later one (a
    greylisting of sorts): the group's first MAIL is refused both ways, and the
    RCPTs of its transaction get 503 both ways, answers to a transaction never
    opened."""

    mails = 0

    def mail(self, argument: str) -> bytes:
        self.mails += 1
        if self.mails == 1:
            return b"451 4.7.1 first MAIL of a session: try again\r\n"
        return super().mail(argument)


class FirstMailDeferredRefusesPipelinedServer(FirstMailDeferredServer):
    """:class:`FirstMailDeferredServer` that also answers ``451`` a MAIL with more
    commands read behind it: it cannot take MAIL pipelined, a defect the group's
    second MAIL shows (250 one at a time, 451 pipelined)."""

    def mail(self, argument: str) -> bytes:
        if self.mails and self.buffer:
            self.mails += 1
            return b"451 4.3.0 slow down, no pipelining\r\n"
        return super().mail(argument)


class FirstMailDeferredSaysHowServer(FirstMailDeferredServer):
    """:class:`FirstMailDeferredServer` whose ``451`` text says whether the MAIL came
    with more commands behind it: the two runs' replies differ in text alone."""

    def mail(self, argument: str) -> bytes:
        answer = super().mail(argument)
        if self.mails == 1 and self.buffer:
            return b"451 4.7.1 first MAIL of a session, pipelined: try again\r\n"
        return answer


@pytest.mark.parametrize(
    ("factory", "outcome", "said"),
    [
        (
            FirstMailDeferredSaysHowServer,
            Outcome.SKIPPED,
            "'MAIL FROM:<check@smtpcore.test>' got \"451 4.7.1 first MAIL of a session: try "
            'again" one at a time and "451 4.7.1 first MAIL of a session, pipelined: try '
            'again" pipelined, though a plain MAIL after RSET got "250 2.1.0 OK": the '
            "server refused that MAIL for now (RFC 5321 §4.2.1) both ways, so the "
            "transaction it opens in the group was never opened, and how the server "
            "answers that transaction pipelined went untested",
        ),
        (
            FirstMailDeferredServer,
            Outcome.SKIPPED,
            "'MAIL FROM:<check@smtpcore.test>' got \"451 4.7.1 first MAIL of a session: try "
            'again" both one at a time and pipelined, though a plain MAIL after RSET got '
            '"250 2.1.0 OK": the server refused that MAIL for now (RFC 5321 §4.2.1) both '
            "ways, so the transaction it opens in the group was never opened, and how the "
            "server answers that transaction pipelined went untested",
        ),
        (
            FirstMailDeferredRefusesPipelinedServer,
            Outcome.FAILED,
            "pipelined, the group got [451, 503, 503, 250, 503, 451, 250, 250, 221]; one at "
            "a time it got [451, 503, 503, 250, 503, 250, 250, 250, 221]",
        ),
        (
            OneMailASessionServer,
            Outcome.PASSED,
            "one reply per command, in order: [250, 501, 250, 250, 503, 451, 250, 250, 221]",
        ),
        (
            OneMailASessionSwapsServer,
            Outcome.FAILED,
            "replies out of order: pipelined, the group got [250, 501, 250, 250, 451, 503, "
            "250, 250, 221]; one at a time it got [250, 501, 250, 250, 503, 451, 250, 250, 221]",
        ),
    ],
    ids=[
        "texts-differ",
        "first-mail-deferred",
        "and-pipelined-mail-refused",
        "mail-then-rset",
        "swapped",
    ],
)
def test_a_group_mail_refused_for_now_both_ways_skips_only_what_went_untested(
    factory: Callable[..., SmallServer], outcome: Outcome, said: str
) -> None:
    """A MAIL of the group refused for now both ways, where a plain MAIL after it was
    taken, passed the check on codes compared equal over a transaction the group
    never opened: it is skipped now, quoting the replies, each run's where their texts
    differ (one run's text was quoted as both runs'). Only there, though: where
    the codes differ elsewhere (the second MAIL taken one at a time, refused
    pipelined) the check fails, as it did before any skip, and where the refused
    MAIL is followed by RSET alone, every reply was compared, and the check passes."""
    with serve(factory) as server:
        report = check_server(server.host, server.port, checks=["pipelining"], timeout=5)
    result = report["pipelining"]
    assert result.outcome is outcome, report.format()
    assert result.summary == said, result.summary


class Size452Server(SmallServer):
    """Answers SIZE over its fixed, offered maximum ``452 4.3.1`` (temporary) where RFC
    1870 §6.1 wants 552; a plain MAIL it takes."""

    def mail(self, argument: str) -> bytes:
        value = argument.upper().partition(" SIZE=")[2].split(" ")[0]
        if value.isascii() and value.isdigit() and int(value) > self.max_size:
            return b"452 4.3.1 Insufficient system storage\r\n"
        return super().mail(argument)


class Digit451Server(SmallServer):
    """Validates SIZE with ``str.isdigit()``, then ``int()`` raises on '²', which a
    generic handler answers ``451 4.3.0`` (an internal error); a plain MAIL it takes."""

    def parse_number(self, text: str) -> int | None:
        return int(text) if text.isdigit() else None

    def mail(self, argument: str) -> bytes:
        try:
            return super().mail(argument)
        except ValueError:
            return b"451 4.3.0 Error: internal error\r\n"


class Split451Server(SmallServer):
    """Breaks on a read that ends mid-line: MAIL after one is answered ``451 4.3.0``."""

    partial = False

    def receive(self, data: bytes) -> bytes:
        if data and not data.endswith(b"\r\n"):
            self.partial = True
        return super().receive(data)

    def mail(self, argument: str) -> bytes:
        if self.partial:
            return b"451 4.3.0 Error: internal error\r\n"
        return super().mail(argument)


class StickySize452Server(Size452Server):
    """Size452Server whose storage check then sticks for the session: every later MAIL
    on that connection gets ``452 4.3.1`` too, a new connection's is taken."""

    full = False

    def mail(self, argument: str) -> bytes:
        answer = b"452 4.3.1 Insufficient system storage\r\n" if self.full else None
        answer = answer or super().mail(argument)
        self.full = answer.startswith(b"452")
        return answer


class StickyDigit451Server(Digit451Server):
    """Digit451Server whose internal error breaks the session: every later MAIL on that
    connection gets ``451 4.3.0`` too, a new connection's is taken."""

    broken = False

    def mail(self, argument: str) -> bytes:
        answer = b"451 4.3.0 Error: internal error\r\n" if self.broken else None
        answer = answer or super().mail(argument)
        self.broken = answer.startswith(b"451")
        return answer


@pytest.mark.parametrize(
    ("name", "kind", "said"),
    [
        ("size-limit", Size452Server, "got 452 4.3.1"),
        ("ascii-digits", Digit451Server, "451 4.3.0 Error: internal error, not a 5xx"),
        ("chunking", Split451Server, "[250, 451,"),
        ("size-limit", StickySize452Server, "got 452 4.3.1"),
        ("ascii-digits", StickyDigit451Server, "451 4.3.0 Error: internal error, not a 5xx"),
    ],
)
def test_a_4xx_to_the_tested_line_alone_fails_the_check(
    name: str, kind: type[SmallServer], said: str
) -> None:
    """A 4xx that a plain MAIL after it (chunking: the unsplit session again) does not
    get answered the tested line: SIZE over the fixed limit with 452, a 451 internal
    error on '²', a 451 to a MAIL read in pieces. A rule skipping every 4xx passed
    them as skips; they fail as they always did. So do the sticky ones, whose 4xx
    holds for the rest of the session: a plain MAIL on a new connection is taken."""
    with serve(kind) as server:
        report = check_server(server.host, server.port, checks=[name], timeout=5)
    result = report[name]
    assert result.outcome is Outcome.FAILED, report.format()
    assert said in result.summary, result.summary


class ConnectionLimitedSplit451Server(RateLimitedServer, Split451Server):
    """The planted 451 to a MAIL read in pieces, behind a connection-rate limit."""


def test_a_split_4xx_stands_where_its_confirming_connection_is_refused() -> None:
    """The first split session gets 451 at MAIL; the connection to play the unsplit
    session again on, the third, is refused (421). Nothing tells the 451 for a rate
    limit, so the split session's replies fail the check, named, as they did before
    the rule, and the refusal with them."""
    factory = rate_limited(refused_from(3), cls=ConnectionLimitedSplit451Server)
    with serve(factory) as server:
        report = check_server(server.host, server.port, checks=["chunking"], timeout=5)
    result = report["chunking"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith("written one byte at a time, the session got [250, 451,")
    assert "not confirmed as the server refusing mail for now" in result.summary
    assert "refused (the server refused a new connection: 421 4.7.0" in result.summary


class NonAsciiDigitMessageLimitedServer(NonAsciiDigitServer):
    """Reads SIZE with ``int()``, and answers MAIL 450 from its fifth on."""

    mails = 0

    def mail(self, argument: str) -> bytes:
        type(self).mails += 1
        if type(self).mails > 4:
            return b"450 4.7.1 Error: too much mail from 127.0.0.1\r\n"
        return super().mail(argument)


def test_a_message_rate_limit_keeps_the_digits_defect_found_before_it() -> None:
    """The Arabic-Indic ten, read as a size, is found before MAIL meets the limit: the
    check still fails with it."""
    with serve(NonAsciiDigitMessageLimitedServer) as server:
        report = check_server(server.host, server.port, checks=["ascii-digits"], timeout=5)
    result = report["ascii-digits"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert "a size was read from its digits" in result.summary, result.summary


class EhloRefusedServer(SmallServer):
    """Refuses EHLO outright (a client it will not serve)."""

    def command(self, line: bytes) -> bytes:
        if line[:4].upper() == b"EHLO":
            self.commands.append(line)
            return b"550 5.7.1 EHLO refused here\r\n"
        return super().command(line)


def test_chunking_names_the_line_refused_in_its_skip() -> None:
    """The unsplit session refused at EHLO was skipped with "check the recipient"."""
    with serve(EhloRefusedServer) as server:
        report = check_server(server.host, server.port, checks=["chunking"], timeout=5)
    result = report["chunking"]
    assert result.outcome is Outcome.SKIPPED, report.format()
    assert "'EHLO check.smtpcore.test' got 550" in result.summary, result.summary
    assert "recipient" not in result.summary, result.summary


def one_session_at_a_time(linger: float = 0.15) -> Callable[..., SmallServer]:
    """A correct server that takes one session per address at a time and frees the
    slot ``linger`` seconds after a session's QUIT: a connection before then is greeted
    ``421 4.7.0 Too many connections`` (``smtpcore serve --max-sessions-per-address
    1``), a limit the battery meets with its own last session."""
    lock = threading.Lock()
    free_at = [0.0]

    class OneSessionAtATime(SmallServer):
        def greeting(self) -> bytes:
            with lock:
                busy = time.monotonic() < free_at[0]
            if busy:
                self.closed = True
                return b"421 4.7.0 localhost Too many connections from your address\r\n"
            return super().greeting()

        def command(self, line: bytes) -> bytes:
            answer = super().command(line)
            if self.closed:
                with lock:
                    free_at[0] = time.monotonic() + linger
            return answer

    return OneSessionAtATime


def test_a_busy_greeting_right_after_the_last_session_is_tried_again() -> None:
    """Each check after the first connects right after the last one's QUIT, and met the
    server still cleaning that session up: skipped ("the server refused a new
    connection: 421 ... Too many connections"), the checker's own doing."""
    checks = ["recipient-limit", "size-limit", "text-line-length", "command-line-length"]
    with serve(one_session_at_a_time()) as server:
        report = check_server(server.host, server.port, checks=checks, timeout=5)
    assert all(result.passed for result in report.results), report.format()


class RateLimitedRcptBeforeMailPipeliningServer(RateLimitedServer, RcptBeforeMailServer):
    """RCPT with no MAIL taken, and every connection after the first refused."""


def test_a_refused_second_connection_keeps_the_pipelining_defect_seen_on_the_first() -> None:
    """The group sent one command at a time already shows its RCPT with no MAIL taken
    (RFC 5321 §3.3); the connection that would send it pipelined is refused: the check
    fails with what it saw, then says why it stopped."""
    factory = rate_limited(lambda n: n >= 2, cls=RateLimitedRcptBeforeMailPipeliningServer)
    with serve(factory) as server:
        report = check_server(server.host, server.port, checks=["pipelining"], timeout=5)
    result = report["pipelining"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith(
        "its RCPT after RSET, with no MAIL, got 250, not a refusal (503 expected, RFC 5321 "
        "§3.3); then the check stopped: the server refused a new connection: 421"
    ), result.summary


def test_a_rate_limit_hides_no_defect_found_on_the_connections_it_took() -> None:
    report = state_order_against(
        rate_limited(refused_from(2), cls=RateLimitedRcptBeforeMailServer)
    )
    result = report["state-order"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith(
        "commands out of sequence were accepted: RCPT before MAIL: "
    ), result.summary
    assert "not tried: DATA before MAIL (the server refused a new connection: 421" in (
        result.summary
    )


@pytest.mark.parametrize(
    ("refuse", "outcome"),
    [(lambda number: number == 1, Outcome.PASSED), (lambda number: True, Outcome.SKIPPED)],
    ids=["first-only", "every"],
)
def test_a_rate_limit_at_the_long_noop_is_told_from_a_short_line_limit(
    refuse: Callable[[int], bool], outcome: Outcome
) -> None:
    """A rate limit that answers a connection's first command 421 meets
    command-line-length's 512-octet NOOP: a new connection's ``NOOP x`` is refused too
    (the check is skipped), or it gets 250 and the NOOP after it 250 (the check goes on
    and passes), never a failure of the line."""
    with serve(rate_limited(refuse, at="ehlo")) as server:
        report = check_server(server.host, server.port, checks=["command-line-length"])
    result = report["command-line-length"]
    assert result.outcome is outcome, report.format()
    if outcome is Outcome.SKIPPED:
        assert result.summary.startswith(f"{_REFUSED_CONNECTION}421 "), result.summary


class SplitLineClosingServer(SmallServer):
    """Ends the session with 421 (RFC 5321 §3.8) where a command line comes in more
    than one read: a server that takes a read for a line, and says so."""

    def receive(self, data: bytes) -> bytes:
        if self.mode == "command" and data and not data.endswith(b"\r\n"):
            self.closed = True
            return b"421 4.4.2 a line came in pieces, closing\r\n"
        return super().receive(data)


@pytest.mark.parametrize(
    ("factory", "outcome"),
    [(SplitLineClosingServer, Outcome.FAILED), (rate_limited(lambda n: n == 2, at="ehlo"), None)],
    ids=["split-ehlo-421", "rate-limit"],
)
def test_a_421_to_a_split_ehlo_is_its_answer_unless_the_connection_is_refused(
    factory: Callable[..., SmallServer], outcome: Outcome | None
) -> None:
    """chunking's sessions open with EHLO split, the line it tests. A 421 to it skipped
    the check as a refused connection, the server's answer to the split unseen. The
    session is played again on a new connection after a whole EHLO: a 421 there is the
    split's answer, and fails the check; a rate limit that answered the split EHLO
    (the second connection) lets the replay pass."""
    with serve(factory) as server:
        report = check_server(server.host, server.port, checks=["chunking"], timeout=5)
    result = report["chunking"]
    if outcome is Outcome.FAILED:
        assert result.outcome is Outcome.FAILED, report.format()
        assert result.summary.startswith("written one byte at a time, the session got [421, "), (
            result.summary
        )
    else:
        assert result.passed, report.format()


@pytest.mark.parametrize(("at", "code"), [("greeting", 421), ("ehlo", 421), ("greeting", 554)])
def test_a_refused_first_connection_skips_the_first_check(at: str, code: int) -> None:
    """A server busy or rate-limited at the run's first connection (a 421 greeting or
    EHLO reply, RFC 5321 §3.8; a 554 greeting, §3.1) cannot be tested there: that
    failed the first check ("the greeting was 421 ... rather than 220"), as if the
    server spoke SMTP wrongly. It is skipped as a later connection's check is."""
    with serve(rate_limited(lambda number: True, at=at, code=code)) as server:
        report = check_server(server.host, server.port, checks=["state-order", "chunking"])
    for result in report.results:
        assert result.outcome is Outcome.SKIPPED, report.format()
        assert result.summary.startswith(f"{_REFUSED_CONNECTION}{code} "), result.summary
        assert "rate limit?" in result.summary


def test_a_554_greeting_skips_a_check_and_waits_for_no_reply_but_quit() -> None:
    """A 554 greeting is a server that will not serve this client (RFC 5321 §3.1): the
    check that opened it is skipped, and QUIT is sent, which such a server waits for."""
    with serve(rate_limited(lambda number: number > 1, code=554)) as server:
        report = check_server(server.host, server.port, checks=["recipient-limit", "chunking"])
        sessions = list(server.sessions)
    first, then = report.results
    assert first.passed, report.format()
    assert then.outcome is Outcome.SKIPPED, report.format()
    assert then.summary.startswith(f"{_REFUSED_CONNECTION}554 5.7.1 No SMTP service"), then.summary
    assert "RFC 5321 §3.1" in then.summary
    assert sessions[1].commands == [b"QUIT\r\n"]


class BareLfEndsLinesServer(SmallServer):
    """Ends a command line at a bare LF, as Postfix does."""

    def next_line(self) -> bytes | None:
        end = self.buffer.find(b"\n")
        if end < 0:
            return None
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line.rstrip(b"\r\n") + b"\r\n"


class SynchronizingServer(BareLfEndsLinesServer):
    """Postfix 3.7 with ``smtpd_forbid_unauth_pipelining = yes``: a bare LF ends a
    command line, and a command that RFC 2920 §3.1 puts last in a group (NOOP,
    EHLO, DATA, ...) with more octets behind it is answered 554 and the session
    closed, a defence against smuggling that does not run the octets behind it."""

    group_enders = (b"EHLO", b"HELO", b"NOOP", b"DATA", b"VRFY", b"EXPN", b"HELP", b"STARTTLS")

    def command(self, line: bytes) -> bytes:
        if line.split(b" ")[0].strip().upper() in self.group_enders and self.buffer:
            self.closed = True
            return b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
        return super().command(line)


class BareLfRefusingServer(SmallServer):
    """Refuses a command line holding a bare LF with 554 and closes at once, before
    any octet behind it is read."""

    def bare_lf_line(self, line: bytes) -> bytes:
        self.closed = True
        return b"554 5.5.2 Bare LF in command, goodbye\r\n"


@pytest.mark.parametrize(
    ("server_class", "summary"),
    [
        (
            SynchronizingServer,
            "NOOP<LF>BDAT, its chunk and QUIT got [554]: the line was refused and the "
            "session closed; RCPT<LF>BDAT, its chunk and QUIT got [250, 250, 221]",
        ),
        (
            BareLfRefusingServer,
            "NOOP<LF>BDAT, its chunk and QUIT got [554]: the line was refused and the "
            "session closed; RCPT<LF>BDAT, its chunk and QUIT got [554]: the line was "
            "refused and the session closed",
        ),
    ],
    ids=["synchronizing", "refuse-and-close"],
)
def test_bdat_bare_lf_passes_a_server_that_runs_no_marker(
    server_class: type[SmallServer], summary: str
) -> None:
    """``NOOP<LF>BDAT`` alone failed Postfix with ``smtpd_forbid_unauth_pipelining``:
    NOOP may only end a group (RFC 2920 §3.1), so it answered 554 and closed, running
    no marker. One refusal, then the close, is the line refused with the chunk never
    run; RCPT, which may stand anywhere in a group, is tried too."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["bdat-bare-lf"], timeout=2)
    result = report["bdat-bare-lf"]
    assert result.outcome is Outcome.PASSED, result
    assert result.summary == summary
    assert not server.crashes


class RcptDroppingServer(SmallServer):
    """Ends lines only at CRLF and takes NOOP with arguments (RFC 5321 §4.1.1.9), so
    ``NOOP<LF>BDAT n LAST`` is one NOOP and the chunk behind it runs as commands;
    but a malformed RCPT gets 501 and the connection dropped (an Exim ``drop`` ACL)."""

    def bare_lf_line(self, line: bytes) -> bytes:
        if line[:4].upper() == b"RCPT":
            self.closed = True
            return b"501 5.1.3 Bad recipient address syntax\r\n"
        return self.command(line.split(b"\n")[0] + b"\r\n")


class EagerBdatDuplicateClosingServer(BareLfEndsLinesServer):
    """Ends lines at a bare LF and answers BDAT before its chunk, which it then reads
    as commands; a second RCPT gets 550 and the connection closed."""

    def rcpt(self, argument: str) -> bytes:
        if self.recipients:
            self.closed = True
            return b"550 5.5.3 One recipient per message\r\n"
        return super().rcpt(argument)

    def bdat(self, argument: str) -> bytes:
        return b"250 2.0.0 Chunk accepted\r\n"


def test_a_chunk_after_a_refused_bdat_that_completes_a_message_fails() -> None:
    """The audit's finding in smtpcore's own server, planted: ``BDAT 41 FIRST`` refused
    with 501 and its chunk skipped, but the transaction left open, so the pipelined
    ``BDAT n LAST`` delivered the message without the refused chunk (RFC 3030 §2)."""
    with serve(HoleBdatServer) as server:
        report = check_server(server.host, server.port, checks=["bdat-refused-chunk"], timeout=5)
    result = report["bdat-refused-chunk"]
    assert result.outcome is Outcome.FAILED, result
    assert re.search(
        r"'BDAT 41 FIRST', BDAT \d+ LAST and QUIT got \[250, 501, 250, 221\]: a chunk "
        r"after the refused BDAT was accepted, so the message was delivered with a hole",
        result.summary,
    ), result.summary
    assert "'BDAT 41 LAST junk'" in result.summary
    assert len(result.summary.split("; ")) == 2  # the two lines refused, one part each
    # What was delivered: the first and last chunks, the refused one missing.
    holed = [message for message in server.messages if b"NOOP smtpcore" not in message]
    assert len(holed) == 2
    assert all(b"Subject: smtpcore bdat-refused-chunk check\r\n" in m for m in holed)
    ending = (
        b"this copy has a hole.\r\nChunk 3 of 3: do not deliver what follows a refused chunk.\r\n"
    )
    assert all(message.endswith(ending) for message in holed)


def test_a_server_that_fails_the_transaction_at_a_refused_bdat_passes() -> None:
    """The correct server refuses ``BDAT 41 FIRST`` and ``BDAT 41 LAST junk`` (501),
    skips their chunks and answers the last BDAT 503; ``BDAT 41  LAST`` it reads as
    ``BDAT 41 LAST`` (two spaces, one separator), and the check reports that without
    failing: no chunk was refused, so no message has a hole. It takes the chunk over
    SIZE and refuses the message at its end (552)."""
    with serve(SmallServer) as server:
        report = check_server(server.host, server.port, checks=["bdat-refused-chunk"], timeout=5)
    result = report["bdat-refused-chunk"]
    assert result.passed, result
    parts = result.summary.split("; ")
    assert len(parts) == 4
    assert re.search(
        r"'BDAT 41 LAST junk', BDAT \d+ LAST and QUIT got \[250, 501, 503, 221\]: "
        r"refused, and the last chunk with it$",
        parts[0],
    )
    assert parts[1].endswith(
        "got [250, 250, 503, 221]: the line was taken as a chunk that ended the message, "
        "so a message of chunks 1-2 was probably delivered while the client got 503 for "
        "its real last chunk"
    )
    assert parts[2].endswith("got [250, 501, 503, 221]: refused, and the last chunk with it")
    assert "'BDAT 10001' (over SIZE)" in parts[3]
    assert parts[3].endswith(
        "got [250, 250, 552, 221]: the line was taken as a chunk, and the message refused "
        "at its end (552)"
    )
    assert not any(b"Chunk 3 of 3" in message for message in server.messages)


@pytest.mark.parametrize("server_class", [SilentHoleServer, DroppedReplyServer])
def test_a_bdat_left_unanswered_after_a_refusal_fails(server_class: type[SmallServer]) -> None:
    """``[250, 501, 221]``: QUIT answered, so the server read past the last BDAT and
    dropped its reply; that is no close cut short, and it can hide a message delivered
    with a hole (:class:`SilentHoleServer` delivers one, RFC 3030 §2)."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["bdat-refused-chunk"], timeout=5)
    result = report["bdat-refused-chunk"]
    assert result.outcome is Outcome.FAILED, result
    assert re.search(
        r"'BDAT 41 LAST junk', BDAT \d+ LAST and QUIT got \[250, 501, 221\]: the last BDAT "
        r"went unanswered",
        result.summary,
    ), result.summary


class CommandsAfterRefusalServer(SmallServer):
    """Refuses a malformed BDAT line without skipping its chunk: the chunk's lines run
    as commands, and the ``BDAT n LAST`` after them, out of sequence, ends the session
    (421)."""

    def refuse_chunk(self, reply: bytes) -> bytes:
        self.fail_transaction()
        self.mode = "command"
        return reply

    def bdat(self, argument: str) -> bytes:
        if not self.in_transaction:
            self.closed = True
            return b"421 4.7.0 Too many errors\r\n"
        return super().bdat(argument)


def test_a_refused_chunk_read_as_commands_is_said_so() -> None:
    """``[250, 501, 250, 421]``: the 250 after the refusal answers the chunk's NOOP
    marker, not a last chunk; the close where QUIT's 221 was due shows it."""
    with serve(CommandsAfterRefusalServer) as server:
        report = check_server(server.host, server.port, checks=["bdat-refused-chunk"], timeout=5)
    result = report["bdat-refused-chunk"]
    assert result.outcome is Outcome.FAILED, result
    assert "got [250, 501, 250, 421]: the refused chunk's octets were read as commands" in (
        result.summary
    ), result.summary
    assert "hole" not in result.summary
    assert not any(b"Chunk 3 of 3" in message for message in server.messages)


def test_lines_left_untested_by_a_later_refusal_are_named() -> None:
    """A later connection's recipient refused: what the earlier ones found stands, and
    the summary names the lines that went untested instead of passing quietly."""
    connections = itertools.count()

    class SecondRcptRefused(SmallServer):
        def rcpt(self, argument: str) -> bytes:
            if next(connections) == 1:
                return b"550 5.1.1 No such user\r\n"
            return super().rcpt(argument)

    with serve(SecondRcptRefused) as server:
        report = check_server(server.host, server.port, checks=["bdat-refused-chunk"], timeout=5)
    result = report["bdat-refused-chunk"]
    assert result.passed, result
    first, untested = result.summary.split("; ")
    assert "'BDAT 41 LAST junk'" in first
    assert untested.startswith("(later lines untested: 'BDAT 41  LAST', 'BDAT 41 FIRST', ")
    assert "was answered 550 5.1.1 No such user" in untested and untested.endswith(")")


class OverSizeClosingServer(SmallServer):
    """Refuses a BDAT whose chunk is over SIZE at its line (552) and closes without
    reading the chunk; its limit is large, so the client's write of the chunk fails
    after the replies are sent."""

    max_size = 40_000_000

    def bdat(self, argument: str) -> bytes:
        words = argument.split()
        size = self.parse_number(words[0]) if words else None
        if size is not None and size > self.max_size:
            self.closed = True
            return b"552 5.3.4 Message too big, closing\r\n"
        return super().bdat(argument)


def test_replies_sent_before_a_failed_write_are_read() -> None:
    """The server answered and closed while the over-SIZE chunk was still being
    written: the write fails, and the replies already in are read all the same."""
    with serve(OverSizeClosingServer) as server:
        report = check_server(
            server.host,
            server.port,
            checks=["bdat-refused-chunk"],
            timeout=5,
            max_size_probe=64 << 20,
        )
    result = report["bdat-refused-chunk"]
    assert any(e.note.startswith("write failed") for e in result.transcript), result
    assert result.passed, result
    assert result.summary.split("; ")[3].endswith(
        "(over SIZE), BDAT 60 LAST and QUIT got [250, 552]: refused, then the session closed"
    )


def test_bdat_refused_chunk_needs_pipelining() -> None:
    """Unpipelined, a client waits for each BDAT's reply and stops at a refusal (RFC
    3030 §2): there is nothing to test."""

    class Unpipelined(SmallServer):
        def command(self, line: bytes) -> bytes:
            answer = super().command(line)
            return answer.replace(b"250-PIPELINING\r\n", b"")

    with serve(Unpipelined) as server:
        report = check_server(server.host, server.port, checks=["bdat-refused-chunk"], timeout=5)
    result = report["bdat-refused-chunk"]
    assert result.outcome is Outcome.SKIPPED and result.summary == "PIPELINING is not offered"


@pytest.mark.parametrize(
    ("server_class", "summary"),
    [
        (
            RcptDroppingServer,
            "NOOP<LF>BDAT, its chunk and QUIT got [250, 250, 250, 250, 221]: the marker "
            "lines in the chunk were answered as commands",
        ),
        (
            EagerBdatDuplicateClosingServer,
            "NOOP<LF>BDAT, its chunk and QUIT got [250, 250, 250, 250, 250, 221]: the "
            "marker lines in the chunk were answered as commands",
        ),
    ],
    ids=["crlf-rcpt-drop", "lf-duplicate-rcpt-close"],
)
def test_bdat_bare_lf_refused_after_rcpt_does_not_hide_markers_run_after_noop(
    server_class: type[SmallServer], summary: str
) -> None:
    """With ``RCPT<LF>BDAT`` alone, one refusal of the RCPT then the close passed,
    though BDAT was never reached: behind ``NOOP<LF>BDAT`` these servers run the
    chunk's markers as commands. Each line is tried on a connection of its own."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["bdat-bare-lf"], timeout=2)
    result = report["bdat-bare-lf"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary.startswith(summary), result.summary
    assert len(server.sessions) == 2


class LongLineClosingServer(SmallServer):
    """Answers a command line over its limit 421 and closes (RFC 5321 §3.8)."""

    def next_line(self) -> bytes | None:
        line = super().next_line()
        if (line is None and self.discarding) or line == b"":
            self.closed = True
            return b"421"
        return line

    def command(self, line: bytes) -> bytes:
        if line == b"421":
            return b"421 4.5.0 Line too long, closing\r\n"
        return super().command(line)


class LongLineSilentlyClosingServer(LongLineClosingServer):
    """Closes at a command line over its limit with no reply at all (smtp-sink does):
    neither RFC 5321 §4.5.3.1.9's 500 nor §3.8's 421 before the close."""

    def command(self, line: bytes) -> bytes:
        if line == b"421":
            return b""
        return super().command(line)


class LongLine500ClosingServer(LongLineClosingServer):
    """Answers a command line over its limit 500 (RFC 5321 §4.5.3.1.9), then closes
    with no 421 (§3.8), the NOOP after it unanswered."""

    def command(self, line: bytes) -> bytes:
        if line == b"421":
            return b"500 5.5.2 Line too long\r\n"
        return super().command(line)


class LongLineTailClosingServer(LongLineTailServer):
    """Cuts an over-long line at the limit, answers its head 421, yet reads on and
    answers the rest as commands of their own."""

    def command(self, line: bytes) -> bytes:
        if line.startswith(b"NOOP x") and len(line) > self.max_line:
            self.commands.append(line)
            return b"421 4.5.0 Line too long, closing\r\n"
        return super().command(line)


@pytest.mark.parametrize(
    ("server_class", "outcome", "summary"),
    [
        (LongLineClosingServer, Outcome.PASSED, "the 10,000-octet line got 421, then the close"),
        (
            LongLineTailClosingServer,
            Outcome.FAILED,
            "the long line got [421, 500, 500,",
        ),
        (
            LongLineSilentlyClosingServer,
            Outcome.FAILED,
            "the server closed the connection at the 10,000-octet line without a reply",
        ),
        (
            LongLine500ClosingServer,
            Outcome.FAILED,
            "the long line got 500, then the server closed the connection without a reply "
            "to the NOOP after it (a server that ends the session sends 421 first: RFC 5321 "
            "§3.8)",
        ),
    ],
    ids=["421", "cut-then-421", "silent-close", "500-then-close"],
)
def test_a_long_command_line_may_end_the_session_with_421(
    server_class: type[SmallServer], outcome: Outcome, summary: str
) -> None:
    """A 421 and the close (RFC 5321 §3.8) failed: the check wanted 250 or 500 and
    replies to the NOOP and QUIT after it. More than one reply to the long line is
    still the sign of a line cut and run as commands. A 500 and then a close with no
    421 fails, said as such, where it was "a long line, NOOP and QUIT got [500], not
    one reply each"."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["command-line-length"], timeout=1)
    result = report["command-line-length"]
    assert result.outcome is outcome, result
    assert result.summary.startswith(summary), result.summary


class ShortTextLineServer(SmallServer):
    """Refuses, 500, a message holding a line over 996 octets: a limit that counts
    the CRLF twice, where RFC 5321 §4.5.3.1.6 has every server take 998 and the CRLF."""

    def end_of_message(self, content: bytes) -> bytes:
        if any(len(line) > 996 for line in content.split(b"\r\n")):
            self.reset()
            return b"500 5.6.0 Line too long\r\n"
        return super().end_of_message(content)


class ShortCommandLineServer(SmallServer):
    """Takes command lines of 510 octets, CRLF included, where RFC 5321 §4.5.3.1.4
    has every server take 512."""

    max_line = 510


class ShortCommandLineClosingServer(ShortCommandLineServer):
    """Takes command lines of 510 octets and ends the session at a longer one with 421
    (RFC 5321 §3.8), as a server may past its limit: but 512 is no limit to choose."""

    def command(self, line: bytes) -> bytes:
        if not line:
            self.closed = True
            return b"421 4.7.0 line too long, closing\r\n"
        return super().command(line)


class ShortCommandLineSilentlyClosingServer(ShortCommandLineServer):
    """Takes command lines of 510 octets and closes at a longer one with no reply."""

    def command(self, line: bytes) -> bytes:
        if not line:
            self.closed = True
            return b""
        return super().command(line)


class LenientLineServer(SmallServer):
    """Takes lines of any length, commands and text, and large messages."""

    max_line = 100_000
    max_size = 1_000_000


LENIENT_TEXT: Final = "the message of long lines got 250"
LENIENT_COMMAND: Final = "the 10,000-octet line got 250"


@pytest.mark.parametrize(
    ("server_class", "name", "outcome", "summary"),
    [
        (
            ShortTextLineServer,
            "text-line-length",
            Outcome.FAILED,
            "a message whose longest line is 998 octets and the CRLF got 500",
        ),
        (
            ShortCommandLineServer,
            "command-line-length",
            Outcome.FAILED,
            "a 512-octet command line (NOOP, CRLF included) got 500",
        ),
        (
            ShortCommandLineClosingServer,
            "command-line-length",
            Outcome.FAILED,
            "a 512-octet command line (NOOP, CRLF included) got 421 4.7.0 line too long, "
            "closing, not 250, where NOOP x got 250",
        ),
        (
            ShortCommandLineSilentlyClosingServer,
            "command-line-length",
            Outcome.FAILED,
            "the server closed the connection instead of answering a 512-octet command line "
            "(NOOP padded, CRLF included): every server MUST take",
        ),
        (SmallServer, "text-line-length", Outcome.PASSED, "the message of long lines got 552"),
        (SmallServer, "command-line-length", Outcome.PASSED, "the 10,000-octet line got 500"),
        (LenientLineServer, "text-line-length", Outcome.PASSED, LENIENT_TEXT),
        (LenientLineServer, "command-line-length", Outcome.PASSED, LENIENT_COMMAND),
    ],
    ids=[
        "text-998",
        "command-512",
        "command-512-421",
        "command-512-close",
        "text",
        "command",
        "lenient-text",
        "lenient-command",
    ],
)
def test_the_line_length_checks_want_the_smallest_limit_taken(
    server_class: type[SmallServer], name: str, outcome: Outcome, summary: str
) -> None:
    """A server that refused a legal 998-octet text line, or a 512-octet command line,
    passed, as the over-long lines may be refused: RFC 5321 §4.5.3.1 has every server
    take lines of at least those sizes, so the checks send one of each first. One that
    answers the 512-octet line 421 and closes was skipped, the 421 taken for a refused
    connection ("a connection rate limit?"), though it answered a line on a connection
    accepted: a new one where ``NOOP x`` gets 250 and the line 421 again tells. One
    that closes at the 512-octet line with no reply has it said in words, not quoted
    whole."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=[name], timeout=2)
    result = report[name]
    assert result.outcome is outcome, result
    assert result.summary.startswith(summary), result.summary
    if outcome is Outcome.FAILED:
        assert "RFC 5321 §4.5.3.1" in result.summary


class NoopArgumentRefusingServer(SmallServer):
    """Answers NOOP with an argument 501, as CPython's smtpd does: RFC 5321 §4.1.1.9
    says only that a server SHOULD ignore it."""

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"NOOP ") and len(line) <= self.max_line:
            self.commands.append(line)
            return b"501 Syntax: NOOP\r\n"
        return super().command(line)


class NoopArgumentRefusingShortLineServer(NoopArgumentRefusingServer):
    """Refuses NOOP's argument and takes command lines of 510 octets: a long HELO
    is refused too, so nothing shows whether it takes 512."""

    max_line = 510


class FromRequiringServer(SmallServer):
    """Refuses a message with no From: field, as many content policies do."""

    def end_of_message(self, content: bytes) -> bytes:
        if b"\r\nfrom:" not in b"\r\n" + content.lower():
            self.reset()
            return b"550 5.7.1 Message missing a From header\r\n"
        return super().end_of_message(content)


class StuffingDotCountingServer(SmallServer):
    """Refuses a message with a line over 998 octets as it came on the wire, the
    dot doubled for transparency included, which RFC 5321 §4.5.3.1.6 leaves out."""

    def read_content(self) -> bytes | None:
        found = self.find_end_of_data()
        if found is not None and any(
            len(line) > 998 for line in bytes(self.buffer[: found[0]]).split(b"\r\n")
        ):
            del self.buffer[: found[0] + found[1]]
            self.mode = "command"
            self.reset()
            return b"500 5.6.0 Line too long\r\n"
        return super().read_content()


@pytest.mark.parametrize(
    ("server_class", "name", "outcome", "summary", "note"),
    [
        (
            NoopArgumentRefusingServer,
            "command-line-length",
            Outcome.PASSED,
            "the 10,000-octet line got 500",
            "",
        ),
        (
            NoopArgumentRefusingShortLineServer,
            "command-line-length",
            Outcome.PASSED,
            "the 10,000-octet line got 500",
            "-- not judged: NOOP with an argument is refused",
        ),
        (FromRequiringServer, "text-line-length", Outcome.PASSED, "the message of long lines", ""),
        (
            ErrorLimitServer,
            "text-line-length",
            Outcome.PASSED,
            "the message of long lines got 554",
            "-- not judged: the recipient takes no mail",
        ),
        (
            StuffingDotCountingServer,
            "text-line-length",
            Outcome.FAILED,
            "a message whose longest line is 998 octets and the CRLF got 500",
            "",
        ),
    ],
    ids=["noop-argument", "noop-argument-510", "from-policy", "refuses-all", "stuffing-dot"],
)
def test_the_line_length_minimums_fail_only_a_refusal_of_the_line(
    server_class: type[SmallServer], name: str, outcome: Outcome, summary: str, note: str
) -> None:
    """The minimums failed a server that refused the probe for another reason: NOOP's
    argument (CPython's smtpd answers 501, RFC 5321 §4.1.1.9 only says SHOULD ignore
    it), a message with no From:, or every message. A control on the same connection
    (``NOOP x``, a message of short lines) now tells a refusal of the length from
    one of something else; a long HELO stands in for NOOP. A dot doubled for
    transparency is not counted (§4.5.3.1.6), so the 998-octet line starts with one."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=[name], timeout=2)
    result = report[name]
    assert result.outcome is outcome, result
    assert result.summary.startswith(summary), result.summary
    assert note in result.transcript_text()


def test_checks_skip_what_the_server_does_not_offer() -> None:
    with serve(SmallServer) as server:  # no TLS context: no STARTTLS
        report = check_server(server.host, server.port, checks=["starttls-injection"])
    assert report["starttls-injection"].outcome is Outcome.SKIPPED
    assert report.ok


class StartTlsCrashServer(SmallServer):
    """Offers STARTTLS, and the session dies on it (a crash in its TLS setup)."""

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"STARTTLS"):
            raise RuntimeError("planted: crash in STARTTLS")
        return super().command(line)


class InjectionClosingServer(SmallServer):
    """Closes without a reply when a command comes pipelined behind STARTTLS."""

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"STARTTLS") and self.buffer:
            self.closed = True
            return b""
        return super().command(line)


class StartTlsSilentServer(SmallServer):
    """Offers STARTTLS, and reads and answers nothing from it on (a hung session)."""

    hung = False

    def step(self) -> bytes | None:
        return None if self.hung else super().step()

    def command(self, line: bytes) -> bytes:
        if line.upper().startswith(b"STARTTLS"):
            self.hung = True
            return b""
        return super().command(line)


class ClosingOverTlsServer(SmallServer):
    """Completes the TLS handshake after STARTTLS, then closes with no reply."""

    def tls_started(self) -> None:
        super().tls_started()
        self.closed = True


def test_a_close_after_the_handshake_is_said_as_such(tls: TLSFiles) -> None:
    """A server that closes once TLS is up, NOOP unanswered, failed with "over TLS,
    NOOP and QUIT got []: the command pipelined in plaintext behind STARTTLS was
    run", which nothing showed; it fails now saying what happened."""
    with serve(ClosingOverTlsServer, tls=tls.server_context) as server:
        report = check_server(server.host, server.port, checks=["starttls-injection"], timeout=1)
    result = report["starttls-injection"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        "over TLS, the server closed the connection instead of answering NOOP, the first "
        "command after the handshake"
    ), result.summary


class SizeClosingServer(SmallServer):
    """Closes with no reply at a SIZE over its offered limit (RFC 1870 §6.1 wants
    552)."""

    def check_size(self, value: str) -> bytes | None:
        answer = super().check_size(value)
        if answer is not None and answer.startswith(b"552"):
            self.closed = True
            return b""
        return answer


class BigMessageClosingServer(SmallServer):
    """Reads a message over its offered SIZE to the end, then closes with no reply
    (RFC 1870 §6.3 wants 552)."""

    def end_of_message(self, content: bytes) -> bytes:
        answer = super().end_of_message(content)
        if answer.startswith(b"552"):
            self.closed = True
            return b""
        return answer


@pytest.mark.parametrize(
    ("server_class", "summary"),
    [
        (
            SizeClosingServer,
            "the server closed the connection instead of answering MAIL with SIZE=10001 "
            "over the offered 10000 (552 expected, RFC 1870 §6.1)",
        ),
        (
            BigMessageClosingServer,
            "the server closed the connection instead of answering a message over 10000 "
            "octets (552 expected, RFC 1870 §6.3)",
        ),
    ],
    ids=["size-parameter", "message"],
)
def test_a_close_where_size_limit_wants_552_is_said_as_such(
    server_class: type[SmallServer], summary: str
) -> None:
    """They failed with "MAIL with SIZE=10001 over the offered 10000 got None", and "a
    message over 10000 octets got None, then QUIT got []"."""
    with serve(server_class) as server:
        report = check_server(server.host, server.port, checks=["size-limit"], timeout=1)
    result = report["size-limit"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == summary, result.summary


@pytest.mark.parametrize(
    ("server_class", "summary"),
    [
        (
            StartTlsCrashServer,
            "the server offers STARTTLS but closed the connection instead of answering it "
            "(alone, on a new connection, it closed the connection)",
        ),
        (
            InjectionClosingServer,
            "STARTTLS with a command pipelined behind it: the server closed the connection "
            "instead of answering it (alone it got 220 2.0.0 Ready to start TLS)",
        ),
        (
            StartTlsSilentServer,
            "the server offers STARTTLS but sent no whole reply within 0.3 s instead of "
            "answering it (alone, on a new connection, it sent no whole reply within 0.3 s)",
        ),
    ],
    ids=["crash", "closed-on-injection", "silent"],
)
def test_a_starttls_offered_and_left_unanswered_fails(
    server_class: type[SmallServer], summary: str, tls: TLSFiles
) -> None:
    """A server that offers STARTTLS and then closes the connection (or says nothing)
    instead of answering it fails, with the detail of a STARTTLS sent alone on a new
    connection; before, the check was skipped as if STARTTLS had been refused."""
    with serve(server_class, tls=tls.server_context) as server:
        report = check_server(server.host, server.port, checks=["starttls-injection"], timeout=0.3)
    result = report["starttls-injection"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary.startswith(summary), result.summary
    assert "-- connection 2" in result.transcript_text()


def test_an_unknown_check_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no check named"):
        check_server("127.0.0.1", 1, checks=["nope"])


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"host": "a..b"}, ValueError, "'a..b' is no host name or address"),
        ({"host": f"mx.{'x' * 64}.example"}, ValueError, "is no host name or address"),
        ({"host": ""}, ValueError, "'' is no host name or address"),
        ({"port": 93567}, ValueError, "port must be an int from 1 to 65535, not 93567"),
        ({"port": 0}, ValueError, "port must be"),
        ({"timeout": 0}, ValueError, "timeout must be a positive number of seconds, not 0"),
        ({"timeout": -1}, ValueError, "timeout must be"),
        ({"timeout": float("nan")}, ValueError, "timeout must be"),
        ({"timeout": float("inf")}, ValueError, "timeout must be"),
        ({"pause": -0.5}, ValueError, "pause must be"),
        ({"checks": "smuggling"}, TypeError, "not the str 'smuggling': write \\['smuggling'\\]"),
    ],
)
def test_arguments_that_would_test_something_else_are_refused(
    options: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {"host": "127.0.0.1", "port": 1, **options}
    host, port = arguments.pop("host"), arguments.pop("port")
    # Nothing listens on the port: a check that ran would fail, not raise (a host
    # the IDNA codec refuses raised UnicodeError from the first connection).
    with pytest.raises(error, match=message):
        check_server(host, port, **arguments)  # type: ignore[arg-type]  # on purpose


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"recipient": "\udcff@smtpcore.test"}, "recipient .* lone surrogate U\\+DCFF"),
        ({"recipient": "sink@smtpcore.test>\r\nRSET"}, "recipient .* CR"),
        ({"recipient": "no-at-sign"}, "recipient .* missing '@'"),
        ({"sender": "a\x00b@smtpcore.test"}, "sender .* NUL"),
        ({"sender": "x@y\nDATA"}, "sender .* LF"),
        ({"sender": "postmaster"}, "sender .* missing '@'"),
        ({"recipient": "postmaster@"}, "recipient .*"),
        ({"helo": "check.test\r\nNOOP"}, "helo .* forbidden character"),
        ({"helo": "\udcff.test"}, "helo .* forbidden character"),
        ({"helo": ""}, "helo .* may not be empty"),
    ],
)
def test_what_the_checks_say_is_checked_before_anything_connects(
    options: dict[str, str], message: str
) -> None:
    """A surrogate (what a shell's ``$'\\xff'`` becomes) ended in a UnicodeEncodeError
    mid-run, and CR or LF went onto the wire as commands of their own (then
    ``pipelining`` compared runs of injected commands). Nothing listens on port 1."""
    with pytest.raises(ValueError, match=message):
        check_server("127.0.0.1", 1, **options)  # type: ignore[arg-type]  # str values
    with pytest.raises(ValueError, match=message):
        Probe("127.0.0.1", 1, **options)  # type: ignore[arg-type]  # str values


def test_the_null_sender_may_be_given() -> None:
    assert Probe("127.0.0.1", 1, sender="").mail_line() == b"MAIL FROM:<>"


@pytest.mark.parametrize("recipient", ["postmaster", "Postmaster", "POSTMASTER"])
def test_the_recipient_may_be_postmaster_without_a_domain(recipient: str) -> None:
    """RFC 5321 §4.1.1.3 takes ``RCPT TO:<Postmaster>`` with no domain, a sink every
    server has; it was refused as "missing '@'"."""
    assert Probe("127.0.0.1", 1, recipient=recipient).rcpt_line() == (
        f"RCPT TO:<{recipient}>".encode()
    )
    with serve(SmallServer) as server:
        report = check_server(
            server.host, server.port, checks=["bdat-octets"], recipient=recipient, timeout=2
        )
    result = report["bdat-octets"]
    assert result.passed, result
    assert f"C: b'RCPT TO:<{recipient}>\\r\\n'" in result.transcript_text()


def test_cli_takes_postmaster_for_the_recipient(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(SmallServer) as server:
        address = f"{server.host}:{server.port}"
        status = main(["check", address, "--recipient", "Postmaster", "--only", "bdat-octets"])
    assert status == 0, capsys.readouterr()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--recipient", "\udcff@smtpcore.test", "lone surrogate U+DCFF"),
        ("--sender", "a@b\r\nRSET", "CR"),
        ("--helo", "a b", "forbidden character"),
    ],
)
def test_cli_refuses_what_cannot_go_on_the_wire(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", "127.0.0.1:1", option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- servers that never stop talking --------------------------------------------------------


def trickle(sock: socket.socket, stop: threading.Event) -> None:
    """A greeting one octet every 50 ms: never silent for long, never done (for 3 s)."""
    for octet in b"220 " + b"x" * 60 + b"\r\n":
        if stop.wait(0.05):
            return
        sock.sendall(bytes([octet]))


def test_the_timeout_bounds_a_reply_however_slowly_it_trickles() -> None:
    with raw_server(trickle) as (host, port):
        started = time.monotonic()
        report = check_server(host, port, checks=["chunking"], timeout=0.3)
        elapsed = time.monotonic() - started
    result = report["chunking"]
    assert result.outcome is Outcome.FAILED
    assert "no whole reply came within 0.3 s" in result.summary
    assert "-- no whole reply within 0.3 s" in result.transcript_text()
    assert elapsed < 1.5


def drip_after_quit(sock: socket.socket, stop: threading.Event) -> None:
    """250 to each line, 221 to QUIT, then a reply every 50 ms, never closing (for 3 s)."""
    sock.sendall(b"220 drip ESMTP\r\n")
    for line in sock.makefile("rb"):
        if line.startswith(b"QUIT"):
            break
        sock.sendall(b"250 ok\r\n")
    sock.sendall(b"221 bye\r\n")
    for _ in range(60):
        if stop.wait(0.05):
            return
        sock.sendall(b"250 ok\r\n")


def open_after_half_close(sock: socket.socket, stop: threading.Event) -> None:
    """CHUNKING offered, 250 to each line; after BDAT, reads to the client's close and
    then stays open (for 3 s), as a server that ignores the end of input does."""
    sock.sendall(b"220 half-open ESMTP\r\n")
    reader = sock.makefile("rb")
    for line in reader:
        if line.startswith(b"BDAT"):
            break
        sock.sendall(
            b"250-half-open\r\n250 CHUNKING\r\n" if line[:4] == b"EHLO" else b"250 ok\r\n"
        )
    reader.read()
    stop.wait(3)


def flood_after_greeting(sock: socket.socket, stop: threading.Event) -> None:
    """Once the client speaks, 20,000 replies nobody asked for (then silence: closing
    with the client's bytes unread would reset the connection, losing replies)."""
    sock.sendall(b"220 flood ESMTP\r\n")
    sock.recv(65536)
    sock.sendall(b"250 ok\r\n" * 20_000)
    stop.wait()


def test_reading_until_the_server_closes_is_bounded_too() -> None:
    # A reply after QUIT every 50 ms: never silent for the timeout, never closed.
    with raw_server(drip_after_quit) as (host, port):
        started = time.monotonic()
        report = check_server(host, port, checks=["command-line-length"], timeout=0.3)
        elapsed = time.monotonic() - started
    result = report["command-line-length"]
    assert result.outcome is Outcome.FAILED
    assert "-- the server did not close within 0.3 s" in result.transcript_text()
    assert elapsed < 1.5


def test_a_server_still_open_after_the_clients_close_fails_bdat_octets() -> None:
    """bdat-octets ends its session by closing the client's side, not with QUIT: a server
    that stayed open passed at the timeout, on the replies that had come by then."""
    with raw_server(open_after_half_close) as (host, port):
        started = time.monotonic()
        report = check_server(host, port, checks=["bdat-octets"], timeout=0.3)
        elapsed = time.monotonic() - started
    result = report["bdat-octets"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        "BDAT 20 LAST with 5 of its octets got no reply: the server did not close the "
        "connection within 0.3 s of the client closing its side, so a reply may yet come"
    )
    assert "-- the server did not close within 0.3 s" in result.transcript_text()
    assert elapsed < 1.5


def test_a_flood_of_replies_is_a_clear_failure_not_a_heap() -> None:
    with raw_server(flood_after_greeting) as (host, port):
        report = check_server(host, port, checks=["command-line-length"], timeout=2)
    result = report["command-line-length"]
    assert result.outcome is Outcome.FAILED
    summary = "the server sent more than owed: over 10000 replies on one connection"
    assert result.summary == summary
    assert "-- stopped reading: over 10000 replies" in result.transcript_text()


def test_what_one_connection_keeps_from_the_server_is_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wire, "MAX_RECEIVED", 64 * 1024)

    def wordy(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(b"220 wordy ESMTP\r\n")
        sock.recv(65536)
        sock.sendall((b"250 " + b"x" * 1000 + b"\r\n") * 100)
        stop.wait()

    with raw_server(wordy) as (host, port):
        report = check_server(host, port, checks=["command-line-length"], timeout=2)
    result = report["command-line-length"]
    assert result.summary == "the server sent more than owed: over 65536 octets on one connection"
    received = sum(len(entry.data) for entry in result.transcript if entry.side == "server")
    assert received <= 64 * 1024  # the read that crossed the cap is not kept


# -- the command line ---------------------------------------------------------------------


HOSTILE_TEXT: Final = (
    "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[31mfake: 12 passed, 0 failed\x1b[0m"
    "\x9b31m \u202eevil\u202c \u2028next line\u2029 \x7f\x00"
)
"""Text a hostile server puts in its replies: OSC (set the title), BEL, CSI (clear the
screen, colour), the 8-bit CSI, a bidi override, the line and paragraph separators,
DEL and NUL."""


def greeting_server(greeting: bytes) -> Callable[[socket.socket, threading.Event], None]:
    """A :func:`raw_server` session that greets with ``greeting`` and reads until the
    client goes."""

    def session(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(greeting)
        while not stop.is_set() and sock.recv(4096):  # bounded: ends when the client goes
            pass

    return session


def assert_terminal_safe(printed: str) -> None:
    """No character of ``printed`` drives a terminal or splits a line, but its newlines."""
    for line in printed.split("\n"):
        unsafe = [char for char in line if unsafe_in_text(char)]
        assert not unsafe, (unsafe, line)


def test_a_close_before_the_greeting_is_said_as_such() -> None:
    """A server that takes the connection and closes it at once (smtp-sink's ``-q
    connect``) fails the check with that said, not "the greeting was None"."""

    def session(sock: socket.socket, stop: threading.Event) -> None:
        del sock, stop  # closed on return, before any greeting

    with raw_server(session, socket_timeout=5) as (host, port):
        report = check_server(host, port, checks=["pipelining"], timeout=5)
    result = report["pipelining"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary == "the server closed the connection without a greeting (220 expected)"


def test_a_hostile_greeting_reaches_the_report_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A summary quotes the server's reply: its controls come out as escapes, never raw,
    however the report is printed (the transcripts show bytes literals already)."""
    greeting = b"554 " + HOSTILE_TEXT.encode() + b"\r\n"
    with raw_server(greeting_server(greeting), socket_timeout=5) as (host, port):
        report = check_server(host, port, checks=["chunking", "pipelining"], timeout=5)
        status = main(["check", f"{host}:{port}", "--only", "smuggling"])
    assert status == NOTHING_TESTED  # a 554 greeting refuses service: the check is skipped
    printed = capsys.readouterr().out
    for text in (report.format(), str(report["chunking"]), report["pipelining"].summary, printed):
        assert_terminal_safe(text)
    assert f"{_REFUSED_CONNECTION}554 \\x1b]0;PWNED-TITLE\\x07\\x1b[2J" in printed
    assert "\\u202eevil\\u202c \\u2028next line\\u2029 \\x7f\\x00, RFC 5321 §3.1" in printed
    assert str(_wire.ServerReply(554, greeting)) == report["chunking"].summary.removeprefix(
        _REFUSED_CONNECTION
    ).removesuffix(", RFC 5321 §3.1 (no service for this client): a connection rate limit?")


def test_every_summary_is_escaped_whoever_made_it() -> None:
    """The escaping is the result's own: a check that quotes the server without
    ``ServerReply`` (a keyword, a decoded line) cannot print a control either."""
    result = CheckResult("x", Outcome.FAILED, f"the server said {HOSTILE_TEXT}")
    assert_terminal_safe(str(result))
    assert result.summary.startswith("the server said \\x1b]0;PWNED")


def test_a_run_whose_every_check_was_skipped_is_no_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that refuses every connection (421 at the greeting) skips every check:
    the report has no failure, but it tested nothing, and the exit status says so
    (4), as pytest's "no tests ran" is no success."""
    with raw_server(greeting_server(b"421 4.7.0 busy\r\n"), socket_timeout=5) as (host, port):
        report = check_server(host, port, checks=["chunking", "pipelining"], timeout=5)
        status = main(["check", f"{host}:{port}", "--only", "smuggling", "--only", "chunking"])
    assert report.ok and not report.tested
    assert status == NOTHING_TESTED
    captured = capsys.readouterr()
    assert "0 passed, 0 failed, 2 skipped" in captured.out
    assert "nothing was tested: every check was skipped" in captured.err


def test_cli_exits_non_zero_and_prints_the_failure(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(OutOfOrderServer) as server:
        status = main(["check", f"{server.host}:{server.port}", "--only", "pipelining"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED  pipelining: replies out of order: pipelined, the group got" in out
    assert "C: b'MAIL FROM:<check@smtpcore.test>\\r\\nRCPT TO:<no-closing-bracket" in out
    assert "0 passed, 1 failed, 0 skipped" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["127.0.0.1:93567"], "'127.0.0.1:93567': the port must be 1 to 65535"),
        (["127.0.0.1:0"], "the port must be 1 to 65535"),
        (["::1:25"], "write an IPv6 address with a port in brackets, as [::1]:25"),
        (["a..b:25"], "'a..b' is no host name or address"),
        ([f"mx.{'x' * 64}.example:25"], "is no host name or address"),
        (["[]:25"], "'' is no host name or address"),
        (["127.0.0.1:25", "--timeout", "-1"], "'-1' is not a positive number of seconds"),
        (["127.0.0.1:25", "--timeout", "0"], "'0' is not a positive number of seconds"),
        (["127.0.0.1:25", "--timeout", "nan"], "'nan' is not a positive number of seconds"),
        (["127.0.0.1:25", "--timeout", "soon"], "'soon' is not a positive number of seconds"),
    ],
)
def test_cli_refuses_a_host_port_or_timeout_out_of_range(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["check", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def refused_port() -> int:
    """A loopback port nothing listens on (one no other test is handed)."""
    return free_port("127.0.0.1")


def test_a_server_that_cannot_be_reached_is_no_failed_check() -> None:
    """Eleven "FAILED ... connection error" lines and the status of a server with a
    bug, where the run never reached a server at all."""
    port = refused_port()
    with pytest.raises(ServerUnreachable, match=f"could not connect to 127.0.0.1:{port}: "):
        check_server("127.0.0.1", port, timeout=2)


@pytest.mark.parametrize("where", ["refused", "unresolvable"])
def test_cli_says_once_that_it_could_not_connect(
    where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"127.0.0.1:{refused_port()}" if where == "refused" else "no-such.invalid:25"
    status = main(["check", address, "--timeout", "2"])
    captured = capsys.readouterr()
    assert status == 3
    assert captured.out == ""
    assert captured.err.startswith(f"could not connect to {address}: ")
    assert len(captured.err.splitlines()) == 1


def test_cli_help_lists_the_checks_and_the_exit_statuses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = re.sub(r"-\s+", "-", " ".join(capsys.readouterr().out.split()))  # wrapped at a hyphen
    for name in CHECKS:
        assert name in text
    assert "exit status" in text and "3" in text


def test_cli_runs_as_a_module_and_exits_zero_on_a_good_server() -> None:
    with serve(SmallServer) as server:
        done = subprocess.run(
            [sys.executable, "-m", "smtpcore.testing", "check", f"{server.host}:{server.port}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(CHECKS) - 1} passed, 0 failed, 1 skipped" in done.stdout


STDLIB_ONLY = """
import runpy, sys

class StdlibOnly:  # refuses every import from outside the standard library and smtpcore
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top != "smtpcore" and top not in sys.stdlib_module_names:
            raise ImportError(f"blocked: {name} is not in the standard library")
        return None

sys.meta_path.insert(0, StdlibOnly())
"""


@pytest.mark.parametrize(
    "program",
    [
        "import smtpcore.testing.check, smtpcore.testing.fuzz; print('imported')",
        "sys.argv = ['smtpcore.testing', 'check', '--help']\n"
        "runpy.run_module('smtpcore.testing', run_name='__main__')",
        "sys.argv = ['smtpcore.testing', 'fuzz', 'pop3-client', '--runs', '20', '--crash-dir', "
        "sys.argv[1]]\nrunpy.run_module('smtpcore.testing', run_name='__main__')",
    ],
    ids=["import", "check --help", "fuzz (auto: atheris refused, so pure)"],
)
def test_the_check_the_fuzzer_and_the_cli_need_the_standard_library_alone(
    program: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STDLIB_ONLY + program, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "blocked" not in done.stderr
    assert done.stdout.strip()


def test_the_pairs_are_still_importable_from_the_package() -> None:
    import smtpcore.testing as testing
    from smtpcore.testing import Answered, ConnectionPair, POP3ConnectionPair

    assert ConnectionPair.__module__ == "smtpcore.testing._pair"
    assert {"Answered", "ConnectionPair", "POP3ConnectionPair"} <= set(dir(testing))
    assert [getattr(testing, name) for name in ("Answered", "POP3ConnectionPair")] == [
        Answered,
        POP3ConnectionPair,
    ]
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        testing.NoSuchThing  # noqa: B018  # the attribute access is the test


# -- real servers ---------------------------------------------------------------------------


class Sink(Handler):
    """Takes every recipient and message."""

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")


def test_smtpcore_asyncio_server_passes_every_check(tls: TLSFiles) -> None:
    report = check_handler(
        Sink(),
        server_options={"ssl_context": tls.server_context, "max_message_size": 100_000},
        timeout=10,
    )
    assert report.ok, report.format()
    assert all(result.passed for result in report.results), report.format()
    assert report.target.startswith("handler Sink at 127.0.0.1:")


def test_an_lmtp_server_stops_the_run_saying_what_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An LMTP server refuses EHLO (500, RFC 2033 §4.1) and takes LHLO: every check
    that said EHLO failed with "EHLO was answered 500", and the run reported eleven
    failures in a server doing what LMTP must. The first check that says EHLO now
    stops the run: it and the rest are skipped, the report says what the server is,
    and the exit status is "nothing tested", whatever ran before (``--only`` put the
    command-line-length check, which sends no EHLO, first)."""
    only = ["command-line-length", "chunking", "smuggling", "pipelining"]
    with serving(Sink(), lmtp=True) as (host, port):
        report = check_server(host, port, checks=only, timeout=5)
        argv = ["check", f"{host}:{port}", "--no-transcripts"]
        status = main([*argv, *itertools.chain.from_iterable(("--only", n) for n in only)])
    assert report.ok and not report.tested, report.format()
    assert report.stopped.startswith("this is an LMTP server: EHLO was answered 500 ")
    assert [r.outcome for r in report.results[1:]] == [Outcome.SKIPPED] * 3
    assert report["chunking"].summary == report["chunking"].stopped == report.stopped
    assert report["smuggling"].summary == f"not run: {report.stopped}"
    chunking = report["chunking"].transcript_text()
    assert "C: b'LHLO check.smtpcore.test\\r\\n'" in chunking
    assert "C: b'QUIT\\r\\n'" in chunking  # the LMTP session was ended as it should be
    assert status == NOTHING_TESTED
    captured = capsys.readouterr()
    assert f"stopped: {report.stopped}" in captured.out
    assert f"nothing was tested: {report.stopped}" in captured.err


def test_an_lmtp_server_is_found_by_a_check_that_says_ehlo_itself() -> None:
    """``pipelining`` begins with :meth:`Probe.hello`, ``chunking`` with an EHLO of its
    own: either finds the LMTP server."""
    with serving(Sink(), lmtp=True) as (host, port):
        report = check_server(host, port, checks=["pipelining", "chunking"], timeout=5)
    assert report.stopped and [r.outcome for r in report.results] == [Outcome.SKIPPED] * 2


def test_an_smtp_server_refusing_ehlo_and_lhlo_fails_as_before() -> None:
    """LHLO is asked only to tell what refused EHLO; an SMTP server that refuses both
    (as it should LHLO) still fails the check on its EHLO."""

    def session(sock: socket.socket, stop: threading.Event) -> None:
        file = sock.makefile("rb")
        sock.sendall(b"220 mx.example ESMTP\r\n")
        while line := file.readline():
            if line.upper().startswith(b"QUIT"):
                sock.sendall(b"221 bye\r\n")
                return
            sock.sendall(b"502 5.5.1 no\r\n")

    with raw_server(session, socket_timeout=5) as (host, port):
        report = check_server(host, port, checks=["pipelining"], timeout=5)
    assert not report.stopped
    assert report["pipelining"].outcome is Outcome.FAILED
    assert report["pipelining"].summary == "EHLO was answered 502 5.5.1 no"


def refusing_ehlo(
    lhlo: bytes | None, other: bytes
) -> Callable[[socket.socket, threading.Event], None]:
    """A session that refuses EHLO (550), answers LHLO with ``lhlo`` (None: never,
    until the test ends), QUIT with 221, and any other command with ``other``."""

    def session(sock: socket.socket, stop: threading.Event) -> None:
        file = sock.makefile("rb")
        sock.sendall(b"220 mx.example ESMTP\r\n")
        while line := file.readline():
            verb = line[:4].upper()
            if verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return
            if verb == b"LHLO":
                if lhlo is None:
                    stop.wait()
                    return
                sock.sendall(lhlo + b"\r\n")
                continue
            sock.sendall(b"550 5.7.1 EHLO refused\r\n" if verb == b"EHLO" else other + b"\r\n")

    return session


def test_a_server_stalling_on_lhlo_fails_on_its_refused_ehlo() -> None:
    """A server that refuses EHLO and never answers LHLO failed every check on a
    timeout (the whole of it, for each check), the refused EHLO unsaid. LHLO
    unanswered within a short wait is now noted, and the refused EHLO is judged
    as before; the session it stalled ends there."""
    with raw_server(refusing_ehlo(None, b"502 5.5.1 no"), socket_timeout=30) as (host, port):
        report = check_server(host, port, checks=["pipelining", "chunking"], timeout=30)
    assert not report.stopped
    assert report["pipelining"].outcome is Outcome.FAILED
    assert report["pipelining"].summary == "EHLO was answered 550 5.7.1 EHLO refused"
    for result in report.results:
        assert "-- LHLO unanswered (no whole reply came within 1 s" in result.transcript_text()
    assert report["chunking"].outcome is Outcome.SKIPPED
    assert report["chunking"].summary == (
        "the unsplit session was refused: 'EHLO check.smtpcore.test' got 550 (codes [550])"
    )


def test_a_server_taking_any_command_is_no_lmtp_server() -> None:
    """A server that refuses EHLO and answers 250 to anything, LHLO included, was
    taken for an LMTP server. A verb no server knows is now asked after LHLO, and
    taken, the refused EHLO is judged as before."""
    with raw_server(refusing_ehlo(b"250 ok", b"250 ok"), socket_timeout=5) as (host, port):
        report = check_server(host, port, checks=["pipelining"], timeout=5)
    assert not report.stopped and not report["pipelining"].stopped
    assert report["pipelining"].outcome is Outcome.FAILED
    assert report["pipelining"].summary == "EHLO was answered 550 5.7.1 EHLO refused"
    assert "C: b'XNOSUCHVERB\\r\\n'" in report["pipelining"].transcript_text()


def test_an_lmtp_server_after_a_failed_check_exits_nothing_tested(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The page says a run stopped at an LMTP server exits 4 whatever a check before
    it found; a failed check before it gave 1."""

    def lmtp(sock: socket.socket, stop: threading.Event) -> None:
        file = sock.makefile("rb")
        sock.sendall(b"220 lmtp.example LMTP\r\n")
        while line := file.readline(20000):
            verb = line[:4].upper()
            if verb == b"QUIT":
                sock.sendall(b"221 bye\r\n")
                return
            refused = verb in (b"EHLO", b"XNOS") or len(line) > 1000
            sock.sendall(b"501 5.5.2 no\r\n" if refused else b"250 ok\r\n")

    only = ["command-line-length", "chunking"]
    with raw_server(lmtp, socket_timeout=5) as (host, port):
        report = check_server(host, port, checks=only, timeout=5)
        argv = ["check", f"{host}:{port}", "--no-transcripts", "--timeout", "5"]
        status = main([*argv, *itertools.chain.from_iterable(("--only", n) for n in only)])
    assert report["command-line-length"].outcome is Outcome.FAILED, report.format()
    assert report.stopped and not report.tested
    assert status == NOTHING_TESTED
    assert f"nothing was tested: {report.stopped}" in capsys.readouterr().err


class NoSuchUser(Handler):
    """Refuses every recipient; after max_errors (20) refusals the server says 421 and closes."""

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(550, "No such user")


def test_a_refused_recipient_skips_the_recipient_limit_check() -> None:
    # RFC 5321 §3.8: ending the session after too many errors is correct, and
    # a refused recipient says nothing of the limit (docs/testing-check.rst).
    report = check_handler(NoSuchUser(), checks=["recipient-limit"], timeout=5)
    result = report["recipient-limit"]
    assert result.outcome is Outcome.SKIPPED, result
    assert result.summary.startswith("the recipient was refused (550")


@pytest.fixture
def aiosmtpd_server(tls: TLSFiles) -> Iterator[int]:
    from aiosmtpd.controller import Controller

    class Accept:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    controller = Controller(
        Accept(),
        hostname="127.0.0.1",
        port=free_port(),
        data_size_limit=100_000,
        tls_context=tls.server_context,
    )
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.mark.interop
def test_what_the_checks_find_in_aiosmtpd(aiosmtpd_server: int) -> None:
    report = check_server("127.0.0.1", aiosmtpd_server, timeout=10)
    outcomes = {result.name: result.outcome for result in report.results}
    # aiosmtpd offers neither PIPELINING nor CHUNKING.
    assert outcomes.pop("pipelining") is Outcome.SKIPPED
    assert outcomes.pop("pipelined-end") is Outcome.SKIPPED
    assert outcomes.pop("bdat-octets") is Outcome.SKIPPED
    assert outcomes.pop("bdat-bare-lf") is Outcome.SKIPPED
    assert outcomes.pop("bdat-refused-chunk") is Outcome.SKIPPED
    # It takes SIZE= in Arabic-Indic digits as a size: int() reads them.
    assert outcomes.pop("ascii-digits") is Outcome.FAILED
    assert "SIZE=\u0661\u0660' was answered 250" in report["ascii-digits"].summary
    assert set(outcomes.values()) == {Outcome.PASSED}, report.format()


@pytest.mark.interop
@pytest.mark.parametrize("forbid_bare_newline", [False, True], ids=["default", "forbid"])
def test_what_the_checks_find_in_postfix(tls: TLSFiles, forbid_bare_newline: bool) -> None:
    main_cf = {
        "smtpd_tls_cert_file": str(tls.cert_file),
        "smtpd_tls_key_file": str(tls.key_file),
        "smtpd_tls_security_level": "may",
    }
    if forbid_bare_newline:
        # The exclusions default to $mynetworks, which holds loopback.
        main_cf |= {
            "smtpd_forbid_bare_newline": "yes",
            "smtpd_forbid_bare_newline_exclusions": "",
        }
    with private_postfix(main_cf=main_cf) as postfix:
        report = check_server(postfix.host, postfix.port, timeout=10)
        log = postfix.log()
    if not forbid_bare_newline:
        # Postfix before 3.9 reads a bare LF as a line end, also in DATA.
        assert [result.name for result in report.failures] == ["smuggling"], report.format()
        summary = report["smuggling"].summary
        assert "LF.LF" in summary and "LF.CRLF" in summary and "CRLF.LF" in summary
        assert "CR.CR" not in summary and "NUL" not in summary
    else:
        assert report.ok, report.format() + "\n" + log
    assert all(result.outcome is not Outcome.SKIPPED for result in report.results)
    # A malformed BDAT line gets 521 and the close; two spaces are one separator to
    # Postfix, so BDAT 41  LAST ends and delivers the message and the last BDAT gets 503; a chunk
    # over SIZE gets 552 and the last BDAT 551. No hole in any message.
    chunks = report["bdat-refused-chunk"].summary.split("; ")
    assert [re.sub(r"^.*? got ", "", part) for part in chunks] == [
        "[250, 521]: refused, then the session closed",
        "[250, 250, 503, 221]: the line was taken as a chunk that ended the message, so a "
        "message of chunks 1-2 was probably delivered while the client got 503 for its "
        "real last chunk",
        "[250, 521]: refused, then the session closed",
        "[250, 552, 551, 221]: refused, and the last chunk with it",
    ], report.format()


def python_blocks(page: Path) -> list[str]:
    """The ``.. code-block:: python`` blocks of a reStructuredText page, dedented."""
    import textwrap

    blocks, lines = [], page.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() == ".. code-block:: python":
            body = []
            for following in lines[index + 2 :]:
                if following and not following.startswith(" "):
                    break
                body.append(following)
            blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


def test_an_ipv6_server_is_named_in_brackets() -> None:
    """The report and its transcript named ``::1:2525``; as the CLI takes it, the
    address goes in brackets: ``[::1]:2525``."""
    port = ipv6_loopback_port()  # nothing listens there
    with pytest.raises(ServerUnreachable, match=re.escape(f"connect to [::1]:{port}: ")):
        check_server("::1", port, checks=["chunking"], timeout=5)  # refused
    with serve(SmallServer, host="::1") as server:
        report = check_server("::1", server.port, checks=["chunking"], timeout=5)
    assert report.format().startswith(f"smtpcore check of [::1]:{server.port}\n")
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("::1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = _wire.WireClient("::1", port, timeout=5)
        client.sock.close()
    assert _wire.format_transcript(client.transcript) == f"-- connect to [::1]:{port}"


def test_the_docs_page_console_example_counts_every_check() -> None:
    """The example run's totals are one per check: it said 10 after a check was added."""
    page = (Path(__file__).parent.parent / "docs" / "testing-check.rst").read_text()
    page = page.partition("Checking any POP3 server")[0]  # its example counts POP3_CHECKS
    totals = re.findall(r"^   (\d+) passed, (\d+) failed, (\d+) skipped$", page, re.MULTILINE)
    assert totals
    for counts in totals:
        assert sum(map(int, counts)) == len(CHECKS), counts


def test_the_docs_page_python_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = Path(__file__).parent.parent / "docs" / "testing-check.rst"
    blocks = [block for block in python_blocks(page) if "check_pop3" not in block]
    assert blocks  # the POP3 example runs in test_testing_check_pop3.py, against a server
    for block in blocks:
        exec(compile(block, str(page), "exec"), {"__name__": "docs"})
    out = capsys.readouterr().out
    assert "PASSED  chunking" in out and "smuggling" in out


@pytest.mark.parametrize("name", ["CheckReport", "CheckResult", "Outcome", "ServerUnreachable"])
def test_the_battery_names_live_where_they_are_imported_from(name: str) -> None:
    """Shared with the POP3 battery, they keep the module users import them from."""
    from smtpcore.testing import check

    assert getattr(check, name).__module__ == "smtpcore.testing.check"


def test_what_the_checks_say_is_refused_before_the_port() -> None:
    """The order of main's argument errors: the host, then helo, sender and recipient."""
    with pytest.raises(ValueError, match="helo"):
        check_server("127.0.0.1", 0, helo="a\r\nb")


def _records_then(ending: Callable[[], str]) -> Callable[[Probe], str]:
    def check(probe: Probe) -> str:
        probe.problems.append("X got 250, not 5xx")
        return ending()

    return check


def _refused() -> str:
    raise _battery.refused_connection("421 busy", "RFC 5321 §3.8")


def _failed() -> str:
    raise _battery.Failed("Y got 250 too")


@pytest.mark.parametrize(
    ("ending", "summary"),
    [
        (
            _refused,
            "X got 250, not 5xx; then the check stopped: the server refused a new "
            "connection: 421 busy, RFC 5321 §3.8",
        ),
        (_failed, "X got 250, not 5xx; Y got 250 too"),
        (lambda: "all fine", "X got 250, not 5xx"),
    ],
    ids=["refused", "failed", "returned"],
)
def test_a_problem_recorded_fails_the_check_however_it_ends(
    ending: Callable[[], str], summary: str
) -> None:
    """The runner, not each check, keeps a defect a check recorded and went on past:
    a refused connection after it, another failure, or a summary returned as if all
    passed, and the check fails with it."""
    result = _battery.run_one("x", _records_then(ending), Probe("127.0.0.1", 1))
    assert result.outcome is Outcome.FAILED
    assert result.summary == summary


def test_check_handler_compares_a_collecting_handlers_messages() -> None:
    """A handler that keeps its messages shows them to ``pipelined-end``."""
    report = check_handler(CollectingHandler(), checks=["pipelined-end"], timeout=5)
    assert report["pipelined-end"].summary.endswith(SEEN_WHOLE), report.format()
