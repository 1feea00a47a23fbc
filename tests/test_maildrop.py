"""smtpcore.maildrop: the Maildir maildrop and the store, without a network.

Sizes must be what the server machine sends (CRLF line ends), the listing
must be stable, the lock exclusive, and nothing may change on disk before
UPDATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import tempfile
import threading
import unicodedata
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtpcore._maildir_names
import smtpcore.maildrop
from peers import write_maildir
from smtpcore._dotstuff import DotEncoder
from smtpcore._maildir_listing import _order_key
from smtpcore.maildrop import (
    READ_SIZE,
    Maildir,
    MaildirStore,
    MaildropError,
    MaildropInUse,
    MessageInfo,
    MessageUnavailable,
    POP3Session,
    delivery_order,
    pop3_size,
)
from smtpcore.sasl import (
    Challenge,
    ClientMechanism,
    CramMD5Client,
    PlainClient,
    ScramSHA256Client,
    ServerMechanism,
    Success,
)

T = TypeVar("T")
SESSION = POP3Session("pop.test")


def run(awaitable: Awaitable[T]) -> T:
    async def main() -> T:
        return await awaitable

    return asyncio.run(main())


def wire_size(content: bytes, chunks: list[bytes]) -> int:
    """Octets the server machine sends for ``content``, without the final ``.`` line."""
    encoder = DotEncoder()
    out = b"".join(encoder.encode(chunk) for chunk in chunks) + encoder.end()
    return len(out.replace(b"\r\n..", b"\r\n.")) - 3 - (out.startswith(b"..") and 1)


@given(
    st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b"xy", b"."]), max_size=30), st.data()
)
def test_pop3_size_counts_what_the_machine_sends(parts: list[bytes], data: st.DataObject) -> None:
    content = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(content)), max_size=4)))
    chunks = [content[a:b] for a, b in zip([0, *cuts], [*cuts, len(content)], strict=True)]
    assert pop3_size(chunks) == wire_size(content, chunks)


@pytest.mark.parametrize(
    ("content", "size"),
    [
        (b"", 0),
        (b"a\r\n", 3),
        (b"a\n", 3),
        (b"a", 3),
        (b"a\rb\n", 6),
        (b"\n\n", 4),
    ],
)
def test_pop3_size_table(content: bytes, size: int) -> None:
    assert pop3_size([content]) == size


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_pop3_size_counts_the_content_itself_as_one_chunk(kind: type[bytes]) -> None:
    """As the docs say a store uses it: ``pop3_size(content)``, not only its chunks."""
    content = b"Subject: hi\n\nhello\n"
    assert pop3_size(kind(content)) == pop3_size([content]) == len(content) + 3
    assert pop3_size(iter([b"a\r", b"\nb"])) == 6


def test_message_info_checks_its_fields() -> None:
    MessageInfo(0, "a" * 70)
    for size, uid in [(-1, "a"), (1, ""), (1, "a" * 71), (1, "a b"), (1, "é")]:
        with pytest.raises(ValueError):
            MessageInfo(size, uid)


def test_listing_sizes_uids_and_order(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    write_maildir(path, [b"Subject: 1\n\nbody\n", b"Subject: 2\r\n\r\nbody\r\n"])
    # A Dovecot-style name with its virtual size, in cur with flags.
    (path / "cur" / "1800000000.M9P1.test,S=5,W=7:2,S").write_bytes(b"x\ny\nz")
    (path / "new" / ".hidden").write_bytes(b"not a message")
    maildir = Maildir(path)
    listing = run(maildir.messages())
    assert [m.size for m in listing] == [20, 20, 7]
    assert listing[0].uid.startswith("1700000001.")
    assert listing[2].uid == "1800000000.M9P1.test,S=5,W=7"
    long_name = "1900000000." + "x" * 80
    (path / "new" / long_name).write_bytes(b"m\n")
    uid = run(Maildir(path).messages())[-1].uid
    assert len(uid) == 32 and uid.isalnum()


def test_what_is_not_a_regular_file_is_not_a_message(tmp_path: Path) -> None:
    """A directory, a FIFO (whose open would block the server) and a dangling link in
    new/ or cur/ are another program's, not messages: skipped, as dotfiles are."""
    path = tmp_path / "alice"
    write_maildir(path, [b"Subject: 1\n\nbody\n"])
    (path / "cur" / "somedir").mkdir()
    (path / "new" / "1800000000.M1P1.test,S=5,W=7").mkdir()
    os.mkfifo(path / "new" / "1800000001.fifo")
    (path / "cur" / "1800000002.link").symlink_to(path / "nowhere")
    listing = run(Maildir(path).messages())
    assert [m.size for m in listing] == [20]


@pytest.mark.parametrize("content", [b"Subject: x\r\n\r\nbody", b"a\rb\r\n", b"a\n\n"])
def test_a_written_messages_w_size_is_what_retr_sends(tmp_path: Path, content: bytes) -> None:
    """The reference server's ``,W=`` is what LIST then says: RFC 1939 §5 wants it to be
    what RETR sends, the final CRLF added to unended content included."""
    from smtpcore.server.maildir import Maildir as Writer

    writer = Writer(tmp_path / "alice")
    writer.deliver(b"", [content])
    maildir = Maildir(tmp_path / "alice")
    [info] = run(maildir.messages())
    [written] = writer.messages()
    assert info.size == pop3_size([written.read_bytes()])
    assert f"W={info.size}" in written.name


