"""``python -m smtpcore fetch --to-maildir``: mail left on the server is fetched once
(the unique-ids stored are recorded in the Maildir, RFC 1939 §7), and a message the
server cannot give does not stop the others, against the project's own POP3 server."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpcore.__main__ as cli
from peers import running_pop3_server, write_maildir
from smtpcore.maildrop import MaildirStore, Maildrop, POP3Session
from smtpcore.pop3 import Dele, Retr, ServerConnection, Top
from smtpcore.server import fetchrecord
from smtpcore.server.cli import build_parser
from smtpcore.server.fetch import _fetch as fetch_session
from smtpcore.server.fetchrecord import ContentDigest, FetchRecord, record_limit, record_path
from smtpcore.server.maildir import LFWriter, Maildir, Staging
from smtpcore.testing import (
    Call,
    Expect,
    ExpectClose,
    ScriptedConnection,
    ScriptedServer,
    Send,
    Step,
    script,
)
from smtpcore.testing.strategies import pop3_unique_ids

USER = "alice"
LOGIN = (
    *("--user", USER, "--password", "wonderland"),
    *("--no-stls", "--auth", "user", "--allow-plaintext-auth"),
)


def _message(subject: str) -> bytes:
    return f"From: <bob@abc.example>\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


@contextlib.contextmanager
def _pop3(
    root: Path, store: MaildirStore | None = None, **options: Any
) -> Iterator[tuple[str, Path]]:
    """The project's POP3 server on loopback over ``root``'s Maildirs; its address and
    the Maildir of :data:`USER`, to deliver into."""
    store = store or MaildirStore(root, {USER: "wonderland"})
    with running_pop3_server("asyncio", store, **options) as server:
        yield f"127.0.0.1:{server.port}", root / USER


def _fetch(server: str, target: Path, *options: str) -> int:
    return cli.main(["fetch", "--server", server, *LOGIN, "--to-maildir", str(target), *options])


def _subjects(out: str) -> list[str]:
    """The subjects of the summary lines fetch printed, in order."""
    return [line.rsplit('"', 2)[-2] for line in out.splitlines() if line.endswith('"')]


def _deliver(mailbox: Path, *subjects: str) -> None:
    """Deliver messages after those there already (names sort after theirs)."""
    (mailbox / "new").mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        name = f"1800000000.{subject}.test"
        (mailbox / "new" / name).write_bytes(_message(subject))


def _record(target: Path, server: str) -> dict[str, Any]:
    fields = json.loads(record_path(target, server, USER).read_text())
    assert isinstance(fields, dict)
    return fields


def _digest(content: bytes) -> str:
    """The :class:`ContentDigest` of ``content``, fed whole."""
    digest = ContentDigest()
    digest.feed(content)
    return digest.hexdigest()


def _recorded_sizes(target: Path, server: str) -> dict[str, int]:
    """The size recorded with each unique-id."""
    return {uid: size for uid, (size, _) in _record(target, server)["stored"].items()}


def test_a_second_fetch_takes_only_what_is_new_and_all_takes_everything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--delete`` each run stored every message again: a cron job filled the
    Maildir with copies. The unique-ids stored are now recorded in DIR, as fetchmail's
    ``keep``/``uidl``, mpop and getmail do, and ``--all`` takes them again."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["one", "two"]
        assert _fetch(server, target) == 0
        out = capsys.readouterr().out
        assert _subjects(out) == []
        assert "0 messages, 0 octets;" in out
        assert "2 stored before, not fetched again (--all fetches them)." in out
        _deliver(mailbox, "three")
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["three"]
        assert _fetch(server, target, "--all") == 0
        assert _subjects(capsys.readouterr().out) == ["one", "two", "three"]
    assert len(Maildir(target).messages()) == 6  # 2 + 1 + 3 again with --all
    assert len(Maildir(mailbox).messages()) == 3  # nothing deleted
    names = [p.name for p in target.iterdir() if p.is_file()]
    assert len(names) == 1 and names[0].startswith(".")  # the record, a dot-file alone


@dataclass
class _CommandLog:
    """A server hook: the RETR, TOP and DELE commands the server received, in order."""

    seen: list[str] = field(default_factory=list)

    def connection(self, options: Any) -> ServerConnection:
        log = self

        class Logged(ServerConnection):
            def next_event(self) -> Any:  # the machine's own type: events or sentinels
                event = super().next_event()
                if isinstance(event, Retr):
                    log.seen.append(f"RETR {event.message}")
                elif isinstance(event, Top):
                    log.seen.append(f"TOP {event.message} {event.lines}")
                elif isinstance(event, Dele):
                    log.seen.append(f"DELE {event.message}")
                return event

        built: ServerConnection = options.build_connection(Logged)
        return built


def test_delete_after_a_run_that_kept_the_mail_deletes_what_was_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--delete``, a message recorded by a run that kept the mail is read again
    with RETR (its id and size may be a new message's, RFC 1939 §7, and ``TOP n 0``
    shows the header alone) and deleted once its whole content matches the record,
    without being stored again: each RETR'd once, three files in DIR, not five. A new
    one is fetched, then deleted."""
    target = tmp_path / "fetched"
    log = _CommandLog()
    with _pop3(tmp_path / "server", connection_factory=log.connection) as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target) == 0
        _deliver(mailbox, "three")
        capsys.readouterr()
        log.seen.clear()
        assert _fetch(server, target, "--delete") == 0
        assert log.seen == ["RETR 1", "DELE 1", "RETR 2", "DELE 2", "RETR 3", "DELE 3"]
        out = capsys.readouterr().out
        assert _subjects(out) == ["three"]
        assert "2 stored before, read again, found unchanged and deleted." in out
        assert "--all" not in out  # they are gone: --all would not fetch them
        assert Maildir(mailbox).messages() == []
        assert _record(target, server)["stored"] == {}  # deleted at QUIT: forgotten
    assert len(Maildir(target).messages()) == 3


def test_ids_the_server_no_longer_lists_are_pruned(tmp_path: Path) -> None:
    """The record keeps only what the server lists: it stays as small as the mailbox."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        paths = write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target) == 0
        assert len(_record(target, server)["stored"]) == 2
        [first] = [p for p in Maildir(mailbox).messages() if p.name.startswith(paths[0].name)]
        first.unlink()  # read and deleted by another client (moved to cur/ once read)
        assert _fetch(server, target) == 0
        [kept] = _record(target, server)["stored"]
        assert kept == paths[1].name.split(":")[0]


class _VanishingStore(MaildirStore):
    """A Maildir whose message ``vanishing`` is removed once the session has listed it,
    as another client or an expunge would: its RETR is answered ``-ERR``."""

    vanishing: Path | None = None

    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        maildrop = await super().open_maildrop(session, user)
        if self.vanishing is not None:
            self.vanishing.unlink(missing_ok=True)
        return maildrop


def test_a_message_the_server_cannot_give_is_reported_and_the_rest_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One ``-ERR`` to a RETR ended the run without QUIT: nothing stored before it was
    deleted, and, with no record, it was all stored again next time. The message is now
    named on stderr, the others are stored and deleted (QUIT sent), and the status is 1."""
    target = tmp_path / "fetched"
    store = _VanishingStore(tmp_path / "server", {USER: "wonderland"})
    with _pop3(tmp_path / "server", store) as (server, mailbox):
        paths = write_maildir(mailbox, [_message(s) for s in ("one", "two", "three")])
        store.vanishing = paths[1]
        assert _fetch(server, target, "--delete") == 1
        captured = capsys.readouterr()
        assert _subjects(captured.out) == ["one", "three"]
        assert "2 messages, " in captured.out and "1 the server could not give" in captured.out
        refused = "smtpcore fetch: message 2 not retrieved, left on the server: RETR refused: -ERR"
        assert refused in captured.err
        assert Maildir(mailbox).messages() == []  # the two stored were deleted at QUIT
    assert len(Maildir(target).messages()) == 2
    assert list((target / "tmp").iterdir()) == []


