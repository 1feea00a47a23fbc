"""A real SMTP server in a background thread, for synchronous test suites.

In the style of aiosmtpd's ``Controller``: the server runs smtpcore's
asyncio adapter in a thread of its own, so a test written with
:mod:`smtplib` or any blocking client needs no event loop::

    with SMTPTestServer() as server:
        with smtplib.SMTP(server.host, server.port) as client:
            client.sendmail("a@abc.example", ["b@pqr.example"], b"Subject: hi\\r\\n\\r\\nhi\\r\\n")
    assert server.messages[0].content.endswith(b"hi\\r\\n")
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from types import TracebackType
from typing import Any

from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply

__all__ = ["CollectingHandler", "SMTPTestServer"]

_START_TIMEOUT = 30.0


class CollectingHandler(Handler):
    """Accepts every recipient and keeps every message in :attr:`messages`.

    An open relay, which is what a test wants and no real server may be.
    """

    def __init__(self) -> None:
        self.messages: list[Envelope] = []

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope)
        return None


class SMTPTestServer:
    """An SMTP server on loopback, run by smtpcore's asyncio adapter in a thread.

    ``handler`` answers the sessions (by default a :class:`CollectingHandler`,
    whose messages :attr:`messages` shows). With ``starttls=True`` the
    server offers STARTTLS with a throwaway certificate for ``127.0.0.1``,
    ``localhost`` and ``hostname``, made with ``trustme`` (in
    ``smtpcore[testing]``); :attr:`client_context` trusts it. Other keywords
    go to :class:`smtpcore.asyncio.SMTPServer` (``lmtp``, ``dsn``,
    ``max_message_size``, ``auth``...); a failed AUTH is answered at once
    (``auth_failure_delay=0``) unless they say otherwise, so that tests of
    wrong passwords take no longer than others.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hostname: str = "mx.test",
        starttls: bool = False,
        ssl_context: ssl.SSLContext | None = None,
        **options: Any,
    ) -> None:
        self.handler = handler if handler is not None else CollectingHandler()
        """The handler answering the sessions."""
        self.host = host
        """The loopback address the server listens on: where a client connects."""
        self.port = port
        """The port it listens on: the one the system picked once :meth:`start` has
        returned, where ``port=0`` (the default) asked for any free one."""
        self.hostname = hostname
        self.options = {"auth_failure_delay": 0.0, **options}
        self.ssl_context: ssl.SSLContext | None = ssl_context
        """The server's context for STARTTLS: the one given, the throwaway one that
        ``starttls=True`` made (its certificate names ``127.0.0.1``, ``localhost``
        and ``hostname``), or None, when STARTTLS is not offered."""
        self.client_context: ssl.SSLContext | None = None
        """A client context that trusts the throwaway certificate, for a client
        checking it (``smtplib.SMTP.starttls(context=server.client_context)``), where
        ``starttls=True`` made one; None where ``ssl_context`` was given or there is
        no TLS."""
        if starttls and ssl_context is None:
            self.ssl_context, self.client_context = _throwaway_contexts(host, hostname)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._grace = 5.0

    @property
    def messages(self) -> list[Envelope]:
        """The messages the default handler collected, in order."""
        if not isinstance(self.handler, CollectingHandler):
            raise AttributeError("messages are collected by the default handler only")
        return self.handler.messages

    def start(self) -> None:
        """Start listening; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._run, name="SMTPTestServer", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the test server did not start")
        if self._error is not None:
            raise RuntimeError("the test server did not start") from self._error

    def stop(self, grace: float = 5.0) -> None:
        """Stop the server: sessions get 421, the thread ends."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread is not None:
            self._grace = grace
            loop.call_soon_threadsafe(stop.set)
            self._thread.join(grace + _START_TIMEOUT)
        self._thread = None

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        from smtpcore.asyncio import SMTPServer

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = SMTPServer(
            self.handler,
            self.host,
            self.port,
            hostname=self.hostname,
            ssl_context=self.ssl_context,
            **self.options,
        )
        await server.start()
        self.port = server.port
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.aclose(self._grace)

    def __enter__(self) -> SMTPTestServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _throwaway_contexts(host: str, hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate, and a client context trusting it."""
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert(host, "localhost", hostname)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(server)
    client = ssl.create_default_context()
    authority.configure_trust(client)
    return server, client
