"""smtpcore.maildrop: a message another reader renamed is found again off the event loop.

RETR of a message renamed since the listing (``new/X`` moved to ``cur/X:2,S``) finds
it by a listing of ``new/`` and ``cur/``: blocking I/O, which ran on the server's event
loop, holding every other session for as long as the folders took to list. It runs in
the store's worker thread now, as the listing at login and the UPDATE do; a program
that reads ``Maildir.open`` plainly, on no loop, still finds it where it runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import poplib
import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from pathlib import Path
from types import GeneratorType
from typing import TypeVar

import pytest

from peers import running_pop3_server
from smtpcore._driver import POP3Timeouts
from smtpcore._maildir_found import FoundAgain
from smtpcore._maildir_names import names_of
from smtpcore.maildrop import (
    Maildir,
    MaildirStore,
    Maildrop,
    MaildropError,
    MessageUnavailable,
    POP3Session,
)
from test_maildrop_moves import UID, maildir_with, names
from test_maildrop_unreadable import run

CONTENT = b"Subject: one\n\nfirst\n"
T = TypeVar("T")


class RecordingStore(MaildirStore):
    """A :class:`MaildirStore` that notes the thread its hooks run on: the event
    loop's."""

    loop_threads: list[threading.Thread]

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        self.loop_threads.append(threading.current_thread())
        return await super().open_maildrop(session, user)


def record_finding(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads a message is sought by its unique name on, from now on."""
    threads: list[threading.Thread] = []

    def recording(folders: Mapping[str, int], base: str) -> list[tuple[str, str]]:
        threads.append(threading.current_thread())
        return names_of(folders, base)

    monkeypatch.setattr("smtpcore._maildir_find_again.names_of", recording)
    return threads


def test_retr_of_a_renamed_message_finds_it_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """The message is renamed after the login; RETR sends it, found by a listing made
    on another thread than the one the server's hooks run on (the event loop's), and
    DELE then QUIT removes it where it is now."""
    path = maildir_with(tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT})
    store = RecordingStore(tmp_path / "mail", {"alice": "wonderland"})
    store.loop_threads = []
    finding = record_finding(monkeypatch)
    with running_pop3_server(adapter, store) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        assert client.pass_("wonderland").startswith(b"+OK Logged in, 1 message")
        os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")  # another reader's
        assert client.retr(1)[1] == [b"Subject: one", b"", b"first"]
        assert client.top(1, 0)[1] == [b"Subject: one", b""]
        client.dele(1)
        client.quit()
    assert names(path) == []
    [loop] = store.loop_threads
    assert finding  # it was sought, and each time off the loop
    assert loop not in finding


def test_retr_of_a_message_gone_is_err_after_a_search_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """A message removed since the listing is sought in the worker thread, and
    answered ``-ERR``; the session goes on."""
    path = maildir_with(tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT})
    store = RecordingStore(tmp_path / "mail", {"alice": "wonderland"})
    store.loop_threads = []
    finding = record_finding(monkeypatch)
    with running_pop3_server(adapter, store) as server:
        client = poplib.POP3("127.0.0.1", server.port, timeout=10)
        client.user("alice")
        client.pass_("wonderland")
        (path / "new" / UID).unlink()
        with pytest.raises(poplib.error_proto, match="no longer available"):
            client.retr(1)
        assert client.noop().startswith(b"+OK")
        client.quit()
    [loop] = store.loop_threads
    assert finding and loop not in finding


def test_read_plainly_a_renamed_message_is_found_where_it_is_read(tmp_path: Path) -> None:
    """``Maildir.open`` read by a program on no event loop finds the message on its own
    thread, as before; its chunks are an iterator, and also an async one, which the
    server reads."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    maildir = Maildir(path)
    run(maildir.messages())
    listed = maildir.open(1)
    assert isinstance(listed, GeneratorType)  # at its name: a plain generator
    listed.close()
    os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    chunks = maildir.open(1)
    assert isinstance(chunks, Iterator) and isinstance(chunks, AsyncIterator)
    assert b"".join(chunks) == CONTENT
    (path / "cur" / f"{UID}:2,S").unlink()
    with pytest.raises(MessageUnavailable):
        b"".join(maildir.open(1))
    run(maildir.close())


