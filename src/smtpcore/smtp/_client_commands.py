"""Commands sent in a client session: checked, recorded, written.

A layer of :class:`~smtpcore.smtp.ClientConnection` (see ``smtp/_client.py``).
A command is checked against the state the session will be in once every
command before it has succeeded (the shared table of ``_state.py``), against
PIPELINING's groups (RFC 2920 §3.1) and against the server's extensions; then
it joins the queue of awaited events. The envelope of most messages (ASCII
addresses, no parameter) takes a shorter path to the same bytes. AUTH's
responses to a 334 go out here too.
"""

from __future__ import annotations

from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore._hostname import MAX_HOSTNAME
from smtpcore.address import Mailbox, format_path
from smtpcore.smtp._client_awaited import _Awaited, _awaited, _name
from smtpcore.smtp._client_session import ClientSessionLayer
from smtpcore.smtp._commands import format_command
from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    Helo,
    Lhlo,
    Mail,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Xclient,
    Xforward,
)
from smtpcore.smtp._extensions import MAX_COMMAND_LINE, check_command, command_line_limit
from smtpcore.smtp._params import NO_PARAMETERS
from smtpcore.smtp._state import END_OF_DATA_RULE, RULES, State, next_state
from smtpcore.smtp._transaction import _Transaction

# Commands after which more commands may follow in the same pipelined group
# (RFC 2920 §3.1, RFC 3030 §4.2). Every other command must be the last of its
# group, since the client has to see its reply first. Content is "the first
# command of a group", so the end of the content may be followed at once.
_GROUP_CONTINUES: Final = (Mail, Rcpt, Rset, Bdat, EndOfMessage, Xforward)

_TRANSACTION_EVENTS: Final = (Mail, Rcpt, Data, Bdat, EndOfMessage)

_SESSION_RESETS: Final = (Rset, Ehlo, Helo, Lhlo, Quit, Xclient)

_PATHS: Final[dict[tuple[str, str], bytes]] = {}
"""The wire form of the paths sent so far, by local part and domain: a client
sends from the same address, and often to the same few, message after message."""

_PATHS_KEPT: Final = 256


def _wire_path(mailbox: Mailbox | None) -> bytes:
    """``<mailbox>`` (``<>`` for None) as :func:`format_command` writes it, in UTF-8."""
    if mailbox is None:
        return b"<>"
    key = (mailbox.local_part, mailbox.domain)
    path = _PATHS.get(key)
    if path is None:
        if len(_PATHS) >= _PATHS_KEPT:
            _PATHS.clear()
        path = _PATHS[key] = format_path(mailbox).encode("utf-8")
    return path


