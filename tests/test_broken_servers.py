"""The planted defects of tests/broken_servers.py are there, and only there.

Each broken server is shown to differ from the correct :class:`SmallServer`
on the bytes that expose its defect, so that a check or a strategy that
finds nothing wrong with one of them is known to have missed something.
"""

from __future__ import annotations

import socket

import pytest

from broken_servers import (
    BROKEN_SERVERS,
    DroppedReplyServer,
    EagerBdatServer,
    FewRecipientsServer,
    HardErrorLimitServer,
    LfDotLfServer,
    LongLineTailServer,
    LongTextLineServer,
    MailKeepsRecipientsServer,
    NewTransactionMailServer,
    NonAsciiDigitServer,
    OutOfOrderServer,
    PlaintextAfterStartTlsServer,
    SilentHoleServer,
    SizeIgnoringServer,
    SmallServer,
    SplitCommandServer,
    serve,
)

SETUP = b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@broken.test>\r\n"


def replies(server: SmallServer, *pieces: bytes) -> list[bytes]:
    """The reply lines the server wrote for ``pieces``, one list item per piece."""
    return [server.receive(piece) for piece in pieces]


@pytest.mark.parametrize("cls", [SmallServer, *BROKEN_SERVERS])
def test_a_plain_session_works_on_every_server(cls: type[SmallServer]) -> None:
    server = cls()
    out = b"".join(replies(server, SETUP, b"DATA\r\n", b"Hi\r\n..dot\r\n.\r\n", b"QUIT\r\n"))
    assert out.count(b"\r\n250 ") + out.startswith(b"250 ") >= 3
    assert b"354 " in out and out.endswith(b"221 2.0.0 Bye\r\n")
    assert server.messages == [b"Hi\r\n.dot\r\n"]
    assert server.closed


@pytest.mark.parametrize("pieces", [[b"MAIL FROM:<\n>\r\n"], [b"NOOP\n", b"RSET\r\n"]])
def test_only_crlf_ends_a_command_line(pieces: list[bytes]) -> None:
    # RFC 5321 §2.3.8: a bare LF is inside the line; the line gets one refusal, and
    # nothing after the LF is run as a command of its own.
    server = SmallServer()
    server.receive(b"EHLO client.test\r\n")
    assert b"".join(replies(server, *pieces)) == b"500 5.5.2 Bare LF in command\r\n"
    assert server.commands[-1] == b"".join(pieces)


SMUGGLE = b"Subject: x\r\n\r\nhi\n.\nMAIL FROM:<e@f.test>\r\nRCPT TO:<g@h.test>\r\nDATA\r\n"


def test_lf_dot_lf_server_takes_a_smuggled_message() -> None:
    good, bad = SmallServer(), LfDotLfServer()
    for server in (good, bad):
        replies(server, SETUP, b"DATA\r\n", SMUGGLE, b"second\r\n.\r\n")
    assert len(good.messages) == 1
    assert bad.messages == [b"Subject: x\r\n\r\nhi\n", b"second\r\n"]


REFUSED_THEN_LAST = (b"BDAT 2\r\n", b"ab", b"BDAT 2 FIRST\r\n", b"cd", b"BDAT 2 LAST\r\n", b"ef")


def test_dropped_reply_servers_leave_the_bdat_after_a_refusal_unanswered() -> None:
    # RFC 3030 §2: the BDAT after a refused one gets a reply (503: the transaction
    # has failed); these two send none, and the silent one delivers a holed message.
    good, dropping, silent = SmallServer(), DroppedReplyServer(), SilentHoleServer()
    last_replies = []
    for server in (good, dropping, silent):
        answers = replies(server, SETUP, *REFUSED_THEN_LAST)
        assert answers[2][:4] == b"250 " and answers[3][:4] == b"501 ", answers
        last_replies.append(answers[-1][:4])
    assert last_replies == [b"503 ", b"", b""]
    assert good.messages == dropping.messages == []
    assert silent.messages == [b"abef"]
    assert [replies(s, b"QUIT\r\n") for s in (dropping, silent)] == [[b"221 2.0.0 Bye\r\n"]] * 2


def test_eager_bdat_server_answers_before_the_octets() -> None:
    good, bad = SmallServer(), EagerBdatServer()
    assert replies(good, SETUP, b"BDAT 5 LAST\r\n", b"hello")[1:] == [
        b"",
        b"250 2.0.0 Message 1 accepted\r\n",
    ]
    assert replies(bad, SETUP, b"BDAT 5 LAST\r\n", b"hello")[1:] == [
        b"250 2.0.0 Message 1 accepted\r\n",
        b"",
    ]
    assert good.messages == bad.messages == [b"hello"]


def test_non_ascii_digit_server_crashes_on_a_superscript() -> None:
    line = "MAIL FROM:<a@b.test> SIZE=²\r\n".encode()
    assert replies(SmallServer(), b"EHLO c.test\r\n", line)[1] == b"501 5.5.4 Bad SIZE value\r\n"
    server = NonAsciiDigitServer()
    server.receive(b"EHLO c.test\r\n")
    with pytest.raises(ValueError):
        server.receive(line)


