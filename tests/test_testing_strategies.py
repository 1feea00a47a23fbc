"""smtpcore.testing's strategies and pairs: valid by default, hostile on request.

Each strategy's valid values are accepted by the machines (a session plays
through a :class:`ConnectionPair` without a single refusal), its hostile
values are refused with a reply rather than an exception, and the package
stays out of ``import smtpcore``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument, NoSuchExample

from smtpcore import NEED_DATA, PAUSED, ProtocolError, RemoteProtocolError, smtp
from smtpcore.address import AddressError, Mailbox, parse_mailbox, parse_path
from smtpcore.smtp import BadCommand, ClientConnection, RejectedMessage, Reply, ServerConnection
from smtpcore.smtp._commands import chunk_after, format_command
from smtpcore.testing import ConnectionPair, run_server
from smtpcore.testing import strategies as sst

SESSIONS = settings(max_examples=40)


def test_import_smtpcore_does_not_import_hypothesis() -> None:
    code = (
        "import sys, smtpcore, smtpcore.smtp, smtpcore.pop3, smtpcore.asyncio\n"
        "assert 'hypothesis' not in sys.modules, 'hypothesis imported'\n"
        "assert 'smtpcore.testing' not in sys.modules, 'smtpcore.testing imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


_DRAW_EACH_STRATEGY = """
import sys
import time
from hypothesis import given, settings
from hypothesis.internal.conjecture import data, engine
from smtpcore import pop3
from smtpcore.testing import strategies as sst

# The draws are timed by this process's CPU time, not by the wall clock, which on a
# busy machine counts other processes' turns on the CPU as this one's draws.
assert data.time is engine.time is time, "Hypothesis no longer reads time.perf_counter"
time.perf_counter = time.process_time
settings.load_profile("default")
STRATEGIES = {
    name: getattr(sst, name)()
    for name in sst.__all__
    if name[0].islower() and name not in ("chunkings", "hostile_bytes", "pop3_responses")
}
STRATEGIES["chunkings"] = sst.chunkings(b"EHLO a.test\\r\\nQUIT\\r\\n")
STRATEGIES["hostile_bytes"] = sst.hostile_bytes(sent_by="smtp-client")
STRATEGIES["pop3_responses"] = sst.pop3_responses(pop3.Capa())
STRATEGIES["sessions(hostile=True)"] = sst.sessions(hostile=True)
failed = []
for name, strategy in STRATEGIES.items():
    @settings(max_examples=50)
    @given(strategy)
    def draw(value):
        pass
    try:
        draw()
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
if failed:
    sys.exit("\\n\\n".join(failed))
"""


@pytest.mark.timeout(330)  # its subprocess's own 300 s: ~5 s alone, 136 s on a loaded machine
def test_every_strategy_passes_the_default_health_checks_from_a_fresh_start(
    tmp_path: Path,
) -> None:
    """Fifty examples of each strategy, under Hypothesis's default settings, in a
    directory with no ``.hypothesis/`` cache yet: what a user's first test meets.
    (A regex drawn without an alphabet took seconds there, building a table of
    every UTF-8 character: ``Input generation is slow``.) Slow means the process's
    own CPU time past Hypothesis's 1 s: the heaviest first draws take about 0.3 s of
    it, and took 1.2 s of wall clock (failing) under two CPU-bound processes."""
    env = {**os.environ, "HYPOTHESIS_STORAGE_DIRECTORY": str(tmp_path / ".hypothesis")}
    run = subprocess.run(
        [sys.executable, "-c", _DRAW_EACH_STRATEGY],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr


@given(sst.mailboxes(utf8=True))
def test_mailboxes_round_trip(mailbox: Mailbox) -> None:
    assert parse_mailbox(str(mailbox)) == mailbox
    assert len(mailbox.ascii_domain.encode()) <= 255


@given(sst.paths(utf8=True))
def test_valid_paths_parse(path: str) -> None:
    parse_path(path)


@given(sst.paths(hostile=True))
def test_hostile_paths_raise_only_address_errors(path: str) -> None:
    with contextlib.suppress(AddressError):
        parse_path(path, allow_postmaster=True)


@given(sst.mailboxes(at_limits=True))
def test_at_limit_mailboxes_are_valid(mailbox: Mailbox) -> None:
    """At and past RFC 5321 §4.5.3.1's 64 and 256 octets (sizes a receiver must take,
    not limits), within the domain's 255 (RFC 1035 §2.3.4)."""
    assert parse_path(f"<{mailbox}>") == mailbox
    assert len(mailbox.ascii_domain.encode()) <= 255


def _server(**options: object) -> ServerConnection:
    conn = ServerConnection("mx.test", dsn=True, **options)  # type: ignore[arg-type]
    conn.send(Reply(220, "mx.test ESMTP"))
    run_server(conn, b"EHLO client.test\r\n")
    return conn


@given(sst.mail_parameters(extensions=sst.EXTENSIONS - {"AUTH"}), sst.rcpt_parameters())
def test_valid_parameters_are_accepted(mail: smtp.Parameters, rcpt: smtp.Parameters) -> None:
    conn = _server()
    utf8 = mail.get("SMTPUTF8", "") is None
    line = f"MAIL FROM:<john@abc.example> {mail}".rstrip() + "\r\n"
    line += f"RCPT TO:<{'jöhn' if utf8 else 'john'}@pqr.example> {rcpt}".rstrip() + "\r\n"
    events, _ = run_server(conn, line.encode())
    assert not [e for e in events if isinstance(e, BadCommand)], events


MORE_EXTENSIONS = {"8BITMIME", "CHUNKING", "BINARYMIME", "REQUIRETLS", "MT-PRIORITY"}


def _more_server() -> ServerConnection:
    """A server over TLS offering BINARYMIME, REQUIRETLS and (as an extra) MT-PRIORITY."""
    from smtpcore.smtp._ext.announced import MT_PRIORITY

    conn = ServerConnection(
        "mx.test", binarymime=True, requiretls=True, tls=True, extra_extensions=[MT_PRIORITY]
    )
    conn.send(Reply(220, "mx.test ESMTP"))
    run_server(conn, b"EHLO client.test\r\n")
    return conn