def test_an_unended_file_an_older_version_delivered_keeps_its_listed_size(
    tmp_path: Path,
) -> None:
    """Earlier, the reference server stored unended content (from BDAT) as it came
    and named it ``,W=`` with the CRLF that RETR adds: such files are still listed with
    that size, which is still what RETR sends. (Deliveries now end the content with an
    LF, and their ``,W=`` is Dovecot's.)"""
    path = tmp_path / "alice"
    write_maildir(path, [])
    old = path / "cur" / "1800000000.M9P1.test,S=5,W=9:2,S"
    old.write_bytes(b"x\ny\nz")
    maildir = Maildir(path)
    [info] = run(maildir.messages())
    assert info.size == 9 == pop3_size(b"".join(maildir.open(1)))


def test_open_streams_and_a_vanished_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    [_, second] = write_maildir(path, [b"a" * 300_000, b"b\n"])
    maildir = Maildir(path)
    run(maildir.messages())

    def read(number: int) -> list[bytes]:
        chunks = maildir.open(number)
        assert isinstance(chunks, Iterator)  # local files: read without a deadline
        return list(chunks)

    chunks = read(1)
    assert len(chunks) > 1 and b"".join(chunks) == b"a" * 300_000
    second.unlink()
    with pytest.raises(MessageUnavailable):
        read(2)
    with pytest.raises(MessageUnavailable):
        read(3)


@pytest.mark.parametrize("size", [0, 10_241, READ_SIZE, READ_SIZE + 5])
@pytest.mark.parametrize("most", [None, 1000])
def test_a_message_is_read_from_its_descriptor_to_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, most: int | None
) -> None:
    """A message is read with ``os.read`` on its descriptor, no file object made (three
    system calls more a RETR), and no read past its end once the size ``fstat`` gave is
    read by a short read; a read that is short before that (``most``) is not taken for
    the end."""
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "alice"
    write_maildir(path, [content])
    maildir = Maildir(path)
    run(maildir.messages())
    reads: list[int] = []
    real_read = os.read

    def read(fd: int, count: int) -> bytes:
        data = real_read(fd, count if most is None else min(count, most))
        reads.append(len(data))
        return data

    monkeypatch.setattr(os, "read", read)
    assert b"".join(maildir.open(1)) == content
    assert sum(reads) == size
    if most is None:  # one read a READ_SIZE, and one that finds the end after a full one
        assert len(reads) == size // READ_SIZE + 1
    else:
        assert len(reads) == -(-size // most) + (size % most == 0)


def test_a_link_or_a_fifo_in_a_messages_place_is_not_read(tmp_path: Path) -> None:
    """A symbolic link to a message is not followed (whoever can write into the Maildir
    would read any file the server can), and a FIFO put in a listed message's place is
    not opened blocking (every session of the server would stall): unavailable."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours\n")
    path = tmp_path / "alice"
    [first, second] = write_maildir(path, [b"a\n", b"b\n"])
    (path / "new" / "1800000003.M1P1.test").symlink_to(secret)
    maildir = Maildir(path)
    assert [m.size for m in run(maildir.messages())] == [3, 3]
    first.unlink()
    os.mkfifo(first)  # a writer never comes: a blocking open would wait for good
    second.unlink()
    second.symlink_to(secret)
    for number in (1, 2):
        with pytest.raises(MessageUnavailable):
            list(maildir.open(number))


def test_a_message_another_reader_renamed_is_read_and_deleted_where_it_is(
    tmp_path: Path,
) -> None:
    """A mail reader that moves a message from new/ to cur/ (its flags changed) during a
    POP3 session does not make it unavailable, nor its DELE a removal that removed
    nothing: the file is found again by its unique name, as Dovecot finds it."""
    path = tmp_path / "alice"
    [first, second] = write_maildir(path, [b"one\n", b"two\n"])
    maildir = Maildir(path)
    run(maildir.messages())
    for listed in (first, second):
        listed.rename(path / "cur" / f"{listed.name}:2,S")
    assert b"".join(maildir.open(1)) == b"one\n"
    run(maildir.update(deleted={1, 2}, retrieved={1}))
    assert os.listdir(path / "new") == [] and os.listdir(path / "cur") == []


def test_a_renamed_message_beside_a_copy_of_it_is_refused_not_guessed(tmp_path: Path) -> None:
    """A listed file renamed by another reader (its flags changed) beside a copy of it
    under the same unique name: which is the message cannot be told, so RETR and DELE
    are refused (DELE counted as not done) rather than acting on whichever file the
    directory lists first; both files stay. A file moved under its full name is found
    exactly, whatever shares its unique name."""
    path = tmp_path / "alice"
    base = "1700000001.M1P1.test"
    (path / "cur").mkdir(parents=True)
    (path / "new").mkdir()
    (path / "cur" / f"{base}:2,S").write_bytes(b"the message\n")
    maildir = Maildir(path)
    run(maildir.messages())
    (path / "cur" / f"{base}:2,S").rename(path / "cur" / f"{base}:2,ST")
    (path / "cur" / f"{base}:2,T").write_bytes(b"a copy\n")
    with pytest.raises(MaildropError, match="2 files hold message"):
        list(maildir.open(1))
    with pytest.raises(MaildropError, match="1 deleted messages could not be removed"):
        run(maildir.update(deleted={1}, retrieved=set()))
    assert sorted(os.listdir(path / "cur")) == [f"{base}:2,ST", f"{base}:2,T"]
    run(maildir.close())

    (path / "cur" / f"{base}:2,T").unlink()
    (path / "new" / f"{base}:2,S").write_bytes(b"a copy\n")
    again = Maildir(path)
    run(again.messages())  # lists cur/...:2,ST, the copy in new/ being the same message
    (path / "cur" / f"{base}:2,ST").rename(path / "new" / f"{base}:2,ST")
    assert b"".join(again.open(1)) == b"the message\n"  # its full name, found exactly


def test_two_files_of_one_unique_name_list_one_message_and_warn_naming_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A copy beside a rename (the same unique name, other flags): one unique-id names
    one message (RFC 1939 §7), so one is listed; the other, hidden until the first is
    deleted, was hidden without a word. The operator is told which files to fix."""
    path = tmp_path / "alice"
    base = "1700000001.M1P1.test"
    (path / "cur").mkdir(parents=True)
    (path / "new").mkdir()
    (path / "cur" / f"{base}:2,S").write_bytes(b"the message\n")
    (path / "new" / base).write_bytes(b"a copy\n")
    (path / "cur" / "1700000002.M1P1.test:2,").write_bytes(b"another\n")
    maildir = Maildir(path)
    with caplog.at_level(logging.WARNING, logger="smtpcore.pop3.server"):
        listing = run(maildir.messages())
    assert [m.uid for m in listing] == [base, "1700000002.M1P1.test"]
    assert b"".join(maildir.open(1)) == b"the message\n"
    [warning] = caplog.records
    assert repr(str(path / "cur" / f"{base}:2,S")) in warning.getMessage()
    assert repr(str(path / "new" / base)) in warning.getMessage()
    run(maildir.close())


def test_update_deletes_marks_seen_and_moves_new_to_cur(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n", b"2\n", b"3\n"])
    (path / "cur" / "1700000009.M9P1.test:2,F").write_bytes(b"4\n")
    maildir = Maildir(path)
    uids = [m.uid for m in run(maildir.messages())]
    run(maildir.update(deleted={1}, retrieved={2, 4}))
    assert sorted(os.listdir(path / "new")) == []
    assert sorted(os.listdir(path / "cur")) == sorted(
        [f"{uids[1]}:2,S", f"{uids[2]}:2,", f"{uids[3]}:2,FS"]
    )
    assert [m.uid for m in run(Maildir(path).messages())] == uids[1:]


def test_an_update_given_up_finishes_in_its_thread_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UPDATE runs in a worker thread: a wait given up (the store timeout) leaves it
    to finish, every message either removed or whole in ``cur/``, and a close
    meanwhile lets the lock go only when it is done, so that no session lists a
    maildrop still being updated."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n", b"2\n", b"3\n"])
    moving = threading.Event()
    mark = smtpcore._maildir_names.mark

    def slow_mark(*args: Any, **options: Any) -> None:
        moving.wait(5)
        mark(*args, **options)

    monkeypatch.setattr(smtpcore._maildir_names, "mark", slow_mark)

    async def main() -> None:
        maildrop = await MaildirStore(tmp_path, {}).open_maildrop(SESSION, "alice")
        uids = [m.uid for m in await maildrop.messages()]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(maildrop.update({1}, {2}), 0.2)
        await maildrop.close()
        with pytest.raises(MaildropInUse):
            Maildir(path).lock()
        moving.set()
        again = Maildir(path)
        for _ in range(500):
            with contextlib.suppress(MaildropInUse):
                again.lock()
                break
            await asyncio.sleep(0.01)
        assert sorted(os.listdir(path / "cur")) == [f"{uids[1]}:2,S", f"{uids[2]}:2,"]
        assert [m.uid for m in await again.messages()] == uids[1:]
        await again.close()

    try:
        run(main())
    finally:
        moving.set()
    assert os.listdir(path / "new") == []
    assert sorted(p.read_bytes() for p in (path / "cur").iterdir()) == [b"2\n", b"3\n"]


