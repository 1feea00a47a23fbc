"""smtpcore.maildrop: a message another reader renamed is found again off the event loop.

RETR of a message renamed since the listing (``new/X`` moved to ``cur/X:2,S``) finds
it by a listing of ``new/`` and ``cur/``: blocking I/O, which ran on the server's event
loop, holding every other session for as long as the folders took to list. It runs in
the store's worker thread now, as the listing at login and the UPDATE do; a program
that reads ``Maildir.open`` plainly, on no loop, still finds it where it runs.
"""

from __future__ import annotations

import os
import poplib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from types import GeneratorType

import pytest

from peers import running_pop3_server
from smtpcore._maildir_names import names_of
from smtpcore.maildrop import (
    Maildir,
    MaildirStore,
    Maildrop,
    MessageUnavailable,
    POP3Session,
)
from test_maildrop_moves import UID, maildir_with, names
from test_maildrop_unreadable import run

CONTENT = b"Subject: one\n\nfirst\n"


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

    monkeypatch.setattr("smtpcore.maildrop.names_of", recording)
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
