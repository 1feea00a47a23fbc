"""The relay keeps a connection that ended its transaction cleanly for the next message
to the same next hop (``smtpcore.server.relaycache``, Postfix's connection cache): many
messages go over one connection; a hop that closed it meanwhile costs no message; a
different hop or TLS policy never gets it; expiry and stop QUIT and close everything."""

from __future__ import annotations

import asyncio
import gc
import logging
import ssl
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay_remote import ScriptedRemote, remote
from smtpcore import NEED_DATA, PAUSED
from smtpcore._driver import BaseSMTPClient
from smtpcore.address import parse_mailbox
from smtpcore.asyncio import SMTPClient, SMTPConnectionError, SMTPProtocolError, Timeouts
from smtpcore.server.config import ConfigError, ServerConfig
from smtpcore.server.exchanger import default_client
from smtpcore.server.queue import QueueEntry, RecipientStatus
from smtpcore.server.relay_tls import RelayTLS
from smtpcore.server.relaycache import (
    IDLE_TIME_LIMIT,
    MAX_IDLE_TIME_LIMIT,
    HopKey,
    Idle,
    RelayConnections,
    ended_cleanly,
    gone_before_mail,
    relay_connections,
)
from smtpcore.smtp import (
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    Mail,
    MessageData,
    Rcpt,
    RecipientResult,
    Reply,
    ServerExtensions,
    TransactionResult,
)
from test_server_relay import (
    ZONE,
    Relay,
    _lines,
    _relay,
    _run,
    _until,
    _wait_closed,
    mx_tls,  # noqa: F401 - the fixture
)

KEPT = 60.0
"""An idle time no test run outlasts: whether a connection is kept never depends on
how fast this machine is."""

NO_TLS_REQUIRED = b"From: john@abc.example\r\nTLS-Required: No\r\n\r\nbody line\r\n"


@pytest.fixture
def no_resource_warnings() -> Iterator[None]:
    """Every socket the relay opened is closed by the end of the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def _quits(server: ScriptedRemote) -> int:
    return server.verbs.count(b"QUIT")


def _users(count: int) -> list[str]:
    return [f"user{number}@pqr.example" for number in range(count)]


def _deliver_each(
    tmp_path: Path, server: ScriptedRemote, recipients: list[str], **options: Any
) -> None:
    """A message to each of ``recipients``, delivered by a relay with one session at
    work and the cache on (:data:`KEPT`) unless ``options`` say otherwise, then
    stopped; returns once ``server`` has seen every connection closed."""
    options = {"concurrency": 1, "retry_after": 3600.0, "connection_cache_time": KEPT, **options}
    relay = _relay(tmp_path, server.port, **options)
    for recipient in recipients:
        relay.enqueue([recipient])
    _run(relay, relay.empty)
    _wait_closed(server)


def test_messages_queued_for_one_hop_go_over_one_connection(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    with remote() as server:
        _deliver_each(tmp_path, server, _users(5))
    assert len(server.transactions) == 5
    assert server.connections == 1
    # One EHLO, an RSET before each message on the kept connection (verify_kept), QUIT
    # at the stop.
    assert server.verbs.count(b"EHLO") == 1
    assert server.verbs.count(b"RSET") == 4
    assert _quits(server) == 1


def test_messages_with_the_same_envelope_and_replies_go_over_one_connection(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    """Each transaction's record equals the last one's (same sender, recipient and
    replies, as from a server that always answers ``250 OK``): still a new one."""
    with remote() as server:
        _deliver_each(tmp_path, server, ["brendon@pqr.example"] * 5)
    assert len(server.transactions) == 5
    assert server.connections == _quits(server) == 1


def test_without_the_cache_each_message_has_its_own_connection(tmp_path: Path) -> None:
    with remote() as server:
        _deliver_each(tmp_path, server, _users(3), connection_cache_time=0.0)
    assert server.connections == _quits(server) == 3


def test_a_connection_that_had_the_hops_mailmax_is_quit_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_resource_warnings: None
) -> None:
    """LIMITS MAILMAX=2 (RFC 9422 §4.1): a connection carries two messages, then says
    QUIT at once. Kept, the third message took it, sent the verifying RSET and then
    found it could send no MAIL: each connection after the first had one RSET too
    many and a message that went over a second connection."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(extra_ehlo=(b"LIMITS MAILMAX=2",)) as server:
        _deliver_each(tmp_path, server, _users(5))
    assert len(server.transactions) == 5
    assert server.connections == _quits(server) == 3
    assert server.verbs.count(b"MAIL") == 5
    assert server.verbs.count(b"RSET") == 2  # the second message on each of two connections
    assert len(_lines(caplog, "status=sent")) == 5


