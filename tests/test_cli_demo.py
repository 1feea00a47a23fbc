"""``python -m smtpcore demo``: the seed's story is itself a test."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import smtpcore.__main__ as cli
from smtpcore.server.demo import MESSAGE, strip_trace_headers

ROOT = Path(__file__).resolve().parent.parent


def test_the_story_runs_and_tells_itself(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A temporary directory of its own: another run's demo in the shared one is not ours.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    steps = [
        "1. john submits his message to mx.abc.example",
        "2. mx.abc.example routes the recipient.",
        "3. mx.abc.example relays the message over SMTP to mx.pqr.example.",
        "4. mx.pqr.example sees that the recipient is its own",
        "5. brendon fetches his mail over POP3",
        "6. Is it the message john sent?",
    ]
    positions = [out.index(step) for step in steps]
    assert positions == sorted(positions)
    for line in [
        "john > AUTH SCRAM-SHA-256 ",
        "mx.abc.example < 235 2.7.0",
        "john > ..this line starts with a dot",
        "local part 'brendon', domain 'pqr.example'",
        "resolver: pqr.example MX? -> 10 mx.pqr.example",
        "resolver: mx.pqr.example A/AAAA? -> 127.0.0.1",
        "mx.abc.example > RCPT TO:<brendon@pqr.example>",
        "mx.pqr.example < 250 2.0.0 Ok: queued as ",
        "relay=mx.pqr.example[127.0.0.1]:",
        "relay=local",
        "brendon > RETR 1",
        "mx.pqr.example < Return-Path: <john@abc.example>",
        "Yes, byte for byte, once the 3 trace header fields",
    ]:
        assert line in out
    # Every relay line comes after john's session and before the POP3 one.
    assert out.index("john > QUIT") < out.index("mx.abc.example > EHLO") < out.index("5. brendon")
    # The relay's session ends with step 3: no connection is kept for a next message.
    assert out.index("mx.abc.example > QUIT") < out.index(steps[3])
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_the_story_runs_on_a_small_disk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary directory on a filesystem with 1 MiB free, under the default floor
    (1.5 times the size limit): the demo keeps no floor, and its mail goes through."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    block, free = 4096, 1 << 20
    small = (block, block, 1 << 20, free // block, free // block, 1000, 900, 900, 0, 255)
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(small))
    assert cli.main(["demo"]) == 0
    assert "Yes, byte for byte" in capsys.readouterr().out


def test_keep_and_a_fresh_process(tmp_path: Path) -> None:
    keep = tmp_path / "kept"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        # -S: no site-packages, so the demo runs on the standard library alone, as on a
        # fresh machine after `pip install -e .`.
        [sys.executable, "-S", "-m", "smtpcore", "demo", "--keep", str(keep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""  # the mail log's INFO lines are the demo's report alone
    assert f"data is kept in {keep}" in result.stdout
    assert sorted(p.name for p in keep.iterdir()) == ["abc.example", "pqr.example"]
    brendon = keep / "pqr.example" / "mailboxes" / "brendon@pqr.example"
    assert list((brendon / "new").iterdir()) == list((brendon / "cur").iterdir()) == []
    assert list((keep / "abc.example" / "queue" / "envelopes").iterdir()) == []
    again = subprocess.run(
        [sys.executable, "-m", "smtpcore", "demo", "--keep", str(keep)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_keep_that_is_no_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a NotADirectoryError traceback."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli.main(["demo", "--keep", str(afile)]) == 2
    assert capsys.readouterr().err == f"smtpcore demo: --keep: {afile} is not a directory\n"
    assert cli.main(["demo", "--keep", str(afile / "sub")]) == 2
    err = capsys.readouterr().err
    assert err == f"smtpcore demo: --keep: {afile / 'sub'}: Not a directory\n"


@pytest.mark.parametrize(
    ("message", "rest", "count"),
    [
        (
            b"Return-Path: <a@b>\r\nReceived: x\r\n\ty\r\nSubject: s\r\n\r\n",
            b"Subject: s\r\n\r\n",
            2,
        ),
        (b"Subject: s\r\nReceived: late\r\n\r\n", b"Subject: s\r\nReceived: late\r\n\r\n", 0),
        (b"RECEIVED: x\r\n", b"", 1),
        (b"Received: unterminated", b"", 1),
    ],
)
def test_strip_trace_headers(message: bytes, rest: bytes, count: int) -> None:
    assert strip_trace_headers(message) == (rest, count)


def test_the_demo_message_needs_stuffing_and_8bit() -> None:
    assert b"\r\n." in MESSAGE and not MESSAGE.isascii()
