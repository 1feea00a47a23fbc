"""The POP3 server and client of both adapters, one suite run on asyncio and on trio.

The server serves a :class:`~smtpcore.maildrop.MaildirStore` from a thread
(``peers.running_pop3_server``); poplib, raw sockets (where the bytes on the
wire are the point) and our own client talk to it. Where the bytes the client
reads are the point, it talks to a :class:`~smtpcore.testing.ScriptedServer`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import hashlib
import io
import logging
import poplib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

import pytest

from peers import (
    HeldAnswer,
    TLSFiles,
    alongside,
    cancelled_elsewhere,
    dual_stack_loopback,
    module,
    open_fd_count,
    recorded_sleeps,
    run,
    running_pop3_server,
    until,
    write_maildir,
)
from smtpcore._asyncio_raw import RawSocketTransport
from smtpcore._driver import POP3Timeouts
from smtpcore.maildrop import (
    Maildir,
    MaildirStore,
    Maildrop,
    MaildropError,
    Mailstore,
    MechanismFactory,
    MessageInfo,
    MessageUnavailable,
    POP3Session,
)
from smtpcore.pop3 import EndOfResponse
from smtpcore.sasl import CramMD5Client, PlainClient, ScramSHA256Client
from smtpcore.testing import ExpectClose, ScriptedServer, Send, script

PASSWORDS = {"alice": "wonderland", "bob": "builder"}
MESSAGES = [
    b"Subject: one\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n",
    b"Subject: two\n\nunix line ends\n",
    b"Subject: three\r\nX-Long: yes\r\n\r\n" + b"z" * 998 + b"\r\n" + b"\xe9\xff 8bit\r\n",
]
BIG = b"Subject: big\r\n\r\n" + b"".join(b".%07d line\r\n" % n for n in range(200_000))


def crlf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def store(tmp_path: Path) -> MaildirStore:
    write_maildir(tmp_path / "mail" / "alice", MESSAGES)
    return MaildirStore(tmp_path / "mail", PASSWORDS)


def maildir_count(store: MaildirStore, user: str = "alice") -> int:
    path = store.root / user
    return sum(len(list((path / sub).iterdir())) for sub in ("new", "cur"))


@contextlib.contextmanager
def raw(port: int) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        yield sock


def answer_waiting(sock: socket.socket) -> bool:
    """Whether the peer has sent anything not read yet (the socket is left as it was)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(timeout)


@contextlib.contextmanager
def unforgiving_session(
    adapter: str, store: Mailstore, **options: Any
) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A client past the greeting, and its answers, on a server whose first failed
    login would cost 30 s and end the session: where a test's login must be answered
    as no failed login."""
    with (
        running_pop3_server(
            adapter, store, auth_failure_delay=30.0, max_auth_failures=1, **options
        ) as server,
        raw(server.port) as client,
    ):
        answers = client.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        yield client, answers


def read_until(sock: socket.socket, ending: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while not data.endswith(ending):
        chunk = sock.recv(65536)
        if not chunk or len(data) > limit:
            break
        data += chunk
    return data


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


# -- real clients: poplib ----------------------------------------------------------


def test_a_dual_stack_socket_names_both_ends_of_an_ipv4_client_in_ipv4(
    adapter: str, tmp_path: Path
) -> None:
    """As for SMTP: on a dual-stack socket ``session.local`` is the IPv4 address the
    client reached, as ``session.peer`` is the client's, not their mapped forms."""
    seen: list[tuple[tuple[str, int] | None, tuple[str, int] | None]] = []

    class Noting(MaildirStore):
        async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
            seen.append((session.peer, session.local))
            return await super().check_password(session, user, password)

    store = Noting(tmp_path / "mail", PASSWORDS)
    with running_pop3_server(adapter, store, sock=dual_stack_loopback()) as server:
        port = server.port
        with raw(port) as client:
            answers = client.makefile("rb")
            client.sendall(b"USER bob\r\nPASS wrong\r\nQUIT\r\n")
            said = [answers.readline()[:4] for _ in range(4)]
            assert said == [b"+OK ", b"+OK ", b"-ERR", b"+OK "]
        server.wait_for_sessions(0)
    [(peer, local)] = seen
    assert peer is not None and peer[0] == "127.0.0.1"
    assert local == ("127.0.0.1", port)


def test_poplib_session_and_deletion_only_after_quit(adapter: str, store: MaildirStore) -> None:
    with running_pop3_server(
        adapter, store, expire="NEVER", login_delay="0", implementation="smtpcore"
    ) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        welcome = client.getwelcome()
        assert welcome.startswith(b"+OK pop.test") and b"@pop.test>" in welcome
        capa = client.capa()
        for tag in ("TOP", "USER", "RESP-CODES", "PIPELINING", "UIDL", "CAPA"):
            assert tag in capa
        assert capa["SASL"] == ["SCRAM-SHA-256", "CRAM-MD5"]  # PLAIN only under TLS
        assert capa["EXPIRE"] == ["NEVER"] and capa["LOGIN-DELAY"] == ["0"]
        assert capa["IMPLEMENTATION"] == ["smtpcore"]
        assert "STLS" not in capa
        client.user("alice")
        client.pass_("wonderland")
        sizes = [len(crlf(m)) for m in MESSAGES]
        assert client.stat() == (3, sum(sizes))
        _, listing, _ = client.list()
        assert listing == [b"%d %d" % (n, s) for n, s in enumerate(sizes, 1)]
        _, uids, _ = client.uidl()
        assert len({line.split()[1] for line in uids}) == 3
        for number, message in enumerate(MESSAGES, 1):
            _, lines, octets = client.retr(number)
            assert b"\r\n".join(lines) + b"\r\n" == crlf(message)
            assert octets == len(crlf(message))
        assert client.top(1, 1)[1] == [b"Subject: one", b"", b".leading dot"]
        client.dele(1)
        assert client.stat() == (2, sum(sizes[1:]))
        with pytest.raises(poplib.error_proto, match="already deleted"):
            client.retr(1)
        with pytest.raises(poplib.error_proto, match="No such message"):
            client.retr(4)
        client.rset()
        client.noop()
        client.dele(2)
        assert maildir_count(store) == 3
        assert b"signing off" in client.quit()
    assert maildir_count(store) == 2


def test_one_message_is_one_message_in_the_free_text_and_stat_stays_digits(
    adapter: str, tmp_path: Path
) -> None:
    """The free text after ``+OK`` (RFC 1939 §3) said ``1 messages`` at login, LIST,
    RSET and QUIT; STAT's ``+OK nn mm`` (RFC 1939 §5) is for clients to parse, and
    stays two numbers."""
    write_maildir(tmp_path / "mail" / "alice", MESSAGES[:1])
    store = MaildirStore(tmp_path / "mail", PASSWORDS)
    size = len(crlf(MESSAGES[0]))
    with running_pop3_server(adapter, store, login_delay="0") as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        assert client.pass_("wonderland") == b"+OK Logged in, 1 message (%d octets)" % size
        assert client.stat() == (1, size)  # as poplib, fetchmail and mpop read it
        assert client.list()[0] == b"+OK 1 message (%d octets)" % size
        assert client.rset() == b"+OK Maildrop has 1 message (%d octets)" % size
        assert client.quit().endswith(b"(1 message left)")


def test_poplib_apop_and_wrong_passwords(adapter: str, store: MaildirStore) -> None:
    with running_pop3_server(adapter, store, max_auth_failures=2) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.apop("alice", "not it")
        client.apop("alice", "wonderland")
        assert client.stat()[0] == 3
        client.quit()
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_("nope")
        client.user("nobody")
        with pytest.raises(poplib.error_proto, match="too many"):
            client.pass_("nope")
        with pytest.raises((poplib.error_proto, OSError)):
            client.noop()


