"""The POP3 check battery: it passes good servers, fails each planted defect, loses no mail.

Good servers: smtpcore's own (asyncio adapter, with STLS), Dovecot's (a real
peer; a missing program skips on a developer's machine and fails under CI),
and the small hand-written one of ``broken_pop3_servers``. Each check then
meets the small server's twin with one defect a real server has had, and
fails it; the mailbox is whole after every run.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import broken_pop3_servers
from broken_pop3_servers import (
    PASSWORD,
    USER,
    AddsFinalLineEnd,
    AlertsOnInjectedPlaintext,
    AnswersBehindStlsInPlaintext,
    ClosesAfterBadCommands,
    CutsLongLines,
    DeletesRetrieved,
    DiesAtWrappedNumber,
    FirstCommandOfRead,
    FloodsRetr,
    IntNumbers,
    KeepsPlaintextAfterStls,
    ListIgnoresMarks,
    MailBeforeLogin,
    Mailbox,
    NoStuffing,
    NoStuffingInTopBody,
    OneLoginThenInUse,
    RsetForgetsNothing,
    ServesDeleted,
    SessionUidl,
    SmallPOP3,
    StallsMidRetr,
    StallsOnInjectedPlaintext,
    TricklesRetr,
    UidIsNumber,
    UidlServesDeleted,
    UnknownUsersRefused,
    multi,
    serve_pop3,
    serve_pop3_busy_from,
    serve_pop3_one_session_at_a_time,
)
from broken_servers import raw_server
from peers import (
    TLSFiles,
    dovecot_pop3,
    free_port,
    hand_to_dovecot,
    maildir_contents,
    running_pop3_server,
    write_maildir,
)
from smtpcore.maildrop import MaildirStore
from smtpcore.testing import _hiding, _wire
from smtpcore.testing import strategies as sst
from smtpcore.testing.__main__ import NOTHING_TESTED, main
from smtpcore.testing._battery import Failed
from smtpcore.testing._hiding import credential_forms
from smtpcore.testing._pop3_probe import (
    LoginRefused,
    POP3Probe,
    POP3Response,
    parse_listing,
)
from smtpcore.testing._pop3_stream_checks import _framing_problem
from smtpcore.testing._pop3_wire import NOT_KEPT
from smtpcore.testing._wire import Exchange
from smtpcore.testing.check import CheckResult, Outcome
from smtpcore.testing.check_pop3 import POP3_CHECKS, ServerUnreachable, check_pop3_server
from test_check import HOSTILE_TEXT, assert_terminal_safe, greeting_server, python_blocks

MESSAGES = [
    b"Subject: dots\r\nFrom: <a@abc.example>\r\n\r\n.\r\n..\r\n.x\r\n"
    + b"y" * 998
    + b"\r\n.end\r\n",
    b"Subject: two\r\n\r\nsecond\r\n",
]
TIMEOUT = 3.0


def by_digest(messages: list[bytes]) -> list[bytes]:
    """``messages`` in the order ``maildir_contents`` gives a Maildir's."""
    return sorted(messages, key=lambda message: hashlib.sha256(message).digest())


def run_check(
    kind: type[SmallPOP3],
    name: str,
    *,
    messages: list[bytes] = MESSAGES,
    timeout: float = TIMEOUT,
    tls: TLSFiles | None = None,
) -> CheckResult:
    """``name``'s result on a ``kind`` server; the mailbox must be whole after it."""
    mailbox = Mailbox(list(messages))
    context = tls.server_context if tls else None
    with serve_pop3(kind, mailbox, tls=context) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=timeout, checks=[name]
        )
    assert mailbox.messages == messages, f"{name} lost mail on {kind.__name__}"
    return report[name]


ALL_PASS = {**dict.fromkeys(POP3_CHECKS, Outcome.PASSED), "delivered-intact": Outcome.SKIPPED}
"""A good server's outcomes; delivered-intact is skipped without deliver_via (its runs are
in test_testing_check_pop3_delivery)."""


def run_battery(address: tuple[str, int]) -> dict[str, Outcome]:
    host, port = address
    report = check_pop3_server(host, port, user=USER, password=PASSWORD, timeout=TIMEOUT)
    return {result.name: result.outcome for result in report.results}


# -- good servers ------------------------------------------------------------------------


def test_the_battery_passes_the_small_server_and_keeps_every_message(tls: TLSFiles) -> None:
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(SmallPOP3, mailbox, tls=tls.server_context) as address:
        outcomes = run_battery(address)
    assert outcomes == ALL_PASS
    assert mailbox.messages == MESSAGES


def test_the_battery_passes_smtpcores_own_server(tmp_path: Path, tls: TLSFiles) -> None:
    write_maildir(tmp_path / USER, MESSAGES)
    store = MaildirStore(tmp_path, {USER: PASSWORD})
    with running_pop3_server("asyncio", store, ssl_context=tls.server_context) as server:
        outcomes = run_battery(("127.0.0.1", server.port))
    assert outcomes == ALL_PASS
    assert maildir_contents(tmp_path / USER) == by_digest(MESSAGES)


@pytest.mark.interop
def test_the_battery_passes_dovecot(tls: TLSFiles) -> None:
    with tempfile.TemporaryDirectory(prefix="smtpcore-dovecot-") as directory:
        os.chmod(directory, 0o755)  # Dovecot's unprivileged processes read in it
        with dovecot_pop3(Path(directory), {USER: PASSWORD}, tls=tls) as dovecot:
            write_maildir(dovecot.maildir(USER), MESSAGES)
            hand_to_dovecot(dovecot, dovecot.maildir(USER))
            outcomes = run_battery(("127.0.0.1", dovecot.port))
            left = maildir_contents(dovecot.maildir(USER))
    assert outcomes == ALL_PASS
    assert left == by_digest(MESSAGES)


# -- each check fails its defect -----------------------------------------------------------

DEFECTS = {
    "number-edges": IntNumbers,
    "stls-injection": KeepsPlaintextAfterStls,
    "command-line-length": CutsLongLines,
    "dot-stuffing": NoStuffing,
    "deletion": ServesDeleted,
    "uidl": SessionUidl,
    "pipelining": FirstCommandOfRead,
    "state-order": MailBeforeLogin,
}


def test_every_check_has_a_planted_defect() -> None:
    """delivered-intact's (NoStuffing, delivered to over SMTP) is in the delivery tests."""
    assert set(DEFECTS) | {"delivered-intact"} == set(POP3_CHECKS)


@pytest.mark.parametrize("name", list(DEFECTS))
def test_each_check_fails_its_defect_and_loses_no_mail(name: str, tls: TLSFiles) -> None:
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(DEFECTS[name], mailbox, tls=tls.server_context) as address:
        host, port = address
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=TIMEOUT, checks=[name]
        )
    result = report[name]
    assert result.outcome is Outcome.FAILED, result
    assert result.transcript  # the bytes that show it
    assert mailbox.messages == MESSAGES


def test_deletion_fails_a_server_whose_uidl_answers_for_a_deleted_message() -> None:
    """RETR, LIST, TOP and DELE of the marked message were tried, and UIDL not: a
    server that gave its unique-id after DELE passed (RFC 1939 §7 wants -ERR)."""
    result = run_check(UidlServesDeleted, "deletion")
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == "UIDL 1 after DELE got '+OK 1 uid-1', not -ERR", result.summary


