"""The SMTP client's commands that stand alone, QUIT, and what an error leaves of a session.

NOOP, RSET, VRFY and any command event (:meth:`SMTPClientCommands.command`) are
one command and one reply each; QUIT goes out only where the session can take
it (RFC 5321 §4.1.1.10), after an error too. After any failure the session
either still stands between commands, and goes on, or is closed
(:meth:`SMTPClientCommands._end_unless_refused`): the rule every public call
follows, kept here once. Kept apart from the set-up (EHLO, STARTTLS, AUTH) and
from the mail transaction, which build on it.
"""

from __future__ import annotations

from collections.abc import Awaitable
from types import TracebackType
from typing import Final, TypeVar

from smtpcore._driver._client_base import one_call
from smtpcore._driver._smtp_client_wire import SMTPClientWire
from smtpcore._driver._smtp_errors import SMTPError, SMTPReplyError
from smtpcore.smtp import Command, Data, Noop, Quit, Reply, Rset, Vrfy
from smtpcore.smtp._state import RULES, State

__all__ = ["SMTPClientCommands"]

_T = TypeVar("_T")

_QUIT_STATES: Final = RULES[Quit].allowed


class SMTPClientCommands(SMTPClientWire):
    """QUIT, NOOP, RSET, VRFY and any command, and the session's end after an error."""

    @one_call
    async def quit(self) -> None:
        """Say QUIT and close; a server that is already gone is not an error.

        QUIT goes out only where the session can take it (not in the middle
        of a message, not after the session broke down); the connection is
        closed in every case.
        """
        await self._quit()

    async def _quit(self) -> None:
        try:
            if self._can_quit():
                await self._command(Quit(), self.timeouts.quit)
        except SMTPError:
            pass
        finally:
            await self._abort()

    def _can_quit(self) -> bool:
        """Whether QUIT may go now: connected, no reply due, a state it is legal in."""
        conn = self._conn
        return (
            conn is not None
            and self._transport is not None
            and not conn.pending
            and conn.state in _QUIT_STATES
        )

    def _between_commands(self) -> bool:
        """Whether the session stands between commands, where a failure leaves it
        usable: QUIT may go, and no message is half sent (a BDAT chunk sequence
        without its LAST is one, as DATA content is)."""
        conn = self._conn
        return conn is not None and conn.state is not State.BDAT and self._can_quit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Leave the block with QUIT, after an error too, while the session can take it.

        RFC 5321 §4.1.1.10: the client "MUST NOT intentionally close the
        transmission channel until it sends a QUIT command" (even after an error
        reply). A refusal, or the caller's own exception between commands, leaves
        the session between commands: :meth:`_quit_after_error` says QUIT there.
        Where the session cannot take it, the machine's state says so and the
        connection is only closed: mid-content (QUIT would be text, the final dot
        would deliver the part sent), and after a lost connection, a timeout or a
        broken reply, which closed it already. An exception that is not an
        ``Exception`` (a cancellation, ``KeyboardInterrupt``) asks the task to stop,
        not to wait on the network: the connection is closed at once. So is a
        session another task's call is using.
        """
        if exc_type is None:
            await self.quit()
        elif isinstance(exc, Exception) and not self._busy:
            await self._quit_after_error()
        else:
            await self._abort()

    @one_call
    async def _quit_after_error(self) -> None:
        """QUIT as a courtesy while an exception leaves the block, without waiting
        for its ``221``: RFC 5321 §4.1.1.10's MUST is that QUIT be sent before the
        close; waiting for the reply is a SHOULD, and a wait here is one more place
        for an outer deadline or a cancellation to land, where either would take the
        place of the block's exception (a permanent refusal would come out as a
        timeout) or be swallowed (an asyncio task that never stops). QUIT goes out
        only where the session can take it (as :meth:`quit` says it), written as the
        transport takes it; an error on the way is dropped, the block's own exception
        being the news, and the connection is closed (a write the peer's close
        failed may first wait up to a second for a reply it left behind, as every
        failed write does: :meth:`_lost_in_writing`). A cancellation during the
        write propagates, as cancellations must. Run as a call: another task's call
        meanwhile is refused as busy."""
        await self._quit_unwaited()

    def _can_quit_unwaited(self) -> bool:
        return self._can_quit()

    async def _write_quit(self) -> None:
        await self._write(self.timeouts.quit, Quit())

    @one_call
    async def noop(self) -> Reply:
        """NOOP (RFC 5321 §4.1.1.9): keeps the session alive; :class:`SMTPReplyError`
        unless the server answers 250."""
        return await self._simple(Noop(), "NOOP")

    @one_call
    async def rset(self) -> Reply:
        """RSET (RFC 5321 §4.1.1.5): abandon the mail transaction under way, if any."""
        return await self._simple(Rset(), "RSET")

    @one_call
    async def verify(self, address: str) -> Reply:
        """VRFY (RFC 5321 §3.5.1): ask the server about a user or mailbox.

        Returns the 250, 251 or 252 reply (252: "cannot verify, but will
        accept", what most servers say); any other answer raises
        :class:`SMTPReplyError` (502 where VRFY is turned off, 550 for an
        unknown user).
        """
        return await self._simple(Vrfy(address), "VRFY")

    @one_call
    async def command(self, command: Command) -> Reply:
        """Send any command event and return its reply, whatever its code.

        The machine checks the command first, as for every other method
        (:class:`~smtpcore.LocalProtocolError` for one the session cannot
        take now); only a 421, which ends the session, raises
        (:class:`SMTPConnectionError`). For ``EHLO``, ``STARTTLS``, ``AUTH``
        and the message commands, use the methods that follow them through.
        """
        return await self._closing_unless_refused(
            self._command(command, self._timeout_for(command))
        )

    async def _simple(self, command: Command, verb: str) -> Reply:
        reply = await self._closing_unless_refused(
            self._command(command, self._timeout_for(command))
        )
        if not reply.is_positive:
            raise SMTPReplyError(verb, reply)
        return reply

    def _timeout_for(self, command: Command) -> float | None:
        return (
            self.timeouts.data_initiation if isinstance(command, Data) else self.timeouts.command
        )

    async def _closing_unless_refused(self, call: Awaitable[_T]) -> _T:
        """Await ``call``; close the connection if it fails and leaves the session
        elsewhere than between commands (see :meth:`_end_unless_refused`)."""
        try:
            return await call
        except BaseException:
            await self._end_unless_refused()
            raise

    async def _end_unless_refused(self) -> None:
        """Close the connection after an error unless the session still stands between
        commands (:meth:`_between_commands`), as the machine's state tells.

        A refusal, the caller's mistake refused before anything went out, or the
        caller's own code failing between two transactions (``on_batch``) leave it
        there, and the session goes on. Anything that leaves a reply due, content
        half sent (DATA, or BDAT chunks without their LAST: a final dot now would
        deliver the part sent) or the session broken (a lost connection, a timeout,
        a broken reply) leaves nobody able to say where it stands, so it ends here
        rather than leave a socket open behind an exception.
        """
        if not self._between_commands():
            await self._abort()
