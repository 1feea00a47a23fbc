"""docs/pop3.rst runs as written: its code blocks, in order, as one script."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

PAGE = Path(__file__).parent.parent / "docs" / "pop3.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")


def blocks() -> list[str]:
    return [textwrap.dedent(block) for block in _BLOCK.findall(PAGE.read_text())]


def test_the_session_loop_handles_paused_after_stls() -> None:
    """A loop built with stls=True and no PAUSED branch spins in TLS_PENDING."""
    loops = [block for block in blocks() if "stls=True" in block]
    assert loops and all("PAUSED" in b and "tls_started()" in b for b in loops)


def test_the_page_shows_auth_with_the_public_exchange() -> None:
    assert any("pop3.ServerAuth" in b and "pop3.ClientAuth" in b for b in blocks())


def test_the_code_blocks_run_in_order() -> None:
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks(), 1):
        exec(compile(block, f"{PAGE.name}, code block {number}", "exec"), namespace)


def test_the_fetcher_deletes_only_the_messages_it_fetched_whole() -> None:
    """Message 2 is locked (RETR 2 gets -ERR): DELE 2 must never go out, and the
    fetcher must not take a NEED_DATA for a whole answer."""
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks(), 1):
        exec(compile(block, f"{PAGE.name}, code block {number}", "exec"), namespace)
        if "def fetch(" in block:
            break
    else:
        raise AssertionError("the page has no fetcher")
    assert namespace["locked"] == {2}
    assert namespace["deleted"] == [1, 3]
    fetcher = next(block for block in blocks() if "def fetch(" in block)
    assert "if event is NEED_DATA:" in fetcher and "raise" in fetcher
