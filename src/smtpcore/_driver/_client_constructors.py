"""The clients' other constructors, written once for SMTP and POP3 and for both adapters.

A client opens its own TCP connection, or runs over a transport it is given
(``over_transport``, and each adapter's ``over_stream``), or connects to a
Unix socket (``over_unix_socket``). ``cls`` is typed as the client's own
constructor, so each client's keyword options stay checked one by one under
mypy, as if each class spelled them out.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from smtpcore._driver._client_base import BaseClient
from smtpcore.transport import Transport

__all__ = ["ClientConstructors", "Options"]

Options = ParamSpec("Options")
"""A client constructor's keyword options (after ``host`` and ``port``)."""
_C = TypeVar("_C", bound="ClientConstructors")


class ClientConstructors(BaseClient):
    """Where a client's connection comes from; the adapter's ``_open`` asks :meth:`_take_given`
    first, then connects to :attr:`_unix_path` or to ``host`` and ``port``."""

    _given: Transport | None = None
    _given_used: bool = False
    """Whether this client was made over a transport and has used it: it then never
    connects again (see :meth:`_take_given`)."""
    _unix_path: str | None = None

    @classmethod
    def over_transport(
        cls: Callable[Concatenate[str, int | None, Options], _C],
        transport: Transport,
        host: str = "localhost",
        *args: Options.args,
        **options: Options.kwargs,
    ) -> _C:
        """over_transport(transport: Transport, *, host: str = "localhost", **options)

        A client whose session runs over ``transport`` (a
        :class:`~smtpcore.transport.Transport` whose waits are the adapter's: asyncio's
        or trio's) instead of a TCP connection it opens. ``host`` names the server (for
        TLS, and in errors); the other keywords are the constructor's. The transport
        serves one session: connecting again raises the client's connection error."""
        client = cls(host, None, *args, **options)
        client._given = transport
        return client

    @classmethod
    def over_unix_socket(
        cls: Callable[Concatenate[str, int | None, Options], _C],
        path: str | os.PathLike[str],
        host: str = "localhost",
        *args: Options.args,
        **options: Options.kwargs,
    ) -> _C:
        """over_unix_socket(path: str | os.PathLike[str], *, host: str = "localhost", **options)

        A client that connects to the Unix socket ``path`` (LMTP to a delivery
        agent, say); keywords as for :meth:`over_transport`."""
        client = cls(host, None, *args, **options)
        client._unix_path = os.fspath(path)
        return client

    def _take_given(self) -> Transport | None:
        """The transport given to this client, for its one session; None for a client
        that opens its own connections.

        A client given a transport never opens a connection of its own: its ``host``
        names the server for TLS, not where to connect, and a session meant for a
        private channel (an SSH tunnel, a socket pair) would go over the network
        instead, in plaintext before any STARTTLS. Once the transport has been used,
        connecting again is refused, ``local``, as the client's other refusals are."""
        given, self._given = self._given, None
        if given is not None:
            self._given_used = True
        else:
            self._refuse_spent()
        return given

    def _refuse_spent(self) -> None:
        if self._given is None and self._given_used:
            raise self.local_connection_error(
                "this client's transport has been used; make a new client for a new session"
            )