def test_a_message_file_opened_and_never_read_is_closed_with_its_chunks(
    tmp_path: Path,
) -> None:
    """``open`` opens the file at once; chunks closed, or dropped, unread close it."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    maildir = Maildir(path)
    run(maildir.messages())
    before = len(os.listdir("/proc/self/fd"))
    chunks = maildir.open(1)
    assert len(os.listdir("/proc/self/fd")) == before + 1
    assert isinstance(chunks, GeneratorType)
    chunks.close()
    assert len(os.listdir("/proc/self/fd")) == before
    chunks = maildir.open(1)
    del chunks
    assert len(os.listdir("/proc/self/fd")) == before
    run(maildir.close())


class Watched(Maildir):
    """A :class:`Maildir` that says when the server closed it, when work was asked of
    its worker thread, and when its work in flight landed."""

    closed: threading.Event
    asked: threading.Event
    landed: threading.Event

    async def _in_thread(self, work: Callable[[], T]) -> T:
        self.asked.set()
        return await super()._in_thread(work)

    async def before_update(self) -> None:
        self.asked.set()
        await super().before_update()

    async def close(self) -> None:
        await super().close()
        self.closed.set()

    def _landed(self) -> None:
        super()._landed()
        self.landed.set()


class WatchedStore(MaildirStore):
    """A :class:`MaildirStore` of :class:`Watched` maildirs, the last one kept."""

    last: Watched

    def maildir(self, user: str) -> Maildir:
        maildir = Watched(self.root / user, size_cache=self.size_cache)
        maildir.closed, maildir.landed = threading.Event(), threading.Event()
        maildir.asked = threading.Event()
        self.last = maildir
        return maildir


class HeldSearch:
    """The search for a message found again held until :meth:`release`: a big
    ``cur/`` on a slow disk, past the ``store`` timeout. Counts the searches, and
    notes whether each could still list the folder the session opened as ``cur``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cur: Path) -> None:
        self.started: list[threading.Thread] = []
        self.through_cur: list[bool] = []
        self.searched = threading.Event()
        self._release = threading.Event()
        self._cur = os.stat(cur)
        monkeypatch.setattr("smtpcore._maildir_find_again.names_of", self._names_of)

    def _names_of(self, folders: Mapping[str, int], base: str) -> list[tuple[str, str]]:
        self.started.append(threading.current_thread())
        self._release.wait(10)
        try:
            self.through_cur.append(os.path.samestat(os.fstat(folders["cur"]), self._cur))
        except OSError:
            self.through_cur.append(False)
        try:
            return names_of(folders, base)
        finally:
            self.searched.set()

    def release(self) -> None:
        self._release.set()


SHORT_STORE = dataclasses.replace(POP3Timeouts(), store=0.3)
"""A ``store`` timeout that a held search outlasts (a deadline, not a measure)."""


ROOMY_STORE = dataclasses.replace(POP3Timeouts(), store=1.0)
"""A ``store`` timeout that a held search outlasts, and that a search released when
the next command asks for the worker thread ends within."""


SPLIT_STORE = dataclasses.replace(POP3Timeouts(), store=2.0)
"""A ``store`` timeout that a held search outlasts, and that the rest of QUIT's wait
for it (:data:`SEARCH_RUNS_ON`) and its UPDATE (:data:`UPDATE_TAKES`) together outlast,
though each fits in one with room to spare (deadlines, not measures)."""
SEARCH_RUNS_ON = 1.0
UPDATE_TAKES = 1.4


def release_when_asked(
    maildir: Watched, search: HeldSearch, *, after: float = 0.0
) -> threading.Thread:
    """Release ``search`` once the next piece of work is asked of ``maildir`` (and
    ``after`` seconds more): the order of events in which that piece finds the search
    still in flight."""
    maildir.asked.clear()

    def release() -> None:
        maildir.asked.wait(10)
        threading.Event().wait(after)
        search.release()

    releaser = threading.Thread(target=release)
    releaser.start()
    return releaser


def logged_in(port: int, user: str = "alice", password: str = "wonderland") -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", port, timeout=10)
    client.user(user)
    client.pass_(password)
    return client


