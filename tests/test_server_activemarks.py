"""The marks ``queue list`` reads to put ``*`` after a message in delivery
(:mod:`smtpcore.server.activemarks`): one per message while any of its deliveries
runs, the last state asked for whatever order the threads write in, and only the
running server's believed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smtpcore.server.activemarks import DeliveryMarks, read_active
from smtpcore.server.waits import Threads


def _settled(threads: Threads) -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    threads.then(lambda: loop.call_soon_threadsafe(done.set_result, None))
    return done


def test_a_message_is_marked_while_any_of_its_deliveries_runs(tmp_path: Path) -> None:
    threads = Threads()
    marks = DeliveryMarks(tmp_path, threads, owner=4242)
    marks.clear()

    async def main() -> None:
        marks.begin("AAAAAAAAAA")
        marks.begin("AAAAAAAAAA")  # a session and a local copy
        marks.begin("BBBBBBBBBB")
        marks.end("BBBBBBBBBB")  # in the same turn: its writes may land in any order
        marks.end("AAAAAAAAAA")
        await _settled(threads)
        assert read_active(tmp_path, 4242) == {"AAAAAAAAAA"}
        assert read_active(tmp_path, 4243) == frozenset()  # another server's: stale
        assert read_active(tmp_path, None) == frozenset()  # no server runs
        marks.end("AAAAAAAAAA")
        await _settled(threads)
        assert not list((tmp_path / "active").iterdir())

    asyncio.run(main())


def test_a_start_clears_the_marks_a_crash_left(tmp_path: Path) -> None:
    (tmp_path / "active").mkdir()
    (tmp_path / "active" / "AAAAAAAAAA").write_text("4242\n")
    assert read_active(tmp_path, 4242) == {"AAAAAAAAAA"}
    DeliveryMarks(tmp_path, Threads(), owner=4242).clear()
    assert read_active(tmp_path, 4242) == frozenset()
