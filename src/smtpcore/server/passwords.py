"""Passwords for ``send``, ``fetch`` and ``hash-password``, kept off the command line.

Whatever is on a command line shows in ``ps`` to every user of the machine.
So a password comes, in this order, from ``--password-file`` (its first
line), the ``SMTPCORE_PASSWORD`` environment variable, or a prompt when
standard input is a terminal; ``--password`` still works, with a warning.
End of file at the prompt (Ctrl-D) is no password: one line, as the CLI's other
mistakes, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from smtpcore.server.config import ConfigError

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "ARGV_WARNING",
    "add_password_options",
    "ask_password",
    "read_password",
]

ENVIRONMENT_VARIABLE = "SMTPCORE_PASSWORD"
ARGV_WARNING = (
    "warning: a password on the command line shows in `ps` to every user of this "
    "machine; use --password-file, the SMTPCORE_PASSWORD environment variable or the prompt"
)


def add_password_options(options: argparse._ActionsContainer) -> None:
    """``--password`` and ``--password-file`` on a command's parser (or on a group of
    it), as :func:`read_password` takes them: one wording for every command that
    logs in."""
    options.add_argument(
        "--password", metavar="PW", help="shows in ps: prefer --password-file or the prompt"
    )
    options.add_argument(
        "--password-file",
        type=Path,
        metavar="FILE",
        help="read the password from FILE's first line (else $SMTPCORE_PASSWORD, else a prompt)",
    )


def ask_password(text: str, prompt: Callable[[str], str] | None = None) -> str:
    """What the user types at the prompt ``text`` (``getpass`` unless ``prompt`` is
    given); end of file there is a :class:`ConfigError`, for getpass raises EOFError."""
    try:
        return (prompt or getpass.getpass)(text)
    except EOFError:
        raise ConfigError("no password given") from None


def read_password(
    *,
    given: str | None,
    password_file: Path | None,
    user: str,
    environ: Mapping[str, str] | None = os.environ,
    interactive: Callable[[], bool] = lambda: sys.stdin.isatty(),
    prompt: Callable[[str], str] | None = None,
    warn: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> str:
    """The password for ``user``, from where the module docstring says (``prompt``:
    ``getpass`` when None; ``environ`` None: a password no environment variable
    holds, which the advice for a missing one then leaves out)."""
    if given is not None:
        warn(f"smtpcore: {ARGV_WARNING}")
        return given
    if password_file is not None:
        try:
            # utf-8-sig: a byte order mark at the start (Notepad's) is no part of the password.
            text = password_file.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise ConfigError(
                f"--password-file: cannot read {password_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"--password-file: {password_file} is not UTF-8 ({exc.reason})"
            ) from None
        # The first line ends at LF only: str.splitlines would also cut at U+2028 or \f.
        password = text.partition("\n")[0].removesuffix("\r")
        if not password:
            raise ConfigError(f"--password-file: {password_file} is empty")
        return password
    if environ is not None and environ.get(ENVIRONMENT_VARIABLE):
        return environ[ENVIRONMENT_VARIABLE]
    if interactive():
        return ask_password(f"Password for {user}: ", prompt)
    variable = f"set {ENVIRONMENT_VARIABLE}, " if environ is not None else ""
    raise ConfigError(
        f"no password for {user}: give --password-file FILE, {variable}"
        "or run on a terminal to be asked"
    )
