"""SCRAM-SHA-256-PLUS end to end over real TLS 1.3 (issue 16), through the public API.

docs/tutorials/channel-binding.rst runs as written; its pyOpenSSL transport
then carries SMTP AUTH (STARTTLS and implicit TLS) and POP3 AUTH (after
STLS), where both ends must compute the same ``tls-exporter`` value from
the real handshake. Against the standard library's TLS, which cannot
export keying material, ``-PLUS`` is neither offered nor used, and SCRAM
still works. A man in the middle who holds a certificate the client trusts
relays a plain SCRAM login, but not a bound one, and striking ``-PLUS`` from
the EHLO reply he relays is caught as a downgrade (RFC 5802 §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import textwrap
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio
from OpenSSL import SSL

from smtpcore.asyncio import (
    AuthenticationError,
    POP3AuthenticationError,
    POP3Client,
    POP3Server,
    SMTPClient,
    SMTPServer,
)
from smtpcore.handler import Authenticator, Handler, TLSInfo
from smtpcore.maildrop import MaildirStore
from smtpcore.sasl import (
    TLS_EXPORTER,
    ScramSHA256Client,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    Step,
    derive_scram_credentials,
    scram_client,
)
from smtpcore.transport import Transport

PAGE = Path(__file__).parent.parent / "docs" / "tutorials" / "channel-binding.rst"
_BLOCK = re.compile(r"\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)")
HOST = "mx.pqr.example"
KEYS = {"john": derive_scram_credentials("pencil")}


def run_page() -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "channel_binding_tutorial"}
    blocks = [textwrap.dedent(block) for block in _BLOCK.findall(PAGE.read_text())]
    assert len(blocks) == 3
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{PAGE.name}, code block {number}", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def page() -> dict[str, Any]:
    return run_page()


class Recorder:
    """Wraps a transport class so each instance remembers the binding data it gave."""

    def __init__(self, page: dict[str, Any]) -> None:
        base = page["OpenSSLTransport"]
        self.given: list[tuple[str, bytes | None]] = []
        given = self.given

        class Recording(base):  # type: ignore[valid-type, misc]  # a class the page defines
            def __init__(self, sock: socket.socket, context: Any, role: str) -> None:
                super().__init__(sock, context)
                self.role = role

            def channel_binding(self, kind: str) -> bytes | None:
                data: bytes | None = super().channel_binding(kind)
                given.append((self.role, data))
                return data

        self.transport = Recording

    def last(self, role: str) -> bytes | None:
        return [data for who, data in self.given if who == role][-1]


def smtp_server(**options: Any) -> SMTPServer:
    options.setdefault("auth", Authenticator(get_scram_credentials=KEYS.get))
    return SMTPServer(
        Handler(),
        hostname=HOST,
        auth_failure_delay=0,
        ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        **options,
    )


async def smtp_login(server: SMTPServer, server_side: Transport, client: SMTPClient) -> str | None:
    """Serve one session over ``server_side`` while ``client`` logs in; the mechanism used."""
    serving = asyncio.ensure_future(server.serve_transport(server_side))
    try:
        async with client:
            used = client.authenticated_with
    finally:
        await asyncio.wait_for(serving, 10)
    return used


def run(coroutine: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine, 30)

    return asyncio.run(bounded())


def test_the_page_logs_in_with_plus(page: dict[str, Any]) -> None:
    assert [i.mechanism for i in page["logins"].identities] == ["SCRAM-SHA-256-PLUS"]
    a, b = socket.socketpair()
    with a, b:
        assert isinstance(page["OpenSSLTransport"](a, page["client_tls"]), Transport)


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "tls-on-connect"])
def test_smtp_both_ends_bind_the_same_exporter(page: dict[str, Any], implicit: bool) -> None:
    recorder = Recorder(page)
    server_end, client_end = socket.socketpair()
    client = SMTPClient.over_transport(
        recorder.transport(client_end, page["client_tls"], "client"),
        host=HOST,
        hostname="mail.abc.example",
        tls_on_connect=implicit,
        starttls=None if implicit else True,
        username="john",
        password="pencil",
    )
    server = smtp_server(tls_on_connect=implicit)
    server_side = recorder.transport(server_end, page["server_tls"], "server")
    assert run(smtp_login(server, server_side, client)) == "SCRAM-SHA-256-PLUS"
    server_data, client_data = recorder.last("server"), recorder.last("client")
    assert server_data is not None and len(server_data) == 32
    assert server_data == client_data


def test_pop3_logs_in_with_plus_after_stls(page: dict[str, Any], tmp_path: Path) -> None:
    recorder = Recorder(page)
    server_end, client_end = socket.socketpair()
    server = POP3Server(
        MaildirStore(tmp_path, {"john": "pencil"}),
        hostname=HOST,
        auth_failure_delay=0,
        ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
    )

    async def session() -> tuple[list[str], str, bool]:
        serving = asyncio.ensure_future(
            server.serve_transport(recorder.transport(server_end, page["server_tls"], "server"))
        )
        client = POP3Client.over_transport(
            recorder.transport(client_end, page["client_tls"], "client"), host=HOST, stls=True
        )
        async with client:
            offered = list(client.capabilities.get("SASL", ()))
            mechanism = scram_client(
                "john", "pencil", offered=offered, channel_bindings=client.channel_bindings()
            )
            assert mechanism is not None
            await client.authenticate(mechanism)
            listed = await client.stat()
        await asyncio.wait_for(serving, 10)
        return offered, mechanism.name, mechanism.complete and listed == (0, 0)

    offered, used, complete = run(session())
    assert "SCRAM-SHA-256-PLUS" in offered
    assert used == "SCRAM-SHA-256-PLUS" and complete
    server_data, client_data = recorder.last("server"), recorder.last("client")
    assert server_data is not None and len(server_data) == 32
    assert server_data == client_data


@pytest.mark.parametrize("server_tls", ["pyopenssl", "stdlib"])
def test_pop3_downgrade_and_stdlib_server(
    page: dict[str, Any], tmp_path: Path, server_tls: str
) -> None:
    """A POP3 client with binding data says ``y`` to plain SCRAM-SHA-256: refused where
    CAPA listed -PLUS (pyOpenSSL server), accepted where it did not (stdlib TLS)."""
    server_end, client_end = socket.socketpair()
    stdlib = server_tls == "stdlib"
    server = POP3Server(
        MaildirStore(tmp_path, {"john": "pencil"}),
        hostname=HOST,
        auth_failure_delay=0,
        ssl_context=stdlib_server_context(page)
        if stdlib
        else ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
    )

    async def session() -> tuple[list[str], bool]:
        if stdlib:
            reader, writer = await asyncio.open_connection(sock=server_end)
            serving = asyncio.ensure_future(server.serve_stream(reader, writer))
        else:
            server_side = page["OpenSSLTransport"](server_end, page["server_tls"])
            serving = asyncio.ensure_future(server.serve_transport(server_side))
        client = POP3Client.over_transport(
            page["OpenSSLTransport"](client_end, page["client_tls"]), host=HOST, stls=True
        )
        mechanism = ScramSHA256Client("john", "pencil", channel_binding_supported=True)
        async with client:
            offered = list(client.capabilities.get("SASL", ()))
            with contextlib.suppress(POP3AuthenticationError):
                await client.authenticate(mechanism)
        await asyncio.wait_for(serving, 10)
        return offered, mechanism.complete

    offered, complete = run(session())
    assert ("SCRAM-SHA-256-PLUS" in offered) is not stdlib
    assert "SCRAM-SHA-256" in offered
    assert complete is stdlib


def stdlib_server_context(page: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    page["issued"].configure_cert(context)
    return context


class FirstMessages(ScramSHA256Server):
    """SCRAM-SHA-256 that keeps every client-first-message it is given."""

    seen: ClassVar[list[bytes | None]] = []

    def start(self, initial_response: bytes | None) -> Step:
        self.seen.append(initial_response)
        return super().start(initial_response)


def test_a_stdlib_tls_server_offers_no_plus_and_a_binding_client_says_y(
    page: dict[str, Any],
) -> None:
    """The server's TLS is the standard library's: no binding data, no -PLUS. The
    client has data, so its SCRAM-SHA-256 carries ``y``, which such a server accepts."""
    FirstMessages.seen = []
    server_end, client_end = socket.socketpair()
    server = SMTPServer(
        Handler(),
        hostname=HOST,
        auth_failure_delay=0,
        ssl_context=stdlib_server_context(page),
        auth={
            "SCRAM-SHA-256-PLUS": lambda: ScramSHA256PlusServer(KEYS.get),
            "SCRAM-SHA-256": lambda: FirstMessages(KEYS.get),
        },
    )
    client = SMTPClient.over_transport(
        page["OpenSSLTransport"](client_end, page["client_tls"]),
        host=HOST,
        starttls=True,
        username="john",
        password="pencil",
    )

    async def session() -> str | None:
        reader, writer = await asyncio.open_connection(sock=server_end)
        serving = asyncio.ensure_future(server.serve_stream(reader, writer))
        async with client:
            offered = client.connection.extensions.auth
            used = client.authenticated_with
            assert TLS_EXPORTER in client.channel_bindings()
        await asyncio.wait_for(serving, 10)
        assert "SCRAM-SHA-256-PLUS" not in offered
        return used

    assert run(session()) == "SCRAM-SHA-256"
    [first] = FirstMessages.seen
    assert first is not None and first.startswith(b"y,,n=john,")


def test_a_stdlib_tls_client_uses_plain_scram_with_a_plus_server(page: dict[str, Any]) -> None:
    """The client's TLS is the standard library's: -PLUS is offered, but the client has
    no binding data, so it runs SCRAM-SHA-256 with ``n``, which the server accepts."""
    server_end, client_end = socket.socketpair()
    client_context = ssl.create_default_context()
    page["ca"].configure_trust(client_context)

    async def session() -> tuple[frozenset[str], str | None]:
        serving = asyncio.ensure_future(
            smtp_server().serve_transport(page["OpenSSLTransport"](server_end, page["server_tls"]))
        )
        reader, writer = await asyncio.open_connection(sock=client_end)
        client = SMTPClient.over_stream(
            reader,
            writer,
            host=HOST,
            starttls=True,
            ssl_context=client_context,
            username="john",
            password="pencil",
        )
        async with client:
            offered = client.connection.extensions.auth
            used = client.authenticated_with
            assert client.channel_bindings() == {}
        await asyncio.wait_for(serving, 10)
        return offered, used

    offered, used = run(session())
    assert "SCRAM-SHA-256-PLUS" in offered
    assert used == "SCRAM-SHA-256"


def test_a_client_that_could_bind_and_says_y_to_a_plus_server_is_refused(
    page: dict[str, Any],
) -> None:
    """What an attacker who struck -PLUS from the list would cause: the server offered it,
    the client could bind but chose plain SCRAM with ``y``: 535 (RFC 5802 §6)."""
    server_end, client_end = socket.socketpair()
    client = SMTPClient.over_transport(
        page["OpenSSLTransport"](client_end, page["client_tls"]),
        host=HOST,
        starttls=True,
        sasl_mechanism=lambda: ScramSHA256Client("john", "pencil", channel_binding_supported=True),
    )
    server_side = page["OpenSSLTransport"](server_end, page["server_tls"])
    with pytest.raises(AuthenticationError) as info:
        run(smtp_login(smtp_server(), server_side, client))
    assert info.value.reply.code == 535


class ManInTheMiddle:
    """Terminates the client's TLS with a certificate the client trusts, opens its own
    TLS to the server, and relays the plaintext; ``strip`` removes -PLUS from EHLO."""

    def __init__(self, page: dict[str, Any], *, strip: bool) -> None:
        self.page = page
        self.strip = strip
        self.client_end, front = socket.socketpair()
        back, self.server_end = socket.socketpair()
        self.front = page["OpenSSLTransport"](front, page["server_tls"])
        self.back = page["OpenSSLTransport"](back, page["client_tls"])

    async def run(self) -> None:
        context = ssl.create_default_context()  # unused by this transport
        await asyncio.gather(
            self.front.start_tls(context, server_side=True),
            self.back.start_tls(context, server_side=False, server_hostname=HOST),
        )
        await asyncio.gather(
            self._pump(self.back, self.front, from_server=True),
            self._pump(self.front, self.back, from_server=False),
        )

    async def _pump(self, source: Any, sink: Any, *, from_server: bool) -> None:
        try:
            while data := await source.receive_some(65536):
                if self.strip and from_server:
                    data = data.replace(b" SCRAM-SHA-256-PLUS", b"")
                await sink.send_all(data)
        except OSError:
            pass
        finally:
            await sink.aclose()


def relayed_login(page: dict[str, Any], middle: ManInTheMiddle, **server_options: Any) -> Any:
    client = SMTPClient.over_transport(
        page["OpenSSLTransport"](middle.client_end, page["client_tls"]),
        host=HOST,
        tls_on_connect=True,
        username="john",
        password="pencil",
    )
    server = smtp_server(tls_on_connect=True, **server_options)
    server_side = page["OpenSSLTransport"](middle.server_end, page["server_tls"])

    async def session() -> str | None:
        relaying = asyncio.ensure_future(middle.run())
        try:
            return await smtp_login(server, server_side, client)
        finally:
            relaying.cancel()
            await asyncio.gather(relaying, return_exceptions=True)

    return run(session())


@pytest.mark.parametrize("strip", [False, True], ids=["relayed", "plus-struck"])
def test_a_man_in_the_middle_cannot_relay_a_bound_login(
    page: dict[str, Any], strip: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Relayed as is, the client binds to the attacker's TLS connection and the server
    finds other data; with -PLUS struck, the client's ``y`` gives the attack away."""
    caplog.set_level(logging.INFO, logger="smtpcore.server")
    with pytest.raises(AuthenticationError) as info:
        relayed_login(page, ManInTheMiddle(page, strip=strip))
    assert info.value.reply.code == 535
    used = "SCRAM-SHA-256" if strip else "SCRAM-SHA-256-PLUS"
    assert f"mechanism={used}" in caplog.text


