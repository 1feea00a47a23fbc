"""The reference server in one process: listeners, local delivery, submission, relay, LMTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import email.policy
import errno
import io
import json
import logging
import os
import smtplib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from hypothesis import example, given

from peers import free_port
from slow_writes import SlowWrites
from smtpcore.address import Mailbox
from smtpcore.asyncio import SMTPClient
from smtpcore.handler import Envelope, Session
from smtpcore.maildrop import Maildir as MaildropMaildir
from smtpcore.maildrop import pop3_size
from smtpcore.routing import LocalDelivery, Rejected, RemoteDelivery, Router, StaticResolver
from smtpcore.server import ConfigError, MailServer, ServerConfig, maildir, mailserver
from smtpcore.server.app import MAX_HOPS, MailStore
from smtpcore.server.log import delivery_line
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from smtpcore.server.origin import MessageOrigin
from smtpcore.server.queue import Queue, QueuedRecipient
from smtpcore.server.queuectl import LOCK_NAME, QueueCommand, running_server, submit
from smtpcore.smtp import UNAVAILABLE, Reply, Xforward
from smtpcore.testing import strategies as sst
from test_adapters_proxy import OFFLOADED, V2, ssl_tlv, v2_unix, v2_with_tlvs

LOOPBACK = "127.0.0.1"
T = TypeVar("T")


def _listening() -> socket.socket:
    sock = socket.create_server((LOOPBACK, 0))
    return sock


def _config(tmp_path: Path, domain: str, users: dict[str, str], **options: Any) -> ServerConfig:
    return ServerConfig(
        domains=(domain,),
        users=users,
        data_dir=tmp_path / domain,
        hostname=f"mx.{domain}",
        # The servers in these tests relay to each other over loopback. Every listener
        # but smtp is off unless a test turns it on (port 1, with a socket of its own):
        # one left on its fixed default port fails whenever another process holds it.
        **{
            "submission_port": 0,
            "pop3_port": 0,
            "retry_after": 0.2,
            "allow_internal_relay": True,
            "auth_failure_delay": 0.0,  # failed logins answered at once: tests stay fast
            "min_free_space": 0,  # a small temporary filesystem still takes mail
            **options,
        },
    )


def _messages(config: ServerConfig, key: str) -> list[bytes]:
    return [p.read_bytes() for p in Maildir(config.mailbox_path(key)).messages()]


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async def wait() -> None:
        while not check():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


async def _start_and_stop(config: ServerConfig, resolver: StaticResolver) -> None:
    """A server started on ``config`` and stopped: what it carries out as it starts."""
    again = MailServer(config, sockets={"smtp": _listening()}, resolver=resolver)
    await again.start()
    await again.aclose(grace=0.1)


def _run(main: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(main(), 30))


def _port(server: MailServer, name: str) -> int:
    return next(listener.port for listener in server.listeners if listener.name == name)


def test_inbound_mail_is_delivered_and_nothing_is_relayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    config = _config(
        tmp_path,
        "pqr.example",
        {"brendon@pqr.example": "pw"},
        submission_port=1,  # on: the socket given below is used
    )

    def client(port: int) -> list[object]:
        outcomes: list[object] = []
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            outcomes.append(
                smtp.sendmail(
                    "john@abc.example", ["Brendon@PQR.example"], b"Subject: hi\r\n\r\nx\r\n"
                )
            )
            for rcpt in ("nobody@pqr.example", "x@elsewhere.example", "a%b@pqr.example"):
                try:
                    smtp.sendmail("john@abc.example", [rcpt], b"x")
                except smtplib.SMTPRecipientsRefused as exc:
                    outcomes.append(exc.recipients[rcpt])
            outcomes.append(smtp.sendmail("", ["postmaster@pqr.example"], b"Subject: pm\r\n\r\n"))
        return outcomes

    async def main() -> list[object]:
        sockets = {"smtp": _listening(), "submission": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            assert [str(listener).split(" on ")[0] for listener in server.listeners] == [
                "smtp listening",
                "submission listening",
            ]
            return await asyncio.to_thread(client, _port(server, "smtp"))

    ok, unknown, relay, trick, postmaster = _run(main)
    assert ok == {} and postmaster == {}
    assert unknown[0] == 550 and unknown[1].startswith(b"5.1.1")  # type: ignore[index]
    assert relay[0] == 550 and relay[1].startswith(b"5.7.1")  # type: ignore[index]
    assert trick[0] == 550 and trick[1].startswith(b"5.7.1")  # type: ignore[index]
    (stored,) = _messages(config, "brendon@pqr.example")
    assert stored.startswith(b"Return-Path: <john@abc.example>\nReceived: from [127.0.0.1]")
    assert b"\tby mx.pqr.example (smtpcore) with ESMTP id " in stored
    assert b"\tfor <Brendon@PQR.example>; " in stored
    assert stored.endswith(b"\nSubject: hi\n\nx\n")
    (to_postmaster,) = _messages(config, "postmaster@pqr.example")
    assert to_postmaster.startswith(b"Return-Path: <>\n")
    assert list((config.queue_dir / "envelopes").iterdir()) == []
    log = [r.getMessage() for r in caplog.records]
    assert any(
        "relay=local" in line and "status=sent (delivered to maildir" in line for line in log
    )
    assert any(
        line.startswith("smtp: disconnect from [127.0.0.1]:") and "rcpt=2/5 messages=2" in line
        for line in log
    )


def test_an_xclient_logs_the_proxys_part_then_the_named_client(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After XCLIENT the server acts as if the named client had connected anew: the
    proxy's part of the session gets its own ``disconnect from`` line, with its EHLO
    name and counts, before the XCLIENT line, and the named client's line ends the
    session with its own. The proxy's part had no line, and the stats it ran up
    were lost when ``handle_connect`` started them again for the named client."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {}, xclient_from=("127.0.0.0/8",))

    def client(port: int) -> None:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for command in (
                b"EHLO proxy.test",
                b"XCLIENT ADDR=192.0.2.7 PORT=40312",
                b"EHLO mail.abc.example",
                b"QUIT",
            ):
                sock.sendall(command + b"\r\n")
                while (line := reader.readline())[3:4] == b"-":
                    pass
                assert line[:1] in (b"2",), line

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(client, _port(server, "smtp"))
            for _ in range(100):  # the last line is written as the session ends
                if "[192.0.2.7]:40312 helo" in caplog.text:
                    break
                await asyncio.sleep(0.05)

    _run(main)
    lines = [
        record.getMessage()
        for record in caplog.records
        if "disconnect from" in record.getMessage() or "XCLIENT from" in record.getMessage()
    ]
    assert len(lines) == 3, lines
    assert lines[0].startswith("smtp: disconnect from [127.0.0.1]:"), lines
    assert " helo=proxy.test " in lines[0]
    assert lines[1].startswith("XCLIENT from [127.0.0.1]:")
    assert lines[2].startswith("smtp: disconnect from [192.0.2.7]:40312 helo=mail.abc.example ")


def _send_forwarded(
    port: int,
    xforward: bytes | None,
    helo: bytes = b"EHLO filter.test",
    *,
    xforward_reply: bytes = b"250 ",
    then: tuple[bytes, ...] = (),
) -> None:
    """A content filter's session: ``helo``, then ``xforward`` (if any), answered
    ``xforward_reply``, the commands ``then`` (XCLIENT's new EHLO), and one message."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        commands = [helo, *([xforward] if xforward else []), *then]
        commands += [b"MAIL FROM:<a@abc.example>", b"RCPT TO:<b@pqr.example>", b"DATA"]
        for command in [*commands, b"Subject: xf\r\n\r\nhi\r\n.", b"QUIT"]:
            sock.sendall(command + b"\r\n")
            while (line := reader.readline())[3:4] == b"-":
                pass
            if command == xforward:
                assert line.startswith(xforward_reply), (command, line)
            else:
                assert line[:1] in (b"2", b"3"), (command, line)


def test_xforward_names_the_client_in_the_received_line_and_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Postfix's XFORWARD_README: a content filter passes on the original client, and
    the server names that client, not the filter, where it logs the message and in
    its Received line (Postfix's smtpd hands FORWARD_HELO and FORWARD_NAMADDR to
    cleanup for it). A name the forwarded HELO chose is kept to a domain's
    characters, as a HELO is."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, xclient_from=(LOOPBACK,))
    xforward = b"XFORWARD NAME=client.example ADDR=203.0.113.77 PORT=4711 HELO=c(l)ient.example"

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(_send_forwarded, _port(server, "smtp"), xforward)

    _run(main)
    (stored,) = _messages(config, "b@pqr.example")
    assert b"\nReceived: from c?l?ient.example ([203.0.113.77])\n" in stored, stored
    (line,) = [r.getMessage() for r in caplog.records if "client=" in r.getMessage()]
    assert "client=[203.0.113.77]:4711 helo=c(l)ient.example" in line, line
    # The filter's own session is still the filter's: its disconnect line names it.
    assert any(
        r.getMessage().startswith("smtp: disconnect from [127.0.0.1]:") for r in caplog.records
    )


def _sent_through_proxy(config: ServerConfig, header: bytes) -> bytes:
    """The message stored for b@pqr.example after a client behind a proxy (``header``
    first) sent it to the reference server's smtp listener."""

    def send(port: int) -> None:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            reader = sock.makefile("rb")
            sock.sendall(header)
            assert reader.readline().startswith(b"220 ")
            for command in (
                b"EHLO mua.example",
                b"MAIL FROM:<a@elsewhere.example>",
                b"RCPT TO:<b@pqr.example>",
                b"DATA",
                b"Subject: x\r\n\r\nhi\r\n.",
                b"QUIT",
            ):
                sock.sendall(command + b"\r\n")
                while (line := reader.readline())[3:4] == b"-":
                    pass
                assert line[:1] in (b"2", b"3"), (command, line)

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(send, _port(server, "smtp"))

    _run(main)
    (stored,) = _messages(config, "b@pqr.example")
    return stored


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (v2_unix(b"/run/user/1000/mua.sock"), "unix:/run/user/1000/mua.sock"),
        (b"PROXY UNKNOWN\r\n", "unknown"),
    ],
    ids=["v2 UNIX", "v1 UNKNOWN"],
)
def test_a_client_its_proxy_names_by_no_address_has_the_proxys_as_tcp_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, header: bytes, client: str
) -> None:
    """RFC 5321 §4.4: TCP-info is the address the connection came from, which for a
    client a PROXY header names by no address is, at TCP level, the proxy's: the
    Received line keeps it, as Postfix's smtpd does (a non-proxied header falls back
    to the socket's peer, smtpd_peer_from_default). The log, which fail2ban reads,
    names the client with the proxy it came through."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(
        tmp_path, "pqr.example", {"b@pqr.example": "x"}, proxy_protocol_from=(LOOPBACK,)
    )

    stored = _sent_through_proxy(config, header)
    assert b"\nReceived: from mua.example ([127.0.0.1])\n" in stored, stored
    (line,) = [r.getMessage() for r in caplog.records if "client=" in r.getMessage()]
    assert f"client={client} via proxy [127.0.0.1]:" in line, line


@pytest.mark.parametrize(
    ("header", "protocol", "using"),
    [
        (OFFLOADED, b"ESMTPS", b"\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\n"),
        (
            v2_with_tlvs(ssl_tlv(0x01, (0x21, b"TLSv1.2"))),
            b"ESMTPS",
            b"\n\t(using TLSv1.2)\n",
        ),
        (v2_with_tlvs(ssl_tlv(0x01)), b"ESMTPS", None),
        (V2, b"ESMTP", None),
        (
            v2_with_tlvs(ssl_tlv(0x01, (0x21, b"TLSv1.3"), (0x23, b"A" * 1500))),
            b"ESMTPS",
            b"\n\t(using TLSv1.3)\n",
        ),
    ],
    ids=["version-and-cipher", "version-alone", "nothing-named", "plaintext", "cipher-too-long"],
)
def test_a_client_whose_tls_its_proxy_ended_is_received_with_esmtps(
    tmp_path: Path, header: bytes, protocol: bytes, using: bytes | None
) -> None:
    """HAProxy's send-proxy-v2-ssl: the client spoke TLS to the proxy. The Received
    line words it as it words a session's own TLS (``with ESMTPS``, RFC 3848; the
    ``using`` comment as Postfix writes it), with what the proxy named and nothing
    it did not, nor a name too long for a line of RFC 5322 §2.1.1's 998 octets."""
    config = _config(
        tmp_path, "pqr.example", {"b@pqr.example": "x"}, proxy_protocol_from=(LOOPBACK,)
    )

    stored = _sent_through_proxy(config, header)
    received = stored[: stored.index(b" id ")]
    assert received.endswith(b" with " + protocol), stored
    assert max(map(len, stored.split(b"\n"))) <= 998
    if using is None:
        assert b"(using" not in received, stored
    else:
        assert using in received, stored


