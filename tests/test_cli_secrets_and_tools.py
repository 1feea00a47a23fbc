"""Secrets off the command line, and ``send`` and ``fetch`` as safe tools (issue 13,
items 13, 14, 15): hashed passwords in the users file, ``hash-password``, passwords
from a file, the environment or a prompt; header injection refused; the envelope from
the message's headers; STARTTLS when offered; one-line errors; a terminal never gets
raw control characters from a fetched header; ``fetch --auth``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import os
import smtplib
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, reject
from hypothesis import strategies as st

import smtpcore.__main__ as cli
from peers import make_tls_files, running_smtp_server
from smtpcore._driver._smtp_envelope_header import header_lines, unobsolete_names
from smtpcore.address import AddressError, Mailbox, parse_mailbox
from smtpcore.handler import Authenticator
from smtpcore.sasl import derive_scram_credentials
from smtpcore.server._send_checks import check_header_text
from smtpcore.server._send_message import _envelope_from_headers
from smtpcore.server.cli import build_parser, config_from_args
from smtpcore.server.config import ConfigError, ServerConfig, credential_key
from smtpcore.server.credentials import Credentials, hash_password, is_hashed
from smtpcore.server.passwords import ENVIRONMENT_VARIABLE, read_password
from smtpcore.server.pop3 import POP3Store
from smtpcore.server.sendstatus import EX_NOUSER, EX_TEMPFAIL
from smtpcore.server.tools import make_test_message, printable
from smtpcore.smtp import Reply
from smtpcore.testing import Call, CollectingHandler, ScriptedConnection, ScriptedServer, script
from smtpcore.testing import strategies as sst
from test_cli_serve import LOOPBACK, ROOT, serve


def _run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop(ENVIRONMENT_VARIABLE, None)
    return subprocess.run(
        [sys.executable, "-m", "smtpcore", *argv],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- item 13: secrets ------------------------------------------------------------------------


def test_stored_scram_keys_check_passwords_without_holding_them() -> None:
    keys = hash_password("s3cret")
    assert is_hashed(keys) and "s3cret" not in keys
    credentials = Credentials({"john@abc.example": keys, "mary@abc.example": "plain"})
    assert credentials.check_password("John@abc.example", "s3cret")
    assert not credentials.check_password("john@abc.example", "wrong")
    assert credentials.get_password("john@abc.example") is None  # no CRAM-MD5, no APOP
    assert credentials.get_scram("john@abc.example") is not None
    assert credentials.check_password("mary@abc.example", "plain")
    assert credentials.get_password("mary@abc.example") == "plain"
    assert not credentials.check_password("nobody@abc.example", "")


def test_keys_of_another_scram_hash_are_never_a_password() -> None:
    """SCRAM-SHA-1 keys were taken as a plaintext password: the stored text logged in.
    (ServerConfig refuses them; Credentials, given them anyway, lets no one in.)"""
    key = "A" * 27 + "="  # 20 octets, a SHA-1 digest
    keys = f"SCRAM-SHA-1$4096:c2FsdHNhbHQ=${key}:{key}"
    assert is_hashed(keys)
    credentials = Credentials({"john@abc.example": keys})
    assert not credentials.check_password("john@abc.example", keys)
    assert credentials.get_password("john@abc.example") is None


def test_keys_derived_across_a_reload_are_not_kept_for_the_new_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SCRAM keys run in a worker thread while a reload may swap the users: keys being
    derived from the old password when the reload lands were kept for the new users,
    so the old password went on logging in (until the next reload)."""
    import smtpcore.server.credentials as module

    credentials = Credentials({"john@abc.example": "old password"})
    derive = derive_scram_credentials

    def reloaded_meanwhile(password: str, **options: Any) -> Any:
        credentials.users = {"john@abc.example": "new password"}  # the reload lands
        return derive(password, **options)

    monkeypatch.setattr(module, "derive_scram_credentials", reloaded_meanwhile)
    assert credentials.get_scram("john@abc.example") is not None  # the old password's
    monkeypatch.undo()
    keys = credentials.get_scram("john@abc.example")
    assert keys is not None
    new = derive("new password", salt=keys.salt, iterations=keys.iterations)
    assert new.stored_key == keys.stored_key


