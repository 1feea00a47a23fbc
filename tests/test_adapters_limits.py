"""LIMITS (RFC 9422) through both adapters: a client splits a transaction that would
pass the server's RCPTMAX into several, the content sent again for each."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from peers import module, run, running_smtp_server
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply
from smtpcore.testing import CollectingHandler

MESSAGE = b"Subject: many\r\n\r\nto many recipients\r\n"
RECIPIENTS = [f"user{n}@pqr.example" for n in range(5)]


class Sink(Handler):
    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        if command.recipient.local_part == "user3":
            return Reply(550, "no such user", "5.1.1")
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope)
        return None


ONE_A_BATCH = (
    "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
    "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTMAX=1\n"
)
"""A scripted server's greeting and EHLO reply: one recipient a transaction."""
ENVELOPE = "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<{}@pqr.example>\nC: DATA\n"
CONTENT = "C: Subject: many\nC:\nC: to many recipients\nC: .\n"
THREE = ["b@pqr.example", "c@pqr.example", "d@pqr.example"]
FIRST_DELIVERED = (
    ONE_A_BATCH
    + ENVELOPE.format("b")
    + "S: 250 ok\nS: 250 ok\nS: 354 go\n"
    + CONTENT
    + "S: 250 queued\n"
)
"""The first batch of a message to THREE, delivered."""


def send_to(adapter: str, port: int, recipients: list[str]) -> Any:
    """MESSAGE from a@abc.example to ``recipients``, over one session to ``port``."""

    async def go() -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            return await client.send_message(MESSAGE, "a@abc.example", recipients)

    return run(adapter, go)


def send(adapter: str, port: int, content: Any) -> Any:
    async def go() -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            assert client.connection.extensions.limits.rcpt_max == 2
            return await client.send_message(content, "a@abc.example", RECIPIENTS)

    return run(adapter, go)


def test_recipients_over_rcptmax_go_in_several_transactions(adapter: str) -> None:
    handler = Sink()
    with running_smtp_server(adapter, handler, limits=True, max_recipients=2) as server:
        result = send(adapter, server.port, MESSAGE)
        file_result = send(adapter, server.port, io.BytesIO(MESSAGE))
    for outcome in (result, file_result):
        assert [str(r.recipient) for r in outcome.recipients] == RECIPIENTS
        assert [str(r.recipient) for r in outcome.refused] == ["user3@pqr.example"]
        assert len(outcome.delivered) == 4
    assert [len(m.recipients) for m in handler.messages] == [2, 1, 1] * 2
    assert all(m.content == MESSAGE for m in handler.messages)


