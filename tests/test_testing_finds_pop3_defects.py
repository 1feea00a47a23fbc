"""The POP3 strategies find a planted defect within the ``ci`` profile's example budget.

A small POP3 server and a small POP3 client reader, each correct but for one
defect in its broken twin; the properties hold for the correct one and fail,
within the budget of the ``ci`` profile, for the broken one:

- answering only the first command of each read (pipelined commands
  dropped): found by :func:`~smtpcore.testing.strategies.pop3_sessions`;
- unstuffing ``..`` anywhere in a line rather than at its start: found by
  :func:`~smtpcore.testing.strategies.pop3_responses`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from smtpcore import pop3
from smtpcore.testing import POP3ConnectionPair
from smtpcore.testing import strategies as sst

BUDGET = settings(
    settings.get_profile("ci"),
    database=None,
    phases=[Phase.explicit, Phase.generate],  # found is enough: no shrinking here
    suppress_health_check=[HealthCheck.too_slow],
)
_STATUS = re.compile(rb"^(?:\+OK|-ERR|\+ )", re.MULTILINE)


class SmallPOP3Server:
    """A POP3 server in a few lines: every command accepted, PLAIN and LOGIN run."""

    def __init__(self) -> None:
        self.buffer = b""
        self.sasl_left = 0

    def receive(self, data: bytes) -> bytes:
        self.buffer += data
        out = b""
        while b"\r\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            out += self.answer(line)
        return out

    def answer(self, line: bytes) -> bytes:
        if self.sasl_left:
            if line == b"*":
                self.sasl_left = 0
                return b"-ERR cancelled\r\n"
            self.sasl_left -= 1
            return b"+ UGFzc3dvcmQ6\r\n" if self.sasl_left else b"+OK logged in\r\n"
        verb, _, argument = line.partition(b" ")
        verb = verb.upper()
        if verb == b"AUTH":
            mechanism, _, initial = argument.partition(b" ")
            if mechanism.upper() == b"PLAIN":
                if initial:
                    return b"+OK logged in\r\n"
                self.sasl_left = 1
                return b"+ \r\n"
            self.sasl_left = 2
            return b"+ VXNlcm5hbWU6\r\n"
        if verb == b"STLS":
            self.buffer = b""  # RFC 2595 §4: nothing pipelined behind STLS is read
            return b"+OK begin TLS\r\n"
        if verb == b"CAPA":
            return b"+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\nPIPELINING\r\nTOP\r\nUIDL\r\n.\r\n"
        if verb in (b"RETR", b"TOP"):
            return b"+OK\r\nSubject: hi\r\n\r\n..dot\r\n.\r\n"
        if verb in (b"LIST", b"UIDL") and not argument:
            return b"+OK\r\n1 120\r\n.\r\n"
        return b"+OK\r\n"


class DropsPipelinedServer(SmallPOP3Server):
    """Answers the first command of each read and drops the rest: the defect."""

    def receive(self, data: bytes) -> bytes:
        self.buffer += data
        if b"\r\n" not in self.buffer:
            return b""
        line = self.buffer.split(b"\r\n", 1)[0]
        self.buffer = b""
        return self.answer(line)


def one_response_a_command(server_class: type[SmallPOP3Server]) -> None:
    @BUDGET
    @given(sst.pop3_sessions())
    def check(session: sst.POP3Session) -> None:
        server = server_class()
        for group, write in zip(session.groups, session.writes(), strict=True):
            out = server.receive(write)
            assert len(_STATUS.findall(out)) == len(group), (group, out)

    check()


def read_content(wire: bytes) -> bytes:
    """A small client's multi-line reader: the lines after the status line up to
    the lone dot, a leading dot taken off (RFC 1939 §3)."""
    out = []
    for line in wire.split(b"\r\n")[1:]:
        if line == b".":
            break
        out.append(line[1:] if line.startswith(b".") else line)
    return b"".join(line + b"\r\n" for line in out)


def unstuffs_anywhere(wire: bytes) -> bytes:
    """The same reader, but taking ``..`` for ``.`` wherever it is: the defect."""
    out = []
    for line in wire.split(b"\r\n")[1:]:
        if line == b".":
            break
        out.append(line.replace(b"..", b"."))
    return b"".join(line + b"\r\n" for line in out)


def reads_what_smtpcore_reads(reader: Callable[[bytes], bytes]) -> None:
    @BUDGET
    @given(sst.pop3_responses(pop3.Retr(1)))
    def check(response: list[pop3.Event]) -> None:
        answers: list[list[pop3.Event]] = [[pop3.Ok()], [pop3.Ok()], response]

        def maildrop(conn: pop3.ServerConnection, event: pop3.Event) -> list[pop3.Event]:
            return answers.pop(0)

        pair = POP3ConnectionPair(answer=maildrop)
        pair.send(pop3.User("mrose"))
        pair.send(pop3.Pass("tanstaaf"))
        start = len(pair.transcript)
        pair.send(pop3.Retr(1))
        if not isinstance(response[0], pop3.Ok):
            return
        wire = b"".join(data for side, data in pair.transcript[start:] if side == "S")
        content = b"".join(e.data for e in pair.client_events if isinstance(e, pop3.ResponseData))
        assert reader(wire) == content

    check()


def test_pop3_sessions_find_the_server_that_drops_pipelined_commands() -> None:
    one_response_a_command(SmallPOP3Server)
    with pytest.raises(AssertionError):
        one_response_a_command(DropsPipelinedServer)


def test_pop3_responses_find_the_client_that_unstuffs_anywhere() -> None:
    reads_what_smtpcore_reads(read_content)
    with pytest.raises(AssertionError):
        reads_what_smtpcore_reads(unstuffs_anywhere)
