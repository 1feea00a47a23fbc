"""What the SMTP clients raise: one hierarchy, every refusal carrying its reply.

Modelled on what smtplib and aiosmtplib users already catch
(``SMTPResponseException``, ``SMTPSenderRefused``, ``SMTPRecipientsRefused``,
``SMTPDataError``): everything the server or the session refuses is an
:class:`SMTPError`, and a refusal is an :class:`SMTPReplyError` whose
``reply`` has the code, the enhanced status (RFC 3463) and the text. When the
client refuses on the server's behalf, before sending anything (a message
over the server's SIZE, a UTF-8 address to a server without SMTPUTF8), the
reply is the one the RFCs name for the case and ``local`` is true.
:class:`~smtpcore.LocalProtocolError` is kept for the caller's own mistakes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, TypeVar

from smtpcore.smtp import EnhancedStatus, Reply, TransactionResult

__all__ = [
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "ExtensionNotOffered",
    "HelloRefused",
    "MessageRefused",
    "MessageTooLarge",
    "RecipientsRefused",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "batches_refusal",
    "lmtp_refusal",
    "not_offered",
    "recipients_refusal",
]

_END_OF_CONTENT: Final = frozenset({"DATA", "BDAT"})
"""What :attr:`SMTPError.command` names when the reply awaited was the end of data's."""


_Summed = TypeVar("_Summed")
_Refusal = TypeVar("_Refusal", bound="SMTPReplyError")


def recipients_refusal(result: TransactionResult, last: Reply) -> Reply:
    """The reply that sums up every ``RCPT`` of ``result`` refused: ``last``, or the
    last temporary refusal when ``last`` is permanent (RFC 5321 §4.2.1: a 4xx says the
    same command may succeed later), so that a caller deciding bounce or retry by
    ``code`` retries, as Postfix defers such a message."""
    replies = (recipient.reply for recipient in result.recipients)
    return _temporary_if_any(last, replies, _itself)


def lmtp_refusal(result: TransactionResult, last: Reply) -> Reply:
    """The reply that sums up an LMTP message refused for every accepted recipient:
    each has its own reply after the content (RFC 2033 §4.2), so ``last``, or the
    last temporary one of them when ``last`` is permanent (RFC 5321 §4.2.1). Not for
    SMTP, where the one reply after the content judges the message (§4.1.1.4)."""
    deliveries = (recipient.delivery for recipient in result.recipients if recipient.accepted)
    return _temporary_if_any(last, deliveries, _itself)


def batches_refusal(refusals: Sequence[_Refusal]) -> _Refusal:
    """The refusal to raise for a message none of whose transactions delivered it (its
    batches for a server's LIMITS, RFC 9422 §4.2), ``refusals`` theirs in order: the
    last, or the last temporary one when the last is permanent, the rule each batch's
    own reply was chosen by (RFC 5321 §4.2.1), so that one batch's ``452`` is not
    hidden behind a later batch's ``550``. Each keeps its own command and reply."""
    return _temporary_if_any(refusals[-1], refusals, _reply_of)


def _temporary_if_any(
    last: _Summed, refusals: Iterable[_Summed | None], reply: Callable[[_Summed], Reply]
) -> _Summed:
    """``last`` unless its ``reply`` is permanent and one of ``refusals``' is temporary
    (4xx): then the last such, and a retry never skips what may succeed later."""
    if reply(last).code < 500:
        return last
    temporary = None
    for refusal in refusals:
        if refusal is not None and 400 <= reply(refusal).code < 500:
            temporary = refusal
    return last if temporary is None else temporary


def _itself(reply: Reply) -> Reply:
    return reply


def _reply_of(refusal: SMTPReplyError) -> Reply:
    return refusal.reply


