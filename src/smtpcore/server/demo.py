"""``python -m smtpcore demo``: the seed's story, played for real on loopback.

john@abc.example writes to brendon@pqr.example. Two reference servers run in
this process, each on its own free loopback ports with its own data
directory: ``mx.abc.example`` takes john's submission, sees that
``pqr.example`` is not its own, asks the resolver (a
:class:`~smtpcore.routing.StaticResolver` standing in for DNS) for the
domain's exchanger and relays the message over SMTP to ``mx.pqr.example``,
which stores it in brendon's Maildir; brendon then fetches it over POP3.
Every protocol line is printed as it crosses the wire, and the demo
succeeds only if brendon gets exactly the bytes john sent, once the trace
headers the two servers added are set aside.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Final, TypeVar

from smtpcore._driver import BaseSMTPClient, Deadline, Link
from smtpcore._driver._timeouts import Watchdog
from smtpcore.address import parse_mailbox
from smtpcore.asyncio import POP3Client, SMTPClient
from smtpcore.handler import TLSInfo
from smtpcore.routing import LocalDelivery, MXRecord, RemoteDelivery, StaticResolver
from smtpcore.sasl import ScramSHA256Client
from smtpcore.server.config import ConfigError, ServerConfig
from smtpcore.server.mailserver import MailServer

__all__ = ["MESSAGE", "run_demo", "strip_trace_headers"]

LOOPBACK: Final = "127.0.0.1"
JOHN: Final = "john@abc.example"
BRENDON: Final = "brendon@pqr.example"
PASSWORDS: Final = {JOHN: "john's secret", BRENDON: "brendon's secret"}

MESSAGE: Final = (
    b"From: John <john@abc.example>\r\n"
    b"To: Brendon <brendon@pqr.example>\r\n"
    b"Subject: Hello from abc.example\r\n"
    b"Date: Thu, 01 Jan 2026 09:00:00 +0000\r\n"
    b"Message-ID: <demo.1@abc.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Hi Brendon,\r\n"
    b"\r\n"
    b".this line starts with a dot, which SMTP and POP3 stuff and unstuff.\r\n"
    b"Gr\xc3\xbc\xc3\x9fe from abc.example, in 8-bit UTF-8.\r\n"
    b"\r\n"
    b"John\r\n"
)
"""What john sends, in wire form."""

_ZONE: Final = """\
abc.example      MX  10 mx.abc.example
mx.abc.example   A   127.0.0.1
pqr.example      MX  10 mx.pqr.example
mx.pqr.example   A   127.0.0.1
"""

_TRACE_FIELDS: Final = (b"return-path:", b"received:")


def strip_trace_headers(message: bytes) -> tuple[bytes, int]:
    """The message without the trace fields at its top (RFC 5321 §4.4), and their count."""
    count = 0
    rest = message
    while rest[:12].lower().startswith(_TRACE_FIELDS):
        count += 1
        end = rest.find(b"\r\n")
        while end >= 0 and rest[end + 2 : end + 3] in (b" ", b"\t"):
            end = rest.find(b"\r\n", end + 2)
        if end < 0:
            return b"", count
        rest = rest[end + 2 :]
    return rest, count


_T = TypeVar("_T")


class _Tap:
    """A transport that prints every line it carries, then passes it on."""

    def __init__(self, inner: Link, say: Callable[[str], None], me: str, peer: str) -> None:
        self.inner = inner
        self.say = say
        width = max(len(me), len(peer))
        self.out_prefix = f"    {me:>{width}} > "
        self.in_prefix = f"    {peer:>{width}} < "
        self._partial = {True: b"", False: b""}

    def _show(self, data: bytes, outgoing: bool) -> None:
        buffered = self._partial[outgoing] + data
        *lines, self._partial[outgoing] = buffered.split(b"\r\n")
        prefix = self.out_prefix if outgoing else self.in_prefix
        for line in lines:
            self.say(prefix + line.decode("utf-8", "backslashreplace"))

    async def receive_some(self, max_bytes: int) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self._show(data, outgoing=False)
        return data

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        data = self.inner.receive_nowait(max_bytes)
        if data:
            self._show(data, outgoing=False)
        return data

    async def send_all(self, data: bytes) -> None:
        self._show(data, outgoing=True)
        await self.inner.send_all(data)

    def send_nowait(self, data: bytes) -> int:
        return 0  # everything goes through send_all, to be shown once

    def settled(self) -> bool:
        return self.inner.settled()  # nothing waits in the tap itself

    def drained(self) -> bool:
        return self.inner.drained()

    async def start_tls(
        self, context: ssl.SSLContext, *, server_side: bool, server_hostname: str | None = None
    ) -> None:
        self.say(f"{self.out_prefix}(TLS handshake)")
        await self.inner.start_tls(
            context, server_side=server_side, server_hostname=server_hostname
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def channel_bindings(self) -> dict[str, bytes]:
        return self.inner.channel_bindings()

    def deadline(self, seconds: float | None) -> AbstractAsyncContextManager[Deadline]:
        return self.inner.deadline(seconds)

    def watchdog(self) -> AbstractAsyncContextManager[Watchdog]:
        return self.inner.watchdog()

    async def within(self, seconds: float | None, call: Awaitable[_T]) -> _T:
        return await self.inner.within(seconds, call)

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return self.inner.peer_address

    @property
    def local_address(self) -> tuple[str, int] | None:
        return self.inner.local_address

    @property
    def tls(self) -> TLSInfo | None:
        return self.inner.tls


class _NarratedSMTPClient(SMTPClient):
    """An SMTP client whose lines are printed; it waits for ``gate`` before connecting."""

    def __init__(
        self,
        *args: Any,
        say: Callable[[str], None],
        me: str,
        peer: str,
        announce: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(*args, **options)
        self._say, self._me, self._peer, self._announce = say, me, peer, announce

    async def _open(self, host: str, port: int) -> Any:
        if self._announce is not None:
            self._say(self._announce)
        return _Tap(await super()._open(host, port), self._say, self._me, self._peer)


class _NarratedPOP3Client(POP3Client):
    def __init__(self, *args: Any, say: Callable[[str], None], **options: Any) -> None:
        super().__init__(*args, **options)
        self._say = say

    async def _open(self, host: str, port: int) -> Any:
        return _Tap(await super()._open(host, port), self._say, "brendon", "mx.pqr.example")


class _NarratedResolver:
    """The static zone, saying what it is asked and what it answers."""

    def __init__(self, inner: StaticResolver, say: Callable[[str], None]) -> None:
        self.inner = inner
        self.say = say
        self.gate = asyncio.Event()
        """Lookups wait for this, so that they come in the story's order."""

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        await self.gate.wait()
        answer = await self.inner.mx(domain)
        shown = ", ".join(f"{r.preference} {r.exchange}" for r in answer) or "(none)"
        self.say(f"    resolver: {domain} MX? -> {shown}")
        return answer

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        await self.gate.wait()
        answer = await self.inner.addresses(host)
        self.say(f"    resolver: {host} A/AAAA? -> {', '.join(map(str, answer)) or '(none)'}")
        return answer


