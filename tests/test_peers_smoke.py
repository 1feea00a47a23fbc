"""The peer programs the interop tests rely on are installed and start, and the helpers work.

Under CI a missing peer fails here first, with a plain message, rather than
deep inside an interop test.
"""

from __future__ import annotations

import errno
import os
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peers import (
    DEFAULT_EPHEMERAL_RANGE,
    LOWEST_TEST_PORT,
    MIN_WORKER_PORTS,
    KernelPorts,
    PortAllocator,
    RawSmtpSession,
    SmtpSink,
    ephemeral_port_range,
    free_port,
    ipv6_loopback_port,
    outside_ephemeral_range,
    port_allocator,
    port_is_free,
    raw_smtp_session,
    require_program,
    run_process,
    smtp_sink,
    smtp_source_path,
    wait_for_port,
    worker_slice,
)

#: program, arguments that make it print its version and exit, text expected in the output.
VERSION_COMMANDS = [
    ("swaks", ["--version"], "swaks version"),
    ("dnsmasq", ["--version"], "Dnsmasq version"),
    ("fetchmail", ["--version"], "fetchmail release"),
    ("getmail", ["--version"], "getmail"),
    ("mpop", ["--version"], "mpop version"),
    ("dovecot", ["--version"], "."),
    ("curl", ["--version"], "pop3s"),  # built with POP3 and SMTP, as the tests need
    ("msmtp", ["--version"], "msmtp version"),
    ("s-nail", ["-V"], "s-nail v"),
]


