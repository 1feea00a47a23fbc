"""The relay's places per destination (:mod:`smtpcore.server.places`): never more than
the limit in use, and a place given back goes to the message that waited longest, so a
steady flow of newcomers cannot starve one that waits."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpcore.address import Mailbox
from smtpcore.routing import RemoteDelivery
from smtpcore.server.places import DestinationPlaces, destination
from smtpcore.server.tokens import SessionTokens
from smtpcore.testing import strategies as sst

PLACES = ("a.example", "b.example")

steps = st.lists(
    st.tuples(st.sampled_from(("take", "give_back")), st.sampled_from(PLACES), st.integers(0, 9)),
    max_size=200,
)


@given(limit=st.integers(1, 3), script=steps)
def test_places_are_bounded_and_handed_over_first_come_first_served(
    limit: int, script: list[tuple[str, str, int]]
) -> None:
    places = DestinationPlaces(limit)
    holding = dict.fromkeys(PLACES, 0)  # sessions running at each place
    owed: dict[str, set[str]] = {p: set() for p in PLACES}  # places handed over
    line: dict[str, list[str]] = {p: [] for p in PLACES}  # the model's waiting line
    for action, place, number in script:
        queue_id = f"m{number}"
        if action == "take":
            if places.take(place, queue_id):
                # Only one owed a place, or a newcomer while nobody waits.
                assert queue_id in owed[place] or not line[place]
                owed[place].discard(queue_id)
                holding[place] += 1
            else:
                assert queue_id not in owed[place]
                if queue_id not in line[place]:
                    line[place].append(queue_id)
        elif holding[place]:
            holding[place] -= 1
            heir = places.give_back(place)
            assert heir == (line[place].pop(0) if line[place] else None)
            if heir is not None:
                owed[place].add(heir)
        assert holding[place] + len(owed[place]) == places.in_use(place) <= limit


def test_a_withdrawn_message_passes_its_place_to_the_next_in_line() -> None:
    places = DestinationPlaces(1)
    assert places.take("a.example", "first")
    assert not places.take("a.example", "m1") and not places.take("a.example", "m2")
    assert places.give_back("a.example") == "m1" and places.handed("m1")
    assert places.awaited_by("m2") == {"a.example"}
    assert places.withdraw("m1", "a.example") == "m2"  # m1 was deleted meanwhile
    assert places.take("a.example", "m2") and not places.take("a.example", "m3")


@given(mailbox=sst.mailboxes(), port=st.integers(1, 65535))
def test_the_smart_host_is_the_destination_when_there_is_one(mailbox: Mailbox, port: int) -> None:
    """Every domain relayed through one smart host shares its places."""
    assert destination(RemoteDelivery(mailbox, mailbox.domain)) == mailbox.domain
    via = RemoteDelivery(mailbox, mailbox.domain, smart_host=("relay.example", port))
    assert destination(via) == f"[relay.example]:{port}"


def test_a_destination_has_at_least_one_place() -> None:
    with pytest.raises(ValueError, match="place"):
        DestinationPlaces(0)


token_steps = st.lists(
    st.tuples(
        st.sampled_from(("ask", "give_back", "cancel", "hand_and_cancel", "withdraw")),
        st.integers(0, 9),
    ),
    max_size=60,
)


@given(count=st.integers(1, 3), script=token_steps)
def test_session_tokens_are_bounded_and_handed_over_first_come_first_served(
    count: int, script: list[tuple[str, int]]
) -> None:
    """Never more than ``count`` held; a token given back goes to the job that asked
    first among those still waiting, even one cancelled as it is handed over passes it
    on; one withdrawn leaves the line with none; and no token stays free while a job
    waits (none is lost)."""

    async def main() -> None:
        tokens = SessionTokens(count)
        got: list[int] = []  # jobs in the order they got a token
        expected: list[int] = []  # jobs in the order they asked, less those cancelled
        held: list[int] = []
        jobs: dict[int, asyncio.Task[None]] = {}
        withdrawals: dict[int, asyncio.Future[None]] = {}

        async def job(number: int) -> None:
            withdrawals[number] = asyncio.get_running_loop().create_future()
            if await tokens.take(withdrawals[number]):
                got.append(number)
                held.append(number)

        def in_line() -> list[int]:
            return [n for n in expected if n not in got]

        for number, (action, pick) in enumerate(script):
            if action == "ask":
                jobs[number] = asyncio.get_running_loop().create_task(job(number))
                expected.append(number)
            elif action == "give_back" and held:
                held.pop(pick % len(held))
                tokens.give_back()
            elif action == "cancel" and in_line():
                waiting = in_line()[pick % len(in_line())]
                jobs[waiting].cancel()
                expected.remove(waiting)
            elif action == "hand_and_cancel" and held and in_line():
                held.pop(pick % len(held))
                tokens.give_back()  # to the first in line, which is cancelled before it runs
                first = in_line()[0]
                jobs[first].cancel()
                expected.remove(first)
            elif action == "withdraw" and in_line():
                waiting = in_line()[pick % len(in_line())]
                withdrawals[waiting].set_result(None)
                expected.remove(waiting)
            for _ in range(3):
                await asyncio.sleep(0)
            assert len(held) <= count and tokens.free == count - len(held)
            assert got == expected[: len(got)]
            assert len(held) == count or not in_line()
            assert tokens.waiting == len(in_line())
        for task in jobs.values():
            task.cancel()
        await asyncio.gather(*jobs.values(), return_exceptions=True)

    asyncio.run(main())


def test_session_tokens_need_one() -> None:
    with pytest.raises(ValueError, match="session token"):
        SessionTokens(0)


def test_a_stop_takes_every_waiter_out_of_the_line_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop cancels every job in line at once, in no particular order, and each left
    the line by a scan of it: quadratic (20,000 waiters held a stop for seconds past
    its grace). Counted as comparisons between waiters, which a scan makes and a
    hashed line does not."""
    compared = 0

    class CountedFuture(asyncio.Future[bool]):
        def __eq__(self, other: object) -> bool:
            nonlocal compared
            compared += 1
            return self is other

        __hash__ = asyncio.Future.__hash__

    async def main() -> None:
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "create_future", lambda: CountedFuture(loop=loop))
        tokens = SessionTokens(1)
        await tokens.take()
        jobs = [loop.create_task(tokens.take()) for _ in range(1000)]
        await asyncio.sleep(0)
        random.Random(1).shuffle(jobs)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        assert tokens.waiting == 0
        tokens.give_back()
        assert tokens.free == 1

    asyncio.run(main())
    assert compared < 1000


def test_a_token_given_back_passes_by_a_waiter_withdrawn_in_the_same_loop_turn() -> None:
    """A withdrawal is done before its callback takes the waiter out of the line; a
    token given back in between (a session ending in the same loop turn) went to it,
    and ``take`` returned True though ``withdrawn`` was done first. It passes that
    waiter by: ``take`` says False, and the token stays free."""

    async def main() -> None:
        tokens = SessionTokens(1)
        assert await tokens.take()
        withdrawn = asyncio.get_running_loop().create_future()
        job = asyncio.ensure_future(tokens.take(withdrawn))
        await asyncio.sleep(0)
        withdrawn.set_result(None)
        tokens.give_back()
        assert await job is False
        assert tokens.free == 1 and tokens.waiting == 0

    asyncio.run(main())
