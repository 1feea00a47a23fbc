"""The server's replies in a client session: read, matched, recorded.

A layer of :class:`~smtpcore.smtp.ClientConnection` (see ``smtp/_client.py``).
Each reply answers the oldest event still awaited; the state moves only on the
codes the server sends, the transaction records each recipient's fate (one
reply after the content in SMTP, one per accepted recipient in LMTP, RFC 2033
§4.2), and EHLO, HELO, STARTTLS and XCLIENT change what the server offers. A
reply no command asked for is refused, save a 421 (RFC 5321 §3.8).
"""

from __future__ import annotations

from typing import Final

from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore.smtp._client_awaited import _Awaited, _name
from smtpcore.smtp._client_commands import _SESSION_RESETS
from smtpcore.smtp._client_content import ClientContentLayer
from smtpcore.smtp._events import (
    AuthResponse,
    Bdat,
    Data,
    Ehlo,
    Helo,
    Lhlo,
    Mail,
    Rcpt,
    StartTls,
    Xclient,
)
from smtpcore.smtp._extensions import ServerExtensions
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._state import END_OF_DATA_RULE, State, replies_after_content
from smtpcore.smtp._transaction import _Transaction

_CLOSED: Final = State.CLOSED
"""Read as a global in ``_dispatch``: a member looked up on the enum costs a hook."""


