"""``python -m smtpcore serve`` behind a proxy: ``--proxy-protocol-from`` on the smtp,
submission, smtps, pop3 and pop3s listeners (not LMTP), ``--xclient-from`` on the smtp
listener only, both checked at start and kept through a reload (SIGHUP)."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from peers import make_tls_files
from smtpcore.server import ConfigError, MailServer, ServerConfig
from smtpcore.server.cli import build_parser, config_from_args, main
from test_adapters_proxy import TLSAfterHeader
from test_cli_serve import LOOPBACK, _until, serve

HEADER = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25\r\n"
NO_HEADER = b"QUIT\r\n"
"""What a client that does not come through the proxy may start with."""


def _args(*argv: str) -> ServerConfig:
    return config_from_args(build_parser().parse_args(["serve", *argv]))


def test_the_options_reach_the_configuration() -> None:
    config = _args(
        "--proxy-protocol-from",
        "10.0.0.0/8",
        "--proxy-protocol-from",
        "192.0.2.1",
        "--proxy-protocol-from",
        "2001:db8::/32",
        "--xclient-from",
        "127.0.0.1",
    )
    assert config.proxy_protocol_from == ("10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32")
    assert config.xclient_from == ("127.0.0.1/32",)
    assert _args("--proxy-protocol-timeout", "2").proxy_protocol_timeout == 2.0
    defaults = _args()
    assert defaults.proxy_protocol_from == () and defaults.xclient_from == ()
    assert defaults.proxy_protocol_timeout == 5.0  # Postfix's smtpd_upstream_proxy_timeout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--proxy-protocol-from", "10.0.0.0/33"],
            "--proxy-protocol-from: '10.0.0.0/33' is not an IP address or network",
        ),
        (
            ["--proxy-protocol-timeout", "0"],
            "--proxy-protocol-timeout must be positive",
        ),
        (
            ["--xclient-from", "proxy.example"],
            "--xclient-from: 'proxy.example' is not an IP address or network",
        ),
        (
            ["--xclient-from", "127.0.0.1", "--smtp-port", "0"],
            "--xclient-from applies to the smtp listener, which is off",
        ),
        (
            [
                *("--proxy-protocol-from", "127.0.0.1", "--lmtp-port", "2424"),
                *("--smtp-port", "0", "--submission-port", "0", "--pop3-port", "0"),
            ],
            "--proxy-protocol-from: none of the listeners it applies to is on",
        ),
    ],
)
def test_a_mistake_stops_the_server_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
        _args(*argv)
    assert main(["serve", "--data-dir", str(tmp_path / "data"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # stopped before it made anything


# -- the listeners of one MailServer -----------------------------------------------------


def _greeting(port: int, header: bytes) -> bytes:
    """The first line a listener says after ``header``; b"" if it closes instead."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(header)
        try:
            with sock.makefile("rb") as lines:
                return lines.readline()
        except ConnectionResetError:
            return b""


def _ehlo_keywords(port: int, header: bytes) -> list[bytes]:
    with (
        socket.create_connection((LOOPBACK, port), timeout=10) as sock,
        sock.makefile("rb") as lines,
    ):
        sock.sendall(header)
        assert lines.readline().startswith(b"220 ")
        sock.sendall(b"EHLO client.example\r\n")
        keywords = []
        while (line := lines.readline())[3:4] == b"-":
            keywords.append(line[4:].split()[0])
        keywords.append(line[4:].split()[0])
        sock.sendall(b"QUIT\r\n")
        return keywords


def _tls_greeting(port: int, context: ssl.SSLContext) -> bytes:
    client = TLSAfterHeader(port, HEADER, context)
    try:
        return client.read_line()
    finally:
        client.close()


def _listening() -> socket.socket:
    return socket.create_server((LOOPBACK, 0))


