"""Fuzz smtpcore's four machines: coverage-guided under atheris, or a pure-Python mutator.

``python -m smtpcore.testing fuzz smtp-server|smtp-client|pop3-server|pop3-client``
feeds one machine inputs made from a seed corpus shipped in the package
(``smtpcore/testing/corpus/<target>/``). Under atheris (``pip install
smtpcore[fuzz]``), libFuzzer mutates them guided by coverage; otherwise a
pure-Python loop mutates them, deterministic for a given ``--seed`` and
bounded by ``--runs`` and ``--seconds``, keeping an input that leads to a
sequence of events it has not seen (a poor man's coverage).

A crash is an exception outside :class:`~smtpcore.ProtocolError` escaping a
machine (or the permissive application driving it), a receive buffer
grown past the piece just fed and the limit the machine puts on the line
under way (its ``max_buffered``, which follows the state), or a
:class:`Hang`: an input that took more events than its length can need, or
longer than its ``timeout``. Each crash is written to a file holding the
input; ``--reproduce FILE`` runs it again.
The input format is one octet giving the size of the pieces the rest is
fed in (0: all at once), then the peer's bytes.

``machine`` (``--machine MODULE:NAME`` on the command line) replaces the
callable that builds the machine, to fuzz a subclass or another
configuration; the test suite plants a defect that way.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

from smtpcore._textsafe import escape_unsafe
from smtpcore.testing._harness import TARGETS, BufferOverrun, Hang, Target

__all__ = [
    "INPUT_TIMEOUT",
    "TARGETS",
    "BufferOverrun",
    "Crash",
    "FuzzResult",
    "Hang",
    "atheris_available",
    "fuzz",
    "mutate",
    "reproduce",
    "run_atheris",
    "seed_corpus",
]

#: Inputs grow no longer than this under the pure mutator.
MAX_INPUT: Final = 16_384
_DIGITS: Final = re.compile(rb"[0-9]+")
#: What a number on the wire is replaced with: the edge cases of number parsers.
_NUMBERS: Final = (
    b"0",
    b"-1",
    b"\xc2\xb2",  # a superscript two: str.isdigit() says yes, int() says no
    b"\xd9\xa1\xd9\xa0",  # ten in Arabic-Indic digits: int() reads them
    b"99999999999999999999999999",
    b"1_0",
    b" 1",
    b"+1",
)
#: The pure mutator keeps at most this many inputs that showed something new.
MAX_CORPUS: Final = 4_096
#: Seconds one input may run before it is a :class:`Hang` (the machines take
#: milliseconds), unless the whole run is given less.
INPUT_TIMEOUT: Final = 10.0


def _input_timeout(seconds: float | None, timeout: float | None) -> float:
    """``timeout``, or :data:`INPUT_TIMEOUT`, or the run's ``seconds`` when shorter
    (but at least one): a hang then ends a bounded run at most that late."""
    if timeout is not None:
        return timeout
    return INPUT_TIMEOUT if seconds is None else min(INPUT_TIMEOUT, max(1.0, seconds))


@dataclass(frozen=True)
class Crash:
    """One input that crashed a machine, and where it was written."""

    target: str
    data: bytes
    error: BaseException
    path: Path | None

    @property
    def signature(self) -> str:
        """The exception type and the innermost frame: one line per distinct bug."""
        frames = traceback.extract_tb(self.error.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        return f"{type(self.error).__name__} at {where}"

    @property
    def message(self) -> str:
        """The exception's text, its control and format characters written as
        backslash escapes (``\\x1b``, ``\\u202e``): it may quote the input, which may
        come from a hostile peer, and it is printed on a terminal."""
        return escape_unsafe(str(self.error))

    def describe(self) -> str:
        """The signature, the message and the traceback, each line escaped as
        :attr:`message` is."""
        shown = "".join(traceback.format_exception(self.error)).rstrip()
        return "\n".join(
            map(escape_unsafe, f"{self.signature}: {self.error}\n{shown}".split("\n"))
        )


@dataclass
class FuzzResult:
    """What a pure-Python fuzzing run did and found."""

    target: str
    runs: int = 0
    corpus_size: int = 0
    crashes: list[Crash] = field(default_factory=list)


def seed_corpus(target: str) -> list[bytes]:
    """The seed inputs shipped for ``target``, in file-name order."""
    folder = resources.files("smtpcore.testing") / "corpus" / target
    entries = sorted((entry for entry in folder.iterdir() if entry.is_file()), key=str)
    return [entry.read_bytes() for entry in entries]


def _target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"no fuzz target {name!r} (known: {', '.join(TARGETS)})") from None


def _write_crash(crash_dir: Path, target: str, data: bytes) -> Path:
    crash_dir.mkdir(parents=True, exist_ok=True)
    path = crash_dir / f"crash-{target}-{hashlib.sha1(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def mutate(
    data: bytes, rng: random.Random, dictionary: Sequence[bytes], others: Sequence[bytes]
) -> bytes:
    """One to four stacked mutations of ``data``: bit flips, tricky bytes, protocol
    words from ``dictionary``, deleted or repeated runs, splices with ``others``,
    a number swapped for a parser's edge case, and a new piece size (the first
    octet)."""
    out = bytearray(data or b"\x00")
    for _ in range(rng.randint(1, 4)):
        operation = rng.randrange(9)
        position = rng.randrange(1, len(out) + 1)
        if operation == 0 and len(out) > 1:
            index = rng.randrange(1, len(out))
            out[index] ^= 1 << rng.randrange(8)
        elif operation == 1:
            token = rng.choice(dictionary)
            out[position:position] = token
        elif operation == 2 and len(out) > 1:
            index = rng.randrange(1, len(out))
            out[index : index + 1] = rng.choice(dictionary[:12])
        elif operation == 3 and len(out) > 2:
            start = rng.randrange(1, len(out))
            del out[start : start + rng.randint(1, 16)]
        elif operation == 4 and len(out) > 2:
            start = rng.randrange(1, len(out))
            run = out[start : start + rng.randint(1, 64)]
            out[position:position] = run * rng.randint(1, 4)
        elif operation == 5 and others:
            other = rng.choice(others)
            cut = rng.randrange(1, max(len(other), 2))
            out[position:] = other[cut:]
        elif operation == 6:
            out[0] = rng.choice((0, 1, 2, 3, 5, 7, 13, 64, rng.randrange(256)))
        elif operation == 7:
            numbers = [m.span() for m in _DIGITS.finditer(out, 1)]
            if numbers:
                start, end = rng.choice(numbers)
                out[start:end] = rng.choice(_NUMBERS)
        else:
            out[position:position] = bytes([rng.randrange(256)])
    return bytes(out[:MAX_INPUT])


def _traced(factory: Callable[[], Any], seen: set[tuple[str, str]]) -> Callable[[], Any]:
    """``factory``, its machines recording each (event, state) step after the one before:
    the pure loop's coverage, coarse enough that a mutant must do something new."""

    def build() -> Any:
        conn = factory()
        original = conn.next_event
        previous = ["start"]

        def recording() -> Any:
            event = original()
            step = f"{type(event).__name__}@{conn.state.name}"
            seen.add((previous[0], step))
            previous[0] = step
            return event

        setattr(conn, "next_event", recording)  # noqa: B010  # an instance attribute
        return conn

    return build