def test_content_that_cannot_be_sent_twice_is_refused_before_mail(adapter: str) -> None:
    """The caller's mistake, found before anything is sent, leaves the session open:
    the next message goes over it."""

    def pieces() -> Iterator[bytes]:
        yield MESSAGE

    async def go(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(ValueError, match="LIMITS"):
                await client.send_message(pieces(), "a@abc.example", RECIPIENTS)
            assert handler.messages == []
            return await client.send_message(MESSAGE, "a@abc.example", RECIPIENTS)

    handler = Sink()
    with running_smtp_server(adapter, handler, limits=True, max_recipients=2) as server:
        result = run(adapter, lambda: go(server.port))
    assert len(result.delivered) == 4
    assert [len(m.recipients) for m in handler.messages] == [2, 1, 1]


def test_a_batch_whose_mail_is_refused_leaves_the_others_and_their_record(adapter: str) -> None:
    """RFC 9422 §4.2 batches: a 4xx to one batch's MAIL refuses that batch's recipients
    in the result; the batches before and after it are delivered and kept."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        FIRST_DELIVERED
        + ENVELOPE.format("c")
        + "S: 451 4.7.1 not now\nS: 503 5.5.1 no MAIL\nS: 503 5.5.1 no MAIL\n"
        + "C: RSET\n"
        + ENVELOPE.format("d")
        + "S: 250 reset\nS: 250 ok\nS: 250 ok\nS: 354 go\n"
        + CONTENT
        + "S: 250 queued\nC: QUIT\nS: 221 bye\n"
    )

    with ScriptedServer(steps) as server:
        result = send_to(adapter, server.port, THREE)
    fates = {
        str(r.recipient): (r.delivered, r.reply.code if r.reply else None)
        for r in result.recipients
    }
    assert fates == {
        "b@pqr.example": (True, 250),
        "c@pqr.example": (False, 451),
        "d@pqr.example": (True, 250),
    }


def _first_batch_delivered_and_the_rest_unanswered(result: Any) -> None:
    """``result`` of THREE where only the first batch (``b@``) was delivered: the
    recipients of the later ones are there, unanswered."""
    assert result is not None
    assert [str(r.recipient) for r in result.delivered] == ["b@pqr.example"]
    assert [(str(r.recipient), r.reply) for r in result.recipients[1:]] == [
        ("c@pqr.example", None),
        ("d@pqr.example", None),
    ]


def test_a_session_lost_between_batches_says_which_were_delivered(adapter: str) -> None:
    """A connection lost after one batch was delivered and the next one's content sent:
    the error's ``result`` has the first batch delivered, so that a retry does not
    deliver it twice; the second batch's recipient accepted, its content sent and its
    fate unknown (``may_have_been_delivered``, RFC 5321 §6.1); the third's unanswered."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        FIRST_DELIVERED
        + ENVELOPE.format("c")
        + "S: 250 ok\nS: 250 ok\nS: 354 go\n"
        + CONTENT
        + "-- close\n"
    )
    mod = module(adapter)

    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPConnectionError) as caught:
        send_to(adapter, server.port, THREE)
    result = caught.value.result
    assert result is not None
    assert [str(r.recipient) for r in result.recipients] == [
        "b@pqr.example",
        "c@pqr.example",
        "d@pqr.example",
    ]
    assert [str(r.recipient) for r in result.delivered] == ["b@pqr.example"]
    sent, unsent = result.recipients[1:]
    assert sent.reply is not None and sent.reply.code == 250 and sent.delivery is None
    assert unsent.reply is None
    assert caught.value.may_have_been_delivered


def test_a_malformed_reply_between_batches_says_which_were_delivered(adapter: str) -> None:
    """As a lost session: a reply the client cannot read in the second batch raises
    SMTPProtocolError whose ``result`` has the first batch delivered, the others
    unanswered."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        FIRST_DELIVERED + ENVELOPE.format("c") + "S: 250 ok\nS: 2x0 what\n" + "-- close\n"
    )
    mod = module(adapter)

    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPProtocolError) as caught:
        send_to(adapter, server.port, THREE)
    _first_batch_delivered_and_the_rest_unanswered(caught.value.result)


class _RewrittenAfterReading(io.BytesIO):
    """MESSAGE, rewritten with 8-bit text by another writer once it has been read."""

    def seek(self, pos: int, whence: int = 0) -> int:
        if self.tell():
            self.__init__(MESSAGE.replace(b"many recipients", b"m\xc3\xa4ny recipients"))  # type: ignore[misc]  # reset the buffer
        return super().seek(pos, whence)


def test_a_local_error_in_a_later_batch_says_which_were_delivered(adapter: str) -> None:
    """Content found unsendable only in the second batch (8-bit now, and no 8BITMIME):
    the LocalProtocolError raised carries in ``result`` the first batch delivered and
    the others unanswered, as a lost session does, for a caller without ``on_batch``."""
    from smtpcore import LocalProtocolError
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        FIRST_DELIVERED
        + ENVELOPE.format("c")
        + "S: 250 ok\nS: 250 ok\nS: 354 go\n-- expect close\n"
    )
    mod = module(adapter)

    async def go(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            return await client.send_message(
                _RewrittenAfterReading(MESSAGE), "a@abc.example", THREE
            )

    with ScriptedServer(steps) as server, pytest.raises(LocalProtocolError) as caught:
        run(adapter, lambda: go(server.port))
    _first_batch_delivered_and_the_rest_unanswered(caught.value.result)


def test_a_batch_whose_data_is_refused_is_refused_in_the_result(adapter: str) -> None:
    """RFC 5321 §4.2.1: the first batch's DATA refused, the second delivered: the send
    returns, with the first batch's recipient in ``refused``, the DATA reply its own."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        ONE_A_BATCH
        + ENVELOPE.format("b")
        + "S: 250 ok\nS: 250 ok\nS: 554 5.3.4 not this one\n"
        + "C: RSET\n"
        + ENVELOPE.format("c")
        + "S: 250 reset\nS: 250 ok\nS: 250 ok\nS: 354 go\n"
        + CONTENT
        + "S: 250 queued\nC: QUIT\nS: 221 bye\n"
    )

    with ScriptedServer(steps) as server:
        result = send_to(adapter, server.port, ["b@pqr.example", "c@pqr.example"])
    b, c = result.recipients
    assert result.delivered == (c,) and result.refused == (b,)
    assert b.delivery is not None and b.delivery.code == 554


