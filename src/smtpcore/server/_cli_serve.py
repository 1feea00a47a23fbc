"""Running ``serve``: the log, the open files limit, the signals (stop, reload, the queue
tool's commands), the listeners announced on standard output, and the stop.

Apart from the one-shot commands, which the dispatch in :mod:`smtpcore.server.cli`
runs in one call each, because a server lives on: this is the only command that
handles signals and outlives its start. The configuration it runs with, and reads
again on SIGHUP, comes from :func:`~smtpcore.server._cli_config.config_from_args`,
read through this module's own name for it (patch it here, not on ``cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from smtpcore._early_signals import take as take_early_signals
from smtpcore.server._cli_config import config_from_args
from smtpcore.server.config import ServerConfig, default_hostname_warning
from smtpcore.server.logformat import SERVE_FORMAT, log_to_stderr
from smtpcore.server.output import OutputLost
from smtpcore.server.stopsignal import abort_on_second_signal

__all__ = ["run_serve"]


async def _serve(
    config: ServerConfig,
    *,
    stop_timeout: float = 10.0,
    reread: Callable[[], ServerConfig] | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, which stop within ``stop_timeout`` seconds (sessions
    finish their message, then get 421; deliveries under way finish or stay queued),
    or at once on a second one while stopping; SIGHUP calls ``reread`` and reloads
    users and certificates; SIGUSR1 runs the commands ``python -m smtpcore queue`` left.
    Signals the entry point held while this process started are carried out as if
    they came now."""
    from smtpcore.server.mailserver import MailServer

    log = logging.getLogger("smtpcore.mail")
    server = MailServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    state = "starting"
    put_off: dict[int, Callable[[], Coroutine[Any, Any, None]]] = {}

    async def reload() -> None:
        """SIGHUP: users, sender aliases and TLS certificates read again."""
        if reread is None:
            return
        try:
            await server.reload(reread())
        except Exception as exc:  # whatever it is, the old configuration serves on
            log.error("reload failed, the old configuration stays: %s", exc)

    def spawn(signum: int, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` for a signal: at once while serving, once started when it came
        during the start, never while stopping (a queue command waits in its file for
        the next start)."""
        if state == "starting":
            put_off[signum] = work
        elif state == "serving":
            task = loop.create_task(work())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        else:
            log.info("stopping: %s ignored", signal.Signals(signum).name)

    handlers: dict[int, Callable[[], None]] = {
        signal.SIGINT: stop.set,
        signal.SIGTERM: stop.set,
        signal.SIGHUP: lambda: spawn(signal.SIGHUP, reload),
        signal.SIGUSR1: lambda: spawn(signal.SIGUSR1, server.run_queue_commands),  # `queue`
    }
    # Handled before start(), which takes the data directory's lock: from then on the
    # queue tool may signal this pid, and SIGUSR1 or SIGHUP unhandled would kill. Kept
    # until the lock is let go, which disk work a stop cut off may put off past aclose()'s
    # return (lock_released, waited for). Handled, too, before the listeners are
    # announced: whoever waits for that line (an init system, a test) may signal at once.
    for signum, handler in handlers.items():
        loop.add_signal_handler(signum, handler)
    for signum in take_early_signals():  # held by the entry point while this started
        handlers[signum]()
    with contextlib.ExitStack() as stopping:  # a second stop signal: at once, to the end
        try:
            try:
                listeners = await server.start()
            except OSError as exc:
                print(f"smtpcore serve: cannot listen: {exc.strerror or exc}", file=sys.stderr)
                return 1
            state = "serving"
            for signum, work in put_off.items():
                spawn(signum, work)
            try:
                _announce(listeners, log)
                if not config.tls and config.host not in ("127.0.0.1", "::1", "localhost"):
                    log.warning(
                        "no TLS: passwords cross the network in the clear (give --tls-cert)"
                    )
                await stop.wait()
            finally:
                state = "stopping"
                # Before the log line, which a full stderr pipe may block on: a second
                # signal must still stop at once, until the lock is let go.
                stopping.enter_context(abort_on_second_signal(loop, log))
                log.info("stopping: sessions and deliveries have %gs to finish", stop_timeout)
                await server.aclose(grace=stop_timeout)
                log.info("stopped")
        finally:
            await server.lock_released()
            for signum in handlers:
                loop.remove_signal_handler(signum)
    return 0


def _announce(listeners: Sequence[object], log: logging.Logger) -> None:
    """The listeners, a line each on standard output. One that cannot be written stops
    the server (:mod:`smtpcore.server.output`), and the log says why before it says
    ``stopping``: a broken pipe is quiet for the shell, not for the operator."""
    try:
        for listener in listeners:
            print(listener, flush=True)
    except OutputLost as lost:
        log.warning("%s: the server stops", lost)
        raise


def run_serve(args: argparse.Namespace) -> int:
    """``serve``: the log set up, the configuration read and checked, then the server run
    until it is stopped."""
    log_to_stderr(getattr(logging, args.log_level.upper()), SERVE_FORMAT)
    config = config_from_args(args)
    warning = None if args.hostname else default_hostname_warning(config.hostname, "--hostname")
    if warning is not None:
        logging.getLogger("smtpcore.mail").warning("%s", warning)
    _fit_open_files_limit(config)
    return asyncio.run(
        _serve(config, stop_timeout=args.stop_timeout, reread=lambda: config_from_args(args))
    )


def _fit_open_files_limit(config: ServerConfig) -> None:
    """Raise the soft ``ulimit -n`` toward the hard one for what the session limits
    need, and warn when it stays short: ``--max-sessions`` is not changed behind the
    operator's back (see :mod:`smtpcore.server.fdlimit`)."""
    from smtpcore.server.fdlimit import descriptors_needed, fit_open_files_limit

    log = logging.getLogger("smtpcore.mail")
    needed = descriptors_needed((name for name, _ in config.listeners()), config.max_sessions)
    limit = fit_open_files_limit(needed)
    if limit.raised:
        log.info("open files limit (ulimit -n) raised from %d to %d", limit.before, limit.after)
    if limit.short:
        log.warning("%s", limit.warning(config.max_sessions))
