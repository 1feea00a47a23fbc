"""The server machine's fast paths give what its general paths give.

The everyday-line parser now takes MAIL and RCPT with ASCII ESMTP parameters
(``SIZE=1234 BODY=8BITMIME``, ``NOTIFY=NEVER``) in its one match; the tables a
session looks commands and parameters up in are built once per configuration
and shared by every connection. Both are held here to the slow paths they stand
in for.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtp_helpers import greeted, run
from smtpcore import LocalProtocolError
from smtpcore._address_mailbox import _SIMPLE_DOMAIN, _SIMPLE_LOCAL, _SIMPLE_PATH, simple_mailbox
from smtpcore._numbers import is_digits, parse_number
from smtpcore.address import MAX_RECEIVED_PATH_OCTETS, AddressPolicy
from smtpcore.smtp import BadCommand, Mail, Rcpt, Reply, ServerConnection
from smtpcore.smtp import _server_answers as answers_module
from smtpcore.smtp._commands import (
    BARE_BY_FIRST_OCTET,
    BARE_LINES,
    VERBS,
    CommandSyntaxError,
    envelope_verbs,
    everyday_command,
    format_command,
    match_everyday_line,
    parse_command_line,
    parse_everyday_line,
)
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Noop,
    Quit,
    Rset,
    Vrfy,
)
from smtpcore.smtp._ext import BUILTIN
from smtpcore.smtp._extension import Parameter
from smtpcore.smtp._params import Parameters
from smtpcore.smtp._replies import _BUILT, _BUILT_COUNT, EnhancedStatus
from smtpcore.smtp._server_commands import _ALWAYS_KNOWN, _CHECKS, _TAKING
from smtpcore.smtp._server_content import _END_OF_MESSAGE as END_OF_MESSAGE
from smtpcore.smtp._state import RULES, State, next_state
from smtpcore.testing import strategies as sst

# Narrow on purpose: the verbs, paths and endings are the hot path's branch points;
# the parameters are smtpcore.testing's, valid and hostile.
LINE_WITH_PARAMETERS = st.builds(
    lambda verb, path, params, end: (verb + path + params + end).encode("utf-8"),
    st.sampled_from(["MAIL FROM:", "mail from:", "RCPT TO:", "Rcpt To:", "MAIL FROM: "]),
    st.sampled_from(["<john@abc.example>", "<Brendon@PQR.example>", "<>", "<a@192.0.2.1>"]),
    sst.parameter_texts(hostile=True),
    st.sampled_from(["\r\n", "\r\n", " \r\n", "\n"]),
)

EVERYDAY_WITH_PARAMETERS = st.builds(
    lambda verb, path, params: (verb + path + params + "\r\n").encode("utf-8"),
    st.sampled_from(["MAIL FROM:", "RCPT TO:", "rcpt to:"]),
    st.sampled_from(["<john@abc.example>", "<Brendon@PQR.example>"]),
    st.one_of(sst.parameter_texts(), sst.parameter_texts(hostile=True)).filter(
        lambda params: params.startswith(" ")
    ),
)
"""Lines shaped as the fast path takes them, so that most examples exercise it."""


def full_parse(line: bytes) -> object:
    """What the general parser makes of ``line``: the event, or the refusal."""
    try:
        return parse_command_line(line[:-2].decode("utf-8"), VERBS)
    except CommandSyntaxError as exc:
        return exc.reply


@given(st.one_of(LINE_WITH_PARAMETERS, EVERYDAY_WITH_PARAMETERS))
def test_the_everyday_line_parser_agrees_with_the_full_one_on_parameters(line: bytes) -> None:
    """Where the hot path takes a line with parameters, the full parser gives the same
    event, parameters and all."""
    command = parse_everyday_line(line)
    if command is None:
        return
    assert line.endswith(b"\r\n")
    expected = full_parse(line)
    assert expected == command
    assert isinstance(command, Mail | Rcpt) and isinstance(expected, Mail | Rcpt)
    assert list(command.params.items()) == list(expected.params.items())


LENIENT_VERBS = {**VERBS, **envelope_verbs(AddressPolicy.postfix())}
"""The verb table of a server taking what Postfix takes (``addresses=``)."""


@given(
    st.sampled_from(["MAIL FROM:", "RCPT TO:", "mail from:"]),
    st.one_of(sst.paths(hostile=True), sst.lenient_paths()),
    st.sampled_from(["", " SIZE=10", " SIZE=10 BODY=8BITMIME", "  SIZE=1"]),
)
def test_the_everyday_line_parser_agrees_with_the_lenient_full_one(
    verb: str, path: str, params: str
) -> None:
    """The hot path knows no address policy: whatever it takes, a server taking what
    Postfix takes (stray dots, no brackets) must read alike, so that no leniency
    changes the meaning of a line the hot path has already read."""
    line = f"{verb}{path}{params}\r\n".encode("utf-8", "surrogateescape")
    command = parse_everyday_line(line)
    if command is None:
        return
    assert parse_command_line(line[:-2].decode("utf-8"), LENIENT_VERBS) == command


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<john@abc.example> SIZE=1234 BODY=8BITMIME\r\n",
        b"mail from:<john@abc.example> size=1234 body=8bitmime SMTPUTF8\r\n",
        b"MAIL FROM:<john@abc.example> RET=HDRS ENVID=QQ314159\r\n",
        b"RCPT TO:<brendon@pqr.example> NOTIFY=NEVER\r\n",
        b"RCPT TO:<brendon@pqr.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@pqr.example\r\n",
    ],
)
def test_the_everyday_line_parser_takes_what_real_clients_send(line: bytes) -> None:
    command = parse_everyday_line(line)
    assert command is not None
    assert command == full_parse(line)


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<john@abc.example> SIZE=1 size=2\r\n",  # given twice: 501
        b"MAIL FROM:<john@abc.example>  SIZE=1\r\n",  # two spaces
        b"MAIL FROM:<john@abc.example> SIZE=\r\n",  # an empty value: 501
        b"MAIL FROM:<john@abc.example> X=a=b\r\n",  # '=' inside a value: 501
        b"MAIL FROM:<john@abc.example> -X=1\r\n",  # not a keyword: 501
        b"MAIL FROM:<john@abc.example> SIZE=1 \r\n",  # a trailing space
        b"MAIL FROM:<john@abc.example> X=\xc3\xa9\r\n",  # UTF-8: the full rules decide
        b"MAIL FROM:<john@abc.example>SIZE=1\r\n",  # no space before the parameter
        b"RCPT TO:<brendon@pqr.example> NOTIFY=NEVER\n",  # bare LF
    ],
)
def test_the_everyday_line_parser_leaves_the_rest_to_the_full_one(line: bytes) -> None:
    assert parse_everyday_line(line) is None


@given(
    st.sampled_from(["DATA", "RSET", "NOOP", "QUIT", "HELP", "STARTTLS"]).flatmap(
        lambda verb: st.tuples(*[st.sampled_from([c, c.lower()]) for c in verb]).map("".join)
    ),
    st.sampled_from(["", " ", "  ", " x", "\t"]),
    st.sampled_from(["\r\n", "\n", "\r\r\n"]),
)
def test_the_everyday_line_parser_agrees_with_the_full_one_on_bare_verbs(
    verb: str, tail: str, end: str
) -> None:
    """DATA, RSET, NOOP and QUIT in any case, CRLF-ended and with nothing after them,
    are read in the one match, as the full parser reads them; anything else is left
    to the full parser."""
    line = (verb + tail + end).encode("ascii")
    command = parse_everyday_line(line)
    if tail or end != "\r\n" or verb.upper() not in ("DATA", "RSET", "NOOP", "QUIT"):
        assert command is None
        return
    assert command is not None
    assert command == full_parse(line)
    assert isinstance(command, Data | Rset | Noop | Quit)


HELLO_VERBS = st.sampled_from(["EHLO", "HELO", "LHLO", "EHL", "HELOX"]).flatmap(
    lambda verb: st.tuples(*[st.sampled_from([c, c.lower()]) for c in verb]).map("".join)
)


@given(
    HELLO_VERBS,
    st.sampled_from([" ", "  ", "", "\t"]),
    st.one_of(
        st.sampled_from(["client.abc.example", "[192.0.2.1]", "[IPv6:2001:db8::1]", "x"]),
        st.text(max_size=12),
        st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=12),
    ),
    st.sampled_from(["\r\n", "\r\n", " \r\n", "\n", "\r\r\n"]),
)
@example("EHLO", " ", "client.abc.example", "\r\n")
@example("helo", " ", "a\x7fb", "\r\n")
@example("EHLO", "", " 0", "\r\n")  # the one space drawn as part of the domain
def test_the_everyday_line_parser_agrees_with_the_full_one_on_hellos(
    verb: str, space: str, domain: str, end: str
) -> None:
    """EHLO, HELO and LHLO in any case, one space, a printable ASCII domain and CRLF are
    read by the everyday parser as the full parser reads them; anything else is left
    to the full parser."""
    line = (verb + space + domain + end).encode("utf-8")
    command = parse_everyday_line(line)
    if command is None:
        return
    assert isinstance(command, Ehlo | Helo | Lhlo)
    assert command.verb == verb.upper()
    assert line == f"{verb} {command.domain}\r\n".encode()  # one space, CRLF
    assert command == full_parse(line)
    assert type(command.domain) is str


@pytest.mark.parametrize(
    "line",
    [b"EHLO client.abc.example\r\n", b"helo [192.0.2.1]\r\n", b"LHLO x\r\n"],
)
def test_the_everyday_line_parser_takes_the_hellos_clients_send(line: bytes) -> None:
    command = parse_everyday_line(line)
    assert command is not None
    assert command == full_parse(line)


def test_sessions_that_give_the_same_hello_name_share_one_string() -> None:
    """A client host's sessions give the same name: an idle session then holds no
    copy of its own (the interned string lives as long as a session keeps it)."""
    first = parse_everyday_line(b"EHLO client.abc.example\r\n")
    second = parse_everyday_line(b"EHLO client.abc." + b"example\r\n")
    assert isinstance(first, Ehlo) and isinstance(second, Ehlo)
    assert first.domain is second.domain


@given(st.text(max_size=6).map(lambda text: text.replace(".", "")))
def test_the_numeric_label_check_of_simple_mailboxes_is_is_digits(label: str) -> None:
    """``simple_mailbox`` asks ``isascii() and isdigit()`` of the last label, in C: the
    same as ``is_digits`` (ASCII digits only) for any text."""
    assert (simple_mailbox("a", "x." + label) is None) is is_digits(label)


_PLAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PLAIN_DOMAIN = re.compile(rf"(?:{_PLAIN_LABEL}\.)*{_PLAIN_LABEL}")
"""The LDH host name as RFC 1035 §2.3.1 words it: the reference for ``_SIMPLE_DOMAIN``,
which reads the same names without backtracking."""

LDH_TEXT = st.lists(
    st.one_of(
        st.text("aZ09-", max_size=3),
        st.integers(60, 66).map(lambda size: "a" * (size - 1) + "-"),
        st.integers(60, 66).map(lambda size: "b" * size),
        st.sampled_from(["-", "a-", "-a", "a-b", "0"]),
    ),
    max_size=5,
).map(".".join)


@given(st.one_of(LDH_TEXT, st.text("a-.Z9_", max_size=12)))
@example("b" * 63)
@example("x." + "b" * 64)
@example("a" * 62 + "-")
@example("a.-b")
def test_the_simple_domain_pattern_reads_what_the_ldh_rule_reads(text: str) -> None:
    assert (_SIMPLE_DOMAIN.fullmatch(text) is None) is (PLAIN_DOMAIN.fullmatch(text) is None)


@given(
    st.sampled_from(["MAIL FROM:", "mail from:", "Mail From:", "RCPT TO:", "rcpt to:"]),
    st.sampled_from(["john", "John.Doe", "a+b", "x"]),
    st.one_of(LDH_TEXT, st.sampled_from(["abc.example", "PQR.Example", "a-b.c"])),
    st.sampled_from(["", " SIZE=1", " size=1 Body=8bitmime", " NOTIFY=NEVER"]),
)
def test_the_everyday_line_takes_a_path_as_the_address_rules_do(
    verb: str, local: str, domain: str, params: str
) -> None:
    """The everyday line (the verbs case-insensitive, the rest as written) takes the
    paths whose domain the LDH rule reads and which fit the limits; the full parser
    gives the same event for each."""
    line = f"{verb}<{local}@{domain}>{params}\r\n".encode("ascii")
    command = parse_everyday_line(line)
    if PLAIN_DOMAIN.fullmatch(domain) is None:
        assert command is None
        return
    if command is not None:
        assert command == full_parse(line)
    else:
        assert simple_mailbox(local, domain) is None  # a limit: the full rules decide


@given(
    st.one_of(
        st.sampled_from(["john", "a.b", '""']),  # "" the empty Quoted-string: the full rules'
        st.integers(63, 66).map(lambda size: "j" * size),
    ),
    st.lists(
        st.one_of(
            st.sampled_from(["example", "b", "0", "123", "4x", "x-1", "-", "a."]),
            st.integers(55, 66).map(lambda size: "d" * size),
        ),
        min_size=1,
        max_size=6,
    ).map(".".join),
)
@example("j", "d" * 63 + "." + "d" * 63 + "." + "d" * 63 + "." + "d" * 63)  # a 255-octet domain
@example("j", "d" * 63 + "." + "d" * 63 + "." + "d" * 63 + "." + "d" * 64)  # 256
@example("j" * 200, "d" * 63 + "." + "d" * 63 + "." + "d" * 63 + "." + "d" * 63)  # path of 458
@example("john", "example.2")
@example("j" * 65, "example")
@example('""', "example")
@example("j" * (MAX_RECEIVED_PATH_OCTETS - 10), "example")  # the longest path taken, 900
@example("j" * (MAX_RECEIVED_PATH_OCTETS - 9), "example")  # 901
def test_the_simple_path_pattern_holds_the_limits_simple_mailbox_holds(
    local: str, domain: str
) -> None:
    """The everyday path pattern takes a path's parts where the simple patterns take
    them, ``simple_mailbox`` finds them within the rules (the domain's length, a last
    label not all digits; a local part has no limit, RFC 5321 §4.5.3.1) and the path,
    as written, is one a server takes (``MAX_RECEIVED_PATH_OCTETS``): its match is a
    mailbox as it stands, which the everyday-line parser builds without the call."""
    path = f"<{local}@{domain}>"
    expected = (
        _SIMPLE_LOCAL.fullmatch(local) is not None
        and _SIMPLE_DOMAIN.fullmatch(domain) is not None
        and simple_mailbox(local, domain) is not None
        and len(path) <= MAX_RECEIVED_PATH_OCTETS
    )
    assert (_SIMPLE_PATH.fullmatch(path) is not None) is expected
    line = f"RCPT TO:{path}\r\n".encode("ascii")
    command = parse_everyday_line(line)
    assert (command is not None) is expected
    if command is not None:
        assert command == full_parse(line)


class Facts:
    """What a parameter's server check may ask of its session, set by hand."""

    tls = authenticated = trusted_forwarder = False
    max_recipients = 100

    def __init__(self, max_message_size: int | None, in_force: bool) -> None:
        self.max_message_size = max_message_size
        self._in_force = in_force

    def offered_auth_mechanisms(self) -> list[str]:
        return []

    def in_force(self, keyword: str) -> bool:
        return self._in_force


