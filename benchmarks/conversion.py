"""CPU of the relay's 8-bit to 7-bit conversion a megabyte, by the shape of the message.

    .venv/bin/python benchmarks/conversion.py [--rounds 5] [--size 1000000] [--only tiny,...]

The relay converts an 8BITMIME message for an exchanger that does not offer it (RFC
6152 §3): ``plan_seven_bit`` reads the queue file through once, then a
``SevenBitReader`` reads it again, writing the 7-bit form in the 64 KiB reads the
relay's worker thread makes (``_exchanger_content._seven_bit_message``). Each shape is
built to about ``--size`` octets, written to a temporary file, and converted whole (plan
and write) ``--rounds`` times, each with the module's caches emptied; the table gives
the CPU seconds a megabyte (``time.process_time``, min / median / max over the
rounds) and the median a message, the Python calls a megabyte (a ``sys.setprofile``
counter over one more conversion: exact, and deaf to the machine's load) and the
MIME parts the message holds. Each costs as much on every
delivery attempt, so a shape that costs much more than ordinary mail is a way to spend
the relay's CPU. A shape with no 7-bit form (over a limit) says so in place of figures,
and a shape with more parts than ``MAX_PARTS`` gets a second row, ``at the limit``: as
many of its parts as the conversion takes, the most CPU it can cost a message.

The shapes:

* ``text``: one text part of 78-octet lines, one in four with 8-bit octets;
* ``long``: one text part of 5,000-octet lines with 8-bit octets (over the 998 a
  7-bit hop takes, so quoted-printable however short their 8-bit share);
* ``tiny``: a multipart of parts of a boundary line, a ``Content-Type`` field, the
  empty line and one 8-bit line;
* ``tiny-nofield``: the same, each part's "header" a line that is no field (which ends
  it, with no empty line), then one 8-bit line;
* ``nested``: chains of multiparts nested to the nesting limit, each with its own
  boundary, a tiny 8-bit leaf at the bottom, repeated;
* ``dashes``: one 8-bit part of a multipart whose lines start with ``--`` and are no
  delimiter (a boundary with more after it), each read on its own;
* ``comments``: parts whose ``Content-Transfer-Encoding`` is 8 KB of nested comments,
  folded over ten lines, different in each part;
* ``short-dashes``: one 8-bit part of a multipart, of lines ``--`` (a delimiter's start,
  and no delimiter);
* ``header-fields``: one part whose header is ``X:`` fields, one 8-bit body line;
* ``continuation``: one part whose header is one field of continuation lines `` a``;
* ``bare-lf``: one text part of ``a`` and a bare LF (a lenient queue's), each LF
  cutting a piece;
* ``bare-lf-32``: the same of 31 ``a`` and a bare LF, pieces long enough to pay for
  themselves (``MAX_PIECES`` counts a body's pieces less one for each 32 octets);
* ``padded-dashes``: one 8-bit part of a multipart, of lines ``--``, 990 spaces and
  ``x`` (no delimiter, all padding to its last octet).

Header lines and bare-LF pieces are pieces the conversion reads one at a time, bounded
by ``MAX_PIECES``: a shape with more gets its ``at the limit`` row too.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from smtpcore.server.downgrade import (
    MAX_NESTING,
    MAX_PARTS,
    MAX_PIECES,
    NotConvertible,
    SevenBitReader,
    plan_seven_bit,
)

RELAY_READ = 65536
"""What the relay's worker thread reads of the 7-bit form at a time (``_OFF_LOOP_READ``)."""

HEADER = b"From: john@abc.example\r\nTo: jane@pqr.example\r\nSubject: benchmark\r\n"
EIGHT_BIT_LINE = "Grüße aus Köln, à bientôt, señor: ".encode() * 2 + b"fin"


