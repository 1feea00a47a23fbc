"""The relay as an operator trusts it (issue 13): permanent refusals bounce at once with
the remote's words, temporary ones back off with jitter, TLS policy, the envelope's
parameters kept through the queue, a delay notice, the resolver check."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email
import email.message
import email.policy
import itertools
import logging
import random
import socket
import ssl
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay_remote import ScriptedRemote, remote
from slow_writes import SlowWrites
from smtpcore import NEED_DATA, PAUSED
from smtpcore._driver._smtp_unanswered import end_unanswered
from smtpcore.address import parse_mailbox
from smtpcore.asyncio import SMTPConnectionError, Timeouts
from smtpcore.routing import MXRecord, RemoteDelivery, Resolver, Router, StaticResolver
from smtpcore.server import delivery
from smtpcore.server._exchanger_recording import _fates
from smtpcore.server.config import ConfigError, ServerConfig
from smtpcore.server.cutshort import CUT_IN_END_OF_DATA
from smtpcore.server.delivery import MAX_BACKOFF, Applied, DeliveryWorker, backoff
from smtpcore.server.exchanger import (
    MAX_KEPT_TEXT,
    Outcome,
    default_client,
    kept_text,
    reply_text,
    transcribe,
    while_sending_end_of_data,
)
from smtpcore.server.internal import InternalAddresses
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import Maildir
from smtpcore.server.queue import Queue, QueuedRecipient, QueueEntry, RecipientStatus
from smtpcore.server.queuectl import QueueCommand
from smtpcore.server.relay_tls import RelayTLS
from smtpcore.server.resolvers import SystemResolver, check_remote_delivery
from smtpcore.smtp import Bdat, ClientConnection, Ehlo, Mail, MessageData, Rcpt, Reply
from smtpcore.testing import strategies as sst

ZONE = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
MESSAGE = b"From: john@abc.example\r\nSubject: hello\r\n\r\nbody line\r\n"


@dataclass
class Relay:
    queue: Queue
    worker: DeliveryWorker
    mailboxes: LocalMailboxes

    def reports(self) -> list[bytes]:
        box = Maildir(self.mailboxes.config.mailbox_path("john@abc.example"))
        return [path.read_bytes() for path in box.messages()]

    def entries(self) -> list[QueueEntry]:
        """The queued messages now; one the relay finishes while they are read is gone."""
        found = []
        for path in (self.queue.directory / "envelopes").iterdir():
            try:
                found.append(self.queue.load(path.name))
            except FileNotFoundError:
                continue
        return found

    def empty(self) -> bool:
        return not self.entries()

    def enqueue(
        self,
        recipients: list[str | QueuedRecipient],
        *,
        content: bytes = MESSAGE,
        params: tuple[tuple[str, str | None], ...] = (),
        sender: str = "john@abc.example",
    ) -> QueueEntry:
        spool = self.queue.spool()
        spool.write(content)
        entry = self.queue.prepare(spool, sender, recipients, params=params).commit()
        self.worker.schedule(entry)
        return entry


def _relay(
    tmp_path: Path,
    port: int,
    *,
    clock: Callable[[], float] | None = None,
    zone: str = ZONE,
    smart_host: tuple[str, int] | None = None,
    **options: object,
) -> Relay:
    config = ServerConfig(
        domains=("abc.example",),
        users={"john@abc.example": "pw"},
        data_dir=tmp_path,
        hostname="mx.abc.example",
    )
    queue = Queue(config.queue_dir) if clock is None else Queue(config.queue_dir, clock=clock)
    queue.open()
    mailboxes = LocalMailboxes(config)
    mailboxes.create_all()
    if clock is not None:  # a test that moves time moves both clocks
        options["clock"] = clock
        options.setdefault("monotonic", clock)
    options.setdefault("retry_after", 0.05)
    options.setdefault("internal", InternalAddresses(allowed=True))  # remotes on loopback
    worker = DeliveryWorker(
        queue,
        router=Router(
            ["abc.example"], hostnames=["mx.abc.example"], port=port, smart_host=smart_host
        ),
        resolver=StaticResolver.from_zone_text(zone),
        mailboxes=mailboxes,
        hostname="mx.abc.example",
        rng=random.Random(7),
        **options,  # type: ignore[arg-type]  # keyword options of the worker
    )
    return Relay(queue, worker, mailboxes)


async def _until(done: Callable[[], bool]) -> None:
    while not done():
        await asyncio.sleep(0.02)


def _run(relay: Relay, done: Callable[[], bool], timeout: float = 10.0) -> None:
    async def main() -> None:
        task = asyncio.get_running_loop().create_task(relay.worker.run())
        try:
            await asyncio.wait_for(_until(done), timeout)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await relay.worker.aclose(1.0)

    asyncio.run(main())


def _wait_closed(server: ScriptedRemote) -> None:
    """Every connection the relay opened, it closed (the remote saw its side end)."""
    asyncio.run(asyncio.wait_for(_until(lambda: server.open_connections == 0), 5))


def _lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


# -- permanent refusals bounce at once ------------------------------------------------------


def test_a_message_over_the_remote_size_bounces_at_once_with_552_5_3_4(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(size=20) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
        assert server.connections == 1 and server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.3.4" in raw
    assert b"exceeds the server's limit of 20 octets" in raw
    assert _lines(caplog, "status=bounced (552 5.3.4 message size")
    assert not _lines(caplog, "Traceback") and not _lines(caplog, "delivery failed")


def test_a_utf8_recipient_to_a_server_without_smtputf8_bounces_with_553_5_6_7(
    tmp_path: Path,
) -> None:
    with remote(smtputf8=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["jörg@pqr.example"], params=(("SMTPUTF8", None),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
        assert server.mail_lines == []
    (raw,) = relay.reports()
    text = b" ".join(raw.split())
    assert b"Status: 5.6.7" in raw and b"does not offer SMTPUTF8" in text


def test_a_utf8_domain_sent_in_a_labels_is_relayed_once_with_its_dsn_parameters(
    tmp_path: Path,
) -> None:
    """To an exchanger without SMTPUTF8 the client sends ``bob@bücher.example`` as
    ``bob@xn--bcher-kva.example`` and names it so in its result: the relay knows it as
    the address it queued, so the 250 settles it, and its NOTIFY goes with it (it
    waited for a reply it never knew, and was sent again every round)."""
    zone = "xn--bcher-kva.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
    with remote(smtputf8=False, dsn=True) as server:
        relay = _relay(tmp_path, server.port, zone=zone)
        relay.enqueue(
            [QueuedRecipient("bob@bücher.example", notify="FAILURE,DELAY")],
            params=(("SMTPUTF8", None),),
        )
        _run(relay, relay.empty)
        _wait_closed(server)
    [transaction] = server.transactions
    assert transaction.rcpt_lines == [
        b"RCPT TO:<bob@xn--bcher-kva.example> NOTIFY=FAILURE,DELAY\r\n"
    ]


def test_550_bounces_at_once_and_452_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    replies = {
        "gone@pqr.example": b"550 5.1.1 <gone@pqr.example>: user unknown",
        "full@pqr.example": b"452 4.2.2 mailbox full",
    }
    with remote(rcpt_replies=replies) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["gone@pqr.example", "full@pqr.example", "ok@pqr.example"])
        _run(relay, lambda: bool(relay.reports()) and len(_lines(caplog, "full@")) >= 2)
        _wait_closed(server)
        # The bounce for the 550 came after the first round, with the remote's words.
        (raw,) = relay.reports()
        assert b"Diagnostic-Code: smtp; 550 5.1.1 <gone@pqr.example>: user unknown" in raw
        assert b"full@pqr.example" not in raw.split(b"delivery-status")[1].split(b"\n--")[0]
        (entry,) = relay.entries()
        assert [r.address for r in entry.pending] == ["full@pqr.example"]
        assert entry.pending[0].reply == "452 4.2.2 mailbox full"
        # The remote's mailbox empties: the retry delivers.
        server.rcpt_replies.pop("full@pqr.example")
        _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions][-1] == ["full@pqr.example"]


MULTI_LINE_REFUSAL: Final = (
    b"550-5.1.1 The account you tried to reach does not exist. Please try\r\n"
    b"550-5.1.1 double-checking the address for typos or\r\n"
    b"550 5.1.1 unnecessary spaces."
)


def test_a_multi_line_refusal_keeps_each_line_s_code_in_the_report_and_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 3461 §9.2: a multi-line reply is transcribed line by line, ``550-`` before
    each but the last, a fold before each line after the first; unfolded (and in the
    log, the queue and the text part) its lines follow one another as Postfix writes
    them. Joined behind one code, they read as one line with stray statuses in it."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(rcpt_replies={"gone@pqr.example": MULTI_LINE_REFUSAL}) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["gone@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    transcription = (
        "550-5.1.1 The account you tried to reach does not exist. Please try "
        "550-5.1.1 double-checking the address for typos or "
        "550 5.1.1 unnecessary spaces."
    )
    (raw,) = relay.reports()  # as the mailbox keeps it, lines ended by LF
    status = raw.split(b"Delivery report")[1].split(b"\n--")[0].decode()
    assert (
        "Diagnostic-Code: smtp; 550-5.1.1 The account you tried to reach does not exist."
        " Please try\n 550-5.1.1 double-checking the address for typos or\n"
        " 550 5.1.1 unnecessary spaces.\n"
    ) in status
    assert f"Diagnostic-Code: smtp; {transcription}\n" in status.replace("\n ", " ")
    notification = raw.split(b"Notification")[1].split(b"\n--")[0].decode()
    assert transcription in " ".join(notification.split())
    assert _lines(caplog, f"status=bounced ({transcription})")


_LINES_THAT_LOOK_LIKE_MORE: Final = (
    b"550-5.1.1 please call 550 people 550-now\r\n"  # text that says a code
    b"550-5.1.1 a\t550-b\r\n"  # a TAB a report writes as a space
    b"550 "  # a last line that is the code alone
)


def test_a_diagnostic_folds_at_the_reply_s_own_lines_and_nowhere_else(
    tmp_path: Path,
) -> None:
    """The fold lines are the reply's lines, as the relay read them: a line whose
    text says `` 550 `` or holds a TAB is not cut there, and a last line of the code
    alone is a line too. Guessed from the one line the text is kept as, they were not."""
    with remote(rcpt_replies={"gone@pqr.example": _LINES_THAT_LOOK_LIKE_MORE}) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["gone@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    (raw,) = relay.reports()  # as the mailbox keeps it, lines ended by LF
    assert (
        b"Diagnostic-Code: smtp; 550-5.1.1 please call 550 people 550-now\n"
        b" 550-5.1.1 a 550-b\n"
        b" 550\n"
    ) in raw


def test_a_queued_reply_keeps_its_lines_for_a_later_report(tmp_path: Path) -> None:
    """A delay notice is made from the queue file, where the reply is one line: the
    places its lines meet go with it, so the notice folds at them too."""
    now = [1000.0]
    refusal = b"450-4.2.1 busy, 450 of them\r\n450 4.2.1 try later"
    with remote(rcpt_replies={"brendon@pqr.example": refusal}) as server:
        relay = _relay(tmp_path, server.port, clock=lambda: now[0], delay_warning=600.0)
        entry = relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1)
        (queued,) = relay.queue.load(entry.id).recipients
        assert queued.reply == "450-4.2.1 busy, 450 of them 450 4.2.1 try later"
        assert queued.reply_breaks == (len("450-4.2.1 busy, 450 of them"),)
        now[0] += 700
        relay.worker.schedule(relay.queue.load(entry.id))
        _run(relay, lambda: bool(relay.reports()))
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Action: delayed" in raw
    assert b"Diagnostic-Code: smtp; 450-4.2.1 busy, 450 of them\n 450 4.2.1 try later\n" in raw


@pytest.mark.parametrize(
    ("reply", "breaks"),
    [
        (Reply(550, ["5.1.1 first", "5.1.1 last"]), (len("550-5.1.1 first"),)),
        (Reply(550, ["a 550 b", "", "c"]), (len("550-a 550 b"), len("550-a 550 b 550-"))),
        (Reply(550, "one"), ()),
        (Reply(550, ["x" * 3000, "y"]), ()),  # the second line is past the cut
    ],
)
def test_a_transcription_says_where_the_reply_s_lines_meet(
    reply: Reply, breaks: tuple[int, ...]
) -> None:
    text, found = transcribe(reply)
    assert text == reply_text(reply) and found == breaks
    assert all(text[at] == " " for at in found)


@pytest.mark.parametrize(
    "breaks",
    [(4,), (9, 3), (3, 3), (-1,), (0,), (17,), (99,), (5, 11) * 10],
    ids=[
        "not-a-space",
        "backwards",
        "twice",
        "negative",
        "first",
        "at-the-end",
        "past-the-end",
        "more-than-the-text",  # a damaged file's list, read no further than the text
    ],
)
def test_breaks_a_queue_file_should_not_hold_leave_the_diagnostic_in_one_line(
    breaks: tuple[int, ...],
) -> None:
    from smtpcore.server.bounce import ReportedRecipient

    said = "550-a 550-b 550 c"  # breaks (5, 11)
    failed = [ReportedRecipient("b@pqr.example", "5.1.1", said, "mx.pqr.example", True, "failed")]
    assert b"Diagnostic-Code: smtp; 550-a 550-b 550 c\r\n" in _report(failed=failed)
    failed = [replace(failed[0], diagnostic_breaks=breaks)]
    assert b"Diagnostic-Code: smtp; 550-a 550-b 550 c\r\n" in _report(failed=failed)
    failed = [replace(failed[0], diagnostic_breaks=(5, 11))]
    raw = _report(failed=failed)
    assert b"Diagnostic-Code: smtp; 550-a\r\n 550-b\r\n 550 c\r\n" in raw


def test_the_diagnostic_field_takes_pieces_not_one_string() -> None:
    """A ``str`` is a ``Sequence[str]`` to the type checker: given one, the field was
    folded before every character."""
    from smtpcore.server.reportfields import diagnostic_field

    assert diagnostic_field("smtp", ["550-a", "550 b"]) == [
        "Diagnostic-Code: smtp; 550-a",
        " 550 b",
    ]
    with pytest.raises(TypeError, match="pieces"):
        diagnostic_field("smtp", "550 b")


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        (Reply(550, ["5.1.1 first", "5.1.1 last"]), "550-5.1.1 first 550 5.1.1 last"),
        (Reply(550, ["first", "last"], "5.1.1"), "550-5.1.1 first 550 5.1.1 last"),
        (Reply(451, ["", "later"]), "451- 451 later"),
        (Reply(250, ""), "250"),
        (Reply(550, "5.1.1 gone"), "550 5.1.1 gone"),
    ],
)
def test_a_reply_is_kept_line_by_line_as_it_came(reply: Reply, text: str) -> None:
    assert reply_text(reply) == text


def test_a_smart_host_given_as_an_address_is_named_as_a_domain_literal(
    tmp_path: Path,
) -> None:
    """RFC 3461 §9.3, RFC 3464 §2.3.5: a ``dns`` mta-name is a domain name, or an
    address as a domain literal; a smart host given as ``127.0.0.1`` was written
    ``Remote-MTA: dns; 127.0.0.1``, which no parser of a domain name takes."""
    with remote(rcpt_replies={"gone@pqr.example": b"550 5.1.1 gone"}) as server:
        relay = _relay(tmp_path, server.port, smart_host=("127.0.0.1", server.port))
        relay.enqueue(["gone@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Remote-MTA: dns; [127.0.0.1]\n" in raw
    assert b"host [127.0.0.1] said: 550 5.1.1 gone" in raw


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("192.0.2.1", "[192.0.2.1]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
        ("fe80::1%eth0", "[IPv6:fe80::1]"),  # the scope is our interface's, no address's
        ("mx.pqr.example", "mx.pqr.example"),
    ],
)
def test_an_exchanger_is_named_in_a_report_as_a_dns_mta_name(host: str, name: str) -> None:
    from smtpcore.server.bounce import ReportedRecipient

    failed = [ReportedRecipient("b@pqr.example", "5.1.1", "550 5.1.1 gone", host, True)]
    raw = _report(failed=failed)
    assert f"Remote-MTA: dns; {name}\r\n".encode() in raw
    assert f"host {name} said".encode() in raw


TWO_MX = (
    "pqr.example MX 10 mx.pqr.example\n"
    "pqr.example MX 20 mx2.pqr.example\n"
    "mx.pqr.example A 127.0.0.1\n"
    "mx2.pqr.example A 127.0.0.2\n"
)


@pytest.mark.parametrize("where", ["rcpt", "end of data"])
def test_a_4xx_for_a_recipient_sends_it_to_the_next_exchanger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    """A recipient the first exchanger defers goes to the next one in the same round
    (as Postfix keeps soft-failed recipients for the next server); the others stay
    delivered where they were."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    first_options: dict[str, object] = (
        {"rcpt_replies": {"soft@pqr.example": b"451 4.3.0 try later"}}
        if where == "rcpt"
        else {"data_reply": b"451 4.3.0 try later"}
    )
    with remote(**first_options) as first, remote(host="127.0.0.2", port=first.port) as second:
        relay = _relay(tmp_path, first.port, zone=TWO_MX, retry_after=300)
        relay.enqueue(["soft@pqr.example", "ok@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(first)
        _wait_closed(second)
    (at_first,) = first.transactions
    (at_second,) = second.transactions
    if where == "rcpt":
        assert at_first.recipients == ["ok@pqr.example"]
        assert at_second.recipients == ["soft@pqr.example"]
    else:  # the content was refused for both: both go on
        assert at_second.recipients == ["soft@pqr.example", "ok@pqr.example"]
    assert _lines(caplog, "deferred") and relay.reports() == []


REFUSES_HELLO = {b"EHLO": b"502 5.5.1 command unrecognized", b"HELO": b"550 5.7.1 not welcome"}


def test_a_5xx_to_ehlo_and_helo_bounces_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 5321 §4.2.1: a 5xx is permanent, to HELO as to RCPT (Postfix's smtp_helo()
    bounces it): the sender hears at once, and the exchanger is not asked again
    (it was, every round until ``max_queue_age``, ``dsn=5.7.1, status=deferred``)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(hello_replies=REFUSES_HELLO) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.connections == 1 and server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.7.1" in raw and b"Action: failed" in raw
    assert b"Diagnostic-Code: smtp; 550 5.7.1 not welcome" in raw
    assert _lines(caplog, "status=bounced (550 5.7.1") and not _lines(caplog, "deferred")


def test_an_exchanger_refusing_helo_for_good_is_followed_by_the_next(tmp_path: Path) -> None:
    """RFC 5321 §5.1: each exchanger is tried; only the last one's refusal is final."""
    with (
        remote(hello_replies=REFUSES_HELLO) as first,
        remote(host="127.0.0.2", port=first.port) as second,
    ):
        relay = _relay(tmp_path, first.port, zone=TWO_MX)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(first)
        _wait_closed(second)
    assert first.mail_lines == [] and relay.reports() == []
    assert [t.recipients for t in second.transactions] == [["brendon@pqr.example"]]


WAITS_AT_THE_FIRST: dict[str, dict[str, object]] = {
    "421 to EHLO": {"hello_replies": {b"EHLO": b"421 4.3.2 busy, try later"}},
    "421 greeting": {"greeting": b"421 4.3.2 busy"},
    "451 to RCPT": {"rcpt_replies": {"brendon@pqr.example": b"451 4.3.0 mailbox busy"}},
}


@pytest.mark.parametrize("first_options", WAITS_AT_THE_FIRST.values(), ids=WAITS_AT_THE_FIRST)
def test_a_hello_refusal_from_the_last_exchanger_waits_where_an_earlier_one_deferred(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first_options: dict[str, object]
) -> None:
    """RFC 5321 §5.1: the mail waits while some exchanger may still take it. MX 10
    said "try later", so MX 20's 5xx to EHLO and HELO does not bounce it (it did,
    with MX 20's 550): it is deferred with MX 10's temporary reply."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with (
        remote(**first_options) as first,
        remote(host="127.0.0.2", port=first.port, hello_replies=REFUSES_HELLO) as second,
    ):
        relay = _relay(tmp_path, first.port, zone=TWO_MX, retry_after=300)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=")))
        _wait_closed(first)
        _wait_closed(second)
    assert first.connections == 1 and second.connections == 1
    assert relay.reports() == [] and len(relay.entries()) == 1
    (line,) = _lines(caplog, "status=")
    assert "dsn=4.3." in line and "status=deferred" in line


def test_a_hello_refusal_from_the_last_exchanger_waits_where_an_earlier_was_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MX 10 refuses the connection (nothing listens on its address): it may be back
    later, so MX 20's 5xx to EHLO and HELO does not bounce the mail (RFC 5321 §5.1)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(host="127.0.0.2", hello_replies=REFUSES_HELLO) as second:
        relay = _relay(tmp_path, second.port, zone=TWO_MX, retry_after=300)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=")))
        _wait_closed(second)
    assert second.connections == 1
    assert relay.reports() == [] and len(relay.entries()) == 1
    (line,) = _lines(caplog, "status=")
    assert "dsn=4.4.1" in line and "status=deferred" in line


def test_a_hello_refusal_from_every_exchanger_bounces(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only when every exchanger tried refused this client for good does the mail
    bounce (RFC 5321 §4.2.1), once each was asked (§5.1)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with (
        remote(hello_replies=REFUSES_HELLO) as first,
        remote(host="127.0.0.2", port=first.port, hello_replies=REFUSES_HELLO) as second,
    ):
        relay = _relay(tmp_path, first.port, zone=TWO_MX)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(first)
        _wait_closed(second)
    assert first.connections == 1 and second.connections == 1
    (raw,) = relay.reports()
    assert b"Status: 5.7.1" in raw and b"Action: failed" in raw
    assert _lines(caplog, "status=bounced (550 5.7.1") and not _lines(caplog, "deferred")


def test_a_hello_refusal_and_an_unmet_requiretls_bounce_with_5_7_30(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A REQUIRETLS message: one exchanger refuses HELO for good, the other offers no
    STARTTLS. Neither can ever take it, so it goes back at once, as RFC 8689 §5 says
    of a message no exchanger qualifies for (5.7.30), rather than wait for expiry."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with (
        remote(hello_replies=REFUSES_HELLO) as first,
        remote(host="127.0.0.2", port=first.port) as second,
    ):
        relay = _relay(tmp_path, first.port, zone=TWO_MX)
        relay.enqueue(["brendon@pqr.example"], params=(("REQUIRETLS", None),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(first)
        _wait_closed(second)
    (raw,) = relay.reports()
    assert b"Status: 5.7.30" in raw and b"Action: failed" in raw
    assert _lines(caplog, "status=bounced") and not _lines(caplog, "deferred")


EQUAL_MX = (
    "pqr.example MX 10 mx.pqr.example\n"
    "pqr.example MX 10 mx2.pqr.example\n"
    "mx.pqr.example A 127.0.0.1\n"
    "mx2.pqr.example A 127.0.0.2\n"
)


@pytest.mark.parametrize("tried_last", ["mx.pqr.example", "mx2.pqr.example"])
def test_equal_exchangers_one_busy_one_refusing_hello_wait_in_either_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tried_last: str
) -> None:
    """Of two exchangers of one preference, one busy (421) and one refusing HELO for
    good: whichever ``FailedExchangers`` puts last (a host that failed recently goes
    to the back of its level), the mail waits for the busy one (RFC 5321 §5.1)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with (
        remote(greeting=b"421 4.3.2 busy") as busy,
        remote(host="127.0.0.2", port=busy.port, hello_replies=REFUSES_HELLO) as refusing,
    ):
        relay = _relay(tmp_path, busy.port, zone=EQUAL_MX, retry_after=300)
        relay.worker.failures.mark_bad(tried_last)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=")))
        _wait_closed(busy)
        _wait_closed(refusing)
    assert busy.connections == 1 and refusing.connections == 1
    assert relay.reports() == [] and len(relay.entries()) == 1
    (line,) = _lines(caplog, "status=")
    assert "dsn=4.3.2" in line and "status=deferred" in line


@pytest.mark.parametrize(
    "options",
    [
        {"hello_replies": {b"EHLO": b"502 5.5.1 no", b"HELO": b"450 4.7.1 try later"}},
        {"greeting": b"554 5.7.1 no SMTP service here"},
    ],
    ids=["4xx to HELO", "5xx greeting"],
)
def test_a_4xx_to_helo_or_a_5xx_greeting_defers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, options: dict[str, object]
) -> None:
    """A 4xx to HELO waits (RFC 5321 §4.2.1); so does a 5xx greeting, with its status
    class made 4, as Postfix's default ``smtp_skip_5xx_greeting`` has it."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(**options) as server:
        relay = _relay(tmp_path, server.port, retry_after=300)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(server)
    assert relay.reports() == [] and len(relay.entries()) == 1
    assert _lines(caplog, "dsn=4.7.1, status=deferred")


EIGHT_BIT_MESSAGE = (
    b"From: john@abc.example\r\nSubject: hello\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"\r\ncaf\xc3\xa9\r\n"
)


@pytest.mark.parametrize(
    "ehlo",
    [
        b"550 5.5.1 EHLO not supported here",
        b"554 5.7.1 ESMTP not available",
        b"503 5.5.1 bad sequence",
        b"451 4.3.0 try HELO",
    ],
)
def test_any_refusal_of_ehlo_but_421_is_followed_by_helo_and_the_mail_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ehlo: bytes
) -> None:
    """RFC 5321 §4.1.4 lists 550 among EHLO's refusals; Postfix's ``smtp_helo()`` says
    HELO after any refusal of EHLO but 421. The relay bounced the mail at once after
    a 550, 554 or 503 (deferred it after a 451) without trying HELO, and closed
    without QUIT. The HELO session has no extension, though its reply lists some: the
    8-bit body goes converted to 7 bits, MAIL carries no BODY or SIZE."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(hello_replies={b"EHLO": ehlo}, size=100_000) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=EIGHT_BIT_MESSAGE)
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.verbs == [b"EHLO", b"HELO", b"MAIL", b"RCPT", b"DATA", b"QUIT"]
    (transaction,) = server.transactions
    assert transaction.mail_line == b"MAIL FROM:<john@abc.example>\r\n"
    assert transaction.content.isascii() and b"caf" in transaction.content
    assert _lines(caplog, "status=sent") and relay.reports() == []


def test_a_4xx_to_the_helo_after_a_refused_ehlo_defers_after_quit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused for good only when HELO gets a 5xx too (RFC 5321 §4.2.1): a 4xx to HELO
    waits, whatever EHLO got; the session ends with QUIT (§4.1.1.10)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    replies = {b"EHLO": b"550 5.5.1 no EHLO", b"HELO": b"451 4.3.0 not now"}
    with remote(hello_replies=replies) as server:
        relay = _relay(tmp_path, server.port, retry_after=300)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(server)
    assert server.verbs == [b"EHLO", b"HELO", b"QUIT"]
    assert relay.reports() == [] and len(relay.entries()) == 1
    (line,) = _lines(caplog, "status=deferred")
    assert "dsn=4.3.0" in line and "451 4.3.0 not now" in line


def test_a_helo_session_cannot_meet_a_tls_requirement(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under ``encrypt``, an exchanger that refuses EHLO and takes HELO offers no
    STARTTLS, though its HELO reply lists it: the mail waits (4.7.4, as for any
    exchanger without STARTTLS) and no mail command, nor STARTTLS, goes in clear."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(hello_replies={b"EHLO": b"550 5.5.1 no EHLO"}, starttls="refuse") as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.ENCRYPT, retry_after=300)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(server)
    assert server.verbs[:2] == [b"EHLO", b"HELO"] and b"STAR" not in server.verbs
    assert server.mail_lines == []
    (line,) = _lines(caplog, "status=deferred")
    assert "dsn=4.7.4" in line and "not offered" in line


@pytest.mark.parametrize(
    ("ehlo", "status"),
    [
        (b"554 5.7.1 your IP is on the blocklist", "bounced"),
        (b"450 4.7.1 greylisted, come back later", "deferred"),
    ],
)
def test_an_ehlo_refusal_then_a_close_keeps_the_exchangers_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, ehlo: bytes, status: str
) -> None:
    """An exchanger that refuses EHLO and closes (a blocklist's 554) said its last
    word there: the HELO fallback, sent into the closed connection, made it a lost
    connection, deferred 4.4.1 for days with the exchanger's reason in neither the log
    nor the bounce. A 5xx bounces at once with its words, a 4xx waits with them."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    hello = {b"EHLO": ehlo}
    with remote(hello_replies=hello, close_after_hello_refusal=True) as server:
        relay = _relay(tmp_path, server.port, retry_after=300)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, f"status={status}")))
        _wait_closed(server)
    assert server.verbs == [b"EHLO"]
    (line,) = _lines(caplog, "status=")
    assert f"dsn={ehlo[4:9].decode()}, status={status}" in line and ehlo.decode() in line
    if status == "bounced":
        (raw,) = relay.reports()
        assert b"Status: 5.7.1" in raw and b"your IP is on the blocklist" in raw
    else:
        assert relay.reports() == [] and len(relay.entries()) == 1


EHLO_FOR_NOW = {b"EHLO": b"451 4.3.0 ESMTP temporarily unavailable"}
#: Mail that needs what a HELO session lacks: REQUIRETLS (TLS and the extension), a
#: UTF-8 address (SMTPUTF8), TLS for the relay's own policy.
NEEDS_AN_EXTENSION = {
    "REQUIRETLS": ("brendon@pqr.example", (("REQUIRETLS", None),), RelayTLS.MAY),
    "SMTPUTF8": ("jörg@pqr.example", (("SMTPUTF8", None),), RelayTLS.MAY),
    "encrypt": ("brendon@pqr.example", (), RelayTLS.ENCRYPT),
}


@pytest.mark.parametrize("needs", list(NEEDS_AN_EXTENSION))
def test_mail_that_needs_an_extension_waits_after_a_4xx_to_ehlo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, needs: str
) -> None:
    """A 4xx to EHLO is temporary: the exchanger may speak ESMTP next time. The HELO
    session it fell back to bounced REQUIRETLS mail (5.7.30) and SMTPUTF8 mail (5.6.7)
    at once; such mail waits, the EHLO reply its reason, as before the fallback."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    recipient, params, relay_tls = NEEDS_AN_EXTENSION[needs]
    with remote(hello_replies=EHLO_FOR_NOW) as server:
        relay = _relay(tmp_path, server.port, relay_tls=relay_tls, retry_after=300)
        relay.enqueue([recipient], params=params)
        _run(relay, lambda: bool(_lines(caplog, "status=")))
        _wait_closed(server)
    assert server.verbs[:2] == [b"EHLO", b"HELO"] and server.mail_lines == []
    assert relay.reports() == [] and len(relay.entries()) == 1
    (line,) = _lines(caplog, "status=")
    assert line.endswith("dsn=4.3.0, status=deferred (451 4.3.0 ESMTP temporarily unavailable)")


@pytest.mark.parametrize(("needs", "dsn"), [("REQUIRETLS", "5.7.30"), ("SMTPUTF8", "5.6.7")])
def test_mail_that_needs_an_extension_bounces_after_a_5xx_to_ehlo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, needs: str, dsn: str
) -> None:
    """After a 5xx to EHLO the HELO session is what the exchanger offers: REQUIRETLS
    mail finds no exchanger that qualifies and goes back (RFC 8689 §5), SMTPUTF8 mail
    cannot go (RFC 6531 §3.4)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    recipient, params, relay_tls = NEEDS_AN_EXTENSION[needs]
    with remote(hello_replies={b"EHLO": b"550 5.5.1 no ESMTP here"}) as server:
        relay = _relay(tmp_path, server.port, relay_tls=relay_tls)
        relay.enqueue([recipient], params=params)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.mail_lines == []
    (raw,) = relay.reports()
    assert f"Status: {dsn}".encode() in raw and b"Action: failed" in raw
    assert _lines(caplog, f"dsn={dsn}, status=bounced") and not _lines(caplog, "deferred")


BINARY = (
    b"From: john@abc.example\r\nSubject: bin\r\n\r\n\x00bare\rcr, bare\nlf, "
    + b"x" * 1200
    + b"\r\n"
)


UNCONVERTIBLE_HEADER = b"From: john@abc.example\r\nSubject: caf\xc3\xa9\r\n\r\nbody\r\n"
"""8-bit octets in a header field, whose charset no RFC 2047 word could name."""


@pytest.mark.parametrize(
    ("content", "params"),
    [(EIGHT_BIT_MESSAGE, ()), (MESSAGE, (("RET", "HDRS"), ("ENVID", "x1")))],
    ids=["convertible 8-bit", "DSN parameters"],
)
def test_mail_a_helo_session_can_carry_goes_after_a_4xx_to_ehlo(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    params: tuple[tuple[str, str | None], ...],
) -> None:
    """Only mail that needs what the HELO session lacks waits after a 4xx to EHLO:
    8-bit content goes converted to 7 bits, DSN's RET and ENVID are left off (RFC 3461
    §6.2), as for any exchanger that offers neither."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(hello_replies=EHLO_FOR_NOW, dsn=True) as server:
        relay = _relay(tmp_path, server.port, retry_after=300)
        relay.enqueue(["brendon@pqr.example"], content=content, params=params)
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.mail_lines == [b"MAIL FROM:<john@abc.example>\r\n"]
    (transaction,) = server.transactions
    assert transaction.content.isascii()
    assert _lines(caplog, "status=sent") and relay.reports() == []


