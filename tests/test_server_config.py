"""The reference server's configuration, bounces and resolvers, without a network."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import math
import pickle
import socket
from collections.abc import Awaitable
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest

from smtpcore.address import parse_mailbox
from smtpcore.maildrop import POP3Session
from smtpcore.routing import StaticResolver
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    Failure,
    PlainClient,
    ScramSHA256Client,
    ServerMechanism,
    Success,
)
from smtpcore.server.bounce import (
    MAX_RETURNED_MESSAGE,
    FailedRecipient,
    ReportedRecipient,
    build_bounce,
    build_delay_notice,
    build_success_report,
    seven_bit_form,
)
from smtpcore.server.cli import build_parser
from smtpcore.server.config import (
    ConfigError,
    ServerConfig,
    mailbox_key,
    parse_duration,
    parse_host_port,
    parse_server,
    parse_size,
    parse_user,
    read_users_file,
)
from smtpcore.server.credentials import Credentials, hash_password, is_hashed
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.mailserver import MailServer
from smtpcore.server.pop3 import POP3Store
from smtpcore.server.resolvers import SystemResolver, make_resolver


def _refused_bounce(original: bytes, *, reporting_mta: str = "mx.abc.example") -> bytes:
    """A bounce to a@b.example for c@d.example, refused outright (5.0.0)."""
    failed = [FailedRecipient("c@d.example", "5.0.0", "refused")]
    return _bounce(
        failed,
        original,
        recipient="a@b.example",
        reporting_mta=reporting_mta,
        queue_id="8452DE06F8",
    )


def test_a_bounce_for_a_long_host_name_keeps_its_boundary_within_70_characters() -> None:
    """RFC 2046 §5.1.1: a boundary is 1 to 70 characters, whatever the host's name."""
    host = "mail-relay-" + "x" * 40 + ".abc.example"
    raw = _refused_bounce(b"Subject: x\r\n\r\nbody\r\n", reporting_mta=host)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    boundary = message.get_boundary()
    assert boundary is not None and 1 <= len(boundary) <= 70
    assert len(message.get_payload()) == 3  # the parts are found by it  # type: ignore[arg-type]


@pytest.mark.parametrize("original", [b"Subject: x\r\n\r\nbody\r", b"Subject: x\r"])
def test_a_returned_message_ending_in_a_lone_cr_leaves_no_bare_cr_in_the_bounce(
    original: bytes,
) -> None:
    """Content that ends in CR alone (BDAT content may) gets the LF that finishes its
    line, not a CRLF after it: a CR stands only in CRLF (RFC 5322 §2.3)."""
    raw = _refused_bounce(original)
    assert b"\r\r" not in raw and raw.count(b"\r") == raw.count(b"\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("5d", 432000.0),
        ("1w", 604800.0),
        ("0.5", 0.5),
        (" 2 D ", 172800.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 days", "-1", "1y", "d", "9" * 400, "36501d"])
def test_bad_durations(text: str) -> None:
    """A number too large for a float would be inf: --retry-after took it, and the
    first deferral then computed int(nan)."""
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [("1000", 1000), ("512k", 524288), ("10M", 10485760), ("1GiB", 1 << 30)]
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("relay.example:587", ("relay.example", 587)),
        ("[relay.example]:25", ("[relay.example]", 25)),
        ("[2001:db8::1]:25", ("2001:db8::1", 25)),
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
    ],
)
def test_host_ports(text: str, result: tuple[str, int]) -> None:
    assert parse_host_port(text) == result


@pytest.mark.parametrize(
    "text", ["relay.example", ":25", "host:0", "host:99999", "host:x", "host:\uff12\uff15"]
)
def test_bad_host_ports(text: str) -> None:
    with pytest.raises(ValueError):
        parse_host_port(text)


