"""A ``rename()`` that fails where the new name is taken, in one system call.

``os.rename`` replaces a file already under the new name, silently, and Python has no
``RENAME_NOREPLACE``. Linux has it (``renameat2``, Linux 3.15, glibc 2.28; the
filesystem must support the flag): the kernel checks that the name is free and
renames in one step, so that no file made under that name meanwhile can be replaced.
:func:`rename_no_replace` calls it through ``ctypes``; where there is none (another
kernel or libc, or a filesystem without the flag) it raises :class:`NoReplaceUnsupported`
and changes nothing, for the caller to choose what to do instead. A Python built
without ``ctypes`` (no ``_ctypes``: no libffi) has none either: it is imported only
where the call is looked up, so that everything else still imports.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Final

__all__ = ["AT_FDCWD", "RENAME_NOREPLACE", "NoReplaceUnsupported", "rename_no_replace"]

AT_FDCWD: Final = -100
"""The ``dirfd`` that names the current directory (Linux's value)."""
RENAME_NOREPLACE: Final = 1
"""``renameat2``'s flag: ``EEXIST`` rather than replace the new name."""
UNSUPPORTED: Final = frozenset({errno.ENOSYS, errno.EINVAL})
"""What ``renameat2`` gives where it cannot keep the flag: a kernel without the call
(``ENOSYS``), a filesystem without the flag (``EINVAL``; for files, its only cause)."""

Renameat2 = Callable[[int, bytes, int, bytes, int], int]
"""``renameat2(olddirfd, oldpath, newdirfd, newpath, flags)``: 0 once renamed, else the
``errno`` it failed with."""


class NoReplaceUnsupported(OSError):
    """No ``renameat2`` with ``RENAME_NOREPLACE`` here: nothing was renamed."""


def _libc_renameat2() -> Renameat2 | None:
    """The C library's ``renameat2``, or None where it has none (musl before 1.2.5,
    glibc before 2.28, macOS, the BSDs) or where Python has no ``ctypes``."""
    try:
        import ctypes
    except ImportError:
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    int_, path = ctypes.c_int, ctypes.c_char_p
    function.argtypes = [int_, path, int_, path, ctypes.c_uint]
    function.restype = ctypes.c_int

    def renameat2(old_dir: int, old: bytes, new_dir: int, new: bytes, flags: int) -> int:
        """``function``'s result, and ``errno`` as it set it, or 0 where it succeeded."""
        if function(old_dir, old, new_dir, new, flags) == 0:
            return 0
        return ctypes.get_errno() or errno.EIO

    return renameat2


renameat2: Renameat2 | None = _libc_renameat2()
"""The call :func:`rename_no_replace` makes; None where there is none (a test sets it to
None, or to a stand-in, to reach the other paths)."""


def rename_no_replace(
    name: str, target: str, *, src_dir_fd: int = AT_FDCWD, dst_dir_fd: int = AT_FDCWD
) -> bool:
    """Rename ``name`` (in the directory open as ``src_dir_fd``) to ``target`` (in
    ``dst_dir_fd``) unless ``target`` exists: True once renamed, False where it exists
    (``EEXIST``: nothing changed, whatever file has the name, even ``name``'s own).
    :class:`NoReplaceUnsupported` where the kernel, the C library or the filesystem
    cannot rename so (:data:`UNSUPPORTED`); any other failure is the ``OSError`` a
    ``rename()`` gives (``FileNotFoundError`` where ``name`` is gone), naming both
    files; a name with a NUL in it is ``ValueError``, as for ``os.rename`` (the C call
    would take the name as cut at the NUL: another file's)."""
    call = renameat2
    if call is None:
        raise NoReplaceUnsupported(
            errno.ENOSYS, "no renameat2 in the C library", name, None, target
        )
    old, new = os.fsencode(name), os.fsencode(target)
    if b"\0" in old or b"\0" in new:
        raise ValueError("embedded null byte")
    error = call(src_dir_fd, old, dst_dir_fd, new, RENAME_NOREPLACE)
    if error == 0:
        return True
    if error == errno.EEXIST:
        return False
    if error in UNSUPPORTED:
        raise NoReplaceUnsupported(error, os.strerror(error), name, None, target)
    raise OSError(error, os.strerror(error), name, None, target)