def test_a_server_without_uidl_stores_each_message_once_told_by_its_content(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """UIDL is optional (RFC 1939 §7). Without it every message was stored again at
    every run: a cron job filled the Maildir with copies. Each is still read at every
    run (nothing else tells it from one stored before), with one warning line, but
    stored only when its content is not that of one recorded; ``--delete`` deletes
    those found stored, and the record forgets what the server no longer lists."""
    target = tmp_path / "fetched"

    def without_uidl(options: Any) -> Any:
        return options.build_connection(uidl=False)

    with _pop3(tmp_path / "server", connection_factory=without_uidl) as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        for subjects in (["one", "two"], []):
            assert _fetch(server, target) == 0
            captured = capsys.readouterr()
            assert _subjects(captured.out) == subjects
            [warning] = [line for line in captured.err.splitlines() if "UIDL" in line]
            assert "every message is fetched at every run and stored only when" in warning
        assert "2 stored before, read again and found unchanged" in captured.out
        _deliver(mailbox, "three")
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["three"]
        assert _fetch(server, target, "--delete") == 0
        out = capsys.readouterr().out
        assert _subjects(out) == [] and "3 stored before, read again, found unchanged" in out
        assert Maildir(mailbox).messages() == []
        assert _record(target, server)["unidentified"] == []  # deleted at QUIT: forgotten
        _deliver(mailbox, "three")  # sent again
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["three"]
        assert len(_record(target, server)["unidentified"]) == 1
        Maildir(mailbox).messages()[0].unlink()  # deleted by another client
        assert _fetch(server, target) == 0
    assert len(Maildir(target).messages()) == 4
    assert _record(target, server)["unidentified"] == []  # nothing listed, nothing kept


def test_identical_messages_without_ids_are_each_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two messages of one content (an alert sent twice) on a server without UIDL: each
    recorded entry is claimed by one message, so the second copy is stored too, once,
    and a third copy delivered later is stored then."""
    target = tmp_path / "fetched"

    def without_uidl(options: Any) -> Any:
        return options.build_connection(uidl=False)

    with _pop3(tmp_path / "server", connection_factory=without_uidl) as (server, mailbox):
        write_maildir(mailbox, [_message("alert"), _message("alert")])
        for subjects in (["alert", "alert"], []):
            assert _fetch(server, target) == 0
            assert _subjects(capsys.readouterr().out) == subjects
        _deliver(mailbox, "alert")
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["alert"]
    assert len(Maildir(target).messages()) == 3
    assert len(_record(target, server)["unidentified"]) == 3


@pytest.mark.parametrize("damage", ["garbage", "another user", "a link", "a directory"])
def test_a_damaged_record_is_named_and_read_as_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """Duplicates, never a loss: every message is fetched again, the warning names the
    file, and the record is replaced (a link is replaced, never written through)."""
    target = tmp_path / "fetched"
    aside = tmp_path / "elsewhere"
    aside.write_text("precious")
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        assert _fetch(server, target) == 0
        path = record_path(target, server, USER)
        path.unlink()
        if damage == "garbage":
            path.write_bytes(b'{"server": "\xff')
        elif damage == "another user":
            path.write_text(json.dumps({"server": server, "user": "bob", "stored": {}}))
        elif damage == "a link":
            path.symlink_to(aside)
        else:
            path.mkdir()
        capsys.readouterr()
        status = _fetch(server, target)
        captured = capsys.readouterr()
        assert _subjects(captured.out) == ["one"]
        [read_warning] = [line for line in captured.err.splitlines() if "fetched before" in line]
        assert read_warning.count(str(path)) == 1  # named once, whatever the damage
        if damage == "a directory":  # cannot be replaced by a rename: status 1 tells cron
            assert status == 1 and "cannot be written" in captured.err
            return
        assert status == 0
        assert not path.is_symlink() and len(_record(target, server)["stored"]) == 1
    assert aside.read_text() == "precious"


def _full_disk(record: FetchRecord) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("cause", ["a full disk", "a directory at its path"])
def test_a_record_that_cannot_be_written_stops_nothing_and_tells_cron(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cause: str,
) -> None:
    """A record that could not be written ended the run after message 1, without QUIT:
    each run stored message 1 again and the others never came. The run now goes on
    without a record, with one warning naming the file and the reason, and deletes
    nothing: a record on disk that names a message deleted takes a copy of the same
    content sent later for it. The status is 1, for cron."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message(s) for s in ("one", "two", "three")])
        path = record_path(target, server, USER)
        if cause == "a full disk":
            monkeypatch.setattr(FetchRecord, "save", _full_disk)
            reason = "No space left on device"
        else:
            path.mkdir(parents=True)
            reason = "Is a directory"
        assert _fetch(server, target, "--delete") == 1
        captured = capsys.readouterr()
        assert _subjects(captured.out) == ["one", "two", "three"]
        assert len(Maildir(mailbox).messages()) == 3
        assert captured.out.splitlines()[-1].endswith("left on the server.")
    warnings = [line for line in captured.err.splitlines() if "cannot be written" in line]
    assert len(warnings) == 1, captured.err
    assert str(path) in warnings[0] and reason in warnings[0] and "Errno" not in warnings[0]
    assert len(Maildir(target).messages()) == 3


def _read_only_dir(record: FetchRecord) -> None:
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(record.path))


def test_a_record_that_cannot_be_written_still_tells_what_was_stored_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record of one, two and three, three since deleted by another client, in a DIR
    gone read-only: the record pruned of three, written before any message, cannot be
    written. The run dropped it and fetched one and two again, and so did every later
    run (nine messages stored from a mailbox of three, after three runs). It now keeps
    it in memory for the rest of the run: one warning, status 1, nothing fetched
    again."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message(s) for s in ("one", "two", "three")])
        assert _fetch(server, target) == 0
        [three] = mailbox.rglob("*M3P*")  # where the server keeps it now
        three.unlink()
        monkeypatch.setattr(FetchRecord, "save", _read_only_dir)
        for _ in range(2):
            capsys.readouterr()
            assert _fetch(server, target) == 1
            captured = capsys.readouterr()
            assert _subjects(captured.out) == []
            assert "2 stored before, not fetched again" in captured.out
            assert captured.err.count("cannot be written (Permission denied)") == 1
    assert len(Maildir(target).messages()) == 3


@dataclass
class _DeleWatch:
    """A server hook: as each DELE arrives, the ids the record on disk holds then."""

    record: Path | None = None
    seen: list[tuple[int, set[str]]] = field(default_factory=list)

    def connection(self, options: Any) -> ServerConnection:
        watch = self

        class Watched(ServerConnection):
            def next_event(self) -> Any:  # the machine's own type: events or sentinels
                event = super().next_event()
                if isinstance(event, Dele):
                    watch.note(event.message)
                return event

        built: ServerConnection = options.build_connection(Watched)
        return built

    def note(self, number: int) -> None:
        assert self.record is not None
        on_disk = json.loads(self.record.read_text())["stored"] if self.record.exists() else {}
        self.seen.append((number, set(on_disk)))


def test_the_record_on_disk_holds_a_message_before_the_server_sees_its_dele(
    tmp_path: Path,
) -> None:
    """Stored and synced, recorded and synced, then DELE, looked at from the server: a
    change that sent DELE before writing the record passed every other test."""
    target = tmp_path / "fetched"
    watch = _DeleWatch()
    with _pop3(tmp_path / "server", connection_factory=watch.connection) as (server, mailbox):
        paths = write_maildir(mailbox, [_message("one")])
        watch.record = record_path(target, server, USER)
        assert _fetch(server, target) == 0
        _deliver(mailbox, "two", "three")
        assert _fetch(server, target, "--delete") == 0
        assert Maildir(mailbox).messages() == []
    ids = [paths[0].name, "1800000000.two.test", "1800000000.three.test"]
    assert sorted(number for number, _ in watch.seen) == [1, 2, 3]
    for number, on_disk in watch.seen:
        assert ids[number - 1] in on_disk, (number, on_disk)


_SCRIPTED_LOGIN = """
S: +OK ready
C: CAPA
S: +OK
S: USER
S: UIDL
S: .
C: USER alice
S: +OK
C: PASS wonderland
S: +OK
C: CAPA
S: +OK
S: USER
S: UIDL
S: .
"""


def _listed(*contents: bytes) -> list[Step]:
    """LIST answered with the sizes of ``contents``."""
    sizes = "".join(f"S: {n} {len(c)}\n" for n, c in enumerate(contents, 1))
    return script(f"C: LIST\nS: +OK\n{sizes}S: .")


def _retrieved(number: int, content: bytes) -> list[Step]:
    return [Expect(f"RETR {number}".encode()), Send(b"+OK\r\n" + content + b".\r\n")]


