"""How a Maildir's filesystem failures become POP3 answers, each told once in the log.

The client gets ``-ERR`` with an RFC 3206 §4 response code: ``SYS/PERM`` for a cause
no retry cures (a permission refused, a link where a folder should be), for which a
client that retried at every poll (fetchmail, mpop) would retry for ever, and
``SYS/TEMP`` for one that may be gone at the next poll (out of descriptors, an I/O
error). The operator gets one WARNING naming the path, for only he can act on it:
the :class:`~smtpcore.maildrop.MaildropError` says it is ``logged``, and the server
adds no line of its own.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Final, TypeVar

from smtpcore._maildrop_errors import MaildropError

_E = TypeVar("_E", bound=MaildropError)

logger: Final = logging.getLogger("smtpcore.pop3.server")

PERMANENT: Final = frozenset(
    {errno.ENOTDIR, errno.ELOOP, errno.ENAMETOOLONG, errno.EACCES, errno.EPERM}
)
"""Why a Maildir may fail to serve that no retry cures: a file where a directory should
be, links that loop, a name too long, a permission refused (another agent wrote the
file ``0600`` under its own uid: it stays so until someone changes it)."""

FILE_FAULTS: Final = frozenset({errno.EACCES, errno.EPERM, errno.EIO})
"""Why one message file may be unreadable while the rest of its Maildir is fine: its
own mode or ACL, a security module's refusal, a bad block. A listing leaves such a
file out rather than refuse the whole maildrop. Anything else (out of descriptors or
memory) is the server's state, not the file's, and refuses the listing for now."""


_PERMANENT_TAIL: Final = "refused until the operator acts (SYS/PERM)"
_TEMPORARY_TAIL: Final = "refused for now (SYS/TEMP: the client tries again later)"


def refused(
    where: Path, exc: OSError, doing: str, *, permanent: bool | None = None
) -> MaildropError:
    """The ``logged`` error for ``exc``, met trying to ``doing`` (``"read the message"``)
    at ``where`` (see :func:`refusal`); one WARNING names ``where``."""
    error = refusal(exc, doing, permanent=permanent)
    tail = _TEMPORARY_TAIL if error.code == "SYS/TEMP" else _PERMANENT_TAIL
    logger.warning("maildrop: %r: %s; cannot %s: %s", str(where), exc.strerror, doing, tail)
    return error


def refusal(exc: OSError, doing: str, *, permanent: bool | None = None) -> MaildropError:
    """The error for ``exc``, met trying to ``doing``, marked ``logged`` with no line
    said: the caller has said it (see :func:`refused`), or said it once already for the
    same file. ``SYS/PERM`` if ``permanent`` (by default, if its errno is in
    :data:`PERMANENT`), else ``SYS/TEMP``."""
    if permanent is None:
        permanent = exc.errno in PERMANENT
    code = "SYS/PERM" if permanent else "SYS/TEMP"
    return told(MaildropError(f"Cannot {doing}: {exc.strerror}", code))


def told(error: _E) -> _E:
    """``error``, marked ``logged``: its cause is in the log already, and the server
    adds no line of its own."""
    error.logged = True
    return error
