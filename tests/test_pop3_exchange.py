"""The POP3 server session's small parts: the TOP cut (``pop3.top_chunks``), the SASL
exchange (``pop3.ServerAuth``), the TLS rule."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore._driver._pop3_server import POP3ServerOptions, POP3ServerState
from smtpcore.maildrop import MaildirStore
from smtpcore.pop3 import (
    Auth,
    AuthResponse,
    Continue,
    Err,
    Ok,
    ServerAuth,
    top_chunks,
    top_chunks_async,
)
from smtpcore.sasl import (
    CramMD5Server,
    PlainServer,
    ScramSHA256Client,
    ScramSHA256Server,
    Success,
    derive_scram_credentials,
)


def reference_top(content: bytes, lines: int) -> bytes:
    """TOP by the book: LF line ends, the header, the blank line, ``lines`` body lines."""
    text = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text.startswith(b"\n"):
        header, body = b"", text[1:]
        cut = b"\n"
    elif b"\n\n" in text:
        header, body = text.split(b"\n\n", 1)
        cut = header + b"\n\n"
    else:
        return text
    kept = body.split(b"\n")
    if lines >= len(kept) - (1 if body.endswith(b"\n") else 0):
        return cut + body
    return cut + b"".join(line + b"\n" for line in kept[:lines])


def cut(content: bytes, lines: int, sizes: list[int]) -> bytes:
    async def chunks() -> AsyncIterator[bytes]:
        position = 0
        for size in sizes:
            yield content[position : position + size]
            position += size
        yield content[position:]

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in top_chunks_async(chunks(), lines)])

    cut_async = asyncio.run(collect())
    pieces = [content[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]
    cut_now = b"".join(top_chunks([*pieces, content[sum(sizes) :]], lines))
    assert cut_now == cut_async
    return cut_now


@given(
    st.lists(st.sampled_from([b"H: v", b"x", b"\r\n", b"\n", b"\r", b""]), max_size=20),
    st.integers(0, 4),
    st.lists(st.integers(0, 6), max_size=5),
)
def test_top_cuts_like_the_reference(parts: list[bytes], lines: int, sizes: list[int]) -> None:
    content = b"".join(parts)
    assert cut(content, lines, sizes) == reference_top(content, lines)


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\n", 0, b"A: 1\nB: 2\n\n"),
        (b"A: 1\r\n\r\nl1\r\nl2\r\n", 1, b"A: 1\n\nl1\n"),
        (b"A: 1\r\n\r\nl1\r\nl2\r\n", 5, b"A: 1\n\nl1\nl2\n"),
        (b"A: 1\r\nno body\r\n", 3, b"A: 1\nno body\n"),
        (b"\r\nbody first\r\n", 0, b"\n"),
    ],
)
def test_top_table(content: bytes, lines: int, expected: bytes) -> None:
    assert cut(content, lines, [3, 3]) == expected


@pytest.mark.parametrize("lines", [-1, -(2**40)])
def test_top_refuses_a_negative_line_count_when_called(lines: int) -> None:
    """RFC 1939 §7: n must be non-negative, as the Top event says; the function
    refuses it at once, before any chunk is read, not at the first chunk."""
    with pytest.raises(ValueError, match="non-negative"):
        top_chunks(iter([b"A: 1\r\n\r\nl1\r\n"]), lines)
    with pytest.raises(ValueError, match="non-negative"):
        top_chunks_async(_no_chunks(), lines)


async def _no_chunks() -> AsyncIterator[bytes]:
    chunks: tuple[bytes, ...] = ()
    for chunk in chunks:  # pragma: no cover - never read
        yield chunk


def outcome(exchange: ServerAuth) -> str:
    """What the last answer was, as a session acts on it."""
    if exchange.success is not None:
        return "login"
    if exchange.failed_login:
        return "failed login"
    return "bad command" if exchange.bad_command else "answer"


def test_sasl_exchange_scram_sends_its_proof_in_a_last_challenge() -> None:
    keys = derive_scram_credentials("pw", salt=b"s" * 16)
    exchange = ServerAuth({"SCRAM-SHA-256": lambda: ScramSHA256Server({"bob": keys}.get)})
    client = ScramSHA256Client("bob", "pw")
    answer = exchange.start(Auth("SCRAM-SHA-256", client.initial_response()))
    assert isinstance(answer, Continue)
    answer = exchange.step(AuthResponse(client.respond(answer.data)))
    assert isinstance(answer, Continue) and exchange.success is None  # v=..., the proof
    client.verify_success(answer.data)
    assert isinstance(exchange.step(AuthResponse(b"")), Ok)
    assert exchange.success == Success("bob", "bob")
    assert exchange.mechanism == "SCRAM-SHA-256"


def test_sasl_exchange_refusals() -> None:
    exchange = ServerAuth({"PLAIN": lambda: PlainServer(lambda z, c, p: p == "pw")})
    assert exchange.start(Auth("LOGIN")) == Err("Unsupported authentication mechanism")
    assert exchange.start(Auth("PLAIN", b"\0bob\0no")) == Err("Authentication failed", code="AUTH")
    assert outcome(exchange) == "failed login"
    assert exchange.start(Auth("PLAIN")) == Continue(b"")
    assert exchange.step(AuthResponse(cancel=True)) == Err("Authentication cancelled")
    assert outcome(exchange) == "answer"
    assert exchange.step(AuthResponse(b"late")) == Err("Authentication cancelled")
    assert isinstance(exchange.start(Auth("PLAIN", b"\0bob\0pw")), Ok)
    assert exchange.success == Success("bob", "bob")

    def broken() -> PlainServer:
        raise RuntimeError("store down")

    # What a mechanism raises comes out, for the session to tell the store's failure
    # (-ERR [SYS/TEMP]) from its own cancellation; nothing of the exchange is left.
    failing = ServerAuth({"PLAIN": broken})
    with pytest.raises(RuntimeError, match="store down"):
        failing.start(Auth("PLAIN"))
    assert failing.step(AuthResponse(b"x")) == Err("Authentication cancelled")

    # A callback's broken contract is no failed login: a temporary failure.
    def says_yes(authzid: str, authcid: str, password: str) -> bool:
        return "yes"  # type: ignore[return-value]  # the mistake under test

    confused = ServerAuth({"PLAIN": lambda: PlainServer(says_yes)})
    assert confused.start(Auth("PLAIN", b"\0bob\0pw")) == Err(
        "Temporary authentication failure", code="SYS/TEMP"
    )
    assert outcome(confused) == "answer"


def test_sasl_exchange_initial_response_to_a_server_first_mechanism() -> None:
    """RFC 5034 §4: -ERR, and no failed login, which the session would count and delay;
    the exchange says the client broke it, so the session counts a bad command (a plain
    -ERR alone says nothing of whose fault it was)."""
    exchange = ServerAuth({"CRAM-MD5": lambda: CramMD5Server({"bob": "pw"}.get, "pqr.example")})
    answer = exchange.start(Auth("CRAM-MD5", b"bob 0123"))
    assert answer == Err("CRAM-MD5 takes no initial response")
    assert outcome(exchange) == "bad command"
    assert isinstance(exchange.start(Auth("CRAM-MD5")), Continue)
    assert outcome(exchange) == "answer"


class _FakeTransport:
    """Only the addresses a session reads when it is built; no I/O happens."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer_address = peer
        self.local_address = ("127.0.0.1", 110)

    def channel_bindings(self) -> dict[str, bytes]:
        return {}


@pytest.mark.parametrize(
    ("peer", "stls", "required"),
    [
        (("192.0.2.7", 5000), True, True),
        (("2001:db8::7", 5000), True, True),
        (("127.0.0.1", 5000), True, False),
        (("::1", 5000), True, False),
        (("192.0.2.7", 5000), False, False),
    ],
)
def test_plaintext_logins_are_refused_off_loopback_when_stls_is_offered(
    tmp_path: Path, peer: tuple[str, int], stls: bool, required: bool
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) if stls else None
    options = POP3ServerOptions(hostname="pop.test", ssl_context=context)
    state = POP3ServerState(MaildirStore(tmp_path, {"a": "b"}), options)
    session = state.new_session(_FakeTransport(peer), peer)  # type: ignore[arg-type]  # a stand-in
    logins = asyncio.run(session._logins(peer))  # the client, as _known_client gives it
    conn = options._session_connection(logins)
    assert conn.require_tls is required
    assert ("USER" in conn.capabilities()) is not required