@given(sst.mail_parameters(extensions=MORE_EXTENSIONS))
def test_parameters_of_more_extensions_are_accepted(mail: smtp.Parameters) -> None:
    events, out = run_server(_more_server(), f"MAIL FROM:<john@abc.example> {mail}\r\n".encode())
    assert not [e for e in events if isinstance(e, BadCommand)], (events, out)
    assert out.startswith(b"250 "), out


@pytest.mark.parametrize(
    ("extension", "wanted"),
    [("BINARYMIME", ("BODY", "BINARYMIME")), ("REQUIRETLS", ("REQUIRETLS", None))]
    + [("MT-PRIORITY", ("MT-PRIORITY", value)) for value in ("-9", "+3", "9")],
)
def test_each_extension_offered_has_its_parameter_drawn(
    extension: str, wanted: tuple[str, str | None]
) -> None:
    key, value = wanted
    drawn = find(
        sst.mail_parameters(extensions={extension}),
        lambda params: key in params and params[key] == value,
    )
    assert drawn[key] == value


@given(
    sst.mail_parameters(extensions={"\u017fIZE", "D\u017fN", "SMTPUTF8"}),
    sst.rcpt_parameters(extensions={"D\u017fN"}),
)
def test_extension_names_are_upper_cased_in_ascii_alone(
    mail: smtp.Parameters, rcpt: smtp.Parameters
) -> None:
    """SIZE and DSN written with a long s (U+017F, which ``str.upper()`` makes an S) are
    not offered, as ``ServerExtensions`` reads them: none of their parameters is drawn."""
    assert not {"SIZE", "RET", "ENVID"} & set(mail) and not {"NOTIFY", "ORCPT"} & set(rcpt)


@given(sst.xclients() | sst.xforwards())
def test_forwarding_commands_are_accepted_by_a_trusting_server(
    command: smtp.Xclient | smtp.Xforward,
) -> None:
    conn = ServerConnection("mx.test", xclient=True, xforward=True, trusted_forwarder=True)
    conn.send(Reply(220, "mx.test ESMTP"))
    run_server(conn, b"EHLO proxy.test\r\n")
    line = format_command(command)
    events, out = run_server(conn, line)
    assert events == [command], (line, out)
    assert out[:4] in (b"220 ", b"250 "), out
    # On the wire: NAME not all digits, no final dot; ADDR IPv4, or IPV6: and IPv6.
    assert not re.search(rb"NAME=[0-9.]+[ \r]|NAME=[^ ]*\.[ \r]", line), line
    for address in re.findall(rb"ADDR=([^ \r]+)", line):
        if address != b"[UNAVAILABLE]":
            assert address.count(b":") == 0 or address.upper().startswith(b"IPV6:"), line


def _postfix_ipv4(text: str) -> bool:
    """Postfix's valid_ipv4_hostaddr() (util/valid_hostname.c): four decimal octets,
    and no first octet 0 but in 0.0.0.0."""
    octets = text.split(".")
    if len(octets) != 4 or not all(re.fullmatch(r"[0-9]+", o) and int(o) <= 255 for o in octets):
        return False
    return int(octets[0]) != 0 or set(text) <= {"0", "."}


def _postfix_ipv6(text: str) -> bool:
    """Postfix's valid_ipv6_hostaddr(), its loop ported as it is: a dotted end is
    read by valid_ipv4_hostaddr()."""
    null_field = field = length = i = 0
    while True:
        char = text[i : i + 1]
        if not char:
            return field >= 2 and (length > 0 or null_field == field - 1)
        if char == ".":
            return 2 <= field <= 6 and _postfix_ipv4(text[i - length :])
        if char == ":":
            if field == 0 and length == 0 and re.match(r"[A-Za-z0-9]", text[i + 1 : i + 2]):
                return False
            field, i, length = field + 1, i + 1, 0
            if field > 7:
                return False
            if text[i : i + 1] == ":":
                if null_field:
                    return False
                null_field = field
            continue
        length = len(re.match(r"[0-9A-Fa-f]*", text[i:])[0])  # type: ignore[index]  # always matches
        if not 0 < length <= 4:
            return False
        i += length


def _postfix_refusal(line: str) -> str | None:
    """Why current Postfix answers ``line`` 501 (smtpd.c, xclient_cmd and
    xforward_cmd), or for XFORWARD what its README's note 1 forbids; None if neither."""
    verb, *words = line.split(" ")
    for word in words:
        name, _, raw = word.partition("=")
        if not raw or len(raw) > 255:
            return f"{name}: empty, or over 255 octets as xtext"
        octets = re.sub(rb"\+([0-9A-F]{2})", lambda m: bytes([int(m[1], 16)]), raw.encode())
        text = octets.decode("latin-1")
        word_upper = text.upper()
        unavailable = word_upper == "[UNAVAILABLE]"
        if verb == "XFORWARD" and not all(33 <= octet <= 126 for octet in octets):
            return f"{name}: a control, non-ASCII or space (XFORWARD_README note 1)"
        if name == "NAME":
            numeric = re.fullmatch(r"[0-9.]+", text)
            label = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
            hostname = re.fullmatch(rf"{label}(?:\.{label})*", text) and len(text) <= 255
            tempunavail = verb == "XCLIENT" and word_upper == "[TEMPUNAVAIL]"
            ok = unavailable or tempunavail or (hostname and not numeric)
        elif name in ("ADDR", "DESTADDR"):
            ipv6 = word_upper.startswith("IPV6:")
            ok = unavailable or (_postfix_ipv6(text[5:]) if ipv6 else _postfix_ipv4(text))
        elif name in ("PORT", "DESTPORT"):
            ok = unavailable or re.fullmatch(r"[0-9]{1,5}", text) is not None
        elif name == "PROTO" and verb == "XCLIENT":
            ok = word_upper in ("SMTP", "ESMTP")
        elif name == "PROTO":
            ok = unavailable or len(octets) <= 64
        elif name == "SOURCE":
            ok = word_upper in ("[UNAVAILABLE]", "LOCAL", "REMOTE")
        else:
            ok = name in ("HELO", "LOGIN", "IDENT")
        if not ok:
            return f"Bad {name} syntax: {text}"
    return None