def test_a_close_before_its_work_started_stops_the_work(tmp_path: Path) -> None:
    """Work whose wait was given up before a thread took it never starts once the
    maildrop is closed: nothing is removed without the lock."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n"])
    maildir = Maildir(path)
    maildir.lock()
    run(maildir.messages())
    run(maildir.close())
    with pytest.raises(MaildropError, match="over"):
        run(maildir.update({1}, set()))
    assert len(os.listdir(path / "new")) == 1


def test_listings_sharing_a_size_cache_run_at_once(tmp_path: Path) -> None:
    """The listings of several sessions fill one ``size_cache`` from their threads
    at the same time: every size right, the cache bounded."""
    contents = [b"x" * n + b"\n" * (n % 3) for n in range(40)]
    for user in range(6):
        write_maildir(tmp_path / f"u{user}", contents)
    store = MaildirStore(tmp_path, {})

    async def main() -> list[list[int]]:
        listings = await asyncio.gather(
            *(store.maildir(f"u{user}").messages() for user in range(6))
        )
        return [[m.size for m in listing] for listing in listings]

    assert run(main()) == [[pop3_size([c]) for c in contents]] * 6
    assert len(store.size_cache) == 6 * 40


def test_maildir_listings_keep_off_the_loops_shared_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listings run in the store's own threads: twelve slow ones at once leave the
    event loop's default executor (the reference server's spool writes, password
    checks) free; on it, they held every other use of it for the whole listing.

    "Free" is an order, not a stopwatch: a call on the default executor is done while
    every listing thread is still held in its scan and the rest queue behind them."""
    import time

    from smtpcore import _threads

    for user in range(12):
        write_maildir(tmp_path / f"u{user}", [b"x\n"])
    store = MaildirStore(tmp_path, {})
    scan = Maildir._scan
    lock = threading.Lock()
    scanning: list[str] = []  # the scans under way
    release = threading.Event()  # the test lets them finish
    released: list[bool] = []

    def slow_scan(self: Maildir) -> Any:
        with lock:
            scanning.append(self.path.name)
        released.append(release.wait(10))
        return scan(self)

    monkeypatch.setattr(Maildir, "_scan", slow_scan)

    async def main() -> tuple[int, int]:
        listings = [
            asyncio.ensure_future(store.maildir(f"u{user}").messages()) for user in range(12)
        ]
        try:
            due = time.monotonic() + 10
            while len(scanning) < _threads.STORE_THREADS:  # every store thread is held
                assert time.monotonic() < due, f"{len(scanning)} scans under way"
                await asyncio.sleep(0.01)
            await asyncio.wait_for(asyncio.to_thread(lambda: None), 5)
            held = (len(scanning), len(released))  # when the call was done
        finally:
            release.set()
        await asyncio.gather(*listings)
        return held

    assert run(main()) == (_threads.STORE_THREADS, 0)
    assert released == [True] * 12  # no scan waited out its 10 s
    assert _threads.STORE_THREADS < 12  # the listings queued on their own threads


