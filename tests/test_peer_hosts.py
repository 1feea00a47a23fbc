"""The shared peer host strings: one string per address, and never more than a few
hundred kept, however many clients come (interning kept each for good on 3.12.0)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtpcore._driver import _peer_hosts
from smtpcore._driver._peer_hosts import PEER_HOSTS_KEPT, shared_peer_host


def _host(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def test_sessions_from_one_address_share_its_host_string() -> None:
    first = shared_peer_host("".join(["192.0.2.", "7"]))
    again = shared_peer_host("".join(["192.0.2.", "7"]))
    assert again is first


def test_the_cache_stays_bounded_after_many_distinct_addresses() -> None:
    for i in range(10 * PEER_HOSTS_KEPT):
        assert shared_peer_host(_host(i)) == _host(i)
        assert len(_peer_hosts._hosts) <= PEER_HOSTS_KEPT


@given(st.lists(st.integers(0, 2**24 - 1), max_size=3 * PEER_HOSTS_KEPT))
def test_a_shared_host_is_always_equal_to_the_one_given(numbers: list[int]) -> None:
    for i in numbers:
        assert shared_peer_host(_host(i)) == _host(i)
    assert len(_peer_hosts._hosts) <= PEER_HOSTS_KEPT
