"""receive_data on the four machines takes bytes-like data only.

Only ``b""`` means the peer closed (DESIGN.md). ``None`` (what
``io.RawIOBase.read()`` returns on a non-blocking stream with nothing to read)
or a ``str`` is the application's mistake: ``LocalProtocolError``, and the
machine goes on as if the call had not been made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

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
NOT_BYTES: list[Any] = [None, "", "EHLO x\r\n", 0, 7, [], [69, 72], False, object()]


@pytest.mark.parametrize("wrong", NOT_BYTES, ids=repr)
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


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("name", MACHINES)
def test_receive_data_takes_bytes_bytearray_and_memoryview(name: str, kind: Any) -> None:
    machine, head, tail = MACHINES[name]()
    machine.receive_data(kind(head))
    machine.receive_data(kind(tail))
    assert type(machine.next_event()).__name__ in {"Ehlo", "Reply", "Capa", "Ok"}
    closing, _, _ = MACHINES[name]()
    closing.receive_data(kind(b""))
    assert type(closing.next_event()).__name__ == "ConnectionClosed"
