"""Whatever a server sends, the clients raise only their own errors.

The machines are fuzzed with hostile bytes (``tests/test_machines_fuzz.py``);
this fuzzes the drivers above them, on the three clients. A server answers
each command the client writes, mostly as a server would, otherwise with
drawn bytes (replies or responses a client must refuse or survive, hostile
bytes: see :mod:`smtpcore.testing.strategies`), perhaps writes drawn bytes
behind one answer in the same write, and closes when it has no more answers
or the client writes nothing for a moment. A session (log in, send or
fetch, end) may succeed or raise the client's error (``SMTPError``,
``POP3Error``): never the machine's ``ProtocolError`` or anything else.
Before the fixes that came with it, the POP3 property failed on every
client in every run (bytes behind an answer escaped the next command as the
machine's error), and the SMTP one in some runs (bytes behind a 354 let the
machine's refusal to send escape ``send_message``; the tests in
``tests/test_client_stale_reply.py`` pin that case down).
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers import ADAPTERS, run
from smtpcore.testing import Call, ScriptedConnection, ScriptedServer, script
from smtpcore.testing import strategies as sst

QUIET = 0.1
"""Seconds the server waits for the client's next line before it closes."""

SMTP_RIGHT = {
    b"EHLO": b"250-hostile.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
    b"DATA": b"354 go ahead\r\n",
    b"QUIT": b"221 2.0.0 bye\r\n",
}
SMTP_HOSTILE = st.one_of(
    sst.reply_lines(hostile=True), sst.hostile_bytes(sent_by="smtp-server", max_lines=3)
)
POP3_RIGHT = {
    b"CAPA": b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n",
    b"STAT": b"+OK 2 20\r\n",
    b"LIST": b"+OK\r\n1 10\r\n2 10\r\n.\r\n",
    b"UIDL": b"+OK\r\n1 a\r\n2 b\r\n.\r\n",
    b"RETR": b"+OK\r\nSubject: x\r\n\r\n..dotted\r\n.\r\n",
}
POP3_HOSTILE = st.one_of(
    sst.pop3_response_lines(hostile=True), sst.hostile_bytes(sent_by="pop3-server", max_lines=3)
)

Answers = tuple[int, dict[int, bytes]]
Glued = tuple[int, bytes] | None


def answers(hostile: st.SearchStrategy[bytes]) -> st.SearchStrategy[Answers]:
    """How many commands the server answers, and the few it answers with drawn
    bytes (by their place); it answers the others as a server would."""
    drawn = st.dictionaries(st.integers(min_value=0, max_value=11), hostile, max_size=3)
    return st.tuples(st.integers(min_value=2, max_value=12), drawn)


def glued(hostile: st.SearchStrategy[bytes]) -> st.SearchStrategy[Glued]:
    """Which answer has drawn bytes behind it in the same write, and the bytes."""
    return st.one_of(st.none(), st.tuples(st.integers(min_value=0, max_value=7), hostile))


class AnsweringServer:
    """Writes ``greeting``, then an answer to each command it reads (the content of
    a message after a 354 is read whole first): the drawn one for that command
    if there is one, else the answer a server would give (``right`` by verb,
    else ``usual``), with ``glued`` bytes behind the answer it names; it closes
    after as many commands as ``answers`` says."""

    def __init__(
        self,
        greeting: bytes,
        answers: Answers,
        glued: Glued,
        right: dict[bytes, bytes],
        usual: bytes,
    ) -> None:
        self.greeting = greeting
        self.count, self.drawn = answers
        self.glued = glued
        self.right = right
        self.usual = usual
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(QUIET)
        with conn, conn.makefile("rb") as lines, contextlib.suppress(OSError):
            conn.sendall(self.greeting)
            for index in range(self.count):
                line = lines.readline(1000)
                if not line:
                    return
                answer = self.drawn.get(index) or self.right.get(line[:4].upper(), self.usual)
                behind = self.glued[1] if self.glued and self.glued[0] == index else b""
                conn.sendall(answer + behind)
                if answer.startswith(b"354"):
                    while (content := lines.readline(1000)) and content != b".\r\n":
                        pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MESSAGE = b"Subject: x\r\n\r\n.dot\r\n"
RECIPIENTS = ["b@pqr.example", "c@pqr.example"]


