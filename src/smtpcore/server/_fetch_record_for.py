"""The record a ``fetch`` run starts from: what was stored from this account before
(:class:`~smtpcore.server.fetchrecord.FetchRecord`), pruned to the messages the server
lists now, and the one warning about the unique-ids the listing lacks or repeats.

Apart because it is where the server's UIDL listing is judged once, before any message
is taken: the run (:class:`~smtpcore.server._fetch_run._FetchRun`) then only asks
the record whether it holds a message."""

from __future__ import annotations

import argparse
from typing import Final

from smtpcore._ip import host_port
from smtpcore.asyncio import MessageListing, POP3Client
from smtpcore.server._fetch_output import _warn
from smtpcore.server.fetchrecord import FetchRecord, why_it_failed


def _record_for(
    args: argparse.Namespace, client: POP3Client, listing: list[MessageListing]
) -> FetchRecord:
    """The record of what was stored from this account before, pruned to the messages
    the server lists now.

    A message without a unique-id of its own cannot be told from one stored before by
    its listing: the server has no UIDL (optional, RFC 1939 §7), left it out of its
    UIDL listing, or gave its id to another message too, which §7 forbids (the client
    lists such a message with ``uid=None``). It is read at every run and told by its
    content (:meth:`FetchRecord.claim_unidentified`), with a warning saying why, and
    the other messages keep their records. The entry of a repeated id is forgotten,
    even when no message has an id of its own: kept, it would name as stored a new
    message listed under that id too and not stored in this run (a run cut short), once
    the old one is gone and the id its own again, and that message would be skipped for
    ever. A duplicate at worst, never a loss. When UIDL gave no message an id at all,
    the entries of ids are left as they are (a server whose UIDL failed once keeps
    them for the next run)."""
    warning = _unidentified_warning(client, listing)
    if warning is not None:
        _warn(warning)
    record = FetchRecord.read_or_empty(args.to_maildir, host_port(*args.server), args.user, _warn)
    try:
        record.remove_stale_temporaries()
    except OSError as exc:
        _warn(
            f"the temporary files of {record.path} that killed runs left cannot be "
            f"removed ({why_it_failed(exc)})"
        )
    if not listing or any(_given_id(item) is not None for item in listing):
        record.keep_only((item.uid, item.size) for item in listing if item.uid is not None)
    record.keep_unidentified(item.size for item in listing if item.uid is None)
    return record


def _given_id(item: MessageListing) -> str | None:
    """The unique-id UIDL gave ``item``, its own or repeated; None for a message it left
    out, or when the server gives none."""
    return item.uid if item.uid is not None else item.repeated_uid


_NUMBERS_NAMED: Final = 5
"""The most message numbers a warning names for one repeated unique-id."""


def _unidentified_warning(client: POP3Client, listing: list[MessageListing]) -> str | None:
    """The one warning line for the messages listed without a unique-id of their own,
    saying what the server did (gave none, left some out, repeated some) and what
    fetch does about it; None when every message has its own."""
    without_id = sum(1 for item in listing if _given_id(item) is None)
    if listing and without_id == len(listing):
        return (
            f"{_why_ids_are_missing(client, False)}: every message is fetched at every "
            "run and stored only when its content is not that of one stored before"
        )
    what = [_why_ids_are_missing(client, True)] if without_id else []
    repeated = _repeated_ids_named(listing)
    if repeated is not None:
        what.append(repeated)
    if not what:
        return None
    return (
        f"{'; '.join(what)}, where RFC 1939 §7 gives each message its own: the messages "
        "without one are fetched at every run, and those recorded are read again, each "
        "stored only when its content is not that of one stored before"
    )


def _repeated_ids_named(listing: list[MessageListing]) -> str | None:
    """The unique-ids the server gave to several messages, naming the first of them
    and the messages it was given to (a few: a listing may repeat one id for
    thousands), and how many other ids are repeated; None when none is."""
    given: dict[str, list[int]] = {}
    for item in listing:
        if item.repeated_uid is not None:
            given.setdefault(item.repeated_uid, []).append(item.number)
    if not given:
        return None
    uid, numbers = next(iter(given.items()))
    shown = ", ".join(str(number) for number in numbers[:_NUMBERS_NAMED])
    if len(numbers) > _NUMBERS_NAMED:
        shown += ", ..."
    others = len(given) - 1
    also = f", and {others} other unique-ids to several messages each" if others else ""
    return (
        f"the server's UIDL listing gives the unique-id {uid!r} to {len(numbers)} "
        f"messages ({shown}){also}"
    )


def _why_ids_are_missing(client: POP3Client, some_have_one: bool) -> str:
    """What the server did that left messages without a unique-id: it has no UIDL
    (optional, RFC 1939 §7; not in its CAPA, RFC 2449 §6.7), answered it ``-ERR``, or
    left some messages out of its listing."""
    if some_have_one:
        return "unique-ids missing for some messages in the server's UIDL listing"
    capabilities = client.connection.capabilities
    if capabilities is not None and "UIDL" in capabilities:
        return "the server answered UIDL with -ERR, though it offers UIDL"
    return "the server gives no unique-ids (no UIDL, RFC 1939 §7)"
