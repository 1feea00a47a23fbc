"""examples/threaded_server.py driven with whole sessions, BDAT included (issue 15 item 4).

A session is a list of command groups. The client writes a group (in slices
Hypothesis chooses, so that a BDAT command and its octets arrive split
anywhere), then reads one reply per command in it and checks each code
against what the session model expects. Groups follow RFC 2920 §3.1: EHLO,
DATA, NOOP and QUIT end a group; MAIL, RCPT, RSET and BDAT (RFC 3030 §4.2)
may be pipelined. At the end the example's thread must have returned on its
own and have printed exactly the messages it accepted.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import socket
import threading
from dataclasses import dataclass, field
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore.testing import strategies as sst
from test_examples import load

#: Message text: CRLF lines, leading dots and a lone "." among them (7-bit, short lines).
CONTENTS = sst.message_contents(eight_bit=False, long_lines=False, max_lines=6)


@dataclass(frozen=True)
class Step:
    """One command (or DATA content) and the reply code it must get."""

    data: bytes
    code: int


@dataclass
class Session:
    """A client's whole session and the messages the server must accept."""

    groups: list[list[Step]] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)

    def add(self, step: Step, *, ends_group: bool = False) -> None:
        """Append to the open group (EHLO, DATA, NOOP, QUIT and content end theirs)."""
        if not self.groups:
            self.groups.append([])
        self.groups[-1].append(step)
        if ends_group:
            self.groups.append([])


def _stuffed(content: bytes) -> bytes:
    lines = content.split(b"\r\n")[:-1]
    return b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)


# Narrow on purpose: each step with the reply the example's own policy must give it.
@st.composite
def transactions(draw: st.DrawFn, session: Session) -> None:
    """One transaction: MAIL, recipients, then DATA, BDAT chunks, or RSET."""
    if draw(st.booleans()):
        session.add(Step(b"RCPT TO:<early@pqr.example>\r\n", 503))  # no MAIL yet
    session.add(Step(b"MAIL FROM:<john@abc.example>\r\n", 250))
    good = 0
    for local, ours in draw(
        st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=4)
    ):
        domain = "pqr.example" if ours else "elsewhere.example"
        session.add(Step(f"RCPT TO:<{local}@{domain}>\r\n".encode(), 250 if ours else 550))
        good += ours
    content = draw(CONTENTS)
    body = draw(st.sampled_from(["DATA", "BDAT", "RSET"]))
    if body == "RSET" or (not good and body == "DATA"):
        session.add(Step(b"RSET\r\n", 250))
    elif body == "DATA":
        session.add(Step(b"DATA\r\n", 354), ends_group=True)
        session.add(Step(_stuffed(content) + b".\r\n", 250), ends_group=True)
        session.accepted.append(content)
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(content)), max_size=3)))
        bounds = [0, *cuts, len(content)]
        chunks = [content[a:b] for a, b in itertools.pairwise(bounds)]
        for number, chunk in enumerate(chunks, 1):
            last = b" LAST" if number == len(chunks) else b""
            command = b"BDAT %d%s\r\n" % (len(chunk), last)
            # With no recipient accepted, "no valid recipients" (RFC 5321 §3.3), as DATA;
            # that fails the transaction, so each later chunk is out of sequence (RFC
            # 3030 §2).
            refusal = 554 if number == 1 else 503
            session.add(Step(command + chunk, 250 if good else refusal))
        if good:
            session.accepted.append(content)
        else:
            session.add(Step(b"RSET\r\n", 250))  # the refused chunks opened nothing


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    """EHLO, a few transactions with NOOPs between, and QUIT (or a dropped line)."""
    session = Session()
    session.add(Step(b"EHLO client.abc.example\r\n", 250), ends_group=True)
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            session.add(Step(b"NOOP\r\n", 250), ends_group=True)
        draw(transactions(session))
    if draw(st.booleans()):
        session.add(Step(b"QUIT\r\n", 221), ends_group=True)
    session.groups = [group for group in session.groups if group]
    return session


def read_reply(stream: io.BufferedReader) -> int:
    """The code of one (possibly multi-line) reply."""
    while True:
        line = stream.readline()
        assert line.endswith(b"\r\n"), f"connection ended mid-reply: {line!r}"
        if line[3:4] == b" ":
            return int(line[:3])
        assert line[3:4] == b"-", line


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load("threaded_server")


@given(session=sessions(), data=st.data())
def test_whole_sessions(example: ModuleType, session: Session, data: st.DataObject) -> None:
    ours, theirs = socket.socketpair()
    failures: list[BaseException] = []
    printed = io.StringIO()

    def serve() -> None:
        try:
            example.serve_client(theirs)
        except BaseException as exc:
            failures.append(exc)

    with contextlib.redirect_stdout(printed), ours:
        ours.settimeout(30)  # a hung server fails the test rather than the suite
        thread = threading.Thread(target=serve)
        thread.start()
        replies = ours.makefile("rb")
        assert read_reply(replies) == 220
        for group in session.groups:
            wire = b"".join(step.data for step in group)
            for piece in data.draw(sst.chunkings(wire)):
                ours.sendall(piece)
            codes = [read_reply(replies) for _ in group]
            assert codes == [step.code for step in group], group
        ours.shutdown(socket.SHUT_WR)
        assert replies.read() == b""  # nothing more, and the server closed its side
        replies.close()
        thread.join(30)
    assert not thread.is_alive()
    assert not failures, failures
    expected = "".join(content.decode() + "\n" for content in session.accepted)
    assert printed.getvalue() == expected
