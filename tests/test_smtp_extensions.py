"""Extensions as entries (smtp/_ext/): one place each, read by every role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_helpers import EHLO, codes, greeted, run
from smtpcore import PAUSED, LocalProtocolError
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    Bdat,
    ClientConnection,
    Data,
    Ehlo,
    Extension,
    Mail,
    Noop,
    Parameter,
    ParameterError,
    Rcpt,
    Reply,
    Requirement,
    ServerConnection,
    ServerExtensions,
    StartTls,
)
from smtpcore.smtp._ext import BUILTIN, KNOWN, owner_of_parameter, owner_of_verb

HELO = b"HELO client.abc.example\r\n"
ALL_ON = {
    "dsn": True,
    "starttls": True,
    "binarymime": True,
    "auth_mechanisms": ["CRAM-MD5"],
    "limits": True,
    "requiretls": True,
    "xclient": True,
    "xforward": True,
    "trusted_forwarder": True,
}


# -- the entries -----------------------------------------------------------------------


def test_every_parameter_and_command_has_one_owner() -> None:
    keywords = [p.keyword for e in KNOWN for p in (*e.mail_parameters, *e.rcpt_parameters)]
    assert len(keywords) == len(set(keywords))
    chunking = owner_of_verb("bdat")
    assert chunking is not None and chunking.keyword == "CHUNKING"
    dsn = owner_of_parameter("orcpt")
    assert dsn is not None and dsn[0].keyword == "DSN"


def test_every_builtin_entry_is_an_option_of_the_server() -> None:
    conn = greeted(**ALL_ON)
    for entry in BUILTIN:
        assert entry.option is not None and hasattr(conn, entry.option), entry.keyword


def test_the_ehlo_reply_lists_every_entry_switched_on() -> None:
    conn = greeted(**ALL_ON)
    _, out = run(conn, EHLO)
    listed = [line[4:].split(" ")[0] for line in out.decode().splitlines()[1:]]
    # REQUIRETLS needs TLS, STARTTLS its absence: see the REQUIRETLS tests below.
    assert listed == [entry.keyword for entry in BUILTIN if entry.keyword != "REQUIRETLS"]


# -- commands of an extension exist only while it is in force ----------------------------


EXTENSION_LINES = [b"BDAT 1 LAST\r\nx", b"STARTTLS\r\n", b"AUTH CRAM-MD5\r\n", b"AUTH\r\n"]


@pytest.mark.parametrize("line", EXTENSION_LINES)
def test_extension_commands_need_ehlo_after_helo(line: bytes) -> None:
    """A command of an extension the server offers, in a session opened with HELO, is
    out of sequence (RFC 5321 §4.3.2): 503, as Postfix answers AUTH before EHLO."""
    conn = greeted(**ALL_ON)
    _, out = run(conn, HELO + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n" + line)
    assert out.endswith(b"503 5.5.1 Send EHLO first\r\n")
    assert not {"BDAT", "STARTTLS", "AUTH"} & set(conn.commands())


@pytest.mark.parametrize("line", EXTENSION_LINES)
def test_extension_commands_need_ehlo_before_any_hello(line: bytes) -> None:
    """RFC 5321 §4.1.4, RFC 4954 §4: the server knows AUTH (STARTTLS, BDAT) once it offers
    it; before EHLO it is a bad sequence (503 5.5.1), not an unknown command (500). Such
    a line is no unknown command toward ``max_bad_commands`` either, and a BDAT's chunk
    is still skipped."""
    conn = greeted(**ALL_ON, max_bad_commands=2)
    _, out = run(conn, line + line + b"NOOP\r\n")
    assert codes(out) == ["503 5.5.1", "503 5.5.1", "250 2.0.0"]
    _, lmtp = run(greeted(lmtp=True, starttls=True), b"STARTTLS\r\n")
    assert lmtp == b"503 5.5.1 Send LHLO first\r\n"


@pytest.mark.parametrize(
    ("options", "line"),
    [
        ({}, b"STARTTLS\r\n"),  # not offered at all
        ({}, b"AUTH PLAIN\r\n"),
        ({"chunking": False}, b"BDAT 1 LAST\r\nx"),
        ({"xforward": True}, b"XFORWARD ADDR=192.0.2.1\r\n"),  # a client not trusted
    ],
)
def test_commands_no_ehlo_would_offer_stay_unknown(options: dict[str, Any], line: bytes) -> None:
    _, out = run(greeted(**options), line)
    assert codes(out) == ["500 5.5.2"]


def test_a_command_that_needs_ehlo_after_a_554_greeting_gets_no_service() -> None:
    conn = ServerConnection("mx.pqr.example", auth_mechanisms=["CRAM-MD5"])
    conn.send(Reply(554, "mx.pqr.example No service here"))
    _, out = run(conn, b"AUTH CRAM-MD5\r\n")
    assert out == b"503 5.5.1 No service here; send QUIT\r\n"


def test_starttls_after_tls_before_ehlo_stays_unknown() -> None:
    """After the handshake STARTTLS is offered by no EHLO (RFC 3207 §4.2)."""
    conn = greeted(starttls=True)
    run(conn, EHLO + b"STARTTLS\r\n")
    conn.tls_started()
    _, out = run(conn, b"STARTTLS\r\n")
    assert codes(out) == ["500 5.5.2"]


def test_commands_follow_what_is_in_force() -> None:
    conn = greeted(**ALL_ON)
    assert not {"BDAT", "STARTTLS", "AUTH"} & set(conn.commands())
    run(conn, EHLO)
    assert {"BDAT", "STARTTLS", "AUTH"} <= set(conn.commands())
    run(conn, b"STARTTLS\r\n")
    conn.tls_started()
    run(conn, EHLO)
    assert "STARTTLS" not in conn.commands() and "BDAT" in conn.commands()


# -- extra_extensions lists nothing the machine then refuses ----------------------------


@pytest.mark.parametrize("line", ["CHUNKING", "dsn", "SIZE 100", "AUTH PLAIN"])
def test_extra_extensions_may_not_name_a_builtin(line: str) -> None:
    with pytest.raises(ValueError, match="built in"):
        greeted(extra_extensions=[line])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("auth=plain", "EHLO keyword"),  # clients read AUTH=PLAIN as AUTH, then get 500
        ("X-FOO a\r\n250 AUTH PLAIN", "EHLO parameters"),
        ("X-FOO  two-spaces", "EHLO parameters"),
        ("X-FOO é", "EHLO parameters"),
        (Extension("XFOO", "", "a command", verbs=("XFOO",)), "reads no command"),
        (Extension("X-BDAT", "", "another's command", verbs=("BDAT",)), "reads no command"),
        (
            Extension(
                "X-SIZE", "", "another's parameter", mail_parameters=(Parameter("SIZE", str, str),)
            ),
            "SIZE parameter is SIZE's",
        ),
    ],
)
def test_extra_extensions_may_not_list_what_the_machine_refuses(
    extra: str | Extension, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        greeted(extra_extensions=[extra])


def test_one_str_for_the_extra_extensions_is_a_type_error() -> None:
    """``extra_extensions="HELP"`` would list H, E, L and P, each a valid keyword."""
    with pytest.raises(TypeError, match=r"extra_extensions=\['HELP'\]"):
        greeted(extra_extensions="HELP")
    conn = greeted()
    with pytest.raises(TypeError, match="not one str"):
        conn.extra_extensions = "HELP"  # type: ignore[assignment]  # the mistake tested
    assert conn.extra_extensions == ()


def test_extra_extensions_may_not_name_one_thing_twice() -> None:
    flag = Parameter("X-FLAG", str, str)
    one = Extension("X-ONE", "", "one", mail_parameters=(flag,))
    other = Extension("X-OTHER", "", "other", rcpt_parameters=(flag,))
    with pytest.raises(ValueError, match="X-FLAG twice"):
        greeted(extra_extensions=[one, other])
    with pytest.raises(ValueError, match="X-ONE twice"):
        greeted(extra_extensions=[one, "x-one 2"])


def _priority(value: str | None) -> int:
    if value is None or value not in {str(n) for n in range(-9, 10)}:
        raise ParameterError("MT-PRIORITY is -9 to 9")
    return int(value)


def test_an_extra_entry_brings_its_parameters() -> None:
    priority = Extension(
        "MT-PRIORITY",
        "RFC 6710",
        "priorities",
        arguments=lambda facts: "MIXER",
        mail_parameters=(Parameter("MT-PRIORITY", _priority, str),),
    )
    conn = greeted(extra_extensions=[priority, "HELP"])
    _, out = run(conn, EHLO + b"MAIL FROM:<a@b.example> MT-PRIORITY=3\r\nRSET\r\n")
    assert b"250-MT-PRIORITY MIXER\r\n" in out and b"250 HELP\r\n" in out
    assert codes(out)[-2:] == ["250 2.1.0", "250 2.0.0"]
    _, out = run(conn, b"MAIL FROM:<a@b.example> MT-PRIORITY=12\r\n")
    assert codes(out) == ["501 5.5.4"]
    _, out = run(conn, b"HELO a.example\r\nMAIL FROM:<a@b.example> MT-PRIORITY=3\r\n")
    assert codes(out)[-1] == "555 5.5.4"


def test_a_parsers_value_error_or_type_error_refuses_the_clients_value() -> None:
    """``int`` is a parser: what it refuses (``abc``, a bare keyword) is the client's bad
    value, ``501 5.5.4``, and the session goes on."""
    parameter = Parameter("X-PRIO", int, str)  # type: ignore[arg-type]  # int as users write it
    priority = Extension("X-PRIO", "", "priorities", mail_parameters=(parameter,))
    conn = greeted(extra_extensions=[priority])
    _, out = run(conn, EHLO + b"MAIL FROM:<a@b.example> X-PRIO=abc\r\n")
    assert codes(out)[-1] == "501 5.5.4"
    _, out = run(conn, b"MAIL FROM:<a@b.example> X-PRIO\r\nMAIL FROM:<a@b.example> X-PRIO=3\r\n")
    assert codes(out) == ["501 5.5.4", "250 2.1.0"]


def _broken(exc: Exception) -> Callable[..., Any]:
    def broken(*args: object) -> Any:
        raise exc

    return broken


_UNWELL = Requirement("a broken rule", _broken(RuntimeError("the rule's bug")), Reply(530, "no"))


@pytest.mark.parametrize(
    ("parameter", "cause"),
    [
        (Parameter("X-PRIO", _broken(LookupError("parse's bug")), str), LookupError),
        (
            Parameter("X-PRIO", str, str, check=_broken(ZeroDivisionError("check's bug"))),
            ZeroDivisionError,
        ),
        (
            Parameter("X-PRIO", str, str, check=lambda facts, value: "no"),  # type: ignore[arg-type, return-value]  # the mistake under test
            None,
        ),
        (Parameter("X-PRIO", str, str, read=_broken(ValueError("read's bug"))), ValueError),
    ],
    ids=["parse", "check", "check-gives-str", "read"],
)
def test_an_entrys_own_failure_is_the_applications_and_the_session_goes_on(
    parameter: Parameter[Any], cause: type | None
) -> None:
    """Entry code that fails other than by refusing the value is the application's
    mistake: ``LocalProtocolError`` (the original chained), the command taken and
    pending its ``reply_hint``, 451; nothing else escapes ``next_event()``."""
    entry = Extension("X-PRIO", "", "priorities", mail_parameters=(parameter,))
    conn = greeted(extra_extensions=[entry])
    conn.receive_data(EHLO)
    assert isinstance(conn.next_event(), Ehlo)
    conn.send(Reply(250, "OK"))
    conn.receive_data(b"MAIL FROM:<a@b.example> X-PRIO=3\r\nNOOP\r\n")
    with pytest.raises(LocalProtocolError) as failed:
        conn.next_event()
    assert "X-PRIO" in str(failed.value)
    assert type(failed.value.__cause__) is (cause or type(None))
    assert conn.next_event() is PAUSED
    assert conn.send(failed.value.reply_hint) == b"451 4.3.0 Local error in processing\r\n"
    _, out = run(conn)
    assert codes(out) == ["250 2.0.0"]


@pytest.mark.parametrize(
    "entry",
    [
        Extension("X-FOO", "", "listed", arguments=_broken(AttributeError("arguments' bug"))),
        Extension("X-FOO", "", "listed", requires=(_UNWELL,)),
    ],
    ids=["arguments", "requirement"],
)
def test_an_entry_failing_on_the_ehlo_reply_leaves_it_to_answer_otherwise(
    entry: Extension,
) -> None:
    conn = greeted(extra_extensions=[entry])
    conn.receive_data(EHLO + b"NOOP\r\n")
    assert isinstance(conn.next_event(), Ehlo)
    with pytest.raises(LocalProtocolError, match="X-FOO") as failed:
        conn.send(Reply(250, "OK"))
    assert isinstance(failed.value.__cause__, (AttributeError, RuntimeError))
    assert conn.send(Reply(451, "Local error in processing")).startswith(b"451 ")
    _, out = run(conn)
    assert codes(out) == ["250 2.0.0"]


def test_a_parameter_value_in_utf8_needs_smtputf8() -> None:
    conn = greeted(dsn=True)
    base = (
        EHLO + b"MAIL FROM:<a@b.example>%s\r\nRCPT TO:<c@d.example> ORCPT=utf-8;j\xc3\xb6rg@d\r\n"
    )
    _, out = run(conn, base % b"")
    assert codes(out)[-1] == "501 5.5.4"
    _, out = run(greeted(dsn=True), base % b" SMTPUTF8")
    assert codes(out)[-1] == "250 2.1.5"


def test_the_client_sends_a_utf8_value_only_in_an_smtputf8_transaction() -> None:
    """RFC 6531 §3.3, RFC 6533 §3: a raw UTF-8 ORCPT (or any UTF-8 value) needs the
    server to offer SMTPUTF8 and the MAIL to carry it, as the server machine requires."""
    recipient = Mailbox("c", "d.example")
    for params in ({"ORCPT": "utf-8;jörg@x.example"}, {"X-FOO": "é"}):
        conn = _client(["PIPELINING", "DSN"])
        conn.send(Mail(SENDER))
        with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
            conn.send(Rcpt(recipient, params))
        conn = _client(["PIPELINING", "DSN", "SMTPUTF8"])
        conn.send(Mail(SENDER))
        with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
            conn.send(Rcpt(recipient, params))
        conn = _client(["PIPELINING", "DSN", "SMTPUTF8"])
        conn.send(Mail(SENDER, {"SMTPUTF8": None}))
        ((keyword, value),) = params.items()
        sent = conn.send(Rcpt(recipient, params))
        assert sent.endswith(f" {keyword}={value}\r\n".encode())
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        _client(["PIPELINING"]).send(Mail(SENDER, {"X-FOO": "é"}))
    sent = _client(["SMTPUTF8"]).send(Mail(SENDER, {"SMTPUTF8": None, "X-FOO": "é"}))
    assert sent.endswith(" X-FOO=é\r\n".encode())


# -- the client reads the same entries ---------------------------------------------------


def _client(ehlo_lines: list[str]) -> ClientConnection:
    conn = ClientConnection("client.abc.example")
    conn.receive_data(b"220 mx ESMTP\r\n")
    conn.next_event()
    conn.send(Ehlo("client.abc.example"))
    conn.receive_data(Reply(250, ["mx", *ehlo_lines]).to_bytes())
    conn.next_event()
    return conn


SENDER = Mailbox("a", "b.example")


@pytest.mark.parametrize(
    ("offered", "params", "message"),
    [
        ([], {"BODY": "8BITMIME"}, "needs the server to offer 8BITMIME"),
        (["8BITMIME"], {"BODY": "BINARYMIME"}, "offer BINARYMIME"),
        (["DSN"], {"RET": "SOME"}, "RET must be FULL or HDRS"),
        ([], {"MT-PRIORITY": "3"}, "offer MT-PRIORITY"),
        ([], {"HOLDFOR": "30"}, "offer FUTURERELEASE"),
        (["SIZE 10"], {"SIZE": "11"}, "limit of 10"),
    ],
)
def test_the_client_machine_refuses_what_was_not_offered(
    offered: list[str], params: dict[str, str], message: str
) -> None:
    conn = _client(offered)
    with pytest.raises(LocalProtocolError, match=message):
        conn.send(Mail(SENDER, params))


def test_commands_of_an_extension_need_it_offered() -> None:
    conn = _client(["8BITMIME", "PIPELINING"])
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        conn.send(StartTls())
    conn.send(Mail(SENDER))
    conn.send(Rcpt(Mailbox("c", "d.example")))
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.send(Bdat(1, last=True))


def test_binarymime_content_needs_bdat() -> None:
    conn = _client(["8BITMIME", "CHUNKING", "BINARYMIME", "PIPELINING"])
    conn.send(Mail(SENDER, {"BODY": "BINARYMIME"}))
    conn.send(Rcpt(Mailbox("c", "d.example")))
    with pytest.raises(LocalProtocolError, match="BDAT"):
        conn.send(Data())


@given(st.sampled_from([e for e in KNOWN if e.mail_parameters or e.rcpt_parameters]))
def test_client_and_server_agree_on_owners(entry: Extension) -> None:
    offered = ServerExtensions.from_reply(Reply(250, ["mx", entry.keyword]))
    assert entry.keyword in offered
    for verb, parameters, other in (
        ("MAIL", entry.mail_parameters, "RCPT"),
        ("RCPT", entry.rcpt_parameters, "MAIL"),
    ):
        for parameter in parameters:
            found = owner_of_parameter(parameter.keyword, verb)
            assert found is not None and found[0] is entry
            assert owner_of_parameter(parameter.keyword) == found
            assert owner_of_parameter(parameter.keyword, other) is None


# Every built-in parameter on the other command, with a value its own would take.
MISPLACED = [
    ("MAIL", "NOTIFY", "NEVER"),
    ("MAIL", "ORCPT", "rfc822;a@b.example"),
    ("RCPT", "SIZE", "10"),
    ("RCPT", "BODY", "8BITMIME"),
    ("RCPT", "SMTPUTF8", None),
    ("RCPT", "RET", "HDRS"),
    ("RCPT", "ENVID", "x"),
    ("RCPT", "AUTH", "<>"),
    ("RCPT", "REQUIRETLS", None),
]


def test_misplaced_lists_every_builtin_parameter() -> None:
    keywords = {p.keyword for e in BUILTIN for p in (*e.mail_parameters, *e.rcpt_parameters)}
    assert {keyword for _, keyword, _ in MISPLACED} == keywords


@pytest.mark.parametrize(("verb", "keyword", "value"), MISPLACED)
def test_a_parameter_goes_only_with_its_own_command(
    verb: str, keyword: str, value: str | None
) -> None:
    """NOTIFY and ORCPT are RCPT's (RFC 3461 §4.1, §4.2), SIZE, BODY, RET, ENVID... MAIL's:
    the server refuses one on the other command (555), and the client never sends it."""
    lines = ["PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "DSN", "AUTH PLAIN"]
    conn = _client([*lines, "REQUIRETLS"])
    command: Mail | Rcpt = Mail(SENDER, {keyword: value})
    if verb == "RCPT":
        conn.send(Mail(SENDER))
        command = Rcpt(Mailbox("c", "d.example"), {keyword: value})
    with pytest.raises(LocalProtocolError, match=f"{keyword} is not a {verb} parameter"):
        conn.send(command)
    assert conn.send(Noop()) == b"NOOP\r\n"  # the machine as it was
    server = greeted(**ALL_ON, tls=True)
    wire = f"{keyword}={value}" if value is not None else keyword
    line = f"MAIL FROM:<a@b.example> {wire}\r\n"
    if verb == "RCPT":
        line = f"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> {wire}\r\n"
    _, out = run(server, EHLO + line.encode())
    assert codes(out)[-1] == "555 5.5.4"


# -- REQUIRETLS (RFC 8689): an entry that needs TLS -------------------------------------


def test_requiretls_is_offered_and_read_only_over_tls() -> None:
    plain = greeted(requiretls=True)
    _, out = run(plain, EHLO + b"MAIL FROM:<a@b.example> REQUIRETLS\r\n")
    assert b"250 REQUIRETLS" not in out and b"250-REQUIRETLS" not in out
    assert codes(out)[-1] == "555 5.5.4"
    secure = greeted(requiretls=True, tls=True)
    events, out = run(secure, EHLO + b"MAIL FROM:<a@b.example> REQUIRETLS\r\n")
    assert b"250 REQUIRETLS\r\n" in out
    assert codes(out)[-1] == "250 2.1.0"
    mail = events[-1]
    assert isinstance(mail, Mail) and "REQUIRETLS" in mail.params
    _, out = run(secure, b"RSET\r\nMAIL FROM:<a@b.example> REQUIRETLS=yes\r\n")
    assert codes(out)[-1] == "501 5.5.4"


def test_the_client_sends_requiretls_only_where_offered() -> None:
    with pytest.raises(LocalProtocolError, match="REQUIRETLS"):
        _client(["PIPELINING"]).send(Mail(SENDER, {"REQUIRETLS": True}))
    conn = _client(["REQUIRETLS"])
    assert conn.send(Mail(SENDER, {"REQUIRETLS": True})).endswith(b" REQUIRETLS\r\n")


def test_missing_for_names_the_extension_a_parameter_needs() -> None:
    offered = ServerExtensions.from_reply(Reply(250, ["mx", "8BITMIME", "DSN"]))
    assert offered.missing_for("BODY", "8BITMIME") is None
    assert offered.missing_for("BODY", "BINARYMIME") == "BINARYMIME"
    assert offered.missing_for("RET", "HDRS") is None
    assert offered.missing_for("SMTPUTF8") == "SMTPUTF8"
    assert offered.missing_for("REQUIRETLS") == "REQUIRETLS"
    assert offered.missing_for("X-UNKNOWN", "1") is None  # the server's to judge
    assert ServerExtensions().missing_for("ENVID", "x") == "DSN"