def test_a_user_a_reload_removes_mid_check_is_unknown_not_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each call reads the users once: one a reload removed between the lookup and the
    read raised KeyError (logged as an error, 454 to the client)."""
    import smtpcore.server.credentials as module

    credentials = Credentials({"john@abc.example": "pw"})
    key = credential_key

    def reloaded_meanwhile(login: str) -> str | None:
        found = key(login)
        credentials.users = {}  # the reload lands after the lookup
        return found

    monkeypatch.setattr(module, "credential_key", reloaded_meanwhile)
    assert credentials.get_password("john@abc.example") == "pw"  # the users it began with
    credentials.users = {"john@abc.example": "pw"}
    assert credentials.check_password("john@abc.example", "pw")


def counted_derivations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The iteration count of each PBKDF2 derivation from now on: what a password check
    costs, counted rather than timed."""
    derivations: list[int] = []
    real = hashlib.pbkdf2_hmac

    def counted(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        derivations.append(iterations)
        return real(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", counted)
    return derivations


def test_every_password_check_costs_one_derivation_whoever_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong password cost a PBKDF2 derivation for a user with stored keys and none for
    an unknown user, a malformed name or a plaintext user, so its time told who exists
    (POP3 USER/PASS, AUTH PLAIN and LOGIN). Counted, not timed."""
    users = {
        "john@abc.example": hash_password("s3cret"),
        "jane@abc.example": derive_scram_credentials("s3cret", iterations=5000).to_text(),
        "anne@abc.example": derive_scram_credentials("s3cret", iterations=5000).to_text(),
        "mary@abc.example": "plain",
    }
    derivations = counted_derivations(monkeypatch)
    credentials = Credentials(users)
    store = POP3Store(
        ServerConfig(domains=("abc.example",), users=users, data_dir=tmp_path),
        Authenticator(check_password=credentials.check_password),
        credentials=credentials,
    )
    names = ["jane@abc.example", "john@abc.example", "mary@abc.example"]
    names += ["nobody@abc.example", "not an address", ""]
    right = {(names[0], "s3cret"), (names[1], "s3cret"), (names[2], "plain")}
    for name in names:
        for password in ("wrong", "s3cret", "plain", "\u0007"):  # SASLprep refuses BEL
            derivations.clear()
            ok = credentials.check_password(name, password)
            assert ok is ((name, password) in right)
            assert asyncio.run(store.check_password(None, name, password)) is ok  # type: ignore[arg-type]  # the session is not used
            # One derivation a check, of the user's own count or else of the one most keys have
            count = 4096 if name == names[1] else 5000
            assert derivations == [count, count], (name, password)


def test_the_reference_server_derives_keys_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password check is a PBKDF2 derivation, and ran in the event loop: fifty guessing
    clients slowed every other session. SMTP AUTH and POP3 AUTH go through an
    ``Authenticator(in_thread=True)``, POP3 USER/PASS through a store that awaits the
    check in a thread."""
    import threading

    from smtpcore.server.mailserver import MailServer

    threads: list[threading.Thread] = []
    real = hashlib.pbkdf2_hmac

    def recorded(name: str, password: bytes, salt: bytes, iterations: int) -> bytes:
        threads.append(threading.current_thread())
        return real(name, password, salt, iterations)

    monkeypatch.setattr(hashlib, "pbkdf2_hmac", recorded)
    users = {"john@abc.example": hash_password("s3cret")}
    server = MailServer(ServerConfig(domains=("abc.example",), users=users, data_dir=tmp_path))
    assert server.authenticator().in_thread
    store = POP3Store(server.config, server.authenticator(), credentials=server.credentials)
    threads.clear()
    for password, right in (("s3cret", True), ("wrong", False)):
        assert asyncio.run(store.check_password(None, "john@abc.example", password)) is right  # type: ignore[arg-type]  # the session is not used
    assert len(threads) == 2 and threading.current_thread() not in threads


def test_scram_shows_an_unknown_user_the_count_the_users_keys_have(tmp_path: Path) -> None:
    """SCRAM's server-first message gave an unknown user 4,096 iterations, a user with
    100,000-iteration keys 100,000: the count told who exists. The reference server's
    authenticator shows the made-up keys' count (``scram_mock_iterations``)."""
    from smtpcore.sasl import Challenge
    from smtpcore.server.mailserver import MailServer

    keys = derive_scram_credentials("s3cret", iterations=5000).to_text()
    users = {"john@abc.example": keys, "jane@abc.example": keys}
    server = MailServer(ServerConfig(domains=("abc.example",), users=users, data_dir=tmp_path))
    mechanisms = server.authenticator().server_mechanisms("mx.abc.example")
    shown = {}
    for user in ("john@abc.example", "nobody@abc.example"):
        step = mechanisms["SCRAM-SHA-256"]().start(f"n,,n={user},r=abcdefgh".encode())
        assert isinstance(step, Challenge)
        shown[user] = dict(part.split("=", 1) for part in step.data.decode().split(","))["i"]
    assert shown == {"john@abc.example": "5000", "nobody@abc.example": "5000"}
    with pytest.raises(ValueError, match="scram_mock_iterations"):
        Authenticator(get_scram_credentials=server.credentials.get_scram, scram_mock_iterations=0)


def test_made_up_keys_cost_the_lowest_count_most_keys_have_and_a_mix_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With as many keys of one count as of another, a guessed name costs the lower (it
    cost the higher: a user's expensive keys made every guess as expensive); keys of
    several counts cannot all be matched, and the operator is told so."""
    users = {
        "jane@abc.example": derive_scram_credentials("s3cret", iterations=5000).to_text(),
        "anne@abc.example": derive_scram_credentials("s3cret", iterations=4500).to_text(),
    }
    derivations = counted_derivations(monkeypatch)
    caplog.set_level(logging.WARNING, "smtpcore.mail")
    credentials = Credentials(users)
    assert not credentials.check_password("nobody@abc.example", "guess")
    assert derivations == [4500]
    assert "different iteration counts (4500, 5000)" in caplog.text


def test_hash_password_reads_stdin_and_serve_logs_in_with_the_keys(tmp_path: Path) -> None:
    result = _run("hash-password", stdin="john-pw\n")
    assert result.returncode == 0, result.stderr
    keys = result.stdout.strip()
    assert keys.startswith("SCRAM-SHA-256$") and "john-pw" not in keys
    users = tmp_path / "users"
    users.write_text(f"john@abc.example:{keys}\n")
    with serve(
        tmp_path / "abc",
        "abc.example",
        [],
        listeners=("submission", "pop3"),
        extra=("--users-file", str(users)),
    ) as abc:
        with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = "john@abc.example", "john-pw"
            assert smtp.auth("PLAIN", smtp.auth_plain)[0] == 235
        with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
            smtp.ehlo()
            smtp.user, smtp.password = "john@abc.example", "john-pw"
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.auth("CRAM-MD5", smtp.auth_cram_md5)  # needs the password itself
        args = ("--server", f"{LOOPBACK}:{abc.ports['pop3']}", "--user", "john@abc.example")
        password = tmp_path / "pw"
        password.write_text("john-pw\n")
        for auth in ("user", "scram-sha-256", "plain"):
            # A server without TLS: the password itself goes only when allowed.
            anyway = ("--allow-plaintext-auth",) if auth != "scram-sha-256" else ()
            fetched = _run(
                "fetch", *args, "--password-file", str(password), "--auth", auth, *anyway
            )
            assert fetched.returncode == 0, (auth, fetched.stdout, fetched.stderr)
        assert abc.stop() == 0
    assert "warning: --user" not in abc.log()


def test_a_plaintext_password_in_serve_argv_is_warned_about(tmp_path: Path) -> None:
    with serve(tmp_path / "abc", "abc.example", ["john@abc.example:pw"]) as abc:
        assert abc.stop() == 0
    assert "warning: --user gives the password of john@abc.example on the command line" in (
        abc.log()
    )


def test_scram_keys_in_serve_argv_are_warned_about_too(capsys: pytest.CaptureFixture[str]) -> None:
    """The --user help recommended SCRAM keys on the command line, and serve did not warn
    about them: `ps` shows them there, and they log in as the user once one exchange is
    observed (RFC 5802 §9)."""
    keys = hash_password("john-pw")
    args = build_parser().parse_args(["serve", "--user", f"john@localhost:{keys}"])
    assert config_from_args(args).users == {"john@localhost": keys}
    err = capsys.readouterr().err
    assert "warning: --user gives the SCRAM keys of john@localhost on the command line" in err
    assert "anyone can log in as that user; put them in --users-file" in err
    assert keys not in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "and so would SCRAM keys" in help_text and "give SCRAM keys" not in help_text


def test_read_password_order() -> None:
    warned: list[str] = []

    def never() -> bool:
        return False

    assert read_password(given="pw", password_file=None, user="u", warn=warned.append) == "pw"
    assert warned and "shows in `ps`" in warned[0]
    environ = {ENVIRONMENT_VARIABLE: "from-env"}
    assert read_password(given=None, password_file=None, user="u", environ=environ) == "from-env"
    asked = read_password(
        given=None,
        password_file=None,
        user="u",
        environ={},
        interactive=lambda: True,
        prompt=lambda text: f"typed for {text}",
    )
    assert asked == "typed for Password for u: "
    with pytest.raises(ConfigError, match="--password-file"):
        read_password(given=None, password_file=None, user="u", environ={}, interactive=never)


def test_a_password_file_is_read_to_its_first_lf_and_must_be_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password file that is not UTF-8 gave a UnicodeDecodeError traceback; and the
    first line ended at U+2028 or a form feed too (str.splitlines)."""
    password = tmp_path / "pw"
    password.write_text("pass\u2028word\f \r\nsecond line\n", encoding="utf-8")
    read = read_password(given=None, password_file=password, user="u", environ={})
    assert read == "pass\u2028word\f "
    password.write_bytes(b"\xef\xbb\xbfpw\n")  # a BOM is the UTF-8 signature, not the password
    assert read_password(given=None, password_file=password, user="u", environ={}) == "pw"
    password.write_bytes(b"p\xe4ss\n")
    for argv in (
        ("send", "--server", "127.0.0.1:9", "--from", "a@b.example", "--to", "c@d.example"),
        ("fetch", "--server", "127.0.0.1:9"),
    ):
        assert cli.main([*argv, "--user", "a@b.example", "--password-file", str(password)]) == 2
        err = capsys.readouterr().err
        assert err == f"smtpcore {argv[0]}: --password-file: {password} is not UTF-8 " + (
            "(invalid continuation byte)\n"
        )


def test_send_and_fetch_without_a_password_anywhere_fail_with_one_line(tmp_path: Path) -> None:
    for argv in (
        ("send", "--server", "127.0.0.1:9", "--from", "a@b.example", "--to", "c@d.example"),
        ("fetch", "--server", "127.0.0.1:9"),
    ):
        result = _run(*argv, "--user", "a@b.example")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "--password-file" in result.stderr
        assert "Traceback" not in result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _end_of_file(prompt: str = "") -> str:
    raise EOFError  # what getpass raises for Ctrl-D at its prompt


def test_end_of_file_at_a_password_prompt_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-D at the prompt of ``hash-password``, ``send`` or ``fetch`` was an EOFError
    traceback and status 1, where one line is promised."""
    with pytest.raises(ConfigError, match="no password given"):
        read_password(
            given=None,
            password_file=None,
            user="u",
            environ={},
            interactive=lambda: True,
            prompt=_end_of_file,
        )
    import getpass

    monkeypatch.setattr(getpass, "getpass", _end_of_file)
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.delenv(ENVIRONMENT_VARIABLE, raising=False)
    send = ("send", "--server", "127.0.0.1:9", "--from", "a@b.example", "--to", "c@d.example")
    fetch = ("fetch", "--server", "127.0.0.1:9")
    for argv in (("hash-password",), (*send, "--user", "a@b.example"), (*fetch, "--user", "u")):
        assert cli.main(list(argv)) == 2
        assert capsys.readouterr().err == f"smtpcore {argv[0]}: no password given\n"


# -- item 14: send -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["x\r\nBcc: y", "bell\x07", "x\x85y", "x\x7fy"])
def test_header_text_holds_no_control_character(text: str) -> None:
    """A CR or LF would end the field and start another; no control is text (RFC 5198
    §2). A tab is header white space, and taken."""
    with pytest.raises(ConfigError, match="not allowed in a header field"):
        check_header_text("--subject", text)
    assert check_header_text("--subject", "a\tb") == "a\tb"


@pytest.mark.parametrize(
    "option",
    [
        ("--subject", "x\r\nBcc: victim@example.com"),
        ("--subject", "x\nBcc: y"),
        ("--subject", "bell\x07"),
        ("--from", "a\u2028Bcc: y@b.example"),
        ("--to", "a\u202eb@d.example"),
        ("--helo", "a\r\nb"),
        ("--helo", "a\tb"),
        ("--helo", "a b"),
    ],
)
def test_send_refuses_what_its_field_cannot_carry_as_a_usage_error(
    option: tuple[str, str],
) -> None:
    """Refused before any connection, status 2: a control in a header field, what no
    address may hold in --from and --to, what EHLO cannot carry (one ASCII word, RFC
    5321 §4.1.1.1) in --helo, a tab included."""
    name, value = option
    argv = {"--from": "a@b.example", "--to": "c@d.example", name: value}
    result = _run("send", "--server", "127.0.0.1:9", *(x for kv in argv.items() for x in kv))
    assert result.returncode == 2, result.stderr
    assert "not allowed" in result.stderr or "cannot go in EHLO" in result.stderr
    assert name in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "option",
    [
        ("--from", "\u05d3\u200e\u05d4@abc.example"),  # LRM between Hebrew letters
        ("--to", "soft\u00adhyphen@d.example"),
        ("--subject", "\u05e9\u05dc\u05d5\u05dd \u200f(1)"),  # Hebrew with RLM
        ("--subject", "\u0645\u0631\u062d\u0628\u0627\u061c 5"),  # Arabic with ALM
        ("--subject", "a\tb"),
    ],
)
def test_send_takes_valid_text_with_format_characters(
    option: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Valid addresses (the parser takes bidi marks and soft hyphens) and subjects in
    scripts that need a bidi mark get past the checks: nothing listens on port 9, so
    the send fails to connect (status 1), never as a usage error (status 2). A
    non-ASCII subject is RFC 2047-encoded, so none of its characters goes raw."""
    name, value = option
    argv = {"--from": "a@b.example", "--to": "c@d.example", name: value}
    flat = [x for kv in argv.items() for x in kv]
    assert cli.main(["send", "--server", "127.0.0.1:9", *flat]) == EX_TEMPFAIL
    assert "not allowed" not in capsys.readouterr().err


def test_a_long_utf8_subject_is_folded_with_crlf() -> None:
    """RFC 2047 encoding folds a long subject into several encoded words; the fold is a
    CRLF followed by a space (RFC 5322 §2.2.3), never a bare LF, which the server's
    strict framing refuses (RFC 5321 §2.3.8)."""
    message = make_test_message("a@b.example", ["c@d.example"], "\u05e9" * 60, "x", "h")
    assert b"\n" not in message.replace(b"\r\n", b"")
    assert b"\r\n =?utf-8?b?" in message


def test_send_takes_the_envelope_from_the_headers_and_drops_bcc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    users = ["john@abc.example:john-pw", "mary@abc.example:m", "ann@abc.example:a"]
    with serve(tmp_path / "abc", "abc.example", users, listeners=("submission",)) as abc:
        message = (
            b"From: John <john@abc.example>\r\nTo: Mary <mary@abc.example>\r\n"
            b"Bcc: ann@abc.example,\r\n  secret@abc.example\r\nSubject: hi\r\n\r\nhello\r\n"
        )
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(message)))
        monkeypatch.setenv(ENVIRONMENT_VARIABLE, "john-pw")
        status = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{abc.ports['submission']}"),
                *("--user", "john@abc.example", "-"),
            ]
        )
        out = capsys.readouterr().out
        assert status == EX_NOUSER  # secret@ has no mailbox
        assert "<mary@abc.example>: accepted" in out and "<ann@abc.example>: accepted" in out
        assert "<secret@abc.example>: refused" in out and "550 5.1.1" in out
        for user in ("mary@abc.example", "ann@abc.example"):
            (stored,) = abc.mailbox(user)
            assert b"Bcc" not in stored and b"secret@" not in stored
        assert abc.stop() == 0