#: Content a HELO session cannot carry: 8-bit with no 7-bit form, binary.
CANNOT_BE_CARRIED = {
    "unconvertible 8-bit": (UNCONVERTIBLE_HEADER, ()),
    "BINARYMIME": (BINARY, (("BODY", "BINARYMIME"),)),
}


@pytest.mark.parametrize("kind", list(CANNOT_BE_CARRIED))
def test_content_a_helo_session_cannot_carry_waits_after_a_4xx_to_ehlo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """8BITMIME (or BINARYMIME and CHUNKING) may be offered once EHLO is taken: the
    content waits, the EHLO reply its reason, and is neither sent nor returned."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    content, params = CANNOT_BE_CARRIED[kind]
    with remote(hello_replies=EHLO_FOR_NOW) as server:
        relay = _relay(tmp_path, server.port, retry_after=300)
        relay.enqueue(["brendon@pqr.example"], content=content, params=params)
        _run(relay, lambda: bool(_lines(caplog, "status=")))
        _wait_closed(server)
    assert server.verbs[:2] == [b"EHLO", b"HELO"] and server.mail_lines == []
    assert relay.reports() == [] and len(relay.entries()) == 1
    (line,) = _lines(caplog, "status=")
    assert line.endswith("dsn=4.3.0, status=deferred (451 4.3.0 ESMTP temporarily unavailable)")


@pytest.mark.parametrize("kind", list(CANNOT_BE_CARRIED))
def test_content_a_helo_session_cannot_carry_bounces_5_6_3_after_a_5xx_to_ehlo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """After a 5xx to EHLO the exchanger offers no 8BITMIME nor BINARYMIME: content
    that cannot go without them is returned at once (RFC 6152 §3, RFC 3030 §3)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    content, params = CANNOT_BE_CARRIED[kind]
    with remote(hello_replies={b"EHLO": b"550 5.5.1 no ESMTP here"}) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=content, params=params)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.verbs[:2] == [b"EHLO", b"HELO"] and server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.6.3" in raw and b"Action: failed" in raw
    assert _lines(caplog, "dsn=5.6.3, status=bounced") and not _lines(caplog, "deferred")


def test_an_expired_message_reports_the_servers_own_reply_and_status(
    tmp_path: Path,
) -> None:
    """RFC 3464 §2.3.4, §2.3.6: after a busy greeting the bounce's Status is the server's
    enhanced code and its Diagnostic-Code of type smtp the reply itself."""
    with remote(greeting=b"421 4.3.2 busy") as server:
        relay = _relay(tmp_path, server.port, max_queue_age=0.2)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Status: 4.3.2" in raw
    assert b"Diagnostic-Code: smtp; 421 4.3.2 busy" in raw


