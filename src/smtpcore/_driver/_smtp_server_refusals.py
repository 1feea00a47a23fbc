"""What an SMTP server session logs of what it refuses: the ``reject:`` lines.

The reject log is read by people and by fail2ban's filter, so its wording is a
contract of its own (docs/fail2ban): which verb a refused line is logged under
(never a word that may be a password), whether a refusal is a ``reject`` or a
``bad sequence``, whether an AUTH refusal judged a credential, and the line of a
transaction refused by a local failure, with the addresses it refused.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from smtpcore._driver._refusals import only_recipient, path_text, refusal_line
from smtpcore._driver._smtp_server_replies import SessionReplies
from smtpcore.smtp import BadCommand, Event, Mail, Rcpt, Reply
from smtpcore.smtp._commands import VERBS

logger = logging.getLogger("smtpcore.server")


_VERB: Final = re.compile(rb"[A-Za-z]{1,12}(?=[ \r\n]|\Z)")
"""A line's verb as the machine reads it: up to the first space."""
_KNOWN_VERBS: Final = frozenset(VERBS)


def logged_verb(event: BadCommand) -> str:
    """What the reject log calls a refused line: ``AUTH`` for one that may carry a
    credential (an answer to a 334, an AUTH command), a verb the server knows by
    its name, any other line ``command``: its first letters may be a password
    sent where a command was due."""
    if event.secret:
        return "AUTH"
    match = _VERB.match(event.line)
    verb = match.group().decode("ascii").upper() if match else ""
    return verb if verb in _KNOWN_VERBS else "command"


AUTH_COMMAND: Final = re.compile(rb"AUTH(?=[ \r\n]|\Z)", re.IGNORECASE)
"""An AUTH command line, its verb read as the machine reads it, up to the first space:
``AUTHX`` or ``AUTHENTICATE foo`` is an unknown command, not an AUTH refused."""


def refusal_kind(reply: Reply) -> str:
    """What the log calls a line the machine refused: ``bad sequence`` for a ``503``
    (RFC 5321 §4.2.2, "Bad sequence of commands"), which a pipelining client meets
    after a refused MAIL as the normal course of RFC 2920 §3.1 and which refuses
    nothing of its own; ``reject`` for any other reply, the refusal fail2ban counts.
    The machine counts the 503s behind a refused MAIL toward ``max_recipient_overshoot``
    and every other one toward ``max_errors``."""
    return "bad sequence" if reply.code == 503 else "reject"


def judged_no_credential(reply: Reply) -> bool:
    """Whether ``reply``, refusing a line of AUTH, is one that checked no credential:
    a 5xx, but not a ``503`` (a ``bad sequence``, as for any command), and not the
    ``421`` that ends a session for abuse (too many errors or failed logins), which
    fail2ban's filter bans."""
    return reply.code >= 500 and reply.code != 503


class RefusalLog(SessionReplies):
    """The ``reject:`` line of a mail transaction a local failure refused."""

    __slots__ = ()

    def _refused_by_failure(self, verb: str, event: Event | None, reply: Reply, why: str) -> None:
        """The ``reject:`` line of a transaction a local failure refused (a full disk,
        a fault), naming what was refused as every refusal does
        (:meth:`_refused_addresses`). One line at WARNING, as the reference server's
        floor check warns of a full disk at MAIL: mail is refused until the operator
        acts, which ``--log-level warning`` must show."""
        session = self.session
        sender, recipient = self._refused_addresses(verb, event)
        logger.warning(
            refusal_line(
                None,
                session,
                verb,
                reply,
                sender=sender,
                recipient=recipient,
                helo=session.helo_name,
                user=None if session.authenticated is None else str(session.authenticated),
                detail=why,
            )
        )

    def _refused_addresses(self, verb: str, event: Event | None) -> tuple[str | None, str | None]:
        """The ``from=`` and ``to=`` of a refused ``verb`` answering ``event``, as the
        reference server's refusals give them: a MAIL's own sender (``<>`` for the null
        path), a RCPT's own recipient with its transaction's sender, a message's sender
        and its recipient when it has one alone, as Postfix logs a refused DATA (never
        a recipient accepted before a refused RCPT)."""
        envelope = self.session.envelope
        if isinstance(event, Mail):
            return path_text(event.sender), None
        sender = None if envelope is None else path_text(envelope.sender)
        if isinstance(event, Rcpt):
            return sender, str(event.recipient)
        if envelope is not None and verb == "DATA":
            return sender, only_recipient([r.mailbox for r in envelope.recipients])
        return sender, None
