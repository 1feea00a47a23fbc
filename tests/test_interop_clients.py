"""Real mail clients against the reference server (``python -m smtpcore serve``), on loopback.

curl submits over STARTTLS with AUTH PLAIN, LOGIN and CRAM-MD5, one of two
recipients refused (``--mail-rcpt-allowfails``), and reads over POP3 (LIST,
RETR, UIDL, TOP, DELE) over STLS and pop3s with APOP and AUTH PLAIN; msmtp
submits over STARTTLS with PLAIN, LOGIN, CRAM-MD5 and SCRAM-SHA-256
(pipelined); s-nail submits with smtp-auth over STARTTLS and reads over
POP3 with STLS. Every message has lines '.', '..', '.x' and no final newline,
and the bytes delivered (or retrieved) are compared exactly, except in
s-nail's submission: s-nail sends that body quoted-printable (it encodes a
lone '.' line), so it is compared after decoding. One server serves the
whole module; each client runs with HOME, CURL_HOME, XDG_CONFIG_HOME and
s-nail's files (MAILRC, MBOX, DEAD, MAIL, TMPDIR) in its own temporary
directory, curl with ``-q`` first (no ``.curlrc``), s-nail with ``-:/`` (no
resource file), and no proxy, so no user configuration is read or written.
msmtp has no option to skip the system's ``/etc/msmtprc``: the ``account
default`` of its ``-C`` file replaces the system's account of that name. A
missing program skips on a developer's machine and fails under CI.
"""

from __future__ import annotations

import os
import quopri
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peers import make_tls_files, require_program, write_maildir
from test_cli_serve import LOOPBACK, Served, serve

pytestmark = pytest.mark.interop

SENDER = "john@abc.example"
SENDER_PASSWORD = "s3cret"
RECIPIENT = "brendon@abc.example"
RECIPIENT_PASSWORD = "pw2"
UNKNOWN = "nobody@abc.example"

#: Lines that dot-stuffing must get right (RFC 5321 §4.5.2), and no newline at the end.
MESSAGE = (
    b"From: john@abc.example\r\nTo: brendon@abc.example\r\nSubject: dots\r\n\r\n"
    b".\r\n..\r\n...\r\n.x\r\nline\r\n. \r\nend-no-newline"
)
#: What a Maildir holds after delivery: LF line ends, and the last line ended by
#: the CRLF that precedes the terminating dot (RFC 5321 §4.1.1.4).
STORED = MESSAGE.replace(b"\r\n", b"\n") + b"\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The reference server with submission (STARTTLS), POP3 (STLS) and pop3s."""
    directory = tmp_path_factory.mktemp("clients")
    tls = make_tls_files(directory)
    users = directory / "users.txt"
    users.write_text(f"{SENDER}:{SENDER_PASSWORD}\n{RECIPIENT}:{RECIPIENT_PASSWORD}\n")
    options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    with serve(
        directory / "data",
        "abc.example",
        [],
        listeners=("submission", "pop3", "pop3s"),
        extra=(*options, "--users-file", str(users)),
    ) as served:
        yield served


@pytest.fixture
def empty(server: Served) -> Served:
    """The module's server with the recipient's mailbox emptied."""
    mailbox = server.data_dir / "mailboxes" / RECIPIENT
    for sub in ("new", "cur"):
        if (mailbox / sub).is_dir():
            for path in (mailbox / sub).iterdir():
                path.unlink()
    return server


def without_trace(message: bytes) -> bytes:
    """``message`` without the Return-Path and Received fields delivery put first."""
    lines = message.split(b"\n")
    start = 0
    while start < len(lines) and (
        lines[start].startswith((b"Return-Path:", b"Received:"))
        or lines[start][:1] in (b" ", b"\t")
    ):
        start += 1
    return b"\n".join(lines[start:])


def delivered(server: Served) -> list[bytes]:
    return [without_trace(message) for message in server.mailbox(RECIPIENT)]


#: Proxies curl would take for SMTP and POP3 too, dropped from a client's environment.
PROXY_VARIABLES = frozenset({"all_proxy", "ALL_PROXY", "socks_proxy", "SOCKS_PROXY"})