def _send_file(tmp_path: Path, message: bytes, port: int) -> int:
    """``send FILE`` without ``--from`` or ``--to``, to a plaintext server on ``port``."""
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    server = f"127.0.0.1:{port}"
    return cli.main(
        ["send", "--server", server, "--no-starttls", "--helo", "client.test", str(path)]
    )


def test_send_takes_utf8_addresses_from_the_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 6532 §3.2: address fields may hold UTF-8, and the envelope ``send`` takes from
    them (as ``sendmail -t``) is those addresses, in an SMTPUTF8 transaction, through
    the library's own derivation (``send_message``'s)."""
    message = (
        "From: José <josé@abc.example>\r\nTo: Jörg <jörg@pqr.example>\r\n"
        "Bcc: zoë@pqr.example\r\nSubject: hi\r\n\r\nhello\r\n"
    ).encode()
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file(tmp_path, message, server.port)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "<jörg@pqr.example>: accepted" in out and "<zoë@pqr.example>: accepted" in out
    [envelope] = handler.messages
    assert str(envelope.sender) == "josé@abc.example"
    assert [str(r.mailbox) for r in envelope.recipients] == ["jörg@pqr.example", "zoë@pqr.example"]
    assert "SMTPUTF8" in envelope.mail_params
    assert b"Bcc" not in envelope.content and "zoë".encode() not in envelope.content


@pytest.mark.parametrize(
    ("field", "shown"),
    [
        (b"To: j\xf6rg@pqr.example", "To field is not UTF-8"),
        ("To: jörg@bücher..example".encode(), "bücher..example"),
        ("From: josé@@abc.example".encode(), "@abc.example"),
        (b"From: undisclosed:;", "From has no address"),
    ],
)
def test_send_says_which_address_of_the_headers_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: bytes, shown: str
) -> None:
    """A header address that is not UTF-8, or no address, stops ``send`` before it
    connects (status 2), the user's own text quoted, never shown as U+FFFD."""
    head = {b"From": b"From: a@abc.example", b"To": b"To: b@pqr.example"}
    head[field.split(b":")[0]] = field
    message = b"\r\n".join(head.values()) + b"\r\nSubject: hi\r\n\r\nhello\r\n"
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file(tmp_path, message, server.port)
    err = capsys.readouterr().err
    assert status == 2, err
    assert shown in err and "\ufffd" not in err
    assert handler.messages == []


