"""POP3 events: what they accept, what they refuse, and how they write themselves."""

from __future__ import annotations

from typing import Any

import pytest

from smtpcore import LocalProtocolError
from smtpcore.pop3 import (
    MAX_MESSAGE_NUMBER,
    Apop,
    Auth,
    AuthResponse,
    Capa,
    Continue,
    Dele,
    Err,
    List,
    Noop,
    Ok,
    Pass,
    Quit,
    ResponseData,
    Retr,
    Rset,
    Stat,
    Stls,
    Top,
    Uidl,
    User,
    Utf8,
)
from smtpcore.pop3._responses import parse_status_line


@pytest.mark.parametrize(
    "build",
    [
        lambda: User(""),
        lambda: User("bob\r\nDELE 1"),
        lambda: User(" bob"),
        lambda: User("bob\u00a0"),  # a Unicode space at an edge: str.strip() drops it
        lambda: Apop("\u3000mrose", "c4c9334bac560ecc979e58001b3e22fb"),
        lambda: User("bob\n"),
        lambda: Pass(""),
        lambda: Pass("x\r\nQUIT"),
        lambda: Pass("a\x00b"),
        lambda: Apop("mrose", "C4C9334BAC560ECC979E58001B3E22FB"),
        lambda: Apop("mrose", "c4c9334bac560ecc979e58001b3e22f"),
        lambda: Apop("", "c4c9334bac560ecc979e58001b3e22fb"),
        lambda: Auth("PLAIN X"),
        lambda: Auth("A" * 21),
        lambda: Auth("PLAIN", "text"),  # type: ignore[arg-type]
        lambda: AuthResponse(b"x", cancel=True),
        lambda: AuthResponse("x"),  # type: ignore[arg-type]
        lambda: List(0),
        lambda: List(-1),
        lambda: List(True),
        lambda: Uidl(MAX_MESSAGE_NUMBER + 1),
        lambda: Retr(0),
        lambda: Retr("1"),  # type: ignore[arg-type]
        lambda: Dele(1.0),  # type: ignore[arg-type]
        lambda: Top(1, -1),
        lambda: Top(0, 0),
        lambda: Ok("a\r\n+OK injected"),
        lambda: Ok("bell\x07"),
        lambda: Err("a\nb"),
        lambda: Ok("maildrop " + b"\xff".decode("utf-8", "surrogateescape")),
        lambda: Err("no such message \udcff", code="SYS/PERM"),
        lambda: User("\ud800bob"),
        lambda: Err("x", code="IN USE"),
        lambda: Err("x", code="[IN-USE]"),
        lambda: Err("x", code=""),
        lambda: Err("x", code="SYS/"),
        lambda: Continue("x"),  # type: ignore[arg-type]
        lambda: ResponseData("text"),  # type: ignore[arg-type]
    ],
)
def test_events_refuse_what_would_serialize_wrongly(build: Any) -> None:
    with pytest.raises(LocalProtocolError):
        build()


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (Ok(), b"+OK\r\n"),
        (Ok("2 320"), b"+OK 2 320\r\n"),
        (Ok("tab\tok"), b"+OK tab\tok\r\n"),
        (Ok("gr\u00fc\u00df"), "+OK gr\u00fc\u00df\r\n".encode()),
        (Err(), b"-ERR\r\n"),
        (Err("no such message"), b"-ERR no such message\r\n"),
        (Err("locked", code="IN-USE"), b"-ERR [IN-USE] locked\r\n"),
        (Err(code="SYS/TEMP"), b"-ERR [SYS/TEMP]\r\n"),
        (Err("bad", code="AUTH"), b"-ERR [AUTH] bad\r\n"),
        (Continue(), b"+ \r\n"),
        (Continue(b"\x00hi"), b"+ AGhp\r\n"),
    ],
)
def test_responses_write_themselves(event: Ok | Err | Continue, wire: bytes) -> None:
    assert event.to_bytes() == wire


class _SaysPrintable(str):
    """A str that claims to be printable whatever it holds."""

    def isprintable(self) -> bool:
        return True


@pytest.mark.parametrize("build", [Ok, Err])
def test_a_str_subclass_cannot_talk_its_way_past_the_text_check(build: Any) -> None:
    """The everyday path trusts ``str.isprintable`` only on a real str: a subclass
    claiming printable text still has its CR LF refused."""
    with pytest.raises(LocalProtocolError):
        build(_SaysPrintable("fine\r\n+OK injected"))


