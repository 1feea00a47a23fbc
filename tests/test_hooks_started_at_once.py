"""A hook the asyncio server starts at once answers as one awaited under its deadline.

Once a session runs in its task, the asyncio server runs the ``handle_mail``,
``handle_rcpt`` and ``handle_data`` hooks up to their first wait in the
command's own call (``LinkBase.start_within``), and makes a coroutine only for
a hook that waits; trio's server awaits every hook under its deadline
(``within``). Whatever a hook does (answers, answers ``None``, raises, with or
without waiting first), the two give the same replies.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from peers import raw_smtp_session, running_smtp_server
from smtpcore._asyncio_raw import RawSocketTransport
from smtpcore._asyncio_runner import SessionRunner
from smtpcore._driver._timeouts import new_pump
from smtpcore.handler import Envelope, Handler, Session
from smtpcore.smtp import Mail, Rcpt, Reply

BEHAVIOURS = ("ok", "refuse", "none", "raise", "wait-ok", "wait-refuse", "wait-none", "wait-raise")


class Scripted(Handler):
    """Each hook does what its command's mailbox names: MAIL and DATA what the
    sender's local part's two words say (``wait-ok.none``), RCPT its own."""

    def __init__(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        self.sleep = sleep

    async def act(self, behaviour: str, accepted: Reply) -> Reply | None:
        if behaviour.startswith("wait-"):
            await self.sleep(0)
            behaviour = behaviour.removeprefix("wait-")
        if behaviour == "raise":
            raise RuntimeError("scripted")
        if behaviour == "none":
            return None
        if behaviour == "refuse":
            return Reply(550, "scripted refusal")
        return accepted

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        assert command.sender is not None
        return await self.act(command.sender.local_part.split(".")[0], Reply(250, "sender"))

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        return await self.act(command.recipient.local_part, Reply(250, "recipient"))

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        assert envelope.sender is not None
        return await self.act(envelope.sender.local_part.split(".")[1], Reply(354, "go on"))


def transaction(mail: str, data: str, recipients: list[str]) -> list[bytes]:
    return [
        f"MAIL FROM:<{mail}.{data}@abc.example>".encode(),
        *(f"RCPT TO:<{rcpt}@pqr.example>".encode() for rcpt in recipients),
        b"DATA",
    ]


def replies(port: int, transactions: list[list[bytes]]) -> list[bytes]:
    got = []
    with raw_smtp_session("127.0.0.1", port) as client:
        client.recv_reply()
        client.command(b"EHLO client.test")
        # A first hook puts the session in its task: the hooks after it start at once.
        got.append(client.command(b"MAIL FROM:<ok.ok@abc.example>"))
        got.append(client.command(b"RSET"))
        for lines in transactions:
            for line in lines:
                got.append(client.command(line))
            if got[-1].startswith(b"354"):
                got.append(client.command(b"Subject: hooks\r\n\r\nbody\r\n."))
            got.append(client.command(b"RSET"))
        got.append(client.command(b"QUIT"))
    return got


behaviour = st.sampled_from(BEHAVIOURS)
transactions = st.lists(
    st.builds(transaction, behaviour, behaviour, st.lists(behaviour, min_size=1, max_size=3)),
    min_size=1,
    max_size=3,
)


def test_hooks_started_at_once_answer_as_awaited_hooks() -> None:
    with (
        running_smtp_server("asyncio", Scripted(asyncio.sleep)) as on_asyncio,
        running_smtp_server("trio", Scripted(trio.sleep)) as on_trio,
    ):

        @settings(max_examples=40, deadline=None)
        @given(transactions)
        def check(script: list[list[bytes]]) -> None:
            assert replies(on_asyncio.port, script) == replies(on_trio.port, script)

        check()


# -- the pump: a hook started in it answers as one started without it --------------------
#
# The asyncio server's sessions lend their hooks one pump (smtpcore._driver._timeouts.
# new_pump), through which a hook that answers at once costs no StopIteration. A hook
# program below answers, raises, waits (a bare yield, a future the loop resolves, a
# future nothing resolves), starts hooks of its own (while the pump is lent to it, and
# after), and catches what comes out of them, cancellations too; its session may be
# cancelled after some passes of the loop. With the pump and without, the program must
# see the same things, end the same way, and leave the pump idle.

Step = tuple[Any, ...]

leaf_steps = st.one_of(
    st.tuples(st.just("answer"), st.integers(0, 9)),
    st.tuples(st.just("raise"), st.integers(0, 9)),
    st.tuples(st.just("yield")),
    st.tuples(st.just("future"), st.integers(0, 9)),
    st.tuples(st.just("forever")),
)
programs = st.recursive(
    st.lists(leaf_steps, max_size=4),
    lambda inner: st.lists(
        st.one_of(
            leaf_steps,
            st.tuples(st.just("nest"), inner),
            st.tuples(st.just("guard"), inner, st.booleans()),
        ),
        max_size=4,
    ),
    max_leaves=12,
)


async def run_program(
    transport: RawSocketTransport, program: list[Step], trace: list[object]
) -> object:
    """A handler's hook that does what ``program`` says, ``trace`` what it saw."""
    loop = asyncio.get_running_loop()
    for step in program:
        kind = step[0]
        if kind == "answer":
            return step[1]
        if kind == "raise":
            raise ValueError(step[1])
        if kind == "yield":
            await asyncio.sleep(0)
            trace.append("yielded")
        elif kind == "future":
            future = loop.create_future()
            loop.call_soon(future.set_result, step[1])
            trace.append(("resolved", await future))
        elif kind == "forever":
            await loop.create_future()
        elif kind == "nest":
            started = transport.start_within(30.0, run_program(transport, step[1], trace))
            if isinstance(started, tuple):
                trace.append(("at once", started[0]))
            else:
                trace.append(("waited", await started))
        else:  # guard: its own steps, what comes out of them caught
            try:
                trace.append(("guarded", await run_program(transport, step[1], trace)))
            except (Exception, asyncio.CancelledError) as exc:
                trace.append(("caught", type(exc).__name__, str(exc)))
                if not step[2]:
                    raise
    return "end"


