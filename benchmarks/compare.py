"""Issue 17's workloads side by side with every peer that is installed, in one command.

    .venv/bin/python benchmarks/compare.py [--rounds 3] [--only client,connect,...]

Each round runs every contender of a workload once, one after the other, so a
slow spell of a shared machine costs them alike; each ratio (ours over the
peer, > 1 means ours is faster) is taken within a round and printed as
min/median/max over the rounds. Beside it: CPU time per message (or per MB,
per command, per connection) of the side being measured (the server process
from /proc, or this process for in-process loads), and for smtpcore a
deterministic count of Python calls per unit from a ``sys.setprofile`` counter,
which no load on the machine can move.

Workloads (peers in brackets, each left out when it is not installed):

* ``client``: 1 KB messages over one connection to Postfix's smtp-sink, with
  and without PIPELINING (smtp-sink ``-p``) [smtplib, and two floors: the
  same bytes written and their replies awaited on a bare socket, asyncio's own
  share, and read from a blocking socket with a timeout, the share of
  smtplib's way of reading; and the asyncio minimal client, the asyncio floor
  with the least work a client does for each message; and aiosmtplib, the
  asyncio client's own kind of peer]; the sink and this process on one core
  while a client runs, as ``client_cpu.py --one-core`` does (on two cores
  about 100 µs of a message goes with waking an idle core, and its variation
  swamps the clients' own work: see "Round 12" in ``docs/performance.rst``);
* ``connect``: connect, EHLO, QUIT [Twisted, aiosmtpd, and the floors: a bare
  ``asyncio.Protocol`` writing the same bytes, which is asyncio's transports'
  own share, and the same over the raw socket on asyncio's selector, which is
  the event loop's share of a connection as smtpcore's server serves it];
  server CPU;
* ``newconn``: smtp-source, one new connection per message [Twisted, aiosmtpd,
  the floors];
* ``reused``: smtp-source over 20 reused sessions, and one pipelined session
  [Twisted, aiosmtpd, the floors: each reply chosen by the first four bytes of
  its line, the content skipped to its end marker, one write a read: the
  kernel's and the event loop's share of a message, below which no server on
  asyncio can go];
* ``params``: the server machine reading ``MAIL FROM:<..> SIZE= BODY=``,
  ``RCPT TO:<..> NOTIFY=NEVER`` and ``RSET``, answered in memory, beside
  Twisted's ESMTP protocol over a memory transport, and beside the same loop
  without parameters;
* ``decode``: DATA content, strict policy, 64 KiB chunks, beside the plain
  per-line loop of ``server_machine.py``;
* ``pop3``: RETR of 10 KB messages from a raw-socket client, the rate and the
  server's CPU (every process of it) over the RETRs alone [Dovecot].

Loopback only; every server started here is stopped at the end. The peers
install with the ``bench`` extra (Twisted, aiosmtplib) and the test setup's
Debian packages (postfix for smtp-sink and smtp-source, dovecot-pop3d).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import adapters_instructions  # noqa: E402
import adapters_smtp  # noqa: E402
import client_loads  # noqa: E402
import pop3_adapters  # noqa: E402
import server_machine  # noqa: E402

from smtpcore import NEED_DATA  # noqa: E402
from smtpcore._lines import FramingPolicy  # noqa: E402
from smtpcore.smtp import BadCommand, Reply, ServerConnection  # noqa: E402

SENDER = client_loads.SENDER
RECIPIENT = client_loads.RECIPIENT


# -- measuring ---------------------------------------------------------------------------


def count_calls(work: Callable[[], object]) -> int:
    """Python calls made by ``work()`` in this thread."""
    return client_loads.counted(work).calls


@dataclass
class Sample:
    rate: float
    cpu: float | None  # seconds of CPU for the whole run


@dataclass
class Workload:
    """One row group of the table: contenders, what one run does, and its unit."""

    name: str
    unit: str  # what rates and CPU are per: "msg", "MB", "conn", "cmd"
    work: float  # units in one run
    ours: list[str]
    peers: list[str]
    runs: dict[str, Callable[[], Sample]]
    calls: dict[str, Callable[[], float]] = field(default_factory=dict)


def in_process(work: Callable[[], object]) -> Callable[[], Sample]:
    """A run whose CPU is this process's (clients, machines in memory)."""

    def run() -> Sample:
        cpu = time.process_time()
        wall = time.perf_counter()
        work()
        wall = time.perf_counter() - wall
        return Sample(1 / wall, time.process_time() - cpu)

    return run


