"""The async clients' low-level commands and the wire trace, on asyncio and trio."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peers import TLSFiles, module, run, running_smtp_server
from smtpcore._driver._trace import WireTrace
from smtpcore.smtp import Help, Reply
from smtpcore.testing import ScriptedServer, Send, script
from smtpcore.testing import strategies as sst
from test_adapters_auth import PASSWORD, USER, Submission, authenticator, credentials
from test_client_errors import GREET, Recorder

MESSAGE = b"Subject: trace\r\n\r\nbody\r\n"


def test_low_level_commands(adapter: str) -> None:
    handler = Recorder()

    async def session(port: int) -> list[int]:
        codes = []
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            codes.append((await client.ehlo("again.test")).code)
            codes.append((await client.noop()).code)
            codes.append((await client.rset()).code)
            codes.append((await client.command(Help())).code)
            await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            codes.append((await client.rset()).code)
        return codes

    with running_smtp_server(adapter, handler) as server:
        codes = run(adapter, lambda: session(server.port))
    assert codes[:3] == [250, 250, 250] and codes[3] in (211, 214) and codes[4] == 250
    assert len(handler.messages) == 1


def test_verify_and_a_refused_noop(adapter: str) -> None:
    transcript = f"""{GREET}
C: VRFY bob
S: 252 2.1.5 cannot verify, will accept
C: NOOP
S: 500 5.5.1 what
C: QUIT
S: 221 bye
"""

    async def session(port: int) -> tuple[Reply, Any]:
        mod = module(adapter)
        async with mod.SMTPClient("127.0.0.1", port) as client:
            verified = await client.verify("bob")
            with pytest.raises(mod.SMTPReplyError) as refused:
                await client.noop()
            return verified, refused.value

    with ScriptedServer(script(transcript)) as server:
        verified, refused = run(adapter, lambda: session(server.port))
    assert verified.code == 252
    assert (refused.command, refused.code, str(refused.status)) == ("NOOP", 500, "5.5.1")


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-256"])
def test_trace_shows_every_line_with_auth_masked(
    adapter: str, tls: TLSFiles, mechanism: str
) -> None:
    handler = Submission()
    lines: list[tuple[str, str]] = []

    async def session(port: int) -> None:
        async with module(adapter).SMTPClient(
            "127.0.0.1",
            port,
            ssl_context=tls.client_context,
            trace=lambda direction, line: lines.append((direction, line)),
            chunking=False,  # DATA, whose content and "." the trace shows line by line
            **credentials(mechanism),
        ) as client:
            await client.send_message(MESSAGE, USER, "bob@pqr.example")

    with running_smtp_server(
        adapter,
        handler,
        ssl_context=tls.server_context,
        auth=authenticator(),
    ) as server:
        run(adapter, lambda: session(server.port))
    sent = [line for direction, line in lines if direction == "C"]
    received = [line for direction, line in lines if direction == "S"]
    assert sent[0].startswith("EHLO ") and "STARTTLS" in sent and sent[-1] == "QUIT"
    assert received[0].startswith("220 ") and received[-1].startswith("221 ")
    assert "Subject: trace" in sent and "." in sent
    auth = next(i for i, line in enumerate(sent) if line.startswith("AUTH "))
    if mechanism == "PLAIN":
        assert sent[auth] == "AUTH PLAIN ****"
    elif mechanism == "LOGIN":
        assert sent[auth : auth + 3] == ["AUTH LOGIN", "****", "****"]
    else:
        assert sent[auth] == "AUTH SCRAM-SHA-256 ****" and sent[auth + 1] == "****"
    assert any(line.startswith("235 ") for line in received)
    secrets = (PASSWORD, "Y29ycmVjdCBob3JzZQ", "am9obkBhYmMuZXhhbXBsZQ", "n,,n=")
    assert not any(secret in line for _, line in lines for secret in secrets)


def test_trace_to_a_logger(adapter: str, caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.smtp.wire")

    async def session(port: int) -> None:
        async with module(adapter).SMTPClient("127.0.0.1", port, trace=logger) as client:
            await client.noop()

    with (
        running_smtp_server(adapter, Recorder()) as server,
        caplog.at_level(logging.DEBUG, logger="test.smtp.wire"),
    ):
        run(adapter, lambda: session(server.port))
    messages = [r.getMessage() for r in caplog.records if r.name == "test.smtp.wire"]
    assert messages[0].startswith("S: 220 ") and "C: NOOP" in messages
    assert messages[-2:] == ["C: QUIT", messages[-1]] and messages[-1].startswith("S: 221")


def test_trace_escapes_control_characters_and_bounds_lines(adapter: str) -> None:
    hostile = [
        Send(b"220-\x1b[31mred\x1b[0m\r\n220-" + b"x" * 3000 + b"\r\n220 ok\r\n"),
        *script("C~ EHLO .+\nS: 250 scripted.test\nC: QUIT\nS: 221 bye"),
    ]

    lines: list[str] = []

    async def session(port: int) -> None:
        async with module(adapter).SMTPClient(
            "127.0.0.1", port, trace=lambda direction, line: lines.append(line)
        ):
            pass

    with ScriptedServer(hostile) as server:
        run(adapter, lambda: session(server.port))
    assert lines[0] == "220-\\x1b[31mred\\x1b[0m"
    assert lines[1].endswith(" [...]") and len(lines[1]) < 2100
    assert lines[2] == "220 ok"


def test_trace_escapes_line_separators_as_a_log_does() -> None:
    """The trace escaped C0 and C1 controls but let U+2028 and U+2029 through, which
    split the line for a log reader; it now escapes as every peer text in a log is."""
    lines: list[str] = []
    WireTrace(lambda direction, line: lines.append(line)).received(
        "250-a\u2028b\u2029c\u0085d\u009be\u202ef\u061cg\r\n".encode()
    )
    assert lines == ["250-a\\u2028b\\u2029c\\x85d\\x9be\\u202ef\\u061cg"]  # U+061C: a bidi mark


@given(
    st.one_of(st.binary(max_size=6000), sst.reply_lines(hostile=True)).flatmap(
        lambda data: st.tuples(st.just(data), sst.chunkings(data))
    )
)
def test_trace_lines_do_not_depend_on_how_the_bytes_arrive(
    case: tuple[bytes, list[bytes]],
) -> None:
    from smtpcore._driver._trace import MAX_LINE, _Lines

    data, cut = case
    whole = _Lines().feed(data)
    chunked = _Lines()
    pieces: list[tuple[bytes, bool]] = []
    for piece in cut:
        pieces += chunked.feed(piece)
    complete = [line.removesuffix(b"\r") for line in data.split(b"\n")[:-1]]
    if all(len(line) <= MAX_LINE for line in data.split(b"\n")):
        assert whole == pieces == [(line, False) for line in complete]
    assert all(len(line) <= MAX_LINE for line, _ in whole + pieces)
