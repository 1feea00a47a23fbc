"""CPU of the RFC 6858 surrogate's header rewriting, by the shape of the header.

    .venv/bin/python benchmarks/pop3_downgrade.py [--rounds 5] [--only continuation,...]

``POP3Server(downgrade=True)`` rewrites the header of a message that needs UTF-8 mode
before its ``+OK``, on the event loop, for any header up to ``pop3.HEADER_LOOKAHEAD``
(256 KiB): a sender chooses its shape. Each shape is built at a quarter, a half and
the whole of the lookahead and rewritten by ``pop3.downgrade`` ``--rounds`` times;
the table gives the least CPU seconds (``time.process_time``), the Python calls (a
``sys.setprofile`` counter over one more rewriting: exact, and deaf to the machine's
load) and, on the whole lookahead's row, how many times the quarter's CPU it took:
about 4 where the rewriting is linear.

The shapes:

* ``continuation``: one UTF-8 field of LF-ended continuation lines `` x``;
* ``continuation-crlf``: the same with CR LF;
* ``addresses``: a To field of UTF-8 addresses (each an empty group);
* ``parameters``: a Content-Type of UTF-8 parameters (each in RFC 2231 form);
* ``fields``: short UTF-8 fields;
* ``subject``: one Subject of UTF-8 letters (encoded-words).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from smtpcore import pop3

SHAPES: dict[str, Callable[[int], bytes]] = {
    "continuation": lambda size: b"Subject: \xc3\xa9" + b"\n x" * (size // 3) + b"\n\nbody\n",
    "continuation-crlf": lambda size: (
        b"Subject: \xc3\xa9" + b"\r\n x" * (size // 4) + b"\r\n\r\nbody\r\n"
    ),
    "addresses": lambda size: (
        b"To: " + b", ".join([b"\xc3\xbc@x.example"] * (size // 14)) + b"\r\n\r\nb\r\n"
    ),
    "parameters": lambda size: (
        b"Content-Type: text/plain"
        + b"".join(b"; p%d=\xc3\xa9" % i for i in range(size // 12))
        + b"\r\n\r\nb\r\n"
    ),
    "fields": lambda size: (
        b"".join(b"X%d: \xc3\xa9\r\n" % i for i in range(size // 12)) + b"\r\nb\r\n"
    ),
    "subject": lambda size: b"Subject: " + b"\xc3\xa9" * (size // 2) + b"\r\n\r\nb\r\n",
}


def _calls(message: bytes) -> int:
    count = 0

    def counter(frame: object, event: str, arg: object) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(counter)
    try:
        pop3.downgrade(message)
    finally:
        sys.setprofile(None)
    return count


def _cpu(message: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        pop3.downgrade(message)
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="", help="shapes, comma-separated")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name] or list(SHAPES)
    limit = pop3.HEADER_LOOKAHEAD - 100
    print(f"{'shape':18} {'octets':>8} {'CPU s':>7} {'calls':>9} {'x quarter':>9}")
    for name in only:
        quarter = 0.0
        for share in (4, 2, 1):
            message = SHAPES[name](limit // share)
            cpu = _cpu(message, args.rounds)
            quarter = quarter or cpu
            ratio = f"{cpu / quarter:9.1f}" if share == 1 and quarter else ""
            print(f"{name:18} {len(message):8d} {cpu:7.3f} {_calls(message):9d} {ratio}")


if __name__ == "__main__":
    main()
