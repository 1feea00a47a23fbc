"""The log of clients a session limit turned away stays bounded in lines and memory,
whatever the flood: the first refusal a line, then a count now and then."""

from __future__ import annotations

import logging
import random
import re

import pytest

from smtpcore._driver._turnedaway import STOPPING, LineBudget, TurnedAwayLog

LIMIT = "max-sessions-per-address 2"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture) -> TurnedAwayLog:
    caplog.set_level(logging.INFO, "smtpcore.test")
    return TurnedAwayLog(logging.getLogger("smtpcore.test"), interval=60.0, clock=Clock())


def test_a_flood_from_one_client_is_its_first_line_then_a_count_a_minute(
    log: TurnedAwayLog, caplog: pytest.LogCaptureFixture
) -> None:
    clock = log.clock
    assert isinstance(clock, Clock)
    for port in range(40000, 41000):
        log.refused(f"[192.0.2.7]:{port}", LIMIT)
    assert _lines(caplog) == [f"too many sessions from [192.0.2.7]:40000: refused ({LIMIT})"]
    clock.now += 60
    log.refused("[192.0.2.7]:41000", LIMIT)
    assert _lines(caplog)[1:] == [
        f"too many sessions from [192.0.2.7]: 1000 more refused ({LIMIT}) since the last line"
    ]
    clock.now += 600  # quiet since: the next refusal is a line of its own again
    log.refused("[192.0.2.7]:41001", LIMIT)
    assert _lines(caplog)[2:] == [f"too many sessions from [192.0.2.7]:41001: refused ({LIMIT})"]


def test_an_ipv6_client_is_its_block_whatever_its_address(
    log: TurnedAwayLog, caplog: pytest.LogCaptureFixture
) -> None:
    clock = log.clock
    assert isinstance(clock, Clock)
    for n in range(1, 301):
        log.refused(f"[2001:db8::{n:x}]:40000", LIMIT, "2001:db8::/84")
    clock.now += 60
    log.refused("[2001:db8::1:0]:40000", LIMIT, "2001:db8::/84")
    assert _lines(caplog) == [
        f"too many sessions from [2001:db8::1]:40000 in 2001:db8::/84: refused ({LIMIT})",
        f"too many sessions from 2001:db8::/84: 300 more refused ({LIMIT}) since the last line",
    ]


