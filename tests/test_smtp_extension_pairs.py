"""Each extension of issue 16 through both machines, as Hypothesis round trips.

A client machine sends what an extension brings (BDAT chunks, BINARYMIME octets,
typed DSN values, REQUIRETLS, EXPN and HELP), the bytes cross a
:class:`~smtpcore.testing.ConnectionPair` cut into reads of drawn sizes, and the
server machine must read back the very values and octets that were sent; what
the server lists in its EHLO reply (LIMITS, HELP's commands) must be what the
client reads from it.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import LocalProtocolError
from smtpcore.address import Mailbox
from smtpcore.smtp import (
    BadCommand,
    Bdat,
    Body,
    Command,
    Ehlo,
    EnvelopeId,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    Notify,
    OriginalRecipient,
    Rcpt,
    RejectedMessage,
    Reply,
    Ret,
    Rset,
    ServerConnection,
    ServerExtensions,
    StartTls,
    State,
    xtext,
)
from smtpcore.smtp._ext import BUILTIN
from smtpcore.testing import ConnectionPair, permissive_smtp_answer
from smtpcore.testing import strategies as sst

SENDER = Mailbox("a", "abc.example")
sizes = sst.chunk_sizes(max_size=40)


def _ready(pair: ConnectionPair) -> None:
    pair.send(Ehlo("client.test"))
    assert pair.client.state is State.READY


def _server_commands(pair: ConnectionPair) -> list[Command]:
    return [event for event in pair.server_events if isinstance(event, Command)]


# Narrow on purpose: the application's BDAT cuts (sst.chunkings cuts the network's).
@st.composite
def bdat_chunks(draw: st.DrawFn, content: bytes) -> list[bytes]:
    """``content`` cut where the client's application cuts it into BDAT chunks: any
    sizes, sometimes an empty ``BDAT 0 LAST`` at the end (RFC 3030 §2)."""
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(content) - 1)), max_size=5))))
    bounds = [0, *[cut for cut in cuts if cut < len(content)], len(content)]
    chunks = [content[a:b] for a, b in itertools.pairwise(bounds)]
    if not chunks or draw(st.booleans()):
        chunks.append(b"")
    return chunks


def _send_chunks(pair: ConnectionPair, chunks: list[bytes], *, pipelined: bool) -> list[Bdat]:
    """Each chunk as a BDAT and its octets: all in one write, or one chunk a write."""
    commands = [Bdat(len(chunk), last=n == len(chunks) - 1) for n, chunk in enumerate(chunks)]
    groups = [
        [command, *([MessageData(chunk)] if chunk else [])]
        for command, chunk in zip(commands, chunks, strict=True)
    ]
    if pipelined:
        pair.send(*[event for group in groups for event in group])
    else:
        for group in groups:
            pair.send(*group)
    return commands


# -- CHUNKING and BINARYMIME (RFC 3030) ---------------------------------------------


@settings(max_examples=60)
@given(
    sst.message_contents().flatmap(lambda c: st.tuples(st.just(c), bdat_chunks(c))),
    st.booleans(),
    sizes,
    sizes,
)
def test_bdat_chunks_arrive_as_sent_never_unstuffed(
    case: tuple[bytes, list[bytes]], pipelined: bool, up: list[int], down: list[int]
) -> None:
    """CHUNKING: text content in BDAT chunks reaches the server octet for octet (no dot
    is added or removed, RFC 3030 §2), with the very BDAT commands the client sent."""
    content, chunks = case
    pair = ConnectionPair(client_chunks=up, server_chunks=down)
    _ready(pair)
    assert pair.client.extensions.chunking
    mail = Mail(SENDER, {"BODY": Body.EIGHT_BIT_MIME} if not content.isascii() else {})
    pair.send(mail, Rcpt(Mailbox("b", "pqr.example")))
    sent = _send_chunks(pair, chunks, pipelined=pipelined)
    assert pair.messages == [content]
    assert [c for c in _server_commands(pair) if isinstance(c, Bdat)] == sent
    assert pair.client.state is State.READY
    result = pair.client.transaction
    assert result is not None and result.complete and len(result.delivered) == 1


_OCTETS = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(sst.SMUGGLING_SEQUENCES),
        st.sampled_from([b"\r", b"\n", b"\x00", b".", b"\r\n.\r\n", b"\r\n..\r\n", b"x" * 1500]),
    ),
    max_size=12,
).map(b"".join)


@settings(max_examples=80)
@given(
    _OCTETS.flatmap(lambda c: st.tuples(st.just(c), bdat_chunks(c))),
    st.booleans(),
    sizes,
    sizes,
)
def test_binarymime_octets_arrive_byte_identical(
    case: tuple[bytes, list[bytes]], pipelined: bool, up: list[int], down: list[int]
) -> None:
    """BINARYMIME: any octets (bare CR and LF, NUL, dots, a CRLF.CRLF, lines far over
    1000 octets) reach the server unchanged however they are chunked and cut: content
    declared binary has no line rules (RFC 3030 §3)."""
    content, chunks = case
    server = ServerConnection("mx.test", binarymime=True)
    pair = ConnectionPair(server=server, client_chunks=up, server_chunks=down)
    _ready(pair)
    assert pair.client.extensions.binary_mime
    mail = Mail(SENDER, {"BODY": Body.BINARYMIME})
    pair.send(mail, Rcpt(Mailbox("b", "pqr.example")))
    sent = _send_chunks(pair, chunks, pipelined=pipelined)
    assert pair.messages == [content]
    assert not [e for e in pair.server_events if isinstance(e, BadCommand | RejectedMessage)]
    commands = _server_commands(pair)
    assert commands[1] == mail and commands[1].params["BODY"] == "BINARYMIME"
    assert [c for c in commands if isinstance(c, Bdat)] == sent
    assert not server.binary_transaction  # the message ended the transaction


# -- DSN (RFC 3461, RFC 6533) -------------------------------------------------------

# Narrow on purpose: typed DSN values over any text the encoders must carry, for the
# machines' round trips (sst.rcpt_parameters draws the wire forms of mailboxes).
_notifies = st.sampled_from([Notify.NEVER]) | st.sets(
    st.sampled_from([Notify.SUCCESS, Notify.FAILURE, Notify.DELAY]), min_size=1
).map(lambda flags: Notify(sum(flag.value for flag in flags)))
# Code points an ORCPT may hold: RFC 6533 §3 carries no surrogates, RFC 3461 §4.2
# allows no control characters.
_carried = st.characters(exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp"])  # RFC 3461 §4.2
_orcpts = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=60).map(
        lambda address: OriginalRecipient("rfc822", address)
    ),
    st.text(_carried, min_size=1, max_size=30).map(lambda a: OriginalRecipient("utf-8", a)),
)
_envid_texts = st.text(
    st.characters(exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=30
).filter(lambda text: len(xtext(text)) <= 100)


def _unitext(address: str) -> str:
    """RFC 6533's ``utf-8-addr-unitext``: raw UTF-8 beyond ASCII, the rest as xtext does."""
    return "".join(
        char
        if char >= "\x80" or ("!" <= char <= "~" and char not in "+=\\")
        else f"\\x{{{ord(char):02X}}}"
        for char in address
    )


