"""smtpcore.testing.fuzz: a bounded run finds planted defects, writing files that reproduce."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peers import missing_peer
from planted_defects import (
    hoarding_client,
    hoarding_pop3_server,
    hoarding_server,
    nul_crash_server,
    spinning_tls_server,
    stalling_server,
    stuck_tls_server,
)
from smtpcore import smtp
from smtpcore._textsafe import unsafe_in_text
from smtpcore.testing import fuzz
from smtpcore.testing.__main__ import main
from smtpcore.testing._harness import time_limit
from smtpcore.testing.fuzz import TARGETS, BufferOverrun, Hang, seed_corpus

TESTS = Path(__file__).parent
#: Enough inputs for the pure mutator to plant a NUL in a refused command line.
RUNS = 3000


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_target_ships_seeds_that_run_clean(target: str) -> None:
    seeds = seed_corpus(target)
    assert len(seeds) >= 3
    for data in seeds:
        assert TARGETS[target].run(data) is None


@pytest.mark.parametrize("target", list(TARGETS))
def test_a_short_run_over_each_machine_finds_nothing(target: str, tmp_path: Path) -> None:
    result = fuzz.fuzz(target, runs=300, crash_dir=tmp_path)
    assert result.runs == 300
    assert result.corpus_size > len(seed_corpus(target))  # new paths were kept
    assert result.crashes == [], [crash.describe() for crash in result.crashes]


def test_the_pure_fuzzer_finds_a_planted_crash_and_its_file_reproduces(tmp_path: Path) -> None:
    result = fuzz.fuzz("smtp-server", runs=RUNS, machine=nul_crash_server, crash_dir=tmp_path)
    planted = [c for c in result.crashes if isinstance(c.error, ZeroDivisionError)]
    assert len(planted) == 1, [crash.signature for crash in result.crashes]
    crash = planted[0]
    assert crash.path is not None and crash.path.read_bytes() == crash.data
    assert crash.path.parent == tmp_path and crash.path.name.startswith("crash-smtp-server-")
    again = fuzz.reproduce("smtp-server", crash.path, machine=nul_crash_server)
    assert again is not None and isinstance(again.error, ZeroDivisionError)
    assert again.signature == crash.signature
    # The defect is the subclass's: the real machine takes the same input calmly.
    plain = fuzz.reproduce("smtp-server", crash.path)
    assert plain is None or not isinstance(plain.error, ZeroDivisionError)


def test_the_pure_fuzzer_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    runs = [
        fuzz.fuzz(
            "smtp-server",
            runs=RUNS,
            seed=7,
            machine=nul_crash_server,
            crash_dir=tmp_path / str(n),
            stop_on_crash=True,
        )
        for n in range(2)
    ]
    assert runs[0].runs == runs[1].runs
    assert [c.data for c in runs[0].crashes] == [c.data for c in runs[1].crashes]


def test_a_buffer_past_its_bound_is_a_crash(tmp_path: Path) -> None:
    # In pieces of 16 octets: the machine may hold a command line (its limit after
    # EHLO) plus one piece, not the 18,000 octets that follow XSTALL.
    stall = b"\x10EHLO x\r\nXSTALL\r\n" + b"NOOP\r\n" * 3000
    assert isinstance(TARGETS["smtp-server"].run(stall, stalling_server), BufferOverrun)
    result = fuzz.fuzz(
        "smtp-server", runs=1, corpus=[stall], machine=stalling_server, crash_dir=tmp_path
    )
    [crash] = result.crashes
    assert isinstance(crash.error, BufferOverrun)
    assert "holds" in str(crash.error) and crash.path is not None
    again = fuzz.reproduce("smtp-server", crash.path, machine=stalling_server)
    assert again is not None and isinstance(again.error, BufferOverrun)
    # The real machine stays bounded.
    assert TARGETS["smtp-server"].run(stall) is None


def test_the_smtp_client_may_hold_a_whole_multi_line_reply_but_no_more() -> None:
    # In pieces of 255 octets. The reply lines read so far count as buffered (the
    # machine's public property), and its bound comes from its own limits: 100
    # lines of 4,096 octets are allowed.
    client = smtp.ClientConnection("fuzz.test")
    greeting = b"\xff220 " + b"x" * 249 + b"\r\n"  # the first piece: EHLO goes out after it
    line = b"250-" + b"x" * (client.max_reply_line - 6) + b"\r\n"
    allowed = greeting + line * client.max_reply_lines
    assert TARGETS["smtp-client"].run(allowed) is None
    # A client whose parser ignores the line limit holds a reply that never ends.
    endless = greeting + line * (client.max_reply_lines + 10)
    assert isinstance(TARGETS["smtp-client"].run(endless, hoarding_client), BufferOverrun)
    assert TARGETS["smtp-client"].run(endless) is None  # the real one refuses the 101st line


HOARDERS = [("smtp-server", hoarding_server), ("pop3-server", hoarding_pop3_server)]


@pytest.mark.parametrize(("target", "machine"), HOARDERS, ids=[name for name, _ in HOARDERS])
def test_a_server_that_keeps_a_line_past_its_limit_is_caught(
    target: str, machine: Callable[[], Any], tmp_path: Path
) -> None:
    # The bound is the limit on the line under way (a command line's, outside
    # AUTH), not the longest line of any state: a server that keeps a 3,000-octet
    # command line whole, well under the 12,288 of an AUTH line, holds too much.
    line = (
        b"\x40EHLO x\r\nNOOP " + b"A" * 3000
        if target == "smtp-server"
        else b"\x40NOOP " + b"A" * 3000
    )
    assert isinstance(TARGETS[target].run(line, machine), BufferOverrun)
    assert TARGETS[target].run(line) is None
    result = fuzz.fuzz(target, runs=RUNS, machine=machine, crash_dir=tmp_path, stop_on_crash=True)
    assert [type(crash.error) for crash in result.crashes] == [BufferOverrun]
    [crash] = result.crashes
    assert crash.path is not None and fuzz.reproduce(target, crash.path) is None


STARTTLS = b"\x00EHLO x\r\nSTARTTLS\r\nNOOP\r\n"


def test_a_machine_that_goes_round_without_reading_is_a_hang(tmp_path: Path) -> None:
    # After STARTTLS it stays PAUSED in TLS_PENDING, however often it is told the
    # handshake is done: the driver would go round for ever, raising nothing.
    error = TARGETS["smtp-server"].run(STARTTLS, stuck_tls_server)
    assert isinstance(error, Hang) and "events from 25 octets" in str(error)
    result = fuzz.fuzz("smtp-server", runs=20, machine=stuck_tls_server, crash_dir=tmp_path)
    [crash] = result.crashes  # the seeds that say STARTTLS, one signature
    assert isinstance(crash.error, Hang) and crash.path is not None
    again = fuzz.reproduce("smtp-server", crash.path, machine=stuck_tls_server)
    assert again is not None and again.signature == crash.signature
    assert TARGETS["smtp-server"].run(STARTTLS) is None


def test_a_call_that_never_returns_is_a_hang_and_the_run_keeps_its_seconds(
    tmp_path: Path,
) -> None:
    error = TARGETS["smtp-server"].run(STARTTLS, spinning_tls_server, timeout=0.2)
    assert isinstance(error, Hang) and str(error) == "still running after 0.2 s"
    started = time.monotonic()
    result = fuzz.fuzz(
        "smtp-server",
        runs=None,
        seconds=0.3,
        timeout=0.2,
        machine=spinning_tls_server,
        crash_dir=tmp_path,
    )
    assert time.monotonic() - started < 1.5
    assert result.crashes
    crash = result.crashes[0]
    # Where the machine was when the time ran out, not the alarm's own frame.
    assert crash.signature.startswith("Hang at planted_defects.py:")
    assert crash.path is not None and crash.path.read_bytes() == crash.data
    again = fuzz.reproduce("smtp-server", crash.path, machine=spinning_tls_server, timeout=0.2)
    assert again is not None and isinstance(again.error, Hang)


def test_the_cli_reports_a_hang_and_reproduces_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = "planted_defects:spinning_tls_server"
    args = ["fuzz", "smtp-server", "--engine", "pure", "--machine", machine, "--timeout", "0.2"]
    started = time.monotonic()
    assert main([*args, "--seconds", "0.3", "--crash-dir", str(tmp_path)]) == 1
    assert time.monotonic() - started < 1.5
    assert "crash: Hang at planted_defects.py:" in capsys.readouterr().out
    crash_file = sorted(tmp_path.glob("crash-smtp-server-*"))[0]
    assert main([*args, "--reproduce", str(crash_file)]) == 1
    assert "reproduced Hang at planted_defects.py:" in capsys.readouterr().out


def test_the_time_limit_puts_back_an_alarm_set_before_it() -> None:
    rang: list[int] = []

    def outer(signum: int, frame: object) -> None:
        rang.append(signum)

    previous = signal.signal(signal.SIGALRM, outer)
    signal.setitimer(signal.ITIMER_REAL, 30)
    try:
        with pytest.raises(Hang), time_limit(0.05):
            while True:
                pass
        assert signal.getsignal(signal.SIGALRM) is outer
        assert 25 < signal.getitimer(signal.ITIMER_REAL)[0] <= 30
        with time_limit(60):  # the outer alarm rings first: left alone
            assert signal.getsignal(signal.SIGALRM) is outer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert rang == []


class ExitingServer(smtp.ServerConnection):
    def next_event(self) -> object:  # type: ignore[override]  # a planted defect
        raise SystemExit("planted: a machine that ends the process")


class InterruptedServer(smtp.ServerConnection):
    def next_event(self) -> object:  # type: ignore[override]  # as if Ctrl-C came here
        raise KeyboardInterrupt


def test_system_exit_from_a_machine_is_a_crash_but_ctrl_c_stops_the_fuzzer(
    tmp_path: Path,
) -> None:
    error = TARGETS["smtp-server"].run(b"\x00NOOP\r\n", lambda: ExitingServer("fuzz.test"))
    assert isinstance(error, SystemExit)
    with pytest.raises(KeyboardInterrupt):
        fuzz.fuzz(
            "smtp-server",
            runs=5,
            machine=lambda: InterruptedServer("fuzz.test"),
            crash_dir=tmp_path,
        )


def test_the_cli_fuzzes_and_reproduces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    machine = "planted_defects:nul_crash_server"
    args = ["fuzz", "smtp-server", "--engine", "pure", "--runs", str(RUNS), "--machine", machine]
    assert main([*args, "--crash-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "crash: ZeroDivisionError at planted_defects.py" in out
    assert f"smtp-server: {RUNS} inputs" in out
    files = sorted(tmp_path.glob("crash-smtp-server-*"))
    planted = [
        path
        for path in files
        if (crash := fuzz.reproduce("smtp-server", path, machine=nul_crash_server))
        and isinstance(crash.error, ZeroDivisionError)
    ]
    assert len(planted) == 1
    status = main(["fuzz", "smtp-server", "--machine", machine, "--reproduce", str(planted[0])])
    assert status == 1
    assert "reproduced ZeroDivisionError" in capsys.readouterr().out
    clean = tmp_path / "clean"
    clean.write_bytes(seed_corpus("smtp-server")[0])
    assert main(["fuzz", "smtp-server", "--reproduce", str(clean)]) == 0
    assert "no crash" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--machine", "planted_defects"], "'planted_defects' is not MODULE:NAME"),
        (["--machine", "no_such_module_here:x"], "cannot import 'no_such_module_here'"),
        (["--machine", "planted_defects:nope"], "'planted_defects' has no callable 'nope'"),
        (["--machine", "planted_defects:__doc__"], "has no callable '__doc__'"),
        (["--reproduce", "no/such/crash-file"], "'no/such/crash-file' is not a file"),
        (["--runs", "0"], "'0' is not a positive whole number"),
        (["--seconds", "-5"], "'-5' is not a positive number of seconds"),
    ],
)
def test_cli_refuses_bad_fuzz_arguments_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fuzz", "smtp-server", "--engine", "pure", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_atheris_finds_the_planted_crash(tmp_path: Path) -> None:
    if not fuzz.atheris_available():
        missing_peer("atheris is not installed (pip install smtpcore[fuzz])")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS.parent / "src"), str(TESTS), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "smtpcore.testing",
            "fuzz",
            "smtp-server",
            "--engine",
            "atheris",
            "--runs",
            "200000",
            "--machine",
            "planted_defects:nul_crash_server",
            "--crash-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    crashes = sorted(tmp_path.glob("crash-*"))
    assert crashes, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode != 0
    again = fuzz.reproduce("smtp-server", crashes[0], machine=nul_crash_server)
    assert again is not None, crashes[0].read_bytes()


def test_atheris_reports_a_hang_within_its_seconds(tmp_path: Path) -> None:
    if not fuzz.atheris_available():
        missing_peer("atheris is not installed (pip install smtpcore[fuzz])")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS.parent / "src"), str(TESTS), env.get("PYTHONPATH", "")]
    )
    machine = "planted_defects:spinning_tls_server"
    args = ["fuzz", "smtp-server", "--engine", "atheris", "--seconds", "1", "--machine", machine]
    done = subprocess.run(
        [sys.executable, "-m", "smtpcore.testing", *args, "--crash-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    # --seconds 1 makes libFuzzer's -timeout 1: the first seed with STARTTLS hangs.
    assert done.returncode == 70, done.stderr[-2000:]
    [hang] = tmp_path.glob("timeout-*")
    again = fuzz.reproduce("smtp-server", hang, machine=spinning_tls_server, timeout=0.2)
    assert again is not None and isinstance(again.error, Hang)


def test_a_crash_shows_the_controls_of_its_input_escaped() -> None:
    """An exception's text may quote the input that crashed the machine, which may come
    from a hostile peer: printed, its controls are escapes, never raw."""
    try:
        raise ValueError("bad line '\x1b]0;PWNED\x07\x1b[2J\u202eevil\u2028'")
    except ValueError as exc:
        crash = fuzz.Crash("smtp-server", b"", exc, None)
    for printed in (crash.describe(), crash.message):
        for line in printed.split("\n"):
            assert not [char for char in line if unsafe_in_text(char)], line
    assert "\\x1b]0;PWNED\\x07\\x1b[2J\\u202eevil\\u2028" in crash.message