class ClientCommandsLayer(ClientSessionLayer):
    """Sending commands: the checks, the queue's entries, the projected states."""

    def _send_command(self, command: Command) -> bytes:
        if self._bdat_due:
            raise LocalProtocolError(f"{self._bdat_due} octets of BDAT content are still due")
        queue = self._queue
        if queue:
            last = queue[-1]
            if not (self._pipelining and isinstance(last.event, _GROUP_CONTINUES)):
                self._check_group(command.verb)
            projected = last.after
        else:
            projected = self._state
        kind = type(command)
        rule = RULES[kind]
        if projected not in rule.allowed:
            raise LocalProtocolError(
                f"{command.verb} is not allowed in the {projected.name} state"
            )
        transaction = self._transaction
        success = rule.on_success
        entry = _awaited(
            command,
            rule,
            transaction,
            success
            if type(success) is State
            else next_state(rule, min(rule.success_codes), projected),
        )
        # The envelope of most messages, built and recorded without the general
        # checks: an ASCII address and no parameter, which no extension can refuse
        # (the general path gives the same bytes: a property test holds them equal).
        if kind is Rcpt:
            assert isinstance(command, Rcpt)
            to = command.recipient
            local, domain = to.local_part, to.domain
            if command.params is NO_PARAMETERS and local.isascii() and domain.isascii():
                assert transaction is not None  # the MAIL state implies a MAIL sent
                entry.recipient = transaction.add_recipient(to)
                entry.fused = rule.success_codes
                queue.append(entry)
                return b"RCPT TO:" + (_PATHS.get((local, domain)) or _wire_path(to)) + b"\r\n"
        elif kind is Mail:
            assert isinstance(command, Mail)
            sender = command.sender
            if command.params is NO_PARAMETERS and (
                sender is None or (sender.local_part.isascii() and sender.domain.isascii())
            ):
                self._transactions_begun += 1
                entry.transaction = self._transaction = _Transaction(
                    sender, utf8=False, binary=False, number=self._transactions_begun
                )
                entry.fused = rule.success_codes
                queue.append(entry)
                path = None if sender is None else _PATHS.get((sender.local_part, sender.domain))
                return b"MAIL FROM:" + (path or _wire_path(sender)) + b"\r\n"
        elif kind is Data and (transaction is None or not transaction.binary):
            if transaction is not None and not self.lmtp:  # LMTP's 354 is checked
                entry.fused = rule.success_codes
            queue.append(entry)
            return b"DATA\r\n"
        self._check_command(command)
        data = format_command(command)
        if len(data) > MAX_COMMAND_LINE:
            limit = command_line_limit(self._extensions, command)
            if len(data) > limit:
                raise LocalProtocolError(
                    f"{command.verb} would be a line of {len(data)} octets; a server need "
                    f"take no more than {limit} (RFC 5321 §4.5.3.1.4)"
                )
        if isinstance(command, Mail):
            params = command.params
            body = (params.get("BODY") or "").upper()
            self._transactions_begun += 1
            self._transaction = _Transaction(
                command.sender,
                utf8="SMTPUTF8" in params,
                binary=body == "BINARYMIME",
                number=self._transactions_begun,
            )
        elif isinstance(command, _SESSION_RESETS):
            entry.replaced = self._transaction
            self._transaction = None
        entry.transaction = self._transaction if isinstance(command, _TRANSACTION_EVENTS) else None
        if isinstance(command, Rcpt):
            assert self._transaction is not None  # the MAIL state implies a MAIL sent
            entry.recipient = self._transaction.add_recipient(command.recipient)
        elif isinstance(command, Bdat):
            self._bdat_due = command.size
            if command.last:
                entry.rule = END_OF_DATA_RULE
                entry.after = State.READY
        self._queue.append(entry)
        return data

    def _check_group(self, verb: str) -> None:
        """One command at a time, unless the server offered PIPELINING (RFC 2920 §3.1)."""
        if not self._queue:
            return
        last = self._queue[-1].event
        if last is None:
            raise LocalProtocolError("wait for the server's greeting")
        if not self._pipelining:
            raise LocalProtocolError(
                f"the server did not offer PIPELINING: wait for the reply to {_name(last)} "
                f"before sending {verb}"
            )
        if not isinstance(last, _GROUP_CONTINUES):
            raise LocalProtocolError(
                f"{_name(last)} ends a pipelined group (RFC 2920 §3.1): wait for its reply "
                f"before sending {verb}"
            )

    def _reproject(self) -> None:
        """Work out again each awaited event's state once it has succeeded, from the
        state now: after a reply that was not the success they were worked out for."""
        state = self._state
        for entry in self._queue:
            rule = entry.rule
            if entry.event is None:
                state = State.HELLO
            elif rule is END_OF_DATA_RULE or isinstance(entry.event, AuthResponse):
                state = State.READY
            elif state in rule.allowed:
                state = next_state(rule, min(rule.success_codes), state)
            entry.after = state

    def _check_command(self, command: Command) -> None:
        if isinstance(command, (Ehlo, Helo, Lhlo)):
            if isinstance(command, Lhlo) != self.lmtp:
                expected = "LHLO" if self.lmtp else "EHLO or HELO"
                raise LocalProtocolError(f"this session opens with {expected}")
            if not command.domain.isascii():
                raise LocalProtocolError("the hello domain must be ASCII (use A-labels)")
            if len(command.domain) > MAX_HOSTNAME:
                raise LocalProtocolError(
                    f"the hello domain is over {MAX_HOSTNAME} octets (RFC 5321 §4.5.3.1.2)"
                )
        elif isinstance(command, StartTls) and self._tls:
            raise LocalProtocolError("TLS is already active")
        transaction = self._transaction
        check_command(
            self._extensions,
            command,
            extended=self._extended,
            utf8=transaction is not None and transaction.utf8,
            binary=transaction is not None and transaction.binary,
        )

    def _send_auth_response(self, event: AuthResponse) -> bytes:
        if self._state is not State.AUTH or self._queue:
            raise LocalProtocolError("an AUTH response answers a 334 challenge")
        self._queue.append(_Awaited(event, RULES[Auth]))
        return format_command(event)
