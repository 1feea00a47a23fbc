"""The commands' ends that are no command's own: a standard output that cannot be
written (a reader gone, a full disk) and Ctrl-C, each one line or none on stderr and
a status, never a traceback."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from peers import free_port
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, Step, script
from test_cli_serve import ROOT
from test_cli_tools import _listeners_on_one_port

SEND = ("send", "--no-starttls", "--helo", "client.test", "--from", "a@abc.example")


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("SMTPCORE_PASSWORD", None)
    env.pop("PYTHONUNBUFFERED", None)  # standard output buffered as a shell's pipe has it
    return env


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's child has it


def _run_to(
    stdout: int, argv: Sequence[str], password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m smtpcore ARGV`` with ``stdout`` as its standard output."""
    env = _env() if password is None else {**_env(), "SMTPCORE_PASSWORD": password}
    return subprocess.run(
        [sys.executable, "-m", "smtpcore", *argv],
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        timeout=60,
    )


def _run_into_a_pipe_nobody_reads(
    argv: Sequence[str], password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The command with its standard output a pipe whose reader has gone (``| head``
    done): its first write is a broken pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return _run_to(write_end, argv, password)
    finally:
        os.close(write_end)


def _accepting_server(recipients: int) -> ScriptedServer:
    steps = [
        *script("S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test"),
        *script("C: MAIL FROM:<a@abc.example>\nS: 250 ok"),
        *[step for _ in range(recipients) for step in script("C~ RCPT TO:.+\nS: 250 ok")],
        *script("C: DATA\nS: 354 go"),
        Call(_read_to_dot_and_accept),
    ]
    return ScriptedServer(steps)


def _read_to_dot_and_accept(conn: ScriptedConnection) -> None:
    conn.content()
    _accept_and_answer_quit(conn)


def _accept_and_answer_quit(conn: ScriptedConnection) -> None:
    """The reply to the dot read by the caller, and to QUIT."""
    conn.send(b"250 2.0.0 queued\r\n")
    if conn.line() == b"QUIT":
        conn.send(b"221 2.0.0 bye\r\n")


def test_send_into_a_broken_pipe_tells_each_fate_on_stderr() -> None:
    """The mail went before the reader was found gone: a traceback there lost every
    recipient's line. Each goes to stderr, with one line saying why, and the status is
    the broken pipe's, not the 0 or 1 of the fates."""
    with _accepting_server(2) as server:
        where = f"127.0.0.1:{server.port}"
        to = ("--to", "b@pqr.example", "--to", "c@pqr.example")
        result = _run_into_a_pipe_nobody_reads([*SEND, *to, "--server", where])
    assert result.returncode == 141
    assert result.stderr.splitlines() == [
        f"<b@pqr.example>: accepted by {where}: 250 2.0.0 queued",
        f"<c@pqr.example>: accepted by {where}: 250 2.0.0 queued",
        "smtpcore send: cannot write to standard output: Broken pipe",
    ]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_send_to_a_full_device_tells_each_fate_on_stderr() -> None:
    with _accepting_server(1) as server, open("/dev/full", "wb") as full:
        where = f"127.0.0.1:{server.port}"
        result = _run_to(full.fileno(), [*SEND, "--to", "b@pqr.example", "--server", where])
    assert result.returncode == 74
    assert result.stderr.splitlines() == [
        f"<b@pqr.example>: accepted by {where}: 250 2.0.0 queued",
        "smtpcore send: cannot write to standard output: No space left on device",
    ]


def test_queue_list_into_a_broken_pipe_ends_quietly(tmp_path: Path) -> None:
    """``queue list | head`` ends as ``mailq | head`` does, by the broken pipe's status
    and no word: it blamed ``--data-dir`` for it, with status 2."""
    (tmp_path / "queue" / "envelopes").mkdir(parents=True)
    result = _run_into_a_pipe_nobody_reads(["queue", "--data-dir", str(tmp_path), "list"])
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_queue_list_to_a_full_device_names_standard_output(tmp_path: Path) -> None:
    (tmp_path / "queue" / "envelopes").mkdir(parents=True)
    with open("/dev/full", "wb") as full:
        result = _run_to(full.fileno(), ["queue", "--data-dir", str(tmp_path), "list"])
    assert result.returncode == 74
    assert (
        result.stderr
        == "smtpcore queue: cannot write to standard output: No space left on device\n"
    )


@contextlib.contextmanager
def _pop3_server(messages: int) -> Iterator[tuple[str, list[str]]]:
    """A POP3 server on loopback with ``messages`` small messages; the commands it
    got, by verb."""
    commands: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    message = b"From: a@abc.example\r\nSubject: hi\r\n\r\nbody\r\n"

    def serve_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"+OK ready\r\n")
                for line in lines:
                    verb = (line.split() or [b""])[0].upper()
                    commands.append(verb.decode())
                    if verb == b"CAPA":
                        conn.sendall(b"+OK\r\nUSER\r\nUIDL\r\n.\r\n")
                    elif verb in (b"LIST", b"UIDL"):
                        each = (
                            b"%d %d" % (n, len(message)) if verb == b"LIST" else b"%d u%d" % (n, n)
                            for n in range(1, messages + 1)
                        )
                        conn.sendall(b"+OK\r\n" + b"".join(e + b"\r\n" for e in each) + b".\r\n")
                    elif verb == b"RETR":
                        conn.sendall(b"+OK\r\n" + message + b".\r\n")
                    else:
                        conn.sendall(b"+OK\r\n")
                    if verb == b"QUIT":
                        return

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", commands
    finally:
        listener.close()
        thread.join(10)