@st.composite
def _dsn_transactions(draw: st.DrawFn) -> tuple[Mail, list[Rcpt], list[OriginalRecipient]]:
    utf8 = draw(st.booleans())
    params: dict[str, object] = {}
    if draw(st.booleans()):
        params["RET"] = draw(st.sampled_from(Ret))
    if draw(st.booleans()):
        params["ENVID"] = EnvelopeId(draw(_envid_texts))
    if utf8:
        params["SMTPUTF8"] = True
    rcpts, orcpts = [], []
    for n in range(draw(st.integers(1, 3))):
        orcpt = draw(_orcpts)
        # In an SMTPUTF8 transaction a client may write a utf-8 address raw (RFC 6533 §3).
        raw = utf8 and orcpt.addr_type == "utf-8" and draw(st.booleans())
        value = f"utf-8;{_unitext(orcpt.address)}" if raw else orcpt
        rcpt_params = {"NOTIFY": draw(_notifies), "ORCPT": value}
        rcpts.append(Rcpt(Mailbox(f"r{n}", "pqr.example"), rcpt_params))
        orcpts.append(orcpt)
    return Mail(SENDER, params), rcpts, orcpts  # type: ignore[arg-type]


@settings(max_examples=80)
@given(_dsn_transactions(), sizes, sizes)
def test_typed_dsn_values_round_trip_through_the_machines(
    case: tuple[Mail, list[Rcpt], list[OriginalRecipient]], up: list[int], down: list[int]
) -> None:
    """DSN: ``Ret``, ``EnvelopeId``, ``Notify`` and ``OriginalRecipient`` (rfc822 and
    utf-8 addresses, written as utf-8-addr-xtext or, under SMTPUTF8, raw) sent by the
    client machine are read back equal by the server machine."""
    mail, rcpts, orcpts = case
    server = ServerConnection("mx.test", dsn=True)
    pair = ConnectionPair(server=server, client_chunks=up, server_chunks=down)
    _ready(pair)
    assert pair.client.extensions.dsn
    pair.send(mail, *rcpts)
    assert not [e for e in pair.server_events if isinstance(e, BadCommand)]
    got_mail, *got_rcpts = _server_commands(pair)[1:]
    assert isinstance(got_mail, Mail) and got_mail == mail
    assert got_mail.ret == mail.ret and got_mail.envid == mail.envid
    assert got_rcpts == rcpts
    for got, sent, orcpt in zip(got_rcpts, rcpts, orcpts, strict=True):
        assert isinstance(got, Rcpt)
        assert got.notify == sent.notify and got.orcpt == orcpt


