"""The Python examples of docs/extensions.rst and docs/proxy.rst run as written."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
PAGES = [DOCS / "extensions.rst", DOCS / "proxy.rst"]
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")


def _blocks() -> list[str]:
    return [textwrap.dedent(block) for page in PAGES for block in _BLOCK.findall(page.read_text())]


def test_the_page_has_examples() -> None:
    assert len(_blocks()) >= 3


@pytest.mark.parametrize("block", _blocks())
def test_example_runs(block: str) -> None:
    exec(compile(block, "docs", "exec"), {})