def _multipart(parts: Callable[[int], bytes], size: int, boundary: bytes = b"b") -> bytes:
    """A multipart of ``parts(index)`` bodies until ``size`` octets, and how many."""
    head = HEADER + b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="
    pieces = [head + boundary + b"\r\n\r\n"]
    total = len(pieces[0])
    index = 0
    while total < size:
        piece = b"--" + boundary + b"\r\n" + parts(index) + b"\r\n"
        pieces.append(piece)
        total += len(piece)
        index += 1
    pieces.append(b"--" + boundary + b"--\r\n")
    return b"".join(pieces)


def text(size: int) -> bytes:
    plain = b"x" * 76
    lines = [HEADER + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"]
    total = len(lines[0])
    index = 0
    while total < size:
        line = EIGHT_BIT_LINE if index % 4 == 0 else plain
        lines.append(line)
        total += len(line) + 2
        index += 1
    return b"\r\n".join(lines) + b"\r\n"


def long_lines(size: int) -> bytes:
    line = (EIGHT_BIT_LINE + b" " + b"y" * 60) * 50
    head = HEADER + b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    return head + (line[:5000] + b"\r\n") * (size // 5002 + 1)


def tiny(size: int) -> bytes:
    return _multipart(lambda _: b"Content-Type: text/plain\r\n\r\n\xc3\xa9", size)


def tiny_nofield(size: int) -> bytes:
    return _multipart(lambda _: b"no field here\r\n\xc3\xa9", size)


def nested(size: int) -> bytes:
    """Chains of multiparts nested to the limit: the top is depth 0, each level one more."""
    depth = MAX_NESTING - 1  # the chain's multiparts; the leaf at the bottom is the limit

    def chain(_: int) -> bytes:
        opening = b"".join(
            b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (level, level)
            for level in range(depth)
        )
        closing = b"".join(b"\r\n--n%d--" % level for level in reversed(range(depth)))
        return opening + b"\r\n\xc3\xa9" + closing

    return _multipart(chain, size)


def dashes(size: int) -> bytes:
    lines = [b"--b" + b"x" * (index % 40) + b" \xc3\xa9 not a delimiter" for index in range(64)]
    body = b"\r\n".join(lines)
    return _multipart(lambda _: b"Content-Type: text/plain\r\n\r\n" + body, size)


def comments(size: int) -> bytes:
    """Parts whose encoding field is 8 KB of nested comments, folded, each its own."""

    def part(index: int) -> bytes:
        line = b"(%d)" % index + b"(a)" * 260
        folded = b"\r\n ".join([line] * 10)
        return b"Content-Transfer-Encoding: (" + folded + b") 8bit\r\n\r\n\xc3\xa9"

    return _multipart(part, size)


def short_dashes(size: int) -> bytes:
    return _multipart(lambda _: b"\r\n\xc3\xa9\r\n" + b"--\r\n" * (size // 4) + b"x", size)


ONE_PART = HEADER + b"MIME-Version: 1.0\r\n"


def header_fields(size: int) -> bytes:
    return ONE_PART + b"X:\r\n" * (size // 4) + b"\r\n\xc3\xa9\r\n"


def continuation(size: int) -> bytes:
    return ONE_PART + b"X: a\r\n" + b" a\r\n" * (size // 4) + b"\r\n\xc3\xa9\r\n"


def bare_lf(size: int) -> bytes:
    return ONE_PART + b"\r\n\xc3\xa9\r\n" + b"a\n" * (size // 2) + b"\r\n"


def bare_lf_32(size: int) -> bytes:
    return ONE_PART + b"\r\n\xc3\xa9\r\n" + (b"a" * 31 + b"\n") * (size // 32) + b"\r\n"


def padded_dashes(size: int) -> bytes:
    line = b"--" + b" " * 990 + b"x\r\n"
    return _multipart(lambda _: b"\r\n\xc3\xa9\r\n" + line * (size // len(line)) + b"x", size)


PIECE_OCTETS: dict[str, int] = {"header-fields": 4, "continuation": 4, "bare-lf": 2}
"""The octets of each piece read alone (``MAX_PIECES`` counts them) in these shapes."""

BODY_PIECES = {"bare-lf"}
"""The shapes whose pieces are a body's: they count less one for each 32 octets."""


SHAPES: dict[str, Callable[[int], bytes]] = {
    "text": text,
    "long": long_lines,
    "tiny": tiny,
    "tiny-nofield": tiny_nofield,
    "nested": nested,
    "dashes": dashes,
    "comments": comments,
    "short-dashes": short_dashes,
    "header-fields": header_fields,
    "continuation": continuation,
    "bare-lf": bare_lf,
    "bare-lf-32": bare_lf_32,
    "padded-dashes": padded_dashes,
}


def convert(path: str) -> int:
    """Plan and write the 7-bit form as the relay does; its length."""
    with open(path, "rb") as file:
        plan = plan_seven_bit(file)
    written = 0
    with SevenBitReader(lambda: open(path, "rb"), plan) as reader:
        while piece := reader.read(RELAY_READ):
            written += len(piece)
    assert written == plan.size
    return written


def forget_caches() -> None:
    """Each round converts as a first attempt does, with no field reading remembered
    from the round before (the server's other mail takes the caches' places)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("smtpcore.server"):
            for value in vars(module).values():
                if isinstance(value, functools._lru_cache_wrapper):
                    value.cache_clear()


def python_calls(work: Callable[[], object]) -> int:
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


_OPENING_DELIMITER = re.compile(rb"^--(?:b|n[0-9]+)\r$", re.MULTILINE)
"""A delimiter line that opens a body part, of the boundaries the shapes use."""


def parts_of(message: bytes) -> int:
    """The body parts and the message itself (no shape encloses a message)."""
    return 1 + len(_OPENING_DELIMITER.findall(message))


def measure(name: str, message: bytes, path: str, rounds: int) -> None:
    """One row: CPU seconds and Python calls a megabyte, or why it has no 7-bit form."""
    Path(path).write_bytes(message)
    mb = len(message) / 1e6
    label = f"{name:<14}{mb:6.2f}{parts_of(message):8d}"
    try:
        convert(path)  # first use (imports) out of the way, and convertible at all
    except NotConvertible as reason:
        print(f"{label}   not convertible: {reason}")
        return
    times = []
    for _ in range(rounds):
        forget_caches()
        start = time.process_time()
        convert(path)
        times.append(time.process_time() - start)
    forget_caches()
    calls = python_calls(functools.partial(convert, path)) / mb
    low, middle, high = (
        value / mb for value in (min(times), statistics.median(times), max(times))
    )
    spread = f"{low:6.3f} / {middle:6.3f} / {high:6.3f}"
    print(f"{label}   {spread:<28}{calls:10.0f}   {statistics.median(times):6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1_000_000, help="octets a message")
    parser.add_argument("--only", default="", help="comma-separated shape names")
    args = parser.parse_args()
    chosen = [name for name in SHAPES if not args.only or name in args.only.split(",")]
    print(
        f"{'shape':<14}{'MB':>6}{'parts':>8}   CPU s/MB min / median / max  {'calls/MB':>10}"
        "   median a message"
    )
    with tempfile.TemporaryDirectory() as directory:
        for name in chosen:
            path = os.path.join(directory, name)
            message = SHAPES[name](args.size)
            measure(name, message, path, args.rounds)
            parts = parts_of(message)
            if parts > MAX_PARTS:  # the most of that shape the conversion takes
                at_limit = SHAPES[name](args.size * (MAX_PARTS - 100) // parts)
                measure("  at the limit", at_limit, path, args.rounds)
            octets = PIECE_OCTETS.get(name)
            pieces = MAX_PIECES - 100
            if name in BODY_PIECES and octets is not None:  # each 32 octets buy one back
                pieces = pieces * 32 // (32 - octets)
            if octets is not None and args.size // octets > pieces:
                at_limit = SHAPES[name](pieces * octets)
                measure("  at the limit", at_limit, path, args.rounds)


if __name__ == "__main__":
    main()