def _send_file_with(tmp_path: Path, message: bytes, port: int, *options: str) -> int:
    """``send FILE`` with ``options`` (``--from``, ``--to``) to a plaintext server."""
    path = tmp_path / "message.eml"
    path.write_bytes(message)
    server = f"127.0.0.1:{port}"
    argv = ["send", "--server", server, "--no-starttls", "--helo", "client.test"]
    return cli.main([*argv, *options, str(path)])


@st.composite
def _spaced_colon_mailboxes(draw: st.DrawFn) -> Mailbox:
    """A mailbox whose quoted local part holds `` :``, which looks like the obsolete
    white space before a field's colon (RFC 5322 §4.5.3) on a line of its own."""
    before, after = draw(sst.local_parts(quoted=False)), draw(sst.local_parts(quoted=False))
    try:
        return Mailbox(f"{before} :{after}", draw(sst.domains()))
    except AddressError:  # a domain the constructor refuses
        reject()


@given(st.lists(_spaced_colon_mailboxes(), min_size=1, max_size=4))
def test_send_reads_folded_quoted_local_parts_as_they_are(folded: list[Mailbox]) -> None:
    """A folded line (RFC 5322 §2.2.3) begins with white space and holds no field name:
    only a line that starts a field may lose the obsolete space before its colon. A
    ``To`` folded before ``"b :c"@pqr.example`` went to ``"b:c"@pqr.example``, another
    mailbox."""
    first = parse_mailbox("d@pqr.example")
    field = ",\r\n ".join(str(mailbox) for mailbox in [first, *folded])
    message = f"From: a@abc.example\r\nTo: {field}\r\nSubject: x\r\n\r\nhi\r\n".encode()
    lines = header_lines(message)
    continued = [line for line in lines if line[:1] == b" "]
    assert unobsolete_names(lines).splitlines(keepends=True)[2:-1] == continued
    _, recipients = _envelope_from_headers(message, "a@abc.example", [])
    assert [parse_mailbox(address) for address in recipients] == [first, *folded]


def test_header_lines_reads_the_header_section_only() -> None:
    """The header section ends at the first empty line (RFC 5322 §2.1): the body, which
    may be as large as the message, is never split into lines to find it (memory
    stays bounded by the header, not the message)."""
    head = b"From: a@abc.example\r\nTo: b@pqr.example\r\n"
    message = head + b"\r\n" + b"y\r\n" * 400_000
    tracemalloc.start()
    try:
        lines = header_lines(message)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert lines == [b"From: a@abc.example\r\n", b"To: b@pqr.example\r\n"]
    assert peak < 100_000
    assert header_lines(b"From: a@abc.example\nTo: b\n\nX: not a field\r\n\r\n") == [
        b"From: a@abc.example\n",
        b"To: b\n",
    ]
    assert header_lines(b"\r\nX: body\r\n") == []
    assert header_lines(b"X: a\r\nY: b") == [b"X: a\r\n", b"Y: b"]


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--from", "a@abc.example"),
        ("--to", "b@pqr.example"),
        ("--from", "a@abc.example", "--to", "b@pqr.example"),
    ],
    ids=["from the headers", "--from", "--to", "--from and --to"],
)
@pytest.mark.parametrize(
    "bcc",
    [
        b"Bcc: hidden@pqr.example",
        b"Resent-Bcc: hidden@pqr.example",
        b"Bcc : hidden@pqr.example,\r\n hidden2@pqr.example",
    ],
)
def test_send_never_transmits_a_bcc_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...], bcc: bytes
) -> None:
    """RFC 5322 §3.6.3: ``Bcc`` recipients stay hidden from the others. ``send`` removes
    the ``Bcc`` and ``Resent-Bcc`` fields (the obsolete ``Bcc :`` too, RFC 5322 §4.5.3)
    whatever gives the envelope, as Postfix's cleanup does; it sent them as they stood
    when ``--from`` and ``--to`` were both given."""
    message = (
        b"From: a@abc.example\r\nTo: b@pqr.example\r\n" + bcc + b"\r\nSubject: x\r\n\r\nhi\r\n"
    )
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file_with(tmp_path, message, server.port, *options)
    assert status == 0, capsys.readouterr()
    [envelope] = handler.messages
    assert b"hidden" not in envelope.content and b"Bcc" not in envelope.content
    assert envelope.content.endswith(b"Subject: x\r\n\r\nhi\r\n")
    if "--to" not in options and bcc.startswith(b"Bcc"):
        assert "hidden@pqr.example" in [str(r.mailbox) for r in envelope.recipients]


RESENT_ONCE = (
    b"From: a@abc.example\r\nTo: team@pqr.example\r\n"
    b"Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-From: old@abc.example\r\n"
    b"Resent-To: ex-employee@pqr.example\r\nSubject: saved\r\n\r\nhi\r\n"
)


def test_send_says_when_the_envelope_comes_from_resent_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message resent once goes to its ``Resent-`` recipients (RFC 5322 §3.6.6, as
    ``sendmail -t``): a saved message may hold a stale block, so ``send`` says, in one
    line on stderr, which fields gave the envelope. It said nothing."""
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file_with(tmp_path, RESENT_ONCE, server.port)
    captured = capsys.readouterr()
    assert status == 0, captured
    [envelope] = handler.messages
    assert [str(r.mailbox) for r in envelope.recipients] == ["ex-employee@pqr.example"]
    [line] = captured.err.splitlines()
    assert "Resent-From, Resent-To" in line and "RFC 5322 §3.6.6" in line


def test_send_takes_the_sender_of_a_message_resent_twice_from_its_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--to`` given only a sender is asked: a message resent twice (which block
    is meant is not said) gives its ``From``, as before; it exited 2. Without ``--to``
    the recipients are asked, and the ambiguity stays an error."""
    message = (
        b"From: a@abc.example\r\nTo: b@pqr.example\r\n"
        b"Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-To: c@pqr.example\r\n"
        b"Resent-Date: Tue, 2 Jan 2024 00:00:00 +0000\r\nResent-To: d@pqr.example\r\n\r\nhi\r\n"
    )
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file_with(tmp_path, message, server.port, "--to", "b@pqr.example")
        refused = _send_file_with(tmp_path, message, server.port)
    captured = capsys.readouterr()
    assert (status, refused) == (0, 2), captured
    [envelope] = handler.messages
    assert str(envelope.sender) == "a@abc.example"
    assert "more than one Resent- block" in captured.err


