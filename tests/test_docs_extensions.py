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


def test_the_table_lists_every_extension_the_library_knows() -> None:
    from smtpcore.smtp._ext import KNOWN

    page = (DOCS / "extensions.rst").read_text()
    table = page[page.index("The extensions\n") : page.index("How each is tested")]
    rows = {line.split()[0].strip("`") for line in table.splitlines() if line.startswith("``")}
    assert {entry.keyword for entry in KNOWN} <= rows


def test_the_worked_example_shows_the_entry_from_its_module() -> None:
    page = (DOCS / "extensions.rst").read_text()
    include = "literalinclude:: ../src/smtpcore/smtp/_ext/limits.py"
    assert include in page
    assert "def _arguments(" in (DOCS.parent / "src/smtpcore/smtp/_ext/limits.py").read_text()