def test_a_run_cut_short_still_records_what_it_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A connection lost at message 3: 1 and 2 are in ``new/``, and the record, written
    as the run stops, holds both, so the next run does not store them again. (A change
    that dropped this write passed every other test.) Message 2 is smaller than the
    record, so that only the write after the failure records it."""
    target = tmp_path / "fetched"
    one, two = _message("one"), b"Subject: two\r\n\r\n"
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, two, _message("three")),
        *script("C: UIDL\nS: +OK\nS: 1 id-one\nS: 2 id-two\nS: 3 id-three\nS: ."),
        *_retrieved(1, one),
        *_retrieved(2, two),
        *script("C: RETR 3\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        assert _fetch(where, target) == 1
    assert _subjects(capsys.readouterr().out) == ["one", "two"]
    assert _recorded_sizes(target, where) == {"id-one": len(one), "id-two": len(two)}
    assert len(Maildir(target).messages()) == 2


@pytest.mark.parametrize("number", [0, 2**31])
def test_a_listing_with_a_message_number_no_command_can_name_stops_the_run_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], number: int
) -> None:
    """A LIST and UIDL that name message 0 (or one past 2**31-1, RFC 1939 §5) between 1
    and 2: the run fetched and deleted message 1, then stopped on every run at the
    line with ``RETR message number must be an int ...``, the library's word for the
    caller's mistake, so message 2 never came. The listing is now refused as the
    server's fault, before any message is fetched or marked deleted, and without
    QUIT: nothing leaves the server, and the error names what it sent."""
    target = tmp_path / "fetched"
    one, two = _message("one"), _message("two")
    steps = [
        *script(_SCRIPTED_LOGIN),
        *script(f"C: LIST\nS: +OK\nS: 1 {len(one)}\nS: {number} 5\nS: 2 {len(two)}\nS: ."),
        ExpectClose(),
    ]
    with ScriptedServer(steps) as server:
        assert _fetch(f"127.0.0.1:{server.port}", target, "--delete") == 1
    captured = capsys.readouterr()
    assert _subjects(captured.out) == []
    assert f"the server's listing names message {number}, where messages" in captured.err
    assert "RFC 1939 §5" in captured.err
    assert not (target / "new").exists() or not list((target / "new").iterdir())


@pytest.mark.parametrize(
    ("uidl", "warning", "fetched"),
    [
        (
            "S: +OK\nS: 2 id-two\nS: .",
            "unique-ids missing for some messages",
            "the messages without one are fetched at every run",
        ),
        ("S: -ERR not now", "the server answered UIDL with -ERR", "every message is fetched"),
    ],
)
def test_a_uidl_listing_short_of_ids_is_named_for_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], uidl: str, warning: str, fetched: str
) -> None:
    """A server that offers UIDL but lists ids for some messages only, or answers it
    ``-ERR``, was said to have no UIDL at all. A message without an id is fetched, as
    it cannot be matched with certainty (the others are recorded: see
    :func:`test_messages_left_out_of_the_uidl_listing_leave_the_others_recorded`), with
    one warning saying what the server did."""
    target = tmp_path / "fetched"
    one, two = _message("one"), _message("two")
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, two),
        *script(f"C: UIDL\n{uidl}"),
        *_retrieved(1, one),
        *_retrieved(2, two),
        *script("C: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        assert _fetch(f"127.0.0.1:{server.port}", target) == 0
    captured = capsys.readouterr()
    assert _subjects(captured.out) == ["one", "two"]
    [line] = [line for line in captured.err.splitlines() if "UIDL" in line or "unique" in line]
    assert warning in line and "no UIDL" not in line and fetched in line


@dataclass
class _UidlRewrite:
    """A server hook: its UIDL listings give each unique-id in ``ids`` as the id it maps
    to, or leave its line out where that is None, as a broken server would (the
    project's own refuses to list one id twice, RFC 1939 §7). The RETR, TOP and DELE
    commands it received are in ``log``."""

    ids: dict[str, str | None]
    log: _CommandLog = field(default_factory=_CommandLog)

    def connection(self, options: Any) -> ServerConnection:
        ids = self.ids
        logged = type(self.log.connection(options))

        class Rewriting(logged):  # type: ignore[valid-type, misc]  # a class made at run time
            def send(self, event: Any) -> bytes:
                data: bytes = super().send(event)
                for old, new in ids.items():
                    line = re.compile(rb"^(\d+ )" + re.escape(old.encode()) + rb"\r\n", re.M)
                    data = line.sub(
                        b"" if new is None else rb"\g<1>" + new.encode() + b"\r\n", data
                    )
                return data

        built: ServerConnection = options.build_connection(Rewriting)
        return built


def _uid(path: Path) -> str:
    """The unique-id the project's server gives the message in ``path``: its name."""
    return path.name.split(":")[0]


def _warned(err: str, about: str) -> list[str]:
    return [line for line in err.splitlines() if about in line]


def test_a_repeated_unique_id_fetches_those_messages_each_run_and_the_others_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that gave one unique-id to two messages (RFC 1939 §7 forbids it) stopped
    fetch at its listing: no mail came at all. Those two are now taken as having no
    unique-id, fetched at every run and told by their content, with one warning naming
    the id; the others are recorded and fetched once. Each is stored once."""
    target = tmp_path / "fetched"
    paths: list[Path] = []
    hook = _UidlRewrite({})
    with _pop3(tmp_path / "server", connection_factory=hook.connection) as (server, mailbox):
        paths = write_maildir(mailbox, [_message(s) for s in ("one", "two", "three", "four")])
        hook.ids[_uid(paths[3])] = _uid(paths[1])  # four listed under two's id
        for subjects in (["one", "two", "three", "four"], []):
            assert _fetch(server, target) == 0
            captured = capsys.readouterr()
            assert _subjects(captured.out) == subjects
            [warning] = _warned(captured.err, "unique-id")
            assert f"the unique-id '{_uid(paths[1])}' to 2 messages (2, 4)" in warning
            assert "RFC 1939 §7" in warning
        assert sorted(_recorded_sizes(target, server)) == sorted(map(_uid, [paths[0], paths[2]]))
        assert len(Maildir(mailbox).messages()) == 4  # nothing deleted
    kept = sorted(path.read_bytes() for path in Maildir(target).messages())
    expected = ["one", "two", "three", "four"]  # the repeated two were stored again
    assert kept == sorted(_message(s).replace(b"\r\n", b"\n") for s in expected)


def test_a_repeated_unique_id_under_delete_loses_nothing_and_stores_nothing_twice_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that kept the mail, then one with ``--delete``: the messages recorded are
    read again and deleted without being stored again, the two under one id too (told
    by their content; they were stored again), and a third run finds nothing. Every
    message is in DIR once."""
    target = tmp_path / "fetched"
    hook = _UidlRewrite({})
    with _pop3(tmp_path / "server", connection_factory=hook.connection) as (server, mailbox):
        paths = write_maildir(mailbox, [_message(s) for s in ("one", "two", "three")])
        hook.ids[_uid(paths[2])] = _uid(paths[0])  # three listed under one's id
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["one", "two", "three"]
        hook.log.seen.clear()
        assert _fetch(server, target, "--delete") == 0
        captured = capsys.readouterr()
        assert _subjects(captured.out) == []
        assert len(_warned(captured.err, "unique-id")) == 1
        assert "3 stored before, read again, found unchanged and deleted." in captured.out
        assert hook.log.seen == ["RETR 1", "DELE 1", "RETR 2", "DELE 2", "RETR 3", "DELE 3"]
        assert Maildir(mailbox).messages() == []
        assert _fetch(server, target, "--delete") == 0
        captured = capsys.readouterr()
        assert _subjects(captured.out) == [] and "0 messages, 0 octets;" in captured.out
        assert _warned(captured.err, "unique-id") == []
    kept = sorted(path.read_bytes() for path in Maildir(target).messages())
    expected = ["one", "two", "three"]
    assert kept == sorted(_message(s).replace(b"\r\n", b"\n") for s in expected)


def test_messages_left_out_of_the_uidl_listing_leave_the_others_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A UIDL listing short of a message's id made fetch keep no record at all: every
    message came again at every run. The one without an id is still read at every run,
    with one warning, and told by its content; the others are fetched once."""
    target = tmp_path / "fetched"
    hook = _UidlRewrite({})
    with _pop3(tmp_path / "server", connection_factory=hook.connection) as (server, mailbox):
        paths = write_maildir(mailbox, [_message(s) for s in ("one", "two", "three")])
        hook.ids[_uid(paths[1])] = None
        for subjects in (["one", "two", "three"], []):
            assert _fetch(server, target) == 0
            captured = capsys.readouterr()
            assert _subjects(captured.out) == subjects
            [warning] = _warned(captured.err, "unique-id")
            assert "unique-ids missing for some messages" in warning
            assert "the messages without one are fetched at every run" in warning
    assert len(Maildir(target).messages()) == 3


def test_a_listing_missing_one_id_and_repeating_another_gives_one_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listing that left a message out and gave another's id to a third gave two
    warning lines, where the operator's page promises one, and the second said "the
    others keep their record" whether or not anything was recorded."""
    target = tmp_path / "fetched"
    hook = _UidlRewrite({})
    with _pop3(tmp_path / "server", connection_factory=hook.connection) as (server, mailbox):
        paths = write_maildir(mailbox, [_message(s) for s in ("one", "two", "three", "four")])
        hook.ids[_uid(paths[0])] = None
        hook.ids[_uid(paths[2])] = _uid(paths[1])
        assert _fetch(server, target) == 0
        [warning] = _warned(capsys.readouterr().err, "unique-id")
    assert "unique-ids missing for some messages" in warning
    assert f"the unique-id '{_uid(paths[1])}' to 2 messages (2, 3)" in warning
    assert "the messages without one are fetched at every run" in warning
    assert "keep their record" not in warning


@pytest.mark.parametrize("others", [[], ["CCC"]], ids=["alone", "with another"])
def test_a_repeated_id_loses_its_record_whatever_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], others: list[str]
) -> None:
    """A recorded, then a new message listed under A's id too, then that one gone: the
    record entry of a repeated id is forgotten whether or not another message has an id
    of its own, so A comes once more when its id is its own again. A duplicate at
    worst: kept, the entry may name as stored a new message never stored (see
    :func:`test_a_new_message_under_a_repeated_id_not_stored_in_its_run_is_stored_later`)."""
    target = tmp_path / "fetched"
    hook = _UidlRewrite({})
    with _pop3(tmp_path / "server", connection_factory=hook.connection) as (server, mailbox):
        [first, *_] = write_maildir(mailbox, [_message(s) for s in ["AAA", *others]])
        assert _fetch(server, target) == 0
        _deliver(mailbox, "BBB")
        [new] = [path for path in Maildir(mailbox).messages() if "BBB" in path.name]
        hook.ids[_uid(new)] = _uid(first)
        assert _fetch(server, target) == 0
        assert _uid(first) not in _recorded_sizes(target, server)
        [moved] = [path for path in Maildir(mailbox).messages() if "BBB" in path.name]
        moved.unlink()  # read and deleted by another client: A's id is its own again
        capsys.readouterr()
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["AAA"]
    kept = [path.read_bytes() for path in Maildir(target).messages()]
    assert kept.count(_message("AAA").replace(b"\r\n", b"\n")) == 3