def test_the_postfix_rules_port_refuses_what_postfix_refuses() -> None:
    assert _postfix_ipv4("0.0.0.0") and _postfix_ipv4("10.0.0.1")
    assert not _postfix_ipv4("0.1.2.3") and not _postfix_ipv4("1.2.3")
    assert _postfix_ipv6("::") and _postfix_ipv6("2001:db8::1") and _postfix_ipv6("::ffff:1.2.3.4")
    assert not _postfix_ipv6("::ffff:0.0.0.1") and not _postfix_ipv6("1::2:")
    for refused in (
        "XCLIENT ADDR=0.0.0.1",
        "XCLIENT PROTO=[UNAVAILABLE]",
        "XFORWARD PROTO=" + "p" * 65,
        "XFORWARD HELO=j+C3+B6rg",
        "XCLIENT LOGIN=" + "+2B" * 86,
        "XFORWARD NAME=123",
    ):
        assert _postfix_refusal(refused) is not None, refused
    assert _postfix_refusal("XCLIENT ADDR=IPV6:::1 NAME=x.example PORT=25 PROTO=esmtp") is None


@settings(max_examples=3000, derandomize=True, database=None)
@given(sst.xclients() | sst.xforwards())
def test_forwarding_commands_are_what_current_postfix_takes(
    command: smtp.Xclient | smtp.Xforward,
) -> None:
    line = command.to_line()
    assert _postfix_refusal(line) is None, line


@pytest.mark.parametrize("extension", ["XCLIENT", "XFORWARD"])
def test_commands_draws_the_forwarding_command_of_an_extension_offered(extension: str) -> None:
    command = find(
        sst.commands(extensions={extension}),
        lambda c: isinstance(c, smtp.Xclient | smtp.Xforward),
    )
    assert command.verb == extension


@SESSIONS
@given(sst.sessions(extensions={"PIPELINING", "8BITMIME", "STARTTLS", "REQUIRETLS"}))
def test_sessions_ask_for_requiretls_only_over_tls(session: sst.ClientSession) -> None:
    pair = ConnectionPair(server=ServerConnection("mx.test", starttls=True, requiretls=True))
    pair.play(session)
    assert not [e for e in pair.server_events if isinstance(e, BadCommand | RejectedMessage)]
    assert pair.messages == list(session.messages)


@settings(max_examples=400)  # cheap draws; enough to reach every hostile value
@given(sst.mail_parameters(hostile=True), sst.rcpt_parameters(hostile=True))
def test_hostile_parameters_can_always_be_drawn(
    mail: smtp.Parameters, rcpt: smtp.Parameters
) -> None:
    """Hostile values are refused by the server, never by the strategy itself:
    ``ENVID=a=b`` once raised LocalProtocolError while drawing."""
    assert isinstance(mail, smtp.Parameters) and isinstance(rcpt, smtp.Parameters)


@given(st.lists(sst.command_lines(hostile=True), max_size=10))
def test_hostile_lines_get_replies_not_exceptions(lines: list[bytes]) -> None:
    conn = _server()
    try:
        for line in lines:
            events, _ = run_server(conn, line)
            if any(isinstance(event, smtp.ConnectionClosed) for event in events):
                return
    except RemoteProtocolError:
        pass


@SESSIONS
@given(sst.sessions(), sst.chunk_sizes(), sst.chunk_sizes())
def test_sessions_play_through_a_pair_without_a_refusal(
    session: sst.ClientSession, up: list[int], down: list[int]
) -> None:
    server = ServerConnection(
        "mx.test", starttls=True, dsn=True, auth_mechanisms=list(sst.AUTH_MECHANISMS)
    )
    pair = ConnectionPair(server=server, client_chunks=up, server_chunks=down)
    pair.play(session)
    refused = [e for e in pair.server_events if isinstance(e, BadCommand | RejectedMessage)]
    assert not refused
    assert pair.messages == list(session.messages)
    assert pair.client.state is smtp.State.CLOSED


