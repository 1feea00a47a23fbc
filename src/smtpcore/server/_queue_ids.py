"""Queue ids: their form (ten hexadecimal digits, as Postfix's short ids look) and the
check that a name from a command file or a command line is one, never a path.

Apart from the queue because the form of a name is a job of its own, which reads
without the queue's files. Every name is still imported from
:mod:`smtpcore.server.queue`, whose ``Queue._unused_id`` reads ``new_queue_id``
there (where a test patches it).
"""

from __future__ import annotations

import re
import secrets
from typing import Final

__all__ = ["checked_queue_id", "is_queue_id", "new_queue_id"]


def new_queue_id() -> str:
    """Ten hexadecimal digits, as Postfix's short queue ids look."""
    return secrets.token_hex(5).upper()


_QUEUE_ID: Final = re.compile(r"[0-9A-F]{10}")


def is_queue_id(text: str) -> bool:
    """Whether ``text`` has the form :func:`new_queue_id` gives: a name in the queue's
    directories, never a path (``..``, ``/``) to somewhere else."""
    return _QUEUE_ID.fullmatch(text) is not None


def checked_queue_id(queue_id: str) -> str:
    """``queue_id``, or a ``ValueError`` when it is not of an id's form: ids come from
    command files and command lines too, and one such as ``../messages/ID`` would make a
    path to another file."""
    if not is_queue_id(queue_id):
        raise ValueError(f"not a queue id: {queue_id!r}")
    return queue_id