def against_server(kind: str, load: Callable[[int], object]) -> Callable[[], Sample]:
    """A run against a fresh ``kind`` server process (``adapters_smtp.run_server``);
    the CPU is the server's."""

    def run() -> Sample:
        wall: list[float] = []

        def measure(port: int) -> float:
            started = time.perf_counter()
            load(port)
            wall.append(time.perf_counter() - started)
            return 0.0

        _, cpu = adapters_smtp.run_server(kind, measure)
        return Sample(1 / wall[0], cpu)

    return run


# -- client ------------------------------------------------------------------------------


CLIENTS: dict[str, Callable[[int, int], None]] = {
    "smtplib": client_loads.smtplib_client,
    "smtpcore.sync": client_loads.sync_client,
    "smtpcore.asyncio": client_loads.asyncio_client,
    "asyncio floor": client_loads.asyncio_floor_client,  # shown, not compared
    "blocking floor": client_loads.blocking_floor_client,  # shown: smtplib's floor
    "asyncio minimal": client_loads.asyncio_minimal_client,  # shown: the least on asyncio
    "aiosmtplib": client_loads.aiosmtplib_client,  # the asyncio client's own kind of peer
}


def client_calls(client: Callable[[int, int], None], port: int, messages: int) -> float:
    """Python calls per message: the difference between two session lengths, so that
    connecting, EHLO and QUIT drop out."""
    return sum(client_loads.message_calls(client, port, messages).values()) / messages


def on_one_core(pid: int, work: Callable[[], Sample]) -> Callable[[], Sample]:
    """``work`` run with this process and process ``pid`` (the sink) on one core, and
    both put back where they were after it."""

    def run() -> Sample:
        ours, theirs = os.sched_getaffinity(0), os.sched_getaffinity(pid)
        core = {min(ours)}
        os.sched_setaffinity(pid, core)
        os.sched_setaffinity(0, core)
        try:
            return work()
        finally:
            os.sched_setaffinity(0, ours)
            os.sched_setaffinity(pid, theirs)

    return run


def client_workloads(sinks: dict[str, tuple[int, int]], messages: int) -> list[Workload]:
    """The client rows, one a sink: ``sinks`` maps a label to the sink's port and pid."""
    clients = {name: run for name, run in CLIENTS.items() if name != "aiosmtplib" or have(name)}
    for client in clients.values():  # imports and first-use caches out of every round
        client(next(iter(sinks.values()))[0], 1)
    workloads = []
    for label, (port, pid) in sinks.items():
        workloads.append(
            Workload(
                name=f"client, 1 KB x {messages}, one connection to smtp-sink{label}, one core",
                unit="msg",
                work=messages,
                ours=["smtpcore.sync", "smtpcore.asyncio"],
                peers=[peer for peer in ("smtplib", "aiosmtplib") if peer in clients],
                runs={
                    name: on_one_core(pid, in_process(lambda c=client, p=port: c(p, messages)))
                    for name, client in clients.items()
                },
                calls={
                    name: (lambda c=client, p=port: client_calls(c, p, 50))
                    for name, client in clients.items()
                },
            )
        )
    return workloads


# -- servers over sockets ----------------------------------------------------------------


def connect_only(port: int, connections: int) -> None:
    for _ in range(connections):
        client = adapters_smtp.Client(port)
        client.expect(1)
        client.sock.sendall(b"EHLO bench.test\r\n")
        client.expect(1)
        client.close()


def smtp_source(port: int, messages: int, sessions: int, reuse: bool) -> None:
    program = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    adapters_smtp.run_timed_program(
        [
            *(program, "-s", str(sessions), "-m", str(messages), "-l", "1024"),
            *(["-d"] if reuse else []),
            *("-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"),
        ]
    )


def server_calls(kind: str, load: Callable[[int], object], units: int) -> float:
    """Python calls per unit in an smtpcore server thread of this process (profiled
    there alone), for the second of two runs of ``load``."""
    counter = adapters_instructions.Counter()
    ready = threading.Event()
    port = adapters_smtp.free_port()
    thread = threading.Thread(
        target=adapters_instructions.serve,
        args=(kind.removeprefix("smtpcore."), port, counter, ready),
        daemon=True,  # it serves until this process ends
    )
    thread.start()
    if not ready.wait(10):
        raise RuntimeError(f"{kind} did not start")
    load(port)
    before = counter.python
    load(port)
    return (counter.python - before) / units