FAST_READ = [
    parameter
    for entry in BUILTIN
    for parameter in (*entry.mail_parameters, *entry.rcpt_parameters)
    if parameter.read is not None
]

FAST_READ_BY_KEYWORD = {parameter.keyword: parameter for parameter in FAST_READ}

PARAMETER_VALUES = st.one_of(
    st.none(),
    st.text(max_size=24),
    st.text("0123456789", min_size=1, max_size=22),
    st.sampled_from(
        [
            *("7BIT", "8BITMIME", "BINARYMIME", "NEVER", "SUCCESS,FAILURE", "FULL", "HDRS"),
            *("DELAY,SUCCESS,FAILURE", "SUCCESS,SUCCESS", "NEVER,DELAY", "\u0661\u0662", "12 3"),
            *("0", "999", "1000", "1001", "00001000", "9" * 20, "1" * 21),
        ]
    ).flatmap(lambda value: st.sampled_from([value, value.lower(), value.title()])),
)


@given(
    st.sampled_from(FAST_READ),
    PARAMETER_VALUES,
    st.sampled_from([None, 0, 1000, 10**25]),
    st.booleans(),
)
@example(FAST_READ_BY_KEYWORD["SIZE"], "1000", 1000, False)  # at the limit
@example(FAST_READ_BY_KEYWORD["SIZE"], "1001", 1000, False)
@example(FAST_READ_BY_KEYWORD["BODY"], "binarymime", None, False)
@example(FAST_READ_BY_KEYWORD["BODY"], "BINARYMIME", None, True)
def test_a_parameters_one_call_read_gives_what_its_parse_and_check_give(
    parameter: object, value: str | None, max_message_size: int | None, in_force: bool
) -> None:
    """SIZE, BODY, SMTPUTF8, NOTIFY and RET are read by the server in one call
    (``Parameter.read``): the same refusal, or none, as ``parse`` then ``check``."""
    assert isinstance(parameter, Parameter)
    assert parameter.read is not None
    facts = Facts(max_message_size, in_force)
    assert parameter.read(facts, value) == parameter.refusal(facts, value)