def test_each_address_and_limit_has_its_own_first_line(
    log: TurnedAwayLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.refused("[192.0.2.7]:1", LIMIT)
    log.refused("[192.0.2.8]:1", LIMIT)
    log.refused("[192.0.2.7]:2", "max-sessions 10")
    log.refused("[192.0.2.7]:3", LIMIT)
    assert len(_lines(caplog)) == 3


def test_memory_is_bounded_and_a_forgotten_client_says_its_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.test")
    log = TurnedAwayLog(logging.getLogger("smtpcore.test"), max_tracked=3, clock=Clock())
    log.refused("[192.0.2.1]:1", LIMIT)
    log.refused("[192.0.2.1]:2", LIMIT)
    for host in range(2, 100):
        log.refused(f"[192.0.2.{host}]:1", LIMIT)
    assert len(log._unsaid) == 3
    assert f"too many sessions from [192.0.2.1]: 1 more refused ({LIMIT}) since the last line" in (
        _lines(caplog)
    )


def test_close_writes_every_count_still_waiting(
    log: TurnedAwayLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A flood shorter than the interval, or a flood's last minute, has no later
    refusal to write its count: the server's stop writes it."""
    for port in range(40000, 40050):
        log.refused(f"[192.0.2.7]:{port}", LIMIT)
    log.refused("[192.0.2.8]:1", LIMIT)
    log.close()
    assert _lines(caplog)[2:] == [
        f"too many sessions from [192.0.2.7]: 49 more refused ({LIMIT}) since the last line"
    ]
    log.close()  # nothing left: nothing written twice
    assert len(_lines(caplog)) == 3


def test_a_flood_from_more_clients_than_it_remembers_is_one_count_line_a_minute(
    log: TurnedAwayLog, caplog: pytest.LogCaptureFixture
) -> None:
    """Past the 1,000 clients it remembers, each new client still cost a line (and a
    forgotten one its count): a flood from many addresses wrote a line a connection.
    Now every line comes out of one budget of 1,000 a minute, and the refusals past it
    are one count line."""
    clock = log.clock
    assert isinstance(clock, Clock)
    addresses = [f"[10.{n >> 8}.{n & 255}.1]" for n in range(3000)]
    for address in addresses:
        log.refused(f"{address}:40000", LIMIT)
        log.refused(f"{address}:40001", LIMIT)
    assert _lines(caplog) == [
        f"too many sessions from {address}:40000: refused ({LIMIT})"
        for address in addresses[:1000]
    ]  # the budget spent: the forgotten clients' counts go with the others too
    clock.now += 30
    for address in addresses[2500:]:  # remembered, counted with the others
        log.refused(f"{address}:40002", LIMIT)
    assert len(_lines(caplog)) == 1000
    clock.now += 30
    log.refused("[192.0.2.7]:40000", LIMIT)  # a minute on: room for lines again
    assert _lines(caplog)[1000:] == [
        "sessions turned away: 5500 more from more than 1000 other clients since the last line",
        f"too many sessions from [192.0.2.7]:40000: refused ({LIMIT})",
    ]
    assert len(log._unsaid) == 1000
    log.close()
    assert len(_lines(caplog)) == 1002  # every count said once already


def _flood_a_minute(log: TurnedAwayLog, tracked: list[str], first: int) -> list[str]:
    """The reviewer's crafted minute: each client remembered refused again after a
    quiet interval (a line each) and once more (a count waiting), then 1,000 new
    clients (a first line each, and each forgets one with a count)."""
    for address in tracked * 2:
        log.refused(address, LIMIT)
    new = [f"[10.{n >> 8 & 255}.{n & 255}.1]:4000" for n in range(first, first + 1000)]
    for address in new:
        log.refused(address, LIMIT)
    return new


class _Times(logging.Handler):
    """When each line was written, by the fake clock."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.times.append(self.clock.now)


def _most_in_any(times: list[float], span: float) -> int:
    """The most lines written in any ``span`` seconds (a half-open window)."""
    most = oldest = 0
    for newest, now in enumerate(times):
        while times[oldest] <= now - span:
            oldest += 1
        most = max(most, newest - oldest + 1)
    return most


def _timed_log(max_tracked: int = 1000) -> tuple[TurnedAwayLog, Clock, _Times]:
    clock = Clock()
    logger = logging.getLogger("smtpcore.test.timed")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for old in logger.handlers[:]:
        logger.removeHandler(old)
    times = _Times(clock)
    logger.addHandler(times)
    return TurnedAwayLog(logger, clock=clock, max_tracked=max_tracked), clock, times


@pytest.mark.parametrize("offsets", [(0.5,), (59.9, 60.0)], ids=["a-minute", "window-edge"])
def test_no_flood_writes_more_than_the_budget_in_any_minute(offsets: tuple[float, ...]) -> None:
    """Lines for clients back after a quiet interval were in no budget, and the first
    lines and the forgotten clients' counts each had a budget of their own, in a fixed
    window: a crafted flood wrote 3,000 lines a minute, and 4,996 in the 60 seconds
    around the window's edge. Every line now comes out of one sliding budget."""
    log, clock, times = _timed_log()
    tracked: list[str] = []
    first = 0
    for minute in range(10):
        for offset in offsets:
            clock.now = 100.0 + minute * 60 * len(offsets) + offset
            tracked = _flood_a_minute(log, tracked, first)
            first += 1000
    assert _most_in_any(times.times, 60.0) == 1000
    log.close()  # the last count, past the budget: the others', one line
    assert _most_in_any(times.times, 60.0) == 1001


def test_the_budget_slides_a_line_a_slot() -> None:
    """At the window's edge only the lines a minute old give their room back."""
    log, clock, times = _timed_log()
    log.budget = LineBudget(3, 60.0)
    for host, at in ((1, 100.0), (2, 130.0), (3, 150.0), (4, 159.9), (5, 160.0), (6, 160.0)):
        clock.now = at
        log.refused(f"[192.0.2.{host}]:1", LIMIT)
    assert times.times == [100.0, 130.0, 150.0, 160.0]
    clock.now = 190.0  # the line of 130.0 is a minute old: one line, the others' count
    log.refused("[192.0.2.7]:1", LIMIT)
    assert times.times[4:] == [190.0]


def test_one_other_client_is_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "smtpcore.test")
    log = TurnedAwayLog(logging.getLogger("smtpcore.test"), max_lines=1, clock=Clock())
    log.refused("[192.0.2.1]:1", LIMIT)
    log.refused("[192.0.2.2]:1", LIMIT)
    log.close()
    assert _lines(caplog)[1:] == [
        "sessions turned away: 1 more from 1 other client since the last line"
    ]


def test_the_count_of_the_others_names_how_many_clients_and_close_writes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.test")
    log = TurnedAwayLog(
        logging.getLogger("smtpcore.test"), max_tracked=3, max_lines=3, clock=Clock()
    )
    for host in range(1, 7):
        log.refused(f"[192.0.2.{host}]:1", LIMIT)
        log.refused(f"[192.0.2.{host}]:2", LIMIT)
    log.close()
    assert _lines(caplog) == [
        *(f"too many sessions from [192.0.2.{host}]:1: refused ({LIMIT})" for host in (1, 2, 3)),
        # the forgotten clients' counts, past the budget, with the others' (3 told apart)
        "sessions turned away: 9 more from more than 3 other clients since the last line",
    ]


class _Said(logging.Handler):
    """Each line's time, by the fake clock, and the refusals it accounts for."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[float] = []
        self.refusals = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.times.append(self.clock.now)
        said = re.search(r"(?:: | away: )(\d+) more", record.getMessage())
        self.refusals += int(said[1]) if said else 1


def test_the_lines_account_for_every_refusal_within_the_budget() -> None:
    """The refusal that wrote the others' line was counted into the count that line
    had just written out, and was never in any line (20 of these 300 floods lost
    one). After close, every refusal is in a line, and no interval had more lines
    than the budget before it."""
    logger = logging.getLogger("smtpcore.test.said")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for seed in range(300):
        flood = random.Random(seed)
        clock = Clock()
        said = _Said(clock)
        logger.handlers = [said]
        max_lines = flood.randint(1, 6)
        log = TurnedAwayLog(
            logger, max_lines=max_lines, max_tracked=flood.randint(1, 6), clock=clock
        )
        refusals = flood.randint(1, 120)
        for _ in range(refusals):
            clock.now += flood.choice([0, 0, 0.1, 1, 30, 59.9, 60, 61, 200])
            headline = flood.choice(["too many sessions", STOPPING[0]])
            log.refused(f"[10.0.0.{flood.randrange(15)}]:1", LIMIT, headline=headline)
        assert _most_in_any(said.times, 60.0) <= max_lines, seed
        log.close()
        assert said.refusals == refusals, seed
    logger.handlers = []
