"""A private Postfix for the relay's tests: its own configuration directory, queue and
port, run as a child process of the test (``postfix -c DIR start-fg``), never the
machine's own Postfix, whose configuration and service are left alone.

It receives mail for one domain into Maildirs (Postfix's ``virtual`` delivery, so no
Unix accounts are needed) and refuses unknown recipients with its usual ``550 5.1.1``.
Postfix's master must start as root; elsewhere the tests that need it skip (and fail
under CI, as every missing peer does).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orphan_reaper
from peers import (
    LOOPBACK,
    RunningProcess,
    free_port,
    missing_peer,
    require_program,
    run_process,
    wait_for_port,
)

SERVICES = """\
{address} inet n - n - - smtpd
pickup    unix n - n 60 1 pickup
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
virtual   unix - n n - - virtual
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


@dataclass
class PrivatePostfix:
    port: int
    directory: Path
    process: RunningProcess = field(repr=False)

    def maildir_messages(self, local_part: str) -> list[bytes]:
        new = self.directory / "vmail" / local_part / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []

    def log(self) -> str:
        path = self.directory / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def private_postfix(
    domain: str, users: Sequence[str], *, message_size_limit: int = 10_240_000
) -> Iterator[PrivatePostfix]:
    """Run a Postfix for ``domain`` whose mailboxes are ``users`` (local parts), in a
    directory of its own that its unprivileged processes can reach (pytest's are
    private to root), removed after."""
    with tempfile.TemporaryDirectory(prefix="smtpcore-postfix-") as name:
        directory = Path(name)
        directory.chmod(0o755)
        with _run_postfix(directory, domain, users, message_size_limit) as running:
            yield running


@contextlib.contextmanager
def _run_postfix(
    directory: Path, domain: str, users: Sequence[str], message_size_limit: int
) -> Iterator[PrivatePostfix]:
    postfix = require_program("postfix")
    if os.geteuid() != 0:
        missing_peer("a private Postfix needs root (its master starts as root)")
    try:
        owner = pwd.getpwnam("postfix")
    except KeyError:
        missing_peer("the postfix system user is missing")
    conf = directory / "conf"
    for sub in ("conf", "queue", "data", "vmail"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    for sub in ("data", "vmail"):
        os.chown(directory / sub, owner.pw_uid, owner.pw_gid)
    # Postfix's own file lists (what its start-up check reads), copied, never changed.
    meta = Path("/etc/postfix")
    for name in ("postfix-files", "postfix-files.d", "dynamicmaps.cf", "dynamicmaps.cf.d"):
        source = meta / name
        if source.is_dir():
            shutil.copytree(source, conf / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy(source, conf / name)
    port = free_port()
    (conf / "vmailbox").write_text("".join(f"{u}@{domain} {u}/\n" for u in users))
    (conf / "main.cf").write_text(
        f"""compatibility_level = 3.6
queue_directory = {directory}/queue
data_directory = {directory}/data
meta_directory = {conf}
mail_owner = postfix
myhostname = mx.{domain}
mydomain = {domain}
myorigin = {domain}
mydestination =
inet_interfaces = {LOOPBACK}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {directory}/vmail
virtual_mailbox_maps = texthash:{conf}/vmailbox
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
message_size_limit = {message_size_limit}
maillog_file = {directory}/maillog
maillog_file_prefixes = {directory}
alias_maps =
alias_database =
smtputf8_enable = yes
"""
    )
    (conf / "master.cf").write_text(SERVICES.format(address=f"{LOOPBACK}:{port}"))
    # The master of this instance only (its pid file is in our queue directory).
    pid_file = directory / "queue" / "pid" / "master.pid"
    with run_process([postfix, "-c", str(conf), "start-fg"]) as process:
        master: _Master | None = None
        try:
            wait_for_port(LOOPBACK, port, 30.0, process=process)
            master = _watch_master(pid_file)
            yield PrivatePostfix(port, directory, process)
        finally:
            if master is None:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            else:
                _stop_master(master)


@dataclass
class _Master:
    """Postfix's master, held by a pidfd, and its process group: ``master -s`` leads a
    session of its own, so its smtpd and qmgr are in its group, not in the group
    run_process stops."""

    pid: int
    process: orphan_reaper.Process
    group: orphan_reaper.Group


def _watch_master(pid_file: Path) -> _Master | None:
    """The master that wrote ``pid_file``, its group watched: should this process die,
    the watchdog kills the master with its children."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError):
        return None
    started = orphan_reaper.start_time(pid)
    process = None if started is None else orphan_reaper.Process.pin(pid, started)
    if started is None or process is None:
        return None
    orphan_reaper.watch(pid, group=True)
    return _Master(pid, process, orphan_reaper.Group(pid, started))


def _stop_master(master: _Master) -> None:
    """SIGTERM, SIGKILL to the group if the master is still there after 30 seconds,
    and to any child left behind; the watchdog is told only once the master is gone."""
    try:
        master.process.signal(signal.SIGTERM)
        if not master.process.wait(30.0):
            master.group.signal(signal.SIGKILL)
            master.process.wait(30.0)
        master.group.signal(signal.SIGKILL)
        if master.process.wait(0):
            orphan_reaper.forget(master.pid, group=True)
    finally:
        master.process.close()