def test_a_failed_login_is_answered_after_the_delay_and_holds_no_other_session(
    adapter: str, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong PASS, APOP or AUTH was answered at once: a client guessed a thousand
    times a second. Its ``-ERR [AUTH]`` now waits ``auth_failure_delay``, in that
    session alone: another client logs in meanwhile. A syntax error is no guess.

    "Meanwhile" is checked as an order, not on a stopwatch: the bystander is done
    while the guesser's answer has still not come. The delay is long enough that a
    second test worker sharing the CPU cannot stretch the bystander's session past it.
    "No guess" is checked as no delay asked of the clock."""
    delay = 1.0
    sleeps = recorded_sleeps(adapter, monkeypatch)
    digest = hashlib.md5(b"not it").hexdigest()
    guesses = [
        (b"USER alice\r\n", b"PASS nope\r\n"),
        (None, b"APOP alice " + digest.encode() + b"\r\n"),
        (b"AUTH CRAM-MD5\r\n", base64.b64encode(b"alice 0123456789abcdef") + b"\r\n"),
    ]
    with (
        running_pop3_server(adapter, store, auth_failure_delay=delay, max_auth_failures=5) as s,
        raw(s.port) as guesser,
    ):
        answers = guesser.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        for before, guess in guesses:
            if before is not None:  # USER's +OK, or the CRAM-MD5 challenge
                guesser.sendall(before)
                assert answers.readline()[:1] == b"+"
            started = time.monotonic()
            guesser.sendall(guess)
            with raw(s.port) as bystander:
                replies = bystander.makefile("rb")
                assert replies.readline().startswith(b"+OK")
                bystander.sendall(b"USER bob\r\nPASS builder\r\nQUIT\r\n")
                assert [replies.readline()[:3] for _ in range(3)] == [b"+OK"] * 3
            assert not answer_waiting(guesser)
            assert answers.readline().startswith(b"-ERR [AUTH]")
            assert time.monotonic() - started >= delay
        guesser.sendall(b"AUTH CRAM-MD5 a b\r\nAUTH CRAM-MD5 !!!\r\n")
        assert answers.readline().startswith(b"-ERR Syntax")
        assert answers.readline().startswith(b"-ERR")
    assert sleeps.count(delay) == len(guesses)


def test_bare_auth_lists_the_mechanisms_and_is_no_failed_login(
    adapter: str, store: MaildirStore
) -> None:
    """``AUTH`` with no argument (the RFC 1734-era probe) got ``-ERR Syntax``; Dovecot
    answers it with the mechanisms, one a line, as CAPA's SASL line names them. It is
    no login attempt: with ``max_auth_failures=1`` the session goes on."""
    with (
        running_pop3_server(adapter, store, max_auth_failures=1) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as client,
    ):
        answers = client.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        client.sendall(b"AUTH\r\nauth\r\nUSER alice\r\nPASS wonderland\r\nSTAT\r\n")
        for _ in range(2):
            assert answers.readline().startswith(b"+OK")
            lines = [answers.readline() for _ in range(3)]
            assert lines == [b"SCRAM-SHA-256\r\n", b"CRAM-MD5\r\n", b".\r\n"]  # PLAIN: TLS
        assert [answers.readline()[:3] for _ in range(2)] == [b"+OK", b"+OK"]
        assert answers.readline().startswith(b"+OK 3 ")


@pytest.mark.parametrize(
    "round_trip",
    [(b"AUTH CRAM-MD5\r\n", b"*\r\n"), (b"AUTH CRAM-MD5 eA==\r\n",)],
    ids=["cancelled", "initial response to CRAM-MD5"],
)
def test_an_auth_the_client_breaks_again_and_again_ends_as_bad_commands_do(
    adapter: str, store: MaildirStore, round_trip: tuple[bytes, ...]
) -> None:
    """A client that cancelled AUTH with ``*`` (RFC 5034 §4), or sent CRAM-MD5 an
    initial response, round after round, was never cut off (an audit's loop ran past
    1000 rounds, a credential lookup each). Each round is a bad command: the session
    ends at the tenth with ``Too many bad commands``, and none is a failed login
    (with ``max_auth_failures=1`` a single one would have ended it)."""
    with (
        running_pop3_server(adapter, store, max_auth_failures=1) as server,
        raw(server.port) as sock,
    ):
        answers = sock.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        seen: list[bytes] = []
        for _ in range(20):
            for line in round_trip:
                sock.sendall(line)
                answer = answers.readline()
                seen.append(answer)
                if not answer or answer.startswith(b"-ERR Too many"):
                    break
            if not answer or answer.startswith(b"-ERR Too many"):
                break
        assert answer == b"-ERR Too many bad commands, closing\r\n"
        assert answers.readline() == b""
        assert not any(b"[AUTH]" in line for line in seen)
        assert sum(line.startswith(b"-ERR") for line in seen[:-1]) == 10


class DisabledMaildrops(MaildirStore):
    """Users who log in, over USER/PASS or AUTH PLAIN, to a maildrop the store will not
    open: a ``MaildropError`` with no response code, as its docs allow."""

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        raise MaildropError("Mailbox disabled by the administrator", code=None)


@pytest.mark.parametrize(
    "login",
    [
        (b"USER alice\r\n", b"PASS wonderland\r\n"),
        (b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n",),
    ],
    ids=["USER/PASS", "AUTH PLAIN"],
)
def test_a_maildrop_error_with_no_code_after_a_login_is_no_bad_command(
    adapter: str, tmp_path: Path, login: tuple[bytes, ...]
) -> None:
    """A login whose maildrop cannot be opened (``MaildropError(..., code=None)``) is
    answered with its plain ``-ERR``: over AUTH each one was counted as a bad command
    and the tenth ended the session, where USER/PASS went on. Neither counts now:
    the client broke nothing, so twelve rounds leave the session open either way."""
    store = DisabledMaildrops(tmp_path / "mail", PASSWORDS, plaintext_sasl=True)
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        answers = sock.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        for _ in range(12):
            for line in login:
                sock.sendall(line)
                answer = answers.readline()
            assert answer == b"-ERR Mailbox disabled by the administrator\r\n"
        sock.sendall(b"NOOP\r\n")
        assert answers.readline() == b"-ERR Not logged in\r\n"


def test_a_shutdown_waits_for_a_delayed_login_failure_no_longer_than_its_grace(
    adapter: str, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session holding back a failed login's ``-ERR`` is busy, not idle: a graceful
    shutdown lets it answer (then says it is going), and cuts it off once ``grace``
    runs out; it never waits longer than either.

    The shutdown starts once the delay has begun (asked of the clock), not after a
    guessed pause; "no longer" allows 3 s for a loaded machine, still far short of the
    other wait (30 s) and of a close's own 5 s wait."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    for delay, grace in ((0.3, 30.0), (30.0, 0.3)):
        with (
            running_pop3_server(adapter, store, auth_failure_delay=delay) as server,
            raw(server.port) as guesser,
        ):
            answers = guesser.makefile("rb")
            assert answers.readline().startswith(b"+OK")
            guesser.sendall(b"USER alice\r\n")
            assert answers.readline().startswith(b"+OK")
            guesser.sendall(b"PASS nope\r\n")
            # The guess is read, its answer held back.
            wait_until(lambda: delay in sleeps)  # noqa: B023
            started = time.monotonic()
            server.call(lambda: server.server.aclose(grace))  # noqa: B023
            assert time.monotonic() - started < min(delay, grace) + 3.0
            if delay < grace:  # answered, then told the server is going
                assert answers.readline().startswith(b"-ERR [AUTH]")
            # Cut off at the grace's end, the session is told so as it closes.
            assert answers.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
            assert answers.readline() == b""


def test_a_cancelled_shutdown_cuts_off_a_busy_session_at_once(
    adapter: str, store: MaildirStore
) -> None:
    """A caller's deadline on ``aclose`` ends the grace period, not the shutdown: the
    session still busy (a failed login's ``-ERR`` held back) is told the server is
    going, ``serve_forever`` returns, then the cancellation reaches the caller, as
    for SMTP (the same shutdown serves both)."""
    with (
        running_pop3_server(adapter, store, auth_failure_delay=30.0) as server,
        raw(server.port) as guesser,
    ):
        answers = guesser.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        guesser.sendall(b"USER alice\r\n")
        assert answers.readline().startswith(b"+OK")
        guesser.sendall(b"PASS nope\r\n")
        time.sleep(0.05)  # the guess is read, its answer held back
        assert server.close_under_a_deadline(0.2, grace=20)
        assert server.active_sessions == 0
        assert answers.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
        assert answers.readline() == b""


def test_an_authenticator_in_thread_checks_pop3_auth_in_a_worker_thread(
    adapter: str, store: MaildirStore
) -> None:
    """A store whose AUTH mechanisms are an ``Authenticator(in_thread=True)``'s: each
    step of the exchange runs in a worker thread, so a slow check holds no other
    session (it ran in the event loop).

    "Holds no other session" is an order, not a stopwatch: each check is held until
    the bystander's NOOP has been answered (a check that held the loop would time out
    held, and fail)."""
    import threading

    from smtpcore.handler import Authenticator

    checked_in: list[str] = []
    checking = threading.Event()  # a check has started
    release = threading.Event()  # the test lets it finish
    released: list[bool] = []

    def slow_check(username: str, password: str) -> bool:
        checked_in.append(threading.current_thread().name)
        checking.set()
        released.append(release.wait(10))
        return PASSWORDS.get(username) == password

    auth = Authenticator(check_password=slow_check, mechanisms=["PLAIN"], in_thread=True)

    class SlowChecks(MaildirStore):
        def sasl_mechanisms(self, session: POP3Session) -> Any:
            return auth.server_mechanisms(session.hostname)

    slow = SlowChecks(store.root, PASSWORDS)
    with (
        running_pop3_server(adapter, slow) as server,
        raw(server.port) as guesser,
        raw(server.port) as bystander,
    ):
        try:
            answers, replies = guesser.makefile("rb"), bystander.makefile("rb")
            assert answers.readline().startswith(b"+OK")
            assert replies.readline().startswith(b"+OK")
            for password, answer in ((b"nope", b"-ERR [AUTH]"), (b"wonderland", b"+OK Logged in")):
                token = base64.b64encode(b"\0alice\0" + password)
                guesser.sendall(b"AUTH PLAIN " + token + b"\r\n")
                assert checking.wait(10)  # the check is under way, and held
                bystander.sendall(b"NOOP\r\n")
                assert replies.readline().startswith(b"-ERR")  # NOOP before a login
                assert not answer_waiting(guesser)
                release.set()
                assert answers.readline().startswith(answer)
                checking.clear()
                release.clear()
        finally:
            release.set()  # a failed assertion leaves no thread held
    assert released == [True, True]  # no check waited out its 10 s
    assert len(checked_in) == 2
    assert threading.current_thread().name not in checked_in
    assert not any(name.startswith(("POP3Server", "MainThread")) for name in checked_in)


def test_an_authenticator_in_thread_check_past_the_store_timeout_fails_temporarily(
    adapter: str, store: MaildirStore
) -> None:
    """POP3 AUTH's check in a worker thread was awaited with no deadline, where
    USER/PASS's gets the store timeout: a credential backend that hung held the session
    until it answered. Past the store timeout the client gets ``-ERR [SYS/TEMP]``, as
    PASS does, neither delayed nor counted as a failed login, and the abandoned
    exchange, which its thread still changes when its check returns, is never used
    again."""
    from smtpcore.handler import Authenticator

    release = threading.Event()
    returned = threading.Event()
    calls: list[str] = []

    def hung_then_quick(username: str, password: str) -> bool:
        calls.append(password)
        if len(calls) == 1:  # the backend hangs on the first check
            release.wait(10)
            returned.set()
        return PASSWORDS.get(username) == password

    auth = Authenticator(check_password=hung_then_quick, mechanisms=["PLAIN"], in_thread=True)

    class HungChecks(MaildirStore):
        def sasl_mechanisms(self, session: POP3Session) -> Any:
            return auth.server_mechanisms(session.hostname)

    credentials = base64.b64encode(b"\0alice\0wonderland")
    try:
        with unforgiving_session(
            adapter,
            HungChecks(store.root, PASSWORDS),
            timeouts=dataclasses.replace(POP3Timeouts(), store=0.5),
        ) as (client, answers):
            started = time.monotonic()
            client.sendall(b"AUTH PLAIN " + credentials + b"\r\n")
            assert answers.readline().startswith(b"-ERR [SYS/TEMP]")
            assert 0.4 < time.monotonic() - started < 2.0
            # A fresh exchange, which the hung check's late success leaves alone.
            client.sendall(b"AUTH PLAIN\r\n")
            assert answers.readline() == b"+ \r\n"
            release.set()
            assert returned.wait(5)
            time.sleep(0.1)  # its step has returned, changing the exchange it was given
            client.sendall(credentials + b"\r\n")
            assert answers.readline().startswith(b"+OK Logged in")
    finally:
        release.set()
    assert calls == ["wonderland", "wonderland"]


def test_a_cancelled_auth_is_a_bad_command_not_a_failed_login(
    adapter: str,
    store: MaildirStore,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 5034 §4: ``*`` cancels the exchange and gets ``-ERR``. The client guessed
    no password: the answer comes at once, with no ``auth_failure_delay``, counts no
    failed login (a server ending the session at the first one lets it log in next),
    and is logged in no ``reject:`` line, which fail2ban's filter would ban."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    caplog.set_level(logging.INFO, logger="smtpcore")
    plain = MaildirStore(store.root, PASSWORDS, plaintext_sasl=True)
    with unforgiving_session(adapter, plain) as (client, answers):
        for _ in range(2):
            client.sendall(b"AUTH PLAIN\r\n")
            assert answers.readline() == b"+ \r\n"
            client.sendall(b"*\r\n")
            assert answers.readline().startswith(b"-ERR")
        client.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wonderland") + b"\r\n")
        assert answers.readline().startswith(b"+OK Logged in")
    assert 30.0 not in sleeps
    assert "reject:" not in caplog.text


POP3_REFUSED_TOKENS = {
    "XOAUTH2": b"user=alice\x01auth=Bearer wrong\x01\x01",
    "OAUTHBEARER": b"n,a=alice,\x01auth=Bearer wrong\x01\x01",
}


@contextlib.contextmanager
def _refusing_tokens(
    adapter: str, store: MaildirStore, mechanism: str
) -> Iterator[tuple[socket.socket, BinaryIO]]:
    """A raw connection to a POP3 server that refuses every ``mechanism`` token (and
    offers LOGIN and SCRAM-SHA-256 for alice), waiting 0.01 s after a failed login and
    closing at the second: the socket and its reader, past the greeting."""
    from smtpcore.handler import Authenticator
    from smtpcore.sasl import derive_scram_credentials

    auth = Authenticator(
        check_password=lambda user, password: PASSWORDS.get(user) == password,
        get_scram_credentials={"alice": derive_scram_credentials("wonderland")}.get,
        check_token=lambda user, token: False,
        mechanisms=["LOGIN", "SCRAM-SHA-256", mechanism],
    )
    with (
        running_pop3_server(
            adapter,
            AuthenticatorStore(store.root, auth),
            auth_failure_delay=0.01,
            max_auth_failures=2,
        ) as server,
        raw(server.port) as client,
    ):
        answers = client.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        yield client, answers


@pytest.mark.parametrize("mechanism", sorted(POP3_REFUSED_TOKENS))
def test_a_cancel_after_a_refused_token_is_a_failed_login(
    adapter: str,
    mechanism: str,
    store: MaildirStore,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A refused token gets an error challenge (RFC 7628 §3.2.2); RFC 5034 §4 answers
    the ``*`` that takes the dummy response's place with ``-ERR``, which counted as a
    bad command alone: a client tried tokens with no delay, no line for fail2ban and
    no count toward ``max_auth_failures``. The token was judged: the ``*`` is now a
    failed login, ``-ERR [AUTH]`` after ``auth_failure_delay``, logged ``reject:``,
    and counted. A plain cancel (LOGIN after the name, SCRAM at its server-first)
    stays a bad command."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    caplog.set_level(logging.INFO, logger="smtpcore")
    refused = f"AUTH {mechanism} ".encode() + base64.b64encode(POP3_REFUSED_TOKENS[mechanism])
    scram_first = base64.b64encode(b"n,,n=alice,r=abcdefgh")
    with _refusing_tokens(adapter, store, mechanism) as (client, answers):
        for before in ([b"AUTH LOGIN", base64.b64encode(b"alice")], [b"AUTH SCRAM-SHA-256"]):
            for line in before:
                client.sendall(line + b"\r\n")
                assert answers.readline().startswith(b"+ ")
            if before[0] == b"AUTH SCRAM-SHA-256":
                client.sendall(scram_first + b"\r\n")
                assert answers.readline().startswith(b"+ ")
            client.sendall(b"*\r\n")
            assert answers.readline().startswith(b"-ERR Authentication cancelled")
        assert sleeps == []
        client.sendall(refused + b"\r\n")
        assert answers.readline().startswith(b"+ ")
        client.sendall(b"*\r\n")
        assert answers.readline().startswith(b"-ERR [AUTH]")
        client.sendall(refused + b"\r\n")
        assert answers.readline().startswith(b"+ ")
        client.sendall(b"*\r\n")
        assert answers.readline().startswith(b"-ERR [AUTH] Authentication failed, too many")
        assert answers.readline() == b""  # the session is over
    assert sleeps == [0.01, 0.01]
    rejects = [r.getMessage() for r in caplog.records if "reject:" in r.getMessage()]
    assert len(rejects) == 2
    assert all(f"mechanism={mechanism}" in m for m in rejects)


@pytest.mark.parametrize("mechanism", sorted(POP3_REFUSED_TOKENS))
def test_an_unreadable_answer_after_a_refused_token_is_a_failed_login(
    adapter: str,
    mechanism: str,
    store: MaildirStore,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that answered a refused token's error challenge (RFC 7628 §3.2.2) with
    a line that is not base64, or one too long, in place of ``*`` got the bad
    command's ``-ERR`` at once, logged nowhere: no delay, no line for fail2ban, no
    count toward ``max_auth_failures``. The token was judged: the ``-ERR`` stays the
    machine's (RFC 5034 §4) but waits ``auth_failure_delay``, is logged ``reject:``
    and counts, the last closing the session. The same line in LOGIN's exchange,
    where nothing was judged, stays a bad command."""
    sleeps = recorded_sleeps(adapter, monkeypatch)
    caplog.set_level(logging.INFO, logger="smtpcore")
    refused = f"AUTH {mechanism} ".encode() + base64.b64encode(POP3_REFUSED_TOKENS[mechanism])
    with _refusing_tokens(adapter, store, mechanism) as (client, answers):
        client.sendall(b"AUTH LOGIN\r\n!!!!\r\n")
        assert answers.readline().startswith(b"+ ")
        assert answers.readline() == b"-ERR Invalid base64 data\r\n"
        assert sleeps == []
        assert "reject:" not in caplog.text
        client.sendall(refused + b"\r\n!!!!\r\n")
        assert answers.readline().startswith(b"+ ")
        assert answers.readline() == b"-ERR Invalid base64 data\r\n"
        client.sendall(refused + b"\r\n" + b"A" * 13000 + b"\r\n")
        assert answers.readline().startswith(b"+ ")
        assert answers.readline().startswith(b"-ERR [AUTH] Authentication failed, too many")
        assert answers.readline() == b""  # the session is over
    assert sleeps == [0.01, 0.01]
    rejects = [r.getMessage() for r in caplog.records if "reject:" in r.getMessage()]
    assert len(rejects) == 2, rejects
    assert all(f"mechanism={mechanism}" in m for m in rejects)
    assert ": -ERR Invalid base64 data; " in rejects[0], rejects


class MaildirsBehind(Mailstore):
    """The maildrops of a :class:`MaildirStore`, logged into by SASL alone."""

    def __init__(self, maildirs: MaildirStore) -> None:
        self.maildirs = maildirs

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        return await self.maildirs.open_maildrop(session, user)


class PlainMechanisms(MaildirsBehind):
    def sasl_mechanisms(self, session: POP3Session) -> Mapping[str, MechanismFactory]:
        return self.maildirs.sasl_mechanisms(session)


class AsyncMechanisms(MaildirsBehind):
    async def sasl_mechanisms(self, session: POP3Session) -> Mapping[str, MechanismFactory]:
        return self.maildirs.sasl_mechanisms(session)


@pytest.mark.parametrize("kind", [PlainMechanisms, AsyncMechanisms], ids=["plain", "async"])
def test_sasl_mechanisms_may_be_a_plain_method_or_a_coroutine(
    adapter: str,
    kind: type[MaildirsBehind],
    store: MaildirStore,
    tls: TLSFiles,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every Mailstore hook is a coroutine but ``sasl_mechanisms``, which the server
    called without awaiting: an ``async def`` one, written like its siblings, offered
    no SASL at all (its coroutine has no ``items``, logged) and was never awaited.
    Both forms offer their mechanisms in CAPA, asked again after STLS."""
    mod = module(adapter)

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, ssl_context=tls.client_context) as client:
            await client.authenticate(PlainClient("alice", "wonderland"))  # under TLS only
            assert (await client.stat())[0] == 3

    with running_pop3_server(adapter, kind(store), ssl_context=tls.server_context) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        assert client.capa()["SASL"] == ["SCRAM-SHA-256", "CRAM-MD5"]
        client.quit()
        run(adapter, lambda: session(server.port))
    assert "sasl_mechanisms failed" not in caplog.text


class AuthenticatorStore(MaildirStore):
    """A store whose AUTH mechanisms are ``auth``'s."""

    def __init__(self, root: Path, auth: Any) -> None:
        super().__init__(root, PASSWORDS)
        self.auth = auth

    def sasl_mechanisms(self, session: POP3Session) -> Any:
        return self.auth.server_mechanisms(session.hostname)


@pytest.mark.parametrize("in_thread", [False, True], ids=["in_loop", "in_thread"])
def test_a_check_that_lets_out_a_cancellation_not_the_sessions_fails_temporarily(
    adapter: str, in_thread: bool, store: MaildirStore, caplog: pytest.LogCaptureFixture
) -> None:
    """POP3 AUTH's check in the event loop that lets out a cancellation its session is
    not under (it read a future other code cancelled) ended the session with no
    answer: the exchange caught ``Exception`` alone. It fails as a store call that
    raises, as it did in a worker thread: logged, ``-ERR [SYS/TEMP]``, no failed
    login, and the session goes on."""
    from smtpcore.handler import Authenticator

    if adapter == "asyncio" and not hasattr(asyncio.Task, "cancelling"):
        pytest.skip("before Python 3.11 a task cannot tell whose cancellation it is")
    stray = cancelled_elsewhere(adapter)
    calls: list[str] = []

    def check(username: str, password: str) -> bool:
        calls.append(password)
        if len(calls) == 1:
            raise stray
        return PASSWORDS.get(username) == password

    auth = Authenticator(check_password=check, mechanisms=["PLAIN"], in_thread=in_thread)
    credentials = base64.b64encode(b"\0alice\0wonderland")
    with unforgiving_session(adapter, AuthenticatorStore(store.root, auth)) as (
        client,
        answers,
    ):
        started = time.monotonic()
        client.sendall(b"AUTH PLAIN " + credentials + b"\r\n")
        assert answers.readline().startswith(b"-ERR [SYS/TEMP]")
        assert time.monotonic() - started < 5.0
        client.sendall(b"AUTH PLAIN " + credentials + b"\r\n")
        assert answers.readline().startswith(b"+OK Logged in")
    failed = [r for r in caplog.records if r.getMessage() == "SASL PLAIN failed"]
    assert [r.levelno for r in failed] == [logging.ERROR]
    assert "session with" not in caplog.text


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize("in_thread", [False, True], ids=["in_loop", "in_thread"])
def test_a_check_that_gives_no_bool_is_the_applications_error_not_a_failed_login(
    adapter: str, in_thread: bool, store: MaildirStore, caplog: pytest.LogCaptureFixture
) -> None:
    """An ``async def check_password`` gives a coroutine, not a bool: POP3 AUTH
    answered it as the client's wrong password (``-ERR [AUTH]`` after the failure
    delay, the fail2ban line, counted toward ``max_auth_failures``) and logged
    nothing. It is the application's error: logged, ``-ERR [SYS/TEMP]`` at once,
    never counted."""
    from smtpcore.handler import Authenticator

    async def check(username: str, password: str) -> bool:  # the mistake: async def
        return True

    auth = Authenticator(
        check_password=check,  # type: ignore[arg-type]  # the mistake under test
        mechanisms=["PLAIN"],
        in_thread=in_thread,
    )
    credentials = base64.b64encode(b"\0alice\0wonderland")
    with (
        unforgiving_session(adapter, AuthenticatorStore(store.root, auth)) as (client, answers),
        caplog.at_level(logging.INFO, logger="smtpcore.pop3.server"),
    ):
        started = time.monotonic()
        for _ in range(2):
            client.sendall(b"AUTH PLAIN " + credentials + b"\r\n")
            assert answers.readline().startswith(b"-ERR [SYS/TEMP]")
        assert time.monotonic() - started < 5.0
        client.sendall(b"NOOP\r\n")
        assert answers.readline().startswith(b"-ERR")  # NOOP before a login: still open
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["SASL PLAIN failed: check_password gave coroutine, not a bool"] * 2
    assert "reject:" not in caplog.text


def test_a_store_with_apop_off_offers_no_timestamp_and_apop_costs_no_login(
    adapter: str, tmp_path: Path
) -> None:
    """``MaildirStore(apop=False)``: no timestamp in the greeting (RFC 1939 §7), and an
    APOP sent anyway is a command not served, not a failed login counted against
    ``max_auth_failures``."""
    write_maildir(tmp_path / "alice", [b"Subject: x\r\n\r\nhi\r\n"])
    store = MaildirStore(tmp_path, PASSWORDS, apop=False)
    with (
        running_pop3_server(adapter, store, max_auth_failures=1) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        replies = sock.makefile("rb")
        greeting = replies.readline()
        assert greeting.startswith(b"+OK") and b"<" not in greeting
        digest = hashlib.md5(b"wonderland").hexdigest()
        for _ in range(2):
            sock.sendall(f"APOP alice {digest}\r\n".encode())
            refused = replies.readline()
            assert refused.startswith(b"-ERR") and b"[AUTH]" not in refused
        sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
        assert replies.readline().startswith(b"+OK")
        assert replies.readline().startswith(b"+OK")


def test_poplib_stls_and_login_refused_before_tls(
    adapter: str, store: MaildirStore, tls: TLSFiles
) -> None:
    with running_pop3_server(
        adapter, store, ssl_context=tls.server_context, require_tls=True
    ) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        capa = client.capa()
        assert "STLS" in capa and "USER" not in capa and "SASL" not in capa
        with pytest.raises(poplib.error_proto, match="TLS"):
            client.user("alice")
        client.stls(tls.client_context)
        capa = client.capa()
        assert "STLS" not in capa and "PLAIN" in capa["SASL"]
        client.user("alice")
        client.pass_("wonderland")
        assert client.retr(2)[1] == [b"Subject: two", b"", b"unix line ends"]
        client.quit()


def test_poplib_implicit_tls(adapter: str, store: MaildirStore, tls: TLSFiles) -> None:
    with running_pop3_server(
        adapter, store, ssl_context=tls.server_context, tls_on_connect=True
    ) as server:
        client = poplib.POP3_SSL("127.0.0.1", server.port, context=tls.client_context)
        assert "STLS" not in client.capa()
        client.user("alice")
        client.pass_("wonderland")
        assert client.stat()[0] == 3
        client.quit()


# -- the server's rules ------------------------------------------------------------------


def test_a_dropped_connection_deletes_nothing_and_frees_the_lock(
    adapter: str, store: MaildirStore
) -> None:
    with running_pop3_server(adapter, store) as server:
        first = poplib.POP3("127.0.0.1", server.port, timeout=10)
        first.user("alice")
        first.pass_("wonderland")
        first.dele(1)
        second = poplib.POP3("127.0.0.1", server.port, timeout=10)
        second.user("alice")
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            second.pass_("wonderland")
        first.sock.close()
        first.file.close()
        server.wait_for_sessions(1)
        second.user("alice")
        second.pass_("wonderland")
        assert second.stat()[0] == 3
        second.quit()
    assert maildir_count(store) == 3


def test_pipelined_commands_are_answered_in_order(adapter: str, store: MaildirStore) -> None:
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        read_until(sock, b"\r\n")
        sock.sendall(b"USER alice\r\nPASS wonderland\r\nSTAT\r\nDELE 1\r\nNOOP\r\nLIST 9\r\n")
        answers = read_until(sock, b"No such message: 9\r\n")
        lines = answers.split(b"\r\n")
        assert [line[:3] for line in lines[:6]] == [b"+OK"] * 5 + [b"-ER"]
        assert lines[2].startswith(b"+OK 3 ")


def test_autologout_closes_silently_without_update(adapter: str, store: MaildirStore) -> None:
    timeouts = POP3Timeouts(autologout=0.3)
    with (
        running_pop3_server(adapter, store, timeouts=timeouts) as server,
        raw(server.port) as sock,
    ):
        read_until(sock, b"\r\n")
        sock.sendall(b"USER alice\r\nPASS wonderland\r\nDELE 1\r\n")
        assert read_until(sock, b"deleted\r\n").endswith(b"deleted\r\n")
        assert sock.recv(100) == b""  # closed with no response (RFC 1939 §3)
        server.wait_for_sessions(0)
    assert maildir_count(store) == 3


def test_a_closing_err_with_the_clients_bytes_unread_is_read_before_the_end(
    adapter: str, store: MaildirStore
) -> None:
    """Too many bad commands end the session while the client still sends: the server
    lingers, half-closed, reading what comes, so the client reads the -ERR and then
    the end, not a reset."""
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        read_until(sock, b"\r\n")
        sock.sendall(b"XYZZY\r\n" * 30 + b"x" * 200_000)
        time.sleep(0.3)  # the client reads late: the server closed meanwhile
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert received.endswith(b"-ERR Too many bad commands, closing\r\n")
        server.wait_for_sessions(0)


def test_a_session_ended_by_quit_closes_at_once(adapter: str, store: MaildirStore) -> None:
    """No lingering after QUIT: the client has nothing left to send."""
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        read_until(sock, b"\r\n")
        sock.sendall(b"QUIT\r\n")
        assert read_until(sock, b"\r\n").startswith(b"+OK")
        assert sock.recv(100) == b""
        server.wait_for_sessions(0, timeout=0.3)  # the client's socket is still open


def test_session_limit_and_graceful_shutdown(adapter: str, store: MaildirStore) -> None:
    with (
        running_pop3_server(adapter, store, max_sessions=1) as server,
        raw(server.port) as first,
    ):
        assert read_until(first, b"\r\n").startswith(b"+OK")
        server.wait_for_sessions(1)
        with raw(server.port) as second:
            assert read_until(second, b"\r\n").startswith(b"-ERR [SYS/TEMP]")
        first.sendall(b"USER alice\r\nPASS wonderland\r\nDELE 1\r\n")
        read_until(first, b"deleted\r\n")
        server.call(server.server.aclose)
        assert read_until(first, b"\r\n") == b"-ERR [SYS/TEMP] Server shutting down\r\n"
        assert first.recv(100) == b""
    assert maildir_count(store) == 3


def test_a_peer_that_vanishes_mid_message_leaks_nothing(adapter: str, tmp_path: Path) -> None:
    write_maildir(tmp_path / "alice", [BIG])
    store = MaildirStore(tmp_path, PASSWORDS)
    with running_pop3_server(adapter, store) as server:
        with raw(server.port) as sock:  # a first session, so lazy imports are done
            read_until(sock, b"\r\n")
        server.wait_for_sessions(0)
        before = open_fd_count()
        for _ in range(3):
            with raw(server.port) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                read_until(sock, b"\r\n")
                sock.sendall(b"USER alice\r\nPASS wonderland\r\nRETR 1\r\n")
                sock.recv(4096)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            server.wait_for_sessions(0)
        wait_until(lambda: open_fd_count() <= before)
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")  # the lock was released
        client.quit()


# -- our client -----------------------------------------------------------------------


def test_our_client_fetches_streams_and_deletes(adapter: str, tmp_path: Path) -> None:
    write_maildir(tmp_path / "alice", [*MESSAGES, BIG])
    store = MaildirStore(tmp_path, PASSWORDS)

    async def session(port: int) -> None:
        async with module(adapter).POP3Client(
            "127.0.0.1", port, allow_plaintext_auth=True
        ) as client:
            assert "PIPELINING" in client.capabilities
            await client.login("alice", "wonderland")
            listing = await client.list()
            assert [m.number for m in listing] == [1, 2, 3, 4]
            assert [m.size for m in listing] == [len(crlf(m)) for m in [*MESSAGES, BIG]]
            assert all(m.uid for m in listing)
            assert await client.stat() == (4, sum(m.size for m in listing))
            chunks = [chunk async for chunk in client.retrieve_chunks(4)]
            assert len(chunks) > 2 and b"".join(chunks) == BIG
            async for chunk in client.retrieve_chunks(4):
                assert chunk
                break  # the rest is drained before the next command
            assert await client.retrieve(2) == crlf(MESSAGES[1])
            fetched = [item async for item in client.retrieve_many([1, 2, 3])]
            assert fetched == [(n, crlf(m)) for n, m in enumerate(MESSAGES, 1)]
            assert await client.top(3, 0) == b"Subject: three\r\nX-Long: yes\r\n\r\n"
            assert await client.uid(1) == listing[0].uid
            await client.delete(1)
            await client.noop()
            with pytest.raises(module(adapter).POP3ResponseError) as info:
                await client.retrieve(1)
            assert "already deleted" in str(info.value)
            await client.delete(4)

    with running_pop3_server(adapter, store) as server:
        run(adapter, lambda: session(server.port))
    assert maildir_count(store) == 2


def test_our_client_logins_and_typed_errors(
    adapter: str, store: MaildirStore, tls: TLSFiles
) -> None:
    mod = module(adapter)

    async def session(port: int) -> None:
        client = mod.POP3Client("127.0.0.1", port, ssl_context=tls.client_context)
        async with client:
            assert client.tls  # STLS was offered, so it was used
            with pytest.raises(mod.POP3AuthenticationError) as info:
                await client.login("alice", "wrong")
            assert info.value.code == "AUTH"
            await client.authenticate(ScramSHA256Client("alice", "wonderland"))
            assert (await client.stat())[0] == 3
            other = mod.POP3Client("127.0.0.1", port, ssl_context=tls.client_context)
            async with other:
                with pytest.raises(mod.POP3ResponseError) as in_use:
                    await other.authenticate(PlainClient("alice", "wonderland"))
                assert in_use.value.code == "IN-USE"
                await other.authenticate(CramMD5Client("bob", "builder"))
        async with mod.POP3Client("127.0.0.1", port, stls=False) as plain:
            assert not plain.tls
            await plain.login("alice", "wonderland", apop=True)  # no password shown
        with pytest.raises(mod.POP3ConnectionError, match="TLS handshake failed"):
            async with mod.POP3Client("127.0.0.1", port):  # the test CA is not trusted
                pass

    with running_pop3_server(adapter, store, ssl_context=tls.server_context) as server:
        run(adapter, lambda: session(server.port))


def test_our_client_issues_utf8_where_the_server_lists_it(
    adapter: str, store: MaildirStore
) -> None:
    """The client had no way to send UTF8 (RFC 6856 §2), which poplib offers as
    ``POP3.utf8()``: ``utf8()`` sends it before login, and is a clear error where the
    server does not list it or where it is no longer valid (after login)."""
    mod = module(adapter)

    async def session(port: int, offered: bool) -> None:
        async with mod.POP3Client(
            "127.0.0.1", port, stls=False, allow_plaintext_auth=True
        ) as client:
            if not offered:
                with pytest.raises(mod.POP3Error, match="does not offer UTF8"):
                    await client.utf8()
                return
            await client.utf8()
            assert client.connection.utf8
            await client.login("alice", "wonderland")
            with pytest.raises(mod.POP3Error, match="UTF8 not possible now"):
                await client.utf8()

    for offered in (True, False):
        with running_pop3_server(adapter, store, utf8=offered) as server:
            run(adapter, functools.partial(session, server.port, offered))


def test_our_client_sends_a_non_ascii_login_only_where_utf8_user_is_listed(
    adapter: str, store: MaildirStore
) -> None:
    """RFC 6856 §2.1: no UTF-8 in USER, PASS or APOP unless CAPA lists ``UTF8 USER``.
    The client sent a non-ASCII name or password whatever the server listed; now it is
    a POP3Error before a line goes out, and the reference server lists ``UTF8 USER``
    where it takes them (``utf8=True``)."""
    mod = module(adapter)
    sent: list[bytes] = []

    def trace(direction: str, line: bytes) -> None:
        sent.append(line)

    async def session(port: int, offered: bool) -> None:
        async with mod.POP3Client(
            "127.0.0.1", port, stls=False, trace=trace, allow_plaintext_auth=True
        ) as client:
            assert client.capabilities.get("UTF8") == (("USER",) if offered else None)
            sent.clear()
            for user, password, apop in (
                ("j\u00fcrgen", "wonderland", False),
                ("alice", "w\u00f6nderland", False),
                ("alice", "w\u00f6nderland", True),
            ):
                if offered:
                    with pytest.raises(mod.POP3AuthenticationError):
                        await client.login(user, password, apop=apop)
                else:
                    with pytest.raises(mod.POP3Error, match="UTF8 USER"):
                        await client.login(user, password, apop=apop)
            assert bool(sent) is offered
            await client.login("alice", "wonderland")

    for offered in (True, False):
        with running_pop3_server(adapter, store, utf8=offered, max_auth_failures=5) as server:
            run(adapter, functools.partial(session, server.port, offered))


def test_our_client_sends_no_apop_for_a_name_with_a_space(
    adapter: str, store: MaildirStore
) -> None:
    """``APOP ann smith <digest>`` went out, which a server that splits arguments
    refuses (RFC 1939 §7; Dovecot: ``-ERR Invalid parameters``) and may count: now it
    is a POP3Error before a line goes out, as for a name APOP cannot carry in ASCII.
    The client machine refuses it; the event and our server take such a name."""
    mod = module(adapter)
    sent: list[bytes] = []

    def trace(direction: str, line: bytes) -> None:
        sent.append(line)

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, stls=False, trace=trace) as client:
            sent.clear()
            with pytest.raises(mod.POP3Error, match="APOP name may not hold a space"):
                await client.login("ann smith", "wonderland", apop=True)
            assert sent == []
            await client.login("alice", "wonderland", apop=True)

    with running_pop3_server(adapter, store, max_auth_failures=1) as server:
        run(adapter, functools.partial(session, server.port))


def test_our_server_logs_in_apop_for_a_name_with_a_space(adapter: str, tmp_path: Path) -> None:
    """mpop and fetchmail send ``APOP ann smith <digest>`` as it is: the digest is
    always the last word, so the server reads the name as the rest and logs the user
    in, as it did before our client stopped sending such a line."""
    write_maildir(tmp_path / "mail" / "ann smith", MESSAGES[:1])
    store = MaildirStore(tmp_path / "mail", {"ann smith": "pencil"})
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        answers = sock.makefile("rb")
        greeting = answers.readline()
        timestamp = greeting.split()[-1].decode()
        digest = hashlib.md5(f"{timestamp}pencil".encode()).hexdigest()
        sock.sendall(f"APOP ann smith {digest}\r\n".encode())
        assert answers.readline().startswith(b"+OK")
        sock.sendall(b"STAT\r\n")
        assert answers.readline().startswith(b"+OK 1 ")


def test_our_client_requires_what_it_is_told_to(adapter: str, store: MaildirStore) -> None:
    mod = module(adapter)

    async def session(port: int) -> None:
        with pytest.raises(mod.POP3TLSNotAvailable):
            async with mod.POP3Client("127.0.0.1", port, stls=True):
                pass
        with pytest.raises(mod.POP3ConnectionError):
            async with mod.POP3Client("127.0.0.1", 1):
                pass

    async def greeting(port: int) -> None:
        timeouts = POP3Timeouts.uniform(0.3)
        async with mod.POP3Client("127.0.0.1", port, timeouts=timeouts):
            pass

    with running_pop3_server(adapter, store) as server:
        run(adapter, lambda: session(server.port))
    # A server that never greets: the client gives up and closes, having sent nothing.
    with ScriptedServer([ExpectClose()]) as silent, pytest.raises(mod.POP3Timeout):
        run(adapter, lambda: greeting(silent.port))


def test_plaintext_pipelined_behind_stls_is_never_executed(
    adapter: str, store: MaildirStore, tls: TLSFiles
) -> None:
    with running_pop3_server(adapter, store, ssl_context=tls.server_context) as server:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        read_until(sock, b"\r\n")
        sock.sendall(b"STLS\r\nUSER alice\r\nPASS wonderland\r\nDELE 1\r\nQUIT\r\n")
        assert read_until(sock, b"\r\n").startswith(b"+OK")
        with tls.client_context.wrap_socket(sock, server_hostname="localhost") as secure:
            secure.sendall(b"NOOP\r\n")
            # Had the plaintext run, the session would be logged in and NOOP accepted.
            assert read_until(secure, b"\r\n").startswith(b"-ERR")
            secure.sendall(b"QUIT\r\n")
            assert read_until(secure, b"\r\n").startswith(b"+OK")
    assert maildir_count(store) == 3


def test_a_handshake_the_client_gives_up_is_logged_with_a_reason(
    adapter: str, store: MaildirStore, tls: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """As for STARTTLS: a client that closes instead of its ClientHello left "failed:" with
    no reason (asyncio's ``ConnectionResetError()`` has no text)."""
    caplog.set_level(logging.INFO, "smtpcore.pop3.server")
    with running_pop3_server(adapter, store, ssl_context=tls.server_context) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            read_until(sock, b"\r\n")
            sock.sendall(b"STLS\r\n")
            assert read_until(sock, b"\r\n").startswith(b"+OK")
        server.wait_for_sessions(0)
    (line,) = [r.getMessage() for r in caplog.records if "TLS handshake with" in r.getMessage()]
    assert line.partition(" failed: ")[2].strip(), line


def test_utf8_and_tcp_nodelay(adapter: str, store: MaildirStore) -> None:
    with running_pop3_server(adapter, store, utf8=True) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        assert "UTF8" in client.capa()
        assert client.utf8().startswith(b"+OK")
        client.user("alice")
        client.pass_("wonderland")
        [session] = server.server.state.sessions
        transport: Any = session.transport.transport
        if isinstance(transport, RawSocketTransport):  # asyncio, the raw socket
            sock = transport.socket
        elif adapter == "asyncio":
            sock = transport._transport.get_extra_info("socket")
        else:
            sock = transport._base.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client.quit()


CAPA = """
C: CAPA
S: +OK
S: PIPELINING
S: UIDL
S: USER
S: .
"""
#: A scripted server's greeting and capabilities, a login with USER and PASS, and the
#: capabilities asked again, as they may change after login (RFC 2449 §5).
LOGIN = "S: +OK scripted\n" + CAPA + "C: USER u\nS: +OK\nC: PASS p\nS: +OK\n" + CAPA


def test_our_client_keeps_answers_in_step_when_a_pipelined_listing_fails(adapter: str) -> None:
    mod = module(adapter)
    steps = script(
        LOGIN
        + """
C: LIST
C: UIDL
S: -ERR [SYS/TEMP] listing unavailable
S: +OK
S: 1 abc
S: .
C: STAT
S: +OK 1 10
C: QUIT
S: +OK bye
"""
    )

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ResponseError) as info:
                await client.list()
            assert info.value.code == "SYS/TEMP" and info.value.command == "LIST"
            assert await client.stat() == (1, 10)

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


#: Three RETRs pipelined by ``retrieve_many``, the third refused, and a DELE after them.
RETRIEVE_MANY_LEFT_EARLY = (
    LOGIN
    + """
C: RETR 1
C: RETR 2
C: RETR 3
S: +OK
S: one
S: .
S: +OK
S: two
S: .
S: -ERR [SYS/TEMP] three is busy
C: DELE 9
S: -ERR no such message
C: STAT
S: +OK 3 30
C: QUIT
S: +OK bye
"""
)


def test_our_client_reads_what_a_retrieve_many_left_early_owes_before_the_next_command(
    adapter: str,
) -> None:
    """Leaving ``retrieve_many`` with RETRs still in flight leaves their answers owed:
    read and dropped before the next command, or the refused DELE would be paired
    with the second RETR's ``+OK`` and reported done."""
    mod = module(adapter)

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            async for number, content in client.retrieve_many([1, 2, 3]):
                assert (number, content) == (1, b"one\r\n")
                break
            with pytest.raises(mod.POP3ResponseError, match="no such message"):
                await client.delete(9)
            assert await client.stat() == (3, 30)

    with ScriptedServer(script(RETRIEVE_MANY_LEFT_EARLY)) as server:
        run(adapter, lambda: session(server.port))


def test_a_second_call_while_one_is_in_progress_is_refused_at_once(adapter: str) -> None:
    """A session is one conversation: a call from a second task while a retrieve is
    under way, or while a loop over ``retrieve_chunks`` waits between chunks, is
    refused before anything is sent, and the call in progress goes on as if alone."""
    mod = module(adapter)
    held = HeldAnswer()

    steps = [
        *script(LOGIN + "C: RETR 1"),
        held.step,
        *script("""
S: +OK
S: one
S: .
C: RETR 2
S: +OK
S: two
S: .
C: NOOP
S: +OK
C: QUIT
S: +OK bye
"""),
    ]
    busy = "another call is in progress on this session"

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")

            async def meanwhile() -> None:
                await until(adapter, held.asked)
                try:
                    with pytest.raises(mod.POP3Error, match=busy):
                        await client.retrieve(2)
                    with pytest.raises(mod.POP3Error, match=busy):
                        await client.noop()
                finally:
                    held.release.set()

            assert await alongside(adapter, lambda: client.retrieve(1), meanwhile) == b"one\r\n"
            looping, go_on = threading.Event(), threading.Event()

            async def loop() -> bytes:
                chunks = []
                async for chunk in client.retrieve_chunks(2):
                    chunks.append(chunk)
                    looping.set()
                    await until(adapter, go_on)
                return b"".join(chunks)

            async def while_it_waits() -> None:
                await until(adapter, looping)
                try:
                    with pytest.raises(mod.POP3Error, match=busy):
                        await client.noop()
                finally:
                    go_on.set()

            assert await alongside(adapter, loop, while_it_waits) == b"two\r\n"
            await client.noop()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


def test_a_loop_left_waiting_is_taken_over_by_its_own_tasks_next_call(adapter: str) -> None:
    """``break`` leaves a ``retrieve_chunks`` iterator open, waiting: the next call of
    the same task takes the session over, the rest of the message read and dropped
    first, and the iterator, if resumed, raises rather than read what is not its."""
    mod = module(adapter)
    steps = script(
        LOGIN
        + """
C: RETR 1
S: +OK
S: one
S: .
C: NOOP
S: +OK
C: QUIT
S: +OK bye
"""
    )

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            chunks = client.retrieve_chunks(1)
            assert await chunks.__anext__()
            await client.noop()
            with pytest.raises(mod.POP3Error, match="took the session over"):
                await chunks.__anext__()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


def test_a_session_after_one_cut_off_in_a_message_starts_clean(adapter: str) -> None:
    """A connection lost in the middle of a message leaves nothing for the next
    ``connect()`` of the same client to wait for."""
    mod = module(adapter)
    cut_off = script(LOGIN + "C: RETR 1\nS: +OK\nS: the first line\n-- close")
    fresh = script(LOGIN + "C: STAT\nS: +OK 1 20\nC: QUIT\nS: +OK bye")

    async def session(first: int, second: int) -> None:
        client = mod.POP3Client("127.0.0.1", first, allow_plaintext_auth=True)
        await client.connect()
        await client.login("u", "p")
        with pytest.raises(mod.POP3ConnectionError):
            await client.retrieve(1)
        client.port = second
        async with client:
            await client.login("u", "p")
            assert await client.stat() == (1, 20)

    with ScriptedServer(cut_off) as one, ScriptedServer(fresh) as two:
        run(adapter, lambda: session(one.port, two.port))


def test_our_client_bounds_what_a_broken_server_sends(adapter: str) -> None:
    mod = module(adapter)
    login = """
S: +OK scripted
C: CAPA
S: -ERR no CAPA here
C: USER u
S: +OK
C: PASS p
S: +OK
"""
    too_long = script(login + "C: NOOP\nS: +OK " + "y" * 5000 + "\n-- expect close")
    cut_off = script(login + "C: RETR 1\nS: +OK\nS: " + "x" * 100 + "\n-- close")

    async def session(port: int) -> None:
        timeouts = POP3Timeouts.uniform(10)
        async with mod.POP3Client(
            "127.0.0.1", port, timeouts=timeouts, allow_plaintext_auth=True
        ) as client:
            assert client.capabilities == {}
            await client.login("u", "p")
            with pytest.raises(mod.POP3ProtocolError):
                await client.noop()  # a status line over 2048 octets

    async def cut_off_session(port: int) -> None:
        timeouts = POP3Timeouts.uniform(10)
        async with mod.POP3Client(
            "127.0.0.1", port, timeouts=timeouts, allow_plaintext_auth=True
        ) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ConnectionError, match="closed"):
                await client.retrieve(1)

    with ScriptedServer(too_long) as server:
        run(adapter, lambda: session(server.port))
    with ScriptedServer(cut_off) as server:
        run(adapter, lambda: cut_off_session(server.port))


def test_our_client_with_implicit_tls(adapter: str, store: MaildirStore, tls: TLSFiles) -> None:
    mod = module(adapter)

    async def session(port: int) -> bytes:
        client = mod.POP3Client(
            "127.0.0.1", port, tls_on_connect=True, ssl_context=tls.client_context
        )
        async with client:
            assert client.tls and "STLS" not in client.capabilities
            await client.authenticate(PlainClient("alice", "wonderland"))
            content: bytes = await client.retrieve(2)
            return content

    with running_pop3_server(
        adapter, store, ssl_context=tls.server_context, tls_on_connect=True
    ) as server:
        assert run(adapter, lambda: session(server.port)) == crlf(MESSAGES[1])


#: A server that leaves STLS out of CAPA, as one an attacker stripped it from would
#: (RFC 2595 §2.2), and offers APOP (the timestamp) and SASL PLAIN and CRAM-MD5.
STRIPPED = """
S: +OK ready <1.2@pop.test>
C: CAPA
S: +OK
S: USER
S: SASL PLAIN CRAM-MD5
S: .
"""
QUIT = "C: QUIT\nS: +OK bye\n"


def test_our_client_shows_no_password_without_tls_unless_allowed(adapter: str) -> None:
    """USER/PASS and AUTH PLAIN show the password itself; without TLS both are refused
    before a byte is sent (RFC 2595 §2.2 and §6), as the SMTP client refuses PLAIN
    (RFC 4954 §4). APOP and CRAM-MD5 show no reusable secret and go on; the session
    is left as it was. ``allow_plaintext_auth=True`` sends USER and PASS anyway."""
    mod = module(adapter)
    refused = script(STRIPPED + "C~ APOP u [0-9a-f]{32}\nS: +OK\n" + CAPA + QUIT)

    async def refusing(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port) as client:
            attempts: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("USER/PASS", lambda: client.login("u", "p")),
                ("PLAIN", lambda: client.authenticate(PlainClient("u", "p"))),
            ]
            for what, attempt in attempts:
                with pytest.raises(mod.POP3AuthenticationNotAvailable) as info:
                    await attempt()
                assert what in str(info.value) and "allow_plaintext_auth" in str(info.value)
                assert info.value.needs_tls and info.value.local
                assert isinstance(info.value, mod.POP3Error)
            await client.login("u", "p", apop=True)

    async def allowed(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")

    with ScriptedServer(refused) as server:
        run(adapter, lambda: refusing(server.port))
    with ScriptedServer(script(LOGIN + QUIT)) as server:
        run(adapter, lambda: allowed(server.port))


# -- a maildrop that reads asynchronously ----------------------------------------------


class SlowDrop(Maildrop):
    """Messages read by an async generator that waits on the loop between chunks;
    message 2 vanishes, message 3 takes longer than any store timeout."""

    def __init__(self, adapter: str) -> None:
        self.pause: Callable[[float], Awaitable[None]] = module_sleep(adapter)

    async def messages(self) -> list[MessageInfo]:
        return [
            MessageInfo(len(crlf(BIG)), "big"),
            MessageInfo(10, "gone"),
            MessageInfo(5, "slow"),
        ]

    async def open(self, number: int) -> AsyncIterator[bytes]:
        if number == 2:
            raise MessageUnavailable("Message vanished")
        await self.pause(30 if number == 3 else 0)
        for start in range(0, len(BIG), 100_000):
            await self.pause(0)
            yield BIG[start : start + 100_000]

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        pass


def module_sleep(adapter: str) -> Callable[[float], Awaitable[None]]:
    if adapter == "asyncio":
        import asyncio

        return asyncio.sleep
    import trio

    return trio.sleep


class SlowStore(Mailstore):
    def __init__(self, adapter: str) -> None:
        self.adapter = adapter

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        return password == "wonderland"

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        return SlowDrop(self.adapter)


def test_an_async_maildrop_streams_under_the_store_timeout(adapter: str) -> None:
    """``Maildrop.open`` may be an async generator that waits: RETR and TOP stream
    it whole, an error before its first chunk is ``-ERR``, and a read past the
    ``store`` timeout ends in ``-ERR [SYS/TEMP]`` with the session going on."""
    timeouts = POP3Timeouts.uniform(10.0)
    timeouts = dataclasses.replace(timeouts, store=0.3)
    with running_pop3_server(adapter, SlowStore(adapter), timeouts=timeouts) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        _, lines, octets = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == crlf(BIG)
        assert octets == len(crlf(BIG))
        assert client.top(1, 2)[1] == [b"Subject: big", b"", b".0000000 line", b".0000001 line"]
        with pytest.raises(poplib.error_proto, match="vanished"):
            client.retr(2)
        started = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            client.retr(3)
        assert time.monotonic() - started < 5
        assert client.noop().startswith(b"+OK")
        client.quit()


# -- a Maildir whose listing takes long --------------------------------------------------


@contextlib.contextmanager
def slow_listing(
    monkeypatch: pytest.MonkeyPatch, user: str, wait: Callable[[], object]
) -> Iterator[None]:
    """``Maildir``'s listing of ``user`` calls ``wait`` first, blocking as a large
    Maildir's listing does (a stat and a read per file): in the event loop it
    would hold every session."""
    scan = Maildir._scan

    def slow_scan(self: Maildir) -> Any:
        if self.path.name == user:
            wait()
        return scan(self)

    monkeypatch.setattr(Maildir, "_scan", slow_scan)
    yield


def test_a_slow_maildir_listing_holds_no_other_session(
    adapter: str, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listing runs in a worker thread: while alice's is under way, bob is
    greeted, logs in, lists and quits.

    "While" is an order, not a stopwatch: alice's listing is held until bob has quit
    (a listing that held the loop would time out held, and fail)."""
    write_maildir(store.root / "bob", MESSAGES[:1])
    listing = threading.Event()  # alice's listing has begun
    release = threading.Event()  # the test lets it finish
    released: list[bool] = []

    def held() -> None:
        listing.set()
        released.append(release.wait(10))

    with (
        slow_listing(monkeypatch, "alice", held),
        running_pop3_server(adapter, store) as server,
        raw(server.port) as alice,
    ):
        try:
            read_until(alice, b"\r\n")
            converse(alice, b"USER alice")
            alice.sendall(b"PASS wonderland\r\n")
            assert listing.wait(10)
            with raw(server.port) as bob:
                assert read_until(bob, b"\r\n").startswith(b"+OK")
                answers = converse(bob, b"USER bob", b"PASS builder", b"STAT", b"QUIT")
            assert [a[:3] for a in answers] == [b"+OK"] * 4
            assert answers[2] == b"+OK 1 %d\r\n" % len(crlf(MESSAGES[0]))
            assert not answer_waiting(alice)
            release.set()
            assert read_until(alice, b"\r\n").startswith(b"+OK Logged in, 3 messages")
        finally:
            release.set()  # a failed assertion leaves no thread held
    assert released == [True]  # alice's listing did not wait out its 10 s


def test_a_stuck_maildir_listing_is_err_at_the_store_timeout_and_unlocks_when_done(
    adapter: str, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store timeout ends the wait for a listing that hangs (-ERR [SYS/TEMP]);
    the worker thread keeps the maildrop locked until it is done, then lets go."""
    timeouts = dataclasses.replace(POP3Timeouts.uniform(10.0), store=0.3)
    stuck = threading.Event()
    with (
        slow_listing(monkeypatch, "alice", lambda: stuck.wait(5)),
        running_pop3_server(adapter, store, timeouts=timeouts) as server,
    ):
        try:
            with raw(server.port) as sock:
                read_until(sock, b"\r\n")
                started = time.monotonic()
                answers = converse(sock, b"USER alice", b"PASS wonderland")
                assert answers[1].startswith(b"-ERR [SYS/TEMP]")
                assert time.monotonic() - started < 2
            with raw(server.port) as sock:
                read_until(sock, b"\r\n")
                answers = converse(sock, b"USER alice", b"PASS wonderland", b"QUIT")
                assert answers[1].startswith(b"-ERR [IN-USE]")  # the thread holds it
        finally:
            stuck.set()

        def logs_in() -> bool:
            with raw(server.port) as sock:
                read_until(sock, b"\r\n")
                answers = converse(sock, b"USER alice", b"PASS wonderland", b"QUIT")
            return answers[1].startswith(b"+OK Logged in, 3 messages")

        wait_until(logs_in)
        server.wait_for_sessions(0)
    assert maildir_count(store) == 3


def test_a_listing_past_the_store_timeout_is_one_warning_line_with_no_traceback(
    adapter: str,
    store: MaildirStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store timeout is an expected event (a slow disk, a big maildrop): logged as
    one WARNING naming the session, the call and the deadline, with no traceback, as
    Dovecot logs a timeout; the client's answer is still ``-ERR [SYS/TEMP]``."""
    timeouts = dataclasses.replace(POP3Timeouts.uniform(10.0), store=0.3)
    stuck = threading.Event()
    caplog.set_level(logging.INFO, logger="smtpcore.pop3.server")
    with (
        slow_listing(monkeypatch, "alice", lambda: stuck.wait(5)),
        running_pop3_server(adapter, store, timeouts=timeouts) as server,
    ):
        try:
            with raw(server.port) as sock:
                read_until(sock, b"\r\n")
                answers = converse(sock, b"USER alice", b"PASS wonderland")
                assert answers[1] == b"-ERR [SYS/TEMP] Internal error, try again later\r\n"
        finally:
            stuck.set()
        server.wait_for_sessions(0)
    timed_out = [r for r in caplog.records if "store timeout" in r.getMessage()]
    assert [r.levelno for r in timed_out] == [logging.WARNING]
    line = timed_out[0]
    assert line.exc_info is None and "\n" not in line.getMessage()
    assert "open_maildrop('alice')" in line.getMessage()
    assert "from [127.0.0.1]:" in line.getMessage() and "after 0.3s" in line.getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class OwnTimeoutDrop(Maildrop):
    """A maildrop over a database whose client times out at once, long before any
    ``store`` deadline: its listing (an async hook) and a message's plain ``open``
    (under no deadline at all) raise the client's own ``TimeoutError``."""

    async def messages(self) -> list[MessageInfo]:
        return [MessageInfo(10, "1")]

    def open(self, number: int) -> Iterator[bytes]:
        raise TimeoutError("db read timed out after 5s (db.internal:5432)")  # socket.timeout

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        pass


class OwnTimeoutStore(SlowStore):
    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        if user == "bob":
            raise TimeoutError("connect to db.internal:5432 timed out")
        return OwnTimeoutDrop()


def test_a_stores_own_timeout_error_is_its_failure_not_the_store_timeout(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``TimeoutError`` the store raises itself (its database's, its socket's) is its
    failure, logged at ERROR with its traceback and its text, as any exception of the
    store's: only the ``store`` deadline's own is the expected "store timeout" line. It
    was taken for the deadline's whenever a deadline was set (the default 120 s), even
    for a plain ``open`` that runs under none."""
    caplog.set_level(logging.INFO, logger="smtpcore.pop3.server")
    with running_pop3_server(adapter, OwnTimeoutStore(adapter)) as server:
        with raw(server.port) as sock:
            read_until(sock, b"\r\n")
            answers = converse(sock, b"USER bob", b"PASS wonderland", b"QUIT")
            assert answers[1].startswith(b"-ERR [SYS/TEMP]")
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            client.retr(1)
        client.quit()
        server.wait_for_sessions(0)
    assert "store timeout" not in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "open_maildrop('bob') failed",
        "reading message 1 of 'alice' failed",
    ]
    assert [type(r.exc_info[1]) if r.exc_info else None for r in errors] == [
        TimeoutError,
        TimeoutError,
    ]
    assert "connect to db.internal:5432 timed out" in caplog.text
    assert "db read timed out after 5s (db.internal:5432)" in caplog.text


class QuickRefusalsStore(Mailstore):
    """A store whose password check answers at once, and whose ``open_maildrop`` waits
    under a ``trio.fail_after`` of its own (its database's deadline), far longer than
    the server's ``store`` timeout."""

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        return password == PASSWORDS.get(user)

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        import trio

        with trio.fail_after(30):
            await trio.sleep_forever()
        raise AssertionError("not reached")  # pragma: no cover


def test_trio_quick_store_calls_leave_a_waiting_hooks_store_timeout_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """trio remembers per hook (by its code object) whether it answers at once, and
    enters a quick hook's deadline only once it waits. Every store call was wrapped in
    one marking coroutine, so 17 failed logins (a check answering at once) made all
    hooks "quick": an ``open_maildrop`` waiting inside a ``trio.fail_after`` of its
    own then lost its store deadline, the session timeout ended it (EOF, not
    ``-ERR [SYS/TEMP]``), and a WARNING named the wrapper."""
    caplog.set_level(logging.INFO, logger="smtpcore")
    timeouts = dataclasses.replace(POP3Timeouts.uniform(10.0), store=0.3)
    with running_pop3_server("trio", QuickRefusalsStore(), timeouts=timeouts) as server:
        for _ in range(17):
            with raw(server.port) as sock:
                read_until(sock, b"\r\n")
                answers = converse(sock, b"USER alice", b"PASS wrong", b"QUIT")
                assert answers[1].startswith(b"-ERR")
        with raw(server.port) as sock:
            read_until(sock, b"\r\n")
            answers = converse(sock, b"USER alice", b"PASS wonderland")
            assert answers[1] == b"-ERR [SYS/TEMP] Internal error, try again later\r\n"
        server.wait_for_sessions(0)
    assert "cancel scope of its own" not in caplog.text
    timed_out = [r.getMessage() for r in caplog.records if "store timeout" in r.getMessage()]
    assert len(timed_out) == 1 and "open_maildrop('alice')" in timed_out[0]


def test_the_store_timeout_line_writes_the_deadline_as_configured() -> None:
    """The deadline in the "store timeout" line reads as configured: ``0.00001s``, not
    ``1e-05s``."""
    from smtpcore._driver._own_timeouts import seconds_text

    assert [seconds_text(s) for s in (120, 120.0, 0.3, 1e-05, 2.5)] == [
        "120s",
        "120s",
        "0.3s",
        "0.00001s",
        "2.5s",
    ]


class EagerDrop(Maildrop):
    """An ``open`` written as a plain method: message 1 raises at once, message 2
    raises ``KeyError`` at once, message 3 gives str, message 4 a str after a
    write's worth of bytes (after ``+OK``)."""

    async def messages(self) -> list[MessageInfo]:
        return [MessageInfo(10, str(n)) for n in range(1, 5)]

    def open(self, number: int) -> Iterator[bytes]:
        if number == 1:
            raise MessageUnavailable("Message vanished")
        if number == 3:
            return iter(["Subject: str\r\n"])  # type: ignore[list-item]  # the test's point
        if number == 4:
            first = b"Subject: a\r\n\r\n" + (b"x" * 76 + b"\r\n") * 4000  # a write's worth
            return iter([first, "body\r\n"])  # type: ignore[list-item]
        return iter([{1: b"never"}[number]])

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        pass


class EagerStore(SlowStore):
    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        return EagerDrop()


def test_a_message_that_cannot_be_opened_or_is_not_bytes_is_err(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever ``Maildrop.open`` raises, and a first chunk that is not bytes, is
    ``-ERR`` (a MaildropError's own) and the session goes on; a chunk that is not
    bytes after ``+OK`` breaks off the message and closes, as any failure then."""
    with running_pop3_server(adapter, EagerStore(adapter)) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        with pytest.raises(poplib.error_proto, match="vanished"):
            client.retr(1)
        with pytest.raises(poplib.error_proto, match="vanished"):
            client.top(1, 0)
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            client.retr(2)
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            client.retr(3)
        assert client.noop().startswith(b"+OK")
        with pytest.raises(poplib.error_proto, match="EOF"):  # a closed connection
            client.retr(4)
        client.close()
    assert "KeyError: 2" in caplog.text
    assert "chunks are bytes, not str" in caplog.text
    assert "message 4 of 'alice' broke off" in caplog.text


class CutDrop(EagerDrop):
    """Message 1 gives a write's worth, then is :class:`MessageUnavailable`, as a
    Maildir file that grows past its listed size while RETR sends it."""

    def open(self, number: int) -> Iterator[bytes]:
        yield b"Subject: a\r\n\r\n" + (b"x" * 76 + b"\r\n") * 4000
        raise MessageUnavailable("The message changed since it was listed")


class CutStore(SlowStore):
    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        return CutDrop()


def test_a_message_unavailable_midway_is_one_log_line_without_a_traceback(
    adapter: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A message the maildrop gives up on after ``+OK`` (a Maildir file grown since the
    listing, which the maildrop has already named in a warning) closes the connection
    and is logged in one line: it is the maildrop's own answer, not a fault of the
    server, and a user who grows files at will must not fill the log with tracebacks."""
    with (
        caplog.at_level(logging.INFO, logger="smtpcore.pop3.server"),
        running_pop3_server(adapter, CutStore(adapter)) as server,
    ):
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        with pytest.raises(poplib.error_proto, match="EOF"):  # a closed connection
            client.retr(1)
        client.close()
    [line] = [r for r in caplog.records if "broke off" in r.getMessage()]
    assert "changed since it was listed" in line.getMessage()
    assert line.exc_info is None
    assert "Traceback" not in caplog.text


def test_our_client_refuses_a_uidl_answer_that_names_no_unique_id(adapter: str) -> None:
    mod = module(adapter)
    steps = script(LOGIN + "C: UIDL 1\nS: +OK\nC: QUIT\nS: +OK bye")  # still in step

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ProtocolError, match="unique-id of message 1"):
                await client.uid(1)

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


@pytest.mark.parametrize(
    ("listings", "error"),
    [
        ("S: 1 10\nS: 1 20\nS: .", "message number 1 twice"),
        ("S: 1 10\nS: 2 20\nS: .\nC: UIDL\nS: +OK\nS: 1 a\nS: 1 b\nS: .", "number 1 twice"),
        ("S: 1 10\nS: 2 20\nS: .\nC: UIDL\nS: +OK\nS: 1 a\nS: 2 a\nS: .", "unique-id 'a' twice"),
    ],
)
def test_our_client_refuses_a_listing_that_names_a_message_twice(
    adapter: str, listings: str, error: str
) -> None:
    """A message number, or a unique-id, twice in a listing (RFC 1939 §5, §7) is a
    protocol error: the later UID no longer replaces the first in silence."""
    mod = module(adapter)
    login = LOGIN.replace("S: PIPELINING\n", "")
    steps = script(login + "C: LIST\nS: +OK\n" + listings + "\nC: QUIT\nS: +OK bye")

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ProtocolError, match=error):
                await client.list()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


REPEATED_UIDL = "S: +OK\nS: 1 a\nS: 2 same\nS: 3 b\nS: 4 same\nS: ."
"""A UIDL listing that gives one unique-id to messages 2 and 4 (RFC 1939 §7 forbids it)."""


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "one at a time"])
def test_our_client_lists_a_repeated_unique_id_as_none_when_asked(
    adapter: str, pipelined: bool
) -> None:
    """A server that gave one unique-id to two messages made ``list()`` fail, and a
    client had no way to the rest of the listing. ``allow_repeated_uids=True`` lists those
    messages with no ``uid`` and the id as ``repeated_uid``, the others as usual, and
    the session goes on; by default the listing is still refused."""
    mod = module(adapter)
    login = LOGIN if pipelined else LOGIN.replace("S: PIPELINING\n", "")
    sizes = "C: LIST\nS: +OK\nS: 1 10\nS: 2 20\nS: 3 30\nS: 4 40\nS: ."
    uidl = "C: UIDL\n" + REPEATED_UIDL
    if pipelined:  # both commands go out before either answer
        listings = "C: LIST\nC: UIDL\n" + sizes.removeprefix("C: LIST\n") + "\n" + REPEATED_UIDL
    else:
        listings = sizes + "\n" + uidl
    steps = script(login + listings + "\n" + listings + "\nC: NOOP\nS: +OK\nC: QUIT\nS: +OK bye")

    async def session(port: int) -> list[Any]:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ProtocolError, match="unique-id 'same' twice"):
                await client.list()
            listing: list[Any] = await client.list(allow_repeated_uids=True)
            await client.noop()  # the session went on, in step
            return listing

    with ScriptedServer(steps) as server:
        listing = run(adapter, lambda: session(server.port))
    assert listing == [
        mod.MessageListing(1, 10, "a"),
        mod.MessageListing(2, 20, None, repeated_uid="same"),
        mod.MessageListing(3, 30, "b"),
        mod.MessageListing(4, 40, None, repeated_uid="same"),
    ]


def test_a_message_listing_has_its_own_unique_id_or_a_repeated_one_not_both(
    adapter: str,
) -> None:
    """A listing with ``uid`` and ``repeated_uid`` both says the id is the message's own
    and not: it cannot be built."""
    mod = module(adapter)
    assert mod.MessageListing(1, 10, None, repeated_uid="a").uid is None
    with pytest.raises(ValueError, match="repeated_uid"):
        mod.MessageListing(1, 10, "a", repeated_uid="a")


def test_our_client_refuses_a_message_listed_twice_even_with_repeated_uids_allowed(
    adapter: str,
) -> None:
    """``allow_repeated_uids=True`` forgives a unique-id given to two messages, not a message
    listed twice (RFC 1939 §7: which of its two ids is its own, nobody can say), nor a
    line that is no unique-id listing."""
    mod = module(adapter)
    login = LOGIN.replace("S: PIPELINING\n", "")
    sizes = "C: LIST\nS: +OK\nS: 1 10\nS: 2 20\nS: .\n"
    steps = script(
        login
        + sizes
        + "C: UIDL\nS: +OK\nS: 1 a\nS: 1 b\nS: .\n"
        + sizes
        + "C: UIDL\nS: +OK\nS: 1 a\nS: 2\nS: .\nC: QUIT\nS: +OK bye"
    )

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ProtocolError, match="message number 1 twice"):
                await client.list(allow_repeated_uids=True)
            with pytest.raises(mod.POP3ProtocolError, match="not a unique-id listing"):
                await client.list(allow_repeated_uids=True)

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


def test_our_client_refuses_a_listing_without_end(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LIST that never ends (or is absurdly long) is a protocol error past
    ``MAX_LISTING`` octets, not memory without end; the connection closes."""
    from smtpcore._driver import _pop3_client_content

    monkeypatch.setattr(_pop3_client_content, "MAX_LISTING", 2000)
    mod = module(adapter)
    listing = b"".join(b"%d 10\r\n" % n for n in range(1, 400))  # one write: the kernel
    steps = [  # takes it whole, however soon the client stops reading
        *script(LOGIN.replace("S: PIPELINING\n", "") + "C: LIST"),
        Send(b"+OK\r\n" + listing),
    ]

    async def session(port: int) -> None:
        async with mod.POP3Client("127.0.0.1", port, allow_plaintext_auth=True) as client:
            await client.login("u", "p")
            with pytest.raises(mod.POP3ProtocolError, match="listing longer than 2000"):
                await client.list()

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


def test_a_client_that_stops_reading_is_cut_off_at_the_grace_period(
    adapter: str, tmp_path: Path
) -> None:
    """``aclose(grace)`` cuts off what is left after ``grace`` seconds: a session whose
    client stopped reading a large RETR does not add the close's own timeout to it."""
    write_maildir(tmp_path / "alice", [b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 200_000])
    store = MaildirStore(tmp_path, PASSWORDS)
    with (
        running_pop3_server(adapter, store) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        replies = sock.makefile("rb")
        replies.readline()
        sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
        assert replies.readline().startswith(b"+OK") and replies.readline().startswith(b"+OK")
        sock.sendall(b"RETR 1\r\n")  # and read no more of it
        time.sleep(0.3)
        started = time.monotonic()
        server.call(lambda: server.server.aclose(grace=0.5))
        took = time.monotonic() - started
    assert took < 3.0, took  # the close's own 5 s wait came on top of the grace before


def test_a_response_cut_off_at_the_grace_period_gets_no_err_after_its_part(
    adapter: str, tmp_path: Path
) -> None:
    """A large RETR to a client that stopped reading, cut off when the grace runs out:
    ``-ERR [SYS/TEMP] Server shutting down`` went out after the part of the message
    written (on trio mid-line, ``...\\r\\n\\r-ERR``), where a client taking the close
    for the end stores it as the message's last line (RFC 1939 §3: no status line
    inside a multi-line response). The session now closes without it."""
    write_maildir(tmp_path / "alice", [b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 200_000])
    store = MaildirStore(tmp_path, PASSWORDS)
    with (
        running_pop3_server(adapter, store) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock,
    ):
        replies = sock.makefile("rb")
        replies.readline()
        sock.sendall(b"USER alice\r\nPASS wonderland\r\n")
        assert replies.readline().startswith(b"+OK") and replies.readline().startswith(b"+OK")
        sock.sendall(b"RETR 1\r\n")
        assert replies.readline().startswith(b"+OK")
        received = bytearray()

        def read_slowly() -> None:  # a client on a slow line: the writes go on, in part
            with contextlib.suppress(OSError):
                while chunk := replies.read1(8192):
                    received.extend(chunk)
                    time.sleep(0.005)

        reader = threading.Thread(target=read_slowly)
        reader.start()
        server.call(lambda: server.server.aclose(grace=0.3))
        reader.join(60)
        assert not reader.is_alive()  # the close ended the read, not the join's patience
    assert received.startswith(b"Subject: big\r\n") and not received.endswith(b"\r\n.\r\n")
    assert b"-ERR" not in received, bytes(received[-80:])


def test_a_client_told_of_a_shutdown_while_idle_says_the_server_closed_the_session(
    adapter: str, store: MaildirStore
) -> None:
    """A server's shutdown sends an idle client ``-ERR [SYS/TEMP] Server shutting
    down`` and closes (RFC 2449 §8.1.2); the client's QUIT on leaving ``async with``
    found it and raised ``POP3ProtocolError`` ("a response no command asked for"),
    where the SMTP client says the server is closing the session. It now raises
    :class:`POP3ConnectionError` carrying that ``-ERR``."""
    mod = module(adapter)
    with running_pop3_server(adapter, store) as server:

        async def session() -> BaseException:
            with pytest.raises(mod.POP3ConnectionError) as closed:
                async with mod.POP3Client(
                    "127.0.0.1", server.port, allow_plaintext_auth=True
                ) as client:
                    await client.login("alice", "wonderland")
                    closing = threading.Thread(
                        target=server.call, args=(lambda: server.server.aclose(grace=5),)
                    )
                    closing.start()
                    closing.join(30)  # told, then closed
                    await module_sleep(adapter)(0.2)  # the event loop reads what came
            error: BaseException = closed.value
            return error

        error = run(adapter, session)
    assert isinstance(error, module(adapter).POP3ConnectionError)
    assert error.response is not None and error.response.code == "SYS/TEMP"
    assert "the server is closing the session: -ERR [SYS/TEMP]" in str(error)


def test_a_session_cut_off_at_the_grace_period_is_told_the_server_shuts_down(
    adapter: str,
) -> None:
    """A session still busy when the grace runs out (here a password check that
    hangs) gets ``-ERR [SYS/TEMP] Server shutting down`` before the close, as an idle
    one does at once: it saw the connection end without a word."""
    with (
        running_pop3_server(adapter, FaultyStore(adapter, "check_password: hangs")) as server,
        raw(server.port) as sock,
    ):
        read_until(sock, b"\r\n")
        sock.sendall(b"USER alice\r\n")
        read_until(sock, b"\r\n")
        sock.sendall(b"PASS wonderland\r\n")
        time.sleep(0.1)
        started = time.monotonic()
        server.call(lambda: server.server.aclose(grace=0.3))
        assert time.monotonic() - started < 5
        assert read_until(sock, b"\r\n") == b"-ERR [SYS/TEMP] Server shutting down\r\n"
        assert sock.recv(100) == b""


@pytest.mark.parametrize("password_length", [177, 180])
def test_our_client_sends_an_initial_response_while_the_auth_line_fits(
    adapter: str, password_length: int
) -> None:
    """RFC 5034 §4: the initial response goes with AUTH unless the command would pass
    255 octets (RFC 2449 §4, CRLF included); then it answers an empty challenge."""
    mod = module(adapter)
    password = "p" * password_length
    encoded = base64.b64encode(f"\0u\0{password}".encode()).decode()
    line = f"AUTH PLAIN {encoded}"
    fits = len(line) + 2 <= 255
    exchange = f"C: {line}\n" if fits else f"C: AUTH PLAIN\nS: + \nC: {encoded}\n"
    steps = script(
        "S: +OK ready\nC: CAPA\nS: +OK\nS: SASL PLAIN\nS: .\n"
        + exchange
        + "S: +OK in\nC: CAPA\nS: +OK\nS: .\nC: QUIT\nS: +OK bye\n"
    )

    async def session(port: int) -> None:
        async with mod.POP3Client(
            "127.0.0.1", port, stls=False, allow_plaintext_auth=True
        ) as client:
            await client.authenticate(PlainClient("u", password))

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))
    assert fits is (password_length == 177)


def test_a_shutdown_begun_while_a_response_is_written_says_so_after_it(
    store: MaildirStore,
) -> None:
    """A session whose last response is still being written when the shutdown begins
    gets ``-ERR [SYS/TEMP]`` once it is out, as an idle one does at once; it did not
    notice, and waited for a command until the grace ran out."""
    import trio
    import trio.testing

    from smtpcore.trio import POP3Server

    class HeldStream(trio.abc.Stream):
        """The server's end: the write that ends a multi-line response waits for
        ``release``, as a write to a client that reads slowly does."""

        def __init__(self, inner: trio.abc.Stream) -> None:
            self.inner = inner
            self.holding = trio.Event()
            self.release = trio.Event()

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            if bytes(data).endswith(b"\r\n.\r\n"):
                self.holding.set()
                await self.release.wait()
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            return await self.inner.receive_some(max_bytes)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def main() -> bytes:
        server = POP3Server(store, hostname="mx.test")
        server_end, client_end = trio.testing.memory_stream_pair()
        held = HeldStream(server_end)
        received = b""

        async def until(marker: bytes) -> None:
            nonlocal received
            while not received.endswith(marker):
                data = await client_end.receive_some(65536)
                assert data, received
                received += data

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, held)
            await until(b"\r\n")
            for command in (b"USER alice\r\n", b"PASS wonderland\r\n", b"RETR 3\r\n"):
                await client_end.send_all(command)
                if command != b"RETR 3\r\n":
                    await until(b"\r\n")
            await held.holding.wait()
            nursery.start_soon(server.aclose, 3)
            await trio.sleep(0.05)  # the shutdown has begun, the write still waits
            held.release.set()
            with trio.fail_after(2):  # not the grace: at once
                while data := await client_end.receive_some(65536):
                    received += data
        return received

    received = trio.run(main)
    assert received.endswith(crlf(MESSAGES[2]) + b".\r\n-ERR [SYS/TEMP] Server shutting down\r\n")


