"""The Python examples of docs/clients.rst run as written, in order, against local
servers: ``host`` and ``port`` name an SMTP server that knows john@abc.example,
``pop3_port`` a POP3 server holding alice's mail."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest

from peers import running_pop3_server, running_smtp_server, write_maildir
from smtpcore.maildrop import MaildirStore
from test_adapters_auth import Submission, authenticator

PAGE = Path(__file__).parent.parent / "docs" / "clients.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")


def _blocks() -> list[str]:
    return [textwrap.dedent(block) for block in _BLOCK.findall(PAGE.read_text())]


def test_the_page_has_examples() -> None:
    assert len(_blocks()) >= 6


def test_the_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_maildir(tmp_path / "mail" / "alice", [b"Subject: one\r\n\r\nhi\r\n"])
    store = MaildirStore(tmp_path / "mail", {"alice": "wonderland"})
    handler = Submission()
    with (
        running_smtp_server(
            "asyncio", handler, auth=authenticator(), max_message_size=1_000_000
        ) as smtp,
        running_pop3_server("asyncio", store) as pop3,
    ):
        namespace = {"host": "127.0.0.1", "port": smtp.port, "pop3_port": pop3.port}
        try:
            for block in _blocks():
                exec(compile(block, str(PAGE), "exec"), namespace)
        finally:
            logging.getLogger("mail.wire").handlers.clear()
    out = capsys.readouterr().out
    assert "['brendon@pqr.example']" in out
    assert "552 5.3.4" in out and "True" in out
    assert "535 True" in out  # a refused login leaves the session open
    assert "C: AUTH SCRAM-SHA-256 ****" in out and "correct horse" not in out
    assert "1 Subject: one" in out.replace("b'", "").replace("'", "")
    assert out.count("C: NOOP\nS: 250") == 2  # the callback's lines, then the logger's
    assert len(handler.messages) == 5  # the last, the may-have-been-delivered example
