"""Command lines into events and back (RFC 1939 §3-§7, RFC 2449, RFC 5034 §4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore.pop3 import (
    MAX_MESSAGE_NUMBER,
    Apop,
    Auth,
    AuthMechanisms,
    AuthResponse,
    Capa,
    Command,
    Dele,
    List,
    Noop,
    Pass,
    Quit,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
)
from smtpcore.pop3._commands import (
    KEYWORDS,
    CommandSyntaxError,
    format_command,
    parse_auth_response,
    parse_command_line,
)
from smtpcore.testing import strategies as sst

GOOD = [
    ("USER mrose", User("mrose")),
    ("user mrose", User("mrose")),
    ("USER  mrose ", User("mrose")),
    ("USER john smith", User("john smith")),
    ("PASS secret", Pass("secret")),
    ("PASS two words ", Pass("two words ")),
    ("PASS  leading", Pass(" leading")),
    (
        "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
        Apop("mrose", "c4c9334bac560ecc979e58001b3e22fb"),
    ),
    (
        "APOP mrose C4C9334BAC560ECC979E58001B3E22FB",
        Apop("mrose", "c4c9334bac560ecc979e58001b3e22fb"),
    ),
    # The digest is always the last word, so a name with a space in it is read
    # whole, as mpop and fetchmail send it (our own client never does).
    (
        "APOP ann smith c4c9334bac560ecc979e58001b3e22fb",
        Apop("ann smith", "c4c9334bac560ecc979e58001b3e22fb"),
    ),
    ("AUTH", AuthMechanisms()),  # the mechanisms, as Dovecot answers it
    ("AUTH PLAIN", Auth("PLAIN")),
    ("auth plain", Auth("PLAIN")),
    ("AUTH PLAIN =", Auth("PLAIN", b"")),
    ("AUTH PLAIN AHRlc3QAdGVzdA==", Auth("PLAIN", b"\x00test\x00test")),
    ("CAPA", Capa()),
    ("STLS", Stls()),
    ("UTF8", Utf8()),
    ("STAT", Stat()),
    ("stat ", Stat()),
    ("LIST", List()),
    ("LIST 2", List(2)),
    ("LIST 02", List(2)),
    (f"LIST {MAX_MESSAGE_NUMBER}", List(MAX_MESSAGE_NUMBER)),
    ("RETR 1", Retr(1)),
    ("DELE 12", Dele(12)),
    ("NOOP", Noop()),
    ("RSET", Rset()),
    ("TOP 1 0", Top(1, 0)),
    ("TOP 10 20", Top(10, 20)),
    # Runs of spaces before an argument are read as one, as Dovecot 2.3 reads them.
    ("RETR  1", Retr(1)),
    ("TOP 1  0", Top(1, 0)),
    ("LIST  ", List()),
    ("UIDL", Uidl()),
    ("UIDL 3", Uidl(3)),
    ("QUIT", Quit()),
]


@pytest.mark.parametrize(("line", "event"), GOOD, ids=[line for line, _ in GOOD])
def test_command_lines_parse(line: str, event: Command) -> None:
    assert parse_command_line(line, KEYWORDS) == event


BAD = [
    ("", "Unknown command"),
    ("HELO x", "Unknown command"),
    ("RETRIEVE 1", "Unknown command"),
    ("USER", "Syntax"),
    ("USER  ", "Syntax"),
    ("PASS", "Syntax"),
    ("PASS ", "Syntax"),
    ("APOP mrose", "Syntax"),
    ("APOP c4c9334bac560ecc979e58001b3e22fb", "Syntax"),
    ("APOP mrose xyz", "Syntax"),
    ("AUTH PLAIN a b", "Syntax"),
    ("AUTH PLAIN !!!", "Invalid base64"),
    ("AUTH PLAIN AHRlc3QAdGVzdA", "Invalid base64"),
    ("AUTH NOT/A/MECH", "Unsupported"),
    ("STAT 1", "Syntax"),
    ("CAPA x", "Syntax"),
    ("RETR", "Syntax"),
    ("RETR 0", "Invalid message number"),
    ("RETR -1", "Invalid message number"),
    ("RETR +1", "Invalid message number"),
    ("RETR one", "Invalid message number"),
    ("RETR 1.5", "Invalid message number"),
    ("RETR \u0661", "Invalid message number"),  # an Arabic-Indic digit is not a POP3 digit
    (f"RETR {MAX_MESSAGE_NUMBER + 1}", "Invalid message number"),
    ("RETR 99999999999999999999", "Invalid message number"),
    ("RETR 1 2", "Syntax"),
    ("DELE", "Syntax"),
    ("DELE 0", "Invalid message number"),
    ("LIST 0", "Invalid message number"),
    ("LIST 1 2", "Syntax"),
    ("UIDL x", "Invalid message number"),
    ("TOP 1", "Syntax"),
    ("TOP 1 -1", "Invalid line count"),
    ("TOP 1 \u0661", "Invalid line count"),
    ("TOP 1 1" + "0" * 300, "Invalid line count"),
    ("TOP 0 1", "Invalid message number"),
    ("TOP 1 2 3", "Syntax"),
    ("USER a\x00b", "Control character"),
    ("PASS a\x1bb", "Control character"),
    # Arguments are separated by the ASCII space alone (RFC 1939 §3): a tab or a
    # non-ASCII space is a character of the argument, which is then not a number.
    ("RETR \t1", "Invalid message number"),
    ("RETR 1\t", "Invalid message number"),
    ("RETR 1\u00a0", "Invalid message number"),
    ("DELE \u30001", "Invalid message number"),
    ("LIST \u2028", "Invalid message number"),
    ("UIDL 1\x85", "Invalid message number"),
    ("TOP 1\u00a00", "Syntax"),
    ("TOP 1 0\u2029", "Invalid line count"),
    ("AUTH PLAIN\u00a0AHRlc3QAdGVzdA==", "Unsupported"),
    ("AUTH PLAIN AHRlc3QAdGVzdA==\u00a0", "Invalid base64"),
    ("USER mrose\u00a0", "Syntax"),
    ("USER \u3000mrose", "Syntax"),
    ("APOP mrose\u00a0 c4c9334bac560ecc979e58001b3e22fb", "Syntax"),
]


@pytest.mark.parametrize(
    "count", [f"{MAX_MESSAGE_NUMBER + 1}", "99999999999999999999", "0" * 30 + "7"]
)
def test_a_top_line_count_past_the_largest_asks_for_the_whole_message(count: str) -> None:
    """TOP's ``n`` is any non-negative number (RFC 1939 §7): past the body's lines, the
    whole message. One past 2**31 - 1 was refused as a bad command (enough of them
    ended the session), where Dovecot sends the message."""
    event = parse_command_line(f"TOP 1 {count}", KEYWORDS)
    assert event == Top(1, min(int(count), MAX_MESSAGE_NUMBER))


@pytest.mark.parametrize(("line", "why"), BAD, ids=[repr(line) for line, _ in BAD])
def test_bad_command_lines_carry_an_err(line: str, why: str) -> None:
    with pytest.raises(CommandSyntaxError) as info:
        parse_command_line(line, KEYWORDS)
    assert why in info.value.response.text


@pytest.mark.parametrize(("line", "event"), GOOD, ids=[line for line, _ in GOOD])
def test_formatting_parses_back(line: str, event: Command) -> None:
    wire = format_command(event)
    assert wire.endswith(b"\r\n")
    assert parse_command_line(wire[:-2].decode(), KEYWORDS) == event


@given(st.binary(max_size=300), st.booleans())
def test_auth_responses_round_trip(data: bytes, cancel: bool) -> None:
    event = AuthResponse(b"" if cancel else data, cancel=cancel)
    wire = format_command(event)
    assert parse_auth_response(wire[:-2].decode()) == event


def test_empty_auth_response_is_an_empty_line() -> None:
    """RFC 5034 §4: an empty response is an empty line (and ``=`` is accepted too)."""
    assert format_command(AuthResponse(b"")) == b"\r\n"
    assert parse_auth_response("") == AuthResponse(b"")
    assert parse_auth_response("=") == AuthResponse(b"")
    assert parse_auth_response("*") == AuthResponse(cancel=True)


def _slots(event: Command) -> list[str]:
    """The wire form of ``event`` cut where the machine separates its words: USER's
    name is the rest of the line, APOP's digest its last word."""
    line = format_command(event)[:-2].decode()
    if isinstance(event, User):
        return line.split(" ", 1)
    if isinstance(event, Apop):
        keyword, rest = line.split(" ", 1)
        return [keyword, *rest.rsplit(" ", 1)]
    return line.split(" ")