def test_a_search_given_up_keeps_the_folders_open_and_the_maildrop_locked_until_it_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """RETR of a renamed message whose search outlasts the ``store`` timeout is
    ``-ERR``, its search left running; QUIT's UPDATE, whose own deadline passes
    before the search ends, then starts no second thread (``-ERR [SYS/TEMP]``,
    nothing moved), and the close that ends the session leaves
    the folders open under the search, and the maildrop locked (another session is
    ``[IN-USE]``) until the search is done, which then releases it."""
    path = maildir_with(tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT})
    store = WatchedStore(tmp_path / "mail", {"alice": "wonderland"})
    search = HeldSearch(monkeypatch, path / "cur")
    try:
        with running_pop3_server(adapter, store, timeouts=SHORT_STORE) as server:
            client = logged_in(server.port)
            maildir = store.last
            maildir.landed.clear()  # the listing's
            os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")  # another reader's
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                client.retr(1)
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                client.quit()
            client.close()
            assert maildir.closed.wait(10)
            others = [os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) for _ in range(8)]
            try:
                with pytest.raises(poplib.error_proto, match=r"IN-USE"):
                    logged_in(server.port)
                search.release()
                landed = maildir.landed.wait(10)
            finally:
                for fd in others:
                    os.close(fd)
            assert search.through_cur == [True]
            assert landed
            logged_in(server.port).quit()  # released once the search was done
    finally:
        search.release()
    assert names(path) == [f"cur/{UID}:2,S"]


def test_one_session_has_one_search_in_flight_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """A RETR while the last one's search still runs past the RETR's own deadline is
    ``-ERR [SYS/TEMP]`` and starts none of its own, so that one session never holds
    more than one of the store's threads; once the search is done, RETR finds the
    message."""
    path = maildir_with(tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT})
    store = WatchedStore(tmp_path / "mail", {"alice": "wonderland"})
    search = HeldSearch(monkeypatch, path / "cur")
    try:
        with running_pop3_server(adapter, store, timeouts=SHORT_STORE) as server:
            client = logged_in(server.port)
            maildir = store.last
            maildir.landed.clear()  # the listing's
            os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
            for _ in range(3):
                with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                    client.retr(1)
            assert len(search.started) == 1
            search.release()
            assert maildir.landed.wait(10)
            assert client.retr(1)[1] == [b"Subject: one", b"", b"first"]
            client.quit()
    finally:
        search.release()
    assert len(search.started) == 1  # found once, kept in the listing


def test_quit_while_a_given_up_search_ends_waits_for_it_and_removes_the_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """RETR of a renamed message whose search outlasts the ``store`` timeout is
    ``-ERR``; DELE of another, then QUIT, whose UPDATE finds the search still running
    and ending within its own deadline: it waits for it, then removes the message
    (RFC 1939 §6: refused, the session is over and its DELE marks lost)."""
    path = maildir_with(
        tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT, "new/1700000002.M2P2.test": CONTENT}
    )
    store = WatchedStore(tmp_path / "mail", {"alice": "wonderland"})
    search = HeldSearch(monkeypatch, path / "cur")
    try:
        with running_pop3_server(adapter, store, timeouts=ROOMY_STORE) as server:
            client = logged_in(server.port)
            maildir = store.last
            os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                client.retr(1)
            client.dele(2)
            releaser = release_when_asked(maildir, search)
            assert client.quit().startswith(b"+OK")
            releaser.join(10)
    finally:
        search.release()
    assert names(path) == [f"cur/{UID}:2,S"]
    assert len(search.started) == 1


def test_quit_waits_for_a_given_up_search_then_updates_under_a_deadline_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """QUIT's wait for a search given up, and its UPDATE, have a ``store`` timeout each:
    the two together may take longer than one, and QUIT is ``+OK``, the message marked
    deleted removed. They shared one, and an UPDATE that began with little of it left
    was given up (``-ERR``: "Some deleted messages were not removed") while its thread
    went on to remove the message."""
    path = maildir_with(
        tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT, "new/1700000002.M2P2.test": CONTENT}
    )
    store = WatchedStore(tmp_path / "mail", {"alice": "wonderland"})
    search = HeldSearch(monkeypatch, path / "cur")
    update = Maildir._update

    def slow_update(self: Maildir, deleted: Collection[int], retrieved: Collection[int]) -> None:
        threading.Event().wait(UPDATE_TAKES)
        update(self, deleted, retrieved)

    monkeypatch.setattr(Maildir, "_update", slow_update)
    try:
        with running_pop3_server(adapter, store, timeouts=SPLIT_STORE) as server:
            client = logged_in(server.port)
            maildir = store.last
            os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                client.retr(1)
            client.dele(2)
            releaser = release_when_asked(maildir, search, after=SEARCH_RUNS_ON)
            assert client.quit().startswith(b"+OK")
            releaser.join(10)
    finally:
        search.release()
    assert names(path) == [f"cur/{UID}:2,S"]


