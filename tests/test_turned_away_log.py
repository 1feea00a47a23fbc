"""The log of clients a session limit turned away stays bounded in lines and memory,
whatever the flood: the first refusal a line, then a count now and then."""

from __future__ import annotations

import logging

import pytest

from smtpcore._driver._turnedaway import TurnedAwayLog

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
    Now at most 1,000 first lines a minute, and the rest one count line a minute."""
    clock = log.clock
    assert isinstance(clock, Clock)
    addresses = [f"[10.{n >> 8}.{n & 255}.1]" for n in range(3000)]
    for address in addresses:
        log.refused(f"{address}:40000", LIMIT)
        log.refused(f"{address}:40001", LIMIT)
    lines = _lines(caplog)
    assert lines[:1000] == [
        f"too many sessions from {address}:40000: refused ({LIMIT})"
        for address in addresses[:1000]
    ]
    assert (
        lines[1000:]
        == [  # the first 1,000 forgotten, each saying its count
            f"too many sessions from {address}: 1 more refused ({LIMIT}) since the last line"
            for address in addresses[:1000]
        ]
    )
    clock.now += 30
    for address in addresses[2500:]:  # remembered, counted with the others
        log.refused(f"{address}:40002", LIMIT)
    assert len(_lines(caplog)) == 2000
    clock.now += 30
    log.refused("[192.0.2.7]:40000", LIMIT)  # a minute on: room for lines of their own
    assert _lines(caplog)[2000:] == [
        "sessions turned away: 4500 more from more than 1000 other clients since the last line",
        f"too many sessions from [192.0.2.7]:40000: refused ({LIMIT})",
    ]
    assert len(log._unsaid) == 1000
    log.close()
    assert len(_lines(caplog)) == 2002  # every count said once already


def test_the_count_of_the_others_names_how_many_clients_and_close_writes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.test")
    log = TurnedAwayLog(logging.getLogger("smtpcore.test"), max_tracked=3, clock=Clock())
    for host in range(1, 7):
        log.refused(f"[192.0.2.{host}]:1", LIMIT)
        log.refused(f"[192.0.2.{host}]:2", LIMIT)
    log.close()
    assert _lines(caplog)[3:] == [
        *(
            f"too many sessions from [192.0.2.{host}]: 1 more refused ({LIMIT}) since the "
            "last line"
            for host in (1, 2, 3)
        ),
        "sessions turned away: 6 more from 3 other clients since the last line",
    ]