def fuzz(
    target: str,
    *,
    runs: int | None = 10_000,
    seconds: float | None = None,
    seed: int = 0,
    crash_dir: Path | str = ".",
    machine: Callable[[], Any] | None = None,
    corpus: Sequence[bytes] | None = None,
    stop_on_crash: bool = False,
    on_crash: Callable[[Crash], None] | None = None,
    timeout: float | None = None,
) -> FuzzResult:
    """Fuzz ``target`` with the pure-Python mutator; write each new crash to ``crash_dir``.

    Runs ``runs`` inputs or for ``seconds``, whichever ends first (at least
    one must be given). The same ``seed``, corpus and ``runs`` give the same
    inputs in the same order. One file is written per distinct crash (the
    exception type and where it was raised).

    ``seconds`` is looked at between inputs; one input runs at most
    ``timeout`` seconds (:data:`INPUT_TIMEOUT`, or ``seconds`` when shorter,
    at least one), then it is a :class:`Hang`, written like any crash. The
    time limit needs the main thread of a POSIX process (``SIGALRM``); the
    limit on events per octet, which catches a machine going round without
    reading, holds everywhere.
    """
    if runs is None and seconds is None:
        raise ValueError("give runs or seconds (or both)")
    spec = _target(target)
    rng = random.Random(seed)
    pool = list(corpus if corpus is not None else seed_corpus(target))
    if not pool:
        pool = [b"\x00"]
    result = FuzzResult(target)
    covered: set[tuple[str, str]] = set()
    known: set[str] = set()
    limit = _input_timeout(seconds, timeout)
    deadline = None if seconds is None else time.monotonic() + seconds
    queue = list(pool)  # the seeds run first, unmutated
    while (runs is None or result.runs < runs) and (
        deadline is None or time.monotonic() < deadline
    ):
        data = queue.pop(0) if queue else mutate(rng.choice(pool), rng, spec.dictionary, pool)
        result.runs += 1
        steps: set[tuple[str, str]] = set()
        error = spec.run(data, _traced(machine or spec.machine, steps), timeout=limit)
        if error is not None:
            crash = Crash(target, data, error, None)
            if crash.signature in known:
                continue
            known.add(crash.signature)
            crash = Crash(target, data, error, _write_crash(Path(crash_dir), target, data))
            result.crashes.append(crash)
            if on_crash is not None:
                on_crash(crash)
            if stop_on_crash:
                break
            continue
        if not steps <= covered:
            covered |= steps
            if len(pool) < MAX_CORPUS:
                pool.append(data)
    result.corpus_size = len(pool)
    return result


