"""``delivered-intact``: the POP3 battery delivers its own test messages over SMTP.

smtpcore's SMTP server (the asyncio adapter) delivers into the store the POP3
server reads: a Maildir for smtpcore's own POP3 server, the in-memory
mailbox for a planted-bug one. It adds a trace field before the content, as
an MTA does, which the check must ignore.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtpcore.testing._wire as wire_module
import smtpcore.testing.check_pop3 as check_pop3_module
from broken_pop3_servers import (
    PASSWORD,
    USER,
    CommitsOnClose,
    DeletesRetrieved,
    HugeUidlNumber,
    Mailbox,
    NoStuffing,
    NoUidl,
    RepeatsUid,
    SessionUidl,
    SmallPOP3,
    UidIsNumber,
    multi,
    serve_pop3,
)
from broken_servers import raw_server
from peers import (
    TLSFiles,
    dovecot_pop3,
    free_port,
    hand_to_dovecot,
    maildir_contents,
    running_pop3_server,
    running_smtp_server,
)
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.maildrop import MaildirStore
from smtpcore.smtp import Rcpt, Reply
from smtpcore.testing.__main__ import main
from smtpcore.testing._delivery import MARKER_FIELD, DeliveredMessage, Delivery
from smtpcore.testing._hiding import credential_forms
from smtpcore.testing._pop3_deletion import (
    delete_delivered,
    failed_deletion_note,
    left_in_mailbox,
)
from smtpcore.testing._pop3_delivered import poll_sleeps
from smtpcore.testing._pop3_probe import POP3Probe, lines_of
from smtpcore.testing.check import CheckReport, CheckResult, Outcome
from smtpcore.testing.check_pop3 import check_pop3_server

MAILBOX = f"{USER}@abc.example"
KEPT = [b"Subject: kept\r\n\r\nthe user's own mail\r\n"]
TRACE = b"Received: from check.smtpcore.test by mx.test; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
_names = itertools.count()


class DeliversTo(Handler):
    """Takes every recipient and hands each message, a trace field before it, to ``store``."""

    def __init__(self, store: Callable[[bytes], None]) -> None:
        self.store = store

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.store(TRACE + envelope.content)
        return Reply(250, "OK: delivered")


def delivery_check(host: str, port: int, smtp: tuple[str, int], **options: Any) -> CheckReport:
    """``check_pop3_server`` as most of these tests run it: the test user, the test
    messages sent through ``smtp`` to ``MAILBOX``, ``delivered-intact`` alone and a 3 s
    timeout, unless ``options`` say otherwise."""
    arguments: dict[str, Any] = {
        "user": USER,
        "password": PASSWORD,
        "timeout": 3.0,
        "checks": ["delivered-intact"],
        "deliver_via": smtp,
        "deliver_to": MAILBOX,
    }
    return check_pop3_server(host, port, **(arguments | options))


def into_maildir(path: Path) -> Callable[[bytes], None]:
    def store(content: bytes) -> None:
        name = f"{next(_names)}.M1P{os.getpid()}.delivered"
        (path / "tmp" / name).write_bytes(content)
        os.rename(path / "tmp" / name, path / "new" / name)

    return store


def into_mailbox(mailbox: Mailbox) -> Callable[[bytes], None]:
    def store(content: bytes) -> None:
        with mailbox.lock:
            mailbox.messages.append(content)

    return store


@pytest.fixture
def own_servers(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """smtpcore's POP3 server over a Maildir holding :data:`KEPT`, and its SMTP server
    delivering into it: the POP3 port, the SMTP port, the Maildir."""
    maildir = tmp_path / USER
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    into_maildir(maildir)(KEPT[0])
    store = MaildirStore(tmp_path, {USER: PASSWORD})
    with (
        running_pop3_server("asyncio", store) as pop3,
        running_smtp_server("asyncio", DeliversTo(into_maildir(maildir))) as smtp,
    ):
        yield pop3.port, smtp.port, maildir


def delivered(maildir: Path) -> list[bytes]:
    return [m for m in maildir_contents(maildir) if MARKER_FIELD in m]


def test_messages_delivered_to_smtpcores_own_server_come_back_intact(
    own_servers: tuple[int, int, Path],
) -> None:
    pop3, smtp, maildir = own_servers
    report = delivery_check(
        "127.0.0.1",
        pop3,
        ("127.0.0.1", smtp),
        checks=["delivered-intact", "dot-stuffing"],
    )
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert "eight-bit" in report["delivered-intact"].summary  # smtpcore offers 8BITMIME
    assert report["dot-stuffing"].outcome is Outcome.PASSED, report  # it reads them too
    assert len(delivered(maildir)) == 4
    assert KEPT[0] in maildir_contents(maildir)
    (note,) = report.notes
    assert "note: 4 delivered" in report.format()
    assert note.startswith(
        "4 delivered test messages were left in the mailbox (a new session finds them all): "
        "pass delete_delivered (--delete-delivered) to delete them, or find them by their "
        f"header '{MARKER_FIELD.decode()}: "
    ), note


def test_delete_delivered_deletes_only_the_test_messages(
    own_servers: tuple[int, int, Path],
) -> None:
    pop3, smtp, maildir = own_servers
    report = delivery_check(
        "127.0.0.1",
        pop3,
        ("127.0.0.1", smtp),
        delete_delivered=True,
    )
    assert report.ok, report
    assert report.notes == (ALL_DELETED,)
    assert maildir_contents(maildir) == KEPT


def test_a_server_that_does_not_stuff_fails_with_an_excerpt_and_keeps_all_mail() -> None:
    mailbox = Mailbox(list(KEPT))
    report = _run(NoStuffing, mailbox, DeliversTo(into_mailbox(mailbox)))
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert "RETR" in result.summary and "(dot-lines)" in result.summary, result.summary
    assert "got b'" in result.summary and "sent b'" in result.summary, result.summary
    assert PASSWORD not in result.summary + result.transcript_text()
    assert mailbox.messages[0] == KEPT[0] and len(mailbox.messages) == 5
    assert "C: b'QUIT\\r\\n'" not in result.transcript_text().rpartition("RETR")[2]


def test_a_server_that_deletes_on_a_dropped_connection_fails_deletion_on_a_test_message() -> None:
    """deletion sent RSET before every close without QUIT, so a server that deletes
    what a dropped session marked passed. With a delivery, one of the battery's own
    messages is marked and the connection dropped: it must be listed again (RFC 1939
    §6). The user's own mail is never marked."""
    mailbox = Mailbox(list(KEPT))
    report = _run(
        CommitsOnClose,
        mailbox,
        DeliversTo(into_mailbox(mailbox)),
        checks=["delivered-intact", "deletion"],
    )
    result = report["deletion"]
    assert result.outcome is Outcome.FAILED, report.format()
    assert result.summary.startswith(
        "a test message marked with DELE (message 2), the connection then dropped without "
        "RSET or QUIT, was gone in a new session"
    ), result.summary
    assert "dropped without RSET or QUIT" in result.transcript_text()
    assert mailbox.messages[0] == KEPT[0] and len(mailbox.messages) == 4


def test_deletion_drops_a_session_with_a_test_message_marked_on_smtpcores_own_server(
    own_servers: tuple[int, int, Path],
) -> None:
    pop3, smtp, maildir = own_servers
    report = delivery_check(
        "127.0.0.1", pop3, ("127.0.0.1", smtp), checks=["delivered-intact", "deletion"]
    )
    result = report["deletion"]
    assert result.outcome is Outcome.PASSED, report.format()
    assert result.summary.endswith(
        "a test message marked with DELE, the connection dropped, was listed again"
    ), result.summary
    assert len(delivered(maildir)) == 4


def test_mail_that_never_arrives_fails_after_the_wait() -> None:
    with (
        serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port),
        running_smtp_server("asyncio", DeliversTo(lambda content: None)) as smtp,
    ):
        report = delivery_check(
            host,
            port,
            ("127.0.0.1", smtp.port),
            deliver_wait=0.5,
        )
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED
    assert "were not in the mailbox 0.5 s after" in result.summary, result.summary


def test_an_smtp_server_that_is_not_there_fails_the_check() -> None:
    with serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port):
        report = delivery_check(
            host,
            port,
            ("127.0.0.1", free_port()),
            timeout=2.0,
        )
    assert report["delivered-intact"].outcome is Outcome.FAILED
    assert "delivering the test messages over SMTP" in report["delivered-intact"].summary
    assert report.notes == ()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"deliver_to": None}, "no mailbox"),  # the POP3 user alice is no mailbox
        ({"deliver_to": MAILBOX, "checks": ["uidl"]}, "delivered-intact"),
        (
            {"deliver_to": MAILBOX, "deliver_user": "bob"},
            r"^give both deliver_user and deliver_password, or neither$",
        ),
        ({"deliver_to": MAILBOX, "deliver_wait": -1.0}, "deliver_wait"),
    ],
)
def test_bad_delivery_arguments_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_pop3_server(
            "127.0.0.1",
            110,
            user=USER,
            password=PASSWORD,
            deliver_via=("127.0.0.1", 25),
            **options,  # type: ignore[arg-type]  # each a keyword of check_pop3_server
        )