def test_an_int_reading_server_that_deletes_plus_one_still_loses_nothing(tls: TLSFiles) -> None:
    """``DELE +1`` marks message 1 on a server that reads numbers with int(): the
    session is closed after RSET and without QUIT, so the mark never lands."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(IntNumbers, mailbox) as address:
        outcomes = run_battery(address)
    assert outcomes["number-edges"] is Outcome.FAILED
    assert mailbox.messages == MESSAGES


def test_an_empty_mailbox_skips_the_checks_that_need_a_message() -> None:
    with serve_pop3(SmallPOP3, Mailbox([])) as address:
        host, port = address
        report = check_pop3_server(host, port, user=USER, password=PASSWORD, timeout=TIMEOUT)
    for name in ("number-edges", "dot-stuffing", "deletion", "uidl", "pipelining"):
        assert report[name].outcome is Outcome.SKIPPED
        assert "put one message in the mailbox" in report[name].summary


def test_wrong_credentials_skip_rather_than_fail() -> None:
    with serve_pop3(SmallPOP3, Mailbox(list(MESSAGES))) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password="wrong", timeout=TIMEOUT, checks=["deletion"]
        )
    assert report["deletion"].outcome is Outcome.SKIPPED
    assert "give a user and password" in report["deletion"].summary


def test_no_server_is_unreachable_and_bad_arguments_are_refused() -> None:
    with pytest.raises(ServerUnreachable):
        check_pop3_server("127.0.0.1", free_port(), user=USER, password=PASSWORD, timeout=1)
    with pytest.raises(ValueError, match="user"):
        check_pop3_server("127.0.0.1", 110, user="a\r\nDELE 1", password=PASSWORD)
    with pytest.raises(ValueError, match="no check named"):
        check_pop3_server("127.0.0.1", 110, user=USER, password=PASSWORD, checks=["nope"])


def test_a_hostile_greeting_reaches_the_report_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As in the SMTP battery, what the server sent shows in a summary with its
    controls escaped, never raw (the one escaping of every result's summary)."""
    greeting = b"-ERR " + HOSTILE_TEXT.encode() + b"\r\n"
    with raw_server(greeting_server(greeting), socket_timeout=5) as (host, port):
        report = check_pop3_server(host, port, user=USER, password=PASSWORD, timeout=TIMEOUT)
        argv = ["check-pop3", f"{host}:{port}", "--user", USER, "--only", "uidl"]
        status = main([*argv, "--password", PASSWORD])
    assert status == NOTHING_TESTED  # a -ERR greeting refuses service: the check is skipped
    printed = capsys.readouterr().out
    assert "SKIPPED uidl: the server refused a new connection: '-ERR \\x1b]0;PWNED" in printed
    for text in (report.format(), printed, *(result.summary for result in report.results)):
        assert_terminal_safe(text)


def test_a_close_before_the_greeting_is_said_as_such() -> None:
    """A server that takes the connection and closes it at once failed every check
    with "the greeting was None rather than +OK": it now says what happened, as the
    SMTP battery does."""

    def session(sock: socket.socket, stop: threading.Event) -> None:
        del sock, stop  # closed on return, before any greeting

    with raw_server(session, socket_timeout=5) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=TIMEOUT, checks=["uidl"]
        )
    result = report["uidl"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary == (
        "the server closed the connection without a greeting (+OK expected, RFC 1939 §4)"
    )


@pytest.mark.parametrize("first_refused", [1, 2])
def test_a_busy_greeting_skips_the_check_it_refuses(first_refused: int) -> None:
    """A server at its connection limit greets ``-ERR`` (RFC 1939 §4 has a session
    start with ``+OK``; RFC 2449 §8.1.2's ``[SYS/TEMP]``): that failed the check ("the
    greeting was -ERR ... rather than +OK"), on the run's first connection or any
    later one, as if the server spoke POP3 wrongly. It cannot be tested there, so the
    check is skipped, as the SMTP battery skips one refused by a 421 greeting."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3_busy_from(first_refused, mailbox) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=TIMEOUT, checks=["uidl"]
        )
    result = report["uidl"]
    assert result.outcome is Outcome.SKIPPED, report.format()
    assert result.summary.startswith(
        "the server refused a new connection: '-ERR [SYS/TEMP] too many connections"
    ), result.summary
    assert "RFC 1939 §4" in result.summary
    assert mailbox.messages == MESSAGES


@pytest.mark.parametrize(
    ("kind", "name", "first_refused", "found"),
    [
        (ServesDeleted, "deletion", 2, "RETR 1 after DELE got '+OK"),
        (ListIgnoresMarks, "deletion", 2, "LIST after DELE still lists message 1"),
        (CutsLongLines, "command-line-length", 4, "before login, a 10,000-octet line"),
        (MailBeforeLogin, "state-order", 2, "STAT before login got '+OK"),
    ],
)
def test_a_busy_greeting_hides_no_defect_found_before_it(
    kind: type[SmallPOP3], name: str, first_refused: int, found: str
) -> None:
    """A defect found on a check's first connections, then a ``-ERR`` greeting on a
    later one: the check fails with the defect, naming the refusal that stopped it.
    deletion and command-line-length kept their problems in lists of their own, which
    the skip dropped; state-order lost those of a batch of lines cut short by it."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3_busy_from(first_refused, mailbox, kind) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=TIMEOUT, checks=[name]
        )
    result = report[name]
    assert result.outcome is Outcome.FAILED, report.format()
    assert found in result.summary, result.summary
    assert "then the check stopped: the server refused a new connection: '-ERR [SYS/TEMP]" in (
        result.summary
    )
    assert mailbox.messages == MESSAGES


@pytest.mark.parametrize("first_refused", [2, 10**6])
def test_a_crash_is_no_busy_server(first_refused: int) -> None:
    """A session that dies at ``RETR 4294967297`` is a crash, whether the new session
    that would try the line again opens (and dies too) or is greeted ``-ERR``, as a
    server restarting, or at its limit after the dropped session, greets it: the
    second was skipped as a refused connection."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3_busy_from(first_refused, mailbox, DiesAtWrappedNumber) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=TIMEOUT, checks=["number-edges"]
        )
    result = report["number-edges"]
    assert result.outcome is Outcome.FAILED, report.format()
    if first_refused == 2:
        assert result.summary.startswith(
            "b'RETR 4294967297' was answered by closing the connection, and no new session "
            "opened to try it again; then the check stopped: the server refused a new "
            "connection: '-ERR [SYS/TEMP]"
        ), result.summary
    else:
        assert result.summary == (
            "b'RETR 4294967297' was answered by closing the connection, twice"
        ), result.summary
    assert mailbox.messages == MESSAGES


def test_a_server_that_says_it_closes_at_its_error_limit_passes_number_edges() -> None:
    """smtpcore's POP3 server answers its 10th refused command ``-ERR Too many bad
    commands, closing`` and closes, and takes one session per address at a time. The
    battery had already written the next edge into that session and blamed the close
    on it ("was answered by closing the connection, and no new session opened ..."),
    and its reconnect at once met the limit (``-ERR [SYS/TEMP]``) before the old
    session's slot was freed: the check failed a correct server."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3_one_session_at_a_time(ClosesAfterBadCommands, mailbox) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=TIMEOUT, checks=["number-edges"]
        )
    result = report["number-edges"]
    assert result.passed, report.format()
    assert mailbox.messages == MESSAGES


