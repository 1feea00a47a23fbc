"""``python -m smtpcore serve`` end to end, in subprocesses, with the standard library's
clients: submission with AUTH, relay between two servers, POP3, restarts, retries, bounces."""

from __future__ import annotations

import argparse
import contextlib
import email
import email.policy
import fcntl
import functools
import logging
import os
import poplib
import resource
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers import RunningProcess, free_port, make_tls_files, run_process
from smtpcore.server import _cli_serve, cli
from smtpcore.server.config import ServerConfig
from smtpcore.server.maildir import Maildir
from test_server_delivery import ScriptedSMTP

LOOPBACK = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    """A running ``serve`` process and the ports it listens on."""

    process: RunningProcess
    ports: dict[str, int]
    data_dir: Path
    saved_log: str | None = None

    def mailbox(self, address: str) -> list[bytes]:
        return [p.read_bytes() for p in Maildir(self.data_dir / "mailboxes" / address).messages()]

    def queued(self) -> int:
        return len(list((self.data_dir / "queue" / "envelopes").iterdir()))

    def log(self) -> str:
        """What it wrote to stdout and stderr (kept once the process is gone)."""
        return self.process.output() if self.saved_log is None else self.saved_log

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        """SIGTERM, as an init system stops it (or Control-C's SIGINT); the exit status."""
        self.process.popen.send_signal(signum)
        return self.process.popen.wait(10)