class SMTPError(Exception):
    """Base class of the client's errors; ``reply`` is the server's, when there is one.

    ``code``, ``status`` and ``text`` read the reply (``None``, ``None`` and
    the message when there is none: a lost connection, a timeout).
    """

    local = False
    """True when the client refused on the server's behalf and sent nothing: the
    reply is the one the RFC names for the case, not one the server wrote. Also
    true, with no reply, on the :class:`SMTPConnectionError` of a TLS handshake
    that failed our own check of the server's certificate: the server refused
    nothing, this client declined it."""
    result: TransactionResult | None = None
    """A session lost (or timed out) part way through a message whose fate was
    decided recipient by recipient: each recipient's fate so far, so that a retry
    goes to those not delivered only. In LMTP, among the replies after the
    content (RFC 2033 §4.2); with a server's LIMITS, among the transactions a
    message was split into (RFC 9422 §4.2), the recipients of those not done
    unanswered, as when the session reached the server's MAILMAX (§4.1). And
    after the end of a message's content went with no readable reply to it (see
    :attr:`may_have_been_delivered`): the transaction, each accepted recipient's
    fate unknown (no ``delivery``)."""
    command: str | None = None
    """The command refused (:class:`SMTPReplyError`); for a timeout, a lost
    connection or a garbled reply (:class:`SMTPProtocolError`), ``"DATA"`` (the
    final dot) or ``"BDAT"`` (``BDAT ... LAST``) when its reply was the one awaited
    and a recipient accepted at ``RCPT`` waited for it, else None (every recipient
    refused: nothing can have been delivered)."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message if reply is None else f"{message}: {reply}")
        self.reply = reply

    @property
    def may_have_been_delivered(self) -> bool:
        """True when the session timed out, was lost or got a garbled reply awaiting
        the reply to the end of a message's content: the server may have taken the
        message before the reply was lost (RFC 5321 §6.1, RFC 1047), for the recipients accepted in
        :attr:`result` with no ``delivery``. Sending it again may deliver it twice;
        not sending it may lose it: a relay defers it, as §6.1 accepts."""
        return self.reply is None and self.command in _END_OF_CONTENT

    @property
    def code(self) -> int | None:
        """The reply code (``550``), if there is a reply."""
        return None if self.reply is None else self.reply.code

    @property
    def status(self) -> EnhancedStatus | None:
        """The enhanced status code (``5.1.1``, RFC 3463), if the reply has one."""
        return None if self.reply is None else self.reply.status

    @property
    def text(self) -> str:
        """The reply's text lines joined by newlines, or the error's message."""
        return str(self) if self.reply is None else self.reply.message


class SMTPReplyError(SMTPError):
    """A command was refused; ``reply`` says why, ``command`` which (``"MAIL"``).

    smtplib's ``SMTPResponseException``: ``code`` and ``text`` are its
    ``smtp_code`` and ``smtp_error``.
    """

    reply: Reply
    command: str

    def __init__(self, command: str, reply: Reply, *, local: bool = False) -> None:
        what = f"{command} not sent" if local else f"{command} refused"
        super().__init__(what, reply)
        self.command = command
        self.local = local


class HelloRefused(SMTPReplyError):
    """The greeting was not 220 (``command`` is ``"greeting"``), or the server refused
    EHLO and then HELO (or LHLO)."""


class SenderRefused(SMTPReplyError):
    """``MAIL FROM`` was refused.

    ``result`` is None, but for a message split into transactions for the server's
    LIMITS (RFC 9422 §4.2) none of which delivered it, whose refusal (see
    :class:`RecipientsRefused`) was a ``MAIL``'s: then it holds every batch's
    recipients, each with its own reply (its batch's ``MAIL`` reply where that
    was refused).
    """


class RecipientsRefused(SMTPReplyError):
    """Every recipient was refused; ``result`` holds each one's reply.

    ``reply`` is the last of them, unless that one is permanent and another was
    temporary: then it is the last temporary one (RFC 5321 §4.2.1), so that
    ``code`` says retry when a recipient may be reached later. For a message split
    into transactions (LIMITS, RFC 9422 §4.2) none of which delivered it, ``result``
    covers every transaction, and the same rule picks among the transactions'
    refusals (each chosen so among its own recipients): the last transaction's,
    unless it is permanent and an earlier one's was temporary, then the last
    temporary one's, raised as that transaction's own error (this, or a
    :class:`MessageRefused` or :class:`SenderRefused`).
    """

    def __init__(self, reply: Reply, result: TransactionResult) -> None:
        super().__init__("RCPT", reply)
        self.result = result


class MessageRefused(SMTPReplyError):
    """``DATA`` or the message itself was refused (for every recipient, in LMTP).

    ``reply`` is the refusal: in SMTP the one reply that judged the message (RFC
    5321 §4.1.1.4), whatever ``RCPT`` said to others. In LMTP, where each accepted
    recipient has its own reply after the content (RFC 2033 §4.2), it is the last
    of them, or, when that one is permanent (``550``) and another was temporary
    (``452``), the last temporary one (RFC 5321 §4.2.1), so that deciding bounce
    or retry by ``code`` never bounces a recipient a retry may reach. ``result``
    has each recipient's own reply: decide each one's fate by it.

    ``result`` holds each recipient's fate when the transaction got that far
    (for a message split into transactions for LIMITS, RFC 9422 §4.2, every
    transaction's, and ``reply`` the refusal of the last of them, or of the last
    whose refusal was temporary, as for :class:`RecipientsRefused`), and is
    ``None`` when the client refused the message before ``MAIL``.
    """

    def __init__(
        self,
        command: str,
        reply: Reply,
        result: TransactionResult | None,
        *,
        local: bool = False,
    ) -> None:
        super().__init__(command, reply, local=local)
        self.result = result


class MessageTooLarge(MessageRefused):
    """The message is larger than the server's SIZE limit (RFC 1870 §6), so the
    client did not send it: ``552 5.3.4`` (RFC 3463), raised before ``MAIL``.
    ``size`` and ``limit`` are in octets."""

    def __init__(self, size: int, limit: int) -> None:
        reply = Reply(
            552,
            f"message size {size} exceeds the server's limit of {limit} octets",
            "5.3.4",
        )
        super().__init__("MAIL", reply, None, local=True)
        self.size = size
        self.limit = limit


class ExtensionNotOffered(MessageRefused):
    """The message needs an extension the server did not list in its EHLO reply,
    and a client must not use one it was not offered (RFC 5321 §2.2.2), so it
    was not sent; raised before ``MAIL``, and the session can go on.

    ``extension`` names it; ``keyword`` is the MAIL or RCPT parameter that
    needs it, or ``None`` when the message itself does. The reply is the one
    RFC 3463 names: ``553 5.6.7`` for a UTF-8 address without SMTPUTF8 (RFC
    6531 §3.4), ``554 5.6.3`` for 8-bit content without 8BITMIME (RFC 6152),
    ``555 5.5.4`` for a parameter (``RET`` without DSN, say). ``command`` is
    ``"XCLIENT"`` or ``"XFORWARD"`` when that is what the server does not offer
    this client (``502 5.5.1``).
    """

    def __init__(
        self,
        keyword: str | None,
        extension: str,
        reply: Reply | None = None,
        *,
        command: str = "MAIL",
    ) -> None:
        if reply is None:
            reply = Reply(
                555, f"the server does not offer {extension}, which {keyword} needs", "5.5.4"
            )
        super().__init__(command, reply, None, local=True)
        self.keyword = keyword
        self.extension = extension


class TLSNotAvailable(SMTPReplyError):
    """STARTTLS was required but the server does not offer it (RFC 3207 §4):
    ``454 4.7.4`` (security feature not supported, RFC 3463), as a client that
    insists on TLS defers the message."""

    def __init__(self, message: str = "the server does not offer STARTTLS") -> None:
        super().__init__("STARTTLS", Reply(454, message, "4.7.4"), local=True)


class AuthenticationError(SMTPReplyError):
    """AUTH failed: the server refused the credentials (``reply`` says how: 535 5.7.8,
    454 4.7.0, ...), or a SCRAM server could not prove it holds the user's keys."""

    def __init__(self, command: str, reply: Reply, message: str | None = None) -> None:
        super().__init__(command, reply)
        if message is not None:
            self.args = (f"{message}: {reply}",)


