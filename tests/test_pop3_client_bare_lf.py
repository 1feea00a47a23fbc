"""POP3 servers that end lines with a bare LF, on every adapter.

RFC 1939 §3 ends every line with CRLF, and only CRLF.CRLF ends a multi-line
answer (the rule stays: LF.LF is content). A server that ends its status lines
with LF but its answers with CRLF.CRLF is read, as poplib and mpop read it. One
that ends every line with LF never ends an answer: the clients waited out the
timeout for the end of its first listing (CAPA, at connect) and said only that
it did not end; they now say why, when its LF.LF comes.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from peers import ADAPTERS, run
from smtpcore.testing import Expect, ExpectClose, ScriptedServer, Send, Step

MESSAGE = b"Subject: x\r\n\r\nbody\nbare lf line\r\nlast\r\n"


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_server_that_ends_every_line_with_a_bare_lf_is_refused_by_name(
    adapter: str,
) -> None:
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    errors: list[BaseException] = []
    steps: list[Step] = [
        Send(b"+OK POP3 ready\n"),
        Expect(b"CAPA"),
        Send(b"+OK\nUSER\n.\n"),
        ExpectClose(),
    ]
    # A long timeout: the error must come from the LF.LF, not from a wait.
    with ScriptedServer(steps) as server:
        if adapter == "sync":
            client = module.POP3Client("127.0.0.1", server.port, timeout=60, stls=False)
            with pytest.raises(module.POP3Error) as info:
                client.connect()
            errors.append(info.value)
        else:
            timeouts = module.POP3Timeouts.uniform(60)

            async def session() -> None:
                client = module.POP3Client("127.0.0.1", server.port, stls=False, timeouts=timeouts)
                with pytest.raises(module.POP3Error) as info:
                    await client.connect()
                errors.append(info.value)

            run(adapter, session)
    [error] = errors
    assert type(error) is module.POP3ProtocolError
    assert "bare LF" in str(error) and "RFC 1939 §3 requires CRLF" in str(error)


@pytest.mark.parametrize("every_status_line", [True, False])
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_lf_status_lines_before_crlf_ended_answers_are_read(
    adapter: str, every_status_line: bool
) -> None:
    """Every status line ended by LF, or only RETR's ``+OK``: the mail comes."""
    end = b"\n" if every_status_line else b"\r\n"
    steps: list[Step] = [
        Send(b"+OK POP3 ready" + end),
        Expect(b"CAPA"),
        Send(b"+OK" + end + b"USER\r\n.\r\n"),
        Expect(b"USER u"),
        Send(b"+OK" + end),
        Expect(b"PASS p"),
        Send(b"+OK" + end),
        Expect(b"CAPA"),
        Send(b"+OK" + end + b"USER\r\n.\r\n"),
        Expect(b"LIST"),
        Send(b"+OK" + end + b"1 %d\r\n.\r\n" % len(MESSAGE)),
        Expect(b"RETR 1"),
        Send(b"+OK\n" + MESSAGE + b".\r\n"),
        Expect(b"QUIT"),
        Send(b"+OK bye" + end),
        ExpectClose(),
    ]
    got: list[bytes] = []
    with ScriptedServer(steps) as server:
        options: dict[str, Any] = {"stls": False, "allow_plaintext_auth": True}
        module: Any = importlib.import_module(f"smtpcore.{adapter}")
        if adapter == "sync":
            with module.POP3Client("127.0.0.1", server.port, timeout=60, **options) as client:
                client.login("u", "p")
                client.list()
                got.append(client.retrieve(1))
        else:

            async def session() -> None:
                async with module.POP3Client("127.0.0.1", server.port, **options) as client:
                    await client.login("u", "p")
                    await client.list()
                    got.append(await client.retrieve(1))

            run(adapter, session)
    assert got == [MESSAGE]