def test_no_batch_delivered_the_refusal_holds_every_batch(adapter: str) -> None:
    """No batch delivered: the refusal raised is the first batch's 451, not the second
    batch's 550 (a temporary refusal in any batch makes the error temporary, RFC 5321
    §4.2.1), and its ``result`` has every batch's recipients with their own replies,
    so that the second batch's 550s are not taken for the first batch's 451."""
    from smtpcore.testing import ScriptedServer, script

    envelope = (
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<{}@pqr.example>\n"
        "C: RCPT TO:<{}@pqr.example>\nC: DATA\n"
    )
    steps = script(
        "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
        "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTMAX=2\n"
        + envelope.format("u1", "u2")
        + "S: 250 ok\nS: 451 4.7.1 greylisted\nS: 451 4.7.1 greylisted\nS: 554 no recipients\n"
        + "C: RSET\n"
        + envelope.format("u3", "u4")
        + "S: 250 reset\nS: 250 ok\nS: 550 5.1.1 no such user\nS: 550 5.1.1 no such user\n"
        + "S: 554 no recipients\nC: QUIT\nS: 221 bye\n"
    )
    mod = module(adapter)
    recipients = [f"u{n}@pqr.example" for n in range(1, 5)]

    async def send(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            try:
                return await client.send_message(MESSAGE, "a@abc.example", recipients)
            finally:
                await client.quit()

    with ScriptedServer(steps) as server, pytest.raises(mod.RecipientsRefused) as caught:
        run(adapter, lambda: send(server.port))
    assert caught.value.code == 451
    result = caught.value.result
    assert [(str(r.recipient), r.reply and r.reply.code) for r in result.recipients] == [
        ("u1@pqr.example", 451),
        ("u2@pqr.example", 451),
        ("u3@pqr.example", 550),
        ("u4@pqr.example", 550),
    ]


_TEMPORARY = "452 4.2.2 mailbox full"
_PERMANENT = "550 5.1.1 no such user"


def _refused_batch(who: str, where: str, reply: str, *, after_a_refusal: bool) -> str:
    """A scripted batch of one recipient (RCPTMAX=1) refused with ``reply`` at ``where``:
    its ``RCPT`` (then the pipelined DATA's 554), or the end of its content. A batch
    after a refused one opens with the client's RSET."""
    sent = ("C: RSET\n" if after_a_refusal else "") + ENVELOPE.format(who)
    answers = "S: 250 reset\n" if after_a_refusal else ""
    if where == "RCPT":
        return sent + answers + f"S: 250 ok\nS: {reply}\nS: 554 5.5.1 no valid recipients\n"
    return sent + answers + "S: 250 ok\nS: 250 ok\nS: 354 go\n" + CONTENT + f"S: {reply}\n"


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
@pytest.mark.parametrize(
    ("first", "second", "raised"),
    [
        (("RCPT", _TEMPORARY), ("RCPT", _PERMANENT), "RecipientsRefused"),
        (("RCPT", _PERMANENT), ("RCPT", _TEMPORARY), "RecipientsRefused"),
        (("end", _TEMPORARY), ("end", _PERMANENT), "MessageRefused"),
        (("end", _PERMANENT), ("end", _TEMPORARY), "MessageRefused"),
        (("RCPT", _TEMPORARY), ("end", _PERMANENT), "RecipientsRefused"),
        (("end", _TEMPORARY), ("RCPT", _PERMANENT), "MessageRefused"),
    ],
)
def test_no_batch_delivered_a_temporary_refusal_in_any_batch_makes_the_error_temporary(
    adapter: str, lmtp: bool, first: tuple[str, str], second: tuple[str, str], raised: str
) -> None:
    """RFC 9422 §4.2 batches, none delivered, one refused 452 and the other 550, in
    either order: the error raised is the temporary one's, command and reply, as one
    transaction's summary prefers a temporary refusal (RFC 5321 §4.2.1), so that a
    caller deciding bounce or retry by ``code`` retries; ``result`` keeps each
    recipient's own reply. In LMTP each reply after the content is a recipient's
    (RFC 2033 §4.2); with one recipient a batch, the same rule."""
    from smtpcore.testing import ScriptedServer, script

    hello = ONE_A_BATCH.replace("PIPELINING", "PIPELINING\nS: 250-ENHANCEDSTATUSCODES")
    if lmtp:
        hello = hello.replace("ESMTP", "LMTP").replace("EHLO", "LHLO")
    steps = script(
        hello
        + _refused_batch("b", *first, after_a_refusal=False)
        + _refused_batch("c", *second, after_a_refusal=True)
        + "C: QUIT\nS: 221 bye\n"
    )
    mod = module(adapter)

    async def send(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port, lmtp=lmtp) as client:
            try:
                return await client.send_message(
                    MESSAGE, "a@abc.example", ["b@pqr.example", "c@pqr.example"]
                )
            finally:
                await client.quit()

    with ScriptedServer(steps) as server, pytest.raises(getattr(mod, raised)) as caught:
        run(adapter, lambda: send(server.port))
    error = caught.value
    assert (error.code, str(error.status)) == (452, "4.2.2")
    assert error.command == ("RCPT" if raised == "RecipientsRefused" else "end of data")
    own = [(str(r.recipient), (r.delivery or r.reply).code) for r in error.result.recipients]
    assert own == [("b@pqr.example", int(first[1][:3])), ("c@pqr.example", int(second[1][:3]))]


def _mailmax_script(mail_max: int, body: str) -> Any:
    from smtpcore.testing import script

    return script(
        "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
        f"S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS MAILMAX={mail_max} RCPTMAX=1\n"
        + body
        + "C: QUIT\nS: 221 bye\n"
    )


def test_batches_past_mailmax_are_left_for_a_new_connection(adapter: str) -> None:
    """RFC 9422 §4.1: a server taking one transaction a session gets one MAIL; the
    batches after it are not sent but left unanswered in the error's ``result``, and
    the session ends with QUIT (the script has no second MAIL)."""
    from smtpcore.testing import ScriptedServer

    steps = _mailmax_script(
        1,
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 250 ok\nS: 250 ok\nS: 354 go\n"
        "C: Subject: many\nC:\nC: to many recipients\nC: .\nS: 250 queued\n",
    )
    mod = module(adapter)

    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPConnectionError) as caught:
        send_to(adapter, server.port, THREE)
    error = caught.value
    assert error.local and error.code == 421
    assert error.result is not None
    assert [str(r.recipient) for r in error.result.delivered] == ["b@pqr.example"]
    assert [(str(r.recipient), r.reply) for r in error.result.recipients[1:]] == [
        ("c@pqr.example", None),
        ("d@pqr.example", None),
    ]


