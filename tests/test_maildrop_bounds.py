"""smtpcore.maildrop: what a user who can write into his own Maildir cannot make the
server read.

A message file with no ``,W=`` size in its name is read to be sized at login (RFC 1939
§5, §11: LIST gives the exact octets with CRLF line ends). A huge file there, a sparse
one planted in a moment, would hold one of the store's few worker threads for hours,
and every login behind it, and so would many files each of a bearable size: a listing
reads at most ``max_sized_by_reading`` octets in all, and leaves out, unread, with one
warning, the files it has no room left for. RETR of a listed file stops a little past its listed
size, whatever the file has grown to since.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Generator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from peers import write_maildir
from smtpcore.maildrop import (
    READ_SIZE,
    Maildir,
    MaildirStore,
    MessageUnavailable,
    POP3Session,
    pop3_size,
)
from smtpcore.pop3 import top_chunks

T = TypeVar("T")
LOGGER = "smtpcore.pop3.server"


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` octets that holds no data block: made in a moment."""
    with path.open("wb") as f:
        f.truncate(size)
    return path


def refuse_reading_over(monkeypatch: pytest.MonkeyPatch, most: int) -> list[int]:
    """Make ``os.read`` fail on a file over ``most`` octets; the sizes of the files read."""
    real_read = os.read
    sizes: list[int] = []

    def read(fd: int, count: int) -> bytes:
        size = os.fstat(fd).st_size
        sizes.append(size)
        if size > most:
            raise AssertionError(f"a file of {size} octets was read")
        return real_read(fd, count)

    monkeypatch.setattr(os, "read", read)
    return sizes