FLOOR = "asyncio floor"
"""A contender of the connection setup alone: ``adapters_smtp.FloorProtocol``."""
RAW_FLOOR = "raw floor"
"""The same over the raw socket on asyncio's selector: ``adapters_smtp.RawFloorSession``."""
FLOORS = (FLOOR, RAW_FLOOR)


def transcript(port: int) -> bytes:
    """Everything a server writes for connect, EHLO, QUIT."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"EHLO bench.test\r\nQUIT\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def check_floor(floor: str) -> None:
    """A floor must write exactly what smtpcore's server writes, or it measures less."""
    seen: dict[str, bytes] = {}
    for kind in ("smtpcore.asyncio", floor):

        def measure(port: int, kind: str = kind) -> float:
            seen[kind] = transcript(port)
            return 0.0

        adapters_smtp.run_server(kind, measure)
    if seen["smtpcore.asyncio"] != seen[floor]:
        raise RuntimeError(f"the floor's bytes differ from smtpcore's: {seen}")


def server_workloads(servers: list[str], connections: int, messages: int) -> list[Workload]:
    # name, unit, units, the load for a port and a number of units
    loads: list[tuple[str, str, int, Callable[[int, int], object]]] = [
        (
            f"connection setup (connect, EHLO, QUIT) x {connections}",
            "conn",
            connections,
            connect_only,
        ),
        (
            f"new connection per message, smtp-source -s 20, 1 KB x {messages}",
            "msg",
            messages,
            lambda port, n: smtp_source(port, n, 20, reuse=False),
        ),
        (
            f"20 reused sessions, smtp-source -s 20 -d, 1 KB x {messages}",
            "msg",
            messages,
            lambda port, n: smtp_source(port, n, 20, reuse=True),
        ),
        (
            f"one pipelined session, 1 KB x {messages}",
            "msg",
            messages,
            adapters_smtp.pipelined,
        ),
    ]
    ours = [kind for kind in servers if kind.startswith("smtpcore.")]
    workloads = []
    for name, unit, units, load in loads:
        small = max(units // 4, 20)  # the profiled count is slow: a quarter of the load
        contenders = list(servers)
        workloads.append(
            Workload(
                name=name,
                unit=unit,
                work=units,
                ours=ours,
                peers=[kind for kind in contenders if kind not in ours],
                runs={
                    kind: against_server(kind, lambda port, f=load, u=units: f(port, u))
                    for kind in contenders
                },
                calls={
                    kind: (
                        lambda k=kind, f=load, n=small: server_calls(k, lambda port: f(port, n), n)
                    )
                    for kind in contenders
                    if kind in ours or kind in FLOORS
                },
            )
        )
    return workloads


# -- the server machine in memory --------------------------------------------------------

WITH_PARAMETERS = (
    b"MAIL FROM:<john@abc.example> SIZE=1234 BODY=8BITMIME\r\n"
    b"RCPT TO:<brendon@pqr.example> NOTIFY=NEVER\r\n"
    b"RSET\r\n"
)
PLAIN = b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<brendon@pqr.example>\r\nRSET\r\n"


def machine_commands(batch: bytes, rounds: int) -> None:
    # RSET counts toward the junk command limit: lift it, the loop is the point here.
    conn = ServerConnection("mx.bench.example", dsn=True, max_junk_commands=sys.maxsize)
    conn.send(Reply(220, "ready"))
    conn.receive_data(b"EHLO c.example\r\n")
    conn.next_event()
    conn.send(Reply(250, "ok"))
    ok = Reply(250, "ok")
    for _ in range(rounds):
        conn.receive_data(batch)
        for _ in range(3):
            event = conn.next_event()
            if isinstance(event, BadCommand) or event is NEED_DATA:
                raise AssertionError(event)
            conn.send(ok)


def twisted_commands(batch: bytes, rounds: int) -> None:
    from twisted.internet.testing import StringTransport
    from twisted.mail import smtp
    from twisted.python.failure import Failure
    from zope.interface import implementer

    @implementer(smtp.IMessageDelivery)
    class Delivery:
        def receivedHeader(self, helo: object, origin: object, recipients: object) -> None:
            return None

        def validateFrom(self, helo: object, origin: object) -> object:
            return origin

        def validateTo(self, user: object) -> object:
            return lambda: None

    protocol = smtp.ESMTP()
    protocol.delivery = Delivery()
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"EHLO c.example\r\n")
    transport.clear()
    for _ in range(rounds):
        protocol.dataReceived(batch)
        if transport.value().count(b"250 ") != 3:
            raise AssertionError(transport.value())
        transport.clear()
    protocol.connectionLost(Failure(ConnectionError()))