def test_a_connection_dropped_in_data_is_deferred_then_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(drop_in_data=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        assert relay.reports() == [] and len(relay.entries()) == 1
        server.drop_in_data = False
        _run(relay, relay.empty)
        _wait_closed(server)
    assert len(server.transactions) == 1 and relay.reports() == []


@pytest.mark.parametrize(
    ("data_reply", "timeouts", "why"),
    [
        (None, None, "the server closed the connection"),
        (b"", Timeouts(data_termination=0.3), "no reply within 0.3 s"),
    ],
    ids=["closed", "timed out"],
)
def test_a_session_lost_after_the_final_dot_says_the_message_may_be_sent_twice(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    data_reply: bytes | None,
    timeouts: Timeouts | None,
    why: str,
) -> None:
    """The exchanger read the final dot and closed (or never answered): it may have
    taken the message, and the retry, right as it is (RFC 5321 §6.1), sends it again.
    The deferral said only "the server closed the connection" ("no reply within N s"),
    as for a drop in the middle of the content; it now says so in Postfix's words, as
    the line of a stop at that point does."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(data_replies=[data_reply]) as server:
        relay = _relay(tmp_path, server.port, timeouts=timeouts)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        server.release.set()
        _wait_closed(server)
    (deferred,) = _lines(caplog, "status=deferred")
    assert deferred.endswith(
        f"{why} while sending end of data -- message may be sent more than once)"
    )
    assert _lines(caplog, "status=sent")
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]] * 2


def test_an_exchanger_whose_reply_lines_end_in_a_bare_lf_gets_the_mail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """smtplib and Postfix's client read a reply line ended by LF alone; the relay
    deferred such an exchanger's mail until it expired (``reply line not ended by
    CRLF``). Its multi-line EHLO reply is read too: the ENHANCEDSTATUSCODES it lists
    splits the status off the 250 after the content."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(reply_end=b"\n") as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    assert _lines(caplog, "dsn=2.0.0, status=sent (250 2.0.0 queued)")
    assert not _lines(caplog, "deferred") and relay.reports() == []


def test_expiry_bounce_carries_the_last_remote_reply(tmp_path: Path) -> None:
    now = [1000.0]
    with remote(rcpt_replies={"brendon@pqr.example": b"451 4.3.2 system busy"}) as server:
        relay = _relay(tmp_path, server.port, clock=lambda: now[0], max_queue_age=3600)
        entry = relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1)
        now[0] += 7200
        relay.worker.schedule(relay.queue.load(entry.id))
        _run(relay, relay.empty)
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Status: 4.3.2" in raw
    assert b"Diagnostic-Code: smtp; 451 4.3.2 system busy" in raw
    assert b"Remote-MTA: dns; mx.pqr.example" in raw
    assert b"no attempt succeeded" not in raw


# -- backoff ----------------------------------------------------------------------------------


@given(
    retry_after=st.floats(1, 10_000),
    cap=st.floats(1, 100_000),
    attempts=st.integers(0, 64),
    seed=st.integers(0, 2**32),
)
def test_backoff_with_jitter_stays_between_the_minimum_and_the_cap(
    retry_after: float, cap: float, attempts: int, seed: int
) -> None:
    wait = backoff(retry_after, attempts, cap=cap, rng=random.Random(seed))
    assert retry_after <= wait <= max(retry_after, cap)
    plain = backoff(retry_after, attempts, cap=cap)
    assert wait <= plain and wait >= plain / 2


def test_backoff_after_a_thousand_rounds_is_still_the_cap() -> None:
    """2.0 ** (attempts - 1) overflowed from the 1025th failed round on: each later round
    logged an OverflowError, recorded nothing, and came back after --retry-after."""
    assert backoff(2.0, 1025, cap=3600.0) == 3600.0
    assert 1800.0 <= backoff(2.0, 10**9, cap=3600.0, rng=random.Random(1)) <= 3600.0
    assert backoff(1e-9, 66, cap=100 * 365 * 86400.0) == 100 * 365 * 86400.0


def test_backoff_jitter_spreads_retries() -> None:
    rng = random.Random(1)
    waits = {backoff(300.0, 5, rng=rng) for _ in range(50)}
    assert len(waits) > 10 and min(waits) >= MAX_BACKOFF / 2 and max(waits) <= MAX_BACKOFF


# -- delay notice ----------------------------------------------------------------------------


def test_a_delay_notice_goes_once_after_the_warning_time(tmp_path: Path) -> None:
    now = [1000.0]
    with remote(rcpt_replies={"brendon@pqr.example": b"450 4.2.1 try later"}) as server:
        relay = _relay(tmp_path, server.port, clock=lambda: now[0], delay_warning=600.0)
        entry = relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1)
        assert relay.reports() == []  # not yet: the warning time has not passed
        for _ in range(3):
            now[0] += 700
            relay.worker.schedule(relay.queue.load(entry.id))
            attempts = relay.entries()[0].attempts
            _run(relay, lambda a=attempts: relay.entries()[0].attempts > a)  # type: ignore[misc]
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Subject: Delayed Mail (still being retried)" in raw
    assert b"Action: delayed" in raw and b"Status: 4.2.1" in raw
    assert b"Will-Retry-Until: " in raw
    assert relay.entries()[0].delay_warned


def test_no_delay_notice_by_default(tmp_path: Path) -> None:
    now = [1000.0]
    with remote(rcpt_replies={"brendon@pqr.example": b"450 4.2.1 try later"}) as server:
        relay = _relay(tmp_path, server.port, clock=lambda: now[0])
        entry = relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1)
        now[0] += 86400
        relay.worker.schedule(relay.queue.load(entry.id))
        _run(relay, lambda: relay.entries()[0].attempts >= 2)
    assert relay.reports() == []


# -- TLS policy ------------------------------------------------------------------------------


def test_starttls_refused_with_454_goes_on_in_plaintext_under_may(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(starttls="refuse") as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert len(server.transactions) == 1 and not server.transactions[0].tls
    (line,) = _lines(caplog, "status=sent")
    assert "tls=no, tls_policy=may" in line
    assert _lines(caplog, "STARTTLS refused: 454 4.7.0")


def test_starttls_refused_under_may_goes_on_over_the_same_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 454 leaves the session usable (RFC 3207 §4): the client goes on in plaintext
    and the relay logs the refusal; it does not connect a second time."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(starttls="refuse") as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.connections == 1 and len(server.transactions) == 1
    (line,) = _lines(caplog, "STARTTLS refused: 454 4.7.0")
    assert "without TLS" in line


def test_a_failed_handshake_under_may_is_tried_again_in_plaintext(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A handshake that fails leaves no usable session (RFC 3207 §4.1): the relay
    drops the connection and connects again without STARTTLS, as Postfix does."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    no_certificate = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # a handshake it cannot finish
    with remote(starttls="tls", tls_context=no_certificate) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.connections == 2 and len(server.transactions) == 1
    assert not server.transactions[0].tls
    assert _lines(caplog, "TLS handshake failed")


def test_starttls_refused_under_encrypt_defers_without_sending(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(starttls="refuse") as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.ENCRYPT)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(server)
    assert server.mail_lines == []
    (line,) = _lines(caplog, "status=deferred")
    assert "dsn=4.7.5" in line and "TLS is required (encrypt)" in line


def test_no_starttls_under_encrypt_defers_with_4_7_4(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote() as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.ENCRYPT)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(server)
    assert server.mail_lines == []
    (line,) = _lines(caplog, "status=deferred")
    assert "dsn=4.7.4" in line and "not offered" in line


@pytest.fixture(scope="module")
def mx_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path, Path]:
    """A server context for ``mx.pqr.example``, its CA's file, and another CA's file."""
    import trustme

    directory = tmp_path_factory.mktemp("mx-tls")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.pqr.example").configure_cert(context)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = directory / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return context, ca_file, other


def test_verify_checks_the_certificate_against_the_mx_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx_tls: tuple[ssl.SSLContext, Path, Path]
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    context, ca_file, _ = mx_tls
    with remote(starttls="tls", tls_context=context) as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.VERIFY, relay_ca=ca_file)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.transactions[0].tls
    (line,) = _lines(caplog, "status=sent")
    assert "tls=verified, tls_policy=verify" in line