class AuthenticationNotAvailable(SMTPReplyError):
    """Credentials were given but no mechanism can be used: the server offers no AUTH
    or none the client can do (``504 5.5.4``, RFC 4954 §6), or only ones that need
    TLS on a plaintext connection (``538 5.7.11``)."""

    needs_tls: bool
    """Whether what the login lacked is TLS: true with ``538 5.7.11`` (a mechanism
    that would show a reusable secret on a connection without TLS, sent with
    ``allow_plaintext_auth=True`` or over TLS), false with ``504 5.5.4``. POP3's
    ``POP3AuthenticationNotAvailable.needs_tls`` is always true."""

    def __init__(self, message: str, *, needs_tls: bool = False) -> None:
        reply = Reply(538, message, "5.7.11") if needs_tls else Reply(504, message, "5.5.4")
        super().__init__("AUTH", reply, local=True)
        self.needs_tls = needs_tls


class SMTPConnectionError(SMTPError, ConnectionError):
    """The connection failed or closed (``reply`` is the 421, if the server sent one).

    Also raised, with ``local`` true and ``421 4.5.3``, when the session has had
    the transactions the server's LIMITS allow (MAILMAX, RFC 9422 §4.1): the
    client says QUIT rather than send a ``MAIL`` more, and ``result`` lists
    the recipients not sent, unanswered, for a new connection.
    """


class SMTPTimeout(SMTPError, TimeoutError):
    """The server did not answer in time (RFC 5321 §4.5.3.2)."""


class SMTPProtocolError(SMTPError):
    """The server broke the protocol beyond repair."""


def not_offered(verb: str) -> ExtensionNotOffered:
    """The error for a command (``XCLIENT``, ``XFORWARD``) the server's EHLO did not
    offer to this client, raised before it is sent (``502 5.5.1``, RFC 3463)."""
    reply = Reply(502, f"the server does not offer {verb} to this client", "5.5.1")
    return ExtensionNotOffered(None, verb, reply, command=verb)