# -- a mailstore's mistakes -----------------------------------------------------------

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


async def stray_cancellation(adapter: str) -> None:
    """Meet a cancellation that is not the session's: on asyncio a shared future other
    code cancels, on trio the outcome of a call another task's scope cancelled."""
    if adapter == "asyncio":
        import asyncio

        lookup = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.01, lookup.cancel)
        await lookup
    else:
        import outcome
        import trio

        captured: list[outcome.Outcome[None]] = []

        async def call() -> None:
            captured.append(await outcome.acapture(trio.sleep_forever))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        captured[0].unwrap()


class FaultyDrop(Maildrop):
    """One message; what goes wrong is its store's ``fault``, ``"<hook>: <what>"``."""

    def __init__(self, store: FaultyStore) -> None:
        self.store = store

    async def messages(self) -> Any:
        await self.store.meet("messages")
        return self.store.listing

    def open(self, number: int) -> AsyncIterator[bytes] | Iterator[bytes]:
        fault = self.store.fault
        if fault == "open: empty chunks forever":
            return iter(functools.partial(io.BytesIO(MESSAGE).read, 65536), None)
        if fault == "open: empty async chunks forever":
            return self._empty_forever()
        if fault == "open: some empty chunks":
            return iter([b"", MESSAGE[:5], b"", b"", MESSAGE[5:], b""])
        if fault.startswith("open:"):
            return self._async_chunks()
        return iter([MESSAGE])

    async def _async_chunks(self) -> AsyncIterator[bytes]:
        try:
            await self.store.meet("open")
            if self.store.fault == "open: a str, cleanup hangs":
                yield "a str"  # type: ignore[misc]  # the test's point
            yield MESSAGE
        finally:
            if self.store.fault.endswith("cleanup hangs"):
                await module_sleep(self.store.adapter)(30)

    async def _empty_forever(self) -> AsyncIterator[bytes]:
        yield MESSAGE
        while True:
            yield b""

    async def update(self, deleted: Collection[int], retrieved: Collection[int]) -> None:
        await self.store.meet("update")
        if self.store.fault == "update: MaildropError code ''":
            raise MaildropError("1 message left behind", code="")

    async def close(self) -> None:
        self.store.closed += 1
        await self.store.meet("close")