def test_an_address_literal_is_verified_by_its_ip_and_a_failure_there_is_deferred(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``user@[127.0.0.1]``: the certificate is checked against the address (no SNI,
    RFC 6066 §3), not the bracketed text; and a failure of the whole session there is a
    deferral with its reason, as for a host (its memory of failed hosts took no
    literal, and the round failed as a local error)."""
    import trustme

    caplog.set_level(logging.INFO, "smtpcore.mail")
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with remote(starttls="tls", tls_context=context) as server:
        relay = _relay(tmp_path / "a", server.port, relay_tls=RelayTLS.VERIFY, relay_ca=ca_file)
        relay.enqueue(["brendon@[127.0.0.1]"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.transactions[0].tls
    assert "tls=verified" in _lines(caplog, "status=sent")[0]
    with remote(starttls="refuse") as refusing:
        relay = _relay(tmp_path / "b", refusing.port, relay_tls=RelayTLS.ENCRYPT)
        relay.enqueue(["brendon@[127.0.0.1]"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(refusing)
    (line,) = _lines(caplog, "status=deferred")[:1]
    assert "dsn=4.7.5" in line and "TLS is required (encrypt)" in line
    assert not _lines(caplog, "delivery failed")


def test_verify_defers_when_the_certificate_is_not_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx_tls: tuple[ssl.SSLContext, Path, Path]
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    context, _, other = mx_tls
    with remote(starttls="tls", tls_context=context) as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.VERIFY, relay_ca=other)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(server)
    assert server.mail_lines == []
    (line,) = _lines(caplog, "status=deferred")
    assert "dsn=4.7.5" in line and "TLS handshake failed" in line


def test_may_encrypts_without_checking_the_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx_tls: tuple[ssl.SSLContext, Path, Path]
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    context, _, _ = mx_tls
    with remote(starttls="tls", tls_context=context) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.transactions[0].tls
    assert "tls=yes, tls_policy=may" in _lines(caplog, "status=sent")[0]


# -- the envelope's parameters through the queue -------------------------------------------


def test_smtputf8_and_body_go_on_with_an_ascii_envelope(tmp_path: Path) -> None:
    content = "From: Jörg <john@abc.example>\r\nSubject: grüße\r\n\r\nbody\r\n".encode()
    with remote(smtputf8=True, dsn=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(
            [QueuedRecipient("brendon@pqr.example", notify="FAILURE", orcpt="rfc822;b@x.example")],
            content=content,
            params=(("SMTPUTF8", None), ("BODY", "8BITMIME"), ("RET", "HDRS"), ("ENVID", "E1")),
        )
        _run(relay, relay.empty)
    (transaction,) = server.transactions
    mail = transaction.mail_line
    assert b" SMTPUTF8" in mail and b" BODY=8BITMIME" in mail
    assert b" RET=HDRS" in mail and b" ENVID=E1" in mail
    assert b"NOTIFY=FAILURE" in transaction.rcpt_lines[0]
    assert b"ORCPT=rfc822;b@x.example" in transaction.rcpt_lines[0]
    assert transaction.content == content


@pytest.mark.parametrize("smtputf8", [True, False])
def test_a_raw_utf8_orcpt_goes_on_in_the_form_the_exchanger_can_take(
    tmp_path: Path, smtputf8: bool
) -> None:
    """RFC 6533 §3: utf-8-addr-unitext only under SMTPUTF8; to an exchanger without it
    the ORCPT goes on as utf-8-addr-xtext, and the message is delivered."""
    with remote(smtputf8=smtputf8, dsn=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(
            [QueuedRecipient("brendon@pqr.example", orcpt="utf-8;jörg@x.example")],
            params=(("SMTPUTF8", None),),
        )
        _run(relay, relay.empty)
    (transaction,) = server.transactions
    expected = "utf-8;jörg@x.example" if smtputf8 else "utf-8;j\\x{F6}rg@x.example"
    assert transaction.rcpt_lines[0].endswith(f" ORCPT={expected}\r\n".encode())
    assert (b" SMTPUTF8" in transaction.mail_line) is smtputf8


def test_utf8_headers_under_smtputf8_to_a_server_without_it_bounce(tmp_path: Path) -> None:
    """RFC 6531 §3.4, and what Postfix does: the message needs SMTPUTF8 as its sender said."""
    content = "From: john@abc.example\r\nSubject: grüße\r\n\r\nbody\r\n".encode()
    with remote(smtputf8=False) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=content, params=(("SMTPUTF8", None),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
    assert server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.6.7" in raw


def test_the_submission_listener_queues_smtputf8_and_body(tmp_path: Path) -> None:
    from smtpcore.server._app_commit import _KEPT_MAIL_PARAMS

    assert set(_KEPT_MAIL_PARAMS) == {"SMTPUTF8", "BODY", "RET", "ENVID", "REQUIRETLS"}


# -- no resolver, no silent deferral ----------------------------------------------------------


def test_serve_refuses_to_start_without_mx_lookups_naming_both_fixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolver = SystemResolver()
    monkeypatch.setattr(resolver, "_dnspython", lambda: None)
    with pytest.raises(ConfigError) as caught:
        check_remote_delivery(resolver, None)
    message = str(caught.value)
    assert "pip install smtpcore[dns]" in message
    assert "--relay-host" in message and "--resolver static:FILE" in message
    check_remote_delivery(resolver, ("[relay.example]", 25))  # a smart host needs no MX
    check_remote_delivery(StaticResolver.from_zone_text(ZONE), None)


def test_relay_options_on_the_command_line(tmp_path: Path) -> None:
    import trustme

    from smtpcore.server.cli import build_parser, config_from_args

    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))  # loaded when the options are read
    argv = ["serve", "--relay-tls", "verify", "--relay-ca", str(ca), "--delay-warning", "4h"]
    argv += ["--retry-after", "5m", "--max-retry-after", "2h", "--destination-concurrency", "3"]
    config = config_from_args(build_parser().parse_args(argv))
    assert (config.relay_tls, config.relay_ca) == ("verify", ca)
    assert config.destination_concurrency == 3
    assert (config.retry_after, config.max_retry_after) == (300.0, 7200.0)
    assert config.delay_warning == 4 * 3600.0
    defaults = config_from_args(build_parser().parse_args(["serve"]))
    assert defaults.relay_tls == "may" and defaults.delay_warning is None
    assert defaults.max_retry_after == MAX_BACKOFF
    assert defaults.destination_concurrency is None  # the worker decides (places.py)
    with pytest.raises(ConfigError, match="--destination-concurrency"):
        ServerConfig(destination_concurrency=0)
    with pytest.raises(ConfigError, match="--relay-ca"):
        ServerConfig(relay_ca=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="--relay-tls"):
        ServerConfig(relay_tls="sometimes")


# -- relay to internal networks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "internal"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("172.16.5.4", True),
        ("192.168.1.1", True),
        ("169.254.1.1", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("::ffff:10.0.0.1", True),
        # Not globally reachable (RFC 6890): shared address space (RFC 6598, carrier
        # NAT, tailnets, cloud metadata), documentation, benchmarking, IETF protocol.
        ("100.64.0.1", True),
        ("100.100.100.200", True),
        ("100.127.255.254", True),
        ("192.0.2.1", True),
        ("198.51.100.7", True),
        ("203.0.113.9", True),
        ("198.18.0.1", True),
        ("192.0.0.1", True),
        ("2001:db8::1", True),
        ("224.0.0.1", True),
        ("ff0e::1", True),
        ("fec0::1", True),  # site-local (deprecated, RFC 3879)
        ("2002:7f00:1::1", True),  # 6to4 (RFC 3056) to 127.0.0.1
        ("2002:a00:1::1", True),  # 6to4 to 10.0.0.1
        ("2002:808:808::1", False),  # 6to4 to 8.8.8.8
        ("64:ff9b::808:808", False),  # NAT64 (RFC 6052) to 8.8.8.8: DNS64 answers so
        ("64:ff9b::a00:1", True),  # NAT64 to 10.0.0.1
        ("64:ff9b::7f00:1", True),  # NAT64 to 127.0.0.1
        ("64:ff9b:1::808:808", True),  # the local-use prefix (RFC 8215): not global
        ("100.63.255.255", False),
        ("100.128.0.0", False),
        ("8.8.8.8", False),
        ("2a00:1450:4001:80b::200e", False),
    ],
)
def test_internal_addresses(text: str, internal: bool) -> None:
    from ipaddress import ip_address

    from smtpcore.server.internal import is_internal_address

    assert is_internal_address(ip_address(text)) is internal
    assert InternalAddresses().refused(ip_address(text)) is internal
    assert not InternalAddresses(allowed=True).refused(ip_address(text))
    assert InternalAddresses(["8.8.8.8"]).refused(ip_address("8.8.8.8"))


def test_the_servers_own_address_is_refused_however_it_is_written() -> None:
    """``::ffff:a.b.c.d`` is the host ``a.b.c.d``: an address literal or an AAAA record
    written so must not lead the relay back to itself."""
    from ipaddress import ip_address

    from smtpcore.address import parse_mailbox

    own = InternalAddresses(["93.184.216.34"])
    assert own.refused(ip_address("::ffff:93.184.216.34"))
    mapped = parse_mailbox("u@[IPv6:::ffff:93.184.216.34]")
    assert own.refused_literal(mapped) is not None
    assert InternalAddresses(["::ffff:93.184.216.34"]).refused(ip_address("93.184.216.34"))
    assert not own.refused(ip_address("::ffff:93.184.216.35"))
    # Through a NAT64 gateway (RFC 6052's well-known prefix) it is the same host.
    assert own.refused(ip_address("64:ff9b::93.184.216.34"))
    assert own.refused_literal(parse_mailbox("u@[IPv6:64:ff9b::5db8:d822]")) is not None
    assert not own.refused(ip_address("64:ff9b::93.184.216.35"))


def test_shared_address_space_is_refused_as_a_literal_and_as_an_exchanger(
    tmp_path: Path,
) -> None:
    """RFC 6598's 100.64.0.0/10 (carrier NAT, Tailscale, cloud metadata such as
    100.100.100.200) is no more the Internet than 10.0.0.0/8: refused at RCPT, and an
    exchanger there bounces without a connection."""
    from ipaddress import ip_address

    from smtpcore.address import parse_mailbox

    refused = InternalAddresses().refused_literal(parse_mailbox("u@[100.100.100.200]"))
    assert refused == ip_address("100.100.100.200")
    connections: list[str] = []

    def no_network(host: str, port: int, **options: object) -> object:
        connections.append(host)
        raise RuntimeError("no connection here")

    zone = "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 100.64.0.1\n"
    relay = _relay(
        tmp_path, 25, zone=zone, internal=InternalAddresses(), client_factory=no_network
    )
    relay.enqueue(["brendon@pqr.example"])
    _run(relay, lambda: bool(connections) or (relay.empty() and bool(relay.reports())))
    assert connections == []
    (raw,) = relay.reports()
    assert b"Status: 5.4.4" in raw and b"100.64.0.1" in raw


def test_an_address_literal_with_leading_zeros_is_the_address_its_decimal_snums_name() -> None:
    """RFC 5321 §4.1.3 reads each Snum as decimal: ``[010.0.0.1]`` is 10.0.0.1 (never
    octal 8.0.0.1), an internal address the relay refuses as it refuses 10.0.0.1."""
    from ipaddress import ip_address

    from smtpcore.address import parse_mailbox

    refused = InternalAddresses().refused_literal(parse_mailbox("u@[010.000.000.001]"))
    assert refused == ip_address("10.0.0.1")
    own = InternalAddresses(["93.184.216.34"])
    assert own.refused_literal(parse_mailbox("u@[093.184.216.034]")) is not None


def test_mx_hosts_on_internal_addresses_bounce_without_a_connection(tmp_path: Path) -> None:
    with remote() as server:
        relay = _relay(tmp_path, server.port, internal=InternalAddresses())
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
    assert server.connections == 0
    (raw,) = relay.reports()
    assert b"Status: 5.4.4" in raw and b"internal addresses" in raw


def test_internal_addresses_take_no_place_of_a_less_preferred_public_exchanger(
    tmp_path: Path,
) -> None:
    """Five internal addresses at the best level filled the five attempts, were all
    refused, and the mail bounced (554 5.4.4) though the level below is public: they are
    left out before the list is cut to its length."""
    lan = "".join(f"lan.pqr.example A 10.0.0.{n}\n" for n in range(1, 6))
    zone = (
        "pqr.example MX 10 lan.pqr.example\n" + lan + "pqr.example MX 20 mx.pqr.example\n"
        "mx.pqr.example A 11.0.0.70\n"
    )
    connections: list[str] = []

    def no_network(host: str, port: int, **options: object) -> object:
        connections.append(host)
        raise RuntimeError("no connection here")

    relay = _relay(
        tmp_path,
        25,
        zone=zone,
        internal=InternalAddresses(),
        client_factory=no_network,
        retry_after=3600.0,
    )
    relay.enqueue(["brendon@pqr.example"])
    _run(relay, lambda: bool(connections) or bool(relay.reports()))
    assert connections == ["11.0.0.70"]
    assert relay.reports() == []


def test_a_smart_host_on_an_internal_address_is_the_operators_choice(tmp_path: Path) -> None:
    """``--relay-host`` on the LAN or loopback is the usual set-up: the internal-address
    rule keeps users from reaching the network, and the operator chose this host."""
    with remote() as server:
        relay = _relay(
            tmp_path,
            server.port,
            internal=InternalAddresses(),
            zone=ZONE + "relay.abc.example A 127.0.0.1\n",
            smart_host=("relay.abc.example", server.port),
        )
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.empty())
        assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    assert relay.reports() == []


def test_an_exchanger_that_answers_again_is_no_longer_tried_last(tmp_path: Path) -> None:
    """A host that failed goes to the back of its level for an hour (FailedExchangers);
    one that has just taken a message is forgotten there, as ``mark_good`` is for."""
    with remote() as server:
        relay = _relay(tmp_path, server.port)
        relay.worker.failures.mark_bad("mx.pqr.example")
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    assert not relay.worker.failures.is_bad("mx.pqr.example")


# -- RFC 6533 reports ----------------------------------------------------------------------


def _report(**options: object) -> bytes:
    from smtpcore.server.bounce import ReportedRecipient, build_bounce

    defaults: dict[str, object] = {
        "reporting_mta": "mx.abc.example",
        "recipient": "john@abc.example",
        "queue_id": "Q1",
        "arrival": 0.0,
        "now": 60.0,
        "failed": [ReportedRecipient("b@pqr.example", "5.1.1", "550 5.1.1 jösé unknown")],
        "original": "Subject: grüße\r\n\r\nbody\r\n".encode(),
    }
    return build_bounce(**{**defaults, **options}).content  # type: ignore[arg-type]  # the table


def test_a_report_writes_an_address_that_no_longer_parses_as_no_other_address() -> None:
    """``"s\\x{2028}x"`` in a header would be the valid ``sx{2028}x``: To: falls back to
    the empty group (RFC 5322 §3.4), and Final-Recipient takes RFC 6533 §3's
    ``utf-8-addr-xtext``, whose backslash is escaped too, so it decodes to what was
    queued; a valid address that looks escaped stays itself."""
    from smtpcore.server.bounce import ReportedRecipient

    bad, lookalike = '"s\u2028x"@pqr.example', '"s\\\\x{2028}x"@pqr.example'
    failed = [
        ReportedRecipient(bad, "5.1.3", "553 5.1.3 bad"),
        ReportedRecipient(lookalike, "5.1.1", "550 5.1.1 unknown"),
    ]
    raw = _report(recipient=bad, failed=failed)
    assert b"\r\nTo: undisclosed-recipients:;\r\n" in raw
    assert b'Final-Recipient: utf-8; "s\\x{5C}x{2028}x"@pqr.example' not in raw
    assert b'Final-Recipient: utf-8; "s\\x{2028}x"@pqr.example\r\n' in raw
    assert b'Final-Recipient: rfc822; "s\\\\x{2028}x"@pqr.example\r\n' in raw


def test_a_report_on_smtputf8_mail_is_global_with_raw_utf8() -> None:
    from smtpcore.server.bounce import ReportedRecipient

    failed = [
        ReportedRecipient(
            "jösé@pqr.example",
            "5.1.1",
            "550 5.1.1 <jösé@pqr.example> unknown",
            original_recipient="utf-8;jösé@pqr.example",
        ),
        ReportedRecipient(
            "b@pqr.example",
            "5.1.1",
            "550 no",
            original_recipient="utf-8;j\\x{F6}s\\x{E9}@x.example",
        ),
    ]
    raw = _report(failed=failed, utf8=True, headers_only=True)
    text = raw.decode("utf-8")
    assert "Content-Type: message/global-delivery-status" in text
    assert "Content-Type: message/global-headers" in text
    assert "Final-Recipient: utf-8; jösé@pqr.example" in text
    assert "Original-Recipient: utf-8; jösé@pqr.example" in text
    assert "Original-Recipient: utf-8; jösé@x.example" in text
    assert "Diagnostic-Code: x-local; 550 5.1.1 <jösé@pqr.example> unknown" in text
    assert "\\xf6" not in text and "\\x{" not in text


def test_an_ascii_report_writes_utf8_as_rfc_6533_escapes_never_python_ones() -> None:
    raw = _report(original=b"Subject: hello\r\n\r\nbody\r\n")
    assert b"Content-Type: message/delivery-status" in raw
    assert b"Content-Type: message/rfc822" in raw
    assert b"Diagnostic-Code: x-local; 550 5.1.1 j\\x{F6}s\\x{E9} unknown" in raw
    assert b"\\xf6" not in raw


@pytest.mark.parametrize(
    ("builder", "headers_only", "returned_type"),
    [
        ("build_bounce", False, "message/global"),
        ("build_bounce", True, "message/global-headers"),
        ("build_success_report", False, "message/global-headers"),
        ("build_delay_notice", False, "message/global-headers"),
    ],
)
def test_a_raw_utf8_header_sent_without_smtputf8_comes_back_global(
    builder: str, headers_only: bool, returned_type: str
) -> None:
    """RFC 6533 §6.3, RFC 6532 §3.7: a header with UTF-8 in it is no ``message/rfc822``
    nor ``text/rfc822-headers``, whatever the envelope said; the report's own fields
    stay ASCII (``message/delivery-status``), so it needs no SMTPUTF8 to travel. The
    standard library's parser reads the returned part as the message it is."""
    from smtpcore.server import bounce
    from smtpcore.server.bounce import ReportedRecipient

    original = "From: mary@xyz.example\r\nSubject: grüße\r\n\r\nbody\r\n".encode()
    recipients = [ReportedRecipient("b@pqr.example", "5.1.1", "550 5.1.1 jösé unknown")]
    common: dict[str, Any] = {
        "reporting_mta": "mx.abc.example",
        "recipient": "mary@xyz.example",
        "queue_id": "Q1",
        "arrival": 0.0,
        "now": 60.0,
        "original": original,
    }
    if builder == "build_bounce":
        report = bounce.build_bounce(**common, failed=recipients, headers_only=headers_only)
    elif builder == "build_success_report":
        report = bounce.build_success_report(**common, reported=recipients)
    else:
        report = bounce.build_delay_notice(**common, delayed=recipients, retry_until=9e4)
    assert not report.international  # queued without SMTPUTF8
    parsed = email.message_from_bytes(report.content, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    assert parsed.get_param("report-type") == "delivery-status"
    _text, status, returned = parsed.iter_parts()
    assert status.get_content_type() == "message/delivery-status"
    assert status.as_bytes().isascii()
    assert returned.get_content_type() == returned_type
    if returned_type == "message/global":  # parsed as an enclosed message
        (enclosed,) = returned.iter_parts()
        assert enclosed["Subject"] == "grüße"
    else:  # parsed as leaf whose content is the header's octets
        assert "Subject: grüße".encode() in returned.get_content()


@pytest.mark.parametrize(
    "original",
    [
        b"Subject: hello\r\n\r\ngr\xc3\xbc\xc3\x9fe\r\n",  # UTF-8 in the body only
        b"Subject: gr\xfc\xdfe\r\n\r\nbody\r\n",  # Latin-1: 8-bit, but no UTF-8 header
        b"\r\ngr\xc3\xbc\xc3\x9fe\r\n\r\nbody\r\n",  # no header at all
    ],
)
def test_a_report_returns_message_rfc822_when_the_header_holds_no_utf8(original: bytes) -> None:
    """Only a header that holds UTF-8 makes the returned part ``message/global`` (RFC
    6532 §3.7: its header is UTF-8); a body's octets are no header's."""
    raw = _report(original=original)
    assert b"Content-Type: message/rfc822\r\n" in raw
    assert b"message/global" not in raw


@pytest.mark.parametrize("utf8", [False, True])
def test_a_report_escapes_what_is_unsafe_in_text_in_either_kind(utf8: bool) -> None:
    """RFC 5198 §2, RFC 6532 §3.2: no C0 or C1 control (the 8-bit CSI, U+009B, which
    xterm obeys), format or separator character goes raw into a report, a global one
    included: each is written as RFC 6533's ``\\x{HEX}``, in both parts that quote it."""
    from smtpcore.server.bounce import ReportedRecipient

    diagnostic = "550 5.1.1 x\x1b[31m \x9b31m a\u202eb \u0dc1\u0dca\u200d\u0dbb"
    failed = [ReportedRecipient("b@pqr.example", "5.1.1", diagnostic, from_remote=True)]
    text = _report(failed=failed, utf8=utf8).decode("utf-8")
    assert "x\\x{1B}[31m \\x{9B}31m a\\x{202E}b" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 x\\x{1B}[31m" in text
    assert not any(char in text for char in "\x1b\x9b\u202e")
    assert ("\u200d" in text) is utf8  # ZWJ is text in a global report


@given(sst.replies(codes=[421, 450, 550, 554]), st.integers(1, 100), st.booleans())
def test_a_multi_line_diagnostic_folds_between_its_lines_and_within_the_line_limit(
    reply: Reply, copies: int, utf8: bool
) -> None:
    """However long and hostile the reply, the field's lines stay within RFC 5322's
    998 octets and the field, unfolded, is the transcription as a report words it: cut
    to 900 octets, its unsafe characters escaped, as for a one-line reply. Folded, it
    has one line per reply line, each that line as the report words it, up to the cut."""
    from smtpcore.server._bounce_fields import one_line
    from smtpcore.server.bounce import ReportedRecipient

    longer = Reply(reply.code, list(reply.lines) * copies, reply.status)
    said, breaks = transcribe(longer)
    failed = [
        ReportedRecipient(
            "b@pqr.example", "5.1.1", said, from_remote=True, diagnostic_breaks=breaks
        )
    ]
    raw = _report(failed=failed, utf8=utf8)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    status = raw.split(b"Delivery report\r\n")[1].split(b"\r\n--")[0].decode()
    (field,) = [
        line for line in status.replace("\r\n ", " ").split("\r\n") if "Diagnostic" in line
    ]
    shown = one_line(said, utf8)
    assert field == f"Diagnostic-Code: smtp; {shown}"
    folded = status.split("Diagnostic-Code: smtp; ")[1].split("\r\n")
    folded = [folded[0], *(line[1:] for line in itertools.takewhile(_continues, folded[1:]))]
    status_text = "" if longer.status is None else f"{longer.status} "
    last = len(longer.lines) - 1
    worded = [  # each reply line as the report words it, read apart from the rest
        one_line(f"{longer.code}{' ' if i == last else '-'}{status_text}{line}", utf8, 10**6)
        for i, line in enumerate(longer.lines)
    ]
    if shown == " ".join(worded):  # nothing cut: a line of the field per reply line
        assert folded == worded
    else:
        assert folded[:-1] == worded[: len(folded) - 1] and shown.endswith(folded[-1])


def _continues(line: str) -> bool:
    return line.startswith(" ")


_VALID_WITH_FORMAT_CHARACTERS = [
    "\u05d3\u200e\u05d4@pqr.example",  # a left-to-right mark between Hebrew letters
    "soft\u00adhyphen@pqr.example",
    "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f@pqr.example",
]


@pytest.mark.parametrize("address", _VALID_WITH_FORMAT_CHARACTERS)
def test_a_global_report_writes_a_valid_address_raw_whatever_it_holds(address: str) -> None:
    """A bidi mark, a soft hyphen, an emoji tag are in valid addresses (the parser takes
    them): a global report (RFC 6533 §3) writes the address as it is, in To:, the
    notification and Final-Recipient; an escape would make another address, and a
    ``\\`` is not atext (RFC 5322 §3.2.3)."""
    from smtpcore.server.bounce import ReportedRecipient

    parse_mailbox(address)
    failed = [ReportedRecipient(address, "5.1.1", "550 5.1.1 unknown")]
    text = _report(recipient=address, failed=failed, utf8=True).decode("utf-8")
    assert f"To: <{address}>" in text
    assert f"<{address}>: " in text
    assert f"Final-Recipient: utf-8; {address}" in text
    assert "\\x{" not in text


def test_a_bounce_of_smtputf8_mail_through_the_relay_is_global(tmp_path: Path) -> None:
    with remote(smtputf8=True, rcpt_replies={"jösé@pqr.example": b"550 5.1.1 unknown"}) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(
            [QueuedRecipient("jösé@pqr.example", orcpt="utf-8;jösé@pqr.example")],
            params=(("SMTPUTF8", None),),
        )
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
    (raw,) = relay.reports()
    text = raw.decode("utf-8")
    assert "Content-Type: message/global-delivery-status" in text
    assert "Final-Recipient: utf-8; jösé@pqr.example" in text
    assert "Original-Recipient: utf-8; jösé@pqr.example" in text
    assert "ORCPT" not in server.mail_lines[0].decode()  # no DSN offered: nothing passed on


def test_a_round_that_breaks_on_our_side_records_its_error_and_backs_off(
    tmp_path: Path,
) -> None:
    def broken_factory(*args: object, **kwargs: object) -> object:
        raise RuntimeError("boom")

    relay = _relay(tmp_path, 25, client_factory=broken_factory, retry_after=3600.0)
    entry = relay.enqueue(["brendon@pqr.example"])
    _run(relay, lambda: relay.entries()[0].attempts >= 1)
    (waiting,) = relay.entries()
    assert waiting.id == entry.id and waiting.next_attempt > waiting.created + 1000
    (recipient,) = waiting.pending
    assert recipient.reply == "local error in delivery: RuntimeError: boom"
    assert recipient.dsn == "4.3.0" and not recipient.from_remote


# -- each recipient's own fate, recorded at once -------------------------------------------

LIMITED = (b"LIMITS RCPTMAX=2",)
"""RFC 9422 §4.2: four recipients go in two transactions on one connection."""
FOUR = [f"u{number}@pqr.example" for number in range(1, 5)]


class _BrokenFor:
    """The zone's answers, but ``broken``'s MX lookup raises, as a resolver with a bug
    (or a hostile answer it does not expect) does."""

    def __init__(self, inner: Resolver, broken: str) -> None:
        self.inner = inner
        self.broken = broken

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        if domain == self.broken:
            raise ValueError("not a domain name")
        return await self.inner.mx(domain)

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        return await self.inner.addresses(host)


def test_one_domains_broken_lookup_does_not_hold_up_another(tmp_path: Path) -> None:
    zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
    with remote() as server:
        relay = _relay(tmp_path, server.port, zone=zone, retry_after=3600.0)
        relay.worker.resolver = _BrokenFor(relay.worker.resolver, "xyz.example")
        relay.enqueue(["victim@xyz.example", "brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.recipients == ["brendon@pqr.example"]
    (entry,) = relay.entries()
    (waiting,) = entry.pending
    assert waiting.address == "victim@xyz.example" and waiting.dsn == "4.3.0"
    assert waiting.reply == "local error in delivery: ValueError: not a domain name"


class _HangsFor(_BrokenFor):
    """``broken``'s MX lookup never answers, as a custom resolver with no timeout."""

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        if domain == self.broken:
            await asyncio.Event().wait()
        return await self.inner.mx(domain)


def test_a_resolver_that_never_answers_defers_its_domain_in_time(tmp_path: Path) -> None:
    """A lookup past ``resolve_timeout`` is a temporary DNS failure: its recipients wait
    for the next round (the round held its message, never retried, until a restart),
    and the message's other domains are delivered."""
    zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
    with remote() as server:
        relay = _relay(tmp_path, server.port, zone=zone, retry_after=3600.0, resolve_timeout=0.2)
        relay.worker.resolver = _HangsFor(relay.worker.resolver, "xyz.example")
        relay.enqueue(["victim@xyz.example", "brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1, timeout=5.0)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.recipients == ["brendon@pqr.example"]
    (entry,) = relay.entries()
    (waiting,) = entry.pending
    assert waiting.address == "victim@xyz.example" and waiting.dsn == "4.4.3"
    assert (
        waiting.reply
        == "451 4.4.3 temporary DNS failure looking up xyz.example: no answer in time"
    )
    assert relay.reports() == []


class _CancelsFor(_BrokenFor):
    """``broken``'s MX lookup raises ``CancelledError``, as a resolver does whose own
    future was cancelled (a query abandoned by another part of its library)."""

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        if domain == self.broken:
            raise asyncio.CancelledError
        return await self.inner.mx(domain)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() tells it apart")
def test_a_lookup_cancelled_by_the_resolver_is_a_temporary_failure(tmp_path: Path) -> None:
    """A cancellation the round did not ask for ended it and left the message out of
    the schedule until a restart; it is a temporary DNS failure, retried."""
    zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
    with remote() as server:
        relay = _relay(tmp_path, server.port, zone=zone, retry_after=3600.0)
        relay.worker.resolver = _CancelsFor(relay.worker.resolver, "xyz.example")
        relay.enqueue(["victim@xyz.example", "brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1, timeout=5.0)
        _wait_closed(server)
        assert relay.worker.queued == 1  # scheduled again
    (transaction,) = server.transactions
    assert transaction.recipients == ["brendon@pqr.example"]
    (waiting,) = relay.entries()[0].pending
    assert waiting.address == "victim@xyz.example" and waiting.dsn == "4.4.3"
    assert waiting.reply is not None
    assert waiting.reply.endswith("looking up xyz.example: the lookup was cancelled")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() tells it apart")
def test_a_round_broken_by_a_stray_cancellation_is_scheduled_again(tmp_path: Path) -> None:
    """A cancellation the round did not ask for, from anywhere in it (here the remote
    delivery itself), is a round broken on our side: recorded and retried, not a
    message left out of the schedule until a restart."""
    with remote() as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)

        async def cancelled(*args: object) -> None:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future

        relay.worker._deliver_remote = cancelled  # type: ignore[method-assign,assignment]
        relay.enqueue(["brendon@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1, timeout=5.0)
        assert relay.worker.queued == 1  # scheduled again
    (waiting,) = relay.entries()[0].pending
    assert waiting.dsn == "4.3.0"


def test_limits_batches_taken_before_a_lost_connection_are_not_sent_again(
    tmp_path: Path,
) -> None:
    """The first batch was answered 250, the connection lost after the second's dot: only
    the second goes again (RFC 5321 §6.1 allows that duplicate, not the first's)."""
    with remote(extra_ehlo=LIMITED, data_replies=[b"250 2.0.0 queued", None]) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(list(FOUR))
        _run(relay, relay.empty)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [FOUR[:2], FOUR[2:], FOUR[2:]]
    assert relay.reports() == []


def test_limits_batches_keep_their_own_refusals(tmp_path: Path) -> None:
    """A batch greylisted (451) and another refused (550): the 550 bounces its own
    recipients only, and the greylisted ones wait."""
    greylisted = b"451 4.7.1 greylisted, try later"
    replies = dict.fromkeys(FOUR[:2], greylisted) | dict.fromkeys(FOUR[2:], b"550 5.1.1 no")
    with remote(extra_ehlo=LIMITED, rcpt_replies=replies) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        relay.enqueue(list(FOUR))
        _run(relay, lambda: bool(relay.reports()) and relay.entries()[0].attempts >= 1)
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"u3@pqr.example" in raw and b"u4@pqr.example" in raw
    assert b"u1@pqr.example" not in raw and b"u2@pqr.example" not in raw
    (entry,) = relay.entries()
    assert [r.address for r in entry.pending] == FOUR[:2]


def test_a_limits_batch_whose_data_is_refused_bounces_alone(tmp_path: Path) -> None:
    """The first batch's DATA refused 554, the second delivered: the first batch's
    recipients bounce with that 554 (RFC 5321 §4.2.1), the second's are sent once."""
    with remote(extra_ehlo=LIMITED, data_command_replies=[b"554 5.3.4 not this one"]) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        relay.enqueue(list(FOUR))
        _run(relay, lambda: relay.empty() and bool(relay.reports()), timeout=5.0)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [FOUR[2:]]
    (raw,) = relay.reports()
    assert raw.count(b"Diagnostic-Code: smtp; 554 5.3.4 not this one") == 2
    assert b"u3@pqr.example" not in raw and b"u4@pqr.example" not in raw


def test_a_limits_batch_keeps_its_own_temporary_data_refusal(tmp_path: Path) -> None:
    """The first batch's DATA refused 451, the second batch's RCPTs 550: the first
    batch waits with its own 451, never bounced with the other batch's 550."""
    with remote(
        extra_ehlo=LIMITED,
        data_command_replies=[b"451 4.3.0 try later"],
        rcpt_replies=dict.fromkeys(FOUR[2:], b"550 5.1.1 no"),
    ) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        relay.enqueue(list(FOUR))
        _run(relay, lambda: bool(relay.reports()) and relay.entries()[0].attempts >= 1)
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"u3@pqr.example" in raw and b"u4@pqr.example" in raw
    assert b"u1@pqr.example" not in raw and b"u2@pqr.example" not in raw
    (entry,) = relay.entries()
    assert [(r.address, r.reply) for r in entry.pending] == [
        (address, "451 4.3.0 try later") for address in FOUR[:2]
    ]


def test_limits_batches_taken_before_a_malformed_reply_are_not_sent_again(
    tmp_path: Path,
) -> None:
    """A reply the client cannot read after the second batch's dot fails the session
    (SMTPProtocolError): the first batch, answered 250, is not sent again."""
    with remote(extra_ehlo=LIMITED, data_replies=[b"250 2.0.0 queued", b"2x0 what"]) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(list(FOUR))
        _run(relay, relay.empty, timeout=5.0)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [FOUR[:2], FOUR[2:], FOUR[2:]]
    assert relay.reports() == []


def test_a_limits_batch_is_recorded_as_it_ends_though_the_round_is_then_stopped(
    tmp_path: Path,
) -> None:
    """RFC 5321 §6.1: the first batch answered 250 is in the queue file before the second
    batch ends; a stop meanwhile leaves only the second batch to send again."""
    with remote(extra_ehlo=LIMITED, data_replies=[b"250 2.0.0 queued", b""]) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        entry = relay.enqueue(list(FOUR))

        def first_batch_recorded() -> bool:
            return [r.address for r in relay.queue.load(entry.id).pending] == FOUR[2:]

        async def main() -> None:
            task = asyncio.get_running_loop().create_task(relay.worker.run())
            try:
                await asyncio.wait_for(_until(lambda: len(server.transactions) == 2), 5)
                await asyncio.wait_for(_until(first_batch_recorded), 2)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await relay.worker.aclose(0.1)  # the second batch's reply never comes

        asyncio.run(main())
        server.release.set()
        _wait_closed(server)
    assert [r.address for r in relay.queue.load(entry.id).pending] == FOUR[2:]


def test_a_session_cut_short_by_a_stop_logs_its_recipients_deferred(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session the stop cut short (past its grace) left no line for the recipients it
    was sending: the operator saw them neither sent nor deferred, though they wait for
    the next start. Each now has its deferred line, as any deferral's; those recorded
    sent before the stop have none, and the next start sends the others. Here the stop
    came after the second batch's end of data, before its reply: the line says the
    message may go twice, and it does (RFC 5321 §6.1)."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(extra_ehlo=LIMITED, data_replies=[b"250 2.0.0 queued", b""]) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        entry = relay.enqueue(list(FOUR))

        def first_batch_recorded() -> bool:
            return [r.address for r in relay.queue.load(entry.id).pending] == FOUR[2:]

        async def steps() -> None:
            await _within(lambda: len(server.transactions) == 2)
            await _within(first_batch_recorded)

        _while_running(relay, steps)  # its stop cuts the second batch's session short
        server.release.set()
        _wait_closed(server)
    cut = _lines(caplog, "delivery cut short by shutdown")
    assert [line.split(",")[0] for line in cut] == [f"{entry.id}: to=<{a}>" for a in FOUR[2:]]
    for line in cut:
        assert f", relay=mx.pqr.example[127.0.0.1]:{server.port}, " in line
        assert line.endswith(f", dsn=4.3.0, status=deferred ({CUT_IN_END_OF_DATA})")
    assert [r.address for r in relay.queue.load(entry.id).pending] == FOUR[2:]
    caplog.clear()
    with remote() as again:  # the next start
        restarted = _relay(tmp_path, again.port, retry_after=3600.0)
        restarted.worker.schedule(restarted.queue.load(entry.id))
        _run(restarted, restarted.empty)
    assert [t.recipients for t in again.transactions] == [FOUR[2:]]
    assert [line.split(",")[0] for line in _lines(caplog, "status=sent")] == [
        f"{entry.id}: to=<{address}>" for address in FOUR[2:]
    ]
    assert not _lines(caplog, "cut short")


@pytest.mark.parametrize("chunking", [False, True], ids=["dot", "bdat-last"])
def test_a_cut_after_the_end_of_data_says_the_message_may_be_sent_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, chunking: bool
) -> None:
    """The stop came after the final dot (or BDAT LAST) went out, before its reply: the
    exchanger may have the message, and the next start sends it again (RFC 5321 §6.1).
    The line said only "delivery cut short by shutdown"; it now says so, as Postfix."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(chunking=chunking, data_replies=[b""]) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        entry = relay.enqueue(["a@pqr.example", "b@pqr.example"])

        async def steps() -> None:
            await _within(lambda: len(server.transactions) == 1)  # the end is in

        _while_running(relay, steps)
        server.release.set()
        _wait_closed(server)
    cut = _lines(caplog, "cut short")
    assert [line.split(",")[0] for line in cut] == [
        f"{entry.id}: to=<{a}>" for a in ("a@pqr.example", "b@pqr.example")
    ]
    for line in cut:
        assert line.endswith(
            ", dsn=4.3.0, status=deferred (delivery cut short by shutdown while sending end "
            "of data -- message may be sent more than once)"
        )
    assert server.transactions[0].recipients == ["a@pqr.example", "b@pqr.example"]
    with remote() as again:  # the next start: the second copy the line warned of
        restarted = _relay(tmp_path, again.port, retry_after=3600.0)
        restarted.worker.schedule(restarted.queue.load(entry.id))
        _run(restarted, restarted.empty)
    assert [t.recipients for t in again.transactions] == [["a@pqr.example", "b@pqr.example"]]


def _feed(connection: ClientConnection, data: bytes) -> None:
    connection.receive_data(data)
    while connection.next_event() not in (NEED_DATA, PAUSED):
        pass


def test_an_unanswered_pipelined_batch_covers_its_own_recipients_only() -> None:
    """A LIMITS batch sent in one write (MAIL, RCPT, BDAT LAST), cut before any reply
    to it: the machine's ``transaction`` was still the batch before (it moves on with
    the first reply to the next MAIL), and the cut was said to cover every recipient of
    the domain: u1, refused 450 earlier and pending, and u2, already sent, were said
    "may be sent more than once". Only the batch's own recipient, u3, is now; and with
    the batch's MAIL and RCPT answered, only u3 still."""
    mailbox = parse_mailbox
    connection = ClientConnection("mail.abc.example")
    _feed(connection, b"220 mx\r\n")
    connection.send(Ehlo("mail.abc.example"))
    _feed(connection, b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
    router = Router(["abc.example"])
    deliveries = {
        address: router.route(mailbox(address), authenticated=True)
        for address in ("u1@pqr.example", "u2@pqr.example", "u3@pqr.example")
    }
    remote = {a: d for a, d in deliveries.items() if isinstance(d, RemoteDelivery)}
    assert len(remote) == 3
    connection.send(Mail(mailbox("john@abc.example")))
    connection.send(Rcpt(mailbox("u1@pqr.example")))
    connection.send(Rcpt(mailbox("u2@pqr.example")))
    connection.send(Bdat(3, last=True))
    connection.send(MessageData(b"abc"))
    _feed(connection, b"250 ok\r\n450 4.2.1 busy\r\n250 ok\r\n250 2.0.0 queued\r\n")
    assert not _fates(remote, end_unanswered(connection))
    connection.send(Mail(mailbox("john@abc.example")))
    connection.send(Rcpt(mailbox("u3@pqr.example")))
    connection.send(Bdat(3, last=True))
    connection.send(MessageData(b"abc"))
    assert list(_fates(remote, end_unanswered(connection))) == ["u3@pqr.example"]
    _feed(connection, b"250 ok\r\n250 ok\r\n")
    assert list(_fates(remote, end_unanswered(connection))) == ["u3@pqr.example"]


def test_a_cut_before_the_end_of_data_warns_of_no_second_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A session cut before its end of data went out (here: its exchanger never
    answered the connection) cannot have delivered: its line says no more than that."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    hung: list[asyncio.Event] = []
    relay = _hanging_relay(tmp_path, hung, zone=HUNG_AND_HEALTHY)
    entry = relay.enqueue(["a@hung1.example"])

    async def steps() -> None:
        await _within(lambda: len(hung) == 1)

    _while_running(relay, steps)
    (line,) = _lines(caplog, "cut short")
    assert line.startswith(f"{entry.id}: to=<a@hung1.example>, relay=mx.hung1.example[127.0.0.1]:")
    assert line.endswith(", dsn=4.3.0, status=deferred (delivery cut short by shutdown)")


def test_a_recipient_refused_for_good_before_the_stop_is_logged_with_its_refusal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """u1 was refused 550 in the first LIMITS batch; the stop cut the second batch's
    session short. A failure is logged and written only with its bounce, at the round's
    end, which the stop skips: u1 had no line at all, yet was pending on disk, tried
    again after the restart. Its line now says it was refused, and why it is tried
    again; the next start bounces it then."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(
        extra_ehlo=LIMITED,
        rcpt_replies={"u1@pqr.example": b"550 5.1.1 no such user"},
        data_replies=[b"250 2.0.0 queued", b""],
    ) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        entry = relay.enqueue(list(FOUR))

        def first_batch_recorded() -> bool:  # u1's outcome was taken with u2's
            return [r.address for r in relay.queue.load(entry.id).pending] == [
                "u1@pqr.example",
                *FOUR[2:],
            ]

        async def steps() -> None:
            await _within(lambda: len(server.transactions) == 2)
            await _within(first_batch_recorded)

        _while_running(relay, steps)
        server.release.set()
        _wait_closed(server)
    relay_field = f"relay=mx.pqr.example[127.0.0.1]:{server.port}"
    assert _lines(caplog, "to=<u1@pqr.example>") == [
        f"{entry.id}: to=<u1@pqr.example>, {relay_field}, delay={_delay(caplog, 'u1')}, "
        "dsn=4.3.0, status=deferred (delivery cut short by shutdown before its bounce was "
        "made (failed: 550 5.1.1 no such user); tried again at the next start)"
    ]
    cut = _lines(caplog, "cut short")
    assert [line.split(",")[0] for line in cut] == [
        f"{entry.id}: to=<{a}>" for a in ("u1@pqr.example", *FOUR[2:])
    ]
    (u2,) = _lines(caplog, "to=<u2@pqr.example>")  # recorded sent: no more
    assert "status=sent" in u2
    caplog.clear()
    with remote(rcpt_replies={"u1@pqr.example": b"550 5.1.1 no such user"}) as again:
        restarted = _relay(tmp_path, again.port, retry_after=3600.0)
        restarted.worker.schedule(restarted.queue.load(entry.id))
        _run(restarted, restarted.empty)
    assert [t.recipients for t in again.transactions] == [FOUR[2:]]
    assert len(_lines(caplog, "to=<u1@pqr.example>")) == 1
    assert "status=bounced" in _lines(caplog, "to=<u1@pqr.example>")[0]


def _delay(caplog: pytest.LogCaptureFixture, local_part: str) -> str:
    """The ``delay=`` field of ``local_part``'s line (what the test cannot know)."""
    (line,) = _lines(caplog, f"to=<{local_part}@")
    return line.split("delay=", 1)[1].split(",", 1)[0]


TWO_DOMAINS: Final = (
    "pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n"
    "xyz.example MX 10 mx.xyz.example\nmx.xyz.example A 127.0.0.1\n"
)


def test_a_failure_at_one_destination_is_logged_when_the_stop_cuts_another(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The message's pqr.example session ended, its one recipient refused 550; its
    xyz.example session was cut by the stop. The pqr.example recipient had no line and
    stayed pending on disk: each now has its own line."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(
        rcpt_replies={"a@pqr.example": b"550 5.1.1 no such user"}, data_replies=[b""]
    ) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0, zone=TWO_DOMAINS)
        entry = relay.enqueue(["a@pqr.example", "b@xyz.example"])

        async def steps() -> None:
            # b's end of data is in, and a's session, the other, has closed (after its
            # outcome was taken: before QUIT).
            await _within(
                lambda: (
                    (server.connections, server.open_connections, len(server.transactions))
                    == (2, 1, 1)
                )
            )

        _while_running(relay, steps)
        server.release.set()
        _wait_closed(server)
    (a_line,) = _lines(caplog, "to=<a@pqr.example>")
    assert "status=deferred (delivery cut short by shutdown before its bounce was made " in a_line
    assert "(failed: 550 5.1.1 no such user)" in a_line
    (b_line,) = _lines(caplog, "to=<b@xyz.example>")
    assert f"relay=mx.xyz.example[127.0.0.1]:{server.port}, " in b_line
    assert b_line.endswith(f"status=deferred ({CUT_IN_END_OF_DATA})")
    assert [r.address for r in relay.queue.load(entry.id).pending] == [
        "a@pqr.example",
        "b@xyz.example",
    ]


def test_a_stop_in_the_bounce_step_logs_the_refused_recipient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """a@ refused 550, b@ accepted: the round's sessions were over, and the stop came in
    the bounce step at its end (its reads wait for the worker's share of the threads,
    which may be full). a@ stayed pending on disk, tried again at the next start, with
    no line at all: the lines came only from a stop in the sessions. They are now
    written for the whole round, wherever the stop lands in it."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(rcpt_replies={"a@pqr.example": b"550 5.1.1 no such user"}) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        entered = asyncio.Event()

        async def hanging_bounce(*args: object, **kwargs: object) -> None:
            entered.set()
            await asyncio.Event().wait()

        relay.worker.reports.bounce = hanging_bounce  # type: ignore[method-assign]  # a stand-in
        entry = relay.enqueue(["a@pqr.example", "b@pqr.example"])

        async def steps() -> None:
            await _within(entered.is_set)

        _while_running(relay, steps)
    assert [r.address for r in relay.queue.load(entry.id).pending] == ["a@pqr.example"]
    (a_line,) = _lines(caplog, "to=<a@pqr.example>")
    assert a_line.startswith(
        f"{entry.id}: to=<a@pqr.example>, relay=mx.pqr.example[127.0.0.1]:{server.port}, "
    )
    assert a_line.endswith(
        ", dsn=4.3.0, status=deferred (delivery cut short by shutdown before its bounce was "
        "made (failed: 550 5.1.1 no such user); tried again at the next start)"
    )
    (b_line,) = _lines(caplog, "to=<b@pqr.example>")  # recorded sent: no more
    assert "status=sent" in b_line


def test_a_stop_while_the_bounce_reads_the_message_logs_the_refused_recipient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, nothing of the worker replaced: the bounce's read of the message (a
    large one, a slow disk) outlasts the stop's grace."""
    from smtpcore.server.queue import QueuedContent

    caplog.set_level(logging.INFO, "smtpcore.mail")
    reading = threading.Event()
    go_on = threading.Event()
    returned = QueuedContent.returned

    def slow(self: QueuedContent, limit: int) -> bytes | None:
        reading.set()
        go_on.wait(30)
        return returned(self, limit)

    monkeypatch.setattr(QueuedContent, "returned", slow)
    with remote(rcpt_replies={"a@pqr.example": b"550 5.1.1 no such user"}) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        entry = relay.enqueue(["a@pqr.example", "b@pqr.example"])

        async def steps() -> None:
            await _within(reading.is_set)

        _while_running(relay, steps, after_stop=go_on.set)
    assert [r.address for r in relay.queue.load(entry.id).pending] == ["a@pqr.example"]
    (a_line,) = _lines(caplog, "to=<a@pqr.example>")
    assert "status=deferred (delivery cut short by shutdown before its bounce was made " in a_line


def test_a_stop_in_a_local_copy_logs_an_earlier_local_failure_and_the_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """nosuch@ failed 5.1.1 at once (its line waits for the bounce at the round's end),
    and the stop came while john@'s copy was written, before any relay session: no line
    for either, both pending on disk. Each now has its line; and so has a@, which the
    round had not come to yet (it had none: Postfix logs every recipient of a delivery
    it interrupts), once, at ``relay=none``."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote() as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        writing = threading.Event()
        go_on = threading.Event()
        deliver_queued = relay.worker.mailboxes.deliver_queued

        def slow(*args: Any, **kwargs: Any) -> tuple[Path, bool]:
            writing.set()
            go_on.wait(30)
            return deliver_queued(*args, **kwargs)

        relay.worker.mailboxes.deliver_queued = slow  # type: ignore[method-assign]  # held
        entry = relay.enqueue(["nosuch@abc.example", "john@abc.example", "a@pqr.example"])

        async def steps() -> None:
            await _within(writing.is_set)

        _while_running(relay, steps, after_stop=go_on.set)
    assert [r.address for r in relay.queue.load(entry.id).pending] == [
        "nosuch@abc.example",
        "john@abc.example",
        "a@pqr.example",
    ]
    assert _lines(caplog, "to=<nosuch@abc.example>") == [
        f"{entry.id}: to=<nosuch@abc.example>, relay=local, "
        f"delay={_delay(caplog, 'nosuch')}, dsn=4.3.0, status=deferred (delivery cut short "
        "by shutdown before its bounce was made (failed: 550 5.1.1 no such mailbox here); "
        "tried again at the next start)"
    ]
    (john,) = _lines(caplog, "to=<john@abc.example>")
    assert ", relay=local, " in john
    assert john.endswith(", dsn=4.3.0, status=deferred (delivery cut short by shutdown)")
    (a_line,) = _lines(caplog, "to=<a@pqr.example>")  # not come to: not tried
    assert a_line.startswith(f"{entry.id}: to=<a@pqr.example>, relay=none, ")
    assert a_line.endswith(", dsn=4.3.0, status=deferred (delivery cut short by shutdown)")
    assert [line.split(".example>")[0] for line in _lines(caplog, "cut short")] == [
        f"{entry.id}: to=<{a}" for a in ("nosuch@abc", "john@abc", "a@pqr")
    ]
    assert not server.connections


def test_a_stop_as_the_bounce_is_recorded_logs_the_failure_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The bounce was made and a@'s line written with it; the stop came while its record
    was written. a@ has that one line, not a second saying its bounce was not made."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(rcpt_replies={"a@pqr.example": b"550 5.1.1 no such user"}) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        writing = threading.Event()
        go_on = threading.Event()
        update = relay.queue.update

        def held(entry: QueueEntry) -> None:
            if any(r.status is RecipientStatus.FAILED for r in entry.recipients):
                writing.set()
                go_on.wait(30)
            update(entry)

        relay.queue.update = held  # type: ignore[method-assign]  # held
        entry = relay.enqueue(["a@pqr.example", "b@pqr.example"])

        async def steps() -> None:
            await _within(writing.is_set)

        _while_running(relay, steps, after_stop=go_on.set)
    (a_line,) = _lines(caplog, "to=<a@pqr.example>")
    assert "status=bounced" in a_line
    assert not relay.queue.load(entry.id).pending  # the record landed after the stop


class _HangingResolver:
    """Asked for a domain's exchangers, never answers."""

    def __init__(self) -> None:
        self.asked = 0

    async def mx(self, domain: str) -> Sequence[MXRecord]:
        self.asked += 1
        await asyncio.Event().wait()
        raise AssertionError("never answered")

    async def addresses(self, host: str) -> Sequence[IPv4Address | IPv6Address]:
        await asyncio.Event().wait()
        raise AssertionError("never answered")


def test_a_stop_during_the_lookup_logs_each_recipient_deferred_at_relay_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop while the domain's exchangers are looked up: no session yet, each
    recipient is cut short at ``relay=none``, and waits on disk."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote() as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0, resolve_timeout=3600.0)
        resolver = _HangingResolver()
        relay.worker.resolver = resolver
        entry = relay.enqueue(["a@pqr.example", "b@pqr.example"])

        async def steps() -> None:
            await _within(lambda: resolver.asked >= 1)

        _while_running(relay, steps)
    cut = _lines(caplog, "cut short")
    assert [line.split(",")[0] for line in cut] == [
        f"{entry.id}: to=<{a}>" for a in ("a@pqr.example", "b@pqr.example")
    ]
    assert all(", relay=none, " in line for line in cut)
    assert [r.address for r in relay.queue.load(entry.id).pending] == [
        "a@pqr.example",
        "b@pqr.example",
    ]
    assert not server.connections


def test_limits_mailmax_sessions_follow_one_another_within_the_round(tmp_path: Path) -> None:
    """RFC 9422 §4.1: an exchanger that takes one transaction a session is healthy: the
    rest go in new sessions to it at once, not after a backoff, nor to the next one."""
    limits = (b"LIMITS MAILMAX=1 RCPTMAX=1",)
    with remote(extra_ehlo=limits) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        relay.enqueue(list(FOUR[:3]))
        _run(relay, relay.empty, timeout=5.0)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [[a] for a in FOUR[:3]]
    assert server.connections == 3 and relay.reports() == []
    assert not relay.worker.failures.is_bad("mx.pqr.example")


def test_a_5xx_at_rcpt_bounces_though_the_session_then_fails(tmp_path: Path) -> None:
    """RFC 5321 §4.2.1: the 550 is permanent, whatever the 421 after the content says of
    the session; the accepted recipient waits."""
    with remote(
        rcpt_replies={"u2@pqr.example": b"550 5.1.1 no such user"},
        data_replies=[b"421 4.3.2 shutting down"],
    ) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        relay.enqueue(["u1@pqr.example", "u2@pqr.example"])
        _run(relay, lambda: relay.entries()[0].attempts >= 1)
        _wait_closed(server)
    (raw,) = relay.reports()
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in raw and b"u1@pqr" not in raw
    (entry,) = relay.entries()
    (waiting,) = entry.pending
    assert waiting.address == "u1@pqr.example" and waiting.reply == "421 4.3.2 shutting down"


def test_a_recipient_one_exchanger_took_is_recorded_before_the_next_is_tried(
    tmp_path: Path,
) -> None:
    """The second exchanger never greets: meanwhile the queue file already says the
    first took a@, so a stop or crash now cannot send it twice."""
    with (
        remote(rcpt_replies={"b@pqr.example": b"451 4.3.0 try later"}) as first,
        socket.create_server(("127.0.0.2", first.port)),  # never accepts: no greeting
    ):
        relay = _relay(tmp_path, first.port, zone=TWO_MX, retry_after=3600.0)
        entry = relay.enqueue(["a@pqr.example", "b@pqr.example"])

        def recorded() -> bool:
            return not relay.queue.load(entry.id).recipients[0].pending

        _run(relay, recorded, timeout=5.0)
        _wait_closed(first)
    a, b = relay.queue.load(entry.id).recipients
    assert a.status is RecipientStatus.SENT and b.pending
    assert [t.recipients for t in first.transactions] == [["a@pqr.example"]]


def test_a_message_is_recorded_sent_before_quit_is_answered(tmp_path: Path) -> None:
    """QUIT right after the message, not kept for the next one (``relaycache``)."""
    with remote(answer_quit=False) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0, connection_cache_time=0.0)
        entry = relay.enqueue(["brendon@pqr.example"])

        def recorded() -> bool:
            return not relay.queue.load(entry.id).recipients[0].pending

        _run(relay, recorded, timeout=5.0)
        _wait_closed(server)
    assert len(server.transactions) == 1


def test_a_quit_never_answered_holds_the_round_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message is recorded sent before QUIT, but the round waited for QUIT's reply
    as for any command's, five minutes, and the message's next domain, its report and
    the operator's actions on it with it. The relay waits ``QUIT_TIMEOUT`` (here 0.3 s)."""
    monkeypatch.setattr(delivery, "QUIT_TIMEOUT", 0.3, raising=False)
    zone = ZONE + "xyz.example MX 10 mx.pqr.example\n"
    with remote(answer_quit=False) as server:
        relay = _relay(tmp_path, server.port, zone=zone, retry_after=3600.0)
        relay.enqueue(["brendon@pqr.example", "a@xyz.example"])
        _run(relay, relay.empty, timeout=5.0)
        _wait_closed(server)
    # Two destinations: delivered at once, in either order.
    assert sorted(t.recipients for t in server.transactions) == [
        ["a@xyz.example"],
        ["brendon@pqr.example"],
    ]


def test_a_round_stopped_as_it_records_closes_without_quit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round the stop cancelled while it recorded what the exchanger took (a slow
    disk) said QUIT on its way out and waited ``QUIT_TIMEOUT`` (10 s) for a reply that
    never came: ``--stop-timeout 1s`` stopped in 11. Cancelled, it closes at once."""
    with remote(answer_quit=False) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        disk = SlowWrites(relay.queue, monkeypatch, hold=5)
        relay.enqueue(["brendon@pqr.example"])

        async def main() -> float:
            loop = asyncio.get_running_loop()
            task = loop.create_task(relay.worker.run())
            try:
                await asyncio.to_thread(disk.writing.wait, 5)
                (delivery_round,) = relay.worker._running.values()
                started = loop.time()
                delivery_round.cancel()
                await asyncio.wait((delivery_round,), timeout=15)
                return loop.time() - started
            finally:
                disk.back.set()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await relay.worker.aclose(1.0)

        took = asyncio.run(main())
        _wait_closed(server)
    assert len(server.transactions) == 1
    assert took < 2


# -- a hostile exchanger's words, kept bounded -------------------------------------------


def _huge_reply(code: bytes, status: bytes) -> bytes:
    """A reply as long as the client reads (100 lines of 4,000 characters, about 400 KB):
    kept whole, it made a 40 MB envelope of 100 recipients, and as much log."""
    lines = [code + b"-" + status + b" " + b"%04d" % number * 1000 for number in range(99)]
    return b"\r\n".join([*lines, code + b" " + status + b" end"])


HUGE_STORED: Final = 3000
"""Octets a recipient's stored reply, or a log line, may take: the cut (2,048
characters) and what goes around it."""


@pytest.mark.parametrize(
    "hostile",
    [
        {"rcpt_replies": dict.fromkeys(FOUR[:3], _huge_reply(b"450", b"4.2.0"))},
        {"rcpt_replies": dict.fromkeys(FOUR[:3], _huge_reply(b"550", b"5.1.1"))},
        {"rcpt_replies": {FOUR[0]: _huge_reply(b"421", b"4.3.2")}},
        {"greeting": _huge_reply(b"421", b"4.3.2")},
    ],
    ids=["450 to rcpt", "550 to rcpt", "421 to rcpt", "421 greeting"],
)
def test_a_huge_reply_leaves_an_envelope_and_log_lines_of_bounded_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, hostile: dict[str, object]
) -> None:
    """Postfix keeps at most 2,048 octets of a reply (``smtp_chat_resp``, against "a
    denial of service attack"): a hop's words reach the queue file, the log, ``queue
    list`` and the reports cut to about that, their first line(s) kept."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(**hostile) as server:
        relay = _relay(tmp_path, server.port, retry_after=3600.0)
        relay.enqueue(list[str | QueuedRecipient](FOUR[:3]))
        _run(relay, lambda: relay.empty() or all(e.attempts for e in relay.entries()))
        _wait_closed(server)
    for envelope in (relay.queue.directory / "envelopes").iterdir():
        assert envelope.stat().st_size < 3 * HUGE_STORED
    for entry in relay.entries():
        for recipient in entry.recipients:
            assert len((recipient.reply or "").encode()) < HUGE_STORED
            assert "more characters]" in (recipient.reply or "")
    lines = [r.getMessage() for r in caplog.records]
    assert _lines(caplog, "to=<u1@pqr.example>")
    assert max(len(line.encode()) for line in lines) < HUGE_STORED
    for report in relay.reports():
        assert len(report) < 3 * HUGE_STORED + len(MESSAGE) + 4000


@given(st.text(max_size=3 * MAX_KEPT_TEXT))
def test_kept_text_is_bounded_and_keeps_the_start(text: str) -> None:
    kept = kept_text(text)
    assert len(kept) <= MAX_KEPT_TEXT
    if len(text) <= MAX_KEPT_TEXT:
        assert kept == text
    else:
        start, mark = kept.rsplit(" [... ", 1)
        assert text.startswith(start) and mark == f"{len(text) - len(start)} more characters]"


@given(st.text(max_size=3 * MAX_KEPT_TEXT))
def test_the_end_of_data_warning_is_never_cut_off(why: str) -> None:
    """However long the error (a lost connection quotes the replies it left behind),
    the warning stays whole at its end, within the bound."""
    kept = while_sending_end_of_data(why)
    warning = " while sending end of data -- message may be sent more than once"
    assert len(kept) <= MAX_KEPT_TEXT and kept.endswith(warning)
    assert kept_text(why, warning) == kept
    assert kept[: -len(warning)] == kept_text(why, "x" * len(warning))[: -len(warning)]
    assert "delivery cut short by shutdown" + warning == CUT_IN_END_OF_DATA


@given(sst.replies(codes=[250, 421, 450, 550]), st.integers(1, 100))
def test_a_reply_of_any_length_is_kept_with_its_code_and_status_first(
    reply: Reply, copies: int
) -> None:
    """A reply the client could read (up to 100 lines) is kept whole when short, and
    always begins as the server wrote it: the code and status a reader greps for."""
    longer = Reply(reply.code, list(reply.lines) * copies, reply.status)
    status = "" if longer.status is None else f"{longer.status} "
    last = len(longer.lines) - 1
    whole = " ".join(
        f"{longer.code}{' ' if index == last else '-'}{status}{line}".rstrip()
        for index, line in enumerate(longer.lines)
    )
    kept = reply_text(longer)
    assert len(kept) <= MAX_KEPT_TEXT
    assert (
        kept == whole if len(whole) <= MAX_KEPT_TEXT else whole.startswith(kept.split(" [... ")[0])
    )


# -- one destination cannot hold every delivery ------------------------------------------

SLOW_AND_FAST = (
    "slow.example MX 10 mx.slow.example\n"
    "mx.slow.example A 127.0.0.2\n"
    "fast.example MX 10 mx.fast.example\n"
    "mx.fast.example A 127.0.0.3\n"
)


@contextlib.contextmanager
def _slow_and_fast() -> Iterator[tuple[ScriptedRemote, ScriptedRemote]]:
    """Two exchangers: ``slow`` takes each message and never answers its final dot
    (until released, the test's end), ``fast`` delivers at once."""
    with (
        remote(host="127.0.0.2", data_reply=b"", hold=60.0) as slow,
        remote(host="127.0.0.3", port=slow.port) as fast,
    ):
        yield slow, fast


async def _within(done: Callable[[], bool], timeout: float = 10.0) -> None:
    await asyncio.wait_for(_until(done), timeout)


def _while_running(
    relay: Relay,
    steps: Callable[[], Awaitable[None]],
    after_stop: Callable[[], object] = lambda: None,
) -> None:
    """Run the worker while ``steps`` runs, then stop it; then call ``after_stop`` (to
    let a thread the stop found busy end: the loop waits for its threads as it
    closes)."""

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(relay.worker.run())
        try:
            await steps()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            try:
                await relay.worker.aclose(0.5)
            finally:
                after_stop()

    asyncio.run(main())


def test_a_destination_that_never_answers_the_dot_does_not_starve_another(
    tmp_path: Path,
) -> None:
    """More messages to a hanging exchanger than the worker delivers at once held every
    delivery (each waits 10 minutes for the dot's reply, RFC 5321 §4.5.3.2.6), and mail
    to any other destination waited behind them. One destination now holds at most
    ``destination_concurrency`` of them (Postfix's
    ``default_destination_concurrency_limit``)."""
    with _slow_and_fast() as (slow, fast):
        relay = _relay(tmp_path, slow.port, zone=SLOW_AND_FAST, retry_after=3600.0)
        limit = relay.worker.destination_concurrency
        assert limit < relay.worker.concurrency
        for number in range(relay.worker.concurrency + 1):
            relay.enqueue([f"u{number}@slow.example"])

        async def steps() -> None:
            await _within(lambda: len(slow.transactions) >= limit)
            relay.enqueue(["bob@fast.example"])
            await _within(lambda: bool(fast.transactions))
            assert not slow.release.is_set() and slow.open_connections <= limit

        _while_running(relay, steps)
    assert [t.recipients for t in fast.transactions] == [["bob@fast.example"]]
    assert len(slow.transactions) == limit


def test_a_messages_recipients_at_a_hanging_destination_do_not_hold_the_others(
    tmp_path: Path,
) -> None:
    """A message's domains went one after another: bob@fast.example waited for the
    slow one's ten minutes. Each destination's recipients now go at once, each
    recorded as its exchanger answers."""
    with _slow_and_fast() as (slow, fast):
        relay = _relay(tmp_path, slow.port, zone=SLOW_AND_FAST, retry_after=3600.0)
        entry = relay.enqueue(["u@slow.example", "bob@fast.example"])

        async def steps() -> None:
            await _within(lambda: bool(fast.transactions) and bool(slow.transactions))
            await _within(lambda: relay.queue.load(entry.id).recipients[1].reply is not None)
            assert not slow.release.is_set()
            waiting, sent = relay.queue.load(entry.id).recipients
            assert (waiting.status, sent.status) == (RecipientStatus.PENDING, RecipientStatus.SENT)

        _while_running(relay, steps)
    assert [t.recipients for t in fast.transactions] == [["bob@fast.example"]]


def test_the_smart_host_is_one_destination_whatever_the_recipients_domains(
    tmp_path: Path,
) -> None:
    """With ``--relay-host`` the relay connects to one server for every domain: that
    server is the destination the limit counts, so messages to two domains that it
    never answers hold ``destination_concurrency`` deliveries, not one each."""
    with _slow_and_fast() as (slow, _):
        relay = _relay(
            tmp_path,
            slow.port,
            smart_host=("127.0.0.2", slow.port),
            retry_after=3600.0,
            destination_concurrency=1,
        )
        relay.enqueue(["a@slow.example"])
        second = relay.enqueue(["b@elsewhere.example"])

        async def steps() -> None:
            await _within(lambda: bool(slow.transactions))
            await asyncio.sleep(0.3)  # the second message's round has come and gone
            assert slow.open_connections == 1
            (waiting,) = relay.queue.load(second.id).recipients
            assert waiting.status is RecipientStatus.PENDING and waiting.reply is None

        _while_running(relay, steps)
    assert len(slow.transactions) == 1


def test_with_a_smart_host_the_destination_limit_defaults_to_the_global_one(
    tmp_path: Path,
) -> None:
    """With ``--relay-host`` every remote message goes to one destination: the default
    of half the sessions capped all outbound mail at 10 where the relay held 20. Set
    or not, the option keeps its meaning; left out, the smart host gets them all."""
    smart = _relay(tmp_path / "smart", 25, smart_host=("127.0.0.2", 25), concurrency=20)
    assert smart.worker.destination_concurrency == 20
    chosen = _relay(
        tmp_path / "chosen", 25, smart_host=("127.0.0.2", 25), destination_concurrency=3
    )
    assert chosen.worker.destination_concurrency == 3
    direct = _relay(tmp_path / "direct", 25, concurrency=20)
    assert direct.worker.destination_concurrency == 10


def test_a_message_gone_while_it_waits_in_line_leaves_no_place_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message waiting in a destination's line, its files removed by hand, then acted
    on (``queue flush``): the action found it gone and returned without taking it out
    of the line, so the next place given back was handed to it for ever, and a newer
    message to that destination was never delivered."""
    monkeypatch.setattr(delivery, "PLACE_RETRY", 0.2)
    zone = "a.example MX 10 mx.a.example\nmx.a.example A 127.0.0.1\n"
    relay = _relay(tmp_path, 25, zone=zone, retry_after=3600.0, destination_concurrency=1)
    worker = relay.worker
    hold = asyncio.Event()
    delivered: list[str] = []

    async def deliver(
        attempt: object,
        relay_name: str,
        entry: QueueEntry,
        remaining: dict[str, object],
        content: object,
        policy: object,
        record: Callable[[dict[str, Outcome]], Awaitable[None]],
        cut_after_end: object = None,
    ) -> dict[str, Outcome]:
        if "m1@a.example" in remaining:
            await hold.wait()
        delivered.extend(remaining)
        sent = {a: Outcome(RecipientStatus.SENT, "2.0.0", "250 ok", relay_name) for a in remaining}
        await record(sent)
        return sent

    monkeypatch.setattr(worker.exchanger, "deliver", deliver)

    async def steps() -> None:
        try:
            relay.enqueue(["m1@a.example"])
            await _within(lambda: worker.places.in_use("a.example") == 1)
            gone = relay.enqueue(["m2@a.example"])
            await _within(lambda: worker.places.awaited_by(gone.id) == {"a.example"})
            await _within(lambda: gone.id not in worker._running)
            relay.queue.envelope_path(gone.id).unlink()
            relay.queue.content_path(gone.id).unlink()
            assert await worker.actions.act(gone.id, "flush")
            assert not worker.places.awaited_by(gone.id)
            relay.enqueue(["m3@a.example"])
            await asyncio.sleep(0.1)
            hold.set()
            await _within(lambda: "m3@a.example" in delivered, timeout=5.0)
            await _within(lambda: worker.places.in_use("a.example") == 0)
        finally:
            hold.set()

    _while_running(relay, steps)
    assert delivered == ["m1@a.example", "m3@a.example"]


def test_a_full_destination_does_not_hold_a_messages_other_recipients(
    tmp_path: Path,
) -> None:
    """A message started only when each of its destinations had room: with the slow
    destination's places all taken, bob@fast.example waited behind u@slow.example. The
    slow group now waits alone, not counted as an attempt, and bob goes at once."""
    with _slow_and_fast() as (slow, fast):
        relay = _relay(tmp_path, slow.port, zone=SLOW_AND_FAST, retry_after=3600.0)
        limit = relay.worker.destination_concurrency
        for number in range(limit):
            relay.enqueue([f"u{number}@slow.example"])

        async def steps() -> None:
            await _within(lambda: len(slow.transactions) >= limit)
            entry = relay.enqueue(["u@slow.example", "bob@fast.example"])
            await _within(lambda: bool(fast.transactions))
            await _within(lambda: relay.queue.load(entry.id).recipients[1].reply is not None)
            held = relay.queue.load(entry.id)
            waiting, sent = held.recipients
            assert (waiting.status, waiting.reply) == (RecipientStatus.PENDING, None)
            assert sent.status is RecipientStatus.SENT and held.attempts == 0
            assert len(slow.transactions) == limit and not relay.reports()

        _while_running(relay, steps)
    assert [t.recipients for t in fast.transactions] == [["bob@fast.example"]]


def test_outbound_sessions_are_bounded_whatever_the_fan_out(tmp_path: Path) -> None:
    """The limit counted messages, and each opened a session per destination at once:
    4 messages to 40 domains held 160 connections. Each session now holds one of the
    worker's ``concurrency`` places, whatever the messages' destinations."""
    domains = 12
    zone = "".join(
        f"d{i}.example MX 10 mx.d{i}.example\nmx.d{i}.example A 127.0.0.1\n"
        for i in range(domains)
    )
    with remote(data_reply=b"", hold=60.0) as hop:
        relay = _relay(tmp_path, hop.port, zone=zone, retry_after=3600.0, concurrency=4)
        for number in range(3):
            relay.enqueue([f"u{number}@d{i}.example" for i in range(domains)])

        async def steps() -> None:
            await _within(lambda: len(hop.transactions) >= 4)
            await asyncio.sleep(0.5)  # time for any session beyond the bound to open
            assert hop.most_open_connections == 4

        _while_running(relay, steps)
        hop.release.set()


class _HangingSession:
    """A client whose exchanger takes the connection and never answers: ``connect()``
    waits until its event is set (never, unless the test frees that session), then
    fails as a lost connection would."""

    def __init__(self, hung: list[asyncio.Event]) -> None:
        self.released = asyncio.Event()
        hung.append(self.released)

    async def connect(self) -> None:
        await self.released.wait()
        raise SMTPConnectionError("connection lost")


def _hung_or_default(hung: list[asyncio.Event]) -> Callable[..., object]:
    """A client factory whose sessions to ``mx.hung*`` hang (each one's event added to
    ``hung``), and whose others are real clients (to a healthy test server)."""

    def client_factory(host: str, port: int, *, server_hostname: str, **options: Any) -> object:
        if server_hostname.startswith("mx.hung"):
            return _HangingSession(hung)
        return default_client(host, port, server_hostname=server_hostname, **options)

    return client_factory


HUNG_AND_HEALTHY: Final = "".join(
    f"{name}.example MX 10 mx.{name}.example\nmx.{name}.example A 127.0.0.1\n"
    for name in ("hung1", "hung2", "fast")
)


def test_hanging_destinations_hold_sessions_but_not_rounds(tmp_path: Path) -> None:
    """Two destinations whose exchangers never answer, each at its destination limit,
    held every session and, since ``concurrency`` also counted messages in a round, every
    round: a local copy and mail to a healthy domain waited for a hung session to end
    (up to 10 minutes per exchanger, RFC 5321 §4.5.3.2). Rounds are now bounded apart
    (``active_limit``, Postfix's ``qmgr_message_active_limit``): the local copy is
    delivered at once, and the healthy domain's mail takes the first session given
    back, the sessions still never more than ``concurrency``."""
    hung: list[asyncio.Event] = []

    with remote() as fast:
        relay = _relay(
            tmp_path,
            fast.port,
            zone=HUNG_AND_HEALTHY,
            retry_after=3600.0,
            concurrency=4,
            destination_concurrency=2,
            client_factory=_hung_or_default(hung),
        )

        async def steps() -> None:
            for number in range(2):
                relay.enqueue([f"u{number}@hung1.example"])
                relay.enqueue([f"u{number}@hung2.example"])
            await _within(lambda: len(hung) == 4)
            relay.enqueue(["john@abc.example"], sender="someone@pqr.example")
            relay.enqueue(["bob@fast.example"])
            await _within(lambda: bool(relay.reports()), timeout=3.0)
            await _within(lambda: relay.worker.places.in_use("fast.example") == 1)
            await asyncio.sleep(0.2)
            assert not fast.transactions and fast.connections == 0  # no session token free
            hung[0].set()
            await _within(lambda: bool(fast.transactions), timeout=5.0)
            assert len(hung) == 4

        _while_running(relay, steps)
    assert [t.recipients for t in fast.transactions] == [["bob@fast.example"]]


def test_rounds_and_the_jobs_waiting_for_a_session_are_bounded(tmp_path: Path) -> None:
    """Each destination job waiting for a session token costs memory (about 4 KB), up
    to ``active_limit`` rounds times the destinations of each message: the default
    limit is 10 rounds per session (it was 1,000, whatever ``concurrency``: up to
    400 MB at 100 destinations a message), and it holds however much is due."""
    assert _relay(tmp_path / "a", 25, concurrency=3).worker.active_limit == 30
    assert _relay(tmp_path / "b", 25).worker.active_limit == 10 * 20
    hung: list[asyncio.Event] = []
    zone = "".join(
        f"d{n}.example MX 10 mx.hung{n}.example\nmx.hung{n}.example A 127.0.0.1\n"
        for n in range(12)
    )
    relay = _relay(
        tmp_path / "c",
        25,
        zone=zone,
        retry_after=3600.0,
        concurrency=2,
        destination_concurrency=1,
        active_limit=4,
        client_factory=lambda *a, **k: _HangingSession(hung),
    )
    worker = relay.worker

    async def steps() -> None:
        for number in range(6):
            relay.enqueue([f"u@d{2 * number}.example", f"u@d{2 * number + 1}.example"])
        await _within(lambda: len(hung) == 2 and worker._sessions.waiting == 4 * 2 - 2)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(worker._running) == 4 and worker._sessions.waiting == 6 and len(hung) == 2

    _while_running(relay, steps)


def test_an_inbound_commit_waits_behind_no_more_than_concurrency_worker_calls(
    tmp_path: Path,
) -> None:
    """The worker's rounds (up to ``active_limit``) share the server's threads with
    the inbound sessions, which commit their message there at the end of DATA. All of
    them handed their disk work over at once, and an inbound commit waited behind every
    round's (seconds behind large local copies: a client timed out and sent its
    accepted message again). The worker now has at most ``concurrency`` calls there, as
    when rounds were bounded by it: counted in order, on a one-thread executor kept
    busy while the rounds begin."""
    relay = _relay(tmp_path, 25, concurrency=2, active_limit=40)
    for _ in range(30):
        relay.enqueue(["john@abc.example"], sender="someone@pqr.example")
    started = 0
    busy = threading.Event()

    class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
        def submit(  # type: ignore[override]  # counted, then as the base class
            self, fn: Callable[..., object], /, *args: object, **kwargs: object
        ) -> concurrent.futures.Future[object]:
            def counted() -> object:
                nonlocal started
                started += 1
                return fn(*args, **kwargs)

            return super().submit(counted)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(CountingExecutor(max_workers=1))
        blocked = loop.run_in_executor(None, busy.wait)
        worker = loop.create_task(relay.worker.run())
        try:
            await _within(lambda: len(relay.worker._running) == 30)
            for _ in range(20):
                await asyncio.sleep(0)  # every round reaches its first disk step
            inbound = loop.create_task(relay.worker.threads.run(lambda: started))
            await asyncio.sleep(0)
        finally:
            busy.set()
        await blocked
        position = await inbound
        await _within(relay.empty)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await relay.worker.aclose(0.5)
        return position - 2  # less the call that kept the thread busy, and its own

    ahead = asyncio.run(main())
    assert ahead <= relay.worker.concurrency
    assert len(relay.reports()) == 30


@pytest.mark.parametrize("action", ["hold", "delete"])
def test_hold_or_delete_withdraws_a_round_that_waits_for_a_session(
    tmp_path: Path, action: str
) -> None:
    """A message whose round waits for a session token (hanging exchangers hold them
    all) was held or deleted only when its round ended, that is once a hung session
    ended (up to 10 minutes per exchanger), and a deleted one was then sent. The action
    now cuts the round short: its job leaves the token line, its recipient stays
    pending, not attempted, and the action is written at once; the token given back
    later goes to no one."""
    hung: list[asyncio.Event] = []

    with remote() as fast:
        relay = _relay(
            tmp_path,
            fast.port,
            zone=HUNG_AND_HEALTHY,
            retry_after=3600.0,
            concurrency=2,
            destination_concurrency=1,
            client_factory=_hung_or_default(hung),
        )
        worker = relay.worker

        async def steps() -> None:
            relay.enqueue(["u@hung1.example"])
            relay.enqueue(["u@hung2.example"])
            await _within(lambda: len(hung) == 2)
            stopped = relay.enqueue(["bob@fast.example"])
            await _within(lambda: worker._sessions.waiting == 1)
            applied = await worker.apply(QueueCommand(action, (stopped.id,)))
            await _within(lambda: applied.written.done(), timeout=5.0)
            assert applied.written.result() is True
            assert worker.places.in_use("fast.example") == 0
            hung[0].set()  # a session ends: its token is free, and nobody waits for it
            await _within(lambda: worker._sessions.free == 1)
            assert not fast.transactions and fast.connections == 0
            held = [entry for entry in relay.entries() if entry.id == stopped.id]
            if action == "delete":
                assert not held
            else:
                (entry,) = held
                assert entry.held and entry.attempts == 0
                assert [r.status for r in entry.recipients] == [RecipientStatus.PENDING]
            assert not relay.reports()  # no bounce, no delay notice

        _while_running(relay, steps)


def test_a_held_message_leaves_the_line_where_it_waited_for_a_place(tmp_path: Path) -> None:
    """A message held while one of its sessions hangs at one destination also waited in
    line for a place at another. It stayed in that line: the place given back there
    went to it, its withdrawn round could not take it up, and the place sat reserved
    and unused until the hung session ended, while the next message in line waited
    (minutes, an audit found). The hold takes it out of every line at once, so the
    place goes to the next in line."""
    hung: list[asyncio.Event] = []
    relay = _hanging_relay(tmp_path, hung, zone=HUNG_AND_HEALTHY, concurrency=4)
    worker = relay.worker

    async def steps() -> None:
        relay.enqueue(["a@hung1.example"])  # holds hung1's one place
        await _within(lambda: len(hung) == 1)
        held = relay.enqueue(["b@hung2.example", "c@hung1.example"])
        await _within(lambda: len(hung) == 2)  # its hung2 session hangs
        await _within(lambda: worker.places.awaited_by(held.id) == {"hung1.example"})
        after = relay.enqueue(["d@hung1.example"])
        await _within(lambda: worker.places.awaited_by(after.id) == {"hung1.example"})
        await worker.apply(QueueCommand("hold", (held.id,)))
        await _within(lambda: not worker.places.awaited_by(held.id))
        hung[0].set()  # hung1's session ends: its place goes to the next in line
        await _within(lambda: len(hung) == 3)  # the next message's session at hung1
        assert not hung[1].is_set()  # the held message's session still hangs
        await _release_until(hung, lambda: not worker._running)

    _while_running(relay, steps)


async def _release_until(hung: list[asyncio.Event], done: Callable[[], bool]) -> None:
    """End every hung session, those opened meanwhile too, until ``done()``."""

    async def releasing() -> None:
        while not done():
            for released in hung:
                released.set()
            await asyncio.sleep(0.01)

    await asyncio.wait_for(releasing(), 10.0)


def _hanging_relay(
    tmp_path: Path,
    hung: list[asyncio.Event],
    *,
    zone: str,
    smart_host: tuple[str, int] | None = None,
    concurrency: int = 20,
) -> Relay:
    """A relay whose every exchanger takes the connection and never answers, one
    session at a time per destination."""
    return _relay(
        tmp_path,
        25,
        zone=zone,
        smart_host=smart_host,
        retry_after=3600.0,
        concurrency=concurrency,
        destination_concurrency=1,
        client_factory=lambda *a, **k: _HangingSession(hung),
    )


def test_a_wait_for_a_place_is_logged_once_as_it_begins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "waiting for a place at" was logged at a round's end only (a message whose other
    session hung said nothing until it ended), then again at each round that found it
    still in line (every ``PLACE_RETRY`` seconds), and at the end of a held message's
    round. It is now logged once, as the message joins the line."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    monkeypatch.setattr(delivery, "PLACE_RETRY", 0.05)
    hung: list[asyncio.Event] = []
    relay = _hanging_relay(tmp_path, hung, zone=HUNG_AND_HEALTHY, concurrency=4)
    worker = relay.worker
    rounds: list[str] = []
    begin_round = worker._begin_round

    def counted(queue_id: str) -> None:
        rounds.append(queue_id)
        begin_round(queue_id)

    monkeypatch.setattr(worker, "_begin_round", counted)

    def waits(queue_id: str) -> list[str]:
        return _lines(caplog, f"{queue_id}: waiting for a place at")

    async def steps() -> None:
        relay.enqueue(["a@hung1.example"])  # holds hung1's one place
        await _within(lambda: len(hung) == 1)
        split = relay.enqueue(["b@hung2.example", "c@hung1.example"])
        await _within(lambda: len(hung) == 2)  # its hung2 session hangs, its round runs
        await _within(lambda: bool(waits(split.id)))
        assert not hung[1].is_set() and split.id in worker._running
        alone = relay.enqueue(["d@hung1.example"])
        await _within(lambda: rounds.count(alone.id) >= 4)  # it still waits, round after round
        assert waits(alone.id) == [
            f"{alone.id}: waiting for a place at hung1.example (destination concurrency 1)"
        ]
        await worker.apply(QueueCommand("hold", (split.id,)))
        await _within(lambda: not worker.places.awaited_by(split.id))
        hung[1].set()  # the held message's round ends
        await _within(lambda: split.id not in worker._running)
        await _within(lambda: rounds.count(alone.id) >= 6)
        await _release_until(hung, lambda: not worker._running)
        assert len(waits(split.id)) == 1  # none at its held round's end

    _while_running(relay, steps)
    assert len(_lines(caplog, "waiting for a place at")) == 2


@pytest.mark.parametrize("action", ["hold", "delete"])
def test_hold_or_delete_opens_no_further_smart_host_session(tmp_path: Path, action: str) -> None:
    """Through a smart host one job delivers every domain of a message, one session
    after another, and it looked at the withdrawal only before its session token: a
    ``hold`` or ``delete`` given during the first domain's session still opened a
    session for each domain after it. It now opens none; their recipients stay
    pending, not attempted."""
    hung: list[asyncio.Event] = []
    relay = _hanging_relay(
        tmp_path,
        hung,
        zone="relay.example A 127.0.0.1\n",
        smart_host=("relay.example", 25),
    )
    worker = relay.worker

    async def steps() -> None:
        stopped = relay.enqueue([f"u@d{n}.example" for n in range(3)])
        await _within(lambda: len(hung) == 1)
        applied = await worker.apply(QueueCommand(action, (stopped.id,)))
        await _release_until(hung, applied.written.done)
        assert applied.written.result() is True
        assert len(hung) == 1
        if action == "hold":
            (entry,) = relay.entries()
            assert entry.held
            assert [(r.address, r.pending, r.reply) for r in entry.recipients[1:]] == [
                ("u@d1.example", True, None),
                ("u@d2.example", True, None),
            ]

    _while_running(relay, steps)


def test_a_token_handed_over_as_the_round_is_withdrawn_opens_no_session(
    tmp_path: Path,
) -> None:
    """A ``delete`` that comes in the loop turn in which a session's token is handed to
    a waiting job of the deleted message: the job, resumed with its token after the
    round was withdrawn, opened its session all the same. It now gives the token back
    and opens none."""
    hung: list[asyncio.Event] = []
    relay = _hanging_relay(tmp_path, hung, zone=HUNG_AND_HEALTHY, concurrency=1)
    worker = relay.worker
    tokens = worker._sessions
    give_back = tokens.give_back

    async def steps() -> None:
        relay.enqueue(["a@hung1.example"])
        await _within(lambda: len(hung) == 1)
        victim = relay.enqueue(["x@fast.example"])
        await _within(lambda: tokens.waiting == 1)
        applied: list[asyncio.Task[Applied]] = []

        def give_back_then_delete() -> None:
            give_back()  # the hung session ends: its token goes to the victim's job
            del tokens.give_back
            command = QueueCommand("delete", (victim.id,))
            applied.append(asyncio.get_running_loop().create_task(worker.apply(command)))
            worker._cut_round_short(victim.id)  # what apply() does once it runs

        tokens.give_back = give_back_then_delete  # type: ignore[method-assign]  # one turn
        hung[0].set()
        await _within(lambda: bool(applied))
        written = (await applied[0]).written
        await _release_until(hung, written.done)
        assert written.result() is True
        assert len(hung) == 1
        assert tokens.free == 1

    _while_running(relay, steps)


@pytest.mark.parametrize("write", ["envelope", "delete", "delivered"])
def test_a_write_lands_though_its_caller_is_cancelled_while_the_disk_share_is_full(
    tmp_path: Path, write: str
) -> None:
    """The worker's writes that must land (an envelope after an exchanger's 250, the
    operator's ``queue delete``, a delivered message's removal) waited for a slot of
    its share of the threads, and a stop that cancelled them in that wait dropped them:
    a recipient the exchanger had accepted stayed pending on disk and was sent again
    after the restart. They are handed to their thread at once, outside the share:
    here cancelled while other rounds' disk work holds every slot, they land."""
    relay = _relay(tmp_path, 25, concurrency=2)
    worker = relay.worker
    entry = relay.enqueue(["bob@pqr.example"])
    busy = threading.Event()

    async def loaded(queue_id: str) -> QueueEntry:
        return entry

    def writing() -> Coroutine[Any, Any, object]:
        if write == "envelope":
            return worker._write(replace(entry, attempts=7))
        if write == "delete":
            worker._load = loaded  # type: ignore[method-assign]  # read before the share fills
            return worker.actions._act_unscheduled(entry.id, "delete")
        sent = replace(entry.recipients[0], status=RecipientStatus.SENT)
        done = entry.with_recipients({sent.address: sent})
        return worker.settlement.finish_round(done, relay.queue.content(entry.id), {}, {})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=3))
        blockers = [loop.create_task(worker.disk.run(busy.wait)) for _ in range(2)]
        await _within(lambda: worker.disk._slots.free == 0)
        task = loop.create_task(writing())
        for _ in range(3):
            await asyncio.sleep(0)
        task.cancel()  # a stop
        await asyncio.gather(task, return_exceptions=True)
        busy.set()
        await asyncio.gather(*blockers)
        idle = loop.create_future()
        worker.threads.then(lambda: loop.call_soon_threadsafe(idle.set_result, None))
        await idle

    asyncio.run(main())
    if write == "envelope":
        assert relay.queue.load(entry.id).attempts == 7
    else:
        assert not relay.entries()


def test_a_message_waiting_for_two_busy_destinations_is_not_starved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one place per destination, a steady flow to a.example and to b.example (a new
    message queued as the last is delivered) and an older message to both: it started
    only when both were free at the same moment, which never came. A place given back
    now goes to the message that has waited longest at that destination.

    The first flow messages are held until the older message waits in both lines: on a
    loaded machine it could reach them only after several 50 ms deliveries had gone
    by, each a flow message ahead of it."""
    zone = "".join(f"{d}.example MX 10 mx.{d}.example\nmx.{d}.example A 127.0.0.1\n" for d in "ab")
    relay = _relay(tmp_path, 25, zone=zone, retry_after=3600.0, destination_concurrency=1)
    delivered: list[str] = []
    busy = dict.fromkeys(("a.example", "b.example"), 0)
    most_busy = 0
    waiting = asyncio.Event()

    async def deliver(
        attempt: object,
        relay_name: str,
        entry: QueueEntry,
        remaining: dict[str, object],
        *_: object,
        cut_after_end: object = None,
    ) -> dict[str, Outcome]:
        nonlocal most_busy
        domain = next(iter(remaining)).split("@")[1]
        busy[domain] += 1
        most_busy = max(most_busy, busy[domain])
        if next(iter(remaining)).startswith("flow0@"):
            await waiting.wait()
        await asyncio.sleep(0.05)
        busy[domain] -= 1
        for address in remaining:
            delivered.append(address)
            name, domain = address.split("@")
            if name.startswith("flow") and int(name[4:]) < 40:
                relay.enqueue([f"flow{int(name[4:]) + 1}@{domain}"])
        return {a: Outcome(RecipientStatus.SENT, "2.0.0", "250 ok", relay_name) for a in remaining}

    monkeypatch.setattr(relay.worker.exchanger, "deliver", deliver)
    relay.enqueue(["flow0@a.example"])
    relay.enqueue(["flow0@b.example"])

    async def steps() -> None:
        await _within(lambda: busy["a.example"] == busy["b.example"] == 1)
        older = relay.enqueue(["m@a.example", "m@b.example"]).id
        places = relay.worker.places
        await _within(lambda: all(places.in_line(d, older) for d in ("a.example", "b.example")))
        waiting.set()
        await _within(lambda: {"m@a.example", "m@b.example"} <= set(delivered))

    _while_running(relay, steps)
    assert most_busy == 1
    for address in ("m@a.example", "m@b.example"):
        domain = address.split("@")[1]
        before = [a for a in delivered[: delivered.index(address)] if a.endswith(domain)]
        assert len(before) <= 2  # one flow message ahead of it, perhaps the next


def test_a_stop_while_the_record_is_written_keeps_every_accepted_recipient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two destinations answer while the envelope's writes are slow, then the server
    stops. Every recipient an exchanger accepted must be recorded sent on disk: one
    left pending is sent again at the next start (RFC 5321 §6.1: no duplicates).

    A regression guard, not a proof of the write path that hands each write to its
    thread before any await (:class:`_Envelope`): it passes on the sequential code
    before that path (edb8779) too."""
    zone = ZONE + "xyz.example MX 10 mx.xyz.example\nmx.xyz.example A 127.0.0.1\n"
    with remote() as server:
        relay = _relay(tmp_path, server.port, zone=zone, retry_after=3600.0)
        disk = SlowWrites(relay.queue, monkeypatch, hold=0.5)
        entry = relay.enqueue(["a@pqr.example", "b@xyz.example"])

        async def main() -> None:
            task = asyncio.get_running_loop().create_task(relay.worker.run())
            await _within(lambda: len(server.transactions) >= 2)
            await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await relay.worker.aclose(0.0)
            assert not relay.worker._running
            landed = asyncio.Event()
            loop = asyncio.get_running_loop()
            relay.worker.threads.then(lambda: loop.call_soon_threadsafe(landed.set))
            await asyncio.wait_for(landed.wait(), 10)

        asyncio.run(main())
        disk.back.set()
    accepted = {r for t in server.transactions for r in t.recipients}
    on_disk = relay.queue.load(entry.id).recipients
    assert accepted == {"a@pqr.example", "b@xyz.example"}
    assert all(r.status is RecipientStatus.SENT for r in on_disk)


# -- DSN parameters that cannot go on as they are --------------------------------------------


def test_an_orcpt_too_long_in_the_form_the_exchanger_takes_is_left_off(tmp_path: Path) -> None:
    """116 characters raw (an SMTPUTF8 transaction took them), over RFC 3461 §4.2's 500
    as utf-8-addr-xtext to an exchanger without SMTPUTF8: the message goes without it."""
    orcpt = "utf-8;" + "\u00f6" * 100 + "@x.example"
    with remote(dsn=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(
            [QueuedRecipient("brendon@pqr.example", notify="FAILURE", orcpt=orcpt)],
            params=(("SMTPUTF8", None),),
        )
        _run(relay, relay.empty, timeout=5.0)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.rcpt_lines == [b"RCPT TO:<brendon@pqr.example> NOTIFY=FAILURE\r\n"]
    assert relay.reports() == []


def test_what_the_client_refuses_to_send_fails_that_message_for_good(tmp_path: Path) -> None:
    """A queued parameter the client will not write (a RET that is neither FULL nor
    HDRS) is refused again on every retry: the message bounces at once."""
    with remote(dsn=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], params=(("RET", "SOMETIMES"),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()), timeout=5.0)
        _wait_closed(server)
    assert server.transactions == [] and server.connections == 1
    (raw,) = relay.reports()
    assert b"Status: 5.3.0" in raw and b"RET must be FULL or HDRS" in raw


@pytest.mark.parametrize(
    ("options", "missing"),
    [
        ({"chunking": False}, b"BINARYMIME"),
        ({"chunking": True}, b"BINARYMIME"),
        ({"chunking": False, "extra_ehlo": (b"BINARYMIME",)}, b"CHUNKING"),
    ],
    ids=["DATA", "CHUNKING", "BINARYMIME without CHUNKING"],
)
def test_binarymime_content_to_an_exchanger_without_binarymime_bounces_5_6_3(
    tmp_path: Path, options: dict[str, object], missing: bytes
) -> None:
    """RFC 3030 §3: BINARYMIME content goes only with ``BODY=BINARYMIME`` to a server
    that offers it, and only with BDAT (CHUNKING). One with 8BITMIME alone (CHUNKING
    or not) would get it without the parameter, binary taken for 8-bit text, over
    DATA even, where its bare CR and LF and long lines are not the message; one with
    BINARYMIME but not CHUNKING got ``MAIL ... BODY=BINARYMIME`` and then a bounce
    ``554 5.3.0`` when the client refused DATA for it. Refused before MAIL, as 8-bit
    content is without 8BITMIME."""
    with remote(**options) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=BINARY, params=(("BODY", "BINARYMIME"),))
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.mail_lines == [] and server.transactions == []
    (raw,) = relay.reports()
    assert b"Status: 5.6.3" in raw and b"does not offer " + missing in raw


def test_binarymime_content_goes_as_it_is_to_an_exchanger_that_offers_it(
    tmp_path: Path,
) -> None:
    with remote(chunking=True, extra_ehlo=(b"BINARYMIME",)) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["brendon@pqr.example"], content=BINARY, params=(("BODY", "BINARYMIME"),))
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.mail_lines == [b"MAIL FROM:<john@abc.example> BODY=BINARYMIME\r\n"]
    (transaction,) = server.transactions
    assert transaction.content.endswith(BINARY) and relay.reports() == []


# -- queued addresses that no longer parse ------------------------------------------------
# The queue keeps addresses as text, parsed again each round: one queued under an older,
# looser rule (or written by hand) may no longer parse. It fails alone and for good.

_UNPARSEABLE_RECIPIENT = "a\u202eb@pqr.example"  # a bidi override: never a valid address
_UNPARSEABLE_SENDER = '"s\u2028x"@abc.example'  # a line separator in the local part
_UTF8 = (("SMTPUTF8", None),)
_IN_MAILDIR = MESSAGE.replace(b"\r\n", b"\n")  # a maildir file has local line ends


def _postmaster_reports(relay: Relay) -> list[bytes]:
    box = Maildir(relay.mailboxes.config.mailbox_path("postmaster@abc.example"))
    return [path.read_bytes() for path in box.messages()]


def test_a_queued_recipient_that_no_longer_parses_bounces_with_5_1_3_alone(
    tmp_path: Path,
) -> None:
    """The other recipient of the message is delivered; the bad one bounces at once,
    its address escaped in the report (RFC 5198 §2), and the message leaves the queue."""
    with remote(smtputf8=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue([_UNPARSEABLE_RECIPIENT, "brendon@pqr.example"], params=_UTF8)
        _run(relay, lambda: relay.empty() and bool(relay.reports()), timeout=5)
        _wait_closed(server)
    assert [t.recipients for t in server.transactions] == [["brendon@pqr.example"]]
    (raw,) = relay.reports()
    text = raw.decode("utf-8")
    assert "Status: 5.1.3" in text and "\u202e" not in text
    assert "bad recipient address a\\u202eb@pqr.example" in " ".join(text.split())


def test_a_message_whose_only_recipient_no_longer_parses_leaves_the_queue(
    tmp_path: Path,
) -> None:
    with remote(smtputf8=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue([_UNPARSEABLE_RECIPIENT], params=_UTF8)
        _run(relay, lambda: relay.empty() and bool(relay.reports()), timeout=5)
        assert server.mail_lines == []
    (raw,) = relay.reports()
    assert b"Status: 5.1.3" in raw


def test_a_queued_sender_that_no_longer_parses_is_still_delivered_to_a_local_recipient(
    tmp_path: Path,
) -> None:
    """A local mailbox needs no MAIL FROM: the message is delivered, with the null
    Return-Path (RFC 5321 §4.4), since any escaped form of the sender would name another
    address; the sender is shown, escaped, in a comment (RFC 5322 §3.2.2)."""
    with remote(smtputf8=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(["john@abc.example"], sender=_UNPARSEABLE_SENDER, params=_UTF8)
        _run(relay, lambda: relay.empty() and bool(relay.reports()), timeout=5)
        assert server.mail_lines == []
    (raw,) = relay.reports()
    assert raw == b'Return-Path: <> ("s\\\\u2028x"@abc.example)\n' + _IN_MAILDIR
    assert _postmaster_reports(relay) == []


_DSN_CHOICES = [
    pytest.param("NEVER", (), id="NOTIFY=NEVER"),
    pytest.param(None, (("RET", "HDRS"),), id="RET=HDRS"),
]


@pytest.mark.parametrize(("notify", "ret"), _DSN_CHOICES)
def test_a_queued_sender_that_no_longer_parses_fails_remote_recipients_and_tells_postmaster(
    tmp_path: Path, notify: str | None, ret: tuple[tuple[str, str | None], ...]
) -> None:
    """Sent on, the sender would go out raw in MAIL FROM: the remote recipient fails at
    once with 5.1.7 (RFC 3463 §3.2); the local one is delivered. The refusal is the
    server's own, so the postmaster (RFC 5321 §4.5.1) hears of it with the whole
    message, whatever NOTIFY and RET asked."""
    recipients: list[str | QueuedRecipient] = [
        QueuedRecipient("brendon@pqr.example", notify=notify),
        QueuedRecipient("john@abc.example", notify=notify),
    ]
    with remote(smtputf8=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(recipients, sender=_UNPARSEABLE_SENDER, params=_UTF8 + ret)
        _run(relay, lambda: relay.empty() and bool(_postmaster_reports(relay)), timeout=5)
        assert server.mail_lines == []
    (delivered,) = relay.reports()
    assert delivered.endswith(_IN_MAILDIR)
    (raw,) = _postmaster_reports(relay)
    assert b"Status: 5.1.7" in raw and "\u2028".encode() not in raw
    assert b"brendon@pqr.example" in raw and b"Final-Recipient: rfc822; john@" not in raw
    assert b"body line" in raw
    assert b"\nTo: <postmaster@abc.example>\n" in raw and b'To: <"s' not in raw
    assert b'sender "s\\u2028x"@abc.example' in b" ".join(raw.split())


def test_a_queued_recipient_that_no_longer_parses_is_told_to_postmaster_despite_never(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The refusal is the server's own (its rule changed after the message was taken):
    the sender asked NOTIFY=NEVER and hears nothing, but the postmaster (RFC 5321
    §4.5.1) gets the report with the whole message, and the log says so at WARNING, so
    that mail once accepted is not dropped unseen."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    recipients: list[str | QueuedRecipient] = [
        QueuedRecipient(_UNPARSEABLE_RECIPIENT, notify="NEVER")
    ]
    with remote(smtputf8=True) as server:
        relay = _relay(tmp_path, server.port)
        relay.enqueue(recipients, params=(*_UTF8, ("RET", "HDRS")))
        _run(relay, lambda: relay.empty() and bool(_postmaster_reports(relay)), timeout=5)
        assert server.mail_lines == []
    assert relay.reports() == []
    (raw,) = _postmaster_reports(relay)
    assert b"Status: 5.1.3" in raw and b"body line" in raw
    assert b"\nTo: <postmaster@abc.example>\n" in raw
    assert b"sender john@abc.example" in b" ".join(raw.split())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("5.1.3" in r.getMessage() for r in warnings)


def test_an_expired_message_with_a_recipient_that_no_longer_parses_leaves_the_queue(
    tmp_path: Path,
) -> None:
    """Past its lifetime the waiting recipient bounces as well; nothing loops."""
    replies = {"brendon@pqr.example": b"451 4.3.0 try later"}
    with remote(smtputf8=True, rcpt_replies=replies) as server:
        relay = _relay(tmp_path, server.port, max_queue_age=0.3)
        relay.enqueue([_UNPARSEABLE_RECIPIENT, "brendon@pqr.example"], params=_UTF8)
        _run(relay, lambda: relay.empty() and len(relay.reports()) == 2, timeout=5)
    lines = [line for raw in relay.reports() for line in raw.splitlines()]
    statuses = sorted(line for line in lines if line.startswith(b"Status:"))
    assert statuses == [b"Status: 4.3.0", b"Status: 5.1.3"]
