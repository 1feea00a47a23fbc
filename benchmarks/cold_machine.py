"""The SMTP server machine's work a message, with its caches warm and cold.

    python benchmarks/cold_machine.py [--messages 2000] [--rounds 5] [--evict 4]
    python benchmarks/cold_machine.py --misses [--messages 200]

One message of the pipelined session (``adapters_smtp.pipelined``'s bytes: 1 KB
of content, its final dot and the next envelope) is fed to a
``ServerConnection`` and each of its events answered, as a server's session
does, with no I/O. Warm: one message after another. Cold: each message after
``--evict`` MiB are written, which pushes the machine's code and data out of
the L1 and L2 caches as a server's wait for its client does (the kernel and
the client run meanwhile); the time of those writes alone, taken in the same
round, is subtracted.

``--misses`` counts instead, under valgrind's cachegrind with a last-level cache
of the L2's size (2 MiB): the cache lines a cold message fetches beyond the
first-level caches, code and data apart, and the instructions it runs. These
counts do not move with the machine's load: they show what a change does to
the machine's footprint, where the times above only show it through the noise.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters_smtp import BODY_1K, ENVELOPE

from smtpcore import NEED_DATA
from smtpcore.smtp import (
    Data,
    Ehlo,
    EndOfMessage,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    ServerConnection,
)

MESSAGE = BODY_1K + b".\r\n" + ENVELOPE
"""A message's bytes as the pipelined session sends them: its content and final dot,
then the next message's MAIL, RCPT and DATA."""

OK = Reply(250, "OK")
GO_AHEAD = Reply(354, "End data with <CR><LF>.<CR><LF>")


class Session:
    """A server machine past EHLO and the first envelope, and how it answers."""

    def __init__(self) -> None:
        self.conn = ServerConnection("mx.test", max_message_size=None)
        self.conn.next_event()  # the greeting is due
        self.conn.send(Reply(220, "mx.test ESMTP"))
        self.feed(b"EHLO client.test\r\n")
        self.feed(ENVELOPE)

    def feed(self, data: bytes) -> int:
        """Give the machine ``data`` and answer every event: the replies' octets."""
        conn = self.conn
        conn.receive_data(data)
        written = 0
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return written
            answer = ANSWERS.get(type(event))
            if answer is not None:
                written += len(conn.send(answer))
            elif type(event) is not MessageData:
                raise RuntimeError(f"unexpected event {event!r}")


ANSWERS: dict[type, Reply] = {
    Ehlo: OK,
    Mail: OK,
    Rcpt: OK,
    Data: GO_AHEAD,
    EndOfMessage: OK,
}
"""What a server answers each event with (content is answered at its end): one
lookup, so that the benchmark's own work stays small beside the machine's."""


class Evictor:
    """Writes one octet of every cache line of ``megabytes`` MiB."""

    def __init__(self, megabytes: int) -> None:
        self.block = bytearray(megabytes * 1024 * 1024)
        self.ones = b"\x01" * (len(self.block) // 64)

    def __call__(self) -> None:
        self.block[::64] = self.ones


def timed_round(session: Session, evict: Evictor, messages: int) -> tuple[float, float]:
    """µs a message warm, and cold (the eviction's own time subtracted)."""
    feed = session.feed
    started = time.process_time()
    for _ in range(messages):
        feed(MESSAGE)
    warm = (time.process_time() - started) / messages
    started = time.process_time()
    for _ in range(messages):
        evict()
    alone = (time.process_time() - started) / messages
    started = time.process_time()
    for _ in range(messages):
        evict()
        feed(MESSAGE)
    both = (time.process_time() - started) / messages
    return warm * 1e6, (both - alone) * 1e6


def run_for_cachegrind(messages: int, evict_only: bool, megabytes: int) -> None:
    """The load cachegrind counts: cold messages, or the eviction alone."""
    session = Session()
    evict = Evictor(megabytes)
    for _ in range(50):
        session.feed(MESSAGE)
    for _ in range(messages):
        evict()
        if not evict_only:
            session.feed(MESSAGE)


EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")


def cachegrind_totals(messages: int, evict_only: bool, megabytes: int) -> dict[str, int]:
    """cachegrind's totals for a run of this file's load."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--misses needs valgrind (the test setup installs it)")
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cachegrind.out"
        command = [
            *(valgrind, "--tool=cachegrind", "--cache-sim=yes", "--LL=2097152,16,64"),
            f"--cachegrind-out-file={out}",
            *(sys.executable, __file__, "--under-cachegrind", str(messages)),
            *(["--evict-only"] if evict_only else []),
            *("--evict", str(megabytes)),
        ]
        # One hash seed: the dictionaries' layouts, and so the lines they touch, are
        # then the same from run to run.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, capture_output=True, env=env)
        found = re.search(r"^summary: ([\d ]+)$", out.read_text(), re.MULTILINE)
        if found is None:
            raise RuntimeError("no summary in cachegrind's output")
        return dict(zip(EVENTS, map(int, found.group(1).split()), strict=True))


def misses(messages: int, megabytes: int) -> None:
    """Per cold message: ``messages`` more cold messages, less the same more
    evictions alone (start-up and warm-up cancel out)."""
    runs = {
        (count, evict_only): cachegrind_totals(count, evict_only, megabytes)
        for count in (messages, 2 * messages)
        for evict_only in (False, True)
    }
    print(f"a cold message ({messages} more under cachegrind, {megabytes} MiB evicted):")
    for event, meaning in (
        ("Ir", "instructions"),
        ("I1mr", "code lines fetched into the first level"),
        ("ILmr", "code lines fetched from beyond the last level"),
        ("D1mr", "data lines read into the first level"),
        ("DLmr", "data lines read from beyond the last level"),
    ):
        more = runs[2 * messages, False][event] - runs[messages, False][event]
        alone = runs[2 * messages, True][event] - runs[messages, True][event]
        print(f"  {(more - alone) / messages:10.1f}  {meaning} ({event})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--evict", type=int, default=4, help="MiB written before each")
    parser.add_argument("--misses", action="store_true", help="count under cachegrind")
    parser.add_argument("--under-cachegrind", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--evict-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.evict <= 256:
        parser.error("--evict is 1 to 256 MiB")
    if args.under_cachegrind is not None:
        run_for_cachegrind(args.under_cachegrind, args.evict_only, args.evict)
        return
    if args.misses:
        if not 1 <= (args.messages or 200) <= 5000:
            parser.error("--messages is 1 to 5000 under cachegrind")
        misses(args.messages or 200, args.evict)
        return
    messages = args.messages or 2000
    if not 1 <= messages <= 100_000 or not 1 <= args.rounds <= 100:
        parser.error("--messages is 1 to 100000, --rounds 1 to 100")
    session = Session()
    evict = Evictor(args.evict)
    timed_round(session, evict, min(messages, 200))  # warm-up
    warm, cold = [], []
    for _ in range(args.rounds):
        warm_figure, cold_figure = timed_round(session, evict, messages)
        warm.append(warm_figure)
        cold.append(cold_figure)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {messages} messages a round")
    for name, figures in (("warm", warm), ("cold", cold)):
        print(
            f"  {name}: {min(figures):6.2f} / {statistics.median(figures):6.2f} / "
            f"{max(figures):6.2f} µs a message (min / median / max)"
        )


if __name__ == "__main__":
    main()
