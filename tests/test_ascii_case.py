"""Protocol words are case-insensitive in ASCII alone (RFC 5321 §2.4, RFC 1939 §3).

``str.upper`` folds the dotless i (U+0131) to ``I``, the long s (U+017F) to ``S``,
and a regex under IGNORECASE matches the Kelvin sign (U+212A) for ``K``: a line a
filter in front reads as unknown must not read here as a known command.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore import NEED_DATA, LocalProtocolError, RemoteProtocolError, pop3
from smtpcore._words import ascii_upper
from smtpcore.smtp import ClientConnection, Ehlo, Reply, ServerConnection, Xclient, Xforward
from smtpcore.testing import run_pop3_server, run_server

DOTLESS_I = "\u0131"
LONG_S = "\u017f"
KELVIN = "\u212a"


@given(st.text())
def test_ascii_upper_upper_cases_ascii_letters_alone(text: str) -> None:
    expected = "".join(c.upper() if "a" <= c <= "z" else c for c in text)
    assert ascii_upper(text) == expected


def smtp_replies(*lines: str, starttls: bool = False, dsn: bool = False) -> list[str]:
    conn = ServerConnection("mx.test", starttls=starttls, dsn=dsn)
    conn.send(Reply(220, "mx.test ESMTP"))
    data = "".join(line + "\r\n" for line in ("EHLO client.test", *lines)).encode()
    _, out = run_server(conn, data)
    return out.decode().split("\r\n")


@pytest.mark.parametrize("verb", [f"MA{DOTLESS_I}L FROM:<a@abc.example>", f"{LONG_S}TARTTLS"])
def test_a_verb_with_a_letter_that_folds_to_ascii_is_unknown(verb: str) -> None:
    assert smtp_replies(verb, starttls=True)[-2].startswith("500 5.5.2")


@pytest.mark.parametrize(
    ("mail", "rcpt"),
    [
        (f"MAIL FROM:<a@abc.example> SMTPUTF8 BODY=8B{DOTLESS_I}TMIME", None),
        ("MAIL FROM:<a@abc.example> SMTPUTF8", f"RCPT TO:<b@pqr.example> NOTIFY={LONG_S}UCCESS"),
        (f"MAIL FROM:<a@abc.example> SMTPUTF8 RET=HDR{LONG_S}", None),
    ],
)
def test_a_parameter_value_with_a_letter_that_folds_to_ascii_is_refused(
    mail: str, rcpt: str | None
) -> None:
    lines = [mail] if rcpt is None else [mail, rcpt]
    replies = smtp_replies(*lines, dsn=True)
    assert replies[-2].startswith("501 5.5.4"), replies


def pop3_replies(*lines: str) -> list[str]:
    server = pop3.ServerConnection("mx.test")
    server.send(pop3.Ok("ready"))
    _, out = run_pop3_server(server, "".join(line + "\r\n" for line in lines).encode())
    return out.decode().split("\r\n")


@pytest.mark.parametrize("command", [f"QU{DOTLESS_I}T", f"{LONG_S}TAT"])
def test_a_pop3_keyword_with_a_letter_that_folds_to_ascii_is_unknown(command: str) -> None:
    replies = pop3_replies("USER jane", "PASS pw", command, "NOOP")
    assert replies[2].startswith("-ERR"), replies
    assert replies[3] == "+OK"  # still in the session: nothing was quit


def test_a_pop3_status_with_a_kelvin_sign_is_not_ok() -> None:
    client = pop3.ClientConnection("mx.test")
    client.receive_data(f"+O{KELVIN} ready\r\n".encode())
    with pytest.raises(RemoteProtocolError):
        while client.next_event() is not NEED_DATA:
            pass


def client_after_ehlo(*keywords: str) -> ClientConnection:
    client = ClientConnection("filter.pqr.example")
    client.receive_data(b"220 mx ESMTP\r\n")
    client.next_event()
    client.send(Ehlo("filter.pqr.example"))
    lines = ["mx", *keywords]
    client.receive_data("".join(f"250-{line}\r\n" for line in lines[:-1]).encode())
    client.receive_data(f"250 {lines[-1]}\r\n".encode())
    client.next_event()
    return client


def test_a_forwarding_attribute_a_server_names_with_a_letter_that_folds_is_not_announced() -> None:
    client = client_after_ehlo(f"XCLIENT ADDR LOG{DOTLESS_I}N", f"XFORWARD ADDR {LONG_S}OURCE")
    assert client.extensions.xclient == {"ADDR", f"LOG{DOTLESS_I}N"}
    assert client.extensions.xforward == {"ADDR", f"{LONG_S}OURCE"}
    with pytest.raises(LocalProtocolError, match="did not announce XCLIENT LOGIN"):
        client.send(Xclient(addr="192.0.2.1", login="john"))
    with pytest.raises(LocalProtocolError, match="did not announce XFORWARD SOURCE"):
        client.send(Xforward(addr="192.0.2.1", source="REMOTE"))
    only = Xclient(addr="192.0.2.1", login="john").only(client.extensions.xclient)
    assert only == Xclient(addr="192.0.2.1")  # what a client sends: not the LOGIN
    assert Xforward(source="REMOTE").only(client.extensions.xforward) is None