def test_the_everyday_parameters_are_read_in_one_call() -> None:
    assert {parameter.keyword for parameter in FAST_READ} == {
        "SIZE",
        "BODY",
        "SMTPUTF8",
        "NOTIFY",
        "RET",
    }


@given(st.text(max_size=24), st.integers(1, 20))
def test_parse_number_reads_what_is_digits_takes(text: str, max_digits: int) -> None:
    expected = int(text) if 0 < len(text) <= max_digits and is_digits(text) else None
    assert parse_number(text, max_digits=max_digits) == expected


def test_rule_move_is_accepts_and_next_state_in_one() -> None:
    """The server answers through ``Rule.move``: for every rule, state and reply code,
    None where ``accepts`` is false, else ``next_state``."""
    for rule in {*RULES.values()}:
        for state in State:
            for code in range(200, 600):
                expected = next_state(rule, code, state) if rule.accepts(code) else None
                assert rule.move(code, state) is expected, (rule, state, code)


@given(
    st.sampled_from([None, Ehlo("c.example"), Rset(), Data(), Auth("PLAIN"), AuthResponse(b"x")])
    | st.sampled_from(["MAIL FROM:<a@b.example>", "RCPT TO:<c@d.example>"]).map(
        lambda text: parse_everyday_line(text.encode("ascii") + b"\r\n")
    ),
    st.integers(200, 599).filter(lambda code: (code // 10) % 10 <= 5),
    st.booleans(),
    st.booleans(),
)
def test_finish_writes_the_status_status_for_gives(
    answered: object, code: int, own_status: bool, enhanced: bool
) -> None:
    """``_finish`` reads the status tables inline; ``_status_for`` (the greeting, 421,
    the ERROR state) reads them in a method: both give the same status."""
    conn = ServerConnection("mx.example", enhanced_status_codes=enhanced)
    status = EnhancedStatus(code // 100, 9, 9) if own_status and code // 100 != 3 else None
    event = Reply(code, "text", status)
    expected = event.to_bytes(conn._status_for(answered, event))  # type: ignore[arg-type]
    assert conn._finish(answered, event) == expected  # type: ignore[arg-type]


def test_a_keyword_given_twice_is_refused_either_way() -> None:
    conn = greeted()
    events, out = run(conn, b"EHLO c.example\r\nMAIL FROM:<a@b.example> SIZE=1 size=2\r\n")
    assert isinstance(events[-1], BadCommand)
    assert out.endswith(b"501 5.5.4 Bad parameter syntax: ESMTP keyword size given twice\r\n")


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:<a@b.example> SIZE=99999999999\r\n", b"552 5.3.4 "),
        (b"MAIL FROM:<a@b.example> FOO=1\r\n", b"555 5.5.4 Unsupported parameter FOO\r\n"),
        (b"MAIL FROM:<a@b.example> BODY=7BIT\r\n", b"250 2.1.0 OK\r\n"),
        (b"MAIL FROM:<a@b.example> BODY=9BIT\r\n", b"501 5.5.4 "),
    ],
)
def test_parameters_taken_by_the_fast_path_are_checked_as_before(
    line: bytes, reply: bytes
) -> None:
    assert parse_everyday_line(line) is not None
    conn = greeted()
    _, out = run(conn, b"EHLO c.example\r\n" + line)
    assert out.split(b"\r\n")[-2].startswith(reply.rstrip(b"\r\n"))


def test_notify_is_refused_without_dsn_and_taken_with_it() -> None:
    line = b"RCPT TO:<c@d.example> NOTIFY=NEVER\r\n"
    start = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\n"
    _, out = run(greeted(), start + line)
    assert out.endswith(b"555 5.5.4 Unsupported parameter NOTIFY\r\n")
    events, out = run(greeted(dsn=True), start + line)
    assert isinstance(events[-1], Rcpt) and events[-1].params == Parameters({"NOTIFY": "NEVER"})
    assert out.endswith(b"250 2.1.5 OK\r\n")


# -- the session tables ------------------------------------------------------------------


def test_connections_with_the_same_options_share_their_tables() -> None:
    first, second = ServerConnection("mx.example"), ServerConnection("mx.example")
    assert first._config.tables is second._config.tables
    other = ServerConnection("mx.example", chunking=False)
    assert "BDAT" in first._config.tables.extended_verbs
    assert "BDAT" not in other._config.tables.extended_verbs


def test_shared_tables_keep_each_configuration_apart() -> None:
    """A server's options still decide what its sessions know, whatever was built
    before it: LMTP has LHLO and no EHLO, DSN brings NOTIFY, chunking BDAT."""
    start = b"LHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> NOTIFY=NEVER\r\n"
    for _ in range(2):
        _, lmtp = run(greeted(lmtp=True, dsn=True), start + b"EHLO c.example\r\n")
        assert b"250 2.1.5 OK\r\n" in lmtp
        assert lmtp.endswith(b"500 5.5.2 Command unrecognized\r\n")
        _, smtp = run(greeted(), start)
        assert smtp.startswith(b"500 5.5.2 Command unrecognized\r\n")
        _, plain = run(greeted(chunking=False), b"EHLO c.example\r\nBDAT 1 LAST\r\n")
        assert plain.endswith(b"500 5.5.2 Command unrecognized\r\n")


def test_extra_extensions_are_not_shared_with_other_servers() -> None:
    with_help = ServerConnection("mx.example", extra_extensions=["HELP"])
    without = ServerConnection("mx.example")
    assert "HELP" in with_help.extensions()
    assert "HELP" not in without.extensions()
    assert "HELP" not in ServerConnection("mx.example").extensions()


def test_a_machine_keeps_its_state_in_slots() -> None:
    """A server holds one machine per connection: its state lives in slots, and the
    instance dict stays empty (unallocated) through a session. An application may
    still give a machine an attribute of its own, or wrap one of its methods."""
    conn = greeted()
    _, out = run(conn, b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRSET\r\n")
    assert out.count(b"250 ") == 3
    assert vars(conn) == {}
    original = conn.next_event
    conn.next_event = lambda: original()  # type: ignore[method-assign]  # a wrapper
    conn.note = "mine"  # type: ignore[attr-defined]  # an attribute of the application's
    _, out = run(conn, b"NOOP\r\n")
    assert out == b"250 2.0.0 OK\r\n"


# -- answering the everyday commands ---------------------------------------------------

_SESSION_FIELDS = (
    "_state",
    "_pending",
    "_errors",
    "_accepted",
    "_overshoot",
    "_utf8_transaction",
    "_binary_transaction",
    "_forwarded_message",
    "_received",
    "_refusal",
)


def _pending_in(state: State, command: object, enhanced: bool) -> ServerConnection:
    """A machine past EHLO, put in ``state`` with ``command`` awaiting its answer."""
    conn = greeted(enhanced_status_codes=enhanced, dsn=True)
    run(conn, b"EHLO c.example\r\n")
    conn._state = state
    conn._pending = command  # type: ignore[assignment]
    conn._accepted = 3
    return conn


@given(
    st.sampled_from(
        [
            b"MAIL FROM:<a@b.example>",
            b"MAIL FROM:<a@b.example> SMTPUTF8 BODY=8BITMIME",
            b"RCPT TO:<c@d.example> NOTIFY=NEVER",
            b"DATA",
            b"RSET",
            b"NOOP",
        ]
    ),
    st.sampled_from(list(State)),
    st.sampled_from([250, 251, 252, 354, 220, 221, 235, 421, 450, 550]),
    st.sampled_from([None, "2.9.9", "4.9.9", "5.9.9"]),
    st.booleans(),
    st.text(alphabet="abc ", max_size=3),
)
def test_send_answers_the_everyday_commands_as_the_general_path_does(
    line: bytes, state: State, code: int, status: str | None, enhanced: bool, text: str
) -> None:
    """``send`` moves and writes a success answering MAIL, RCPT, DATA, RSET or NOOP
    itself, from ``_EVERYDAY_ANSWERS``: what ``_answer_command`` (the rule's move, the
    command's ``_ON_ACCEPT``, ``_finish``) gives, bytes, state and session alike, for
    every state; any other answer goes the general way."""
    if status is not None and status[0] != str(code)[0]:
        status = None
    command = parse_everyday_line(line + b"\r\n")
    assert command is not None
    fast = _pending_in(state, command, enhanced)
    general = _pending_in(state, command, enhanced)
    event = Reply(code, text, status)
    rule = RULES[type(command)]

    def outcome(conn: ServerConnection, answer: Callable[[], bytes]) -> object:
        try:
            written: object = answer()
        except LocalProtocolError as exc:
            written = f"refused: {exc}"
        return written, [getattr(conn, name) for name in _SESSION_FIELDS]

    if code in rule.success_codes and state in rule.allowed:
        expected = outcome(general, lambda: general._answer_command(command, rule, event))
    else:
        expected = outcome(general, lambda: general._send(command, event))
    assert outcome(fast, lambda: fast.send(event)) == expected


@given(
    st.sampled_from(
        [
            b"MAIL FROM:<a@b.example>",
            b"RCPT TO:<c@d.example>",
            b"DATA",
            b"RSET",
            b"NOOP",
            b"EHLO c.example",
            b"HELO c.example",
            b"LHLO c.example",
            b"QUIT",
        ]
    ),
    st.sampled_from(list(State)),
    st.sampled_from([250, 251, 252, 354, 220, 221, 421, 450, 501, 550]),
    st.sampled_from([None, "2.9.9", "4.9.9", "5.9.9"]),
    st.booleans(),
)
def test_the_commands_answered_by_their_rule_alone_are_answered_as_the_general_path_does(
    line: bytes, state: State, code: int, status: str | None, enhanced: bool
) -> None:
    """``_send`` answers a command of ``_FAST_RULES`` by its rule, without the general
    path's checks of other pending events: what the general path gives, bytes, state
    and session alike, for every state and answer."""
    if status is not None and status[0] != str(code)[0]:
        status = None
    command = parse_everyday_line(line + b"\r\n")
    assert command is not None and type(command) in answers_module._FAST_RULES
    fast = _pending_in(state, command, enhanced)
    general = _pending_in(state, command, enhanced)
    event = Reply(code, "ok", status)

    def outcome(conn: ServerConnection) -> object:
        try:
            written: object = conn._send(command, event)
        except LocalProtocolError as exc:
            written = f"refused: {exc}"
        return written, [getattr(conn, name) for name in (*_SESSION_FIELDS, "helo_name")]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(answers_module, "_FAST_RULES", {})
        expected = outcome(general)
    assert outcome(fast) == expected


@given(
    st.sampled_from(list(State)),
    st.sampled_from([250, 251, 354, 421, 450, 550]),
    st.sampled_from([None, "2.9.9", "4.9.9", "5.9.9"]),
    st.booleans(),
    st.booleans(),
)
def test_send_answers_the_end_of_a_message_as_the_general_path_does(
    state: State, code: int, status: str | None, enhanced: bool, lmtp: bool
) -> None:
    """``send`` answers the end of a message in DATA itself: what ``_send`` gives,
    bytes, state and session alike, for every state and answer."""
    if status is not None and status[0] != str(code)[0]:
        status = None
    fast = _pending_in(state, END_OF_MESSAGE, enhanced)
    general = _pending_in(state, END_OF_MESSAGE, enhanced)
    for conn in (fast, general):
        conn._lmtp_replies_due = 2 if lmtp else 1
    event = Reply(code, "ok", status)

    def outcome(conn: ServerConnection, answer: Callable[[], bytes]) -> object:
        try:
            written: object = answer()
        except LocalProtocolError as exc:
            written = f"refused: {exc}"
        fields = [*_SESSION_FIELDS, "_lmtp_replies_due", "_junk_commands"]
        return written, [getattr(conn, name) for name in fields]

    expected = outcome(general, lambda: general._send(END_OF_MESSAGE, event))
    assert outcome(fast, lambda: fast.send(event)) == expected


@given(
    st.sampled_from([250, 450, 550]),
    st.sampled_from([None, "2.9.9", "4.9.9", "5.9.9"]),
    st.booleans(),
)
def test_the_answer_to_a_message_writes_what_finish_writes(
    code: int, status: str | None, enhanced: bool
) -> None:
    """_answer_content writes a success as _finish would, without calling it."""
    if status is not None and status[0] != str(code)[0]:
        status = None
    event = Reply(code, "ok", status)
    answered = _pending_in(State.DATA, END_OF_MESSAGE, enhanced)
    finished = _pending_in(State.DATA, END_OF_MESSAGE, enhanced)
    answered._lmtp_replies_due = 1
    assert answered._answer_content(END_OF_MESSAGE, event) == finished._finish(
        END_OF_MESSAGE, event
    )
    assert answered._errors == (0 if code < 300 else finished._errors)


# -- replies built again -----------------------------------------------------------------


@given(
    st.sampled_from([250, 251, 354, 421, 550]),
    st.text(alphabet="OKok \t", max_size=4),
    st.sampled_from([None, EnhancedStatus(2, 0, 0), EnhancedStatus(2, 1, 5)]),
)
def test_a_reply_built_again_is_the_one_built_first(
    code: int, text: str, status: EnhancedStatus | None
) -> None:
    """A one-line reply without a status equal to one built before is built from it
    (``_BUILT``), without its checks: the same fields, and the same bytes for every
    status, whichever of the two wrote them first."""
    _BUILT.clear()
    first = Reply(code, text)
    again = Reply(code, text)
    assert again._wire is first._wire
    assert (again.code, again.text, again.status, again.lines) == (
        first.code,
        first.text,
        first.status,
        first.lines,
    )
    written = again.to_bytes(status)
    _BUILT.clear()
    alone = Reply(code, text)
    assert written == first.to_bytes(status) == alone.to_bytes(status)
    assert first._wire is not alone._wire


def test_a_reply_built_again_is_that_reply_and_a_subclass_builds_its_own() -> None:
    """``Reply(code, text)`` equal to a one-line reply without a status built before is
    that reply (immutable, equal in every field); a reply with a status, of several
    lines, or of a subclass (whose constructor may take other arguments) is built."""
    _BUILT.clear()
    first = Reply(250, "OK")
    assert Reply(250, "OK") is first
    assert Reply(code=250, text="OK") == first
    assert Reply(250, "OK", None) == first
    assert Reply(250, "OK", "2.0.0") is not Reply(250, "OK", "2.0.0")
    assert Reply(250, ["OK", "fine"]) is not Reply(250, ["OK", "fine"])

    class Noted(Reply):
        def __init__(self, note: str) -> None:
            Reply.__init__(self, 250, note)

    noted = Noted("OK")
    assert noted is not Noted("OK")
    assert type(noted) is Noted
    assert (noted.code, noted.lines, noted.to_bytes()) == (250, ("OK",), b"250 OK\r\n")
    assert list(inspect.signature(Reply).parameters) == ["code", "text", "status"]
    assert list(inspect.signature(Noted).parameters) == ["note"]


def test_a_reply_built_again_is_checked_as_before() -> None:
    """What the first reply's checks let through and no more: a code of another type
    that compares equal, a control character, a status of another class."""
    Reply(250, "OK")
    for code in (250.0, True, "250"):
        with pytest.raises(LocalProtocolError):
            Reply(code, "OK")  # type: ignore[arg-type]  # a code of the wrong type
    with pytest.raises(LocalProtocolError):
        Reply(250, "O\nK")
    with pytest.raises(LocalProtocolError):
        Reply(250, "OK", "5.0.0")


def test_replies_share_their_bytes_only_with_their_own_kind() -> None:
    """Replies of a subclass, with a status, or of several lines keep their bytes to
    themselves."""

    class Loud(Reply):
        def _format(self, status: EnhancedStatus | None) -> bytes:
            return super()._format(status).upper()

    plain = Reply(250, "ok")
    assert plain.to_bytes() == b"250 ok\r\n"
    assert Loud(250, "ok").to_bytes() == b"250 OK\r\n"
    assert Reply(250, "ok").to_bytes() == b"250 ok\r\n"
    assert Reply(250, "ok", "2.0.0")._wire == ()
    assert Reply(250, ["ok", "fine"])._wire == ()
    _BUILT.clear()
    for index in range(_BUILT_COUNT + 1):
        Reply(250, f"ok {index}")
    assert len(_BUILT) == 1


@given(
    st.fixed_dictionaries(
        {
            "lmtp": st.booleans(),
            "chunking": st.booleans(),
            "starttls": st.booleans(),
            "xclient": st.booleans(),
            "xforward": st.booleans(),
            "auth_mechanisms": st.sampled_from([(), ("PLAIN",)]),
            "extra_extensions": st.sampled_from([(), ("HELP",)]),
        }
    )
)
def test_the_commands_known_by_type_are_known_to_every_session(options: dict[str, Any]) -> None:
    """``_next_command`` takes the everyday commands of ``_ALWAYS_KNOWN`` by their type,
    without asking the session's verbs: every table of every configuration has them.
    ``_take_command`` asks an extension's requirements only of the verbs it marks as
    an extension's (``_TAKING``): the only ones an extension may own."""
    tables = ServerConnection("mx.example", **options)._config.tables
    for verbs in (tables.plain_verbs, tables.extended_verbs):
        assert {kind.verb for kind in _ALWAYS_KNOWN} <= verbs.keys()
    owned = {verb for _, _, _, verb in _TAKING.values() if verb is not None}
    assert tables.verb_owner.keys() <= owned


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:<a@b.example>\r\n",
        b"RCPT TO:<a@b.example> NOTIFY=NEVER\r\n",
        *(verb + b"\r\n" for verb in (b"DATA", b"rset", b"Noop", b"QUIT")),
    ],
)
def test_the_lines_read_where_they_stand_are_commands_every_session_knows(line: bytes) -> None:
    """``next_event`` takes a line ``match_everyday_line`` matches in the buffer
    without asking the session's verbs: each kind the expression reads is one of
    ``_ALWAYS_KNOWN``."""
    match = match_everyday_line(bytearray(line + b"NOOP\r\n"))
    assert match is not None and match[0] == line
    assert type(everyday_command(match, line)) in _ALWAYS_KNOWN