def test_each_listener_takes_the_options_it_should(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = make_tls_files(tmp_path)
    names = ("smtp", "submission", "smtps", "lmtp", "pop3", "pop3s")
    ports: dict[str, Any] = {f"{name}_port": 1 for name in names}  # the sockets replace them
    config = ServerConfig(
        domains=("pqr.example",),
        users={"alice@pqr.example": "pw"},
        data_dir=tmp_path / "data",
        hostname="mx.pqr.example",
        tls_cert=tls.cert_file,
        tls_key=tls.key_file,
        **ports,
        proxy_protocol_from=("127.0.0.1",),
        xclient_from=("127.0.0.0/8",),
    )
    client_context = tls.client_context

    def check(ports: dict[str, int]) -> dict[str, Any]:
        return {
            "without a header": {
                name: _greeting(ports[name], NO_HEADER)[:4]
                for name in ("smtp", "submission", "pop3", "lmtp")
            },
            "with a header": {
                name: _greeting(ports[name], HEADER)[:4] for name in ("smtp", "submission", "pop3")
            },
            "implicit TLS": {
                name: _tls_greeting(ports[name], client_context)[:4] for name in ("smtps", "pop3s")
            },
            "XCLIENT": {
                name: b"XCLIENT" in _ehlo_keywords(ports[name], HEADER.replace(b"192.0.2.7", n))
                for name, n in (("smtp", b"127.0.0.9"), ("submission", b"127.0.0.9"))
            }
            | {"smtp from elsewhere": b"XCLIENT" in _ehlo_keywords(ports["smtp"], HEADER)},
        }

    expected = {
        "without a header": {"smtp": b"", "submission": b"", "pop3": b"", "lmtp": b"220 "},
        "with a header": {"smtp": b"220 ", "submission": b"220 ", "pop3": b"+OK "},
        "implicit TLS": {"smtps": b"220 ", "pop3s": b"+OK "},
        # The client the header names is the one xclient_from is asked about.
        "XCLIENT": {"smtp": True, "submission": False, "smtp from elsewhere": False},
    }

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        sockets = {name: _listening() for name in names}
        async with MailServer(config, sockets=sockets) as server:
            ports = {listener.name: listener.port for listener in server.listeners}
            before = await asyncio.to_thread(check, ports)
            await server.reload(config)  # what SIGHUP does
            after = await asyncio.to_thread(check, ports)
        return before, after

    caplog.set_level("INFO")
    before, after = asyncio.run(asyncio.wait_for(main(), 60))
    assert before == expected
    assert after == expected
    assert "not a trusted proxy" not in caplog.text  # every connection came from 127.0.0.1
    assert "disconnect from [192.0.2.7]:40000" in caplog.text  # the log names the client


def _closed_after_half_a_header(port: int) -> bool:
    """Whether the server closes a connection that sends half a PROXY header and then
    nothing, before this client's own 10 seconds are out."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(HEADER[:20])
        try:
            return sock.recv(1024) == b""
        except ConnectionResetError:  # closed, the header's start unread
            return True


def test_the_proxy_timeout_reaches_smtp_and_pop3_listeners(tmp_path: Path) -> None:
    """``--proxy-protocol-timeout`` bounds the header on every proxied listener, not the
    greeting timeout's minutes."""
    names = ("smtp", "submission", "pop3")
    ports: dict[str, Any] = {f"{name}_port": 1 for name in names}  # the sockets replace them
    config = ServerConfig(
        domains=("pqr.example",),
        users={"alice@pqr.example": "pw"},
        data_dir=tmp_path / "data",
        hostname="mx.pqr.example",
        **ports,
        proxy_protocol_from=("127.0.0.1",),
        proxy_protocol_timeout=0.2,
    )

    async def main() -> dict[str, bool]:
        sockets = {name: _listening() for name in names}
        async with MailServer(config, sockets=sockets) as server:
            ports = {listener.name: listener.port for listener in server.listeners}
            return {
                name: await asyncio.to_thread(_closed_after_half_a_header, ports[name])
                for name in names
            }

    assert asyncio.run(asyncio.wait_for(main(), 60)) == dict.fromkeys(names, True)


def test_serve_behind_a_proxy_across_a_reload(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice@pqr.example:pw\n")
    extra = (
        "--users-file",
        str(users),
        "--proxy-protocol-from",
        "127.0.0.1",
        "--log-level",
        "info",
    )

    def login(port: int, user: str) -> list[bytes]:
        with (
            socket.create_connection((LOOPBACK, port), timeout=10) as sock,
            sock.makefile("rb") as lines,
        ):
            sock.sendall(HEADER + f"USER {user}\r\nPASS pw\r\nQUIT\r\n".encode())
            return [lines.readline()[:4] for _ in range(4)]

    with serve(tmp_path / "pqr", "pqr.example", [], listeners=("pop3",), extra=extra) as pqr:
        port = pqr.ports["pop3"]
        assert login(port, "alice@pqr.example") == [b"+OK "] * 4
        assert _greeting(port, NO_HEADER) == b""  # no header: closed
        users.write_text("alice@pqr.example:pw\nbob@pqr.example:pw\n")
        pqr.process.popen.send_signal(signal.SIGHUP)
        until: Callable[[], bool] = lambda: "reloaded: 2 users" in pqr.log()  # noqa: E731
        _until(until, "the reload", pqr)
        assert login(port, "bob@pqr.example") == [b"+OK "] * 4
        assert _greeting(port, NO_HEADER) == b""
        assert "pop3: disconnect from [192.0.2.7]:40000" in pqr.log()
        assert pqr.stop() == 0