def test_a_huge_sparse_file_is_not_read_at_login_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's file: 2 GiB planted by truncate, no ``,W=``. Reading it took 15 s of
    a worker thread; past the default limit (1 GiB) it is not read at all."""
    path = tmp_path / "alice"
    write_maildir(path, [b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n"])
    planted = sparse(path / "new" / "1700000005.M9P9.planted", 2 << 30)
    refuse_reading_over(monkeypatch, 1 << 30)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        listing = run(Maildir(path).messages())
    assert [m.size for m in listing] == [19, 19]
    [warning] = caplog.records
    assert warning.levelname == "WARNING" and str(planted) in warning.getMessage()
    assert planted.stat().st_size == 2 << 30  # left where it is: nothing is lost


def test_a_file_over_the_limit_is_left_out_and_one_at_it_is_sized_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The limit counts the file's octets (``st_size``), the one number known without
    reading: a file of exactly ``max_sized_by_reading`` octets is read and listed with
    its exact POP3 size (more than the limit: each LF becomes CRLF), at the first
    listing whose budget the smaller files leave room for; one octet more, or a sparse
    file twice the limit, is left out unread, with one warning for both."""
    limit = 1000
    at_limit = b"x\n" * (limit // 2)
    path = tmp_path / "alice"
    write_maildir(path, [b"first\n", at_limit, b"b" * (limit + 1), b"last\n"])
    planted = sparse(path / "new" / "1700000003.M0P0.planted", 2 * limit)
    sizes = refuse_reading_over(monkeypatch, limit)
    cache: dict[tuple[int, int, int, int], int] = {}
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        first = run(Maildir(path, size_cache=cache, max_sized_by_reading=limit).messages())
        assert [m.size for m in first] == [7, 6]  # the budget went to the small ones
        caplog.clear()
        listing = run(Maildir(path, size_cache=cache, max_sized_by_reading=limit).messages())
    assert [m.size for m in listing] == [7, pop3_size(at_limit), 6]
    assert pop3_size(at_limit) == 1500
    assert max(sizes) == limit
    [warning] = caplog.records
    assert warning.levelname == "WARNING"
    assert str(planted) in warning.getMessage()
    assert f"over the {limit}" in warning.getMessage()
    assert "1 other" in warning.getMessage()


def count_reading(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count what ``os.read`` returns; the octets read, one number a read."""
    real_read = os.read
    reads: list[int] = []

    def read(fd: int, count: int) -> bytes:
        data = real_read(fd, count)
        reads.append(len(data))
        return data

    monkeypatch.setattr(os, "read", read)
    return reads


def test_a_listing_reads_no_more_than_its_budget_however_many_files_are_planted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's attack: many sparse files, each of exactly ``max_sized_by_reading``
    octets (four of 1 GiB read 4 GiB, 15.5 s of a worker thread, more with each file).
    One listing reads at most the limit in all, the smallest files first: the mail is
    listed, though delivered after them, the planted files left out with one warning
    for all. A later login lists
    one more each time, the sizes read before coming from the cache; a ``touch`` that
    makes a cached size stale costs that login's budget, never more."""
    limit = 4 * READ_SIZE
    path = tmp_path / "alice"
    write_maildir(path, [b"Subject: 1\n\none\n", b"Subject: 2\n\ntwo\n"])
    planted = [sparse(path / "new" / f"16990000{n:02d}.M9P{n}.planted", limit) for n in range(10)]
    reads = count_reading(monkeypatch)
    cache: dict[tuple[int, int, int, int], int] = {}

    def listing() -> list[int]:
        reads.clear()
        caplog.clear()
        maildir = Maildir(path, size_cache=cache, max_sized_by_reading=limit)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            sizes = [m.size for m in run(maildir.messages())]
        assert sum(reads) <= limit
        return sizes

    assert listing() == [19, 19]
    [warning] = caplog.records
    assert str(planted[0]) in warning.getMessage()
    assert "reading budget is spent" in warning.getMessage()
    assert "9 other" in warning.getMessage()
    for done in range(1, 4):
        assert listing() == [pop3_size(bytes(limit))] * done + [19, 19]
        assert sum(reads) == limit  # the mail and the files listed before: cached
        assert len(caplog.records) == 1
    for file in planted:
        os.utime(file, ns=(1, 1))  # the cache's keys are stale now
    assert len(listing()) == 3
    assert sum(reads) == limit


def test_many_files_over_the_limit_make_one_warning_a_listing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user plants as many files as he likes: the log gets one line a listing for
    them, naming the first and counting the others, not one line a file."""
    path = tmp_path / "alice"
    write_maildir(path, [b"ok\n"])
    first = sparse(path / "new" / "1700000010.M0P0.planted", 2000)
    for n in range(1, 50):
        sparse(path / "new" / f"17000000{10 + n}.M{n}P0.planted", 2000)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert [m.size for m in run(Maildir(path, max_sized_by_reading=1000).messages())] == [4]
    [warning] = caplog.records
    assert str(first) in warning.getMessage()
    assert "49 other" in warning.getMessage()


def test_a_file_with_a_w_size_is_listed_unread_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``,W=`` name is listed by it, as before: no file is opened at login."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    sparse(path / "new" / "1700000001.M1P1.test,S=3000,W=3000", 3000)
    refuse_reading_over(monkeypatch, 0)
    assert [m.size for m in run(Maildir(path, max_sized_by_reading=1000).messages())] == [3000]


def test_a_file_grown_past_the_limit_while_it_is_sized_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The limit holds for the reading itself, not only for the size ``stat`` gave a
    moment before: a file that grows while it is read stops being read at the limit."""
    limit = 3 * READ_SIZE
    path = tmp_path / "alice"
    [grown] = write_maildir(path, [b"a" * READ_SIZE])
    real_read = os.read
    reads: list[int] = []

    def read(fd: int, count: int) -> bytes:
        data = real_read(fd, count)
        reads.append(len(data))
        if len(reads) == 1:
            with grown.open("ab") as f:  # its writer goes on, far past the limit
                f.truncate(100 * limit)
        return data

    monkeypatch.setattr(os, "read", read)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert run(Maildir(path, max_sized_by_reading=limit).messages()) == []
    assert sum(reads) <= limit + READ_SIZE
    [warning] = caplog.records
    assert str(grown) in warning.getMessage()


def test_the_store_gives_its_limit_to_each_maildir(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, {"alice": "pw"}, max_sized_by_reading=1234)
    assert store.maildir("alice").max_sized_by_reading == 1234
    assert MaildirStore(tmp_path, {}).maildir("bob").max_sized_by_reading == 1 << 30
    session = POP3Session("pop.test")
    write_maildir(tmp_path / "alice", [b"z" * 1235, b"ok\n"])
    maildrop = run(store.open_maildrop(session, "alice"))
    try:
        assert [m.size for m in run(maildrop.messages())] == [4]
    finally:
        run(maildrop.close())


@pytest.mark.parametrize("named", [True, False])
def test_retr_of_a_file_grown_since_the_listing_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, named: bool
) -> None:
    """A file over its listed size by more than a read's worth, when RETR opens it (one
    with a ``,W=`` that lies, or grown since it was listed), is refused before a chunk
    is read: ``-ERR``, a warning, and the file left as it is."""
    path = tmp_path / "alice"
    write_maildir(path, [b"one\n"])
    name = "1700000002.M2P2.test" + (",S=4,W=5" if named else "")
    grown = path / "new" / name
    grown.write_bytes(b"two\n")
    maildir = Maildir(path)
    assert [m.size for m in run(maildir.messages())] == [5, 5]
    sparse(grown, 5 + READ_SIZE + 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        chunks = maildir.open(2)
        assert isinstance(chunks, Iterator)
        with pytest.raises(MessageUnavailable, match="changed since it was listed"):
            next(chunks)
    [warning] = caplog.records
    assert str(grown) in warning.getMessage()
    assert b"".join(maildir.open(1)) == b"one\n"
    sparse(grown, 5 + READ_SIZE)  # within a read's worth of the listing: read
    assert len(b"".join(maildir.open(2))) == 5 + READ_SIZE


@pytest.mark.parametrize("w_size", [3, 9])
def test_retr_of_a_file_whose_w_size_lies_serves_it_whole_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, w_size: int
) -> None:
    """A ``,W=`` another program wrote wrong (too small, or too large) within a read's
    worth: LIST gave that size, which no reading could check at login, and RETR sends
    the file whole (nothing cut at the size listed), then one warning a session names
    the file, as Dovecot logs its "Maildir filename has wrong W value"."""
    path = tmp_path / "alice"
    write_maildir(path, [b"one\n"])
    lying = path / "new" / f"1700000002.M2P2.test,S=4,W={w_size}"
    lying.write_bytes(b"two\n")  # 5 octets on the wire
    maildir = Maildir(path)
    assert [m.size for m in run(maildir.messages())] == [5, w_size]
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert b"".join(maildir.open(1)) == b"one\n"
        assert caplog.records == []
        assert b"".join(maildir.open(2)) == b"two\n"
        [warning] = caplog.records
        assert b"".join(maildir.open(2)) == b"two\n"  # asked again: no new line
    assert warning.getMessage() == (
        f"maildrop: {str(lying)!r} is 5 octets as sent, not the {w_size} listed for it: "
        "its name's ,W= does not count it as sent (a size written wrong, a bare CR)"
    )
    assert lying.exists()  # left as it is: its name is its unique-id


def test_top_of_a_file_whose_w_size_lies_reads_no_further_and_warns_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TOP stops reading where its lines end: the size of the whole is not known then."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    (path / "new" / "1700000002.M2P2.test,S=4,W=3").write_bytes(b"two\n")
    maildir = Maildir(path)
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        chunks = maildir.open(1)
        assert isinstance(chunks, Generator)
        assert next(chunks) == b"two\n"
        chunks.close()
    assert caplog.records == []


def test_retr_of_a_file_cut_short_since_it_was_listed_warns_that_it_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file sized by reading it (no ``,W=``), rewritten shorter after the listing: RETR
    sends what it holds now, and the warning says the file changed, not that a name
    lied."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    changed = path / "new" / "1700000002.M2P2.test"
    changed.write_bytes(b"Subject: x\n\nbody\n")  # 20 octets on the wire
    maildir = Maildir(path)
    assert [m.size for m in run(maildir.messages())] == [20]
    changed.write_bytes(b"Subj\n")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert b"".join(maildir.open(1)) == b"Subj\n"
    assert [r.getMessage() for r in caplog.records] == [
        f"maildrop: {str(changed)!r} is 6 octets as sent, not the 20 listed for it: "
        "the file changed since it was listed"
    ]


@pytest.mark.parametrize(("lines", "warned"), [(0, False), (1, False), (2, True), (10, True)])
def test_top_that_reads_a_file_whose_w_size_lies_to_its_end_warns_as_retr_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, lines: int, warned: bool
) -> None:
    """A TOP whose line count is past the body's lines reads the message to its end, and
    then knows its size as sent as RETR does: it warns of the ``,W=`` that does not
    count it. One that stops at its last line or before (``TOP 1 0``, ``TOP 1 1`` of a
    body of one line) has not read the end, and warns not."""
    path = tmp_path / "alice"
    write_maildir(path, [])
    lying = path / "new" / "1700000002.M2P2.test,S=17,W=3"
    lying.write_bytes(b"Subject: x\n\nbody\n")  # 20 octets on the wire
    maildir = Maildir(path)
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        head = b"".join(top_chunks(maildir.open(1), lines))
    assert head == (b"Subject: x\n\nbody\n" if lines else b"Subject: x\n\n")
    assert [r.getMessage() for r in caplog.records] == (
        [
            f"maildrop: {str(lying)!r} is 20 octets as sent, not the 3 listed for it: "
            "its name's ,W= does not count it as sent (a size written wrong, a bare CR)"
        ]
        if warned
        else []
    )