class FaultyStore(Mailstore):
    def __init__(self, adapter: str, fault: str) -> None:
        self.adapter = adapter
        self.fault = fault
        self.closed = 0
        self.listing: list[Any] = [MessageInfo(len(MESSAGE), "one")]
        if fault == "messages: a uid twice":
            self.listing.append(MessageInfo(len(MESSAGE), "one"))
        elif fault == "messages: tuples":
            self.listing = [(len(MESSAGE), "one")]

    async def meet(self, hook: str) -> None:
        """The fault, if it is ``hook``'s: a stray cancellation (once) or a hang."""
        if self.fault == f"{hook}: stray cancellation":
            self.fault = ""
            await stray_cancellation(self.adapter)
        elif self.fault == f"{hook}: hangs":
            await module_sleep(self.adapter)(30)

    async def check_password(self, session: POP3Session, user: str, password: str) -> bool:
        await self.meet("check_password")
        if self.fault == "check_password: str":
            return "no"  # type: ignore[return-value]  # the test's point
        if self.fault == "check_password: None":
            return None  # type: ignore[return-value]  # the test's point: no return
        if self.fault == "check_password: coroutine":
            return self._unawaited(password == "wonderland")  # type: ignore[return-value]
        return password == "wonderland"

    @staticmethod
    async def _unawaited(value: object) -> object:
        """What a hook that forgot to await an ``async def`` helper gives: its coroutine."""
        return value

    async def apop_secret(self, session: POP3Session, user: str) -> str | None:
        if self.fault == "apop_secret: coroutine":
            return self._unawaited("secret")  # type: ignore[return-value]  # the test's point
        return b"secret" if self.fault == "apop_secret: bytes" else None  # type: ignore[return-value]

    def sasl_mechanisms(self, session: POP3Session) -> Any:
        if self.fault == "sasl_mechanisms: a name with a line break":
            return {"PLAIN\r\n+OK": lambda: None}  # would end the CAPA line early
        if self.fault == "sasl_mechanisms: a dotless i":
            return {"pla\u0131n": lambda: None}  # str.upper() made it PLAIN
        return None if self.fault == "sasl_mechanisms: None" else {}

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        await self.meet("open_maildrop")
        if self.fault == "open_maildrop: MaildropError code 'SYS/PERM '":
            raise MaildropError("archived", code="SYS/PERM ")
        return FaultyDrop(self)


