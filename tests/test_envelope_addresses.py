"""Envelope addresses real senders use, as the conformance audit found them refused
with a permanent 501 (mail bounced) where Postfix 3.7 and aiosmtpd answer 250: a
local part past 64 octets and a path past 256 (SRS and VERP senders), taken by
default; local parts with stray dots and paths without brackets, taken under
``AddressPolicy.postfix()``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore.address import (
    MAX_RECEIVED_PATH_OCTETS,
    AddressError,
    AddressPolicy,
    Mailbox,
    parse_mailbox,
    parse_path,
)
from smtpcore.server.bounce import ReportedRecipient, build_bounce
from smtpcore.server.config import ConfigError, parse_user
from smtpcore.server.trace import received_header, return_path_header
from smtpcore.smtp import Mail, Rcpt, Reply, ServerConnection
from smtpcore.smtp._commands import format_command
from smtpcore.testing import run_server
from smtpcore.testing import strategies as sst
from smtpcore.testing._addresses import broken_paths

SRS_LOCAL = "SRS0=q8Zt=7K=customer-department.example=firstname.lastname.sales"
"""The audit's forwarded sender (smtp_longlocal.py): a 65-octet local part."""
VERP_LOCAL = "SRS0=HHH=TT=customer-domain.example=john.smith.verylongname"


def _session(**options: object) -> ServerConnection:
    conn = ServerConnection("mx.pqr.example", **options)  # type: ignore[arg-type]
    conn.send(Reply(220, "mx.pqr.example ESMTP"))
    run_server(conn, b"EHLO client.example\r\n")
    return conn


def _replies(out: bytes) -> list[bytes]:
    return [line[:3] for line in out.split(b"\r\n") if line]


def test_a_local_part_past_64_octets_is_taken_in_mail_and_rcpt() -> None:
    """RFC 5321 §4.5.3.1.1: 64 octets is what a receiver must take, no limit."""
    conn = _session()
    long_domain = ".".join(["d" * 60] * 4)  # a path of 312 octets with SRS_LOCAL
    lines = (
        f"MAIL FROM:<{SRS_LOCAL}@fwd.example>\r\n"
        f"RCPT TO:<ann@pqr.example>\r\n"
        f"RCPT TO:<{SRS_LOCAL}@pqr.example>\r\n"
        f"RCPT TO:<{VERP_LOCAL}@{long_domain}>\r\n"
    ).encode()
    events, out = run_server(conn, lines)
    assert _replies(out) == [b"250"] * 4
    assert events[0] == Mail(Mailbox(SRS_LOCAL, "fwd.example"))
    assert events[2] == Rcpt(Mailbox(SRS_LOCAL, "pqr.example"))
    assert events[3] == Rcpt(Mailbox(VERP_LOCAL, long_domain))


def test_the_command_line_limit_still_bounds_a_long_address() -> None:
    """What bounds a peer's address is the command line (512 octets by default)."""
    conn = _session()
    _, out = run_server(conn, b"MAIL FROM:<" + b"l" * 600 + b"@fwd.example>\r\n")
    assert _replies(out) == [b"500"]


