"""A private Postfix instance for a test: its own config, queue and loopback port.

``postfix -c DIR start`` with a main.cf and master.cf written here: only an
``smtpd`` on ``127.0.0.1:<free port>`` and the services it needs to queue
mail, which the ``discard`` transport then drops. Nothing of the system's
Postfix (its /etc/postfix, its queue, port 25) is read, touched or stopped.
Leaving the block runs ``postfix -c DIR stop`` and then kills the
instance's own master by the PID it wrote, if it is still there; should the
test process die first, :mod:`orphan_reaper` stops that master.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import orphan_reaper
from peers import LOOPBACK, free_port, missing_peer, require_program, wait_for_port

__all__ = ["PrivatePostfix", "private_postfix"]

#: The services an smtpd needs to take mail into the queue and the queue manager
#: to discard it (chroot off: the instance lives under a test's directory).
_MASTER_CF = """\
{address} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
discard   unix  -       -       n       -       -       discard
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass(frozen=True)
class PrivatePostfix:
    """A running private instance: where its smtpd listens and where it logs."""

    host: str
    port: int
    config_dir: Path
    log_file: Path

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _postfix(postfix: str, config_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [postfix, "-c", str(config_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _master_pid(queue_dir: Path) -> int | None:
    try:
        return int((queue_dir / "pid" / "master.pid").read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def private_postfix(
    *,
    main_cf: Mapping[str, str] | None = None,
    startup_timeout: float = 30.0,
) -> Iterator[PrivatePostfix]:
    """Run a private Postfix for the block, its files in a temporary directory.

    The smtpd relays mail for ``smtpcore.test`` to the discard transport,
    takes 100 recipients and 100,000-octet messages, and offers STARTTLS
    when ``main_cf`` names ``smtpd_tls_cert_file``. ``main_cf`` adds or
    overrides main.cf parameters. Postfix's master must start as root;
    elsewhere the test skips (fails under CI=true).
    """
    postfix = require_program("postfix")
    if os.geteuid() != 0:
        missing_peer("a private Postfix instance needs root to start its master")
    # The master opens its lock file as the postfix user, who must reach the
    # instance's directories: they live in a directory of their own, open to read.
    directory = Path(tempfile.mkdtemp(prefix="smtpcore-postfix-"))
    directory.chmod(0o755)
    config_dir = directory / "etc"
    queue_dir = directory / "queue"
    data_dir = directory / "data"
    for path in (config_dir, queue_dir, data_dir):
        path.mkdir()
    os.chown(data_dir, *_postfix_ids())
    log_file = directory / "maillog"
    port = free_port()
    parameters = {
        "compatibility_level": "3.6",
        "queue_directory": str(queue_dir),
        "data_directory": str(data_dir),
        "command_directory": "/usr/sbin",
        "daemon_directory": "/usr/lib/postfix/sbin",
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "inet_interfaces": LOOPBACK,
        "inet_protocols": "ipv4",
        "myhostname": "postfix.check.test",
        "mydomain": "check.test",
        "mydestination": "",
        "mynetworks": "127.0.0.0/8",
        "relay_domains": "smtpcore.test",
        "relay_transport": "discard:",
        "default_transport": "discard:",
        "local_recipient_maps": "",
        "relay_recipient_maps": "",
        "alias_maps": "",
        "alias_database": "",
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        "smtpd_recipient_limit": "100",
        "message_size_limit": "100000",
        "smtpd_error_sleep_time": "0",
        "smtpd_soft_error_limit": "100",
        "smtpd_hard_error_limit": "200",
        "maillog_file": str(log_file),
        "maillog_file_prefixes": str(directory),
        "biff": "no",
        "syslog_name": f"postfix-check-{port}",
        **(main_cf or {}),
    }
    (config_dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in parameters.items()))
    (config_dir / "master.cf").write_text(_MASTER_CF.format(address=f"{LOOPBACK}:{port}"))
    started = _postfix(postfix, config_dir, "start")
    instance = PrivatePostfix(LOOPBACK, port, config_dir, log_file)
    master: _Master | None = None
    try:
        if started.returncode != 0:
            raise RuntimeError(
                f"postfix start failed:\n{started.stdout}{started.stderr}{instance.log()}"
            )
        deadline = time.monotonic() + startup_timeout
        wait_for_port(LOOPBACK, port, startup_timeout)
        while time.monotonic() < deadline and _master_pid(queue_dir) is None:
            time.sleep(0.05)
        master = _held_master(queue_dir)
        if master is not None:  # a daemon: no block of ours stops it if we die
            orphan_reaper.watch(master.pid, group=False)
        yield instance
    finally:
        if master is None:
            master = _held_master(queue_dir)
        _postfix(postfix, config_dir, "stop")
        if master is not None:
            try:
                if not master.process.wait(5.0):
                    master.process.signal(signal.SIGKILL)
                if master.process.wait(5.0):
                    orphan_reaper.forget(master.pid, group=False)
            finally:
                master.process.close()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class _Master:
    """The instance's master by its pid, and held by a pidfd: not our child, so its
    pid is free the moment it ends, and a signal by number could reach another."""

    pid: int
    process: orphan_reaper.Process


def _held_master(queue_dir: Path) -> _Master | None:
    pid = _master_pid(queue_dir)
    started = None if pid is None else orphan_reaper.start_time(pid)
    if pid is None or started is None:
        return None
    process = orphan_reaper.Process.pin(pid, started)
    return None if process is None else _Master(pid, process)


def _postfix_ids() -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam("postfix")
    except KeyError:
        missing_peer("the postfix system user is missing")
    return entry.pw_uid, entry.pw_gid