def converse(sock: socket.socket, *commands: bytes) -> list[bytes]:
    """Each command's answer, with the whole message after ``+OK`` to RETR or TOP."""
    answers = []
    for command in commands:
        sock.sendall(command + b"\r\n")
        multi_line = command.startswith((b"RETR", b"TOP"))
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
            if answer.endswith(b"\r\n") and (
                not multi_line or answer.startswith(b"-ERR") or answer.endswith(b"\r\n.\r\n")
            ):
                break
        answers.append(answer)
    return answers


STRAY: dict[str, tuple[list[str], str]] = {
    "check_password": (
        ["+OK", "-ERR [SYS/TEMP]", "+OK", "+OK", "+OK", "+OK", "+OK", "+OK"],
        "check_password failed",
    ),
    "open_maildrop": (
        ["+OK", "-ERR [SYS/TEMP]", "+OK", "+OK", "+OK", "+OK", "+OK", "+OK"],
        "open_maildrop('alice') failed",
    ),
    "messages": (
        ["+OK", "-ERR [SYS/TEMP]", "+OK", "+OK", "+OK", "+OK", "+OK", "+OK"],
        "listing the maildrop of 'alice' failed",
    ),
    "open": (
        ["+OK", "+OK", "-ERR", "-ERR", "-ERR [SYS/TEMP]", "+OK", "+OK", "+OK"],
        "reading message 1 of 'alice' failed",
    ),
    "update": (
        ["+OK", "+OK", "-ERR", "-ERR", "+OK", "+OK", "+OK", "-ERR [SYS/TEMP]"],
        "UPDATE of 'alice' failed",
    ),
    "close": (
        ["+OK", "+OK", "-ERR", "-ERR", "+OK", "+OK", "+OK", "+OK"],
        "closing the maildrop of alice failed",
    ),
}