def test_cli_delivers_and_says_the_messages_were_left(
    own_servers: tuple[int, int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pop3, smtp, maildir = own_servers
    argv = ["check-pop3", f"127.0.0.1:{pop3}", "--user", USER, "--password", PASSWORD]
    argv += ["--only", "delivered-intact", "--deliver-via", f"127.0.0.1:{smtp}"]
    assert main([*argv, "--deliver-to", MAILBOX, "--deliver-wait", "5"]) == 0
    out = capsys.readouterr().out
    assert "PASSED  delivered-intact" in out and "were left in the mailbox" in out, out
    assert len(delivered(maildir)) == 4


def test_cli_refuses_a_delivery_password_without_a_user(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["check-pop3", "127.0.0.1:110", "--user", USER, "--password", PASSWORD]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--deliver-via", "127.0.0.1:25", "--deliver-password", "x"])
    assert info.value.code == 2
    assert "needs --deliver-user" in capsys.readouterr().err


def test_the_docs_page_delivery_example_runs(
    own_servers: tuple[int, int, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from test_check import python_blocks

    pop3, smtp, _ = own_servers
    page = Path(__file__).parent.parent / "docs" / "testing-check.rst"
    (block,) = [block for block in python_blocks(page) if "deliver_via" in block]
    block = block.replace('"127.0.0.1", 110', f'"127.0.0.1", {pop3}')
    block = block.replace('("127.0.0.1", 25)', f'("127.0.0.1", {smtp})')
    block = block.replace('password="secret"', f"password={PASSWORD!r}")
    exec(compile(block, str(page), "exec"), {"__name__": "docs"})
    out = capsys.readouterr().out
    assert "PASSED  delivered-intact" in out and "were left in the mailbox" in out, out


@pytest.mark.interop
def test_messages_delivered_into_dovecots_maildir_come_back_intact() -> None:
    """smtpcore's SMTP server delivering into the Maildir Dovecot serves, each file handed
    to Dovecot's mail user as it lands."""
    with tempfile.TemporaryDirectory(prefix="smtpcore-dovecot-") as directory:
        os.chmod(directory, 0o755)  # Dovecot's unprivileged processes read in it
        with dovecot_pop3(Path(directory), {USER: PASSWORD}) as dovecot:
            maildir = dovecot.maildir(USER)
            for sub in ("tmp", "new", "cur"):
                (maildir / sub).mkdir(parents=True)
            into_maildir(maildir)(KEPT[0])
            hand_to_dovecot(dovecot, maildir)

            def store(content: bytes) -> None:
                into_maildir(maildir)(content)
                hand_to_dovecot(dovecot, maildir)

            with running_smtp_server("asyncio", DeliversTo(store)) as smtp:
                report = delivery_check(
                    "127.0.0.1",
                    dovecot.port,
                    ("127.0.0.1", smtp.port),
                    timeout=5.0,
                    checks=["delivered-intact", "dot-stuffing"],
                )
            left = maildir_contents(maildir)
    assert report.ok, report
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert KEPT[0] in left and len(left) == 5


class StallsAfterAPeriod(SmallPOP3):
    """Sends RETR up to the first body line that ends in a period (the dot-lines
    message's lone dot, stuffed), then nothing for two seconds: a stall in the middle
    of the message, which delivered-intact, knowing the body, must not take for a
    last line sent without CRLF before the terminator."""

    stalling = False

    def do_RETR(self, words: list[str]) -> bytes:
        answer = super().do_RETR(words)
        head, blank, body = answer.partition(b"\r\n\r\n")
        lines = lines_of(body)[:-1]  # the terminating dot line left out
        cut = next((at for at, line in enumerate(lines) if line.endswith(b".\r\n")), None)
        if not blank or cut is None:
            return answer
        self.stalling = True
        return head + blank + b"".join(lines[: cut + 1])

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        if self.stalling:
            time.sleep(2)
            self.closed = True


def test_a_retr_that_stalls_after_a_period_in_the_body_is_a_timeout() -> None:
    mailbox = Mailbox(list(KEPT))
    report = _run(StallsAfterAPeriod, mailbox, DeliversTo(into_mailbox(mailbox)), timeout=1.0)
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == "no whole reply came within 1 s where one was due", result.summary
    assert "RETR" in result.transcript_text() and b"..\r\n" in b"".join(
        entry.data for entry in result.transcript if entry.side == "server"
    )


# -- the review of --deliver-via: mail kept, secrets hidden, honest notes ------------------


def _run(
    kind: type[SmallPOP3],
    mailbox: Mailbox,
    handler: Handler,
    **options: object,
) -> CheckReport:
    """``delivered-intact`` against ``kind`` over ``mailbox``, delivered by ``handler``."""
    with (
        serve_pop3(kind, mailbox) as (host, port),
        running_smtp_server("asyncio", handler) as smtp,
    ):
        return delivery_check(host, port, ("127.0.0.1", smtp.port), **options)


NEW_MAIL = b"Subject: new\r\n\r\nthe user's mail that came during the run\r\n"


@pytest.mark.parametrize("kind", [UidIsNumber, SessionUidl, NoUidl])
def test_mail_changed_between_sessions_is_never_deleted(
    kind: type[SmallPOP3], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's client takes a message and new mail comes between delivered-intact and
    the delete session: whatever the server's unique-ids, only messages whose ``TOP n 0``
    shows this run's marker may be deleted, and the user's mail is all kept."""
    mailbox = Mailbox([b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"])
    real = delete_delivered

    def after_a_change(probe: POP3Probe, delivery: Delivery) -> str:
        with mailbox.lock:
            del mailbox.messages[0]
            mailbox.messages.append(NEW_MAIL)
        return real(probe, delivery)

    monkeypatch.setattr(check_pop3_module, "delete_delivered", after_a_change)
    report = _run(kind, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True)
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert NEW_MAIL in mailbox.messages and b"Subject: two\r\n\r\n2\r\n" in mailbox.messages
    ours = [m for m in mailbox.messages if MARKER_FIELD in m]
    (note,) = report.notes
    assert f"{4 - len(ours)} of 4 delivered" in note or "none of the 4" in note, note
    if ours:
        assert f"{len(ours)} left in the mailbox" in note, note
        assert f"{MARKER_FIELD.decode()}: " in note and ".*" in note, note


class DeletesRetrievedByNumber(DeletesRetrieved, UidIsNumber):
    """A delete-after-download server (QUIT deletes what TOP or RETR sent) whose
    unique-ids are the message numbers: a TOP too many, or a QUIT after a TOP that
    showed the user's mail, deletes the user's mail."""


def _user_mail_changed(change: str, messages: list[bytes]) -> None:
    """The user's mail as it changes between delivered-intact and the delete session:
    the first message taken and new mail after the test messages, or new mail listed
    before them (a server that lists by date), so that a number names the user's mail."""
    if change == "taken, new after":
        del messages[0]
        messages.append(NEW_MAIL)
    elif change == "new before":
        messages.insert(2, NEW_MAIL)


@pytest.mark.parametrize("change", ["none", "taken, new after", "new before"])
def test_a_delete_after_download_server_keeps_the_users_mail(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete session TOPs only the candidates, and ends without QUIT where a TOP
    shows another message: QUIT deletes every message TOP sent on this server."""
    mailbox = Mailbox([b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"])
    real = delete_delivered

    def after_a_change(probe: POP3Probe, delivery: Delivery) -> str:
        with mailbox.lock:
            _user_mail_changed(change, mailbox.messages)
        return real(probe, delivery)

    kept = list(mailbox.messages)
    _user_mail_changed(change, kept)
    monkeypatch.setattr(check_pop3_module, "delete_delivered", after_a_change)
    report = _run(
        DeletesRetrievedByNumber, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True
    )
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert [m for m in mailbox.messages if MARKER_FIELD not in m] == kept, mailbox.messages
    (note,) = report.notes
    if change == "none":
        assert note == ALL_DELETED, note
    else:
        assert "none of the 4" in note and "now names another message" in note, note


class StaleTopBuffer(UidIsNumber):
    """Once ``lying``, ``TOP n`` serves the header of the message the session's previous
    TOP named (a buffer not refreshed): each test message shows another's marker."""

    lying = False
    previous: list[str] | None = None

    def do_TOP(self, words: list[str]) -> bytes:
        if not self.lying:
            return super().do_TOP(words)
        previous, self.previous = self.previous, words
        return super().do_TOP(previous or words)


class TopAlwaysFirstTest(UidIsNumber):
    """Once ``lying``, ``TOP n`` of the first test message, or of any after it, serves
    the first test message's header (a cache that never refreshes)."""

    lying = False

    def do_TOP(self, words: list[str]) -> bytes:
        number = self.message(words[0]) if len(words) == 2 else None
        if not self.lying or number is None:
            return super().do_TOP(words)
        first = next(n for n, m in enumerate(self.mailbox.messages, 1) if MARKER_FIELD in m)
        return super().do_TOP([str(first), words[1]] if number >= first else words)


@pytest.mark.parametrize("kind", [StaleTopBuffer, TopAlwaysFirstTest])
def test_each_message_deleted_must_show_the_marker_found_under_its_unique_id(
    kind: type[StaleTopBuffer | TopAlwaysFirstTest], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``TOP n 0`` that shows one of the run's markers, but not the one the poll found
    under that message's unique-id, shows a message other than the one the id named:
    with ids by number, after the user's client took a message and new mail came, the
    user's new mail is where the last test message was. Nothing is deleted."""
    mailbox = Mailbox([b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"])
    real = delete_delivered

    def after_a_change(probe: POP3Probe, delivery: Delivery) -> str:
        with mailbox.lock:
            _user_mail_changed("taken, new after", mailbox.messages)
        monkeypatch.setattr(kind, "lying", True)
        return real(probe, delivery)

    monkeypatch.setattr(check_pop3_module, "delete_delivered", after_a_change)
    report = _run(kind, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True)
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert NEW_MAIL in mailbox.messages and b"Subject: two\r\n\r\n2\r\n" in mailbox.messages
    assert sum(MARKER_FIELD in m for m in mailbox.messages) == 4, mailbox.messages
    (note,) = report.notes
    assert "none of the 4" in note and "now names another message" in note, note


class RenumbersWithoutUidl(NoUidl):
    """No UIDL; the first look for the delivered messages does not see the last one, and
    before the second the user's client has taken the first message: every number
    then names the message after the one it named."""

    looks = 0

    def do_PASS(self, words: list[str]) -> bytes:
        answer = super().do_PASS(words)
        if answer.startswith(b"+OK"):
            RenumbersWithoutUidl.looks += 1
            if self.looks == 3:
                with self.mailbox.lock:
                    del self.mailbox.messages[0]
        return answer

    def listed(self) -> list[int]:
        listed = super().listed()
        return listed[:-1] if self.looks == 2 else listed

    def message(self, word: str) -> int | None:
        number = super().message(word)
        return number if number in self.listed() else None


def test_without_uidl_each_look_reads_the_markers_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message number names a message in one session only (RFC 1939 §5): a marker
    read in one look must not be taken for the message that number names in the next."""
    monkeypatch.setattr(RenumbersWithoutUidl, "looks", 0)
    mailbox = Mailbox(list(KEPT))
    report = _run(RenumbersWithoutUidl, mailbox, DeliversTo(into_mailbox(mailbox)))
    assert RenumbersWithoutUidl.looks >= 3, RenumbersWithoutUidl.looks
    assert report["delivered-intact"].outcome is Outcome.PASSED, report


def test_the_delete_session_deletes_nothing_where_uidl_repeats_an_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mailbox = Mailbox(list(KEPT))
    real = delete_delivered

    def with_ids_repeated(probe: POP3Probe, delivery: Delivery) -> str:
        monkeypatch.setattr(RepeatsUid, "repeating", True)
        return real(probe, delivery)

    monkeypatch.setattr(check_pop3_module, "delete_delivered", with_ids_repeated)
    report = _run(RepeatsUid, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True)
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert len(mailbox.messages) == 5 and mailbox.messages[0] == KEPT[0]
    (note,) = report.notes
    assert "none of the 4" in note and "4 left in the mailbox" in note, note
    assert "(UIDL gives one unique-id to two messages)" in note, note


class RefusesThird(DeliversTo):
    """Delivers the first two messages, then refuses the rest for the day."""

    def __init__(self, store: Callable[[bytes], None]) -> None:
        super().__init__(store)
        self.count = 0

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.count += 1
        if self.count >= 3:
            return Reply(552, "5.3.4 no more today")
        return await super().handle_message(session, envelope)


def test_the_delete_note_counts_every_message_delivered_and_says_how_to_find_them() -> None:
    mailbox = Mailbox(list(KEPT))
    report = _run(SmallPOP3, mailbox, RefusesThird(into_mailbox(mailbox)), delete_delivered=True)
    assert report["delivered-intact"].outcome is Outcome.FAILED
    run = report["delivered-intact"].summary  # the note names the run's marker
    (note,) = report.notes
    assert note.startswith("none of the 2 delivered test messages was deleted; 2 left"), note
    assert "(not looked for: the delivery failed)" in note and "UIDL" not in note, note
    assert "X-Smtpcore-Check: " in note and ".*" in note, (note, run)
    assert len(mailbox.messages) == 3


class FailsTheDeleteSession(SmallPOP3):
    """Once ``failing`` is set, fails the delete session its way: a refused login, an
    unreadable unique-id listing, QUIT answered twice after it deleted the DELEs, or
    UIDL refused, so that no DELE is sent, and QUIT answered twice."""

    failing = ""

    def do_PASS(self, words: list[str]) -> bytes:
        if self.failing == "login":
            return b"-ERR [SYS/TEMP] busy, try later\r\n"
        return super().do_PASS(words)

    def do_UIDL(self, words: list[str]) -> bytes:
        if self.failing == "listing" and not words:
            return multi(b"ids", [b"1 uid-1\r\n", b"x y\r\n"])
        if self.failing == "no-uidl, quit":
            return b"-ERR no UIDL today\r\n"
        return super().do_UIDL(words)

    def do_QUIT(self, words: list[str]) -> bytes:
        answer = super().do_QUIT(words)
        return answer + b"+OK and again\r\n" if self.failing.endswith("quit") else answer


ALL_DELETED = (
    "4 of 4 delivered test messages were deleted (DELE, then QUIT, and a new session finds "
    "them no more)"
)
"""The delete session's note where a new session no longer finds any test message."""


class RemovesNoneAtQuit(SmallPOP3):
    """Answers a QUIT after DELE ``-ERR some deleted messages not removed`` and removes
    none of them, as RFC 1939 §6 allows in the UPDATE state (a resource shortage)."""

    def do_QUIT(self, words: list[str]) -> bytes:
        if not self.deleted:
            return super().do_QUIT(words)
        self.closed = True
        return b"-ERR some deleted messages not removed\r\n"


class KeepsAllAtQuit(SmallPOP3):
    """Answers every QUIT ``+OK`` and removes nothing: a QUIT's ``+OK`` is no proof."""

    def do_QUIT(self, words: list[str]) -> bytes:
        self.closed = True
        return b"+OK bye\r\n"


class RemovesAllButSaysNot(SmallPOP3):
    """Removes every marked message at QUIT yet answers ``-ERR some deleted messages not
    removed``: the ``-ERR`` says some or none, never which."""

    def do_QUIT(self, words: list[str]) -> bytes:
        marked = bool(self.deleted)
        answer = super().do_QUIT(words)
        return b"-ERR some deleted messages not removed\r\n" if marked else answer


@pytest.mark.parametrize(
    ("kind", "said", "left"),
    [
        (
            RemovesNoneAtQuit,
            "none of the 4 delivered test messages was deleted; 4 left in the mailbox (4 were "
            "marked with DELE and QUIT got b'-ERR some deleted messages not removed', and a "
            "new session still finds 4 of them): ",
            4,
        ),
        (
            KeepsAllAtQuit,
            "none of the 4 delivered test messages was deleted; 4 left in the mailbox (4 were "
            "marked with DELE and QUIT got b'+OK bye', and a new session still finds 4 of "
            "them): ",
            4,
        ),
        (RemovesAllButSaysNot, ALL_DELETED, 0),
    ],
    ids=["err-removes-none", "ok-removes-none", "err-removes-all"],
)
def test_the_delete_sessions_note_counts_what_a_new_session_no_longer_finds(
    kind: type[SmallPOP3], said: str, left: int
) -> None:
    """The note counted every message marked as deleted where QUIT got ``+OK``, and none
    where it got ``-ERR``: a server that removed nothing was said to have deleted all
    4, and one that removed all was said to have left them. A new session looks now,
    and the note counts the messages it no longer finds."""
    mailbox = Mailbox(list(KEPT))
    report = _run(kind, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True)
    assert report.ok, report
    (note,) = report.notes
    assert note.startswith(said), note
    assert len(mailbox.messages) == 1 + left and mailbox.messages[0] == KEPT[0]


class RemovesFirstOnly(SmallPOP3):
    """Removes only the first message marked at QUIT and answers ``-ERR`` (RFC 1939
    §6); its unique-ids are ``uid-N`` by position, so every id after the one removed
    now names the message after it, and the last id is gone."""

    def do_QUIT(self, words: list[str]) -> bytes:
        if not self.deleted:
            return super().do_QUIT(words)
        self.closed = True
        with self.mailbox.lock:
            del self.mailbox.messages[min(self.deleted) - 1]
        return b"-ERR some deleted messages not removed\r\n"


class RemovesFirstOnlyStableIds(RemovesFirstOnly):
    """:class:`RemovesFirstOnly` with unique-ids that stay with their message."""

    def uid(self, number: int) -> str:
        return hashlib.sha1(self.mailbox.messages[number - 1]).hexdigest()[:16]


class RenumbersAfterUpdate(KeepsAllAtQuit):
    """Removes nothing at a QUIT that answers ``+OK``, and gives every message a new
    unique-id after a session that marked some: no id the poll found is listed."""

    generation = 0

    def uid(self, number: int) -> str:
        return f"g{self.generation}-{number}"

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.deleted:
            RenumbersAfterUpdate.generation += 1
        return super().do_QUIT(words)


class UpdatedOnce(SmallPOP3):
    """Sets ``updated`` at a QUIT after DELE: what follows is the new session's."""

    updated = False

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.deleted:
            type(self).updated = True
        return super().do_QUIT(words)


class UidlLiesAfterUpdate(UpdatedOnce, KeepsAllAtQuit):
    """Removes nothing at QUIT (``+OK``); after it, UIDL lists the user's message alone,
    while LIST, TOP and RETR still serve every message."""

    def do_UIDL(self, words: list[str]) -> bytes:
        if self.updated and not words:
            return multi(b"ids", [b"1 uid-1\r\n"])
        return super().do_UIDL(words)


@pytest.mark.parametrize(
    ("kind", "left"),
    [
        (RemovesFirstOnly, 3),
        (RenumbersAfterUpdate, 4),
        (UidlLiesAfterUpdate, 4),
        (RemovesFirstOnlyStableIds, 3),
    ],
    ids=["ids-by-position", "renumbered", "uidl-leaves-out", "stable-ids"],
)
def test_the_delete_note_counts_by_marker_what_a_new_session_still_finds(
    kind: type[SmallPOP3], left: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new session counted a test message as deleted where its unique-id was no
    longer listed or named another message: ids by position shift after a removal,
    an UPDATE may rename them, UIDL may leave one out, and the note said "4 of 4 ...
    deleted" while 3 or 4 were left, without the header line that finds them. It
    reads the markers of the messages not there before the delivery now, and
    counts those."""
    monkeypatch.setattr(RenumbersAfterUpdate, "generation", 0)
    monkeypatch.setattr(UidlLiesAfterUpdate, "updated", False)
    mailbox = Mailbox(list(KEPT))
    report = _run(kind, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True)
    assert report.ok, report
    assert sum(MARKER_FIELD in m for m in mailbox.messages) == left, mailbox.messages
    (note,) = report.notes
    if left == 4:
        assert note.startswith("none of the 4 delivered test messages was deleted; 4 left"), note
        assert "and a new session still finds 4 of them): " in note, note
    else:
        assert note.startswith(
            "1 of 4 delivered test messages was deleted (DELE, then QUIT, and a new session "
            "finds it no more); 3 left in the mailbox (4 were marked with DELE and QUIT got "
            "b'-ERR some deleted messages not removed', and a new session still finds 3 of "
            "them): find them by their header 'X-Smtpcore-Check: "
        ), note
    assert mailbox.messages[0] == KEPT[0]


class LocksOutAfterUpdate(UpdatedOnce):
    """Deletes what was marked, then refuses every login: the new session cannot look."""

    def do_PASS(self, words: list[str]) -> bytes:
        if self.updated:
            return b"-ERR [AUTH] wonderland is locked out\r\n"
        return super().do_PASS(words)


_SMALL_BOUND: Final = 1 << 16
"""A bound on what one connection may bring, lowered for a test: the battery's
sessions before the flood read far less."""


class HugeUidlAfterUpdate(UpdatedOnce):
    """Deletes what was marked, then lists more unique-ids than a connection may send
    (the bound read when it answers: a test may lower it)."""

    def do_UIDL(self, words: list[str]) -> bytes:
        if self.updated and not words:
            count = wire_module.MAX_RECEIVED // 10
            return multi(b"ids", [b"%d u%d\r\n" % (n, n) for n in range(1, count)])
        return super().do_UIDL(words)


@pytest.mark.parametrize(
    ("kind", "failure"),
    [
        (
            LocksOutAfterUpdate,
            "logging in as 'alice' was refused ('-ERR [AUTH]'; its text is not shown: it may "
            "quote the password)",
        ),
        (HugeUidlAfterUpdate, f"the server sent more than owed: over {_SMALL_BOUND} octets"),
    ],
    ids=["login-refused", "huge-uidl"],
)
def test_a_failed_confirming_session_is_its_own_failure_and_leaves_the_count_unknown(
    kind: type[UpdatedOnce], failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of the session that confirms the deletion was blamed on the delete
    session, with advice to give a user and password the server takes, which it had
    just taken: the note says the deletes were sent and the confirmation failed. The
    bound on what a connection may bring is lowered, so that reaching it takes a
    moment, not the 8 MiB that under load outlasted the timeout (the same check in
    :mod:`~smtpcore.testing._wire`, read at each read)."""
    monkeypatch.setattr(kind, "updated", False)
    monkeypatch.setattr(wire_module, "MAX_RECEIVED", _SMALL_BOUND)
    mailbox = Mailbox(list(KEPT))
    report = _run(kind, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True)
    assert report.ok, report
    assert mailbox.messages == KEPT
    (note,) = report.notes
    assert note.startswith(
        "none of the 4 delivered test messages is known to have been deleted; 4 may be left "
        "in the mailbox (4 were marked with DELE and QUIT got b'+OK bye', but a new session "
        "to confirm it failed: " + failure
    ), note
    assert "the delete session failed" not in note and "give a user" not in note, note
    assert f"'{MARKER_FIELD.decode()}: " in note and ".*'" in note, note


class BadUidlAfterUpdate(UpdatedOnce):
    """After the deletes, UIDL gives a malformed line that quotes the password
    ``pad`` octets in."""

    pad = 0

    def do_UIDL(self, words: list[str]) -> bytes:
        if self.updated and not words:
            line = b"x" * self.pad + b" pw=" + PASSWORD.encode() + b"\r\n"
            return multi(b"ids", [line])
        return super().do_UIDL(words)


@pytest.mark.parametrize("pad", [*range(22, 42), *range(66, 80)])
def test_a_malformed_listing_line_never_shows_the_password_in_part(
    pad: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed scan or unique-id listing line was cut at 80 octets and only then
    hidden, so a password the cut went through showed in part (``pw=wo``); it is
    hidden first and cut after, as every summary's line (``line_said``)."""
    monkeypatch.setattr(BadUidlAfterUpdate, "updated", False)
    monkeypatch.setattr(BadUidlAfterUpdate, "pad", pad)
    mailbox = Mailbox(list(KEPT))
    report = _run(
        BadUidlAfterUpdate, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True
    )
    (note,) = report.notes
    quoted = note.partition("gave the line ")[2].partition(" (RFC 1939")[0]
    assert quoted.startswith("b'xxx"), note
    assert PASSWORD[:3] not in quoted, note


def _delivered(count: int) -> Delivery:
    delivery = Delivery("127.0.0.1", 25, MAILBOX, run="0123")
    content = b"Subject: test\r\n\r\nbody\r\n"
    delivery.messages = [DeliveredMessage(f"m{n}", b"0123.%d" % n, content) for n in range(count)]
    return delivery


def test_the_delete_notes_say_one_message_in_the_singular() -> None:
    """'1 of 4 ... were deleted', '1 were marked': the notes count in the singular now."""
    one = _delivered(1)
    one.marked_before_quit = 1
    assert failed_deletion_note(one, "QUIT got 2 lines") == (
        "the delivered test message is not known to have been deleted; 1 may be left in the "
        "mailbox (the delete session failed: QUIT got 2 lines; its QUIT was sent after 1 was "
        "marked with DELE, which may be deleted): find it by its header "
        "'X-Smtpcore-Check: 0123.*'"
    )
    assert failed_deletion_note(_delivered(1), "UIDL is refused").startswith(
        "the delivered test message was not deleted; 1 left in the mailbox"
    )


@pytest.mark.parametrize(
    ("failing", "failure"),
    [
        ("login", "logging in as 'alice' was refused"),
        ("listing", "a scan or unique-id listing gave the line"),
        ("quit", "QUIT got"),
        ("no-uidl, quit", "UIDL is refused now, and then QUIT got"),
    ],
)
def test_a_failed_delete_session_still_says_how_many_were_left_and_how_to_find_them(
    failing: str, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox = Mailbox(list(KEPT))
    real = delete_delivered

    def failing_then(probe: POP3Probe, delivery: Delivery) -> str:
        monkeypatch.setattr(FailsTheDeleteSession, "failing", failing)
        return real(probe, delivery)

    monkeypatch.setattr(check_pop3_module, "delete_delivered", failing_then)
    report = _run(
        FailsTheDeleteSession, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True
    )
    assert report.ok, report
    (note,) = report.notes
    assert "(the delete session failed: " + failure in note, note
    assert "give a user and password" not in note, note
    assert f"'{MARKER_FIELD.decode()}: " in note and ".*'" in note, note
    if failing == "quit":
        assert note.startswith("none of the 4 delivered test messages is known to have been"), note
        assert "4 may be left in the mailbox" in note, note
        assert "its QUIT was sent after 4 were marked with DELE, which may be deleted" in note
        assert mailbox.messages == KEPT
    else:
        assert note.startswith("none of the 4 delivered test messages was deleted; 4 left"), note
        assert "marked with DELE" not in note and "may be" not in note, note
        assert len(mailbox.messages) == 5 and mailbox.messages[0] == KEPT[0]


def test_a_listing_number_past_pythons_int_limit_fails_the_check() -> None:
    """5000 digits: ``int()`` raises ValueError past 4300; the shared ASCII-digits helper
    with a length bound refuses the line, and the run reports it."""
    mailbox = Mailbox(list(KEPT))
    report = _run(HugeUidlNumber, mailbox, DeliversTo(into_mailbox(mailbox)))
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert "unique-id listing gave the line" in result.summary, result.summary


def test_cli_reports_a_listing_number_past_pythons_int_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mailbox = Mailbox(list(KEPT))
    with (
        serve_pop3(HugeUidlNumber, mailbox) as (host, port),
        running_smtp_server("asyncio", DeliversTo(into_mailbox(mailbox))) as smtp,
    ):
        argv = ["check-pop3", f"{host}:{port}", "--user", USER, "--password", PASSWORD]
        argv += ["--only", "delivered-intact", "--deliver-via", f"127.0.0.1:{smtp.port}"]
        code = main([*argv, "--deliver-to", MAILBOX, "--timeout", "3"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "FAILED  delivered-intact" in out and "unique-id listing gave the line" in out, out


class StoresAsSent(DeliversTo):
    """An MTA that stores the content as it came, a last line without CRLF included."""

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.store(TRACE + envelope.content.removesuffix(b"\r\n"))
        return Reply(250, "OK: delivered")


def test_the_no_final_crlf_message_is_stored_ended(own_servers: tuple[int, int, Path]) -> None:
    """smtpcore's SMTP server offers CHUNKING; the message is submitted with DATA all the
    same, so the client ends its last line (RFC 5321 §4.1.1.4)."""
    pop3, smtp, maildir = own_servers
    delivery_check(
        "127.0.0.1",
        pop3,
        ("127.0.0.1", smtp),
    )
    (stored,) = [m for m in delivered(maildir) if b".no-final-crlf" in m]
    assert stored.endswith(b"\r\nlast\r\n"), stored[-20:]


def test_a_last_line_served_without_crlf_is_a_clear_failure() -> None:
    mailbox = Mailbox(list(KEPT))
    report = _run(SmallPOP3, mailbox, StoresAsSent(into_mailbox(mailbox)))
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert "no CRLF before the terminating dot line" in result.summary, result.summary


class EchoesRefusedAuth:
    """An SMTP server that offers AUTH after STARTTLS and quotes back the AUTH data it
    refuses (PLAIN's initial response, or LOGIN's two answers)."""

    def __init__(
        self,
        context: ssl.SSLContext,
        mechanism: bytes,
        refusal: Callable[[bytes, bytes], bytes] | None = None,
        reply: bytes = b"535 5.7.8",
    ) -> None:
        self.context, self.mechanism, self.reply = context, mechanism, reply
        self.refusal = refusal or (lambda password, user: password + b" for " + user)

    def __call__(self, sock: socket.socket, stop: threading.Event) -> None:
        reader = sock.makefile("rb")
        sock.sendall(b"220 mx.test ready\r\n")
        tls = False
        for _ in range(20):
            words = reader.readline().split()
            verb = words[0].upper() if words else b""
            if verb == b"EHLO":
                offer = b"250-ENHANCEDSTATUSCODES\r\n250 AUTH " if tls else b"250 STARTTLS"
                offer += self.mechanism if tls else b""
                sock.sendall(b"250-mx.test\r\n" + offer + b"\r\n")
            elif verb == b"STARTTLS" and not tls:
                sock.sendall(b"220 go ahead\r\n")
                sock = self.context.wrap_socket(sock, server_side=True)
                reader, tls = sock.makefile("rb"), True
            elif verb == b"AUTH" and len(words) > 2:
                sock.sendall(b"535 5.7.8 refused: " + words[2] + b"\r\n")
            elif verb == b"AUTH":
                sock.sendall(b"334 VXNlcm5hbWU6\r\n")
                user = reader.readline().strip()
                sock.sendall(b"334 UGFzc3dvcmQ6\r\n")
                password = reader.readline().strip()
                refusal = self.refusal(password, user)
                sock.sendall(self.reply + b" refused: " + refusal + b"\r\n")
                if self.reply.startswith(b"421"):  # closes the session (RFC 5321 §3.8)
                    return
            elif verb in (b"QUIT", b""):
                sock.sendall(b"221 bye\r\n")
                return
            else:
                sock.sendall(b"502 5.5.1 no\r\n")


SMTP_PASSWORD = "smtp-Secret-42"


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"LOGIN"])
def test_the_smtp_password_is_hidden_in_every_form_a_server_quotes(
    tls: TLSFiles, mechanism: bytes
) -> None:
    with (
        serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port),
        raw_server(EchoesRefusedAuth(tls.server_context, mechanism), socket_timeout=5) as smtp,
    ):
        report = delivery_check(
            host,
            port,
            smtp,
            deliver_user="bob",
            deliver_password=SMTP_PASSWORD,
        )
    text = report.format()
    assert report["delivered-intact"].outcome is Outcome.FAILED, text
    assert "535 5.7.8" in text and "<hidden>" in text, text
    for form in credential_forms("bob", SMTP_PASSWORD):
        assert form.decode() not in text, (form, text)


QUOTED_AS_TEXT = {
    "decoded": lambda password, user: (
        base64.b64decode(password) + b" for " + base64.b64decode(user)
    ),
    "next to punctuation": lambda password, user: (
        b"(" + password + b"), " + base64.b64decode(password) + b": bad"
    ),
}


@pytest.mark.parametrize("reply", [b"535 5.7.8", b"421 4.7.0"])
@pytest.mark.parametrize("smtp_password", [SMTP_PASSWORD, "p\u00e4ssw\u00f6rd-42", "pw-123"])
@pytest.mark.parametrize("quoting", sorted(QUOTED_AS_TEXT))
def test_a_refused_smtp_login_shows_its_code_and_status_never_its_text(
    tls: TLSFiles, quoting: str, smtp_password: str, reply: bytes
) -> None:
    """A server quoting the LOGIN password decoded (a non-ASCII one as the text it was
    typed as, a short one that is hidden only as a word) or next to punctuation, in a
    535 or in a 421 that closes the session: the failure says the code and status and
    nothing after them."""
    refusal = QUOTED_AS_TEXT[quoting]
    with (
        serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port),
        raw_server(
            EchoesRefusedAuth(tls.server_context, b"LOGIN", refusal, reply), socket_timeout=5
        ) as smtp,
    ):
        report = delivery_check(
            host,
            port,
            smtp,
            deliver_user="bob",
            deliver_password=smtp_password,
        )
    text = report.format()
    summary = report["delivered-intact"].summary
    assert report["delivered-intact"].outcome is Outcome.FAILED, text
    assert f"refused AUTH as bob: {reply.decode()} (its text is not shown" in summary, summary
    assert "refused:" not in summary, summary
    assert smtp_password not in text, text
    for form in credential_forms("bob", smtp_password):
        assert form.decode() not in text, (form, text)


def test_every_wire_form_of_a_credential_is_listed() -> None:
    forms = set(credential_forms("bob", "pw"))
    assert {b"pw", base64.b64encode(b"pw"), base64.b64encode(b"\0bob\0pw")} <= forms
    assert base64.b64encode(b"bob\0bob\0pw") in forms  # PLAIN with the authzid given


@pytest.mark.parametrize(
    "options",
    [
        {"deliver_to": MAILBOX},
        {"deliver_user": "bob", "deliver_password": "pw"},
        {"delete_delivered": True},
        {"checks": ["delivered-intact"]},
    ],
)
def test_delivery_options_without_deliver_via_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="deliver_via"):
        check_pop3_server(
            "127.0.0.1",
            free_port(),
            user=USER,
            password=PASSWORD,
            **options,  # type: ignore[arg-type]  # each a keyword of check_pop3_server
        )


@pytest.mark.parametrize("keyword", ["user", "password", "deliver_user", "deliver_password"])
def test_a_credential_utf8_cannot_encode_is_refused_before_any_connection(keyword: str) -> None:
    """A lone surrogate has no UTF-8 octets to send nor to hide: a ValueError naming the
    argument, before any connection, not a UnicodeEncodeError mid-run."""
    arguments: dict[str, str] = {
        "user": USER,
        "password": PASSWORD,
        "deliver_user": "bob",
        "deliver_password": "pw-123",
    }
    arguments[keyword] = "pw\udcffsecret"
    with pytest.raises(ValueError, match=f"^{keyword} must be text that UTF-8 can encode"):
        check_pop3_server(
            "127.0.0.1",
            free_port(),
            checks=["delivered-intact"],
            deliver_via=("127.0.0.1", free_port()),
            deliver_to=MAILBOX,
            timeout=1.0,
            user=arguments["user"],
            password=arguments["password"],
            deliver_user=arguments["deliver_user"],
            deliver_password=arguments["deliver_password"],
        )


class FakeTty:
    """A standard input that is a terminal, so that a password would be prompted for."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal without SMTPCORE_PASSWORD, where any password prompt fails the test."""
    monkeypatch.delenv("SMTPCORE_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin", FakeTty())
    monkeypatch.setattr("getpass.getpass", lambda *a, **k: pytest.fail("a password prompt"))


@pytest.mark.usefixtures("no_prompt")
@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--only", "delivered-intact"], "--only delivered-intact"),
        (["--deliver-to", MAILBOX], "--deliver-to"),
        (["--deliver-user", "bob"], "--deliver-user"),
        (["--delete-delivered"], "--delete-delivered"),
    ],
)
def test_cli_refuses_delivery_options_without_deliver_via(
    extra: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check-pop3", f"127.0.0.1:{free_port()}", "--user", USER]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--timeout", "1", *extra])
    assert info.value.code == 2
    assert f"error: {option} needs --deliver-via HOST:PORT" in capsys.readouterr().err


@pytest.mark.usefixtures("no_prompt")
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--deliver-wait", "601"], "deliver_wait must be from 0 to 600 seconds"),
        (["--deliver-to", "not a mailbox"], "deliver_to 'not a mailbox' is no mailbox"),
        (["--only", "number-edges"], "deliver_via is for the delivered-intact check"),
    ],
)
def test_cli_refuses_bad_delivery_options_before_any_password_prompt(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["check-pop3", "127.0.0.1:1", "--user", USER, "--deliver-user", "bob"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--deliver-via", "127.0.0.1:1", *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--password", "--deliver-password"])
def test_cli_refuses_a_password_that_is_not_utf8(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An argv octet that is not UTF-8 comes as a lone surrogate, which no wire takes."""
    argv = ["check-pop3", "127.0.0.1:1", "--user", USER, "--password", PASSWORD]
    argv += ["--deliver-via", "127.0.0.1:1", "--deliver-to", MAILBOX, "--deliver-user", "bob"]
    argv += ["--deliver-password", "smtp-pw", option, "se\udcffcret"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "the password holds an octet that is not UTF-8" in err and "cret" not in err, err


def test_a_missing_smtp_password_is_not_sought_in_smtpcore_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SMTPCORE_PASSWORD holds the POP3 user's password, never --deliver-user's."""
    monkeypatch.setenv("SMTPCORE_PASSWORD", PASSWORD)
    monkeypatch.setattr("sys.stdin", io.StringIO())
    argv = ["check-pop3", "127.0.0.1:1", "--user", USER, "--deliver-via", "127.0.0.1:1"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--deliver-to", MAILBOX, "--deliver-user", "bob"])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "no password for bob: give --deliver-password-file FILE, or run on a" in err, err
    assert "SMTPCORE_PASSWORD" not in err, err


def test_deliver_wait_is_bounded() -> None:
    with pytest.raises(ValueError, match="deliver_wait must be from 0 to 600 seconds"):
        delivery_check(
            "127.0.0.1",
            110,
            ("127.0.0.1", 25),
            deliver_wait=601.0,
        )


def test_the_poll_opens_few_sessions_however_long_the_wait() -> None:
    """The sleep between polls grows, so that a long wait logs in a bounded number of times."""
    sleeps = list(poll_sleeps(600.0))
    assert len(sleeps) <= 100 and sum(sleeps) >= 600.0
    assert sleeps == sorted(sleeps)


@given(wait=st.floats(min_value=0.0, max_value=600.0))
def test_the_poll_sleeps_cover_the_wait_in_few_sessions(wait: float) -> None:
    sleeps = list(poll_sleeps(wait))
    assert len(sleeps) <= 100 and sum(sleeps) == pytest.approx(wait)


# -- what a header read may bring: TOP n 0 within a header section's bound ---------------


class EndlessTestMessage(SmallPOP3):
    """Answers ``verb`` for a test message (``TOP`` of a header, ``RETR``) with ``+OK``
    and header lines that never end, 64 KiB a write, up to 135 writes (over the 8 MiB a
    connection reads at most). With ``after_update``, only once a QUIT after DELE set
    ``updated``, and that QUIT removes nothing, so the new session reads them."""

    verb = "TOP"
    after_update = False
    updated = False

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.flooding = False

    def endless(self, verb: str, words: list[str]) -> bool:
        number = self.message(words[0]) if words else None
        return (
            verb == self.verb
            and number is not None
            and MARKER_FIELD in self.mailbox.messages[number - 1]
            and self.updated == self.after_update
        )

    def do_TOP(self, words: list[str]) -> bytes:
        if self.endless("TOP", words):
            self.flooding = True
            return b"+OK\r\n"
        return super().do_TOP(words)

    def do_RETR(self, words: list[str]) -> bytes:
        if self.endless("RETR", words):
            self.flooding = True
            return b"+OK\r\n"
        return super().do_RETR(words)

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.deleted:
            type(self).updated = True
        if self.after_update:  # removes nothing: the new session reads the test messages
            self.closed = True
            return b"+OK bye\r\n"
        return super().do_QUIT(words)

    def sent(self, sock: socket.socket, buffer: bytearray) -> None:
        if not self.flooding:
            return
        self.flooding, self.closed = False, True
        line = b"X-Filler: " + b"f" * 52 + b"\r\n"
        for _ in range(135):
            try:
                sock.sendall(line * 1024)
            except OSError:
                return


def _server_octets(result: CheckResult) -> int:
    return sum(len(entry.data) for entry in result.transcript if entry.side == "server")


@pytest.mark.parametrize(
    ("verb", "said"),
    [
        (
            "TOP",
            "4 of 4 test messages (dot-lines, no-final-crlf, long-line, eight-bit) were not "
            "in the mailbox",
        ),
        (
            "RETR",
            "the response to RETR 2 ran over 262226 octets without the terminating dot line "
            "(more than a header section and twice the 40-octet body sent)",
        ),
    ],
)
def test_a_test_messages_endless_response_fails_within_a_header_sections_bound(
    verb: str, said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOP n 0 (and RETR of a test message) was read whole: a server that sent header
    lines with no end was read to the 8 MiB a connection may bring, and failed as a
    flood ("the server sent more than owed"). RETR of a test message is read to a
    header section and twice its body, and the failure says what went wrong, having
    read little more; TOP n 0 of a message not yet known to be a test message to
    twice LIST's size and 4, past which it is no test message."""
    monkeypatch.setattr(EndlessTestMessage, "verb", verb)
    monkeypatch.setattr(EndlessTestMessage, "updated", False)
    mailbox = Mailbox(list(KEPT))
    report = _run(EndlessTestMessage, mailbox, DeliversTo(into_mailbox(mailbox)))
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary.startswith(said), result.summary
    assert _server_octets(result) < 1 << 20, _server_octets(result)
    assert mailbox.messages[0] == KEPT[0] and len(mailbox.messages) == 5


def test_an_endless_top_in_the_confirming_session_leaves_the_count_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(EndlessTestMessage, "after_update", True)
    monkeypatch.setattr(EndlessTestMessage, "updated", False)
    mailbox = Mailbox(list(KEPT))
    report = _run(
        EndlessTestMessage, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True
    )
    assert report.ok, report
    (note,) = report.notes
    assert note.startswith(
        "none of the 4 delivered test messages is known to have been deleted; 4 may be left "
        "in the mailbox (4 were marked with DELE and QUIT got b'+OK bye', but a new session "
        "to confirm it failed: the response to TOP "
    ), note
    assert "octets without the terminating dot line (more than a header section" in note, note


# -- unique-ids given to another message: never taken for the message they named --------


class UserTakesMailAtUpdate(KeepsAllAtQuit):
    """Ids by position (``uid-N``); a QUIT after DELE removes nothing and answers
    ``+OK``, and at that moment the user's own client takes the first message, the
    user's: each test message moves to the id the message before it had, the first
    to ``uid-1``, the user's before the delivery."""

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.deleted:
            with self.mailbox.lock:
                del self.mailbox.messages[0]
        return super().do_QUIT(words)


def test_a_test_message_under_an_id_the_mailbox_had_before_is_still_counted() -> None:
    """The confirming session did not read a message listed under a unique-id the
    mailbox had before the delivery, and so counted the test message a server gave
    that id as deleted: "1 of 4 ... was deleted" with all 4 left. It reads a message
    whose size is not that id's message's, counts its marker, and says which ids
    named another message."""
    mailbox = Mailbox(list(KEPT))
    report = _run(
        UserTakesMailAtUpdate, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True
    )
    assert report.ok, report
    assert sum(MARKER_FIELD in m for m in mailbox.messages) == 4 == len(mailbox.messages)
    (note,) = report.notes
    assert note.startswith(
        "none of the 4 delivered test messages was deleted; 4 left in the mailbox (4 were "
        "marked with DELE and QUIT got b'+OK bye', and a new session still finds 4 of them): "
        "find them by their header 'X-Smtpcore-Check: "
    ), note
    assert note.endswith(
        "; and the new session's UIDL gives a message a unique-id another had (RFC 1939 §7: "
        "an id names one message, and is never given to another): b'uid-1' names test "
        "message dot-lines, where it named another message before the delivery; b'uid-2' "
        "names test message no-final-crlf, where it named test message dot-lines when it "
        "was found; b'uid-3' names test message long-line, where it named test message "
        "no-final-crlf when it was found; 1 more"
    ), note


def test_a_test_message_under_an_id_the_mailbox_had_before_is_found_and_reported() -> None:
    """The user's client takes their mail between the look before the delivery and the
    delivery, and a server with ids by position gives the first test message the id
    the user's message had: the poll never read it, and the check failed as though it
    never came ("1 of 4 test messages (dot-lines) were not in the mailbox"). It is
    read, for its size is not the one that id had, found, and the reused id fails
    the check (RFC 1939 §7)."""
    mailbox = Mailbox(list(KEPT))
    store = into_mailbox(mailbox)

    def user_takes_first_then_store(content: bytes) -> None:
        with mailbox.lock:
            if KEPT[0] in mailbox.messages:
                mailbox.messages.remove(KEPT[0])
        store(content)

    report = _run(SmallPOP3, mailbox, DeliversTo(user_takes_first_then_store), deliver_wait=1.0)
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert result.summary == (
        "UIDL lists test message dot-lines under b'uid-1', the unique-id of another message "
        "before the delivery (RFC 1939 §7: a unique-id names one message, and a server never "
        "gives it to another)"
    ), result.summary
    assert len(mailbox.messages) == 4


# -- the user's own mail: a header of any size is no failure ------------------------------

_RECEIVED_CHAIN = b"".join(
    b"Received: from relay%d.example.net (relay%d.example.net [192.0.2.1])\r\n"
    b"\tby mx.example.org with ESMTPS id abcdefghijkl%06d; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
    % (i, i, i)
    for i in range(2300)
)
BIG_HEADER = _RECEIVED_CHAIN + b"Subject: newsletter\r\n\r\nhello\r\n"
"""A user's message whose header section (a long trace chain) is over 256 KiB: RFC 5322
sets no limit, and Exim's header_maxsize defaults to 1 MB."""
NO_BLANK_LINE = b"Subject: log dump\r\n" + b"".join(
    b"X-Log-%d: " % i + b"y" * 60 + b"\r\n" for i in range(4500)
)
"""A user's message of over 256 KiB with no blank line: all of it is header, and a
correct ``TOP n 0`` sends all of it."""


class HeaderArrivesWithTheDelivery(SmallPOP3):
    """Correct, with UIDL; the user's message with a large header comes in with the
    first test message (:func:`_with_big_mail_first`), during the poll."""


def _with_big_mail_first(mailbox: Mailbox) -> Callable[[bytes], None]:
    store = into_mailbox(mailbox)
    first = [True]

    def both(content: bytes) -> None:
        if first[0]:
            with mailbox.lock:
                mailbox.messages.append(BIG_HEADER)
            first[0] = False
        store(content)

    return both


@pytest.mark.parametrize(
    ("kind", "mail", "arrives"),
    [
        (NoUidl, BIG_HEADER, False),
        (NoUidl, NO_BLANK_LINE, False),
        (HeaderArrivesWithTheDelivery, BIG_HEADER, True),
    ],
    ids=["no-uidl-big-header", "no-uidl-no-blank-line", "uidl-big-header-during-poll"],
)
def test_a_users_header_past_a_header_section_is_no_failure(
    kind: type[SmallPOP3], mail: bytes, arrives: bool
) -> None:
    """``TOP n 0`` of every message the poll had not yet identified was cut at 256 KiB
    and failed the check ("the response to TOP 1 0 ran over 262144 octets"): on a
    correct server, for the user's own mail with a header that large, or with no
    blank line. A message not yet known to be a test message is bounded by the size
    LIST gives it; past 256 KiB of header it is simply not a test message."""
    mailbox = Mailbox(list(KEPT) if arrives else [mail])
    store = _with_big_mail_first(mailbox) if arrives else into_mailbox(mailbox)
    report = _run(kind, mailbox, DeliversTo(store))
    result = report["delivered-intact"]
    assert result.outcome is Outcome.PASSED, result.summary
    assert mail in mailbox.messages


class BigMailAtUpdate(SmallPOP3):
    """Correct; the user's message with a large header comes in just as the delete
    session's QUIT removes the test messages: the confirming session reads it."""

    def do_QUIT(self, words: list[str]) -> bytes:
        answer = super().do_QUIT(words)
        if self.deleted:
            with self.mailbox.lock:
                self.mailbox.messages.append(BIG_HEADER)
        return answer


def test_a_users_big_header_leaves_the_deletion_count_known() -> None:
    """The session that confirms a deletion failed on the user's new mail with a header
    over 256 KiB, and the note said none was known to be deleted. It reads that
    message within LIST's size, and counts the 4 test messages gone."""
    mailbox = Mailbox(list(KEPT))
    report = _run(
        BigMailAtUpdate, mailbox, DeliversTo(into_mailbox(mailbox)), delete_delivered=True
    )
    assert report.ok, report
    (note,) = report.notes
    assert note.startswith("4 of 4 delivered test messages were deleted"), note
    assert mailbox.messages == [*KEPT, BIG_HEADER]


# -- the poll's transcripts: a session that found nothing keeps little ---------------------

_HUGE_UIDL = b"+OK ids\r\n" + (b"1 " + b"a" * 1000 + b"\r\n") * 300 + b".\r\n"


class HugeUidlListing(SmallPOP3):
    """Answers UIDL with 300 lines of a 1000-octet unique-id each (one message listed
    300 times): a large answer every look, which the poll read and kept in full."""

    def do_UIDL(self, words: list[str]) -> bytes:
        return _HUGE_UIDL if not words else super().do_UIDL(words)


class Discards(Handler):
    """Takes every message and delivers none: the poll looks until the wait is over."""

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        return Reply(250, "OK")


def test_the_polls_sessions_that_found_nothing_keep_short_transcripts() -> None:
    """Every look of the poll kept all it read, up to 8 MiB a session and a hundred
    sessions (~550 MiB against a hostile server). A session that found nothing keeps
    the first and last octets of each read, with a count of those dropped, so that
    the result holds about one session's reads; the password is hidden first."""
    mailbox = Mailbox(list(KEPT))
    report = _run(HugeUidlListing, mailbox, Discards(), deliver_wait=1.0)
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert "were not in the mailbox" in result.summary, result.summary
    looks = sum(e.note.startswith("connect to") for e in result.transcript if e.side == "note")
    assert looks >= 4, looks  # the snapshot, and at least three looks
    assert _server_octets(result) < 2 * len(_HUGE_UIDL), _server_octets(result)
    assert any(e.note.endswith("octets of this read not kept") for e in result.transcript)


# -- deletion: a DELE only where that session's TOP showed the test message --------------


class WatchesDele(SmallPOP3):
    """Records each DELE of a message whose ``TOP n 0`` in that session showed no test
    message's marker (``unseen``, set per test)."""

    unseen: list[int] = []  # noqa: RUF012 - replaced per test, by monkeypatch

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        self.shown: set[int] = set()

    def do_TOP(self, words: list[str]) -> bytes:
        answer = super().do_TOP(words)
        number = self.message(words[0]) if words else None
        if number is not None and answer.startswith(b"+OK") and MARKER_FIELD in answer:
            self.shown.add(number)
        return answer

    def do_DELE(self, words: list[str]) -> bytes:
        number = self.message(words[0]) if len(words) == 1 else None
        if number is not None and number not in self.shown:
            type(self).unseen.append(number)
        return super().do_DELE(words)


class WatchedByPosition(WatchesDele, UidIsNumber):
    """:class:`WatchesDele` with unique-ids by position."""


_ONE, _TWO = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n2\r\n"


@pytest.mark.parametrize("kind", [WatchesDele, WatchedByPosition])
@pytest.mark.parametrize("change", ["new first", "new at 2", "take test 1", "same size first"])
def test_deletion_deles_only_what_that_sessions_top_showed(
    kind: type[WatchesDele], change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The user's client takes their first message before the delivery (a test message
    may then be found under the user's old id), and the mailbox changes again before
    the delete session: new mail first or second, a test message taken, or new mail
    of a test message's very size first. No DELE goes to a message whose ``TOP n 0``
    in the delete session did not show a test message, and the user's mail is kept."""
    monkeypatch.setattr(kind, "unseen", [])
    mailbox = Mailbox([_ONE, _TWO])
    store = into_mailbox(mailbox)

    def user_takes_first(content: bytes) -> None:
        with mailbox.lock:
            if _ONE in mailbox.messages:
                mailbox.messages.remove(_ONE)
        store(content)

    real = delete_delivered

    def after_a_change(probe: POP3Probe, delivery: Delivery) -> str:
        with mailbox.lock:
            messages = mailbox.messages
            if change == "new first":
                messages.insert(0, NEW_MAIL)
            elif change == "new at 2":
                messages.insert(1, NEW_MAIL)
            elif change == "take test 1":
                del messages[1]
            else:
                messages.insert(0, b"X" * (len(messages[1]) - 4) + b"\r\n\r\n")
        return real(probe, delivery)

    monkeypatch.setattr(check_pop3_module, "delete_delivered", after_a_change)
    _run(kind, mailbox, DeliversTo(user_takes_first), delete_delivered=True, deliver_wait=2.0)
    assert kind.unseen == []
    assert _TWO in mailbox.messages
    assert change not in ("new first", "new at 2") or NEW_MAIL in mailbox.messages
    assert change != "same size first" or mailbox.messages[0].startswith(b"XXXX")


# -- the second review: tiny mail, ids given anew in the poll, the evidence kept ----------


@pytest.mark.parametrize("tiny", [b"", b"x", b".", b"..", b"ab"])
def test_a_users_tiny_message_is_read_within_its_bound(tiny: bytes) -> None:
    """``TOP n 0`` of a message of 0 to 2 octets with no CRLF adds a CRLF and the blank
    line: ``x`` comes as 5 octets, past the 2 * 1 + 2 the bound was, and a correct
    server failed the check. The bound is twice LIST's size and 4."""
    mailbox = Mailbox([tiny])
    report = _run(NoUidl, mailbox, DeliversTo(into_mailbox(mailbox)))
    assert report["delivered-intact"].outcome is Outcome.PASSED, report["delivered-intact"]


class ApproximateSizes(SmallPOP3):
    """LIST gives each message a tenth of its size (an estimate, as some servers do)."""

    def do_LIST(self, words: list[str]) -> bytes:
        answer = super().do_LIST(words)
        if words:
            return answer
        lines = answer.split(b"\r\n")
        for i, line in enumerate(lines[1:-2], 1):
            number, size = line.split(b" ")
            lines[i] = b"%s %d" % (number, int(size) // 10)
        return b"\r\n".join(lines)


def test_an_overrun_on_a_message_not_known_to_be_a_test_message_is_no_failure() -> None:
    """A response past LIST's size on a message not yet known to be a test message
    failed the check; such a message is now no test message (its marker past the
    bound is not looked for), and the look goes on in a new session."""
    big = b"Subject: big\r\n" + b"X-Pad: " + b"p" * 200 + b"\r\n\r\nbody\r\n"
    mailbox = Mailbox([big])
    report = _run(ApproximateSizes, mailbox, DeliversTo(into_mailbox(mailbox)), deliver_wait=1.0)
    result = report["delivered-intact"]
    assert "without the terminating dot line" not in result.summary, result.summary


def test_an_id_first_seen_in_the_poll_is_read_again_at_another_size() -> None:
    """The poll kept each unique-id's marker by the id alone: an id a position-numbered
    server gave first to the user's new mail, then to a test message, was never read
    again, and the check said the test message "was not in the mailbox". The marker
    is kept by id and LIST's size, and the id given anew is reported."""
    first, second = b"Subject: one\r\n\r\n1\r\n", b"Subject: two, new\r\n\r\nnew mail\r\n"
    mailbox = Mailbox([first])
    pending: list[bytes] = []
    seen = threading.Event()

    def store(message: bytes) -> None:
        if not pending:
            mailbox.messages.append(second)
        pending.append(TRACE + message)

    class LandsAfterALook(UidIsNumber):
        def do_TOP(self, words: list[str]) -> bytes:
            answer = super().do_TOP(words)
            if b"new mail" not in answer and b"two, new" in answer and len(pending) == 4:
                if seen.is_set():
                    return answer
                seen.set()
                threading.Timer(0.3, land).start()
            return answer

    def land() -> None:
        with mailbox.lock:
            del mailbox.messages[0]
            mailbox.messages.extend(pending)

    report = _run(LandsAfterALook, mailbox, DeliversTo(store), deliver_wait=4.0)
    result = report["delivered-intact"]
    assert "were not in the mailbox" not in result.summary, result.summary
    assert "unique-id of another message earlier in the poll" in result.summary, result.summary


class MangledMarker(SmallPOP3):
    """TOP folds the marker line into the field before it: no marker is ever found."""

    def do_TOP(self, words: list[str]) -> bytes:
        answer = super().do_TOP(words)
        return answer.replace(b"\r\n" + MARKER_FIELD + b": ", b" " + MARKER_FIELD + b"= ")


def test_the_last_look_keeps_what_the_server_sent_for_each_message() -> None:
    """Each marker read was kept, so a message was read in one look only, and that
    look, having found nothing, kept 300 octets of each read: a failure "not in the
    mailbox" no longer showed what the server sent. The last look reads every
    header again and keeps it whole."""
    pad = b"X-Spam-Report: " + b"* 0.1 SOME_RULE long explanation\r\n\t" * 20 + b"end\r\n"
    mailbox = Mailbox(list(KEPT))
    report = _run(
        MangledMarker,
        mailbox,
        DeliversTo(lambda m: mailbox.messages.append(TRACE + pad + m)),
        deliver_wait=1.0,
    )
    result = report["delivered-intact"]
    assert "were not in the mailbox" in result.summary, result.summary
    read = b"".join(e.data for e in result.transcript if e.side == "server")
    assert read.count(MARKER_FIELD + b"= ") >= 4, read.count(MARKER_FIELD + b"= ")


# -- the third review: an overrun bounded, naming no id, counted --------------------------

_HEADER_HEAVY = b"Subject: " + b"x" * 300 + b"\r\n\r\nbody\r\n"
"""A user's message whose ``TOP n 0`` runs past twice a third of its size."""


def _scan_listing(server: SmallPOP3, size: Callable[[bytes], int]) -> bytes:
    """LIST's answer, each message given ``size`` of its content."""
    messages = server.mailbox.messages
    return multi(b"listing", [b"%d %d\r\n" % (n, size(messages[n - 1])) for n in server.listed()])


def _understated_if_test(content: bytes) -> int:
    return 10 if MARKER_FIELD in content else len(content)


class Unsteady(SmallPOP3):
    """Once ``unsteady`` is set (at a QUIT after DELE, or from the start), gives other
    unique-ids each session and LIST a third of each message's size: each session's
    ``TOP n 0`` of :data:`_HEADER_HEAVY` overruns, and the next lists it anew. A login
    past the 40th session is refused, so that a look that never ends fails for that."""

    unsteady = False
    sessions = 0

    def __init__(self, mailbox: Mailbox, *, stls: bool = False) -> None:
        super().__init__(mailbox, stls=stls)
        Unsteady.sessions += 1
        self.session_number = Unsteady.sessions

    def uid(self, number: int) -> str:
        return f"s{self.session_number}-{number}" if Unsteady.unsteady else super().uid(number)

    def do_PASS(self, words: list[str]) -> bytes:
        return b"-ERR [SYS/TEMP] busy\r\n" if Unsteady.sessions > 40 else super().do_PASS(words)

    def do_LIST(self, words: list[str]) -> bytes:
        if words or not Unsteady.unsteady:
            return super().do_LIST(words)
        return _scan_listing(self, lambda content: len(content) // 3)

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.deleted:
            Unsteady.unsteady = True
        return super().do_QUIT(words)


@pytest.mark.parametrize("where", ["poll", "confirming session"])
def test_a_look_whose_responses_keep_overrunning_ends(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that lists a message anew each session (another unique-id) at a size
    its ``TOP n 0`` overruns had a look open sessions without end, in the poll and in
    the session confirming a deletion: each overrun sent the look to a new session,
    where the message was new again. A look now takes at most one session more than
    its first listing had messages to read, then fails saying why."""
    monkeypatch.setattr(Unsteady, "unsteady", where == "poll")
    monkeypatch.setattr(Unsteady, "sessions", 0)
    mailbox = Mailbox([_HEADER_HEAVY])
    report = _run(
        Unsteady,
        mailbox,
        DeliversTo(into_mailbox(mailbox)),
        deliver_wait=1.0,
        delete_delivered=True,
    )
    said = "responses kept overrunning twice LIST's size in "
    if where == "poll":
        result = report["delivered-intact"]
        assert result.outcome is Outcome.FAILED and said in result.summary, result.summary
    else:
        (note,) = report.notes
        assert "but a new session to confirm it failed: " + said in note, note
    assert Unsteady.sessions < 20, Unsteady.sessions


class UnderstatesTests(SmallPOP3):
    """Unique-ids by content (never reused); LIST gives each test message 10 octets
    in the first listing that has them (``once``) or in every one: ``TOP n 0`` of a
    test message then overruns."""

    once = True
    understated = False

    def uid(self, number: int) -> str:
        return "h" + hashlib.sha1(self.mailbox.messages[number - 1]).hexdigest()[:12]

    def do_LIST(self, words: list[str]) -> bytes:
        tests = any(MARKER_FIELD in self.mailbox.messages[n - 1] for n in self.listed())
        if words or not tests or (self.once and UnderstatesTests.understated):
            return super().do_LIST(words)
        UnderstatesTests.understated = True
        return _scan_listing(self, _understated_if_test)


class AlwaysUnderstatesTests(UnderstatesTests):
    once = False


def test_an_overrun_says_nothing_of_which_message_an_id_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An overrun was kept as "no test message" under the message's unique-id: a look
    that then read the test message, at LIST's exact size, found its marker under an
    id that "named" no test message, and failed a correct server's ids as reused. An
    overrun leaves the message unread, and names nothing."""
    monkeypatch.setattr(UnderstatesTests, "understated", False)
    mailbox = Mailbox(list(KEPT))
    report = _run(UnderstatesTests, mailbox, DeliversTo(mailbox.messages.append), deliver_wait=3.0)
    result = report["delivered-intact"]
    assert result.outcome is Outcome.PASSED, result.summary


def test_not_in_the_mailbox_counts_the_messages_that_overran() -> None:
    """Where LIST understated every test message, the failure said they "were not in
    the mailbox", and nothing of the overruns that left them unread. It counts them."""
    mailbox = Mailbox(list(KEPT))
    report = _run(
        AlwaysUnderstatesTests, mailbox, DeliversTo(mailbox.messages.append), deliver_wait=1.0
    )
    result = report["delivered-intact"]
    assert "were not in the mailbox" in result.summary, result.summary
    assert "; 4 messages were not read, the response to TOP n 0" in result.summary, result.summary


class KeepsDeletedUnderstated(SmallPOP3):
    """QUIT after DELE answers ``+OK`` and removes nothing; from then on LIST gives
    each test message 10 octets, so that its ``TOP n 0`` overruns."""

    quit_after_dele = False

    def do_LIST(self, words: list[str]) -> bytes:
        if words or not KeepsDeletedUnderstated.quit_after_dele:
            return super().do_LIST(words)
        return _scan_listing(self, _understated_if_test)

    def do_QUIT(self, words: list[str]) -> bytes:
        if self.deleted:
            KeepsDeletedUnderstated.quit_after_dele = True
            self.deleted.clear()
        return super().do_QUIT(words)


def test_the_confirming_session_counts_no_overrun_as_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In the session confirming a deletion, a message whose ``TOP n 0`` overran was
    read as showing no marker: test messages still there, LIST understating them,
    were counted as deleted. Such a message is unread, and leaves the count unknown."""
    monkeypatch.setattr(KeepsDeletedUnderstated, "quit_after_dele", False)
    mailbox = Mailbox(list(KEPT))
    report = _run(
        KeepsDeletedUnderstated,
        mailbox,
        DeliversTo(into_mailbox(mailbox)),
        delete_delivered=True,
        deliver_wait=2.0,
    )
    (note,) = report.notes
    assert note.startswith("none of the 4 delivered test messages is known to have been deleted")
    assert "could not read the header of 4 messages (the response to TOP n 0" in note, note
    assert len(mailbox.messages) == 5


# -- the note of messages left: what a new session finds, not what was submitted --------


def test_the_left_note_counts_what_a_new_session_finds_after_deletion_drops_one() -> None:
    """The note said "4 delivered test messages ... were left in the mailbox", counting
    what SMTP took, after ``deletion`` on a server that commits on a dropped connection
    had removed one of them. A new session looks now, and the note says what it finds."""
    mailbox = Mailbox(list(KEPT))
    report = _run(
        CommitsOnClose,
        mailbox,
        DeliversTo(into_mailbox(mailbox)),
        checks=["delivered-intact", "deletion"],
    )
    assert report["deletion"].outcome is Outcome.FAILED, report.format()
    assert sum(MARKER_FIELD in m for m in mailbox.messages) == 3, mailbox.messages
    (note,) = report.notes
    assert note.startswith(
        "3 of 4 delivered test messages were left in the mailbox (a new session finds 3; 1 "
        "was not found): pass delete_delivered (--delete-delivered) to delete them, or find "
        f"them by their header '{MARKER_FIELD.decode()}: "
    ), note
    assert ".*'; and the new session's UIDL gives a message a unique-id another had" in note, (
        note
    )  # SmallPOP3's ids are positions: the removal shifted them


class StoresLater(DeliversTo):
    """Takes the messages and stores them only when told: an MTA whose queue run
    comes after ``--deliver-wait``."""

    def __init__(self, store: Callable[[bytes], None]) -> None:
        self.held: list[bytes] = []
        super().__init__(self.held.append)
        self.later = store

    def queue_run(self) -> None:
        for content in self.held:
            self.later(content)


def test_the_left_note_says_messages_not_found_may_still_arrive_and_how_to_find_them() -> None:
    """The SMTP server took the messages and stores them past the wait: the note said
    "none of the 4 ... is in the mailbox", without the header that finds them, where
    ``--delete-delivered`` says they are left in the mailbox, not found, and how to
    find them. They may still arrive, and the header finds them once they do."""
    mailbox = Mailbox(list(KEPT))
    mta = StoresLater(into_mailbox(mailbox))
    with (
        serve_pop3(SmallPOP3, mailbox) as (host, port),
        running_smtp_server("asyncio", mta) as smtp,
    ):
        report = delivery_check(host, port, ("127.0.0.1", smtp.port), deliver_wait=0.5)
    assert report["delivered-intact"].outcome is Outcome.FAILED, report.format()
    (note,) = report.notes
    assert note.startswith(
        "none of the 4 delivered test messages is in the mailbox (a new session finds none; "
        "4 were not found and may still arrive): find them by their header "
        f"'{MARKER_FIELD.decode()}: "
    ), note
    assert "--delete-delivered" not in note, note
    mta.queue_run()
    header = note.rpartition("header '")[2].removesuffix(".*'").encode()
    assert len(mailbox.messages) == 5
    assert sum(header in m for m in mailbox.messages) == 4, (header, mailbox.messages)


class RefusesLoginLater(SmallPOP3):
    """Once ``refusing`` is set, refuses every login, as a server under load may."""

    refusing = False

    def do_PASS(self, words: list[str]) -> bytes:
        if self.refusing:
            return b"-ERR [SYS/TEMP] busy, try later\r\n"
        return super().do_PASS(words)


def test_the_left_note_says_the_count_is_unknown_where_the_look_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session that looks for the messages left cannot log in: the note counts
    none as left nor gone, says why, and how to find them."""
    real = left_in_mailbox

    def refused(probe: POP3Probe, delivery: Delivery) -> str:
        monkeypatch.setattr(RefusesLoginLater, "refusing", True)
        return real(probe, delivery)

    monkeypatch.setattr(check_pop3_module, "left_in_mailbox", refused)
    mailbox = Mailbox(list(KEPT))
    report = _run(RefusesLoginLater, mailbox, DeliversTo(into_mailbox(mailbox)))
    assert report["delivered-intact"].outcome is Outcome.PASSED, report.format()
    (note,) = report.notes
    assert note.startswith(
        "4 delivered test messages may be left in the mailbox (a new session to look for "
        "them failed: "
    ), note
    assert "was refused ('-ERR [SYS/TEMP]'" in note, note
    assert (
        "): pass delete_delivered (--delete-delivered) to delete them, or find them by their "
        f"header '{MARKER_FIELD.decode()}: "
    ) in note and note.endswith(".*'"), note
    assert PASSWORD not in note


def test_the_left_note_gives_the_header_of_messages_not_looked_for() -> None:
    """The delivery failed part way, before the poll listed the mailbox: nothing tells
    the user's mail from the test messages, so none is read. The note advised
    ``--delete-delivered``, which deletes none of them then; it gives the header that
    finds them, in the words of the ``--delete-delivered`` note."""
    for delete in (False, True):
        mailbox = Mailbox(list(KEPT))
        report = _run(
            SmallPOP3, mailbox, RefusesThird(into_mailbox(mailbox)), delete_delivered=delete
        )
        assert report["delivered-intact"].outcome is Outcome.FAILED, report.format()
        assert sum(MARKER_FIELD in m for m in mailbox.messages) == 2, mailbox.messages
        (note,) = report.notes
        assert (
            "2 delivered test messages may be left" if not delete else "; 2 left in the mailbox"
        ) in note, note
        assert (
            " left in the mailbox (not looked for: the delivery failed): find them by their "
            f"header '{MARKER_FIELD.decode()}: "
        ) in note, note
        assert "--delete-delivered" not in note, note
