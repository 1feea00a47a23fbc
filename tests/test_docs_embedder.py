"""docs/tutorials/embedder.rst runs as written: its code blocks, in order, as one script.

The page builds one session step by step, so each block uses what the blocks
before it made; its asserts are the page's claims about the bytes on the wire.
The complete server it quotes (examples/threaded_server.py) is run by
test_examples.py and test_example_threaded_server.py.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "tutorials" / "embedder.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")


def blocks() -> list[str]:
    return [textwrap.dedent(block) for block in _BLOCK.findall(PAGE.read_text())]


def test_the_page_walks_through_a_session() -> None:
    found = blocks()
    assert len(found) >= 6
    assert any("BDAT" in block and "PAUSED" in block for block in found)


def test_the_code_blocks_run_in_order() -> None:
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks(), 1):
        exec(compile(block, f"{PAGE.name}, code block {number}", "exec"), namespace)


def test_the_page_quotes_the_example_that_the_suite_runs() -> None:
    text = PAGE.read_text()
    assert text.count(".. literalinclude:: ../../examples/threaded_server.py") == 2
