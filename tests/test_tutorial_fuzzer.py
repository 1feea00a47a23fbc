"""Every Python code block of the fuzzer tutorial runs, in order, in one namespace,
as a new user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from smtpcore import pop3
from smtpcore.testing import strategies as sst

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


# Hypothesis's own defaults, as on a user's machine outside CI, but with its clock
# swapped: its too_slow health check and its 200 ms deadline measure wall time, which
# a loaded machine running the suite inflates tenfold (block 1 failed 5 runs in 15
# under load; an example past the deadline failed a block too). So the runner turns
# both off and holds each example of a test that keeps the user's deadline to that
# deadline in the CPU time of the thread running it, raising the DeadlineExceeded a
# user would see: a body that got slow still fails here. A slow strategy is caught by
# test_the_tutorials_strategies_draw_within_a_cpu_budget, in CPU time too.
_RUN_BLOCKS = """
import datetime, json, sys, time
import hypothesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import DeadlineExceeded

USERS_DEADLINE = settings.get_profile("default").deadline
# Stands for "the user's deadline" in the settings a test inherits: too long for
# Hypothesis's wall clock ever to reach, and told apart from a test's deadline=None.
INHERITED = datetime.timedelta(days=1)
settings.register_profile(
    "tutorial-runner",
    settings.get_profile("default"),
    suppress_health_check=[HealthCheck.too_slow],
    deadline=INHERITED,
)
settings.load_profile("tutorial-runner")


def within_cpu_deadline(test):
    def timed(*args, **kwargs):
        deadline = settings.default.deadline  # the running test's own settings
        if deadline == INHERITED:
            deadline = USERS_DEADLINE
        started = time.thread_time()
        result = test(*args, **kwargs)
        spent = datetime.timedelta(seconds=time.thread_time() - started)
        if deadline is not None and spent >= deadline:
            raise DeadlineExceeded(spent, deadline)
        return result

    return timed


def given(*arguments, **keywords):
    decorate = hypothesis_given(*arguments, **keywords)

    def apply(function):
        test = decorate(function)
        test.hypothesis.inner_test = within_cpu_deadline(test.hypothesis.inner_test)
        return test

    return apply


hypothesis_given, hypothesis.given = hypothesis.given, given
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


TUTORIAL_CAPABILITIES = pop3.ServerConnection(
    "pop.test", stls=True, sasl_mechanisms=["PLAIN", "LOGIN"]
).capabilities()

TUTORIAL_STRATEGIES: dict[str, st.SearchStrategy[object]] = {
    "sessions": sst.sessions(extensions={"PIPELINING", "8BITMIME", "CHUNKING"}),
    "hostile command lines": st.lists(sst.command_lines(hostile=True), max_size=20),
    "smuggling sessions": sst.sessions(
        extensions={"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING"},
        content=sst.message_contents(smuggling=True),
    ),
    "chunk sizes": sst.chunk_sizes(),
    "pop3 sessions": sst.pop3_sessions(capabilities=TUTORIAL_CAPABILITIES),
}

DRAWS = 50
CPU_BUDGET = 3.0
"""Seconds of CPU for DRAWS examples of one strategy: each takes well under half a
second on a quiet machine, and CPU time, unlike the wall time of Hypothesis's
too_slow health check, does not grow when other processes load the machine."""


@pytest.mark.parametrize("name", list(TUTORIAL_STRATEGIES))
def test_the_tutorials_strategies_draw_within_a_cpu_budget(name: str) -> None:
    drawn: list[object] = []

    @settings(
        max_examples=DRAWS,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(TUTORIAL_STRATEGIES[name])
    def draw(example: object) -> None:
        drawn.append(example)

    started = time.process_time()
    draw()
    spent = time.process_time() - started
    assert drawn and spent < CPU_BUDGET, (name, len(drawn), spent)


def test_no_private_names() -> None:
    for block in code_blocks(TUTORIAL.read_text()):
        assert "smtpcore._" not in block and "._" not in block.replace("__", "")
