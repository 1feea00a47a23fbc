"""The fail2ban filter shipped in docs/fail2ban/smtpcore.conf against the lines a running
``python -m smtpcore serve`` writes (issue 13 item 10): every refusal is one line with
the client's address, and the filter finds the address in each, and in nothing else.

fail2ban itself is not needed: its configuration is read with ``configparser`` as
fail2ban reads it, the date is cut off as its ``datepattern`` says, and ``<HOST>``
becomes an address group, as fail2ban substitutes it.
"""

from __future__ import annotations

import base64
import configparser
import errno
import logging
import os
import poplib
import re
import smtplib
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from unittest.mock import ANY

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from peers import TLSFiles, recorded_sleeps, running_smtp_server
from peers import running_pop3_server as _pop3_server
from smtpcore._driver._failures import BY_ERRNO
from smtpcore._driver._proxied import unnamed_client_text
from smtpcore.handler import AuthIdentity, Handler, Session
from smtpcore.proxy import ProxyHeader, ProxyProtocolError, parse_proxy_header
from smtpcore.server.log import refusal_line
from smtpcore.server.logformat import SERVE_FORMAT, LevelWordFormatter, level_word
from smtpcore.smtp import Reply
from test_adapters_auth import NO_CREDENTIAL_CHECKED, PASSWORD, USER, authenticator
from test_adapters_proxy import NAMES_NO_CLIENT, v2_unix
from test_cli_serve import LOOPBACK, Served, serve

ROOT = Path(__file__).resolve().parent.parent
FILTER = ROOT / "docs" / "fail2ban" / "smtpcore.conf"
HOST = r"(?P<host>[0-9A-Fa-f.:]+)"


def _filter() -> tuple[re.Pattern[str], list[re.Pattern[str]]]:
    parser = configparser.ConfigParser()
    parser.read(FILTER, encoding="utf-8")
    definition = parser["Definition"]
    date = definition["datepattern"]
    for token, regex in (("%Y", r"\d{4}"), ("%m", r"\d\d"), ("%d", r"\d\d"), ("%H", r"\d\d")):
        date = date.replace(token, regex)
    date = date.replace("%M", r"\d\d").replace("%S", r"\d\d").replace("%f", r"\d+")
    fail = [
        re.compile(line.strip().replace("<HOST>", HOST))
        for line in definition["failregex"].splitlines()
        if line.strip()
    ]
    return re.compile(date), fail


def _hosts(log: str) -> list[tuple[str, str]]:
    """(host, line) for each line of ``log`` the filter matches."""
    date, fail = _filter()
    found = []
    for line in log.splitlines():
        stamp = date.match(line)
        if stamp is None:
            continue
        rest = line[stamp.end() :]
        for regex in fail:
            match = regex.search(rest)
            if match is not None:
                found.append((match.group("host"), line))
                break
    return found


def _banned_lines(log: str) -> list[str]:
    """The lines of ``log`` the filter matches, each of them naming the test's client."""
    found = _hosts(log)
    assert {host for host, _ in found} == {"127.0.0.1"}
    return [line for _, line in found]


def _serve_john(tmp_path: Path, *extra: str) -> AbstractContextManager[Served]:
    """abc.example's server, with one user: john@abc.example, password john-pw."""
    return serve(tmp_path / "abc", "abc.example", ["john@abc.example:john-pw"], extra=extra)


def test_the_filter_parses_as_fail2ban_reads_it() -> None:
    date, fail = _filter()
    assert len(fail) == 3 and date.match("2026-12-03 14:43:07,530 x")