def test_dsn_values_are_refused_where_dsn_is_not_in_force() -> None:
    pair = ConnectionPair()  # DSN off: not offered
    _ready(pair)
    for command in (
        Mail(SENDER, {"RET": Ret.FULL}),
        Mail(SENDER, {"ENVID": EnvelopeId("x")}),
    ):
        try:
            pair.client.send(command)
        except LocalProtocolError as exc:
            assert "DSN" in str(exc)
        else:
            raise AssertionError(f"{command} was sent to a server without DSN")


# -- REQUIRETLS (RFC 8689): offered over TLS only ------------------------------------


@settings(max_examples=40)
@given(
    sst.mail_parameters(extensions={"SIZE", "8BITMIME", "SMTPUTF8"}), st.booleans(), sizes, sizes
)
def test_requiretls_only_over_tls(
    others: object, implicit_tls: bool, up: list[int], down: list[int]
) -> None:
    """REQUIRETLS is neither offered nor read before TLS (the client refuses to send
    it, the server answers 555); over TLS, by STARTTLS or from the start, the
    parameter crosses with the others and is read back equal (RFC 8689 §4)."""
    server = ServerConnection("mx.test", requiretls=True, starttls=True, tls=implicit_tls)
    pair = ConnectionPair(server=server, client_chunks=up, server_chunks=down)
    _ready(pair)
    params = {**dict(others), "REQUIRETLS": True}  # type: ignore[call-overload]
    mail = Mail(SENDER, params)
    if not implicit_tls:
        assert "REQUIRETLS" not in pair.client.extensions
        try:
            pair.client.send(mail)
        except LocalProtocolError as exc:
            assert "REQUIRETLS" in str(exc)
        else:
            raise AssertionError("REQUIRETLS was sent to a server that did not offer it")
        pair.send(StartTls())
        pair.starttls()
        _ready(pair)
    assert "REQUIRETLS" in pair.client.extensions and "STARTTLS" not in pair.client.extensions
    pair.send(mail)
    assert _server_commands(pair)[-1] == mail
    assert pair.answers[-1].reply.code == 250


