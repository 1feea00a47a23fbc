"""smtpcore.maildrop: where hard links are refused, a move never replaces a file made
under its new name in the instant between the look and the rename.

The fallback move was an ``lstat`` that found the new name free, then ``rename()``,
which replaced a file another writer made there in between. It is now
``renameat2(RENAME_NOREPLACE)`` (:mod:`smtpcore._no_replace`), which the kernel refuses
(``EEXIST``) where the name is taken; the plain ``rename()`` is left only where there
is no ``renameat2`` (``ENOSYS``, ``EINVAL``, a C library without it).
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import smtpcore._maildir_move as maildir_move
import smtpcore._no_replace as no_replace
from peers import write_maildir
from smtpcore._no_replace import NoReplaceUnsupported, rename_no_replace
from smtpcore.maildrop import Maildir
from test_maildrop_moves import UID, maildir_with, names, refuse_links
from test_maildrop_unreadable import LOGGER, mentions, refuse, run

WRITTEN = b"the other writer's\n"


def write_after_looking_at(monkeypatch: pytest.MonkeyPatch, path: Path, target: str) -> None:
    """Another writer makes ``path`` just after the move looks at ``target``, and finds
    it free: between the look and the rename."""
    real = maildir_move.stat_name

    def stat_name(folder: int, name: str) -> os.stat_result | None:
        found = real(folder, name)
        if name == target and not path.exists():
            path.write_bytes(WRITTEN)
        return found

    monkeypatch.setattr(maildir_move, "stat_name", stat_name)


def test_a_file_made_under_the_new_name_after_the_look_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The file made under ``cur/X:2,S`` between the look and the rename stays whole;
    the message stays in ``new/``, whole, and the WARNING names both, as for a name
    found taken."""
    path = maildir_with(tmp_path / "alice", {f"new/{UID}": b"Subject: one\n\nfirst\n"})
    maildir = Maildir(path)
    assert len(run(maildir.messages())) == 1
    refuse_links(monkeypatch, errno.EPERM)
    write_after_looking_at(monkeypatch, path / "cur" / f"{UID}:2,S", f"{UID}:2,S")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert (path / "cur" / f"{UID}:2,S").read_bytes() == WRITTEN
    assert (path / "new" / UID).read_bytes() == b"Subject: one\n\nfirst\n"
    [warning] = mentions(caplog, "another file has that name")
    assert repr(str(path / "new" / UID)) in warning.getMessage()


def failing_with(error: int) -> no_replace.Renameat2:
    """A ``renameat2`` that fails with ``error``, as a kernel or filesystem without
    ``RENAME_NOREPLACE`` does."""

    def renameat2(old_dir: int, old: bytes, new_dir: int, new: bytes, flags: int) -> int:
        return error

    return renameat2


@pytest.mark.parametrize(
    "renameat2",
    [None, failing_with(errno.ENOSYS), failing_with(errno.EINVAL)],
    ids=["no-symbol", "ENOSYS", "EINVAL"],
)
def test_without_renameat2_the_move_falls_back_to_rename_onto_a_free_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    renameat2: no_replace.Renameat2 | None,
) -> None:
    """Where there is no ``renameat2`` (a C library without it, a kernel without the
    call, a filesystem without the flag), a kept message still moves to ``cur/``, by
    ``rename()``, and a name found taken (a file the listing left out) is still left
    alone."""
    paths = write_maildir(tmp_path / "alice", [b"1\n", b"2\n"])
    (tmp_path / "alice" / "cur" / f"{paths[1].name}:2,").write_bytes(b"another\n")
    refuse(monkeypatch, "open", {f"{paths[1].name}:2,"})  # listed: new/, the one it can read
    monkeypatch.setattr(no_replace, "renameat2", renameat2)
    refuse_links(monkeypatch, errno.EPERM)
    real_rename = os.rename
    renamed: list[str] = []

    def rename(name: str, target: str, **kwargs: int) -> None:
        renamed.append(target)
        real_rename(name, target, **kwargs)

    monkeypatch.setattr(os, "rename", rename)
    maildir = Maildir(tmp_path / "alice")
    run(maildir.messages())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run(maildir.update(deleted=set(), retrieved={1}))
    run(maildir.close())
    assert renamed == [f"{paths[0].name}:2,S"]
    assert names(tmp_path / "alice") == [
        f"cur/{paths[0].name}:2,S",
        f"cur/{paths[1].name}:2,",
        f"new/{paths[1].name}",
    ]
    assert (tmp_path / "alice" / "cur" / f"{paths[1].name}:2,").read_bytes() == b"another\n"
    [_] = mentions(caplog, "another file has that name")


