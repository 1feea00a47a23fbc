"""Every Python code block of the fuzzer tutorial runs, in order, in one namespace,
as a new user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorials" / "fuzzer.rst"


def code_blocks(text: str) -> list[str]:
    """The bodies of the ``.. code-block:: python`` directives, dedented."""
    blocks: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() == ".. code-block:: python":
            index += 1
            body: list[str] = []
            while index < len(lines) and (not lines[index].strip() or lines[index][:1] == " "):
                body.append(lines[index])
                index += 1
            blocks.append(textwrap.dedent("\n".join(body)))
        else:
            index += 1
    return blocks


def test_the_tutorial_has_code() -> None:
    assert len(code_blocks(TUTORIAL.read_text())) >= 5


# Hypothesis's own defaults, as on a user's machine outside CI (which has its
# own profile, one that suppresses the too_slow health check).
_RUN_BLOCKS = """
import json, sys
from hypothesis import settings
settings.load_profile("default")
namespace = {"__name__": "fuzzer_tutorial"}
for number, block in enumerate(json.load(sys.stdin), 1):
    exec(compile(block, f"fuzzer.rst block {number}", "exec"), namespace)
"""


def test_every_code_block_runs_as_a_new_user_runs_it(tmp_path: Path) -> None:
    """In order, in one namespace, in a fresh directory with no ``.hypothesis/``
    cache yet and Hypothesis's default settings: not the suite's profiles, which
    relax the health checks a user's first run meets."""
    blocks = code_blocks(TUTORIAL.read_text())
    env = {**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / ".hypothesis")}
    run = subprocess.run(
        [sys.executable, "-c", _RUN_BLOCKS],
        input=json.dumps(blocks),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr


def test_no_private_names() -> None:
    for block in code_blocks(TUTORIAL.read_text()):
        assert "smtpcore._" not in block and "._" not in block.replace("__", "")
