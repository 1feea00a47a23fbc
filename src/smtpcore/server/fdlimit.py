"""The open files limit (``ulimit -n``) that ``serve``'s session limits need.

A server out of file descriptors fails quietly: it stops accepting (clients wait
in the kernel's backlog, no ``421``), and a message that was accepted cannot be
spooled (``451 4.3.0``). The default ``--max-sessions`` on a few listeners needs
more descriptors than the usual soft limit of 1,024, so ``serve`` raises its soft
limit toward the hard one at start (as Postfix's master does), and warns when
that is still short, as Dovecot does ("fd limit (ulimit -n) is lower than
required under max. load"), rather than lower a limit the operator set.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "FILES_PER_POP3_SESSION",
    "FILES_PER_SMTP_SESSION",
    "FILES_RESERVED",
    "OpenFilesLimit",
    "descriptors_needed",
    "fit_open_files_limit",
]

FILES_PER_SMTP_SESSION = 2
"""The connection, and the spool file of the message it is receiving."""
FILES_PER_POP3_SESSION = 5
"""The connection, and what a session that has logged in holds open: the Maildir,
its ``cur`` and ``new``, and its lock file."""
FILES_RESERVED = 100
"""Everything else: the listening sockets, the data directory's lock, the event
loop's own descriptors, the standard streams and the log, the queue's files, and
the delivery worker's connections, each with a queue file open (at most its
``concurrency``, 20, whatever a message's fan-out: each session holds one of them)."""
_POP3_LISTENERS = frozenset({"pop3", "pop3s"})


def descriptors_needed(listeners: Iterable[str], max_sessions: int) -> int:
    """File descriptors ``serve`` may hold at once, every listener full.

    ``max_sessions`` is per listener, so each SMTP-speaking one (smtp,
    submission, smtps, lmtp) adds ``max_sessions x FILES_PER_SMTP_SESSION`` and
    each POP3 one (pop3, pop3s) ``max_sessions x FILES_PER_POP3_SESSION``, to
    ``FILES_RESERVED``. The defaults (2,000 sessions on smtp, submission and
    pop3) need 2000x2 + 2000x2 + 2000x5 + 100 = 18,100.
    """
    needed = FILES_RESERVED
    for name in listeners:
        per_session = FILES_PER_POP3_SESSION if name in _POP3_LISTENERS else FILES_PER_SMTP_SESSION
        needed += max_sessions * per_session
    return needed


@dataclass(frozen=True)
class OpenFilesLimit:
    """The soft ``RLIMIT_NOFILE`` before and after :func:`fit_open_files_limit`,
    the hard one, and what the configuration needs."""

    before: int
    after: int
    hard: int
    needed: int

    @property
    def raised(self) -> bool:
        return self.after != self.before

    @property
    def short(self) -> bool:
        return not _at_least(self.after, self.needed)

    def warning(self, max_sessions: int) -> str:
        """What the operator reads when the limit is still short, naming the fix."""
        return (
            f"open files limit (ulimit -n) is {self.after}, lower than the {self.needed} "
            f"that --max-sessions {max_sessions} on every listener needs under full load: "
            "past it new connections wait unanswered and messages cannot be spooled; "
            f"raise `ulimit -n` to {self.needed} (the hard limit is {_shown(self.hard)}) "
            "or lower --max-sessions"
        )


def fit_open_files_limit(needed: int) -> OpenFilesLimit:
    """Raise the soft open files limit to the hard one when it is below ``needed``
    (or to ``needed`` when the hard limit is unlimited); never lower it. A refusal
    by the system leaves the limit as it was: the caller warns of what is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _at_least(soft, needed):
        return OpenFilesLimit(soft, soft, hard, needed)
    target = needed if hard == resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):  # a system cap below the hard limit (Linux nr_open)
        target = soft
    return OpenFilesLimit(soft, target, hard, needed)


def _at_least(limit: int, needed: int) -> bool:
    return limit == resource.RLIM_INFINITY or limit >= needed


def _shown(limit: int) -> str:
    return "unlimited" if limit == resource.RLIM_INFINITY else str(limit)