def test_rename_no_replace_renames_onto_a_free_name_only(tmp_path: Path) -> None:
    """True once renamed; False, both files whole, where the name is taken, even by a
    name of the same file; ``FileNotFoundError`` where the name to rename is gone."""
    (tmp_path / "a").write_bytes(b"a\n")
    (tmp_path / "b").write_bytes(b"b\n")
    os.link(tmp_path / "b", tmp_path / "b2")
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not rename_no_replace("a", "b", src_dir_fd=folder, dst_dir_fd=folder)
        assert not rename_no_replace("b", "b2", src_dir_fd=folder, dst_dir_fd=folder)
        assert (tmp_path / "a").read_bytes() == b"a\n"
        assert (tmp_path / "b").read_bytes() == b"b\n"
        assert rename_no_replace("a", "c", src_dir_fd=folder, dst_dir_fd=folder)
        assert sorted(os.listdir(tmp_path)) == ["b", "b2", "c"]
        with pytest.raises(FileNotFoundError):
            rename_no_replace("a", "d", src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)


@pytest.mark.parametrize("error", [errno.ENOSYS, errno.EINVAL], ids=errno.errorcode.get)
def test_rename_no_replace_says_where_it_cannot_keep_the_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    """A kernel or filesystem without ``RENAME_NOREPLACE`` is
    :class:`NoReplaceUnsupported`, nothing renamed; another failure is the
    ``OSError`` a rename gives."""
    (tmp_path / "a").write_bytes(b"a\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(no_replace, "renameat2", failing_with(error))
    with pytest.raises(NoReplaceUnsupported) as raised:
        rename_no_replace("a", "b")
    assert raised.value.errno == error
    monkeypatch.setattr(no_replace, "renameat2", failing_with(errno.EACCES))
    with pytest.raises(PermissionError):
        rename_no_replace("a", "b")
    assert os.listdir(tmp_path) == ["a"]


def test_rename_no_replace_names_both_files_when_it_fails(tmp_path: Path) -> None:
    """The ``OSError`` names the file to rename and the name it was to get, as
    ``os.rename``'s does."""
    (tmp_path / "a").write_bytes(b"a\n")
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotFoundError) as raised:
            rename_no_replace("a", "no-folder/b", src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)
    assert (raised.value.filename, raised.value.filename2) == ("a", "no-folder/b")
    assert os.listdir(tmp_path) == ["a"]


@pytest.mark.parametrize(
    ("name", "target"), [("a\0b", "c"), ("a", "c\0d")], ids=["name", "target"]
)
def test_rename_no_replace_refuses_a_name_with_a_nul(
    tmp_path: Path, name: str, target: str
) -> None:
    """A NUL in either name is ``ValueError``, as ``os.rename`` has it: the C call would
    read the name only up to the NUL, and rename another file, or to another name."""
    (tmp_path / "a").write_bytes(b"a\n")
    folder = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(ValueError, match="null byte"):
            rename_no_replace(name, target, src_dir_fd=folder, dst_dir_fd=folder)
    finally:
        os.close(folder)
    assert os.listdir(tmp_path) == ["a"]


def test_without_ctypes_the_maildrop_and_the_cli_import_and_moves_fall_back(
    tmp_path: Path,
) -> None:
    """A Python built without ``_ctypes`` (no libffi) imports :mod:`smtpcore.maildrop`
    and the CLI, and has no ``renameat2``: a move falls back to ``rename()``."""
    script = (
        "import sys\n"
        "sys.modules['_ctypes'] = None\n"
        "import smtpcore.maildrop, smtpcore.server.cli\n"
        "import smtpcore._no_replace as no_replace\n"
        "assert 'ctypes' not in sys.modules or sys.modules['ctypes'] is None\n"
        "print(no_replace.renameat2)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "None\n"