def test_the_bare_lines_are_told_apart_by_their_first_letter() -> None:
    """``next_event`` takes DATA, RSET, NOOP and QUIT by ``BARE_LINES`` and the
    line's first octet: one entry a line, its CR fifth, its command the line's own
    and one every session knows."""
    assert sorted(line for line, _ in BARE_BY_FIRST_OCTET.values()) == sorted(BARE_LINES)
    for first, (line, command) in BARE_BY_FIRST_OCTET.items():
        assert line[0] == first and line[4:] == b"\r\n"
        assert parse_command_line(line[:4].decode("ascii"), VERBS) == command
        assert type(command) in _ALWAYS_KNOWN
    for kind, (allowed, check, _, _) in _TAKING.items():
        assert (allowed, check) == (RULES[kind].allowed, _CHECKS.get(kind))


_ALWAYS_JUNK = {Ehlo, Helo, Lhlo, Rset, Noop, Vrfy, Expn, Help}
"""The commands that move no mail forward whatever their arguments (Postfix's
``smtpd_junk_command_limit`` list, and EXPN and HELP)."""


def _counts_as_junk(command: Command, *, lmtp: bool = False) -> bool:
    """Whether a server counts ``command`` toward ``max_junk_commands``, seen from the
    wire: the hello is the one junk command the limit allows, so a junk command after
    it is past the limit and gets ``421 4.7.0``, whatever state it would need (the
    count comes before the sequence check, as in Postfix)."""
    conn = greeted(
        lmtp=lmtp,
        max_junk_commands=1,
        max_command_line=4096,
        starttls=True,
        auth_mechanisms=("PLAIN",),
        dsn=True,
        binarymime=True,
    )
    hello = b"LHLO client.abc.example\r\n" if lmtp else b"EHLO client.abc.example\r\n"
    _, out = run(conn, hello + format_command(command))
    replies = out.split(b"\r\n")
    if b"421 4.7.0 mx.pqr.example Too many commands" in replies:
        assert conn.state is State.CLOSED
        return True
    return False


@given(st.booleans(), st.data())
def test_the_junk_commands_are_the_ones_that_move_no_mail(lmtp: bool, data: st.DataObject) -> None:
    """HELO, EHLO, LHLO, RSET, NOOP, VRFY, EXPN and HELP always count toward
    ``max_junk_commands``; a BDAT only when its chunk is empty and not the last
    (RFC 3030 §2); every other command never."""
    command = data.draw(sst.commands(lmtp=lmtp), label="command")
    if type(command) in _ALWAYS_JUNK:
        expected = True
    elif isinstance(command, Bdat):
        expected = command.size == 0 and not command.last
    else:
        expected = False
    assert _counts_as_junk(command, lmtp=lmtp) is expected


@pytest.mark.parametrize(
    ("command", "junk"),
    [(Bdat(0), True), (Bdat(0, last=True), False), (Bdat(1), False), (Bdat(7, last=True), False)],
)
def test_only_an_empty_chunk_before_the_last_is_junk(command: Bdat, junk: bool) -> None:
    assert _counts_as_junk(command) is junk
    assert _counts_as_junk(command, lmtp=True) is junk
