"""MX records, their order (RFC 5321 section 5.1) and the failed-exchanger memory."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore.routing import FailedExchangers, MXRecord, order_addresses, order_exchangers


class Replay:
    """A random source that replays arbitrary integers, in range or not."""

    def __init__(self, values: list[int]) -> None:
        self._values: Iterator[int] = iter(values)

    def randrange(self, stop: int, /) -> int:
        return next(self._values, 0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- MXRecord ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_name", "stored"),
    [
        ("mx.pqr.example", "mx.pqr.example"),
        ("MX.PQR.Example.", "mx.pqr.example"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("mx_1.example", "mx_1.example"),
        (".", ""),
        ("", ""),
    ],
)
def test_mx_record_canonical_exchange(given_name: str, stored: str) -> None:
    assert MXRecord(10, given_name).exchange == stored


def test_null_mx_record() -> None:
    assert MXRecord(0, ".").is_null
    assert not MXRecord(0, "mx.example").is_null


@pytest.mark.parametrize("preference", [-1, 65536])
def test_mx_preference_is_16_bits(preference: int) -> None:
    with pytest.raises(ValueError):
        MXRecord(preference, "mx.example")


def test_mx_preference_must_be_int() -> None:
    with pytest.raises(TypeError):
        MXRecord(True, "mx.example")


@pytest.mark.parametrize("name", ["[192.0.2.1]", "a..example", "a b.example", "x" * 64 + ".ex"])
def test_mx_exchange_must_be_a_name(name: str) -> None:
    with pytest.raises(ValueError):
        MXRecord(10, name)


# --- order_exchangers: examples ---------------------------------------------


def names(records: list[MXRecord]) -> list[str]:
    return [r.exchange for r in records]


def test_sorted_by_preference() -> None:
    records = [MXRecord(30, "c.example"), MXRecord(10, "a.example"), MXRecord(20, "b.example")]
    assert names(order_exchangers(records, random.Random(0))) == [
        "a.example",
        "b.example",
        "c.example",
    ]


def test_null_records_are_left_out() -> None:
    records = [MXRecord(0, "."), MXRecord(10, "a.example")]
    assert names(order_exchangers(records, random.Random(0))) == ["a.example"]


def test_duplicate_host_keeps_best_preference() -> None:
    records = [MXRecord(20, "a.example"), MXRecord(10, "b.example"), MXRecord(5, "A.example.")]
    assert [(r.preference, r.exchange) for r in order_exchangers(records, random.Random(0))] == [
        (5, "a.example"),
        (10, "b.example"),
    ]


def test_equal_preferences_spread_the_load() -> None:
    records = [MXRecord(10, f"{c}.example") for c in "abc"] + [MXRecord(20, "z.example")]
    rng = random.Random(5321)
    firsts = Counter(order_exchangers(records, rng)[0].exchange for _ in range(600))
    assert set(firsts) == {"a.example", "b.example", "c.example"}
    assert min(firsts.values()) > 120


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        # RFC 5321 section 5.1: drop this host and every exchanger whose
        # preference value is equal or higher.
        ({"b.example"}, ["a.example"]),
        ({"a.example"}, []),
        ({"c.example"}, ["a.example", "b.example"]),
        ({"C.Example."}, ["a.example", "b.example"]),
        ({"d.example"}, ["a.example", "b.example"]),
        ({"other.example"}, ["a.example", "b.example", "c.example", "d.example"]),
        ({"d.example", "b.example"}, ["a.example"]),
    ],
)
def test_self_pruning(local: set[str], expected: list[str]) -> None:
    records = [
        MXRecord(10, "a.example"),
        MXRecord(20, "b.example"),
        MXRecord(30, "c.example"),
        MXRecord(30, "d.example"),
    ]
    ordered = order_exchangers(records, random.Random(0), local_names=local)
    assert sorted(names(ordered)) == expected


# --- order_exchangers: properties -------------------------------------------

hosts = st.sampled_from([f"h{i}.example" for i in range(8)])
record_lists = st.lists(
    st.builds(MXRecord, st.integers(0, 4).map(lambda p: p * 10), hosts), max_size=12
)
random_sources = st.one_of(
    st.randoms(use_true_random=False),
    st.lists(st.integers(-(2**40), 2**40), max_size=20).map(Replay),
)


def best_per_host(records: list[MXRecord]) -> dict[str, int]:
    best: dict[str, int] = {}
    for record in records:
        best[record.exchange] = min(best.get(record.exchange, 0xFFFF), record.preference)
    return best


@settings(max_examples=100)
@given(record_lists, random_sources)
def test_order_is_a_permutation_consistent_with_preferences(
    records: list[MXRecord], rng: random.Random | Replay
) -> None:
    ordered = order_exchangers(records, rng)
    best = best_per_host(records)
    assert sorted((r.exchange, r.preference) for r in ordered) == sorted(best.items())
    preferences = [r.preference for r in ordered]
    assert preferences == sorted(preferences)


@settings(max_examples=100)
@given(record_lists, random_sources, st.sets(hosts, max_size=3))
def test_self_pruning_drops_exactly_the_right_exchangers(
    records: list[MXRecord], rng: random.Random | Replay, local: set[str]
) -> None:
    ordered = order_exchangers(records, rng, local_names=local)
    best = best_per_host(records)
    own = [p for host, p in best.items() if host in local]
    cutoff = min(own) if own else 0x10000
    expected = {host: p for host, p in best.items() if p < cutoff}
    assert {r.exchange: r.preference for r in ordered} == expected
    assert len(ordered) == len(expected)
    assert not {r.exchange for r in ordered} & local


@settings(max_examples=100)
@given(record_lists, random_sources, st.sets(hosts, max_size=4))
def test_failed_exchangers_stay_in_their_level_but_go_last(
    records: list[MXRecord], rng: random.Random | Replay, bad: set[str]
) -> None:
    clock = FakeClock()
    failures = FailedExchangers(clock)
    for host in bad:
        failures.mark_bad(host)
    ordered = order_exchangers(records, rng, failures=failures)
    assert sorted(r.exchange for r in ordered) == sorted(best_per_host(records))
    keys = [(r.preference, r.exchange in bad) for r in ordered]
    assert keys == sorted(keys)


# --- the failed-exchanger memory ---------------------------------------------


def test_failed_exchanger_goes_to_the_back_of_its_level_until_it_expires() -> None:
    clock = FakeClock()
    failures = FailedExchangers(clock, duration=60)
    records = [MXRecord(10, "a.example"), MXRecord(10, "b.example"), MXRecord(20, "c.example")]
    failures.mark_bad("A.Example.")
    for seed in range(20):
        ordered = order_exchangers(records, random.Random(seed), failures=failures)
        assert names(ordered) == ["b.example", "a.example", "c.example"]
    clock.now += 59.9
    assert failures.is_bad("a.example")
    clock.now += 0.1
    assert not failures.is_bad("a.example")
    firsts = {
        order_exchangers(records, random.Random(seed), failures=failures)[0].exchange
        for seed in range(20)
    }
    assert firsts == {"a.example", "b.example"}


def test_failed_exchanger_never_drops_below_a_worse_level() -> None:
    failures = FailedExchangers(FakeClock())
    failures.mark_bad("a.example")
    records = [MXRecord(10, "a.example"), MXRecord(20, "c.example")]
    assert names(order_exchangers(records, random.Random(0), failures=failures)) == [
        "a.example",
        "c.example",
    ]


def test_mark_good_forgets_and_len_counts_live_entries() -> None:
    clock = FakeClock()
    failures = FailedExchangers(clock, duration=10)
    failures.mark_bad("a.example")
    clock.now += 5
    failures.mark_bad("b.example")
    assert len(failures) == 2
    failures.mark_good("A.EXAMPLE")
    assert not failures.is_bad("a.example")
    assert len(failures) == 1
    clock.now += 10
    assert len(failures) == 0


def test_marking_again_restarts_the_period() -> None:
    clock = FakeClock()
    failures = FailedExchangers(clock, duration=10)
    failures.mark_bad("a.example")
    clock.now += 8
    failures.mark_bad("a.example")
    clock.now += 8
    assert failures.is_bad("a.example")


def test_memory_is_bounded() -> None:
    clock = FakeClock()
    failures = FailedExchangers(clock, max_entries=3)
    for i in range(5):
        clock.now += 1
        failures.mark_bad(f"h{i}.example")
    assert len(failures) == 3
    assert not failures.is_bad("h0.example")
    assert not failures.is_bad("h1.example")
    assert failures.is_bad("h4.example")


@pytest.mark.parametrize(("duration", "entries"), [(0, 10), (-1, 10), (10, 0)])
def test_memory_settings_are_checked(duration: float, entries: int) -> None:
    with pytest.raises(ValueError):
        FailedExchangers(FakeClock(), duration=duration, max_entries=entries)


# --- order_addresses ---------------------------------------------------------

MIXED: list[IPv4Address | IPv6Address] = [
    ip_address("192.0.2.1"),
    ip_address("2001:db8::1"),
    ip_address("192.0.2.2"),
    ip_address("2001:db8::2"),
    ip_address("192.0.2.1"),
]


def test_ipv6_first_keeps_resolver_order_within_a_family() -> None:
    assert [str(a) for a in order_addresses(MIXED, "ipv6", random.Random(0))] == [
        "2001:db8::1",
        "2001:db8::2",
        "192.0.2.1",
        "192.0.2.2",
    ]


def test_ipv4_first() -> None:
    assert [str(a) for a in order_addresses(MIXED, "ipv4", random.Random(0))] == [
        "192.0.2.1",
        "192.0.2.2",
        "2001:db8::1",
        "2001:db8::2",
    ]


@given(random_sources)
def test_any_order_is_a_permutation(rng: random.Random | Replay) -> None:
    assert sorted(map(str, order_addresses(MIXED, "any", rng))) == sorted(set(map(str, MIXED)))
