"""The command line's log lines carry Postfix's level words (``warning:``, ``error:``,
``fatal:``) before the message, and nothing before an INFO or DEBUG one: an ERROR read
as an INFO line did, and the operator's page speaks of WARNING lines."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from smtpcore.server.logformat import SERVE_FORMAT, LevelWordFormatter, tool_format

ROOT = Path(__file__).resolve().parent.parent


def _line(fmt: str, level: int, message: str, *args: object) -> str:
    record = logging.LogRecord("smtpcore.mail", level, __file__, 0, message, args, None)
    record.created, record.msecs = 0.0, 0.0
    return LevelWordFormatter(fmt, datefmt="%Y").format(record)


@pytest.mark.parametrize(
    ("level", "word"),
    [
        (logging.DEBUG, ""),
        (logging.INFO, ""),
        (logging.WARNING, "warning: "),
        (logging.WARNING + 5, "warning: "),
        (logging.ERROR, "error: "),
        (logging.CRITICAL, "fatal: "),
    ],
)
def test_a_line_above_info_starts_with_its_level_word(level: int, word: str) -> None:
    line = _line(SERVE_FORMAT, level, "reload failed: %s", "why")
    assert line.endswith(f" smtpcore.mail: {word}reload failed: why")
    assert _line(tool_format("queue"), level, "x") == f"smtpcore queue: {word}x"


def test_the_word_is_this_handlers_alone_and_a_traceback_still_follows() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "smtpcore.mail", logging.ERROR, __file__, 0, "failed", None, sys.exc_info()
        )
    line = LevelWordFormatter(SERVE_FORMAT).format(record)
    first, *rest = line.splitlines()
    assert first.endswith(" smtpcore.mail: error: failed")
    assert rest[0].startswith("Traceback") and rest[-1] == "ValueError: boom"
    assert logging.Formatter("%(message)s").format(record).splitlines()[0] == "failed"


def test_a_one_shot_command_logs_with_its_name_and_level_word(tmp_path: Path) -> None:
    """What the library logs under ``queue`` went to Python's last-resort handler: the
    bare message, no command, no level."""
    setup = (
        "import logging, sys; from smtpcore.server import cli;"
        "cli._run_hash_password = lambda: "
        "logging.getLogger('smtpcore.mail').warning('half a queue file') or 0;"
        "sys.exit(cli.main(['hash-password']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", setup],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (
        0,
        "smtpcore hash-password: warning: half a queue file\n",
    )