@pytest.mark.interop
@pytest.mark.parametrize(
    ("program", "args", "expected"), VERSION_COMMANDS, ids=[c[0] for c in VERSION_COMMANDS]
)
def test_peer_program_starts(program: str, args: list[str], expected: str) -> None:
    path = require_program(program)
    result = subprocess.run(
        [path, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        check=False,
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, output
    assert expected in output


@pytest.mark.interop
def test_smtp_source_present() -> None:
    # smtp-source has no --version: run without arguments, it prints its usage and fails.
    result = subprocess.run(
        [smtp_source_path()], stdin=subprocess.DEVNULL, capture_output=True, timeout=30
    )
    assert b"usage" in result.stdout + result.stderr


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with smtp_sink(dump_dir=tmp_path / "sink") as running:
        yield running


@pytest.mark.interop
def test_smtp_sink_accepts_mail_from_smtplib(sink: SmtpSink) -> None:
    body = b"Subject: smoke\r\n\r\n.a line with a leading dot\r\nlast line\r\n"
    with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test", timeout=10) as client:
        code, _ = client.ehlo()
        assert code == 250
        refused = client.sendmail(
            "alice@abc.example", ["bob@pqr.example", "carol@pqr.example"], body
        )
        assert refused == {}
    [message] = sink.messages()
    assert message.client_proto == "ESMTP"
    assert message.helo == "client.test"
    assert message.mail_args == "<alice@abc.example>"
    assert message.rcpt_args == ("<bob@pqr.example>", "<carol@pqr.example>")
    assert message.content == body.replace(b"\r\n", b"\n")


@pytest.mark.interop
def test_raw_session_frames_replies_against_smtp_sink(sink: SmtpSink) -> None:
    with raw_smtp_session(sink.host, sink.port) as session:
        assert session.recv_reply().startswith(b"220 ")
        ehlo = session.command(b"EHLO client.test")
        lines = ehlo.split(b"\r\n")
        assert lines[0].startswith(b"250-") and lines[-2].startswith(b"250 ")
        assert b"250-PIPELINING" in ehlo
        # Pipelined commands in one write; their replies come back in order, one per call.
        session.send(b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\nRSET\r\n")
        assert [session.recv_reply()[:3] for _ in range(3)] == [b"250", b"250", b"250"]
        assert session.command(b"QUIT").startswith(b"221")
        assert session.recv_some() == b""
    assert sink.messages() == []


def _serve_chunks(server: socket.socket, chunks: list[bytes]) -> None:
    with server:
        for chunk in chunks:
            server.sendall(chunk)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 1000])
def test_raw_session_reply_framing(chunk_size: int) -> None:
    wire = b"220 hi\r\n250-one\r\n250-two\r\n250 three\r\n354\r\n221 bye\r\n"
    chunks = [wire[i : i + chunk_size] for i in range(0, len(wire), chunk_size)]
    ours, theirs = socket.socketpair()
    writer = threading.Thread(target=_serve_chunks, args=(theirs, chunks))
    writer.start()
    with RawSmtpSession(ours) as session:
        assert session.recv_reply() == b"220 hi\r\n"
        assert session.recv_reply() == b"250-one\r\n250-two\r\n250 three\r\n"
        assert session.recv_reply() == b"354\r\n"
        assert session.recv_reply() == b"221 bye\r\n"
        with pytest.raises(ConnectionError):
            session.recv_reply()
    writer.join()


def test_free_port_never_hands_out_a_port_the_kernel_picks_nor_one_twice() -> None:
    """free_port() bound port 0 and let it go: the port came from the ephemeral range,
    where the other xdist worker's servers and every outgoing connect() take theirs,
    so it could be gone before the peer bound it. Its ports now come from outside that
    range, from this worker's share, once each (where the share is large enough)."""
    low, high = ephemeral_port_range()
    mine = worker_slice(outside_ephemeral_range((low, high)), os.environ)
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    if len(mine) >= MIN_WORKER_PORTS:
        assert all(port in mine and not low <= port <= high for port in ports)
    else:  # this machine's ephemeral range leaves too few: the kernel picks
        assert isinstance(port_allocator((low, high), os.environ), KernelPorts)


def xdist(index: int, workers: int) -> dict[str, str]:
    return {"PYTEST_XDIST_WORKER": f"gw{index}", "PYTEST_XDIST_WORKER_COUNT": str(workers)}


@given(
    low=st.integers(1, 65535),
    width=st.integers(0, 65535),
    workers=st.integers(1, 16),
)
def test_worker_shares_are_disjoint_and_outside_the_ephemeral_range(
    low: int, width: int, workers: int
) -> None:
    """Any ephemeral range, however little it leaves outside (``1024 65535`` leaves
    nothing), gives each worker an allocator: an empty range made the import fail."""
    ephemeral = (low, min(low + width, 65535))
    ports = outside_ephemeral_range(ephemeral)
    ends = [ports[0], ports[-1]] if ports else []  # a range: its ends tell where it lies
    assert not any(ephemeral[0] <= port <= ephemeral[1] for port in ends)
    assert all(port >= LOWEST_TEST_PORT for port in ends)
    # The first workers, then as many replacements of crashed ones (gw2, gw3 of two).
    shares = [set(worker_slice(ports, xdist(index, workers))) for index in range(2 * workers)]
    assert sum(len(share) for share in shares) == len(set().union(*shares))
    assert set().union(*shares) <= set(ports)
    assert worker_slice(ports, {}) == ports
    for index in range(3 * workers):
        allocator = port_allocator(ephemeral, xdist(index, workers))
        share = worker_slice(ports, xdist(index, workers))
        assert isinstance(allocator, PortAllocator) == (len(share) >= MIN_WORKER_PORTS)


def test_a_replaced_worker_shares_no_port_with_a_live_one() -> None:
    """xdist names a worker that replaces a crashed one ``gw2`` (of two workers): it
    took the whole range, the live worker's share with it."""
    ports = range(10000, 32768)
    first, second = (set(worker_slice(ports, xdist(index, 2))) for index in (0, 1))
    for replacement in (2, 3):
        share = set(worker_slice(ports, xdist(replacement, 2)))
        assert len(share) >= MIN_WORKER_PORTS
        assert not share & first and not share & second
    assert worker_slice(ports, xdist(4, 2)) == worker_slice(ports, xdist(2, 2))


@pytest.mark.parametrize(
    "ephemeral", [(1024, 65535), (9000, 65535), (10000, 65535), (5000, 65400)]
)
def test_an_ephemeral_range_that_leaves_too_few_ports_lets_the_kernel_pick(
    ephemeral: tuple[int, int],
) -> None:
    """``ip_local_port_range`` of ``1024 65535`` (a common tuning) leaves no port from
    10000 up outside it: the allocator was built on an empty range, and every test
    failed at collection. Too few ports per worker fall back to the kernel's pick."""
    for environ in ({}, xdist(0, 2), xdist(1, 2), xdist(2, 2)):
        allocator = port_allocator(ephemeral, environ)
        assert isinstance(allocator, KernelPorts)
    ports = [allocator.allocate("127.0.0.1") for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(port_is_free("127.0.0.1", port) for port in ports)


def test_a_small_stretch_outside_the_ephemeral_range_is_still_used() -> None:
    """Below 10000 nothing is taken, but what lies between 10000 and a range that
    starts higher is used, however the range ends."""
    allocator = port_allocator((20000, 65535), xdist(1, 2))
    assert isinstance(allocator, PortAllocator)
    assert LOWEST_TEST_PORT <= allocator.allocate("127.0.0.1") < 20000


def test_an_unreadable_ephemeral_range_falls_back_to_linux_default(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("not a range\n")
    assert ephemeral_port_range(tmp_path / "range") == DEFAULT_EPHEMERAL_RANGE
    assert ephemeral_port_range(tmp_path / "absent") == DEFAULT_EPHEMERAL_RANGE
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ephemeral_port_range(tmp_path / "range") == (40000, 50000)


def test_a_taken_port_is_skipped_and_none_is_handed_out_twice() -> None:
    taken, spare = free_port(), free_port()
    allocator = PortAllocator([taken, spare], start=0)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        assert allocator.allocate("127.0.0.1") == spare
    with pytest.raises(RuntimeError, match="all 2 ports are handed out or taken"):
        allocator.allocate("127.0.0.1")


def test_a_host_that_cannot_be_bound_raises_and_uses_up_no_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any bind error counted as "port taken", and each port is tried once: one
    host that cannot be bound (``::1`` without IPv6 loopback; here 192.0.2.1, which
    is no address of this machine) used up every port of the worker, and said they
    were all handed out. Only "in use" (and "refused") says a port is taken."""
    bind = socket.socket.bind

    def no_such_address(sock: socket.socket, address: Any) -> None:
        if address[0] == "192.0.2.1":  # never bound for real: the error a bind gets
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        bind(sock, address)

    monkeypatch.setattr(socket.socket, "bind", no_such_address)
    first, second = free_port(), free_port()
    allocator = PortAllocator([first, second], start=0)
    for _ in range(3):
        with pytest.raises(OSError, match=re.escape("cannot bind on '192.0.2.1'")) as raised:
            allocator.allocate("192.0.2.1")
        assert raised.value.errno == errno.EADDRNOTAVAIL
    assert allocator.allocate("127.0.0.1") == first
    with pytest.raises(OSError, match=re.escape("192.0.2.1")):
        KernelPorts().allocate("192.0.2.1")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", second))
        listener.listen()
        assert not port_is_free("127.0.0.1", second)  # in use: taken, no error


def test_a_machine_without_ipv6_loopback_skips_or_fails_what_needs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tests that name an IPv6 server took their port from ``free_port("::1")``,
    which errors where ``::1`` cannot be bound: each errored with ``cannot bind``
    instead of saying what the machine lacks, skipped like a missing peer (and failed
    under CI)."""
    bind = socket.socket.bind

    def no_ipv6(sock: socket.socket, address: Any) -> None:
        if sock.family == socket.AF_INET6:
            raise OSError(errno.EADDRNOTAVAIL, os.strerror(errno.EADDRNOTAVAIL))
        bind(sock, address)

    monkeypatch.setattr(socket.socket, "bind", no_ipv6)
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="no IPv6 loopback here"):
        ipv6_loopback_port()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no IPv6 loopback here"):
        ipv6_loopback_port()


def test_wait_for_port_and_free_port() -> None:
    port = free_port()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", port, timeout=0.2)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        wait_for_port("127.0.0.1", port, timeout=5)


def test_run_process_stops_the_process_and_its_children() -> None:
    # The child starts a grandchild; both must be gone once the block ends.
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with run_process([sys.executable, "-c", script]) as process:
        for _ in range(500):
            if process.output().strip():
                break
            time.sleep(0.01)
        grandchild = int(process.output().split()[0])
        assert process.popen.poll() is None
    assert process.popen.returncode is not None
    assert _is_gone(grandchild)


def _is_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` no longer exists or is a zombie waiting for init to reap it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2][:1]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.01)
    return False


def test_require_program_skips_or_fails_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_program("no-such-program-smtpcore")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_program("no-such-program-smtpcore")
