"""``fetch``: the command-line POP3 client of the reference server.

It retrieves a mailbox, prints a line per message, and with ``--to-maildir`` stores
what it has not stored before (:mod:`smtpcore.server.fetchrecord`), deleting from
the server, with ``--delete``, only what is stored and recorded.

This module is the command: it checks the options, connects, logs in, lists, hands
the listing to the run and says how it ended. The parts live beside it, one job each:
``_fetch_login`` (STLS and ``--auth``), ``_fetch_record_for`` (the record pruned to
the listing), ``_fetch_run`` (each message stored, recorded, deleted),
``_fetch_retrieve`` (a message streamed into ``tmp/``), ``_fetch_summary`` (the line
printed for it) and ``_fetch_output`` (what goes to standard output and error)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from smtpcore import ProtocolError
from smtpcore.asyncio import POP3Client, POP3Error
from smtpcore.server._fetch_login import AUTH_CHOICES, _log_in, _stls_choice
from smtpcore.server._fetch_output import _fetch_failed, _say_at_once
from smtpcore.server._fetch_record_for import _record_for
from smtpcore.server._fetch_retrieve import _clean_tmp
from smtpcore.server._fetch_run import _FetchRun
from smtpcore.server.cancelsignals import cancelled_by_stop_signals
from smtpcore.server.config import ConfigError
from smtpcore.server.maildir import Maildir
from smtpcore.server.passwords import read_password
from smtpcore.server.tools import client_tls_context

__all__ = ["AUTH_CHOICES", "run_fetch"]


async def _fetch(
    args: argparse.Namespace, say: Callable[[str], None], *, stop_signals: bool = False
) -> int:
    """The run; with ``stop_signals``, SIGTERM and SIGHUP cancel it as Ctrl-C does, so
    that the record is written as it stops, and then end the process (see
    :func:`run_fetch`)."""
    if not stop_signals:
        return await _fetch_session(args, say)
    with cancelled_by_stop_signals():
        return await _fetch_session(args, say)


async def _fetch_session(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    host, port = args.server
    client = POP3Client(
        host,
        port,
        tls_on_connect=args.tls,
        stls=_stls_choice(args),
        ssl_context=client_tls_context(args.cafile, args.insecure),
        allow_plaintext_auth=args.allow_plaintext_auth,
    )
    target = Maildir(args.to_maildir) if args.to_maildir is not None else None
    if target is not None:
        await _clean_tmp(target)
    try:
        async with client:
            await _log_in(client, args)
            listing = await client.list(allow_repeated_uids=True)
            record = None if target is None else _record_for(args, client, listing)
            run = _FetchRun(
                client,
                target,
                record,
                args.delete,
                args.all,
                say,
                ids_trusted=all(item.uid is not None for item in listing),
            )
            await run.take_all(listing)
            if not await run.record_without_deleted():
                await client.reset()  # nothing deleted: at most a duplicate next time
            await client.quit()  # raises unless answered +OK
    except POP3Error as exc:
        _fetch_failed(exc, checked_name=client.server_hostname)
        return 1
    say(run.summary(args.to_maildir))
    return 1 if run.refused or run.record_lost else 0


def _check_maildir_options(args: argparse.Namespace) -> None:
    """A usage error (:class:`ConfigError`, status 2) for an option that means nothing
    without ``--to-maildir``: ``--delete`` would throw the mail away, the messages
    being only read for their summary lines (fetchmail, getmail and mpop delete only
    what they delivered), and ``--all`` would change nothing, there being no record
    of what was stored; before any password is asked."""
    if args.to_maildir is not None:
        return
    if args.delete:
        raise ConfigError(
            "--delete needs --to-maildir: the messages would be deleted from the server "
            "without being kept anywhere"
        )
    if args.all:
        raise ConfigError(
            "--all needs --to-maildir: only the record kept in a Maildir makes fetch "
            "leave messages out"
        )


def run_fetch(args: argparse.Namespace, say: Callable[[str], None] = _say_at_once) -> int:
    """``fetch``: a line per message; 0 when every message was retrieved (and the
    record written; under ``--delete``, each deleted), else a line on standard error for
    each failure and 1. Options that need ``--to-maildir`` are refused without it
    (:func:`_check_maildir_options`). SIGTERM and SIGHUP stop the run as Ctrl-C does,
    the record of what it stored written, then end the process by the signal
    (:mod:`smtpcore.server.cancelsignals`): killed where it stood, the run left the
    messages it stored to be fetched again."""
    _check_maildir_options(args)
    args.password = read_password(
        given=args.password, password_file=args.password_file, user=args.user
    )
    try:
        return asyncio.run(_fetch(args, say, stop_signals=True))
    except (OSError, ProtocolError, ValueError) as exc:
        _fetch_failed(exc)
        return 1
