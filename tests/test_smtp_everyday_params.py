"""The everyday ESMTP parameters' fast path answers as the general path does.

``smtp/_everyday_params.py`` reads the parameters real clients send (``SIZE=``,
``BODY=``, ``SMTPUTF8``, ``RET=``, ``ENVID=``, ``NOTIFY=``, ``ORCPT=``) with a
lookup or two and marks them, and the server machine then checks them by bits
against the extensions in force. Here a machine is held, line for line, to the
same machine with the everyday-line parser switched off (on the line and in the
buffer), whose commands take the
full parser and the general checks (which word every refusal): whatever the
server offers, the session's stage, the parameters, their order and case, and
whether a text was read before.
"""

from __future__ import annotations

from unittest import mock

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtp_helpers import greeted, run
from smtpcore.smtp import Mail, Parameters, Rcpt
from smtpcore.smtp import _server as server_module
from smtpcore.smtp import _server_commands as commands_module
from smtpcore.smtp._commands import parse_everyday_line
from smtpcore.smtp._everyday_params import SMTPUTF8_BIT, read_parameters
from smtpcore.testing import strategies as sst

WORDS = st.sampled_from(
    [
        *("SIZE=0", "SIZE=1000", "SIZE=1001", "size=999", "Size=" + "9" * 20, "SIZE=" + "1" * 21),
        *("SIZE=12a", "SIZE=", "SIZE", "SIZE=-1", "SIZE=00001000"),
        *("BODY=7BIT", "BODY=8BITMIME", "body=8bitmime", "BODY=BINARYMIME", "BODY=9BIT"),
        *("SMTPUTF8", "smtputf8", "SMTPUTF8=yes"),
        *("RET=FULL", "ret=hdrs", "RET=NONE", "RET"),
        *("ENVID=QQ314159", "ENVID=a+2Bb", "ENVID=" + "x" * 100, "ENVID=" + "x" * 101, "ENVID"),
        *("NOTIFY=NEVER", "notify=success,failure", "NOTIFY=DELAY,SUCCESS,FAILURE"),
        *("NOTIFY=SUCCESS,SUCCESS", "NOTIFY=NEVER,DELAY", "NOTIFY"),
        *("ORCPT=rfc822;bob@pqr.example", "ORCPT=RFC822;b+2Bc@d", "ORCPT=utf-8;a@b"),
        *("ORCPT=rfc822;" + "a" * 493, "ORCPT=rfc822;" + "a" * 494, "ORCPT=rfc822;", "ORCPT=x"),
        *("AUTH=<>", "REQUIRETLS", "FOO=1", "X-Y", "MT-PRIORITY=3"),
    ]
)
"""Parameters of the everyday shapes and of every shape next to them, in any case."""

EVERYDAY_TEXTS = st.lists(WORDS, max_size=4).map(lambda words: "".join(f" {w}" for w in words))

TEXTS = st.one_of(
    EVERYDAY_TEXTS,
    sst.parameter_texts(),
    sst.parameter_texts(rcpt=True),
    sst.parameter_texts(hostile=True),
    sst.parameter_texts(rcpt=True, hostile=True),
)

OPTIONS = st.fixed_dictionaries(
    {
        "dsn": st.booleans(),
        "size": st.booleans(),
        "eight_bit_mime": st.booleans(),
        "smtputf8": st.booleans(),
        "binarymime": st.booleans(),
        "max_message_size": st.sampled_from([None, 0, 1000, 10_240_000]),
    }
)


def session(options: dict[str, object], hello: bytes, lines: list[bytes]) -> list[object]:
    """What a machine answers to each of ``lines``, event and bytes."""
    conn = greeted(**options)
    answers: list[object] = [run(conn, hello)]
    for line in lines:
        answers.append(run(conn, line))
    answers.append((conn._utf8_transaction, conn._binary_transaction, conn.state))
    return answers


