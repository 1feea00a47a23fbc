"""receive_data on the four machines takes bytes-like data only.

Only ``b""`` means the peer closed (DESIGN.md). ``None`` (what
``io.RawIOBase.read()`` returns on a non-blocking stream with nothing to read)
or a ``str`` is the application's mistake: ``LocalProtocolError``, and the
machine goes on as if the call had not been made.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

import test_machines_fuzz as in_state
from smtpcore import LocalProtocolError, pop3, smtp

Machine = (
    smtp.ServerConnection | smtp.ClientConnection | pop3.ServerConnection | pop3.ClientConnection
)


def _smtp_server() -> tuple[Machine, bytes, bytes]:
    server = smtp.ServerConnection("mx.pqr.example")
    server.send(smtp.Reply(220, "mx.pqr.example ESMTP"))
    return server, b"EHLO mail.abc", b".example\r\n"


def _smtp_client() -> tuple[Machine, bytes, bytes]:
    return smtp.ClientConnection("mail.abc.example"), b"220 mx.pqr", b".example\r\n"


def _pop3_server() -> tuple[Machine, bytes, bytes]:
    server = pop3.ServerConnection("pop.pqr.example")
    server.send(server.greeting())
    return server, b"CA", b"PA\r\n"


def _pop3_client() -> tuple[Machine, bytes, bytes]:
    return pop3.ClientConnection("mail.abc.example"), b"+OK rea", b"dy\r\n"


MACHINES: dict[str, Callable[[], tuple[Machine, bytes, bytes]]] = {
    "smtp-server": _smtp_server,
    "smtp-client": _smtp_client,
    "pop3-server": _pop3_server,
    "pop3-client": _pop3_client,
}
NOT_BYTES: list[Any] = [
    None,
    "",
    "EHLO x\r\n",
    0,
    7,
    [],
    [69, 72],
    False,
    object(),
    array.array("B", b"EHLO x\r\n"),
    array.array("i", [0x4F4C4548]),
]
"""What the fast paths must refuse too: an array is a buffer, but not one of the three."""


def _wrong_id(value: Any) -> str:
    """A test id the same in every worker: an ``object()``'s repr holds its address,
    which differs, and pytest-xdist refuses workers that collect different tests."""
    return type(value).__name__ if type(value) is object else repr(value)


@pytest.mark.parametrize("wrong", NOT_BYTES, ids=_wrong_id)
@pytest.mark.parametrize("name", MACHINES)
def test_receive_data_refuses_what_is_not_bytes_and_changes_nothing(name: str, wrong: Any) -> None:
    machine, head, tail = MACHINES[name]()
    state = machine.state
    with pytest.raises(LocalProtocolError, match=type(wrong).__name__):
        machine.receive_data(wrong)
    assert machine.state is state
    machine.receive_data(head)  # a half line: the fast path's buffer is not empty
    with pytest.raises(LocalProtocolError):
        machine.receive_data(wrong)
    machine.receive_data(tail)
    event = machine.next_event()
    assert not isinstance(event, smtp.ConnectionClosed | pop3.ConnectionClosed)
    assert type(event).__name__ in {"Ehlo", "Reply", "Capa", "Ok"}


class Chunk(bytes):
    """A bytes subclass, as some I/O libraries return: taken like bytes."""


def _array_view(data: bytes) -> memoryview:
    return memoryview(array.array("B", data))


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, Chunk, _array_view])
@pytest.mark.parametrize("name", MACHINES)
def test_receive_data_takes_bytes_bytearray_and_memoryview(name: str, kind: Any) -> None:
    machine, head, tail = MACHINES[name]()
    machine.receive_data(kind(head))
    machine.receive_data(kind(tail))
    assert type(machine.next_event()).__name__ in {"Ehlo", "Reply", "Capa", "Ok"}
    closing, _, _ = MACHINES[name]()
    closing.receive_data(kind(b""))
    assert type(closing.next_event()).__name__ == "ConnectionClosed"


def _pop3_client_closed() -> pop3.ClientConnection:
    client = pop3.ClientConnection("mail.abc.example")
    client.receive_data(b"+OK hi\r\n")
    client.next_event()
    client.receive_data(b"")
    assert isinstance(client.next_event(), pop3.ConnectionClosed)
    return client


def _peer_closed(name: str) -> Callable[[], Machine]:
    """The peer's close given and not yet read: ``receive_data`` takes its slow path."""

    def build() -> Machine:
        machine, _, _ = MACHINES[name]()
        machine.receive_data(b"")
        return machine

    return build


_SMTP_STATES = (smtp.State.CLOSED, smtp.State.ERROR, smtp.State.TLS_PENDING)
_POP3_STATES = (pop3.State.CLOSED, pop3.State.ERROR, pop3.State.TLS_PENDING)

EARLY_RETURNS: dict[str, Callable[[], Machine]] = {
    **{f"smtp-server-{s.name}": partial(in_state._smtp_server, s) for s in _SMTP_STATES},
    **{f"smtp-client-{s.name}": partial(in_state._smtp_client, s) for s in _SMTP_STATES},
    **{f"pop3-server-{s.name}": partial(in_state._pop3_server, s) for s in _POP3_STATES},
    **{f"pop3-client-{s.name}": partial(in_state._pop3_client, s) for s in _POP3_STATES},
    "pop3-client-CLOSED-by-peer": _pop3_client_closed,
    **{f"{name}-peer-closed": _peer_closed(name) for name in MACHINES},
}
"""The states whose bytes are dropped or counted rather than read, and the slow path."""


@pytest.mark.parametrize("wrong", NOT_BYTES, ids=_wrong_id)
@pytest.mark.parametrize("where", EARLY_RETURNS)
def test_receive_data_refuses_what_is_not_bytes_where_bytes_are_dropped(
    where: str, wrong: Any
) -> None:
    machine = EARLY_RETURNS[where]()
    assert machine.state.name in where or where.endswith("peer-closed")
    state, unread = machine.state, getattr(machine, "unread_after_end", None)
    with pytest.raises(LocalProtocolError, match=type(wrong).__name__):
        machine.receive_data(wrong)
    assert machine.state is state
    assert getattr(machine, "unread_after_end", None) == unread