@pytest.mark.parametrize("text", ["2001:db8::1:25", "::1:2525", "::ffff:192.0.2.1:25"])
def test_an_ipv6_address_with_a_port_must_be_in_brackets(
    text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``2001:db8::1:25`` was host ``2001:db8::1``, port 25, by its last colon, though
    the port may as well be the address's last group: Postfix wants brackets, and so
    do ``--relay-host``, ``send --server`` and ``fetch --server`` (status 2, one line)."""
    with pytest.raises(ConfigError, match=r"in brackets, as \[2001:db8::1\]:25"):
        parse_host_port(text)
    for argv in (
        ["serve", "--relay-host", text],
        ["send", "--server", text],
        ["fetch", "--server", text, "--user", "u"],
    ):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"argument --{argv[1][2:]}: {text!r}: write an IPv6 address" in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("[127.0.0.1]:2525", ("127.0.0.1", 2525)),
        ("[localhost]:110", ("localhost", 110)),
        ("[2001:db8::1]:25", ("2001:db8::1", 25)),
        ("mail.example:587", ("mail.example", 587)),
    ],
)
def test_a_server_connected_to_as_it_is_drops_its_brackets(
    text: str, result: tuple[str, int]
) -> None:
    """``send --server`` and ``fetch --server`` make no MX lookup for brackets to
    turn off: ``[HOST]:PORT`` is the host itself."""
    assert parse_server(text) == result
    parsed = build_parser().parse_args(["fetch", "--server", text, "--user", "u"])
    assert parsed.server == result


def test_users() -> None:
    assert parse_user("John@ABC.example:s3:cret") == ("john@abc.example", "s3:cret")
    for bad in ("john@abc.example", "john@abc.example:", "john:pw", "not an address:pw"):
        with pytest.raises(ConfigError):
            parse_user(bad)
    with pytest.raises(ConfigError, match="mailbox directory"):
        parse_user("a/b@abc.example:pw")


def test_a_domain_with_sharp_s_is_configured_in_either_spelling() -> None:
    """IDNA 2008 keeps ß (RFC 5892): ``--domain straße.example`` was refused ("IDNA
    2003 would turn it into strasse"); it is its A-label, which the users given in
    either spelling are keyed under."""
    key, _ = parse_user("U@Straße.example:pw")
    assert key == "u@xn--strae-oqa.example"
    assert parse_user("u@xn--strae-oqa.example:pw")[0] == key
    for domain in ("straße.example", "XN--STRAE-OQA.example"):
        config = ServerConfig(domains=(domain,), users={key: "pw"})
        assert config.domains == ("xn--strae-oqa.example",)


def test_users_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(
        "# the users\n\njohn@abc.example:one\n  # indented comment\nmary@abc.example:two\n"
    )
    assert read_users_file(path) == {"john@abc.example": "one", "mary@abc.example": "two"}
    path.write_text("john@abc.example:one\nbroken line\n")
    with pytest.raises(ConfigError, match=r"users:2"):
        read_users_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        read_users_file(tmp_path / "missing")


def test_users_file_lines_end_at_lf_and_passwords_keep_their_blanks(tmp_path: Path) -> None:
    """str.splitlines() also broke lines at U+2028, \\f or \\x1c, cutting a password in two
    and naming a line the file does not have; and the whole line was stripped, cutting
    the trailing blanks of a password that hash-password and --password-file keep."""
    path = tmp_path / "users"
    path.write_bytes(
        "john@abc.example:secret\u2028tail\x1c\f\x85\r\n"
        "  mary@abc.example : spaced pw \t\n".encode()
    )
    assert read_users_file(path) == {
        "john@abc.example": "secret\u2028tail\x1c\f\x85",
        "mary@abc.example": " spaced pw \t",
    }
    path.write_text("john@abc.example:pass\x1cword\nbroken\u2028line\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"users:2: expected ADDRESS:PASSWORD, got 'broken"):
        read_users_file(path)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("john@abc.example Zq7Secr3tPw", "expected ADDRESS:PASSWORD, got 'john@abc.example'"),
        ("john@abc.example=Zq7Secr3tPw", "expected ADDRESS:PASSWORD, got 'john@abc.example'"),
        ("john@abc.exampleZq7Secr3tPw", "expected ADDRESS:PASSWORD (the text is not shown"),
        ("john@abc.example Zq7Secr3tPw:x", "not a mail address, got 'john@abc.example'"),
        ("john@abc.example=Zq7:Secr3tPw", "not a mail address, got 'john@abc.example'"),
        ("john@abc.example:  ", "no password after 'john@abc.example'"),
        ("joh n@abc.example -> Zq7Secr3tPw", "not a mail address, got 'joh'"),
        ("sales@abc.example -> john@abc.example, Zq7Secr3tPw", "sales@abc.example -> login 2:"),
    ],
)
def test_a_mistyped_user_never_shows_its_password(tmp_path: Path, line: str, error: str) -> None:
    """A users-file line (or a --user) with a blank or '=' for the ':' was quoted whole,
    password and all, on stderr at start and in the log on SIGHUP. The error names the
    line or the option, and quotes the address at most: up to a blank, '=' or ':'."""
    path = tmp_path / "users"
    path.write_text(f"# users\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        read_users_file(path)
    assert str(caught.value).startswith(f"{path}:2: {error}")
    assert "Zq7" not in str(caught.value)
    if "->" not in line:
        with pytest.raises(ConfigError) as caught:
            parse_user(line)
        assert str(caught.value).startswith(f"--user: {error}")
        assert "Zq7" not in str(caught.value)


def test_the_users_passwords_stay_out_of_the_config_repr() -> None:
    keys = hash_password("Zq7Secr3tPw")
    users = {"john@abc.example": "Zq7Secr3tPw", "mary@abc.example": keys}
    config = ServerConfig(domains=("abc.example",), users=users)
    shown = repr(config)
    assert "users={'john@abc.example': <hidden>, 'mary@abc.example': <hidden>}" in shown
    assert "Zq7" not in shown and keys.split("$")[2] not in shown
    assert shown.startswith("ServerConfig(domains=('abc.example',), users=")
    assert config.users == users and config == ServerConfig(domains=("abc.example",), users=users)


def test_a_users_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_bytes(b"john@abc.example:one\nmary@abc.example:p\xe4ss\n")
    with pytest.raises(ConfigError, match=r"users:2: not UTF-8"):
        read_users_file(path)


def test_a_users_file_with_a_bom_is_read_and_invisible_characters_are_refused(
    tmp_path: Path,
) -> None:
    """Notepad's byte order mark (U+FEFF) made the first user another address, who could
    neither log in nor get mail, and the server said nothing; it is the UTF-8 signature.
    Any other format character in an address is refused with its line."""
    path = tmp_path / "users"
    path.write_bytes(b"\xef\xbb\xbfjohn@abc.example:one\r\nmary@abc.example:two\r\n")
    assert read_users_file(path) == {"john@abc.example": "one", "mary@abc.example": "two"}
    cases = [
        ("john@abc.example:one\n\ufeffmary@abc.example:two\n", "users:2: .*U\\+FEFF"),
        ("jo\u200bhn@abc.example:one\n", "users:1: .*U\\+200B"),
        ("john@abc.example\u2060:one\n", "users:1: .*U\\+2060"),
    ]
    for text, message in cases:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            read_users_file(path)
    path.write_text("john@abc.example:one\nsales@abc.example -> jo\u200dhn@abc.example\n", "utf-8")
    with pytest.raises(ConfigError, match=r"users:2: sales@abc.example -> login 1: .*U\+200D"):
        read_users_file(path)


JOSE_NFC = "jos\u00e9@abc.example"
JOSE_NFD = "jose\u0301@abc.example"  # as macOS editors write it


def test_canonically_equivalent_spellings_name_one_mailbox(tmp_path: Path) -> None:
    """``josé`` precomposed (NFC) and ``e`` with a combining acute (NFD) are one
    address (RFC 6530 §10.1, RFC 6532 §3.1), as case variants were already: a user
    written in NFD in the users file was reachable by neither RCPT nor login in the
    usual NFC spelling, and the reverse. Delivery, AUTH and POP3 share the key."""
    assert mailbox_key(parse_mailbox(JOSE_NFD)) == mailbox_key(parse_mailbox(JOSE_NFC))
    assert mailbox_key(parse_mailbox("JOS\u00c9@ABC.example")) == JOSE_NFC
    assert mailbox_key(parse_mailbox("\u212aate@abc.example")) == "kate@abc.example"
    path = tmp_path / "users"
    for stored, used in ((JOSE_NFD, JOSE_NFC), (JOSE_NFC, JOSE_NFD)):
        path.write_text(f"{stored}:pw\n", encoding="utf-8")
        users = read_users_file(path)
        assert list(users) == [JOSE_NFC]
        config = ServerConfig(domains=("abc.example",), users=users, data_dir=tmp_path)
        assert LocalMailboxes(config).lookup(parse_mailbox(used)) == JOSE_NFC
        credentials = Credentials(users)
        assert credentials.key(used) == JOSE_NFC
        assert credentials.get_password(used) == "pw"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Kate@abc.example", "kate@ABC.example"),
        (JOSE_NFC, JOSE_NFD),
        ("john@abc.example", "john@abc.example"),
    ],
)
def test_two_users_file_lines_for_one_mailbox_are_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    """``Kate@`` and ``kate@`` (or one address in NFC and in NFD) were one user, the
    last line's password silently winning; now both lines are named."""
    path = tmp_path / "users"
    path.write_text(f"{first}:Zq7one\n# comment\n{second}:Zq7two\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_users_file(path)
    key = mailbox_key(parse_mailbox(first))
    assert str(caught.value).startswith(f"{path}:3: {key} is the user of line 1 again")
    assert "Zq7" not in str(caught.value)


T = TypeVar("T")
REWRITTEN_BY_SASLPREP = [
    # (the users file's address, the same as SASLprep writes it)
    ("\uff71\uff72@abc.example", "\u30a2\u30a4@abc.example"),  # halfwidth katakana
    ("\ufb01ona@abc.example", "fiona@abc.example"),  # the ligature fi
    ("\u2168@abc.example", "IX@abc.example"),  # ROMAN NUMERAL NINE
    (JOSE_NFD, JOSE_NFC),
    # Right-to-left before a left-to-right domain: SASLprep's bidirectional rule
    # refused the whole address, and so every such user, at AUTH.
    ("\u05e9\u05dc\u05d5\u05dd@abc.example", "\u05e9\u05dc\u05d5\u05dd@abc.example"),
]


def _run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def _sasl_login(server: ServerMechanism, client: ClientMechanism) -> str | None:
    """Whom a server mechanism lets the client in as, or None."""
    step = server.start(client.initial_response())
    while isinstance(step, Challenge):
        step = server.step(client.respond(step.data))
    return step.authzid if isinstance(step, Success) else None


def _reference_server(tmp_path: Path, address: str) -> tuple[ServerConfig, MailServer, POP3Store]:
    """The reference server's pieces for one user, read from a users file."""
    path = tmp_path / "users"
    path.write_text(f"{address}:Zq7pw\n", encoding="utf-8")
    config = ServerConfig(domains=("abc.example",), users=read_users_file(path), data_dir=tmp_path)
    server = MailServer(config)
    store = POP3Store(config, server.authenticator(), credentials=server.credentials)
    return config, server, store


@pytest.mark.parametrize(("stored", "prepared"), REWRITTEN_BY_SASLPREP)
def test_a_user_whose_name_saslprep_rewrites_logs_in_by_every_path(
    tmp_path: Path, stored: str, prepared: str
) -> None:
    """SMTP AUTH and POP3 AUTH give the credentials the user name SASLprep'd (``アイ``
    for ``ｱｲ``, ``fiona`` for ``ﬁona``, ``IX`` for ``Ⅸ``), while the users were
    keyed by the name as written: such a user could no longer log in by AUTH, in
    whatever way he typed his name, though USER/PASS still worked. Now every path
    finds him by either spelling, and POP3 opens his own Maildir."""
    config, server, store = _reference_server(tmp_path, stored)
    (key,) = config.users
    session = POP3Session("pop.abc.example", peer=("127.0.0.1", 1110))
    smtp = server.authenticator().server_mechanisms("mx.abc.example")
    pop3 = store.sasl_mechanisms(session)
    for login in (stored, prepared):
        for mechanisms in (smtp, pop3):
            assert _sasl_login(mechanisms["PLAIN"](), PlainClient(login, "Zq7pw")) == prepared
            assert _sasl_login(mechanisms["PLAIN"](), PlainClient(login, "wrong")) is None
            scram = ScramSHA256Client(login, "Zq7pw")
            assert _sasl_login(mechanisms["SCRAM-SHA-256"](), scram) == prepared
        assert config.user_key(login) == server.credentials.key(login) == key
        assert _run(store.check_password(session, login, "Zq7pw"))  # USER/PASS
        assert not _run(store.check_password(session, login, "wrong"))
        assert _run(store.apop_secret(session, login)) == "Zq7pw"
        maildrop = _run(store.open_maildrop(session, login))
        assert maildrop.path == config.mailbox_path(key)  # type: ignore[attr-defined]  # a Maildir
        _run(maildrop.close())
    assert LocalMailboxes(config).lookup(parse_mailbox(stored)) == key  # delivery: as it was


def test_a_name_saslprep_refuses_logs_in_by_user_and_apop_as_before(tmp_path: Path) -> None:
    """A private-use character is prohibited by SASLprep: AUTH refuses the name (RFC
    4616 §2: "If preparation fails ..., verification SHALL fail"), but the user is
    keyed by his mailbox key, as before, and USER/PASS and APOP still let him in."""
    stored = "\ue000x@abc.example"
    _, server, store = _reference_server(tmp_path, stored)
    session = POP3Session("pop.abc.example")
    for login in (stored, "\ue000X@ABC.example"):
        assert server.credentials.key(login) == "\ue000x@abc.example"
        assert _run(store.check_password(session, login, "Zq7pw"))
        assert _run(store.apop_secret(session, login)) == "Zq7pw"
        plain = server.authenticator().server_mechanisms("mx.abc.example")["PLAIN"]()
        step = plain.start(b"\0" + login.encode() + b"\0Zq7pw")
        assert isinstance(step, Failure) and "SASLprep" in step.reason


JOINER_DOMAIN = "\u0915\u094d\u200d\u0937.test"  # ZWJ after a virama: xn--11b2ezcw70k
NO_JOINER_DOMAIN = "\u0915\u094d\u0937.test"  # another domain: xn--11b2ezc


def test_a_login_whose_domain_has_a_joiner_finds_that_domain_s_user_only(tmp_path: Path) -> None:
    """SASLprep maps ZWJ to nothing, and once ran over the whole login: a login at the
    joiner's domain found, and was checked against the password of, the user at the
    domain without it. Now the local part alone is SASLprep'd and the domain compared
    as IDNA 2008 compares it, on every path: SMTP and POP3 AUTH, USER/PASS, APOP."""
    path = tmp_path / "users"
    path.write_text(
        f"alice@xn--11b2ezcw70k.test:Zq7one\nalice@{NO_JOINER_DOMAIN}:Zq7two\n", encoding="utf-8"
    )
    users = read_users_file(path)
    config = ServerConfig(
        domains=(JOINER_DOMAIN, NO_JOINER_DOMAIN), users=users, data_dir=tmp_path
    )
    server = MailServer(config)
    store = POP3Store(config, server.authenticator(), credentials=server.credentials)
    session = POP3Session("pop.abc.example", peer=("127.0.0.1", 1110))
    smtp = server.authenticator().server_mechanisms("mx.abc.example")
    pop3 = store.sasl_mechanisms(session)
    mine, other = "alice@xn--11b2ezcw70k.test", "alice@xn--11b2ezc.test"
    assert set(config.users) == {mine, other}
    for login in (f"alice@{JOINER_DOMAIN}", mine, f"Alice@{JOINER_DOMAIN.upper()}"):
        assert config.user_key(login) == server.credentials.key(login) == mine
        for mechanisms in (smtp, pop3):
            assert _sasl_login(mechanisms["PLAIN"](), PlainClient(login, "Zq7one")) == login
            assert _sasl_login(mechanisms["PLAIN"](), PlainClient(login, "Zq7two")) is None
            scram = ScramSHA256Client(login, "Zq7one")
            assert _sasl_login(mechanisms["SCRAM-SHA-256"](), scram) == login
            scram = ScramSHA256Client(login, "Zq7two")
            assert _sasl_login(mechanisms["SCRAM-SHA-256"](), scram) is None
        assert _run(store.check_password(session, login, "Zq7one"))  # USER/PASS
        assert not _run(store.check_password(session, login, "Zq7two"))
        assert _run(store.apop_secret(session, login)) == "Zq7one"
        maildrop = _run(store.open_maildrop(session, login))
        assert maildrop.path == config.mailbox_path(mine)  # type: ignore[attr-defined]  # a Maildir
        _run(maildrop.close())
    login = f"alice@{NO_JOINER_DOMAIN}"
    assert config.user_key(login) == server.credentials.key(login) == other
    assert _run(store.apop_secret(session, login)) == "Zq7two"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("\uff71\uff72@abc.example", "\u30a2\u30a4@abc.example"),
        ("\u2168@abc.example", "ix@abc.example"),
        ("\ufb01ona@abc.example", "FIONA@abc.example"),
    ],
)
def test_two_users_one_login_would_find_are_refused(
    tmp_path: Path, first: str, second: str
) -> None:
    """``ｱｲ@`` and ``アイ@`` are two mailboxes, but one login name once SASLprep'd: the
    users file names both lines, ``--user`` and a reload are refused as well."""
    path = tmp_path / "users"
    path.write_text(f"{first}:Zq7one\n# comment\n{second}:Zq7two\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        read_users_file(path)
    one, two = (mailbox_key(parse_mailbox(address)) for address in (first, second))
    assert str(caught.value).startswith(
        f"{path}:3: {two} logs in by the name of line 1's user, {one}"
    )
    assert "Zq7" not in str(caught.value)
    users = {one: "Zq7one", two: "Zq7two"}
    with pytest.raises(ConfigError, match=f"users {one} and {two} log in by one name"):
        ServerConfig(domains=("abc.example",), users=users, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="log in by one name"):
        Credentials(users)


def test_a_user_whose_name_saslprep_rewrites_sends_and_fetches_end_to_end(
    tmp_path: Path,
) -> None:
    """Over the network: AUTH PLAIN on submission, MAIL FROM his own address (the
    login, SASLprep'd, is his), delivery to his Maildir, then POP3 AUTH PLAIN and
    USER/PASS find the message."""
    stored, prepared = "\uff71\uff72@abc.example", "\u30a2\u30a4@abc.example"
    config = ServerConfig(
        domains=("abc.example",),
        users={stored: "Zq7pw"},
        data_dir=tmp_path,
        hostname="mx.abc.example",
        auth_failure_delay=0,
        min_free_space=0,  # a small temporary filesystem still takes mail
    )
    plain = base64.b64encode(f"\0{stored}\0Zq7pw".encode())

    def talk(sock: socket.socket, commands: list[bytes], multiline: bool) -> list[bytes]:
        """The last line of each answer, the greeting's first."""
        file = sock.makefile("rb")
        answers = []
        for command in [b"", *commands]:
            sock.sendall(command)
            line = file.readline()
            while multiline and line[3:4] == b"-":
                line = file.readline()
            answers.append(line.rstrip())
        return answers

    def client(submission: int, pop3: int) -> tuple[list[bytes], list[bytes]]:
        with socket.create_connection(("127.0.0.1", submission), timeout=10) as sock:
            smtp = talk(
                sock,
                [
                    b"EHLO client.abc.example\r\n",
                    b"AUTH PLAIN " + plain + b"\r\n",
                    f"MAIL FROM:<{stored}> SMTPUTF8\r\n".encode(),
                    f"RCPT TO:<{prepared}>\r\n".encode(),
                    f"RCPT TO:<{stored}>\r\n".encode(),
                    b"DATA\r\n",
                    b"Subject: hi\r\n\r\nhello\r\n.\r\n",
                    b"QUIT\r\n",
                ],
                multiline=True,
            )
        pop = []
        for login in ([b"AUTH PLAIN " + plain], [f"USER {prepared}".encode(), b"PASS Zq7pw"]):
            with socket.create_connection(("127.0.0.1", pop3), timeout=10) as sock:
                commands = [*(c + b"\r\n" for c in login), b"STAT\r\n"]
                *logged_in, stat, _ = talk(sock, [*commands, b"QUIT\r\n"], multiline=False)
                pop.append(stat[:6] if all(a.startswith(b"+OK") for a in logged_in) else b"-")
        return smtp, pop

    async def main() -> tuple[list[bytes], list[bytes]]:
        sockets = {name: socket.create_server(("127.0.0.1", 0)) for name in ("submission", "pop3")}
        ports = [sock.getsockname()[1] for sock in sockets.values()]
        async with MailServer(config, sockets=sockets):
            return await asyncio.to_thread(client, *ports)

    smtp, pop = asyncio.run(asyncio.wait_for(main(), 30))
    # RCPT to アイ@ is another mailbox, which no user has: only ｱｲ@ gets it
    codes = [b"220", b"250", b"235", b"250", b"550", b"250", b"354", b"250", b"221"]
    assert [answer[:3] for answer in smtp] == codes
    assert pop == [b"+OK 1 "] * 2  # STAT: one message
    assert len(list((config.mailbox_path(stored) / "cur").iterdir())) == 1  # QUIT moved it


SHA1_KEY = "A" * 27 + "="  # 20 octets, a SHA-1 digest
SHA1_KEYS = f"SCRAM-SHA-1$4096:c2FsdHNhbHQ=${SHA1_KEY}:{SHA1_KEY}"


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (SHA1_KEYS, "SCRAM-SHA-1 keys serve no mechanism here"),
        ("SCRAM-SHA-256$4096:c2FsdA==$not base64!:x", "not SCRAM-SHA-256 keys"),
        ("SCRAM-SHA-256$", "not SCRAM-SHA-256 keys"),
        ("SCRAM-MD5$x", "not SCRAM-SHA-256 keys"),
    ],
)
def test_scram_keys_in_the_users_file_must_be_sha256_keys(
    tmp_path: Path, secret: str, message: str
) -> None:
    """SCRAM-SHA-1 keys were taken as a password (whoever read the file logged in with
    them), malformed SCRAM-SHA-256 keys locked the user out silently: both stop the
    server, naming the line; never quoting the secret."""
    path = tmp_path / "users"
    path.write_text(f"# users\njohn@abc.example:{secret}\n")
    with pytest.raises(ConfigError, match=rf"users:2: {message}") as caught:
        read_users_file(path)
    assert secret not in str(caught.value)
    with pytest.raises(ConfigError, match=rf"--user: {message}"):
        parse_user(f"john@abc.example:{secret}")
    with pytest.raises(ConfigError, match=rf"user john@abc.example: {message}"):
        ServerConfig(domains=("abc.example",), users={"john@abc.example": secret})
    keys = ServerConfig(users={"a@localhost": hash_password("pw") + " \t"}).users["a@localhost"]
    assert keys == keys.rstrip() and is_hashed(keys)  # blanks after keys are no part of them


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"domains": ()}, "at least one"),
        ({"users": {"a@elsewhere.example": "pw"}}, "not a local domain"),
        ({"smtp_port": 70000}, "--smtp-port"),
        ({"tls_cert": Path("cert.pem")}, "go together"),
        ({"smtps_port": 4465}, "need --tls-cert"),
        ({"remote_port": 0}, "--remote-port"),
        ({"retry_after": 0}, "--retry-after"),
        ({"max_queue_age": -1}, "--max-queue-age"),
        ({"resolver": "static"}, "--resolver"),
        ({"resolver": "system:x"}, "--resolver"),
        ({"resolver": "bind:x"}, "--resolver"),
        ({"hostname": "bad host"}, "--hostname: not a domain name"),
        ({"hostname": "[127.0.0.1]"}, "--hostname: not a domain name"),
        ({"hostname": "bad_host!"}, "--hostname: not a domain name: 'bad_host!'"),
        ({"hostname": "mx..abc.example"}, "--hostname: not a domain name"),
        ({"hostname": "-mx.abc.example"}, "--hostname: not a domain name"),
        ({"hostname": "x" * 64 + ".example"}, "--hostname: not a domain name"),
        ({"hostname": ("x" * 60 + ".") * 5 + "example"}, "--hostname: not a domain name"),
        ({"hostname": "stra\u1e9ee.example"}, "--hostname: not a domain name"),
        ({"relay_host": ("bad host", 25)}, "--relay-host: label 'bad host'"),
        ({"relay_host": ("relay.example", 0)}, "--relay-host: smart host port 0"),
        ({"retry_after": math.inf}, "--retry-after: must be a finite number .* not inf"),
        ({"max_queue_age": math.nan}, "--max-queue-age: must be a finite number .* not nan"),
        ({"delay_warning": math.inf}, "--delay-warning: must be a finite number .* not inf"),
    ],
)
def test_config_mistakes(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig(**options)  # type: ignore[arg-type]  # the table mixes field types


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("mx.abc.example", "mx.abc.example"),
        ("MX.Abc.Example.", "mx.abc.example"),
        ("mail_1.abc.example", "mail_1.abc.example"),  # Postfix's valid_hostname() allows _
        ("\u00fcn\u00efcode.example", "xn--ncode-cta3g.example"),
        ("m\u00fcnchen.example", "xn--mnchen-3ya.example"),
        ("mx.stra\u00dfe.example", "mx.xn--strae-oqa.example"),  # IDNA 2008 keeps ß
    ],
)
def test_the_server_names_itself_by_a_domain_in_a_label_form(given: str, named: str) -> None:
    """RFC 5321 §4.1.2, §4.2: the greeting and EHLO name a Domain of LDH labels;
    RFC 6531 lets U-labels in only once SMTPUTF8 is agreed, after the greeting and
    our own EHLO. "bad_host!" and "ünïcode.example" were taken as given, and the
    server greeted with them, raw UTF-8 and all."""
    assert ServerConfig(hostname=given).hostname == named