@given(OPTIONS, st.sampled_from([b"EHLO c.example\r\n", b"HELO c.example\r\n"]), TEXTS, TEXTS)
@example(
    {"dsn": True, "size": True, "eight_bit_mime": True, "smtputf8": True, "binarymime": False},
    b"EHLO c.example\r\n",
    " SIZE=1234 BODY=8BITMIME",
    " NOTIFY=NEVER",
)
@example({"max_message_size": 1000}, b"EHLO c.example\r\n", " SIZE=1001", "")
@example({"binarymime": True}, b"EHLO c.example\r\n", " BODY=BINARYMIME", "")
@example({}, b"EHLO c.example\r\n", " SIZE=1 size=2", "")
@example({}, b"EHLO c.example\r\n", " SIZE=1 BODY=8BITMIME SIZE=2", "")
@example({"dsn": True}, b"EHLO c.example\r\n", " RET=FULL ENVID=x RET=HDRS", "")
@example({"eight_bit_mime": False}, b"EHLO c.example\r\n", " SMTPUTF8", "")
def test_the_everyday_parameters_are_answered_as_the_general_path_answers(
    options: dict[str, object], hello: bytes, mail_text: str, rcpt_text: str
) -> None:
    """MAIL and RCPT with parameters, each twice (the second time a text is found
    among those read before), then DATA: the same events, the same replies, the
    same transaction, with the fast path or without it."""
    mail = f"MAIL FROM:<john@abc.example>{mail_text}\r\n".encode()
    rcpt = f"RCPT TO:<brendon@pqr.example>{rcpt_text}\r\n".encode()
    lines = [mail, rcpt, b"RSET\r\n", mail, rcpt, rcpt, b"DATA\r\n"]
    fast = session(options, hello, lines)
    with (
        mock.patch.object(commands_module, "parse_everyday_line", lambda line: None),
        mock.patch.object(server_module, "match_everyday_line", lambda buffer: None),
    ):
        general = session(options, hello, lines)
    assert fast == general


def test_smtputf8_is_everyday_where_the_8bitmime_it_depends_on_is_offered() -> None:
    """SMTPUTF8 depends on 8BITMIME (RFC 6531 §3.1 item 8); 8BITMIME asks nothing of
    a session opened with EHLO, so SMTPUTF8 is in force in every such session and
    stays on the fast path; with 8BITMIME off it is not offered, and goes the general
    way, to its 555."""
    with_8bitmime = greeted()._config.tables.everyday_mail
    without = greeted(eight_bit_mime=False)._config.tables.everyday_mail
    assert with_8bitmime & SMTPUTF8_BIT and not without & SMTPUTF8_BIT


@given(TEXTS)
def test_everyday_parameters_are_what_the_word_by_word_reading_gives(text: str) -> None:
    """Read through the SIZE split and the texts read before, the parameters equal
    the constructor's, in the same order; the keywords of the everyday shapes are
    marked, and nothing else is."""
    line = f"MAIL FROM:<a@b.example>{text}\r\n".encode()
    for _ in range(2):  # the second time, found among the texts read before
        command = parse_everyday_line(line)
        if command is None:
            return
        assert isinstance(command, Mail)
        words = [word.partition("=") for word in text.split(" ") if word]
        expected = Parameters([(key, value if sep else None) for key, sep, value in words])
        assert command.params == expected
        assert list(command.params.items()) == list(expected.items())
        everyday = command.params._everyday
        if everyday:
            assert everyday.bit_count() == len(expected)


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        (b" SIZE=1234 BODY=8BITMIME", 1 | 2),
        (b" size=1234", 1),
        (b" BODY=8BITMIME SIZE=1234", 0),  # SIZE read from the first place only
        (b" BODY=BINARYMIME", 0),
        (b" SMTPUTF8 RET=HDRS ENVID=QQ314159", 4 | 8 | 16),
        (b" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob@pqr.example", 32 | 64),
        (b" ORCPT=rfc822;b+2Bc@d.example", 0),  # an xtext escape: read the general way
        (b" AUTH=<>", 0),
    ],
)
def test_which_parameters_are_everyday_ones(text: bytes, bits: int) -> None:
    size = None
    if text[:6].upper() == b" SIZE=":
        end = text.find(b" ", 6)
        size, text = (text[6:], b"") if end < 0 else (text[6:end], text[end:])
    params = read_parameters(size, text)
    assert params is not None
    assert params._everyday == bits


def test_a_remembered_text_is_shared_and_a_size_is_not() -> None:
    first = parse_everyday_line(b"RCPT TO:<a@b.example> NOTIFY=NEVER\r\n")
    second = parse_everyday_line(b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n")
    assert isinstance(first, Rcpt) and isinstance(second, Rcpt)
    assert first.params is second.params
    sized = [
        parse_everyday_line(f"MAIL FROM:<a@b.example> SIZE={size} BODY=8BITMIME\r\n".encode())
        for size in (10, 20)
    ]
    assert [command.params["SIZE"] for command in sized if isinstance(command, Mail)] == [
        "10",
        "20",
    ]