@given(
    sst.pop3_commands(login=True, capabilities=sst.POP3_CAPABILITIES | {"UTF8"}).filter(
        lambda event: not isinstance(event, Pass)  # spaces of any kind are the password's
    ),
    sst.other_spaces(),
    st.data(),
)
def test_a_space_other_than_the_ascii_one_is_no_separator(
    event: Command, space: str, data: st.DataObject
) -> None:
    """RFC 1939 §3 (RFC 2449 §3, RFC 5034 §4): keywords and arguments are separated
    by the SPACE character. ``str.split()`` also took a tab, U+00A0 or U+3000 for one,
    so ``RETR 1\\u00a0`` was ``RETR 1`` here and a bad command to a proxy in front."""
    slots = _slots(event)
    if len(slots) == 1:  # no argument: the keyword's slot
        slots[0] += space
    else:
        slot = data.draw(st.integers(1, len(slots) - 1), label="argument")
        where = data.draw(st.sampled_from(["before", "after", "instead of the space before"]))
        if where == "before":
            slots[slot] = space + slots[slot]
        elif where == "after":
            slots[slot] += space
        else:
            slots[slot - 1 : slot + 1] = [slots[slot - 1] + space + slots[slot]]
    with pytest.raises(CommandSyntaxError):
        parse_command_line(" ".join(slots), KEYWORDS)