@pytest.mark.parametrize("hook", sorted(STRAY))
def test_a_cancellation_not_the_sessions_out_of_a_mailstore_is_its_failure(
    adapter: str, hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A mailstore's method that lets out a cancellation while its session is not
    being cancelled has failed, as one that raises: logged, ``-ERR [SYS/TEMP]``, and
    the session goes on. It ended the session with no answer (on asyncio the
    cancellation escaped the session)."""
    if adapter == "asyncio" and not hasattr(asyncio.Task, "cancelling"):
        pytest.skip("before Python 3.11 a task cannot tell whose cancellation it is")
    expected, logged = STRAY[hook]
    with (
        running_pop3_server(
            adapter, FaultyStore(adapter, f"{hook}: stray cancellation")
        ) as server,
        raw(server.port) as sock,
    ):
        read_until(sock, b"\r\n")
        login = (b"USER alice", b"PASS wonderland")
        answers = converse(sock, *login, *login, b"RETR 1", b"RETR 1", b"DELE 1", b"QUIT")
        assert sock.recv(100) == b""
        server.wait_for_sessions(0)
    assert [a.decode()[: len(e)] for a, e in zip(answers, expected, strict=True)] == expected
    assert answers[5].endswith(MESSAGE + b".\r\n")
    assert logged in caplog.text
    assert "session with" not in caplog.text


@pytest.mark.parametrize(
    ("fault", "command"),
    [
        ("close: hangs", b"QUIT"),
        ("open: cleanup hangs", b"TOP 1 0"),
        ("open: a str, cleanup hangs", b"RETR 1"),
    ],
)
def test_a_maildrop_that_hangs_in_its_cleanup_is_cut_off_at_the_store_timeout(
    adapter: str, fault: str, command: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """``Maildrop.close`` and the cleanup of a message's generator run under the
    ``store`` timeout; past it the failure is logged, the answers made are written
    and the session ends. Either held the session and its connection forever. The
    timeout is logged as one WARNING line, no traceback."""
    timeouts = dataclasses.replace(POP3Timeouts.uniform(10.0), store=0.3)
    store = FaultyStore(adapter, fault)
    with (
        running_pop3_server(adapter, store, timeouts=timeouts) as server,
        raw(server.port) as sock,
    ):
        read_until(sock, b"\r\n")
        converse(sock, b"USER alice", b"PASS wonderland")
        started = time.monotonic()
        (answer,) = converse(sock, command)
        assert sock.recv(100) == b""  # the session is over
        assert time.monotonic() - started < 5
        server.wait_for_sessions(0)
    if command == b"TOP 1 0":
        assert answer == b"+OK Top of message\r\nSubject: hi\r\n\r\n.\r\n"
    elif command == b"RETR 1":
        assert answer.startswith(b"-ERR [SYS/TEMP]")
        assert "closing message 1 of 'alice' from [127.0.0.1]:" in caplog.text
    else:
        assert answer.startswith(b"+OK")
        assert "closing the maildrop of alice from [127.0.0.1]:" in caplog.text
    # An expected event: one WARNING line, no traceback.
    assert "store timeout, given up after 0.3s" in caplog.text
    assert "TimeoutError" not in caplog.text


@pytest.mark.parametrize(
    "fault", ["open: empty chunks forever", "open: empty async chunks forever"]
)
@pytest.mark.parametrize("command", [b"RETR 1", b"TOP 1 5"])
def test_a_message_of_empty_chunks_forever_is_a_failure(
    adapter: str, fault: str, command: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A message's iterator that gives empty chunks and never ends (``iter(partial(
    file.read, n), None)`` at the end of the file) fails the read: it held the event
    loop, reading, with memory growing, for ever. Empty chunks among others are
    skipped."""
    store = FaultyStore(adapter, fault)
    with running_pop3_server(adapter, store) as server:
        with raw(server.port) as sock:
            read_until(sock, b"\r\n")
            converse(sock, b"USER alice", b"PASS wonderland")
            assert converse(sock, command, b"NOOP") == [
                b"-ERR [SYS/TEMP] Internal error, try again later\r\n",
                b"+OK\r\n",
            ]
        with raw(server.port) as sock:
            store.fault = "open: some empty chunks"
            read_until(sock, b"\r\n")
            converse(sock, b"USER alice", b"PASS wonderland")
            assert converse(sock, b"RETR 1")[0].endswith(b" octets\r\n" + MESSAGE + b".\r\n")
    assert "65536 empty chunks in a row" in caplog.text


WRONG: dict[str, tuple[list[bytes], list[bytes], str]] = {
    "sasl_mechanisms: None": ([b"CAPA"], [b"+OK Capability"], "sasl_mechanisms failed"),
    "sasl_mechanisms: a name with a line break": (
        [b"CAPA"],
        [b"+OK Capability"],
        "not a SASL mechanism name",
    ),
    "sasl_mechanisms: a dotless i": ([b"CAPA"], [b"+OK Capability"], "not a SASL mechanism name"),
    "apop_secret: bytes": (
        [b"APOP alice " + b"0" * 32, b"NOOP"],
        [b"-ERR [SYS/TEMP]", b"-ERR"],
        "apop_secret gave bytes, not a str or None",
    ),
    "check_password: str": (
        [b"USER alice", b"PASS wonderland"],
        [b"+OK", b"-ERR [SYS/TEMP]"],
        "check_password gave str, not a bool",
    ),
    "messages: tuples": (
        [b"USER alice", b"PASS wonderland"],
        [b"+OK", b"-ERR [SYS/TEMP]"],
        "a maildrop lists MessageInfo, not tuple",
    ),
    "messages: a uid twice": (
        [b"USER alice", b"PASS wonderland"],
        [b"+OK", b"-ERR [SYS/TEMP]"],
        "the unique-id 'one' is listed twice",
    ),
    "open_maildrop: MaildropError code 'SYS/PERM '": (
        [b"USER alice", b"PASS wonderland", b"NOOP"],
        [b"+OK", b"-ERR archived\r\n", b"-ERR"],
        "'SYS/PERM ' is not a response code",
    ),
    "update: MaildropError code ''": (
        [b"USER alice", b"PASS wonderland", b"DELE 1", b"QUIT"],
        [b"+OK", b"+OK", b"+OK", b"-ERR 1 message left behind\r\n"],
        "'' is not a response code",
    ),
}


@pytest.mark.parametrize("fault", sorted(WRONG))
def test_what_a_mailstore_gives_wrong_is_its_failure(
    adapter: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A result of the wrong type (mechanisms that are no mapping, a secret that is
    not a str, a password check that is no bool, a listing of anything but
    MessageInfo or with a unique-id twice, RFC 1939 §7) and a MaildropError whose
    code is no response code (RFC 2449 §8) are the store's failures: logged and
    answered, the session going on. They ended it with no answer, or (a truthy
    check) logged the client in, or (a listing) went on the wire as they were."""
    commands, expected, logged = WRONG[fault]
    store = FaultyStore(adapter, fault)
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        assert read_until(sock, b"\r\n").startswith(b"+OK")
        answers = converse(sock, *commands)
        assert [a[: len(e)] for a, e in zip(answers, expected, strict=True)] == expected
        if commands[-1] != b"QUIT":
            assert converse(sock, b"QUIT")[0].startswith(b"+OK")
    assert logged in caplog.text
    assert "session with" not in caplog.text
    if fault.startswith("sasl_mechanisms"):
        assert b"SASL" not in answers[0]
    if fault.startswith("messages"):
        assert store.closed == 1


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
@pytest.mark.parametrize(
    ("fault", "logged"),
    [
        ("check_password: coroutine", "check_password gave coroutine, not a bool"),
        ("check_password: None", "check_password gave NoneType, not a bool"),
        ("apop_secret: coroutine", "apop_secret gave coroutine, not a str or None"),
    ],
)
def test_a_login_hook_that_gives_the_wrong_type_is_the_stores_error_not_a_failed_login(
    adapter: str, fault: str, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A store's ``check_password`` that gives no bool (the coroutine of an ``async
    def`` helper it forgot to await, or None) was answered as the client's wrong
    password: ``-ERR [AUTH]`` after the failure delay, the fail2ban line, a count
    toward ``max_auth_failures``; an ``apop_secret`` coroutine was logged as a
    TypeError. Both are the store's mistake, as a SASL callback's is: logged at
    ERROR, ``-ERR [SYS/TEMP]`` at once, never counted."""
    login = [b"USER alice", b"PASS wonderland"]
    if fault.startswith("apop_secret"):
        login = [b"APOP alice " + b"0" * 32]
    with (
        running_pop3_server(
            adapter, FaultyStore(adapter, fault), auth_failure_delay=30.0, max_auth_failures=1
        ) as server,
        raw(server.port) as sock,
        caplog.at_level(logging.INFO, logger="smtpcore.pop3.server"),
    ):
        read_until(sock, b"\r\n")
        started = time.monotonic()
        for _ in range(2):
            assert converse(sock, *login)[-1].startswith(b"-ERR [SYS/TEMP]")
        assert time.monotonic() - started < 5.0
        assert converse(sock, b"NOOP")[0].startswith(b"-ERR")  # still open: nothing counted
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [logged] * 2
    assert "reject:" not in caplog.text


def test_a_pop3_server_with_a_hostname_that_cannot_head_its_greeting_will_not_start(
    adapter: str, store: MaildirStore
) -> None:
    """Refused when the server is built, as the SMTP server does; it started, and every
    session then ended with no greeting."""
    with pytest.raises(ValueError, match="cannot name this server"):
        module(adapter).POP3Server(store, hostname="pop host")


def test_a_retr_of_a_maildir_message_asks_no_abstract_class_what_it_reads(
    adapter: str, store: MaildirStore
) -> None:
    """The common case of a RETR, a Maildir's message read by a generator, is told from
    an async iterator without ``isinstance(chunks, AsyncIterator)``: the ABC's check is
    a Python call, and a RETR's work is counted in calls (issue 17)."""
    checks: list[str] = []
    counting = threading.Event()

    def profile(frame: FrameType, event: str, arg: object) -> None:
        caller = frame.f_back
        if (
            counting.is_set()
            and event == "call"
            and frame.f_code.co_name == "__instancecheck__"
            and caller is not None
            and "smtpcore" in caller.f_code.co_filename
        ):
            checks.append(caller.f_code.co_name)

    threading.setprofile(profile)
    try:
        with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
            read_until(sock, b"\r\n")
            for line in (b"USER alice\r\n", b"PASS wonderland\r\n"):
                sock.sendall(line)
                assert read_until(sock, b"\r\n").startswith(b"+OK")
            counting.set()
            for number in (1, 2, 3):
                sock.sendall(b"RETR %d\r\n" % number)
                assert read_until(sock, b"\r\n.\r\n").startswith(b"+OK")
            counting.clear()
    finally:
        threading.setprofile(None)
    assert checks == []


def test_a_multi_line_answer_ends_with_the_one_end_of_response(
    adapter: str, store: MaildirStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RETR, TOP and LIST end with one immutable ``EndOfResponse`` made once, not one
    made for each answer (a Python call a RETR, issue 17)."""
    made: list[EndOfResponse] = []
    monkeypatch.setattr(EndOfResponse, "__init__", lambda self: made.append(self))
    with running_pop3_server(adapter, store) as server, raw(server.port) as sock:
        read_until(sock, b"\r\n")
        for line in (b"USER alice\r\n", b"PASS wonderland\r\n"):
            sock.sendall(line)
            assert read_until(sock, b"\r\n").startswith(b"+OK")
        for command in (b"RETR 1\r\n", b"TOP 2 0\r\n", b"LIST\r\n"):
            sock.sendall(command)
            assert read_until(sock, b"\r\n.\r\n").startswith(b"+OK")
    assert made == []


def test_a_failed_auth_logs_its_mechanism_and_the_user_it_named(
    adapter: str, store: MaildirStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed AUTH logged ``user=<>`` and no mechanism, though the client's response
    named the user; SMTP's line gives the mechanism. Both now, on one line: the name is
    the client's text, escaped, so it cannot write a line of its own into the log."""
    import hmac

    forged = "bob\n2026-01-01 00:00:00,000 smtpcore.x: pop3: reject: PASS from [192.0.2.9]:1"
    plain = MaildirStore(store.root, PASSWORDS, plaintext_sasl=True)
    with (
        running_pop3_server(adapter, plain, auth_failure_delay=0.0) as server,
        raw(server.port) as client,
        caplog.at_level(logging.INFO, logger="smtpcore.pop3.server"),
    ):
        answers = client.makefile("rb")
        assert answers.readline().startswith(b"+OK")
        client.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n")
        assert answers.readline().startswith(b"-ERR [AUTH]")
        client.sendall(b"AUTH CRAM-MD5\r\n")
        challenge = base64.b64decode(answers.readline()[2:].strip())
        digest = hmac.new(b"wrong", challenge, hashlib.md5).hexdigest()
        client.sendall(base64.b64encode(f"{forged} {digest}".encode()) + b"\r\n")
        assert answers.readline().startswith(b"-ERR [AUTH]")
        client.sendall(b"QUIT\r\n")
        answers.readline()
    lines = [r.getMessage() for r in caplog.records if "reject: AUTH" in r.getMessage()]
    assert len(lines) == 2, lines
    assert lines[0].endswith("-ERR [AUTH] Authentication failed; mechanism=PLAIN user=<alice>")
    # A name that names no user (here, one that writes a log line) is not logged.
    assert lines[1].endswith("; mechanism=CRAM-MD5 user=<>"), lines[1]
    assert all(line.isprintable() for line in lines)


def test_a_failed_login_names_only_a_user_of_the_store(
    adapter: str, store: MaildirStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A password typed as the name (USER, AUTH LOGIN) was logged as ``user=<...>``.
    Only a name the store's ``is_user`` knows is logged, on every way in."""
    plain = MaildirStore(store.root, PASSWORDS, plaintext_sasl=True)
    commands = [
        [b"USER alice", b"PASS wrong"],
        [b"USER S3cret-Passw0rd!", b"PASS x"],
        [b"AUTH LOGIN", base64.b64encode(b"Pop-Passw0rd!"), base64.b64encode(b"x")],
    ]
    with (
        running_pop3_server(adapter, plain, auth_failure_delay=0.0) as server,
        caplog.at_level(logging.INFO, logger="smtpcore.pop3.server"),
    ):
        for session in commands:
            with raw(server.port) as client:
                answers = client.makefile("rb")
                assert answers.readline().startswith(b"+OK")
                for command in session:
                    client.sendall(command + b"\r\n")
                    answer = answers.readline()
                assert answer.startswith(b"-ERR [AUTH]"), answer
    lines = [r.getMessage() for r in caplog.records if ": reject: " in r.getMessage()]
    ends = [line.rpartition("; ")[2] for line in lines]
    assert ends == ["user=<alice>", "user=<>", "mechanism=LOGIN user=<>"], lines
    assert "Passw0rd" not in "\n".join(lines)