def test_a_busy_greeting_right_after_a_session_is_tried_again() -> None:
    """A server that takes one session per address, and frees the slot a little after
    a session ends, greets a connection opened right after the battery's last session
    ``-ERR [SYS/TEMP]``: the battery's own doing, retried before it skips a check."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3_one_session_at_a_time(SmallPOP3, mailbox) as (host, port):
        report = check_pop3_server(
            host,
            port,
            user=USER,
            password=PASSWORD,
            timeout=TIMEOUT,
            checks=["uidl", "deletion", "command-line-length"],
        )
    assert all(result.passed for result in report.results), report.format()
    assert mailbox.messages == MESSAGES


# -- no mail lost, whatever the server does at QUIT ----------------------------------------


@pytest.mark.parametrize("kind", [RsetForgetsNothing, ListIgnoresMarks])
def test_a_session_that_sent_dele_never_ends_with_quit(kind: type[SmallPOP3]) -> None:
    """RSET that unmarks LIST and STAT but not what QUIT deletes, or LIST that shows
    marked messages: a session that sent DELE ends after RSET without QUIT."""
    run_check(kind, "deletion")
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(kind, mailbox) as address:
        run_battery(address)
    assert mailbox.messages == MESSAGES


@pytest.mark.parametrize("name", ["number-edges", "dot-stuffing", "pipelining"])
def test_a_session_that_retrieved_never_ends_with_quit(name: str) -> None:
    """A server that deletes what was retrieved, at QUIT, keeps every message."""
    assert run_check(DeletesRetrieved, name).outcome is Outcome.PASSED


def test_sessions_that_touched_no_message_still_end_with_quit() -> None:
    result = run_check(SmallPOP3, "command-line-length")
    assert "C: b'QUIT\\r\\n'" in result.transcript_text()


# -- the password stays out of what is printed ---------------------------------------------


def test_the_password_is_hidden_in_transcripts() -> None:
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(NoStuffing, mailbox) as (host, port):
        report = check_pop3_server(host, port, user=USER, password=PASSWORD, timeout=TIMEOUT)
    text = "\n".join(result.transcript_text() for result in report.results)
    assert "C: b'PASS <hidden>\\r\\n'" in text
    assert PASSWORD not in text
    assert PASSWORD not in repr(report)


def test_an_auth_plain_login_is_hidden_in_transcripts() -> None:
    class SaslOnly(SmallPOP3):
        def do_USER(self, words: list[str]) -> bytes:
            return b"-ERR use AUTH\r\n"

        def do_AUTH(self, words: list[str]) -> bytes:
            return b"-ERR [AUTH] no\r\n"

    result = run_check(SaslOnly, "uidl")
    assert "C: b'AUTH PLAIN <hidden>\\r\\n'" in result.transcript_text(), result


class QuotesTheRefusedLogin(SmallPOP3):
    """Refuses every PASS and AUTH quoting what it was given in parentheses, where a
    short password stands as no word, after the registered code ``[AUTH]``."""

    def do_PASS(self, words: list[str]) -> bytes:
        return b"-ERR [AUTH] bad password (" + " ".join(words).encode() + b")\r\n"

    def do_AUTH(self, words: list[str]) -> bytes:
        return b"-ERR [AUTH] bad (" + " ".join(words).encode() + b")\r\n"


@pytest.mark.parametrize("password", ["pw-123", "OK", "a-much-longer-password"])
def test_a_refused_login_shows_its_status_and_code_never_its_text(password: str) -> None:
    """The reply to PASS or AUTH may quote the password in any form: the summary shows
    its status and registered response code only (RFC 2449 §8.1)."""
    with serve_pop3(QuotesTheRefusedLogin, Mailbox(list(MESSAGES))) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=password, timeout=TIMEOUT, checks=["uidl"]
        )
    result = report["uidl"]
    assert result.outcome is Outcome.SKIPPED, result
    assert "was refused ('-ERR [AUTH]'; its text is not shown" in result.summary, result
    assert f"({password})" not in report.format(), report.format()


SHORT = "pw-123"
"""A password under :data:`~smtpcore.testing._hiding.UNAMBIGUOUS` octets: hidden only as a word."""


class QuotesThePassword(MailBeforeLogin):
    """Takes ``alice`` with :data:`SHORT` by PASS and quotes in parentheses, where it
    stands as no word, the password every PASS was given, taken or refused; serves
    mail before login, so that state-order fails and its transcript is printed."""

    def do_PASS(self, words: list[str]) -> bytes:
        given = " ".join(words)
        taken = not self.logged_in and self.user == USER and given == SHORT
        self.logged_in = self.logged_in or taken
        status = b"+OK welcome" if taken else b"-ERR [AUTH] bad password"
        return status + b" (" + given.encode() + b")\r\n"


class QuotesThePasswordInAuth(QuotesThePassword):
    """Refuses USER, so that the battery logs in by AUTH PLAIN, and quotes the password
    it decoded in every answer to AUTH, taken or refused (RFC 5034 §4)."""

    def do_USER(self, words: list[str]) -> bytes:
        return b"-ERR use AUTH\r\n"

    def do_AUTH(self, words: list[str]) -> bytes:
        _, user, password = base64.b64decode(words[-1]).split(b"\0")
        taken = not self.logged_in and (user, password) == (USER.encode(), SHORT.encode())
        self.logged_in = self.logged_in or taken
        status = b"+OK welcome" if taken else b"-ERR [AUTH] bad"
        return status + b" (" + password + b")\r\n"


@pytest.mark.parametrize("kind", [QuotesThePassword, QuotesThePasswordInAuth])
def test_a_printed_transcript_shows_login_answers_by_status_and_code_only(
    kind: type[SmallPOP3], capsys: pytest.CaptureFixture[str]
) -> None:
    """The answers to PASS and AUTH quote a short password in parentheses: the report the
    command line prints (transcripts are shown unless --no-transcripts) holds each by
    its status and registered code only, and never the password (RFC 2449 §8.1)."""
    with serve_pop3(kind, Mailbox(list(MESSAGES))) as (host, port):
        argv = ["check-pop3", f"{host}:{port}", "--user", USER, "--password", SHORT]
        status = main([*argv, "--only", "state-order", "--timeout", str(TIMEOUT)])
    out = capsys.readouterr().out
    assert status == 1 and "FAILED  state-order" in out, out
    assert "S: b'-ERR [AUTH] <text not shown: it may quote the password>\\r\\n'" in out, out
    assert "S: b'+OK <text not shown: it may quote the password>\\r\\n'" in out, out
    assert SHORT not in out, out


class ContinuesAuth(SmallPOP3):
    """Answers AUTH with a continuation, and the line after it with a refusal, both
    quoting the password the AUTH line carried."""

    def do_USER(self, words: list[str]) -> bytes:
        return b"-ERR use AUTH\r\n"

    def do_AUTH(self, words: list[str]) -> bytes:
        self.password = base64.b64decode(words[-1]).split(b"\0")[-1]
        return b"+ (" + self.password + b")\r\n"

    def answer(self, line: bytes) -> bytes:
        if line == b"*":
            return b"-ERR [AUTH] cancelled (" + self.password + b")\r\n"
        return super().answer(line)


def test_every_step_of_an_auth_exchange_is_recorded_by_status_only() -> None:
    """The continuation and the answer to the line after it (RFC 5034 §4) are recorded
    by status and code only, as the answer to AUTH itself."""
    with serve_pop3(ContinuesAuth, Mailbox(list(MESSAGES))) as (host, port):
        probe = POP3Probe(host, port, USER, SHORT, timeout=TIMEOUT)
        with pytest.raises(LoginRefused):
            probe.session()
        probe.close()
    text = _wire.format_transcript(probe.transcript())
    assert "S: b'+ <text not shown: it may quote the password>\\r\\n'" in text, text
    assert "S: b'-ERR [AUTH] <text not shown: it may quote the password>\\r\\n'" in text
    assert SHORT not in text, text


class EchoesWhatItRefuses(SmallPOP3):
    """Says back every line it refuses, credentials too (``-ERR refused: PASS ...``), as
    many servers do."""

    def answer(self, line: bytes) -> bytes:
        answer = super().answer(line)
        return answer if answer.startswith(b"+") else b"-ERR refused: " + line + b"\r\n"


class EchoesAndRefusesUser(EchoesWhatItRefuses):
    """Refuses USER too, so that every login goes on to AUTH PLAIN (and is refused)."""

    def do_USER(self, words: list[str]) -> bytes:
        return b"-ERR use AUTH\r\n"


@pytest.mark.parametrize("kind", [EchoesWhatItRefuses, EchoesAndRefusesUser])
def test_the_password_stays_hidden_where_the_server_echoes_it(kind: type[SmallPOP3]) -> None:
    """Whatever form the battery sent it in (PASS, AUTH PLAIN's base64), and on whichever
    side of the transcript or in the summary it comes back, the password never shows."""
    blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    with serve_pop3(kind, Mailbox(list(MESSAGES))) as (host, port):
        report = check_pop3_server(host, port, user=USER, password=PASSWORD, timeout=TIMEOUT)
    for result in report.results:
        text = result.transcript_text() + result.summary
        assert PASSWORD not in text and blob not in text, result
    state_order = report["state-order"].transcript_text()
    assert "C: b'STAT\\r\\n'\nS: b'-ERR refused: STAT\\r\\n'" in state_order, state_order
    login = "PASS" if kind is EchoesWhatItRefuses else "AUTH PLAIN"
    shown = f"C: b'{login} <hidden>\\r\\n'\nS: b'-ERR {NOT_KEPT.decode()}\\r\\n'"
    assert shown in state_order, state_order


class EchoesInTwoReads(SmallPOP3):
    """Says back a PASS sent before USER (``-ERR no USER before PASS ...``) in two
    writes cut inside the password, so that each of the battery's reads holds half."""

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.echo = b""

    def answer(self, line: bytes) -> bytes:
        if line.upper().startswith(b"PASS") and self.user is None:
            self.echo = b"-ERR no USER before " + line + b"\r\n"
            return b""
        return super().answer(line)

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        echo, self.echo = self.echo, b""
        if echo:
            cut = echo.index(PASSWORD.encode()) + 4
            sock.sendall(echo[:cut])
            time.sleep(0.15)
            sock.sendall(echo[cut:])


def test_a_retr_that_stalls_after_a_sentence_is_a_timeout_not_an_unended_last_line() -> None:
    """A line that ends in a period looks like a last line sent without CRLF before the
    terminator; without the message's known body nothing tells them apart."""
    result = run_check(StallsMidRetr, "dot-stuffing", timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == "no whole reply came within 1 s where one was due", result.summary


def test_an_answer_to_pass_in_two_reads_is_recorded_once_by_its_status() -> None:
    """An answer to PASS cut inside the password it quotes is one entry, its status
    and the mark that its text was not kept: no half of the password shows."""
    text = run_check(EchoesInTwoReads, "state-order").transcript_text()
    assert f"S: b'-ERR {NOT_KEPT.decode()}\\r\\n'" in text, text
    assert PASSWORD[:4] not in text and PASSWORD[4:] not in text, text


SHORT_PASSWORDS = ["OK", "1", "a"]
"""Passwords that are also words, numbers and letters of what servers and the battery write."""


def stands_as_word(secret: bytes, data: bytes) -> bool:
    """Whether ``secret`` shows in ``data`` bounded by its start or end, a space, CR or LF."""
    return re.search(rb"(?<![^ \r\n])" + re.escape(secret) + rb"(?![^ \r\n])", data) is not None


@given(st.data(), st.sampled_from([*SHORT_PASSWORDS, PASSWORD]))
def test_only_the_password_standing_as_a_word_is_hidden(
    data: st.DataObject, password: str
) -> None:
    """Whatever reads a server's lines arrive in, the password never stands as a word in
    them once hidden, and nothing else changes: not a server line without it as a word,
    not a summary without it as a word."""
    echo = st.just(b"-ERR refused: PASS " + password.encode() + b"\r\n")
    lines = data.draw(st.lists(st.one_of(sst.pop3_response_lines(), echo), max_size=6))
    stream = b"".join(lines)
    transcript = tuple(Exchange("server", piece) for piece in data.draw(sst.chunkings(stream)))
    result = CheckResult(
        "uidl", Outcome.PASSED, "UIDL well formed, OK: -ERR, USER alice", transcript
    )
    hidden = POP3Probe("127.0.0.1", 110, USER, password).hide_credentials(result)
    assert hidden.summary == result.summary
    assert not stands_as_word(password.encode(), b"".join(e.data for e in hidden.transcript))
    if password.encode() not in stream:
        assert hidden.transcript == transcript


def long_forms(user: str, password: str) -> list[bytes]:
    """The credential forms long enough to be hidden wherever they appear."""
    return [form for form in credential_forms(user, password) if len(form) >= _hiding.UNAMBIGUOUS]


@given(
    st.data(),
    st.text(min_size=1, max_size=24).filter(lambda p: "hidden" not in p),
    st.text(max_size=12),
    st.text(max_size=12),
)
def test_a_long_credential_form_is_hidden_wherever_it_appears(
    data: st.DataObject, password: str, before: str, after: str
) -> None:
    """A form of :data:`~smtpcore.testing._hiding.UNAMBIGUOUS` octets or more is hidden in
    a summary whatever stands next to it (``(<base64>),``, ``<password>:``), as the repr of
    the server's bytes writes it and as the text a reply was decoded to (UTF-8 or Latin-1),
    and in the server's reads however they are cut."""
    forms = long_forms("bob", password)
    form = data.draw(st.sampled_from(forms)) if forms else b"c210cC1TZWNyZXQtNDI="
    secrets = credential_forms("bob", password) if forms else [form]
    quoted = f"{before}{form!r}{after}"
    for text in (quoted, f"{before}{form.decode('utf-8')}{after}"):
        hidden = _hiding.hide_in_text(text, secrets, b"<hidden>")
        assert form.decode("utf-8") not in hidden and repr(form)[2:-1] not in hidden, hidden
    latin = _hiding.hide_in_text(f"{before}{form.decode('latin-1')}{after}", secrets, b"<h>")
    assert form.decode("latin-1") not in latin, latin
    stream = before.encode() + form + after.encode()
    transcript = tuple(Exchange("server", piece) for piece in data.draw(sst.chunkings(stream)))
    reads = _hiding.hide_in_server_reads(transcript, secrets, b"<hidden>")
    assert form not in b"".join(entry.data for entry in reads)


@pytest.mark.parametrize("password", SHORT_PASSWORDS)
def test_a_short_password_changes_nothing_but_itself(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password that is also ``OK``, a digit or a letter leaves the summaries, the
    battery's writes and its notes as they are with a long one (the battery hides its
    own writes where it makes them) but where it stands as a word in a summary or a
    note (``connection 1``), and stands as a word in no server line."""

    def run(secret: str) -> tuple[CheckResult, ...]:
        monkeypatch.setattr(broken_pop3_servers, "PASSWORD", secret)
        with serve_pop3(SmallPOP3, Mailbox(list(MESSAGES))) as (host, port):
            checks = ["uidl", "state-order"]
            report = check_pop3_server(
                host, port, user=USER, password=secret, timeout=TIMEOUT, checks=checks
            )
        return report.results

    def hide_word(text: str) -> str:
        return re.sub(rf"(?<![^ '\"]){re.escape(password)}(?![^ '\"\\])", "<hidden>", text)

    def battery_side(result: CheckResult, *, hidden: bool = False) -> tuple[str, list[str]]:
        text = re.sub(r"127\.0\.0\.1:\d+", "HOST", result.transcript_text())
        lines = [line for line in text.splitlines() if not line.startswith("S:")]
        if hidden:
            notes = [hide_word(line) if line.startswith("--") else line for line in lines]
            return hide_word(result.summary), notes
        return result.summary, lines

    short, long = run(password), run(PASSWORD)
    assert [battery_side(r) for r in short] == [battery_side(r, hidden=True) for r in long]
    for result in short:
        server = b"".join(entry.data for entry in result.transcript if entry.side == "server")
        assert not stands_as_word(password.encode(), server), result.transcript_text()
        assert b"+OK " + NOT_KEPT + b"\r\n" in server, result.transcript_text()


def hidden_summary(summary: str, server: bytes, password: str = PASSWORD) -> str:
    """``summary`` as a result holding it and ``server``'s bytes shows it, hidden."""
    result = CheckResult("any", Outcome.FAILED, summary, (Exchange("server", server),))
    return POP3Probe("127.0.0.1", 110, USER, password).hide_credentials(result).summary


def test_a_summary_quoting_several_server_lines_in_one_repr_hides_the_password() -> None:
    """stls-injection quotes the whole unread buffer: ``b'+OK\\r\\n-ERR PASS ...\\r\\n'``."""
    unread = b"+OK\r\n-ERR refused: PASS " + PASSWORD.encode() + b"\r\n"
    summary = hidden_summary(f"plaintext after its +OK: {unread!r}", b"+OK go\r\n" + unread)
    assert summary == "plaintext after its +OK: b'+OK\\r\\n-ERR refused: PASS <hidden>\\r\\n'"


def test_a_summary_quoting_an_excerpt_from_mid_line_hides_the_password() -> None:
    """dot-stuffing quotes the 40 octets before a bare LF, starting inside a line."""
    body = b"a line long enough to be cut, and the password: " + PASSWORD.encode() + b"\nend\r\n"
    probe = POP3Probe("127.0.0.1", 110, USER, PASSWORD)
    summary = _framing_problem(probe, "RETR 1", POP3Response(b"+OK\r\n", body))
    assert summary is not None and PASSWORD not in summary
    hidden = hidden_summary(summary, b"+OK\r\n" + body + b".\r\n")
    assert hidden == summary and "password: <hidden>\\n'" in hidden, hidden


BARE_LF_ACROSS_THE_CUT = (
    b"Subject: framing\r\n\r\nthe server said PASS "
    + PASSWORD.encode()
    + b" back to us; this line ends badly\n"
)
"""A message line ending in a bare LF whose last 40 octets, the excerpt dot-stuffing
quotes, start inside the password."""
UNDOUBLED_DOT_ACROSS_THE_CUT = (
    b"Subject: framing\r\n\r\n.a line not stuffed, after it: PASS "
    + PASSWORD.encode()
    + b" then more\r\n"
)
"""A message line starting with a dot whose first 40 octets, the excerpt dot-stuffing
quotes from a server that does not double it, end inside the password."""


def pieces(secret: str, at_least: int = 3) -> set[str]:
    """Every part of ``secret`` of ``at_least`` characters or more."""
    return {secret[i:j] for i in range(len(secret)) for j in range(i + at_least, len(secret) + 1)}


def test_the_excerpts_cross_the_password() -> None:
    bare_line = BARE_LF_ACROSS_THE_CUT.split(b"\r\n")[-1]
    start = bare_line.index(PASSWORD.encode())
    assert start < len(bare_line) - 40 < start + len(PASSWORD)
    dot_line = UNDOUBLED_DOT_ACROSS_THE_CUT.split(b"\r\n")[2]
    start = dot_line.index(PASSWORD.encode())
    assert start < 40 < start + len(PASSWORD)


@pytest.mark.parametrize(
    ("kind", "message", "said"),
    [
        (
            SmallPOP3,
            BARE_LF_ACROSS_THE_CUT,
            "line 3 of RETR 1 ends in a bare LF: b'<hidden> back to us; this line ends badly\\n'",
        ),
        (
            NoStuffing,
            UNDOUBLED_DOT_ACROSS_THE_CUT,
            "line 3 of RETR 1 starts with a dot not doubled: b'.a line not stuffed, after "
            "it: PASS <hidden>'",
        ),
    ],
    ids=["bare-lf", "undoubled-dot"],
)
def test_a_password_in_a_message_across_the_excerpts_cut_never_shows(
    kind: type[SmallPOP3], message: bytes, said: str
) -> None:
    """dot-stuffing quoted 40 octets of a message's line cut before the password was
    hidden, and hiding matches the whole password only, so a password the cut went
    through showed in part (``b'rland back to us, ...'``). The line is hidden first
    now, then cut, as :meth:`POP3Probe.lines_said` does, and never inside
    ``<hidden>``: no part of the password of three characters or more shows."""
    result = run_check(kind, "dot-stuffing", messages=[message], timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == said, result.summary
    shown = str(result) + result.transcript_text()
    assert not [piece for piece in pieces(PASSWORD) if piece in shown], shown


def test_a_summary_quoting_line_prefixes_in_a_list_hides_the_password() -> None:
    """command-line-length quotes the first 40 octets of each line, in a list."""
    lines = [b"-ERR too long\r\n", b"-ERR you sent PASS " + PASSWORD.encode() + b" and more text"]
    summary = hidden_summary(f"got 2 responses {[line[:40] for line in lines]}", b"".join(lines))
    assert (
        summary
        == "got 2 responses [b'-ERR too long\\r\\n', b'-ERR you sent PASS <hidden> and more t']"
    )


def test_a_password_in_a_note_is_hidden() -> None:
    note = Exchange("note", note=f"connection lost: [Errno 104] {PASSWORD}")
    result = CheckResult("any", Outcome.FAILED, "", (note,))
    hidden = POP3Probe("127.0.0.1", 110, USER, PASSWORD).hide_credentials(result)
    assert hidden.transcript[0].note == "connection lost: [Errno 104] <hidden>"


@pytest.mark.parametrize(
    ("password", "summary", "shown"),
    [
        ("it's", repr(b'-ERR PASS it\'s "no"'), "b'-ERR PASS <hidden> \"no\"'"),
        ("it's", repr(b"-ERR PASS it's"), 'b"-ERR PASS <hidden>"'),
        ("caf\u00e9", repr("-ERR PASS caf\u00e9\r\n".encode()), "b'-ERR PASS <hidden>\\r\\n'"),
        ("OK", repr(b"+OK OK\tOK\r\n"), "b'+OK <hidden>\\t<hidden>\\r\\n'"),
        ("1", "b'+OK 1 120', 1 of 1", "b'+OK <hidden> 120', <hidden> of <hidden>"),
        ("1", "b'+OK 11 1x', 1.1 of 10", "b'+OK 11 1x', 1.1 of 10"),
    ],
)
def test_the_password_is_hidden_in_a_summary_as_a_word_however_a_repr_escapes_it(
    password: str, summary: str, shown: str
) -> None:
    """Whichever quote a repr chooses, with escaped octets, and only standing as a word."""
    assert hidden_summary(summary, b"", password) == shown


@pytest.mark.parametrize(
    ("password", "unit"),
    [("1", b"1 "), ("aaaaaaaa", b"a"), ("a" * 4000, b"a")],
    ids=["short-word", "repetitive-8", "repetitive-4000"],
)
def test_hiding_does_work_linear_in_the_transcript(password: str, unit: bytes) -> None:
    """A 4 MiB stream that holds the password at every offset it can (``1 1 1 ...`` with
    ``1``, ``aaaa...`` with a repetitive long password) is hidden with the regexes
    scanning, and the marks covering, a bounded number of octets per octet of the
    stream: no match rescans the text around it, and a long form does not overlap."""
    counted = CountingRe()
    size = 4 * 1024 * 1024
    stream = unit * (size // len(unit))
    transcript = tuple(Exchange("server", stream[at : at + 4096]) for at in range(0, size, 4096))
    summary = f"got {stream[:80]!r}"
    result = CheckResult("any", Outcome.FAILED, summary, transcript)
    real_mark = _hiding._mark

    def counting_mark(marks: list[bytearray], starts: list[int], start: int, end: int) -> None:
        counted.octets += end - start
        real_mark(marks, starts, start, end)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_hiding, "re", counted)
        patch.setattr(_hiding, "_mark", counting_mark)
        hidden = POP3Probe("127.0.0.1", 110, USER, password).hide_credentials(result)
    joined = b"".join(entry.data for entry in hidden.transcript)
    assert password.encode() not in joined and password not in hidden.summary
    if unit == b"1 ":
        assert joined == b"<hidden> " * (size // 2)
    forms = len(credential_forms(USER, password)) + 1  # and the wrong password the battery sends
    assert 0 < counted.octets <= (forms + 2) * size  # a pass a form, the marks, the summary


class CountingRe:
    """``re`` for :mod:`~smtpcore.testing._hiding`, counting the octets or characters
    its patterns are given to scan: work measured without a clock."""

    def __init__(self) -> None:
        self.octets = 0

    def __getattr__(self, name: str) -> object:
        return getattr(re, name)

    def compile(self, pattern: str | bytes, flags: int = 0) -> CountingPattern:
        return CountingPattern(re.compile(pattern, flags), self)


class CountingPattern:
    def __init__(self, pattern: re.Pattern[Any], counter: CountingRe) -> None:
        self.pattern, self.counter = pattern, counter

    def finditer(self, string: Any) -> Iterator[re.Match[Any]]:
        self.counter.octets += len(string)
        return self.pattern.finditer(string)

    def sub(self, repl: Any, string: Any) -> Any:
        self.counter.octets += len(string)
        return self.pattern.sub(repl, string)


def test_the_probe_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(POP3Probe("127.0.0.1", 110, USER, "hunter2"))


# -- verdicts that were wrong ----------------------------------------------------------------


def test_a_crlf_added_after_a_last_line_without_one_is_not_a_size_mismatch() -> None:
    """RFC 1939 §3: the server ends the last line before the terminator; LIST counts
    the message as stored (Dovecot)."""
    messages = [b"Subject: no final newline\r\n\r\nlast line without CRLF", MESSAGES[1]]
    result = run_check(AddsFinalLineEnd, "dot-stuffing", messages=messages)
    assert result.outcome is Outcome.PASSED, result


def test_an_unjudged_line_length_minimum_is_said_so() -> None:
    result = run_check(UnknownUsersRefused, "command-line-length")
    assert result.outcome is Outcome.PASSED, result
    assert "not judged" in result.summary
    assert "-- not judged" in result.transcript_text()


def test_a_plaintext_answer_behind_stls_fails_the_injection_check(tls: TLSFiles) -> None:
    result = run_check(AnswersBehindStlsInPlaintext, "stls-injection", tls=tls)
    assert result.outcome is Outcome.FAILED, result
    assert "bytes that are no TLS record" in result.summary, result


class ClosesOverTls(SmallPOP3):
    """Completes the TLS handshake after STLS, then closes with no response."""

    def after_stls(self, buffer: bytearray) -> bytearray:
        self.closed = True
        return bytearray()


def test_a_close_after_the_handshake_is_said_as_such(tls: TLSFiles) -> None:
    """It failed with "over TLS, QUIT got []: the CAPA pipelined in plaintext behind
    STLS was run after the handshake", which nothing showed."""
    result = run_check(ClosesOverTls, "stls-injection", tls=tls, timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        "over TLS, QUIT got no response before the server closed the connection or fell "
        "silent for 1 s"
    ), result.summary


def test_a_tls_alert_at_the_injected_handshake_passes(tls: TLSFiles) -> None:
    """A fatal alert is a TLS record: the server ended the session in TLS, as a close does."""
    for _ in range(3):
        result = run_check(AlertsOnInjectedPlaintext, "stls-injection", tls=tls)
        assert result.outcome is Outcome.PASSED, result
        assert "ended the injected session at the handshake" in result.summary, result


def test_a_stalled_injected_handshake_fails_with_its_own_reason(tls: TLSFiles) -> None:
    result = run_check(StallsOnInjectedPlaintext, "stls-injection", tls=tls, timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert "no TLS record" not in result.summary, result
    assert "did not end within 1 s" in result.summary, result


def test_a_trickled_response_has_one_deadline() -> None:
    started = time.monotonic()
    result = run_check(TricklesRetr, "dot-stuffing", timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert time.monotonic() - started < 6


def test_a_flood_of_empty_lines_costs_its_octets_not_an_object_a_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two-octet lines past a 1 MiB read limit: the limit stops the response, not the
    timeout, and memory stays a few times the octets read. An object a line costs
    about 60 times the octets, so the 8 MiB bound catches it at this limit as at 8 MiB,
    in a second rather than a quarter of a minute under tracemalloc. The timeout is
    far above that second: under tracemalloc on a loaded machine (eight processes on
    two cores) the read took over 9 s, and a timeout that ended it would fail the
    summary's assertion, not pass it."""
    monkeypatch.setattr(_wire, "MAX_RECEIVED", 1 << 20)
    tracemalloc.start()
    try:
        result = run_check(FloodsRetr, "dot-stuffing", timeout=60.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.outcome is Outcome.FAILED, result
    assert result.summary.startswith("the server sent more than owed"), result.summary
    assert f"over {1 << 20} octets" in result.summary, result.summary
    assert peak < 8 << 20, f"{peak >> 20} MiB"


def test_stuffing_missing_in_tops_body_fails() -> None:
    assert run_check(NoStuffingInTopBody, "dot-stuffing").outcome is Outcome.FAILED


def test_no_line_starting_with_a_dot_leaves_stuffing_unjudged() -> None:
    result = run_check(NoStuffing, "dot-stuffing", messages=[b"Subject: a\r\n\r\nhello\r\n"])
    assert result.outcome is Outcome.PASSED
    assert "no line starting with a dot" in result.summary


def test_ids_that_are_the_message_numbers_are_said_unjudged() -> None:
    """Stable between sessions, so not wrong here; whether they outlive a deletion
    (RFC 1939 §7) is not tested, as the check deletes nothing."""
    result = run_check(UidIsNumber, "uidl")
    assert result.outcome is Outcome.PASSED
    assert "-- not judged" in result.transcript_text()


def test_problems_found_before_a_refused_login_fail_the_check() -> None:
    OneLoginThenInUse.logins = 0
    result = run_check(OneLoginThenInUse, "number-edges", timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert "'RETR +1'" in result.summary


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def small_server() -> Iterator[str]:
    with serve_pop3(SmallPOP3, Mailbox(list(MESSAGES))) as (host, port):
        yield f"{host}:{port}"


def test_cli_exits_zero_on_a_good_server(
    small_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["check-pop3", small_server, "--user", USER, "--password", PASSWORD])
    assert status == 0
    assert "0 failed" in capsys.readouterr().out


def test_cli_takes_the_password_as_send_and_fetch_do(
    small_server: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--password-file, then SMTPCORE_PASSWORD, then a prompt; --password warns."""
    argv = ["check-pop3", small_server, "--user", USER, "--only", "uidl"]
    secret = tmp_path / "secret"
    secret.write_text(PASSWORD + "\n")
    assert main([*argv, "--password-file", str(secret)]) == 0
    monkeypatch.setenv("SMTPCORE_PASSWORD", PASSWORD)
    assert main(argv) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*argv, "--password", PASSWORD]) == 0
    assert "shows in `ps`" in capsys.readouterr().err


def test_cli_errors_never_repeat_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMTPCORE_PASSWORD", "s3cret-Hunter2\n")
    with pytest.raises(SystemExit) as info:
        main(["check-pop3", "127.0.0.1:9", "--user", USER])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["check-pop3", "127.0.0.1:9", "--user", USER, "--password", "s3cret\rHunter2"])
    err = capsys.readouterr().err
    assert "password" in err and "Hunter2" not in err
    # The usage and the error are check-pop3's, whose options say how to give it.
    assert "usage: python -m smtpcore.testing check-pop3 " in err, err
    assert "python -m smtpcore.testing check-pop3: error:" in err, err


def test_cli_exits_one_on_a_failure_and_prints_the_transcript(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve_pop3(NoStuffing, Mailbox(list(MESSAGES))) as (host, port):
        argv = ["check-pop3", f"{host}:{port}", "--user", USER, "--password", PASSWORD]
        status = main([*argv, "--only", "dot-stuffing", "--timeout", "3"])
    out = capsys.readouterr().out
    assert status == 1
    assert "FAILED  dot-stuffing" in out and "C: b'RETR 1\\r\\n'" in out


def test_cli_exits_three_when_no_server_answers(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check-pop3", f"127.0.0.1:{free_port()}", "--user", USER, "--password", "x"]
    assert main([*argv, "--timeout", "1"]) == 3
    assert "could not connect" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["127.0.0.1:110", "--user", USER],  # no password
        ["127.0.0.1:110", "--user", "a\rb", "--password", "x"],
        ["127.0.0.1:0", "--user", USER, "--password", "x"],
        ["127.0.0.1:110", "--user", USER, "--password-file", "/nonexistent/smtpcore"],
        ["127.0.0.1:110", "--user", USER, "--password", "x", "--only", "nope"],
    ],
)
def test_cli_exits_two_on_a_bad_argument(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check-pop3", *argv])
    assert info.value.code == 2


def test_the_docs_page_console_example_counts_every_pop3_check() -> None:
    page = (Path(__file__).parent.parent / "docs" / "testing-check.rst").read_text()
    section = page.partition("Checking any POP3 server")[2].partition("Fuzzing the machines")[0]
    totals = re.findall(r"^   (\d+) passed, (\d+) failed, (\d+) skipped$", section, re.MULTILINE)
    assert totals
    for counts in totals:
        assert sum(map(int, counts)) == len(POP3_CHECKS), counts


def test_the_docs_page_pop3_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    page = Path(__file__).parent.parent / "docs" / "testing-check.rst"
    blocks = [block for block in python_blocks(page) if "check_pop3" in block]
    (block,) = [block for block in blocks if "deliver_via" not in block]
    with serve_pop3(SmallPOP3, Mailbox(list(MESSAGES))) as (host, port):
        block = block.replace('"127.0.0.1", 110', f"{host!r}, {port}")
        block = block.replace('password="secret"', f"password={PASSWORD!r}")
        exec(compile(block, str(page), "exec"), {"__name__": "docs"})
    # no STLS here, and no delivery
    assert "7 passed, 0 failed, 2 skipped" in capsys.readouterr().out


class QuitClosesSilently(SmallPOP3):
    """Closes at QUIT with no +OK (RFC 1939 §6 wants one)."""

    def do_QUIT(self, words: list[str]) -> bytes:
        super().do_QUIT(words)
        return b""


class QuitAnsweredTwice(SmallPOP3):
    """Answers QUIT twice, a second +OK owed no one, then closes."""

    def do_QUIT(self, words: list[str]) -> bytes:
        return super().do_QUIT(words) + b"+OK and again\r\n"


class QuitRefused(SmallPOP3):
    """Answers QUIT ``-ERR``, then closes."""

    def do_QUIT(self, words: list[str]) -> bytes:
        super().do_QUIT(words)
        return b"-ERR not now\r\n"


class QuitUnknownAfterLogin(SmallPOP3):
    """Knows QUIT only before login: after login ``-ERR unknown command``, and it drops
    the connection, having removed nothing. RFC 1939 §6 gives ``-ERR`` to QUIT the
    meaning "some messages marked deleted were not removed" alone, which no session
    that marked nothing can be told."""

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.logged_in:
            self.closed = True
            return b"-ERR unknown command\r\n"
        return super().do_QUIT(words)


class QuitLeftOpen(SmallPOP3):
    """Answers QUIT +OK and keeps the connection open."""

    def do_QUIT(self, words: list[str]) -> bytes:
        answer = super().do_QUIT(words)
        self.closed = False
        return answer


class QuitIgnored(SmallPOP3):
    """Neither answers QUIT nor closes."""

    def do_QUIT(self, words: list[str]) -> bytes:
        return b""


class NoopAnsweredTwice(SmallPOP3):
    """Answers NOOP with two status lines, one owed no one."""

    def do_NOOP(self, words: list[str]) -> bytes:
        return b"+OK\r\n+OK again\r\n"


@pytest.mark.parametrize(
    ("kind", "name", "summary"),
    [
        (
            QuitClosesSilently,
            "uidl",
            "the server closed the connection with QUIT unanswered (no +OK, RFC 1939 §6)",
        ),
        (
            QuitAnsweredTwice,
            "uidl",
            "QUIT got 2 lines (b'+OK bye', b'+OK and again') before the close, not one +OK: "
            "a line the server owed no one was counted (RFC 1939 §6)",
        ),
        (
            QuitRefused,
            "uidl",
            "QUIT got 1 line (b'-ERR not now') before the close, not +OK (RFC 1939 §4, §6: "
            "-ERR to QUIT says marked messages were not removed, and the session marked none)",
        ),
        (
            QuitLeftOpen,
            "uidl",
            "QUIT got 1 line (b'+OK bye'), and the server did not close the connection "
            "within 1 s (RFC 1939 §6)",
        ),
        (
            QuitIgnored,
            "uidl",
            "QUIT went unanswered, and the server did not close the connection within 1 s "
            "(RFC 1939 §6)",
        ),
        (
            NoopAnsweredTwice,
            "dot-stuffing",
            "RSET and NOOP, the session's last commands, got 3 lines (b'+OK', b'+OK', b'+OK "
            "again'), not one status line each: a response the server owed no one was "
            "counted (RFC 1939 §3)",
        ),
    ],
    ids=["closed", "twice", "refused", "left-open", "ignored", "noop-twice"],
)
def test_how_a_session_ended_is_said_not_printed_as_a_list(
    kind: type[SmallPOP3], name: str, summary: str
) -> None:
    """Every check ends its sessions with QUIT, or RSET and NOOP where it touched a
    message: a close with QUIT unanswered failed with "QUIT got [] before the close,
    not one +OK: a line the server owed no one was counted", a line it never sent,
    and the other endings printed the lines as a list of bytes."""
    result = run_check(kind, name, timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == summary, result.summary


def test_a_quit_refused_on_a_session_that_marked_nothing_fails(tls: TLSFiles) -> None:
    """A single ``-ERR`` to QUIT after login passed every check, though RFC 1939 §6
    gives it one meaning, some messages marked deleted not removed, and every
    session but the delete session's marks none: a server that knows no QUIT once
    logged in and drops the connection passed. Each check that ends a logged-in
    session with QUIT fails it again; the delete session alone may get ``-ERR``
    (test_testing_check_pop3_delivery)."""
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(QuitUnknownAfterLogin, mailbox, tls=tls.server_context) as address:
        outcomes = run_battery(address)
    failing = ("command-line-length", "deletion", "uidl", "state-order")
    assert outcomes == {**ALL_PASS, **dict.fromkeys(failing, Outcome.FAILED)}, outcomes
    assert mailbox.messages == MESSAGES


class QuitRefusedAfterLongLine(SmallPOP3):
    """Answers QUIT ``-ERR`` before login once it refused a long line in the session."""

    long_line = False

    def answer(self, line: bytes) -> bytes:
        self.long_line = self.long_line or line == b"\0long"
        return super().answer(line)

    def do_QUIT(self, words: list[str]) -> bytes:
        answer = super().do_QUIT(words)
        return b"-ERR not now\r\n" if self.long_line and not self.logged_in else answer


def test_a_quit_refused_before_login_fails_command_line_length() -> None:
    """The long line, NOOP and QUIT before login: QUIT's ``-ERR`` is no response RFC
    1939 §4 allows, and the summary says so, not that a piece of the line ran."""
    result = run_check(QuitRefusedAfterLongLine, "command-line-length", timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        "before login, a 10,000-octet line, NOOP and QUIT got 3 lines (b'-ERR line too "
        "long', b'-ERR not logged in', b'-ERR not now'): the third is no +OK: a piece of "
        "the long line was run as a command, or QUIT was refused (RFC 1939 §4: QUIT "
        "before login gets +OK)"
    ), result.summary


class ChunkedReader(SmallPOP3):
    """Reads command lines 4,000 octets at a time (``fgets`` into a fixed buffer): each
    piece of a longer line is run as a command; it closes after three errors in a
    row. The 10,000-octet line gets three ``-ERR`` responses, which before login
    look like the long line's, NOOP's and a refused QUIT's."""

    errors = 0

    def lines(self, buffer: bytearray) -> Iterator[bytes]:
        while True:
            end = buffer.find(b"\r\n")
            if 0 <= end <= 4000:
                line = bytes(buffer[:end])
                del buffer[: end + 2]
            elif len(buffer) >= 4000:
                line = bytes(buffer[:4000])
                del buffer[:4000]
            else:
                return
            yield line

    def answer(self, line: bytes) -> bytes:
        out = super().answer(line)
        self.errors = self.errors + 1 if out.startswith(b"-ERR") else 0
        self.closed = self.closed or self.errors >= 3
        return out


class LongLineAnsweredWithoutStatus(SmallPOP3):
    """Answers an over-long line with text that is no status line (RFC 1939 §3)."""

    def answer(self, line: bytes) -> bytes:
        return b"line too long\r\n" if line == b"\0long" else super().answer(line)


def test_a_long_lines_answer_that_is_no_status_line_fails() -> None:
    """Three lines ending in ``+OK`` passed whatever the first was: the long line's
    answer is judged too now."""
    result = run_check(LongLineAnsweredWithoutStatus, "command-line-length", timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    said = "the first, the long line's, is no status line (RFC 1939 §3)"
    assert result.summary == (
        "before login, a 10,000-octet line, NOOP and QUIT got 3 lines (b'line too long', "
        f"b'-ERR not logged in', b'+OK bye'): {said}; after login, a 10,000-octet line, "
        f"NOOP and QUIT got 3 lines (b'line too long', b'+OK', b'+OK bye'): {said}"
    ), result.summary


def test_a_long_line_run_as_three_commands_fails_before_and_after_login() -> None:
    """Three lines were judged by the last alone: after login a server that ran the
    10,000-octet line as three commands passed (three ``-ERR``, the last taken for
    QUIT's), and before login it was said to refuse QUIT. The long line's and NOOP's
    lines are judged too, and the summary gives both readings it cannot tell apart."""
    result = run_check(ChunkedReader, "command-line-length", timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    got = (
        "a 10,000-octet line, NOOP and QUIT got 3 lines (b'-ERR no', b'-ERR unknown "
        "command', b'-ERR unknown command')"
    )
    assert result.summary == (
        f"before login, {got}: the third is no +OK: a piece of the long line was run as a "
        "command, or QUIT was refused (RFC 1939 §4: QUIT before login gets +OK); after "
        f"login, {got}: the second is no +OK: a piece of the long line was run as a "
        "command, or NOOP was refused (RFC 1939 §5: NOOP after login gets +OK)"
    ), result.summary


def test_a_piece_of_a_long_line_run_as_a_command_is_said_in_lines() -> None:
    """The lines that show it were a list of bytes prefixes: "got 42 responses [b'+OK',
    ...]"; they are counted and quoted, the first few, now."""
    result = run_check(CutsLongLines, "command-line-length")
    assert result.outcome is Outcome.FAILED, result
    assert result.summary.startswith(
        "before login, a 10,000-octet line, NOOP and QUIT got 42 lines (b'+OK', b'-ERR not "
        "logged in', b'-ERR unknown command', b'-ERR unknown command', 38 more): a piece of "
        "the long line was run as a command"
    ), result.summary


ECHO = b"-ERR late, for the last login: PASS " + PASSWORD.encode() + b"\r\n"
"""A line saying the password back, which a summary cuts at 40 octets: the password
starts before the cut and ends after it."""


class QuitEchoesPassword(SmallPOP3):
    """Answers QUIT +OK, then says the password back, then closes."""

    def do_QUIT(self, words: list[str]) -> bytes:
        return super().do_QUIT(words) + ECHO


class QuitAnsweredByEcho(SmallPOP3):
    """Answers QUIT with the password said back alone, then closes."""

    def do_QUIT(self, words: list[str]) -> bytes:
        super().do_QUIT(words)
        return ECHO


class QuitAnsweredByEchoLeftOpen(SmallPOP3):
    """Answers QUIT with the password said back, and keeps the connection open."""

    def do_QUIT(self, words: list[str]) -> bytes:
        return ECHO


class NoopEchoesPassword(SmallPOP3):
    """Answers NOOP +OK, then says the password back."""

    def do_NOOP(self, words: list[str]) -> bytes:
        return b"+OK\r\n" + ECHO


class LongLineEchoesPassword(SmallPOP3):
    """Answers a long line twice, the second time saying the password back."""

    def answer(self, line: bytes) -> bytes:
        return super().answer(line) + (ECHO if line == b"\0long" else b"")


class ErrEchoesPassword(SmallPOP3):
    """Follows every -ERR with the password said back, a response owed no one."""

    def answer(self, line: bytes) -> bytes:
        out = super().answer(line)
        return out + ECHO if out.startswith(b"-ERR") else out


class ListEchoesPassword(SmallPOP3):
    """Gives the password said back as a line of the scan listing."""

    def do_LIST(self, words: list[str]) -> bytes:
        return multi(b"listing", [ECHO]) if not words else super().do_LIST(words)


class QuitEchoesPasswordOverTls(SmallPOP3):
    """Over TLS, answers QUIT with the password said back, then +OK."""

    def do_QUIT(self, words: list[str]) -> bytes:
        return ECHO + super().do_QUIT(words)


def assert_password_hidden(result: CheckResult) -> None:
    assert result.outcome is Outcome.FAILED, result
    assert "PASS <hidden>" in result.summary, result.summary
    assert "PASS " + PASSWORD[:3] not in result.summary, result.summary


def test_the_echo_crosses_the_cut() -> None:
    start = ECHO.index(PASSWORD.encode())
    assert start < 40 < start + len(PASSWORD)


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        (QuitEchoesPassword, "uidl"),
        (QuitAnsweredByEcho, "uidl"),
        (QuitAnsweredByEchoLeftOpen, "uidl"),
        (NoopEchoesPassword, "dot-stuffing"),
        (LongLineEchoesPassword, "command-line-length"),
        (ErrEchoesPassword, "number-edges"),
        (ListEchoesPassword, "uidl"),
    ],
    ids=["quit-twice", "quit-once", "quit-left-open", "noop", "long-line", "err", "list"],
)
def test_a_password_said_back_across_the_cut_is_hidden(kind: type[SmallPOP3], name: str) -> None:
    """Summaries quote the lines a server sent cut at 40 octets; the cut came before
    the password was hidden, and hiding matches the whole password only, so a line cut
    through it showed its start: ``b'-ERR ... PASS wonder'``. Each line is hidden now,
    then cut, wherever a summary quotes it."""
    assert_password_hidden(run_check(kind, name, timeout=1.0))


def test_a_password_said_back_over_tls_across_the_cut_is_hidden(tls: TLSFiles) -> None:
    """stls-injection quotes QUIT's lines over TLS as the other checks do."""
    assert_password_hidden(
        run_check(QuitEchoesPasswordOverTls, "stls-injection", tls=tls, timeout=1.0)
    )


class ErrThenPartialLine(SmallPOP3):
    """Follows every -ERR with the start of a line it never ends, and stays open."""

    def answer(self, line: bytes) -> bytes:
        out = super().answer(line)
        return out + b"-ERR" if out.startswith(b"-ERR") else out


@pytest.mark.parametrize(
    ("name", "command"), [("number-edges", "RETR 0"), ("state-order", "STAT")]
)
def test_a_partial_line_after_an_err_is_said_in_words(name: str, command: str) -> None:
    """It printed ``b'RETR 0' got -ERR and then [], and the server went on``: no line
    came, only part of one."""
    result = run_check(ErrThenPartialLine, name, timeout=1.0)
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        f"b'{command}' got -ERR and then part of a line, never ended, and no close within "
        "1 s: one command, the start of a second response"
    ), result.summary


def test_a_line_after_an_err_is_counted_and_quoted() -> None:
    result = run_check(ErrEchoesPassword, "number-edges", timeout=1.0)
    assert result.summary == (
        "b'RETR 0' got -ERR and then 1 line (b'-ERR late, for the last login: PASS "
        "<hidden>'), and the server went on: one command, two responses"
    ), result.summary


class ListsAnExtraLine(SmallPOP3):
    """Whole LIST and UIDL listings with one more line after the status line."""

    command = ""
    extra = b""

    def answer(self, line: bytes) -> bytes:
        answer = super().answer(line)
        if line.rstrip(b"\r\n").upper() == self.command.encode():
            status, _, rest = answer.partition(b"\r\n")
            return status + b"\r\n" + self.extra + b"\r\n" + rest
        return answer


@pytest.mark.parametrize(
    ("command", "extra", "check", "said"),
    [
        ("LIST", b"0 24", "dot-stuffing", "numbered 1 to 2147483647"),
        ("LIST", b"2147483648 24", "dot-stuffing", "numbered 1 to 2147483647"),
        ("LIST", b"1 24", "dot-stuffing", "message number 1 twice"),
        ("UIDL", b"0 zero", "uidl", "numbered 1 to 2147483647"),
        ("UIDL", b"2147483648 big", "uidl", "numbered 1 to 2147483647"),
        ("UIDL", b"1 again", "uidl", "message number 1 twice"),
    ],
)
def test_a_listing_no_client_can_use_fails_as_the_library_reads_it(
    command: str, extra: bytes, check: str, said: str
) -> None:
    """The battery read LIST and UIDL with parsers of its own, which took message 0
    (then sent ``RETR 0``), a number past 2**31-1, and a message listed twice (the
    second line won): it reads them as :func:`smtpcore.pop3.parse_listing` and
    :func:`smtpcore.pop3.parse_uid_listing` do, and fails the server there."""
    kind = type("Listing", (ListsAnExtraLine,), {"command": command, "extra": extra})
    result = run_check(kind, check)
    assert result.outcome is Outcome.FAILED, result
    assert said in result.summary, result.summary
    assert "RETR 0" not in result.transcript_text()


@pytest.mark.parametrize("line", [b"1 24\r\n", b"1 24 (new)\r\n", b"1 24\t(new)\r\n"])
def test_a_scan_listing_line_may_say_more_after_the_size(line: bytes) -> None:
    """RFC 1939 §5 asks nothing of what follows the size."""
    assert parse_listing(POP3Response(b"+OK\r\n", line), repr) == {1: 24}


@pytest.mark.parametrize("line", [b"1  24\r\n", b" 1 24\r\n", b"1   24   \r\n", b"1\t24\r\n"])
def test_a_scan_listing_line_without_a_single_space_after_the_number_fails(line: bytes) -> None:
    """RFC 1939 §5: the number, "a single space", the size. The clients' reader splits
    at any whitespace and takes these; the battery, a conformance check, fails them."""
    with pytest.raises(Failed, match="a single space apart"):
        parse_listing(POP3Response(b"+OK\r\n", line), repr)
