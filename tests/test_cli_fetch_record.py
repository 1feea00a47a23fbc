"""``python -m smtpcore fetch --to-maildir``: mail left on the server is fetched once
(the unique-ids stored are recorded in the Maildir, RFC 1939 §7), and a message the
server cannot give does not stop the others, against the project's own POP3 server."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpcore.__main__ as cli
from peers import running_pop3_server, write_maildir
from smtpcore.maildrop import MaildirStore, Maildrop, POP3Session
from smtpcore.server.fetchrecord import FetchRecord, record_path
from smtpcore.server.maildir import Maildir
from smtpcore.testing.strategies import pop3_unique_ids

USER = "alice"
LOGIN = ("--user", USER, "--password", "wonderland", "--no-stls", "--auth", "user")


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
        assert "0 messages, 0 octets;" in out and "2 stored before, not fetched again" in out
        _deliver(mailbox, "three")
        assert _fetch(server, target) == 0
        assert _subjects(capsys.readouterr().out) == ["three"]
        assert _fetch(server, target, "--all") == 0
        assert _subjects(capsys.readouterr().out) == ["one", "two", "three"]
    assert len(Maildir(target).messages()) == 6  # 2 + 1 + 3 again with --all
    assert len(Maildir(mailbox).messages()) == 3  # nothing deleted
    names = [p.name for p in target.iterdir() if p.is_file()]
    assert len(names) == 1 and names[0].startswith(".")  # the record, a dot-file alone


def test_delete_after_a_run_that_kept_the_mail_deletes_what_was_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A message recorded is not fetched again, and with ``--delete`` it goes: it was
    stored before. A new one is fetched, then deleted."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target) == 0
        _deliver(mailbox, "three")
        capsys.readouterr()
        assert _fetch(server, target, "--delete") == 0
        out = capsys.readouterr().out
        assert _subjects(out) == ["three"]
        assert "deleted from the server; 2 stored before" in out
        assert Maildir(mailbox).messages() == []
        assert len(_record(target, server)["ids"]) == 3
        assert _fetch(server, target) == 0
        assert _record(target, server)["ids"] == []  # pruned: the server lists none now
    assert len(Maildir(target).messages()) == 3


def test_ids_the_server_no_longer_lists_are_pruned(tmp_path: Path) -> None:
    """The record keeps only what the server lists: it stays as small as the mailbox."""
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        paths = write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target) == 0
        assert len(_record(target, server)["ids"]) == 2
        [first] = [p for p in Maildir(mailbox).messages() if p.name.startswith(paths[0].name)]
        first.unlink()  # read and deleted by another client (moved to cur/ once read)
        assert _fetch(server, target) == 0
        [kept] = _record(target, server)["ids"]
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


def test_a_server_without_uidl_has_everything_fetched_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """UIDL is optional (RFC 1939 §7): without it no message can be told from one stored
    before, so all are fetched, as before, with one warning line."""
    target = tmp_path / "fetched"

    def without_uidl(options: Any) -> Any:
        return options.build_connection(uidl=False)

    with _pop3(tmp_path / "server", connection_factory=without_uidl) as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        for _ in range(2):
            assert _fetch(server, target) == 0
            captured = capsys.readouterr()
            assert _subjects(captured.out) == ["one", "two"]
            warnings = [line for line in captured.err.splitlines() if "UIDL" in line]
            assert len(warnings) == 1 and "every message is fetched" in warnings[0]
    assert len(Maildir(target).messages()) == 4
    assert not record_path(target, server, USER).exists()


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
            path.write_text(json.dumps({"server": server, "user": "bob", "ids": []}))
        elif damage == "a link":
            path.symlink_to(aside)
        else:
            path.mkdir()
        capsys.readouterr()
        status = _fetch(server, target)
        captured = capsys.readouterr()
        assert _subjects(captured.out) == ["one"]
        assert "warning: the record of what was fetched before" in captured.err
        assert str(path) in captured.err
        if damage == "a directory":  # cannot be replaced by a rename: the run stops
            assert status == 1
            return
        assert status == 0
        assert not path.is_symlink() and len(_record(target, server)["ids"]) == 1
    assert aside.read_text() == "precious"


def test_messages_are_deleted_only_once_their_ids_are_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stored, then recorded and synced, then DELE: a record that cannot be written stops
    the run before the deletions (and QUIT), so the mail stays on the server."""

    def full_disk(record: FetchRecord) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FetchRecord, "save", full_disk)
    target = tmp_path / "fetched"
    with _pop3(tmp_path / "server") as (server, mailbox):
        write_maildir(mailbox, [_message("one"), _message("two")])
        assert _fetch(server, target, "--delete") == 1
        assert "No space left on device" in capsys.readouterr().err
        assert len(Maildir(mailbox).messages()) == 2


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


@settings(max_examples=50, deadline=None)
@given(
    stored=st.sets(pop3_unique_ids(), max_size=20),
    listed=st.sets(pop3_unique_ids(), max_size=20),
)
def test_a_record_saved_reads_back_as_the_ids_still_listed(
    tmp_path_factory: pytest.TempPathFactory, stored: set[str], listed: set[str]
) -> None:
    """Whatever unique-ids RFC 1939 §7 allows, a record written and read again holds
    exactly those the server still lists, and never warns."""
    directory = tmp_path_factory.mktemp("record")
    warnings: list[str] = []
    record = FetchRecord.read_or_empty(directory, "pop.example:110", USER, warnings.append)
    for uid in stored:
        record.add(uid, 100)
    record.save()
    again = FetchRecord.read_or_empty(directory, "pop.example:110", USER, warnings.append)
    again.keep_only(listed)
    again.save()
    last = FetchRecord.read_or_empty(directory, "pop.example:110", USER, warnings.append)
    assert {uid for uid in stored | listed if uid in last} == stored & listed
    assert len(last) == len(stored & listed) and warnings == []
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
        record.add(f"id-{number:06d}", size)
        if record.due:
            record.save()
            written += path.stat().st_size
    record.save()
    assert written <= sum(sizes) + path.stat().st_size
