"""The local mailboxes: which recipients exist here, and delivery into their Maildirs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

from smtpcore.address import Mailbox, normalize_domain
from smtpcore.server.config import ServerConfig, mailbox_key
from smtpcore.server.log import logger
from smtpcore.server.maildir import Maildir, StagedMessage
from smtpcore.server.trace import return_path_header

__all__ = ["LocalMailboxes"]


class LocalMailboxes:
    """The configured users' Maildirs, under ``data_dir/mailboxes/``.

    ``on_delivery(key, path)`` is told of each message delivered into one, whoever
    delivered it (the SMTP session, or the delivery worker: a copy its mailbox first
    refused, a report to a local sender)."""

    def __init__(
        self, config: ServerConfig, *, on_delivery: Callable[[str, Path], None] | None = None
    ) -> None:
        self.config = config
        self.on_delivery = on_delivery

    def delivered(self, key: str, path: Path, queue_id: str) -> None:
        """Tell ``on_delivery`` of a message delivered into mailbox ``key`` at ``path``;
        what it raises is logged: the message is delivered all the same."""
        if self.on_delivery is None:
            return
        try:
            self.on_delivery(key, path)
        except Exception:
            logger.exception("%s: the on_delivery hook failed for %s", queue_id, key)

    def create_all(self) -> None:
        """Create every user's Maildir (and the postmaster's), so that mail tools and the
        POP3 server find them before the first message; and clear each ``tmp/`` of what
        deliveries a crash cut short left there over 36 hours ago."""
        keys = set(self.config.users)
        keys.update(self.config.postmaster_key(domain) for domain in self.config.domains)
        for key in keys:
            maildir = self.maildir(key)
            maildir.create()
            maildir.clean_tmp()

    def lookup(self, mailbox: Mailbox) -> str | None:
        """The mailbox key (:func:`mailbox_key`) of a recipient at a local domain, or
        None: no such user.

        ``postmaster`` at any local domain, and the bare ``postmaster``, always
        exist (RFC 5321 §4.5.1).
        """
        if mailbox.local_part.lower() == "postmaster":
            domain = normalize_domain(mailbox.domain) if mailbox.domain else ""
            return self.config.postmaster_key(domain or self.config.domains[0])
        if mailbox.is_address_literal:
            return None
        key = mailbox_key(mailbox)
        return key if key in self.config.users else None

    def maildir(self, key: str) -> Maildir:
        return Maildir(self.config.mailbox_path(key))

    def stage(
        self, keys: Iterable[str], sender: str, prefix: bytes, source: Path
    ) -> list[StagedMessage]:
        """Write the message for each mailbox into its ``tmp/``, synced, not yet visible.

        Each copy starts with ``Return-Path`` (final delivery, RFC 5321 §4.4),
        then ``prefix`` (the Received line when not already in ``source``),
        then the content of ``source``. On failure nothing is left staged.
        """
        staged: list[StagedMessage] = []
        head = return_path_header(sender) + prefix
        try:
            for key in dict.fromkeys(keys):
                with source.open("rb") as content:
                    staged.append(self.maildir(key).stage(head, content))
        except BaseException:
            for message in staged:
                message.discard()
            raise
        return staged

    def deliver_file(self, key: str, sender: str, source: Path) -> Path:
        """Deliver the content of ``source`` (trace headers included) into one mailbox."""
        with source.open("rb") as content:
            return self.maildir(key).deliver(return_path_header(sender), content)

    def deliver(self, key: str, sender: str, content: bytes | BinaryIO) -> Path:
        """Deliver one message made or queued here (its trace headers included)."""
        chunks: Sequence[bytes] | BinaryIO = [content] if isinstance(content, bytes) else content
        return self.maildir(key).deliver(return_path_header(sender), chunks)
