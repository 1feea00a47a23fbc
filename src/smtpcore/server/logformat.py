"""How the command line's log lines look: Postfix's level words, and nothing for INFO.

Postfix writes ``warning:``, ``error:``, ``fatal:`` and ``panic:`` before the
message of a line above the ordinary (its ``msg_warn``, ``msg_error``,
``msg_fatal``) and nothing before an ordinary one, so that an operator greps
``warning:`` for trouble while the everyday lines, and the fail2ban filter that
reads them, stay as they are. Every command that logs sets its handler up here,
so that no line of any reads as another level's.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

__all__ = ["SERVE_FORMAT", "LevelWordFormatter", "level_word", "log_to_stderr", "tool_format"]

SERVE_FORMAT: Final = "%(asctime)s %(name)s: %(message)s"
"""``serve``'s lines: the time, the logger, the message (its level word first)."""


def tool_format(command: str) -> str:
    """A one-shot command's lines, as its own messages on stderr read:
    ``smtpcore queue: warning: ...``."""
    return f"smtpcore {command}: %(message)s"


def level_word(levelno: int) -> str:
    """What goes before the message of a record at ``levelno``: ``warning: ``,
    ``error: ``, ``fatal: `` (CRITICAL), or nothing below WARNING. A level between
    two takes the lower one's word."""
    if levelno >= logging.CRITICAL:
        return "fatal: "
    if levelno >= logging.ERROR:
        return "error: "
    if levelno >= logging.WARNING:
        return "warning: "
    return ""


class LevelWordFormatter(logging.Formatter):
    """A formatter that puts :func:`level_word` before the message; a traceback
    still follows the line."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        word = level_word(record.levelno)
        if not word:
            return super().formatMessage(record)
        message = record.message
        record.message = word + message  # for this handler's line alone: put back below
        try:
            return super().formatMessage(record)
        finally:
            record.message = message


def log_to_stderr(level: int, fmt: str) -> None:
    """Send the log at ``level`` and above to stderr in ``fmt``, with level words.
    As :func:`logging.basicConfig`, a process whose root logger has a handler
    already (an embedding program, a test's capture) is left as it is. The handler
    has ``level`` too: a logger a command sets lower for a handler of its own (the
    demo's mail log, kept for its report) passes its lines to the root's handlers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(level)
    handler.setFormatter(LevelWordFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
