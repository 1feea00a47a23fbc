"""``delivered-intact``: the POP3 battery delivers its own test messages over SMTP.

smtpcore's SMTP server (the asyncio adapter) delivers into the store the POP3
server reads: a Maildir for smtpcore's own POP3 server, the in-memory
mailbox for a planted-bug one. It adds a trace field before the content, as
an MTA does, which the check must ignore.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broken_pop3_servers import PASSWORD, USER, Mailbox, NoStuffing, SmallPOP3, serve_pop3
from peers import (
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
from smtpcore.testing._delivery import MARKER_FIELD
from smtpcore.testing.check import Outcome
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
    report = check_pop3_server(
        "127.0.0.1",
        pop3,
        user=USER,
        password=PASSWORD,
        timeout=3.0,
        checks=["delivered-intact", "dot-stuffing"],
        deliver_via=("127.0.0.1", smtp),
        deliver_to=MAILBOX,
    )
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert "eight-bit" in report["delivered-intact"].summary  # smtpcore offers 8BITMIME
    assert report["dot-stuffing"].outcome is Outcome.PASSED, report  # it reads them too
    assert len(delivered(maildir)) == 4
    assert KEPT[0] in maildir_contents(maildir)
    (note,) = report.notes
    assert "were left in the mailbox" in note and "note: 4 delivered" in report.format()


def test_delete_delivered_deletes_only_the_test_messages(
    own_servers: tuple[int, int, Path],
) -> None:
    pop3, smtp, maildir = own_servers
    report = check_pop3_server(
        "127.0.0.1",
        pop3,
        user=USER,
        password=PASSWORD,
        timeout=3.0,
        checks=["delivered-intact"],
        deliver_via=("127.0.0.1", smtp),
        deliver_to=MAILBOX,
        delete_delivered=True,
    )
    assert report.ok, report
    assert report.notes == ("4 of 4 delivered test messages were deleted (DELE, then QUIT)",)
    assert maildir_contents(maildir) == KEPT


def test_a_server_that_does_not_stuff_fails_with_an_excerpt_and_keeps_all_mail() -> None:
    mailbox = Mailbox(list(KEPT))
    with (
        serve_pop3(NoStuffing, mailbox) as (host, port),
        running_smtp_server("asyncio", DeliversTo(into_mailbox(mailbox))) as smtp,
    ):
        report = check_pop3_server(
            host,
            port,
            user=USER,
            password=PASSWORD,
            timeout=3.0,
            checks=["delivered-intact"],
            deliver_via=("127.0.0.1", smtp.port),
            deliver_to=MAILBOX,
        )
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED, result
    assert "RETR" in result.summary and "(dot-lines)" in result.summary, result.summary
    assert "got b'" in result.summary and "sent b'" in result.summary, result.summary
    assert PASSWORD not in result.summary + result.transcript_text()
    assert mailbox.messages[0] == KEPT[0] and len(mailbox.messages) == 5
    assert "C: b'QUIT\\r\\n'" not in result.transcript_text().rpartition("RETR")[2]


def test_mail_that_never_arrives_fails_after_the_wait() -> None:
    with (
        serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port),
        running_smtp_server("asyncio", DeliversTo(lambda content: None)) as smtp,
    ):
        report = check_pop3_server(
            host,
            port,
            user=USER,
            password=PASSWORD,
            timeout=3.0,
            checks=["delivered-intact"],
            deliver_via=("127.0.0.1", smtp.port),
            deliver_to=MAILBOX,
            deliver_wait=0.5,
        )
    result = report["delivered-intact"]
    assert result.outcome is Outcome.FAILED
    assert "were not in the mailbox 0.5 s after" in result.summary, result.summary


def test_an_smtp_server_that_is_not_there_fails_the_check() -> None:
    with serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port):
        report = check_pop3_server(
            host,
            port,
            user=USER,
            password=PASSWORD,
            timeout=2.0,
            checks=["delivered-intact"],
            deliver_via=("127.0.0.1", free_port()),
            deliver_to=MAILBOX,
        )
    assert report["delivered-intact"].outcome is Outcome.FAILED
    assert "delivering the test messages over SMTP" in report["delivered-intact"].summary
    assert report.notes == ()


def test_without_a_delivery_the_check_is_skipped() -> None:
    with serve_pop3(SmallPOP3, Mailbox(list(KEPT))) as (host, port):
        report = check_pop3_server(
            host, port, user=USER, password=PASSWORD, timeout=2.0, checks=["delivered-intact"]
        )
    assert report["delivered-intact"].outcome is Outcome.SKIPPED
    assert "--deliver-via" in report["delivered-intact"].summary


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"deliver_to": None}, "no mailbox"),  # the POP3 user alice is no mailbox
        ({"deliver_to": MAILBOX, "checks": ["uidl"]}, "delivered-intact"),
        ({"deliver_to": MAILBOX, "deliver_user": "bob"}, "both"),
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
                report = check_pop3_server(
                    "127.0.0.1",
                    dovecot.port,
                    user=USER,
                    password=PASSWORD,
                    timeout=5.0,
                    checks=["delivered-intact", "dot-stuffing"],
                    deliver_via=("127.0.0.1", smtp.port),
                    deliver_to=MAILBOX,
                )
            left = maildir_contents(maildir)
    assert report.ok, report
    assert report["delivered-intact"].outcome is Outcome.PASSED, report
    assert KEPT[0] in left and len(left) == 5