def params_workload(rounds: int, twisted: bool) -> Workload:
    runs = {
        "smtpcore (parameters)": in_process(lambda: machine_commands(WITH_PARAMETERS, rounds)),
        "smtpcore (none)": in_process(lambda: machine_commands(PLAIN, rounds)),
    }
    peers = []
    if twisted:
        runs["twisted (parameters)"] = in_process(
            lambda: twisted_commands(WITH_PARAMETERS, rounds)
        )
        peers.append("twisted (parameters)")
    peers.append("smtpcore (none)")
    small = 200

    def per_command(commands: Callable[[bytes, int], None], batch: bytes) -> Callable[[], float]:
        def count() -> float:
            short = count_calls(lambda: commands(batch, small))
            long = count_calls(lambda: commands(batch, 2 * small))
            return (long - short) / (3 * small)

        return count

    calls = {
        "smtpcore (parameters)": per_command(machine_commands, WITH_PARAMETERS),
        "smtpcore (none)": per_command(machine_commands, PLAIN),
    }
    if twisted:
        calls["twisted (parameters)"] = per_command(twisted_commands, WITH_PARAMETERS)
    return Workload(
        name=f"MAIL SIZE= BODY=, RCPT NOTIFY=NEVER, RSET x {rounds} (machine in memory)",
        unit="cmd",
        work=3 * rounds,
        ours=["smtpcore (parameters)"],
        peers=peers,
        runs=runs,
        calls=calls,
    )


def decode_workload(megabytes: int) -> Workload:
    message = server_machine.make_message(megabytes)
    chunks = server_machine.chunks_of(server_machine.stuffed(message))
    size = len(message) / 1e6

    def machine() -> None:
        server_machine.check_output(
            server_machine.run_machine(chunks, FramingPolicy.strict()), message
        )

    def loop() -> None:
        server_machine.check_output(server_machine.run_per_line(chunks), message)

    return Workload(
        name=f"DATA decode, strict policy, {size:.0f} MB in 64 KiB chunks",
        unit="MB",
        work=size,
        ours=["smtpcore (strict)"],
        peers=["per-line loop"],
        runs={"smtpcore (strict)": in_process(machine), "per-line loop": in_process(loop)},
        calls={
            "smtpcore (strict)": lambda: count_calls(machine) / size,
            "per-line loop": lambda: count_calls(loop) / size,
        },
    )


# -- POP3 --------------------------------------------------------------------------------


@contextmanager
def pop3_servers(messages: int, with_dovecot: bool) -> Iterator[dict[str, int]]:
    """smtpcore's asyncio POP3 server and Dovecot over copies of one Maildir."""
    helpers = pop3_adapters.peers()
    workdir = Path(tempfile.mkdtemp(prefix="smtpcore-compare-"))
    os.chmod(workdir, 0o755)  # Dovecot's unprivileged processes read from here
    try:
        template = workdir / "template"
        helpers.write_maildir(
            template,
            [pop3_adapters.message_10k(n) for n in range(messages)]
            + [pop3_adapters.large_message(1)],
        )
        ports: dict[str, int] = {}
        with ExitStack() as running:
            if with_dovecot:
                ports["dovecot"] = running.enter_context(
                    pop3_adapters.dovecot_server(workdir / "dovecot", template)
                )
            root = workdir / "smtpcore"
            helpers.copy_maildir(template, root / pop3_adapters.USER)
            ports["smtpcore.asyncio"] = running.enter_context(
                pop3_adapters.smtpcore_server("smtpcore.asyncio", root)
            )
            yield ports
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of process ``pid`` and of each of its children (Dovecot
    serves each session in a process of its own), by process id, each from the
    scheduler's count in nanoseconds where the kernel keeps it
    (``adapters_smtp.cpu_seconds``): a POP3 session's few milliseconds are a
    tick or two of ``/proc/PID/stat``."""
    pids = [pid]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:  # ppid
                    pids.append(int(entry))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    found = {}
    for each in pids:
        seconds = adapters_smtp.cpu_seconds(each)
        if seconds is not None:
            found[each] = seconds
    return found


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the processes of two :func:`tree_cpu` readings spent between them:
    each one's growth, one started in between counted whole. One that ended in
    between is missed: read both while the session's process lives."""
    return sum(seconds - before.get(each, 0.0) for each, seconds in after.items())