def test_without_binding_the_same_man_in_the_middle_gets_through(page: dict[str, Any]) -> None:
    """The control: the server offers plain SCRAM-SHA-256 only, and the relay succeeds."""
    used = relayed_login(
        page,
        ManInTheMiddle(page, strip=False),
        auth=Authenticator(get_scram_credentials=KEYS.get, mechanisms=["SCRAM-SHA-256"]),
    )
    assert used == "SCRAM-SHA-256"


# -- the trio adapter ------------------------------------------------------------------


class TrioOpenSSLTransport:
    """The page's transport for trio: the same pyOpenSSL memory buffers over a trio
    socket, so that the trio adapter's sessions bind their logins too."""

    def __init__(self, page: dict[str, Any], sock: socket.socket, context: Any) -> None:
        self.page = page
        self.sock = trio.socket.from_stdlib_socket(sock)
        self.tls_context = context
        self.tls_conn: Any = None
        self.given: list[bytes | None] = []

    def channel_binding(self, kind: str) -> bytes | None:
        tls = self.tls_conn
        if kind != TLS_EXPORTER or tls is None or tls.get_protocol_version_name() != "TLSv1.3":
            return None
        data: bytes = tls.export_keying_material(b"EXPORTER-Channel-Binding", 32, b"")
        self.given.append(data)
        return data

    async def receive_some(self, max_bytes: int) -> bytes:
        if self.tls_conn is None:
            return await self.sock.recv(max_bytes)
        while True:
            try:
                data: bytes = self.page["_tls_call"](self.tls_conn.recv, max_bytes)
                return data
            except SSL.WantReadError:
                if not await self._read_records():
                    return b""
            except SSL.ZeroReturnError:
                return b""

    async def send_all(self, data: bytes) -> None:
        if self.tls_conn is not None:
            self.page["_tls_call"](self.tls_conn.sendall, data)
            data = self._records_out()
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        tls = self.tls_conn = SSL.Connection(self.tls_context, None)
        if server_side:
            tls.set_accept_state()
        else:
            tls.set_connect_state()
            tls.set_tlsext_host_name(HOST.encode())
        while True:
            try:
                self.page["_tls_call"](tls.do_handshake)
                break
            except SSL.WantReadError:
                await self.send_all_raw(self._records_out())
                if not await self._read_records():
                    raise ConnectionResetError("closed during the TLS handshake") from None
        await self.send_all_raw(self._records_out())

    async def send_all_raw(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]

    def _records_out(self) -> bytes:
        records = b""
        while True:
            try:
                records += self.tls_conn.bio_read(65536)
            except SSL.WantReadError:
                return records

    async def _read_records(self) -> bool:
        data = await self.sock.recv(65536)
        if data:
            self.tls_conn.bio_write(data)
        return bool(data)

    async def aclose(self) -> None:
        self.sock.close()
        await trio.lowlevel.checkpoint()

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return None

    @property
    def local_address(self) -> tuple[str, int] | None:
        return None

    @property
    def tls(self) -> TLSInfo | None:
        if self.tls_conn is None:
            return None
        return TLSInfo(self.tls_conn.get_protocol_version_name(), None, None)