def test_the_server_refuses_requiretls_before_tls_whatever_the_client_does() -> None:
    server = ServerConnection("mx.test", requiretls=True, starttls=True)
    pair = ConnectionPair(server=server)
    _ready(pair)
    server.receive_data(b"MAIL FROM:<a@abc.example> REQUIRETLS\r\n")
    refused = server.next_event()
    assert isinstance(refused, BadCommand) and refused.reply.code == 555


# -- LIMITS (RFC 9422) ----------------------------------------------------------------


@settings(max_examples=40)
@given(st.integers(1, 6), st.integers(1, 15), sizes, sizes)
def test_limits_read_by_the_client_keep_every_recipient_accepted(
    rcpt_max: int, count: int, up: list[int], down: list[int]
) -> None:
    """The RCPTMAX the server lists is the one the client reads; the client's split of
    any recipient list then meets no ``452 Too many recipients``."""
    server = ServerConnection("mx.test", limits=True, max_recipients=rcpt_max)
    pair = ConnectionPair(server=server, client_chunks=up, server_chunks=down)
    _ready(pair)
    limits = pair.client.extensions.limits
    assert limits.rcpt_max == rcpt_max
    recipients = [Mailbox(f"r{n}", "pqr.example") for n in range(count)]
    groups = limits.split(recipients)
    assert [r for group in groups for r in group] == recipients
    for group in groups:
        pair.send(Mail(SENDER), *[Rcpt(r) for r in group])
        pair.send(Bdat(3, last=True), MessageData(b"x\r\n"))
    codes = [answer.reply.code for answer in pair.answers]
    assert 452 not in codes and len(pair.messages) == len(groups)


# -- HELP and EXPN ---------------------------------------------------------------------


@settings(max_examples=60)
@given(
    st.fixed_dictionaries(
        {
            "chunking": st.booleans(),
            "starttls": st.booleans(),
            "tls": st.booleans(),
            "auth_mechanisms": st.sampled_from([(), ("PLAIN",), ("CRAM-MD5",)]),
        }
    ),
    st.booleans(),
)
def test_help_lists_the_commands_the_ehlo_reply_offers(
    options: dict[str, object], extended: bool
) -> None:
    """HELP's commands and the EHLO reply agree: a command of an extension is listed by
    HELP exactly when the client, reading the EHLO reply, may send it; after HELO,
    none (RFC 5321 §4.1.1.8, §2.2.2)."""
    server = ServerConnection("mx.test", **options)  # type: ignore[arg-type]
    pair = ConnectionPair(server=server)
    pair.send(Ehlo("client.test") if extended else Helo("client.test"))
    offered = pair.client.extensions
    listed = set(server.commands())
    for verb, keyword in (("BDAT", "CHUNKING"), ("STARTTLS", "STARTTLS"), ("AUTH", "AUTH")):
        assert (verb in listed) == (keyword in offered), (verb, sorted(listed), list(offered))
    assert {"MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP"} <= listed
    if not extended:
        assert offered == ServerExtensions(offered.domain)


_arguments = st.from_regex(r"[!-~]([ -~]{0,40}[!-~])?", fullmatch=True)