def smtp_session(adapter: str, port: int) -> None:
    """Send a message and say NOOP; the client's own error is an outcome too."""
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    if adapter == "sync":
        with (
            contextlib.suppress(module.SMTPError),
            module.SMTPClient("127.0.0.1", port, timeout=5, starttls=False) as client,
        ):
            client.send_message(MESSAGE, "a@abc.example", RECIPIENTS)
            client.noop()
        return

    async def session() -> None:
        with contextlib.suppress(module.SMTPError):
            async with module.SMTPClient("127.0.0.1", port, starttls=False) as client:
                await client.send_message(MESSAGE, "a@abc.example", RECIPIENTS)
                await client.noop()

    run(adapter, session)


def pop3_session(adapter: str, port: int) -> None:
    """Log in, list, fetch and delete; the client's own error is an outcome too."""
    module: Any = importlib.import_module(f"smtpcore.{adapter}")
    if adapter == "sync":
        with (
            contextlib.suppress(module.POP3Error),
            module.POP3Client(
                "127.0.0.1", port, timeout=5, stls=False, allow_plaintext_auth=True
            ) as client,
        ):
            client.login("u", "p")
            client.list()
            client.retrieve(1)
            client.delete(1)
        return

    async def session() -> None:
        with contextlib.suppress(module.POP3Error):
            async with module.POP3Client(
                "127.0.0.1", port, stls=False, allow_plaintext_auth=True
            ) as client:
                await client.login("u", "p")
                await client.list()
                await client.retrieve(1)
                await client.delete(1)

    run(adapter, session)


PROTOCOLS: dict[str, tuple[bytes, st.SearchStrategy[bytes], dict[bytes, bytes], bytes, Any]] = {
    "smtp": (
        b"220 hostile.test ESMTP\r\n",
        SMTP_HOSTILE,
        SMTP_RIGHT,
        b"250 2.0.0 ok\r\n",
        smtp_session,
    ),
    "pop3": (b"+OK hostile.test ready\r\n", POP3_HOSTILE, POP3_RIGHT, b"+OK\r\n", pop3_session),
}
"""A greeting that lets the session go on, what hostile answers are drawn from,
the server's right answers by verb and its usual one, and the session."""


@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("adapter", ["sync", *ADAPTERS])
@SETTINGS
@given(data=st.data())
def test_a_session_raises_only_the_clients_own_errors(
    protocol: str, adapter: str, data: st.DataObject
) -> None:
    greeting, hostile, right, usual, session = PROTOCOLS[protocol]
    server = AnsweringServer(
        data.draw(st.one_of(*[st.just(greeting)] * 3, hostile), label="greeting"),
        data.draw(answers(hostile), label="answers"),
        data.draw(glued(hostile), label="glued"),
        right,
        usual,
    )
    try:
        session(adapter, server.port)
    finally:
        server.close()


