"""Real POP3 peers on loopback: clients against our server, our client against Dovecot.

Every client retrieves the same prepared mailbox, 1,000 messages of about
2 KB plus one of 20 MB, and must deliver every byte (line ends aside: a
client that writes a Unix mailbox stores LF), and the server must remove the
messages only once the client said QUIT. Each run gets a hard-linked copy of
the mailbox, prepared once per test session. fetchmail and mpop also fetch
over STLS with the certificate checked, keeping the mail, and mpop then
fetches only what is new by its UIDL. Our client fetches the same mailbox
from Dovecot's POP3 server. A missing program skips on a developer's machine
and fails under CI.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import poplib
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

from peers import (
    ADAPTERS,
    Dovecot,
    TLSFiles,
    copy_maildir,
    dovecot_pop3,
    free_port,
    hand_to_dovecot,
    require_program,
    run,
    running_pop3_server,
    write_maildir,
)
from smtpcore import pop3
from smtpcore.maildrop import MaildirStore
from smtpcore.sasl import PlainClient, ScramSHA1Client, ScramSHA256Client

pytestmark = pytest.mark.interop

#: Messages in the prepared mailbox besides the large one; the benchmark
#: (benchmarks/pop3_adapters.py) fetches the same count, of 10 KB each.
MESSAGES = 1000
LARGE_SIZE = 20 * 1024 * 1024
PASSWORD = "correct horse"


def make_message(number: int) -> bytes:
    """A message of about 2 KB with the lines dot-stuffing must get right."""
    lines = [
        f"Subject: message {number}",
        "From: sender@abc.example",
        "To: alice@pqr.example",
        f"Message-ID: <{number}@abc.example>",
        "",
        f"Body of message {number}.",
        ".a line with a leading dot",
        "..two leading dots",
        ".",
        "",
        *(f"line {n} " + "x" * (n % 70) for n in range(40)),
    ]
    text = "\n".join(lines).encode() + b"\n\xe9\xe8 latin-1 bytes\n"
    # Half stored with Unix line ends, as Maildir delivery writes them; half with CRLF.
    return text if number % 2 else text.replace(b"\n", b"\r\n")


def make_large() -> bytes:
    line = b"." + bytes(range(0x21, 0x7F)) * 2 + b"\r\n"  # 192 octets, a leading dot
    header = b"Subject: large\r\nFrom: sender@abc.example\r\n\r\n"
    body = line * ((LARGE_SIZE - len(header)) // len(line))
    return header + body + b"end\r\n"


def lf(content: bytes) -> bytes:
    return content.replace(b"\r\n", b"\n")


def digests(messages: Iterator[bytes] | list[bytes]) -> list[str]:
    """The mailbox as a sorted list of digests of its messages, line ends as LF."""
    return sorted(hashlib.sha256(lf(m)).hexdigest() for m in messages)


class Mailbox:
    """The prepared mailbox: a template Maildir and what a client must end up with."""

    def __init__(self, template: Path, contents: list[bytes]) -> None:
        self.template = template
        self.expected = digests(contents)
        self.count = len(contents)
        self.large = contents[-1]

    def copy(self, target: Path) -> Path:
        copy_maildir(self.template, target)
        return target


@pytest.fixture(scope="session")
def mailbox(tmp_path_factory: pytest.TempPathFactory) -> Mailbox:
    contents = [make_message(n) for n in range(MESSAGES)] + [make_large()]
    template = tmp_path_factory.mktemp("pop3-mailbox") / "template"
    write_maildir(template, contents)
    return Mailbox(template, contents)


def served(mailbox: Mailbox, tmp_path: Path) -> MaildirStore:
    mailbox.copy(tmp_path / "mail" / "alice")
    return MaildirStore(tmp_path / "mail", {"alice": PASSWORD})


def left_in(store: MaildirStore) -> int:
    path = store.root / "alice"
    return sum(len(os.listdir(path / sub)) for sub in ("new", "cur"))


def files_in(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in directory.rglob("*") if p.is_file()]


def check_run(result: subprocess.CompletedProcess[bytes], what: str) -> None:
    output = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{output[-3000:]}"


# -- real clients against our server --------------------------------------------------


def test_poplib_retrieves_everything_and_quit_deletes(
    adapter: str, mailbox: Mailbox, tmp_path: Path
) -> None:
    store = served(mailbox, tmp_path)
    with running_pop3_server(adapter, store) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=30)
        client.user("alice")
        client.pass_(PASSWORD)
        count, _ = client.stat()
        assert count == mailbox.count
        fetched = []
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            fetched.append(b"\n".join(lines) + b"\n")
            client.dele(number)
        assert left_in(store) == mailbox.count  # marked, not removed
        client.quit()
    assert digests(fetched) == mailbox.expected
    assert left_in(store) == 0


def parse_bsmtp(data: bytes) -> list[bytes]:
    """The messages of a batch-SMTP file: the content after each DATA, unstuffed."""
    messages: list[bytes] = []
    content: list[bytes] | None = None
    for line in data.splitlines(keepends=True):
        if content is None:
            if line.rstrip(b"\r\n") == b"DATA":
                content = []
        elif line.rstrip(b"\r\n") == b".":
            messages.append(b"".join(content))
            content = None
        else:
            content.append(line[1:] if line.startswith(b".") else line)
    return messages


def test_fetchmail(adapter: str, mailbox: Mailbox, tmp_path: Path) -> None:
    # Delivery to a batch-SMTP file: an MDA would cost a process per message.
    fetchmail = require_program("fetchmail")
    store = served(mailbox, tmp_path)
    out = tmp_path / "delivered.bsmtp"
    with running_pop3_server(adapter, store) as server:
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            "set invisible\n"  # no Received: line of its own
            f"poll 127.0.0.1 service {server.port} protocol pop3\n"
            f'  user "alice" there with password "{PASSWORD}" is "alice" here\n'
            '  options fetchall no keep no rewrite sslproto ""\n'
            f'  bsmtp "{out}"\n'
        )
        rc.chmod(0o600)
        result = subprocess.run(
            [fetchmail, "-f", str(rc), "--nodetach", "-N", "--pidfile", str(tmp_path / "pid")],
            capture_output=True,
            timeout=120,
            env={**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)},
            check=False,
        )
    check_run(result, "fetchmail")
    assert digests(parse_bsmtp(out.read_bytes())) == mailbox.expected
    assert left_in(store) == 0


class _LMTPSink:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.original_content)
        return "250 OK"


class _LMTPController(Controller):
    def factory(self) -> Any:
        return LMTP(self.handler, data_size_limit=None)


def test_getmail(adapter: str, mailbox: Mailbox, tmp_path: Path) -> None:
    # getmail's Maildir and mbox destinations fork a child per message (and
    # refuse to run as root); its LMTP destination hands each message to
    # aiosmtpd in this process instead, quickly and as it was retrieved.
    getmail = require_program("getmail")
    store = served(mailbox, tmp_path)
    sink = _LMTPSink()
    lmtp = _LMTPController(sink, hostname="127.0.0.1", port=free_port())
    lmtp.start()
    try:
        with running_pop3_server(adapter, store) as server:
            rc = tmp_path / "getmailrc"
            rc.write_text(
                "[retriever]\n"
                "type = SimplePOP3Retriever\n"
                f"server = 127.0.0.1\nport = {server.port}\n"
                f"username = alice\npassword = {PASSWORD}\n"
                "[destination]\n"
                f"type = MDA_lmtp\nhost = 127.0.0.1\nport = {lmtp.port}\n"
                "override = alice@pqr.example\n"
                "[options]\n"
                "delete = true\nread_all = true\nverbose = 0\n"
                "delivered_to = false\nreceived = false\n"
            )
            result = subprocess.run(
                [getmail, "--getmaildir", str(tmp_path), "--rcfile", str(rc)],
                capture_output=True,
                timeout=120,
                check=False,
            )
    finally:
        lmtp.stop()
    check_run(result, "getmail")
    assert digests(sink.contents) == mailbox.expected
    assert left_in(store) == 0


def test_mpop(adapter: str, mailbox: Mailbox, tmp_path: Path) -> None:
    mpop = require_program("mpop")
    store = served(mailbox, tmp_path)
    out = tmp_path / "delivered"
    for sub in ("tmp", "new", "cur"):
        (out / sub).mkdir(parents=True)
    with running_pop3_server(adapter, store) as server:
        rc = tmp_path / "mpoprc"
        rc.write_text(
            "account test\n"
            f"host 127.0.0.1\nport {server.port}\n"
            f"user alice\npassword {PASSWORD}\nauth user\ntls off\n"
            f"delivery maildir {out}\n"
            "keep off\nonly_new off\nreceived_header off\n"
            f"uidls_file {tmp_path / 'uidls'}\n"
        )
        rc.chmod(0o600)
        result = subprocess.run(
            [mpop, "-q", "-C", str(rc), "test"], capture_output=True, timeout=120, check=False
        )
    check_run(result, "mpop")
    assert digests(files_in(out)) == mailbox.expected
    assert left_in(store) == 0


UTF8_MAIL = (
    "From: Jörg <jörg@bücher.example>\r\nTo: ann@abc.example\r\n"
    "Subject: Grüße aus Köln\r\n"
    'Content-Type: text/plain; charset=utf-8; name="Größe.txt"\r\n\r\n'
    "Body stays UTF-8: ü\r\n"
).encode()


def test_legacy_clients_fetch_the_rfc_6858_surrogate(adapter: str, tmp_path: Path) -> None:
    """fetchmail and mpop never send UTF8: from a server that offers it and
    downgrades (``python -m smtpcore serve``) they fetch the message whose header
    holds UTF-8 as its surrogate, and delete it, where it got ``-ERR [UTF8]`` and
    stayed in the maildrop for ever. The +OK of RETR counts what is sent, so
    fetchmail, which checks the octets it got against it, takes it without a
    complaint."""
    fetchmail, mpop = require_program("fetchmail"), require_program("mpop")
    surrogate = pop3.ascii_surrogate(UTF8_MAIL)
    for client in (fetchmail, mpop):
        write_maildir(tmp_path / client.replace("/", "_") / "alice", [UTF8_MAIL])
        store = MaildirStore(tmp_path / client.replace("/", "_"), {"alice": PASSWORD})
        out = tmp_path / f"{len(client)}-{client.rsplit('/', 1)[-1]}"
        with running_pop3_server(adapter, store, utf8=True, downgrade=True) as server:
            if client == fetchmail:
                result = _run_fetchmail(fetchmail, server.port, out, tmp_path)
                check_run(result, "fetchmail")
                assert b"not the expected length" not in result.stdout + result.stderr
                assert parse_bsmtp(out.read_bytes()) == [surrogate]
            else:
                result = _run_mpop(mpop, server.port, out, tmp_path)
                check_run(result, "mpop")
                assert [lf(m) for m in files_in(out)] == [lf(surrogate)]
        assert left_in(store) == 0


STORED_UTF8_MAIL = (
    "Return-Path: <jörg@bücher.example>\r\n"
    "Received: from a.example by mx.example with UTF8SMTPS\r\n"
    "\tfor <ann@abc.example>; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    "Message-ID: <zwölf@bücher.example>\r\n"
).encode() + UTF8_MAIL


def test_fetchmail_takes_no_encoded_word_for_its_envelope(adapter: str, tmp_path: Path) -> None:
    """The message as the reference server stores it, with the UTF-8 sender in
    Return-Path and Received: fetchmail builds its MAIL FROM from Return-Path, and
    an encoded-word there (``MAIL FROM:<=?utf-8?b?...?=>``) sends bounces nowhere.
    The surrogate's Return-Path is the null path: fetchmail's MAIL FROM too (it
    would take From's empty group without one), never an encoded-word."""
    fetchmail = require_program("fetchmail")
    write_maildir(tmp_path / "maildir" / "alice", [STORED_UTF8_MAIL])
    store = MaildirStore(tmp_path / "maildir", {"alice": PASSWORD})
    out = tmp_path / "delivered.bsmtp"
    with running_pop3_server(adapter, store, utf8=True, downgrade=True) as server:
        result = _run_fetchmail(fetchmail, server.port, out, tmp_path)
    check_run(result, "fetchmail")
    delivered = out.read_bytes()
    [mail_from] = [line for line in delivered.splitlines() if line.startswith(b"MAIL FROM:")]
    assert mail_from == b"MAIL FROM:<>"
    surrogate = pop3.ascii_surrogate(STORED_UTF8_MAIL)
    assert surrogate.startswith(b"Return-Path: <>\r\nReceived: from a.example")
    assert b"Message-ID" not in surrogate
    # fetchmail takes Return-Path into the envelope, out of the content.
    assert parse_bsmtp(delivered) == [surrogate.removeprefix(b"Return-Path: <>\r\n")]
    assert left_in(store) == 0


def _run_fetchmail(
    fetchmail: str, port: int, out: Path, home: Path
) -> subprocess.CompletedProcess[bytes]:
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\nset invisible\n"
        f"poll 127.0.0.1 service {port} protocol pop3\n"
        f'  user "alice" there with password "{PASSWORD}" is "alice" here\n'
        '  options fetchall no keep no rewrite sslproto ""\n'
        f'  bsmtp "{out}"\n'
    )
    rc.chmod(0o600)
    return subprocess.run(
        [fetchmail, "-v", "-f", str(rc), "--nodetach", "-N", "--pidfile", str(home / "pid")],
        capture_output=True,
        timeout=60,
        env={**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)},
        check=False,
    )


