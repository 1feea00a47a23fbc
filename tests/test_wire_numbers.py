"""Numbers on the wire are ASCII digits only (RFC 5234 B.1 DIGIT), in every machine.

``str.isdigit()`` is true for a superscript two and for Arabic-Indic digits,
``int()`` reads Arabic-Indic "12" as 12 and fails on the superscript and on more
than 4300 digits: each of those once reached a machine.
"""

from __future__ import annotations

import pytest

from smtp_helpers import EHLO, ENVELOPE, codes, greeted, run
from smtpcore import LocalProtocolError, RemoteProtocolError
from smtpcore._lines import ReceiveBuffer
from smtpcore._numbers import is_digits, parse_number
from smtpcore.address import AddressError, parse_mailbox
from smtpcore.pop3 import BadCommand as POP3BadCommand
from smtpcore.pop3 import Ok, parse_listing, parse_stat, parse_uid_listing
from smtpcore.pop3 import ServerConnection as POP3Server
from smtpcore.smtp import (
    BadCommand,
    ClientConnection,
    Ehlo,
    EnhancedStatus,
    Mail,
    Reply,
    ServerExtensions,
)
from smtpcore.smtp._replies import ReplyParser

NOT_ASCII_DIGITS = [
    "\u00b2",
    "\u0661\u0662",
    "\uff11\uff12",
    "1\u00b2",
    " 12",
    "12 ",
    "1_2",
    "+1",
    "-1",
    "",
    "0x1",
    "\u0661",
]
HUGE = "9" * 5000  # int() refuses more than 4300 digits with ValueError


@pytest.mark.parametrize("text", [*NOT_ASCII_DIGITS, HUGE])
def test_the_helper_takes_ascii_digits_only(text: str) -> None:
    assert parse_number(text, max_digits=20) is None


def test_the_helper_reads_ascii_digits() -> None:
    assert parse_number("0012", max_digits=4) == 12
    assert parse_number("12345", max_digits=4) is None
    assert is_digits("0123456789")
    assert not is_digits("\u0661")


@pytest.mark.parametrize("value", ["\u00b2", "\u0661\u0662", "\uff11\uff12", "1_0", "9" * 21])
def test_smtp_size_parameter(value: str) -> None:
    line = f"MAIL FROM:<a@c.example> SIZE={value}\r\n".encode()
    events, out = run(greeted(), EHLO + line)
    assert isinstance(events[-1], BadCommand)
    assert codes(out)[-1] == "501 5.5.4"


@pytest.mark.parametrize("size", ["\u00b2", "\u0661\u0662", "\uff11\uff12", "1_2", "+12"])
def test_smtp_bdat_size(size: str) -> None:
    """No size, so no one knows where the chunk ends: 421 and the end (RFC 3030 §2)."""
    conn = greeted()
    run(conn, ENVELOPE)
    with pytest.raises(RemoteProtocolError) as raised:
        run(conn, f"BDAT {size} LAST\r\n".encode())
    assert isinstance(raised.value.reply_hint, Reply)
    assert raised.value.reply_hint.code == 421


def test_enhanced_status_codes_are_ascii() -> None:
    with pytest.raises(ValueError):
        EnhancedStatus.parse("5.\u0661.1")
    with pytest.raises(LocalProtocolError):
        Reply(550, "no", "5.\u0661.1")
    buffer = ReceiveBuffer()
    buffer.receive("550 5.\u0661.1 no such user\r\n".encode())
    answer = ReplyParser().next_reply(buffer, enhanced=True)
    assert answer is not None and answer.status is None
    assert answer.lines == ("5.\u0661.1 no such user",)


@pytest.mark.parametrize("limit", ["\u0661\u0662", "\u00b2", HUGE])
def test_smtp_client_ehlo_size(limit: str) -> None:
    assert ServerExtensions.from_reply(Reply(250, ["mx", f"SIZE {limit}"])).size is None


def test_smtp_client_refuses_a_size_parameter_it_cannot_write() -> None:
    conn = ClientConnection("client.abc.example")
    conn.receive_data(b"220 mx\r\n")
    conn.next_event()
    conn.send(Ehlo("client.abc.example"))
    conn.receive_data(b"250-mx\r\n250 SIZE 1000\r\n")
    conn.next_event()
    sender = parse_mailbox("a@c.example")
    for value in ("\u0661\u0662", HUGE):
        with pytest.raises(LocalProtocolError):
            conn.send(Mail(sender, {"SIZE": value}))


@pytest.mark.parametrize("number", ["\u0661", "\u00b2", "\uff11", "1_0", "99999999999"])
def test_pop3_message_numbers(number: str) -> None:
    conn = POP3Server("pop.pqr.example")
    conn.next_event()
    conn.send(Ok("ready"))
    conn.receive_data(b"USER a\r\n")
    conn.next_event()
    conn.send(Ok("go on"))
    conn.receive_data(b"PASS b\r\n")
    conn.next_event()
    conn.send(Ok("in"))
    conn.receive_data(f"RETR {number}\r\n".encode())
    event = conn.next_event()
    assert isinstance(event, POP3BadCommand)
    assert event.response.text.startswith("Invalid message number")


@pytest.mark.parametrize("text", ["\u0661 20", "1 \u0662\u0660", f"1 {HUGE}", f"{HUGE} 1"])
def test_pop3_client_counts(text: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_stat(text)
    with pytest.raises(RemoteProtocolError):
        parse_listing(text + "\r\n")


def test_pop3_client_uid_listing_numbers() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_uid_listing(f"{HUGE} abc\r\n")


def test_all_numeric_top_label_is_ascii_digits() -> None:
    with pytest.raises(AddressError):
        parse_mailbox("a@b.123")