def client_environment(home: Path) -> dict[str, str]:
    """This process's environment with every place the clients read a user's
    configuration from, or write their files to, moved into ``home``: curl reads
    ``.curlrc`` from CURL_HOME and XDG_CONFIG_HOME before HOME; s-nail keeps
    MAILRC, MBOX, DEAD, MAIL and TMPDIR. No proxy: the connection is to loopback."""
    (home / ".config").mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if k not in PROXY_VARIABLES}
    environment.update(
        HOME=str(home),
        CURL_HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        MAILRC=str(home / ".mailrc"),
        MBOX=str(home / "mbox"),
        DEAD=str(home / "dead.letter"),
        MAIL=str(home / "mail"),
        TMPDIR=str(home / "tmp"),
        NO_PROXY="*",
        no_proxy="*",
    )
    return environment


def run_client(argv: list[str], home: Path, stdin: bytes = b"") -> bytes:
    """Run a client in :func:`client_environment`; its stdout, or fail with what it said."""
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        argv,
        input=stdin,
        capture_output=True,
        timeout=30,
        env=client_environment(home),
        check=False,
    )
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, f"{argv[0]} failed ({result.returncode}):\n{output[-3000:]}"
    return result.stdout


def logged(server: Served, start: int, text: str, count: int = 1) -> bool:
    """True once the server's log past offset ``start`` holds ``text`` ``count`` times;
    a session's closing line comes after the client has gone, so wait for it (5 s)."""
    deadline = time.monotonic() + 5
    while server.log()[start:].count(text) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def logged_under_tls(server: Served, start: int, text: str, count: int = 1) -> bool:
    """:func:`logged` for ``tls=TLSv1.N text``, whichever TLS 1.x version the client
    and the server agreed on (RFC 8996 leaves 1.2 and 1.3)."""
    pattern = re.compile(r"tls=TLSv1\.[23] " + re.escape(text))
    deadline = time.monotonic() + 5
    while len(pattern.findall(server.log()[start:])) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def curl(*arguments: str) -> list[str]:
    """A curl command line; ``-q`` must come first for curl to skip ``.curlrc``."""
    return [require_program("curl"), "-q", *arguments]


# -- curl ------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_curl_submits_over_starttls(empty: Served, tmp_path: Path, mechanism: str) -> None:
    message = tmp_path / "message.eml"
    message.write_bytes(MESSAGE)  # CRLF already: curl's --crlf would make CR CR LF
    mark = len(empty.log())
    # The URL's path is the name curl gives in EHLO.
    url = f"smtp://{LOOPBACK}:{empty.ports['submission']}/client.test"
    run_client(
        [
            *curl("-sS", url, "--ssl-reqd", "-k", "--login-options", f"AUTH={mechanism}"),
            *("-u", f"{SENDER}:{SENDER_PASSWORD}", "--mail-from", SENDER),
            *("--mail-rcpt", RECIPIENT, "--mail-rcpt", UNKNOWN, "--mail-rcpt-allowfails"),
            *("--upload-file", str(message)),
        ],
        tmp_path / "home",
    )
    assert delivered(empty) == [STORED]
    assert logged(empty, mark, f"AUTH {mechanism} from")
    assert logged_under_tls(empty, mark, "auth=john@abc.example mail=1 rcpt=1/2 messages=1")


POP3_TRANSPORTS = {"stls": ("pop3", "pop3", ["--ssl-reqd"]), "pop3s": ("pop3s", "pop3s", [])}
POP3_LOGINS = {
    "APOP": ["--login-options", "AUTH=+APOP"],
    "PLAIN": ["--login-options", "AUTH=PLAIN", "--sasl-ir"],
}


@pytest.mark.parametrize("login", POP3_LOGINS)
@pytest.mark.parametrize("transport", POP3_TRANSPORTS)
def test_curl_reads_over_pop3(empty: Served, tmp_path: Path, transport: str, login: str) -> None:
    [path] = write_maildir(empty.data_dir / "mailboxes" / RECIPIENT, [STORED])
    scheme, listener, tls_option = POP3_TRANSPORTS[transport]
    url = f"{scheme}://{LOOPBACK}:{empty.ports[listener]}/"
    mark = len(empty.log())

    def pop3(*extra: str, path: str = "") -> bytes:
        return run_client(
            [
                *curl("-sS", url + path, "-k", *tls_option, *POP3_LOGINS[login]),
                *("-u", f"{RECIPIENT}:{RECIPIENT_PASSWORD}", *extra),
            ],
            tmp_path / "home",
        )

    size = len(STORED.replace(b"\n", b"\r\n"))
    assert pop3() == f"1 {size}\r\n".encode()  # LIST
    assert pop3(path="1") == STORED.replace(b"\n", b"\r\n")  # RETR 1, unstuffed
    uidl = pop3("-X", "UIDL").split()
    assert uidl[0] == b"1" and len(uidl) == 2
    assert pop3("-X", "TOP 1 0") == MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    pop3("-X", "DELE", "-I", path="1")
    assert not path.exists()  # DELE then QUIT: gone
    assert logged(empty, mark, f"method={login} tls=TLSv1", count=5)