def _run_mpop(mpop: str, port: int, out: Path, home: Path) -> subprocess.CompletedProcess[bytes]:
    for sub in ("tmp", "new", "cur"):
        (out / sub).mkdir(parents=True)
    rc = home / "mpoprc"
    rc.write_text(
        f"account test\nhost 127.0.0.1\nport {port}\n"
        f"user alice\npassword {PASSWORD}\nauth user\ntls off\n"
        f"delivery maildir {out}\nkeep off\nonly_new off\nreceived_header off\n"
        f"uidls_file {home / 'uidls'}\n"
    )
    rc.chmod(0o600)
    return subprocess.run(
        [mpop, "-q", "-C", str(rc), "test"], capture_output=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def named_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    """A server context and CA file whose certificate also has a common name (fetchmail
    checks the name there, and with ``sslcommonname`` rather than the address)."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path_factory.mktemp("named-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return context, ca_file


def test_fetchmail_over_stls_keeping_messages(
    adapter: str, tmp_path: Path, named_tls: tuple[ssl.SSLContext, Path]
) -> None:
    fetchmail = require_program("fetchmail")
    context, ca_file = named_tls
    contents = [make_message(n) for n in range(20)]
    write_maildir(tmp_path / "mail" / "alice", contents)
    store = MaildirStore(tmp_path / "mail", {"alice": PASSWORD})
    out = tmp_path / "delivered.bsmtp"
    with running_pop3_server(adapter, store, ssl_context=context) as server:
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            "set no syslog\nset invisible\n"
            f"poll 127.0.0.1 service {server.port} protocol pop3\n"
            f'  user "alice" there with password "{PASSWORD}" is "alice" here\n'
            '  options fetchall keep no rewrite sslproto "TLS1.2+" sslcertck\n'
            f'  sslcommonname "localhost" sslcertfile "{ca_file}"\n'
            f'  bsmtp "{out}"\n'
        )
        rc.chmod(0o600)
        result = subprocess.run(
            [fetchmail, "-v", "-f", str(rc), "--nodetach", "-N", "--pidfile", str(tmp_path / "p")],
            capture_output=True,
            timeout=60,
            env={**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)},
            check=False,
        )
    check_run(result, "fetchmail")
    assert b"POP3> STLS" in result.stdout + result.stderr
    assert digests(parse_bsmtp(out.read_bytes())) == digests(contents)
    assert left_in(store) == len(contents)  # "keep": nothing deleted


def test_mpop_over_stls_fetches_only_new_mail_by_uidl(
    adapter: str, tmp_path: Path, tls: TLSFiles
) -> None:
    mpop = require_program("mpop")
    contents = [make_message(n) for n in range(20)]
    write_maildir(tmp_path / "mail" / "alice", contents[:15])
    store = MaildirStore(tmp_path / "mail", {"alice": PASSWORD})
    out = tmp_path / "delivered"
    for sub in ("tmp", "new", "cur"):
        (out / sub).mkdir(parents=True)
    rc = tmp_path / "mpoprc"
    with running_pop3_server(adapter, store, ssl_context=tls.server_context) as server:
        rc.write_text(
            "account test\n"
            f"host 127.0.0.1\nport {server.port}\n"
            f"user alice\npassword {PASSWORD}\nauth plain\n"
            f"tls on\ntls_starttls on\ntls_trust_file {tls.ca_file}\n"
            f"delivery maildir {out}\n"
            "keep on\nonly_new on\nreceived_header off\n"
            f"uidls_file {tmp_path / 'uidls'}\n"
        )
        rc.chmod(0o600)
        argv = [mpop, "-q", "-C", str(rc), "test"]
        check_run(subprocess.run(argv, capture_output=True, timeout=60, check=False), "mpop")
        assert digests(files_in(out)) == digests(contents[:15])
        # Five more arrive; the next session fetches only those, by their UIDL.
        for number, content in enumerate(contents[15:], 100):
            (
                store.root / "alice" / "new" / f"{1_800_000_000 + number}.M{number}.test"
            ).write_bytes(content)
        check_run(subprocess.run(argv, capture_output=True, timeout=60, check=False), "mpop")
    assert digests(files_in(out)) == digests(contents)
    assert left_in(store) == len(contents)


# -- our client against Dovecot ----------------------------------------------------


@pytest.fixture(scope="module")
def dovecot(tls: TLSFiles) -> Iterator[Dovecot]:
    users = {f"alice-{adapter}": PASSWORD for adapter in ADAPTERS}
    # Not under pytest's private (0700) temporary directory: Dovecot's
    # unprivileged processes must reach the passwd-file and the Maildirs.
    with tempfile.TemporaryDirectory(prefix="smtpcore-dovecot-") as directory:
        os.chmod(directory, 0o755)
        with dovecot_pop3(
            Path(directory),
            users,
            tls=tls,
            auth_mechanisms="plain login scram-sha-1 scram-sha-256",
        ) as server:
            yield server


def test_our_client_against_dovecot(
    adapter: str, mailbox: Mailbox, dovecot: Dovecot, tls: TLSFiles
) -> None:
    user = f"alice-{adapter}"
    hand_to_dovecot(dovecot, mailbox.copy(dovecot.maildir(user)))
    mod = importlib.import_module(f"smtpcore.{adapter}")

    async def fetch() -> tuple[list[bytes], bytes, int]:
        client = mod.POP3Client("127.0.0.1", dovecot.port, ssl_context=tls.client_context)
        async with client:
            assert client.tls  # STLS, certificate verified
            # (No wrong password here: Dovecot would slow down every later login.)
            await client.authenticate(PlainClient(user, PASSWORD))
            listing = await client.list()
            assert len(listing) == mailbox.count and all(m.uid for m in listing)
            with pytest.raises(mod.POP3ResponseError) as info:
                await client.retrieve(mailbox.count + 1)
            assert info.value.command == "RETR" and info.value.response.text
            numbers = [m.number for m in listing]
            fetched = [message async for _, message in client.retrieve_many(numbers[:-1])]
            chunks = [chunk async for chunk in client.retrieve_chunks(numbers[-1])]
            assert len(chunks) > 1
            assert listing[-1].size == len(mailbox.large)
            whole = await client.retrieve(1)
            assert await client.top(1, 0) == whole[: whole.index(b"\r\n\r\n") + 4]
            for number in numbers:
                await client.delete(number)
            maildir = dovecot.maildir(user)
            marked = sum(len(os.listdir(maildir / sub)) for sub in ("new", "cur"))
            return fetched, b"".join(chunks), marked

    fetched, large, marked = run(adapter, fetch)
    assert digests([*fetched, large]) == mailbox.expected
    assert large == mailbox.large
    assert marked == mailbox.count  # marked deleted, removed only by QUIT
    maildir = dovecot.maildir(user)
    assert os.listdir(maildir / "new") == [] and os.listdir(maildir / "cur") == []


@pytest.mark.parametrize("mechanism", [ScramSHA1Client, ScramSHA256Client])
def test_our_scram_client_logs_in_to_dovecot(
    adapter: str,
    dovecot: Dovecot,
    tls: TLSFiles,
    mechanism: type[ScramSHA1Client | ScramSHA256Client],
) -> None:
    """Dovecot's own SCRAM (RFC 5802; SHA-256 from RFC 7677) takes our proof and proves
    itself to our client, which checks its signature before it counts the login."""
    user = f"alice-{adapter}"
    mod = importlib.import_module(f"smtpcore.{adapter}")

    async def log_in() -> tuple[list[str], bool]:
        client = mod.POP3Client("127.0.0.1", dovecot.port, ssl_context=tls.client_context)
        async with client:
            offered = list(client.capabilities["SASL"])
            scram = mechanism(user, PASSWORD)
            await client.authenticate(scram)
            await client.stat()
            return offered, scram.complete

    offered, complete = run(adapter, log_in)
    assert mechanism.name in offered and complete