def test_a_new_message_under_a_repeated_id_not_stored_in_its_run_is_stored_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded under X; then a run lists A and new B, of A's size, both under X, and
    the connection drops at B's RETR; then A is deleted by another client, and B is
    listed alone under X. The record kept X with A's size, so B matched it and was
    skipped as stored before at every run (without ``--delete``): lost. The entry of a
    repeated id is forgotten, so B is stored."""
    target = tmp_path / "fetched"
    a, b, c = _message("AAA"), _message("BBB"), _message("CCC")
    assert len(a) == len(b)
    cut_short = [
        *script(_SCRIPTED_LOGIN),
        *_listed(c, a, b),
        *script("C: UIDL\nS: +OK\nS: 1 id-C\nS: 2 id-X\nS: 3 id-X\nS: ."),
        *_retrieved(1, c),  # recorded, read again: the listing is not trusted
        *_retrieved(2, a),
        *script("C: RETR 3\n-- close"),
    ]
    with ScriptedServer(cut_short) as server:
        first = f"127.0.0.1:{server.port}"
        _recorded_before(target, first, "id-X", a)
        _recorded_before(target, first, "id-C", c)
        assert _fetch(first, target) == 1
    assert _recorded_sizes(target, first) == {"id-C": len(c)}
    after_a_is_gone = [
        *script(_SCRIPTED_LOGIN),
        *_listed(c, b),
        *script("C: UIDL\nS: +OK\nS: 1 id-C\nS: 2 id-X\nS: ."),
        *_retrieved(2, b),
        *script("C: QUIT\nS: +OK bye\n-- close"),
    ]
    capsys.readouterr()
    with ScriptedServer(after_a_is_gone) as server:
        second = f"127.0.0.1:{server.port}"
        _moved_record(target, first, second)
        assert _fetch(second, target) == 0
    assert _subjects(capsys.readouterr().out) == ["BBB"]
    kept = [path.read_bytes() for path in Maildir(target).messages()]
    assert kept.count(b.replace(b"\r\n", b"\n")) == 1


def test_an_id_left_out_for_one_message_and_given_to_a_new_one_loses_no_mail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message recorded under X, then a listing that leaves it out of UIDL and gives X
    to a new message of the same size: the new one matched the record's (id, size) and
    was skipped at every run, never stored. A listing that leaves a message without an
    id of its own is not trusted to name the others: a record match is read again and
    stored unless its content is the one recorded."""
    target = tmp_path / "fetched"
    hook = _UidlRewrite({})
    with _pop3(tmp_path / "server", connection_factory=hook.connection) as (server, mailbox):
        [old] = write_maildir(mailbox, [_message("AAA")])
        assert _fetch(server, target) == 0
        _deliver(mailbox, "BBB")
        [new] = [path for path in (mailbox / "new").iterdir() if "BBB" in path.name]
        hook.ids[_uid(old)] = None
        hook.ids[_uid(new)] = _uid(old)
        capsys.readouterr()
        assert _fetch(server, target) == 0
        assert sorted(_subjects(capsys.readouterr().out)) == ["AAA", "BBB"]
        assert _fetch(server, target) == 0
        captured = capsys.readouterr().out
        assert _subjects(captured) == []  # both read again, told by their content
        assert "2 stored before, read again and found unchanged" in captured
    kept = sorted(path.read_bytes() for path in Maildir(target).messages())
    expected = ["AAA", "AAA", "BBB"]
    assert kept == sorted(_message(s).replace(b"\r\n", b"\n") for s in expected)


_ALERT_HEADER = (
    b"From: <alerts@x.example>\r\nSubject: disk alert\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <fixed@x.example>\r\n\r\n"
)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (_message("old"), _message("new, of another size")),
        (_message("old"), _message("new")),
        (_ALERT_HEADER + b"disk /var 91% full\r\n", _ALERT_HEADER + b"disk /srv 97% full\r\n"),
        (b"\r\nbody AAAA\r\n", b"\r\nbody BBBB\r\n"),
    ],
    ids=["another size", "another header", "the same header", "no header"],
)
def test_an_id_given_again_to_a_new_message_is_fetched_not_deleted_unseen(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: bytes, new: bytes
) -> None:
    """A unique-id holds only while its message exists (RFC 1939 §7): a server may give
    it to a new message once the old one is gone. A run with ``--delete`` took that new
    message for the one stored and deleted it unseen: first whatever its size, then
    when it had the old one's size, then when ``TOP n 0`` gave the old one's header too
    (alerts and notices made from one template, on a server that adds no ``Received:``
    of its own, or a message with no header at all). It is now deleted unseen only when
    its whole content is the one stored; else it is stored, then deleted."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        [first] = write_maildir(mailbox, [old])
        assert _fetch(server, target) == 0
        for path in Maildir(mailbox).messages():
            path.unlink()  # read and deleted by another client
        (mailbox / "new" / first.name).write_bytes(new)  # the same unique-id
        capsys.readouterr()
        assert _fetch(server, target, "--delete") == 0
        assert "1 message, " in capsys.readouterr().out  # not "1 messages"
        assert Maildir(mailbox).messages() == []
        assert _recorded_sizes(target, server) == {}  # deleted at QUIT: forgotten
    kept = sorted(path.read_bytes() for path in Maildir(target).messages())
    assert kept == sorted(m.replace(b"\r\n", b"\n") for m in (old, new))


def test_a_message_changed_on_the_server_is_stored_as_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message whose content changed on the server under the same id and size (a
    header cache gone stale, a file rewritten) is read again, found unlike the record,
    and stored as new before its DELE: a duplicate at worst, never a loss. What that
    RETR gave is stored, where a second RETR downloaded it again."""
    target = tmp_path / "fetched"
    log = _CommandLog()
    before, after = _message("before"), _message("after!")
    assert len(before) == len(after)
    with _pop3(tmp_path / "server", connection_factory=log.connection) as (server, mailbox):
        write_maildir(mailbox, [before])
        assert _fetch(server, target) == 0
        [path] = Maildir(mailbox).messages()
        path.write_bytes(after)
        log.seen.clear()
        capsys.readouterr()
        assert _fetch(server, target, "--delete") == 0
        assert log.seen == ["RETR 1", "DELE 1"]
        assert _subjects(capsys.readouterr().out) == ["after!"]
    kept = sorted(path.read_bytes() for path in Maildir(target).messages())
    assert kept == sorted(m.replace(b"\r\n", b"\n") for m in (before, after))


def _full_disk_write(staging: Staging, chunk: bytes) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_deletes_what_proves_stored_and_stops_at_what_proves_new(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One and two stored without ``--delete``; the disk then fills up. A run with
    ``--delete`` reads each again to be told by its content, its copy written into
    ``tmp/`` as it comes: the full disk stopped the run at message 1, and nothing was
    deleted, though neither needed a copy. The copy is now dropped and the reading goes
    on for the digest; both prove stored and are deleted. Message three, new under a
    recorded id and size, does need its copy: the run stops there, as it did."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target) == 0
        monkeypatch.setattr(Staging, "write", _full_disk_write)
        capsys.readouterr()
        assert _fetch(server, target, "--delete") == 0
        out = capsys.readouterr().out
        assert "2 stored before, read again, found unchanged and deleted" in out
        assert Maildir(mailbox).messages() == []
    assert list((target / "tmp").iterdir()) == []
    three = _message("three")
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(three),
        *script("C: UIDL\nS: +OK\nS: 1 id-three\nS: ."),
        *_retrieved(1, three),
        ExpectClose(),  # no QUIT: nothing is deleted
    ]
    with ScriptedServer(steps) as scripted:
        where = f"127.0.0.1:{scripted.port}"
        _recorded_before(target, where, "id-three", _message("other"))
        assert _fetch(where, target, "--delete") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list((target / "tmp").iterdir()) == []


def _staged_on_full_disk(
    init: Any, staging: Staging, maildir: Maildir, prefix: bytes, *, name: str | None = None
) -> None:
    """``Staging.__init__`` with the file's writes sent to ``/dev/full``, where each
    ``write(2)`` fails with ENOSPC as on a full disk: a chunk under the buffer's size
    fails only when it is flushed, at the close."""
    init(staging, maildir, prefix, name=name)
    staging._file.close()
    staging._file = open("/dev/full", "wb")  # noqa: SIM115  # closed by the Staging
    staging._writer = LFWriter(staging._file)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("body", [10, 3000, 9000, 100_000])
def test_a_full_disk_for_real_deletes_what_proves_stored_whatever_its_size(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    body: int,
) -> None:
    """As above, the disk full as the kernel tells it: a message under 8 KiB waits in
    the file's buffer, and the close that removed its copy flushed it and raised
    ENOSPC, which stopped the run and deleted nothing. Removing a copy now ignores the
    close's failure: both messages prove stored and are deleted, whatever their size."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message(s)[:-2] + b"x" * body + b"\r\n" for s in ("a", "b")])
        assert _fetch(server, target) == 0
        init = Staging.__init__
        monkeypatch.setattr(
            Staging,
            "__init__",
            lambda staging, maildir, prefix, *, name=None: _staged_on_full_disk(
                init, staging, maildir, prefix, name=name
            ),
        )
        capsys.readouterr()
        assert _fetch(server, target, "--delete") == 0
        out = capsys.readouterr().out
        assert "2 stored before, read again, found unchanged and deleted" in out
        assert Maildir(mailbox).messages() == []
    assert list((target / "tmp").iterdir()) == []


def test_a_run_removes_what_a_killed_run_left_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed (SIGKILL, a power cut) while it read a message left its file in
    ``tmp/``, and no run removed it. A run now removes from its Maildir's ``tmp/`` the
    files untouched for 36 hours (:meth:`Maildir.clean_tmp`, whose own tests keep a
    newer one), as a Maildir reader should: here, with the clock 37 hours on."""
    target = tmp_path / "fetched"
    Maildir(target).create()
    (target / "tmp" / "1.M1P1.killed").write_bytes(b"Subject: half a message\n")
    clean_tmp = Maildir.clean_tmp

    def later(maildir: Maildir, now: float | None = None) -> int:
        return clean_tmp(maildir, time.time() + 37 * 3600 if now is None else now)

    monkeypatch.setattr(Maildir, "clean_tmp", later)
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        assert _fetch(server, target) == 0
    assert list((target / "tmp").iterdir()) == []
    assert len(Maildir(target).messages()) == 1