@pytest.mark.parametrize(
    "resent_sender",
    [b"", b"Resent-From:\r\n", b"Resent-Sender: undisclosed:;\r\n"],
    ids=["absent", "empty Resent-From", "group Resent-Sender"],
)
def test_send_takes_the_sender_of_a_resent_block_without_resent_from_from_its_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], resent_sender: bytes
) -> None:
    """With ``--to`` given only a sender is asked: a resent block that names no sender
    (``Resent-Date`` and ``Resent-To`` only, or sender fields that name nobody) gives
    none, and the original ``From`` does, as for a message resent twice; it exited 2
    ("no Resent-From header", "has no address"). No ``Resent-`` field gave the
    envelope, and stderr says none did."""
    message = (
        b"From: a@abc.example\r\nTo: b@pqr.example\r\n"
        b"Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-To: c@pqr.example\r\n"
        + resent_sender
        + b"Subject: x\r\n\r\nhi\r\n"
    )
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file_with(tmp_path, message, server.port, "--to", "b@pqr.example")
    captured = capsys.readouterr()
    assert status == 0, captured
    [envelope] = handler.messages
    assert str(envelope.sender) == "a@abc.example"
    assert "Resent-" not in captured.err


def test_send_says_a_resent_block_naming_no_recipient_names_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message resent (``Resent-Date``, ``Resent-From``) with no ``Resent-To``, ``-Cc``
    or ``-Bcc`` goes to no one: the error says so, where it said the message had no
    To, Cc or Bcc (it has a To), after a stderr line naming the Resent-From."""
    message = (
        b"From: a@abc.example\r\nTo: b@pqr.example\r\n"
        b"Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-From: r@abc.example\r\n"
        b"Subject: x\r\n\r\nhi\r\n"
    )
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file_with(tmp_path, message, server.port)
    captured = capsys.readouterr()
    assert status == 2, captured
    assert "Resent-To, Resent-Cc and Resent-Bcc name no recipient" in captured.err
    assert "envelope comes from" not in captured.err
    assert not handler.messages


def test_send_names_only_the_resent_fields_that_gave_the_envelope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 5322 §3.6.6: ``Resent-Sender`` gives the sender before ``Resent-From``, and a
    field with no address gives nothing: the line on stderr names the fields read,
    not every ``Resent-`` field present."""
    message = (
        b"From: a@abc.example\r\nTo: b@pqr.example\r\n"
        b"Resent-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nResent-From: r@abc.example\r\n"
        b"Resent-Sender: s@abc.example\r\nResent-To: c@pqr.example\r\n"
        b"Resent-Cc: undisclosed:;\r\nSubject: x\r\n\r\nhi\r\n"
    )
    handler = CollectingHandler()
    with running_smtp_server("asyncio", handler) as server:
        status = _send_file_with(tmp_path, message, server.port)
    captured = capsys.readouterr()
    assert status == 0, captured
    [envelope] = handler.messages
    assert str(envelope.sender) == "s@abc.example"
    [line] = captured.err.splitlines()
    assert "message's Resent-Sender, Resent-To (resent" in line


def test_send_says_a_message_whose_end_went_unanswered_may_have_been_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 5321 §6.1: a connection lost after the final dot, before its reply, may have
    delivered the message; ``send`` says so rather than call it refused."""
    steps = script(
        """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250 scripted.test