def test_this_machines_own_name_is_kept_though_it_is_no_domain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default is the machine's name, which the operator did not choose: the
    server starts with it (``serve`` warns, see test_cli_serve), as it does with a
    name that is not fully qualified. The same name given is refused."""
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "build!box")
    assert ServerConfig().hostname == "build!box"
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "b\u00fcild.example")
    assert ServerConfig().hostname == "xn--bild-0ra.example"
    with pytest.raises(ConfigError, match="--hostname: not a domain name: 'bad_host!'"):
        ServerConfig(hostname="bad_host!")


def test_a_relay_ca_that_holds_no_certificate_is_refused(tmp_path: Path) -> None:
    """The relay loaded it at start and died with ssl.SSLError's traceback."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("x")
    with pytest.raises(ConfigError, match=r"--relay-ca: cannot load .*ca\.pem: .*no certificate"):
        ServerConfig(relay_ca=not_pem)
    with pytest.raises(ConfigError, match=r"--relay-ca: .* is not a file"):
        ServerConfig(relay_ca=tmp_path)


def test_config_defaults_and_listeners() -> None:
    config = ServerConfig(domains=("PQR.example.", "pqr.example"), users={"b@pqr.example": "x"})
    assert config.domains == ("pqr.example",)
    assert list(config.listeners()) == [("smtp", 2525), ("submission", 2587), ("pop3", 2110)]
    assert config.postmaster_key("pqr.example") == "postmaster@pqr.example"
    assert config.mailbox_path("b@pqr.example") == Path("smtpcore-data/mailboxes/b@pqr.example")