def test_a_tmp_that_cannot_be_cleaned_is_named_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale file in ``tmp/`` that cannot be removed (the file system gone read-only,
    ``chattr +i``) stopped the run before it connected, status 1. The cleaning is
    housekeeping: the failure is named in one warning and the run goes on."""
    target = tmp_path / "fetched"
    Maildir(target).create()
    stale = target / "tmp" / "1.M1P1.killed"
    stale.write_bytes(b"Subject: half a message\n")
    clean_tmp, unlink = Maildir.clean_tmp, os.unlink

    def later(maildir: Maildir, now: float | None = None) -> int:
        return clean_tmp(maildir, time.time() + 37 * 3600 if now is None else now)

    def read_only_tmp(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).parent == target / "tmp":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(Maildir, "clean_tmp", later)
    monkeypatch.setattr(os, "unlink", read_only_tmp)
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        capsys.readouterr()
        assert _fetch(server, target) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "password" not in line]
    assert warnings == [
        f"smtpcore fetch: warning: {target / 'tmp'} cannot be cleaned of what runs killed on "
        f"the way left there (Read-only file system: {stale})"
    ]
    assert len(Maildir(target).messages()) == 1
    assert stale.exists()


def test_a_listing_not_trusted_reads_each_recorded_message_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A listing that leaves message 3 out of UIDL: the recorded messages 1 (unchanged)
    and 2 (changed under the same id and size) are each read once, 1 found stored and
    left out of ``new/``, 2 stored from that read; a second RETR 2 came before. Nothing
    of message 1 stays in ``tmp/``."""
    target = tmp_path / "fetched"
    same, before, after, new = (
        _message("same"),
        _message("before"),
        _message("after!"),
        _message("new"),
    )
    assert len(before) == len(after)
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(same, after, new),
        *script("C: UIDL\nS: +OK\nS: 1 id-same\nS: 2 id-changed\nS: ."),
        *_retrieved(1, same),
        *_retrieved(2, after),
        *_retrieved(3, new),
        *script("C: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        _recorded_before(target, where, "id-same", same)
        _recorded_before(target, where, "id-changed", before)
        assert _fetch(where, target) == 0
    out = capsys.readouterr().out
    assert _subjects(out) == ["after!", "new"]
    assert "1 stored before, read again and found unchanged" in out
    kept = sorted(path.read_bytes() for path in Maildir(target).messages())
    assert kept == sorted(m.replace(b"\r\n", b"\n") for m in (after, new))
    assert list((target / "tmp").iterdir()) == []
    assert _record(target, where)["stored"]["id-changed"] == [len(after), _digest(after)]


def test_a_record_owned_by_another_user_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever else may write in DIR could put there a record of their own (a rename
    needs no right on the file it replaces) naming a new message as stored, and have it
    deleted unseen. A record not owned by the user running fetch is named in a warning
    and read as empty: the message is stored again, a duplicate, never a loss."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        assert _fetch(server, target) == 0
        path = record_path(target, server, USER)
        if os.geteuid() == 0:
            os.chown(path, 12345, 12345)
        else:
            monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)
        capsys.readouterr()
        assert _fetch(server, target, "--delete") == 0
        monkeypatch.undo()
        captured = capsys.readouterr()
        assert _subjects(captured.out) == ["one"]
        [warning] = [line for line in captured.err.splitlines() if "fetched before" in line]
        assert str(path) in warning and "owned by another user, not read" in warning
        assert Maildir(mailbox).messages() == []
        assert path.stat().st_uid == os.geteuid()  # replaced by one of this user
    assert len(Maildir(target).messages()) == 2


def test_the_record_of_a_user_named_like_a_path_stays_inside_the_maildir(
    tmp_path: Path,
) -> None:
    """The file's name is a digest: no user name can put it elsewhere."""
    target = tmp_path / "fetched"
    for user in ("../../etc/passwd", "/tmp/x", "a\nb", "..", ""):
        path = record_path(target, "pop.example:110", user)
        assert path.parent == target and path.name.startswith(".")
    same = record_path(target, "pop.example:110", "u")
    assert record_path(target, "POP.example:110", "u") == same  # host names without case
    assert record_path(target, "pop.example:995", "u") != same


@st.composite
def _listings(draw: st.DrawFn, stored: dict[str, int]) -> dict[str, int]:
    """What a server lists after ``stored``: some of those ids, some with another size
    (the id given to a new message, RFC 1939 §7), and new ones."""
    kept = draw(st.sets(st.sampled_from(sorted(stored)))) if stored else set()
    resized = draw(st.sets(st.sampled_from(sorted(kept)))) if kept else set()
    new = draw(st.dictionaries(pop3_unique_ids(), _SIZES, max_size=5))
    listed = {uid: stored[uid] + (1 if uid in resized else 0) for uid in kept}
    return {**new, **listed}


_SIZES = st.integers(0, 2**40)