@pytest.mark.parametrize("build", [Ok, Err])
def test_a_lone_surrogate_in_response_text_is_refused_when_built(build: Any) -> None:
    """UTF-8 has no form for it: the response was built, and ``to_bytes`` (the server
    machine's ``send``) raised ``UnicodeEncodeError`` in its place."""
    with pytest.raises(LocalProtocolError, match="surrogate"):
        build("cannot open " + b"\xff".decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize(
    ("build", "status"),
    [(Ok, b"+OK"), (Err, b"-ERR"), (lambda text: Err(text, code="SYS/PERM"), b"-ERR [SYS/PERM]")],
)
@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("x\x9b31m", b"x\\x9b31m"),  # C1: the 8-bit CSI
        ("a\x85b", b"a\\x85b"),  # C1: NEL
        ("a\u2028+OK b", b"a\\u2028+OK b"),  # the line separator
        ("no <n\u200eobody@pqr.example>", b"no <n\\u200eobody@pqr.example>"),  # LRM
        ("user \u202eelgoog", b"user \\u202eelgoog"),  # a bidi override
    ],
)
def test_status_text_unsafe_for_display_is_written_escaped(
    build: Any, status: bytes, text: str, written: bytes
) -> None:
    """RFC 5198 §2, as for an SMTP reply: a C1 control, a format character or a line or
    paragraph separator a server quotes (a user name, an address) is escaped as a
    Python literal writes it, not refused, and never reaches the wire raw; a client
    reads back the response built."""
    response = build(text)
    wire = response.to_bytes()
    assert wire == status + b" " + written + b"\r\n"
    assert response.text == written.decode("ascii")
    assert parse_status_line(wire.removesuffix(b"\r\n")) == response


@pytest.mark.parametrize("build", [Ok, Err])
@pytest.mark.parametrize("text", ["", "2 messages (320 octets)", "caf\u00e9 \u65e5\u672c"])
def test_printable_status_text_is_not_passed_to_the_escape(
    build: Any, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every status line is built on the everyday path: printable text, which holds
    nothing to escape, is tested inline (``str.isprintable``, in C) and costs no call
    of the escape."""
    import smtpcore.pop3._events as events

    def escape(response: object) -> None:
        raise AssertionError(f"printable text passed to the escape: {text!r}")

    monkeypatch.setattr(events, "_escape_text", escape)
    assert build(text).text == text


def test_err_splits_a_leading_code_from_its_text() -> None:
    assert Err("[IN-USE] maildrop locked") == Err("maildrop locked", code="IN-USE")
    assert Err("[LOGIN-DELAY]") == Err("", code="LOGIN-DELAY")
    assert Err("[SYS/PERM] gone").code == "SYS/PERM"
    # Not a code: no closing bracket, or text glued to it.
    assert Err("[oops").code is None
    assert Err("[A]b").code is None


@pytest.mark.parametrize(
    ("command", "multiline"),
    [
        (Capa(), True),
        (Retr(1), True),
        (Top(1, 0), True),
        (List(), True),
        (List(3), False),
        (Uidl(), True),
        (Uidl(3), False),
        (Stat(), False),
        (Dele(1), False),
        (Noop(), False),
        (Rset(), False),
        (Quit(), False),
        (Stls(), False),
        (Utf8(), False),
        (User("u"), False),
        (Pass("p"), False),
        (Auth("PLAIN"), False),
    ],
)
def test_which_commands_have_multiline_answers(command: Any, multiline: bool) -> None:
    """RFC 1939 §3, §5, §7 and RFC 2449 §5: the client knows from the command alone."""
    assert command.multiline is multiline


def test_mechanism_names_are_upper_cased() -> None:
    assert Auth("scram-sha-256") == Auth("SCRAM-SHA-256")


def test_password_stays_out_of_repr() -> None:
    assert "hunter2" not in repr(Pass("hunter2"))


def test_sasl_secrets_stay_out_of_repr() -> None:
    """The initial response and the answers showed in the repr, password and all; they
    are hidden as PASS's password is, with the one helper. The fields and equality keep
    them."""
    response = b"\0john@abc.example\0hunter2"
    assert repr(Pass("hunter2")) == "Pass(password=<hidden>)"
    assert repr(Auth("PLAIN", response)) == "Auth(mechanism='PLAIN', initial_response=<hidden>)"
    assert repr(AuthResponse(response)) == "AuthResponse(data=<hidden>, cancel=False)"
    assert repr(Auth("CRAM-MD5")) == "Auth(mechanism='CRAM-MD5', initial_response=None)"
    assert AuthResponse(response).data == response
    assert AuthResponse(response) == AuthResponse(response) != AuthResponse(b"x")


@pytest.mark.parametrize("password", ["hunter2\r", "hunter2\x1b", "hunter2\x7f"])
def test_a_password_with_a_control_character_is_not_quoted(password: str) -> None:
    """The error quoted the password whole (and ``fetch`` printed it): it names the
    fault alone. A user name, no secret, is still quoted."""
    with pytest.raises(
        LocalProtocolError, match="PASS password holds a control character"
    ) as info:
        Pass(password)
    assert "hunter2" not in str(info.value)
    with pytest.raises(LocalProtocolError, match=r"'john\\r'"):
        User("john\r")


def test_events_are_frozen() -> None:
    event = Retr(1)
    with pytest.raises(AttributeError):
        event.message = 2  # type: ignore[misc]
