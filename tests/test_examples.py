"""The examples the tutorials quote, run for real."""

from __future__ import annotations

import contextlib
import importlib.util
import smtplib
import socket
import ssl
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

import smtpcore.__main__ as cli
from peers import TLSFiles
from smtpcore import NEED_DATA, PAUSED, pop3

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_threaded_server_example_talks_to_smtplib(capsys: pytest.CaptureFixture[str]) -> None:
    example = load("threaded_server")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        client, _ = listener.accept()
        example.serve_client(client)

    thread = threading.Thread(target=accept_one)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            refused = smtp.sendmail(
                "john@abc.example",
                ["brendon@pqr.example"],
                b"Subject: hi\r\n\r\n.leading dot\r\nbye\r\n",
            )
            assert refused == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("john@abc.example", ["x@elsewhere.example"], b"no")
    finally:
        thread.join(timeout=10)
        listener.close()
    printed = capsys.readouterr().out
    assert ".leading dot\nbye" in printed.replace("\r\n", "\n")


def test_scripted_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--scripted"]) == 0
    out = capsys.readouterr().out
    assert "S: 220 mx.pqr.example" in out and "550 5.5.2" in out


def test_readme_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "MessageData(data=b'Subject: hi\\r\\n\\r\\n.a leading dot\\r\\n')" in out
    assert "250 2.0.0 Queued" in out


def test_pop3_stls_nonblocking_example_runs_tls_in_memory(tls: TLSFiles) -> None:
    """examples/pop3_stls_nonblocking.py: STLS over ssl.SSLObject and MemoryBIOs, with
    tls_started() after the handshake and the pipelined command dropped."""
    example = load("pop3_stls_nonblocking")
    lines = example.run(tls.server_context, tls.client_context)
    assert "STLS" not in lines and "TOP" in lines


def test_pop3_stls_nonblocking_feed_reads_every_record_then_the_end(tls: TLSFiles) -> None:
    """One SSLObject.read() gives at most one TLS record: feed() reads until
    SSLWantReadError, or a select loop would wait for bytes it already holds. A read
    with no plaintext feeds nothing; the peer's close_notify (SSLZeroReturnError) is
    receive_data(b"")."""
    example = load("pop3_stls_nonblocking")
    server_tls = example.MemoryTLS(tls.server_context, server_side=True)
    client_tls = example.MemoryTLS(tls.client_context, server_side=False)
    example.handshake(client_tls, server_tls)
    client = pop3.ClientConnection("client.test")
    client.receive_data(b"+OK ready\r\n")
    assert isinstance(client.next_event(), pop3.Ok)
    client.send(pop3.Capa())
    for record in (b"+OK Capability list follows\r\n", b"TOP\r\nUIDL\r\n", b".\r\n"):
        server_tls.tls.write(record)  # one record each
    example.shuttle(client_tls, server_tls)

    example.feed(client, client_tls)
    events = [client.next_event() for _ in range(4)]
    assert isinstance(events[0], pop3.Ok) and isinstance(events[2], pop3.EndOfResponse)
    assert events[1] == pop3.ResponseData(b"TOP\r\nUIDL\r\n") and events[3] is PAUSED

    client.send(pop3.Capa())
    example.feed(client, client_tls)  # SSLWantReadError: nothing at all, not the end
    assert client.next_event() is NEED_DATA
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the peer's own
        server_tls.tls.unwrap()  # close_notify
    example.shuttle(client_tls, server_tls)
    example.feed(client, client_tls)
    assert isinstance(client.next_event(), pop3.ConnectionClosed)