def test_fetch_into_a_broken_pipe_ends_quietly_and_deletes_nothing(tmp_path: Path) -> None:
    """``fetch | head`` said ``smtpcore fetch: [Errno 32] Broken pipe``. It ends quietly
    now, as ``queue list`` does; the run stops as on any error, without QUIT, so that no
    DELE takes effect, and the message whose line was lost is in the Maildir."""
    login = ("--user", "u", "--no-stls", "--auth", "user", "--allow-plaintext-auth")
    with _pop3_server(2) as (server, commands):
        argv = ["fetch", "--server", server, *login, "--to-maildir", str(tmp_path / "md")]
        result = _run_into_a_pipe_nobody_reads([*argv, "--delete"], password="p")
    assert result.returncode == 141
    assert result.stderr.splitlines() == [  # the only line: the one --allow-plaintext-auth says
        "smtpcore fetch: warning: the password crosses the network in the clear (USER/PASS); "
        "use --stls or --tls"
    ]
    assert "QUIT" not in commands and commands.count("RETR") == 1
    assert len(list((tmp_path / "md" / "new").iterdir())) == 1


_BLOCK_IN_IMPORT = """
import importlib.abc, runpy, sys, time

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "smtpcore.server.cli":
            sys.stderr.write("importing\\n")
            sys.stderr.flush()
            time.sleep(60)  # until the test's SIGINT
        return None

sys.meta_path.insert(0, Block())
sys.argv[0] = "smtpcore"
runpy.run_module("smtpcore", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("command", ["send", "fetch"])
def test_ctrl_c_while_the_command_loads_exits_130_without_a_traceback(command: str) -> None:
    """The commands' modules take most of a second to import, and a Ctrl-C then gave
    a traceback: the ``KeyboardInterrupt`` handler came with those modules. The import
    is held in a hook until the signal has come, so the test does not race it."""
    argv = [command, "--server", "127.0.0.1:9", "--user", "u", "--to", "b@pqr.example"]
    if command == "fetch":
        argv = argv[:4]
    with subprocess.Popen(
        [sys.executable, "-c", _BLOCK_IN_IMPORT, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**_env(), "SMTPCORE_PASSWORD": "x"},
        text=True,
        preexec_fn=_default_sigint,
    ) as child:
        assert child.stderr is not None
        assert child.stderr.readline() == "importing\n"
        child.send_signal(signal.SIGINT)
        rest = child.stderr.read()
        assert child.wait(timeout=60) == 130
    assert rest == ""


def test_ctrl_c_awaiting_the_reply_to_the_message_says_who_may_have_it() -> None:
    """A Ctrl-C after the end of the message went, before its reply, printed nothing:
    the server may have taken it (RFC 5321 §6.1). Each recipient accepted gets the
    line a connection lost there gives, then status 130; and c, refused at its
    ``RCPT``, its refusal, known by then, which a Ctrl-C left out. The signal is sent
    once the server has read the final dot, so the test does not race the client."""

    def interrupt_after_the_dot(conn: ScriptedConnection) -> None:
        conn.content()
        _interrupt(conn)  # the client closes, with no QUIT owed

    steps = [
        *script("S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test"),
        *script("C: MAIL FROM:<a@abc.example>\nS: 250 ok"),
        *script("C: RCPT TO:<b@pqr.example>\nS: 250 ok\nC: RCPT TO:<c@pqr.example>"),
        *script("S: 550 5.1.1 no such user\nC: DATA\nS: 354 go"),
        Call(interrupt_after_the_dot),
    ]
    to = ["--to", "b@pqr.example", "--to", "c@pqr.example"]
    status, out, err = _send_interrupted(to, steps)
    assert status == 130
    assert out.splitlines() == [
        "<b@pqr.example>: may have been delivered by SERVER: "
        "no readable reply to the end of the message (interrupted)",
        "<c@pqr.example>: refused by SERVER: 550 5.1.1 no such user",
    ]
    assert "Traceback" not in err


def _send_interrupted(argv: Sequence[str], steps: Sequence[Step]) -> tuple[int, str, str]:
    """``send ARGV`` against a server playing ``steps``, whose :func:`_interrupt`
    sends the Ctrl-C; the status, stdout and stderr."""
    with ScriptedServer(list(steps), timeout=30) as server:
        where = f"127.0.0.1:{server.port}"
        status, out, err = _run_child([*SEND, *argv, "--server", where])
    return status, out.replace(where, "SERVER"), err


child: list[subprocess.Popen[str]] = []
"""The ``send`` a scripted server's :func:`_interrupt` stops."""


