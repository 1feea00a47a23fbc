"""A POP3 server that ends its lines with a bare LF is refused at once, by name.

RFC 1939 §3 ends every line with CRLF, and only CRLF.CRLF ends a multi-line
answer (the rule stays: LF.LF is content). The clients read such a server's
status lines all the same, then waited for the end of its first listing (CAPA,
at connect) until the timeout, and said "the rest of a multi-line answer did
not end within 3.0 s". poplib, which ends lines at LF, reads such a server; our
clients now refuse it on its first line, saying why, on every adapter.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from peers import ADAPTERS, run
from smtpcore.testing import ExpectClose, ScriptedServer, Send


@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
def test_a_server_that_ends_lines_with_a_bare_lf_is_refused_on_its_greeting(
    adapter: str,
) -> None:
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    errors: list[BaseException] = []
    # A long timeout: the error must come from the first line, not from a wait.
    with ScriptedServer([Send(b"+OK POP3 ready\n"), ExpectClose()]) as server:
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