@given(st.lists(st.text(alphabet="0123456789.:,MPQRa\u00b2\x01\xff", max_size=12), max_size=8))
def test_the_listings_sort_key_orders_as_delivery_order(names: list[str]) -> None:
    """The listing sorts by a compact string key: the same order as the
    :func:`delivery_order` lists, ties included (the sort is stable)."""
    by_list = sorted(names, key=delivery_order)
    assert sorted(names, key=_order_key) == by_list
    for a, b in itertools.pairwise(by_list):
        assert (delivery_order(a) == delivery_order(b)) == (_order_key(a) == _order_key(b))


def test_a_deleted_message_takes_its_size_out_of_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sizes read from files without ``,W=`` (another program delivered them) are
    shared by every session of a store: each is dropped when its message is deleted,
    and the cache starts over past ``_SIZES_KEPT``, so that fetching and deleting mail
    does not grow the server's memory for good."""
    store = MaildirStore(tmp_path, {"alice": "pw"})
    for _ in range(3):
        write_maildir(tmp_path / "alice", [b"1\n", b"2\n"])
        maildrop = run(store.open_maildrop(SESSION, "alice"))
        run(maildrop.messages())
        assert len(store.size_cache) == 2
        run(maildrop.update(deleted={1, 2}, retrieved={1, 2}))
        run(maildrop.close())
        assert store.size_cache == {}
    monkeypatch.setattr("smtpcore._maildir_listed._SIZES_KEPT", 2)
    write_maildir(tmp_path / "alice", [b"1\n", b"2\n", b"3\n"])
    listing = run(Maildir(tmp_path / "alice", size_cache=store.size_cache).messages())
    assert [m.size for m in listing] == [3, 3, 3] and len(store.size_cache) == 1


def test_nothing_changes_on_disk_without_update(tmp_path: Path) -> None:
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n", b"2\n"])
    before = sorted(os.listdir(path / "new"))
    store = MaildirStore(tmp_path, {"alice": "pw"})
    maildrop = run(store.open_maildrop(SESSION, "alice"))
    run(maildrop.close())
    assert sorted(os.listdir(path / "new")) == before


def test_the_lock_is_exclusive_until_closed(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, {"alice": "pw"})
    first = run(store.open_maildrop(SESSION, "alice"))
    with pytest.raises(MaildropInUse) as info:
        run(store.open_maildrop(SESSION, "alice"))
    assert info.value.code == "IN-USE"
    run(first.close())
    run(run(store.open_maildrop(SESSION, "alice")).close())


def test_store_credentials_and_mechanisms(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path, {"alice": "pw"}, apop=False)
    assert run(store.check_password(SESSION, "alice", "pw"))
    assert not run(store.check_password(SESSION, "alice", "PW"))
    assert not run(store.check_password(SESSION, "bob", ""))
    assert run(store.apop_secret(SESSION, "alice")) is None
    assert list(store.sasl_mechanisms(SESSION)) == [
        "SCRAM-SHA-256-PLUS",  # the session offers it only with channel binding data
        "SCRAM-SHA-256",
        "CRAM-MD5",
    ]
    secure = POP3Session("pop.test", tls=object())  # type: ignore[arg-type]  # any TLS state
    assert "PLAIN" in store.sasl_mechanisms(secure)
    for user in ("../etc", "", ".."):
        with pytest.raises(MaildropError):
            run(store.open_maildrop(SESSION, user))


def test_a_password_is_taken_decomposed_as_scram_takes_it(tmp_path: Path) -> None:
    """PASS, PLAIN and LOGIN compared the password octet for octet: a client that sent
    "päss" decomposed was refused, while SCRAM (which prepares it) let the user in."""
    composed = "p\u00e4ss"
    decomposed = unicodedata.normalize("NFD", composed)
    store = MaildirStore(tmp_path, {"alice": composed}, plaintext_sasl=True)
    assert run(store.check_password(SESSION, "alice", decomposed))
    assert not run(store.check_password(SESSION, "alice", decomposed + "x"))
    for name, messages in [
        ("PLAIN", [b"\x00alice\x00" + decomposed.encode()]),
        ("LOGIN", [b"alice", decomposed.encode()]),
    ]:
        mechanism = store.sasl_mechanisms(SESSION)[name]()
        step = mechanism.start(None)
        for message in messages:
            assert isinstance(step, Challenge)
            step = mechanism.step(message)
        assert step == Success("alice", "alice"), name