def test_mailmax_counts_every_mail_of_the_session(adapter: str) -> None:
    """MAILMAX counts the session's MAIL commands, refused ones too and across an
    RSET (RFC 9422 §4.1): with MAILMAX=2, a third message is not sent; the error
    comes before MAIL, its recipients unanswered."""
    from smtpcore.testing import ScriptedServer

    steps = _mailmax_script(
        2,
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 250 ok\nS: 250 ok\nS: 354 go\n"
        "C: Subject: many\nC:\nC: to many recipients\nC: .\nS: 250 queued\n"
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 451 4.3.0 not now\nS: 503 5.5.1 no MAIL\nS: 503 5.5.1 no MAIL\n"
        "C: RSET\nS: 250 reset\n",
    )
    mod = module(adapter)

    async def send(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            with pytest.raises(mod.SenderRefused):
                await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            await client.rset()
            return await client.send_message(MESSAGE, "a@abc.example", ["c@pqr.example"])

    with ScriptedServer(steps) as server, pytest.raises(mod.SMTPConnectionError) as caught:
        run(adapter, lambda: send(server.port))
    error = caught.value
    assert error.local and error.code == 421
    assert error.result is not None
    assert [(str(r.recipient), r.reply) for r in error.result.recipients] == [
        ("c@pqr.example", None)
    ]


def test_rcptdomainmax_counts_the_domains_of_the_session(adapter: str) -> None:
    """RFC 9422 §4.3: RCPTDOMAINMAX is the number of recipient domains in a session, not
    in a transaction. With RCPTDOMAINMAX=1, a message to two domains sends the first
    domain's recipients, then QUIT, the other's left unanswered for a new connection;
    a second message of the session to the other domain sends no MAIL at all."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
        "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTDOMAINMAX=1\n"
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\n"
        "C: RCPT TO:<d@PQR.example>\nC: DATA\n"
        "S: 250 ok\nS: 250 ok\nS: 250 ok\nS: 354 go\n" + CONTENT + "S: 250 queued\n"
        "C: QUIT\nS: 221 bye\n"
    )
    mod = module(adapter)
    recipients = ["b@pqr.example", "c@xyz.example", "d@PQR.example"]

    async def send(port: int, second_port: int) -> tuple[Any, Any]:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(mod.SMTPConnectionError) as first:
                await client.send_message(MESSAGE, "a@abc.example", recipients)
        async with mod.SMTPClient("127.0.0.1", second_port) as client:
            await client.send_message(MESSAGE, "a@abc.example", ["b@pqr.example"])
            with pytest.raises(mod.SMTPConnectionError) as second:
                await client.send_message(MESSAGE, "a@abc.example", ["c@xyz.example"])
        return first.value, second.value

    second_session = script(
        "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
        "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTDOMAINMAX=1\n"
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 250 ok\nS: 250 ok\nS: 354 go\n" + CONTENT + "S: 250 queued\n"
        "C: QUIT\nS: 221 bye\n"
    )
    with ScriptedServer(steps) as server, ScriptedServer(second_session) as other:
        first, second = run(adapter, lambda: send(server.port, other.port))
    assert first.local and first.code == 421 and "RCPTDOMAINMAX" in str(first.reply)
    assert first.result is not None
    assert [str(r.recipient) for r in first.result.delivered] == [
        "b@pqr.example",
        "d@PQR.example",
    ]
    assert [(str(r.recipient), r.reply) for r in first.result.recipients if r.reply is None] == [
        ("c@xyz.example", None)
    ]
    assert second.local and second.code == 421
    assert [(str(r.recipient), r.reply) for r in second.result.recipients] == [
        ("c@xyz.example", None)
    ]


def test_rcptdomainmax_takes_content_sent_once_of_any_kind(adapter: str) -> None:
    """A message to two domains under RCPTDOMAINMAX=1 goes once in this session (the
    other domain's recipient for a new one): an iterator is fine content for that,
    where its missing ``tell`` was an AttributeError before MAIL."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        "S: 220 scripted.test ESMTP\nC~ EHLO .+\n"
        "S: 250-scripted.test\nS: 250-PIPELINING\nS: 250 LIMITS RCPTDOMAINMAX=1\n"
        "C: MAIL FROM:<a@abc.example>\nC: RCPT TO:<b@pqr.example>\nC: DATA\n"
        "S: 250 ok\nS: 250 ok\nS: 354 go\n" + CONTENT + "S: 250 queued\n"
        "C: QUIT\nS: 221 bye\n"
    )
    mod = module(adapter)

    async def send(port: int) -> Any:
        async with mod.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(mod.SMTPConnectionError) as caught:
                await client.send_message(
                    iter([MESSAGE]), "a@abc.example", ["b@pqr.example", "c@xyz.example"]
                )
        return caught.value

    with ScriptedServer(steps) as server:
        error = run(adapter, lambda: send(server.port))
    assert error.local and error.code == 421 and "RCPTDOMAINMAX" in str(error.reply)
    assert [str(r.recipient) for r in error.result.delivered] == ["b@pqr.example"]


def test_on_batch_hears_of_each_transaction_as_it_ends(adapter: str) -> None:
    """``on_batch`` is awaited with each transaction's result before the next begins, so
    a caller can record what each delivered; on the blocking client it is a plain
    function."""
    from smtpcore import sync

    handler = Sink()
    seen: list[list[str]] = []

    async def heard(result: Any) -> None:
        seen.append([str(r.recipient) for r in result.recipients])
        assert len(handler.messages) == len(seen)  # that transaction ended; no next one yet

    async def go(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            return await client.send_message(MESSAGE, "a@abc.example", RECIPIENTS, on_batch=heard)

    with running_smtp_server(adapter, handler, limits=True, max_recipients=2) as server:
        run(adapter, lambda: go(server.port))
        batches = [RECIPIENTS[0:2], RECIPIENTS[2:4], RECIPIENTS[4:]]
        assert seen == batches
        plain: list[int] = []
        with sync.SMTPClient("127.0.0.1", server.port, timeout=10) as client:
            client.send_message(
                MESSAGE,
                "a@abc.example",
                RECIPIENTS,
                on_batch=lambda r: plain.append(len(r.recipients)),
            )
        assert plain == [2, 2, 1]


def test_on_batch_on_the_one_shot_send_message(adapter: str) -> None:
    """The module-level ``send_message`` takes ``on_batch`` (and ``xforward``) as the
    client's method does: a caller sending one message to a LIMITS server can record
    each transaction as it ends."""
    from smtpcore import sync

    handler = Sink()
    seen: list[int] = []

    async def heard(result: Any) -> None:
        seen.append(len(result.recipients))

    async def go(port: int) -> Any:
        return await module(adapter).send_message(
            MESSAGE, "a@abc.example", RECIPIENTS, host="127.0.0.1", port=port, on_batch=heard
        )

    with running_smtp_server(adapter, handler, limits=True, max_recipients=2) as server:
        result = run(adapter, lambda: go(server.port))
        assert seen == [2, 2, 1] and len(result.delivered) == 4  # user3 is refused
        plain: list[int] = []
        sync.send_message(
            MESSAGE,
            "a@abc.example",
            RECIPIENTS,
            host="127.0.0.1",
            port=server.port,
            timeout=10,
            on_batch=lambda r: plain.append(len(r.recipients)),
        )
        assert plain == [2, 2, 1]


@pytest.mark.parametrize("limit", [1, 2, 4])
def test_recipients_refused_452_are_sent_again_at_once(adapter: str, limit: int) -> None:
    """RFC 5321 §4.5.3.1.8, .10: recipients past a limit the server did not announce
    get ``452 4.5.3``; with ``resend_too_many`` they go in new transactions on the same
    session (MAIL again, the content again: bytes, or a file read from where it
    began), each recipient once in the result, ``on_batch`` told of each."""
    handler = CollectingHandler()
    seen: list[list[str]] = []

    async def heard(result: Any) -> None:
        seen.append([str(r.recipient) for r in result.recipients])

    async def go(port: int, content: Any) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            return await client.send_message(
                content, "a@abc.example", RECIPIENTS, on_batch=heard, resend_too_many=True
            )

    with running_smtp_server(adapter, handler, max_recipients=limit) as server:
        for content in (MESSAGE, io.BytesIO(b"before" + MESSAGE)):
            if not isinstance(content, bytes):
                content.seek(len(b"before"))
            result = run(adapter, lambda: go(server.port, content))  # noqa: B023
            assert [str(r.recipient) for r in result.recipients] == RECIPIENTS
            assert len(result.delivered) == len(RECIPIENTS)
    batches = [RECIPIENTS[n : n + limit] for n in range(0, len(RECIPIENTS), limit)]
    assert [[str(r.mailbox) for r in m.recipients] for m in handler.messages] == batches * 2
    assert all(m.content == MESSAGE for m in handler.messages)
    assert seen == batches * 2


def test_a_452_to_every_recipient_is_not_sent_again(adapter: str) -> None:
    """No recipient delivered, no progress: the 452s are the refusal, as without
    ``resend_too_many``, and one transaction was tried."""
    from smtpcore.testing import ScriptedServer, script

    steps = script(
        "S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test\n"
        "C: MAIL FROM:<a@abc.example>\nS: 250 ok\n"
        "C: RCPT TO:<b@pqr.example>\nS: 452 4.5.3 too many recipients\n"
        "C: QUIT\nS: 221 bye\n"
    )

    async def go(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(module(adapter).RecipientsRefused) as refused:
                await client.send_message(
                    MESSAGE, "a@abc.example", ["b@pqr.example"], resend_too_many=True
                )
            return refused.value

    with ScriptedServer(steps) as server:
        error = run(adapter, lambda: go(server.port))
    assert error.reply.code == 452


def test_content_sent_once_is_not_sent_again_for_a_452(adapter: str) -> None:
    """An iterator cannot be read twice: its 452 recipients stay refused in the result."""
    handler = CollectingHandler()

    def pieces() -> Iterator[bytes]:
        yield MESSAGE

    async def go(port: int) -> Any:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            return await client.send_message(
                pieces(), "a@abc.example", RECIPIENTS[:3], resend_too_many=True
            )

    with running_smtp_server(adapter, handler, max_recipients=2) as server:
        result = run(adapter, lambda: go(server.port))
    assert [r.reply.code for r in result.refused] == [452]
    assert len(handler.messages) == 1


def test_resend_too_many_on_the_one_shot_send_message(adapter: str) -> None:
    """The module-level ``send_message`` (and ``smtpcore.sync``'s) takes
    ``resend_too_many`` as the client's method does, where it went on to
    ``SMTPClient`` as an option and was a ``TypeError``: the 452s past the server's
    limit go in new transactions of the one session."""
    from smtpcore import sync

    handler = CollectingHandler()

    async def go(port: int) -> Any:
        return await module(adapter).send_message(
            MESSAGE, "a@abc.example", RECIPIENTS, host="127.0.0.1", port=port, resend_too_many=True
        )

    with running_smtp_server(adapter, handler, max_recipients=2) as server:
        result = run(adapter, lambda: go(server.port))
        assert len(result.delivered) == len(RECIPIENTS)
        result = sync.send_message(
            MESSAGE,
            "a@abc.example",
            RECIPIENTS,
            host="127.0.0.1",
            port=server.port,
            timeout=10,
            resend_too_many=True,
        )
        assert len(result.delivered) == len(RECIPIENTS)
    assert [len(m.recipients) for m in handler.messages] == [2, 2, 1] * 2