def reproduce(
    target: str,
    path: Path | str,
    *,
    machine: Callable[[], Any] | None = None,
    timeout: float = INPUT_TIMEOUT,
) -> Crash | None:
    """Run the input in ``path`` once, for at most ``timeout`` seconds: the crash
    it causes (a :class:`Hang` past the limit), or None."""
    data = Path(path).read_bytes()
    error = _target(target).run(data, machine, timeout=timeout)
    return None if error is None else Crash(target, data, error, Path(path))


def atheris_available() -> bool:
    """Whether atheris (the ``fuzz`` extra) can be imported, for ``--engine auto``."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def _instrument(atheris: Any, packages: set[str]) -> None:
    """Coverage for the code under test only: atheris's instrument_all() would patch
    every function loaded (thousands, minutes on a busy machine) for no gain."""
    import gc
    import types

    for obj in gc.get_objects():
        module = getattr(obj, "__module__", None) if isinstance(obj, types.FunctionType) else None
        if isinstance(module, str) and (module in packages or module.split(".")[0] in packages):
            atheris.instrument_func(obj)


def run_atheris(
    target: str,
    *,
    runs: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    crash_dir: Path | str = ".",
    corpus_dir: Path | str | None = None,
    machine: Callable[[], Any] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float | None = None,
) -> None:
    """Fuzz ``target`` under atheris (libFuzzer); does not return when it finds a crash.

    libFuzzer writes the crashing input to ``crash_dir`` (as ``crash-<sha1>``)
    and exits; the seed corpus is copied to ``corpus_dir`` (a fresh
    directory under ``crash_dir`` by default), where libFuzzer also keeps
    the inputs that found new coverage. An input still running after
    ``timeout`` seconds (as for :func:`fuzz`, rounded up to whole seconds)
    is libFuzzer's ``-timeout``: it writes ``timeout-<sha1>`` and exits.
    """
    import sys

    import atheris

    spec = _target(target)
    crash_path = Path(crash_dir)
    crash_path.mkdir(parents=True, exist_ok=True)
    corpus_path = Path(corpus_dir) if corpus_dir is not None else crash_path / f"corpus-{target}"
    corpus_path.mkdir(parents=True, exist_ok=True)
    for data in seed_corpus(target):
        (corpus_path / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)

    def one_input(data: bytes) -> None:
        error = spec.run(data, machine)
        if error is not None:
            raise error

    args = [sys.argv[0], f"-artifact_prefix={crash_path}/"]
    if seed:
        args.append(f"-seed={seed}")  # libFuzzer picks one for 0
    args += [f"-max_len={MAX_INPUT}"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={max(1, int(seconds))}")
    args.append(f"-timeout={math.ceil(_input_timeout(seconds, timeout))}")
    args += [*extra_args, str(corpus_path)]
    _instrument(atheris, {"smtpcore", getattr(machine, "__module__", "smtpcore")})
    atheris.Setup(args, one_input)
    atheris.Fuzz()