class DrippingServer:
    """Writes a greeting (``greeting``, an SMTP one by default) one octet at a time,
    ``interval`` seconds apart, until the client closes; each octet comes well within
    the client's timeout."""

    def __init__(self, interval: float, greeting: bytes = b"220 " + b"x" * 400 + b"\r\n") -> None:
        self.interval = interval
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def _drip(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            for octet in self.greeting:
                try:
                    conn.sendall(bytes([octet]))
                    if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                        return  # the client gave up
                except BlockingIOError:  # nothing from the client: it waits on
                    pass
                except OSError:  # the client gave up
                    return
                threading.Event().wait(self.interval)

    def __enter__(self) -> DrippingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_a_reply_dripped_an_octet_at_a_time_ends_within_the_timeout(adapter: str) -> None:
    """RFC 5321 §4.5.3.2 times the wait for a reply: a greeting whose octets each come
    well within the timeout, but which would take 8 s in all, ends the session
    once the timeout has passed from its first octet."""
    mod = importlib.import_module(f"smtpcore.{adapter}")
    with DrippingServer(0.02) as server:
        if adapter == "sync":
            client = mod.SMTPClient("127.0.0.1", server.port, timeout=0.3)
            with pytest.raises(mod.SMTPTimeout, match="of its start"):
                client.connect()
            return
        client = mod.SMTPClient("127.0.0.1", server.port, timeouts=mod.Timeouts.uniform(0.3))

        async def go() -> None:
            await client.connect()

        with pytest.raises(mod.SMTPTimeout, match="of its start"):
            run(adapter, go)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_a_pop3_status_line_dripped_an_octet_at_a_time_ends_within_the_timeout(
    adapter: str,
) -> None:
    """A POP3 status line, the greeting here, must end within its timeout of its first
    octet, as an SMTP reply must: each octet in time would hold the session for as
    long as the line limit allows."""
    mod = importlib.import_module(f"smtpcore.{adapter}")
    with DrippingServer(0.02, b"+OK " + b"x" * 400 + b"\r\n") as server:
        if adapter == "sync":
            client = mod.POP3Client("127.0.0.1", server.port, timeout=0.3)
            with pytest.raises(mod.POP3Timeout, match="of its start"):
                client.connect()
            return
        client = mod.POP3Client("127.0.0.1", server.port, timeouts=mod.POP3Timeouts.uniform(0.3))

        async def go() -> None:
            await client.connect()

        with pytest.raises(mod.POP3Timeout, match="of its start"):
            run(adapter, go)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_pop3_content_slower_in_all_than_the_timeout_is_read(adapter: str) -> None:
    """Multi-line content keeps a timeout per read: a large message over a slow link
    may rightly take longer in all than any one wait."""
    mod = importlib.import_module(f"smtpcore.{adapter}")
    lines = [b"line %d" % n for n in range(8)]

    def slow_content(conn: ScriptedConnection) -> None:
        conn.send(b"+OK\r\n")
        for line in lines:
            time.sleep(0.05)
            conn.send(line + b"\r\n")
        conn.send(b".\r\n")

    steps = [
        *script("S: +OK\nC: CAPA\nS: -ERR\nC: USER u\nS: +OK\nC: PASS p\nS: +OK\nC: RETR 1"),
        Call(slow_content),
        *script("C: QUIT\nS: +OK"),
    ]
    expected = b"".join(line + b"\r\n" for line in lines)
    with ScriptedServer(steps) as server:
        if adapter == "sync":
            with mod.POP3Client(
                "127.0.0.1", server.port, timeout=0.2, allow_plaintext_auth=True
            ) as pop:
                pop.login("u", "p")
                assert pop.retrieve(1) == expected
            return

        async def go() -> None:
            timeouts = mod.POP3Timeouts.uniform(0.2)
            async with mod.POP3Client(
                "127.0.0.1", server.port, timeouts=timeouts, allow_plaintext_auth=True
            ) as client:
                await client.login("u", "p")
                assert await client.retrieve(1) == expected

        run(adapter, go)


class TricklingServer:
    """A POP3 server that answers the client's commands as ``answers`` says (by verb, else
    ``+OK``) and opens ``trickled``'s multi-line answer with ``+OK`` and then ``lines``
    (so many lines ``interval`` seconds apart, each well within the client's timeout;
    or a header line, and ``interval`` seconds later the ``bytes`` given, at once), and
    ends it with ``.`` once they are all sent; until the client closes."""

    def __init__(
        self,
        trickled: bytes,
        lines: int | bytes,
        answers: dict[bytes, bytes] | None = None,
        interval: float = 0.02,
    ) -> None:
        self.trickled = trickled
        self.lines = lines
        self.answers = answers or {}
        self.interval = interval
        self.ended = threading.Event()
        """Set when the whole answer was sent (the client read on to its end)."""
        self.verbs: list[bytes] = []
        """The verb of each command read, in order."""
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as commands, contextlib.suppress(OSError):
            conn.sendall(b"+OK trickling\r\n")
            while line := commands.readline(1000):
                verb = line[:4].upper()
                self.verbs.append(verb)
                if verb != self.trickled:
                    conn.sendall(self.answers.get(verb, b"+OK\r\n"))
                    continue
                conn.sendall(b"+OK\r\n")
                if isinstance(self.lines, bytes):
                    conn.sendall(b"Subject: big\r\n")
                    time.sleep(self.interval)
                    conn.sendall(self.lines)
                else:
                    for n in range(self.lines):
                        conn.sendall(b"X-Line: %d\r\n" % n)
                        time.sleep(self.interval)
                conn.sendall(b".\r\n")
                self.ended.set()

    def __enter__(self) -> TricklingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(10)


NO_CAPA = {b"CAPA": b"-ERR no CAPA here\r\n"}


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_a_capa_listing_trickled_a_line_at_a_time_ends_within_the_timeout(adapter: str) -> None:
    """CAPA's content is read whole in ``connect()``: each line in time, but 4 s in all,
    would hold it that long (for ever, from a server that never ends it); it must end
    within the ``response`` timeout, as a status line must."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    started = time.monotonic()
    with TricklingServer(b"CAPA", 200) as server:
        if adapter == "sync":
            client = mod.POP3Client("127.0.0.1", server.port, timeout=0.3, stls=False)
            with pytest.raises(mod.POP3Timeout, match=r"did not end within 0\.3 s"):
                client.connect()
        else:
            timeouts = mod.POP3Timeouts.uniform(0.3)
            client = mod.POP3Client("127.0.0.1", server.port, timeouts=timeouts, stls=False)
            with pytest.raises(mod.POP3Timeout, match=r"did not end within 0\.3 s"):
                run(adapter, client.connect)
    assert time.monotonic() - started < 2.0
    assert not server.ended.is_set()


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_a_capa_listing_without_end_is_refused_past_its_bound(adapter: str) -> None:
    """A CAPA listing past ``MAX_CAPABILITIES`` octets (64 KiB; real ones have a few
    hundred) ends the session rather than be read on."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    listing = b"X-CAPABILITY " + b"x" * 80 + b"\r\n"
    with TricklingServer(b"CAPA", listing * 1000) as server:
        if adapter == "sync":
            client = mod.POP3Client("127.0.0.1", server.port, timeout=10, stls=False)
            with pytest.raises(mod.POP3ProtocolError, match="CAPA listing longer than 65536"):
                client.connect()
        else:
            timeouts = mod.POP3Timeouts.uniform(10)
            client = mod.POP3Client("127.0.0.1", server.port, timeouts=timeouts, stls=False)
            with pytest.raises(mod.POP3ProtocolError, match="CAPA listing longer than 65536"):
                run(adapter, client.connect)


def _quit_after_leaving_a_message_early(
    adapter: str,
    port: int,
    timeout: float,
    *,
    listed: bool = False,
    many: list[int] | None = None,
    **options: Any,
) -> None:
    """Log in, ask LIST if ``listed``, leave a loop over ``retrieve_chunks(1)`` at its
    first chunk (over ``retrieve_many(many)`` at its first message), with ``options``,
    and quit: the rest of the message (the answers still owed) is read and dropped
    before QUIT."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    if adapter == "sync":
        client = mod.POP3Client(
            "127.0.0.1", port, timeout=timeout, stls=False, allow_plaintext_auth=True
        )
        client.connect()
        client.login("u", "p")
        if listed:
            client.list()
        if many is None:
            for _chunk in client.retrieve_chunks(1, **options):
                break
        else:
            for _item in client.retrieve_many(many, **options):
                break
        client.quit()
        return

    async def session() -> None:
        timeouts = mod.POP3Timeouts.uniform(timeout)
        client = mod.POP3Client(
            "127.0.0.1", port, timeouts=timeouts, stls=False, allow_plaintext_auth=True
        )
        await client.connect()
        await client.login("u", "p")
        if listed:
            await client.list()
        if many is None:
            async for _chunk in client.retrieve_chunks(1, **options):
                break
        else:
            async for _item in client.retrieve_many(many, **options):
                break
        await client.quit()

    run(adapter, session)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_the_rest_of_a_message_left_unread_must_come_within_the_timeout(adapter: str) -> None:
    """``quit()`` reads what a loop left unread before QUIT; a server that goes on
    sending it, each line in time, cannot hold ``quit()`` beyond the ``response``
    timeout: the connection is closed, and the error says so (QUIT never went out, so
    nothing marked is deleted)."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    started = time.monotonic()
    with (
        TricklingServer(b"RETR", 200, NO_CAPA) as server,
        pytest.raises(mod.POP3Timeout, match=r"did not end within 0\.3 s"),
    ):
        _quit_after_leaving_a_message_early(adapter, server.port, 0.3)
    assert time.monotonic() - started < 2.5
    assert not server.ended.is_set()


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_the_rest_of_a_message_left_unread_is_read_no_further_than_a_bound(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a size to go by, what is read and dropped of a message left unread is
    bounded by ``MAX_MESSAGE`` (64 MiB; made small here): past it the connection is
    closed rather than read on."""
    from smtpcore._driver import _pop3_client_content

    monkeypatch.setattr(_pop3_client_content, "MAX_MESSAGE", 10_000)
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    rest = b"\r\n" + (b"x" * 70 + b"\r\n") * 1000
    with (
        TricklingServer(b"RETR", rest, NO_CAPA, interval=0.1) as server,
        pytest.raises(mod.POP3ProtocolError, match="runs on past 10000 octets"),
    ):
        _quit_after_leaving_a_message_early(adapter, server.port, 10)


PIPELINED = {b"CAPA": b"+OK\r\nUSER\r\nPIPELINING\r\n.\r\n"}


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_answers_a_retrieve_many_left_owed_each_have_their_own_timeout(adapter: str) -> None:
    """Leaving ``retrieve_many`` early leaves several RETRs in flight; each answer
    must end within one ``response`` timeout, not all of them together: five
    answers of 0.25 s, 1.25 s in all, are read and dropped under a 0.9 s timeout
    (a margin for a loaded machine), and QUIT goes out (before, ``quit()`` raised
    ``POP3Timeout`` and closed the connection, so a slow link lost the deletions)."""
    with TricklingServer(b"RETR", 5, PIPELINED, interval=0.05) as server:
        _quit_after_leaving_a_message_early(adapter, server.port, 0.9, many=[1, 2, 3, 4, 5, 6])
    assert server.verbs[-7:] == [b"RETR"] * 6 + [b"QUIT"]


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
@pytest.mark.parametrize("many", [None, [1, 2]], ids=["retrieve_chunks", "retrieve_many"])
def test_the_rest_of_a_message_left_unread_is_not_bounded_where_max_size_is_none(
    adapter: str, many: list[int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``max_size=None`` is no bound, for the rest read and dropped of a message left
    unread as for what the loop read: ``MAX_MESSAGE`` (64 MiB; made small here)
    bounds only a rest the default leaves without one, and QUIT goes out."""
    from smtpcore._driver import _pop3_client_content

    monkeypatch.setattr(_pop3_client_content, "MAX_MESSAGE", 10_000)
    rest = b"\r\n" + (b"x" * 70 + b"\r\n") * 1000
    with TricklingServer(b"RETR", rest, PIPELINED, interval=0.1) as server:
        _quit_after_leaving_a_message_early(adapter, server.port, 10, many=many, max_size=None)
    assert server.verbs[-1] == b"QUIT"


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_the_rest_of_a_message_left_unread_is_read_before_quit(adapter: str) -> None:
    """What comes in time and within its bound is read and dropped, and QUIT goes out."""
    with TricklingServer(b"RETR", 20, NO_CAPA, interval=0.001) as server:
        _quit_after_leaving_a_message_early(adapter, server.port, 10)
    assert server.ended.is_set()


LISTED_100 = {
    b"CAPA": b"-ERR no CAPA here\r\n",
    b"LIST": b"+OK\r\n1 100\r\n.\r\n",
    b"UIDL": b"-ERR no UIDL here\r\n",
}
"""A server that lists message 1 as 100 octets."""
FETCHES = ("retrieve", "top", "retrieve_many", "retrieve_chunks")


def _fetch_one(adapter: str, port: int, fetch: str, *, listed: bool, **options: Any) -> bytes:
    """Log in, ask LIST if ``listed``, and fetch message 1 by ``fetch`` (its top, by
    ``top``) with ``options``; what came, whole."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    if adapter == "sync":
        with mod.POP3Client(
            "127.0.0.1", port, timeout=10, stls=False, allow_plaintext_auth=True
        ) as pop:
            pop.login("u", "p")
            if listed:
                pop.list()
            if fetch == "retrieve":
                content: bytes = pop.retrieve(1, **options)
            elif fetch == "top":
                content = pop.top(1, 0, **options)
            elif fetch == "retrieve_many":
                [(_, content)] = list(pop.retrieve_many([1], **options))
            else:
                content = b"".join(pop.retrieve_chunks(1, **options))
            return content

    async def session() -> bytes:
        timeouts = mod.POP3Timeouts.uniform(10)
        async with mod.POP3Client(
            "127.0.0.1", port, timeouts=timeouts, stls=False, allow_plaintext_auth=True
        ) as client:
            await client.login("u", "p")
            if listed:
                await client.list()
            if fetch == "retrieve":
                content: bytes = await client.retrieve(1, **options)
            elif fetch == "top":
                content = await client.top(1, 0, **options)
            elif fetch == "retrieve_many":
                [(_, content)] = [item async for item in client.retrieve_many([1], **options)]
            else:
                content = b"".join([chunk async for chunk in client.retrieve_chunks(1, **options)])
            return content

    return run(adapter, session)


def _message_of(size: int) -> bytes:
    """The rest of a message of some ``size`` octets, behind the header line a
    :class:`TricklingServer` writes first."""
    line = b"x" * 998 + b"\r\n"
    return b"\r\n" + line * (size // len(line))


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
@pytest.mark.parametrize("fetch", FETCHES)
def test_a_message_far_past_the_size_listed_is_refused(adapter: str, fetch: str) -> None:
    """A message LIST gave as 100 octets whose RETR (or TOP 1 0) runs on for 200 KB is
    refused past the size, 10% and 64 KiB: the client kept it all before (a server
    sent 200 MB, and memory grew by as much)."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    verb = b"TOP " if fetch == "top" else b"RETR"
    part = "the top of message 1" if fetch == "top" else "message 1"
    expected = f"{part} runs past 65646 octets, where LIST said 100: the connection is closed"
    with (
        TricklingServer(verb, _message_of(200_000), LISTED_100, interval=0) as server,
        pytest.raises(mod.POP3ProtocolError, match=expected),
    ):
        _fetch_one(adapter, server.port, fetch, listed=True)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
@pytest.mark.parametrize("fetch", FETCHES)
def test_a_message_is_fetched_within_max_size_and_refused_past_it(
    adapter: str, fetch: str
) -> None:
    """``max_size`` replaces the bound LIST sets: the same 200 KB message comes whole
    with ``max_size=None`` or a bound above it, and is refused past a bound below."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    verb = b"TOP " if fetch == "top" else b"RETR"
    rest = _message_of(200_000)
    for max_size in (None, 300_000):
        with TricklingServer(verb, rest, LISTED_100, interval=0) as server:
            got = _fetch_one(adapter, server.port, fetch, listed=True, max_size=max_size)
        assert got == b"Subject: big\r\n" + rest
    with (
        TricklingServer(verb, rest, LISTED_100, interval=0) as server,
        pytest.raises(mod.POP3ProtocolError, match="runs past max_size, 1000 octets"),
    ):
        _fetch_one(adapter, server.port, fetch, listed=False, max_size=1000)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
@pytest.mark.parametrize("fetch", FETCHES)
def test_a_message_no_list_sized_is_bounded_when_held_whole(
    adapter: str, fetch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without LIST, what holds a message whole (``retrieve``, ``top``,
    ``retrieve_many``) keeps at most ``MAX_MESSAGE`` octets (64 MiB; made small
    here); ``retrieve_chunks``, the way for huge messages, streams it all."""
    from smtpcore._driver import _pop3_client_content

    monkeypatch.setattr(_pop3_client_content, "MAX_MESSAGE", 100_000)
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    verb = b"TOP " if fetch == "top" else b"RETR"
    rest = _message_of(200_000)
    with TricklingServer(verb, rest, LISTED_100, interval=0) as server:
        if fetch == "retrieve_chunks":
            assert (
                _fetch_one(adapter, server.port, fetch, listed=False) == b"Subject: big\r\n" + rest
            )
            return
        with pytest.raises(mod.POP3ProtocolError, match=r"past 100000 octets \(no LIST gave"):
            _fetch_one(adapter, server.port, fetch, listed=False)


def test_a_max_size_that_is_no_size_is_refused_before_anything_is_sent() -> None:
    mod: Any = importlib.import_module("smtpcore.asyncio")
    client = mod.POP3Client("127.0.0.1", 1)
    for max_size in (-1, 1.5, True, "all"):
        with pytest.raises(ValueError, match="max_size must be octets"):
            client.retrieve_chunks(1, max_size=max_size)
        with pytest.raises(ValueError, match="max_size must be octets"):
            client.retrieve_many([1], max_size=max_size)


@pytest.mark.parametrize("adapter", [*ADAPTERS, "sync"])
def test_the_rest_of_a_message_left_unread_is_bounded_by_the_size_listed(adapter: str) -> None:
    """What is read and dropped of a message LIST sized is bounded as the message is."""
    mod: Any = importlib.import_module(f"smtpcore.{adapter}")
    with (
        TricklingServer(b"RETR", _message_of(200_000), LISTED_100, interval=0.1) as server,
        pytest.raises(mod.POP3ProtocolError, match="runs past 65646 octets, where LIST said"),
    ):
        _quit_after_leaving_a_message_early(adapter, server.port, 10, listed=True)