C: MAIL FROM:<a@abc.example>
S: 250 ok
C: RCPT TO:<b@pqr.example>
S: 250 ok
C: DATA
S: 354 go
C: Subject: hi
C:
C: body
C: .
-- close
"""
    )
    path = tmp_path / "message.eml"
    path.write_bytes(b"Subject: hi\r\n\r\nbody\r\n")
    with ScriptedServer(steps) as server:
        status = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{server.port}", "--no-starttls"),
                *("--helo", "client.test", "--from", "a@abc.example", "--to", "b@pqr.example"),
                str(path),
            ]
        )
    out = capsys.readouterr().out
    assert status == EX_TEMPFAIL
    assert out.startswith(f"<b@pqr.example>: may have been delivered by 127.0.0.1:{server.port}")
    assert "no readable reply to the end of the message" in out and "refused" not in out


def test_send_uses_starttls_when_offered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = make_tls_files(tmp_path)
    options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    with serve(tmp_path / "abc", "abc.example", ["john@abc.example:pw"], extra=options) as abc:
        server = f"127.0.0.1:{abc.ports['smtp']}"
        base = ["send", "--server", server, "--from", "x@y.example", "--to", "john@abc.example"]
        assert cli.main([*base, "--cafile", str(tls.ca_file)]) == 0
        assert cli.main([*base, "--no-starttls"]) == 0
        # Offered but not trusted: a one-line refusal, not a plaintext fallback; the
        # client's own, since the server refused nothing.
        assert cli.main(base) == EX_TEMPFAIL
        out = capsys.readouterr().out
        assert f"not sent to {server}: this client refused to go on: " in out
        assert "Traceback" not in out
        first, second = (m.decode() for m in abc.mailbox("john@abc.example"))
        assert {"with ESMTPS" in first, "with ESMTPS" in second} == {True, False}
        assert abc.stop() == 0


def test_send_to_a_server_that_is_down_is_one_line() -> None:
    result = _run(
        "send", "--server", "127.0.0.1:9", "--from", "a@b.example", "--to", "c@d.example"
    )
    assert result.returncode == EX_TEMPFAIL
    assert "refused by 127.0.0.1:9" in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("fqdn", "warned"),
    [("localhost", True), ("localhost.localdomain", True), ("laptop", True), ("h.example", False)],
)
def test_send_warns_when_the_machines_name_it_would_give_in_ehlo_is_not_qualified(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fqdn: str, warned: bool
) -> None:
    """RFC 5321 §4.1.1.1: EHLO gives a fully qualified domain name, and many servers
    refuse another; socket.getfqdn() gives "localhost" on many hosts. --helo is the fix."""
    monkeypatch.setattr("socket.getfqdn", lambda name="": fqdn)
    argv = ["send", "--server", "127.0.0.1:9", "--from", "a@b.example", "--to", "c@d.example"]
    assert cli.main(argv) == EX_TEMPFAIL
    err = capsys.readouterr().err
    warning = f"smtpcore send: warning: this machine's name {fqdn!r}, used for want of --helo"
    assert (warning in err) is warned, err
    assert cli.main([*argv, "--helo", "laptop"]) == EX_TEMPFAIL  # given: the user's choice
    assert "warning" not in capsys.readouterr().err


# -- item 15: fetch ----------------------------------------------------------------------------


def test_printable_escapes_what_a_terminal_would_obey() -> None:
    assert printable("Mallory \x1b]0;pwned\x07<m@x>") == "Mallory \\x1b]0;pwned\\x07<m@x>"
    assert printable("a\rb\nc\td\x9b") == "a\\x0db\\x0ac\\x09d\\x9b"
    assert printable("Jörg \u202eevil") == "Jörg \\u202eevil"
    assert printable("plain text") == "plain text"


HOSTILE_TEXT = b"no \xc2\x9b31m\xe2\x80\xaeevil"  # an 8-bit CSI and a right-to-left override


@contextmanager
def scripted_server(greeting: bytes, answers: dict[bytes, bytes]) -> Iterator[int]:
    """One session on a loopback port: each line whose verb is in ``answers`` gets that
    answer, any other line the answer under ``*``; QUIT ends it."""
    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener, listener.accept()[0] as conn, conn.makefile("rb") as lines:
            conn.settimeout(10)
            conn.sendall(greeting)
            for line in lines:
                verb = line.split(b" ", 1)[0].strip().upper()
                conn.sendall(answers.get(verb, answers[b"*"]))
                if verb == b"QUIT":
                    return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        with contextlib.suppress(OSError):
            socket.create_connection((LOOPBACK, port), timeout=1).close()
        thread.join(5)


def test_send_and_fetch_show_a_servers_control_characters_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A reply's text is the server's choice: printed raw, an 8-bit CSI drives the
    terminal and a bidi override disguises the line. The SMTP client's reply parser
    masks both as ``?`` (RFC 5198 §2), as it masks C0 controls; the POP3 client's as
    U+FFFD, as it masks C0 controls."""
    smtp = {
        b"EHLO": b"250 mx.abc.example\r\n",
        b"RCPT": b"550 5.1.1 " + HOSTILE_TEXT + b"\r\n",
        b"QUIT": b"221 bye\r\n",
        b"*": b"250 ok\r\n",
    }
    with scripted_server(b"220 mx.abc.example\r\n", smtp) as port:
        argv = ["send", "--server", f"{LOOPBACK}:{port}", "--helo", "client.abc.example"]
        status = cli.main([*argv, "--from", "a@abc.example", "--to", "b@abc.example"])
    out = capsys.readouterr().out
    assert status == EX_NOUSER and "\x9b" not in out and "\u202e" not in out
    assert "550 5.1.1 no ?31m?evil" in out
    pop3 = {
        b"CAPA": b"-ERR no capabilities\r\n",
        b"PASS": b"-ERR [AUTH] " + HOSTILE_TEXT + b"\r\n",
        b"*": b"+OK\r\n",
    }
    with scripted_server(b"+OK ready\r\n", pop3) as port:
        argv = [
            "fetch",
            "--server",
            f"{LOOPBACK}:{port}",
            "--auth",
            "user",
            "--allow-plaintext-auth",
        ]
        status = cli.main([*argv, "--user", "john@abc.example", "--password", "pw"])
    err = capsys.readouterr().err
    assert status == 1 and "\x9b" not in err and "\u202e" not in err
    assert "no \ufffd31m\ufffdevil" in err, err


