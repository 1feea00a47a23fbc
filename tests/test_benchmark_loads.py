"""The benchmarks' SMTP client loads deliver what they claim to (no timing here).

``benchmarks/client_cpu.py`` and ``compare.py`` publish figures for these
clients, for the two floors beside them (the asyncio floor, the blocking
floor) and for the asyncio minimal client (the least a client does, on
asyncio). A load that stopped delivering, a floor that misread a reply and
raced ahead, say, would still print figures. Each load sends three messages
to ``smtp-sink``, with and without PIPELINING, and the sink must hold all
three, whole; and each one runs its session through ``evicting_sink.py``
(``client_cpu.py --evict``), whose replies must be what the loads expect.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import peers

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
LOADS = [
    "smtplib_client",
    "sync_client",
    "asyncio_client",
    "trio_client",
    "asyncio_floor_client",
    "blocking_floor_client",
    "asyncio_minimal_client",
    "asyncio_woken_client",
    "asyncio_callback_client",
    "aiosmtplib_client",
]


def client_loads() -> Any:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("client_loads")


@pytest.mark.parametrize("pipelining", [True, False], ids=["PIPELINING", "no PIPELINING"])
@pytest.mark.parametrize("load", LOADS)
def test_each_load_delivers_its_messages_whole(
    load: str, pipelining: bool, tmp_path: Path
) -> None:
    loads = client_loads()
    extra = () if pipelining else ("-p",)
    with peers.smtp_sink(dump_dir=tmp_path, extra_args=extra) as sink:
        getattr(loads, load)(sink.port, 3)
        deadline = time.monotonic() + 10
        while len(sink.messages()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)  # the sink writes each dump as the transaction ends
        messages = sink.messages()
    assert len(messages) == 3
    body = loads.BODY_1K.replace(b"\r\n", b"\n")
    for message in messages:
        assert message.content == body
        assert message.rcpt_args == (f"<{loads.RECIPIENT}>",)


@pytest.mark.parametrize("pipelining", [True, False], ids=["PIPELINING", "no PIPELINING"])
@pytest.mark.parametrize("load", LOADS)
def test_each_load_runs_through_the_evicting_sink(load: str, pipelining: bool) -> None:
    loads = client_loads()
    port = peers.free_port()
    program = [sys.executable, str(BENCHMARKS / "evicting_sink.py"), str(port), "0.1"]
    with peers.run_process([*program, *(["--pipelining"] if pipelining else [])]) as process:
        peers.wait_for_port(peers.LOOPBACK, port, 10.0, process=process)
        getattr(loads, load)(port, 3)  # raises if a reply is not what the load expects
        assert process.popen.poll() is None, process.output()