def _until(check: Callable[[], bool], what: str, served: Served, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; log:\n{served.log()}")
        time.sleep(0.05)


@contextlib.contextmanager
def serve(
    data_dir: Path,
    domain: str,
    users: list[str],
    *,
    listeners: tuple[str, ...] = ("smtp", "submission", "pop3"),
    ports: dict[str, int] | None = None,
    extra: tuple[str, ...] = (),
    allow_internal_relay: bool = True,
    open_files: tuple[int, int] | None = None,
) -> Iterator[Served]:
    """Run ``python -m smtpcore serve`` until its listeners are up (under the soft and
    hard ``open_files`` limits, ``ulimit -n``, when given).

    The ports picked here (``free_port``) lie outside the kernel's ephemeral range,
    so no outgoing connection of this test run takes one; but a port is only free
    when it is picked, and the server, a new Python process, binds three of them a
    second or so later. In that window another program may bind one: a second test
    run on this machine, or anything at all where the ephemeral range leaves too few
    ports outside it and ``free_port`` lets the kernel pick (``peers.KernelPorts``).
    So when the server cannot listen on a port picked here ("address already in
    use"), it starts again on fresh ones, three times at most; ports the caller gave
    are not retried.
    """
    given = dict(ports or {})
    for attempt in range(3):
        chosen = dict(given)
        for name in listeners:
            chosen.setdefault(name, free_port())
        with contextlib.ExitStack() as stack:
            process = stack.enter_context(
                run_process(
                    _limited(
                        _serve_argv(data_dir, domain, users, chosen, extra, allow_internal_relay),
                        open_files,
                    ),
                    env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                )
            )
            served = Served(process, chosen, data_dir)
            expected = [f"{name} listening on {LOOPBACK}:{chosen[name]}" for name in chosen]
            _until(
                functools.partial(_listening_or_gone, process, expected), "the listeners", served
            )
            if (
                process.popen.poll() is not None
                and "address already in use" in process.output().lower()
                and chosen != given
                and attempt < 2
            ):
                continue
            assert process.popen.poll() is None, process.output()
            try:
                yield served
            finally:
                served.saved_log = process.output()
            return


def _limited(argv: list[str], open_files: tuple[int, int] | None) -> list[str]:
    """``argv`` run by a Python that first sets its ``RLIMIT_NOFILE`` (kept across exec)."""
    if open_files is None:
        return argv
    soft, hard = open_files
    setup = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", setup, *argv]


def _listening_or_gone(process: RunningProcess, expected: list[str]) -> bool:
    return all(line in process.output() for line in expected) or process.popen.poll() is not None


def _serve_argv(
    data_dir: Path,
    domain: str,
    users: list[str],
    ports: dict[str, int],
    extra: tuple[str, ...],
    allow_internal_relay: bool,
) -> list[str]:
    argv = [sys.executable, "-m", "smtpcore", "serve", "--data-dir", str(data_dir)]
    argv += ["--domain", domain, "--hostname", f"mx.{domain}", "--retry-after", "0.3"]
    argv += ["--auth-failure-delay", "0"]  # failed logins answered at once: tests stay fast
    argv += ["--min-free-space", "0"]  # a small temporary filesystem still takes mail
    if allow_internal_relay:
        argv += ["--allow-internal-relay"]  # the servers and remotes here share loopback
    for user in users:
        argv += ["--user", user]
    for name in ("smtp", "submission", "pop3", "lmtp", "smtps", "pop3s"):
        argv += [f"--{name}-port", str(ports.get(name, 0))]
    return argv + list(extra)


ZONE = (
    "abc.example MX 10 mx.abc.example\nmx.abc.example A 127.0.0.1\n"
    "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
)
MESSAGE = (
    b"From: john@abc.example\r\nTo: brendon@pqr.example\r\nSubject: through two servers\r\n"
    b"\r\n.a dot first\r\nbye\r\n"
)


@pytest.fixture
def zone(tmp_path: Path) -> Path:
    path = tmp_path / "zone.txt"
    path.write_text(ZONE)
    return path


def _submit(port: int, message: bytes = MESSAGE, rcpts: tuple[str, ...] = ()) -> None:
    with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
        smtp.login("john@abc.example", "john-pw")
        refused = smtp.sendmail(
            "john@abc.example", list(rcpts or ("brendon@pqr.example",)), message
        )
        assert refused == {}


def _pop3(port: int, user: str, password: str) -> list[bytes]:
    client = poplib.POP3(LOOPBACK, port, timeout=10)
    try:
        client.user(user)
        client.pass_(password)
        count, _ = client.stat()
        messages = [b"\r\n".join(client.retr(i + 1)[1]) + b"\r\n" for i in range(count)]
        for i in range(count):
            client.dele(i + 1)
    finally:
        client.quit()
    return messages


def test_two_servers_relay_and_poplib_fetches(tmp_path: Path, zone: Path) -> None:
    with serve(tmp_path / "pqr", "pqr.example", ["brendon@pqr.example:brendon-pw"]) as pqr:
        resolver = ("--resolver", f"static:{zone}", "--remote-port", str(pqr.ports["smtp"]))
        with serve(
            tmp_path / "abc", "abc.example", ["john@abc.example:john-pw"], extra=resolver
        ) as abc:
            with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
                smtp.ehlo()
                assert smtp.mail("john@abc.example")[0] == 530  # AUTH first
                smtp.rset()
                with pytest.raises(smtplib.SMTPAuthenticationError):
                    smtp.login("john@abc.example", "wrong")
            _submit(abc.ports["submission"])
            _until(lambda: bool(pqr.mailbox("brendon@pqr.example")), "the relay", pqr)
            _until(lambda: abc.queued() == 0, "the queue to empty", abc)
            fetched = _pop3(pqr.ports["pop3"], "brendon@pqr.example", "brendon-pw")
            assert abc.stop() == 0
            assert "stopped" in abc.log()
        assert pqr.stop(signal.SIGINT) == 0
    (message,) = fetched
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Return-Path"] == "<john@abc.example>"
    assert len(parsed.get_all("Received") or []) == 2
    assert message.endswith(MESSAGE)
    assert "status=sent" in abc.log() and "relay=mx.pqr.example[127.0.0.1]" in abc.log()
    assert "pop3: disconnect from [127.0.0.1]" in pqr.log() and "deleted=1" in pqr.log()
    assert pqr.mailbox("brendon@pqr.example") == []


def test_a_restart_in_the_middle_of_a_queued_relay_delivers_once(
    tmp_path: Path, zone: Path
) -> None:
    pqr_ports = {"smtp": free_port()}
    resolver = ("--resolver", f"static:{zone}", "--remote-port", str(pqr_ports["smtp"]))
    users = ["john@abc.example:john-pw"]
    with serve(
        tmp_path / "abc", "abc.example", users, listeners=("submission",), extra=resolver
    ) as abc:
        _submit(abc.ports["submission"])
        _until(lambda: "status=deferred" in abc.log(), "a deferral (pqr is down)", abc)
        assert abc.stop() == 0
    assert abc.queued() == 1
    with (
        serve(
            tmp_path / "pqr",
            "pqr.example",
            ["brendon@pqr.example:pw"],
            ports=pqr_ports,
            listeners=("smtp",),
        ) as pqr,
        serve(
            tmp_path / "abc", "abc.example", users, listeners=("submission",), extra=resolver
        ) as again,
    ):
        assert "queue: 1 message waiting from before" in again.log()
        _until(lambda: again.queued() == 0, "the queue to empty", again)
        time.sleep(1.0)  # more than three retry periods: nothing more may arrive
        assert len(pqr.mailbox("brendon@pqr.example")) == 1
        assert again.log().count("status=sent") == 1


def test_4xx_then_250_is_retried(tmp_path: Path, zone: Path) -> None:
    remote = ScriptedSMTP([b"451 4.3.0 busy, try later", b"250 2.0.0 ok"])
    try:
        resolver = ("--resolver", f"static:{zone}", "--remote-port", str(remote.port))
        with serve(
            tmp_path / "abc", "abc.example", ["john@abc.example:john-pw"], extra=resolver
        ) as abc:
            _submit(abc.ports["submission"])
            _until(lambda: abc.queued() == 0 and len(remote.transactions) == 2, "retry", abc)
            log = abc.log()
    finally:
        remote.close()
    assert [t.reply[:3] for t in remote.transactions] == [b"451", b"250"]
    assert remote.transactions[1].content.endswith(MESSAGE)
    deferred = log.index("status=deferred (451 4.3.0 busy, try later)")
    assert log.index("status=sent (250 2.0.0 ok)") > deferred
    assert abc.mailbox("john@abc.example") == []  # no bounce


def test_5xx_puts_a_bounce_in_the_senders_mailbox(tmp_path: Path, zone: Path) -> None:
    remote = ScriptedSMTP([b"250 ok"], {"brendon@pqr.example": b"550 5.1.1 no such user here"})
    try:
        resolver = ("--resolver", f"static:{zone}", "--remote-port", str(remote.port))
        with serve(
            tmp_path / "abc", "abc.example", ["john@abc.example:john-pw"], extra=resolver
        ) as abc:
            _submit(abc.ports["submission"])
            _until(lambda: bool(abc.mailbox("john@abc.example")), "the bounce", abc)
            (bounce,) = _pop3(abc.ports["pop3"], "john@abc.example", "john-pw")
    finally:
        remote.close()
    parsed = email.message_from_bytes(bounce, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed["Return-Path"] == "<>"
    assert b"Final-Recipient: rfc822; brendon@pqr.example\r\nAction: failed" in bounce
    assert b"Status: 5.1.1" in bounce
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user here" in bounce


def test_tls_everywhere(tmp_path: Path, zone: Path) -> None:
    """STARTTLS on submission, implicit TLS on smtps and pop3s, opportunistic TLS on relay."""
    tls = make_tls_files(tmp_path)
    tls_options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    listeners = ("smtp", "submission", "smtps", "pop3", "pop3s")
    with serve(
        tmp_path / "pqr",
        "pqr.example",
        ["brendon@pqr.example:pw"],
        listeners=listeners,
        extra=tls_options,
    ) as pqr:
        resolver = ("--resolver", f"static:{zone}", "--remote-port", str(pqr.ports["smtp"]))
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission", "smtps"),
            extra=tls_options + resolver,
        ) as abc:
            context = tls.client_context
            with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
                smtp.ehlo()
                # Before TLS only mechanisms that never show the password (RFC 4954 §4).
                assert "PLAIN" not in smtp.esmtp_features.get("auth", "")
                smtp.starttls(context=context)
                smtp.login("john@abc.example", "john-pw")
                smtp.sendmail("john@abc.example", ["brendon@pqr.example"], MESSAGE)
            with smtplib.SMTP_SSL(LOOPBACK, abc.ports["smtps"], timeout=10, context=context) as s:
                s.login("john@abc.example", "john-pw")
                s.sendmail("john@abc.example", ["brendon@pqr.example"], MESSAGE)
            _until(lambda: len(pqr.mailbox("brendon@pqr.example")) == 2, "two relays", pqr)
            # The remote stores a message before the relay logs its 250: wait for both lines.
            sent = "tls=yes, tls_policy=may, dsn=2.0.0, status=sent"
            _until(lambda: abc.log().count(sent) == 2, "two relay log lines", abc)
        client = poplib.POP3_SSL(LOOPBACK, pqr.ports["pop3s"], timeout=10, context=context)
        client.user("brendon@pqr.example")
        client.pass_("pw")
        assert client.stat()[0] == 2
        client.quit()
        plain = poplib.POP3(LOOPBACK, pqr.ports["pop3"], timeout=10)
        plain.stls(context=context)
        plain.user("brendon@pqr.example")
        plain.pass_("pw")
        plain.quit()
    assert "with ESMTPSA" in pqr.mailbox("brendon@pqr.example")[0].decode()
    assert ssl.OPENSSL_VERSION  # the handshake above used the system's OpenSSL


def test_bad_configuration_exits_2(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "smtpcore", "serve", "--data-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    import subprocess

    result = subprocess.run(
        [*argv, "--user", "x@elsewhere.example:pw"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert (
        "smtpcore serve: --user: x@elsewhere.example: elsewhere.example is not a local "
        "domain: a typo, or add --domain elsewhere.example"
    ) in result.stderr


def test_serve_handles_signals_before_it_says_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever waits for the "listening" lines (an init system, :func:`serve` here)
    may signal at once: SIGTERM must be handled by then, or it kills the process
    (a stop right after the lines, on a loaded machine, exited with -15)."""
    handled: list[bool] = []

    def announce(*args: object, **kwargs: object) -> None:
        handled.append(signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None))
        if not handled[-1]:
            raise RuntimeError(f"announced before SIGTERM was handled: {args}")
        signal.raise_signal(signal.SIGTERM)  # the server's handler: it stops

    monkeypatch.setattr(_cli_serve, "print", announce, raising=False)
    argv = _serve_argv(tmp_path / "abc", "abc.example", [], {"smtp": free_port()}, (), True)
    assert cli.main(argv[argv.index("serve") :]) == 0
    assert handled == [True]


def test_the_serve_helper_starts_again_when_a_port_it_picked_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper's own race: a port free when picked, taken before the server binds it."""
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        picks = iter([taken.getsockname()[1]])
        pick_free = free_port
        monkeypatch.setattr(
            sys.modules[__name__], "free_port", lambda: next(picks, None) or pick_free()
        )
        with serve(tmp_path / "abc", "abc.example", [], listeners=("smtp",)) as served:
            assert served.ports["smtp"] != taken.getsockname()[1]
            assert served.stop() == 0


def test_queue_and_reload_signals_from_the_lock_to_its_release_never_kill_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The data directory's lock names this process from inside start() until aclose()
    lets it go, and ``queue`` signals whoever it names: SIGUSR1 (or an operator's
    SIGHUP) unhandled then killed the server while it started or stopped. Sent during
    the start, both are carried out once it serves; during the stop, both are ignored,
    and the queue command waits in its file for the next start."""
    import asyncio

    from smtpcore.server.mailserver import MailServer
    from smtpcore.server.queuectl import QueueCommand, submit

    caplog.set_level(logging.INFO)
    unhandled: list[str] = []
    done: list[str] = []

    def signal_it(when: str, server: MailServer) -> None:
        """What ``queue flush`` does, and a SIGHUP; unless they would kill this process."""
        for signum in (signal.SIGUSR1, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                unhandled.append(f"{signum.name} while {when}")
        if not unhandled:
            # pid 0: no signal. An id, for a command that leaves its file: ALL on the
            # empty queue would leave none.
            submit(server.config.queue_dir, QueueCommand("flush", ("0123456789",)), 0)
            signal.raise_signal(signal.SIGUSR1)
            signal.raise_signal(signal.SIGHUP)

    run_queue_commands = MailServer.run_queue_commands
    reload = MailServer.reload
    aclose = MailServer.aclose

    async def queue_commands(self: MailServer) -> None:
        await run_queue_commands(self)
        if not done:  # start()'s own round, the lock taken: a flush comes in now
            signal_it("starting", self)
        done.append("queue")

    async def reloaded(self: MailServer, config: ServerConfig) -> None:
        await reload(self, config)
        done.append("reload")

    async def closing(self: MailServer, grace: float = 10.0) -> None:
        signal_it("stopping", self)
        await asyncio.sleep(0.05)  # the signals are handled meanwhile
        await aclose(self, grace)

    async def stop_once_both_ran() -> None:
        for _ in range(200):
            if unhandled or (done.count("reload") == 1 and done.count("queue") == 2):
                break
            await asyncio.sleep(0.01)
        signal.raise_signal(signal.SIGTERM)

    def announce(*args: object, **kwargs: object) -> None:
        asyncio.get_running_loop().create_task(stop_once_both_ran())

    monkeypatch.setattr(MailServer, "run_queue_commands", queue_commands)
    monkeypatch.setattr(MailServer, "reload", reloaded)
    monkeypatch.setattr(MailServer, "aclose", closing)
    monkeypatch.setattr(_cli_serve, "print", announce, raising=False)
    zone = tmp_path / "zone"
    zone.write_text("")
    extra = ("--resolver", f"static:{zone}")
    argv = _serve_argv(tmp_path / "abc", "abc.example", [], {"smtp": free_port()}, extra, True)
    assert cli.main(argv[argv.index("serve") :]) == 0
    assert unhandled == []
    assert done.count("reload") == 1 and done.count("queue") == 2  # start's, then SIGUSR1's
    assert "stopping: SIGUSR1 ignored" in caplog.text
    assert "stopping: SIGHUP ignored" in caplog.text
    commands = tmp_path / "abc" / "queue" / "commands"
    assert len(list(commands.glob("*.json"))) == 1  # the one sent while stopping


def test_a_queue_signal_after_a_stop_that_still_holds_the_lock_never_kills_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk work a stop cut off that runs past its wait (a slow disk) keeps the lock, with
    this process's id in it, after aclose() returns; ``serve`` then took its handlers
    away, and a ``queue`` command's SIGUSR1 killed the server in the middle of that
    work. The handlers stay until the lock goes: the signal is ignored, the command
    waits in its file for the next start."""
    import asyncio
    import threading

    from smtpcore.server.mailserver import MailServer
    from smtpcore.server.queuectl import QueueCommand, running_server, submit

    caplog.set_level(logging.INFO)
    data_dir = tmp_path / "abc"
    closed = threading.Event()
    unhandled: list[str] = []

    def outlives_the_stop() -> None:
        """Disk work that ends after aclose() has returned; then ``queue flush``."""
        closed.wait(10)
        time.sleep(0.2)  # serve goes on past aclose() meanwhile
        if running_server(data_dir) != os.getpid():
            unhandled.append("the lock let go before this work ended")
        elif signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            unhandled.append("SIGUSR1 unhandled while the lock names this process")
        else:
            submit(data_dir / "queue", QueueCommand("flush", ("0123456789",)), os.getpid())
            time.sleep(0.1)  # the signal is handled meanwhile

    aclose = MailServer.aclose
    working: list[asyncio.Task[None]] = []

    async def closing(self: MailServer, grace: float = 10.0) -> None:
        run = self.threads.run(outlives_the_stop)
        working.append(asyncio.get_running_loop().create_task(run))
        await asyncio.sleep(0)  # handed over
        await aclose(self, 0)  # the stop waits a second for it, then ends without it
        closed.set()

    def announce(*args: object, **kwargs: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(MailServer, "aclose", closing)
    monkeypatch.setattr(_cli_serve, "print", announce, raising=False)
    argv = _serve_argv(data_dir, "abc.example", [], {"smtp": free_port()}, (), True)
    assert cli.main(argv[argv.index("serve") :]) == 0
    assert unhandled == []
    assert "stopping: SIGUSR1 ignored" in caplog.text
    assert len(list((data_dir / "queue" / "commands").glob("*.json"))) == 1


def test_a_second_stop_signal_stops_at_once_until_the_lock_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The abort on a second SIGTERM or SIGINT ended with aclose(), before the
    ``stopped`` line and the wait for the lock's release (disk work a stop cut off,
    on a slow disk): a second signal then met the asyncio loop's own handler, which
    had been taken away, and was ignored. It now lasts until the lock is let go."""
    from smtpcore.server import stopsignal
    from smtpcore.server.mailserver import MailServer

    seen: dict[str, object] = {}

    def aborts() -> bool:
        return getattr(signal.getsignal(signal.SIGTERM), "func", None) is stopsignal._abort

    class AtStopped(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "stopped":
                seen["stopped"] = aborts()

    released = MailServer.lock_released

    async def lock_released(self: MailServer) -> None:
        seen["lock_released"] = aborts()
        await released(self)

    def announce(*args: object, **kwargs: object) -> None:
        signal.raise_signal(signal.SIGTERM)

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(MailServer, "lock_released", lock_released)
    monkeypatch.setattr(_cli_serve, "print", announce, raising=False)
    mail_log = logging.getLogger("smtpcore.mail")
    handler = AtStopped()
    mail_log.addHandler(handler)
    try:
        argv = _serve_argv(tmp_path / "abc", "abc.example", [], {"smtp": free_port()}, (), True)
        assert cli.main(argv[argv.index("serve") :]) == 0
    finally:
        mail_log.removeHandler(handler)
    assert seen == {"stopped": True, "lock_released": True}


def _started_on(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fqdn: str,
    options: tuple[str, ...],
) -> ServerConfig:
    """The configuration ``serve options`` starts with on a machine named ``fqdn``,
    its warnings in ``caplog``."""
    started: list[ServerConfig] = []

    async def fake_serve(config: ServerConfig, **kwargs: object) -> int:
        started.append(config)
        return 0

    monkeypatch.setattr("socket.getfqdn", lambda name="": fqdn)
    monkeypatch.setattr(_cli_serve, "_serve", fake_serve)
    caplog.set_level(logging.WARNING, "smtpcore.mail")
    assert cli.main(["serve", "--relay-host", "127.0.0.1:25", *options]) == 0
    (config,) = started
    return config


@pytest.mark.parametrize(
    ("fqdn", "options", "warned"),
    [
        ("localhost", (), True),
        ("localhost.localdomain", (), True),
        ("mailhost", (), True),
        ("127.0.1.1", (), True),
        ("mail.abc.example", (), False),
        ("localhost", ("--hostname", "mail.abc.example"), False),
        ("localhost", ("--hostname", "mailhost"), False),  # the operator's own choice
    ],
)
def test_serve_warns_when_the_default_hostname_is_not_fully_qualified(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fqdn: str,
    options: tuple[str, ...],
    warned: bool,
) -> None:
    """RFC 5321 §2.3.5, §4.1.1.1: the name given in EHLO (and in bounces) is a fully
    qualified domain name; socket.getfqdn() gives "localhost" on a host whose
    /etc/hosts lists that first, and the server used it without a word."""
    config = _started_on(monkeypatch, caplog, fqdn, options)
    assert config.hostname == (options[1] if options else fqdn)
    warnings = [r.getMessage() for r in caplog.records if "fully qualified" in r.getMessage()]
    if warned:
        assert warnings == [
            f"this machine's name {fqdn!r}, used for want of --hostname, is not a fully "
            "qualified domain name, which EHLO must give (RFC 5321 §4.1.1.1): other servers "
            "may refuse the mail; give --hostname NAME"
        ]
    else:
        assert warnings == []


@pytest.mark.parametrize(
    ("fqdn", "options", "named", "warned"),
    [
        ("build!box.example", (), "build!box.example", True),
        ("b\u00fcild.example", (), "xn--bild-0ra.example", False),
        (
            "localhost",
            ("--hostname", "\u00fcn\u00efcode.example"),
            "xn--ncode-cta3g.example",
            False,
        ),
        ("localhost", ("--hostname", "mx.stra\u00dfe.example"), "mx.xn--strae-oqa.example", False),
    ],
)
def test_serve_names_itself_in_a_label_form_and_warns_of_a_machine_name_that_is_none(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fqdn: str,
    options: tuple[str, ...],
    named: str,
    warned: bool,
) -> None:
    """RFC 5321 §4.1.2, §4.2; RFC 6531: a U-label name is used in its A-label form
    (greeting, EHLO, Received, bounces); the machine's own name, if it is no domain,
    is used with a warning, as one that is not fully qualified is."""
    config = _started_on(monkeypatch, caplog, fqdn, options)
    assert config.hostname == named
    warnings = [r.getMessage() for r in caplog.records if "is not a domain name" in r.getMessage()]
    if warned:
        (warning,) = warnings
        assert warning.startswith(
            f"this machine's name {fqdn!r}, used for want of --hostname, is not a domain name"
        )
        assert warning.endswith("give --hostname NAME")
    else:
        assert warnings == []


@pytest.mark.parametrize(
    "sent",
    [(signal.SIGHUP, signal.SIGUSR1), (signal.SIGTERM,), (signal.SIGINT,)],
    ids=["reload-and-queue", "sigterm", "sigint"],
)
def test_signals_sent_while_serve_imports_and_reads_its_configuration_are_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sent: tuple[signal.Signals, ...]
) -> None:
    """Before the event loop handles them, a SIGHUP (logrotate, ``systemctl reload``)
    or a ``queue`` command's SIGUSR1 killed the server, and SIGINT raised in the middle
    of an import. Sent before the loop runs, all are held: SIGHUP and SIGUSR1 are
    carried out once it listens, and a stop ends it cleanly right after it started."""
    import asyncio

    import smtpcore.__main__ as entry
    from smtpcore.server.mailserver import MailServer

    fatal: list[str] = []
    done: list[str] = []
    config_from_args = cli.config_from_args

    def configure_under_signals(args: argparse.Namespace) -> ServerConfig:
        """Reading the configuration, as slow as an operator is quick."""
        if not done:
            done.append("configured")
            for signum in sent:
                handler = signal.getsignal(signum)
                if handler in (signal.SIG_DFL, None, signal.default_int_handler):
                    fatal.append(signum.name)  # would kill this process or raise here
                else:
                    signal.raise_signal(signum)
        return config_from_args(args)

    run_queue_commands = MailServer.run_queue_commands
    reload = MailServer.reload

    async def queue_commands(self: MailServer) -> None:
        await run_queue_commands(self)
        done.append("queue")

    async def reloaded(self: MailServer, config: ServerConfig) -> None:
        await reload(self, config)
        done.append("reload")

    async def stop_once_both_ran() -> None:
        for _ in range(200):
            if done.count("reload") == 1 and done.count("queue") == 2:
                break
            await asyncio.sleep(0.01)
        signal.raise_signal(signal.SIGTERM)

    def announce(*args: object, **kwargs: object) -> None:
        done.append("listening")
        if signal.SIGHUP in sent or fatal:  # else a held stop comes now
            asyncio.get_running_loop().create_task(stop_once_both_ran())

    monkeypatch.setattr(_cli_serve, "config_from_args", configure_under_signals)
    monkeypatch.setattr(MailServer, "run_queue_commands", queue_commands)
    monkeypatch.setattr(MailServer, "reload", reloaded)
    monkeypatch.setattr(_cli_serve, "print", announce, raising=False)
    argv = _serve_argv(tmp_path / "abc", "abc.example", [], {"smtp": free_port()}, (), True)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGINT)}
    assert entry.main(argv[argv.index("serve") :]) == 0
    assert fatal == []
    assert done[:3] == ["configured", "queue", "listening"]  # start's own queue round
    if signal.SIGHUP in sent:
        assert done.count("reload") == 1 and done.count("queue") == 2
    else:
        assert done == ["configured", "queue", "listening"]  # stopped at once, cleanly
    assert {signum: signal.getsignal(signum) for signum in before} == before


@pytest.mark.parametrize(
    ("options", "files", "message"),
    [
        (("--users-file", "users"), {"users": b"a@abc.example:p\xe4ss\n"}, "users:1: not UTF-8"),
        (
            ("--users-file", "users"),
            {"users": b"\xef\xbb\xbfa@abc.example:pw\nb\xe2\x80\x8b@abc.example:pw\n"},
            "users:2: the address holds an invisible format character, U+200B",
        ),
        (
            ("--users-file", "users"),
            {"users": b"a@abc.example:SCRAM-SHA-1$4096:c2FsdA==$AAAA:AAAA\n"},
            "users:1: not SCRAM-SHA-256 keys",
        ),
        (
            ("--users-file", "users"),
            {"users": b"a@abc.example:pw\n# typo:\nc@abc.exmaple:pw\n"},
            "users:3: c@abc.exmaple: abc.exmaple is not a local domain: a typo, "
            "or add --domain abc.exmaple",
        ),
        (("--hostname", "bad host"), {}, "--hostname: not a domain name: 'bad host'"),
        (("--hostname", "[127.0.0.1]"), {}, "--hostname: not a domain name: '[127.0.0.1]'"),
        (("--hostname", "bad_host!"), {}, "--hostname: not a domain name: 'bad_host!'"),
        (("--relay-host", "bad host:25"), {}, "--relay-host: label 'bad host'"),
        (("--relay-ca", "ca.pem"), {"ca.pem": b"not PEM\n"}, "--relay-ca: cannot load"),
        (("--data-dir", "afile"), {"afile": b"x"}, "--data-dir: afile: Not a directory"),
        (("--data-dir", "afile/sub"), {"afile": b"x"}, "--data-dir: afile/sub: Not a directory"),
    ],
)
def test_a_configuration_mistake_is_one_line_and_status_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    options: tuple[str, ...],
    files: dict[str, bytes],
    message: str,
) -> None:
    """operator.rst: a mistake stops the server before it binds, with status 2 and the
    option or line at fault. These ended in a traceback (exit 1), or, for the data
    directory, in "cannot listen: File exists", which named neither option nor path."""
    monkeypatch.chdir(tmp_path)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "zone").write_text("")
    argv = ["serve", "--data-dir", "data", "--domain", "abc.example", "--resolver", "static:zone"]
    argv += ["--smtp-port", "0", "--submission-port", "0", "--pop3-port", "0", *options]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"smtpcore serve: {message}") and err.count("\n") == 1, err


def _open_files_soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files limit listed")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc/PID/limits")
def test_serve_raises_a_short_open_files_limit_toward_the_hard_one(tmp_path: Path) -> None:
    """Past ``ulimit -n`` the server stopped accepting without a word, and DATA got
    451; the default session limits need more than the usual soft limit of 1,024."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed = 100 + 3 * 50 * 2  # smtp, submission and lmtp at 50 sessions each
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open files limit here is {hard}")
    settings = ("--max-sessions", "50")
    listeners = ("smtp", "submission", "lmtp")
    with serve(
        tmp_path / "d",
        "abc.example",
        [],
        listeners=listeners,
        extra=settings,
        open_files=(200, hard),
    ) as served:
        assert _open_files_soft_limit(served.process.popen.pid) >= needed
        assert "open files limit (ulimit -n) raised from 200 to " in served.log()
        assert "lower than the" not in served.log()


def test_serve_warns_when_the_open_files_limit_stays_short(tmp_path: Path) -> None:
    """A hard limit below what ``--max-sessions`` needs: serve starts, and says what
    is short and what to do, rather than lower the operator's session limit."""
    with serve(tmp_path / "d", "abc.example", [], open_files=(200, 200)) as served:
        log = served.log()
    assert (
        "open files limit (ulimit -n) is 200, lower than the 18100 that --max-sessions 2000 "
        "on every listener needs under full load"
    ) in log
    assert "raise `ulimit -n` to 18100 (the hard limit is 200) or lower --max-sessions" in log
    assert " smtpcore.mail: warning: open files limit (ulimit -n) is 200, lower " in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_stop_signal_while_stopping_says_so_and_ends_the_server_at_once(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Postfix's ``postfix abort`` after its ``stop``: a second SIGTERM (or Control-C's
    SIGINT) during the stop's grace killed the server with no line in its log. Now it
    says so in one line, then ends at once, killed by that signal (a shell's 143 or
    130), cutting off the session still in its message."""
    users = ["john@abc.example:john-pw"]
    stop_timeout = ("--stop-timeout", "60")
    commands = (b"HELO c.example", b"MAIL FROM:<a@b.example>", b"RCPT TO:<john@abc.example>")
    with (
        serve(
            tmp_path / "abc", "abc.example", users, listeners=("smtp",), extra=stop_timeout
        ) as abc,
        socket.create_connection((LOOPBACK, abc.ports["smtp"]), timeout=10) as sock,
    ):
        replies = sock.makefile("rb")
        assert replies.readline().startswith(b"220 ")
        for command in (*commands, b"DATA"):
            sock.sendall(command + b"\r\n")
            assert replies.readline()[:1] in (b"2", b"3")
        sock.sendall(b"Subject: half a message\r\n")  # the stop waits for its end
        abc.process.popen.send_signal(signum)
        _until(lambda: "stopping: sessions and deliveries" in abc.log(), "the stop", abc)
        abc.process.popen.send_signal(signum)
        status = abc.process.popen.wait(10)
        assert replies.readline() == b""  # cut off: no 421
    assert status == -signum, abc.log()
    name = signal.Signals(signum).name
    line = f" smtpcore.mail: warning: second {name}: stopping at once: sessions and deliveries"
    assert line in abc.log()
    assert "stopped" not in abc.log().split(line)[1]


def test_a_second_stop_signal_ends_the_server_though_its_stderr_pipe_is_full(
    tmp_path: Path,
) -> None:
    """The second signal ran as an event-loop callback, which first wrote its line to
    the log: with the loop blocked on a stderr pipe nobody read (a stalled log
    collector), the signal was never acted on and the server ran on. Now it ends at
    once, its line dropped when the pipe takes none."""
    port = free_port()
    argv = _serve_argv(tmp_path / "abc", "abc.example", [], {"smtp": port}, (), True)
    argv += ["--max-sessions-per-address", "0", "--stop-timeout", "120"]
    read_end, write_end = os.pipe()
    pipe_size = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    popen = subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=write_end,
    )
    os.close(write_end)
    os.set_blocking(read_end, False)
    socks: list[socket.socket] = []
    try:
        assert popen.stdout is not None
        assert popen.stdout.readline() == f"smtp listening on {LOOPBACK}:{port}\n".encode()
        with contextlib.suppress(BlockingIOError):
            os.read(read_end, pipe_size)  # the start's lines; from now on nobody reads
        # Each session's end is a line: many more than the pipe holds.
        for _ in range(pipe_size // 40):
            sock = socket.create_connection((LOOPBACK, port), timeout=30)
            socks.append(sock)
            assert sock.recv(512).startswith(b"220 ")
        popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _unread(read_end) < pipe_size - 512:  # no room for a line: the loop waits
            assert time.monotonic() < deadline and popen.poll() is None
            time.sleep(0.05)
        popen.send_signal(signal.SIGTERM)
        assert popen.wait(60) == -signal.SIGTERM
    finally:
        for sock in socks:
            sock.close()
        if popen.poll() is None:
            popen.kill()
            popen.wait()
        assert popen.stdout is not None
        popen.stdout.close()
        os.close(read_end)


NESTED_STOP_SIGNAL = """
import asyncio, logging, os, signal
from smtpcore.server.logformat import SERVE_FORMAT, log_to_stderr
from smtpcore.server.stopsignal import abort_on_second_signal

log_to_stderr(logging.INFO, SERVE_FORMAT)
write = os.write

def write_after_a_sigint(fd, data):  # Control-C as the SIGTERM's line is written
    if fd == 2:
        os.write = write
        signal.raise_signal(signal.SIGINT)
    return write(fd, data)

async def main():
    with abort_on_second_signal(asyncio.get_running_loop(), logging.getLogger("smtpcore.mail")):
        os.write = write_after_a_sigint
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(30)

asyncio.run(main())
"""


def test_a_stop_signal_during_the_abort_kills_at_once_and_leaves_stderr_blocking() -> None:
    """The abort's handler set the stderr it shares with the shell non-blocking for its
    line and put back the mode it found: a SIGINT during that write ran the handler
    again, which found (and put back) the non-blocking mode, and the process died
    leaving the shell's terminal or pipe non-blocking. Now the handler never changes
    the mode, and a stop signal during it kills at once, by its default action."""
    read_end, write_end = os.pipe()
    try:
        child = subprocess.run(
            [sys.executable, "-c", NESTED_STOP_SIGNAL],
            env={**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[2])},  # this smtpcore
            stdin=subprocess.DEVNULL,
            stderr=write_end,
            timeout=60,
        )
        assert child.returncode == -signal.SIGINT
        assert os.get_blocking(write_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def _unread(pipe: int) -> int:
    """How many bytes wait in ``pipe``."""
    (count,) = struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, b"\0\0\0\0"))
    return int(count)


UTF8_MESSAGE = "From: jörg@abc.example\r\nTo: jörg@abc.example\r\nSubject: grüße\r\n\r\nhi\r\n"


def test_pop3_offers_utf8_and_downgrades_utf8_mail_to_a_session_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server takes SMTPUTF8 mail and UTF-8 user names: its POP3 listener offers
    UTF8 with USER (RFC 6856 §2, §2.2); it offered neither, so poplib's ``utf8()`` got
    ``-ERR``, our client's raised, and ``fetch --auth user`` refused to log in a user
    the users file took. A message with UTF-8 in its header (its fields, or the
    trace the server adds, ``for <jörg@...>``) goes as stored only to a session in
    UTF-8 mode; any other gets its RFC 6858 surrogate (RFC 6856 §2.1, §5), where it
    got ``-ERR [UTF8]``, and before that the message as stored; an ASCII message goes
    to both."""
    from smtpcore.sync import POP3Client

    users = ["jörg@abc.example:pw1", "ann@abc.example:pw2"]
    with serve(tmp_path / "abc", "abc.example", users) as abc:
        with smtplib.SMTP(LOOPBACK, abc.ports["smtp"], timeout=10) as smtp:
            smtp.sendmail("s@sender.example", ["ann@abc.example"], MESSAGE)
            smtp.sendmail(
                "s@sender.example", ["jörg@abc.example"], UTF8_MESSAGE.encode(), ["SMTPUTF8"]
            )
        _until(lambda: len(abc.mailbox("jörg@abc.example")) == 1, "the delivery", abc)
        _until(lambda: len(abc.mailbox("ann@abc.example")) == 1, "the delivery", abc)

        legacy = poplib.POP3(LOOPBACK, abc.ports["pop3"], timeout=10)
        try:
            assert legacy.capa()["UTF8"] == ["USER"]
            legacy.user("ann@abc.example")
            legacy.pass_("pw2")
            assert legacy.retr(1)[1][-1] == b"bye"  # ASCII mail goes as before
        finally:
            legacy.quit()
        legacy = poplib.POP3(LOOPBACK, abc.ports["pop3"], timeout=10)
        try:
            legacy.user("jörg@abc.example")
            legacy.pass_("pw1")
            surrogate = b"\r\n".join(legacy.retr(1)[1])
            assert surrogate.isascii()  # RFC 6858: the header downgraded, not refused
            assert b"Subject: =?utf-8?b?Z3LDvMOfZQ==?=" in surrogate
            assert b"To: =?utf-8?b?asO2cmdAYWJjLmV4YW1wbGU=?= :;" in surrogate
            assert b"\r\n".join(legacy.top(1, 0)[1]) + b"\r\nhi" == surrogate
            assert legacy.stat()[0] == 1  # not deleted: the session goes on
        finally:
            legacy.quit()

        upgraded = poplib.POP3(LOOPBACK, abc.ports["pop3"], timeout=10)
        try:
            assert upgraded.utf8().startswith(b"+OK")
            upgraded.user("jörg@abc.example")
            upgraded.pass_("pw1")
            assert "Subject: grüße".encode() in upgraded.retr(1)[1]
        finally:
            upgraded.quit()

        with POP3Client(
            LOOPBACK, abc.ports["pop3"], timeout=10, allow_plaintext_auth=True
        ) as ours:
            ours.utf8()
            ours.login("jörg@abc.example", "pw1")
            assert "To: jörg@abc.example".encode() in ours.retrieve(1)

        monkeypatch.setenv("SMTPCORE_PASSWORD", "pw1")
        server = f"{LOOPBACK}:{abc.ports['pop3']}"
        login = ["--user", "jörg@abc.example", "--no-stls", "--allow-plaintext-auth"]
        argv = ["fetch", "--server", server, *login, "--auth", "user"]
        assert cli.main([*argv, "--to-maildir", str(tmp_path / "fetched")]) == 0
        assert abc.stop() == 0
    printed = capsys.readouterr().out
    assert 'from jörg@abc.example: "grüße"' in printed
    assert "1 message, " in printed


def test_pop3_saslpreps_utf8_logins_end_to_end(tmp_path: Path) -> None:
    """The server lists ``UTF8 USER``, so it applies SASLprep as RFC 6856 §2.2 asks:
    an APOP digest is checked over the stored password SASLprep'd (``ko`` U+0308
    ``ln`` in the users file, ``köln`` hashed by poplib), which failed; PASS still
    takes the password composed. A stored password SASLprep refuses (private use, an
    ASCII TAB) logs in by USER/PASS typed exactly, as by APOP and AUTH PLAIN: PASS
    refused it as a wrong one."""
    users = [
        "ann@abc.example:ko\u0308ln",
        "eve@abc.example:pass\ue000word",
        "tab@abc.example:pass\tword",
    ]
    with serve(tmp_path / "abc", "abc.example", users) as abc:
        client = poplib.POP3(LOOPBACK, abc.ports["pop3"], timeout=10)
        try:
            assert client.capa()["UTF8"] == ["USER"]
            assert client.apop("ann@abc.example", "k\u00f6ln").startswith(b"+OK")
        finally:
            client.quit()
        logins = [
            ("ann@abc.example", "k\u00f6ln"),
            ("eve@abc.example", "pass\ue000word"),
            ("tab@abc.example", "pass\tword"),
        ]
        for name, password in logins:
            client = poplib.POP3(LOOPBACK, abc.ports["pop3"], timeout=10)
            try:
                client.user(name)
                assert client.pass_(password).startswith(b"+OK")
            finally:
                client.quit()
        client = poplib.POP3(LOOPBACK, abc.ports["pop3"], timeout=10)
        try:
            client.user("eve@abc.example")
            with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
                client.pass_("password")
        finally:
            client.quit()
        assert abc.stop() == 0
