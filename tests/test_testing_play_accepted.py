"""PlayedSMTPSession.accepted and .unknown: which drawn messages a server took.

What a correct server stored from a played session is exactly ``accepted``,
whatever it lawfully refused; a message whose fate the replies do not show
(missing, garbled, out of step, or a 2yz the transaction cannot have earned)
is ``unknown``, never ``accepted``; one never written whole is in neither.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, example, given, settings

from peers import free_port
from smtpcore.address import parse_mailbox
from smtpcore.handler import Envelope, MessageReply, Session
from smtpcore.smtp import (
    Bdat,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    Reply,
    Rset,
)
from smtpcore.testing import (
    CollectingHandler,
    PlayedSMTPSession,
    SMTPTestServer,
    play_smtp_session,
)
from smtpcore.testing import strategies as sst
from smtpcore.testing.strategies import ClientSession
from test_testing_play import (
    answering_each_read,
    bare_lf_in_mail_session,
    line_server,
    listening,
    smtp_answer,
)

OFFERED = frozenset({"PIPELINING", "8BITMIME", "SIZE", "CHUNKING"})
FIRST = b"Subject: one\r\n\r\nfirst\r\n"
SECOND = b"Subject: two\r\n\r\nsecond\r\n"


def transaction(content: bytes) -> tuple[tuple[Event, ...], tuple[Event, ...]]:
    """MAIL, RCPT and DATA in one group, the content and its end in the next."""
    envelope = (Mail(None), Rcpt(parse_mailbox("bob@pqr.example")), Data())
    return envelope, (MessageData(content), EndOfMessage())


def two_messages(first: bytes = FIRST, second: bytes = SECOND) -> ClientSession:
    return ClientSession(
        ((Ehlo("client.test"),), *transaction(first), *transaction(second), (Quit(),)), OFFERED
    )


class OneInThreeRefused(CollectingHandler):
    """Refuses (554) a message whose length is a multiple of three, stores the rest."""

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        if len(envelope.content) % 3 == 0:
            return Reply(554, "5.7.1 refused by policy")
        self.messages.append(envelope)
        return None


def test_what_smtpcores_server_stores_is_exactly_what_was_accepted() -> None:
    for handler in (CollectingHandler(), OneInThreeRefused()):
        with SMTPTestServer(handler) as server:

            @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
            @given(sst.sessions(extensions=OFFERED, content=sst.message_contents(smuggling=True)))
            @example(two_messages(b"\r\n.", b"abc"))
            def stored_is_accepted(session: ClientSession) -> None:
                before = len(server.messages)
                played = play_smtp_session(server.host, server.port, session)
                assert played.missing == played.surplus == 0 and played.closed, played
                assert played.unknown == (), played
                stored = tuple(envelope.content for envelope in server.messages[before:])
                assert stored == played.accepted, played

            stored_is_accepted()


def test_hostile_sessions_never_count_a_message_accepted_that_was_not_stored() -> None:
    with SMTPTestServer() as server:

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(sst.sessions(extensions=OFFERED, hostile=True))
        def accepted_were_stored(session: ClientSession) -> None:
            before = len(server.messages)
            played = play_smtp_session(server.host, server.port, session)
            stored = [envelope.content for envelope in server.messages[before:]]
            assert all(content in stored for content in played.accepted), played
            assert len(stored) <= len(played.accepted) + len(played.unknown), played

        accepted_were_stored()


class LosesAfterARefusal(CollectingHandler):
    """A planted bug: after refusing a message, answers 250 and stores nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[Session] = []

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        if any(refused is session for refused in self.refused):
            return None
        if envelope.content == FIRST:
            self.refused.append(session)
            return Reply(554, "5.7.1 refused by policy")
        self.messages.append(envelope)
        return None


def test_a_server_that_loses_a_message_after_a_lawful_refusal_is_caught() -> None:
    """A 5xx in the play does not end the comparison: the second message got 250 and
    must be stored."""
    with SMTPTestServer(LosesAfterARefusal()) as server:
        played = play_smtp_session(server.host, server.port, two_messages())
        assert 554 in played.codes, played
        assert played.accepted == (SECOND,) and played.unknown == (), played
        assert server.messages == []


def played_against(
    answer: Callable[[bytes], bytes | None], session: ClientSession, *, last: bytes = b"QUIT"
) -> PlayedSMTPSession:
    """``session`` played to a :func:`line_server` answering each line with ``answer``,
    which closes after the line that starts with ``last``."""
    with listening(line_server(b"220 hi\r\n", answer, last=last)) as (host, port):
        return play_smtp_session(host, port, session, timeout=1)