def test_the_trio_adapter_binds_smtp_and_pop3_logins(page: dict[str, Any], tmp_path: Path) -> None:
    import smtpcore.trio

    async def smtp() -> tuple[str | None, bytes | None, bytes | None]:
        server_end, client_end = socket.socketpair()
        server_side = TrioOpenSSLTransport(page, server_end, page["server_tls"])
        client_side = TrioOpenSSLTransport(page, client_end, page["client_tls"])
        server = smtpcore.trio.SMTPServer(
            Handler(),
            hostname=HOST,
            auth_failure_delay=0,
            ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
            auth=Authenticator(get_scram_credentials=KEYS.get),
        )
        client = smtpcore.trio.SMTPClient.over_transport(
            client_side, host=HOST, starttls=True, username="john", password="pencil"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_transport, server_side)
            async with client:
                used = client.authenticated_with
        return used, server_side.given[-1], client_side.given[-1]

    async def pop3() -> tuple[str, bool]:
        server_end, client_end = socket.socketpair()
        server = smtpcore.trio.POP3Server(
            MaildirStore(tmp_path, {"john": "pencil"}),
            hostname=HOST,
            auth_failure_delay=0,
            ssl_context=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH),
        )
        client = smtpcore.trio.POP3Client.over_transport(
            TrioOpenSSLTransport(page, client_end, page["client_tls"]), host=HOST, stls=True
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                server.serve_transport,
                TrioOpenSSLTransport(page, server_end, page["server_tls"]),
            )
            async with client:
                mechanism = scram_client(
                    "john",
                    "pencil",
                    offered=client.capabilities.get("SASL", ()),
                    channel_bindings=client.channel_bindings(),
                )
                assert mechanism is not None
                await client.authenticate(mechanism)
        return mechanism.name, mechanism.complete

    used, server_data, client_data = trio.run(smtp)
    assert used == "SCRAM-SHA-256-PLUS"
    assert server_data is not None and len(server_data) == 32 and server_data == client_data
    assert trio.run(pop3) == ("SCRAM-SHA-256-PLUS", True)