@settings(max_examples=60)
@given(
    _arguments,
    st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60), max_size=4),
    st.sampled_from([250, 252, 502, 550, 553]),
    sizes,
    sizes,
)
def test_expn_and_help_round_trip(
    argument: str, lines: list[str], code: int, up: list[int], down: list[int]
) -> None:
    """EXPN and HELP: the argument the client sends is the one the server reads, and the
    (multi-line) reply the application gives is the one the client reads."""
    answer = Reply(code, lines or [""])
    help_answer = Reply(214, ["Commands:", *lines])

    def application(conn: ServerConnection, event: Event) -> Reply | list[Reply] | None:
        if isinstance(event, Expn):
            return answer
        if isinstance(event, Help):
            return help_answer
        return permissive_smtp_answer(conn, event)

    pair = ConnectionPair(answer=application, client_chunks=up, server_chunks=down)
    _ready(pair)
    pair.send(Expn(argument))
    pair.send(Help(argument))
    assert _server_commands(pair)[-2:] == [Expn(argument), Help(argument)]
    expn_reply, help_reply = (a.reply for a in pair.answers[-2:])
    assert pair.answers[-2].command == Expn(argument)
    assert (expn_reply.code, expn_reply.lines) == (code, answer.lines)
    assert (help_reply.code, help_reply.lines) == (214, help_answer.lines)


# -- what the EHLO reply lists, and nothing else, the machine accepts ---------------------

# A well-formed value for each parameter an entry brings (None: a bare keyword).
_VALID_MAIL = {
    "SIZE": "100",
    "BODY": "8BITMIME",
    "SMTPUTF8": None,
    "RET": "HDRS",
    "ENVID": "QQ314159",
    "AUTH": "<>",
    "REQUIRETLS": None,
}
_VALID_RCPT = {"NOTIFY": "NEVER", "ORCPT": "rfc822;b@pqr.example"}
_SWITCHES = (
    "size",
    "eight_bit_mime",
    "pipelining",
    "enhanced_status_codes",
    "smtputf8",
    "chunking",
    "binarymime",
    "dsn",
    "starttls",
    "limits",
    "requiretls",
)


def _refused(server: ServerConnection, lines: bytes) -> list[BadCommand]:
    """Feed ``lines`` (ending in RSET), accept what the machine lets through."""
    server.receive_data(lines)
    refused = []
    while not isinstance(event := server.next_event(), Rset):
        assert isinstance(event, Mail | Rcpt | BadCommand), event
        if isinstance(event, BadCommand):
            refused.append(event)
        server.send(event.reply if isinstance(event, BadCommand) else Reply(250, "OK"))
    server.send(Reply(250, "OK"))
    return refused


@settings(max_examples=100)
@given(
    st.fixed_dictionaries(
        {
            **{name: st.booleans() for name in _SWITCHES},
            "tls": st.booleans(),
            "auth_mechanisms": st.sampled_from([(), ("PLAIN",), ("CRAM-MD5", "PLAIN")]),
        }
    ),
    st.booleans(),
)
def test_the_machine_accepts_what_it_lists_and_nothing_else(
    options: dict[str, object], extended: bool
) -> None:
    """For any configuration, after EHLO or HELO: an extension's commands are known and
    its parameters read exactly when the EHLO reply lists it (issue 16: no keyword is
    listed and then refused, none used that was not listed)."""
    server = ServerConnection("mx.test", **options)  # type: ignore[arg-type]
    pair = ConnectionPair(server=server)
    pair.send(Ehlo("client.test") if extended else Helo("client.test"))
    offered = pair.client.extensions
    assert set(offered) <= {entry.keyword for entry in BUILTIN}
    for entry in BUILTIN:
        listed = entry.keyword in offered
        assert listed == server.in_force(entry.keyword), entry.keyword
        for verb in entry.verbs:
            assert (verb in server.commands()) == listed, verb
        for parameter in (*entry.mail_parameters, *entry.rcpt_parameters):
            keyword = parameter.keyword
            assert keyword in _VALID_MAIL or keyword in _VALID_RCPT, f"a valid {keyword}?"
            value = _VALID_MAIL.get(keyword, _VALID_RCPT.get(keyword))
            word = keyword if value is None else f"{keyword}={value}"
            if keyword in _VALID_MAIL:
                lines = f"MAIL FROM:<a@abc.example> {word}\r\n"
            else:
                lines = f"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example> {word}\r\n"
            refused = _refused(server, f"{lines}RSET\r\n".encode())
            assert (not refused) == listed, (keyword, refused)