def _sasl_login(server: ServerMechanism, client: ClientMechanism) -> str | None:
    """Whom a server mechanism lets the client in as, or None."""
    step = server.start(client.initial_response())
    while isinstance(step, Challenge):
        step = server.step(client.respond(step.data))
    return step.authzid if isinstance(step, Success) else None


@pytest.mark.parametrize(
    ("stored", "prepared"),
    [
        ("\uff71\uff72", "\u30a2\u30a4"),  # halfwidth katakana
        ("\ufb01ona", "fiona"),  # the ligature fi
        ("\u2168", "IX"),  # ROMAN NUMERAL NINE
        ("jose\u0301", "jos\u00e9"),  # decomposed
        ("jos\u00e9", "jose\u0301"),  # composed, the client decomposes
        ("\u05e9\u05dc\u05d5\u05dd@abc.example",) * 2,  # right-to-left, then a domain
    ],
)
def test_a_user_whose_name_saslprep_rewrites_logs_in_by_every_path(
    tmp_path: Path, stored: str, prepared: str
) -> None:
    """The SASL mechanisms give the store the user name SASLprep'd (``アイ`` for
    ``ｱｲ``), and ``passwords`` was looked up by it as given: such a user could not
    log in by AUTH at all, only by USER/PASS and APOP. Now every path finds him
    by either spelling, and opens his Maildir as ``passwords`` names it."""
    store = MaildirStore(tmp_path, {stored: "pw"}, plaintext_sasl=True)
    for login in (stored, prepared):
        mechanisms = store.sasl_mechanisms(SESSION)
        for name, client in [
            ("PLAIN", PlainClient(login, "pw")),
            ("SCRAM-SHA-256", ScramSHA256Client(login, "pw")),
            ("CRAM-MD5", CramMD5Client(login, "pw")),
        ]:
            user = _sasl_login(mechanisms[name](), client)
            assert user is not None, (login, name)
            maildrop = run(store.open_maildrop(SESSION, user))
            assert maildrop.path == tmp_path / stored  # type: ignore[attr-defined]  # a Maildir
            run(maildrop.close())
        assert _sasl_login(mechanisms["PLAIN"](), PlainClient(login, "wrong")) is None
        assert run(store.check_password(SESSION, login, "pw"))  # USER/PASS
        assert not run(store.check_password(SESSION, login, "wrong"))
        assert run(store.apop_secret(SESSION, login)) == "pw"


def test_a_name_saslprep_refuses_is_kept_as_given(tmp_path: Path) -> None:
    """A private-use character is prohibited by SASLprep: the name is kept as given,
    so that USER/PASS and APOP still find the user (AUTH refuses the name, RFC 4616
    §2)."""
    store = MaildirStore(tmp_path, {"\ue000x": "pw", "kate": "pw2"}, plaintext_sasl=True)
    assert run(store.check_password(SESSION, "\ue000x", "pw"))
    assert run(store.apop_secret(SESSION, "\ue000x")) == "pw"
    assert not run(store.check_password(SESSION, "\ue000X", "pw"))
    plain = store.sasl_mechanisms(SESSION)["PLAIN"]()
    assert not isinstance(plain.start("\0\ue000x\0pw".encode()), Success)
    maildrop = run(store.open_maildrop(SESSION, "\ue000x"))
    assert maildrop.path == tmp_path / "\ue000x"  # type: ignore[attr-defined]  # a Maildir
    run(maildrop.close())


def test_two_names_one_login_would_find_are_refused_and_the_users_are_read_only(
    tmp_path: Path,
) -> None:
    """``ｱｲ`` and ``アイ`` are one login once SASLprep'd: the store cannot tell which
    is meant. The users are prepared when given, so a change is a new mapping."""
    with pytest.raises(ValueError, match="log in by one name"):
        MaildirStore(tmp_path, {"\uff71\uff72": "one", "\u30a2\u30a4": "two"})
    store = MaildirStore(tmp_path, {"alice": "pw"})
    with pytest.raises(TypeError):
        store.passwords["bob"] = "pw"  # type: ignore[index]  # read-only, the test's point
    store.passwords = {"\u2168": "pw"}
    assert run(store.check_password(SESSION, "IX", "pw"))
    assert not run(store.check_password(SESSION, "alice", "pw"))


def test_delivery_order_compares_numbers_as_numbers(tmp_path: Path) -> None:
    # Two deliveries in one second: microseconds and counters are not zero-padded.
    names = [
        "1700000000.M99999P7Q9R1.host",
        "1700000000.M123456P7Q10R2.host",
        "1700000001.M5P7Q11R3.host",
        "999999999.M1P1.host",
    ]
    path = tmp_path / "alice"
    write_maildir(path, [])
    for name in reversed(names):
        (path / "new" / name).write_bytes(name.encode() + b"\n")
    listing = run(Maildir(path).messages())
    assert [m.uid for m in listing] == [names[3], *names[:3]]


