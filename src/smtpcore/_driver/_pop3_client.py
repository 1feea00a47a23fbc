"""The one POP3 client session, shared by the asyncio and trio adapters.

:class:`BasePOP3Client` drives a :class:`~smtpcore.pop3.ClientConnection`
over a :class:`~smtpcore._driver.Transport` the adapter opens: greeting,
CAPA, STLS (RFC 2595), a login (USER/PASS, APOP or SASL), then the fetch
commands. Messages are streamed in chunks; when the server lists PIPELINING,
a listing asks LIST and UIDL together and :meth:`~BasePOP3Client.retrieve_many`
keeps several RETR commands in flight (RFC 2449 §6.6).

This module holds what a client is built with (its options), the fields of a
session and what the application reads of it; the session's parts are its
bases, each in its own module, each layer using only those below it:

- ``_pop3_client_wire.py``: commands written, events read, under the timeouts;
- ``_pop3_client_content.py``: a command's status line, and the content its
  ``+OK`` opens, read within bounds (what a loop left unread drained first);
- ``_pop3_client_setup.py``: connect, CAPA, STLS, UTF8, USER/PASS, APOP, AUTH;
- ``_pop3_client_transaction.py``: STAT, LIST, UIDL, RETR, TOP, DELE, RSET,
  NOOP, QUIT.

What they raise is in ``_pop3_errors.py``, and what :meth:`~BasePOP3Client.list`
gives in ``_pop3_listing.py``.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque
from typing import TypedDict

from smtpcore._dial_name import dial_names
from smtpcore._driver._pop3_client_content import size_bound
from smtpcore._driver._pop3_client_setup import POP3ClientSetup
from smtpcore._driver._pop3_client_transaction import POP3ClientTransaction
from smtpcore._driver._pop3_client_wire import ContentLeft
from smtpcore._driver._pop3_errors import (
    POP3AuthenticationError,
    POP3AuthenticationNotAvailable,
    POP3ConnectionError,
    POP3Error,
    POP3ProtocolError,
    POP3ResponseError,
    POP3Timeout,
    POP3TLSNotAvailable,
)
from smtpcore._driver._pop3_listing import MessageListing
from smtpcore._driver._timeouts import DEFAULT_POP3_TIMEOUTS, POP3Timeouts
from smtpcore._driver._trace import Trace, WireTrace
from smtpcore._driver._transport import Link
from smtpcore.pop3 import ClientConnection, Ok

__all__ = [
    "BasePOP3Client",
    "MessageListing",
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3ClientOptions",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3TLSNotAvailable",
    "POP3Timeout",
    "size_bound",
]


class POP3ClientOptions(TypedDict, total=False):
    """The keyword options of a POP3 client, for functions that pass them on: a
    misspelt one fails type checking."""

    tls_on_connect: bool
    stls: bool | None
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    timeouts: POP3Timeouts
    pipelining: bool | None
    hostname: str | None
    allow_plaintext_auth: bool
    trace: Trace | None


class BasePOP3Client(POP3ClientSetup, POP3ClientTransaction):
    """A POP3 client session to ``host``; the adapters add how to open a connection.

    ``tls_on_connect`` speaks TLS from the first byte (port 995, RFC 8314).
    ``stls``: True requires STLS, None (the default) uses it when the server
    offers it, False never does. Certificates are checked against ``host``
    (or ``server_hostname``) with ``ssl_context``, by default
    :func:`ssl.create_default_context`, which verifies them. A non-ASCII ``host``
    or ``server_hostname`` is used in its A-label form, as IDNA 2008 makes it
    (``mx.straße.test``: ``mx.xn--strae-oqa.test``, never ``mx.strasse.test``);
    one IDNA refuses, or a name with an empty label or a label over 63 octets, is a
    ``ValueError`` when the client is built. ``pipelining``
    forces RFC 2449 pipelining on or off; by default it follows CAPA.

    USER/PASS and SASL mechanisms that show a reusable secret (PLAIN, LOGIN,
    bearer tokens) are used only under TLS unless ``allow_plaintext_auth`` is
    true, as in the SMTP clients (RFC 2595 §2.2): a server that does not list
    STLS, or an attacker who strips it, gets :class:`POP3AuthenticationNotAvailable`
    rather than the password. APOP, CRAM-MD5 and SCRAM go without TLS.

    ``trace`` receives every line of the session both ways, as the SMTP
    clients' does: a callback ``trace(direction, line)`` or a
    :class:`logging.Logger`; the PASS argument, the APOP digest, the AUTH
    initial response and every SASL answer show as ``****``.
    """

    connection_error = POP3ConnectionError
    timeout_error = POP3Timeout
    misuse_error = POP3Error
    _plaintext_auth_error = POP3AuthenticationNotAvailable
    timeouts: POP3Timeouts

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        tls_on_connect: bool = False,
        stls: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeouts: POP3Timeouts = DEFAULT_POP3_TIMEOUTS,
        pipelining: bool | None = None,
        hostname: str | None = None,
        allow_plaintext_auth: bool = False,
        trace: Trace | None = None,
    ) -> None:
        self.host, self.server_hostname = dial_names(host, server_hostname)
        self.port = port if port is not None else (995 if tls_on_connect else 110)
        self.tls_on_connect = tls_on_connect
        self.stls = stls
        self.ssl_context = ssl_context
        self.timeouts = timeouts
        self.pipelining = pipelining
        self.hostname = hostname or socket.gethostname()
        self.allow_plaintext_auth = allow_plaintext_auth
        self.greeting: Ok | None = None
        """The server's greeting."""
        self._trace = None if trace is None else WireTrace(trace)
        self._transport: Link | None = None
        self._conn: ClientConnection | None = None
        self._new_session()

    def _new_session(self) -> None:
        """Forget what the last session left: a session cut off in the middle of a
        response (a timeout, a lost connection, cancellation) must not leave the
        next one waiting for the rest of it."""
        self._unread: ContentLeft | None = None
        """The content of a multi-line response under way, unread (see :meth:`_drain`)."""
        self._owed: deque[ContentLeft] = deque()
        """The content of each answer owed to pipelined multi-line commands, oldest first
        (see :meth:`_drain`)."""
        self._peer_closed = False
        self._tls_just_started = False
        """Whether no command has gone since a STLS handshake (see :meth:`_take_unasked`)."""
        self._sizes: dict[int, int] = {}
        """Each message's size as the last LIST gave it: numbers and sizes hold for
        the session (RFC 1939 §5, the maildrop is locked)."""

    @property
    def capabilities(self) -> dict[str, tuple[str, ...]]:
        """What the server's last CAPA answer listed (empty if it has no CAPA)."""
        return dict(self.connection.capabilities or {})

    @property
    def tls(self) -> bool:
        """Whether the session is protected by TLS."""
        return self._conn is not None and self._conn.tls