def test_out_of_order_server_answers_refusals_last() -> None:
    batch = b"EHLO c.test\r\nRCPT TO:<x@y.test>\r\nNOOP\r\n"
    assert SmallServer().receive(batch).endswith(b"503 5.5.1 Need MAIL first\r\n250 2.0.0 OK\r\n")
    assert (
        OutOfOrderServer()
        .receive(batch)
        .endswith(b"250 2.0.0 OK\r\n503 5.5.1 Need MAIL first\r\n")
    )
    # One command at a time, it is correct.
    server = OutOfOrderServer()
    assert replies(server, b"EHLO c.test\r\n", b"RCPT TO:<x@y.test>\r\n", b"NOOP\r\n")[1:] == [
        b"503 5.5.1 Need MAIL first\r\n",
        b"250 2.0.0 OK\r\n",
    ]


def test_split_command_server_depends_on_the_chunking() -> None:
    assert replies(SmallServer(), b"NO", b"OP\r\n") == [b"", b"250 2.0.0 OK\r\n"]
    assert replies(SplitCommandServer(), b"NO", b"OP\r\n")[0].startswith(b"500 ")


def test_plaintext_after_starttls_server_runs_the_injected_command() -> None:
    for cls, after in ((SmallServer, b""), (PlaintextAfterStartTlsServer, b"250 2.0.0 OK\r\n")):
        server = cls(starttls=True)
        assert server.receive(b"EHLO c.test\r\nSTARTTLS\r\nNOOP\r\n").endswith(
            b"220 2.0.0 Ready to start TLS\r\n"
        )
        assert server.start_tls
        server.tls_started()
        assert server.receive(b"") == after


def test_long_line_tail_server_runs_the_tail() -> None:
    batch = b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n"
    assert SmallServer().receive(batch) == b"500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    assert LongLineTailServer().receive(batch).count(b"\r\n") == 3


def test_few_recipients_server_refuses_the_eleventh() -> None:
    batch = b"EHLO c\r\nMAIL FROM:<a@b>\r\n" + b"RCPT TO:<c@d>\r\n" * 101
    good = SmallServer().receive(batch).splitlines()
    bad = FewRecipientsServer().receive(batch).splitlines()
    assert good[-2:] == [b"250 2.1.5 OK", b"452 4.5.3 Too many recipients"]
    assert bad[-91] == b"550 5.5.3 Too many recipients"


def test_size_ignoring_server_takes_too_much() -> None:
    line = b"EHLO c\r\nMAIL FROM:<a@b> SIZE=20000\r\n"
    assert SmallServer().receive(line).endswith(b"552 5.3.4 Message too big\r\n")
    assert SizeIgnoringServer().receive(line).endswith(b"250 2.1.0 OK\r\n")


def test_a_second_mail_is_refused_or_starts_a_transaction_with_no_recipient() -> None:
    """RFC 5321 §3.3: MAIL resets every state table, recipients included. SmallServer
    refuses the second MAIL, so the first transaction, recipient and all, goes on to
    DATA's 354; qmail-smtpd's way takes it and starts afresh, so DATA has no
    recipient; only the planted server takes it and keeps the recipient."""
    batch = SETUP + b"MAIL FROM:<a@client.test>\r\nDATA\r\n"
    tails = {
        cls: cls().receive(batch).splitlines()[-2:]
        for cls in (SmallServer, NewTransactionMailServer, MailKeepsRecipientsServer)
    }
    assert tails[SmallServer] == [
        b"503 5.5.1 Nested MAIL",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]
    assert tails[NewTransactionMailServer] == [b"250 2.1.0 OK", b"554 5.5.1 No recipients"]
    assert tails[MailKeepsRecipientsServer] == [
        b"250 2.1.0 OK",
        b"354 End data with <CR><LF>.<CR><LF>",
    ]


def test_hard_error_limit_server_ends_the_session_after_its_limit() -> None:
    server = HardErrorLimitServer()
    batch = b"EHLO c\r\nRCPT TO:<a@b>\r\nDATA\r\nRSET\r\nNOOP\r\n"
    assert server.receive(batch).splitlines()[-3:] == [
        b"503 5.5.1 Need MAIL first",
        b"503 5.5.1 No recipients",
        b"421 4.7.0 Error: too many errors",
    ]
    assert server.closed


def test_serve_runs_a_session_per_connection_and_records_crashes() -> None:
    with serve(NonAsciiDigitServer) as server:
        for _ in range(2):
            with socket.create_connection(server.address, timeout=10) as sock:
                reader = sock.makefile("rb")
                assert reader.readline().startswith(b"220 ")
                sock.sendall(b"HELO c.test\r\n")
                assert reader.readline() == b"250 broken.test\r\n"
                sock.sendall("MAIL FROM:<a@b> SIZE=²\r\n".encode())
                assert reader.readline() == b""  # the session died without a word
    assert len(server.sessions) == 2
    assert [type(crash) for crash in server.crashes] == [ValueError, ValueError]


def test_long_text_line_server_ends_a_message_at_a_folded_dot() -> None:
    content = b"x" * 1000 + b".\r\nNOOP\r\n"
    good, bad = SmallServer(), LongTextLineServer()
    assert replies(good, SETUP, b"DATA\r\n", content)[2] == b""
    assert replies(bad, SETUP, b"DATA\r\n", content)[2] == (
        b"250 2.0.0 Message 1 accepted\r\n250 2.0.0 OK\r\n"
    )
