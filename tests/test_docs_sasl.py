"""The Python examples of docs/sasl.rst run as written, each on its own; the two
that the page calls fragments of an event loop are compiled, not run."""

from __future__ import annotations

import base64
import re
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from smtpcore.sasl import XOAuth2Server
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    BadCommand,
    Event,
    Reply,
    ServerAuth,
    ServerConnection,
)
from smtpcore.testing import permissive_smtp_answer, run_server

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


@pytest.mark.parametrize("junk", [b"!!!!\r\n", b"A" * 13000 + b"\r\n"], ids=["base64", "long"])
def test_the_smtp_auth_fragment_counts_a_refused_token_however_its_exchange_ends(
    junk: bytes,
) -> None:
    """The loop an embedder copies, run as written on every event of a session in
    which a refused token's error challenge (RFC 7628 §3.2.2) is answered by a line
    the machine cannot read: each such exchange is a failed authentication, and the
    third AUTH meets ``max_auth_failures``' 421. A loop that answered the
    BadCommand alone let every refused token escape the limit."""
    fragments = [code for code, fragment in _blocks() if fragment and "ServerAuth(" in code]
    assert len(fragments) == 1
    setup, loop_body = fragments[0].split("\n...\n")
    page: dict[str, Any] = {"scram_keys": {}, "check_password": lambda *_: False}
    exec(compile(setup, str(PAGE), "exec"), page)
    # The page's loop, with a mechanism whose refusal an error challenge carries.
    page["auth"] = ServerAuth({"XOAUTH2": lambda: XOAuth2Server(lambda user, token: False)})
    conn = ServerConnection(
        "mx.pqr.example", auth_mechanisms=["XOAUTH2"], auth_require_tls=False, max_auth_failures=2
    )
    sent = bytearray()
    page.update(conn=conn, sock=SimpleNamespace(sendall=sent.extend))
    body = compile(loop_body, str(PAGE), "exec")

    def the_page_answers(conn: ServerConnection, event: Event) -> Reply | None:
        if not isinstance(event, Auth | AuthResponse | BadCommand):
            return permissive_smtp_answer(conn, event)  # type: ignore[return-value]
        page["event"] = event
        exec(body, page)
        return None  # the page sent its reply

    token = base64.b64encode(b"user=tim\x01auth=Bearer wrong\x01\x01")
    conn.send(Reply(220, "mx.pqr.example ESMTP"))
    run_server(conn, b"EHLO client.abc.example\r\n", answer=the_page_answers)
    for _ in range(2):
        sent.clear()
        run_server(conn, b"AUTH XOAUTH2 " + token + b"\r\n" + junk, answer=the_page_answers)
        assert [line[:3] for line in bytes(sent).splitlines()] == [
            b"334",
            b"501" if junk[0] == 33 else b"500",
        ]
    sent.clear()
    run_server(conn, b"AUTH XOAUTH2 " + token + b"\r\n", answer=the_page_answers)
    assert bytes(sent).startswith(b"421 4.7.0")