def _path_of(octets: int, domain: str = "fwd.example", filler: str = "l") -> str:
    """A path of ``octets`` octets, angle brackets included, to ``domain``."""
    local = filler * ((octets - len(domain.encode()) - 3) // len(filler.encode()))
    path = f"<{local}@{domain}>"
    assert len(path.encode()) == octets
    return path


def test_a_received_path_is_bounded_by_a_fixed_limit_not_the_command_line() -> None:
    """With DSN and SMTPUTF8 offered the command line takes 2,600 octets; a path is still
    held to MAX_RECEIVED_PATH_OCTETS, so that every line it is written in fits 998
    octets, and a longer one gets RFC 5321 §4.5.3.1.10's 501, on the fast path and the
    slow path alike (a parameter sends the line to the slow one)."""
    conn = _session(dsn=True)
    longest = _path_of(MAX_RECEIVED_PATH_OCTETS).encode()
    over = _path_of(MAX_RECEIVED_PATH_OCTETS + 1).encode()
    _, out = run_server(conn, b"MAIL FROM:" + over + b"\r\n")
    assert out.startswith(b"501 5.1.7") and b"path too long" in out
    _, out = run_server(conn, b"MAIL FROM:" + longest + b" SMTPUTF8\r\n")
    assert _replies(out) == [b"250"]
    for params in (b"", b" NOTIFY=NEVER"):
        _, out = run_server(conn, b"RCPT TO:" + over + params + b"\r\n")
        assert out.startswith(b"501 5.1.3") and b"path too long" in out
        _, out = run_server(conn, b"RCPT TO:" + longest + params + b"\r\n")
        assert _replies(out) == [b"250"]


@pytest.mark.parametrize(
    "received",
    [
        # Taken with stray dots, written quoted: two octets longer than it came.
        "<a.." + "l" * (MAX_RECEIVED_PATH_OCTETS - 18) + "@fwd.example>",
        # Taken with a U-label domain, written in A-labels in Received and to a next hop
        # without SMTPUTF8: longer than it came.
        "<" + "l" * (MAX_RECEIVED_PATH_OCTETS - 18) + "@bücher.example>",
    ],
)
def test_a_path_is_bounded_in_its_longest_written_form(received: str) -> None:
    assert len(received.encode()) <= MAX_RECEIVED_PATH_OCTETS
    conn = _session(addresses=AddressPolicy.postfix(), dsn=True)
    _, out = run_server(conn, f"MAIL FROM:<> SMTPUTF8\r\nRCPT TO:{received}\r\n".encode())
    assert out.split(b"\r\n")[1].startswith(b"501 5.1.3")


_ORCPTS = [
    "rfc822;" + "o" * 480 + "@x.example",
    # 500 characters of RFC 6533 utf-8-addr-unitext: 2,000 octets raw, 4,500 as \x{HEX}.
    "utf-8;" + "\U0001f600" * 480 + "@x.example",
    "utf-8;" + "\\x{1F600}" * 53 + "@x.example",
]


@pytest.mark.parametrize("utf8", [False, True])
def test_every_line_written_with_the_longest_accepted_path_fits_998_octets(utf8: bool) -> None:
    """Return-Path, the Received trace (its ``for`` clause) and a bounce's To,
    Final-Recipient and Original-Recipient (ORCPT's worst cases too) with the longest
    path a server takes, in octets and, raw in a global report, in UTF-8 characters."""
    domain = "bücher.example" if utf8 else "fwd.example"
    longest = _path_of(MAX_RECEIVED_PATH_OCTETS, domain)
    unicode = _path_of(MAX_RECEIVED_PATH_OCTETS, "fwd.example", filler="é")
    for path in (longest, unicode):
        mailbox = parse_path(path)
        assert mailbox is not None
        written = [
            return_path_header(str(mailbox)),
            received_header(
                helo="client.example",
                peer=("192.0.2.1", 25),
                by="mx.abc.example",
                protocol="UTF8SMTPS",
                queue_id="Q1",
                recipient=mailbox,
                when=1_800_000_000,
                tls="TLS1.3",
            ),
        ]
        failed = [
            ReportedRecipient(str(mailbox), "5.1.1", "550 5.1.1 no", original_recipient=orcpt)
            for orcpt in _ORCPTS
        ]
        for report_utf8 in (False, True):
            report = build_bounce(
                reporting_mta="mx.abc.example",
                recipient=str(mailbox),
                queue_id="Q1",
                arrival=1_800_000_000,
                now=1_800_000_000,
                failed=failed,
                original=b"Subject: x\r\n\r\nhi\r\n",
                utf8=report_utf8,
            )
            written.append(report.content)
        for text in written:
            assert max(map(len, text.split(b"\r\n"))) <= 998


def _report_on(orcpt: str, utf8: bool) -> bytes:
    failed = [ReportedRecipient("bob@pqr.example", "5.1.1", "550 no", original_recipient=orcpt)]
    return build_bounce(
        reporting_mta="mx.abc.example",
        recipient="john@abc.example",
        queue_id="Q1",
        arrival=1_800_000_000,
        now=1_800_000_000,
        failed=failed,
        original=b"Subject: x\r\n\r\nhi\r\n",
        utf8=utf8,
    ).content


@pytest.mark.parametrize("utf8", [False, True])
@pytest.mark.parametrize(
    "orcpt",
    [
        # 500 characters of utf-8-addr-unitext: 1,930 octets raw, 4,330 as \x{HEX}.
        "utf-8;" + "\U0001f600" * 480 + "@x.example",
        # rfc822 xtext of controls, each written \x{01}: 984 octets.
        "rfc822;" + "+01" * 160 + "@x.example",
        # What a damaged queue file may hold: over RFC 3461's 500, no addr-type at all.
        "rfc822;" + "o" * 1000 + "@x.example",
        "x" * 2000,
    ],
)
def test_an_original_recipient_too_long_for_a_line_is_left_out(orcpt: str, utf8: bool) -> None:
    """Original-Recipient is optional (RFC 3464 §2.3.1): one that would not fit a line
    is left out, where a cut one (ended ``...``) named another address."""
    content = _report_on(orcpt, utf8)
    assert b"Original-Recipient" not in content
    assert max(map(len, content.split(b"\r\n"))) <= 998


@pytest.mark.parametrize("utf8", [False, True])
def test_the_longest_original_recipient_that_fits_is_written_whole(utf8: bool) -> None:
    orcpt = "utf-8;" + "\\x{1F600}" * 53 + "@x.example"  # 487 octets as xtext
    fields = [
        line
        for line in _report_on(orcpt, utf8).split(b"\r\n")
        if line.startswith(b"Original-Recipient:")
    ]
    address = "\U0001f600" * 53 + "@x.example"
    written = address if utf8 else "\\x{1F600}" * 53 + "@x.example"
    assert fields == [f"Original-Recipient: utf-8; {written}".encode()]


@pytest.mark.parametrize("utf8", [False, True])
def test_a_damaged_original_recipient_cannot_add_a_field(utf8: bool) -> None:
    """An ORCPT no parser reads (a damaged queue file's) is written through the same
    one-line rule in its type as in its address: a line break in it is no new field."""
    content = _report_on("rfc\r\nX-Evil: 1;a@b.example", utf8)
    assert b"\r\nX-Evil" not in content
    assert max(map(len, content.split(b"\r\n"))) <= 998


def test_a_user_too_long_for_a_directory_name_is_a_config_error() -> None:
    """A mailbox directory is named by the address, and a file name holds 255 octets
    (NAME_MAX); the 256-octet path limit kept every user within it. Without it, the
    users file refuses such a user rather than fail at the first delivery."""
    local = "u" * 200
    key, _ = parse_user(f"{local}@{'d' * 46}.example:pw")
    assert len(key.encode()) == 255
    with pytest.raises(ConfigError, match="over the 255"):
        parse_user(f"{local}@{'d' * 47}.example:pw")


# Local parts with stray dots (old Japanese carriers'), and paths without brackets.
DOTTED = [
    ("taro..yamada@docomo.ne.jp", Mailbox("taro..yamada", "docomo.ne.jp")),
    ("hanako.@ezweb.ne.jp", Mailbox("hanako.", "ezweb.ne.jp")),
    (".c@x.example", Mailbox(".c", "x.example")),
]
POSTFIX = AddressPolicy.postfix()


@pytest.mark.parametrize(("text", "mailbox"), DOTTED)
def test_stray_dots_are_refused_by_default_and_taken_under_the_postfix_policy(
    text: str, mailbox: Mailbox
) -> None:
    """RFC 5321 §4.1.2's Dot-string has no dot first, last or doubled; Postfix takes
    such local parts all the same. The machine's default stays the grammar (as its
    framing does); ``AddressPolicy.postfix()`` takes them as the local part their
    Quoted-string names, whose wire form is that Quoted-string."""
    strict = _session()
    _, out = run_server(strict, f"MAIL FROM:<{text}>\r\nRCPT TO:<{text}>\r\n".encode())
    assert out.split(b"\r\n")[0].startswith(b"501 5.1.7")
    lenient = _session(addresses=POSTFIX)
    events, out = run_server(lenient, f"MAIL FROM:<{text}>\r\nRCPT TO:<{text}>\r\n".encode())
    assert _replies(out) == [b"250", b"250"]
    assert events == [Mail(mailbox), Rcpt(mailbox)]
    local, domain = text.rsplit("@", 1)
    assert str(mailbox) == f'"{local}"@{domain}'  # as Postfix relays it
    assert format_command(Mail(mailbox)) == f'MAIL FROM:<"{local}"@{domain}>\r\n'.encode()
    assert parse_mailbox(str(mailbox)) == mailbox  # the strict parser reads it back


BARE = [
    (b"MAIL FROM:a@b.example", Mail(Mailbox("a", "b.example"))),
    (b"MAIL FROM: a@b.example SIZE=100", Mail(Mailbox("a", "b.example"), {"SIZE": "100"})),
    (b"MAIL FROM:taro..yamada@docomo.ne.jp", Mail(Mailbox("taro..yamada", "docomo.ne.jp"))),
    (b"RCPT TO: c@x.example", Rcpt(Mailbox("c", "x.example"))),
    (b"RCPT TO:postmaster", Rcpt(Mailbox("postmaster", ""))),
]


@pytest.mark.parametrize(("line", "event"), BARE)
def test_a_path_without_brackets_is_taken_under_the_postfix_policy(
    line: bytes, event: Mail | Rcpt
) -> None:
    """Postfix's ``strict_rfc821_envelopes = no`` (its default) takes these; the
    parameters after the address read as they do after a path."""
    setup = b"" if isinstance(event, Mail) else b"MAIL FROM:<>\r\n"
    _, out = run_server(_session(), setup + line + b"\r\n")
    assert _replies(out)[-1] == b"501"
    events, out = run_server(_session(addresses=POSTFIX), setup + line + b"\r\n")
    assert _replies(out) == [b"250"] * (2 if setup else 1)
    assert events[-1] == event


@pytest.mark.parametrize(
    "line",
    [
        b"MAIL FROM:",  # the null path is <>, never nothing
        b"MAIL FROM: ",
        b"MAIL FROM:john doe@abc.example",  # one word: "john" has no "@"
        b'MAIL FROM:"john doe"@abc.example',
        b"MAIL FROM:a@b.example>",
        b"MAIL FROM:a<b@c.example",
        b"MAIL FROM:<a@b.example",
        b"MAIL FROM:a@b.example\x00",
        b"MAIL FROM:a..b@c..example",  # stray dots in a local part only
        b"MAIL FROM:..@c.example",  # dots alone are no local part
        b"MAIL FROM:a@b.example SIZE=x",
    ],
)
def test_the_postfix_policy_takes_one_reading_only(line: bytes) -> None:
    """An unbracketed address is one word with no ``<`` or ``>``: nothing in it can be
    read as a parameter or a second path, and what the grammar refuses otherwise
    (controls, bad domains, bad parameters) is refused as before."""
    _, out = run_server(_session(addresses=POSTFIX), line + b"\r\n")
    assert _replies(out)[0][:1] == b"5", out


def test_the_policy_can_be_written_on_a_machine() -> None:
    """As every option: a write changes this machine alone, from the next command."""
    conn = _session()
    _, out = run_server(conn, b"MAIL FROM:a@b.example\r\n")
    assert _replies(out) == [b"501"]
    conn.addresses = POSTFIX
    _, out = run_server(conn, b"MAIL FROM:a@b.example\r\n")
    assert _replies(out) == [b"250"]
    assert _session().addresses == AddressPolicy.strict()


@given(sst.lenient_paths())
def test_lenient_paths_are_refused_strictly_and_taken_as_their_wire_form(text: str) -> None:
    """Whatever Postfix takes that RFC 5321 refuses: 501 by default; under the
    Postfix policy a mailbox whose wire form the strict rules read back as itself."""
    line = f"MAIL FROM:{text}\r\n".encode()
    _, out = run_server(_session(), line)
    assert _replies(out) == [b"501"]
    events, out = run_server(_session(addresses=POSTFIX), line)
    assert _replies(out) == [b"250"]
    (event,) = events
    assert isinstance(event, Mail) and event.sender is not None
    assert parse_path(f"<{event.sender}>") == event.sender


@given(sst.paths(hostile=True))
def test_the_postfix_policy_takes_every_path_the_strict_one_does(path: str) -> None:
    """A leniency only adds: what the grammar takes, the Postfix policy takes alike."""
    try:
        strict = parse_path(path, allow_postmaster=True)
    except AddressError:
        return
    assert parse_path(path, allow_postmaster=True, policy=POSTFIX) == strict


@given(st.data())
def test_broken_paths_are_refused_under_the_postfix_policy_too(data: st.DataObject) -> None:
    path = data.draw(broken_paths())
    line = f"RCPT TO:{path}\r\n".encode("utf-8", "surrogateescape")
    _, out = run_server(_session(addresses=POSTFIX), b"MAIL FROM:<>\r\n" + line)
    assert _replies(out)[-1][:1] == b"5"