def retr_session(port: int, count: int, mark: Callable[[bool], None] | None = None) -> None:
    """Log in, RETR messages 1 to ``count`` one at a time, QUIT (a raw-socket client).
    ``mark(False)`` is called before the first RETR and ``mark(True)`` once the last
    one is read, before QUIT: the RETRs alone, between the two."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray()
        pop3_adapters._recv_until(sock, buffer, b"\r\n")
        for line in (f"USER {pop3_adapters.USER}", f"PASS {pop3_adapters.PASSWORD}"):
            sock.sendall(line.encode() + b"\r\n")
            if not pop3_adapters._recv_until(sock, buffer, b"\r\n").startswith(b"+OK"):
                raise RuntimeError("login failed")
        if mark is not None:
            mark(False)
        for number in range(1, count + 1):
            sock.sendall(b"RETR %d\r\n" % number)
            pop3_adapters._recv_multiline(sock, buffer)
        if mark is not None:
            mark(True)
        sock.sendall(b"QUIT\r\n")
        pop3_adapters._recv_until(sock, buffer, b"\r\n")


def pop3_calls(messages: int) -> float:
    """Python calls per message of an smtpcore POP3 session (log in, RETR every message,
    QUIT), in a server thread of this process: the slope between maildrops of
    ``messages`` and twice as many, each counted on its second session (sizes cached)."""
    helpers = pop3_adapters.peers()
    counter = client_loads.CallCounter()
    counting = threading.Event()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if counting.is_set():
            counter(frame, event, arg)

    def serve(root: Path, port: int, ready: threading.Event) -> None:
        from smtpcore.asyncio import POP3Server
        from smtpcore.maildrop import MaildirStore

        store = MaildirStore(root, {pop3_adapters.USER: pop3_adapters.PASSWORD})
        sys.setprofile(profile)

        async def main() -> None:
            async with POP3Server(store, "127.0.0.1", port, hostname="pop.bench") as server:
                ready.set()
                await server.serve_forever()

        asyncio.run(main())

    def session_calls(count: int, workdir: Path) -> int:
        root = workdir / str(count)
        helpers.write_maildir(
            root / pop3_adapters.USER, [pop3_adapters.message_10k(n) for n in range(count)]
        )
        port, ready = adapters_smtp.free_port(), threading.Event()
        # A daemon: it serves until this process ends.
        threading.Thread(target=serve, args=(root, port, ready), daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("the POP3 server did not start")
        retr_session(port, count)
        time.sleep(0.2)  # the session's end, in the server thread
        before = counter.calls
        counting.set()
        retr_session(port, count)
        time.sleep(0.2)
        counting.clear()
        return counter.calls - before

    workdir = Path(tempfile.mkdtemp(prefix="smtpcore-compare-"))
    try:
        return (session_calls(2 * messages, workdir) - session_calls(messages, workdir)) / messages
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def pop3_workload(ports: dict[str, int], messages: int) -> Workload:
    def retr(port: int) -> Callable[[], Sample]:
        def run() -> Sample:
            pid = pop3_adapters.SERVER_PIDS.get(port)
            walls: list[float] = []
            cpus: list[dict[int, float]] = []

            def mark(end: bool) -> None:
                # The readings of /proc outside the interval timed.
                if end:
                    walls.append(time.perf_counter())
                if pid:
                    cpus.append(tree_cpu(pid))
                if not end:
                    walls.append(time.perf_counter())

            retr_session(port, messages, mark)
            time.sleep(0.2)  # the session's end, before the next contender's
            cpu = cpu_between(*cpus) if pid else None
            return Sample(1 / (walls[1] - walls[0]), cpu)

        return run

    return Workload(
        name=f"POP3 RETR 10 KB x {messages}, raw-socket client, one session (RETRs alone)",
        unit="msg",
        work=messages,
        ours=["smtpcore.asyncio"],
        peers=[name for name in ports if name == "dovecot"],
        runs={name: retr(port) for name, port in ports.items()},
        calls={"smtpcore.asyncio": lambda: pop3_calls(100)},
    )


# -- the run and the table ---------------------------------------------------------------


def run_workload(workload: Workload, rounds: int, out: list[str]) -> None:
    samples: dict[str, list[Sample]] = {name: [] for name in workload.runs}
    for _ in range(rounds):
        for name, run in workload.runs.items():  # interleaved within the round
            samples[name].append(run())
    calls = {name: count() for name, count in workload.calls.items()}
    out.append(f"\n{workload.name}")
    header = (
        f"  {'contender':24} {'rate (/s)':>11} {'CPU us/' + workload.unit:>14} {'Py calls':>9}"
    )
    out.append(header)
    for name, found in samples.items():
        rate = statistics.median(s.rate for s in found) * workload.work
        cpus = [s.cpu for s in found if s.cpu is not None]
        cpu = f"{statistics.median(cpus) * 1e6 / workload.work:14.1f}" if cpus else f"{'-':>14}"
        counted = f"{calls[name]:9.1f}" if name in calls else f"{'-':>9}"
        out.append(f"  {name:24} {rate:11.1f} {cpu} {counted}")
    for ours in workload.ours:
        for peer in workload.peers:
            if peer == ours:
                continue
            ratios = sorted(
                a.rate / b.rate for a, b in zip(samples[ours], samples[peer], strict=True)
            )
            cpu_ratio = ""
            pairs = [(a.cpu, b.cpu) for a, b in zip(samples[ours], samples[peer], strict=True)]
            if all(a is not None and b is not None and a > 0 for a, b in pairs):
                cpu_ratios = sorted(b / a for a, b in pairs)  # type: ignore[operator]
                cpu_ratio = (
                    f"; CPU peer/ours {cpu_ratios[0]:.2f}x / {statistics.median(cpu_ratios):.2f}x"
                    f" / {cpu_ratios[-1]:.2f}x"
                )
            out.append(
                f"  {ours} vs {peer}: rate {ratios[0]:.2f}x / {statistics.median(ratios):.2f}x"
                f" / {ratios[-1]:.2f}x (min/median/max){cpu_ratio}"
            )
    print("\n".join(out[-(len(samples) + 2 + len(workload.ours) * len(workload.peers)) :]))
    sys.stdout.flush()


def have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=500, help="client and server loads")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--commands", type=int, default=5000, help="params: rounds of 3")
    parser.add_argument("--megabytes", type=int, default=8, help="decode")
    parser.add_argument("--pop3-messages", type=int, default=300)
    parser.add_argument(
        "--only",
        default="client,connect,params,decode,pop3",
        help="comma-separated: client, connect (all socket server loads), params, decode, pop3",
    )
    parser.add_argument(
        "--servers",
        default=f"smtpcore.asyncio,twisted,aiosmtpd,{FLOOR},{RAW_FLOOR}",
        help=(
            f"for the server loads ({FLOOR!r}, {RAW_FLOOR!r}: the floors, shown, not "
            f"compared; smtpcore.asyncio{adapters_smtp.ON_UVLOOP}: on uvloop's event loop)"
        ),
    )
    args = parser.parse_args()
    if not 1 <= args.rounds <= 20 or not 1 <= args.messages <= 20_000:
        parser.error("--rounds is 1 to 20, --messages 1 to 20000")
    only = set(args.only.split(","))
    twisted = have("twisted.mail")
    servers = [
        kind
        for kind in args.servers.split(",")
        if (kind != "twisted" or twisted)
        and (kind != "aiosmtpd" or have("aiosmtpd"))
        and (not kind.endswith(adapters_smtp.ON_UVLOOP) or have("uvloop"))
    ]
    smtp_sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    postfix = Path(smtp_sink).exists()
    dovecot = shutil.which("dovecot") is not None or Path("/usr/sbin/dovecot").exists()
    print(
        f"# {platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"python benchmarks/compare.py {' '.join(sys.argv[1:])}".rstrip()
    )
    print(f"# peers: twisted={twisted} postfix={postfix} dovecot={dovecot}")
    out: list[str] = []
    with ExitStack() as running:
        workloads: list[Workload] = []
        if "client" in only and postfix:
            import peers

            sinks = {}
            for label, extra in ((" (PIPELINING)", ()), (" -p (no PIPELINING)", ("-p",))):
                sink = running.enter_context(peers.smtp_sink(extra_args=extra))
                sinks[label] = (sink.port, sink.process.popen.pid)
            workloads += client_workloads(sinks, args.messages)
        if "connect" in only and postfix:
            for floor in FLOORS:
                if floor in servers:
                    check_floor(floor)
            workloads += server_workloads(servers, args.connections, args.messages)
        if "params" in only:
            workloads.append(params_workload(args.commands, twisted))
        if "decode" in only:
            workloads.append(decode_workload(args.megabytes))
        if "pop3" in only:
            ports = running.enter_context(pop3_servers(args.pop3_messages, dovecot))
            workloads.append(pop3_workload(ports, args.pop3_messages))
        for workload in workloads:
            run_workload(workload, args.rounds, out)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
