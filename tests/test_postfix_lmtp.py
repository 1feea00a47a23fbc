"""Postfix hands mail to our LMTP server on a Unix socket (issue 15 item 3).

``lmtp:unix:/path`` is how Postfix delivers to a local delivery agent. The
test runs a private Postfix (its own master process, configuration
directory and queue directory, under a temporary directory; the machine's
own Postfix is never touched), relays a message into it over SMTP, and
waits for its LMTP client to deliver it to ``SMTPServer(unix_path=...,
lmtp=True)`` on both adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from peers import (
    LOOPBACK,
    free_port,
    missing_peer,
    require_program,
    run_process,
    running_smtp_server,
    wait_for_port,
)
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.server import MailServer, ServerConfig
from smtpcore.server.maildir import Maildir
from smtpcore.smtp import Lhlo, Rcpt, Reply

MESSAGE = b"Subject: through Postfix\r\n\r\n.a dotted line\r\nbye\r\n"

#: The daemons a private instance needs to take mail over SMTP and pass it on over LMTP.
MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
lmtp      unix - - n - - lmtp
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
daemon_directory = {daemons}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.test
mydomain = relay.test
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
default_transport = lmtp:{destination}
maillog_file = /dev/stdout
alias_maps =
alias_database =
biff = no
"""

#: Queue subdirectories: (name, group, mode), as Postfix's postfix-files has them.
QUEUE_DIRS = [
    *((name, None, 0o700) for name in ("active", "bounce", "corrupt", "defer", "deferred")),
    *((name, None, 0o700) for name in ("flush", "hold", "incoming", "private", "saved")),
    ("trace", None, 0o700),
    ("public", "postdrop", 0o710),
    ("maildrop", "postdrop", 0o730),
]


class Delivery(Handler):
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.greeted: list[str] = []

    async def handle_hello(self, session: Session, command: object) -> Reply | None:
        if isinstance(command, Lhlo):
            self.greeted.append(command.domain)
        return None

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        recipients = [str(recipient.mailbox) for recipient in envelope.recipients]
        self.messages.append((recipients, envelope.content))
        return None


@contextlib.contextmanager
def private_postfix(
    destination: str, port: int, main_cf: Mapping[str, str] | None = None
) -> Iterator[Path]:
    """A Postfix instance of this test's own, relaying everything over LMTP to
    ``destination`` (``unix:/path`` or ``inet:host:port``); ``main_cf`` adds
    main.cf parameters."""
    postconf = require_program("postconf")
    found = subprocess.run(
        [postconf, "-d", "-h", "daemon_directory"], capture_output=True, text=True, check=False
    )
    daemons = found.stdout.strip()
    master = str(Path(daemons, "master"))
    if found.returncode != 0 or not Path(daemons, "lmtp").exists():
        missing_peer(f"no Postfix daemons where postconf says ({daemons!r})")
    if os.geteuid() != 0:
        missing_peer("a private Postfix needs root (its daemons run as the postfix user)")
    try:
        owner = pwd.getpwnam("postfix")
    except KeyError:
        missing_peer("no postfix user")
    # Postfix's daemons run as the postfix user and must reach the queue.
    root = Path(tempfile.mkdtemp(prefix="smtpcore-postfix-", dir="/tmp"))
    try:
        root.chmod(0o755)
        config = root / "conf"
        config.mkdir()
        (root / "data").mkdir()
        os.chown(root / "data", owner.pw_uid, -1)
        queue = root / "queue"
        queue.mkdir(mode=0o755)
        for name, group, mode in QUEUE_DIRS:
            path = queue / name
            path.mkdir()
            shutil.chown(path, "postfix", group)
            path.chmod(mode)
        (queue / "pid").mkdir(mode=0o755)
        (config / "main.cf").write_text(
            MAIN_CF.format(root=root, daemons=daemons, destination=destination)
            + "".join(f"{name} = {value}\n" for name, value in (main_cf or {}).items())
        )
        (config / "master.cf").write_text(MASTER_CF.format(listen=f"{LOOPBACK}:{port}"))
        with run_process([master, "-c", str(config), "-d"]) as process:
            wait_for_port(LOOPBACK, port, timeout=20, process=process)
            yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_postfix_delivers_over_lmtp_on_a_unix_socket(adapter: str) -> None:
    handler = Delivery()
    socket_dir = Path(tempfile.mkdtemp(prefix="smtpcore-lmtp-", dir="/tmp"))
    try:
        socket_dir.chmod(0o755)
        socket_path = socket_dir / "lmtp.sock"
        with running_smtp_server(
            adapter, handler, unix_path=socket_path, lmtp=True, hostname="lmtp.test"
        ):
            socket_path.chmod(0o666)  # Postfix's lmtp client runs as the postfix user
            port = free_port()
            with private_postfix(f"unix:{socket_path}", port):
                with smtplib.SMTP(LOOPBACK, port, timeout=10) as client:
                    refused = client.sendmail("a@abc.example", ["b@pqr.example"], MESSAGE)
                    assert refused == {}
                deadline = time.monotonic() + 30
                while not handler.messages and time.monotonic() < deadline:
                    time.sleep(0.1)
        assert handler.greeted == ["relay.test"]
        [(recipients, content)] = handler.messages
        assert recipients == ["b@pqr.example"]
        assert content.startswith(b"Received: from ") and b"by relay.test (Postfix)" in content
        assert content.endswith(MESSAGE.split(b"\r\n\r\n", 1)[1])
        assert b"Subject: through Postfix\r\n" in content
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _reference_server_config(data_dir: Path) -> ServerConfig:
    """The reference server with its ``lmtp`` listener alone (port 1: on, the socket
    given to :class:`MailServer` replaces it)."""
    return ServerConfig(
        domains=("pqr.example",),
        users={"a@pqr.example": "x", "b@pqr.example": "y"},
        data_dir=data_dir,
        hostname="mx.pqr.example",
        smtp_port=0,
        submission_port=0,
        pop3_port=0,
        lmtp_port=1,
        min_free_space=0,
    )


