"""HAProxy as a peer, unpacked from its Debian package (see deb_peer.py): installing
it would start a system service."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deb_peer import library_path, unpacked
from peers import LOOPBACK, free_port, run_process, wait_for_port

__all__ = ["haproxy", "haproxy_tls_offload"]

_PACKAGES = ["haproxy", "liblua5.3-0", "libopentracing-c-wrapper0", "libopentracing1"]

_CONFIG = """\
global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend v1
  bind {loopback}:{v1_port}
  default_backend send_proxy
frontend v2
  bind {loopback}:{v2_port}
  default_backend send_proxy_v2
backend send_proxy
  server smtp {loopback}:{server_port} send-proxy
backend send_proxy_v2
  server smtp {loopback}:{server_port} send-proxy-v2
"""


@contextlib.contextmanager
def haproxy(server_port: int) -> Iterator[tuple[int, int]]:
    """HAProxy in front of ``server_port`` for the block: the ports where it sends
    a version 1 and a version 2 PROXY header before relaying a connection."""
    v1_port, v2_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="smtpcore-haproxy-") as name:
        config = _CONFIG.format(
            loopback=LOOPBACK, v1_port=v1_port, v2_port=v2_port, server_port=server_port
        )
        with _running(Path(name), config, v1_port, v2_port):
            yield v1_port, v2_port


@contextlib.contextmanager
def _running(directory: Path, config: str, *ports: int) -> Iterator[None]:
    """HAProxy from its Debian package, run with ``config`` (written in ``directory``)
    until the block ends, once it listens on every one of ``ports``."""
    root = unpacked("haproxy", _PACKAGES, "usr/sbin/haproxy")
    path = directory / "haproxy.cfg"
    path.write_text(config)
    env = {**os.environ, "LD_LIBRARY_PATH": library_path(root)}
    argv = [str(root / "usr/sbin/haproxy"), "-db", "-f", str(path)]
    with run_process(argv, env=env) as process:
        for port in ports:
            wait_for_port(LOOPBACK, port, 20.0, process=process)
        yield


_TLS_OFFLOAD_CONFIG = """\
global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend tls
  bind {loopback}:{port} ssl crt {pem}
  default_backend send_proxy_v2_ssl
backend send_proxy_v2_ssl
  server smtp {loopback}:{server_port} send-proxy-v2-ssl
"""


@contextlib.contextmanager
def haproxy_tls_offload(server_port: int, cert_file: Path, key_file: Path) -> Iterator[int]:
    """HAProxy ending its clients' TLS (``bind ... ssl crt``) in front of ``server_port``,
    saying so in a v2 header (``send-proxy-v2-ssl``): the port its clients reach."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="smtpcore-haproxy-") as name:
        pem = Path(name) / "server.pem"  # HAProxy's crt: the chain and the key in one file
        pem.write_bytes(cert_file.read_bytes() + key_file.read_bytes())
        config = _TLS_OFFLOAD_CONFIG.format(
            loopback=LOOPBACK, port=port, pem=pem, server_port=server_port
        )
        with _running(Path(name), config, port):
            yield port
