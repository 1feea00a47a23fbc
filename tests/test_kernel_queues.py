"""The kernel's count of bytes a socket sent that its peer has not acknowledged
(Linux's ``SIOCOUTQ``), as the servers' probe of a timed-out session asks it, on the
socket beneath each of the library's transports, TLS too."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpcore._driver._kernel_queues import UNACKNOWLEDGED, unacknowledged

LOOPBACK = "127.0.0.1"

linux_only = pytest.mark.skipif(
    UNACKNOWLEDGED is None, reason="SIOCOUTQ on a socket is Linux's; elsewhere it is None"
)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on loopback: ours with a small send buffer, the peer's with a
    small receive buffer, so that a write the peer does not read stays unacknowledged."""
    with socket.create_server((LOOPBACK, 0)) as listener:
        theirs = socket.socket()
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        theirs.connect(listener.getsockname())
        ours, _ = listener.accept()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    ours.setblocking(False)
    with ours, theirs:
        yield ours, theirs


def fill(sock: socket.socket) -> int:
    """Write to ``sock`` until the kernel takes no more; how much it took."""
    sent = 0
    while True:
        try:
            sent += sock.send(b"x" * 65536)
        except BlockingIOError:
            return sent


@linux_only
def test_the_count_falls_as_the_peer_reads(pair: tuple[socket.socket, socket.socket]) -> None:
    """Bytes the peer has not read (nor so acknowledged) are counted; once it reads them
    all, the count falls to nothing (within a generous bound: the last acknowledgement
    may take a moment)."""
    ours, theirs = pair
    sent = fill(ours)
    before = unacknowledged(ours)
    assert before is not None and 0 < before <= sent
    theirs.settimeout(10)
    got = 0
    while got < sent:
        got += len(theirs.recv(65536))
    for _ in range(1000):  # bounded: 10 s at most
        if unacknowledged(ours) == 0:
            break
        time.sleep(0.01)
    assert unacknowledged(ours) == 0


@linux_only
def test_nothing_written_is_nothing_unacknowledged(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    assert unacknowledged(pair[0]) == 0


def test_no_socket_a_closed_one_or_no_socket_at_all_cannot_say(tmp_path: Path) -> None:
    """None, the kernel cannot say, for no socket, a closed socket, a pipe and a file
    (the ioctl fails there, or names another request)."""
    assert unacknowledged(None) is None
    closed = socket.socket()
    closed.close()
    assert unacknowledged(closed) is None
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb", closefd=False) as pipe:
            assert unacknowledged(pipe) is None
    finally:
        os.close(read_end)
        os.close(write_end)
    with (tmp_path / "file").open("wb") as file:
        assert unacknowledged(file) is None


def test_elsewhere_the_count_is_not_asked(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    """On a system that is not Linux no count is asked, even of a socket with bytes
    unacknowledged: the module loaded afresh as it would load there."""
    monkeypatch.setattr(sys, "platform", "darwin")
    elsewhere = _loaded_afresh("_kernel_queues_elsewhere")
    fill(pair[0])
    assert elsewhere.UNACKNOWLEDGED is None
    assert elsewhere.unacknowledged(pair[0]) is None


def _loaded_afresh(name: str) -> types.ModuleType:
    """``smtpcore._driver._kernel_queues`` run again under ``name``, as the system the
    test has patched in would import it."""
    import smtpcore._driver._kernel_queues as kernel_queues

    assert kernel_queues.__file__ is not None
    spec = importlib.util.spec_from_file_location(name, kernel_queues.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_ioctl_module_means_no_count(
    monkeypatch: pytest.MonkeyPatch, pair: tuple[socket.socket, socket.socket]
) -> None:
    """Where ``fcntl`` and ``termios`` do not exist (Windows) the module still imports,
    and every count is None: loaded afresh with both imports failing."""
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "termios", None)
    bare = _loaded_afresh("_kernel_queues_bare")
    ours, _ = pair
    assert bare.UNACKNOWLEDGED is None
    assert bare.UNREAD is None
    assert bare.unacknowledged(ours) is None
    assert bare.kernel_count(ours.fileno(), 0x5411) is None