def test_xforward_with_an_address_and_no_port_invents_no_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """XFORWARD ``ADDR`` without ``PORT`` names a client whose port is unknown (Postfix
    presets each forwarded attribute to unknown): the log names it ``[203.0.113.77]``,
    with no ``:0`` that no TCP client has, and the Received line gives its literal. A
    forwarded HELO that is no address literal leaves no bracket open there."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, xclient_from=(LOOPBACK,))
    xforward = b"XFORWARD ADDR=203.0.113.77 HELO=[6.6.6.6"

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(_send_forwarded, _port(server, "smtp"), xforward)

    _run(main)
    (stored,) = _messages(config, "b@pqr.example")
    assert b"\nReceived: from ?6.6.6.6 ([203.0.113.77])\n" in stored, stored
    (line,) = [r.getMessage() for r in caplog.records if "client=" in r.getMessage()]
    assert "client=[203.0.113.77] helo=[6.6.6.6" in line, line


def test_xclient_with_an_address_and_no_port_invents_no_port(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """XCLIENT ``ADDR`` without ``PORT`` leaves the session's port 0, which no TCP
    client has (RFC 9293 §3.1): every log line names the client ``[203.0.113.8]``, as
    for XFORWARD, and none ``[203.0.113.8]:0``; its refusals are banned under it."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, xclient_from=(LOOPBACK,))
    xclient = b"XCLIENT ADDR=203.0.113.8"

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            port = _port(server, "smtp")
            then = (b"EHLO c.example",)
            await asyncio.to_thread(
                _send_forwarded, port, xclient, xforward_reply=b"220 ", then=then
            )

    _run(main)
    lines = [r.getMessage() for r in caplog.records if "203.0.113.8" in r.getMessage()]
    assert any("client=[203.0.113.8] " in line for line in lines), lines
    assert any("disconnect from [203.0.113.8] " in line for line in lines), lines
    assert not any("[203.0.113.8]:" in line for line in lines), lines


@pytest.mark.parametrize(
    ("xforward", "expected"),
    [
        (None, MessageOrigin(("127.0.0.1", 40000), "filter.test")),
        (Xforward(addr="IPV6:2001:DB8::7", port=25), MessageOrigin(("2001:db8::7", 25), None)),
        (Xforward(addr="192.0.2.7", helo=UNAVAILABLE), MessageOrigin(("192.0.2.7", None), None)),
        (Xforward(name="c.example", helo="c.example"), MessageOrigin(None, "c.example")),
        (Xforward(name="c.example"), MessageOrigin(None, None)),
        (Xforward(proto="ESMTP"), MessageOrigin(None, None)),
        # Postfix's own smtp client, for local mail: no client named, the session's.
        (
            Xforward(ident="4XyZ1", source="LOCAL"),
            MessageOrigin(("127.0.0.1", 40000), "filter.test"),
        ),
    ],
)
def test_the_messages_origin_is_the_forwarded_client_whole(
    xforward: Xforward | None, expected: MessageOrigin
) -> None:
    """What XFORWARD leaves out of the client it forwards is unknown, never the filter's
    (Postfix presets each forwarded attribute to unknown)."""
    session = Session("mx.pqr.example", peer=("127.0.0.1", 40000), helo_name="filter.test")
    envelope = Envelope(sender=None, xforward=xforward)
    assert MessageOrigin.of(session, envelope) == expected


@given(sst.xforwards())
@example(Xforward(ident="4XyZ1", source="REMOTE"))
@example(Xforward(source=UNAVAILABLE))
@example(Xforward(port=UNAVAILABLE))
def test_the_messages_origin_is_forwarded_only_when_a_client_attribute_is(
    xforward: Xforward,
) -> None:
    """Postfix's smtpd switches to the forwarded client only when XFORWARD gave one of
    NAME, ADDR, PORT, PROTO or HELO (its SMTPD_STATE_XFORWARD_CLIENT_MASK): IDENT and
    SOURCE alone describe the message, and the client stays the session's."""
    # A filter on a Unix socket: no forwarded client (an IP address, or unknown) is it.
    session = Session("mx.pqr.example", peer=("/run/filter.sock", 0), helo_name="filter.test")
    origin = MessageOrigin.of(session, Envelope(sender=None, xforward=xforward))
    names_a_client = bool(set(xforward.attributes) - {"IDENT", "SOURCE"})
    assert (origin == MessageOrigin(session.peer, session.helo_name)) is not names_a_client


def test_xforward_naming_no_client_leaves_the_received_line_and_log_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/adapters.rst's ``XFORWARD IDENT=... SOURCE=REMOTE`` names the message, not a
    client: its Received line and log line name the session's client, the filter."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, xclient_from=(LOOPBACK,))

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            xforward = b"XFORWARD IDENT=4XyZ1 SOURCE=REMOTE"
            await asyncio.to_thread(_send_forwarded, _port(server, "smtp"), xforward)

    _run(main)
    (stored,) = _messages(config, "b@pqr.example")
    assert b"\nReceived: from filter.test ([127.0.0.1])\n" in stored, stored
    (line,) = [r.getMessage() for r in caplog.records if "client=" in r.getMessage()]
    assert "client=[127.0.0.1]:" in line and line.endswith(" helo=filter.test"), line


