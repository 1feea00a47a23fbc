"""Every Python code block of the fuzzer tutorial runs, in order, in one namespace."""

from __future__ import annotations

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


def test_every_code_block_runs() -> None:
    namespace: dict[str, object] = {"__name__": "fuzzer_tutorial"}
    for number, block in enumerate(code_blocks(TUTORIAL.read_text()), 1):
        exec(compile(block, f"fuzzer.rst block {number}", "exec"), namespace)


def test_no_private_names() -> None:
    for block in code_blocks(TUTORIAL.read_text()):
        assert "smtpcore._" not in block and "._" not in block.replace("__", "")
