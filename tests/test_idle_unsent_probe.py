"""The judgment of a session whose timeout went off with replies unsent, on the counts
its transport gives: the transport's count of bytes waiting, and the kernel's of bytes
the client has not acknowledged (where it counts: Linux).

Driven with a scripted transport and a clock whose sleeps return at once, so that each
look sees the counts the test says, with no real time (the adapters' own tests, over
loopback, are in ``test_adapters_idle_unsent.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st

from smtpcore._driver._served_session import NOT_TAKEN_LOOKS, NOT_TAKEN_PROBE, ServedSession
from smtpcore._driver._transport import Link


@dataclass
class Scripted:
    """A transport and a clock in one: ``waiting[i]`` and ``unacknowledged[i]`` are what
    the counts say after ``i`` sleeps (the last repeated); ``unacknowledged`` None: the
    transport has no such method's answer (the kernel cannot say)."""

    waiting: list[int]
    unacknowledged: list[int | None] | None = None
    sleeps: list[float] = field(default_factory=list)

    def _at(self, counts: list[Any]) -> Any:
        return counts[min(len(self.sleeps), len(counts) - 1)]

    def waiting_to_send(self) -> int:
        return int(self._at(self.waiting))

    def count_unacknowledged(self) -> int | None:
        return None if self.unacknowledged is None else self._at(self.unacknowledged)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class _Transport:
    """What the link asks of the transport, from the script."""

    def __init__(self, script: Scripted) -> None:
        self.waiting_to_send = script.waiting_to_send
        self.unacknowledged = script.count_unacknowledged


@dataclass
class _State:
    stopping: bool = False


@dataclass
class _Session:
    """The fields of a session that the probe reads and sets."""

    transport: Link
    state: _State = field(default_factory=_State)
    _write_unfinished: bool = False


def judged(script: Scripted) -> tuple[bool, bool]:
    """The probe's answer over ``script``, and the session's ``_write_unfinished`` after."""
    session = _Session(Link(cast(Any, _Transport(script)), cast(Any, script)))
    not_taken = asyncio.run(ServedSession._note_write_not_taken(cast(Any, session)))
    return not_taken, session._write_unfinished


def test_where_the_kernel_cannot_count_the_probe_looks_once() -> None:
    """As before: one :data:`NOT_TAKEN_PROBE`, the transport's count alone."""
    script = Scripted(waiting=[5000])
    assert judged(script) == (True, True)
    assert script.sleeps == [NOT_TAKEN_PROBE]


def test_a_kernel_count_that_never_falls_is_watched_for_every_look() -> None:
    """A client that never reads: neither count falls, in any of the looks."""
    script = Scripted(waiting=[5000], unacknowledged=[90_000])
    assert judged(script) == (True, True)
    assert script.sleeps == [NOT_TAKEN_PROBE] * NOT_TAKEN_LOOKS


def test_a_kernel_count_of_0_to_begin_with_is_looked_at_once() -> None:
    """Everything sent is acknowledged (what waits is the transport's alone): the
    kernel's count cannot fall, so the probe looks once, as where it cannot count."""
    script = Scripted(waiting=[5000], unacknowledged=[0])
    assert judged(script) == (True, True)
    assert script.sleeps == [NOT_TAKEN_PROBE]


def test_a_kernel_count_that_falls_at_a_later_look_is_a_client_reading() -> None:
    """A client reading slowly: its window reopens after a few seconds, the kernel's
    count falls, while the transport's stays (the socket has no room yet)."""
    script = Scripted(waiting=[5000], unacknowledged=[90_000, 90_000, 90_000, 88_000])
    assert judged(script) == (False, False)
    assert script.sleeps == [NOT_TAKEN_PROBE] * 3


def test_a_kernel_count_that_rises_as_the_transports_falls_is_a_client_reading() -> None:
    """The transport handed the kernel what the client made room for: its count fell,
    the kernel's rose by as much."""
    script = Scripted(waiting=[5000, 3000], unacknowledged=[90_000, 92_000])
    assert judged(script) == (False, False)


def test_a_kernel_count_lost_meanwhile_leaves_the_transports() -> None:
    """The connection closed during the probe (None from the kernel): the transport's
    count alone says, as where the kernel never counted."""
    script = Scripted(waiting=[5000], unacknowledged=[90_000, None])
    assert judged(script) == (True, True)


def test_nothing_waiting_is_no_probe() -> None:
    script = Scripted(waiting=[0], unacknowledged=[90_000])
    assert judged(script) == (False, False)
    assert script.sleeps == []


COUNTS = st.lists(st.integers(0, 3), min_size=1, max_size=NOT_TAKEN_LOOKS + 2)
KERNEL = st.none() | st.lists(
    st.none() | st.integers(0, 3), min_size=1, max_size=NOT_TAKEN_LOOKS + 2
)


def expected(script: Scripted) -> tuple[bool, int]:
    """What the probe should say over ``script``, and after how many sleeps: a client
    that never reads is one neither of whose counts ever fell below its first."""
    waiting = script.waiting[0]
    if not waiting:
        return False, 0
    kernel = None if script.unacknowledged is None else script.unacknowledged[0]
    looks = NOT_TAKEN_LOOKS if kernel else 1  # a count of 0 cannot fall
    for look in range(1, looks + 1):
        now = script.waiting[min(look, len(script.waiting) - 1)]
        if now < waiting:
            return False, look
        if kernel is not None and script.unacknowledged is not None:
            later = script.unacknowledged[min(look, len(script.unacknowledged) - 1)]
            if later is not None and later < kernel:
                return False, look
    return True, looks


@given(COUNTS, KERNEL)
def test_a_session_is_cut_exactly_when_no_count_fell(
    waiting: list[int], unacknowledged: list[int | None] | None
) -> None:
    """Whatever the counts do, the probe cuts the session only where neither fell below
    where it began in any look, looks no more than it must, and no more than
    :data:`NOT_TAKEN_LOOKS` times."""
    script = Scripted(waiting=waiting, unacknowledged=unacknowledged)
    not_taken, sleeps = expected(script)
    assert judged(script) == (not_taken, not_taken)
    assert len(script.sleeps) == sleeps