class _DeliveryLog(logging.Handler):
    """Shows the mail log's delivery lines in the story."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if ": to=<" in text:
            self.say(f"    log: {text}")


def _listening() -> socket.socket:
    return socket.create_server((LOOPBACK, 0))


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


class _Story:
    """The two servers, the resolver and what happened so far."""

    def __init__(self, base: Path, say: Callable[[str], None]) -> None:
        """Both servers keep no free-space floor (``min_free_space=0``): the demo keeps
        nothing that matters, and its temporary directory may sit on a small filesystem
        that the default floor (1.5 times the size limit) would refuse all mail on."""
        self.say = say
        self.resolver = _NarratedResolver(StaticResolver.from_zone_text(_ZONE), say)
        self.submission, self.smtp, self.pop3 = _listening(), _listening(), _listening()
        self.delivered = asyncio.Event()
        self.stored: list[Path] = []
        self.pqr_config = ServerConfig(
            domains=("pqr.example",),
            users={BRENDON: PASSWORDS[BRENDON]},
            data_dir=base / "pqr.example",
            hostname="mx.pqr.example",
            submission_port=0,
            min_free_space=0,
        )
        self.abc_config = ServerConfig(
            domains=("abc.example",),
            users={JOHN: PASSWORDS[JOHN]},
            data_dir=base / "abc.example",
            hostname="mx.abc.example",
            smtp_port=0,
            pop3_port=0,
            remote_port=_port(self.smtp),
            retry_after=1,
            allow_internal_relay=True,  # the two servers share loopback
            connection_cache_time=0,  # the relay's QUIT ends step 3, as one message would
            min_free_space=0,
        )
        self.base = base

    def _on_delivery(self, key: str, path: Path) -> None:
        self.stored.append(path)
        self.delivered.set()

    def _relay_client(self, host: str, port: int, **options: Any) -> BaseSMTPClient:
        return _NarratedSMTPClient(
            host,
            port,
            say=self.say,
            me="mx.abc.example",
            peer="mx.pqr.example",
            announce="\n3. mx.abc.example relays the message over SMTP to mx.pqr.example.",
            **options,
        )

    def introduce(self) -> None:
        say = self.say
        say("smtpcore demo: john@abc.example writes to brendon@pqr.example, on loopback.")
        say("")
        say("Two mail servers run in this process, each with its own data directory:")
        say(
            f"  mx.abc.example  domain abc.example, user {JOHN}, "
            f"submission on {LOOPBACK}:{_port(self.submission)}"
        )
        say(
            f"  mx.pqr.example  domain pqr.example, user {BRENDON}, "
            f"smtp on {LOOPBACK}:{_port(self.smtp)}, pop3 on {LOOPBACK}:{_port(self.pop3)}"
        )
        say(f"  data under {self.base}")
        say("A static resolver stands in for DNS, with this zone:")
        for line in _ZONE.splitlines():
            say(f"  {line}")
        say(
            f"Both servers share {LOOPBACK}, so mx.abc.example relays to port "
            f"{_port(self.smtp)} (--remote-port) rather than 25."
        )

    async def run(self) -> bool:
        async with AsyncExitStack() as stack:
            pqr = await stack.enter_async_context(
                MailServer(
                    self.pqr_config,
                    resolver=self.resolver,
                    sockets={"smtp": self.smtp, "pop3": self.pop3},
                    on_delivery=self._on_delivery,
                )
            )
            abc = await stack.enter_async_context(
                MailServer(
                    self.abc_config,
                    resolver=self.resolver,
                    sockets={"submission": self.submission},
                    client_factory=self._relay_client,
                )
            )
            await self.submit()
            if not self.route(abc):
                return False
            self.resolver.gate.set()
            await self.delivered.wait()
            while abc.worker.queued:
                await asyncio.sleep(0.01)
            self.store(pqr)
            fetched = await self.fetch()
        return self.check(fetched)

    async def submit(self) -> None:
        self.say("")
        self.say("1. john submits his message to mx.abc.example, logging in first (AUTH).")
        client = _NarratedSMTPClient(
            LOOPBACK,
            _port(self.submission),
            say=self.say,
            me="john",
            peer="mx.abc.example",
            hostname="johns-laptop.abc.example",
            starttls=False,
            username=JOHN,
            password=PASSWORDS[JOHN],
            chunking=False,  # DATA, to show the dot-stuffing; the relay uses BDAT
        )
        async with client:
            await client.send_message(MESSAGE, JOHN, [BRENDON])

    def route(self, abc: MailServer) -> bool:
        say = self.say
        say("")
        say("2. mx.abc.example routes the recipient.")
        recipient = parse_mailbox(BRENDON)
        decision = abc.submission_router().route(recipient, authenticated=True)
        say(
            f"    {BRENDON}: local part {recipient.local_part!r}, domain "
            f"{recipient.domain!r}; its own domains: {', '.join(abc.config.domains)}"
        )
        if not isinstance(decision, RemoteDelivery):
            say(f"    unexpected routing decision: {decision}")
            return False
        say("    pqr.example is not its own and john logged in: relay (RemoteDelivery).")
        say("    The message waits in its queue; the queue asks where pqr.example's mail goes:")
        return True

    def store(self, pqr: MailServer) -> None:
        say = self.say
        say("")
        say("4. mx.pqr.example sees that the recipient is its own and stores the message.")
        decision = pqr.inbound_router().route(parse_mailbox(BRENDON))
        if isinstance(decision, LocalDelivery):
            say(
                f"    {BRENDON}: pqr.example is its own domain (LocalDelivery) and brendon "
                "has a mailbox, so the message went into his Maildir:"
            )
        for path in self.stored:
            say(f"    {path}")

    async def fetch(self) -> list[bytes]:
        self.say("")
        self.say("5. brendon fetches his mail over POP3 from mx.pqr.example.")
        client = _NarratedPOP3Client(
            LOOPBACK, _port(self.pop3), say=self.say, stls=False, hostname="brendon"
        )
        async with client:
            # SCRAM, as john's AUTH: no TLS here, and USER/PASS would show the password.
            await client.authenticate(ScramSHA256Client(BRENDON, PASSWORDS[BRENDON]))
            listing = await client.list()
            fetched = [await client.retrieve(item.number) for item in listing]
            for item in listing:
                await client.delete(item.number)
        return fetched

    def check(self, fetched: list[bytes]) -> bool:
        say = self.say
        say("")
        say("6. Is it the message john sent?")
        if len(fetched) != 1:
            say(f"    No: brendon has {len(fetched)} messages, not 1.")
            return False
        body, trace = strip_trace_headers(fetched[0])
        if body != MESSAGE:
            say("    No: the message differs from what john sent.")
            return False
        say(
            f"    Yes, byte for byte, once the {trace} trace header fields the servers added "
            "(Return-Path, and a Received line from each server) are set aside."
        )
        return True


async def _story(base: Path, say: Callable[[str], None]) -> bool:
    story = _Story(base, say)
    story.introduce()
    log = logging.getLogger("smtpcore.mail")
    handler = _DeliveryLog(say)
    previous_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return await story.run()
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


def run_demo(keep: Path | None = None, say: Callable[[str], None] = print) -> int:
    """Play the story; 0 when brendon got john's message intact, 1 otherwise.

    The servers' data goes to a temporary directory that is removed at the
    end, or to ``keep`` (created; it must not hold anything yet).
    """
    if keep is not None:
        try:
            keep.mkdir(parents=True, exist_ok=True)
            if any(keep.iterdir()):
                raise ConfigError(f"--keep: {keep} is not empty")
        except FileExistsError:  # mkdir(exist_ok=True) found something else there
            raise ConfigError(f"--keep: {keep} is not a directory") from None
        except OSError as exc:
            raise ConfigError(f"--keep: {exc.filename}: {exc.strerror or exc}") from None
    base = keep if keep is not None else Path(tempfile.mkdtemp(prefix="smtpcore-demo-"))
    try:
        ok = asyncio.run(asyncio.wait_for(_story(base.resolve(), say), 30))
    except TimeoutError:
        say("The story did not finish within 30 seconds.")
        ok = False
    finally:
        if keep is None:
            shutil.rmtree(base, ignore_errors=True)
    if keep is not None:
        say(f"\nThe two servers' data is kept in {keep}.")
    return 0 if ok else 1