def test_retr_while_a_given_up_search_ends_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adapter: str
) -> None:
    """A RETR asked again while the first one's search, given up, still runs, waits for
    it within its own deadline and sends the message, starting no second search."""
    path = maildir_with(tmp_path / "mail" / "alice", {f"new/{UID}": CONTENT})
    store = WatchedStore(tmp_path / "mail", {"alice": "wonderland"})
    search = HeldSearch(monkeypatch, path / "cur")
    try:
        with running_pop3_server(adapter, store, timeouts=ROOMY_STORE) as server:
            client = logged_in(server.port)
            maildir = store.last
            os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                client.retr(1)
            releaser = release_when_asked(maildir, search)
            assert client.retr(1)[1] == [b"Subject: one", b"", b"first"]
            releaser.join(10)
            client.quit()
    finally:
        search.release()
    assert len(search.started) == 1


def test_chunks_closed_before_they_are_read_neither_seek_nor_open_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message found again whose chunks are closed unread gives nothing afterwards,
    as a closed generator does: no search is made, no file opened."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    maildir = Maildir(path)
    run(maildir.messages())
    os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    finding = record_finding(monkeypatch)
    chunks = maildir.open(1)
    assert isinstance(chunks, FoundAgain)
    chunks.close()
    assert list(chunks) == []
    asynchronously = maildir.open(1)
    run(aclosed_then_read(asynchronously))
    assert finding == []
    run(maildir.close())


async def aclosed_then_read(chunks: AsyncIterator[bytes] | Iterator[bytes]) -> None:
    assert isinstance(chunks, AsyncIterator)
    await chunks.aclose()  # type: ignore[attr-defined]  # FoundAgain has it
    assert [chunk async for chunk in chunks] == []


async def read_async(chunks: AsyncIterator[bytes] | Iterator[bytes]) -> bytes:
    assert isinstance(chunks, AsyncIterator)
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_no_message_file_at_the_listed_name_is_no_reason_to_skip_the_search(
    tmp_path: Path, kind: str
) -> None:
    """Another reader renamed the message, and something that is not its file (a link to
    it, a FIFO, a directory) took the listed name: the search is made and the message
    read where it is now. A look at the name alone skipped the search (a search given
    up, waited for, might have found the file there), and the message was unavailable."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": CONTENT})
    maildir = Maildir(path)
    maildir.lock()
    run(maildir.messages())
    os.rename(path / "new" / UID, path / "cur" / f"{UID}:2,S")
    listed = path / "new" / UID
    if kind == "symlink":
        listed.symlink_to(f"../cur/{UID}:2,S")
    elif kind == "fifo":
        os.mkfifo(listed)
    else:
        listed.mkdir()
    assert run(read_async(maildir.open(1))) == CONTENT
    run(maildir.close())


def two_renamed(path: Path) -> Maildir:
    """A Maildir of two messages, listed, then both renamed by another reader."""
    second = UID.replace("M1", "M2")
    maildir_with(path, {f"new/{UID}": CONTENT, f"new/{second}": CONTENT})
    maildir = Maildir(path)
    maildir.lock()
    run(maildir.messages())
    for name in (UID, second):
        os.rename(path / "new" / name, path / "cur" / f"{name}:2,S")
    return maildir


def read_plainly_in_a_thread(
    maildir: Maildir, number: int
) -> tuple[threading.Thread, list[bytes | Exception]]:
    """Message ``number`` read plainly (``next``, no event loop) on a thread of its own:
    its content, or what reading it raised."""
    read: list[bytes | Exception] = []

    def reading() -> None:
        try:
            read.append(b"".join(maildir.open(number)))
        except Exception as exc:
            read.append(exc)

    reader = threading.Thread(target=reading)
    reader.start()
    return reader, read


def test_a_plain_read_searching_again_is_the_work_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message found again by a plain read is sought under the rule the async reads
    keep: while that search runs, the wait before UPDATE waits for it, and a close
    meanwhile keeps the folders open until it ends (it searched ``cur`` as opened);
    the session being over then, the file found is not read."""
    path = tmp_path / "alice"
    maildir = two_renamed(path)
    search = HeldSearch(monkeypatch, path / "cur")
    reader, read = read_plainly_in_a_thread(maildir, 1)

    async def wait_and_close() -> None:
        await asyncio.to_thread(search_started, search)
        waiting = asyncio.ensure_future(maildir.before_update())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not waiting.done()  # the plain read's search is in flight
        await maildir.close()
        search.release()
        await waiting

    run(wait_and_close())
    reader.join(10)
    assert search.through_cur == [True]
    assert len(read) == 1 and isinstance(read[0], MaildropError)


