"""scripts/test leaves the machine's own services alone (issue 13, item 16).

The peers a test needs run as its own child processes with their own
configuration and ports, so the script has no reason to stop, disable or
reconfigure a system daemon; these checks keep such a command from coming back.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "test"

FORBIDDEN = [
    r"\bsystemctl\b",
    r"\bupdate-rc\.d\b",
    r"\bservice\s+\w+\s+(stop|restart|reload)",
    r"\bpostfix\s+(stop|reload|abort|start)\b",
    r"\bpostconf\s+-e\b",
    r"\bdoveadm\s+stop\b",
    r"/etc/init\.d/",
    r"\bkill(all)?\b",
    r"\bpkill\b",
]


def code_lines() -> list[str]:
    """The script without its comments (they may name what it refuses to do)."""
    lines = []
    for line in SCRIPT.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            lines.append(stripped)
    return lines


@pytest.mark.parametrize("pattern", FORBIDDEN)
def test_the_script_never_touches_system_services(pattern: str) -> None:
    offending = [line for line in code_lines() if re.search(pattern, line)]
    assert offending == []


def test_the_install_still_forbids_services_from_starting() -> None:
    text = "\n".join(code_lines())
    assert "policy-rc.d" in text and "exit 101" in text
    # The guard is removed on every way out of the install, interrupts included.
    assert re.search(r"trap .*policy.* EXIT", text)