def _run_child(argv: Sequence[str]) -> tuple[int, str, str]:
    """``python -m smtpcore ARGV`` as :data:`child`, Ctrl-C left to its default until
    it installs its own; the status, stdout and stderr."""
    child.clear()
    with subprocess.Popen(
        [sys.executable, "-m", "smtpcore", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
        text=True,
        preexec_fn=_default_sigint,
    ) as process:
        child.append(process)
        out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def _send_by_mx_interrupted(
    argv: Sequence[str], serve: Callable[[], None], listeners: Sequence[socket.socket]
) -> tuple[int, str, str]:
    """``python -m smtpcore ARGV`` while ``serve`` answers on ``listeners`` in a thread
    and sends the Ctrl-C to :data:`child`; the status, stdout and stderr. The
    listeners are closed and the thread joined, however the run ends."""
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        return _run_child(argv)
    finally:
        for listener in listeners:
            listener.close()
        thread.join(10)


def _interrupt(conn: ScriptedConnection) -> None:
    child[0].send_signal(signal.SIGINT)
    while conn.line() is not None:  # until the client closes
        pass


def test_ctrl_c_awaiting_the_reply_to_quit_prints_the_fates_known() -> None:
    """The message was taken, and a Ctrl-C while ``send`` waited for the reply to QUIT
    printed nothing: the fates were worked out only after QUIT. They are known, and
    printed, before it."""

    def accept_then_interrupt_at_quit(conn: ScriptedConnection) -> None:
        conn.content()
        conn.send(b"250 2.0.0 queued\r\n")
        assert conn.line() == b"QUIT"
        _interrupt(conn)

    steps = [
        *script("S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test"),
        *script("C: MAIL FROM:<a@abc.example>\nS: 250 ok"),
        *script("C: RCPT TO:<b@pqr.example>\nS: 250 ok\nC: DATA\nS: 354 go"),
        Call(accept_then_interrupt_at_quit),
    ]
    status, out, err = _send_interrupted(["--to", "b@pqr.example"], steps)
    assert status == 130
    assert out.splitlines() == ["<b@pqr.example>: accepted by SERVER: 250 2.0.0 queued"]
    assert "Traceback" not in err


def test_ctrl_c_awaiting_the_354_prints_the_recipients_refused() -> None:
    """A Ctrl-C while ``send`` waited for the reply to DATA printed nothing, though c's
    ``RCPT`` had been refused: that fate is known, and printed; b's, accepted with no
    message sent yet, is not."""
    steps = [
        *script("S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test"),
        *script("C: MAIL FROM:<a@abc.example>\nS: 250 ok"),
        *script("C: RCPT TO:<b@pqr.example>\nS: 250 ok\nC: RCPT TO:<c@pqr.example>"),
        *script("S: 550 5.1.1 no such user\nC: DATA"),
        Call(_interrupt),
    ]
    to = ["--to", "b@pqr.example", "--to", "c@pqr.example"]
    status, out, err = _send_interrupted(to, steps)
    assert status == 130
    assert out.splitlines() == ["<c@pqr.example>: refused by SERVER: 550 5.1.1 no such user"]
    assert "Traceback" not in err


def test_ctrl_c_prints_a_batch_a_split_message_delivered_before() -> None:
    """A server's LIMITS RCPTMAX=1 splits the message (RFC 9422 §4.2). b's transaction
    was delivered, and a Ctrl-C awaiting the reply to c's dot printed c's line alone:
    b's fate was known only to the client's result, never returned. Each batch's fates
    are recorded as it ends now, and b's line is printed."""

    def accept_b_then_interrupt(conn: ScriptedConnection) -> None:
        conn.content()
        conn.send(b"250 2.0.0 b queued\r\n")
        for expected in (b"MAIL FROM:<a@abc.example>", b"RCPT TO:<c@pqr.example>", b"DATA"):
            assert conn.line() == expected
        conn.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        conn.content()
        _interrupt(conn)

    steps = [
        *script(
            "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
            "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTMAX=1"
        ),
        *script("C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA"),
        *script("S: 250 ok\nS: 250 ok\nS: 354 go"),
        Call(accept_b_then_interrupt),
    ]
    to = ["--to", "b@pqr.example", "--to", "c@pqr.example"]
    status, out, err = _send_interrupted(to, steps)
    assert status == 130
    assert out.splitlines() == [
        "<b@pqr.example>: accepted by SERVER: 250 2.0.0 b queued",
        "<c@pqr.example>: may have been delivered by SERVER: "
        "no readable reply to the end of the message (interrupted)",
    ]
    assert "Traceback" not in err


def test_ctrl_c_by_mx_prints_the_domains_done_before(tmp_path: Path) -> None:
    """By MX lookup a Ctrl-C printed only the transaction it cut short: the recipient
    an earlier domain's exchanger accepted got no line, and its mail was delivered."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def exchanger(interrupt: bool) -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 mx.test ESMTP\r\n")
            for reply in (b"250 mx.test", b"250 ok", b"250 ok", b"354 go"):
                lines.readline()
                conn.sendall(reply + b"\r\n")
            while lines.readline() not in (b".\r\n", b""):
                pass
            if interrupt:
                child[0].send_signal(signal.SIGINT)
            else:
                conn.sendall(b"250 2.0.0 queued\r\n")
                lines.readline()
                conn.sendall(b"221 bye\r\n")
            lines.read()  # until the client closes

    def serve_both() -> None:
        with contextlib.suppress(OSError):
            exchanger(interrupt=False)
            exchanger(interrupt=True)

    zone = tmp_path / "static.zone"
    zone.write_text("abc.example MX 10 mx.test\nxyz.example MX 10 mx.test\nmx.test A 127.0.0.1\n")
    argv = [*SEND, "--resolver", f"static:{zone}", "--remote-port", str(port)]
    argv += ["--to", "b@abc.example", "--to", "c@xyz.example"]
    status, out, err = _send_by_mx_interrupted(argv, serve_both, [listener])
    where = f"mx.test[127.0.0.1]:{port}"
    assert status == 130
    assert out.splitlines() == [
        f"<b@abc.example>: accepted by {where}: 250 2.0.0 queued",
        f"<c@xyz.example>: may have been delivered by {where}: "
        "no readable reply to the end of the message (interrupted)",
    ]
    assert "Traceback" not in err


def test_ctrl_c_by_mx_says_the_next_exchanger_was_being_tried(tmp_path: Path) -> None:
    """A recipient the first exchanger refused for now, stopped while the next one was
    being tried: the line gave the first refusal as if it were the recipient's fate,
    though the next exchanger might have taken the message. It now says which
    exchanger was being tried."""
    first, second = _listeners_on_one_port("127.0.0.2", "127.0.0.1")
    port = first.getsockname()[1]

    def busy() -> None:
        conn, _ = first.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 mx1.test ESMTP\r\n")
            for reply in (b"250 mx1.test", b"250 ok", b"450 4.2.1 mailbox busy", b"221 bye"):
                lines.readline()
                conn.sendall(reply + b"\r\n")
            lines.read()

    def interrupting() -> None:
        conn, _ = second.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 mx2.test ESMTP\r\n")
            lines.readline()  # EHLO, left unanswered
            child[0].send_signal(signal.SIGINT)
            lines.read()  # until the client closes

    def serve_both() -> None:
        with contextlib.suppress(OSError):
            busy()
            interrupting()

    zone = tmp_path / "static.zone"
    zone.write_text(
        "abc.example MX 10 mx1.test\nabc.example MX 20 mx2.test\n"
        "mx1.test A 127.0.0.2\nmx2.test A 127.0.0.1\n"
    )
    argv = [*SEND, "--resolver", f"static:{zone}", "--remote-port", str(port)]
    argv += ["--to", "b@abc.example"]
    status, out, err = _send_by_mx_interrupted(argv, serve_both, [first, second])
    assert status == 130
    assert out.splitlines() == [
        f"<b@abc.example>: refused by mx1.test[127.0.0.2]:{port}: 450 4.2.1 mailbox busy; "
        f"interrupted while mx2.test[127.0.0.1]:{port} was being tried"
    ]
    assert "Traceback" not in err


class _Gone(io.TextIOBase):
    """A stream whose reader went away: every write is a broken pipe."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_send_with_stdout_and_stderr_both_gone_ends_by_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``send 2>&1 | grep -q accepted``: grep gone, the lines put on stderr failed too,
    and that ``BrokenPipeError`` escaped ``main`` (status 1, "refused", to the shell).
    The status says it alone now: 141."""
    from smtpcore.server.cli import main

    with _accepting_server(2) as server:
        to = ["--to", "b@pqr.example", "--to", "c@pqr.example"]
        monkeypatch.setattr(sys, "stdout", _Gone())
        monkeypatch.setattr(sys, "stderr", _Gone())
        status = main([*SEND, *to, "--server", f"127.0.0.1:{server.port}"])
    assert status == 141


def test_serve_whose_standard_output_is_lost_says_why_in_its_log(tmp_path: Path) -> None:
    """A reader gone from ``serve``'s standard output stopped the server with status 141
    and nothing in the log saying why: the shell gets the status, the operator a line."""
    ports = ["--smtp-port", "0", "--submission-port", "0", "--pop3-port", "0"]
    argv = ["serve", "--data-dir", str(tmp_path), "--hostname", "mx.abc.example", *ports]
    argv += ["--lmtp-port", str(free_port())]
    result = _run_into_a_pipe_nobody_reads(argv)
    assert result.returncode == 141
    lost = [line for line in result.stderr.splitlines() if "standard output" in line]
    assert len(lost) == 1
    assert lost[0].endswith("cannot write to standard output: Broken pipe: the server stops")


def test_send_with_stderr_gone_still_ends_a_usage_error_with_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``send`` with no ``--to``, stdout and stderr one pipe whose reader went: the
    line for the usage error failed, and its ``BrokenPipeError`` escaped ``main``
    (status 1). A lost standard error is forgiven now: the status is still 2."""
    from smtpcore.server.cli import main

    monkeypatch.setattr(sys, "stdout", _Gone())
    monkeypatch.setattr(sys, "stderr", _Gone())
    assert main([*SEND, "--server", "127.0.0.1:9"]) == 2


def test_send_with_stderr_gone_sends_after_the_helo_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without ``--helo``, ``send`` warns on stderr of the default name before it
    connects; with stderr gone, that write raised and the message never went (status
    1). It goes now, and the lost standard output ends ``send`` with 141."""
    from smtpcore.server.cli import main

    delivered: list[bytes] = []

    def accept(conn: ScriptedConnection) -> None:
        delivered.append(conn.content())
        _accept_and_answer_quit(conn)

    steps = [
        *script("S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test"),
        *script("C: MAIL FROM:<a@abc.example>\nS: 250 ok"),
        *script("C: RCPT TO:<b@pqr.example>\nS: 250 ok\nC: DATA\nS: 354 go"),
        Call(accept),
    ]
    argv = ["send", "--no-starttls", "--from", "a@abc.example", "--to", "b@pqr.example"]
    with ScriptedServer(steps) as server:
        monkeypatch.setattr(sys, "stdout", _Gone())
        monkeypatch.setattr(sys, "stderr", _Gone())
        status = main([*argv, "--server", f"127.0.0.1:{server.port}"])
    assert status == 141
    assert len(delivered) == 1


def test_usage_error_into_a_pipe_nobody_reads_exits_2() -> None:
    """The whole process, stdout and stderr one pipe whose reader went (``2>&1 | grep
    -q``): a usage error exits with 2, as with a reader, not 1."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "smtpcore", *SEND, "--server", "127.0.0.1:9"],
            stdout=write_end,
            stderr=write_end,
            env=_env(),
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 2