def test_delivery_order_takes_ascii_digits_alone_as_numbers(tmp_path: Path) -> None:
    """A name with a digit that is not ASCII (``²``, ``①``) between ASCII ones sorts
    by its ASCII runs: ``str.isdigit`` holds for those, and ``int`` refused them, so
    one such file in ``new/`` made every login to the maildrop fail."""
    assert delivery_order("17\u00b25.host") == [
        (0, 17, ""),
        (1, 0, "\u00b2"),
        (0, 5, ""),
        (1, 0, ".host"),
    ]
    names = ["1700000001.M2\u2460\u24603P1.host", "1700000001.M10P1.host"]
    path = tmp_path / "alice"
    write_maildir(path, [])
    for name in names:
        (path / "new" / name).write_bytes(b"Subject: x\n\nbody\n")
    assert len(run(Maildir(path).messages())) == 2


def _server_private(tmp_path: Path) -> Path:
    """A directory of the server's own that no POP3 user may read or change."""
    private = tmp_path / "server-private"
    private.mkdir()
    (private / "1700000001.M1P1.db-password").write_bytes(b"s3cret\n")
    (private / "1700000002.M2P1.config").write_bytes(b"[x]\n")
    return private


def _link_cur(maildir: Path, private: Path) -> Path:
    shutil.rmtree(maildir / "cur")
    (maildir / "cur").symlink_to(private)
    return maildir / "cur"


def _link_new(maildir: Path, private: Path) -> Path:
    shutil.rmtree(maildir / "new")
    (maildir / "new").symlink_to(private)
    return maildir / "new"


def _link_lock_file(maildir: Path, private: Path) -> Path:
    (maildir / "smtpcore-pop3.lock").symlink_to(private / "created-by-the-server")
    return maildir / "smtpcore-pop3.lock"


def _lock_directory(maildir: Path, private: Path) -> Path:
    (maildir / "smtpcore-pop3.lock").mkdir()
    return maildir / "smtpcore-pop3.lock"


def _lock_fifo(maildir: Path, private: Path) -> Path:
    os.mkfifo(maildir / "smtpcore-pop3.lock")
    return maildir / "smtpcore-pop3.lock"


def _lock_hard_link(maildir: Path, private: Path) -> Path:
    os.link(private / "1700000002.M2P1.config", maildir / "smtpcore-pop3.lock")
    return maildir / "smtpcore-pop3.lock"


def _lock_socket(maildir: Path, private: Path) -> Path:
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(maildir / "smtpcore-pop3.lock"))
    return maildir / "smtpcore-pop3.lock"


def test_an_empty_lock_file_with_other_names_is_taken(tmp_path: Path) -> None:
    """A hard-link copy of the mailboxes (``cp -al``) gives each lock file a second
    name: still an empty file the server made, it is taken, and the user logs in."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n"])
    maildir = Maildir(path)
    maildir.lock()
    run(maildir.close())
    os.link(path / "smtpcore-pop3.lock", tmp_path / "snapshot.lock")
    again = Maildir(path)
    again.lock()
    assert [m.size for m in run(again.messages())] == [3]
    run(again.close())


def test_a_maildrop_locked_again_over_a_folder_made_anew_finds_what_is_there(
    tmp_path: Path,
) -> None:
    """``cur`` removed and made again between two locks (ext4 gives the new folder the
    old inode at once): the listing is kept by folder name, as paths kept it, and a
    message whose file is gone is unavailable; UPDATE removes what is still there."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n", b"2\n"], subdir="cur")
    maildir = Maildir(path)
    maildir.lock()
    run(maildir.messages())
    number = {b"".join(maildir.open(n)): n for n in (1, 2)}
    run(maildir.close())
    kept = next(p for p in (path / "cur").iterdir() if p.read_bytes() == b"2\n")
    shutil.rmtree(path / "cur")
    (path / "cur").mkdir()
    (path / "cur" / kept.name).write_bytes(b"2\n")
    maildir.lock()
    with pytest.raises(MessageUnavailable):
        b"".join(maildir.open(number[b"1\n"]))
    run(maildir.update(deleted={number[b"2\n"]}, retrieved=()))
    run(maildir.close())
    assert os.listdir(path / "cur") == []


@pytest.mark.parametrize(
    "plant",
    [
        _link_cur,
        _link_new,
        _link_lock_file,
        _lock_directory,
        _lock_fifo,
        _lock_socket,
        _lock_hard_link,
    ],
)
def test_a_link_or_another_file_in_place_of_a_folder_or_the_lock_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, plant: Any
) -> None:
    """A user who can write into his Maildir puts there a link to a directory of the
    server's: no session lists, reads, removes or renames a file there, nor creates the
    lock file where a link points. Nor is a directory, a FIFO or a socket taken for the
    lock file, nor a hard link to another file (a user could link one of the server's
    that he can read, and have the server lock it). The login gets ``-ERR [SYS/PERM]``
    (it stays so until an operator acts, RFC 3206 §4) and a warning names what is
    there."""
    private = _server_private(tmp_path)
    path = tmp_path / "mail" / "alice"
    write_maildir(path, [b"mine\n"])
    link = plant(path, private)
    before = sorted(os.listdir(private))
    store = MaildirStore(tmp_path / "mail", {"alice": "pw"})
    with (
        caplog.at_level(logging.WARNING, logger="smtpcore.pop3.server"),
        pytest.raises(MaildropError) as info,
    ):
        run(store.open_maildrop(SESSION, "alice"))
    assert info.value.code == "SYS/PERM"
    assert sorted(os.listdir(private)) == before
    [warning] = caplog.records
    assert str(link) in warning.getMessage()