def answering(**replies: bytes | None) -> Callable[[bytes], bytes | None]:
    """250 to every line, 354 to DATA, 221 to QUIT, but ``replies[VERB]`` to a line that
    starts with that verb (``DOT`` for the end of content, ``FIRST_DOT`` for the first)."""
    dots, content = [0], [False]

    def answer(line: bytes) -> bytes | None:
        if content[0] and line != b".":
            return None
        verb = b"DOT" if line == b"." else line.split(b" ")[0]
        if verb == b"DOT":
            content[0] = False
            dots[0] += 1
            if dots[0] == 1 and "FIRST_DOT" in replies:
                return replies["FIRST_DOT"]
        defaults = {b"DATA": b"354 go\r\n", b"QUIT": b"221 bye\r\n"}
        reply = replies.get(verb.decode(), defaults.get(verb, b"250 ok\r\n"))
        content[0] = reply is not None and reply.startswith(b"354")
        return reply

    return answer


def test_a_garbled_reply_to_the_end_of_content_leaves_the_message_unknown() -> None:
    played = played_against(answering(FIRST_DOT=b"hello there\r\n"), two_messages())
    assert played.accepted == (SECOND,) and played.unknown == (FIRST,), played


def test_a_250_to_the_end_of_content_after_mail_was_refused_is_unknown() -> None:
    played = played_against(answering(MAIL=b"550 no\r\n"), two_messages())
    assert played.accepted == () and played.unknown == (FIRST, SECOND), played


def test_a_message_whose_data_was_refused_was_never_written_and_is_in_neither() -> None:
    played = played_against(answering(DATA=b"554 no valid recipients\r\n"), two_messages())
    assert played.accepted == played.unknown == (), played


def test_a_missing_reply_to_the_end_of_content_leaves_the_message_unknown() -> None:
    played = played_against(answering(FIRST_DOT=None), two_messages())
    assert played.missing == 1, played
    assert played.accepted == () and played.unknown == (FIRST,), played


def test_421_to_the_end_of_content_refuses_it_and_the_next_message_was_never_written() -> None:
    played = played_against(answering(FIRST_DOT=b"421 going down\r\n"), two_messages(), last=b".")
    assert played.missing == 0 and "ended the session with 421" in played.stopped, played
    assert played.accepted == played.unknown == (), played


def test_a_refused_chunk_then_250_to_bdat_last_is_unknown() -> None:
    session = ClientSession(
        (
            (Ehlo("client.test"),),
            (Mail(None), Rcpt(parse_mailbox("bob@pqr.example")), Bdat(4), MessageData(b"ab\r\n")),
            (Bdat(4, last=True), MessageData(b"cd\r\n")),
            (Mail(None), Rcpt(parse_mailbox("bob@pqr.example"))),
            (Bdat(4, last=True), MessageData(b"ef\r\n")),
            (Quit(),),
        ),
        OFFERED,
    )
    assert session.messages == (b"ab\r\ncd\r\n", b"ef\r\n")
    replies = iter([b"552 too big\r\n", b"250 ok\r\n", b"250 ok\r\n"])

    def answer(line: bytes) -> bytes | None:
        """The chunks are lines of two letters, read and not answered."""
        if line.startswith(b"BDAT"):
            return next(replies)
        if len(line) == 2:
            return None
        return b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n"

    played = played_against(answer, session)
    assert played.accepted == (b"ef\r\n",), played
    assert played.unknown == (b"ab\r\ncd\r\n",), played


def test_a_reply_owed_to_no_command_leaves_every_message_written_unknown() -> None:
    session = bare_lf_in_mail_session()
    with listening(answering_each_read(smtp_answer)) as (host, port):
        played = play_smtp_session(host, port, session, timeout=1)
    assert played.surplus == 1, played
    assert played.accepted == () and played.unknown == (b"",), played