def test_send_refuses_auth_plain_without_tls_unless_allowed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server without STARTTLS that offers only PLAIN and LOGIN gets no password
    from ``send``: the refusal names send's own options (``--starttls``, ``--tls``,
    ``--allow-plaintext-auth``), worded as ``fetch`` words its own, not the library's
    keyword. ``--allow-plaintext-auth`` logs in, with a warning."""
    smtp = {
        b"EHLO": b"250-mx.abc.example\r\n250 AUTH PLAIN LOGIN\r\n",
        b"AUTH": b"235 2.7.0 ok\r\n",
        b"RCPT": b"550 5.1.1 no such user\r\n",
        b"QUIT": b"221 bye\r\n",
        b"*": b"250 ok\r\n",
    }
    argv = [
        *("send", "--helo", "client.abc.example", "--from", "a@abc.example"),
        *("--to", "b@abc.example", "--user", "a@abc.example", "--password", "Zq7pw"),
    ]
    with scripted_server(b"220 mx.abc.example\r\n", smtp) as port:
        status = cli.main([*argv, "--server", f"{LOOPBACK}:{port}"])
    refused = capsys.readouterr()
    assert status == EX_TEMPFAIL  # a TLS the login needs may be offered later
    assert (
        "AUTH not sent: this client refused to go on: AUTH PLAIN or LOGIN needs TLS and "
        "the session has none: use --starttls or --tls; --allow-plaintext-auth sends the "
        "password in the clear anyway"
    ) in refused.out
    assert "allow_plaintext_auth=True" not in refused.out + refused.err
    with scripted_server(b"220 mx.abc.example\r\n", smtp) as port:
        anyway = ["--server", f"{LOOPBACK}:{port}", "--allow-plaintext-auth"]
        status = cli.main([*argv, *anyway])
    sent = capsys.readouterr()
    assert status == EX_NOUSER and "550 5.1.1 no such user" in sent.out  # logged in, then refused
    assert "AUTH not sent" not in sent.out and "Zq7pw" not in sent.out + sent.err
    warning = (
        "smtpcore send: warning: the password crosses the network in the clear "
        "(AUTH PLAIN); use --starttls or --tls"
    )
    assert sent.err.count(warning) == 1


def test_send_and_fetch_help_say_the_password_needs_tls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Both commands take ``--allow-plaintext-auth``, and ``fetch --auth`` says which of
    its choices it refuses without TLS unless given it."""
    helps = {}
    for command in ("send", "fetch"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        helps[command] = " ".join(capsys.readouterr().out.split())
    send_help = helps["send"]
    assert "--allow-plaintext-auth send the password itself (AUTH PLAIN or LOGIN)" in send_help
    assert "--allow-plaintext-auth send the password itself (USER/PASS," in helps["fetch"]
    assert (
        "USER/PASS, plain and login are refused without TLS unless --allow-plaintext-auth"
    ) in helps["fetch"]


def test_fetch_reports_errors_on_stderr_never_quoting_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fetch`` printed its errors on standard output (``send`` on standard error), and
    a password holding a control character (a CRLF file read whole into the
    environment) was quoted in the error."""
    with serve(
        tmp_path / "abc", "abc.example", ["john@abc.example:pw"], listeners=("pop3",)
    ) as abc:
        argv = [
            *("fetch", "--server", f"127.0.0.1:{abc.ports['pop3']}"),
            *("--auth", "user", "--allow-plaintext-auth"),
        ]
        for password, error in (
            ("Zq7Secr3tPw\r", "cannot log in: PASS password holds a control character"),
            ("Zq7Secr3tPw\x1b", "cannot log in: PASS password holds a control character"),
            ("Zq7Secr3tPw", "PASS refused: -ERR [AUTH]"),
        ):
            status = cli.main([*argv, "--user", "john@abc.example", "--password", password])
            out, err = capsys.readouterr()
            assert status == 1 and out == ""
            assert err.splitlines()[-1].startswith(f"smtpcore fetch: {error}"), err
            assert "Zq7Secr3tPw" not in err
        assert abc.stop() == 0


def test_fetch_shows_header_control_characters_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(
        tmp_path / "abc", "abc.example", ["john@abc.example:pw"], listeners=("smtp", "pop3")
    ) as abc:
        with smtplib.SMTP(LOOPBACK, abc.ports["smtp"], timeout=10) as smtp:
            smtp.sendmail(
                "m@x.example",
                ["john@abc.example"],
                b"From: \x1b[2J\x1b]0;owned\x07 <m@x.example>\r\nSubject: \x1b[31mred\r\n"
                b"Date: \x07\r\n\r\nbody\r\n",
            )
        for auth in ("auto", "apop", "cram-md5", "user"):
            status = cli.main(
                [
                    *("fetch", "--server", f"127.0.0.1:{abc.ports['pop3']}"),
                    *("--user", "john@abc.example", "--password", "pw", "--auth", auth),
                    *(("--allow-plaintext-auth",) if auth == "user" else ()),
                ]
            )
            out = capsys.readouterr().out
            assert status == 0, (auth, out)
            assert "\x1b" not in out and "\x07" not in out
            assert "\\x1b[2J" in out and "\\x1b[31mred" in out
        assert abc.stop() == 0


def test_send_starttls_to_a_server_without_it_says_the_refusal_is_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--starttls`` against a server that offers none printed ``454 4.7.4 the server
    does not offer STARTTLS``, which reads as the server's reply: the client refused."""
    with serve(tmp_path / "abc", "abc.example", ["john@abc.example:pw"]) as abc:
        server = f"127.0.0.1:{abc.ports['smtp']}"
        argv = ["send", "--server", server, "--from", "x@y.example", "--to", "john@abc.example"]
        assert cli.main([*argv, "--starttls"]) == EX_TEMPFAIL
        out = capsys.readouterr().out
        said = f"<john@abc.example>: not sent to {server}: STARTTLS not sent: this client"
        assert said in out, out
        assert "the server does not offer STARTTLS" in out and "454 " not in out, out
        assert abc.stop() == 0


def test_send_says_a_refusal_before_mail_is_its_own_not_the_servers() -> None:
    """8-bit content for a server without 8BITMIME printed ``MAIL refused: 554 5.6.3 the
    server does not offer 8BITMIME``: a reply the server never sent. Every error this
    client raised on its own reads as its refusal, whichever kind it is."""
    from typing import cast

    from smtpcore._driver import BaseSMTPClient
    from smtpcore._driver._smtp_errors import ExtensionNotOffered, MessageTooLarge
    from smtpcore.address import parse_mailbox
    from smtpcore.smtp import Reply

    class Refusing:
        def __init__(self, error: Exception) -> None:
            self.error = error

        async def send_message(self, *args: object, **options: object) -> None:
            raise self.error

        async def quit(self) -> None:
            return None

    eight_bit = ExtensionNotOffered(
        None, "8BITMIME", Reply(554, "the server does not offer 8BITMIME", "5.6.3")
    )
    utf8 = ExtensionNotOffered(
        None, "SMTPUTF8", Reply(553, "the server does not offer SMTPUTF8", "5.6.7")
    )
    rcpts = [parse_mailbox("c@d.example")]
    for error in (eight_bit, utf8, MessageTooLarge(2000, 1000)):
        client = cast(BaseSMTPClient, Refusing(error))
        (fate,) = asyncio.run(_submitted(client, b"x", "a@b.example", rcpts, "srv"))
        assert fate.local and not fate.accepted, fate
        assert fate.text.startswith("srv: MAIL not sent: this client refused to go on: "), fate
        assert str(error.reply.code) not in fate.text, fate


def _fates_of_a_refused_message(b_reply: Reply, end: Reply) -> list[Any]:
    """What ``send`` makes of a message refused at the end of its content (``end``)
    whose recipient b got ``b_reply`` at ``RCPT`` and c got 250."""
    from typing import cast

    from smtpcore._driver import BaseSMTPClient
    from smtpcore._driver._smtp_errors import MessageRefused
    from smtpcore.address import parse_mailbox
    from smtpcore.smtp import RecipientResult, TransactionResult

    b, c = parse_mailbox("b@d.example"), parse_mailbox("c@d.example")
    result = TransactionResult(
        parse_mailbox("a@x.example"),
        Reply(250, "ok", "2.1.0"),
        (RecipientResult(b, b_reply), RecipientResult(c, Reply(250, "ok", "2.1.5"), end)),
        Reply(354, "go"),
        (end,),
        complete=True,
    )

    class Refusing:
        async def send_message(self, *args: object, **options: object) -> None:
            raise MessageRefused("end of data", end, result)

        async def quit(self) -> None:
            return None

    client = cast(BaseSMTPClient, Refusing())
    return list(asyncio.run(_submitted(client, b"x", "a@x.example", [b, c], "mx")))


def test_send_decides_each_recipient_of_a_refused_message_by_its_own_reply() -> None:
    """A message refused at the end of its content in SMTP (554) after b was refused
    for now at ``RCPT`` (452): every recipient took the error's one reply, so c, refused
    for good, read as temporary and could go to the next exchanger (RFC 5321 §5.1).
    Each recipient's fate comes from ``result`` now, as for a refusal of every
    ``RCPT``: b temporary by its 452, c permanent by the 554 (§4.2.1)."""
    fates = _fates_of_a_refused_message(
        Reply(452, "b over quota", "4.2.2"), Reply(554, "content refused", "5.7.1")
    )
    assert [(f.recipient, f.accepted, f.temporary) for f in fates] == [
        ("b@d.example", False, True),
        ("c@d.example", False, False),
    ]
    assert "452 4.2.2 b over quota" in fates[0].text, fates
    assert "554 5.7.1 content refused" in fates[1].text, fates


def test_send_shows_a_reply_of_several_lines_as_the_relay_keeps_it() -> None:
    """``send`` joined a reply's lines behind one code (``550 5.1.1 no such user``);
    it now writes each line with its code, as the relay's log and reports do (RFC 3461
    §9.2), by the relay's own function."""
    fates = _fates_of_a_refused_message(
        Reply(550, ["no such", "user"], "5.1.1"), Reply(554, ["content", "refused"], "5.7.1")
    )
    assert [f.text for f in fates] == [
        "mx: 550-5.1.1 no such 550 5.1.1 user",
        "mx: 554-5.7.1 content 554 5.7.1 refused",
    ]


def test_send_matches_results_to_recipients_by_address_not_by_text() -> None:
    """The client names a recipient as it sent it: a UTF-8 domain in A-labels to a
    server without SMTPUTF8 (RFC 6531 §3.4), and a message split for LIMITS lists its
    results transaction by transaction. ``send`` looked results up by the text the
    user gave, so ``u@bücher.example`` found none and went to the next exchanger too.
    Each fate is its recipient's now, in the order given and as the user wrote it."""
    from typing import cast

    from smtpcore._driver import BaseSMTPClient
    from smtpcore.smtp import RecipientResult, Reply, TransactionResult

    idn, other = parse_mailbox("u@bücher.example"), parse_mailbox("v@pqr.example")
    queued = Reply(250, "queued", "2.0.0")
    result = TransactionResult(
        parse_mailbox("a@x.example"),
        Reply(250, "ok", "2.1.0"),
        (
            RecipientResult(other, Reply(550, "v unknown", "5.1.1")),
            RecipientResult(idn.a_label_form, Reply(250, "ok", "2.1.5"), queued),
        ),
        Reply(354, "go"),
        (queued,),
        complete=True,
    )

    class Answering:
        async def send_message(self, *args: object, **options: object) -> TransactionResult:
            return result

        async def quit(self) -> None:
            return None

    client = cast(BaseSMTPClient, Answering())
    fates = asyncio.run(_submitted(client, b"x", "a@x.example", [idn, other], "mx"))
    assert [(f.recipient, f.accepted, f.temporary) for f in fates] == [
        ("u@bücher.example", True, False),
        ("v@pqr.example", False, False),
    ]


async def _submitted(
    client: Any, content: bytes, sender: str, rcpts: list[Any], where: str
) -> list[Any]:
    """The fates ``send``'s one transaction (``_submit``) records, in the order of
    ``rcpts``."""
    from smtpcore.server._send_record import _Record
    from smtpcore.server._send_sessions import _submit

    record = _Record()
    await _submit(client, content, sender, dict(enumerate(rcpts)), where, record)
    return record.fates()


_LIMITS_RCPTMAX_1 = (
    "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
    "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTMAX=1\n"
)
"""A scripted server's greeting and EHLO reply whose LIMITS send one recipient a
transaction (RFC 9422 §4.2)."""


def _fates_of_b_and_c(steps: list[Any]) -> list[Any]:
    """The fates ``send``'s one transaction (``_submit``) gives b and c, sent to a
    scripted server playing ``steps``."""
    from smtpcore.asyncio import SMTPClient

    rcpts = [parse_mailbox("b@pqr.example"), parse_mailbox("c@pqr.example")]

    async def go(port: int) -> Any:
        client = SMTPClient("127.0.0.1", port)
        await client.connect()
        content = b"Subject: x\r\n\r\nbody\r\n"
        return await _submitted(client, content, "a@abc.example", rcpts, "mx")

    with ScriptedServer(steps) as server:
        fates: list[Any] = asyncio.run(go(server.port))
    return fates


def test_send_decides_each_recipient_of_a_message_split_for_limits_by_its_own_reply() -> None:
    """A server's LIMITS RCPTMAX=1 splits the message (RFC 9422 §4.2): b refused for
    now at ``RCPT`` (452), c refused for good after the content (550). The error is
    b's transaction's (452, RFC 5321 §4.2.1), yet each recipient's fate is its own
    reply: b temporary, c permanent, never c's fate by b's reply or b's by c's."""
    steps = script(
        _LIMITS_RCPTMAX_1 + "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 250 ok\nS: 452 4.2.2 b over quota\nS: 554 5.5.1 no valid recipients\n"
        "C: RSET\nC: MAIL FROM:<a@abc.example>\nC: RCPT TO:<c@pqr.example>\nC: DATA\n"
        "S: 250 reset\nS: 250 ok\nS: 250 ok\nS: 354 go\n"
        "C: Subject: x\nC:\nC: body\nC: .\nS: 550 5.7.1 content refused\n"
        "C: QUIT\nS: 221 bye\n"
    )
    fates = _fates_of_b_and_c(steps)
    assert [(f.recipient, f.accepted, f.temporary) for f in fates] == [
        ("b@pqr.example", False, True),
        ("c@pqr.example", False, False),
    ]
    assert "452 4.2.2 b over quota" in fates[0].text, fates
    assert "550 5.7.1 content refused" in fates[1].text, fates


def test_send_decides_each_recipient_after_a_batch_refused_at_mail_by_its_own_reply() -> None:
    """LIMITS RCPTMAX=1 again: b's batch refused for now at ``MAIL`` (451), c refused
    for good at ``RCPT`` (550). The error is the ``SenderRefused`` of b's batch (its
    451 is temporary, RFC 5321 §4.2.1), and it holds every batch's result: c's fate is
    its own 550, not b's 451 (c went to the next exchanger, its refusal never said)."""
    steps = script(
        _LIMITS_RCPTMAX_1 + "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 451 4.3.0 sender check deferred\nS: 503 5.5.1 no MAIL\nS: 503 5.5.1 no MAIL\n"
        "C: RSET\nC: MAIL FROM:<a@abc.example>\nC: RCPT TO:<c@pqr.example>\nC: DATA\n"
        "S: 250 reset\nS: 250 ok\nS: 550 5.1.1 c no such user\n"
        "S: 554 5.5.1 no valid recipients\n"
        "C: QUIT\nS: 221 bye\n"
    )
    fates = _fates_of_b_and_c(steps)
    assert [(f.recipient, f.accepted, f.temporary) for f in fates] == [
        ("b@pqr.example", False, True),
        ("c@pqr.example", False, False),
    ]
    assert "451 4.3.0 sender check deferred" in fates[0].text, fates
    assert "550 5.1.1 c no such user" in fates[1].text, fates


def test_fetch_delete_without_a_maildir_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``fetch --delete`` alone read each message for its summary line, then deleted it:
    the mail was thrown away. It is a usage error now, before any password is asked."""
    argv = ["fetch", "--server", "127.0.0.1:9", "--user", "u", "--delete"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "smtpcore fetch: --delete needs --to-maildir: the messages would be deleted "
        "from the server without being kept anywhere\n"
    )


def test_fetch_all_without_a_maildir_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """``fetch --all`` alone was accepted and did nothing: without ``--to-maildir`` there
    is no record, and every message is fetched anyway. It is a usage error, as
    ``--delete`` alone is, so that a mistyped command line does not pass unnoticed."""
    argv = ["fetch", "--server", "127.0.0.1:9", "--user", "u", "--all"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == (
        "smtpcore fetch: --all needs --to-maildir: only the record kept in a Maildir "
        "makes fetch leave messages out\n"
    )


def test_send_says_when_a_refused_starttls_sends_the_message_without_tls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A server that offers STARTTLS and answers it 454: ``send`` without a login
    goes on in plaintext (RFC 3207 §4), and says so on stderr."""
    session = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250 STARTTLS
C: STARTTLS
S: 454 4.7.0 TLS not available
C: MAIL FROM:<x@y.example>
S: 250 2.1.0 ok
C: RCPT TO:<john@abc.example>
S: 250 2.1.5 ok
C: DATA
S: 354 go
"""
    with ScriptedServer([*script(session), Call(_read_to_dot_and_accept)]) as server:
        where = f"127.0.0.1:{server.port}"
        argv = ["send", "--server", where, "--from", "x@y.example", "--to", "john@abc.example"]
        assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert f"{where} refused STARTTLS (454 4.7.0 TLS not available)" in err, err
    assert "sending without TLS" in err, err


def _read_to_dot_and_accept(conn: ScriptedConnection) -> None:
    """The rest of the content up to its dot, then 250 and 221."""
    conn.content()
    conn.send(b"250 2.0.0 queued\r\n")
    if conn.line() == b"QUIT":
        conn.send(b"221 2.0.0 bye\r\n")
