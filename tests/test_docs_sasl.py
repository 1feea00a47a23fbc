"""The Python examples of docs/sasl.rst run as written, each on its own; the two
that the page calls fragments of an event loop are compiled, not run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

PAGE = Path(__file__).parent.parent / "docs" / "sasl.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")
#: The prose before a block that cannot run alone says so, and what it assumes.
_FRAGMENT = re.compile(r"fragment\s+of\s+(?:your|an)\s+event\s+loop")


def _blocks() -> list[tuple[str, bool]]:
    """(code, whether the prose just before it calls it a fragment)."""
    text = PAGE.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        before = text[: match.start()].rsplit("\n\n", 2)[-2]
        found.append((textwrap.dedent(match.group(1)), bool(_FRAGMENT.search(before))))
    return found


def test_the_page_has_examples_and_few_fragments() -> None:
    blocks = _blocks()
    assert len(blocks) >= 7
    assert sum(fragment for _, fragment in blocks) == 2


@pytest.mark.parametrize("block", [code for code, fragment in _blocks() if not fragment])
def test_example_runs(block: str) -> None:
    exec(compile(block, str(PAGE), "exec"), {})


@pytest.mark.parametrize("block", [code for code, fragment in _blocks() if fragment])
def test_fragment_compiles(block: str) -> None:
    compile(block, str(PAGE), "exec")


def test_the_smtp_auth_fragment_answers_every_event_in_one_call() -> None:
    """The loop an embedder copies hands the BadCommand that ends an exchange to
    ServerAuth.answer with the rest: a loop that answered it alone let a refused
    token's exchange escape ``max_auth_failures``."""
    fragments = [code for code, fragment in _blocks() if fragment and "ServerAuth(" in code]
    assert len(fragments) == 1
    assert "auth.answer(conn, event)" in fragments[0]
    assert "BadCommand" in fragments[0]