def test_postfix_reports_a_delivery_to_the_lmtp_listener_as_delivered(tmp_path: Path) -> None:
    """The audit's case: Postfix's lmtp client delivers to the reference server's
    ``lmtp`` listener for a sender who asked ``NOTIFY=SUCCESS``. The listener offers
    no DSN, and must not while it issues no report of its own: Postfix takes a server
    that offers DSN for one that reports (RFC 3461 §5.2.1) and sends no success report
    at all. Without DSN, Postfix reports from the per-recipient ``250``; with
    ``lmtp_assume_final = yes``, as ``delivered`` (RFC 3464 §2.3.3), the way the
    operator's page tells Postfix to be set up."""
    config = _reference_server_config(tmp_path / "pqr")
    listening = socket.create_server((LOOPBACK, 0))
    lmtp_port = listening.getsockname()[1]

    def through_postfix() -> list[bytes]:
        postfix_port = free_port()
        destination = f"inet:{LOOPBACK}:{lmtp_port}"
        with private_postfix(destination, postfix_port, {"lmtp_assume_final": "yes"}):
            with smtplib.SMTP(LOOPBACK, postfix_port, timeout=10) as client:
                client.ehlo("client.test")
                refused = client.sendmail(
                    "a@pqr.example",
                    ["b@pqr.example"],
                    MESSAGE,
                    mail_options=["ENVID=lmtp-1"],
                    rcpt_options=["NOTIFY=SUCCESS"],
                )
                assert refused == {}
            deadline = time.monotonic() + 30  # a wait's bound, not a timed assertion
            while not _stored(config, "a@pqr.example") and time.monotonic() < deadline:
                time.sleep(0.1)
        return _stored(config, "a@pqr.example")

    async def main() -> list[bytes]:
        async with MailServer(config, sockets={"lmtp": listening}):
            return await asyncio.to_thread(through_postfix)

    reports = asyncio.run(main())
    [delivered] = _stored(config, "b@pqr.example")
    assert b"Subject: through Postfix" in delivered
    [report] = reports
    assert b"Original-Envelope-Id: lmtp-1" in report
    assert b"Final-Recipient: rfc822; b@pqr.example" in report
    assert b"Action: delivered" in report


def _stored(config: ServerConfig, mailbox: str) -> list[bytes]:
    return [path.read_bytes() for path in Maildir(config.mailbox_path(mailbox)).messages()]