def test_retr_stops_a_read_past_the_listed_size_of_a_file_growing_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A file that grows while RETR reads it (the review saw 262 MB streamed for a small
    listing) is read no further than its listed size and a read's worth: the error
    ends the half-sent message, and the server closes the connection (no ``.``, so
    the client knows it is cut, and no QUIT: nothing is deleted)."""
    path = tmp_path / "alice"
    [grown] = write_maildir(path, [b"a" * (2 * READ_SIZE)])
    maildir = Maildir(path)
    [info] = run(maildir.messages())
    real_read = os.read
    reads: list[int] = []

    def read(fd: int, count: int) -> bytes:
        data = real_read(fd, count)
        reads.append(len(data))
        if len(reads) == 1:
            with grown.open("ab") as f:
                f.truncate(1000 * READ_SIZE)
        return data

    monkeypatch.setattr(os, "read", read)
    chunks = maildir.open(1)
    assert isinstance(chunks, Iterator)
    got = 0
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(MessageUnavailable):
        for chunk in chunks:
            got += len(chunk)
    assert got <= info.size + READ_SIZE
    assert sum(reads) <= info.size + 2 * READ_SIZE
    assert str(grown) in caplog.records[0].getMessage()


@pytest.mark.parametrize(("smtp_limit", "expected"), [(1000, 2000), (0, 1 << 30)])
def test_the_reference_server_bounds_its_listings_by_its_smtp_size_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, smtp_limit: int, expected: int
) -> None:
    """The reference server delivers every message named with its ``,W=``: a file
    without one is another hand's, read only up to twice what SMTP takes (the library's
    default when SMTP takes any size), and its POP3 sessions' Maildirs have that bound."""
    from smtpcore.server.config import ServerConfig
    from smtpcore.server.mailserver import MailServer
    from smtpcore.server.pop3 import POP3Store

    address = "alice@abc.example"
    config = ServerConfig(
        domains=("abc.example",),
        users={address: "pw"},
        data_dir=tmp_path,
        max_message_size=smtp_limit,
    )
    server = MailServer(config)
    store = POP3Store(config, server.authenticator(), credentials=server.credentials)
    assert store.max_sized_by_reading == expected
    key = config.user_key(address)
    assert key
    write_maildir(config.mailboxes_dir / key, [b"ok\n"])
    sparse(config.mailboxes_dir / key / "new" / "1700000009.M9P9.planted", 2 * expected)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        maildrop = run(store.open_maildrop(POP3Session("pop.test"), address))
        try:
            assert [m.size for m in run(maildrop.messages())] == [4]
        finally:
            run(maildrop.close())
    assert [r.getMessage() for r in caplog.records if "planted" in r.getMessage()]
