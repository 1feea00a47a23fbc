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
from collections.abc import Awaitable, Callable

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from peers import raw_smtp_session, running_smtp_server
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