@pytest.mark.parametrize(
    "script",
    [
        {"close_when_idle": b"421 4.4.2 idle too long"},
        {"close_when_idle": b""},
        {"later_mail_reply": b"421 4.3.2 closing now"},
    ],
    ids=["421-while-idle", "eof-while-idle", "421-to-mail"],
)
def test_a_hop_that_closed_the_kept_connection_costs_no_message(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    script: dict[str, Any],
    no_resource_warnings: None,
) -> None:
    """A round that failed would leave its message queued for an hour: every message
    is delivered in its first round, none deferred, each over a new connection."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(**script) as server:
        _deliver_each(tmp_path, server, _users(4))
    assert sorted(t.recipients[0] for t in server.transactions) == [
        f"user{number}@pqr.example" for number in range(4)
    ]
    assert server.connections == 4
    assert _lines(caplog, "status=deferred") == []
    assert len(_lines(caplog, "status=sent")) == 4
    found_closed = len(_lines(caplog, "was closed meanwhile"))
    if script.get("close_when_idle"):
        # A 421 read with the 250 before it is seen at once: that connection is not kept.
        assert found_closed <= 3
    else:
        assert found_closed == 3


def _tried_or_sent(relay: Relay, entry: QueueEntry) -> Callable[[], bool]:
    """Whether ``entry`` has had an attempt, or is gone from the queue, all sent."""

    def tried() -> bool:
        try:
            return relay.queue.load(entry.id).attempts > 0
        except FileNotFoundError:
            return True

    return tried


def _split_after_one(tmp_path: Path, server: ScriptedRemote) -> tuple[Relay, QueueEntry]:
    """A message to a@, then one to b@ and c@ (split in two transactions by the remote's
    LIMITS RCPTMAX=1) over the connection kept from the first; returns once the second
    has had an attempt (or is all sent) and ``server`` has seen every connection
    closed."""
    relay = _relay(
        tmp_path, server.port, concurrency=1, retry_after=3600.0, connection_cache_time=KEPT
    )
    relay.enqueue(["a@pqr.example"])
    second = relay.enqueue(["b@pqr.example", "c@pqr.example"])
    _run(relay, _tried_or_sent(relay, second))
    _wait_closed(server)
    return relay, second


def test_a_kept_connection_that_stops_answering_settles_nothing_from_the_last_message(
    tmp_path: Path,
) -> None:
    """The second message to the same recipient times out on a kept connection before
    its MAIL is answered: the client's record is still the first message's transaction,
    whose 250 must not mark the second one sent (it was never delivered)."""
    with remote(later_mail_reply=b"", hold=10.0) as server:
        relay = _relay(
            tmp_path,
            server.port,
            concurrency=1,
            retry_after=3600.0,
            connection_cache_time=KEPT,
            timeouts=Timeouts(command=0.5, quit=0.5),
        )
        first = relay.enqueue(["brendon@pqr.example"])
        second = relay.enqueue(["brendon@pqr.example"])
        _run(relay, _tried_or_sent(relay, second))
        server.release.set()
        _wait_closed(server)
    assert len(server.transactions) == 1
    assert not (relay.queue.directory / "envelopes" / first.id).exists()
    (recipient,) = relay.queue.load(second.id).recipients
    assert recipient.status is RecipientStatus.PENDING


def test_a_kept_connection_lost_after_a_batch_of_the_message_does_not_send_it_again(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    """LIMITS RCPTMAX=1 (RFC 9422 §4.2) splits the second message in two transactions
    over the kept connection; the first ends, the second's ``MAIL`` is answered 421.
    The hop closed the connection, but not before the message: its first recipient has
    it, so no new connection sends it to them again; the second waits for the next
    round."""
    with remote(
        extra_ehlo=(b"LIMITS RCPTMAX=1",),
        later_mail_reply=b"421 4.3.2 closing now",
        later_mail_after=2,
    ) as server:
        relay, second = _split_after_one(tmp_path, server)
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"], ["b@pqr.example"]]
    statuses = {r.address: r.status for r in relay.queue.load(second.id).recipients}
    assert statuses == {
        "b@pqr.example": RecipientStatus.SENT,
        "c@pqr.example": RecipientStatus.PENDING,
    }


def test_a_kept_connection_closed_at_the_first_mail_of_a_split_message_costs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, no_resource_warnings: None
) -> None:
    """LIMITS RCPTMAX=1 (RFC 9422 §4.2) splits the second message in two transactions;
    over the kept connection its first ``MAIL`` is answered 421: none of it was taken,
    so it goes at once over a new connection, both batches, as a message in one
    transaction does: no attempt counted, nothing deferred, no recipient sent twice."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(
        extra_ehlo=(b"LIMITS RCPTMAX=1",),
        later_mail_reply=b"421 4.3.2 closing now",
        later_mail_sessions=1,
    ) as server:
        _split_after_one(tmp_path, server)
    assert [t.recipients for t in server.transactions] == [
        ["a@pqr.example"],
        ["b@pqr.example"],
        ["c@pqr.example"],
    ]
    assert server.connections == 2
    assert _lines(caplog, "status=deferred") == []
    assert len(_lines(caplog, "status=sent")) == 3
    assert len(_lines(caplog, "was closed meanwhile")) == 1


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_split_message_whose_batch_was_refused_at_mail_is_not_sent_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pipelining: bool, no_resource_warnings: None
) -> None:
    """LIMITS RCPTMAX=1 splits the second message; over the kept connection its first
    batch's ``MAIL`` is refused ``550`` (b bounced as the batch ends, a notice sent),
    the second batch's ``MAIL`` reply cannot be read. A transaction of the message has
    ended: the connection is not taken as gone, nothing goes over a new one, b is
    bounced and never delivered too, c waits for the next round."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(
        extra_ehlo=(b"LIMITS RCPTMAX=1", *((b"PIPELINING",) if pipelining else ())),
        mail_refusals={2: b"550 5.7.1 sender refused"},
        later_mail_reply=b"2x0 garbled",
        later_mail_after=2,
        later_mail_sessions=1,
    ) as server:
        relay, second = _split_after_one(tmp_path, server)
    states = {r.address: r.status for r in relay.queue.load(second.id).recipients}
    assert server.connections == 1
    assert _lines(caplog, "was closed meanwhile") == []
    assert states == {
        "b@pqr.example": RecipientStatus.FAILED,
        "c@pqr.example": RecipientStatus.PENDING,
    }
    assert [line.split(",")[0].split(": ")[1] for line in _lines(caplog, "status=sent")] == [
        "to=<a@pqr.example>"
    ]


TOO_MANY = [b"250 2.0.0 queued as A (again)", b"550 5.7.1 second opinion: refused"]


@pytest.mark.parametrize("unasked", TOO_MANY, ids=["250", "550"])
@pytest.mark.parametrize(
    "written", ["in-the-same-write", "on-its-own-while-idle", "on-its-own-at-once", "after-rset"]
)
def test_a_reply_too_many_after_the_content_costs_the_next_message_nothing(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    unasked: bytes,
    written: str,
    no_resource_warnings: None,
) -> None:
    """The hop answers the first message's content twice: the second reply, no answer
    to anything, is never read as the next message's ``MAIL`` reply (a ``550`` would
    bounce a message the hop never saw), nor does it defer that message (an attempt
    counted, the hop marked bad): the message goes over a new connection. In the read
    of the first reply, the connection is not kept; written on its own while the
    connection is idle, the look before the ``RSET`` finds it; written once the
    ``RSET`` went out, it is read as the ``RSET``'s reply, a refusal at once, a ``250``
    once the replies after it are found out of step."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    if written == "in-the-same-write":
        options: dict[str, Any] = {"data_replies": [b"250 2.0.0 queued as A\r\n" + unasked]}
    else:
        when = {"on-its-own-while-idle": "released", "after-rset": "later"}.get(written)
        options = {"unasked_reply": unasked, "unasked_when": when or "at-once"}
    with remote(**options) as server:
        relay = _relay(
            tmp_path, server.port, concurrency=1, retry_after=3600.0, connection_cache_time=KEPT
        )
        relay.enqueue(["a@pqr.example"])
        if written == "on-its-own-while-idle":
            _run_until_idle_then_send(relay, server, "b@pqr.example")
        else:
            relay.enqueue(["b@pqr.example"])
            _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["a@pqr.example"], ["b@pqr.example"]]
    assert _lines(caplog, "status=deferred") == _lines(caplog, "status=bounced") == []
    assert len(_lines(caplog, "status=sent")) == 2
    verified = server.verbs.count(b"RSET")
    if written == "in-the-same-write":  # never kept, so never verified
        assert verified == 0 and not _lines(caplog, "kept for")
    elif written == "on-its-own-while-idle":  # the look before RSET found it
        assert verified == 0 and _lines(caplog, "kept for")
    elif written == "after-rset":
        assert verified == 1 and _lines(caplog, "kept for")
        if unasked.startswith(b"5"):
            assert _lines(caplog, "RSET answered: 550")


