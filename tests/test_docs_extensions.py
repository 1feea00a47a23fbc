"""The Python examples of docs/extensions.rst run as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "extensions.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")


def _blocks() -> list[str]:
    return [textwrap.dedent(block) for block in _BLOCK.findall(PAGE.read_text())]


def test_the_page_has_examples() -> None:
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("block", _blocks())
def test_example_runs(block: str) -> None:
    exec(compile(block, str(PAGE), "exec"), {})