# -- msmtp -----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["plain", "login", "cram-md5", "scram-sha-256"])
def test_msmtp_submits_over_starttls(empty: Served, tmp_path: Path, mechanism: str) -> None:
    msmtp = require_program("msmtp")
    config = tmp_path / "msmtprc"
    config.write_text(
        "account default\n"
        f"host {LOOPBACK}\nport {empty.ports['submission']}\ndomain client.test\n"
        "tls on\ntls_starttls on\ntls_certcheck off\n"
        f"auth {mechanism}\nuser {SENDER}\npassword {SENDER_PASSWORD}\nfrom {SENDER}\n"
        # Send the message as it is, so that the bytes can be compared.
        "set_from_header off\nset_date_header off\nset_msgid_header off\n"
    )
    config.chmod(0o600)  # msmtp refuses a password in a file others can read
    mark = len(empty.log())
    run_client([msmtp, "-C", str(config), RECIPIENT], tmp_path / "home", stdin=MESSAGE)
    assert delivered(empty) == [STORED]
    assert logged(empty, mark, f"AUTH {mechanism.upper()} from")


# -- s-nail ----------------------------------------------------------------------------


def s_nail(server: Served, tmp_path: Path, *options: str, stdin: bytes = b"") -> bytes:
    """s-nail in batch mode (``-#``) with no configuration file (``-:/``), v15 URLs."""
    program = require_program("s-nail")
    argv = [program, "-#", "-:/", "-Sv15-compat", "-Sttycharset=utf-8", "-Stls-verify=ignore"]
    return run_client([*argv, *options], tmp_path / "home", stdin=stdin)


def test_s_nail_submits_with_smtp_auth_over_starttls(empty: Served, tmp_path: Path) -> None:
    """s-nail's body is compared after quoted-printable decoding, not byte for byte:
    s-nail encodes a lone '.' line and the missing final newline itself."""
    mark = len(empty.log())
    mta = f"smtp://john%40abc.example:{SENDER_PASSWORD}@{LOOPBACK}:{empty.ports['submission']}"
    body = b".\n..\n.x\nend-no-newline"
    s_nail(
        empty,
        tmp_path,
        f"-Smta={mta}",
        "-Ssmtp-use-starttls",
        "-Ssmtp-auth=plain",
        "-Shostname=client.test",
        f"-r{SENDER}",
        "-sfrom s-nail",
        RECIPIENT,
        stdin=body,
    )
    [message] = delivered(empty)
    # s-nail writes its own header (Date, Message-ID, User-Agent) and quotes a lone '.'
    # line and the missing final newline (quoted-printable): decoded, the body is as typed.
    header, content = message.split(b"\n\n", 1)
    assert b"Content-Transfer-Encoding: quoted-printable" in header
    assert quopri.decodestring(content) == body
    assert b"Subject: from s-nail\n" in message
    assert logged(empty, mark, "AUTH PLAIN from")
    assert logged_under_tls(empty, mark, "auth=john@abc.example mail=1 rcpt=1/1 messages=1")


def test_s_nail_reads_over_pop3_with_stls(empty: Served, tmp_path: Path) -> None:
    write_maildir(empty.data_dir / "mailboxes" / RECIPIENT, [STORED])
    mark = len(empty.log())
    folder = f"pop3://brendon%40abc.example:{RECIPIENT_PASSWORD}@{LOOPBACK}:{empty.ports['pop3']}"
    # -Shold keeps the message on the server when s-nail quits.
    shown = s_nail(
        empty, tmp_path, "-Spop3-use-starttls", "-Shold", "-f", folder, stdin=b"Print 1\nquit\n"
    )
    # s-nail prints a line of its own, the header with a From_ line and Status added,
    # the body as retrieved, and a blank line after it.
    header, body = shown.split(b"\n\n", 1)
    stored_header, stored_body = STORED.split(b"\n\n", 1)
    assert stored_header + b"\nStatus: R" in header
    assert body == stored_body + b"\n"
    assert logged_under_tls(empty, mark, "messages=1 retrieved=1 deleted=0 duration")
