"""``python -m smtpcore.testing``: check an SMTP server, or fuzz smtpcore's machines.

``check HOST:PORT`` runs :mod:`smtpcore.testing.check`'s battery and prints
a report; the exit status is 0 when no check failed and one at least passed,
1 when a check failed, 3, with one line saying why, when the first connection
failed (no server was reached), and 4 when every check was skipped (nothing
was tested), as when the server is an LMTP one (it refuses EHLO and takes
LHLO: the run stops there, saying so, whatever a check before it found).
With ``--stored-maildir DIR`` (or ``--stored-dir DIR``, one file per message)
``pipelined-end`` also looks for each message it sent among the files that came
into DIR during the run (:mod:`smtpcore.testing._stored_files`).

``check-pop3 HOST:PORT --user U`` runs :mod:`smtpcore.testing.check_pop3`'s
battery, logged in as U with a password taken as ``python -m smtpcore send``
and ``fetch`` take theirs (:mod:`smtpcore.server.passwords`): from
``--password-file``, ``SMTPCORE_PASSWORD`` or a prompt, or, with a warning,
``--password``; the exit statuses are ``check``'s. With ``--deliver-via
HOST:PORT`` it first submits test messages over SMTP to the mailbox checked
(``--deliver-to``, ``--deliver-user``, ``--deliver-password-file``,
``--deliver-wait``, ``--delete-delivered``): see ``delivered-intact``.

``fuzz TARGET`` fuzzes one machine (:mod:`smtpcore.testing.fuzz`) under
atheris when it is installed, else with the pure-Python mutator; the exit
status is 1 when the pure mutator found a crash, and libFuzzer's own when
atheris did (77 for a crash, 70 for an input past ``--timeout``).
``fuzz TARGET --reproduce FILE`` runs one crash file again.

A bad argument (a host name with an empty label or one over 63 octets, a port
outside 1 to 65535, a timeout that is not a positive number, a ``--machine``
that cannot be loaded, a missing ``--reproduce`` file, a ``--stored-maildir``
that is no readable Maildir) is a one-line usage
error with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smtpcore.testing._wire import checked_host

if TYPE_CHECKING:
    from smtpcore.testing._battery import CheckReport

__all__ = ["main"]

T = TypeVar("T")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    if len(port) > 5 or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be 1 to 65535")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        # In ::1:25 the port cannot be told from the address's last group.
        raise argparse.ArgumentTypeError(
            f"{text!r}: write an IPv6 address with a port in brackets, as [::1]:25"
        )
    try:
        # A usage error, not a traceback mid-run.
        return checked_host(host.strip("[]")), int(port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _wire_word(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argument type that refuses what ``check`` refuses, as a usage error."""

    def checked(text: str) -> T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _machine(spec: str) -> Callable[[], Any]:
    """The callable ``MODULE:NAME`` names, imported now, so that a typo is a usage error."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise argparse.ArgumentTypeError(f"{spec!r} is not MODULE:NAME")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise argparse.ArgumentTypeError(f"cannot import {module_name!r}: {exc}") from None
    factory: Callable[[], Any] | None = getattr(module, name, None)
    if not callable(factory):
        raise argparse.ArgumentTypeError(f"{module_name!r} has no callable {name!r}")
    return factory


def _crash_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path


def _parser() -> argparse.ArgumentParser:
    from smtpcore.testing.check import CHECKS, checked_helo, checked_mailbox

    parser = argparse.ArgumentParser(
        prog="python -m smtpcore.testing",
        description="Check an SMTP server for smuggling, pipelining, STARTTLS and limit "
        "bugs, or fuzz smtpcore's machines.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="run the check battery against HOST:PORT",
        description="Run the check battery against the SMTP server at HOST:PORT. "
        "It sends a few small messages to --recipient: use a sink address. "
        f"The checks, in the order they run: {', '.join(CHECKS)}.",
        epilog="exit status: 0 when no check failed and one at least passed, 1 when one "
        "failed, 2 for a bad argument, 3 when the server could not be reached (the first "
        "connection failed), 4 when every check was skipped (nothing was tested), as "
        "when the server is an LMTP server (it refuses EHLO and takes LHLO), whatever a "
        "check before found.",
    )
    check.add_argument("address", type=_address, metavar="HOST:PORT")
    check.add_argument(
        "--recipient",
        type=_wire_word(lambda text: checked_mailbox("recipient", text, postmaster=True)),
        default="postmaster@smtpcore.test",
        help="a mailbox the server accepts, a sink, or postmaster with no domain "
        "(default: postmaster@smtpcore.test)",
    )
    check.add_argument(
        "--sender",
        type=_wire_word(lambda text: checked_mailbox("sender", text, null=True)),
        default="check@smtpcore.test",
        help="the MAIL FROM mailbox; empty for the null path (default: check@smtpcore.test)",
    )
    check.add_argument(
        "--helo",
        type=_wire_word(checked_helo),
        default="check.smtpcore.test",
        help="the EHLO domain (default: check.smtpcore.test)",
    )
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="seconds each wait may take: a whole reply, a write, the server closing",
    )
    check.add_argument("--seed", type=int, default=0, help="seed of the random chunkings")
    check.add_argument(
        "--only",
        action="append",
        choices=list(CHECKS),
        metavar="NAME",
        help=f"run only NAME (repeatable): one of {', '.join(CHECKS)}",
    )
    check.add_argument(
        "--no-transcripts", action="store_true", help="do not print failures' transcripts"
    )
    _add_stored_options(check)
    _add_pop3_parser(commands)
    from smtpcore.testing.fuzz import TARGETS

    fuzz = commands.add_parser(
        "fuzz",
        help="fuzz one of smtpcore's machines",
        description="Fuzz a machine with the seed corpus shipped in the package: under "
        "atheris when it is installed (coverage-guided), else with a pure-Python mutator "
        "(deterministic for a seed). Crashing inputs are written to --crash-dir.",
    )
    fuzz.add_argument("target", choices=list(TARGETS))
    fuzz.add_argument("--runs", type=_count, help="inputs to try (pure, without --seconds: 10000)")
    fuzz.add_argument("--seconds", type=_seconds, help="stop after this long")
    fuzz.add_argument(
        "--timeout",
        type=_seconds,
        help="seconds one input may run before it is a hang, a crash "
        "(default: 10, or --seconds when shorter, at least 1)",
    )
    fuzz.add_argument(
        "--seed", type=int, default=0, help="of the pure mutator; under atheris, 0 lets it pick"
    )
    fuzz.add_argument("--crash-dir", default=".", help="where crash files go (default: .)")
    fuzz.add_argument(
        "--engine",
        choices=("auto", "atheris", "pure"),
        default="auto",
        help="auto: atheris if installed, else pure",
    )
    fuzz.add_argument(
        "--machine",
        type=_machine,
        metavar="MODULE:NAME",
        help="a callable that builds the machine to fuzz (a subclass, other options)",
    )
    fuzz.add_argument(
        "--reproduce", type=_crash_file, metavar="FILE", help="run one crash file and report"
    )
    return parser


def _add_stored_options(check: argparse.ArgumentParser) -> None:
    """Where ``pipelined-end`` sees what the server stored: without one, a message the
    server answered 250 and lost passes."""
    from smtpcore.testing._stored_files import maildir_folders, message_folders

    stored = check.add_mutually_exclusive_group()
    stored.add_argument(
        "--stored-maildir",
        type=_wire_word(maildir_folders),
        metavar="DIR",
        help="the Maildir that --recipient's mail goes to (DIR/new and DIR/cur): "
        "pipelined-end looks there for each message it sent, not only at the 250",
    )
    stored.add_argument(
        "--stored-dir",
        type=_wire_word(message_folders),
        metavar="DIR",
        help="as --stored-maildir, for a directory of one file per message",
    )


def _login_word(text: str) -> str:
    if not text or any(c in text for c in "\r\n\0") or not _utf8(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a non-empty UTF-8 word without CR, LF or NUL"
        )
    return text


def _password_word(text: str) -> str:
    """A password that can go on the wire; a refusal never repeats it."""
    if not text or any(c in text for c in "\r\n\0"):
        raise argparse.ArgumentTypeError("the password is empty or holds a CR, LF or NUL")
    if not _utf8(text):
        raise argparse.ArgumentTypeError("the password holds an octet that is not UTF-8")
    return text


def _utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8 on the wire: an argument with an octet that is not
    (a lone surrogate, as Python decodes it from argv) cannot be sent, as PASS or
    SASL sends a credential in UTF-8 (RFC 4616 §2, RFC 6856 §2)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _add_pop3_parser(commands: Any) -> None:
    from smtpcore.testing.check_pop3 import POP3_CHECKS

    check = commands.add_parser(
        "check-pop3",
        help="run the POP3 check battery against HOST:PORT",
        description="Run the POP3 check battery against the server at HOST:PORT, logged in "
        "as --user. Put one message in the mailbox at least; no message is deleted: a "
        "session that sent RETR, TOP or DELE ends after RSET without QUIT, which deletes "
        f"nothing. The checks, in the order they run: {', '.join(POP3_CHECKS)}.",
        epilog="exit status: 0 when no check failed and one at least passed, 1 when one "
        "failed, 2 for a bad argument, 3 when the server could not be reached (the first "
        "connection failed), 4 when every check was skipped (nothing was tested).",
    )
    # A password refused after parsing is a usage error of check-pop3's, not the top level's.
    check.set_defaults(own_parser=check)
    check.add_argument("address", type=_address, metavar="HOST:PORT")
    check.add_argument("--user", type=_login_word, required=True, help="the user to log in as")
    from smtpcore.server.passwords import add_password_options

    add_password_options(check.add_mutually_exclusive_group())
    check.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        help="seconds each wait may take: a whole line, a write, the server closing",
    )
    _add_delivery_options(check)
    check.add_argument(
        "--only",
        action="append",
        choices=list(POP3_CHECKS),
        metavar="NAME",
        help=f"run only NAME (repeatable): one of {', '.join(POP3_CHECKS)}",
    )
    check.add_argument(
        "--no-transcripts", action="store_true", help="do not print failures' transcripts"
    )


def _add_delivery_options(check: argparse.ArgumentParser) -> None:
    """The options of ``delivered-intact``: where to submit its test messages over SMTP."""
    deliver = check.add_argument_group(
        "delivery over SMTP",
        "Submit test messages (dot lines, a last line the SMTP client ends, 998-octet lines, "
        "8-bit octets) over SMTP before the checks; delivered-intact compares what POP3 gives "
        "back.",
    )
    deliver.add_argument(
        "--deliver-via",
        type=_address,
        metavar="HOST:PORT",
        help="the SMTP server that delivers into the mailbox checked",
    )
    deliver.add_argument(
        "--deliver-to", metavar="MAILBOX", help="the recipient (default: the --user)"
    )
    deliver.add_argument("--deliver-user", type=_login_word, help="log in to SMTP with AUTH")
    deliver.add_argument(
        "--deliver-password", metavar="PW", help="shows in ps: prefer --deliver-password-file"
    )
    deliver.add_argument(
        "--deliver-password-file",
        type=Path,
        metavar="FILE",
        help="read --deliver-user's password from FILE's first line (else a prompt)",
    )
    deliver.add_argument(
        "--deliver-wait",
        type=_seconds,
        default=10.0,
        help="seconds to wait for the messages to arrive in the mailbox (default: 10; at "
        "most 600)",
    )
    deliver.add_argument(
        "--delete-delivered",
        action="store_true",
        help="delete the delivered test messages, and only them, after the checks "
        "(DELE by unique-id, then QUIT); by default they are left in the mailbox",
    )


def _fuzz(args: argparse.Namespace) -> int:
    from smtpcore.testing import fuzz

    machine = args.machine
    if args.reproduce:
        timeout = fuzz.INPUT_TIMEOUT if args.timeout is None else args.timeout
        crash = fuzz.reproduce(args.target, args.reproduce, machine=machine, timeout=timeout)
        if crash is None:
            print(f"{args.reproduce}: no crash")
            return 0
        print(f"{args.reproduce}: reproduced {crash.describe()}")
        return 1
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if fuzz.atheris_available() else "pure"
    if engine == "atheris":
        fuzz.run_atheris(
            args.target,
            runs=args.runs,
            seconds=args.seconds,
            seed=args.seed,
            crash_dir=args.crash_dir,
            machine=machine,
            timeout=args.timeout,
        )
        return 0
    runs = args.runs if args.runs is not None or args.seconds is not None else 10_000

    def report(crash: fuzz.Crash) -> None:
        print(f"crash: {crash.signature}, written to {crash.path}", flush=True)

    result = fuzz.fuzz(
        args.target,
        runs=runs,
        seconds=args.seconds,
        seed=args.seed,
        crash_dir=args.crash_dir,
        machine=machine,
        on_crash=report,
        timeout=args.timeout,
    )
    print(
        f"{result.target}: {result.runs} inputs, corpus of {result.corpus_size}, "
        f"{len(result.crashes)} crash(es)"
    )
    for crash in result.crashes:
        print(f"  {crash.path}: {crash.signature}: {crash.message}")
    return 1 if result.crashes else 0


UNREACHABLE: Final = 3
"""The exit status of a check run that reached no server (its first connection failed)."""

NOTHING_TESTED: Final = 4
"""The exit status of a check run whose every check was skipped: no failure, and no
pass either (pytest's "no tests ran" is likewise no success)."""


def _status(report: CheckReport) -> int:
    """A check run's exit status: :data:`NOTHING_TESTED` (with a line on stderr) when
    the run stopped (an LMTP server: the battery's checks are not for it, so what a
    check before found says little of it), 1 when a check failed,
    :data:`NOTHING_TESTED` when every one was skipped, else 0."""
    if report.stopped:
        print(f"nothing was tested: {report.stopped}", file=sys.stderr)
        return NOTHING_TESTED
    if not report.ok:
        return 1
    if not report.tested:
        print("nothing was tested: every check was skipped (see why above)", file=sys.stderr)
        return NOTHING_TESTED
    return 0


def _check(args: argparse.Namespace) -> int:
    from smtpcore.testing._stored_files import StoredFiles
    from smtpcore.testing.check import ServerUnreachable, check_server

    host, port = args.address
    stored = None
    if args.stored_maildir is not None:
        stored = StoredFiles(args.stored_maildir, maildir=True)
    elif args.stored_dir is not None:
        stored = StoredFiles(args.stored_dir, maildir=False)
    try:
        report = check_server(
            host,
            port,
            checks=args.only,
            helo=args.helo,
            sender=args.sender,
            recipient=args.recipient,
            timeout=args.timeout,
            seed=args.seed,
            stored=stored,
        )
    except ServerUnreachable as exc:
        print(exc, file=sys.stderr)
        return UNREACHABLE
    print(report.format(transcripts=not args.no_transcripts))
    return _status(report)


def _password(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The password, from where ``send`` and ``fetch`` take theirs; an error names
    where it came from, never the password."""
    from smtpcore.server.config import ConfigError
    from smtpcore.server.passwords import read_password

    try:
        secret = read_password(
            given=args.password, password_file=args.password_file, user=args.user
        )
        return _password_word(secret)
    except (ConfigError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc))


def _delivery_needs_via(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a delivery option without ``--deliver-via`` before any password prompt: it
    would be ignored, and ``--only delivered-intact`` would skip without a connection;
    and a delivery password without ``--deliver-user``, which nothing would send."""
    given = {
        "--only delivered-intact": "delivered-intact" in (args.only or ()),
        "--deliver-to": args.deliver_to is not None,
        "--deliver-user": args.deliver_user is not None,
        "--deliver-password": args.deliver_password is not None,
        "--deliver-password-file": args.deliver_password_file is not None,
        "--delete-delivered": args.delete_delivered,
    }
    asked = [option for option, present in given.items() if present]
    if args.deliver_via is None and asked:
        parser.error(f"{', '.join(asked)} needs --deliver-via HOST:PORT")
    if args.deliver_user is None and (
        given["--deliver-password"] or given["--deliver-password-file"]
    ):
        parser.error("a delivery password needs --deliver-user")


def _deliver_password(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The SMTP AUTH password of ``--deliver-user``, taken as the POP3 one is but for the
    environment variable, which holds the POP3 user's; None without ``--deliver-user``."""
    from smtpcore.server.config import ConfigError
    from smtpcore.server.passwords import read_password

    if args.deliver_user is None:
        return None
    try:
        secret = read_password(
            given=args.deliver_password,
            password_file=args.deliver_password_file,
            user=args.deliver_user,
            environ=None,
        )
        return _password_word(secret)
    except (ConfigError, argparse.ArgumentTypeError) as exc:
        parser.error(str(exc).replace("--password", "--deliver-password"))


def _arguments_checked(args: argparse.Namespace) -> None:
    """Refuse every argument that needs no password before any is read: a user asked
    for two passwords should not learn only then that --deliver-wait was wrong."""
    from smtpcore.testing.check_pop3 import check_pop3_arguments

    host, port = args.address
    try:
        check_pop3_arguments(
            host,
            port,
            user=args.user,
            checks=args.only,
            timeout=args.timeout,
            pause=0.002,
            deliver_via=args.deliver_via,
            deliver_to=args.deliver_to,
            deliver_wait=args.deliver_wait,
        )
    except ValueError as exc:
        args.own_parser.error(str(exc))


def _check_pop3(args: argparse.Namespace, password: str, deliver_password: str | None) -> int:
    from smtpcore.testing.check_pop3 import ServerUnreachable, pop3_run, run_pop3_checks

    host, port = args.address
    try:
        run = pop3_run(
            host,
            port,
            user=args.user,
            password=password,
            checks=args.only,
            timeout=args.timeout,
            pause=0.002,
            tls_context=None,
            deliver_via=args.deliver_via,
            deliver_to=args.deliver_to,
            deliver_user=args.deliver_user,
            deliver_password=deliver_password,
            deliver_wait=args.deliver_wait,
            delete_delivered=args.delete_delivered,
        )
    except ValueError as exc:
        args.own_parser.error(str(exc))
    try:
        report = run_pop3_checks(run)
    except ServerUnreachable as exc:
        print(exc, file=sys.stderr)
        return UNREACHABLE
    print(report.format(transcripts=not args.no_transcripts))
    return _status(report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "fuzz":
        return _fuzz(args)
    if args.command == "check-pop3":
        _delivery_needs_via(args.own_parser, args)
        _arguments_checked(args)
        password = _password(args.own_parser, args)
        return _check_pop3(args, password, _deliver_password(args.own_parser, args))
    return _check(args)


if __name__ == "__main__":
    sys.exit(main())
