"""Each strategy finds a planted defect within the ``ci`` profile's example budget.

The servers of ``tests/broken_servers.py`` are correct but for one defect
each; the properties below hold for the correct :class:`SmallServer` and
fail, within the budget of the ``ci`` profile (derandomized, so the same
examples every run), for the broken one:

- ending DATA on ``LF.LF``: found by :func:`~smtpcore.testing.strategies.sessions`
  with ``message_contents(smuggling=True)``;
- answering BDAT before its octets: found by ``sessions`` with CHUNKING and
  :func:`~smtpcore.testing.strategies.chunkings`;
- crashing on a non-ASCII digit: found by
  :func:`~smtpcore.testing.strategies.command_lines` with ``hostile=True``;
- answering pipelined commands out of order: found by ``sessions`` with
  ``hostile=True`` (refused lines inside a pipelined group);
- losing a message whose end came in the same read as an RSET: found by
  ``sessions`` played with :func:`~smtpcore.testing.play_smtp_session`, the
  messages stored compared with the session's.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from broken_servers import (
    EagerBdatServer,
    LfDotLfServer,
    NonAsciiDigitServer,
    OutOfOrderServer,
    PipelinedRsetServer,
    SmallServer,
    serve,
)
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    Bdat,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Noop,
    Parameters,
    Quit,
    Rcpt,
    Rset,
)
from smtpcore.testing import play_smtp_session
from smtpcore.testing import strategies as sst
from smtpcore.testing._group_bytes import group_answer_points, group_write
from smtpcore.testing.check import ServerReply

BUDGET = settings(
    settings.get_profile("ci"),
    database=None,
    phases=[Phase.explicit, Phase.generate],  # found is enough: no shrinking here
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
OFFERED = {"PIPELINING", "SIZE", "8BITMIME"}
BARE_LF_SESSION = sst.ClientSession(
    ((Ehlo("client.test"),), (b"MAIL FROM:<\n>\r\n", b"NOOP\n", b"NOOP\r\n"), (Quit(),)),
    frozenset(OFFERED),
)
_LONG = Mailbox("x", ".".join(["e" * 62] * 3 + ["e" * 63]))
REFUSED_MAIL_SESSION = sst.ClientSession(
    (
        (Ehlo("client.abc.example"),),
        (Noop(),),
        (
            Mail(
                Mailbox('"Y4D`48qP@W5ho>p', "[174.176.250.174]"),
                Parameters({"SIZE": "63", "BODY": "8BITMIME"}),
            ),
            Rcpt(_LONG),
            Data(),
        ),
        (
            MessageData(
                b"From: john@abc.example\r\nFrom: john@abc.example\r\n.\r\n"
                b"\xc2\xa6\xc2\xbf\xc6\x95\xc5\xb7\xc2\xac\r\n"
            ),
            EndOfMessage(),
        ),
        (Rset(),),
        (
            Mail(Mailbox("l" * 64, "xn--and-6ma2c.9BIp.f"), Parameters({"SIZE": "44"})),
            Rcpt(Mailbox("FpLNg.pe_.V^}rh.WA", "[198.61.215.99]")),
            Rcpt(Mailbox("9SXMwRh/?", "[186.64.162.79]")),
            Rcpt(_LONG),
            Rcpt(_LONG),
            Data(),
        ),
        (MessageData(b"\r\n\r\n..two leading dots\r\n..two leading dots\r\n"), EndOfMessage()),
        (Quit(),),
    ),
    frozenset(OFFERED),
)
"""A drawn session SmallServer rightly refuses a message of: 555 to a MAIL whose
quoted local part holds ``>``, so 503 to its RCPT and DATA, and its content never
sent. Only the second message gets a 250, and only it is stored."""
ENVELOPE = b"EHLO client.test\r\nMAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n"
_FINAL_LINE = re.compile(rb"^\d{3}(?: |\r\n)", re.MULTILINE)


def replies_in(data: bytes) -> int:
    """How many replies ``data`` completes (their final lines)."""
    return len(_FINAL_LINE.findall(data))


Cut = Callable[[bytes, list[int]], list[bytes]]


def whole(write: bytes, due: list[int]) -> list[bytes]:
    return [write]


def lock_step(write: bytes, due: list[int]) -> list[bytes]:
    """One piece per command: as a client that does not pipeline would send them."""
    bounds = [0, *due, len(write)]
    return [write[a:b] for a, b in itertools.pairwise(bounds) if write[a:b]]


def talk(server: SmallServer, session: sst.ClientSession, cut: Cut) -> list[bytes]:
    """Play ``session`` to an in-process server; return its answer to each piece.

    Content is sent only after a 354; the commands pipelined behind its end go
    all the same. After each piece, the server must not have answered more than
    the greeting and the commands complete so far.
    """
    answers = [server.greeting()]
    due_before = 1  # the greeting
    for group in session.groups:
        if server.closed:
            break
        if _FINAL_LINE.findall(b"".join(answers))[-1][:3] != b"354":
            group = tuple(itertools.dropwhile(is_content, group))
        write, due = group_write(group), group_answer_points(group)
        sent = 0
        for piece in cut(write, due) if write else ():
            sent += len(piece)
            answers.append(server.receive(piece))
            answered = sum(replies_in(answer) for answer in answers)
            assert answered <= due_before + len([p for p in due if p <= sent]), answers
        due_before += len(due)
    return answers


def is_content(item: Event | bytes) -> bool:
    return isinstance(item, MessageData | EndOfMessage)


def delivered(content: bytes) -> bytes:
    """What a server keeps of ``content`` sent with CRLF.CRLF after it."""
    return content + b"\r\n" if content and not content.endswith(b"\r\n") else content


def accepted(session: sst.ClientSession, replies: tuple[ServerReply, ...]) -> list[bytes]:
    """The messages of ``session`` whose end got a 250, as a server keeps them.

    Each command and each DATA content's end takes the next reply, the greeting
    aside; a refused DATA's content was never sent, so its end takes none. A
    message refused at MAIL, RCPT, DATA or its end is not owed to the store.
    (DATA only: the sessions played here offer no CHUNKING.)
    """
    codes = iter(reply.code for reply in replies[1:])
    kept: list[bytes] = []
    content: list[bytes] = []
    data_accepted = False
    for event in session.events:
        assert not isinstance(event, Bdat), "accepted() reads DATA sessions only"
        if isinstance(event, MessageData):
            content.append(event.data)
        elif isinstance(event, EndOfMessage):
            if data_accepted and next(codes, None) == 250:
                kept.append(delivered(b"".join(content)))
            content, data_accepted = [], False
        else:
            data_accepted = next(codes, None) == 354 and isinstance(event, Data)
    return kept


def expect_defect(
    test: Callable[[type[SmallServer]], None],
    broken: type[SmallServer],
    error: type[Exception] = AssertionError,
) -> None:
    test(SmallServer)  # the property holds for the correct server
    with pytest.raises(error):
        test(broken)


def test_smuggling_content_finds_the_server_that_ends_data_on_lf_dot_lf() -> None:
    def run(server_class: type[SmallServer]) -> None:
        @BUDGET
        @given(
            sst.sessions(
                extensions=OFFERED, content=sst.message_contents(smuggling=True, long_lines=False)
            )
        )
        def one_message_per_transaction(session: sst.ClientSession) -> None:
            server = server_class()
            talk(server, session, whole)
            # A message may be refused (bare LF, NUL), never cut short or split in two.
            expected = [delivered(m) for m in session.messages]
            assert all(message in expected for message in server.messages)

        one_message_per_transaction()

    expect_defect(run, LfDotLfServer)


def test_chunkings_find_the_server_that_answers_bdat_before_its_octets() -> None:
    def run(server_class: type[SmallServer]) -> None:
        # The defect shows only in a session with a BDAT whose octets come apart from
        # its line: 60 examples missed it once in a whole CI run, though they find it
        # when the file runs alone (why the draws differed there was not found);
        # 150 leave room.
        @settings(BUDGET, max_examples=150)
        @given(sst.sessions(extensions={*OFFERED, "CHUNKING"}), st.data())
        def no_reply_before_its_command(session: sst.ClientSession, data: st.DataObject) -> None:
            def drawn(write: bytes, due: list[int]) -> list[bytes]:
                return data.draw(sst.chunkings(write))

            talk(server_class(), session, drawn)

        no_reply_before_its_command()

    expect_defect(run, EagerBdatServer)


def test_hostile_lines_find_the_server_that_crashes_on_a_non_ascii_digit() -> None:
    def run(server_class: type[SmallServer]) -> None:
        @BUDGET
        @given(st.lists(sst.command_lines(extensions=OFFERED, hostile=True), max_size=30))
        def every_line_gets_a_reply(lines: list[bytes]) -> None:
            for line in lines:
                server = server_class()  # each line in a fresh session, inside a transaction
                server.receive(ENVELOPE)
                answer = server.receive(line)
                # A line the network has not finished ("NOOP\r", "NOOP\n": only CRLF
                # ends one) waits for more; so does a BDAT waiting for its octets.
                if server.mode == "command" and line.endswith(b"\r\n"):
                    assert replies_in(answer) >= 1

        every_line_gets_a_reply()

    expect_defect(run, NonAsciiDigitServer, ValueError)  # its crash


def test_hostile_sessions_find_the_server_that_answers_out_of_order() -> None:
    def run(server_class: type[SmallServer]) -> None:
        @BUDGET
        @given(sst.sessions(extensions=OFFERED, hostile=True))
        @example(BARE_LF_SESSION)  # one reply for the line, not one for each side of the LF
        def pipelined_replies_match_lock_step(session: sst.ClientSession) -> None:
            pipelined = b"".join(talk(server_class(), session, whole))
            stepped = b"".join(talk(server_class(), session, lock_step))
            assert pipelined == stepped

        pipelined_replies_match_lock_step()

    expect_defect(run, OutOfOrderServer)


def test_sessions_find_the_server_that_loses_a_message_at_a_pipelined_rset() -> None:
    """An RSET in the same write as a message's end (RFC 2920 §3.1) was never drawn:
    the group that ended a message held only QUIT after it. The server answers 250
    and every reply is in order; only the messages it stored show the loss."""

    def run(server_class: type[SmallServer]) -> None:
        content = sst.message_contents(long_lines=False)  # under SmallServer's SIZE
        with serve(server_class) as server:

            @settings(BUDGET, max_examples=150)
            @given(sst.sessions(extensions=OFFERED, content=content))
            @example(REFUSED_MAIL_SESSION)
            def every_message_accepted_stored(session: sst.ClientSession) -> None:
                played = play_smtp_session(server.host, server.port, session, timeout=5)
                assert played.missing == played.surplus == 0 and played.closed, played
                stored = server.sessions[-1].messages
                assert stored == accepted(session, played.replies), played

            every_message_accepted_stored()

    expect_defect(run, PipelinedRsetServer)