def test_resolver_specs(tmp_path: Path) -> None:
    zone = tmp_path / "zone"
    zone.write_text("pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n")
    assert isinstance(make_resolver(f"static:{zone}"), StaticResolver)
    assert isinstance(make_resolver("system"), SystemResolver)
    assert type(make_resolver("dns:127.0.0.1:53")).__name__ == "DNSPythonResolver"
    zone.write_text("pqr.example MX ten mx\n")
    with pytest.raises(ConfigError, match="zone"):
        make_resolver(f"static:{zone}")
    with pytest.raises(ConfigError, match="cannot read"):
        make_resolver(f"static:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError):
        make_resolver("dns:nowhere")


def test_a_dns_resolver_is_given_by_its_address() -> None:
    """``dns:HOST:PORT`` names the server that answers for names, so HOST is an IP
    address; a name is a configuration error, not dnspython's ValueError."""
    with pytest.raises(ConfigError, match="'localhost' is not an IP address"):
        make_resolver("dns:localhost:53")
    for spec in ("dns:[::1]:53", "dns:[127.0.0.1]:53"):
        assert type(make_resolver(spec)).__name__ == "DNSPythonResolver"
    with pytest.raises(ConfigError, match="IPv6 address with a port in brackets"):
        make_resolver("dns:::1:53")  # as Postfix, an IPv6 address needs its brackets


# -- bounces ----------------------------------------------------------------------------

ORIGINAL = b"From: john@abc.example\r\nSubject: hello\r\n\r\nbody\r\n"


def _parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _bounce(
    failed: list[FailedRecipient],
    original: bytes = ORIGINAL,
    *,
    recipient: str = "john@abc.example",
    headers_only: bool = False,
    utf8: bool = False,
    reporting_mta: str = "mx.abc.example",
    queue_id: str = "Q1",
) -> bytes:
    """A bounce from ``reporting_mta`` to ``recipient``, sent as its message arrived."""
    return build_bounce(
        reporting_mta=reporting_mta,
        recipient=recipient,
        queue_id=queue_id,
        arrival=0.0,
        now=0.0,
        failed=failed,
        original=original,
        headers_only=headers_only,
        utf8=utf8,
    ).content


def test_bounce_is_a_delivery_status_report() -> None:
    raw = build_bounce(
        reporting_mta="mx.abc.example",
        recipient="john@abc.example",
        queue_id="8452DE06F8",
        arrival=0.0,
        now=60.0,
        failed=[
            FailedRecipient(
                "nobody@pqr.example", "5.1.1", "550 5.1.1 no such user", "mx.pqr.example", True
            ),
            FailedRecipient("jörg@pqr.example", "4.4.7", "message expired after 5 days"),
        ],
        original=ORIGINAL,
    ).content
    assert b"\n" not in raw.replace(b"\r\n", b"")
    message = _parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message["To"] == "john@abc.example" and message["Auto-Submitted"] == "auto-replied"
    text, status, returned = message.iter_parts()
    assert message.get_param("report-type") == "global-delivery-status"  # RFC 6522 §3
    assert "nobody@pqr.example" in text.get_content()
    # A UTF-8 address makes it an RFC 6533 report.
    assert status.get_content_type() == "message/global-delivery-status"
    report = raw.split(b"Content-Type: message/global-delivery-status", 1)[1].decode()
    assert "Reporting-MTA: dns; mx.abc.example" in report
    assert (
        "Final-Recipient: rfc822; nobody@pqr.example\r\nAction: failed\r\nStatus: 5.1.1" in report
    )
    assert "Remote-MTA: dns; mx.pqr.example" in report
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in report
    assert "Final-Recipient: utf-8; jörg@pqr.example" in report
    assert "Diagnostic-Code: x-local; message expired" in report
    assert returned.get_content_type() == "message/global"
    assert ORIGINAL in raw


@pytest.mark.parametrize(
    ("utf8", "status_type"),
    [(False, "message/delivery-status"), (True, "message/global-delivery-status")],
)
def test_a_report_type_is_the_subtype_of_its_status_part(utf8: bool, status_type: str) -> None:
    """RFC 6522 §3: report-type names the second part's media subtype, so an RFC 6533
    report is a ``global-delivery-status`` one."""
    for raw in (
        _bounce([FailedRecipient("nobody@pqr.example", "5.1.1", "550 5.1.1 no")], utf8=utf8),
        build_success_report(
            reporting_mta="mx.abc.example",
            recipient="john@abc.example",
            queue_id="Q1",
            arrival=0.0,
            now=0.0,
            reported=[ReportedRecipient("b@pqr.example", "2.0.0", "250 ok", action="relayed")],
            original=ORIGINAL,
            utf8=utf8,
        ).content,
    ):
        message = _parse(raw)
        status = list(message.iter_parts())[1]
        assert status.get_content_type() == status_type
        assert message.get_param("report-type") == status_type.partition("/")[2]


def test_the_7bit_form_of_a_report_is_the_same_report_with_the_header_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 3461 §4.3, RFC 6152 §3: what the relay sends to a server without 8BITMIME,
    its notification saying that only the header follows, as a headers-only bounce's
    does. An RFC 6533 report's UTF-8 parts go quoted-printable (RFC 6533 §6); one whose
    own header is UTF-8 (to a UTF-8 address, which needs SMTPUTF8 anyway) has none."""
    monkeypatch.setattr("smtpcore.server.bounce.secrets.token_hex", lambda n: "0" * 2 * n)
    failed = [FailedRecipient("nobody@pqr.example", "5.6.3", "554 5.6.3 no 8BITMIME")]
    seven_bit = seven_bit_form(_bounce(failed, "Subject: x\r\n\r\ncafé\r\n".encode()))
    assert seven_bit is not None and seven_bit.isascii()
    assert seven_bit == _bounce(failed, b"Subject: x\r\n\r\n", headers_only=True)
    assert b"The delivery report and the header of your message follow." in seven_bit
    global_form = seven_bit_form(_bounce(failed, "Subject: ü\r\n\r\nx\r\n".encode(), utf8=True))
    assert global_form is not None and global_form.isascii()
    assert b"Content-Type: message/global-headers\r\n" in global_form
    assert b"quoted-printable\r\n\r\nSubject: =C3=BC\r\n" in global_form
    to_utf8 = _bounce(failed, "x\r\n\r\ncafé\r\n".encode(), recipient="jösé@abc.example")
    assert seven_bit_form(to_utf8) is None
    assert seven_bit_form(ORIGINAL) is None  # not a report


def test_seven_bit_form_says_the_module_it_is_imported_from() -> None:
    """It is defined in a private module; pickles and the API page name the public one."""
    assert seven_bit_form.__module__ == "smtpcore.server.bounce"
    assert pickle.loads(pickle.dumps(seven_bit_form)) is seven_bit_form


def test_a_utf8_report_keeps_lines_within_998_octets_and_says_8bit() -> None:
    """RFC 6532 §3.4: the line limit is in octets, and a UTF-8 diagnostic of 900
    characters is far more; RFC 2045 §6.1: a part without Content-Transfer-Encoding
    is 7bit, so every part holding UTF-8 says 8bit, and so does the multipart."""
    long_word = "€" * 1500
    raw = _bounce(
        [FailedRecipient("c@d.example", "5.0.0", f"550 5.0.0 {long_word}", "mx", True)],
        "Subject: ü\r\n\r\nx\r\n".encode(),
        recipient="jörg@abc.example",
    )
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    message = _parse(raw)
    assert message["Content-Transfer-Encoding"] == "8bit"
    for part in message.iter_parts():
        assert part["Content-Transfer-Encoding"] == "8bit", part.get_content_type()
    ascii_only = _bounce([FailedRecipient("c@d.example", "5.0.0", "refused")])
    assert b"Content-Transfer-Encoding" not in ascii_only


def test_a_large_message_comes_back_as_its_header() -> None:
    original = b"Subject: big\r\n\r\n" + b"x" * 998 * 2 + b"\r\n" * (MAX_RETURNED_MESSAGE // 2)
    raw = _bounce([FailedRecipient("c@d.example", "5.0.0", "refused")], original)
    assert b"Content-Type: text/rfc822-headers" in raw
    assert b"Subject: big\r\n" in raw and b"xxxx" not in raw
    assert _TOO_LARGE in _unwrapped(raw)


_TOO_LARGE = b"It was too large to return whole: only its header comes back."


def _unwrapped(raw: bytes) -> bytes:
    """``raw`` with its lines joined again, as the words a reader sees."""
    return b" ".join(raw.split(b"\r\n"))


def test_a_header_returned_for_its_size_says_so_and_one_asked_for_does_not() -> None:
    """RFC 3461 §4.3 lets a bounce return the header only: one that does for the
    message's size (over the disk's room, ``too_large``) said only that the header
    follows, as though the sender had asked for it (``RET=HDRS``), which it now says
    only when he did."""
    failed = [FailedRecipient("c@d.example", "5.0.0", "refused")]
    common: dict[str, Any] = {
        "reporting_mta": "mx.abc.example",
        "recipient": "a@b.example",
        "queue_id": "Q1",
        "arrival": 0.0,
        "now": 0.0,
        "failed": failed,
        "original": b"Subject: x\r\n\r\n",
    }
    too_large = build_bounce(headers_only=True, too_large=True, **common).content
    assert b"Content-Type: text/rfc822-headers" in too_large
    assert _TOO_LARGE in _unwrapped(too_large)
    asked = build_bounce(headers_only=True, **common).content
    assert b"too large" not in asked
    assert b"too large" not in build_bounce(**common).content
    with pytest.raises(ValueError):
        _bounce([], b"")


@pytest.mark.parametrize("utf8", [False, True])
def test_a_report_says_whether_the_message_or_its_header_follows(utf8: bool) -> None:
    """The notification names what comes after it (RFC 3461 §4.3: the message or its
    header only), in every report and in a bounce's 7-bit form, which cuts the message."""
    whole = b"The delivery report and your message follow."
    header = b"The delivery report and the header of your message follow."
    original = "Subject: x\r\n\r\ncafé\r\n".encode()
    common: dict[str, Any] = {
        "reporting_mta": "mx.abc.example",
        "recipient": "john@abc.example",
        "queue_id": "Q1",
        "arrival": 0.0,
        "now": 0.0,
        "original": original,
        "utf8": utf8,
    }
    reported = [FailedRecipient("nobody@pqr.example", "5.1.1", "550 5.1.1 no such user")]
    bounce = build_bounce(failed=reported, **common).content
    assert whole in bounce and header not in bounce
    headers_only = build_bounce(failed=reported, headers_only=True, **common).content
    delayed = build_delay_notice(delayed=reported, retry_until=0.0, **common).content
    relayed = [replace(reported[0], status="2.0.0", action="relayed")]
    success = build_success_report(reported=relayed, **common).content
    seven_bit = seven_bit_form(bounce)
    assert seven_bit is not None
    for report in (headers_only, delayed, success, seven_bit):
        assert header in report and whole not in report


def test_a_success_report_returns_only_the_header() -> None:
    raw = build_success_report(
        reporting_mta="mx.abc.example",
        recipient="john@abc.example",
        queue_id="Q1",
        arrival=0.0,
        now=60.0,
        reported=[
            ReportedRecipient(
                "brendon@pqr.example",
                "2.0.0",
                "250 2.0.0 queued as X",
                "mx.pqr.example",
                from_remote=True,
                action="relayed",
                original_recipient="rfc822;b+2Bx@pqr.example",
            )
        ],
        original=b"Subject: hi\r\n\r\nsecret body\r\n",
        envid="E+3D1",
    ).content
    assert b"Subject: Successful Mail Delivery Report" in raw
    assert b"Original-Envelope-Id: E=1" in raw
    assert b"Original-Recipient: rfc822; b+x@pqr.example" in raw
    assert b"Action: relayed" in raw and b"Last-Attempt-Date" not in raw
    assert b"Content-Type: text/rfc822-headers" in raw and b"secret body" not in raw