def test_a_folder_swapped_for_a_link_during_the_session_is_not_followed(
    tmp_path: Path,
) -> None:
    """The folders are opened once, at the lock, and every file named relative to them:
    a link put in a folder's place after the login is not followed either (no check
    then use)."""
    private = _server_private(tmp_path)
    path = tmp_path / "mail" / "alice"
    write_maildir(path, [b"mine\n", b"also mine\n"], subdir="cur")
    store = MaildirStore(tmp_path / "mail", {"alice": "pw"})
    maildrop = run(store.open_maildrop(SESSION, "alice"))
    (path / "cur").rename(path / "cur-moved")
    (path / "cur").symlink_to(private)
    before = sorted(os.listdir(private))
    assert b"".join(maildrop.open(1)) == b"mine\n"  # type: ignore[arg-type]  # a plain iterator
    run(maildrop.update(deleted={2}, retrieved={1}))
    run(maildrop.close())
    assert sorted(os.listdir(private)) == before
    assert len(os.listdir(path / "cur-moved")) == 1


def test_an_over_long_user_name_is_a_permanent_failure(tmp_path: Path) -> None:
    """A name longer than the file system takes (ENAMETOOLONG) will not get shorter by
    trying again: ``SYS/PERM``, not ``SYS/TEMP`` (RFC 3206 §4)."""
    store = MaildirStore(tmp_path, {"x" * 300: "pw"})
    with pytest.raises(MaildropError) as info:
        run(store.open_maildrop(SESSION, "x" * 300))
    assert info.value.code == "SYS/PERM"


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_no_session_leaves_a_descriptor_open(tmp_path: Path) -> None:
    """Every descriptor a maildrop opens (its directory, folders, lock file, messages)
    is closed when it is released: after QUIT, after a dropped connection (close
    alone), after a refused login, and when a maildrop used without a lock is closed."""
    write_maildir(tmp_path / "alice", [b"1\n", b"2\n", b"3\n"])
    write_maildir(tmp_path / "bob", [])
    _link_cur(tmp_path / "bob", _server_private(tmp_path))
    store = MaildirStore(tmp_path, {"alice": "pw", "bob": "pw"})

    async def sessions() -> None:
        for round in range(50):
            maildrop = await store.open_maildrop(SESSION, "alice")
            b"".join(maildrop.open(1 + round % 3))  # type: ignore[arg-type]  # plain iterator
            if round % 2:
                await maildrop.update(deleted=(), retrieved={1})
            await maildrop.close()
            with pytest.raises(MaildropError):
                await store.open_maildrop(SESSION, "bob")
            unlocked = Maildir(tmp_path / "alice")
            await unlocked.messages()
            await unlocked.close()

    run(sessions())  # the first round opens what asyncio keeps open (its threads)
    before = _open_descriptors()
    run(sessions())
    assert _open_descriptors() == before


def test_a_maildir_the_operator_linked_elsewhere_is_served(tmp_path: Path) -> None:
    """The Maildir's own directory lives in the operator's directory, out of its user's
    reach: a link there (``root/alice -> /srv/real/alice``) is the operator's, and is
    followed. Its ``cur``, ``new`` and lock file are still opened without following."""
    real = tmp_path / "srv" / "real" / "alice"
    write_maildir(real, [b"one\n", b"two\n"])
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "alice").symlink_to(real)
    store = MaildirStore(tmp_path / "mail", {"alice": "pw"})

    async def session() -> None:
        maildrop = await store.open_maildrop(SESSION, "alice")
        assert len(await maildrop.messages()) == 2
        assert b"".join(maildrop.open(1)) == b"one\n"  # type: ignore[arg-type]  # plain
        await maildrop.update(deleted={1}, retrieved=())
        await maildrop.close()

    run(session())
    assert os.listdir(real / "new") == []
    assert [p.read_bytes() for p in (real / "cur").iterdir()] == [b"two\n"]
    assert (real / "smtpcore-pop3.lock").is_file()


def test_a_maildir_used_unlocked_that_does_not_exist_is_empty(tmp_path: Path) -> None:
    """A Maildir used without :meth:`~Maildir.lock` whose directory is missing holds no
    message (nothing was delivered yet); it lists as empty once it exists, without
    ``cur`` or ``new``, too."""
    missing = Maildir(tmp_path / "nobody")
    assert run(missing.messages()) == []
    run(missing.update(deleted=(), retrieved=()))
    run(missing.close())
    (tmp_path / "later").mkdir()
    assert run(Maildir(tmp_path / "later").messages()) == []


def test_a_lock_while_a_worker_thread_works_is_refused_and_closes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A maildrop used unlocked, whose UPDATE still runs in its thread after a close,
    cannot be locked again: the lock is refused (``IN-USE``) before anything is opened,
    so that no descriptor the thread works through is closed under it (another session
    holding the lock made the refused lock close them, and the thread then renamed
    through closed, or reused, descriptor numbers)."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n", b"2\n", b"3\n"])
    started, go_on = threading.Event(), threading.Event()
    failed: list[OSError] = []
    mark = smtpcore._maildir_names.mark

    def slow_mark(*args: Any, **options: Any) -> None:
        started.set()
        go_on.wait(5)
        try:
            mark(*args, **options)
        except OSError as exc:
            failed.append(exc)
            raise

    monkeypatch.setattr(smtpcore._maildir_names, "mark", slow_mark)

    async def main() -> None:
        holder = Maildir(path)
        holder.lock()
        maildir = Maildir(path)
        await maildir.messages()
        update = asyncio.ensure_future(maildir.update(deleted=(), retrieved={1}))
        for _ in range(500):
            if started.is_set():
                break
            await asyncio.sleep(0.01)
        await maildir.close()
        with pytest.raises(MaildropInUse):
            maildir.lock()
        go_on.set()
        await update
        await holder.close()

    try:
        run(main())
    finally:
        go_on.set()
    assert failed == []
    assert os.listdir(path / "new") == []
    assert len(os.listdir(path / "cur")) == 3


