"""What a command does when its standard output cannot be written.

Every command's output goes through :func:`watched_stdout`, which turns a failed write
into :class:`OutputLost`: no ``except OSError`` meant for a command's own files (a
queue's ``--data-dir``, a Maildir) can take it for theirs, and :func:`output_lost`
ends the command in one place. A reader that went away (``queue list | head``) is
a broken pipe, the end a process killed by SIGPIPE gets, quietly: status 141, as
the shell shows one; any other failure (a full disk, ``>/dev/full``) is one line on
standard error and status 74 (``EX_IOERR``, as ``sendmail`` uses). Either way,
standard output is then pointed at ``os.devnull``, as the Python documentation
advises for SIGPIPE, so that the interpreter's last flush does not fail again.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO, cast

__all__ = [
    "BROKEN_PIPE_STATUS",
    "OUTPUT_ERROR_STATUS",
    "OutputLost",
    "output_lost",
    "forgiving_stderr",
    "watched_stdout",
]

BROKEN_PIPE_STATUS = 128 + 13
"""A broken pipe: the status the shell gives a process SIGPIPE killed (128 + 13)."""
OUTPUT_ERROR_STATUS = 74
"""Any other write failure: ``EX_IOERR`` of ``sysexits.h``, as ``sendmail`` uses it."""


class OutputLost(Exception):
    """Standard output could not be written; ``error`` says why.

    ``told`` is set by a command that put on standard error what the lost output
    had to say (``send``: each recipient's fate), so that even a broken pipe gets its
    line there: a script must be able to learn that the mail went."""

    def __init__(self, error: OSError) -> None:
        super().__init__(f"cannot write to standard output: {error.strerror or error}")
        self.error = error
        self.told = False

    @property
    def broken_pipe(self) -> bool:
        """The reader went away: the usual end of ``| head``, not a fault."""
        return isinstance(self.error, BrokenPipeError)


class _Watched:
    """``stream`` whose failed writes and flushes raise :class:`OutputLost`; anything
    else asked of it (``encoding``, ``isatty``, ``fileno``) is the stream's."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise OutputLost(exc) from exc

    def writelines(self, lines: Iterable[str]) -> None:
        try:
            self._stream.writelines(lines)
        except OSError as exc:
            raise OutputLost(exc) from exc

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise OutputLost(exc) from exc

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def watched_stdout() -> Iterator[None]:
    """Standard output, for the block, raises :class:`OutputLost` when a write fails;
    what is buffered is flushed before the block ends, so that the failure comes here
    and not in the interpreter's last flush. Once one failed, the stream's descriptor
    is pointed at ``os.devnull``: what is still buffered for it goes nowhere at exit,
    rather than fail a second time (the Python documentation's advice on SIGPIPE). A
    closed standard output (``>&-``, ``sys.stdout`` None) is left alone: ``print``
    writes nothing there."""
    stream = sys.stdout
    if stream is None:
        yield
        return
    sys.stdout = cast(TextIO, _Watched(stream))
    try:
        yield
        sys.stdout.flush()
    except OutputLost:
        _point_at_devnull(stream)
        raise
    finally:
        sys.stdout = stream


class _Forgiving:
    """``stream`` (standard error) whose failed writes and flushes are dropped: once
    one failed, its descriptor points at ``os.devnull``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            _point_at_devnull(self._stream)
            return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            _point_at_devnull(self._stream)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def forgiving_stderr() -> Iterator[None]:
    """Standard error, for the block, drops what it cannot write. It is where a command
    says what went wrong, so when it is lost too (``2>&1 | grep -q``, grep gone) there
    is no one left to tell: a usage error still ends with status 2, a warning does not
    stop ``send`` before it sends, and a broken standard output with 141. Every write to
    standard error, argparse's and the log's included, is covered in this one place."""
    stream = sys.stderr
    if stream is None:
        yield
        return
    sys.stderr = cast(TextIO, _Forgiving(stream))
    try:
        yield
    finally:
        sys.stderr = stream


def output_lost(command: str, lost: OutputLost) -> int:
    """End ``command`` after ``lost``: one line on standard error unless the pipe's
    reader went away and there is nothing to tell; the status."""
    if lost.broken_pipe and not lost.told:
        return BROKEN_PIPE_STATUS
    print(f"smtpcore {command}: {lost}", file=sys.stderr)
    return BROKEN_PIPE_STATUS if lost.broken_pipe else OUTPUT_ERROR_STATUS


def _point_at_devnull(stream: TextIO) -> None:
    """Point ``stream``'s descriptor at ``os.devnull``; a stream with none (a test's
    capture) is left as it is."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)