def test_aiosmtpd_refuses_a_long_line_with_500_and_stores_exactly_what_it_accepted() -> None:
    """aiosmtpd answers a line of more than 1,000 octets with 500 (RFC 5321
    §4.5.3.1.6): a lawful refusal, after which its store still equals ``accepted``."""
    stored: list[bytes] = []

    class Store:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            stored.append(envelope.original_content)
            return "250 OK"

    long_line = b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n"
    controller = Controller(Store(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        played = play_smtp_session("127.0.0.1", controller.port, two_messages(long_line))
    finally:
        controller.stop()
    assert played.missing == played.surplus == 0 and played.closed, played
    assert 500 in played.codes, played
    assert played.accepted == (SECOND,) and played.unknown == (), played
    assert stored == [SECOND]


def test_data_content_not_ending_in_crlf_is_accepted_with_the_crlf_before_the_dot() -> None:
    """RFC 5321 §4.1.1.4: the CRLF before the final dot ends the content's last line."""
    with SMTPTestServer() as server:
        played = play_smtp_session(server.host, server.port, two_messages(b"abc", b"\r\n."))
        stored = tuple(envelope.content for envelope in server.messages)
    assert played.accepted == stored == (b"abc\r\n", b"\r\n.\r\n"), played


def one_message(*, quit_with_content: bool) -> ClientSession:
    """One message by DATA, QUIT in its own group or in the content's."""
    envelope, content = transaction(FIRST)
    if quit_with_content:
        groups: tuple[tuple[Event, ...], ...] = ((*content, Quit()),)
    else:
        groups = (content, (Quit(),))
    return ClientSession(((Ehlo("client.test"),), envelope, *groups), OFFERED)


def test_a_221_to_the_end_of_content_is_unknown_pipelined_with_quit_or_not() -> None:
    """Only 250 takes a message (RFC 5321 §4.3.2); a 221 answers some other line."""
    for quit_with_content in (False, True):
        played = played_against(
            answering(DOT=b"221 bye\r\n"),
            one_message(quit_with_content=quit_with_content),
            last=b".",
        )
        assert played.accepted == () and played.unknown == (FIRST,), played


def test_a_251_to_the_end_of_content_is_unknown() -> None:
    played = played_against(answering(FIRST_DOT=b"251 odd\r\n"), two_messages())
    assert played.accepted == (SECOND,) and played.unknown == (FIRST,), played


BOB = parse_mailbox("bob@pqr.example")


def chunk_then(*between: tuple[Event, ...]) -> ClientSession:
    """A chunk, the groups ``between``, then a transaction whose BDAT LAST ends it."""
    return ClientSession(
        (
            (Ehlo("client.test"),),
            *between,
            (Mail(None), Rcpt(BOB), Bdat(4, last=True), MessageData(b"cd\r\n")),
            (Quit(),),
        ),
        OFFERED,
    )


def test_a_message_with_a_chunk_written_before_its_mail_is_unknown() -> None:
    """A chunk of a transaction reset (RSET, EHLO) or failed (BDAT without MAIL) is no
    part of the next message, though the drawn content glues it on."""
    sessions = (
        chunk_then((Mail(None), Rcpt(BOB), Bdat(4), MessageData(b"ab\r\n")), (Rset(),)),
        chunk_then((Mail(None), Rcpt(BOB), Bdat(4), MessageData(b"ab\r\n")), (Ehlo("c.test"),)),
        chunk_then((Bdat(4), MessageData(b"ab\r\n"))),
    )
    for session in sessions:
        assert session.messages == (b"ab\r\ncd\r\n",)
        with SMTPTestServer() as server:
            played = play_smtp_session(server.host, server.port, session)
            stored = tuple(envelope.content for envelope in server.messages)
        assert stored == (b"cd\r\n",), played
        assert played.accepted == () and played.unknown == (b"ab\r\ncd\r\n",), played


def test_a_250_to_the_end_of_content_after_rset_with_no_new_mail_is_unknown() -> None:
    session = ClientSession(
        (
            (Ehlo("client.test"),),
            (Mail(None), Rcpt(BOB), Bdat(4), MessageData(b"ab\r\n")),
            (Rset(),),
            (Bdat(4, last=True), MessageData(b"cd\r\n")),
            (Quit(),),
        ),
        OFFERED,
    )

    def answer(line: bytes) -> bytes | None:
        """Every command and chunk 250 (the chunks are lines of two letters)."""
        if len(line) == 2:
            return None
        return b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n"

    played = played_against(answer, session)
    assert played.accepted == () and played.unknown == (b"ab\r\ncd\r\n",), played


def test_a_250_to_the_end_of_content_in_a_group_read_out_of_step_is_unknown() -> None:
    """The end of content and the next MAIL, RCPT and DATA in one group, the end left
    unanswered: the 250 paired with the end was MAIL's, and the 354 paired with RCPT
    shows the replies out of step, so the message's fate is not told."""
    envelope, content = transaction(FIRST)
    groups = ((Ehlo("client.test"),), envelope, (*content, *transaction(SECOND)[0]), (Quit(),))
    played = played_against(answering(FIRST_DOT=None), ClientSession(groups, OFFERED))
    assert played.codes[5] == 250 and "replies out of step" in played.stopped, played
    assert played.accepted == () and played.unknown == (FIRST,), played


def test_a_250_to_a_line_holding_two_message_ends_leaves_both_unknown() -> None:
    """A BDAT LAST whose octets run short takes the end of DATA content into the same
    line: one reply answers both ends, and says which of them it took no more."""
    session = ClientSession(
        (
            (Ehlo("client.test"),),
            (Mail(None), Rcpt(BOB)),
            (Bdat(10, last=True), MessageData(b"ab"), EndOfMessage()),
            (Quit(),),
        ),
        OFFERED,
    )
    assert session.messages == (b"ab", b"")

    def answer(line: bytes) -> bytes | None:
        """250 to each command; the short chunk and the final dot are one line, ``ab.``."""
        if not line.startswith((b"EHLO", b"MAIL", b"RCPT", b"BDAT", b"QUIT")):
            return None
        return b"221 bye\r\n" if line.startswith(b"QUIT") else b"250 ok\r\n"

    played = played_against(answer, session)
    assert played.missing == played.surplus == 0, played
    assert played.accepted == () and played.unknown == (b"ab", b""), played
