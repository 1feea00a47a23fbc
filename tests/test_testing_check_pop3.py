"""The POP3 check battery: it passes good servers, fails each planted defect, loses no mail.

Good servers: smtpcore's own (asyncio adapter, with STLS), Dovecot's (a real
peer; a missing program skips on a developer's machine and fails under CI),
and the small hand-written one of ``broken_pop3_servers``. Each check then
meets the small server's twin with one defect a real server has had, and
fails it; the mailbox is whole after every run.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from broken_pop3_servers import (
    PASSWORD,
    USER,
    CutsLongLines,
    FirstCommandOfRead,
    IntNumbers,
    KeepsPlaintextAfterStls,
    MailBeforeLogin,
    Mailbox,
    NoStuffing,
    ServesDeleted,
    SessionUidl,
    SmallPOP3,
    serve_pop3,
)
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
from smtpcore.testing.__main__ import main
from smtpcore.testing.check import Outcome
from smtpcore.testing.check_pop3 import POP3_CHECKS, ServerUnreachable, check_pop3_server
from test_check import python_blocks

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


def run_battery(address: tuple[str, int]) -> dict[str, Outcome]:
    host, port = address
    report = check_pop3_server(host, port, user=USER, password=PASSWORD, timeout=TIMEOUT)
    return {result.name: result.outcome for result in report.results}


# -- good servers ------------------------------------------------------------------------


def test_the_battery_passes_the_small_server_and_keeps_every_message(tls: TLSFiles) -> None:
    mailbox = Mailbox(list(MESSAGES))
    with serve_pop3(SmallPOP3, mailbox, tls=tls.server_context) as address:
        outcomes = run_battery(address)
    assert outcomes == dict.fromkeys(POP3_CHECKS, Outcome.PASSED)
    assert mailbox.messages == MESSAGES


def test_the_battery_passes_smtpcores_own_server(tmp_path: Path, tls: TLSFiles) -> None:
    write_maildir(tmp_path / USER, MESSAGES)
    store = MaildirStore(tmp_path, {USER: PASSWORD})
    with running_pop3_server("asyncio", store, ssl_context=tls.server_context) as server:
        outcomes = run_battery(("127.0.0.1", server.port))
    assert outcomes == dict.fromkeys(POP3_CHECKS, Outcome.PASSED)
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
    assert outcomes == dict.fromkeys(POP3_CHECKS, Outcome.PASSED)
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
    assert set(DEFECTS) == set(POP3_CHECKS)


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


def test_cli_takes_the_password_from_the_environment(
    small_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECK_POP3_SECRET", PASSWORD)
    argv = ["check-pop3", small_server, "--user", USER, "--password-env", "CHECK_POP3_SECRET"]
    assert main([*argv, "--only", "uidl"]) == 0


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
        ["127.0.0.1:110", "--user", USER, "--password-env", "SMTPCORE_UNSET_VARIABLE"],
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
    (block,) = [block for block in python_blocks(page) if "check_pop3" in block]
    with serve_pop3(SmallPOP3, Mailbox(list(MESSAGES))) as (host, port):
        block = block.replace('"127.0.0.1", 110', f"{host!r}, {port}")
        block = block.replace('password="secret"', f"password={PASSWORD!r}")
        exec(compile(block, str(page), "exec"), {"__name__": "docs"})
    assert "7 passed, 0 failed, 1 skipped" in capsys.readouterr().out  # no STLS here