def test_every_refusal_is_one_line_the_filter_bans_and_nothing_else(tmp_path: Path) -> None:
    with _serve_john(tmp_path, "--max-message-size", "2000") as abc:
        ports = abc.ports
        with smtplib.SMTP(LOOPBACK, ports["smtp"], timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("x@elsewhere.example")
            assert smtp.rcpt("nobody@abc.example")[0] == 550  # unknown user
            assert smtp.rcpt("someone@pqr.example")[0] == 550  # relay denied
            assert smtp.rcpt("john@abc.example")[0] == 250
            code, _ = smtp.data(b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n")
            assert code == 552  # too big
        with smtplib.SMTP(LOOPBACK, ports["submission"], timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.mail("john@abc.example")[0] == 530  # AUTH first
            smtp.rset()
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login("john@abc.example", "wrong")
        with smtplib.SMTP(LOOPBACK, ports["submission"], timeout=10) as smtp:
            smtp.login("john@abc.example", "john-pw")
            assert smtp.mail("mary@abc.example")[0] == 553  # not his address
            smtp.rset()
            smtp.sendmail("john@abc.example", ["john@abc.example"], b"Subject: ok\r\n\r\nok\r\n")
        client = poplib.POP3(LOOPBACK, ports["pop3"], timeout=10)
        client.user("john@abc.example")
        with pytest.raises(poplib.error_proto):
            client.pass_("wrong")
        client.quit()
        assert abc.stop() == 0
    log = abc.log()
    found = _banned_lines(log)
    kinds = [re.search(r"reject: (\w+) from", line).group(1) for line in found]  # type: ignore[union-attr]
    # smtplib tries each mechanism the server offers: one AUTH line or more.
    assert sorted(set(kinds)) == ["AUTH", "DATA", "MAIL", "PASS", "RCPT"]
    assert (kinds.count("RCPT"), kinds.count("MAIL"), kinds.count("DATA")) == (2, 2, 1), log
    codes = "\n".join(found)
    for text in ("550 5.1.1", "550 5.7.1", "552 5.3.4", "530 5.7.0", "535", "553 5.7.1"):
        assert text in codes, (text, codes)
    assert "-ERR [AUTH]" in codes
    # Nothing else: sessions, accepted messages and deliveries are not refusals.
    assert all("reject:" in line for line in found)
    assert "status=sent" in log and "disconnect from [127.0.0.1]" in log
    # Addresses print as addresses, never as Python tuples.
    assert "('127.0.0.1'" not in log


@contextmanager
def _after_ehlo(
    port: int, helo: bytes = b"relay.example"
) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A connection to the SMTP server on ``port``, past its greeting and the reply to
    ``EHLO helo``: the socket, and the lines it reads."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        lines = sock.makefile("rb")
        lines.readline()
        sock.sendall(b"EHLO " + helo + b"\r\n")
        while lines.readline()[3:4] == b"-":
            pass
        yield sock, lines


def _until_closed(smtp: smtplib.SMTP, command: str, most: int) -> bytes:
    """Send ``command`` until the server answers 421 and ends the session (at most
    ``most`` times); the 421's text."""
    for _ in range(most):
        code, text = smtp.docmd(command)
        if code == 421:
            return text
    raise AssertionError(f"no 421 after {most} times {command!r}")


# A sender whose quoted local part (RFC 5321 §4.1.2 Quoted-string) writes what a
# 421 disconnect line says, for another address: it reaches the log in from=<...>.
FORGED_SENDER = '"reject: AUTH from [192.0.2.99]:1: 421 4.7.0 h Too many errors"@b.example'


def test_a_session_ended_for_abuse_is_one_line_the_filter_bans(tmp_path: Path) -> None:
    """The server ends a session that errs, guesses passwords or sends junk with a
    421 4.7.0 "Too many ..." (Postfix's smtpd_hard_error_limit, fail2ban's postfix
    "errors" mode). The filter matched none of those lines: a client that sent
    nothing but unknown commands was never banned. A sender address that writes
    such a line is not one."""
    with _serve_john(tmp_path, "--auth-failure-delay", "0") as abc:
        ports = abc.ports
        with smtplib.SMTP(LOOPBACK, ports["smtp"], timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.mail(FORGED_SENDER)[0] == 250
            assert smtp.rcpt("john@abc.example")[0] == 250
            assert smtp.data(b"Subject: forged\r\n\r\nx\r\n")[0] == 250
        wrong = base64.b64encode(b"\0john@abc.example\0wrong").decode("ascii")
        abuse = [
            ("smtp", "RCPT TO:<x@abc.example>", b"Too many errors"),
            ("submission", f"AUTH PLAIN {wrong}", b"Too many failed authentications"),
            ("smtp", "XYZZY", b"Too many unknown commands"),
            ("smtp", "NOOP", b"Too many commands"),
        ]
        for listener, command, said in abuse:
            smtp = smtplib.SMTP(LOOPBACK, ports[listener], timeout=10)
            smtp.ehlo()
            assert said in _until_closed(smtp, command, 200)
            smtp.close()
        assert abc.stop() == 0
    log = abc.log()
    found = _banned_lines(log)
    disconnects = [line for line in found if ": 421 4.7.0 " in line]
    ends = sorted(line.rpartition(" Too many ")[2] for line in disconnects)
    assert ends == ["commands", "errors", "failed authentications", "unknown commands"], log
    assert "192.0.2.99" in log and all("192.0.2.99" not in line for line in found)


def test_cram_md5_and_apop_a_user_cannot_use_are_no_failed_logins(tmp_path: Path) -> None:
    """With one user's password in the clear, CRAM-MD5 and APOP are offered to all;
    fetchmail's ``auth any`` tries CRAM-MD5 for a user whose secret is SCRAM keys,
    fails, and falls back to USER/PASS, and its reject line banned the poller. The
    client is answered as for a wrong password, after the same delay; the line says
    the attempt was not possible and the filter does not match it. A wrong password
    for a user who has one is still a failed login, and so is an unknown user."""
    import hashlib
    import hmac

    from smtpcore.server.credentials import hash_password

    keys = f"john@abc.example:{hash_password('john-pw')}"
    with serve(
        tmp_path / "abc",
        "abc.example",
        [keys, "mary@abc.example:mary-pw"],
        extra=("--auth-failure-delay", "0"),
    ) as abc:
        answers = {}
        for name in ("john@abc.example", "mary@abc.example", "nobody@abc.example"):
            with socket.create_connection((LOOPBACK, abc.ports["pop3"]), timeout=10) as sock:
                reader = sock.makefile("rb")
                stamp = reader.readline().split()[-1]
                apop = hashlib.md5(stamp + b"john-pw").hexdigest()
                sock.sendall(f"APOP {name} {apop}\r\n".encode())
                refused = reader.readline()
                sock.sendall(b"AUTH CRAM-MD5\r\n")
                challenge = base64.b64decode(reader.readline()[2:].strip())
                digest = hmac.new(b"john-pw", challenge, hashlib.md5).hexdigest()
                sock.sendall(base64.b64encode(f"{name} {digest}".encode()) + b"\r\n")
                answers[name] = (refused, reader.readline())
        assert abc.stop() == 0
    assert len(set(answers.values())) == 1, answers  # one answer: no user enumeration
    assert all(a.startswith(b"-ERR [AUTH]") for a in answers["john@abc.example"]), answers
    log = abc.log()
    found = "\n".join(line for _, line in _hosts(log))
    assert "john@" not in found
    assert "user=<mary@abc.example>" in found and found.count("user=<>") == 2, found
    impossible = [line for line in log.splitlines() if "not possible" in line]
    assert len(impossible) == 2, log
    assert impossible[0].endswith(
        "pop3: APOP from [127.0.0.1]:"
        + impossible[0].split("]:")[1].split(":")[0]
        + ": -ERR [AUTH] Authentication failed; not possible for this user: "
        "no password in the clear; user=<john@abc.example>"
    ), impossible
    assert impossible[1].endswith("; mechanism=CRAM-MD5 user=<john@abc.example>"), impossible


def test_a_cancelled_auth_is_no_failed_login(tmp_path: Path) -> None:
    """RFC 4954 §4 and RFC 5034 §4: a client that answers a challenge with ``*``
    gives up; it guessed no password. The SMTP server logged its ``501`` as a failed
    login, ``reject: AUTH ... 501 5.0.0``, which the filter bans: a client that
    cancelled was banned. The line now says it was cancelled, and the filter passes
    it by; POP3's ``-ERR`` to a cancel was never one."""
    with _serve_john(tmp_path) as abc:
        with _after_ehlo(abc.ports["submission"], b"client.test") as (sock, reader):
            for _ in range(2):
                sock.sendall(b"AUTH PLAIN\r\n")
                assert reader.readline().startswith(b"334")
                sock.sendall(b"*\r\n")
                assert reader.readline().startswith(b"501 5.0.0")
        with socket.create_connection((LOOPBACK, abc.ports["pop3"]), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"AUTH PLAIN\r\n")
            assert reader.readline().startswith(b"+ ")
            sock.sendall(b"*\r\n")
            assert reader.readline().startswith(b"-ERR")
        assert abc.stop() == 0
    log = abc.log()
    assert _hosts(log) == [], log
    cancelled = [line for line in log.splitlines() if "cancelled by the client" in line]
    assert len(cancelled) == 2 and all("AUTH PLAIN from [127.0.0.1]:" in c for c in cancelled)


def test_an_auth_refusal_that_checked_no_credential_is_answered_at_once_and_never_banned(
    tmp_path: Path, tls: TLSFiles
) -> None:
    """``AUTH CRAM-MD5 =`` waited ``--auth-failure-delay``, and it, PLAIN before
    STARTTLS, an unknown mechanism, a syntax error, an answer not base64 or too long
    were each logged ``reject: AUTH``, which the filter counts: the documented jail
    (maxretry = 5) banned a client that had tried no password. Five of each, in a
    session of their own, are now answered while the delay is an hour, and the filter
    matches none of their lines. (With a certificate, PLAIN needs STARTTLS first.)"""
    options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    with _serve_john(tmp_path, "--auth-failure-delay", "3600", *options) as abc:
        for lines, refusal in NO_CREDENTIAL_CHECKED:
            with _after_ehlo(abc.ports["submission"], b"client.test") as (sock, reader):
                for _ in range(5):
                    for line in lines:
                        sock.sendall(line + b"\r\n")
                        answer = reader.readline()
                    assert answer.startswith(refusal), (lines, answer)
                sock.sendall(b"NOOP\r\n")
                assert reader.readline().startswith(b"250"), lines
        assert abc.stop() == 0
    log = abc.log()
    assert _hosts(log) == [], log
    unchecked = [line for line in log.splitlines() if "no credential checked: AUTH" in line]
    assert len(unchecked) == 5 * len(NO_CREDENTIAL_CHECKED), log


OLDER_SERVERS_NO_CREDENTIAL_LINES = [
    # What a server before "no credential checked:" logged for AUTH refusals that
    # judged no credential: the machine's own refusal with nothing after the reply,
    # and the 501 5.7.0 to an initial response to CRAM-MD5, which names no user.
    "538 5.7.11 Encryption required for requested mechanism",
    "504 5.5.4 Unrecognized authentication type",
    "501 5.5.4 Syntax: AUTH mechanism [initial-response]",
    "501 5.7.0 Client initiated Authentication Exchange; mechanism=CRAM-MD5 user=<>",
]


@pytest.mark.parametrize("refusal", OLDER_SERVERS_NO_CREDENTIAL_LINES)
def test_no_auth_refusal_that_checks_no_credential_is_banned_in_an_older_servers_shape(
    refusal: str,
) -> None:
    """Earlier servers logged every AUTH refusal ``reject:``: the filter passes by the
    ones that never check a credential. A wrong password's, and the 421 after too many,
    are still banned."""
    peer = "[192.0.2.7]:40318"
    old = f"NOQUEUE: reject: AUTH from {peer}: {refusal}"
    assert _hosts(_as_logged([_record("smtpcore.server", old)])) == []
    banned = [
        f"NOQUEUE: reject: AUTH from {peer}: 535 5.7.8 Authentication credentials invalid;"
        " mechanism=PLAIN user=<>",
        f"NOQUEUE: reject: AUTH from {peer}: 501 5.7.8 Authentication cancelled,"
        " credentials invalid; mechanism=XOAUTH2 user=<>",
        f"NOQUEUE: reject: AUTH from {peer}: 421 4.7.0 mx.abc.example Too many failed"
        " authentications",
    ]
    found = _hosts(_as_logged([_record("smtpcore.server", line) for line in banned]))
    assert [host for host, _ in found] == ["192.0.2.7"] * 3


@pytest.mark.parametrize(
    "veto",
    [
        Reply(538, "Encryption required for this account", "5.7.11"),
        Reply(504, "Unrecognized authentication type", "5.5.4"),
        Reply(501, "Syntax: AUTH mechanism [initial-response]", "5.5.4"),
        Reply(501, "Client initiated Authentication Exchange", "5.7.0"),
    ],
)
def test_a_failed_login_is_banned_whatever_its_code(veto: Reply) -> None:
    """The filter's exceptions for an older server's lines passed by this server's
    failed logins that carry the same code: a handler's veto worded ``538 5.7.11``,
    held back and logged ``reject: AUTH``, was never banned. Its line ends with the
    login's fields, which no exempted line of an older server had, and is banned."""
    peer = "[192.0.2.7]:40318"
    for user in (USER, ""):
        line = f"NOQUEUE: reject: AUTH from {peer}: {veto}; mechanism=PLAIN user=<{user}>"
        found = _hosts(_as_logged([_record("smtpcore.server", line)]))
        assert [host for host, _ in found] == ["192.0.2.7"], line


class _Vetoing(Handler):
    """Refuses every login it is asked about with ``veto``."""

    def __init__(self, veto: Reply) -> None:
        self.veto = veto

    async def handle_auth(self, session: Session, identity: AuthIdentity) -> Reply | None:
        return self.veto


@pytest.mark.parametrize(
    "veto",
    [
        Reply(538, "Encryption required for this account", "5.7.11"),
        Reply(504, "Not with this mechanism", "5.5.4"),
    ],
    ids=["538", "504"],
)
def test_a_veto_is_delayed_and_banned_whatever_its_code(
    adapter: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, veto: Reply
) -> None:
    """A handler's veto is a failed login whatever its code. One worded ``538`` was held
    back ``auth_failure_delay`` and logged ``reject: AUTH ... 538 ...; mechanism=PLAIN
    user=<...>``, but the filter passed such lines by; one worded ``504`` was neither
    held back nor logged. Each is now held back, logged, and banned."""
    caplog.set_level(logging.INFO, "smtpcore")
    sleeps = recorded_sleeps(adapter, monkeypatch)
    options = {"auth_require_tls": False, "auth_failure_delay": 0.01}
    login = b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n"
    with (
        running_smtp_server(adapter, _Vetoing(veto), auth=authenticator(), **options) as server,
        socket.create_connection((LOOPBACK, server.port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"EHLO client.example\r\n")
        while not lines.readline().startswith(b"250 "):
            pass
        sock.sendall(login * 2 + b"QUIT\r\n")
        answers = [lines.readline().rstrip() for _ in range(3)]
        assert answers[:2] == [str(veto).encode()] * 2, answers
        assert answers[2].startswith(b"221 2.0.0 "), answers
    assert sleeps == [0.01, 0.01]
    found = _hosts(_as_logged(caplog.records))
    assert [host for host, _ in found] == ["127.0.0.1"] * 2, found
    assert all(f"; mechanism=PLAIN user=<{USER}>" in line for _, line in found), found


@pytest.mark.parametrize(
    "veto",
    [
        Reply(538, "Encryption required for this account", "5.7.11"),
        Reply(504, "Not with this mechanism", "5.5.4"),
        Reply(534, "Authentication mechanism is too weak", "5.7.9"),
        Reply(550, "Not here", "5.7.1"),
        Reply(535, "Authentication credentials invalid", "5.7.8"),
    ],
    ids=["538", "504", "534", "550", "535"],
)
def test_a_veto_counts_toward_max_auth_failures_whatever_its_code(
    adapter: str, caplog: pytest.LogCaptureFixture, veto: Reply
) -> None:
    """A handler's veto judged a credential the mechanism had accepted: a failed login,
    delayed and logged as one, but the machine counted toward ``max_auth_failures``
    only a ``535`` or a ``5.7.8``, so a veto worded ``538``, ``504``, ``534`` or ``550``
    let a client try passwords without end. Every veto now counts, once, as a 535
    does: at the limit the next AUTH is answered ``421`` and the session closes."""
    caplog.set_level(logging.INFO, "smtpcore")
    options = {"auth_require_tls": False, "auth_failure_delay": 0, "max_auth_failures": 2}
    login = b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n"
    with (
        running_smtp_server(adapter, _Vetoing(veto), auth=authenticator(), **options) as server,
        socket.create_connection((LOOPBACK, server.port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"EHLO client.example\r\n")
        while not lines.readline().startswith(b"250 "):
            pass
        sock.sendall(login * 3)
        answers = [lines.readline().rstrip() for _ in range(3)]
        assert lines.readline() == b"", "closed"
    assert answers[:2] == [str(veto).encode()] * 2, answers
    assert answers[2].startswith(b"421 4.7.0 ") and answers[2].endswith(
        b"Too many failed authentications"
    ), answers
    found = _hosts(_as_logged(caplog.records))
    assert [host for host, _ in found] == ["127.0.0.1"] * 3, found


def test_a_line_that_only_starts_as_auth_is_refused_as_an_unknown_command_is(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``AUTHX`` and ``AUTHENTICATE foo`` are unknown commands (``500``), not AUTH
    refused before a credential was checked: they were logged ``no credential
    checked:``, which the filter passes by, so a client could send any number
    unbanned. They are a ``reject:`` again, the verb hidden as ``AUTH`` (what follows
    may be a password). The same words sent as the answer to a 334 are part of the
    exchange: refused (not base64) and logged ``no credential checked:``."""
    caplog.set_level(logging.INFO, "smtpcore")
    options = {"auth_require_tls": False, "auth_failure_delay": 0}
    with (
        running_smtp_server(adapter, Handler(), auth=authenticator(), **options) as server,
        socket.create_connection((LOOPBACK, server.port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"EHLO client.example\r\n")
        while not lines.readline().startswith(b"250 "):
            pass
        sock.sendall(b"AUTHX\r\nauthenticate foo\r\nAUTH CRAM-MD5\r\nAUTHENTICATE foo\r\n")
        answers = [lines.readline()[:9] for _ in range(4)]
        assert [answer[:4] for answer in answers] == [b"500 ", b"500 ", b"334 ", b"501 "]
        assert answers[3] == b"501 5.5.2", answers
    log = _as_logged(caplog.records)
    banned = _banned_lines(log)
    assert len(banned) == 2 and all(": 500 5.5.2 Command unrecognized" in b for b in banned), log
    assert all("reject: AUTH from [127.0.0.1]:" in b for b in banned), banned
    (unchecked,) = [line for line in log.splitlines() if "no credential checked:" in line]
    assert unchecked.endswith(": 501 5.5.2 Invalid base64 data; mechanism=CRAM-MD5"), unchecked


#: POP3 login refusals that check no credential: (TLS required first, lines sent, the
#: command the log names, the ``mechanism=`` it adds). The answer to each is ``-ERR``.
POP3_NO_CREDENTIAL_CHECKED = [
    (True, [b"USER alice"], "USER", None),
    (True, [b"PASS wonderland"], "PASS", None),
    (True, [b"APOP alice 0123456789abcdef0123456789abcdef"], "APOP", None),
    (True, [b"AUTH CRAM-MD5"], "AUTH", "CRAM-MD5"),
    (False, [b"AUTH NOSUCH d29uZGVybGFuZA=="], "AUTH", None),
    (False, [b"PASS wonderland"], "PASS", None),
    (False, [b"AUTH CRAM-MD5 ="], "AUTH", "CRAM-MD5"),
    (False, [b"AUTH CRAM-MD5", b"not base64!"], "AUTH", "CRAM-MD5"),
    (False, [b"AUTH CRAM-MD5", b"QQ" * 20_000], "AUTH", "CRAM-MD5"),
]


@pytest.mark.parametrize(
    ("require_tls", "lines", "command", "mechanism"),
    POP3_NO_CREDENTIAL_CHECKED,
    ids=[
        "USER before STLS",
        "PASS before STLS",
        "APOP before STLS",
        "AUTH before STLS",
        "unknown mechanism",
        "PASS without USER",
        "initial response to CRAM-MD5",
        "answer not base64",
        "answer too long",
    ],
)
def test_a_pop3_login_refusal_that_checked_no_credential_is_logged_as_smtp_logs_it(
    adapter: str,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    tls: TLSFiles,
    require_tls: bool,
    lines: list[bytes],
    command: str,
    mechanism: str | None,
) -> None:
    """The POP3 server logged nothing for a login refused before any credential was
    checked (USER, PASS, APOP or AUTH before STLS where TLS is required, an unknown
    mechanism, a syntax error, an answer to a challenge that is not base64 or too
    long), where SMTP logs ``no credential checked:``. It now logs the same words, in
    a line the filter does not match; each is answered at once (the failure delay is
    30 s) and the session goes on."""
    from smtpcore.maildrop import MaildirStore

    caplog.set_level(logging.INFO, "smtpcore")
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    options: dict[str, Any] = {"auth_failure_delay": 30.0, "max_auth_failures": 1}
    if require_tls:
        options.update(ssl_context=tls.server_context, require_tls=True)
    with (
        _pop3_server(adapter, store, **options) as server,
        socket.create_connection((LOOPBACK, server.port), timeout=10) as sock,
        sock.makefile("rb") as answers,
    ):
        assert answers.readline().startswith(b"+OK")
        for line in lines:
            sock.sendall(line + b"\r\n")
            answer = answers.readline()
        assert answer.startswith(b"-ERR"), answer
        sock.sendall(b"NOOP\r\n")  # not logged in: refused, but the session goes on
        assert answers.readline().startswith(b"-ERR")
    log = _as_logged(caplog.records)
    assert _hosts(log) == [], log
    (unchecked,) = [line for line in log.splitlines() if "no credential checked:" in line]
    named = f"; mechanism={mechanism}" if mechanism else ""
    shown = answer.decode("ascii").rstrip("\r\n")
    assert unchecked.endswith(f": {shown}{named}"), unchecked
    assert f" smtpcore.pop3.server: pop3: no credential checked: {command} from [127.0.0.1]:" in (
        unchecked
    )
    assert "wonderland" not in log and "d29uZGVybGFuZA" not in log


def test_a_client_xclient_names_without_a_port_is_banned_under_its_address(
    tmp_path: Path,
) -> None:
    """XCLIENT ``ADDR`` without ``PORT`` names a client whose port nobody knows: its lines
    name it ``[203.0.113.8]``, no port (port 0 is no client's, RFC 9293 §3.1), and the
    filter, which wanted ``]:port``, still bans that address, not the filter's."""
    with _serve_john(tmp_path, "--xclient-from", LOOPBACK) as abc:
        commands = [b"EHLO filter.test", b"XCLIENT ADDR=203.0.113.8", b"EHLO c.example"]
        commands += [b"MAIL FROM:<x@elsewhere.example>", b"RCPT TO:<nobody@abc.example>"]
        with socket.create_connection((LOOPBACK, abc.ports["smtp"]), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for command in [*commands, b"QUIT"]:
                sock.sendall(command + b"\r\n")
                while (line := reader.readline())[3:4] == b"-":
                    pass
            assert line.startswith(b"221 "), line
        assert abc.stop() == 0
    log = abc.log()
    (found,) = _hosts(log)
    assert found[0] == "203.0.113.8" and "RCPT from [203.0.113.8]: 550 " in found[1], log


def _proxied_session(port: int, header: bytes, commands: list[bytes]) -> list[bytes]:
    """A session through the proxy: ``header``, then each command and its reply's last
    line, until the server ends the session (its last reply then followed by b"")."""
    with (
        socket.create_connection((LOOPBACK, port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(header)
        replies = [lines.readline()]
        for command in commands:
            sock.sendall(command)
            while (line := lines.readline())[3:4] == b"-":
                pass
            replies.append(line)
            if not line:
                break
        return replies


UNIX_CLIENT = v2_unix(b"/run/user/1000/mua [192.0.2.66]:25", b"/run/haproxy/mail.sock")
UNNAMED = {"v1 UNKNOWN": b"PROXY UNKNOWN\r\n", "v2 UNIX": UNIX_CLIENT}


@pytest.mark.parametrize("header", UNNAMED.values(), ids=UNNAMED.keys())
def test_a_client_the_proxy_names_by_no_address_never_bans_the_proxy(
    tmp_path: Path, header: bytes
) -> None:
    """A client the PROXY header names by no address (a Unix socket's, ``UNKNOWN``)
    keeps the proxy's address as its peer, a stand-in: its refusals were logged
    ``from [<proxy>]:port``, and a local user's wrong passwords had fail2ban ban the
    proxy, and every client behind it. Its lines name it ``... via proxy [..]:port``,
    which the filter does not read as an address; a client the header names by address
    is still banned under it."""
    with _serve_john(
        tmp_path, "--auth-failure-delay", "0", "--proxy-protocol-from", LOOPBACK
    ) as abc:
        ports = abc.ports
        pop3 = [b"USER john@abc.example\r\n", b"PASS wrong\r\n"] * 2 + [b"QUIT\r\n"]
        smtp = [b"EHLO client.example\r\n", b"MAIL FROM:<x@elsewhere.example>\r\n"]
        smtp += [b"RCPT TO:<nobody@abc.example>\r\n"] + [b"XYZZY\r\n"] * 30
        for named in (header, b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 110\r\n"):
            said = _proxied_session(ports["pop3"], named, pop3)
            assert said[2].startswith(b"-ERR [AUTH]"), said
            said = _proxied_session(ports["smtp"], named, smtp)
            assert said[3].startswith(b"550 ") and said[-2].startswith(b"421 4.7.0"), said
        assert abc.stop() == 0
    log = abc.log()
    assert {host for host, _ in _hosts(log)} == {"192.0.2.7"}, log
    unnamed = [line for line in log.splitlines() if " via proxy [127.0.0.1]:" in line]
    refused = [line for line in unnamed if "reject:" in line]
    kinds = {re.search(r"reject: (\w+) from", line).group(1) for line in refused}  # type: ignore[union-attr]
    assert kinds == {"PASS", "RCPT", "command"}, log
    assert any("disconnect from" in line for line in unnamed), log


def _as_logged(records: list[logging.LogRecord]) -> str:
    """``records`` as the reference server's log writes them (its formatter: a level
    word before a WARNING's message), dated for the filter."""
    formatter = LevelWordFormatter(SERVE_FORMAT)
    return "".join(f"{formatter.format(r)}\n" for r in records)


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR])
def test_a_line_above_info_is_never_read_as_a_refusal(level: int) -> None:
    """A refusal of the server's own making is a WARNING (``warning: NOQUEUE: reject:
    ...``), and so is no line the filter bans: its level word stands where the
    expressions want the queue id. The same refusal at INFO is banned."""
    client = Session("mx.abc.example", peer=("192.0.2.7", 40312))
    line = refusal_line("smtp", client, "RCPT", Reply(550, "no", "5.7.1"))
    record = _record("smtpcore.mail", line)
    assert _hosts(_as_logged([record])) == [("192.0.2.7", ANY)]
    record.levelno, record.levelname = level, logging.getLevelName(level)
    logged = _as_logged([record])
    assert f"smtpcore.mail: {level_word(level)}NOQUEUE: reject: RCPT from " in logged
    assert _hosts(logged) == []


@pytest.mark.parametrize(
    ("header", "banned"),
    [
        *((header, set()) for header in NAMES_NO_CLIENT.values()),
        (b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 587\r\n", {"192.0.2.7"}),
    ],
    ids=[*NAMES_NO_CLIENT.keys(), "v1 TCP4"],
)
def test_a_failed_auth_behind_a_proxy_bans_the_client_it_names_and_only_that(
    adapter: str, caplog: pytest.LogCaptureFixture, header: bytes, banned: set[str]
) -> None:
    """The machine's own ``reject: AUTH`` line (SMTP AUTH, RFC 4954) for a client behind a
    trusted proxy: banned under the address the header names, never under the proxy's
    for a client the header names by no address (its log name ``... via proxy``)."""
    caplog.set_level(logging.INFO, "smtpcore")
    options = {"auth_require_tls": False, "auth_failure_delay": 0}
    with (
        running_smtp_server(
            adapter, Handler(), auth=authenticator(), proxy_protocol_from=[LOOPBACK], **options
        ) as server,
        socket.create_connection((LOOPBACK, server.port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        wrong = base64.b64encode(f"\0{USER}\0wrong".encode())
        sock.sendall(header + b"EHLO client.example\r\nAUTH PLAIN " + wrong + b"\r\nQUIT\r\n")
        while (line := lines.readline()).startswith(b"2"):
            pass
        assert line.startswith(b"535 "), line
    log = _as_logged(caplog.records)
    assert {host for host, _ in _hosts(log)} == banned, log
    (refused,) = [line for line in log.splitlines() if "reject: AUTH from" in line]
    assert (" via proxy [127.0.0.1]:" in refused) is not bool(banned), refused


def test_a_cancel_after_a_refused_token_is_a_failed_login_the_filter_bans(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``*`` in place of the dummy answer to a bearer token's error challenge (RFC
    7628 §3.2.2) was logged as a cancel, which the filter passes by: a client tried
    tokens and was never banned. The token was judged: its ``501 5.7.8`` is logged
    ``reject: AUTH``, the line the filter bans; a plain cancel still is not."""
    caplog.set_level(logging.INFO, "smtpcore")
    token = base64.b64encode(f"user={USER}\x01auth=Bearer wrong\x01\x01".encode())
    options = {"auth_require_tls": False, "auth_failure_delay": 0}
    with (
        running_smtp_server(adapter, Handler(), auth=authenticator(), **options) as server,
        socket.create_connection((LOOPBACK, server.port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(b"EHLO client.example\r\n")
        while not lines.readline().startswith(b"250 "):
            pass
        sock.sendall(b"AUTH LOGIN\r\n*\r\nAUTH XOAUTH2 " + token + b"\r\n*\r\nQUIT\r\n")
        answers = [lines.readline()[:9] for _ in range(5)]
        assert answers == [b"334 VXNlc", b"501 5.0.0", b"334 eyJzd", b"501 5.7.8", b"221 2.0.0"]
    log = _as_logged(caplog.records)
    (banned,) = _banned_lines(log)
    assert "reject: AUTH from [127.0.0.1]:" in banned and ": 501 5.7.8 " in banned, banned
    assert "mechanism=XOAUTH2" in banned, banned


@given(st.binary(max_size=107).filter(lambda path: b"\0" not in path))
@example(b"/tmp/x [192.0.2.10]:25")
@example(b"127.0.0.1")
def test_no_path_makes_a_refusal_of_a_unix_client_one_the_filter_bans(path: bytes) -> None:
    """Whatever path a local user binds his socket to, the refusal of a client the proxy
    names by it is no line the filter reads an address in, the proxy's or one the path
    spells (the escapes of :func:`~smtpcore._driver._proxied.unix_peer_text`)."""
    try:
        header = parse_proxy_header(v2_unix(path))
    except ProxyProtocolError:
        return  # refused before any session: an unprintable path
    assert isinstance(header, ProxyHeader)
    session = Session("mx.abc.example", peer=(LOOPBACK, 4000))
    session.peer_stands_in_for = unnamed_client_text(header)
    line = refusal_line("smtp", session, "AUTH", Reply(535, "Authentication failed", "5.7.8"))
    assert " via proxy [127.0.0.1]:4000: 535 " in line
    assert _hosts(_as_logged([_record("smtpcore.mail", line)])) == []


def _record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None)


@pytest.mark.parametrize(
    ("peer", "named"),
    [(("192.0.2.1", 40312), "[192.0.2.1]:40312"), (None, "[unknown]")],
)
def test_refusal_line_still_takes_a_peer_as_it_did(
    peer: tuple[str, int] | None, named: str
) -> None:
    """Callers that name the refused client by its ``(host, port)``, or None, as
    earlier versions took it (positionally or as ``peer=``), get the line they did."""
    reply = Reply(550, "no such mailbox", "5.1.1")
    expected = f"NOQUEUE: reject: RCPT from {named}: 550 5.1.1 no such mailbox; listener=smtp"
    assert refusal_line("smtp", peer, "RCPT", reply) == expected
    assert refusal_line("smtp", peer=peer, command="RCPT", reply=reply) == expected


def test_refusal_line_names_a_session_as_every_log_line_does() -> None:
    """Given the session, the line names a stand-in proxy with the client it stands in
    for, and an ordinary client by its address alone."""
    reply = Reply(535, "Authentication failed", "5.7.8")
    plain = Session("mx.abc.example", peer=("192.0.2.1", 40312))
    assert " AUTH from [192.0.2.1]:40312: 535 " in refusal_line("smtp", plain, "AUTH", reply)
    proxied = Session("mx.abc.example", peer=(LOOPBACK, 4000))
    proxied.peer_stands_in_for = "unknown"
    line = refusal_line("smtp", peer=proxied, command="AUTH", reply=reply)
    assert " AUTH from unknown via proxy [127.0.0.1]:4000: 535 " in line


def _pipelined_after_mail(
    port: int, mail: bytes, *, login: bytes = b"", recipients: int = 5
) -> list[bytes]:
    """One pipelined transaction (RFC 2920 §3.1) as Postfix or aiosmtplib sends it: MAIL,
    ``recipients`` RCPTs and DATA in one write, after EHLO (and an AUTH PLAIN
    ``login``); the first line of each reply, then of QUIT's."""
    with _after_ehlo(port) as (sock, lines):
        if login:
            sock.sendall(b"AUTH PLAIN " + base64.b64encode(login) + b"\r\n")
            assert lines.readline().startswith(b"235 "), "login"
        batch = b"MAIL FROM:<" + mail + b">\r\n"
        batch += b"RCPT TO:<john@abc.example>\r\n" * recipients + b"DATA\r\n"
        sock.sendall(batch)
        replies = [lines.readline() for _ in range(recipients + 2)]
        sock.sendall(b"QUIT\r\n")
        return [*replies, lines.readline()]


@pytest.mark.parametrize(
    ("listener", "extra", "login", "refused"),
    [
        ("smtp", ("--min-free-space", str(1 << 60)), b"", b"452 4.3.1"),
        ("submission", (), b"", b"530 5.7.0"),
        ("submission", (), b"\0john@abc.example\0john-pw", b"553 5.7.1"),
    ],
    ids=["452 full disk", "530 auth first", "553 not his address"],
)
def test_a_pipelining_client_whose_mail_is_refused_is_banned_for_that_refusal_alone(
    tmp_path: Path, listener: str, extra: tuple[str, ...], login: bytes, refused: bytes
) -> None:
    """After a refused MAIL, a pipelining client's RCPTs and DATA are each answered
    ``503 5.5.1`` (RFC 2920 §3.1: the normal result of pipelining, not a policy
    refusal). Each was a ``reject:`` line the filter matched: one attempt with five
    recipients made six, over the jail's ``maxretry = 5``, and a relay was banned for
    our own full disk. The 503s are logged as a bad sequence, which no expression
    matches; the MAIL refusal itself still counts when it is the client's doing."""
    options = ("--auth-failure-delay", "0", *extra)
    with _serve_john(tmp_path, *options) as abc:
        mail = b"mary@abc.example" if login else b"a@relay.example"
        replies = _pipelined_after_mail(abc.ports[listener], mail, login=login)
        assert abc.stop() == 0
    assert replies[0].startswith(refused), replies
    assert all(reply.startswith(b"503 5.5.1 ") for reply in replies[1:-1]), replies
    log = abc.log()
    found = _hosts(log)
    assert len(found) == (0 if refused.startswith(b"4") else 1), log
    assert all(" MAIL from " in line for _, line in found), found
    sequence = [line for line in log.splitlines() if ": 503 5.5.1 " in line]
    assert len(sequence) == 6 and all("reject:" not in line for line in sequence), log


@pytest.mark.parametrize("limit", ["--max-sessions", "--max-sessions-per-address"])
def test_a_client_a_session_limit_turns_away_is_logged_and_never_banned(
    tmp_path: Path, limit: str
) -> None:
    """A busy server is not the client's abuse (Postfix's fail2ban filters ban no
    concurrency limit either): the refusal has its line, which the filter passes by."""
    with _serve_john(tmp_path, limit, "1") as abc:
        with socket.create_connection((LOOPBACK, abc.ports["smtp"]), timeout=10) as held:
            assert held.recv(1024).startswith(b"220 ")
            with socket.create_connection((LOOPBACK, abc.ports["smtp"]), timeout=10) as refused:
                port = refused.getsockname()[1]
                assert refused.recv(1024).startswith(b"421 4.7.0 ")
        assert abc.stop() == 0
    log = abc.log()
    expected = f": too many sessions from [127.0.0.1]:{port}: refused ({limit[2:]} 1)\n"
    assert expected in log, log
    assert _hosts(log) == []


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA", "AUTH"])
def test_no_503_is_a_refusal_the_filter_bans_even_in_an_older_servers_shape(verb: str) -> None:
    """Earlier servers logged a bad sequence of commands as ``reject:``: the filter
    passes those lines by, as it does the ``bad sequence:`` lines of this one."""
    client = Session("mx.abc.example", peer=("192.0.2.7", 40312))
    sequence = Reply(503, "Need MAIL command", "5.5.1")
    old = refusal_line("smtp", client, verb, sequence)
    new = old.replace("reject:", "bad sequence:")
    assert (
        _hosts(_as_logged([_record("smtpcore.server", old), _record("smtpcore.mail", new)])) == []
    )
    refused = refusal_line("smtp", client, verb, Reply(550, "no", "5.7.1"))
    assert _hosts(_as_logged([_record("smtpcore.mail", refused)])) == [("192.0.2.7", ANY)]


@pytest.mark.parametrize("verb", ["MAIL", "RCPT", "DATA"])
@pytest.mark.parametrize("code", sorted(BY_ERRNO))
def test_no_refusal_for_want_of_room_on_our_side_is_one_the_filter_bans(
    verb: str, code: int
) -> None:
    """A full disk, a spent quota or a file size limit is the server's state, not the
    client's doing: whichever command it refuses, in the line the reference server
    writes or the driver's (no ``listener=``), the filter passes it by."""
    client = Session("mx.abc.example", peer=("192.0.2.7", 40312))
    reply, why = BY_ERRNO[code], os.strerror(code)
    lines = [
        refusal_line(listener, client, verb, reply, sender="a@b.example", detail=why)
        for listener in ("smtp", None)
    ]
    assert _hosts(_as_logged([_record("smtpcore.mail", line) for line in lines])) == []


@pytest.mark.parametrize("recipients", [25, 100])
def test_a_pipelining_relay_our_full_disk_refuses_is_never_cut_off_and_banned(
    tmp_path: Path, recipients: int
) -> None:
    """The 503s behind a refused MAIL count toward the overshoot limit, as excess
    recipients do, not ``max_errors`` (20): a relay whose batch has more recipients
    than that is not ended with ``421 4.7.0 ... Too many errors``, which the filter
    bans, for our own full disk."""
    with _serve_john(tmp_path, "--min-free-space", str(1 << 60)) as abc:
        port = abc.ports["smtp"]
        replies = _pipelined_after_mail(port, b"a@relay.example", recipients=recipients)
        assert abc.stop() == 0
    assert replies[0].startswith(b"452 4.3.1 "), replies
    assert replies[1:-1] == [b"503 5.5.1 Need MAIL command\r\n"] * (recipients + 1)
    assert replies[-1].startswith(b"221 "), replies
    assert _hosts(abc.log()) == []


def test_a_bdat_chunk_over_the_size_limit_is_banned_as_a_message_over_it_by_data_is(
    tmp_path: Path,
) -> None:
    """A message over ``--max-message-size`` sent by BDAT (RFC 3030) is refused as one
    sent by DATA, ``552 5.3.4 Message size exceeds fixed limit``, and the filter matches
    its ``reject: BDAT`` line as it matches the ``reject: DATA`` one."""
    with _serve_john(tmp_path, "--max-message-size", "2000") as abc:
        with _after_ehlo(abc.ports["smtp"]) as (sock, lines):
            sock.sendall(b"MAIL FROM:<a@relay.example>\r\nRCPT TO:<john@abc.example>\r\n")
            assert [lines.readline()[:3] for _ in range(2)] == [b"250", b"250"]
            sock.sendall(b"BDAT 3000 LAST\r\n" + b"x" * 3000)
            refused = lines.readline()
            sock.sendall(b"QUIT\r\n")
            lines.readline()
        assert abc.stop() == 0
    assert refused.startswith(b"552 5.3.4 Message size exceeds fixed limit"), refused
    (line,) = _banned_lines(abc.log())
    assert " reject: BDAT from [127.0.0.1]:" in line, line


@pytest.mark.parametrize(
    "reply",
    [Reply(503, "Bad sequence of commands", "5.5.1"), BY_ERRNO[errno.EFBIG]],
    ids=["503", "too big for system"],
)
def test_a_bdat_refusal_the_filter_passes_by_as_it_does_for_data(reply: Reply) -> None:
    client = Session("mx.abc.example", peer=("192.0.2.7", 40312))
    line = refusal_line("smtp", client, "BDAT", reply, sender="a@b.example")
    assert _hosts(_as_logged([_record("smtpcore.mail", line)])) == []


def test_a_refusal_line_with_nothing_known_of_its_envelope_ends_with_the_reply() -> None:
    """No fields and no reason (the driver's line names no listener): no "; " after the
    reply, and no trailing space a log reader or a filter anchored at $ trips on."""
    client = Session("mx.abc.example", peer=("192.0.2.7", 40312))
    line = refusal_line(None, client, "MAIL", Reply(452, "Insufficient system storage", "4.3.1"))
    assert line.endswith(": 452 4.3.1 Insufficient system storage"), repr(line)
    with_detail = refusal_line(None, client, "MAIL", Reply(452, "x", "4.3.1"), detail="why")
    assert with_detail.endswith(": 452 4.3.1 x; (why)"), repr(with_detail)


def test_the_count_of_a_client_turned_away_again_is_never_banned() -> None:
    """The line that counts the refusals after a client's first (a flood is not a
    line a connection) is no more the client's abuse than the first."""
    line = (
        "2026-12-03 14:43:10,010 smtpcore.server: too many sessions from [192.0.2.7]: "
        "1234 more refused (max-sessions-per-address 50) since the last line"
    )
    assert _hosts(line) == []


@pytest.mark.parametrize(
    "line",
    [
        "sessions turned away: 5000 more from 4000 other clients since the last line",
        "server stopping: session from [192.0.2.7]:40336: refused (shutting down)",
        "server stopping: session from [192.0.2.7]: 12 more refused (shutting down) since "
        "the last line",
    ],
)
def test_the_lines_of_a_flood_past_the_clients_remembered_and_of_a_stop_are_never_banned(
    line: str,
) -> None:
    """The count of the clients past those a flood's lines name, and a client a stopping
    server turned away: a busy or stopping server is not the client's abuse."""
    assert _hosts(f"2026-12-03 14:45:00,010 smtpcore.server: {line}") == []
