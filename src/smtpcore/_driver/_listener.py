"""Where a server listens, whatever its protocol: its sockets, what it reports
about itself, and its shutdown.

SMTP and POP3 sessions differ; the listening socket does not. The adapters'
accept loops are written against :class:`BaseListener` and
:class:`~smtpcore._driver._session_registry.SessionRegistry` (the live sessions
and their limits) only, so one accept loop per framework serves both
protocols. The registry and the life of one session
(:class:`~smtpcore._driver._served_session.ServedSession`) have modules of their
own, and their names are imported from there, not from here (a test that patches
:data:`~smtpcore._driver._session_closing.LINGER` patches it in
:mod:`~smtpcore._driver._session_closing`, where it is read).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from typing import Generic, Protocol

from smtpcore._driver._session_registry import S, SessionRegistry
from smtpcore._driver._shutdown import GracefulShutdown
from smtpcore._driver._transport import address

__all__ = ["BaseListener", "ListenerOptions"]


class ListenerOptions(Protocol):
    """What the accept loop reads of a server's options, whatever its protocol."""

    @property
    def tls_on_connect(self) -> bool:
        """Whether connections speak TLS from their first byte."""
        ...

    @property
    def timeouts(self) -> HandshakeTimeouts:
        """The session timeouts; the accept loop reads the TLS handshake's."""
        ...


class HandshakeTimeouts(Protocol):
    """The one timeout every server's options have that the accept loop reads."""

    @property
    def tls_handshake(self) -> float | None: ...


class BaseListener(GracefulShutdown, Generic[S]):
    """Where a server listens, what it reports about itself, and how it shuts down
    (:class:`~smtpcore._driver._shutdown.GracefulShutdown`).

    The server listens on ``host`` and ``port`` (port 0 picks a free one;
    read :attr:`port`), or on ``sock``, a socket already bound and
    listening, or on the Unix socket ``unix_path`` (a stale socket file
    there is replaced, and the file is removed when the server closes). The
    adapter's server class adds the accept loop.
    """

    state: SessionRegistry[S]
    options: ListenerOptions

    def __init__(
        self,
        host: str | None,
        port: int,
        *,
        sock: socket.socket | None,
        unix_path: str | os.PathLike[str] | None = None,
        backlog: int,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.sock = sock
        self.unix_path = None if unix_path is None else os.fspath(unix_path)
        """The Unix socket path listened on, if any."""
        self.backlog = backlog

    def _unix_socket(self) -> socket.socket:
        """A listening socket bound to :attr:`unix_path`, replacing a stale socket file."""
        path = self.unix_path
        assert path is not None
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _unix_socket_closed(self) -> None:
        """Remove the socket file once the server no longer listens on it."""
        if self.unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unix_path)

    @property
    def active_sessions(self) -> int:
        """Sessions being served now."""
        return len(self.state.sessions)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs the server listens on."""
        return [addr for name in self._listening_addresses() if (addr := address(name))]

    @property
    def port(self) -> int:
        """The port listened on (the first one, if several)."""
        addresses = self.addresses
        if not addresses:
            raise RuntimeError("the server is not listening")
        return addresses[0][1]

    def _listening_addresses(self) -> list[object]:
        """The socket names of the listening sockets (the adapter knows them)."""
        raise NotImplementedError