async def outcome_of(program: list[Step], cancel_after: int | None, pumped: bool) -> list[object]:
    """What ``program`` sees and how it ends, started as the asyncio server starts a hook
    (``RawSocketTransport.start_within``, with the pump or without), in a session
    cancelled after ``cancel_after`` passes of the loop (never: None), and at every
    pass after until it ends; last, whether the pump is idle in its place (True without
    one)."""
    trace: list[object] = []

    async def session(transport: RawSocketTransport) -> None:
        runner = transport._runner
        assert runner is not None
        runner.task = asyncio.current_task()  # the session runs in its task
        timers = runner._timers
        timers.pump = new_pump() if pumped else None
        try:
            started = transport.start_within(30.0, run_program(transport, program, trace))
            if isinstance(started, tuple):
                trace.append(("answered at once", started[0]))
            else:
                trace.append(("answered", await started))
        except (Exception, asyncio.CancelledError) as exc:
            trace.append(("failed", type(exc).__name__, str(exc)))
        if pumped:  # the pump is back, idle, or a new one stands in for it
            pump = timers.pump
            trace.append(
                pump is not None
                and pump.gi_frame is not None
                and pump.gi_yieldfrom is None
                and not pump.gi_running
            )
        else:
            trace.append(True)

    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        runner = SessionRunner(loop, lambda runner: None)
        transport = RawSocketTransport(ours, None, loop, runner)
        task = loop.create_task(session(transport))
        if cancel_after is not None:
            for _ in range(cancel_after):
                await asyncio.sleep(0)
            while not task.done():  # again at each pass: a hook may catch one
                task.cancel()
                await asyncio.sleep(0)
        await asyncio.gather(task, return_exceptions=True)
    return trace


def waits_for_ever(program: list[Step]) -> bool:
    return any(
        step[0] == "forever" or (step[0] in ("nest", "guard") and waits_for_ever(step[1]))
        for step in program
    )


def test_a_hook_started_in_the_pump_answers_raises_and_is_cancelled_as_one_without_it() -> None:
    loop = asyncio.new_event_loop()  # one loop for every example: asyncio.run's costs more

    @settings(max_examples=300, deadline=None)
    @given(programs, st.none() | st.integers(0, 6))
    def check(program: list[Step], cancel_after: int | None) -> None:
        if cancel_after is None and waits_for_ever(program):
            cancel_after = 6  # a wait for ever is ended by the session's cancellation
        pumped = loop.run_until_complete(outcome_of(program, cancel_after, pumped=True))
        plain = loop.run_until_complete(outcome_of(program, cancel_after, pumped=False))
        assert pumped == plain

    try:
        check()
    finally:
        loop.close()


@pytest.mark.parametrize("pumped", [True, False], ids=["pump", "without"])
def test_a_hook_lent_the_pump_times_out_and_is_closed_as_one_without_it(pumped: bool) -> None:
    """A hook that waits in the pump is cancelled by its deadline, and closed with the
    session's coroutine (a server's close), as one started without: it sees the
    cancellation, then the close, and the pump in place stays idle."""
    seen: list[str] = []

    async def hook() -> int:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        except GeneratorExit:
            seen.append("closed")
            raise
        return 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.setblocking(False)
            runner = SessionRunner(loop, lambda runner: None)
            runner.task = asyncio.current_task()
            runner._timers.pump = new_pump() if pumped else None
            transport = RawSocketTransport(ours, None, loop, runner)
            started = transport.start_within(0.05, hook())
            assert not isinstance(started, tuple)
            with pytest.raises(TimeoutError):
                await started
            assert seen == ["cancelled"]
            started = transport.start_within(30.0, hook())
            assert not isinstance(started, tuple)
            rest = started.__await__()
            assert isinstance(rest.send(None), asyncio.Future)  # waits, under its deadline
            rest.close()
            assert seen == ["cancelled", "closed"]
            pump = runner._timers.pump
            if pumped:
                assert pump is not None and pump.gi_yieldfrom is None
            else:
                assert pump is None

    asyncio.run(main())
