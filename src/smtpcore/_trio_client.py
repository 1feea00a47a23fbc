"""How the trio SMTP and POP3 clients get their connection: TCP or a Unix socket under
the connect timeout, or a given ``trio.abc.Stream`` or transport.

The clients themselves are the driver's (:mod:`smtpcore._driver`); this is the
trio part, apart from the public module, which only names the clients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Concatenate, TypeVar

import trio

from smtpcore._driver._client_constructors import ClientConstructors, Options
from smtpcore._driver._transport import Link
from smtpcore._trio_clock import _link
from smtpcore._trio_deadlines import _Deadline
from smtpcore._trio_transport import TrioTransport

__all__ = ["_TrioClient"]

_Client = TypeVar("_Client", bound=ClientConstructors)


class _TrioClient(ClientConstructors):
    """How the trio SMTP and POP3 clients get their connection."""

    @classmethod
    def over_stream(
        cls: Callable[Concatenate[str, int | None, Options], _Client],
        stream: trio.abc.Stream,
        host: str = "localhost",
        *args: Options.args,
        **options: Options.kwargs,
    ) -> _Client:
        """over_stream(stream: trio.abc.Stream, *, host: str = "localhost", **options)

        A client whose session runs over any ``trio.abc.Stream``; keywords as for
        :meth:`over_transport`. The stream is the session's: end it with
        :meth:`close` (or :meth:`quit`), not by closing the stream from another
        task (see :class:`~smtpcore.trio.TrioTransport`)."""
        client = cls(host, None, *args, **options)
        client._given = TrioTransport(stream)
        return client

    def _current_task(self) -> object:
        return trio.lowlevel.current_task()

    async def _open(self, host: str, port: int) -> Link:
        given = self._take_given()
        if given is not None:  # a trio.SSLStream's handshake is the session's to make
            return _link(given)
        async with _Deadline(self.timeouts.connect):
            if self._unix_path is not None:
                stream: trio.abc.Stream = await trio.open_unix_socket(self._unix_path)
            else:
                stream = await trio.open_tcp_stream(host, port)
        return _link(TrioTransport(stream))
