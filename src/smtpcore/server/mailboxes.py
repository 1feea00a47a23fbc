"""The local mailboxes: which recipients exist here, and delivery into their Maildirs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import BinaryIO, Final

from smtpcore._maildir_open import make_lock_file
from smtpcore.address import AddressError, Mailbox, normalize_domain
from smtpcore.server.config import ServerConfig, mailbox_key, parse_user_address
from smtpcore.server.log import loggable, logger
from smtpcore.server.maildir import Maildir, StagedMessage, once_name
from smtpcore.server.trace import return_path_header

__all__ = ["DELIVERED", "LocalMailboxes", "ServedMaildir", "delivered_note"]

DELIVERED: Final = "delivered to maildir"
"""What the queue and a sender's report say of a copy delivered here (Postfix's words),
never where it went: a Maildir file's name holds this machine's own host name (not
``--hostname``) and how it stores mail, which are the operator's."""


def delivered_note(path: Path) -> str:
    """What the mail log says of a copy delivered at ``path``: :data:`DELIVERED` and
    the file's name, for the operator to find it by."""
    return f"{DELIVERED} {path.name}"


class ServedMaildir(Maildir):
    """A configured user's Maildir, which this server's POP3 listener serves: made with
    the maildrop's lock file, at start and at each delivery, while there is room (a
    login made it only when it came, and on a disk with no free inode the user could
    never log in, to delete mail and free space). Only here: a Maildir the server does
    not serve (``fetch --to-maildir``'s, a user's own) gets no file of smtpcore's."""

    def create(self) -> None:
        super().create()
        make_lock_file(self.path)


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

    def _keys(self) -> set[str]:
        """Every user's mailbox key, and the postmaster's of each domain."""
        keys = set(self.config.users)
        keys.update(self.config.postmaster_key(domain) for domain in self.config.domains)
        return keys

    def create_all(self) -> None:
        """Create every user's Maildir (and the postmaster's), so that mail tools and the
        POP3 server find them before the first message; and clear each ``tmp/`` of what
        deliveries a crash cut short left there over 36 hours ago."""
        keys = self._keys()
        for key in keys:
            maildir = self.maildir(key)
            maildir.create()
            maildir.clean_tmp()
        self._warn_of_other_spellings(keys)

    def directories(self) -> list[Path]:
        """``mailboxes/``, and each mailbox's directories that are there, to be refused
        at start when others may write them (see
        :func:`~smtpcore.server.safefiles.check_private_directories`): whoever may
        could swap a Maildir for a link, or delete the mail in it."""
        found = [self.config.mailboxes_dir]
        for key in sorted(self._keys()):
            found += self.maildir(key).directories()
        return found

    def clean_all(self) -> int:
        """Clear each mailbox's ``tmp/`` of the files untouched for 36 hours, as a running
        server must from time to time (:meth:`Maildir.clean_tmp`: a delivery under way
        writes its file within seconds, so none of its is touched); how many went. A
        Maildir that cannot be read (removed by hand) is logged and the rest go on."""
        removed = 0
        for key in sorted(self._keys()):
            try:
                removed += self.maildir(key).clean_tmp()
            except OSError as exc:
                logger.warning("mailbox %s: cannot clear tmp/: %s", key, exc)
        return removed

    def _warn_of_other_spellings(self, keys: set[str]) -> None:
        """Say which Maildirs are named by another spelling of a user's key: one a server
        before keys were in NFC made for a users file in NFD, say. Its mail is neither
        served nor delivered to there, and unsaid it would go unseen."""
        try:
            names = [path.name for path in self.config.mailboxes_dir.iterdir() if path.is_dir()]
        except OSError:
            return
        for name in names:
            if name in keys:
                continue
            try:
                key = mailbox_key(parse_user_address(name))
            except AddressError:
                continue
            if key in keys:
                logger.warning(
                    "mailbox directory %s is another spelling of %s: its mail is served "
                    "from %s alone; move the messages there",
                    loggable(name),
                    key,
                    key,
                )

    def lookup(self, mailbox: Mailbox) -> str | None:
        """The mailbox key (:func:`mailbox_key`) of a recipient the router found local,
        or None: no such user.

        ``postmaster`` at any local domain, and the bare ``postmaster``, always
        exist (RFC 5321 §4.5.1). A recipient at an address literal (one naming this
        server, RFC 1123 §5.2.17) is the same user at the first local domain.
        """
        if mailbox.local_part.lower() == "postmaster":
            domain = normalize_domain(mailbox.domain) if mailbox.domain else ""
            return self.config.postmaster_key(domain or self.config.domains[0])
        if mailbox.is_address_literal:
            try:
                mailbox = Mailbox(mailbox.local_part, self.config.domains[0])
            except AddressError:  # no such mailbox there: no user has it
                return None
        key = mailbox_key(mailbox)
        return key if key in self.config.users else None

    def maildir(self, key: str) -> ServedMaildir:
        return ServedMaildir(self.config.mailbox_path(key))

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

    def deliver_queued(
        self,
        key: str,
        sender: str,
        source: Path,
        queue_id: str,
        created: float,
        *,
        search: bool = True,
    ) -> tuple[Path, bool]:
        """:meth:`deliver_file` for queue entry ``queue_id`` (queued at ``created``),
        once: its copy is named after the entry and the mailbox (:func:`once_name`), and
        one in place already (a crash came before its delivery was recorded; another
        address of the entry names this mailbox) is not written again. The path, and
        whether it was written now. ``search=False``: no earlier attempt can have
        written the copy, so the mailbox is not searched for it
        (:meth:`Maildir.deliver_once`)."""
        with source.open("rb") as content:
            return self.maildir(key).deliver_once(
                once_name(created, queue_id, key),
                return_path_header(sender),
                content,
                search=search,
            )

    def deliver(self, key: str, sender: str, content: bytes | BinaryIO) -> Path:
        """Deliver one message made or queued here (its trace headers included)."""
        chunks: Sequence[bytes] | BinaryIO = [content] if isinstance(content, bytes) else content
        return self.maildir(key).deliver(return_path_header(sender), chunks)
