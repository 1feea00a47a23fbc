"""One running mail server: its listeners, its queue and its delivery worker.

:class:`MailServer` is what ``python -m smtpcore serve`` runs and what the
demo runs twice; it takes a :class:`~smtpcore.server.config.ServerConfig`
and assembles the library's parts around the Maildirs and the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

from smtpcore._ip import host_port
from smtpcore._plural import messages
from smtpcore.address import AddressPolicy
from smtpcore.asyncio import POP3Server, SMTPServer
from smtpcore.handler import Authenticator, Handler
from smtpcore.routing import Resolver, Router
from smtpcore.server.activemarks import DeliveryMarks
from smtpcore.server.app import InboundHandler, LMTPHandler, MailStore, SubmissionHandler
from smtpcore.server.config import (
    PROXIED_LISTENERS,
    XCLIENT_LISTENERS,
    ConfigError,
    ServerConfig,
)
from smtpcore.server.credentials import Credentials
from smtpcore.server.delivery import ClientFactory, DeliveryWorker
from smtpcore.server.internal import InternalAddresses, IPAddress
from smtpcore.server.log import logger
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import make_private_directory
from smtpcore.server.pop3 import POP3Store
from smtpcore.server.queue import Queue
from smtpcore.server.queuectl import (
    LOCK_NAME,
    MARK_RETRY,
    lock_marked,
    mark_lock,
    read_commands,
    release_lock,
    take_lock,
)
from smtpcore.server.queueeffects import summary_line
from smtpcore.server.relay_tls import RelayTLS
from smtpcore.server.resolvers import check_remote_delivery, make_resolver
from smtpcore.server.safefiles import check_private_directories
from smtpcore.server.tlsfiles import EncryptedKey, refuse_passphrase, tls_files_problem
from smtpcore.server.waits import CUT_OFF, Threads, finish

__all__ = ["TMP_SCAN_EVERY", "Listener", "MailServer", "server_tls_context"]

TMP_SCAN_EVERY: Final = 8 * 3600.0
"""How often a running server clears its Maildirs' ``tmp/`` of the files a crash left
there (36 hours untouched, as the Maildir convention has it), as Dovecot scans each
``tmp/`` at most every 8 hours (``MAILDIR_TMP_SCAN_SECS``): the start does it too, but a
server runs for months."""


@dataclass(frozen=True, slots=True)
class Listener:
    """One address a listener (``smtp``, ``submission``...) is bound to: a listener whose
    host resolves to several addresses (an A and an AAAA record) has one each, and
    ``serve`` prints each, since a client may reach any of them."""

    name: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name} listening on {host_port(self.host, self.port)}"


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The server side of STARTTLS, STLS and the implicit-TLS ports (TLS 1.2 at least)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=refuse_passphrase)
    except (OSError, ssl.SSLError, EncryptedKey) as exc:
        raise ConfigError(tls_files_problem(cert, key, exc)) from None
    return context


class MailServer:
    """Listeners, queue and worker for one :class:`ServerConfig`.

    ``resolver`` replaces the one ``config.resolver`` names (the demo passes
    a :class:`~smtpcore.routing.StaticResolver`). ``sockets`` gives
    listeners already-bound sockets by name, which is how a test or the demo
    gets free ports without a race. ``on_delivery(key, path)`` is called
    after each local delivery, by the SMTP session or by the delivery worker
    (a copy its mailbox first refused, a report to a local sender); what it
    raises is logged (the message is delivered: the client hears 250).
    ``client_factory`` builds the relay's SMTP clients.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        resolver: Resolver | None = None,
        sockets: Mapping[str, socket.socket] | None = None,
        on_delivery: Callable[[str, Path], None] | None = None,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.config = config
        self.sockets = dict(sockets or {})
        self.resolver = resolver if resolver is not None else make_resolver(config.resolver)
        check_remote_delivery(self.resolver, config.relay_host)
        self.tls_context = (
            server_tls_context(config.tls_cert, config.tls_key)
            if config.tls_cert is not None and config.tls_key is not None
            else None
        )
        # Every listener holds self.tls_context; each handshake moves on to the context
        # of the certificate loaded last (see _hand_over).
        self._tls_current = self.tls_context
        if self.tls_context is not None:
            self.tls_context.sni_callback = self._hand_over
        self.queue = Queue(config.queue_dir)
        self.internal = InternalAddresses([config.host], allowed=config.allow_internal_relay)
        self.mailboxes = LocalMailboxes(config, on_delivery=on_delivery)
        self.threads = Threads()
        """Where this server's disk work runs, its sessions' and its worker's: a stop
        lets the data directory's lock go once none of it is left (see :meth:`aclose`)."""
        worker_options: dict[str, Any] = {}
        if client_factory is not None:
            worker_options["client_factory"] = client_factory
        self.worker = DeliveryWorker(
            self.queue,
            router=self.relay_router(),
            resolver=self.resolver,
            mailboxes=self.mailboxes,
            hostname=config.hostname,
            retry_after=config.retry_after,
            max_retry_after=config.max_retry_after,
            destination_concurrency=config.destination_concurrency,
            connection_cache_time=config.connection_cache_time,
            max_queue_age=config.max_queue_age,
            delay_warning=config.delay_warning,
            relay_tls=RelayTLS(config.relay_tls),
            relay_ca=config.relay_ca,
            internal=self.internal,
            threads=self.threads,
            marks=DeliveryMarks(config.queue_dir),
            **worker_options,
        )
        self.store = MailStore(
            config, self.queue, self.mailboxes, self.worker, threads=self.threads
        )
        self.credentials = Credentials(config.users)
        self.listeners: list[Listener] = []
        self._handlers: list[InboundHandler | SubmissionHandler | LMTPHandler] = []
        self._pop3_stores: list[POP3Store] = []
        self._servers: list[SMTPServer | POP3Server] = []
        self._worker_task: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self._released: asyncio.Future[None] | None = None
        """Settled once the lock a stop lets go is released (see :meth:`lock_released`)."""
        self._queue_commands = asyncio.Lock()
        """Held while one signal's queue commands are carried out (see run_queue_commands),
        and while carried-out commands' files are removed."""
        self._commands_in_hand: dict[Path, asyncio.Future[bool]] = {}
        """The files of the commands carried out but not yet removed, oldest first, each
        with whether its actions are on disk (see run_queue_commands)."""
        self._removals: set[asyncio.Task[None]] = set()
        self._command_runs: set[asyncio.Task[Any]] = set()
        """The tasks in :meth:`run_queue_commands`, which a stop cuts off with the rest."""
        self._cleaner: asyncio.Task[None] | None = None
        self._marker: asyncio.Task[None] | None = None

    # -- routers ----------------------------------------------------------------

    def _own_addresses(self) -> list[IPAddress]:
        """This server's own addresses (``self.internal.own``: its ``--host`` and what its
        ``--hostname`` resolves to): mail to an address literal naming one is local
        (RFC 1123 §5.2.17 MUST). The unspecified address names no host."""
        return sorted((a for a in self.internal.own if not a.is_unspecified), key=str)

    def _relay_local_addresses(self) -> list[IPAddress]:
        """The own addresses as the relay sees them: they cut an MX list below this host,
        as its names do (RFC 5321 §5.1), but only where the relay would reach this very
        server: our SMTP port is the remote port (routing's advice for several servers
        sharing one address). Elsewhere an exchanger there is another server, though
        mail to their literals is still ours (``local_literals``)."""
        if self.config.smtp_port != self.config.remote_port:
            return []
        return self._own_addresses()

    def relay_router(self) -> Router:
        """The delivery worker's router: MX lookups on ``remote_port``, or the smart host;
        a queued recipient at this server's own address literal is local, as it was on
        the listener that took it."""
        return Router(
            self.config.domains,
            hostnames=[self.config.hostname],
            local_addresses=self._relay_local_addresses(),
            local_literals=self._own_addresses(),
            trusted_networks=(),
            smart_host=self.config.relay_host,
            port=self.config.remote_port,
        )

    def inbound_router(self) -> Router:
        """The ``smtp`` and ``lmtp`` listeners' router: local domains and this server's own
        address literals only, never a relay."""
        return Router(
            self.config.domains,
            hostnames=[self.config.hostname],
            local_literals=self._own_addresses(),
            trusted_networks=(),
            relay_for_authenticated=False,
        )

    def submission_router(self) -> Router:
        """The submission router: an authenticated client may send anywhere; this server's
        own address literals are local, as on the ``smtp`` listener."""
        return Router(
            self.config.domains,
            hostnames=[self.config.hostname],
            local_literals=self._own_addresses(),
            trusted_networks=(),
            relay_for_authenticated=True,
        )

    def authenticator(self) -> Authenticator:
        """SMTP AUTH's and POP3 AUTH's checks: the users' credentials, checked in a worker
        thread, as a password check is a key derivation (milliseconds, more for keys
        of a high iteration count) that would hold every other session. SCRAM shows
        an unknown user the iteration count the users' keys have (taken when a
        listener starts: after a reload that changes the counts, a restart)."""
        credentials = self.credentials
        return Authenticator(
            check_password=credentials.check_password,
            get_password=credentials.get_password,
            get_scram_credentials=credentials.get_scram,
            in_thread=True,
            # An unknown user's made-up keys show the count the users' keys have.
            scram_mock_iterations=credentials.decoy_iterations(),
            has_passwords=credentials.has_passwords,  # CRAM-MD5 only while it can serve
            is_user=credentials.is_user,  # a failed AUTH's line names known users only
        )

    # -- running ----------------------------------------------------------------

    async def start(self) -> list[Listener]:
        """Open the queue, create the mailboxes, bind every listener, start the worker.

        Raises :class:`ConfigError` when the data directory cannot be used, and
        :class:`OSError` when a listener cannot be bound."""
        try:
            entries = await self.threads.run(self._prepare_storage)
            for entry in entries:
                self.worker.schedule(entry)
            if entries:
                logger.info("queue: %s waiting from before", messages(len(entries)))
            # What was asked while no server ran (or left by a stop that cut a round short
            # before an action waiting for it was written), before any round can begin:
            # a ``hold`` must not wait for a round its message should no longer have.
            # Before any listener, too: a command for ALL an earlier version left is
            # pinned as it is first read, and must not reach mail accepted after it.
            await self.run_queue_commands()
            for name, port in self.config.listeners():
                try:
                    await self._listen(name, port)
                except OSError as exc:
                    where = _listener_place(self.config.host, port, exc)
                    raise OSError(
                        exc.errno, f"{name} listener on {where}: {_bind_failure_text(exc)}"
                    ) from exc
        except BaseException:
            await self.aclose(grace=0)
            raise
        await self._learn_own_addresses()
        self._worker_task = asyncio.get_running_loop().create_task(self.worker.run())
        self._cleaner = asyncio.get_running_loop().create_task(self._clean_maildirs())
        self._marker = asyncio.get_running_loop().create_task(self._mark_lock())
        return list(self.listeners)

    async def _mark_lock(self) -> None:
        """Mark the data directory's lock with this process id, every :data:`MARK_RETRY`
        seconds, if a full disk had it taken unmarked (:func:`take_lock`): until then a
        ``queue`` tool cannot tell this server from another tool, and gives up. Once
        marked (at once, as a rule), this ends; so does an error other than the disk's
        refusal, logged."""
        mark = str(os.getpid())

        def marked() -> bool:
            fd = self._lock_fd
            if fd is None or lock_marked(fd, mark):
                return True
            if mark_lock(fd, mark) is not None:
                return False
            logger.info("%s: marked with %s now", self.config.data_dir / LOCK_NAME, mark)
            return True

        try:
            while not await self.threads.run(marked):
                await asyncio.sleep(MARK_RETRY)
        except OSError:  # not the disk's room: trying again would not help
            logger.exception("%s: cannot mark it", self.config.data_dir / LOCK_NAME)

    async def _clean_maildirs(self) -> None:
        """Every :data:`TMP_SCAN_EVERY` seconds, what :meth:`start` does once: the
        Maildirs' ``tmp/`` cleared of what deliveries a crash cut short left there."""
        while True:
            await asyncio.sleep(TMP_SCAN_EVERY)
            try:
                removed = await self.threads.run(self.mailboxes.clean_all)
            except Exception:  # logged, and tried again next time: a stop must not meet it
                logger.exception("maildirs: clearing tmp/ failed")
                continue
            if removed:
                logger.info("maildirs: %d files left in tmp/ over 36 hours removed", removed)

    def _prepare_storage(self) -> list[Any]:
        """The data directory made ready, its lock taken; a storage error is a
        :class:`ConfigError` naming the path, not one of the listeners'. The data, queue
        and mailbox directories are checked together, before anything is written in them
        (see :func:`~smtpcore.server.safefiles.check_private_directories`)."""
        try:
            make_private_directory(self.config.data_dir)
            check_private_directories(
                self.config.data_dir, self.config.queue_dir, *self.mailboxes.directories()
            )
            self._lock_data_dir()
            self.mailboxes.create_all()
            make_private_directory(self.config.queue_dir)
            entries = self.queue.open()
            if self.worker.marks is not None:
                self.worker.marks.clear()  # a crashed server's: they name nothing now
            return entries
        except FileExistsError as exc:  # mkdir(exist_ok=True) found something else there
            not_a_directory = os.strerror(errno.ENOTDIR)
            raise ConfigError(f"--data-dir: {exc.filename}: {not_a_directory}") from None
        except OSError as exc:
            where = exc.filename if exc.filename is not None else self.config.data_dir
            raise ConfigError(f"--data-dir: {where}: {exc.strerror or exc}") from None

    def _lock_data_dir(self) -> None:
        """One server per data directory: two would deliver each other's queue twice."""
        try:
            self._lock_fd = take_lock(self.config.data_dir, str(os.getpid()))
        except ConfigError as exc:
            raise ConfigError(f"--data-dir: {exc}") from None

    async def _learn_own_addresses(self) -> None:
        """The addresses ``--hostname`` resolves to are this server's own: an exchanger
        there is this host, which cuts the MX list, mail to a literal naming one is local
        (every router is built again with them), and the relay does not connect to them
        (``smtpcore.server.internal``). A lookup that fails or takes over two seconds
        adds none."""
        try:
            found = await asyncio.wait_for(self.resolver.addresses(self.config.hostname), 2.0)
        except Exception:  # NXDOMAIN, no DNS, a timeout: nothing learnt
            return
        self.internal.learn(found)
        self.worker.router = self.relay_router()
        for handler in self._handlers:
            handler.router = (
                self.submission_router()
                if isinstance(handler, SubmissionHandler)
                else self.inbound_router()
            )

    def _hand_over(
        self, connection: ssl.SSLObject, server_name: str | None, served: ssl.SSLContext
    ) -> None:
        """The served context's servername callback, which OpenSSL (1.1.1 and later) calls
        for every ClientHello, with SNI or without: the handshake goes on with the context
        :meth:`reload` built last, whose certificate is the only one it holds. A session
        keeps the context it shook hands with, whatever reloads come after."""
        if self._tls_current is not None and self._tls_current is not served:
            connection.context = self._tls_current

    async def reload(self, config: ServerConfig) -> None:
        """SIGHUP: take ``config``'s users and sender aliases, and load the TLS
        certificate again from its files (``config``'s, which become this server's),
        without dropping a session: sessions under way keep their TLS, new handshakes
        use the new certificate. Other options need a restart. Whatever fails leaves
        the configuration as it was."""
        new = replace(
            self.config,
            users=config.users,
            user_sources=config.user_sources,
            sender_aliases=config.sender_aliases,
            alias_sources=config.alias_sources,
        )
        await self.threads.run(LocalMailboxes(new).create_all)
        fresh = self._tls_current
        if config.tls_cert is not None and config.tls_key is not None:
            if self.tls_context is None:
                logger.warning("reload: TLS was off at start; restart to turn it on")
            else:
                # A context of its own, never a second load into the live one: OpenSSL
                # keeps a certificate per key type there, so an ECDSA pair loaded over an
                # RSA one would leave the RSA one served to clients that take no ECDSA.
                fresh = server_tls_context(config.tls_cert, config.tls_key)
                new = replace(new, tls_cert=config.tls_cert, tls_key=config.tls_key)
        self._tls_current = fresh
        self.config = new
        self.mailboxes.config = new
        self.store.config = new
        for handler in self._handlers:
            handler.config = new
        for store in self._pop3_stores:
            store.config = new
            store.passwords = dict(new.users)
        self.credentials.users = new.users  # a new generation: no keys of the old kept
        logger.info("reloaded: %d users, TLS certificate %s", len(new.users), new.tls_cert)

    async def run_queue_commands(self) -> None:
        """Carry out what ``python -m smtpcore queue`` left in the queue directory (it
        sends SIGUSR1 after). One signal's commands at a time, in the order given: two
        tool runs close together must neither read one command twice nor act on one
        message at once.

        A command's file goes once its actions are on disk (an action on a message in
        delivery waits for the round's end) and so are those of every command before
        it: what a stop or crash leaves is the last commands given, which the next
        start carries out again, in order (each action, done twice, ends the same). A
        command that fails (a disk error) is logged and kept, with every later one,
        for the next SIGUSR1 or start: carried out after them, it would undo them."""
        async with self._carrying_out(), self._queue_commands:
            left = await self.threads.run(read_commands, self.config.queue_dir)
            for path, command in left:
                if path in self._commands_in_hand:
                    continue  # carried out already, its file kept until it is on disk
                try:
                    applied = await self.worker.apply(command)
                except Exception:  # a disk error: kept, and must not stop a start
                    logger.exception(
                        "queue %s: failed; kept, with the commands after it, for the next "
                        "SIGUSR1 or start",
                        command.action,
                    )
                    break
                logger.info(
                    "%s",
                    summary_line(command.action, applied.done, applied.waiting, applied.already),
                )
                self._commands_in_hand[path] = applied.written
                applied.written.add_done_callback(self._command_written)
            await self._remove_carried_out()

    @contextlib.asynccontextmanager
    async def _carrying_out(self) -> AsyncIterator[None]:
        """The running task counted in :attr:`_command_runs` for the block: one a stop
        cuts off leaves its command's file, and those after it, for the next start."""
        task = asyncio.current_task()
        if task is not None:
            self._command_runs.add(task)
        try:
            yield
        except asyncio.CancelledError:
            logger.warning("queue: commands cut off; kept for the next SIGUSR1 or start")
            raise
        finally:
            if task is not None:
                self._command_runs.discard(task)

    def _command_written(self, written: asyncio.Future[bool]) -> None:
        task = asyncio.get_running_loop().create_task(self._remove_commands())
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove_commands(self) -> None:
        async with self._queue_commands:
            await self._remove_carried_out()

    async def _remove_carried_out(self) -> None:
        """Remove the files of the oldest commands in hand whose actions are on disk, up
        to the first one that is not yet. One that could not be written is given up
        with every later one: all are read and carried out again, in order, at the next
        SIGUSR1 or start. The caller holds ``_queue_commands``."""
        while self._commands_in_hand:
            path, written = next(iter(self._commands_in_hand.items()))
            if not written.done():
                return
            if not written.result():
                logger.error(
                    "queue: a command could not be written; kept, with the commands after "
                    "it, for the next SIGUSR1 or start"
                )
                self._commands_in_hand.clear()
                return
            try:
                await self.threads.run(path.unlink, missing_ok=True)
            except OSError as exc:  # kept in hand, the later ones behind it: tried again
                logger.error("queue: cannot remove a command carried out: %s", exc)
                return
            del self._commands_in_hand[path]

    def _smtp_handler(self, name: str) -> tuple[Handler, dict[str, Any]]:
        config = self.config
        options: dict[str, Any] = {
            "hostname": config.hostname,
            "max_message_size": config.max_message_size,
            "max_recipients": config.max_recipients,
            # Postfix's smtpd takes these by default; the relay writes them quoted.
            "addresses": (
                AddressPolicy.strict() if config.strict_addresses else AddressPolicy.postfix()
            ),
            "max_sessions": config.max_sessions,
            "max_sessions_per_address": config.max_sessions_per_address,
            "client_ipv6_prefix_length": config.client_ipv6_prefix_length,
            "auth_failure_delay": config.auth_failure_delay,
            "ssl_context": self.tls_context,
        }
        if name in PROXIED_LISTENERS:
            options["proxy_protocol_from"] = config.proxy_protocol_from
            options["proxy_protocol_timeout"] = config.proxy_protocol_timeout
        if name in XCLIENT_LISTENERS:
            options["xclient_from"] = config.xclient_from
        options["dsn"] = True  # reports as RFC 3461 asks: see the delivery worker
        # RFC 8689: offered over TLS; the relay honours it (server/relay_tls.py).
        options["requiretls"] = True
        if name == "smtp":
            inbound = InboundHandler(self.store, self.inbound_router())
            self._handlers.append(inbound)
            return inbound, options
        if name == "lmtp":
            options["lmtp"] = True
            # No DSN: the LMTP client reports from each recipient's reply. Offered, a
            # client takes this server for one that reports (RFC 3461 §5.2.1; Postfix
            # then makes no success report), and this listener makes none.
            options["dsn"] = False
            options["requiretls"] = False
            options["ssl_context"] = None
            lmtp = LMTPHandler(self.store, self.inbound_router())
            self._handlers.append(lmtp)
            return lmtp, options
        options["auth"] = self.authenticator()
        options["require_auth"] = True
        # Passwords go only over TLS when there is TLS; without, the operator chose plaintext.
        options["auth_require_tls"] = self.tls_context is not None
        if name == "smtps":
            options["tls_on_connect"] = True
        handler = SubmissionHandler(
            self.store, self.submission_router(), name, internal=self.internal
        )
        self._handlers.append(handler)
        return handler, options

    async def _listen(self, name: str, port: int) -> None:
        if name in ("pop3", "pop3s"):
            await self._listen_pop3(name, port)
            return
        handler, options = self._smtp_handler(name)
        sock = self.sockets.get(name)
        server = SMTPServer(handler, self.config.host, port, sock=sock, **options)
        await self._started(name, server)

    async def _listen_pop3(self, name: str, port: int) -> None:
        store = POP3Store(self.config, self.authenticator(), name, credentials=self.credentials)
        self._pop3_stores.append(store)
        server = POP3Server(
            store,
            self.config.host,
            port,
            sock=self.sockets.get(name),
            hostname=self.config.hostname,
            ssl_context=self.tls_context,
            tls_on_connect=name == "pop3s",
            proxy_protocol_from=self.config.proxy_protocol_from,
            proxy_protocol_timeout=self.config.proxy_protocol_timeout,
            max_sessions=self.config.max_sessions,
            max_sessions_per_address=self.config.max_sessions_per_address,
            client_ipv6_prefix_length=self.config.client_ipv6_prefix_length,
            auth_failure_delay=self.config.auth_failure_delay,
            utf8=True,  # it takes SMTPUTF8 mail and UTF-8 user names (RFC 6856 §2)
            # ...which a client that never sends UTF8 (fetchmail, mpop, poplib) could
            # otherwise never fetch: it gets the RFC 6858 surrogate instead.
            downgrade=True,
        )
        await self._started(name, server)

    async def _started(self, name: str, server: SMTPServer | POP3Server) -> None:
        await server.start()
        self._servers.append(server)
        self.listeners.extend(Listener(name, host, port) for host, port in server.addresses)

    async def aclose(self, grace: float = 10.0) -> None:
        """Stop listening, let sessions and deliveries finish, stop: one ``grace`` for it
        all (``serve --stop-timeout``), not one after the other. Deliveries, and the
        queue commands being carried out, go on while the sessions end, and have what
        is left of ``grace`` after them; a session cut off then has a second more to
        hear its 421 (:meth:`smtpcore.asyncio.SMTPServer.aclose`), a delivery or a
        command a second more to end (:func:`smtpcore.server.waits.finish`), and the
        disk work they had begun in threads a second more: the data directory's lock
        goes only once that has ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        servers, self._servers = self._servers, []
        await asyncio.gather(*(server.aclose(grace) for server in servers))
        tasks = (self._worker_task, self._cleaner, self._marker)
        self._worker_task = self._cleaner = self._marker = None
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # The queue commands being carried out (SIGUSR1) share the grace with the
        # deliveries, and are cut off with them.
        left = max(deadline - loop.time(), 0.0)
        await asyncio.gather(self.worker.aclose(left), finish(set(self._command_runs), left))
        await self._remove_commands()  # those whose actions the end of a round wrote
        if self._removals:
            await asyncio.wait(self._removals)
        await self._let_go(max(deadline - loop.time(), 0.0) + CUT_OFF)

    async def lock_released(self) -> None:
        """Return once :meth:`aclose` has let the data directory's lock go, which may be
        after it returns (see :meth:`_let_go`). Until then the lock names this process
        for a ``queue`` tool to signal (SIGUSR1): ``serve`` keeps its signal handlers
        while it waits here."""
        if self._released is not None:
            await asyncio.shield(self._released)

    async def _let_go(self, timeout: float) -> None:
        """Release the data directory's lock once the disk work this stop cut off has
        ended (:attr:`threads`; a start cut off may be taking the lock there): a
        ``queue`` tool finding it free acts on the files itself, and nothing of this
        server may land there after that. Waited for ``timeout`` seconds; work that runs
        on past that (a hung disk) lets the lock go when it ends, and the stop ends
        without it."""
        loop = asyncio.get_running_loop()
        released = self._released = loop.create_future()

        def settle() -> None:
            if not released.done():
                released.set_result(None)

        def release() -> None:
            fd, self._lock_fd = self._lock_fd, None
            if fd is not None:
                release_lock(fd)
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(settle)

        self.threads.then(release)
        done, _ = await asyncio.wait((released,), timeout=timeout)
        if not done:
            logger.error(
                "stopping: disk work cut off still runs; the data directory's lock goes "
                "when it ends"
            )

    async def __aenter__(self) -> MailServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


_BOUND_ADDRESS: Final = re.compile(r"bind on address \('([^']*)', ")
"""The address in the sentence asyncio's ``create_server`` (and
:func:`~smtpcore._asyncio_raw.listening_sockets`, worded as it) gives a failed bind, where
alone it says which: ``error while attempting to bind on address ('::1', 2587, 0, 0): ...``."""


def _listener_place(host: str, port: int, exc: OSError) -> str:
    """Where a listener failed, as ``--host`` names it, and the address whose bind failed
    when that is not ``--host`` itself: a name can resolve to several (``localhost`` to
    127.0.0.1 and ::1), and one taken or not this machine's is the one to know."""
    where = host_port(host, port)
    found = _BOUND_ADDRESS.search(str(exc))
    if found is None or found[1] in (host, host.strip("[]")):
        return where
    return f"{where} (address {found[1]})"


def _bind_failure_text(exc: OSError) -> str:
    """Why a listener could not be bound, in the system's words (``Address already in
    use``): asyncio's ``create_server`` hands back its own sentence for a failed bind
    (``error while attempting to bind on address ('127.0.0.1', 2587): address already
    in use``), whose ``errno`` still says it. A failed name lookup has a negative
    ``errno`` (getaddrinfo's) and its own words, kept."""
    if exc.errno and exc.errno > 0 and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return exc.strerror or str(exc)