_LIMITED = {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN"}


@SESSIONS
@given(
    st.tuples(st.integers(1, 3), st.integers(0, 3)).flatmap(
        lambda limits: st.tuples(
            st.just(limits),
            sst.sessions(
                extensions=_LIMITED, max_recipients=limits[0], max_transactions=limits[1]
            ),
        )
    ),
    sst.chunk_sizes(),
)
def test_sessions_keep_within_the_limits_a_server_announces(
    case: tuple[tuple[int, int], sst.ClientSession], up: list[int]
) -> None:
    """A server that announces ``LIMITS RCPTMAX=n`` (RFC 9422 §4.2) answered drawn
    sessions with 452, as they had up to four recipients a transaction whatever
    the server took: drawn within its limits, every command is accepted."""
    (rcpt_max, mail_max), session = case
    server = ServerConnection("mx.test", dsn=True, max_recipients=rcpt_max, limits=True)
    assert f"LIMITS RCPTMAX={rcpt_max}" in server.extensions()
    pair = ConnectionPair(server=server, client_chunks=up)
    pair.play(session)
    assert [a.reply for a in pair.answers if a.reply.code >= 400] == []
    assert pair.messages == list(session.messages)
    mails = [i for i, item in enumerate(session.events) if isinstance(item, smtp.Mail)]
    assert len(mails) <= mail_max
    for start, end in itertools.pairwise([*mails, len(session.events)]):
        rcpts = [item for item in session.events[start:end] if isinstance(item, smtp.Rcpt)]
        assert 1 <= len(rcpts) <= rcpt_max


def test_sessions_refuse_limits_no_session_can_keep() -> None:
    """A transaction needs a recipient: no session keeps within ``max_recipients=0``."""
    with pytest.raises(InvalidArgument, match="max_recipients"):
        sst.sessions(max_recipients=0)
    with pytest.raises(InvalidArgument, match="max_transactions"):
        sst.sessions(max_transactions=-1)


@pytest.mark.parametrize("seed", [7, 11])
def test_a_failing_session_shrinks_to_the_one_transaction_that_fails(seed: int) -> None:
    """A property that fails on a message holding ``LF.LF`` shrinks to that message
    alone, though Hypothesis first found it after another transaction: a transaction
    drawn as a dozen draws of its own could not be deleted in one go, and for these
    seeds an empty message before the failing one stayed.

    The shrinker starts from the first failure found, so the search is made to find
    one with a clean message first (until then only such a session fails); from
    there on, any session with ``LF.LF`` fails. Content is one of three bodies, so
    the search is cheap."""
    smuggles = b"\n.\n"
    first_failures: list[sst.ClientSession] = []

    def fails(session: sst.ClientSession) -> bool:
        holding = [smuggles in message for message in session.messages]
        if first_failures:
            return any(holding)
        if len(holding) >= 2 and not holding[0] and any(holding):
            first_failures.append(session)
            return True
        return False

    shrunk = find(
        sst.sessions(
            extensions={"PIPELINING", "8BITMIME", "SIZE"},
            content=st.sampled_from([b"", b"x\r\n", smuggles]),
        ),
        fails,
        settings=settings(
            max_examples=300,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
        random=random.Random(seed),
    )
    first = first_failures[0]
    assert len(first.messages) >= 2, first
    assert smuggles not in first.messages[0], first
    assert shrunk.messages == (smuggles,), shrunk
    assert len(shrunk.groups) == 4, shrunk.groups  # EHLO, envelope and DATA, content, QUIT


@SESSIONS
@given(sst.sessions(extensions={"8BITMIME", "CHUNKING"}, lmtp=True))
def test_narrowed_lmtp_sessions_without_pipelining(session: sst.ClientSession) -> None:
    assert all(
        len(group) == 1
        or not isinstance(group[0], smtp.Command)
        or isinstance(group[0], smtp.Bdat)
        for group in session.groups
    )
    server = ServerConnection("lmtp.test", lmtp=True, pipelining=False, smtputf8=False)
    client = ClientConnection("client.test", lmtp=True)
    pair = ConnectionPair(client, server)
    pair.play(session)
    assert pair.messages == list(session.messages)
    assert not any(isinstance(e, BadCommand) for e in pair.server_events)


@SESSIONS
@given(
    sst.sessions(
        extensions={"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING"},
        content=sst.message_contents(smuggling=True),
    ),
    sst.chunk_sizes(),
)
def test_smuggling_content_is_one_message_per_transaction(
    session: sst.ClientSession, up: list[int]
) -> None:
    pair = ConnectionPair(client_chunks=up)
    pair.play(session)
    # Each message is delivered or refused whole (NUL, say): never split in two.
    refused = [e for e in pair.server_events if isinstance(e, RejectedMessage)]
    assert len(pair.messages) + len(refused) == len(session.messages)
    assert not any(isinstance(e, BadCommand) for e in pair.server_events)


_BINARY = {"PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "CHUNKING", "BINARYMIME"}


def _transactions(session: sst.ClientSession) -> list[tuple[smtp.Event | bytes, ...]]:
    """The session's items from each MAIL to the next (or to the end)."""
    events = session.events
    starts = [i for i, item in enumerate(events) if isinstance(item, smtp.Mail)]
    return [events[a:b] for a, b in itertools.pairwise([*starts, len(events)])]


def _binary(transaction: tuple[smtp.Event | bytes, ...]) -> bool:
    mail = transaction[0]
    return isinstance(mail, smtp.Mail) and mail.params.get("BODY") == "BINARYMIME"


@SESSIONS
@given(sst.sessions(extensions=_BINARY), sst.chunk_sizes())
def test_binarymime_sessions_deliver_their_octets_with_bdat_only(
    session: sst.ClientSession, up: list[int]
) -> None:
    """RFC 3030 §3: a BODY=BINARYMIME transaction sends its content with BDAT, never
    DATA, and the server machine gets every octet as sent (no dot, no line rule)."""
    pair = ConnectionPair(server=ServerConnection("mx.test", binarymime=True), client_chunks=up)
    pair.play(session)
    assert not [e for e in pair.server_events if isinstance(e, BadCommand | RejectedMessage)]
    assert [a.reply for a in pair.answers if a.reply.code >= 400] == []
    assert pair.messages == list(session.messages)
    for transaction in filter(_binary, _transactions(session)):
        assert not any(isinstance(item, smtp.Data) for item in transaction)
        assert any(isinstance(item, smtp.Bdat) and item.last for item in transaction)


def _bare_lf(data: bytes) -> bool:
    return any(data[i] == 0x0A and (i == 0 or data[i - 1] != 0x0D) for i in range(len(data)))


def test_binarymime_sessions_draw_content_only_binary_may_hold() -> None:
    """Sessions used to take BODY out of the MAIL parameters: no BINARYMIME
    transaction, and no content with NUL, bare LF and 8-bit octets, was ever drawn."""

    def binary_octets(session: sst.ClientSession) -> bool:
        return any(
            b"\x00" in data and _bare_lf(data) and not data.isascii()
            for transaction in filter(_binary, _transactions(session))
            for data in [b"".join(i.data for i in transaction if isinstance(i, smtp.MessageData))]
        )

    # Such content is one draw in a few dozen (NUL, a bare LF and 8-bit octets in one
    # message): searched for long enough, and the same way every run.
    no_shrinking = settings(
        phases=[Phase.generate], database=None, max_examples=2000, derandomize=True
    )
    session = find(sst.sessions(extensions=_BINARY), binary_octets, settings=no_shrinking)
    pair = ConnectionPair(server=ServerConnection("mx.test", binarymime=True))
    pair.play(session)
    assert pair.messages == list(session.messages)


def test_binarymime_is_played_only_with_chunking() -> None:
    """BINARYMIME needs BDAT (RFC 3030 §3): without CHUNKING no transaction declares it."""
    with pytest.raises(NoSuchExample):
        find(
            sst.sessions(extensions={"8BITMIME", "BINARYMIME"}),
            lambda session: any(map(_binary, _transactions(session))),
            settings=settings(max_examples=100, database=None),
        )


@given(st.binary(max_size=200).flatmap(lambda data: st.tuples(st.just(data), sst.chunkings(data))))
def test_chunkings_join_back(case: tuple[bytes, list[bytes]]) -> None:
    data, pieces = case
    assert b"".join(pieces) == data
    assert all(pieces)


@given(st.lists(sst.reply_lines(hostile=True), max_size=6))
def test_hostile_replies_raise_only_protocol_errors(writes: list[bytes]) -> None:
    client = ClientConnection("client.test", max_reply_lines=100)
    client.receive_data(b"220 ready\r\n")
    client.next_event()
    client.send(smtp.Ehlo("client.test"))
    try:
        for write in writes:
            client.receive_data(write)
            while client.next_event() not in (NEED_DATA, PAUSED):
                if client.state is smtp.State.CLOSED:
                    return
            assert client.buffered <= client.max_buffered + len(write)
    except ProtocolError:
        pass


@SESSIONS
@given(
    st.booleans().flatmap(lambda text: sst.server_transcripts(shutdown=True, text=text)),
    st.data(),
)
def test_a_client_machine_reads_a_server_transcript_however_it_is_cut(
    transcript: sst.ServerTranscript, data: st.DataObject
) -> None:
    """The client sends the session's groups and reads each group's replies, cut as
    the network may cut them: it gets every reply, in order, and a 421 ends it; with
    the replies' own text too (``text=False``), whose AUTH replies carried a status
    the EHLO reply did not offer (RFC 2034 §3), which the client read as text."""
    client = ClientConnection("client.test")
    got: list[smtp.Event] = []

    def read(write: bytes) -> None:
        for piece in data.draw(sst.chunkings(write)):
            client.receive_data(piece)
            while not isinstance(event := client.next_event(), smtp.ConnectionClosed):
                if event is NEED_DATA or event is PAUSED:
                    break
                got.append(event)
                if client.state is smtp.State.TLS_PENDING:
                    client.tls_started()

    writes = transcript.writes()
    read(writes[0])
    for group, write in zip(transcript.session.groups, writes[1:], strict=False):
        if client.state is smtp.State.CLOSED:
            break
        for event in group:
            assert not isinstance(event, bytes)
            client.send(event)
        read(write)
    expected = [transcript.greeting, *(reply for group in transcript.replies for reply in group)]
    assert [event for event in got if isinstance(event, Reply)] == expected
    if expected[-1].code == 421:
        assert client.state is smtp.State.CLOSED


def test_hostile_bytes_names_the_sender() -> None:
    with pytest.raises(ValueError, match="sent_by"):
        sst.hostile_bytes(sent_by="imap-client")


@given(sst.rcpt_parameters(extensions={"DSN"}))
def test_orcpt_names_its_address_type_as_rfc_6533_says(params: smtp.Parameters) -> None:
    """A UTF-8 address once went out as ``rfc822;`` xtext, which holds ASCII only."""
    value = params.get("ORCPT")
    if value is None:
        return
    original = smtp.OriginalRecipient.parse(value)
    assert original.addr_type == ("rfc822" if original.address.isascii() else "utf-8")
    parse_mailbox(original.address)


@given(
    sst.parameter_texts(extensions=sst.EXTENSIONS - {"AUTH"}),
    sst.parameter_texts(rcpt=True),
)
def test_valid_parameter_texts_are_accepted(mail: str, rcpt: str) -> None:
    conn = _server()
    line = f"MAIL FROM:<john@abc.example>{mail}\r\nRCPT TO:<jöhn@pqr.example>{rcpt}\r\n"
    if " SMTPUTF8" not in mail:
        line = line.replace("jöhn", "john")
    events, _ = run_server(conn, line.encode())
    assert not [e for e in events if isinstance(e, BadCommand)], events


@given(st.lists(sst.parameter_texts(hostile=True), min_size=1, max_size=5))
def test_hostile_parameter_texts_get_one_reply_a_line(texts: list[str]) -> None:
    conn = _server()
    for params in texts:
        line = f"RCPT TO:<brendon@pqr.example>{params}\r\n".encode()
        events, out = run_server(conn, line)
        assert len(events) == 1 and out.count(b"\r\n") == 1, (line, out)


@pytest.mark.parametrize("utf8", [True, False])
def test_domains_draw_what_idna_2008_keeps_and_the_parser_takes_it(utf8: bool) -> None:
    """ß, final sigma and ZWJ (UTS #46 §6) are in real domain names: the strategies
    draw them, in U-labels with ``utf8`` and as their IDNA 2008 A-labels (``xn--strae-oqa``,
    never the ``idna`` codec's ``strasse``) without, and a server takes both."""
    kept = "\u00df\u03c2\u200d"
    if utf8:
        domain = find(sst.domains(utf8=True), lambda name: any(c in kept for c in name))
    else:
        domain = find(sst.domains(), lambda name: "xn--strae-oqa" in name)
    conn = _server()
    events, _ = run_server(conn, f"MAIL FROM:<john@{domain}> SMTPUTF8\r\n".encode())
    assert not any(isinstance(e, BadCommand) for e in events), events


def test_domains_draw_a_labels_that_stand_for_u_labels() -> None:
    """IDNA's ASCII form (RFC 5890) travels without SMTPUTF8: a server must take it."""
    domain = find(sst.domains(), lambda name: "xn--" in name)
    label = next(label for label in domain.split(".") if label.startswith("xn--"))
    assert not label.removeprefix("xn--").encode().decode("punycode").isascii()
    conn = _server()
    events, _ = run_server(conn, f"MAIL FROM:<john@{domain}>\r\n".encode())
    assert not any(isinstance(e, BadCommand) for e in events)


# -- what the strategies draw is what they say ----------------------------------------


@settings(max_examples=400)  # cheap examples; a UTF-8 sender is one draw in a few dozen
@given(sst.commands(extensions={"SMTPUTF8"}))
def test_a_drawn_mail_with_a_utf8_sender_asks_for_smtputf8(command: smtp.Command) -> None:
    """RFC 6531 §3.4: a UTF-8 reverse-path needs the SMTPUTF8 parameter; without it
    no state makes the MAIL valid."""
    if isinstance(command, smtp.Mail) and command.sender is not None:
        assert command.sender.is_ascii or "SMTPUTF8" in command.params


@given(sst.replies())
def test_reply_text_is_printable_ascii(reply: Reply) -> None:
    """RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126)."""
    assert all(line.isascii() and line.isprintable() for line in reply.lines)


def test_a_reply_is_due_for_each_crlf_line_of_a_hostile_item() -> None:
    """Only CRLF ends a line (RFC 5321 §2.3.8): a CRLF inside a path makes two lines,
    and a bare LF none."""
    session = sst.ClientSession(
        ((b"MAIL FROM:<\r\n>\r\n", b"NOOP\nNOOP\r\n", smtp.Noop()),), frozenset()
    )
    [due] = session.answer_points()
    [write] = session.writes()
    assert due == [13, 16, 27, 33] and len(write) == 33
    conn = _server()
    _, out = run_server(conn, write)
    assert len(out.splitlines()) == len(due)


@settings(max_examples=400)
@given(sst.command_lines(hostile=True))
def test_every_command_line_ends_with_its_one_crlf(line: bytes) -> None:
    """A line that CRLF does not end would run into the next one, and its reply would
    be due nowhere (RFC 5321 §2.3.8)."""
    assert line.endswith(b"\r\n")


def test_every_fixed_hostile_line_ends_with_crlf() -> None:
    """The same for the fixed list the strategies sample (a draw in two hundred)."""
    from smtpcore.testing._smtp_lines import _HOSTILE_LINES

    assert all(line.endswith(b"\r\n") for line in _HOSTILE_LINES)


@SESSIONS
@given(sst.sessions(extensions={"PIPELINING", "SIZE", "8BITMIME", "CHUNKING"}, hostile=True))
def test_hostile_sessions_get_the_replies_their_answer_points_count(
    session: sst.ClientSession,
) -> None:
    """Each hostile item is whole lines: the server machine answers each group's write
    with exactly as many replies as ``answer_points`` says are due."""
    conn = ServerConnection("mx.test", chunking=True)
    conn.send(Reply(220, "mx.test ESMTP"))
    for write, due in zip(session.writes(), session.answer_points(), strict=True):
        events, out = run_server(conn, write)
        if any(isinstance(e, RejectedMessage | smtp.ConnectionClosed) for e in events):
            return  # refused content, or the session's end: what follows is not replied to
        finals = [line for line in out.split(b"\r\n")[:-1] if line[3:4] != b"-"]
        assert len(finals) == len(due), (write, out)


def test_permissive_answer_refuses_rejected_lmtp_content_once_per_recipient() -> None:
    """RFC 2033 §4.2: one reply per accepted recipient, a refusal too."""
    conn = ServerConnection("lmtp.test", lmtp=True)
    conn.send(Reply(220, "lmtp.test LMTP"))
    session = (
        b"LHLO client.test\r\nMAIL FROM:<a@abc.example>\r\n"
        b"RCPT TO:<b@pqr.example>\r\nRCPT TO:<c@pqr.example>\r\nDATA\r\n"
    )
    run_server(conn, session)
    events, out = run_server(conn, b"Subject: x\r\n\r\nnul \x00\r\n.\r\n")
    assert isinstance(events[-1], RejectedMessage)
    assert out.count(b"\r\n") == 2 and out.startswith(b"550")
    assert conn.state is smtp.State.READY


def _replies_in(conn: ServerConnection, line: bytes) -> list[bytes]:
    """The final reply lines ``conn`` writes for ``line``."""
    _, out = run_server(conn, line)
    return [reply for reply in out.split(b"\r\n")[:-1] if reply[3:4] != b"-"]


@settings(max_examples=200)  # cheap examples: reach the fixed lists and the built ones
@given(st.data())
def test_broken_lines_are_refused_in_any_state(data: st.DataObject) -> None:
    """What ``command_lines(hostile=True)`` and ``sessions(hostile=True)`` slip in as
    broken is refused with a 5xx, before MAIL and inside a transaction: a lower-case
    verb (RFC 5321 §2.4) or a source route (§4.1.1.3) once passed for broken."""
    from smtpcore.testing._smtp_lines import _broken_lines

    line = data.draw(_broken_lines(sst.EXTENSIONS))
    for opening in (b"", b"MAIL FROM:<>\r\nRCPT TO:<bob@pqr.example>\r\n"):
        conn = _server(chunking=True)
        run_server(conn, opening)
        if chunk_after(line) is None:  # a BDAT whose chunk no one can find the end of
            with pytest.raises(RemoteProtocolError) as ended:
                _replies_in(conn, line)
            assert ended.value.reply_hint is not None and ended.value.reply_hint.code == 421
            continue
        replies = _replies_in(conn, line)
        assert replies and all(reply.startswith(b"5") for reply in replies), (line, replies)


@settings(max_examples=20)  # whole sessions: slow draws
@given(sst.sessions(extensions={"PIPELINING", "SIZE", "8BITMIME", "DSN"}, hostile=True))
def test_hostile_sessions_deliver_what_their_valid_commands_say(
    session: sst.ClientSession,
) -> None:
    """Every broken line is refused: none adds a transaction or a recipient, the
    server sees the session's own envelopes, and a 5xx answers each broken line."""
    conn = ServerConnection("mx.test", dsn=True)
    conn.send(Reply(220, "mx.test ESMTP"))
    seen: list[smtp.Event] = []
    for write in session.writes():
        events, _ = run_server(conn, write)
        seen += events
    envelope = (smtp.Mail, smtp.Rcpt)
    assert [e for e in seen if isinstance(e, envelope)] == [
        item for item in session.events if isinstance(item, envelope)
    ]
    broken = sum(isinstance(item, bytes) for item in session.events)
    assert sum(isinstance(e, BadCommand) for e in seen) >= broken


def test_valid_command_lines_write_verbs_in_any_case() -> None:
    """Verbs are case-insensitive (RFC 5321 §2.4): valid lines, not broken ones."""
    lower = find(sst.command_lines(), lambda line: line.startswith(b"mail from:"))
    conn = _server()
    assert _replies_in(conn, lower)[0].startswith(b"250")


@given(st.one_of(sst.replies(codes=[334]), sst.replies().filter(lambda r: r.code == 334)))
def test_a_334_reply_is_one_base64_challenge(reply: Reply) -> None:
    """RFC 4954 §4: the text of a 334 is the base64 challenge and nothing else."""
    [text] = reply.lines
    base64.b64decode(text, validate=True)


_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_QUOTED_STRING = re.compile(r'"(?:[ !#-\[\]-~]|\\[ -~])*"')


@settings(max_examples=400)  # cheap draws; the four commands are a third of them
@given(sst.commands())
def test_string_arguments_are_rfc_5321_strings(command: smtp.Command) -> None:
    """NOOP, HELP, VRFY and EXPN take a String (RFC 5321 §4.1.1.6-9, §4.1.2: an
    atom or a quoted string, "." and "@" are no atext); VRFY and EXPN a mailbox too."""
    if not isinstance(command, smtp.Noop | smtp.Help | smtp.Vrfy | smtp.Expn):
        return
    argument = command.argument
    if not argument or _ATOM.fullmatch(argument) or _QUOTED_STRING.fullmatch(argument):
        assert argument or isinstance(command, smtp.Noop | smtp.Help)
        return
    assert isinstance(command, smtp.Vrfy | smtp.Expn), argument
    parse_mailbox(argument)


def test_sessions_builds_the_strategies_its_draws_use_before_the_first_draw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hypothesis's one-time work on a strategy (the graph checked, lazy and regex
    strategies built) once counted as the first session's draw time, enough on a
    loaded machine for the too_slow health check: ``sessions()`` builds and validates
    the envelope strategies its draws use before it returns, and no draw builds one.

    Seen through public means only: smtpcore's own builders, patched, hand out each
    strategy behind ``st.deferred``, whose definition Hypothesis runs when the
    strategy is first validated or drawn from."""
    from smtpcore.testing import _smtp_sessions

    built: list[str] = []
    resolved: list[str] = []
    building: list[str] = []  # a builder's own calls (ORCPT's mailboxes) are its part

    def noting(builder: Callable[..., st.SearchStrategy[Any]]) -> Callable[..., Any]:
        def build(*args: Any, **kwargs: Any) -> st.SearchStrategy[Any]:
            name = f"{builder.__name__}{args}{sorted(kwargs.items())}"
            if building:
                return builder(*args, **kwargs)
            built.append(name)
            building.append(name)
            try:
                strategy = builder(*args, **kwargs)
            finally:
                building.pop()

            def definition() -> st.SearchStrategy[Any]:
                resolved.append(name)
                return strategy

            return st.deferred(definition)

        return build

    for name in ("mail_parameters", "mailboxes", "rcpt_parameters"):
        monkeypatch.setattr(_smtp_sessions, name, noting(getattr(_smtp_sessions, name)))
    envelopes = _smtp_sessions._envelope_strategies
    envelopes.cache_clear()  # remembered per offer: built again, through the builders above
    try:
        offered = frozenset({"PIPELINING", "DSN", "SMTPUTF8", "STARTTLS", "REQUIRETLS"})
        strategy = sst.sessions(extensions=offered)
        # Two offers (REQUIRETLS only under TLS), each with and without SMTPUTF8, of
        # three builders.
        assert len(built) == 2 * 2 * 3
        assert sorted(resolved) == sorted(built)  # validated: before any draw
        before_drawing = len(built)

        @settings(max_examples=10, database=None, phases=[Phase.generate])
        @given(strategy)
        def draw(session: sst.ClientSession) -> None:
            pass

        draw()
        assert len(built) == before_drawing  # no draw built one
    finally:
        envelopes.cache_clear()  # no other test draws from the deferred ones


# -- failing examples paste back into @example ---------------------------------------------


def public_names() -> dict[str, object]:
    """What a user's test has in scope: the public names of smtpcore.smtp and
    smtpcore.address, and nothing that starts with ``_``."""
    import smtpcore.address

    modules = (smtp, smtpcore.address)
    return {name: getattr(m, name) for m in modules for name in m.__all__}


def printed_example(strategy: st.SearchStrategy[Any]) -> tuple[str, object]:
    """The example Hypothesis prints for a test that fails on every value, and the value.
    One valid draw is all it takes (every value fails), so a narrow filter, such as
    one command kind out of ``commands()``, is no reason for Hypothesis to give up."""
    seen: list[object] = []

    @settings(
        database=None,
        phases=[Phase.generate, Phase.shrink],
        max_examples=20,
        suppress_health_check=[HealthCheck.filter_too_much],
    )
    @given(strategy)
    def fails(value: object) -> None:
        seen.append(value)
        raise AssertionError

    with pytest.raises(AssertionError) as caught:
        fails()
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    match = re.search(r"fails\(\n    value=(.*),\n\)", notes, re.DOTALL)
    assert match, notes
    return match.group(1), seen[-1]


def short(mailbox: Mailbox | None) -> bool:
    """Not one of the mailboxes at the limits, which are built otherwise."""
    return mailbox is not None and len(str(mailbox)) < 64


PRINTED_STRATEGIES = {
    "mailboxes": sst.mailboxes().filter(short),
    "domains-long": sst.domains(long=True).filter(lambda domain: len(domain) > 63),
    "mailboxes-at-limits": sst.mailboxes().filter(lambda m: len(m.domain) > 63),
    "rcpt": sst.commands().filter(lambda c: isinstance(c, smtp.Rcpt) and short(c.recipient)),
    "mail": sst.commands().filter(lambda c: isinstance(c, smtp.Mail) and short(c.sender)),
    "xclient": sst.xclients(),
}


@pytest.mark.parametrize("name", PRINTED_STRATEGIES)
def test_a_failing_example_pastes_back_with_public_names(name: str) -> None:
    """``mailboxes()`` built through a private helper, so a failing Rcpt printed as
    ``Rcpt(_mailbox_or_none('', '[0.0.0.0]'), ...)``, which no user can paste into
    ``@example``; MAIL (``_mail(...)``) and XCLIENT (``command(**...)``) too."""
    text, value = printed_example(PRINTED_STRATEGIES[name])
    assert eval(text, public_names()) == value, text


def _after_ends(session: sst.ClientSession) -> list[tuple[smtp.Event | bytes, ...]]:
    """For each end of a message (DATA's end, BDAT LAST), what its group holds after it,
    chunk octets left out."""
    after = []
    for group in session.groups:
        for index, item in enumerate(group):
            if isinstance(item, smtp.EndOfMessage) or (isinstance(item, smtp.Bdat) and item.last):
                rest = group[index + 1 :]
                after.append(tuple(i for i in rest if not isinstance(i, smtp.MessageData)))
    return after


_SEARCH = settings(phases=[Phase.generate], database=None, max_examples=2000, derandomize=True)


@pytest.mark.parametrize("kind", [smtp.Rset, smtp.Noop, smtp.Mail])
@pytest.mark.parametrize("end", ["DATA", "BDAT"])
def test_the_group_that_ends_a_message_may_carry_the_next_commands(kind: type, end: str) -> None:
    """RFC 2920 §3.1 lets RSET and MAIL go anywhere in a group and NOOP last, right
    behind a message's end; drawn only after QUIT, a server that loses a message when
    RSET or the next MAIL comes in the same write as its end was never found."""
    extensions = {"PIPELINING", "8BITMIME", "CHUNKING"} if end == "BDAT" else {"PIPELINING"}

    def carries(session: sst.ClientSession) -> bool:
        ended_by = smtp.Bdat if end == "BDAT" else smtp.EndOfMessage
        for group in session.groups:
            ends = [i for i, e in enumerate(group) if isinstance(e, ended_by)]
            if ends and any(isinstance(e, kind) for e in group[ends[-1] + 1 :]):
                return True
        return False

    session = find(sst.sessions(extensions=extensions), carries, settings=_SEARCH)
    pair = ConnectionPair()
    pair.play(session)
    assert pair.messages == list(session.messages)
    assert [a.reply for a in pair.answers if a.reply.code >= 400] == []


@SESSIONS
@given(sst.sessions(extensions={"PIPELINING", "8BITMIME", "CHUNKING"}))
def test_what_follows_a_messages_end_in_its_group_keeps_rfc_2920s_order(
    session: sst.ClientSession,
) -> None:
    """NOOP, DATA and QUIT only last in a group (RFC 2920 §3.1); a BDAT transaction
    behind an end is whole, its LAST chunk included."""
    for after in _after_ends(session):
        for item in after[:-1]:
            assert not isinstance(item, smtp.Noop | smtp.Data | smtp.Quit), after
        assert all(isinstance(item, smtp.Command) for item in after), after


@SESSIONS
@given(sst.sessions(extensions={"PIPELINING", "8BITMIME", "CHUNKING"}, lmtp=True))
def test_lmtp_sessions_pipeline_behind_a_messages_end(session: sst.ClientSession) -> None:
    """LMTP answers a message's end once per accepted recipient (RFC 2033 §4.2): the
    next transaction's commands in the same group get their replies after those."""
    server = ServerConnection("lmtp.test", lmtp=True)
    pair = ConnectionPair(ClientConnection("client.test", lmtp=True), server)
    pair.play(session)
    assert pair.messages == list(session.messages)
    assert [a.reply for a in pair.answers if a.reply.code >= 400] == []
    ends = [a for a in pair.answers if isinstance(a.command, smtp.EndOfMessage | smtp.Bdat)]
    last_chunks = [a for a in ends if not isinstance(a.command, smtp.Bdat) or a.command.last]
    recipients = sum(
        1 for group in session.groups for item in group if isinstance(item, smtp.Rcpt)
    )
    assert len(last_chunks) == recipients


def _refusing_the_first_rcpt() -> Callable[[ServerConnection, smtp.Event], Any]:
    from smtpcore.testing import permissive_smtp_answer

    refused: list[smtp.Event] = []

    def answer(conn: ServerConnection, event: smtp.Event) -> Any:
        if isinstance(event, smtp.Rcpt) and not refused:
            refused.append(event)
            return Reply(550, "5.1.1 No such user")
        return permissive_smtp_answer(conn, event)

    return answer


def test_a_pair_leaves_out_only_the_content_of_a_refused_data() -> None:
    """DATA refused (no recipient taken), the pair skipped the whole group that
    held its content, and with it the next transaction pipelined behind the end:
    only the content is left out, as :func:`play_smtp_session` does."""
    bob = parse_mailbox("bob@pqr.example")
    envelope = (smtp.Mail(None), smtp.Rcpt(bob), smtp.Data())
    session = sst.ClientSession(
        (
            (smtp.Ehlo("client.test"),),
            envelope,
            (smtp.MessageData(b"first\r\n"), smtp.EndOfMessage(), smtp.Rset(), *envelope),
            (smtp.MessageData(b"second\r\n"), smtp.EndOfMessage(), smtp.Quit()),
        ),
        frozenset({"PIPELINING"}),
    )
    pair = ConnectionPair(answer=_refusing_the_first_rcpt())
    pair.play(session)
    assert pair.messages == [b"second\r\n"]
    codes = [a.reply.code for a in pair.answers]
    # the first DATA refused, its content left out; then RSET, MAIL, RCPT, DATA, the
    # second message's end and QUIT
    assert codes == [220, 250, 250, 550, 554, 250, 250, 250, 354, 250, 221]