def search_started(search: HeldSearch) -> None:
    for _ in range(1000):
        if search.started:
            return
        threading.Event().wait(0.01)
    raise AssertionError("no search started")


def waiter_came(maildir: Maildir) -> None:
    """Return once something waits for the maildrop's work in flight to land."""
    for _ in range(1000):
        landing = maildir._landing
        if landing is not None and landing._wakers:
            return
        threading.Event().wait(0.01)
    raise AssertionError("nothing waits for the work in flight")


def test_a_plain_read_off_any_loop_waits_for_other_work_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain read on a thread that runs no event loop, which must search again while
    another reader's search still runs, waits for it to land, then searches: every
    reader is served, one search at a time. It was refused (``-ERR [SYS/TEMP]`` to a
    program of its own reading from a thread pool)."""
    path = tmp_path / "alice"
    maildir = two_renamed(path)
    search = HeldSearch(monkeypatch, path / "cur")
    first, first_read = read_plainly_in_a_thread(maildir, 1)
    search_started(search)
    second, second_read = read_plainly_in_a_thread(maildir, 2)
    try:
        waiter_came(maildir)
        assert len(search.started) == 1  # no second search beside the first
    finally:
        search.release()
        first.join(10)
        second.join(10)
    assert first_read == [CONTENT] and second_read == [CONTENT]
    assert len(search.started) == 2
    run(maildir.close())


@pytest.mark.parametrize("framework", ["asyncio", "trio"])
def test_a_plain_read_on_an_event_loop_is_refused_while_other_work_is_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    """A plain read on an event loop's thread does not wait for other work in flight
    (a blocking wait would hold up every session, and perhaps that very work): it is
    refused, and starts no second search beside the first."""
    path = tmp_path / "alice"
    maildir = two_renamed(path)
    search = HeldSearch(monkeypatch, path / "cur")
    reader, read = read_plainly_in_a_thread(maildir, 1)
    search_started(search)
    refused: list[MaildropError] = []

    async def read_on_the_loop() -> None:
        try:
            next(maildir.open(2))
        except MaildropError as exc:
            refused.append(exc)

    try:
        if framework == "asyncio":
            asyncio.run(read_on_the_loop())
        else:
            trio = pytest.importorskip("trio")
            trio.run(read_on_the_loop)
        assert [str(exc) for exc in refused] == [
            "The maildrop is busy with other work: a read on an event loop's thread "
            "does not wait for it"
        ]
        assert len(search.started) == 1
    finally:
        search.release()
        reader.join(10)
    assert read == [CONTENT]
    run(maildir.close())


def test_close_refuses_a_plain_read_blocked_on_a_hung_search_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain read blocked on other work in flight (a search the ``store`` timeout
    gave up on, hung on a stuck disk) is refused by the maildrop's close at once
    ("The session is over"), while that search still hangs. It waited on with no
    bound: close did not release it, only the search's end did."""
    path = tmp_path / "alice"
    maildir = two_renamed(path)
    search = HeldSearch(monkeypatch, path / "cur")

    async def read_given_up() -> None:
        chunks = maildir.open(1)
        assert isinstance(chunks, AsyncIterator)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(chunks.__anext__(), SHORT_STORE.store)

    try:
        run(read_given_up())
        search_started(search)
        reader, read = read_plainly_in_a_thread(maildir, 2)
        waiter_came(maildir)
        run(maildir.close())
        reader.join(10)  # a guard: it ends at once, or the test fails
        assert not search.searched.is_set()  # the search still hangs
        assert not reader.is_alive()
        assert [str(exc) for exc in read] == ["The session is over"]
        assert all(isinstance(exc, MaildropError) for exc in read)
    finally:
        search.release()
    assert len(search.started) == 1
