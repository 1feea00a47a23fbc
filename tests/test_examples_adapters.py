"""The adapter examples (issue 15 item 4) run for real, each under 60 lines."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import trio

from smtpcore.asyncio import SMTPClient

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = ["asyncio_beside_app", "trio_server", "memory_pipe", "lmtp_unix_socket", "smtp_over_ssh"]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_short(name: str) -> None:
    assert len((EXAMPLES / f"{name}.py").read_text().splitlines()) < 60


def test_asyncio_server_beside_an_app() -> None:
    example = load("asyncio_beside_app")
    echoed: list[bytes] = []

    async def started(app_port: int, smtp_port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", app_port)
        writer.write(b"still here\n")
        echoed.append(await reader.readline())
        writer.close()
        async with SMTPClient("127.0.0.1", smtp_port, hostname="client.test") as client:
            await client.send_message(
                b"Subject: hi\r\n\r\nhi\r\n", "a@abc.example", ["b@x.example"]
            )

    inbox = asyncio.run(example.main(started))
    assert echoed == [b"still here\n"]
    assert inbox.messages == [b"Subject: hi\r\n\r\nhi\r\n"]


def test_trio_server() -> None:
    inbox = trio.run(load("trio_server").main)
    assert inbox.messages == [b"Subject: hello\r\n\r\nfrom trio\r\n"]


def test_session_over_a_memory_pipe() -> None:
    inbox = trio.run(load("memory_pipe").main)
    assert inbox.messages == [b"Subject: piped\r\n\r\n.a line that starts with a dot\r\n"]


def test_lmtp_on_a_unix_socket(tmp_path: Path) -> None:
    result = asyncio.run(load("lmtp_unix_socket").main(tmp_path / "lmtp.sock"))
    assert [reply.delivery.code if reply.delivery else None for reply in result.recipients] == [
        250,
        452,
    ]


def test_smtp_over_an_ssh_channel() -> None:
    assert asyncio.run(load("smtp_over_ssh").main()).startswith("250 ")