@settings(max_examples=50, deadline=None)
@given(data=st.data(), stored=st.dictionaries(pop3_unique_ids(), _SIZES, max_size=20))
def test_a_record_saved_reads_back_as_the_messages_still_listed(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, stored: dict[str, int]
) -> None:
    """Whatever unique-ids RFC 1939 §7 allows, a record written and read again holds
    exactly the messages the server still lists with the id and the size recorded,
    and never warns."""
    listed = data.draw(_listings(stored))
    directory = tmp_path_factory.mktemp("record")
    warnings: list[str] = []
    record = FetchRecord.read_or_empty(directory, "pop.example:110", USER, warnings.append)
    for uid, size in stored.items():
        record.add(uid, size, _digest(uid.encode()), octets=size)
    record.save()
    again = FetchRecord.read_or_empty(directory, "pop.example:110", USER, warnings.append)
    again.keep_only(listed.items())
    again.save()
    last = FetchRecord.read_or_empty(directory, "pop.example:110", USER, warnings.append)
    both = stored.items() & listed.items()
    assert {(uid, size) for uid, size in listed.items() if last.holds(uid, size)} == both
    assert not any(last.holds(uid, size + 1) for uid, size in both)
    assert all(last.holds_content(uid, size, _digest(uid.encode())) for uid, size in both)
    assert not any(last.holds_content(uid, size, _digest(b"")) for uid, size in both)
    assert len(last) == len(both) and warnings == []
    assert [name for name in os.listdir(directory) if name.endswith(".tmp")] == []


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=200))
def test_rewriting_the_record_costs_no_more_than_the_mail_stored(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    """Each write replaces the whole file; it is due only once the messages stored since
    the last write outweigh it, so a large first fetch does not write the record once
    per message (the square of the mailbox)."""
    directory = tmp_path_factory.mktemp("record")
    record = FetchRecord.read_or_empty(directory, "pop.example:110", USER, print)
    path = record_path(directory, "pop.example:110", USER)
    written = 0
    for number, size in enumerate(sizes):
        record.add(f"id-{number:06d}", size, _digest(b""), octets=size)
        if record.due:
            record.save()
            written += path.stat().st_size
    record.save()
    assert written <= sum(sizes) + path.stat().st_size


_SCRIPTED_LOGIN_WITH_TOP = _SCRIPTED_LOGIN.replace("S: UIDL\n", "S: UIDL\nS: TOP\n")


def _recorded_before(target: Path, server: str, uid: str, message: bytes) -> None:
    """A record holding ``message`` under ``uid``, as a run that stored it writes it."""
    target.mkdir(parents=True, exist_ok=True)
    record = FetchRecord.read_or_empty(target, server, USER, print)
    record.add(uid, len(message), _digest(message), octets=len(message))
    record.save()


def test_a_retr_refused_when_read_again_leaves_the_message_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A RETR refused (RFC 1939 §5) as a recorded message is read again under
    ``--delete`` is reported as any other, once, and the message left on the server;
    the next is still taken."""
    target = tmp_path / "fetched"
    one, two = _message("one"), _message("two")
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, two),
        *script("C: UIDL\nS: +OK\nS: 1 id-one\nS: 2 id-two\nS: .\nC: RETR 1\nS: -ERR gone"),
        *_retrieved(2, two),
        *script("C: DELE 2\nS: +OK\nC: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        _recorded_before(target, where, "id-one", one)
        assert _fetch(where, target, "--delete") == 1
    captured = capsys.readouterr()
    assert _subjects(captured.out) == ["two"]
    assert captured.err.count("message 1 not retrieved, left on the server") == 1
    assert len(Maildir(target).messages()) == 1


def _moved_record(target: Path, old: str, new: str) -> None:
    """The record kept for the server at ``old`` given to the same server at ``new``
    (a scripted server listens on a port of its own at each run)."""
    fields = _record(target, old)
    fields["server"] = new
    record_path(target, old, USER).rename(record_path(target, new, USER))
    record_path(target, new, USER).write_text(json.dumps(fields))


def test_a_dele_refused_leaves_that_message_and_the_others_are_deleted_at_quit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DELE may be refused (RFC 1939 §7: a message another session deleted, a
    read-only maildrop). One ``-ERR`` to a DELE ended the run without QUIT, so none of
    the deletions before it took effect (RFC 1939 §6) and they were all read again next
    run. The message is now named on stderr and left on the server, the others are
    deleted at QUIT, and the status is 1; stored and recorded, it is not stored again
    next run, and its DELE is tried again. The messages outweigh the record, so that it
    is written, and the deletions sent, after each."""
    target = tmp_path / "fetched"
    body = b"x" * 70 + b"\r\n"
    one, two, three = (_message(s) + body * 20 for s in ("one", "two", "three"))
    uids = "C: UIDL\nS: +OK\nS: 1 id-one\nS: 2 id-two\nS: 3 id-three\nS: ."
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, two, three),
        *script(uids),
        *_retrieved(1, one),
        *script("C: DELE 1\nS: +OK"),
        *_retrieved(2, two),
        *script("C: DELE 2\nS: -ERR [SYS/TEMP] maildrop is read-only"),
        *_retrieved(3, three),
        *script("C: DELE 3\nS: +OK\nC: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        first = f"127.0.0.1:{server.port}"
        assert _fetch(first, target, "--delete") == 1
    captured = capsys.readouterr()
    assert _subjects(captured.out) == ["one", "two", "three"]
    assert "1 stored but not deleted, left there." in captured.out
    errors = [line for line in captured.err.splitlines() if "warning" not in line]
    assert errors == [
        "smtpcore fetch: message 2 stored but not deleted from the server: "
        "DELE refused: -ERR [SYS/TEMP] maildrop is read-only"
    ]
    assert _recorded_sizes(target, first) == {"id-two": len(two)}  # the others deleted
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(two),
        *script("C: UIDL\nS: +OK\nS: 1 id-two\nS: ."),
        *_retrieved(1, two),
        *script("C: DELE 1\nS: +OK\nC: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        second = f"127.0.0.1:{server.port}"
        _moved_record(target, first, second)
        assert _fetch(second, target, "--delete") == 0
    out = capsys.readouterr().out
    assert _subjects(out) == [] and "1 stored before, read again" in out
    assert len(Maildir(target).messages()) == 3


def test_a_dele_refused_for_a_message_read_again_is_counted_as_left_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded message read again, found unchanged, and its DELE refused is counted
    as left on the server, not as deleted; QUIT is sent and the status is 1."""
    target = tmp_path / "fetched"
    one = _message("one")
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one),
        *script("C: UIDL\nS: +OK\nS: 1 id-one\nS: ."),
        *_retrieved(1, one),
        *script("C: DELE 1\nS: -ERR no such message\nC: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        _recorded_before(target, where, "id-one", one)
        assert _fetch(where, target, "--delete") == 1
    captured = capsys.readouterr()
    assert "stored before" not in captured.out
    assert "1 stored but not deleted, left there." in captured.out
    assert captured.err.count("message 1 stored but not deleted from the server") == 1
    assert Maildir(target).messages() == []


def test_a_large_message_recorded_is_compared_whole_and_new_mail_still_comes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``TOP n 0`` answered with more than 128 KiB (a server that ignores the line
    count, RFC 1939 §7) stopped every ``--delete`` run at that message, so new mail
    behind it never came. A recorded message is now read with RETR, bounded by the
    size LIST gave as any message is, compared whole, and deleted; TOP is never
    sent, even to a server that offers it."""
    target = tmp_path / "fetched"
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 3000
    new = _message("new")
    steps = [
        *script(_SCRIPTED_LOGIN_WITH_TOP),
        *_listed(big, new),
        *script("C: UIDL\nS: +OK\nS: 1 id-big\nS: 2 id-new\nS: ."),
        *_retrieved(1, big),
        *script("C: DELE 1\nS: +OK"),
        *_retrieved(2, new),
        *script("C: DELE 2\nS: +OK\nC: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        _recorded_before(target, where, "id-big", big)
        assert _fetch(where, target, "--delete") == 0
    out = capsys.readouterr().out
    assert _subjects(out) == ["new"] and "1 stored before, read again" in out
    assert [path.read_bytes() for path in Maildir(target).messages()] == [
        new.replace(b"\r\n", b"\n")
    ]


def test_a_record_lost_as_the_run_stops_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record written as a run stops on an error cannot be written either: the
    warning said "going on without it", though the run was stopping. It now says what
    follows: the messages this run stored come again next time. (A change that
    swallowed this failure silently passed every other test.) A large record of
    messages still listed, after those two, keeps the record from being due after
    message 1 (one of messages gone would be written before any message)."""
    target = tmp_path / "fetched"
    one = _message("one")
    kept = {f"kept-{n}": _message("kept") for n in range(50)}
    uids = "".join(f"S: {n} {uid}\n" for n, uid in enumerate(kept, 3))
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, _message("two"), *kept.values()),
        *script(f"C: UIDL\nS: +OK\nS: 1 id-one\nS: 2 id-two\n{uids}S: ."),
        *_retrieved(1, one),
        *script("C: RETR 2\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        for uid, message in kept.items():
            _recorded_before(target, where, uid, message)
        monkeypatch.setattr(FetchRecord, "save", _full_disk)
        assert _fetch(where, target) == 1
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "record" in line]
    assert "cannot be written (No space left on device)" in warning
    assert "going on" not in warning
    assert "the messages this run stored will be fetched again next time" in warning


def test_a_cancelled_run_records_what_it_stored(tmp_path: Path) -> None:
    """Cancelled (Ctrl-C, a task group's cancellation) while the server is slow with
    message 3: messages 1 and 2 are in ``new/``, and the record, written as the run
    stops on a ``BaseException`` too, holds both. Message 2 is smaller than the
    record, so that only the write after the cancellation records it."""
    target = tmp_path / "fetched"
    one, two = _message("one"), b"Subject: two\r\n\r\n"
    at_message_3, released = threading.Event(), threading.Event()

    def hold(connection: ScriptedConnection) -> None:
        at_message_3.set()
        released.wait(10)

    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, two, _message("three")),
        *script("C: UIDL\nS: +OK\nS: 1 id-one\nS: 2 id-two\nS: 3 id-three\nS: ."),
        *_retrieved(1, one),
        *_retrieved(2, two),
        Expect(b"RETR 3"),
        Call(hold),
    ]

    async def cancel_at_message_3(where: str) -> None:
        argv = ["fetch", "--server", where, *LOGIN, "--to-maildir", str(target)]
        task = asyncio.create_task(fetch_session(build_parser().parse_args(argv), print))
        for _ in range(500):
            if at_message_3.is_set():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        try:
            asyncio.run(cancel_at_message_3(where))
        finally:
            released.set()
    assert _recorded_sizes(target, where) == {"id-one": len(one), "id-two": len(two)}
    assert len(Maildir(target).messages()) == 2


def test_a_run_cancelled_while_it_syncs_a_message_leaves_nothing_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (Ctrl-C) while a new message's copy is being synced in its thread: the
    run stopped at once and the thread went on, renaming the synced file in ``tmp/``,
    where it stayed. The run now waits for the thread, which delivers the message into
    ``new/`` (unrecorded: a duplicate next time, never a loss), and ``tmp/`` is empty."""
    target = tmp_path / "fetched"
    finishing, released = threading.Event(), threading.Event()
    finish = Staging.finish

    def held_finish(staging: Staging) -> Any:
        finishing.set()
        released.wait(10)
        return finish(staging)

    monkeypatch.setattr(Staging, "finish", held_finish)

    async def cancel_while_syncing(where: str) -> None:
        argv = ["fetch", "--server", where, *LOGIN, "--to-maildir", str(target)]
        task = asyncio.create_task(fetch_session(build_parser().parse_args(argv), print))
        while not finishing.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.sleep(0)  # the cancellation reaches the run before the thread ends
        await asyncio.sleep(0)
        released.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        try:
            asyncio.run(cancel_while_syncing(server))
        finally:
            released.set()
    assert list((target / "tmp").iterdir()) == []
    assert len(Maildir(target).messages()) == 1


_SMALL_LISTING = 4096
"""A listing limit small enough to fill in a test, for :func:`record_limit`."""


def _listing_octets(pairs: list[tuple[str, int]]) -> int:
    """The octets of the larger of the UIDL and LIST listings of ``pairs`` (RFC 1939)."""
    uidl = sum(len(f"{n} {uid}\r\n") for n, (uid, _) in enumerate(pairs, 1))
    scan = sum(len(f"{n} {size}\r\n") for n, (_, size) in enumerate(pairs, 1))
    return max(uidl, scan)


def _record_octets(directory: Path, pairs: list[tuple[str, int]]) -> int:
    """The octets of messages (past its server and user) in the record of ``pairs``."""
    record = FetchRecord.read_or_empty(directory, "pop.example:110", USER, print)
    record.save()
    empty = record.path.stat().st_size
    for uid, size in pairs:
        record.add(uid, size, _digest(uid.encode()), octets=1)
    record.save()
    return record.path.stat().st_size - empty


def _filled(make_id: Any, size: int) -> list[tuple[str, int]]:
    """As many messages as listings under :data:`_SMALL_LISTING` octets hold."""
    pairs: list[tuple[str, int]] = []
    for n in range(_SMALL_LISTING):
        more = [*pairs, (make_id(n), size)]
        if _listing_octets(more) > _SMALL_LISTING:
            break
        pairs = more
    return pairs


@pytest.mark.parametrize(
    ("shape", "make_id", "size"),
    [
        ("the longest ids, all escaped", lambda n: '"' * 62 + f"{n:08d}", 10**20 - 1),
        ("the shortest lines", lambda n: chr(0x21 + n % 94) * (1 + n // 94), 0),
    ],
)
def test_the_largest_records_the_listings_allow_are_within_the_bound(
    tmp_path: Path, shape: str, make_id: Any, size: int
) -> None:
    """MAX_RECORD was 32 MiB, "twice the UIDL listing", though each entry holds the
    id escaped, the size's digits and now a digest: a record written from listings the
    client accepts (33,776,666 octets) was read back as damaged, and every message
    stored again at every run. The bound now comes from the listings' limit."""
    pairs = _filled(make_id, size)
    assert _record_octets(tmp_path, pairs) <= record_limit(_SMALL_LISTING), shape


def test_a_record_with_ids_and_messages_without_is_within_the_bound(tmp_path: Path) -> None:
    """A listing with no id at all leaves the ids of an earlier one as they are: the
    largest record holds those and an entry for each message a LIST listing under the
    limit holds, with the longest sizes, and is still read back whole."""
    pairs = _filled(lambda n: '"' * 62 + f"{n:08d}", 10**20 - 1)
    sizes = [size for _, size in _filled(lambda n: "x", 10**20 - 1)]
    record = FetchRecord.read_or_empty(tmp_path, "pop.example:110", USER, print)
    record.save()
    empty = record.path.stat().st_size
    for uid, size in pairs:
        record.add(uid, size, _digest(uid.encode()), octets=1)
    record.keep_unidentified(sizes)
    for number, size in enumerate(sizes):
        record.add_unidentified(size, _digest(str(number).encode()), octets=1)
    record.save()
    assert record.path.stat().st_size - empty <= record_limit(_SMALL_LISTING)
    again = FetchRecord.read_or_empty(tmp_path, "pop.example:110", USER, print)
    again.keep_unidentified(sizes)
    assert (len(again), again.unidentified) == (len(pairs), len(sizes))


@settings(max_examples=100, deadline=None)
@given(
    recorded=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=12),
    listed=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=12),
)
def test_messages_without_ids_are_claimed_once_each_and_the_record_stays_bounded(
    tmp_path_factory: pytest.TempPathFactory,
    recorded: list[tuple[int, int]],
    listed: list[tuple[int, int]],
) -> None:
    """Messages (size, content) stored without ids, then a run over another listing:
    each listed message is claimed by at most one entry of its size and content (as
    many as both hold, the rest stored), no size ever holds more entries than messages
    listed so, and after the whole run the record holds exactly the listed messages."""
    directory = tmp_path_factory.mktemp("record")
    record = FetchRecord.read_or_empty(directory, "pop.example:110", USER, print)
    record.keep_unidentified(size for size, _ in recorded)
    for size, content in recorded:
        record.add_unidentified(size, _digest(bytes([content])), octets=1)
    record.save()
    run = FetchRecord.read_or_empty(directory, "pop.example:110", USER, print)
    run.keep_unidentified(size for size, _ in listed)
    claimed = 0
    for size, content in listed:
        if run.may_hold_unidentified(size) and run.claim_unidentified(
            size, _digest(bytes([content]))
        ):
            claimed += 1
        else:
            run.add_unidentified(size, _digest(bytes([content])), octets=1)
        assert run.unidentified <= len(listed)
    assert claimed == sum((Counter(recorded) & Counter(listed)).values())
    run.forget_unclaimed()
    run.save()
    last = FetchRecord.read_or_empty(directory, "pop.example:110", USER, print)
    last.keep_unidentified(size for size, _ in listed)
    assert all(
        last.claim_unidentified(size, _digest(bytes([content]))) for size, content in listed
    )
    assert last.unidentified == len(listed)


@settings(max_examples=50, deadline=None)
@given(
    uids=st.lists(pop3_unique_ids(), unique=True, max_size=200),
    sizes=st.lists(st.integers(0, 10**20 - 1), min_size=200, max_size=200),
)
def test_a_record_from_any_listing_under_the_limit_is_within_the_bound(
    tmp_path_factory: pytest.TempPathFactory, uids: list[str], sizes: list[int]
) -> None:
    """Whatever RFC 1939 §7 ids and sizes a listing under its limit holds, its record
    fits in :func:`record_limit` of that limit."""
    pairs = list(zip(uids, sizes, strict=False))
    while _listing_octets(pairs) > _SMALL_LISTING:
        pairs.pop()
    octets = _record_octets(tmp_path_factory.mktemp("record"), pairs)
    assert octets <= record_limit(_SMALL_LISTING)


def test_a_record_at_the_bound_is_read_and_one_octet_more_is_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of MAX_RECORD octets of messages is read whole; one octet more is not
    one this module wrote, and is read as empty with a warning."""
    monkeypatch.setattr(fetchrecord, "MAX_RECORD", record_limit(_SMALL_LISTING))
    pairs = _filled(lambda n: '"' * 62 + f"{n:08d}", 10**20 - 1)
    octets = _record_octets(tmp_path, pairs)
    path = record_path(tmp_path, "pop.example:110", USER)
    padding = record_limit(_SMALL_LISTING) - octets
    path.write_bytes(path.read_bytes() + b" " * padding)  # JSON allows the spaces
    warnings: list[str] = []
    assert len(
        FetchRecord.read_or_empty(tmp_path, "pop.example:110", USER, warnings.append)
    ) == len(pairs)
    path.write_bytes(path.read_bytes() + b" ")
    assert len(FetchRecord.read_or_empty(tmp_path, "pop.example:110", USER, warnings.append)) == 0
    [warning] = warnings
    assert "larger than" in warning


def test_a_run_killed_before_its_end_leaves_no_entry_of_an_id_gone_from_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recorded under X, then deleted by another client; a run lists C and new D, not
    X, and is killed (``kill``, the power cut: no handler runs) at D's RETR. The record
    forgot X only in memory, to be written with D's entry or at the end, so the file
    still held X; a new message B given X once A was gone (RFC 1939 §7 allows it), of
    A's size, matched it at every later run and was skipped, never stored. A pruned
    record is written before any message is taken."""
    target = tmp_path / "fetched"
    a, b, c, d = _message("AAA"), _message("BBB"), _message("CCC"), _message("DDD")
    assert len(a) == len(b)
    on_disk_at_kill: list[bytes] = []

    def killed_here(connection: ScriptedConnection) -> None:
        on_disk_at_kill.append(record_path(target, where, USER).read_bytes())

    first_run = [
        *script(_SCRIPTED_LOGIN),
        *_listed(c, d),
        *script("C: UIDL\nS: +OK\nS: 1 id-C\nS: 2 id-D\nS: ."),
        Expect(b"RETR 2"),
        Call(killed_here),
        Send(b"+OK\r\n" + d + b".\r\n"),
        *script("C: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(first_run) as server:
        where = f"127.0.0.1:{server.port}"
        _recorded_before(target, where, "id-X", a)
        _recorded_before(target, where, "id-C", c)
        assert _fetch(where, target) == 0
    [left] = on_disk_at_kill
    record_path(target, where, USER).write_bytes(left)  # what the kill left on disk
    second_run = [
        *script(_SCRIPTED_LOGIN),
        *_listed(c, b),
        *script("C: UIDL\nS: +OK\nS: 1 id-C\nS: 2 id-X\nS: ."),
        *_retrieved(2, b),
        *script("C: QUIT\nS: +OK bye\n-- close"),
    ]
    capsys.readouterr()
    with ScriptedServer(second_run) as server:
        second = f"127.0.0.1:{server.port}"
        _moved_record(target, where, second)
        assert _fetch(second, target) == 0
    assert _subjects(capsys.readouterr().out) == ["BBB"]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_run_stopped_by_sigterm_or_sighup_records_what_it_stored(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """``kill PID`` (or the terminal gone) while the server is slow with message 3 killed
    fetch where it stood: messages 1 and 2 were in ``new/``, but the record, due only
    after message 1, did not name message 2, which came again next run. The signal now
    stops the run as Ctrl-C does, the record written, and the process still ends killed
    by that signal. Message 2 is smaller than the record, so that only the write as the
    run stops records it."""
    target = tmp_path / "fetched"
    one, two = _message("one"), b"Subject: two\r\n\r\n"
    child: list[subprocess.Popen[str]] = []

    def signal_at_message_3(connection: ScriptedConnection) -> None:
        os.kill(child[0].pid, stop)
        while connection.line() is not None:  # until fetch closes
            pass

    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(one, two, _message("three")),
        *script("C: UIDL\nS: +OK\nS: 1 id-one\nS: 2 id-two\nS: 3 id-three\nS: ."),
        *_retrieved(1, one),
        *_retrieved(2, two),
        Expect(b"RETR 3"),
        Call(signal_at_message_3),
    ]
    argv = ["fetch", *LOGIN, "--to-maildir", str(target)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent / "src")}
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        with subprocess.Popen(
            [sys.executable, "-m", "smtpcore", *argv, "--server", where],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            preexec_fn=lambda: signal.signal(stop, signal.SIG_DFL),  # not nohup's SIG_IGN
        ) as process:
            child.append(process)
            try:
                out, err = process.communicate(timeout=60)
            finally:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
    assert process.returncode == -stop, err
    assert _subjects(out) == ["one", "two"]
    assert "Traceback" not in err
    assert _recorded_sizes(target, where) == {"id-one": len(one), "id-two": len(two)}
    assert len(Maildir(target).messages()) == 2


_SIGNAL_AS_THE_RUN_ENDS = """
import os, signal, sys
from smtpcore.__main__ import main
from smtpcore.server._fetch_run import _FetchRun

summary = _FetchRun.summary

def signalled_first(run, maildir):
    os.kill(os.getpid(), signal.Signals[sys.argv[1]])
    return summary(run, maildir)

_FetchRun.summary = signalled_first
sys.exit(main(sys.argv[2:]))
"""
"""``python -c`` this, a signal's name and fetch's arguments after it: fetch, which
sends itself that signal as it words its last line, the session over and nothing
awaited after it, where the event loop had no turn to run its handler."""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_as_the_run_ends_still_ends_the_process(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """A SIGTERM or SIGHUP that came after the run's last await, before the handlers were
    put back, was swallowed: the event loop's handler never ran, and fetch exited 0, as
    if no one had asked it to stop. It is recorded the moment it arrives, and the
    process ends killed by it once the run is over, the record written."""
    target = tmp_path / "fetched"
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}  # this smtpcore
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        argv = ["fetch", "--server", server, *LOGIN, "--to-maildir", str(target)]
        with subprocess.Popen(
            [sys.executable, "-c", _SIGNAL_AS_THE_RUN_ENDS, stop.name, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            preexec_fn=lambda: signal.signal(stop, signal.SIG_DFL),  # not nohup's SIG_IGN
        ) as process:
            try:
                out, err = process.communicate(timeout=60)
            finally:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
        assert process.returncode == -stop, err
        assert _subjects(out) == ["one"]
        assert "1 message, " in out  # the last line, written before the end
        assert "Traceback" not in err
        assert list(_recorded_sizes(target, server).values()) == [len(_message("one"))]


def test_fetch_runs_in_a_thread_other_than_the_main_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the main thread may handle signals: run from another thread (an embedding
    program, a GUI), fetch failed at once with RuntimeError ("set_wakeup_fd only works
    in main thread") as it made SIGTERM cancel the run. It leaves the signals alone
    there, and the run goes as in the main thread."""
    target = tmp_path / "fetched"
    status: list[int] = []
    failures: list[BaseException] = []

    def run(server: str) -> None:
        try:
            status.append(_fetch(server, target))
        except BaseException as exc:
            failures.append(exc)

    before = signal.getsignal(signal.SIGTERM)
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        worker = threading.Thread(target=run, args=(server,))
        worker.start()
        worker.join()
    assert (failures, status) == ([], [0])
    assert _subjects(capsys.readouterr().out) == ["one"]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_the_program_s_own_stop_signal_handlers_come_back_after_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], stop: signal.Signals
) -> None:
    """A program (or a test runner) with its own SIGTERM or SIGHUP handler that runs
    fetch in its process found the signal's default action there after the run: the
    event loop's handler, taken away, leaves SIG_DFL, and the next SIGTERM killed the
    program. The handler from before the run comes back."""

    def own(signum: int, frame: object) -> None:
        pass

    target = tmp_path / "fetched"
    before = signal.signal(stop, own)
    try:
        with _pop3(tmp_path / "server") as (server, mailbox):
            write_maildir(mailbox, [_message("one")])
            assert _fetch(server, target) == 0
        assert signal.getsignal(stop) is own
    finally:
        signal.signal(stop, before)
    assert _subjects(capsys.readouterr().out) == ["one"]


_STUCK_LOOKUP = """
import socket, sys, threading
from smtpcore.__main__ import main

resolve = socket.getaddrinfo

def stuck(host, *args, **kwargs):
    if host != "slow.invalid" or kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
        return resolve(host, *args, **kwargs)
    print("looking up", file=sys.stderr, flush=True)
    threading.Event().wait()  # a resolver that never answers

socket.getaddrinfo = stuck
sys.exit(main(sys.argv[1:]))
"""
"""``python -c`` this, fetch's arguments after it: fetch, its name lookup stuck for
good after it says ``looking up`` on stderr (a DNS server gone: glibc waits its
timeout times its attempts)."""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_ends_a_run_stuck_in_a_name_lookup(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """The signal cancelled the run, but ``asyncio.run`` then waited for its executor's
    thread, stuck in the lookup, for as long as the resolver's timeouts (never, here):
    ``kill PID`` did not end fetch. Its cleanup done, the process now ends at once,
    killed by the signal, as before fetch handled it."""
    target = tmp_path / "fetched"
    argv = ["fetch", "--server", "slow.invalid:110", *LOGIN, "--to-maildir", str(target)]
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}  # this smtpcore
    with subprocess.Popen(
        [sys.executable, "-c", _STUCK_LOOKUP, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=lambda: signal.signal(stop, signal.SIG_DFL),  # not nohup's SIG_IGN
    ) as process:
        try:
            assert process.stderr is not None
            err = ""
            while "looking up" not in err:
                line = process.stderr.readline()
                assert line, err
                err += line
            process.send_signal(stop)
            returncode = process.wait(timeout=60)  # stuck for good, unless it ends
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
    assert returncode == -stop


def test_a_copy_of_a_message_deleted_before_is_stored_under_delete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server without UIDL, ``--delete`` at each run: a run stored an alert and deleted
    it, and its entry stayed in the record, so the same alert sent again, byte for byte,
    was "found unchanged and deleted" by the next run, never stored: mail lost. Once
    QUIT is answered +OK the deletions are done (RFC 1939 §6), and the record forgets
    the messages the run deleted."""
    target = tmp_path / "fetched"

    def without_uidl(options: Any) -> Any:
        return options.build_connection(uidl=False)

    with _pop3(tmp_path / "server", connection_factory=without_uidl) as (server, mailbox):
        write_maildir(mailbox, [_message("alert")])
        assert _fetch(server, target, "--delete") == 0
        assert _subjects(capsys.readouterr().out) == ["alert"]
        _deliver(mailbox, "alert")  # sent again
        assert _fetch(server, target, "--delete") == 0
        assert _subjects(capsys.readouterr().out) == ["alert"]  # not "found unchanged"
        assert Maildir(mailbox).messages() == []
        assert _record(target, server)["unidentified"] == []
    assert len(Maildir(target).messages()) == 2


@pytest.mark.parametrize(
    "quit_answer",
    ["S: +OK bye\n-- close", "S: -ERR some deleted messages not removed\n-- close", "-- close"],
    ids=["answered +OK", "refused", "unanswered"],
)
def test_the_record_forgets_a_message_deleted_before_quit_whatever_its_answer(
    tmp_path: Path, quit_answer: str
) -> None:
    """The entry of a message deleted was forgotten only once QUIT was answered +OK, and
    stayed when the server committed the deletion without that answer reaching the run
    (a refusal after removing some, which RFC 1939 §6 allows; a connection cut): the
    next run then deleted the same alert sent again unstored. The record is now written
    without it before QUIT: whatever QUIT does, the worst is a duplicate next time."""
    target = tmp_path / "fetched"
    alert = _message("alert")
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(alert),
        *script("C: UIDL\nS: -ERR not now"),
        *_retrieved(1, alert),
        *script(f"C: DELE 1\nS: +OK\nC: QUIT\n{quit_answer}"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        status = _fetch(where, target, "--delete")
    assert status == (0 if quit_answer.startswith("S: +OK") else 1)
    assert _record(target, where)["unidentified"] == []


def test_a_record_not_written_before_quit_has_the_deletions_undone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record written without the messages deleted, before QUIT, cannot be written
    (the disk full): it names them still, so RSET undoes their deletion (RFC 1939 §5)
    before QUIT, and the next run finds them stored, or stores them again: a duplicate
    at worst. Committed, the entry on disk took a copy of the same alert sent later for
    the one deleted, and deleted it unstored."""
    target = tmp_path / "fetched"
    alert = _message("alert")
    saves = 0
    save = FetchRecord.save

    def first_save_only(record: FetchRecord) -> None:
        nonlocal saves
        saves += 1
        if saves > 1:
            _full_disk(record)
        save(record)

    monkeypatch.setattr(FetchRecord, "save", first_save_only)
    steps = [
        *script(_SCRIPTED_LOGIN),
        *_listed(alert),
        *script("C: UIDL\nS: -ERR not now"),
        *_retrieved(1, alert),
        *script("C: DELE 1\nS: +OK\nC: RSET\nS: +OK\nC: QUIT\nS: +OK bye\n-- close"),
    ]
    with ScriptedServer(steps) as server:
        where = f"127.0.0.1:{server.port}"
        assert _fetch(where, target, "--delete") == 1
    captured = capsys.readouterr()
    assert "nothing is deleted from the server in this run (RSET)" in captured.err
    assert captured.out.splitlines()[-1].endswith("left on the server.")
    assert _record(target, where)["unidentified"] == [[len(alert), _digest(alert)]]


def test_a_record_that_cannot_be_written_deletes_nothing_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert stored, without ``--delete``; then a run under ``--delete`` whose record
    cannot be written read it again, found it unchanged and deleted it, and the record
    on disk kept its entry: the same alert sent again was "found unchanged and deleted"
    by the next run, never stored. A record that cannot be written now deletes
    nothing."""
    target = tmp_path / "fetched"

    def without_uidl(options: Any) -> Any:
        return options.build_connection(uidl=False)

    with _pop3(tmp_path / "server", connection_factory=without_uidl) as (server, mailbox):
        write_maildir(mailbox, [_message("alert")])
        assert _fetch(server, target) == 0
        with monkeypatch.context() as patched:
            patched.setattr(FetchRecord, "save", _full_disk)
            assert _fetch(server, target, "--delete") == 1
        assert "read again, found unchanged and left there" in capsys.readouterr().out
        assert len(Maildir(mailbox).messages()) == 1
        _deliver(mailbox, "alert")  # sent again
        assert _fetch(server, target, "--delete") == 0
        assert _subjects(capsys.readouterr().out) == ["alert"]  # the second one
        assert Maildir(mailbox).messages() == []
    assert len(Maildir(target).messages()) == 2


def test_a_run_removes_the_record_s_stale_temporary_files_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run killed as it wrote the record left its temporary file in the Maildir, and
    nothing removed it: one more at each such run. A run now removes the record's own
    temporary files untouched for an hour, and nothing else."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one")])
        path = record_path(target, server, USER)
        target.mkdir()
        stale = path.with_name(f"{path.name}.0123456789ab.tmp")
        fresh = path.with_name(f"{path.name}.ba9876543210.tmp")
        other = target / ".other.0123456789ab.tmp"
        for file in (stale, fresh, other):
            file.write_bytes(b"{}")
        hours_ago = time.time() - 7200
        for file in (stale, other):
            os.utime(file, (hours_ago, hours_ago))
        assert _fetch(server, target) == 0
    assert not stale.exists() and fresh.exists() and other.exists()
    assert "warning: the temporary" not in capsys.readouterr().err


def test_a_server_that_lists_utf8_but_refuses_it_is_fetched_from_anyway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RFC 6856 §2.1: a server MAY answer UTF8 with -ERR. fetch stopped there (``UTF8
    refused``, exit 1), where it had fetched before it sent UTF8; it now warns and
    logs in without UTF-8 mode."""
    target = tmp_path / "fetched"
    one = _message("one")
    login = _SCRIPTED_LOGIN.replace("S: UIDL\nS: .\nC: USER", "S: UIDL\nS: UTF8\nS: .\nC: USER", 1)
    steps = [
        *script(login.replace("C: USER alice", "C: UTF8\nS: -ERR not now\nC: USER alice", 1)),
        *_listed(one),
        *script("C: UIDL\nS: +OK\nS: 1 id-one\nS: ."),
        *_retrieved(1, one),
        *script("C: QUIT\nS: +OK"),
    ]
    with ScriptedServer(steps) as server:
        assert _fetch(f"127.0.0.1:{server.port}", target) == 0
    captured = capsys.readouterr()
    assert _subjects(captured.out) == ["one"]
    assert "UTF8 refused: -ERR not now; logging in without UTF-8 mode" in captured.err
