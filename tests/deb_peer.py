"""Peer programs from Debian packages that are unpacked, never installed.

Some peers' packages conflict with Postfix's (Exim) or would start a system
service on installation (HAProxy). ``apt-get download`` fetches the .debs
into a cache directory of the tests' own and ``dpkg -x`` unpacks them there;
the binaries run from that directory with ``LD_LIBRARY_PATH`` pointing at the
unpacked libraries. Nothing is installed and no service is touched. Without
root, apt-get or dpkg the test is skipped, or fails under CI.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from peers import missing_peer

__all__ = ["library_path", "unpacked"]

CACHE = Path(tempfile.gettempdir()) / "smtpcore-peers"


def unpacked(name: str, packages: list[str], binary: str) -> Path:
    """The root where ``packages`` are unpacked, once, with ``binary`` (a path
    inside it) present; fetched with ``apt-get download`` the first time."""
    if os.geteuid() != 0:
        missing_peer(f"fetching {name} with apt-get needs root")
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            missing_peer(f"{tool} is needed to fetch {name}")
    directory = CACHE / name
    directory.mkdir(parents=True, exist_ok=True)
    # Two test workers (pytest-xdist) may want the same peer at once: one fetches
    # and unpacks while the other waits, rather than both writing the same tree.
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _unpack(directory, name, packages, binary)


def _unpack(directory: Path, name: str, packages: list[str], binary: str) -> Path:
    root = directory / "root"
    if (root / binary).is_file():
        return root
    download = subprocess.run(
        ["apt-get", "download", *packages], cwd=directory, capture_output=True, timeout=300
    )
    if download.returncode != 0:
        missing_peer(f"apt-get download {' '.join(packages)} failed: {download.stderr!r}")
    for deb in sorted(directory.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    if not (root / binary).is_file():
        missing_peer(f"the {name} packages hold no {binary}")
    return root


def library_path(root: Path) -> str:
    """``LD_LIBRARY_PATH`` for binaries unpacked under ``root``."""
    return ":".join(
        str(root / sub) for sub in ("usr/lib/x86_64-linux-gnu", "usr/lib", "lib/x86_64-linux-gnu")
    )