class ClientRepliesLayer(ClientContentLayer):
    """Reading replies and recording what each one answers."""

    def _read_reply(self) -> Reply | None:
        view = self._received
        if not self._queue and not b"421".startswith(bytes(view[:3])):
            raise RemoteProtocolError(
                self._out_of_turn("unsolicited reply", repr(bytes(view[:80])))
            )
        limit = self.max_reply_line
        if view.find(b"\n", 0, limit) < 0:
            if len(view) >= limit:
                raise RemoteProtocolError(f"reply line longer than {limit} octets")
            return None  # the line is not complete yet
        return self._parser.next_reply(self._buffer, enhanced=self._enhanced_status_codes)

    def _out_of_turn(self, unasked: str, shown: str) -> str:
        """Why a reply (``shown``) no command waits for is refused: ``unasked``, but after
        the 354 and before the end of the content has gone out, the one reply to come
        answers that end (RFC 5321 §3.3, §4.1.1.4): one sent earlier cannot, and read
        after the end it would pass for its answer (a message reported delivered that
        was not)."""
        if self._state is State.DATA:  # the 354 came: the content and its end are due
            return f"the server replied before the end of the message: {shown}"
        return f"{unasked}: {shown}"

    def _refuse_stale_reply(self) -> None:
        """Bytes are buffered and no reply is awaited: see :meth:`send`."""
        start = bytes(self._received[:80])
        if b"421".startswith(start[:3]):
            raise LocalProtocolError("the server sent a reply: read it with next_event() first")
        refused = RemoteProtocolError(  # named in the state before
            self._out_of_turn("the server sent a reply no command asked for", repr(start))
        )
        self._fail()
        raise refused

    def _record_fused(self, entry: _Awaited, reply: Reply) -> None:
        """Record ``reply``, one of ``entry.fused`` (the success of MAIL, RCPT, DATA or
        the end of the content, ``entry`` at the head of the queue), as
        :meth:`_dispatch` records it, without that method's tests for the greeting,
        the unasked, the refused and LMTP: the reply most replies are. A property
        test holds the two equal."""
        queue = self._queue
        event = entry.event
        transaction = entry.transaction
        assert transaction is not None  # fused only where there is one
        if type(event) is Rcpt:
            transaction.replies[entry.recipient] = reply
            self._answered_recipient = event.recipient
        else:
            self._answered_recipient = None
            if type(event) is Mail:
                transaction.mail_reply = reply
                transaction.complete = False
            elif type(event) is Data:  # the 354
                transaction.data_reply = reply
                self._content_transaction = transaction
            else:  # after the content: SMTP's one reply for every recipient
                deliveries = transaction.deliveries
                for index, answer in enumerate(transaction.replies):
                    if answer is not None and 200 <= answer.code < 300:
                        deliveries[index] = reply
                transaction.end_replies.append(reply)
                transaction.complete = True
        queue.popleft()
        self._state = entry.rule.on_success  # type: ignore[assignment]  # a State where fused
        self._answered = event
        self._last_transaction = transaction
        if queue and self._state is not entry.after:
            self._reproject()  # not the success the commands behind it were checked for

    def _dispatch(self, reply: Reply) -> None:
        self._answered_recipient = None
        queue = self._queue
        if not queue:
            if reply.code != 421:
                raise RemoteProtocolError(self._out_of_turn("unsolicited reply", str(reply)))
            self._answered = None
            self._close()
            return
        entry = queue[0]
        event = entry.event
        if event is None:
            self._answer_greeting(reply)
            return
        code = reply.code
        rule = entry.rule
        success = rule.on_success
        if type(success) is State and code in rule.success_codes:
            moved: State | None = success  # what rule.move gives: a test holds them equal
        else:
            current = State.READY if isinstance(event, AuthResponse) else self._state
            moved = rule.move(code, current)
        if moved is None:
            raise RemoteProtocolError(f"{code} is not a reply to {_name(event)}")
        if (
            self.lmtp
            and code == 354
            and isinstance(event, Data)
            and entry.transaction is not None
            and not entry.transaction.accepted_indexes()
        ):
            raise RemoteProtocolError("354 to DATA with no accepted recipient (RFC 2033 §4.2)")
        self._answered = event
        transaction = entry.transaction
        if transaction is not None:
            self._last_transaction = transaction
        if rule is END_OF_DATA_RULE:
            self._answer_end(entry, reply, moved)
        else:
            queue.popleft()
            self._state = moved
            kind = type(event)  # an event's exact class (RULES has no subclass)
            if kind is Rcpt and transaction is not None:  # the most frequent first
                transaction.replies[entry.recipient] = reply
                self._answered_recipient = event.recipient  # type: ignore[attr-defined]  # a Rcpt
            elif kind is Mail and transaction is not None:
                transaction.mail_reply = reply
                transaction.complete = not 200 <= code < 300
            else:
                self._answer_command(entry, reply)
        if moved is _CLOSED:  # 221 to QUIT (RFC 5321 §4.1.1.10) or a 421 (§3.8)
            self._close()
        elif queue and queue[0] is not entry and self._state is not entry.after:
            self._reproject()  # not the success the commands behind it were checked for

    def _answer_greeting(self, reply: Reply) -> None:
        greeted = {220: State.HELLO, 554: State.NO_SERVICE, 421: State.CLOSED}.get(reply.code)
        if greeted is None:
            raise RemoteProtocolError(f"{reply.code} is not a greeting (RFC 5321 §4.3.1)")
        self._queue.popleft()
        self._greeting = reply
        self._answered = None
        self._state = greeted
        if greeted is State.CLOSED:
            self._close()

    def _answer_command(self, entry: _Awaited, reply: Reply) -> None:
        """A reply to a command other than ``MAIL`` and ``RCPT`` (which
        :meth:`_dispatch` records itself)."""
        command = entry.event
        transaction = entry.transaction
        positive = 200 <= reply.code < 300
        if transaction is not None and isinstance(command, (Data, Bdat)):  # once a message
            if transaction.content_refused():
                return  # a chunk pipelined behind the refused one, discarded (RFC 3030 §2)
            transaction.data_reply = reply
            if reply.code == 354:  # the content's encoder is made with its first piece
                self._content_transaction = transaction
            elif not positive:
                transaction.complete = True
                transaction.refuse_content(reply)
            return
        if isinstance(command, (Ehlo, Lhlo)) and positive:
            self._offer(ServerExtensions.from_reply(reply), extended=True)
        elif isinstance(command, Helo) and positive:
            self._offer(ServerExtensions(), extended=False)
        elif isinstance(command, StartTls) and reply.code == 220:
            # Anything behind the 220 was sent in clear before the handshake:
            # never let it pass for a reply inside TLS (response injection).
            self._buffer.clear()
        elif isinstance(command, Xclient) and reply.code == 220:
            # The session starts over for the client XCLIENT named: EHLO again, and
            # only what that reply lists may be used.
            self._offer(ServerExtensions(), extended=False)
        if isinstance(command, _SESSION_RESETS):
            if not positive and reply.code != 421 and self._transaction is None:
                # Refused: the server keeps the transaction the reset was to end.
                self._transaction = entry.replaced
            elif self._last_transaction is not None:
                self._last_transaction.complete = True

    def _answer_end(self, entry: _Awaited, reply: Reply, moved: State) -> None:
        """A reply after the content, of as many as :func:`replies_after_content` says
        (the server machine's count too): one in SMTP, one per accepted recipient in
        LMTP, one after a refused chunk; ``moved`` is the state the session goes to
        once the last one is in. The everyday reply (SMTP, content that reached its
        end) costs no call: BDAT is every message's path to a CHUNKING server."""
        transaction = entry.transaction
        assert transaction is not None
        refused = transaction.data_reply  # content_refused(), inline: once a message
        reached_end = refused is None or refused.code < 400
        # Else the reply answers a BDAT LAST whose content the server discarded (RFC
        # 3030 §2): the recipients keep the refusal of the chunk that ended the message.
        if not self.lmtp:  # one reply decides for every accepted recipient (§4.1.1.4)
            if reached_end:
                deliveries = transaction.deliveries
                for index, answer in enumerate(transaction.replies):
                    if answer is not None and 200 <= answer.code < 300:  # accepted
                        deliveries[index] = reply
            done = True
        else:
            done = self._answer_lmtp_end(entry, transaction, reply, reached_end)
        transaction.end_replies.append(reply)
        if done or reply.code == 421:
            self._queue.popleft()
            transaction.complete = True
            self._state = moved

    def _answer_lmtp_end(
        self, entry: _Awaited, transaction: _Transaction, reply: Reply, reached_end: bool
    ) -> bool:
        """One of LMTP's replies after the content, for the next accepted recipient in
        order when the content reached its end (RFC 2033 §4.2); True once the last of
        them is in."""
        accepted = transaction.accepted_indexes()
        if not entry.replies_due:
            entry.replies_due = replies_after_content(
                lmtp=True, accepted=len(accepted), reached_end=reached_end
            )
        position = len(transaction.end_replies)
        if reached_end and position < len(accepted):
            index = accepted[position]
            transaction.deliveries[index] = reply
            self._answered_recipient = transaction.recipients[index]
        entry.replies_due -= 1
        return not entry.replies_due
