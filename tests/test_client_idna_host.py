"""A client given a non-ASCII host name connects to, and checks the certificate of, the
host IDNA 2008 names (``mx.straße.test``: ``mx.xn--strae-oqa.test``), not the one the
socket layer's and :mod:`ssl`'s IDNA 2003 codec would make of it (``mx.strasse.test``)."""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peers import ADAPTERS, LOOPBACK, module, run, running_smtp_server
from smtpcore import sync
from smtpcore._dial_name import dial_name
from smtpcore.testing._scripted import ScriptedClient
from smtpcore.testing._wire import checked_host
from test_adapters_client import Sink

U_HOST = "mx.straße.test"
A_HOST = "mx.xn--strae-oqa.test"
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"


class _TLS:
    """A CA, and a server whose certificate names ``A_HOST`` alone, recording the SNI."""

    def __init__(self) -> None:
        import trustme

        ca = trustme.CA()
        self.server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(A_HOST).configure_cert(self.server_context)
        self.client_context = ssl.create_default_context()
        ca.configure_trust(self.client_context)
        self.sni: list[str | None] = []

        def record(_sock: Any, name: str | None, _context: Any) -> None:
            self.sni.append(name)

        self.server_context.sni_callback = record


@pytest.fixture
def looked_up(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names the socket layer is asked for; ``A_HOST`` resolves to loopback, and
    any other name (``mx.strasse.test`` among them) to nothing."""
    names: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name in (LOOPBACK, "localhost", "None", ""):  # the server's own binding
            return real(host, *args, **kwargs)
        names.append(name)
        if name != A_HOST:
            raise socket.gaierror(socket.EAI_NONAME, "not this test's name")
        return real(LOOPBACK, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield names


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_adapters_connect_to_and_verify_the_a_label(
    adapter: str, looked_up: list[str], tmp_path: Path
) -> None:
    tls = _TLS()
    handler = Sink()
    with running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                "bob@pqr.example",
                host=U_HOST,
                port=server.port,
                ssl_context=tls.client_context,
                starttls=True,
            ),
        )
    assert set(looked_up) == {A_HOST}
    assert tls.sni == [A_HOST]
    assert len(handler.messages) == 1


def test_the_blocking_client_connects_to_and_verifies_the_a_label(looked_up: list[str]) -> None:
    tls = _TLS()
    handler = Sink()
    with (
        running_smtp_server("asyncio", handler, ssl_context=tls.server_context) as server,
        sync.SMTPClient(
            U_HOST, server.port, ssl_context=tls.client_context, starttls=True, timeout=10
        ) as client,
    ):
        client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
    assert set(looked_up) == {A_HOST}
    assert tls.sni == [A_HOST]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_an_explicit_server_hostname_is_verified_as_its_a_label(adapter: str) -> None:
    """The certificate names the A-label; ``ssl`` would check mx.strasse.test."""
    tls = _TLS()
    with running_smtp_server(adapter, Sink(), ssl_context=tls.server_context) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                "bob@pqr.example",
                host=server.host,
                port=server.port,
                ssl_context=tls.client_context,
                server_hostname=U_HOST,
                starttls=True,
            ),
        )
    assert tls.sni == [A_HOST]


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_the_clients_hold_the_a_label(adapter: str) -> None:
    mod = module(adapter)
    for client in (mod.SMTPClient(U_HOST), mod.POP3Client(U_HOST)):
        assert (client.host, client.server_hostname) == (A_HOST, A_HOST)
    pop3 = mod.POP3Client("127.0.0.1", server_hostname="POP.Straße.test")
    assert (pop3.host, pop3.server_hostname) == ("127.0.0.1", "pop.xn--strae-oqa.test")


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_host_idna_refuses_is_refused_when_the_client_is_built(adapter: str) -> None:
    mod = module(adapter)
    for make in (mod.SMTPClient, mod.POP3Client):
        with pytest.raises(ValueError, match=r"host 'mx\.-straße\.test'"):
            make("mx.-straße.test")
        with pytest.raises(ValueError, match="server_hostname"):
            make("127.0.0.1", server_hostname="a\u200db.test")


LONGEST_NAME = ".".join(["x" * 63] * 3 + ["y" * 61])  # 253 characters, 255 octets in DNS


def test_names_that_need_no_conversion_are_kept() -> None:
    names = ("MX.Example", "mx.example.", "127.0.0.1", "::1", "fe80::1%\u00e9", "localhost")
    for name in (*names, "[::1]", "x" * 63 + ".example", LONGEST_NAME, LONGEST_NAME + "."):
        assert dial_name(name) == name


def test_a_trailing_dot_is_kept_after_converting() -> None:
    """``straße.`` is the root-anchored name, as ``mx.example.`` is: the dot stays."""
    assert dial_name("Bücher.example.") == "xn--bcher-kva.example."
    assert dial_name("straße.") == "xn--strae-oqa."
    assert dial_name("mx.straße.test") == "mx.xn--strae-oqa.test"


BAD_ASCII_HOSTS = [
    ("mx.a..b", "empty label"),
    (".mx.example", "empty label"),
    ("mx.example..", "empty label"),
    ("", "empty name"),
    (".", "empty name"),
    ("x" * 64 + ".test", "over 63 octets"),
    (LONGEST_NAME + "y", "over 255 octets"),
]


@pytest.mark.parametrize(("host", "why"), BAD_ASCII_HOSTS)
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_bad_ascii_host_is_refused_when_the_client_is_built(
    adapter: str, host: str, why: str
) -> None:
    """The socket layer's IDNA codec refused such a name with a bare UnicodeError at the
    first connection, outside the clients' error family; a bad non-ASCII name was a
    ValueError when the client was built, and so is this one now."""
    mod = module(adapter)
    refusal = re.escape(f"{host!r} is no host name or address: ") + f".*{why}"
    makers = (mod.SMTPClient, mod.POP3Client, sync.SMTPClient, sync.POP3Client)
    for make in makers:
        with pytest.raises(ValueError, match=f"^host {refusal}"):
            make(host)
        if host:  # an empty server_hostname is none: the host's name is used
            with pytest.raises(ValueError, match=f"^server_hostname {refusal}"):
                make("127.0.0.1", server_hostname=host)
    with pytest.raises(ValueError, match=why):
        ScriptedClient(host, 25, [])
    with pytest.raises(ValueError, match=why):
        checked_host(host)


def test_the_testing_clients_connect_to_the_a_label() -> None:
    assert checked_host(U_HOST) == A_HOST
    scripted = ScriptedClient(U_HOST, 25, [], server_hostname="smtp.straße.test")
    assert (scripted.host, scripted.server_hostname) == (A_HOST, "smtp.xn--strae-oqa.test")
