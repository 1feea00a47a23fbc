"""Real SMTP peers against both adapters, on loopback.

Our server is driven by smtplib (test_adapters_server.py), aiosmtplib,
swaks (plain, ``--tls``, ``--pipeline``) and Postfix's smtp-source as a load
generator; our client sends to aiosmtpd and to Postfix's smtp-sink. A
missing program skips on a developer's machine and fails under CI.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from peers import (
    TLSFiles,
    free_port,
    missing_peer,
    module,
    require_program,
    run,
    running_smtp_server,
    smtp_sink,
    smtp_source_path,
)
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply

pytestmark = pytest.mark.interop

MESSAGE = b"Subject: interop\r\n\r\n.leading dot\r\nbody\r\n"


class Counting(Handler):
    """Accepts every recipient at pqr.example and counts what it sees."""

    def __init__(self) -> None:
        self.recipients: Counter[str] = Counter()
        self.messages: list[Envelope] = []
        self.lock = threading.Lock()

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        with self.lock:
            self.messages.append(envelope)
            self.recipients.update(str(r.mailbox) for r in envelope.recipients)
        return None


# -- real clients against our server ----------------------------------------------


def test_aiosmtplib_with_starttls(adapter: str, tls: TLSFiles) -> None:
    handler = Counting()
    with running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server:

        async def send() -> Any:
            return await aiosmtplib.send(
                MESSAGE,
                sender="a@abc.example",
                recipients=["b@pqr.example", "c@pqr.example"],
                hostname="127.0.0.1",
                port=server.port,
                start_tls=True,
                tls_context=tls.client_context,
            )

        errors, _ = asyncio.run(send())
    assert errors == {}
    [envelope] = handler.messages
    assert envelope.content == MESSAGE


SWAKS_MODES = {
    "plain": [],
    "tls": ["--tls", "--tls-verify"],
    "pipeline": ["--pipeline"],
}


@pytest.mark.parametrize("mode", SWAKS_MODES)
def test_swaks(adapter: str, tls: TLSFiles, mode: str) -> None:
    swaks = require_program("swaks")
    handler = Counting()
    with running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server:
        argv = [
            swaks,
            "--server",
            f"127.0.0.1:{server.port}",
            "--from",
            "a@abc.example",
            "--to",
            "b@pqr.example,c@pqr.example",
            "--helo",
            "client.test",
            "--tls-ca-path",
            str(tls.ca_file),
            "--tls-sni",
            "localhost",
            *SWAKS_MODES[mode],
        ]
        result = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    if "requires Net::SSLeay" in output:
        missing_peer("swaks --tls needs Perl's Net::SSLeay (Debian: libnet-ssleay-perl)")
    assert result.returncode == 0, output
    [envelope] = handler.messages
    assert sorted(str(r.mailbox) for r in envelope.recipients) == [
        "b@pqr.example",
        "c@pqr.example",
    ]
    if mode == "pipeline":
        assert "PIPELINING" in output
    if mode == "tls":
        assert "TLS started" in output


#: smtp-source load in the test; benchmarks/adapters_smtp.py runs the same at full size.
SOURCE_MESSAGES = 10_000
SOURCE_SESSIONS = 20


def test_smtp_source_load_every_message_accepted_once(adapter: str) -> None:
    source = smtp_source_path()
    handler = Counting()
    with running_smtp_server(adapter, handler, max_sessions=100) as server:
        result = subprocess.run(
            [
                source,
                "-s",
                str(SOURCE_SESSIONS),
                "-m",
                str(SOURCE_MESSAGES),
                "-l",
                "1024",
                "-d",
                "-N",
                "-f",
                "a@abc.example",
                "-t",
                "b@pqr.example",
                f"127.0.0.1:{server.port}",
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        server.wait_for_sessions(0, timeout=30)
    assert len(handler.messages) == SOURCE_MESSAGES
    assert len(handler.recipients) == SOURCE_MESSAGES
    assert set(handler.recipients.values()) == {1}


# -- our client against real servers ------------------------------------------------


class AiosmtpdSink:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def test_our_client_against_aiosmtpd(adapter: str) -> None:
    sink = AiosmtpdSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        result = run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                ["b@pqr.example", "c@pqr.example"],
                host="127.0.0.1",
                port=controller.port,
            ),
        )
    finally:
        controller.stop()
    assert len(result.delivered) == 2
    [envelope] = sink.envelopes
    assert envelope.mail_from == "a@abc.example"
    assert envelope.rcpt_tos == ["b@pqr.example", "c@pqr.example"]
    assert envelope.original_content == MESSAGE


def test_our_client_reuses_a_session_with_smtp_sink(adapter: str, tmp_path: Path) -> None:
    async def send_three(port: int) -> int:
        delivered = 0
        async with module(adapter).SMTPClient("127.0.0.1", port, hostname="client.test") as c:
            for n in range(3):
                body = b"Subject: %d\r\n\r\n.dot %d\r\n" % (n, n)
                result = await c.send_message(body, "a@abc.example", ["b@pqr.example"])
                delivered += len(result.delivered)
        return delivered

    with smtp_sink(dump_dir=tmp_path / "sink") as sink:
        assert run(adapter, lambda: send_three(sink.port)) == 3
        messages = sink.messages()
    assert [m.helo for m in messages] == ["client.test"] * 3
    # The dump files may share a timestamp: compare without order.
    assert sorted(m.content for m in messages) == [
        b"Subject: %d\n\n.dot %d\n" % (n, n) for n in range(3)
    ]
    assert all(m.client_proto == "ESMTP" for m in messages)


def test_our_client_gets_per_recipient_refusals_from_smtp_sink(adapter: str) -> None:
    with (
        smtp_sink(extra_args=("-f", "RCPT")) as sink,
        pytest.raises(module(adapter).RecipientsRefused) as info,
    ):
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE, "a@abc.example", ["b@pqr.example"], host=sink.host, port=sink.port
            ),
        )
    assert info.value.reply.code >= 400