def test_xforward_from_an_untrusted_client_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """XFORWARD from a client ``xclient_from`` does not trust is refused as unknown
    (``500 5.5.2``, the extension is not offered to it), and the message it then
    sends in the same session names that client, not the one it claimed."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, xclient_from=("192.0.2.99",))

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(
                _send_forwarded,
                _port(server, "smtp"),
                b"XFORWARD ADDR=203.0.113.77 HELO=evil.example",
                xforward_reply=b"500 5.5.2 ",
            )

    _run(main)
    (stored,) = _messages(config, "b@pqr.example")
    assert b"\nReceived: from filter.test ([127.0.0.1])\n" in stored, stored
    (line,) = [r.getMessage() for r in caplog.records if "client=" in r.getMessage()]
    assert "client=[127.0.0.1]:" in line and line.endswith(" helo=filter.test"), line


def _both_loopbacks_free() -> int | None:
    """A port free a moment ago on 127.0.0.1 and on ::1; None without IPv6 loopback."""
    with socket.create_server((LOOPBACK, 0)) as ipv4:
        port: int = ipv4.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET6) as ipv6:
                ipv6.bind(("::1", port))
        except OSError:
            return None
    return port


def test_a_listener_on_a_name_with_two_addresses_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``--host`` that resolves to 127.0.0.1 and ::1 is listened on at both, and
    ``serve`` printed the first only: a client given the other could not know it works.
    Each address is a listener of its own now, printed as such."""
    port = _both_loopbacks_free()
    if port is None:
        pytest.skip("no IPv6 loopback")
    real = socket.getaddrinfo

    def two_records(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "mail.abc.example":
            return real(LOOPBACK, *args, **kwargs) + real("::1", *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", two_records)
    config = _config(
        tmp_path, "abc.example", {}, host="mail.abc.example", smtp_port=port, submission_port=0
    )

    async def main() -> list[str]:
        async with MailServer(config) as server:
            for listener in server.listeners:
                reader, writer = await asyncio.open_connection(listener.host, listener.port)
                assert (await reader.readline()).startswith(b"220 ")
                writer.close()
            return [str(listener) for listener in server.listeners]

    assert _run(main) == [f"smtp listening on 127.0.0.1:{port}", f"smtp listening on [::1]:{port}"]


def test_mail_to_the_servers_own_address_literal_is_local_on_both_listeners(
    tmp_path: Path,
) -> None:
    """RFC 1123 §5.2.17: a server MUST accept a domain literal for any of its own
    addresses, ``postmaster`` there included (RFC 5321 §4.5.1). Only the relay's router
    knew them, and only with the SMTP port the remote port: both listeners answered
    ``550 5.7.1 relay access denied``. ``user@[own address]`` is ``user`` at the first
    local domain."""
    config = _config(
        tmp_path,
        "pqr.example",
        {"brendon@pqr.example": "pw"},
        host=LOOPBACK,
        remote_port=2525,
        submission_port=1,  # on: the socket given below is used
    )
    recipients = ("postmaster@[127.0.0.1]", "Brendon@[127.0.0.1]", "nobody@[127.0.0.1]")

    def rcpts(smtp: smtplib.SMTP, *others: str) -> list[int]:
        smtp.ehlo("client.abc.example")
        smtp.mail("brendon@pqr.example")
        codes = [smtp.rcpt(address)[0] for address in recipients + others]
        smtp.data(b"Subject: hi\r\n\r\nx\r\n")
        return codes

    def client(smtp_port: int, submission_port: int) -> list[list[int]]:
        with smtplib.SMTP(LOOPBACK, smtp_port, timeout=10) as smtp:
            inbound = rcpts(smtp, "brendon@[192.0.2.1]")  # not ours: no relay
        with smtplib.SMTP(LOOPBACK, submission_port, timeout=10) as smtp:
            smtp.login("brendon@pqr.example", "pw")
            submission = rcpts(smtp)
        return [inbound, submission]

    async def main() -> list[list[int]]:
        sockets = {"smtp": _listening(), "submission": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            return await asyncio.to_thread(
                client, _port(server, "smtp"), _port(server, "submission")
            )

    inbound, submission = _run(main)
    assert inbound == [250, 250, 550, 550]
    assert submission == [250, 250, 550]
    assert len(_messages(config, "brendon@pqr.example")) == 2
    assert len(_messages(config, "postmaster@pqr.example")) == 2


def test_postmaster_at_the_servers_own_hostname_is_delivered_on_both_listeners(
    tmp_path: Path,
) -> None:
    """RFC 5321 §4.5.1: postmaster must be accepted at every name the server gives mail
    service for, and it calls itself by its hostname (greeting, Received lines, the
    From of its bounces). Both listeners treated that name as remote: 550 5.7.1 on
    ``smtp``, an MX lookup finding this host (a routing loop) on ``submission``. Only
    postmaster is local there: no other mailbox has that domain."""
    config = _config(
        tmp_path,
        "pqr.example",
        {"brendon@pqr.example": "pw"},
        host=LOOPBACK,
        submission_port=1,  # on: the socket given below is used
    )
    recipients = ("postmaster@mx.pqr.example", "PostMaster@MX.PQR.Example")

    def rcpts(smtp: smtplib.SMTP, sender: str, *others: str) -> list[int]:
        smtp.ehlo("client.abc.example")
        smtp.mail(sender)
        codes = [smtp.rcpt(address)[0] for address in recipients + others]
        smtp.data(b"Subject: hi\r\n\r\nx\r\n")
        return codes

    def client(smtp_port: int, submission_port: int) -> list[list[int]]:
        with smtplib.SMTP(LOOPBACK, smtp_port, timeout=10) as smtp:
            others = ("brendon@mx.pqr.example", "MAILER-DAEMON@mx.pqr.example")
            inbound = rcpts(smtp, "someone@abc.example", *others)
        with smtplib.SMTP(LOOPBACK, submission_port, timeout=10) as smtp:
            smtp.login("brendon@pqr.example", "pw")
            submission = rcpts(smtp, "brendon@pqr.example")
        return [inbound, submission]

    async def main() -> list[list[int]]:
        sockets = {"smtp": _listening(), "submission": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            return await asyncio.to_thread(
                client, _port(server, "smtp"), _port(server, "submission")
            )

    inbound, submission = _run(main)
    assert inbound == [250, 250, 550, 550]
    assert submission == [250, 250]
    assert len(_messages(config, "postmaster@pqr.example")) == 2
    assert _messages(config, "brendon@pqr.example") == []


@pytest.mark.parametrize("allow_internal_relay", [False, True])
def test_queued_mail_to_the_servers_own_address_literal_is_delivered_here(
    tmp_path: Path, allow_internal_relay: bool
) -> None:
    """A recipient at the server's own address literal that goes through the queue (here
    for the success report ``NOTIFY=SUCCESS`` asks) is local for the delivery worker too,
    whatever ``--remote-port`` is (RFC 1123 §5.2.17). With the SMTP port not the remote
    port, the relay took it for remote: bounced as internal, unreported as NOTIFY asked
    no failure report (accepted with 250, then lost), or relayed to whatever listens on
    the remote port."""
    with socket.create_server((LOOPBACK, 0)) as other:  # another server, on the remote port
        other_port = other.getsockname()[1]
    config = _config(
        tmp_path,
        "pqr.example",
        {"brendon@pqr.example": "pw"},
        host=LOOPBACK,
        remote_port=other_port,
        allow_internal_relay=allow_internal_relay,
    )

    def client(port: int) -> None:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("client.abc.example")
            smtp.mail("brendon@pqr.example")
            assert smtp.rcpt("brendon@[127.0.0.1]", ["NOTIFY=SUCCESS"])[0] == 250
            smtp.data(b"Subject: literal\r\n\r\nx\r\n")

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(client, _port(server, "smtp"))
            await _eventually(lambda: len(_messages(config, "brendon@pqr.example")) == 2)

    _run(main)
    messages = _messages(config, "brendon@pqr.example")
    assert any(b"Subject: literal" in m for m in messages)
    (report,) = [m for m in messages if b"Subject: Successful Mail Delivery Report" in m]
    assert b"Action: delivered" in report


def test_an_empty_quoted_local_part_is_no_user_here(tmp_path: Path) -> None:
    """``<""@domain>`` is a valid path (RFC 5321 §4.1.2): the reference server takes it
    as a sender and answers 550 5.1.1 for it as a local recipient, as for any address
    that is no user; it got 501 before."""
    config = _config(tmp_path, "pqr.example", {"brendon@pqr.example": "pw"})

    def client(port: int) -> list[tuple[int, bytes]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("client.abc.example")
            return [
                smtp.docmd("MAIL", 'FROM:<""@abc.example>'),
                smtp.docmd("RCPT", 'TO:<""@pqr.example>'),
                smtp.docmd("RCPT", "TO:<brendon@pqr.example>"),
            ]

    async def main() -> list[tuple[int, bytes]]:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            return await asyncio.to_thread(client, _port(server, "smtp"))

    mail, empty, brendon = _run(main)
    assert mail[0] == 250 and brendon[0] == 250
    assert empty[0] == 550 and empty[1].startswith(b"5.1.1")


@pytest.mark.parametrize("domain", ["straße.test", "xn--strae-oqa.test"])
def test_a_domain_with_sharp_s_gets_the_relay_decision_in_either_spelling(
    tmp_path: Path, domain: str
) -> None:
    """IDNA 2008 keeps ß (RFC 5892, UTS #46 §6): ``RCPT TO:<u@straße.test>`` got
    ``501 5.1.3 ... IDNA 2003 would turn it into strasse`` while its A-label was
    taken. A server for ``straße.test`` (its host name under it too) now takes mail
    for its user in both spellings, configured in either, and ``faß.de``, not its
    own, gets the relay decision, not a syntax error."""
    config = _config(tmp_path, domain, {"u@xn--strae-oqa.test": "pw"})
    assert config.domains == ("xn--strae-oqa.test",)
    assert config.hostname == "mx.xn--strae-oqa.test"

    def client(port: int) -> list[tuple[int, bytes]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.command_encoding = "utf-8"
            return [
                smtp.ehlo("client.abc.example"),
                smtp.docmd("MAIL", "FROM:<john@abc.example> SMTPUTF8"),
                smtp.docmd("RCPT", "TO:<u@straße.test>"),
                smtp.docmd("RCPT", "TO:<u@XN--STRAE-OQA.test>"),
                smtp.docmd("RCPT", "TO:<u@faß.de>"),
            ]

    async def main() -> list[tuple[int, bytes]]:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            return await asyncio.to_thread(client, _port(server, "smtp"))

    ehlo, mail, u_label, a_label, elsewhere = _run(main)
    assert ehlo[1].startswith(b"mx.xn--strae-oqa.test")
    assert mail[0] == 250 and u_label[0] == 250 and a_label[0] == 250
    assert elsewhere == (550, b"5.7.1 relay access denied for xn--fa-hia.de")


def test_a_recipient_quoted_in_a_reply_has_its_unsafe_characters_escaped(
    tmp_path: Path,
) -> None:
    """A format character (U+200E, a bidi mark) is legitimate in an SMTPUTF8 address
    (RFC 6531 §3.3) but unsafe in text (RFC 5198 §2): the reply quoting the address
    writes it escaped, never raw, and the session goes on."""
    config = _config(tmp_path, "pqr.example", {"brendon@pqr.example": "pw"})

    def client(port: int) -> list[tuple[int, bytes]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("client.abc.example")
            smtp.command_encoding = "utf-8"
            return [
                smtp.docmd("MAIL", "FROM:<john@abc.example> SMTPUTF8"),
                smtp.docmd("RCPT", "TO:<n\u200eobody@pqr.example>"),
                smtp.docmd("RCPT", "TO:<brendon@pqr.example>"),
            ]

    async def main() -> list[tuple[int, bytes]]:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            return await asyncio.to_thread(client, _port(server, "smtp"))

    mail, unknown, brendon = _run(main)
    assert mail[0] == 250 and brendon[0] == 250
    assert unknown == (
        550,
        b"5.1.1 <n\\u200eobody@pqr.example>: no such mailbox here (user unknown)",
    )


def test_submission_needs_auth_then_relays_to_the_other_server(tmp_path: Path) -> None:
    pqr = _config(tmp_path, "pqr.example", {"brendon@pqr.example": "pw"}, submission_port=0)
    message = b"From: john@abc.example\r\nTo: brendon@pqr.example\r\nSubject: hi\r\n\r\n.dot\r\n"

    def submit(port: int) -> tuple[int, dict[str, tuple[int, bytes]]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo()
            code, _ = smtp.mail("john@abc.example")
            smtp.rset()
            smtp.login("JOHN@abc.example", "secret")
            refused = smtp.sendmail(
                "john@abc.example", ["brendon@pqr.example", "local@abc.example"], message
            )
        return code, refused

    async def main() -> tuple[int, dict[str, tuple[int, bytes]]]:
        pqr_smtp = _listening()
        zone = (
            "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
            "abc.example MX 10 mx.abc.example\nmx.abc.example A 127.0.0.1\n"
        )
        abc = _config(
            tmp_path,
            "abc.example",
            {"john@abc.example": "secret", "local@abc.example": "pw"},
            smtp_port=0,
            submission_port=1,  # on: the socket given below is used
            remote_port=pqr_smtp.getsockname()[1],
        )
        resolver = StaticResolver.from_zone_text(zone)
        async with (
            MailServer(pqr, sockets={"smtp": pqr_smtp}, resolver=resolver),
            MailServer(abc, sockets={"submission": _listening()}, resolver=resolver) as sender,
        ):
            result = await asyncio.to_thread(submit, _port(sender, "submission"))
            await _eventually(lambda: bool(_messages(pqr, "brendon@pqr.example")))
            await _eventually(lambda: not any((abc.queue_dir / "envelopes").iterdir()))
            assert len(_messages(abc, "local@abc.example")) == 1
            return result

    mail_code, refused = _run(main)
    assert mail_code == 530 and refused == {}
    (stored,) = _messages(pqr, "brendon@pqr.example")
    parsed = email.message_from_bytes(stored, policy=email.policy.default)
    received = parsed.get_all("Received")
    assert received is not None and len(received) == 2
    assert "by mx.pqr.example" in received[0] and "with ESMTP " in received[0]
    assert "by mx.abc.example" in received[1] and "with ESMTPA " in received[1]
    assert stored.endswith(b"Subject: hi\n\n.dot\n")


def _assert_rcpt_refusal_logged(caplog: pytest.LogCaptureFixture, reply: str) -> None:
    """A ``NOQUEUE: reject: RCPT`` line was logged with ``reply`` in it."""
    log = [r.getMessage() for r in caplog.records]
    assert any(
        line.startswith("NOQUEUE: reject: RCPT from ") and f": {reply}" in line for line in log
    ), log


class _CountingRouter(Router):
    """A router that remembers each recipient it is asked to route."""

    def __init__(self, domains: Any, **options: Any) -> None:
        super().__init__(domains, **options)
        self.routed: list[str] = []

    def route(
        self, recipient: Mailbox, **options: Any
    ) -> LocalDelivery | RemoteDelivery | Rejected:
        self.routed.append(str(recipient))
        return super().route(recipient, **options)


def test_submission_routes_each_recipient_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``SubmissionHandler`` routed every recipient twice: once for its own refusal of an
    internal address literal, once more in the shared RCPT. The refusal is its answer to
    a recipient not delivered here (``_not_local``), so each RCPT routes once, and the
    replies and the log line of the refusal are as they were."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    routers: list[_CountingRouter] = []

    def counting(server: MailServer) -> Router:
        routers.append(_CountingRouter(server.config.domains, relay_for_authenticated=True))
        return routers[-1]

    monkeypatch.setattr(MailServer, "submission_router", counting)
    users = {"john@abc.example": "secret", "local@abc.example": "pw"}
    config = _config(tmp_path, "abc.example", users, submission_port=1, allow_internal_relay=False)
    recipients = [
        "local@abc.example",
        "b@pqr.example",
        "x@[10.0.0.1]",
        "nobody@abc.example",
        "a%b@abc.example",
    ]

    def submit(port: int) -> list[tuple[int, bytes]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.login("john@abc.example", "secret")
            smtp.mail("john@abc.example")
            return [smtp.rcpt(recipient) for recipient in recipients]

    async def main() -> list[tuple[int, bytes]]:
        sockets = {"smtp": _listening(), "submission": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            return await asyncio.to_thread(submit, _port(server, "submission"))

    replies = _run(main)
    assert [(code, text[:5]) for code, text in replies] == [
        (250, b"2.1.5"),
        (250, b"2.1.5"),
        (550, b"5.7.1"),
        (550, b"5.1.1"),
        (550, b"5.7.1"),
    ]
    assert replies[2][1] == b"5.7.1 <x@[10.0.0.1]>: relay to internal address 10.0.0.1 refused"
    (router,) = routers
    assert router.routed == recipients
    _assert_rcpt_refusal_logged(
        caplog, "550 5.7.1 <x@[10.0.0.1]>: relay to internal address 10.0.0.1 refused"
    )


def test_lmtp_answers_each_recipient(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "pqr.example",
        {"a@pqr.example": "x", "b@pqr.example": "y"},
        smtp_port=0,
        submission_port=0,
        lmtp_port=1,  # on; the socket below replaces the port
    )

    async def main() -> list[tuple[str, int]]:
        sockets = {"lmtp": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            client = SMTPClient(LOOPBACK, _port(server, "lmtp"), lmtp=True, hostname="client")
            async with client:
                result = await client.send_message(
                    b"Subject: l\r\n\r\n",
                    "john@abc.example",
                    ["a@pqr.example", "c@pqr.example", "b@pqr.example"],
                )
        return [
            (str(r.recipient), (r.delivery or r.reply or Reply(0, "")).code)
            for r in result.recipients
        ]

    assert _run(main) == [("a@pqr.example", 250), ("c@pqr.example", 550), ("b@pqr.example", 250)]
    assert len(_messages(config, "a@pqr.example")) == len(_messages(config, "b@pqr.example")) == 1
    assert b"with LMTP id" in _messages(config, "a@pqr.example")[0]


def test_lmtp_refuses_a_recipient_elsewhere_as_a_bad_destination_not_a_relay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """LMTP delivers here or nowhere (RFC 2033 §1): it never relays, so a recipient at
    a domain (or an address literal) that is not ours got ``550 5.7.1 relay access
    denied``, which tells a front end that policy refused what no policy could allow.
    It is a bad destination system address (RFC 3463 X.1.2). A local part that would
    route onwards (``a%b``) is still a policy refusal (5.7.1), and the ``smtp``
    listener still refuses to relay with 5.7.1."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    config = _config(tmp_path, "pqr.example", {"a@pqr.example": "x"}, smtp_port=1, lmtp_port=1)
    recipients = ["a@pqr.example", "x@elsewhere.example", "y@[192.0.2.1]", "a%b@pqr.example"]

    async def main() -> tuple[list[tuple[str, str]], object]:
        sockets = {"smtp": _listening(), "lmtp": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            client = SMTPClient(LOOPBACK, _port(server, "lmtp"), lmtp=True, hostname="client")
            async with client:
                result = await client.send_message(
                    b"Subject: l\r\n\r\n", "john@abc.example", recipients
                )

            def by_smtp(port: int) -> object:
                with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
                    try:
                        smtp.sendmail("john@abc.example", ["x@elsewhere.example"], b"x")
                    except smtplib.SMTPRecipientsRefused as exc:
                        return exc.recipients["x@elsewhere.example"]
                return None

            smtp_refusal = await asyncio.to_thread(by_smtp, _port(server, "smtp"))
        answers = []
        for r in result.recipients:
            reply = r.delivery or r.reply
            assert reply is not None
            answers.append((f"{reply.code} {reply.status}", " ".join(reply.lines)))
        return answers, smtp_refusal

    answers, smtp_refusal = _run(main)
    assert [code for code, _ in answers] == ["250 2.0.0", "550 5.1.2", "550 5.1.2", "550 5.7.1"]
    assert (
        answers[1][1]
        == "<x@elsewhere.example>: no such domain here (LMTP delivers to local mailboxes only)"
    )
    assert (
        answers[2][1]
        == "<y@[192.0.2.1]>: no such domain here (LMTP delivers to local mailboxes only)"
    )
    assert smtp_refusal == (550, b"5.7.1 relay access denied for elsewhere.example")
    assert len(_messages(config, "a@pqr.example")) == 1
    _assert_rcpt_refusal_logged(caplog, "550 5.1.2 <x@elsewhere.example>: no such domain here")


def test_lmtp_refuses_a_recipient_a_relaying_router_would_relay_at_rcpt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``LMTPHandler`` given a router that relays (``relay_domains``, the loopback
    trusted) took a recipient at a relay domain with ``250`` at RCPT, then answered
    ``550 5.1.1`` after the content: LMTP delivers here or nowhere (RFC 2033 §1), so
    it is refused at RCPT with ``550 5.1.2``, and the local recipient is delivered."""

    def relaying(server: MailServer) -> Router:
        return Router(server.config.domains, relay_domains=["elsewhere.example"])

    monkeypatch.setattr(MailServer, "inbound_router", relaying)
    config = _config(tmp_path, "pqr.example", {"a@pqr.example": "x"}, smtp_port=0, lmtp_port=1)

    async def main() -> list[tuple[str, str, str | None]]:
        async with MailServer(config, sockets={"lmtp": _listening()}) as server:
            client = SMTPClient(LOOPBACK, _port(server, "lmtp"), lmtp=True, hostname="client")
            async with client:
                result = await client.send_message(
                    b"Subject: l\r\n\r\n",
                    "john@abc.example",
                    ["a@pqr.example", "x@elsewhere.example"],
                )
        answers = []
        for r in result.recipients:
            assert r.reply is not None
            after = None if r.delivery is None else f"{r.delivery.code} {r.delivery.status}"
            answers.append((str(r.recipient), f"{r.reply.code} {r.reply.status}", after))
        return answers

    assert _run(main) == [
        ("a@pqr.example", "250 2.1.5", "250 2.0.0"),
        ("x@elsewhere.example", "550 5.1.2", None),
    ]
    assert len(_messages(config, "a@pqr.example")) == 1


def test_unended_bdat_content_is_stored_with_a_line_end_and_dovecots_sizes(
    tmp_path: Path,
) -> None:
    """BDAT delivers content whose last line has no line end (RFC 3030 §2). The copy
    was stored so, named ``,W=`` with the CRLF a POP3 server adds to it (RFC 1939 §3):
    Dovecot, which counts W from the file's octets and one more for each LF and
    trusts the name's, would have given IMAP an RFC822.SIZE two octets too large.
    Now the copy ends with an LF, as Postfix's local delivery ends every message, and
    the file, ``S=``, ``W=``, Dovecot's rule and smtpcore's own POP3 LIST agree."""
    config = _config(
        tmp_path,
        "pqr.example",
        {"a@pqr.example": "x"},
        smtp_port=0,
        lmtp_port=1,  # on; the socket below replaces the port
    )
    content = b"Subject: two\r\n\r\nno final newline"

    def send(port: int) -> list[bytes]:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            file = sock.makefile("rb")

            def reply() -> bytes:
                lines = [file.readline()]
                while lines[-1][3:4] == b"-":
                    lines.append(file.readline())
                return lines[-1]

            replies = [reply()]
            for command in (b"LHLO client.example", b"MAIL FROM:<s@abc.example>"):
                sock.sendall(command + b"\r\n")
                replies.append(reply())
            sock.sendall(b"RCPT TO:<a@pqr.example>\r\n")
            replies.append(reply())
            sock.sendall(b"BDAT %d LAST\r\n%s" % (len(content), content))
            replies.append(reply())
            sock.sendall(b"QUIT\r\n")
            replies.append(reply())
        return replies

    async def main() -> list[bytes]:
        async with MailServer(config, sockets={"lmtp": _listening()}) as server:
            return await asyncio.to_thread(send, _port(server, "lmtp"))

    replies = _run(main)
    assert replies[4].startswith(b"250 2.0.0 <a@pqr.example>"), replies
    (path,) = Maildir(config.mailbox_path("a@pqr.example")).messages()
    stored = path.read_bytes()
    assert stored.endswith(b"\nSubject: two\n\nno final newline\n")
    dovecot_w = len(stored) + stored.count(b"\n")  # no CR in the file
    assert path.name.endswith(f",S={len(stored)},W={dovecot_w}")
    (listed,) = asyncio.run(MaildropMaildir(path.parent.parent).messages())
    assert listed.size == pop3_size(stored) == dovecot_w


def test_a_looping_message_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, submission_port=0)
    looping = b"".join(b"Received: from x by y; date\r\n" for _ in range(MAX_HOPS)) + b"\r\nhi\r\n"

    def send(port: int) -> object:
        with smtplib.SMTP(LOOPBACK, port) as smtp:
            try:
                smtp.sendmail("a@abc.example", ["b@pqr.example"], looping)
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error
        return None

    async def main() -> object:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            return await asyncio.to_thread(send, _port(server, "smtp"))

    assert _run(main) == (554, b"5.4.6 Too many hops: is there a mail loop?")
    assert _messages(config, "b@pqr.example") == []
    assert list((config.queue_dir / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "content, body",
    [
        # White space first would fold onto our Received line and add to it.
        (b" (verified) by trusted.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n", "(verified)"),
        (b"no header, only text\r\n\r\nmore\r\n", "no header, only text"),
        (b"short", "short"),
    ],
)
def test_content_that_is_no_header_stays_the_body_below_our_trace_lines(
    tmp_path: Path, content: bytes, body: str
) -> None:
    """RFC 5322 §2.2.3: a first line starting with white space continues the field
    above it, so the client could extend our Received field; a first line that is no
    field would become part of our header. An empty line goes between."""
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, submission_port=0)

    def send(port: int) -> None:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            # in small pieces, to hold the first line across chunks
            commands = b"EHLO c.example\r\nMAIL FROM:<a@abc.example>\r\n"
            sock.sendall(commands + b"RCPT TO:<b@pqr.example>\r\nDATA\r\n")
            answers = b""
            while b"\r\n354 " not in answers:
                answers += sock.recv(4096)
            for index in range(0, len(content), 3):
                sock.sendall(content[index : index + 3])
            sock.sendall(b".\r\nQUIT\r\n" if content.endswith(b"\n") else b"\r\n.\r\nQUIT\r\n")
            while b"\r\n221 " not in answers:
                answers += sock.recv(4096)

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            await asyncio.to_thread(send, _port(server, "smtp"))

    _run(main)
    (stored,) = _messages(config, "b@pqr.example")
    message = email.message_from_bytes(stored, policy=email.policy.default)
    assert message.defects == []
    assert list(message.keys()) == ["Return-Path", "Received"]
    assert "(verified)" not in str(message["Received"])
    assert body in message.get_content()


def test_the_session_limits_reach_every_listener(tmp_path: Path) -> None:
    """``max_sessions_per_address`` (``--max-sessions-per-address``): a second session
    from the same address gets 421 4.7.0 on SMTP and -ERR [SYS/TEMP] on POP3."""
    config = _config(
        tmp_path,
        "pqr.example",
        {"b@pqr.example": "x"},
        submission_port=0,
        pop3_port=2110,  # the socket given below is used
        max_sessions_per_address=1,
    )

    def greetings(port: int) -> tuple[bytes, bytes]:
        with socket.create_connection((LOOPBACK, port), timeout=10) as first:
            greeting = first.recv(100)
            with socket.create_connection((LOOPBACK, port), timeout=10) as second:
                return greeting, second.recv(100)

    async def main() -> list[tuple[bytes, bytes]]:
        sockets = {"smtp": _listening(), "pop3": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            return [await asyncio.to_thread(greetings, _port(server, name)) for name in sockets]

    (smtp_first, smtp_second), (pop3_first, pop3_second) = _run(main)
    assert smtp_first.startswith(b"220 ") and smtp_second.startswith(b"421 4.7.0 ")
    assert pop3_first.startswith(b"+OK") and pop3_second.startswith(b"-ERR [SYS/TEMP]")


_HOSTILE = "\u009b2J\u009b31mRED\u0085FAKE\u2028LINE\u2029P\u202eRTL"
"""8-bit CSI sequences, NEL, the line and paragraph separators and a bidi override,
which the command parsers let through (they refuse C0 controls): raw in a log line,
they drive a terminal or split the line."""


def test_what_a_peer_chose_reaches_the_log_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A HELO name and a POP3 USER name with C1 controls and line separators reached the
    mail log raw (the disconnect line, helo=<...> and user=<...> of the reject lines),
    as a remote server's reply in a delivery line did."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, pop3_port=2110)

    def talk(port: int, lines: list[str]) -> None:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for line in lines:
                sock.sendall(line.encode() + b"\r\n")
                while (reply := reader.readline())[3:4] == b"-":
                    pass
                assert reply, line

    async def main() -> None:
        sockets = {"smtp": _listening(), "pop3": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            await asyncio.to_thread(
                talk,
                _port(server, "smtp"),
                [f"HELO h{_HOSTILE}", "MAIL FROM:<a@b.example>", "RCPT TO:<x@pqr.ex>", "QUIT"],
            )
            await asyncio.to_thread(
                talk, _port(server, "pop3"), [f"USER u{_HOSTILE}", "PASS wrong", "QUIT"]
            )

    _run(main)
    log = [r.getMessage() for r in caplog.records]
    log.append(
        delivery_line(
            "Q1", "x@pqr.example", relay="mx.pqr.example", delay=0.0, dsn="5.0.0",
            status="bounced", detail=f"550 no{_HOSTILE}",
        )
    )  # fmt: skip
    escaped = "\\x9b2J\\x9b31mRED\\x85FAKE\\u2028LINE\\u2029P\\u202eRTL"
    for needle in ("disconnect from", "helo=<h", "status=bounced"):
        (line,) = [line for line in log if needle in line]
        assert escaped in line, line
    # A USER name that names no user is not logged at all (it may be a password).
    (line,) = [line for line in log if "reject: PASS" in line]
    assert line.endswith("; user=<>"), line
    for line in log:
        assert line.isprintable() or "\t" in line, line  # no raw control, separator, bidi


def test_the_queue_is_picked_up_after_a_restart(tmp_path: Path) -> None:
    """A message queued by a server that stopped is delivered by the next one."""
    pqr = _config(tmp_path, "pqr.example", {"brendon@pqr.example": "pw"}, submission_port=0)
    port = free_port(LOOPBACK)  # refused until pqr's server binds it
    zone = f"pqr.example MX 10 mx.pqr.example\nmx.pqr.example A {LOOPBACK}\n"
    abc = _config(
        tmp_path,
        "abc.example",
        {"john@abc.example": "secret"},
        smtp_port=0,
        submission_port=1,  # on: the socket given below is used
        remote_port=port,
        retry_after=3600,
    )

    def submit(submission: int) -> None:
        with smtplib.SMTP(LOOPBACK, submission) as smtp:
            smtp.login("john@abc.example", "secret")
            smtp.sendmail("john@abc.example", ["brendon@pqr.example"], b"Subject: q\r\n\r\n")

    async def main() -> None:
        resolver = StaticResolver.from_zone_text(zone)
        async with MailServer(abc, sockets={"submission": _listening()}, resolver=resolver) as a:
            await asyncio.to_thread(submit, _port(a, "submission"))
            await _eventually(lambda: _attempts(abc) == [1])
        pqr_smtp = socket.create_server((LOOPBACK, port))
        async with (
            MailServer(pqr, sockets={"smtp": pqr_smtp}, resolver=resolver),
            MailServer(abc, sockets={"submission": _listening()}, resolver=resolver) as again,
        ):
            # Due in an hour: make it due now, as a restart after the wait would.
            for entry in again.queue.open():
                again.worker.schedule(dataclasses.replace(entry, next_attempt=0))
            await _eventually(lambda: bool(_messages(pqr, "brendon@pqr.example")))
            await _eventually(lambda: not any((abc.queue_dir / "envelopes").iterdir()))

    _run(main)
    assert len(_messages(pqr, "brendon@pqr.example")) == 1


def _attempts(config: ServerConfig) -> list[int]:
    """Each queued entry's attempt count, read without touching the queue.

    Not ``Queue.open()``: that clears ``tmp/``, where the running worker may
    be rewriting an envelope at that moment.
    """
    queue = Queue(config.queue_dir)
    return [queue.load(path.name).attempts for path in (config.queue_dir / "envelopes").iterdir()]


def test_an_exchanger_at_an_address_the_hostname_resolves_to_is_this_host(
    tmp_path: Path,
) -> None:
    """RFC 5321 §5.1: listening on every address (``--host 0.0.0.0``), the server knows
    its own addresses from its ``--hostname``; the best exchanger at one of them is this
    host, so the mail loops back (550 5.4.6), never goes to the backup exchanger (which
    would send it straight back here)."""
    zone = (
        "mx.abc.example A 11.0.0.50\n"
        "loop.example MX 10 mail.loop.example\nmail.loop.example A 11.0.0.50\n"
        "loop.example MX 20 backup.loop.example\nbackup.loop.example A 11.0.0.60\n"
    )
    config = _config(
        tmp_path,
        "abc.example",
        {"john@abc.example": "pw"},
        host="0.0.0.0",  # nothing is bound there: the listener is the socket given
        smtp_port=25,
        submission_port=0,
        remote_port=25,
        allow_internal_relay=False,
    )
    connections: list[str] = []

    def no_network(host: str, port: int, **options: object) -> NoReturn:
        connections.append(f"{host}:{port}")
        raise RuntimeError("no connection here")

    async def main() -> None:
        resolver = StaticResolver.from_zone_text(zone)
        async with MailServer(
            config,
            sockets={"smtp": _listening()},
            resolver=resolver,
            client_factory=no_network,
        ) as server:
            spool = server.queue.spool()
            spool.write(b"Subject: loop\r\n\r\nx\r\n")
            entry = server.queue.prepare(spool, "john@abc.example", ["u@loop.example"]).commit()
            server.worker.schedule(entry)
            await _eventually(
                lambda: bool(connections) or not any((config.queue_dir / "envelopes").iterdir())
            )

    _run(main)
    assert connections == []
    (bounce,) = _messages(config, "john@abc.example")
    assert b"Status: 5.4.6" in bounce


def test_bdat_chunks_are_delivered(tmp_path: Path) -> None:
    """CHUNKING (RFC 3030): no DATA command, the spool opens with the first chunk."""
    config = _config(tmp_path, "pqr.example", {"b@pqr.example": "x"}, submission_port=0)
    chunks = [b"Subject: bdat\r\n", b"\r\nfirst\r\n.second\r\n"]

    def send(port: int) -> list[bytes]:
        replies = []
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            file = sock.makefile("rb")

            def reply() -> bytes:
                lines = [file.readline()]
                while lines[-1][3:4] == b"-":
                    lines.append(file.readline())
                return lines[-1]

            reply()
            for command in (b"EHLO client.example\r\n", b"MAIL FROM:<a@abc.example>\r\n"):
                sock.sendall(command)
                reply()
            sock.sendall(b"RCPT TO:<b@pqr.example>\r\n")
            reply()
            sock.sendall(b"BDAT %d\r\n%s" % (len(chunks[0]), chunks[0]))
            replies.append(reply())
            sock.sendall(b"BDAT %d LAST\r\n%s" % (len(chunks[1]), chunks[1]))
            replies.append(reply())
            sock.sendall(b"QUIT\r\n")
            reply()
        return replies

    async def main() -> list[bytes]:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            return await asyncio.to_thread(send, _port(server, "smtp"))

    first, last = _run(main)
    assert first.startswith(b"250") and last.startswith(b"250 2.0.0 Ok: queued as ")
    (stored,) = _messages(config, "b@pqr.example")
    assert stored.endswith(b"\nSubject: bdat\n\nfirst\n.second\n")


def test_a_bdat_refused_for_its_syntax_fails_the_message(tmp_path: Path) -> None:
    """RFC 3030 §2: after a 5xx to any BDAT the transaction has failed. Pipelined
    behind a chunk refused for its syntax, the last chunk is out of sequence (503):
    nothing is delivered, where a message without the refused chunk's octets once was,
    while the client, told 501, would send it again. The client's next message is
    delivered alone and whole: nothing of the failed one (its spooled first chunk,
    its Received line naming its recipient) is carried into it."""
    users = {"b@pqr.example": "x", "c@pqr.example": "y"}
    config = _config(tmp_path, "pqr.example", users, submission_port=0)
    wire = b"EHLO client.example\r\nMAIL FROM:<a@abc.example>\r\nRCPT TO:<c@pqr.example>\r\n"
    wire += b"BDAT 9\r\nSubject: BDAT 6 LAST junk\r\nHOLE\r\nBDAT 11 LAST\r\nX\r\n\r\nbody\r\n"
    second = b"Subject: second\r\n\r\nok\r\n"
    wire += b"MAIL FROM:<z@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n"
    wire += b"BDAT %d LAST\r\n" % len(second) + second

    def send(port: int) -> list[bytes]:
        with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
            file = sock.makefile("rb")
            sock.sendall(wire + b"QUIT\r\n")
            finals = []
            for _ in range(11):  # greeting, EHLO, MAIL, RCPT, three BDATs, again, QUIT
                line = file.readline()
                while line[3:4] == b"-":
                    line = file.readline()
                finals.append(line[:3])
        return finals

    async def main() -> list[bytes]:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            return await asyncio.to_thread(send, _port(server, "smtp"))

    failed = [b"220", b"250", b"250", b"250", b"250", b"501", b"503"]
    assert _run(main) == [*failed, b"250", b"250", b"250", b"221"]
    assert _messages(config, "c@pqr.example") == []
    [delivered] = _messages(config, "b@pqr.example")
    headers = delivered.split(b"\n\n", 1)[0]  # a Maildir file ends its lines with LF
    assert delivered.endswith(b"\n" + second.replace(b"\r\n", b"\n"))
    assert headers.count(b"Received:") == 1 and b"c@pqr.example" not in delivered
    assert not any((config.queue_dir / "envelopes").glob("*"))


def test_one_server_per_data_directory(tmp_path: Path) -> None:
    config = _config(tmp_path, "pqr.example", {}, submission_port=0)

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}):
            with pytest.raises(ConfigError, match="in use by another smtpcore server"):
                await MailServer(config, sockets={"smtp": _listening()}).start()
        async with MailServer(config, sockets={"smtp": _listening()}):
            pass  # free again once the first one stopped

    _run(main)


def _not_due(config: ServerConfig) -> str:
    """A queued message, not due for an hour: no round starts for it meanwhile."""
    queue = Queue(config.queue_dir)
    queue.open()
    entry = queue.add(b"Subject: x\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    queue.update(dataclasses.replace(entry, next_attempt=time.time() + 3600))
    return entry.id


def test_a_queue_command_is_kept_until_it_has_been_carried_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server removed a ``queue`` command's file as it read it, before acting on
    it: killed in between, it lost a command the tool had already reported as handed
    to the running server. Here the worker fails in between instead; the command is
    still there for the next run, which carries it out and removes it. The failure is
    logged and does not stop the server (or its start: the next start would meet the
    same command). The commands after it wait too: ``release`` carried out first, then
    the ``hold`` kept for the next run, left held what the operator had released."""
    config = _config(tmp_path, "abc.example", {}, submission_port=0)
    queue_id = _not_due(config)
    queue = Queue(config.queue_dir)
    commands = config.queue_dir / "commands"

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            apply = server.worker.apply

            async def killed_at_hold(command: QueueCommand) -> Any:
                if command.action == "hold":
                    raise RuntimeError("killed")
                return await apply(command)

            submit(config.queue_dir, QueueCommand("hold", (queue_id,)), pid=0)
            submit(config.queue_dir, QueueCommand("release", (queue_id,)), pid=0)
            with monkeypatch.context() as patch:
                patch.setattr(server.worker, "apply", killed_at_hold)
                await server.run_queue_commands()  # logged, not raised: a start goes on
            assert len(list(commands.glob("*.json"))) == 2
            await server.run_queue_commands()
            assert not queue.load(queue_id).held  # held, then released
            assert list(commands.glob("*.json")) == []

    _run(main)


def test_a_queue_command_the_disk_refuses_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``hold`` whose envelope the disk refused to take was logged by the worker and
    then counted as carried out: its file went, and a restart lost the hold. It is kept
    for the next run now."""
    config = _config(tmp_path, "abc.example", {}, submission_port=0)
    queue_id = _not_due(config)
    queue = Queue(config.queue_dir)
    commands = config.queue_dir / "commands"

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            submit(config.queue_dir, QueueCommand("hold", (queue_id,)), pid=0)
            with monkeypatch.context() as patch:
                patch.setattr(server.queue, "update", _no_space)
                await server.run_queue_commands()
            assert len(list(commands.glob("*.json"))) == 1
            assert "queue hold: failed; kept" in caplog.text
            await server.run_queue_commands()
            assert queue.load(queue_id).held
            assert list(commands.glob("*.json")) == []

    _run(main)


def _in_a_round(tmp_path: Path) -> tuple[socket.socket, ServerConfig, StaticResolver, str]:
    """A server's configuration whose one queued message goes to an exchanger that
    takes the connection and never greets (the round waits for it), with that exchanger's
    listening socket and the resolver that leads there."""
    tarpit = socket.create_server((LOOPBACK, 0))
    tarpit.settimeout(10)
    zone = f"pqr.example MX 10 mx.pqr.example\nmx.pqr.example A {LOOPBACK}\n"
    config = _config(
        tmp_path,
        "abc.example",
        {},
        submission_port=0,
        remote_port=tarpit.getsockname()[1],
        retry_after=3600,
    )
    queue = Queue(config.queue_dir)
    queue.open()
    entry = queue.add(b"Subject: x\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    return tarpit, config, StaticResolver.from_zone_text(zone), entry.id


def _take_one_message(peer: socket.socket) -> None:
    """Be the exchanger on ``peer``: greet, take the one message, say goodbye."""
    peer.sendall(b"220 mx.pqr.example\r\n")
    lines = peer.makefile("rb")
    in_data = False
    for line in lines:
        if in_data:
            if line == b".\r\n":
                in_data = False
                peer.sendall(b"250 2.0.0 taken\r\n")
            continue
        verb = line[:4].upper()
        if verb == b"DATA":
            in_data = True
            peer.sendall(b"354 go on\r\n")
        elif verb == b"QUIT":
            peer.sendall(b"221 bye\r\n")
            return
        else:
            peer.sendall(b"250 ok\r\n")


def test_a_delete_that_waited_for_a_round_that_delivered_the_message_is_not_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's audit: ``queue delete`` of a message whose relay session had begun
    logged ``queue delete: 1 messages``, and the message was then delivered. The line
    counts what took effect (none yet, one waiting), and the message the round ended
    gets a line saying the delete did nothing."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    tarpit, config, resolver, queue_id = _in_a_round(tmp_path)

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}, resolver=resolver) as server:
            peer, _ = await asyncio.to_thread(tarpit.accept)  # the round is under way
            with peer:
                submit(config.queue_dir, QueueCommand("delete", (queue_id,)), pid=0)
                await server.run_queue_commands()
                assert "queue delete: 0 messages, 1 waiting for its delivery round" in (
                    caplog.text
                )
                await asyncio.to_thread(_take_one_message, peer)
            await _eventually(lambda: f"{queue_id}: queue delete not done" in caplog.text)

    with tarpit:
        _run(main)
    assert f"{queue_id}: to=<a@pqr.example>" in caplog.text and "status=sent" in caplog.text
    assert (
        f"{queue_id}: queue delete not done: its delivery round, under way when the command "
        "came, ended it first"
    ) in caplog.text
    assert "removed by the operator" not in caplog.text
    assert "queue delete: 1 message" not in caplog.text


def test_a_flush_counts_no_held_message_and_says_each_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit's flush of three held messages logged ``queue flush: 3 messages``;
    it sent none (Postfix's flush leaves held mail alone too). Now each has its line,
    the count is what was flushed, and one message is one ``message``."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    tarpit, config, resolver, first = _in_a_round(tmp_path)
    queue = Queue(config.queue_dir)
    second = queue.add(b"Subject: y\r\n\r\ny\r\n", "john@abc.example", ["b@pqr.example"])
    for queue_id in (first, second.id):
        queue.update(dataclasses.replace(queue.load(queue_id), held=True))

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}, resolver=resolver) as server:
            submit(config.queue_dir, QueueCommand("flush", ()), pid=0)
            await server.run_queue_commands()
            # At once, or after the start's look at each (which finds it held).
            assert "queue flush: 0 messages" in caplog.text
            skipped = [
                f"{queue_id}: queue flush skipped: on hold (queue release sends it)"
                for queue_id in (first, second.id)
            ]
            await _eventually(lambda: all(line in caplog.text for line in skipped))
            submit(config.queue_dir, QueueCommand("hold", (first,)), pid=0)
            await server.run_queue_commands()
            assert "queue hold: 0 messages (1 already held)\n" in caplog.text

    with tarpit:
        _run(main)


def test_a_queue_command_for_a_message_in_delivery_is_kept_until_it_is_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``hold`` for a message in a delivery round waits in memory for the round's
    end; its file went at once all the same, so a stop or crash before the round ended
    lost it, and the message went on being delivered. The file now stays until the
    hold is on disk, after the round."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    tarpit, config, resolver, queue_id = _in_a_round(tmp_path)
    queue = Queue(config.queue_dir)
    commands = config.queue_dir / "commands"

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}, resolver=resolver) as server:
            peer, _ = await asyncio.to_thread(tarpit.accept)  # the round is under way
            with peer:
                submit(config.queue_dir, QueueCommand("hold", (queue_id,)), pid=0)
                await server.run_queue_commands()
                await server.run_queue_commands()  # a second signal: carried out once
                line = "queue hold: 0 messages, 1 waiting for its delivery round"
                assert caplog.text.count(line) == 1
                assert len(list(commands.glob("*.json"))) == 1
                assert not queue.load(queue_id).held
            # The exchanger hangs up: the round ends, deferred, and the hold is written.
            await _eventually(lambda: not any(commands.glob("*.json")))
            assert queue.load(queue_id).held

    with tarpit:
        _run(main)


@contextlib.asynccontextmanager
async def _holding_in_a_round(
    tarpit: Any, config: ServerConfig, resolver: Any, queue_id: str
) -> AsyncIterator[MailServer]:
    """A server started whose delivery round of ``queue_id`` is under way (its
    exchanger, ``tarpit``, took the connection and says nothing), with a ``queue
    hold`` of that message given and waiting for the round; stopped at the end."""
    server = MailServer(config, sockets={"smtp": _listening()}, resolver=resolver)
    await server.start()
    try:
        peer, _ = await asyncio.to_thread(tarpit.accept)  # the round is under way
        with peer:
            submit(config.queue_dir, QueueCommand("hold", (queue_id,)), pid=0)
            await server.run_queue_commands()
            yield server
    finally:
        await server.aclose(grace=0)


def test_a_queue_command_waiting_for_a_round_is_kept_through_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop cuts the round short, and the ``hold`` that waited for it cannot be
    written (the disk refuses it): the command is still there (it was removed as the
    server read it), and the next server carries it out as it starts, before a round
    of its own begins."""
    tarpit, config, resolver, queue_id = _in_a_round(tmp_path)
    queue = Queue(config.queue_dir)
    commands = config.queue_dir / "commands"

    async def main() -> None:
        async with _holding_in_a_round(tarpit, config, resolver, queue_id) as server:
            with monkeypatch.context() as patch:
                patch.setattr(server.queue, "update", _no_space)
                await server.aclose(grace=0.1)
        assert len(list(commands.glob("*.json"))) == 1
        assert not queue.load(queue_id).held
        await _start_and_stop(config, resolver)

    with tarpit:
        _run(main)
    assert queue.load(queue_id).held
    assert list(commands.glob("*.json")) == []


def test_a_command_for_all_left_by_a_stop_spares_mail_accepted_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``queue delete ALL`` waits for a round's end and a stop leaves it in its file;
    the next start carried it out on the queue as it was then, and deleted a message
    accepted (answered 250) after it was given: neither delivered nor bounced. ALL is
    the messages queued when the command was given, and only those, run twice or not."""
    tarpit, config, resolver, _ = _in_a_round(tmp_path)  # its round waits
    queue = Queue(config.queue_dir)
    commands = config.queue_dir / "commands"

    async def main() -> str:
        server = MailServer(config, sockets={"smtp": _listening()}, resolver=resolver)
        await server.start()
        try:
            peer, _ = await asyncio.to_thread(tarpit.accept)  # the round is under way
            with peer:
                submit(config.queue_dir, QueueCommand("delete"), pid=0)
                await server.run_queue_commands()
                later = _not_due(config)  # accepted after the command was given
                with monkeypatch.context() as patch:
                    patch.setattr(server.queue, "remove", _no_space)
                    await server.aclose(grace=0.1)
        finally:
            await server.aclose(grace=0)
        assert len(list(commands.glob("*.json"))) == 1
        await _start_and_stop(config, resolver)
        return later

    with tarpit:
        later = _run(main)
    assert [entry.id for entry in queue.entries()] == [later]
    assert list(commands.glob("*.json")) == []


def test_a_command_for_all_an_older_version_left_is_not_carried_out_on_a_pin_not_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An older version's ``delete ALL`` whose pin the disk refused to write was carried
    out on the pin kept in memory: waiting for a round, it was left without ids by a
    stop, and the next start pinned it anew, to a message accepted in between too, and
    deleted that unseen (neither delivered nor bounced). A command whose pin is not on
    disk is not carried out: it is set aside, and the log says so."""
    from smtpcore.server import queuectl

    tarpit, config, resolver, in_delivery = _in_a_round(tmp_path)  # its round waits
    queue = Queue(config.queue_dir)
    older = _older_all(config, "delete")

    async def main() -> str:
        server = MailServer(config, sockets={"smtp": _listening()}, resolver=resolver)
        older.rename(older.with_suffix(".later"))  # given once the server runs
        await server.start()
        try:
            peer, _ = await asyncio.to_thread(tarpit.accept)  # the round is under way
            with peer:
                older.with_suffix(".later").rename(older)
                with monkeypatch.context() as patch:
                    patch.setattr(queuectl, "_write_command", _no_space)
                    await server.run_queue_commands()
                later = _not_due(config)  # accepted after the command was read
                await server.aclose(grace=0.1)
        finally:
            await server.aclose(grace=0)
        await _start_and_stop(config, resolver)
        return later

    with tarpit:
        later = _run(main)
    assert sorted(entry.id for entry in queue.entries()) == sorted([in_delivery, later])
    assert [path.name for path in older.parent.iterdir()] == [older.with_suffix(".unpinned").name]
    assert "queue delete ALL, left by an earlier version, cannot be pinned" in caplog.text
    assert "not carried out" in caplog.text


def test_a_queue_command_waiting_for_a_round_is_written_within_the_stop_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop gave a ``hold`` that waited for the round it cut short five seconds of its
    own past the grace, so a slow disk made ``--stop-timeout`` 0.3s a stop of over five.
    The wait comes out of the grace now; the hold not written by then keeps its file."""
    tarpit, config, resolver, queue_id = _in_a_round(tmp_path)
    commands = config.queue_dir / "commands"
    disk_back = threading.Event()

    def slow_disk(entry: object) -> None:
        disk_back.wait(10)
        raise OSError(errno.EIO, "the disk came back too late")

    async def main() -> float:
        try:
            async with _holding_in_a_round(tarpit, config, resolver, queue_id) as server:
                monkeypatch.setattr(server.queue, "update", slow_disk)
                started = time.monotonic()
                await server.aclose(grace=0.3)
                return time.monotonic() - started
        finally:
            disk_back.set()

    with tarpit:
        took = _run(main)
    assert took < 1.5
    assert len(list(commands.glob("*.json"))) == 1


def test_a_queue_command_being_carried_out_is_cut_off_within_the_stop_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop waited for a ``queue hold ALL`` being carried out to reach its last
    message: ``--stop-timeout 1s`` with 2,500 messages stopped in five. It is cut off
    at the end of the grace now, its file kept, and the next start carries it out."""
    config = _config(tmp_path, "abc.example", {}, submission_port=0)
    resolver = StaticResolver.from_zone_text("")
    queue = Queue(config.queue_dir)
    queue.open()
    ids = []
    for _ in range(4):
        entry = queue.add(b"Subject: x\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
        # Due in an hour: no round for them, the command alone writes.
        queue.update(dataclasses.replace(entry, next_attempt=time.time() + 3600))
        ids.append(entry.id)
    commands = config.queue_dir / "commands"

    async def main() -> float:
        server = MailServer(config, sockets={"smtp": _listening()}, resolver=resolver)
        await server.start()
        disk = SlowWrites(server.queue, monkeypatch, hold=1)
        submit(config.queue_dir, QueueCommand("hold"), pid=0)
        carrying_out = asyncio.get_running_loop().create_task(server.run_queue_commands())
        try:
            await asyncio.to_thread(disk.writing.wait, 5)
            started = time.monotonic()
            await server.aclose(grace=0.2)
            return time.monotonic() - started
        finally:
            disk.back.set()
            await asyncio.gather(carrying_out, return_exceptions=True)

    took = _run(main)
    assert took < 0.2 + 2
    assert len(list(commands.glob("*.json"))) == 1

    _run(lambda: _start_and_stop(config, resolver))
    assert all(queue.load(queue_id).held for queue_id in ids)
    assert list(commands.glob("*.json")) == []


def _older_all(config: ServerConfig, action: str) -> Path:
    """A command for every message as a version from before the pin left it: no ids,
    no ``"all"``."""
    commands = config.queue_dir / "commands"
    commands.mkdir(exist_ok=True)
    path = commands / "00000000000000000001-older.json"
    path.write_text(json.dumps({"action": action, "ids": []}))
    return path


@pytest.mark.parametrize("cut_off", ["pin", "hold"])
def test_a_stop_lets_the_lock_go_only_once_the_disk_work_it_cut_off_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut_off: str
) -> None:
    """A stop cancels the queue command being carried out, but not the thread that does
    its disk work: the server let go of the lock, and the thread went on to write (an
    older version's ``hold ALL`` pinned, a ``hold``'s envelope) after a ``queue`` tool,
    finding no server, had carried the command out, removed it, and the operator's
    ``release ALL`` had come: the stale hold came back. The lock now goes once that
    thread has ended, and the command stays for the next start."""
    from smtpcore.server import queuectl

    config = _config(tmp_path, "abc.example", {}, submission_port=0)
    queue_id = _not_due(config)
    commands = config.queue_dir / "commands"
    writing, go_on = threading.Event(), threading.Event()

    def slowly(work: Callable[..., Any]) -> Callable[..., Any]:
        def slow(*args: Any) -> Any:
            writing.set()
            go_on.wait(5)
            return work(*args)

        return slow

    async def main() -> None:
        server = MailServer(config, sockets={"smtp": _listening()})
        await server.start()
        if cut_off == "pin":
            _older_all(config, "hold")
            monkeypatch.setattr(queuectl, "_pinned", slowly(queuectl._pinned))
        else:
            submit(config.queue_dir, QueueCommand("hold", (queue_id,)), pid=0)
            monkeypatch.setattr(server.queue, "update", slowly(server.queue.update))
        carrying_out = asyncio.get_running_loop().create_task(server.run_queue_commands())
        try:
            await asyncio.to_thread(writing.wait, 5)
            stopping = asyncio.get_running_loop().create_task(server.aclose(grace=0.1))
            await asyncio.sleep(0.5)  # the grace is over: the command is cut off
            assert running_server(config.data_dir) == os.getpid()
            go_on.set()
            await stopping
            assert running_server(config.data_dir) is None
        finally:
            go_on.set()
            await asyncio.gather(carrying_out, return_exceptions=True)

    _run(main)
    [left] = commands.glob("*.json")  # for the next start
    pinned = cut_off == "pin"
    assert json.loads(left.read_text()) == {"action": "hold", "ids": [queue_id], "all": pinned}


@pytest.mark.parametrize("listener", ["smtp", "lmtp"])
def test_a_stop_lets_the_lock_go_only_once_a_session_cut_off_has_stored_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: str
) -> None:
    """A session's message is stored in a thread, which a stop's cut-off does not stop:
    the lock went at once, and a ``queue`` tool could act on the queue before the message
    landed there. The lock now goes once the message is stored, as it does for the
    delivery worker's disk work. The session, whose message was being stored, is closed
    with no reply, not told 421 (a message not taken): test_stop_mid_commit.py."""
    ports = {"smtp_port": 0, "submission_port": 0, "lmtp_port": 0, f"{listener}_port": 1}
    config = _config(tmp_path, "abc.example", {"a@abc.example": "pw"}, **ports)  # 1: on
    storing, go_on = threading.Event(), threading.Event()
    sock = _listening()
    owner: type = MailStore if listener == "smtp" else LocalMailboxes
    name = "accept" if listener == "smtp" else "deliver_file"
    store = getattr(owner, name)

    def slowly(*args: Any, **kwargs: Any) -> Any:
        storing.set()
        go_on.wait(5)
        return store(*args, **kwargs)

    monkeypatch.setattr(owner, name, slowly)

    async def main() -> None:
        server = MailServer(config, sockets={listener: sock})
        await server.start()
        try:
            reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            await reader.readline()
            hello = "LHLO" if listener == "lmtp" else "EHLO"
            for line in (f"{hello} c.example", "MAIL FROM:<>", "RCPT TO:<a@abc.example>"):
                writer.write(f"{line}\r\n".encode())
                while (await reader.readline())[3:4] == b"-":
                    pass
            writer.write(b"DATA\r\n")
            assert (await reader.readline()).startswith(b"354")
            writer.write(b"Subject: hi\r\n\r\nx\r\n.\r\n")
            await asyncio.to_thread(storing.wait, 5)
            stopping = asyncio.get_running_loop().create_task(server.aclose(grace=0.1))
            assert await reader.readline() == b""  # cut off with no reply, never a 421
            await asyncio.wait((stopping,), timeout=1.5)  # past the grace and CUT_OFF
            assert running_server(config.data_dir) == os.getpid()
            go_on.set()
            await stopping
            await _eventually(lambda: running_server(config.data_dir) is None)
            writer.close()
        finally:
            go_on.set()
            await server.aclose(grace=0)

    _run(main)


def test_a_command_for_all_an_older_version_left_is_pinned_before_mail_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start pinned an older version's command for ALL after its listeners had begun
    to accept mail (and a name lookup of up to two seconds): a ``delete ALL`` deleted
    mail accepted at the start, unseen. It is pinned before any listener is bound."""
    from smtpcore.server import queuectl

    config = _config(tmp_path, "abc.example", {}, submission_port=0)
    queue_id = _not_due(config)
    path = _older_all(config, "hold")
    listening: list[int] = []
    pinned = queuectl._pinned

    def pin(queue_dir: Path, command: QueueCommand) -> QueueCommand:
        listening.append(len(server.listeners))
        return pinned(queue_dir, command)

    monkeypatch.setattr(queuectl, "_pinned", pin)
    server = MailServer(config, sockets={"smtp": _listening()})

    async def main() -> None:
        await server.start()
        await server.aclose(grace=0.1)

    _run(main)
    assert listening == [0]
    assert Queue(config.queue_dir).load(queue_id).held
    assert not path.exists()


def test_a_stopped_server_leaves_no_process_id_in_its_lock(tmp_path: Path) -> None:
    """The process id a stopped server left in its lock file was read by a ``queue``
    tool that came as the next server had taken the lock and not yet marked it, and
    signalled: SIGUSR1 to whatever process had that id then, which it kills."""
    config = _config(tmp_path, "abc.example", {})
    lock = config.data_dir / LOCK_NAME

    async def main() -> None:
        server = MailServer(config, sockets={"smtp": _listening()})
        await server.start()
        assert lock.read_text().strip() == str(os.getpid())
        assert running_server(config.data_dir) == os.getpid()
        await server.aclose(grace=0.1)

    _run(main)
    assert lock.read_text().strip() == ""
    assert running_server(config.data_dir) is None


def test_sessions_and_deliveries_share_the_stop_timeout(tmp_path: Path) -> None:
    """A session in the middle of a message had the whole grace, then a delivery round
    had the whole grace again: ``--stop-timeout`` 1s stopped in 2.5s. The round goes on
    while the session ends and has what is left of the grace after it."""
    tarpit, config, resolver, _ = _in_a_round(tmp_path)
    config = dataclasses.replace(config, users={"a@abc.example": "pw"})
    smtp = _listening()

    async def main() -> float:
        server = MailServer(config, sockets={"smtp": smtp}, resolver=resolver)
        await server.start()
        try:
            peer, _ = await asyncio.to_thread(tarpit.accept)  # the round is under way
            with peer:
                reader, writer = await asyncio.open_connection(*smtp.getsockname()[:2])
                await reader.readline()
                for command in ("EHLO c.example", "MAIL FROM:<>", "RCPT TO:<a@abc.example>"):
                    writer.write(f"{command}\r\n".encode())
                    while (await reader.readline())[3:4] == b"-":
                        pass
                writer.write(b"DATA\r\n")
                assert (await reader.readline()).startswith(b"354")
                started = time.monotonic()
                await server.aclose(grace=1.0)
                took = time.monotonic() - started
                writer.close()
                return took
        finally:
            await server.aclose(grace=0)

    with tarpit:
        took = _run(main)
    assert took < 2.2  # the grace, then the half second a cut-off session takes to end


def test_a_running_server_clears_its_maildirs_tmp_now_and_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tmp/`` was cleared of dead deliveries at start only: a server that ran for
    months kept every one a crash (or a full disk) left meanwhile. It is cleared every
    few hours now (here every 50 ms, of files untouched for 0.3 s instead of 36 hours),
    and a delivery being written, whose file changes as it goes, is left alone."""
    monkeypatch.setattr(mailserver, "TMP_SCAN_EVERY", 0.05, raising=False)
    monkeypatch.setattr(maildir, "TMP_LIFETIME", 0.3)
    config = _config(tmp_path, "abc.example", {"john@abc.example": "pw"}, submission_port=0)
    mailbox = Maildir(config.mailbox_path("john@abc.example"))

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}):
            dead = mailbox.path / "tmp" / "1.M1P1Q1.dead"
            dead.write_bytes(b"cut short\r\n")
            writing = mailbox.begin(b"Subject: slow\r\n\r\n")
            for _ in range(10):  # a delivery that takes a second, written all along
                await asyncio.sleep(0.1)
                writing.write(b"more\r\n" * 12_000)  # past the file's buffer: on disk
            assert not dead.exists()
            writing.finish().commit()

    _run(main)
    (delivered,) = _messages(config, "john@abc.example")
    assert delivered.endswith(b"more\n")
    assert list((mailbox.path / "tmp").iterdir()) == []


def test_a_failing_tmp_cleanup_is_logged_and_the_stop_is_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cleanup that fails with something other than an OSError was the cleaner task's
    end, unseen, and its exception came out of the next stop, before the queue's last
    writes. It is logged, tried again next time, and the stop goes on."""
    monkeypatch.setattr(mailserver, "TMP_SCAN_EVERY", 0.02, raising=False)
    config = _config(tmp_path, "abc.example", {"john@abc.example": "pw"}, submission_port=0)
    tries: list[int] = []

    def failing(self: object) -> int:
        tries.append(1)
        raise RuntimeError("cannot list")

    async def main() -> None:
        async with MailServer(config, sockets={"smtp": _listening()}) as server:
            monkeypatch.setattr(type(server.mailboxes), "clean_all", failing)
            for _ in range(100):
                await asyncio.sleep(0.02)
                if len(tries) >= 2:
                    break

    with caplog.at_level(logging.ERROR, logger="smtpcore.server"):
        _run(main)
    assert len(tries) >= 2  # tried again after the failure
    assert "clearing tmp/ failed" in caplog.text


def test_dsn_requests_are_passed_on_and_answered(tmp_path: Path) -> None:
    """RFC 3461 end to end: the submission server offers DSN and passes NOTIFY, ORCPT,
    RET and ENVID to the next hop, which speaks DSN too; each server reports the
    deliveries it made itself ("delivered"), and nothing is reported twice."""
    pqr = _config(tmp_path, "pqr.example", {"brendon@pqr.example": "pw"})
    message = b"From: john@abc.example\r\nSubject: dsn\r\n\r\nbody\r\n"

    def submit(port: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.login("john@abc.example", "secret")
            assert smtp.has_extn("dsn")
            return smtp.sendmail(
                "john@abc.example",
                ["brendon@pqr.example", "local@abc.example"],
                message,
                mail_options=["RET=HDRS", "ENVID=QQ+2B314"],
                rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;team+2Bdsn@abc.example"],
            )

    pqr_smtp, abc_smtp = _listening(), _listening()
    abc = _config(
        tmp_path,
        "abc.example",
        {"john@abc.example": "secret", "local@abc.example": "pw"},
        remote_port=pqr_smtp.getsockname()[1],
        submission_port=1,  # on: the socket given below is used
    )
    pqr_to_abc = dataclasses.replace(pqr, remote_port=abc_smtp.getsockname()[1])

    async def main() -> None:
        zone = (
            "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
            "abc.example MX 10 mx.abc.example\nmx.abc.example A 127.0.0.1\n"
        )
        resolver = StaticResolver.from_zone_text(zone)
        async with (
            MailServer(pqr_to_abc, sockets={"smtp": pqr_smtp}, resolver=resolver),
            MailServer(
                abc, sockets={"submission": _listening(), "smtp": abc_smtp}, resolver=resolver
            ) as sender,
        ):
            assert await asyncio.to_thread(submit, _port(sender, "submission")) == {}
            await _eventually(lambda: len(_messages(abc, "john@abc.example")) == 2)
            await _eventually(lambda: not any((pqr.queue_dir / "envelopes").iterdir()))
            await _eventually(lambda: not any((abc.queue_dir / "envelopes").iterdir()))

    _run(main)
    assert len(_messages(pqr, "brendon@pqr.example")) == 1
    reports = sorted(_messages(abc, "john@abc.example"))
    assert len(reports) == 2  # one per server: abc delivered local@, pqr delivered brendon@
    for raw in reports:
        report = email.message_from_bytes(raw, policy=email.policy.default)
        assert report["Subject"] == "Successful Mail Delivery Report"
        assert report.get_content_type() == "multipart/report"
        assert b"Action: delivered" in raw and b"Action: relayed" not in raw
        assert b"Original-Envelope-Id: QQ+314" in raw
        assert b"Original-Recipient: rfc822; team+dsn@abc.example" in raw
        assert b"Content-Type: text/rfc822-headers" in raw
        assert b"Subject: dsn" in raw and b"\nbody\n" not in raw
    assert any(b"Final-Recipient: rfc822; brendon@pqr.example" in raw for raw in reports)
    assert any(b"Final-Recipient: rfc822; local@abc.example" in raw for raw in reports)


def _moved_to_cur(key: str, path: Path) -> None:
    """What a Maildir reader (a POP3 or IMAP server, a mail client) does with a new file."""
    path.rename(path.parent.parent / "cur" / f"{path.name}:2,S")


def _failing_hook(key: str, path: Path) -> None:
    raise RuntimeError("the hook failed")


@pytest.mark.parametrize(
    ("on_delivery", "errors"),
    [
        (_moved_to_cur, []),
        (
            _failing_hook,
            [  # the message, then the report to its local sender
                "the on_delivery hook failed for mary@abc.example",
                "the on_delivery hook failed for john@abc.example",
            ],
        ),
    ],
)
def test_a_message_delivered_with_notify_success_is_answered_250_whatever_follows(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    on_delivery: Callable[[str, Path], None],
    errors: list[str],
) -> None:
    """Once the copy is in the mailbox, what comes after cannot turn it into a 451 that
    the client's retry would duplicate (RFC 5321 §6.1): the success report takes the
    header from the spool, not from the delivered file, which its reader may have moved
    already, and a failing on_delivery hook is logged."""
    caplog.set_level(logging.ERROR, "smtpcore.mail")
    config = _config(tmp_path, "abc.example", {"john@abc.example": "pw", "mary@abc.example": "pw"})

    def send(port: int) -> tuple[int, bytes]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("mx.xyz.example")
            smtp.mail("john@abc.example")
            smtp.rcpt("mary@abc.example", ["NOTIFY=SUCCESS"])
            return smtp.data(b"Subject: once\r\n\r\nbody\r\n")

    async def main() -> None:
        sockets = {"smtp": _listening()}
        async with MailServer(config, sockets=sockets, on_delivery=on_delivery) as server:
            code, _ = await asyncio.to_thread(send, _port(server, "smtp"))
            assert code == 250
            await _eventually(lambda: len(_messages(config, "john@abc.example")) == 1)

    _run(main)
    (delivered,) = _messages(config, "mary@abc.example")
    assert delivered.endswith(b"\nSubject: once\n\nbody\n")
    (report,) = _messages(config, "john@abc.example")
    assert b"Action: delivered" in report and b"Subject: once" in report
    assert [record.getMessage().split(": ", 1)[1] for record in caplog.records] == errors


def test_a_recipient_given_twice_gets_one_group_in_the_success_report(tmp_path: Path) -> None:
    """The message is delivered once, and the report names the recipient once, as the
    queue's reports for remote recipients do."""
    config = _config(tmp_path, "abc.example", {"john@abc.example": "pw", "mary@abc.example": "pw"})

    def send(port: int) -> int:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("mx.xyz.example")
            smtp.mail("john@abc.example")
            for _ in range(2):
                smtp.rcpt("mary@abc.example", ["NOTIFY=SUCCESS"])
            return smtp.data(b"Subject: twice\r\n\r\nbody\r\n")[0]

    async def main() -> None:
        sockets = {"smtp": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            assert await asyncio.to_thread(send, _port(server, "smtp")) == 250
            await _eventually(lambda: len(_messages(config, "john@abc.example")) == 1)

    _run(main)
    assert len(_messages(config, "mary@abc.example")) == 1
    (report,) = _messages(config, "john@abc.example")
    assert report.count(b"Final-Recipient: rfc822; mary@abc.example") == 1


def test_two_addresses_of_one_mailbox_get_one_copy_and_a_success_report_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 3461 §6.2 owes a report to each recipient that asked, and RFC 5321 §6.1 one
    copy to the mailbox: ``Mary@`` and ``mary@`` are both reported, the mailbox gets
    the message once, and so does it for a third spelling that asked for no report,
    which is recorded delivered with them (it was in no record at all: had the copy
    failed for good, its failure would have been reported to no one)."""
    caplog.set_level(logging.INFO, "smtpcore")
    config = _config(tmp_path, "abc.example", {"john@abc.example": "pw", "mary@abc.example": "pw"})

    def send(port: int) -> int:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("mx.xyz.example")
            smtp.mail("john@abc.example")
            smtp.rcpt("Mary@abc.example", ["NOTIFY=SUCCESS"])
            smtp.rcpt("mary@abc.example", ["NOTIFY=SUCCESS,FAILURE"])
            smtp.rcpt("MARY@abc.example")
            return smtp.data(b"Subject: one box\r\n\r\nbody\r\n")[0]

    async def main() -> None:
        sockets = {"smtp": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            assert await asyncio.to_thread(send, _port(server, "smtp")) == 250
            await _eventually(lambda: len(_messages(config, "john@abc.example")) == 1)
            await _eventually(lambda: not any((config.queue_dir / "envelopes").iterdir()))

    _run(main)
    assert len(_messages(config, "mary@abc.example")) == 1
    (report,) = _messages(config, "john@abc.example")
    assert report.count(b"Final-Recipient: rfc822; Mary@abc.example") == 1
    assert report.count(b"Final-Recipient: rfc822; mary@abc.example") == 1
    assert b"MARY@" not in report
    assert any("to=<MARY@abc.example>" in r.getMessage() for r in caplog.records)


# -- storage failures ----------------------------------------------------------------


def _no_space(*args: object, **kwargs: object) -> NoReturn:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _refused_by(mailbox: Path) -> Callable[[Any, Any], None]:
    """``os.replace`` as it is when ``mailbox``'s ``new/`` takes no rename (made
    immutable, or its directory cannot grow on a full disk)."""
    replace = os.replace

    def rename(source: Any, target: Any) -> None:
        if Path(target).parent == mailbox / "new":
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        replace(source, target)

    return rename


def _store(tmp_path: Path) -> MailStore:
    config = _config(tmp_path, "abc.example", {"john@abc.example": "pw", "mary@abc.example": "pw"})
    queue = Queue(config.queue_dir)
    queue.open()
    mailboxes = LocalMailboxes(config)
    mailboxes.create_all()
    return MailStore(config, queue, mailboxes, None)


class _FullDisk(io.BufferedWriter):
    """A file on a full disk: what is written waits in the buffer, and flushing fails."""

    def flush(self) -> None:
        _no_space()


def test_a_spool_that_cannot_be_flushed_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client hears 451, and the spooled content does not stay in ``queue/tmp/``
    holding its disk space until the next start."""
    store = _store(tmp_path)
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FullDisk(io.FileIO(fd, "w")))
    spool = store.queue.spool()
    spool.write(b"Subject: x\r\n\r\nbody\r\n")
    john = {"john@abc.example": "john@abc.example"}
    with pytest.raises(OSError):
        store.accept(spool, "a@pqr.example", john, [], client="test")
    assert list((store.config.queue_dir / "tmp").iterdir()) == []


def test_a_mailbox_that_refuses_its_copy_gets_it_through_the_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a copy is in place the message is accepted: the recipient whose mailbox
    refused the rename is queued with its DSN parameters (here with no queue entry
    before), for the delivery worker to deliver and retry."""
    store = _store(tmp_path)
    mary = store.config.mailbox_path("mary@abc.example")
    monkeypatch.setattr(os, "replace", _refused_by(mary))
    spool = store.queue.spool()
    spool.write(b"Subject: x\r\n\r\nbody\r\n")
    local = {"john@abc.example": "john@abc.example", "mary@abc.example": "mary@abc.example"}
    dsn = {"mary@abc.example": QueuedRecipient("mary@abc.example", notify="SUCCESS")}
    accepted = store.accept(spool, "a@pqr.example", local, [], client="test", local_dsn=dsn)
    assert list(accepted.delivered) == ["john@abc.example"]
    assert accepted.queued is not None
    assert accepted.queued.recipients == (dsn["mary@abc.example"],)
    assert store.queue.read_content(accepted.queue_id) == b"Subject: x\r\n\r\nbody\r\n"
    assert [list((mary / sub).iterdir()) for sub in ("tmp", "new")] == [[], []]
    assert list((store.config.queue_dir / "tmp").iterdir()) == []


def test_a_refused_copy_the_queue_cannot_take_either_takes_the_others_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a full disk the queue may refuse the recipient a mailbox refused: then the
    client hears 451, and nothing stays delivered or queued for its retry to
    duplicate."""
    store = _store(tmp_path)
    monkeypatch.setattr(os, "replace", _refused_by(store.config.mailbox_path("mary@abc.example")))
    monkeypatch.setattr(store.queue, "update", _no_space)
    spool = store.queue.spool()
    spool.write(b"Subject: x\r\n\r\nbody\r\n")
    local = {"john@abc.example": "john@abc.example", "mary@abc.example": "mary@abc.example"}
    with pytest.raises(OSError):
        store.accept(spool, "a@pqr.example", local, ["b@pqr.example"], client="test")
    assert _messages(store.config, "john@abc.example") == []
    assert _messages(store.config, "mary@abc.example") == []
    for sub in ("tmp", "messages", "envelopes"):
        assert list((store.config.queue_dir / sub).iterdir()) == []


def test_a_message_one_mailbox_refuses_is_accepted_and_delivered_once_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote copy was already queued when the rename into mary's mailbox failed:
    the client hears 250 (a 451 would make it send every copy again), the queued copy
    goes out at once, and the delivery worker gives mary hers."""
    pqr = _config(tmp_path, "pqr.example", {"brendon@pqr.example": "pw"}, submission_port=0)
    pqr_smtp = _listening()
    abc = _config(
        tmp_path,
        "abc.example",
        {"john@abc.example": "secret", "mary@abc.example": "pw"},
        smtp_port=0,
        submission_port=1,  # on: the socket given below is used
        remote_port=pqr_smtp.getsockname()[1],
    )
    refuse = _refused_by(abc.mailbox_path("mary@abc.example"))
    rename = os.replace
    refusals: list[Any] = []

    def once(source: Any, target: Any) -> None:
        if not refusals:
            try:
                refuse(source, target)
            except OSError:
                refusals.append(target)
                raise
            return
        rename(source, target)

    def submit(port: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.login("john@abc.example", "secret")
            return smtp.sendmail(
                "john@abc.example",
                ["john@abc.example", "mary@abc.example", "brendon@pqr.example"],
                b"Subject: once\r\n\r\nbody\r\n",
            )

    async def main() -> dict[str, tuple[int, bytes]]:
        zone = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
        resolver = StaticResolver.from_zone_text(zone)
        monkeypatch.setattr(os, "replace", once)
        async with (
            MailServer(pqr, sockets={"smtp": pqr_smtp}, resolver=resolver),
            MailServer(abc, sockets={"submission": _listening()}, resolver=resolver) as sender,
        ):
            refused = await asyncio.to_thread(submit, _port(sender, "submission"))
            await _eventually(lambda: bool(_messages(pqr, "brendon@pqr.example")))
            await _eventually(lambda: not any((abc.queue_dir / "envelopes").iterdir()))
            return refused

    assert _run(main) == {}
    assert len(refusals) == 1
    for config, key in [
        (abc, "john@abc.example"),
        (abc, "mary@abc.example"),
        (pqr, "brendon@pqr.example"),
    ]:
        assert len(_messages(config, key)) == 1, key
    assert list((abc.mailbox_path("mary@abc.example") / "tmp").iterdir()) == []


def test_a_maildir_under_another_spelling_of_a_users_key_is_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys are NFC now: a Maildir an older server made under a users file's NFD
    spelling is no longer served, and the operator is told where its mail went."""
    caplog.set_level(logging.WARNING, "smtpcore.mail")
    config = _config(tmp_path, "abc.example", {"jos\u00e9@abc.example": "pw"})
    older = config.mailboxes_dir / "jose\u0301@abc.example"
    (older / "new").mkdir(parents=True)
    (config.mailboxes_dir / "not an address").mkdir()
    LocalMailboxes(config).create_all()
    (warning,) = [record.getMessage() for record in caplog.records]
    assert warning.startswith("mailbox directory jose\u0301@abc.example is another spelling")
    assert "served from jos\u00e9@abc.example alone" in warning


def test_cram_md5_and_apop_are_offered_only_while_a_user_has_a_clear_password(
    tmp_path: Path,
) -> None:
    """SCRAM keys cannot serve CRAM-MD5 or APOP. Both were offered all the same (CAPA's
    SASL line, the POP3 greeting's timestamp, EHLO's AUTH line), so fetchmail's default
    ``auth any`` tried CRAM-MD5 at every poll and logged a failed login the fail2ban
    jail counted. They follow the users now, across a reload too."""
    from smtpcore.server.credentials import hash_password

    keys_only = {"b@pqr.example": hash_password("pw")}
    ports = {"smtp_port": 0, "pop3_port": 1, "submission_port": 1}  # 1: the sockets below
    config = _config(tmp_path, "pqr.example", keys_only, **ports)

    def offered(pop3: int, submission: int) -> tuple[bool, bool, bool]:
        """(APOP timestamp, CRAM-MD5 in CAPA, CRAM-MD5 in EHLO)."""
        with socket.create_connection((LOOPBACK, pop3), timeout=10) as sock:
            reader = sock.makefile("rb")
            greeting = reader.readline()
            sock.sendall(b"CAPA\r\n")
            capa = b""
            for _ in range(50):
                line = reader.readline()
                if line in (b".\r\n", b""):
                    break
                capa += line
            sock.sendall(b"QUIT\r\n")
        with smtplib.SMTP(LOOPBACK, submission, timeout=10) as smtp:
            smtp.ehlo("h.example")
            ehlo = smtp.esmtp_features.get("auth", "")
        return b"<" in greeting, b"CRAM-MD5" in capa, "CRAM-MD5" in ehlo.split()

    async def main() -> list[tuple[bool, bool, bool]]:
        sockets = {"pop3": _listening(), "submission": _listening()}
        async with MailServer(config, sockets=sockets) as server:
            ports = _port(server, "pop3"), _port(server, "submission")
            seen = [await asyncio.to_thread(offered, *ports)]
            clear = dataclasses.replace(config, users={**keys_only, "c@pqr.example": "pw"})
            await server.reload(clear)
            seen.append(await asyncio.to_thread(offered, *ports))
            await server.reload(config)
            seen.append(await asyncio.to_thread(offered, *ports))
            return seen

    assert _run(main) == [(False, False, False), (True, True, True), (False, False, False)]


def test_the_lmtp_listener_offers_no_dsn(tmp_path: Path) -> None:
    """The ``lmtp`` listener reports nothing itself: the LMTP client reports from each
    recipient's reply. Offering DSN would tell the client that reports are this
    server's job (RFC 3461 §5.2.1), and Postfix would then send none: see
    test_postfix_lmtp.py for the report Postfix makes when it is not offered."""
    config = _config(tmp_path, "pqr.example", {"a@pqr.example": "x"}, smtp_port=0, lmtp_port=1)

    async def main() -> list[str]:
        async with MailServer(config, sockets={"lmtp": _listening()}) as server:
            client = SMTPClient(LOOPBACK, _port(server, "lmtp"), lmtp=True, hostname="client")
            async with client:
                return [keyword for keyword, _ in client.connection.extensions.offered]

    extensions = _run(main)
    assert "PIPELINING" in extensions
    assert "DSN" not in extensions