def _run_until_idle_then_send(relay: Any, server: ScriptedRemote, recipient: str) -> None:
    """Run the relay until its first message is sent, then have the hop write its reply
    too many, then give the relay a message for ``recipient`` and run until it is
    sent."""

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(relay.worker.run())
        try:
            await asyncio.wait_for(_until(relay.empty), 10)
            server.unasked_release.set()
            await asyncio.wait_for(_until(server.unasked_written.is_set), 10)
            relay.enqueue([recipient])
            await asyncio.wait_for(_until(relay.empty), 10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await relay.worker.aclose(1.0)

    asyncio.run(main())


def test_the_stop_quits_idle_connections_while_deliveries_finish(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    """One grace for the whole stop: the idle connection's QUIT goes at its start, not
    after the delivery still under way is done (or cut off)."""
    zone = ZONE + "xyz.example MX 10 mx.xyz.example\nmx.xyz.example A 127.0.0.1\n"
    with remote(data_replies=[b"250 2.0.0 queued", b""], hold=10.0) as server:
        relay = _relay(
            tmp_path, server.port, zone=zone, retry_after=3600.0, connection_cache_time=KEPT
        )
        connections = relay.worker.exchanger.connections
        assert connections is not None

        async def main() -> None:
            task = asyncio.get_running_loop().create_task(relay.worker.run())
            try:
                relay.enqueue(["a@pqr.example"])
                await asyncio.wait_for(_until(lambda: len(connections) == 1), 10)
                relay.enqueue(["b@xyz.example"])  # another next hop: a new connection
                await asyncio.wait_for(_until(lambda: server.verbs.count(b"DATA") == 2), 10)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            stop = asyncio.get_running_loop().create_task(relay.worker.aclose(30.0))
            try:
                await asyncio.wait_for(_until(lambda: _quits(server) == 1), 5)
                assert not stop.done()  # the second message's end is still unanswered
            finally:
                server.release.set()
                await stop

        asyncio.run(main())
        _wait_closed(server)
    assert server.connections == 2


def test_another_domain_whose_exchanger_has_another_name_gets_its_own_connection(
    tmp_path: Path,
) -> None:
    """Same address and port, but another MX name: another name to check a certificate
    against (and send as SNI), so never the kept connection."""
    zone = ZONE + "xyz.example MX 10 mx.xyz.example\nmx.xyz.example A 127.0.0.1\n"
    with remote() as server:
        relay = _relay(
            tmp_path,
            server.port,
            zone=zone,
            concurrency=1,
            retry_after=3600.0,
            connection_cache_time=KEPT,
        )
        for address in ("a@pqr.example", "b@xyz.example", "c@pqr.example", "d@xyz.example"):
            relay.enqueue([address])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert len(server.transactions) == 4
    assert server.connections == server.verbs.count(b"EHLO") == 2


def test_a_message_under_another_tls_policy_gets_its_own_connection(
    tmp_path: Path,
    mx_tls: tuple[ssl.SSLContext, Path, Path],  # noqa: F811 - the fixture imported
) -> None:
    """``encrypt`` configured; ``TLS-Required: No`` asks for ``may`` (RFC 8689 §4.2.2):
    a connection made under one policy never carries a message under the other."""
    context, _, _ = mx_tls
    with remote(starttls="tls", tls_context=context) as server:
        relay = _relay(
            tmp_path,
            server.port,
            concurrency=1,
            retry_after=3600.0,
            relay_tls=RelayTLS.ENCRYPT,
            connection_cache_time=KEPT,
        )
        relay.enqueue(["a@pqr.example"])
        relay.enqueue(["b@pqr.example"], content=NO_TLS_REQUIRED)
        relay.enqueue(["c@pqr.example"])
        relay.enqueue(["d@pqr.example"], content=NO_TLS_REQUIRED)
        _run(relay, relay.empty)
        _wait_closed(server)
    assert len(server.transactions) == 4
    assert server.connections == 2


@pytest.mark.parametrize("failure", ["454", "502", "handshake"])
def test_a_session_in_plaintext_because_tls_failed_is_not_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: str, no_resource_warnings: None
) -> None:
    """Under ``may``, STARTTLS refused (any reply but ``220``: a ``454``, "temporary
    reason", RFC 3207 §4, or a ``502`` from an exchanger that offered it all the same)
    or a handshake that failed, then tried again without it: each message tries TLS
    again over a new connection, none goes over the plaintext one kept for up to 300
    seconds."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    if failure == "454":
        script: dict[str, Any] = {"starttls": "refuse"}
    elif failure == "502":
        script = {"starttls": "refuse", "starttls_refusal": b"502 5.5.1 not after all"}
    else:  # a server context with no certificate: a handshake it cannot finish
        script = {"starttls": "tls", "tls_context": ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)}
    with remote(**script) as server:
        _deliver_each(tmp_path, server, _users(3))
    assert len(server.transactions) == 3
    assert not any(t.tls for t in server.transactions)
    assert server.verbs.count(b"STAR") == 3  # TLS tried for each message
    assert server.verbs.count(b"RSET") == 0  # no kept connection verified
    per_message = 2 if failure == "handshake" else 1
    assert server.connections == 3 * per_message
    assert len(_lines(caplog, "status=sent")) == 3


def test_a_session_to_an_exchanger_without_starttls_is_kept(tmp_path: Path) -> None:
    """No TLS offered is not TLS failed: the connection is kept under ``may``."""
    with remote(starttls="none") as server:
        _deliver_each(tmp_path, server, _users(3))
    assert len(server.transactions) == 3
    assert server.connections == 1


def test_a_session_in_plaintext_because_a_client_factory_asked_for_no_tls_is_kept(
    tmp_path: Path,
) -> None:
    """A client factory that turns STARTTLS off (``starttls=False``) to an exchanger
    that offers none: TLS neither tried nor failed, so the connection is kept as
    any other. Only the relay's own fallback after a failure marks a session."""

    def no_starttls(host: str, port: int, **options: Any) -> BaseSMTPClient:
        options["starttls"] = False
        return default_client(host, port, **options)

    with remote(starttls="none") as server:
        _deliver_each(tmp_path, server, _users(3), client_factory=no_starttls)
    assert len(server.transactions) == 3
    assert server.connections == 1


def test_a_session_after_helo_because_ehlo_got_a_4xx_is_not_kept(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    """EHLO answered ``450``, HELO taken: the session has no STARTTLS to try, for now
    (what it lacks the relay takes as lacking for now, ``_lacking``), so it is not
    kept; each message opens a new connection, whose EHLO may be taken."""
    script: dict[str, Any] = {
        "starttls": "refuse",
        "hello_replies": {b"EHLO": b"450 4.7.1 busy, try HELO"},
    }
    with remote(**script) as server:
        _deliver_each(tmp_path, server, _users(3))
    assert len(server.transactions) == 3
    assert server.verbs.count(b"HELO") == 3
    assert server.verbs.count(b"RSET") == 0  # no kept connection verified
    assert server.connections == 3


def test_a_session_under_tls_after_helo_because_ehlo_got_a_4xx_is_not_kept(
    tmp_path: Path,
    mx_tls: tuple[ssl.SSLContext, Path, Path],  # noqa: F811 - the fixture imported
    no_resource_warnings: None,
) -> None:
    """STARTTLS taken, the EHLO after TLS answered ``450``, HELO taken: the session has
    TLS but no extension, which the relay takes as lacking for now (a message that
    needs SMTPUTF8 is deferred over it), so it is not kept either: each message opens
    a new connection, whose EHLO may be taken. (Kept, the next message needing an
    extension waited ``retry_after`` without EHLO tried again.)"""
    context, _, _ = mx_tls
    script: dict[str, Any] = {
        "starttls": "tls",
        "tls_context": context,
        "tls_hello_replies": {b"EHLO": b"450 4.7.1 busy, try HELO"},
    }
    with remote(**script) as server:
        _deliver_each(tmp_path, server, _users(3))
    assert len(server.transactions) == 3
    assert all(t.tls for t in server.transactions)
    assert server.verbs.count(b"HELO") == 3
    assert server.verbs.count(b"RSET") == 0  # no kept connection verified
    assert server.connections == 3


class _CountedClient(SMTPClient):
    """A relay client that is open, for :class:`_OpenClients`, from the start of its
    ``connect()``."""

    def __init__(self, clients: _OpenClients, host: str, port: int, **options: Any) -> None:
        super().__init__(host, port, **options)
        self.clients = clients
        self.opening = False

    async def connect(self) -> None:
        self.opening = True
        self.clients.opened()
        try:
            await super().connect()
        finally:
            self.opening = False


class _OpenClients:
    """The relay's own count of the connections it holds open, as its client factory
    sees them: each client from the start of its ``connect()`` until it is no longer
    ``is_connected`` (QUIT or closed). Counted at each start, where alone the count
    grows, so :attr:`most` is its highest. The remote's own count lags the relay's
    closes: it sees each a little later, much later on a loaded machine."""

    def __init__(self) -> None:
        self.clients: list[_CountedClient] = []
        self.most = 0

    def factory(self, host: str, port: int, **options: Any) -> BaseSMTPClient:
        client = _CountedClient(self, host, port, **options)
        self.clients.append(client)
        return client

    def opened(self) -> None:
        self.most = max(self.most, self.open())

    def open(self) -> int:
        return sum(1 for client in self.clients if client.opening or client.is_connected)


def test_idle_connections_do_not_count_against_concurrency_and_are_bounded(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    """As Postfix's (held by scache(8), not by a delivery agent), idle connections are
    not sessions at work: with ``concurrency`` 2 and room for 3 idle, eight messages to
    eight next hops have at least 4 connections open at once (3 idle while one
    works), never more than 2 + 3, as the relay holds them (:class:`_OpenClients`)."""
    names = [f"d{number}" for number in range(8)]
    zone = ZONE + "".join(
        f"{name}.example MX 10 mx.{name}.example\nmx.{name}.example A 127.0.0.1\n"
        for name in names
    )
    opened = _OpenClients()
    with remote() as server:
        relay = _relay(
            tmp_path,
            server.port,
            zone=zone,
            concurrency=2,
            retry_after=3600.0,
            connection_cache_time=KEPT,
            client_factory=opened.factory,
        )
        relay.worker.exchanger.connections = RelayConnections(idle_time_limit=KEPT, max_idle=3)
        for name in names:
            relay.enqueue([f"user@{name}.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert len(server.transactions) == server.connections == len(opened.clients) == 8
    assert 4 <= opened.most <= 2 + 3
    assert opened.open() == 0


def test_an_idle_connection_is_quit_when_its_time_runs_out(
    tmp_path: Path, no_resource_warnings: None
) -> None:
    """Before any stop: the QUIT comes, the remote sees the connection end, and the
    cache holds nothing (its reaper ended)."""
    with remote() as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0, connection_cache_time=0.2)
        relay.enqueue(["brendon@pqr.example"])
        connections = relay.worker.exchanger.connections
        assert connections is not None

        async def main() -> None:
            task = asyncio.get_running_loop().create_task(relay.worker.run())
            try:
                await asyncio.wait_for(_until(relay.empty), 10)
                await asyncio.wait_for(_until(lambda: _quits(server) == 1), 10)
                await asyncio.wait_for(_until(lambda: server.open_connections == 0), 10)
                assert len(connections) == 0
                await asyncio.wait_for(_until(lambda: connections._reaper is None), 10)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await relay.worker.aclose(1.0)

        asyncio.run(main())
    assert server.connections == 1


def test_the_stop_quits_every_idle_connection(tmp_path: Path, no_resource_warnings: None) -> None:
    zone = ZONE + "xyz.example MX 10 mx.xyz.example\nmx.xyz.example A 127.0.0.1\n"
    with remote() as server:
        relay = _relay(
            tmp_path, server.port, zone=zone, retry_after=3600.0, connection_cache_time=KEPT
        )
        relay.enqueue(["a@pqr.example"])
        relay.enqueue(["b@xyz.example"])
        connections = relay.worker.exchanger.connections
        assert connections is not None
        seen: list[int] = []

        def delivered_and_kept() -> bool:
            seen.append(len(connections))
            return relay.empty() and len(connections) == 2

        _run(relay, delivered_and_kept)
        assert len(connections) == 0
        _wait_closed(server)
    assert server.connections == _quits(server) == 2
    assert connections._reaper is None


# -- the cache alone ------------------------------------------------------------------


class _Client:
    """What the cache reads of a client: its last transaction's number, its record,
    the commands awaiting replies (none) and the extensions offered (none), QUIT,
    close."""

    def __init__(self) -> None:
        self.connection = self
        self.extensions = ServerExtensions()
        self.transaction_number = 0
        self.transaction = None
        self.pending = ()
        self.host = "mx.pqr.example"
        self.quits = 0
        self.closes = 0

    async def quit(self) -> None:
        self.quits += 1

    async def close(self) -> None:
        self.closes += 1


KEY = HopKey("mx.pqr.example", "192.0.2.1", 25, RelayTLS.MAY, False, "mx.pqr.example")


@pytest.mark.parametrize(
    "other",
    [
        HopKey("mx.xyz.example", "192.0.2.1", 25, RelayTLS.MAY, False, "mx.xyz.example"),
        HopKey("mx.pqr.example", "192.0.2.2", 25, RelayTLS.MAY, False, "mx.pqr.example"),
        HopKey("mx.pqr.example", "192.0.2.1", 587, RelayTLS.MAY, False, "mx.pqr.example"),
        HopKey("mx.pqr.example", "192.0.2.1", 25, RelayTLS.VERIFY, False, "mx.pqr.example"),
        HopKey("mx.pqr.example", "192.0.2.1", 25, RelayTLS.VERIFY, True, "mx.pqr.example"),
        HopKey("mx.pqr.example", "192.0.2.1", 25, RelayTLS.MAY, False, "192.0.2.1"),
    ],
)
def test_a_connection_is_given_only_to_its_exact_next_hop(other: HopKey) -> None:
    async def main() -> None:
        cache = RelayConnections(idle_time_limit=KEPT, clock=lambda: 0.0)
        kept = Idle(_Client(), 0.0, 0)  # type: ignore[arg-type]  # what the cache reads
        assert cache.keep(KEY, kept)
        assert cache.take(other) is None
        assert cache.take(KEY) is kept
        assert cache.take(KEY) is None
        await cache.aclose()

    asyncio.run(main())


def test_the_limits_of_reuse() -> None:
    """Postfix's count and time limits, and the bound on idle connections in all."""
    now = [0.0]

    async def main() -> None:
        cache = RelayConnections(
            idle_time_limit=KEPT,
            reuse_time_limit=300.0,
            reuse_count_limit=3,
            max_idle=2,
            clock=lambda: now[0],
        )
        used = Idle(_Client(), 0.0, 0)  # type: ignore[arg-type]
        assert cache.keep(KEY, used) and cache.take(KEY) is used
        assert cache.keep(KEY, used) and cache.take(KEY) is used
        assert not cache.keep(KEY, used)  # its third transaction was its last
        assert cache.keep(KEY, Idle(_Client(), 0.0, 0))  # type: ignore[arg-type]
        assert cache.keep(KEY, Idle(_Client(), 0.0, 0))  # type: ignore[arg-type]
        assert not cache.keep(KEY, Idle(_Client(), 0.0, 0))  # type: ignore[arg-type]
        assert len(cache) == 2
        now[0] = 301.0  # past the reuse time limit, though idle for less than KEPT
        assert cache.take(KEY) is None
        clients = [idle.client for waiting in cache._idle.values() for idle in waiting]
        await cache.aclose()
        assert [client.quits for client in clients] == [1, 1]  # type: ignore[attr-defined]
        assert len(cache) == 0
        assert not cache.keep(KEY, Idle(_Client(), 0.0, 0))  # type: ignore[arg-type]

    asyncio.run(main())


class _Session:
    """A client machine driven by hand through one transaction after another, all
    alike: the same sender, recipient and replies."""

    def __init__(self, ehlo_reply: bytes = b"250 mx.pqr.example\r\n") -> None:
        self.connection = ClientConnection("mail.abc.example")
        self._answer(b"220 mx.pqr.example\r\n")
        self.connection.send(Ehlo("mail.abc.example"))
        self._answer(ehlo_reply)
        self.host = "mx.pqr.example"

    async def quit(self) -> None:
        pass

    def _answer(self, reply: bytes) -> None:
        self.connection.receive_data(reply)
        while self.connection.next_event() not in (NEED_DATA, PAUSED):
            pass

    def transaction(self) -> None:
        conn = self.connection
        conn.send(Mail(parse_mailbox("john@abc.example")))
        self._answer(b"250 OK\r\n")
        conn.send(Rcpt(parse_mailbox("brendon@pqr.example")))
        self._answer(b"250 OK\r\n")
        conn.send(Data())
        self._answer(b"354 go on\r\n")
        conn.send(MessageData(b"body line\r\n"))
        conn.send(EndOfMessage())
        self._answer(b"250 OK\r\n")


def test_a_transaction_like_the_last_is_a_new_one() -> None:
    """Equal records, told apart by their number: the connection is kept after each,
    and only after one that happened since it was kept."""
    session = _Session()
    client: Any = session
    assert session.connection.transaction_number == 0
    assert not ended_cleanly(client, 0)
    session.transaction()
    assert ended_cleanly(client, 0)
    first = session.connection.transaction
    kept = session.connection.transaction_number
    assert not ended_cleanly(client, kept)  # nothing since it was kept
    session.transaction()
    assert session.connection.transaction == first
    assert session.connection.transaction_number == kept + 1
    assert ended_cleanly(client, kept)


def test_a_session_that_had_the_hops_mailmax_is_not_kept() -> None:
    """The cache reads MAILMAX from the session's last EHLO reply (RFC 9422 §4.1) and
    counts its MAIL commands answered: at the limit it keeps the connection no more."""

    async def main() -> None:
        cache = RelayConnections(idle_time_limit=KEPT, clock=lambda: 0.0)
        session = _Session(b"250-mx.pqr.example\r\n250 LIMITS MAILMAX=2\r\n")
        kept = Idle(session, 0.0, 0)  # type: ignore[arg-type]  # what the cache reads
        session.transaction()
        assert cache.keep(KEY, kept) and cache.take(KEY) is kept
        session.transaction()
        assert not cache.keep(KEY, kept)
        assert len(cache) == 0
        unlimited = _Session()
        for _ in range(3):
            unlimited.transaction()
        assert cache.keep(KEY, Idle(unlimited, 0.0, 0))  # type: ignore[arg-type]
        await cache.aclose()

    asyncio.run(main())


def test_a_connection_past_its_reuse_time_is_quit_though_not_idle_long() -> None:
    """It can never be taken again: it must not stay open, filling the cache."""

    async def main() -> None:
        cache = RelayConnections(idle_time_limit=KEPT, reuse_time_limit=0.2, max_idle=2)
        now = cache.clock()
        clients = [_Client(), _Client()]
        for client in clients:
            assert cache.keep(KEY, Idle(client, now, 0))  # type: ignore[arg-type]
        await asyncio.wait_for(_until(lambda: all(c.quits == 1 for c in clients)), 10)
        assert len(cache) == 0
        assert cache.keep(KEY, Idle(_Client(), cache.clock(), 0))  # type: ignore[arg-type]
        await cache.aclose()

    asyncio.run(main())


def test_a_connection_kept_later_that_expires_sooner_wakes_the_reaper() -> None:
    """The reaper sleeps until the soonest expiry it saw; a connection kept meanwhile,
    opened long before and so past its reuse time first, is QUIT at its own expiry,
    while the first still waits, not when the reaper's sleep would have ended."""

    async def main() -> None:
        cache = RelayConnections(idle_time_limit=KEPT, reuse_time_limit=1.0)
        first, later = _Client(), _Client()
        assert cache.keep(KEY, Idle(first, cache.clock(), 0))  # type: ignore[arg-type]
        await asyncio.sleep(0)  # the reaper sleeps, until the first's reuse time ends
        other = HopKey("mx.xyz.example", "192.0.2.2", 25, RelayTLS.MAY, False, "mx.xyz.example")
        opened = cache.clock() - 0.9  # past its reuse time in a tenth of a second
        assert cache.keep(other, Idle(later, opened, 0))  # type: ignore[arg-type]
        await asyncio.wait_for(_until(lambda: later.quits == 1), 10)
        assert first.quits == 0 and len(cache) == 1
        await cache.aclose()
        assert first.quits == 1

    asyncio.run(main())


class _Unanswered(_Client):
    """A client whose QUIT never ends: an exchanger that never answers it."""

    def __init__(self) -> None:
        super().__init__()
        self.quitting = asyncio.Event()

    async def quit(self) -> None:
        self.quitting.set()
        await asyncio.Event().wait()


def test_a_quit_never_answered_holds_no_other_connection_open() -> None:
    async def main() -> None:
        cache = RelayConnections(idle_time_limit=0.05)
        silent, other = _Unanswered(), _Client()
        assert cache.keep(KEY, Idle(silent, cache.clock(), 0))  # type: ignore[arg-type]
        await asyncio.wait_for(silent.quitting.wait(), 10)
        assert cache.keep(KEY, Idle(other, cache.clock(), 0))  # type: ignore[arg-type]
        await asyncio.wait_for(_until(lambda: other.quits == 1), 10)
        await cache.aclose(0.0)  # the silent one's QUIT is cut off, its connection closed
        assert silent.closes == 1

    asyncio.run(main())


def test_a_connection_whose_quit_is_under_way_counts_against_the_bound() -> None:
    """An expired connection is open until its QUIT ends (up to the QUIT timeout, for
    an exchanger slow to answer it): the cache holds at most ``max_idle`` connections
    open, idle or being QUIT, so that the relay's stay within ``concurrency`` +
    ``max_idle``."""

    async def main() -> None:
        cache = RelayConnections(idle_time_limit=0.05, max_idle=2)
        silent = _Unanswered()
        assert cache.keep(KEY, Idle(silent, cache.clock(), 0))  # type: ignore[arg-type]
        await asyncio.wait_for(silent.quitting.wait(), 10)
        assert len(cache) == 0  # no longer idle, but still open
        assert cache.keep(KEY, Idle(_Client(), cache.clock(), 0))  # type: ignore[arg-type]
        assert not cache.keep(KEY, Idle(_Client(), cache.clock(), 0))  # type: ignore[arg-type]
        await cache.aclose(0.0)
        assert silent.closes == 1

    asyncio.run(main())


def test_a_reply_unasked_for_on_a_kept_connection_found_it_gone() -> None:
    """Read before the new ``MAIL``'s reply (the last transaction's number unchanged),
    or after it, the replies out of step: the connection is given up, the message goes
    over a new one; unless the end of its content went with no readable reply (the
    error's ``result``): the hop may have taken it."""
    client = _Client()
    client.transaction_number = 3
    unasked = SMTPProtocolError("unsolicited reply: 250 2.0.0 queued as A (again)")
    assert gone_before_mail(unasked, client, 3)  # type: ignore[arg-type]
    client.transaction_number = 4  # the new MAIL answered by the RSET's 250
    out_of_step = SMTPProtocolError("250 is not a reply to DATA")
    assert gone_before_mail(out_of_step, client, 3)  # type: ignore[arg-type]
    garbled_end = SMTPProtocolError("a reply that cannot be read")
    session = _Session()
    session.transaction()
    garbled_end.result = session.connection.transaction
    assert not gone_before_mail(garbled_end, client, 3)  # type: ignore[arg-type]


def test_a_split_message_found_the_kept_connection_gone_only_before_anything_was_taken() -> None:
    """The LIMITS batches' merged result (RFC 9422 §4.2) on the error, as the client
    builds it: the first batch's ``MAIL`` answered 421 (an :class:`SMTPConnectionError`,
    its recipients unanswered), the next batch's never sent: gone, as a message in one
    transaction is. A recipient's ``RCPT`` answered, a batch that ended with its
    ``MAIL`` refused (its recipients recorded bounced), an end of content sent, or a
    second ``MAIL`` answered: the message may have been taken, so never."""
    sender = parse_mailbox("john@abc.example")
    b, c = parse_mailbox("b@pqr.example"), parse_mailbox("c@pqr.example")
    closing = Reply(421, "closing now", "4.3.2")
    client = _Client()
    client.transaction_number = 4  # the first MAIL of the message answered, since 3
    client.transaction = TransactionResult(  # type: ignore[assignment]
        sender, closing, (), None, (), complete=False
    )

    def lost(*recipients: RecipientResult) -> SMTPConnectionError:
        exc = SMTPConnectionError("the server closed the connection")
        exc.result = TransactionResult(sender, None, recipients, None, (), complete=True)
        return exc

    first_mail_closed = lost(RecipientResult(b), RecipientResult(c))
    assert gone_before_mail(first_mail_closed, client, 3)  # type: ignore[arg-type]
    accepted = lost(RecipientResult(b, Reply(250, "ok")), RecipientResult(c))
    assert not gone_before_mail(accepted, client, 3)  # type: ignore[arg-type]
    refused = Reply(550, "sender refused", "5.7.1")
    client.transaction = TransactionResult(  # type: ignore[assignment]
        sender, refused, (), None, (), complete=False
    )
    batch_refused = lost(RecipientResult(b, refused, mail_refused=True), RecipientResult(c))
    assert not gone_before_mail(batch_refused, client, 3)  # type: ignore[arg-type]
    garbled = SMTPProtocolError("malformed reply line")
    garbled.result = batch_refused.result
    assert not gone_before_mail(garbled, client, 3)  # type: ignore[arg-type]
    client.transaction_number = 5  # a second MAIL answered: a batch went before
    assert not gone_before_mail(first_mail_closed, client, 3)  # type: ignore[arg-type]
    client.transaction_number = 4
    client.pending = (EndOfMessage(),)  # type: ignore[assignment]  # an end awaits its reply
    client.transaction = TransactionResult(  # type: ignore[assignment]
        sender, Reply(250, "ok"), (RecipientResult(b, Reply(250, "ok")),), None, (), False
    )
    assert not gone_before_mail(first_mail_closed, client, 3)  # type: ignore[arg-type]


# -- the option -----------------------------------------------------------------------


def test_serve_sets_the_idle_time_and_zero_turns_the_cache_off(tmp_path: Path) -> None:
    from smtpcore.server.cli import build_parser, config_from_args
    from smtpcore.server.mailserver import MailServer

    def config(*options: str) -> ServerConfig:
        argv = ["serve", "--data-dir", str(tmp_path), *options]
        return config_from_args(build_parser().parse_args(argv))

    assert config().connection_cache_time == IDLE_TIME_LIMIT == 2.0
    assert config("--connection-cache-time", "30s").connection_cache_time == 30.0
    off = config("--connection-cache-time", "0")
    assert off.connection_cache_time == 0.0
    assert MailServer(off).worker.exchanger.connections is None
    kept = MailServer(config("--connection-cache-time", "5s")).worker.exchanger.connections
    assert kept is not None and kept.idle_time_limit == 5.0
    with pytest.raises(ConfigError, match="--connection-cache-time"):
        ServerConfig(connection_cache_time=-1.0)
    assert relay_connections(0.0) is None
    with pytest.raises(ValueError, match="connection_cache_time"):
        relay_connections(-1.0)
    assert config("--connection-cache-time", "60s").connection_cache_time == MAX_IDLE_TIME_LIMIT
    with pytest.raises(ConfigError, match="--connection-cache-time must be at most 60s"):
        ServerConfig(connection_cache_time=3600.0)
    with pytest.raises(ValueError, match="at most 60 seconds"):
        relay_connections(3600.0)
    with pytest.raises(ConfigError, match="--connection-cache-time"):
        ServerConfig(connection_cache_time="2s")  # type: ignore[arg-type]  # not a number
