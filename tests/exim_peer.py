"""Exim as a peer, without installing it (the issue on extensions says why).

Debian's Exim package conflicts with Postfix's, so nothing here installs it:
``deb_peer.unpacked`` fetches and unpacks the .deb into a cache directory of
the tests' own, and the binary runs with a configuration file the test
writes (``exim -C FILE``). Exim looks up its compiled-in user
``Debian-exim`` and re-executes itself from ``/usr/sbin/exim4``; neither
exists here, so each Exim process runs in a private mount namespace
(``unshare --mount``) where a copy of ``/etc/passwd`` with that user and a
tmpfs on ``/usr/sbin`` holding the binary are mounted. Nothing outside the
namespace changes. This needs root; without it (or without apt-get, dpkg or
unshare) the test is skipped, or fails under CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deb_peer import unpacked
from peers import LOOPBACK, RunningProcess, free_port, missing_peer, run_process, wait_for_port

__all__ = ["Exim", "exim"]

EXIM_UID = 65500
"""The uid and gid the namespace's ``Debian-exim`` gets (Exim refuses uid 0)."""

_NAMESPACE_SCRIPT = (
    'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group'
    ' && mount -t tmpfs tmpfs /usr/sbin && cp "$3" /usr/sbin/exim4'
    ' && shift 3 && exec /usr/sbin/exim4 "$@"'
)


def _exim_binary() -> Path:
    """The unpacked ``exim4`` binary."""
    if shutil.which("unshare") is None:
        missing_peer("unshare is needed to run Exim")
    root = unpacked("exim", ["exim4-daemon-light"], "usr/sbin/exim4")
    return root / "usr" / "sbin" / "exim4"


@dataclass(frozen=True, slots=True)
class Exim:
    """An Exim set up in ``directory``: its spool, logs and configuration."""

    directory: Path
    binary: Path
    port: int

    def command(self, *args: str) -> list[str]:
        """``exim4 -C <config> args...``, inside the private mount namespace."""
        passwd, group = self.directory / "passwd", self.directory / "group"
        return [
            "unshare",
            "--mount",
            "sh",
            "-c",
            _NAMESPACE_SCRIPT,
            "exim",
            str(passwd),
            str(group),
            str(self.binary),
            "-C",
            str(self.directory / "exim.conf"),
            *args,
        ]

    def main_log(self) -> str:
        path = self.directory / "log" / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def spooled_bodies(self) -> list[bytes]:
        """The bodies of the messages in the spool (``-D`` files, LF line ends)."""
        bodies = []
        for data in sorted((self.directory / "spool" / "input").glob("*-D")):
            _id_line, _, body = data.read_bytes().partition(b"\n")
            bodies.append(body)
        return bodies

    def send(self, message: bytes, sender: str, *recipients: str) -> None:
        """Submit ``message`` and deliver it at once (``-odf``), as a local user would."""
        subprocess.run(
            self.command("-odf", "-f", sender, *recipients),
            input=message,
            check=True,
            timeout=60,
            capture_output=True,
        )

    def deliver_queue(self) -> None:
        """Deliver what the daemon queued (``-qff``), by the onward router."""
        subprocess.run(self.command("-qff"), check=True, timeout=60, capture_output=True)

    @contextlib.contextmanager
    def daemon(self) -> Iterator[RunningProcess]:
        """Listen on ``port`` (``-bdf``) for the block."""
        argv = self.command("-bdf", "-oX", str(self.port))
        with run_process(argv) as process:
            wait_for_port(LOOPBACK, self.port, 20.0, process=process)
            yield process


_CONFIG = """\
primary_hostname = exim.test
spool_directory = {directory}/spool
log_file_path = {directory}/log/%slog
exim_user = Debian-exim
exim_group = Debian-exim
trusted_users = root
local_interfaces = {loopback}
daemon_smtp_ports = {port}
acl_smtp_rcpt = accept_all
chunking_advertise_hosts = *
dsn_advertise_hosts = *
tls_advertise_hosts =
host_lookup =
rfc1413_hosts =
queue_only = true
keep_environment =

begin acl
accept_all:
  accept

begin routers
onward:
  driver = manualroute
  route_list = * {loopback}::{next_port}
  self = send
  transport = onward_smtp

begin transports
onward_smtp:
  driver = smtp
  allow_localhost
  hosts_try_chunking = *
  hosts_avoid_tls = *

begin retry
* * F,1m,1m
"""


@contextlib.contextmanager
def exim(*, next_port: int = 25) -> Iterator[Exim]:
    """An Exim in a directory of its own: as a server it keeps what it receives
    in its spool (``queue_only``) and offers DSN; what it is given to send, or
    delivers from its queue, goes to ``next_port`` on loopback, with BDAT when
    that server offers CHUNKING (``hosts_try_chunking``) and the DSN parameters
    when it offers DSN.

    The directory is made in the system's temporary directory, where the
    ``Debian-exim`` uid can reach it (pytest's ``tmp_path`` is private to its
    owner), and removed afterwards.
    """
    binary = _exim_binary()
    with tempfile.TemporaryDirectory(prefix="smtpcore-exim-") as name:
        directory = Path(name)
        directory.chmod(0o755)
        yield from _configured(directory, binary, next_port)


def _configured(directory: Path, binary: Path, next_port: int) -> Iterator[Exim]:
    for sub in ("spool", "log"):
        (directory / sub).mkdir(exist_ok=True)
        os.chown(directory / sub, EXIM_UID, EXIM_UID)
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    (directory / "passwd").write_text(
        passwd + f"Debian-exim:x:{EXIM_UID}:{EXIM_UID}::/nonexistent:/usr/sbin/nologin\n"
    )
    (directory / "group").write_text(group + f"Debian-exim:x:{EXIM_UID}:\n")
    port = free_port()
    (directory / "exim.conf").write_text(
        _CONFIG.format(directory=directory, loopback=LOOPBACK, port=port, next_port=next_port)
    )
    yield Exim(directory, binary, port)
