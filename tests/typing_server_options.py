"""Checked by the suite's ``mypy --strict`` run, never executed: every server option
is a typed keyword, so a misspelt or mistyped one is an error.

Each ``type: ignore`` below must be needed (``--strict`` warns of unused ones).
"""

from __future__ import annotations

import smtpcore.asyncio
import smtpcore.trio
from smtpcore.handler import Handler
from smtpcore.maildrop import Mailstore


def smtp_servers(handler: Handler) -> None:
    smtpcore.asyncio.SMTPServer(handler, max_recipients=5, max_junk_commands=10)
    smtpcore.asyncio.SMTPServer(handler, max_recipent=5)  # type: ignore[call-arg]
    smtpcore.trio.SMTPServer(handler, lmtp="yes")  # type: ignore[arg-type]


def pop3_servers(store: Mailstore) -> None:
    smtpcore.asyncio.POP3Server(store, utf8=True, expire="NEVER")
    smtpcore.trio.POP3Server(store, utf_8=True)  # type: ignore[call-arg]