def test_a_maildrop_locked_again_lists_again_when_a_folder_vanished(tmp_path: Path) -> None:
    """A maildrop closed and locked again opens its folders again; the listing of the
    first lock named files relative to folders that may be gone, so it is not kept:
    RETR and UPDATE give a :class:`MaildropError`, never a ``KeyError``, and a new
    listing shows what is there now."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n"], subdir="cur")
    maildir = Maildir(path)
    maildir.lock()
    assert len(run(maildir.messages())) == 1
    run(maildir.close())
    shutil.rmtree(path / "cur")
    maildir.lock()
    with pytest.raises(MessageUnavailable):
        next(maildir.open(1))
    with pytest.raises(MaildropError) as info:
        run(maildir.update(deleted={1}, retrieved=()))
    assert not isinstance(info.value, MessageUnavailable)
    assert run(maildir.messages()) == []
    run(maildir.close())


def _held_by_another_session(path: Path) -> Maildir:
    holder = Maildir(path)
    holder.lock()
    return holder


def _lock_file_is_a_fifo(path: Path) -> None:
    os.mkfifo(path / "smtpcore-pop3.lock")


def _lock_file_is_hard_linked(path: Path) -> None:
    (path / "elsewhere").write_bytes(b"a file of the server's\n")
    os.link(path / "elsewhere", path / "smtpcore-pop3.lock")


@pytest.mark.parametrize(
    "refuse", [_held_by_another_session, _lock_file_is_a_fifo, _lock_file_is_hard_linked]
)
def test_a_refused_lock_leaves_an_unlocked_use_as_it_was(tmp_path: Path, refuse: Any) -> None:
    """A maildrop used without a lock, whose :meth:`~Maildir.lock` is then refused
    (``IN-USE``, or a lock file that is not one), goes on as before: the refusal closes
    only what the lock opened, so its listing stays, RETR reads, and UPDATE removes the
    messages marked deleted (RFC 1939 §6)."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n", b"2\n"])
    maildir = Maildir(path)

    async def main() -> None:
        assert len(await maildir.messages()) == 2
        holder = refuse(path)
        with pytest.raises(MaildropError):
            maildir.lock()
        if isinstance(holder, Maildir):
            await holder.close()
        assert b"".join(maildir.open(2)) == b"2\n"
        await maildir.update(deleted={1}, retrieved={2})
        await maildir.close()

    run(main())
    assert [p.read_bytes() for p in (path / "cur").iterdir()] == [b"2\n"]
    assert os.listdir(path / "new") == []


@given(st.sets(st.integers(1, 4)))
def test_a_maildrop_locked_again_removes_what_was_deleted(deleted: set[int]) -> None:
    """Locked, listed, closed and locked again over the same folders, a maildrop keeps
    its listing: UPDATE removes exactly the messages marked deleted (RFC 1939 §6), and
    never returns having removed none."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "alice"
        write_maildir(path, [b"1\n", b"2\n", b"3\n", b"4\n"], subdir="cur")
        maildir = Maildir(path)
        maildir.lock()
        run(maildir.messages())
        run(maildir.close())
        maildir.lock()
        run(maildir.update(deleted=deleted, retrieved=()))
        run(maildir.close())
        kept = sorted(p.read_bytes() for p in (path / "cur").iterdir())
        assert kept == [b"%d\n" % n for n in range(1, 5) if n not in deleted]


def test_an_update_that_deletes_without_a_listing_is_refused(tmp_path: Path) -> None:
    """UPDATE must remove the messages marked deleted (RFC 1939 §6): with no listing to
    number them (never listed, or forgotten when a folder changed), it raises
    :class:`MaildropError` rather than return having removed nothing."""
    path = tmp_path / "alice"
    write_maildir(path, [b"1\n"])
    maildir = Maildir(path)
    with pytest.raises(MaildropError):
        run(maildir.update(deleted={1}, retrieved=()))
    run(maildir.update(deleted=(), retrieved=()))
    run(maildir.close())
    assert len(os.listdir(path / "new")) == 1


def test_a_lock_after_an_unlocked_use_opens_the_folders_anew(tmp_path: Path) -> None:
    """A maildrop first used without a lock while ``cur`` was missing, then locked with
    ``create=True``, works through the folders the lock opened: at UPDATE a retrieved
    message moves from ``new`` to ``cur`` with the ``S`` flag, as it would have had
    the Maildir been whole at the first use."""
    path = tmp_path / "alice"
    (path / "new").mkdir(parents=True)
    (path / "new" / "1700000001.M1P1.test").write_bytes(b"1\n")
    maildir = Maildir(path)
    assert len(run(maildir.messages())) == 1
    maildir.lock(create=True)
    run(maildir.update(deleted=(), retrieved={1}))
    run(maildir.close())
    assert os.listdir(path / "new") == []
    assert os.listdir(path / "cur") == ["1700000001.M1P1.test:2,S"]
