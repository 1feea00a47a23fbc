"""One delivery attempt to one exchanger: connect with the relay's TLS policy, send,
and turn each reply into a recipient's outcome.

What the exchanger says decides (RFC 5321 §4.2.1, §4.5.4.1): a 2xx delivers, a 5xx
(its own, or the client's refusal on its behalf for what it announced, such as a
SIZE overrun) fails for good, a 4xx waits, and so does a 552 to RCPT, RFC 821's
"too many recipients" (RFC 5321 §4.5.3.1.10). A 452 to RCPT for that limit goes at
once in a new transaction of the session while each transaction delivers (the
client's ``resend_too_many``: the "chunks" of §4.5.3.1.8), and waits when one
delivers to none. A failure of
the whole session (a connection refused or lost, a 4xx to MAIL, a TLS policy that
cannot be met) is a :class:`TryNext`: the next exchanger may do better, for the
recipients whose fate the session had not decided yet (those it had delivered or
refused for good are settled). So is a 5xx to EHLO and HELO (or to EHLO, then a
close), marked permanent: if every exchanger tried refuses so, the recipients fail at
once; while one of them only deferred, they wait (RFC 5321 §5.1; a 5xx greeting
waits too, as Postfix's ``smtp_skip_5xx_greeting`` has it). A session that went on
after HELO because EHLO got a 4xx lacks its extensions only for now: mail that needs
one (TLS, REQUIRETLS, SMTPUTF8, 8BITMIME or BINARYMIME) waits with that reply
(``_lacking``).
Replies are matched to recipients by the recipient they answer, never by position: a
message split into transactions (RFC 9422 LIMITS) has replies from each. The TLS
each message gets is a :class:`~smtpcore.server.relay_tls.MessageTLS` (REQUIRETLS,
``TLS-Required: No``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Final, Protocol, TypeAlias, TypeVar

from smtpcore._driver import (
    BaseSMTPClient,
    ExtensionNotOffered,
    HelloRefused,
    MessageRefused,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
    SMTPReplyError,
    Timeouts,
    TLSNotAvailable,
)
from smtpcore._driver._logtext import describe_error
from smtpcore._driver._smtp_matching import match_results, same_address
from smtpcore._driver._smtp_unanswered import end_unanswered
from smtpcore._errors import LocalProtocolError
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.asyncio import SMTPClient
from smtpcore.routing import Attempt, RemoteDelivery
from smtpcore.server.bounce import seven_bit_form
from smtpcore.server.crlfreader import CRLFReader
from smtpcore.server.downgrade import NotConvertible, SevenBitReader, plan_seven_bit
from smtpcore.server.log import loggable, logger
from smtpcore.server.queue import QueuedContent, QueueEntry, RecipientStatus
from smtpcore.server.relay_tls import MessageTLS, RelayTLS, relay_tls_context
from smtpcore.smtp import (
    DSNError,
    OriginalRecipient,
    RecipientResult,
    Reply,
    TransactionResult,
    quoted,
)
from smtpcore.smtp._dsn import MAX_ORCPT

__all__ = [
    "ClientFactory",
    "ExchangerSession",
    "Outcome",
    "Recorder",
    "TryNext",
    "MAX_KEPT_TEXT",
    "default_client",
    "kept_text",
    "reply_dsn",
    "reply_text",
    "transcribe",
    "while_sending_end_of_data",
]


class ClientFactory(Protocol):
    """Builds the SMTP client for one connection (the demo passes one that narrates)."""

    def __call__(
        self,
        host: str,
        port: int,
        *,
        hostname: str,
        starttls: bool | None,
        ssl_context: ssl.SSLContext,
        server_hostname: str,
        timeouts: Timeouts,
    ) -> BaseSMTPClient: ...


def default_client(
    host: str,
    port: int,
    *,
    hostname: str,
    starttls: bool | None,
    ssl_context: ssl.SSLContext,
    server_hostname: str,
    timeouts: Timeouts,
) -> BaseSMTPClient:
    return SMTPClient(
        host,
        port,
        hostname=hostname,
        starttls=starttls,
        ssl_context=ssl_context,
        server_hostname=server_hostname,
        timeouts=timeouts,
    )


MAX_KEPT_TEXT: Final = 2048
"""The most characters of an exchanger's words the relay keeps, for one recipient's
reply or one session's error: what its queue file, its log line, ``queue list`` and a
report hold (a report's Diagnostic-Code is cut further, to 900 octets). A reply may
run to 100 lines of 4,096 octets (the client's limits), and a hostile hop gave each
of 100 recipients one: 40 MB of envelope and of log for a 149-octet message. Postfix
keeps 2,048 octets of a multi-line reply (``var_line_limit`` in ``smtp_chat_resp``),
"to defend against a denial of service attack"."""


def kept_text(text: str, tail: str = "") -> str:
    """``text`` as the relay stores and logs it: whole when it fits in
    :data:`MAX_KEPT_TEXT` characters, else its start (the first line or lines of a
    reply, where the code, status and reason are) and ``[... N more characters]``, in
    :data:`MAX_KEPT_TEXT` characters all told; ``tail``, kept whole, after it and
    within that count (what the relay says of the text, never to be cut off)."""
    kept = _kept_length(len(text), MAX_KEPT_TEXT - len(tail))
    kept_start = text if kept == len(text) else text[:kept] + _cut_mark(len(text) - kept)
    return kept_start + tail


def _kept_length(length: int, room: int = MAX_KEPT_TEXT) -> int:
    """How many characters :func:`kept_text` keeps of a text of ``length`` in ``room``."""
    if length <= room:
        return length
    return max(room - len(_cut_mark(length)), 0)  # the mark can only get shorter


_SENT_MORE_THAN_ONCE: Final = " while sending end of data -- message may be sent more than once"


def while_sending_end_of_data(why: str) -> str:
    """``why`` a session ended, for one that ended while an end of data (the final dot,
    or BDAT LAST) was unanswered: the exchanger may have taken the message, and the
    retry sends it again (RFC 5321 §6.1). Postfix's words (``lost connection with HOST
    while sending end of data -- message may be sent more than once``), kept whole
    however long ``why`` is; the one wording of the relay's lines and of a stop's."""
    return kept_text(why, _SENT_MORE_THAN_ONCE)


def _cut_mark(cut: int) -> str:
    return f" [... {cut} more characters]"


def reply_text(reply: Reply) -> str:
    """The reply as one line of text, cut to :func:`kept_text`: the exchanger's own
    words (RFC 3464 §2.3.6), as the relay keeps them for a recipient. Each line is
    written as it came, code and status first (``550-5.1.1 ...`` then ``550 5.1.1
    ...`` for the last), the lines joined by spaces: RFC 3461 §9.2's transcription of a
    multi-line reply, unfolded, as Postfix logs and reports one."""
    return transcribe(reply)[0]


def transcribe(reply: Reply) -> tuple[str, tuple[int, ...]]:
    """:func:`reply_text`, and where in it the reply's lines meet: the offset of the
    space before each line after the first, up to the cut. The text alone cannot tell
    (a line may say `` 550 `` itself, or hold a TAB a report writes as a space), so
    these go with it into the queue, for a report to fold its ``Diagnostic-Code`` at
    the reply's own lines."""
    status = f"{reply.status} " if reply.status is not None else ""
    last = len(reply.lines) - 1
    lines = [
        f"{reply.code}{' ' if index == last else '-'}{status}{line}".rstrip()
        for index, line in enumerate(reply.lines)
    ]
    whole = " ".join(lines)
    kept = _kept_length(len(whole))
    breaks = list(itertools.accumulate(len(line) + 1 for line in lines[:-1]))
    return kept_text(whole), tuple(end - 1 for end in breaks if end - 1 < kept)


_STATUS_TEXT: Final = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:\s|$)")


def reply_dsn(reply: Reply) -> str:
    """The reply's enhanced status; from its text when the server did not announce
    ENHANCEDSTATUSCODES but wrote one anyway, as many do; else ``X.0.0``."""
    if reply.status is not None:
        return str(reply.status)
    match = _STATUS_TEXT.match(" ".join(reply.lines))
    if match is not None and match.group(1) == str(reply.code)[0]:
        return match.group(0).strip()
    return f"{reply.code // 100}.0.0"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one round did for one recipient."""

    status: RecipientStatus
    dsn: str
    detail: str
    relay: str = "none"
    remote_mta: str | None = None
    from_remote: bool = False
    tls: str | None = None
    """``no``, ``yes`` or ``verified``: see ``ExchangerSession._tls_field``."""
    tls_policy: str | None = None
    dsn_passed: bool = False
    """The next hop took the DSN parameters: reporting success is its job now."""
    expired: bool = False
    """Failed because the message's time in the queue ran out: a temporary failure
    past its lifetime (the bounce then says how long it was retried)."""
    server_policy: bool = False
    """Failed by this server's own rule, not by a peer nor by the sender's choice (a
    queued sender that no longer parses): reported whatever NOTIFY and RET asked."""
    logged: str | None = None
    """What the mail log says instead of :attr:`detail`, which the queue file and the
    sender's report keep, where the operator is told more than the sender (the
    Maildir file a local copy went into)."""
    detail_breaks: tuple[int, ...] = ()
    """Where :attr:`detail`, a reply :func:`transcribe` wrote, has the spaces between
    its lines; none for other text."""


def _tls_name(attempt: Attempt) -> str:
    """The name a certificate is checked against: the exchanger's host name, or for an
    address literal the address itself, which a certificate names by its IP (and no
    SNI is sent for it, RFC 6066 §3)."""
    if attempt.host.startswith("["):
        return str(attempt.address)
    return attempt.host


class TryNext(Exception):
    """This exchanger failed as a whole; the next one may do better.

    ``requiretls``: it failed only this message's REQUIRETLS (no verified TLS, or no
    REQUIRETLS offered, RFC 8689 §4.2.1); nothing is wrong with it for other mail.
    ``settled``: the recipients the session had delivered (2xx) or refused for good
    (5xx, RFC 5321 §4.2.1) before it failed, and their outcomes; the next exchanger
    gets only the others.
    ``permanent``: the exchanger refused this client for good (see
    :func:`_refused_for_good`): the next one is still tried, and only if every one
    tried refused so do the recipients fail at once, as for any 5xx; one that
    deferred may take the mail later, so they wait (RFC 5321 §5.1).
    ``unreachable``: the exchanger could not be reached, or would not talk for now (a
    connection refused, lost or timed out before the mail transaction, a 4xx or 5xx
    greeting, a 4xx to EHLO and HELO): what suspends a dead destination
    (:mod:`smtpcore.server.deadhops`) when all its exchangers fail so.
    """

    def __init__(
        self,
        detail: str,
        dsn: str | None = None,
        reply: Reply | None = None,
        *,
        requiretls: bool = False,
        settled: Mapping[str, Outcome] | None = None,
        local: bool = False,
        permanent: bool = False,
        unreachable: bool = False,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.unreachable = unreachable
        self.dsn = dsn or (reply_dsn(reply) if reply is not None else "4.4.1")
        """The status a delay or bounce gives: the one named, else the server's own
        (RFC 3464 §2.3.4), else 4.4.1 (no answer from the host)."""
        self.reply = reply
        self.requiretls = requiretls
        self.settled: Mapping[str, Outcome] = settled or {}
        self.local = local
        """``reply`` is the client's own (``SMTPError.local``), not the exchanger's: a
        report does not give it as the server's (RFC 3464 §2.3.6)."""


MAILMAX_SESSIONS: Final = 20
"""The sessions :meth:`ExchangerSession.deliver` has with one exchanger in a round when
its LIMITS MAILMAX or RCPTDOMAINMAX (RFC 9422 §4.1, §4.3) ends each before the message
is sent to all."""


class _SessionFull(Exception):
    """The client stopped at the exchanger's MAILMAX or RCPTDOMAINMAX: ``outcomes`` for
    the recipients the session answered, ``unsent`` the others, for a new session."""

    def __init__(self, outcomes: dict[str, Outcome], unsent: list[str]) -> None:
        super().__init__("the exchanger's LIMITS MAILMAX or RCPTDOMAINMAX was reached")
        self.outcomes = outcomes
        self.unsent = unsent


def _tls_reason(exc: SMTPError) -> str:
    """Why STARTTLS failed, cut to :func:`kept_text` (an error's text may quote a reply)."""
    if isinstance(exc, SMTPReplyError):
        return kept_text(f"STARTTLS refused: {reply_text(exc.reply)}")
    reason = describe_error(exc.__cause__) if exc.__cause__ is not None else str(exc)
    return kept_text(f"TLS handshake failed: {reason}")


def _refused_for_good(exc: SMTPError) -> bool:
    """Whether ``exc``, which ended a session before any mail was sent, is a permanent
    refusal: a 5xx to the HELO the client falls back to after any refusal of EHLO but
    421 (RFC 5321 §4.2.1: the command SHOULD NOT be repeated), which Postfix's
    ``smtp_helo()`` bounces at once, or a 5xx to EHLO followed by a close, the
    exchanger's last word (a blocklist's 554, say); a 4xx to either waits. A 5xx
    greeting is not: Postfix takes it as 4xx by default (``smtp_skip_5xx_greeting``,
    :func:`_greeting_status`), and so does this relay. The relay does not
    authenticate, so no AUTH reply comes here."""
    return (
        isinstance(exc, HelloRefused) and exc.command != "greeting" and 500 <= exc.reply.code < 600
    )


def _greeting_status(exc: SMTPError) -> str | None:
    """The status a 5xx greeting defers with: the server's own, its class made 4, as
    Postfix's ``smtp_skip_5xx_greeting`` does, since it is not the permanent failure
    its class says (RFC 3464 §2.3.4); None for every other failure."""
    if isinstance(exc, HelloRefused) and exc.command == "greeting" and exc.reply.code >= 500:
        return "4" + reply_dsn(exc.reply)[1:]
    return None


_Lacking = TypeVar("_Lacking", Reply, TryNext)


def _lacking(client: BaseSMTPClient, relay: str, refusal: _Lacking) -> _Lacking:
    """Every refusal of mail for what this session does not offer (TLS, REQUIRETLS,
    SMTPUTF8, 8BITMIME, BINARYMIME, CHUNKING) goes through here: ``refusal``, what an
    exchanger that offers no more gets (a reply the recipients bounce with, or a
    :class:`TryNext` for TLS and REQUIRETLS, which another exchanger may offer).
    But where the session went on after HELO because EHLO got a ``4xx``, it lacks them
    only for now: the exchanger may offer them next time, so :class:`TryNext` with the
    EHLO reply is raised and the mail waits, as when that ``4xx`` ended the session.
    After a ``5xx`` to EHLO what the HELO session lacks is what the exchanger offers,
    and ``refusal`` stands (RFC 8689 §5: REQUIRETLS's 5.7.30; RFC 6531 §3.4:
    SMTPUTF8's 5.6.7; RFC 6152 §3 and RFC 3030 §3: 5.6.3).

    Its three callers: TLS not offered, REQUIRETLS not offered, and
    :class:`ExtensionNotOffered` for the message, the client's or :func:`_carried`'s,
    where a new check of what the message needs belongs."""
    ehlo = client.ehlo_refused
    if ehlo is not None and ehlo.code < 500:
        detail = kept_text(f"host {relay} refused EHLO: {reply_text(ehlo)}")
        raise TryNext(detail, reply=ehlo, unreachable=True)
    return refusal


class _TLSFailed(Exception):
    """STARTTLS was refused (where TLS is required, or to a client that will log in)
    or its handshake failed; ``may`` goes on in plaintext over a new connection."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _tls_failure(exc: SMTPError) -> bool:
    """Whether ``exc`` means STARTTLS failed: refused, or a handshake that went wrong."""
    if isinstance(exc, SMTPReplyError):
        return exc.command == "STARTTLS"
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return True
        cause = cause.__cause__
    return "TLS handshake" in str(exc)


def _needs_smtputf8(
    client: BaseSMTPClient, entry: QueueEntry, header: bytes
) -> ExtensionNotOffered | None:
    """RFC 6531 §3.4, as Postfix does: a message its sender sent with SMTPUTF8 and that
    has UTF-8 in its header cannot go to an exchanger without SMTPUTF8, even with an
    ASCII envelope (the client refuses UTF-8 addresses, a SIZE overrun and 8-bit
    content without 8BITMIME itself, before MAIL)."""
    if client.connection.extensions.smtputf8 or "SMTPUTF8" not in dict(entry.params):
        return None
    if header.isascii():
        return None
    reply = Reply(
        553, "the message needs SMTPUTF8 (RFC 6531) and the exchanger does not offer it", "5.6.7"
    )
    return ExtensionNotOffered("SMTPUTF8", "SMTPUTF8", reply)


_BINARYMIME: Final = "BINARYMIME"


def _queued_binary(entry: QueueEntry) -> bool:
    """Whether the message was queued as binary, ``BODY=BINARYMIME`` (RFC 3030 §3; values
    are not case sensitive, RFC 5321 §2.4)."""
    body = dict(entry.params).get("BODY")
    return body is not None and body.upper() == _BINARYMIME


def _needs_binarymime(client: BaseSMTPClient, entry: QueueEntry) -> ExtensionNotOffered | None:
    """RFC 3030 §3: BINARYMIME content goes only with ``BODY=BINARYMIME``, to an
    exchanger that offers BINARYMIME, and only with BDAT, so CHUNKING too. Elsewhere
    it would go without the parameter (to an exchanger with 8BITMIME, which
    :func:`_carried` lets 8-bit content go to) as text, over DATA even, where bare CR
    and LF and long lines are not what was queued; without CHUNKING, MAIL went and
    the client then refused DATA for it.
    So it is refused before MAIL, with the status of a conversion this relay does not
    make (RFC 3463 5.6.3), as 8-bit content is without 8BITMIME."""
    if not _queued_binary(entry):
        return None
    offered = client.connection.extensions
    missing = offered.missing_for("BODY", _BINARYMIME) or (
        None if offered.chunking else "CHUNKING"
    )
    if missing is None:
        return None
    reply = Reply(
        554,
        f"the message is binary (BODY=BINARYMIME) and the server does not offer {missing}",
        "5.6.3",
    )
    return ExtensionNotOffered("BODY", missing, reply)


def _binary_only(client: BaseSMTPClient) -> bool:
    """Whether 8-bit content goes to this exchanger only as ``BODY=BINARYMIME`` by BDAT:
    it offers BINARYMIME and CHUNKING but not 8BITMIME. Without ``BODY`` a MAIL says
    7BIT (RFC 6152 §3: no 8-bit octet then), and BINARYMIME goes with BDAT alone (RFC
    3030 §3), so BINARYMIME without CHUNKING carries nothing 8-bit."""
    offered = client.connection.extensions
    return not offered.eight_bit_mime and offered.binary_mime and offered.chunking


@dataclass(frozen=True, slots=True)
class _AsBinary:
    """8-bit content not queued as binary, to an exchanger that takes 8-bit octets only
    as ``BODY=BINARYMIME`` (:func:`_binary_only`): it goes so, by BDAT, with its line
    ends made CRLF (:class:`CRLFReader`), as every other hop gets them, and ``SIZE=``
    the queue file's, an estimate as on the 8BITMIME path (RFC 1870 §4)."""

    size: int


def _seven_bit_report(entry: QueueEntry, content: QueuedContent) -> bytes | None:
    """The 7-bit form of a report of this server's (RFC 6152 §3 lets a server convert
    what it cannot send as it is), or None: the report with the returned message cut to
    its header, which reads better than the whole message quoted-printable. The whole
    report is read: it was built whole in memory, its returned message bounded
    (:data:`~smtpcore.server.bounce.MAX_RETURNED_MESSAGE`)."""
    if not entry.is_report:
        return None
    with content.open() as file:
        return seven_bit_form(file.read())


def _seven_bit_message(content: QueuedContent) -> SevenBitReader:
    """The queued message converted to 7-bit as it is sent (RFC 6152 §3, as Postfix
    does: fewer bounces, and mail from ``<>``, which cannot bounce, is not lost), read
    through once first to plan it; :class:`~smtpcore.server.downgrade.NotConvertible`
    when it has no 7-bit form."""
    with content.open() as file:
        plan = plan_seven_bit(file)
    return SevenBitReader(content.open, plan)


def _seven_bit_content(
    entry: QueueEntry, content: QueuedContent, relay: str
) -> bytes | SevenBitReader:
    """What goes instead of 8-bit content to an exchanger without 8BITMIME: a report of
    this server's in its own 7-bit form, any other message converted (or
    :class:`~smtpcore.server.downgrade.NotConvertible`)."""
    report = _seven_bit_report(entry, content)
    if report is not None:
        logger.info(
            "%s: %s does not offer 8BITMIME: the report goes in its 7-bit form, the "
            "message returned with the header only (RFC 3461 §4.3)",
            entry.id,
            loggable(relay),
        )
        return report
    converted = _seven_bit_message(content)
    parts = converted.quoted_parts
    logger.info(
        "%s: %s does not offer 8BITMIME: the message goes converted to 7-bit, %d %s "
        "quoted-printable (RFC 6152 §3)",
        entry.id,
        loggable(relay),
        parts,
        "part" if parts == 1 else "parts",
    )
    return converted


_OFF_LOOP_READ: Final = 65536
"""The octets of the 7-bit form converted per worker-thread read: the client's chunk."""


class _ConvertedOffLoop:
    """A :class:`SevenBitReader` (or a :class:`CRLFReader`) read in a worker thread:
    each read converts a chunk of the message, CPU work (tens of milliseconds for short
    lines) that would hold the event loop every other session runs on. It is content
    the client already takes, an async iterable of bytes, each iteration from where the
    reader stands; ``seek`` and ``tell`` make it a file the client can send again (RFC
    5321 §4.5.3.1.8), and stay synchronous, as the client seeks only back to the
    start, which reopens (or rewinds) the queue file and converts nothing."""

    def __init__(self, reader: SevenBitReader | CRLFReader) -> None:
        self._reader = reader

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while piece := await asyncio.to_thread(self._reader.read, _OFF_LOOP_READ):
            yield piece

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        return self._reader.seek(offset, whence)

    def tell(self) -> int:
        return self._reader.tell()

    def __enter__(self) -> _ConvertedOffLoop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()


def _seven_bit_refusal(reason: NotConvertible) -> ExtensionNotOffered:
    """The refusal of 8-bit content with no 7-bit form (RFC 6152 §3: returned as
    undeliverable, RFC 3463 5.6.3)."""
    reply = Reply(
        554,
        f"the server does not offer 8BITMIME, needed for 8-bit content that cannot be "
        f"converted: {reason}",
        "5.6.3",
    )
    return ExtensionNotOffered(None, "8BITMIME", reply)


def _say_unreturnable(entry: QueueEntry, relay: str, refusal: ExtensionNotOffered) -> None:
    """A refusal of 8-bit content with no 7-bit form cannot be returned from ``<>``
    (RFC 5321 §4.5.5), so the loss is said here with its cause."""
    reason = refusal.__cause__
    if entry.sender or not isinstance(reason, NotConvertible):
        return
    logger.warning(
        "%s: %s does not offer 8BITMIME and the message from <> has no 7-bit form "
        "(%s): it cannot be sent there, and no report of it can be made",
        entry.id,
        loggable(relay),
        reason,
    )


_Carried: TypeAlias = bytes | SevenBitReader | _AsBinary | None
"""What goes instead of the queued content (see :func:`_carried`)."""


async def _carried(
    client: BaseSMTPClient, entry: QueueEntry, content: QueuedContent, relay: str
) -> _Carried:
    """What goes instead of the queued content in this session (None: the content
    itself, as queued). :class:`ExtensionNotOffered`, as the client raises for what it
    was not offered, where the session lacks what the message needs: SMTPUTF8 for a
    UTF-8 header, BINARYMIME and CHUNKING for binary content, 8BITMIME for 8-bit
    content with no 7-bit form.

    8-bit content cannot go as it is to an exchanger without 8BITMIME (RFC 6152 §3)
    but as ``BODY=BINARYMIME`` (:class:`_AsBinary`, RFC 3030 §3). The content is
    streamed from the queue, so the client cannot see this before it is sent; the
    queue file is read through (in pieces) to say it first, only for such an exchanger.
    7-bit content goes to it as it is, with no ``BODY``: declared binary, the next hop
    would take it for binary, and pass it on only where BINARYMIME is offered."""
    header = await asyncio.to_thread(content.header)
    lacking = _needs_smtputf8(client, entry, header) or _needs_binarymime(client, entry)
    if lacking is not None:
        raise lacking
    if client.connection.extensions.eight_bit_mime or _queued_binary(entry):
        return None
    if await asyncio.to_thread(content.is_ascii):
        return None
    if _binary_only(client):
        return _AsBinary(await asyncio.to_thread(lambda: content.size))
    try:
        return await asyncio.to_thread(_seven_bit_content, entry, content, relay)
    except NotConvertible as reason:
        raise _seven_bit_refusal(reason) from reason


async def _outgoing(
    converted: _Carried, content: QueuedContent
) -> contextlib.AbstractContextManager[bytes | BinaryIO | _ConvertedOffLoop]:
    """What the client sends, from :func:`_carried`'s choice, to close once sent. The
    content goes from the queue file in the client's chunks (DATA or BDAT), so a
    message of any size needs no more memory than a chunk."""
    if isinstance(converted, bytes):
        return contextlib.nullcontext(converted)
    if isinstance(converted, SevenBitReader):
        return _ConvertedOffLoop(converted)
    source = await asyncio.to_thread(content.open)
    if isinstance(converted, _AsBinary):
        return _ConvertedOffLoop(CRLFReader(source))
    return source


_FORWARDED_MAIL_PARAMS: Final = frozenset({"SMTPUTF8", "RET", "ENVID", "REQUIRETLS"})
"""The queued MAIL parameters that travel on with the message. SIZE is the client's to
write for what it sends (the relay's for a converted message, :func:`_declared_size`),
and BODY the relay's for what it sends (:func:`_declared_body`); AUTH= is not passed on
to another domain."""


def _forwarded_mail_params(client: BaseSMTPClient, entry: QueueEntry) -> dict[str, str | None]:
    """The queued MAIL parameters the exchanger can take: each only where it offers the
    extension the parameter's entry names (RFC 5321 §2.2.2), so DSN's RET and ENVID go
    where it speaks DSN (RFC 3461 §6.2). A message that needs what is not offered
    (SMTPUTF8, 8-bit content, REQUIRETLS) was refused or sent elsewhere before this."""
    offered = client.connection.extensions
    return {
        keyword: value
        for keyword, value in entry.params
        if keyword in _FORWARDED_MAIL_PARAMS and offered.missing_for(keyword, value) is None
    }


def _declared_body(entry: QueueEntry, converted: _Carried) -> dict[str, str | None]:
    """``BODY=BINARYMIME`` where the content goes so (RFC 3030 §3; the client then sends
    it by BDAT, as it is): a message queued so, which :func:`_needs_binarymime` let go
    only to an exchanger that offers BINARYMIME and CHUNKING, and 8-bit content to an
    exchanger that takes 8-bit octets only so (:class:`_AsBinary`).

    No other queued ``BODY`` goes on: the client declares ``BODY=8BITMIME`` itself to an
    8BITMIME exchanger, for any content read from the queue (8BITMIME allows 8-bit
    octets, it does not claim them), and to an exchanger that offers neither, no
    ``BODY`` is 7BIT, the content converted first where it holds 8-bit octets
    (:func:`_carried`). A queued ``BODY=7BIT`` is the sender's word, which the server
    does not check: passed on, a message that said it but held 8-bit octets went to an
    8BITMIME exchanger labelled 7BIT."""
    if _queued_binary(entry) or isinstance(converted, _AsBinary):
        return {"BODY": _BINARYMIME}
    return {}


def _declared_size(client: BaseSMTPClient, converted: _Carried) -> dict[str, str | None]:
    """``SIZE=`` for a message converted to 7-bit (exact), or sent as BINARYMIME with
    its line ends made CRLF (the queue file's size, an estimate), where the exchanger
    offers SIZE. The
    client declares the size of what it can measure (bytes, a file), not of a reader
    that converts as it is read; the planning pass knew that size exactly, and RFC 1870
    §6 wants the exchanger's limit checked before MAIL (the client refuses ``552
    5.3.4`` a declared size over it)."""
    if not isinstance(converted, (SevenBitReader, _AsBinary)):
        return {}
    size = str(converted.size)
    if client.connection.extensions.missing_for("SIZE", size) is not None:
        return {}
    return {"SIZE": size}


def _passed_orcpt(client: BaseSMTPClient, orcpt: str) -> str | None:
    """A queued ``ORCPT`` as it goes on: a raw UTF-8 one (utf-8-addr-unitext, taken in an
    SMTPUTF8 transaction) in its utf-8-addr-xtext form where the exchanger does not
    offer SMTPUTF8, which the unitext form needs (RFC 6533 §3).

    None when no form the exchanger can take exists: the escapes can grow a value past
    RFC 3461 §4.2's 500 characters (``to_parameter`` then writes it raw, which needs
    SMTPUTF8). RFC 3461 §5.2.1 asks that ORCPT go on, but it is information for a
    report, and the report this relay makes on a failure still carries it: the message
    goes without it rather than not at all."""
    passed: str | None = orcpt
    if not orcpt.isascii() and not client.connection.extensions.smtputf8:
        try:
            passed = OriginalRecipient.parse(orcpt, utf8=True).to_parameter()
        except DSNError:
            passed = None
        if passed is not None and not passed.isascii():
            passed = None
    if passed is None or len(passed) > MAX_ORCPT:
        logger.info(
            "ORCPT %s cannot go on in a form the exchanger takes; left off", loggable(orcpt)
        )
        return None
    return passed


Recorder = Callable[[Mapping[str, Outcome]], Awaitable[None]]
"""Records outcomes as soon as an exchanger gives them (see ``ExchangerSession.deliver``)."""


class _OutcomeOf(Protocol):
    """Makes a recipient's outcome from a reply (``ExchangerSession._send``)."""

    def __call__(
        self, reply: Reply, *, from_remote: bool = True, to_rcpt: bool = False
    ) -> Outcome: ...


def _once(record: Recorder) -> Recorder:
    """``record``, given each address once: a LIMITS transaction's outcomes are recorded
    as it ends, and again among the session's."""
    recorded: set[str] = set()

    async def once(outcomes: Mapping[str, Outcome]) -> None:
        fresh = {a: o for a, o in outcomes.items() if a not in recorded}
        recorded.update(fresh)
        if fresh:
            await record(fresh)

    return once


def _batch_recorder(
    deliveries: Mapping[str, RemoteDelivery], record: Recorder, outcome: _OutcomeOf
) -> Callable[[TransactionResult], Awaitable[None]]:
    """The client's ``on_batch``: each LIMITS transaction's delivered and refused-for-good
    recipients recorded as it ends (RFC 9422 §4.2), matched among every transaction's
    so far (``_fates``)."""
    results: list[RecipientResult] = []

    async def on_batch(result: TransactionResult) -> None:
        results.extend(result.recipients)
        mine = set(map(id, result.recipients))
        decided = {}
        for address, item in _fates(deliveries, results).items():
            fate = _own_outcome(item, outcome) if id(item) in mine else None
            if fate is not None and fate.status is not RecipientStatus.PENDING:
                decided[address] = fate
        await record(decided)

    return on_batch


def _fates(
    deliveries: Mapping[str, RemoteDelivery], results: Iterable[RecipientResult]
) -> dict[str, RecipientResult]:
    """Each address's result, matched by the recipient it answers (``match_results``,
    shared with ``send``): a message split into transactions (RFC 9422 LIMITS) may have
    results from some of them only, so a position says nothing, and a UTF-8 domain may
    have gone in A-labels."""
    return match_results(((a, d.mailbox) for a, d in deliveries.items()), results)


def _own_outcome(item: RecipientResult, outcome: _OutcomeOf) -> Outcome | None:
    """The outcome of the reply that decided a recipient's fate: its RCPT's refusal (or
    its LIMITS transaction's MAIL's, which is read as a reply to MAIL), or once accepted
    the reply after the content; None while unknown."""
    if item.accepted:
        return None if item.delivery is None else outcome(item.delivery)
    return None if item.reply is None else outcome(item.reply, to_rcpt=not item.mail_refused)


def _too_many_recipients(reply: Reply, *, to_rcpt: bool) -> bool:
    """Whether ``reply`` is RFC 821's misnumbered 452: RFC 5321 §4.5.3.1.10 says a client
    SHOULD take a 552 to RCPT as temporary, as Postfix's client does (it reads it as
    452, its enhanced status class as 4). After the content, 552 is for good (§4.2.2)."""
    return to_rcpt and reply.code == 552


class ExchangerSession:
    """Delivers to one exchanger at a time for the worker, as the relay is configured."""

    def __init__(
        self,
        *,
        client_factory: ClientFactory,
        hostname: str,
        timeouts: Timeouts,
        tls_context: ssl.SSLContext,
        relay_tls: RelayTLS,
        relay_ca: Path | None = None,
    ) -> None:
        self.client_factory = client_factory
        self.hostname = hostname
        self.timeouts = timeouts
        self.tls_context = tls_context
        self.relay_tls = relay_tls
        self.relay_ca = relay_ca
        """The CA certificates ``verify`` checks against when a message asks for it
        under another policy (REQUIRETLS); None: the system's trust store."""
        self._contexts = {relay_tls: tls_context}

    def policy(self) -> MessageTLS:
        """The configured policy, for a message that asks for nothing else."""
        return MessageTLS(self.relay_tls, label=self.relay_tls.value)

    def _context(self, level: RelayTLS) -> ssl.SSLContext:
        context = self._contexts.get(level)
        if context is None:
            context = self._contexts[level] = relay_tls_context(level, self.relay_ca)
        return context

    def _client(self, attempt: Attempt, starttls: bool | None, level: RelayTLS) -> BaseSMTPClient:
        return self.client_factory(
            str(attempt.address),
            attempt.port,
            hostname=self.hostname,
            starttls=starttls,
            ssl_context=self._context(level),
            server_hostname=_tls_name(attempt),
            timeouts=self.timeouts,
        )

    async def _connect(self, attempt: Attempt, relay: str, policy: MessageTLS) -> BaseSMTPClient:
        """A session with the exchanger, TLS as the message's policy says (module
        docstring of :mod:`smtpcore.server.relay_tls`); under REQUIRETLS, one that
        offers REQUIRETLS (RFC 8689 §4.2.1)."""
        client = await self._tls_session(attempt, relay, policy)
        if policy.requiretls and "REQUIRETLS" not in client.connection.extensions:
            await client.quit()
            raise _lacking(
                client,
                relay,
                TryNext(
                    f"host {relay} does not offer REQUIRETLS after TLS", "5.7.30", requiretls=True
                ),
            )
        return client

    async def _tls_session(
        self, attempt: Attempt, relay: str, policy: MessageTLS
    ) -> BaseSMTPClient:
        level = policy.level
        try:
            return await self._open(
                attempt, relay, None if level is RelayTLS.MAY else True, policy
            )
        except _TLSFailed as failure:
            if level.required:
                detail = f"{relay}: TLS is required ({policy.label}): {failure.detail}"
                raise TryNext(detail, "4.7.5", requiretls=policy.requiretls) from failure
            # Opportunistic TLS goes on in plaintext (RFC 7435 §3), as Postfix's "may",
            # here over a new connection: after a failed handshake the old one is
            # unusable (RFC 3207 §4.1), and a client that will log in stops at a refusal.
            logger.info(
                "%s: %s; trying again without TLS (policy %s)",
                loggable(relay),
                loggable(failure.detail),  # the exchanger's words, maybe
                policy.label,
            )
        try:
            return await self._open(attempt, relay, False, policy)
        except _TLSFailed as failure:  # pragma: no cover - no STARTTLS is attempted
            raise TryNext(f"{relay}: {failure.detail}") from None

    async def _open(
        self, attempt: Attempt, relay: str, starttls: bool | None, policy: MessageTLS
    ) -> BaseSMTPClient:
        client = self._client(attempt, starttls, policy.level)
        try:
            await client.connect()
        except TLSNotAvailable as exc:
            not_offered = TryNext(
                f"TLS is required ({policy.label}), but was not offered by host {relay}",
                "4.7.4",
                requiretls=policy.requiretls,
            )
            raise _lacking(client, relay, not_offered) from exc
        except SMTPError as exc:
            if starttls is not False and _tls_failure(exc):
                raise _TLSFailed(_tls_reason(exc)) from exc
            permanent = _refused_for_good(exc)
            raise TryNext(
                self._error_text(exc, relay),
                _greeting_status(exc),
                exc.reply,
                local=exc.local,
                permanent=permanent,
                unreachable=not permanent,
            ) from exc
        refusal = client.starttls_refused
        if refusal is not None:  # starttls=None: the client went on in plaintext
            logger.info(
                "%s: STARTTLS refused: %s; going on without TLS (policy %s)",
                loggable(relay),
                loggable(reply_text(refusal)),  # the exchanger's words
                policy.label,
            )
        return client

    def _error_text(self, exc: SMTPError, relay: str, *, end_unanswered: bool = False) -> str:
        """What failed the session, as the log and the waiting recipients keep it, cut to
        :func:`kept_text`: a lost connection's text quotes the replies it left behind, a
        ``421``'s its whole reply. ``end_unanswered``: it failed while an end of data
        waited for its reply (:func:`while_sending_end_of_data` says so), where a drop
        in the middle of the content, say, reads the same as it."""
        if isinstance(exc, SMTPReplyError):
            return kept_text(f"host {relay} refused {exc.command}: {reply_text(exc.reply)}")
        cause = exc.__cause__
        if str(exc).startswith("cannot connect") and isinstance(cause, OSError) and cause.errno:
            return f"connect to {relay}: {os.strerror(cause.errno)}"
        why = f"{relay}: {exc}"
        return while_sending_end_of_data(why) if end_unanswered else kept_text(why)

    def _tls_field(self, client: BaseSMTPClient, policy: MessageTLS) -> str:
        """What the delivery log says of TLS: ``no``, ``yes`` (encrypted, the certificate
        not checked) or ``verified``."""
        if not client.connection.tls:
            return "no"
        return "verified" if policy.level is RelayTLS.VERIFY else "yes"

    async def deliver(
        self,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS | None = None,
        record: Recorder | None = None,
        cut_after_end: Callable[[Iterable[str]], None] | None = None,
    ) -> dict[str, Outcome]:
        """Send ``entry`` to ``deliveries`` through one exchanger, TLS as ``policy`` says
        (by default, the configured policy).

        ``cut_after_end`` is told the recipients whose end of data (the final dot, or
        BDAT LAST) had gone out with its reply not yet read when a stop cut the session
        short: the exchanger may have taken the message for them (RFC 5321 §6.1).

        ``record`` is given the outcomes (those a :class:`TryNext` settled, when the
        session fails) before QUIT, and each LIMITS transaction's as it ends: the
        exchanger has taken the message once it answered the content, and a QUIT it
        never answers, a later transaction that fails, or a stop meanwhile, must not
        leave that unrecorded (RFC 5321 §6.1: a restart would send it again).

        A session that has had the transactions or recipient domains the exchanger's
        LIMITS allow (MAILMAX, RCPTDOMAINMAX: RFC 9422 §4.1, §4.3) is followed by
        another to the same exchanger for the recipients not sent yet, up to
        :data:`MAILMAX_SESSIONS` sessions: nothing is wrong with it, and each session
        sends at least one transaction."""
        policy = policy or self.policy()
        if record is not None:
            record = _once(record)
        outcomes: dict[str, Outcome] = {}
        remaining = dict(deliveries)
        for _ in range(MAILMAX_SESSIONS):
            try:
                return outcomes | await self._session(
                    attempt, relay, entry, remaining, content, policy, record, cut_after_end
                )
            except _SessionFull as full:
                outcomes |= full.outcomes
                remaining = {a: remaining[a] for a in full.unsent}
            except TryNext as failure:
                # What the sessions before this one decided for good stands.
                done = {
                    a: o for a, o in outcomes.items() if o.status is not RecipientStatus.PENDING
                }
                failure.settled = {**done, **failure.settled}
                raise
        logger.info(
            "%s: %s took %d sessions of its LIMITS (MAILMAX, RCPTDOMAINMAX); %d recipient(s) wait",
            entry.id,
            loggable(relay),
            MAILMAX_SESSIONS,
            len(remaining),
        )
        waiting = Outcome(
            RecipientStatus.PENDING,
            "4.5.3",
            f"the exchanger takes a few transactions or domains a session (LIMITS MAILMAX, "
            f"RCPTDOMAINMAX) and "
            f"{MAILMAX_SESSIONS} sessions were had this round",
            relay,
            attempt.host,
        )
        return outcomes | dict.fromkeys(remaining, waiting)

    async def _session(
        self,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS,
        record: Recorder | None,
        cut_after_end: Callable[[Iterable[str]], None] | None = None,
    ) -> dict[str, Outcome]:
        """One session of :meth:`deliver`. Cancelled (a stop), it closes the connection
        without QUIT, whose reply tells nothing more: waiting for it held the stop up to
        :data:`~smtpcore.server.delivery.QUIT_TIMEOUT` seconds past its grace; and tells
        ``cut_after_end`` who the unanswered end of data was for, if one was."""
        client = await self._connect(attempt, relay, policy)
        polite = True
        try:
            try:
                outcomes = await self._send(
                    client, attempt, relay, entry, deliveries, content, policy, record
                )
            except TryNext as failure:
                if record is not None and failure.settled:
                    await record(failure.settled)
                raise
            except _SessionFull as full:
                if record is not None:
                    await record(full.outcomes)
                raise
            if record is not None:
                await record(outcomes)
            return outcomes
        except asyncio.CancelledError:
            polite = False
            may_have_been_sent = _fates(deliveries, end_unanswered(client.connection))
            if cut_after_end is not None and may_have_been_sent:
                cut_after_end(list(may_have_been_sent))
            raise
        finally:
            # Closes the connection on every way out.
            await (client.quit() if polite else client.close())

    async def _send(
        self,
        client: BaseSMTPClient,
        attempt: Attempt,
        relay: str,
        entry: QueueEntry,
        deliveries: Mapping[str, RemoteDelivery],
        content: QueuedContent,
        policy: MessageTLS,
        record: Recorder | None = None,
    ) -> dict[str, Outcome]:
        tls = self._tls_field(client, policy)
        addresses = list(deliveries)
        rcpts = [d.mailbox for d in deliveries.values()]
        # RFC 3461 §6.2: to a server that speaks DSN, the parameters go on with the message.
        passed = client.connection.extensions.dsn

        def outcome(reply: Reply, *, from_remote: bool = True, to_rcpt: bool = False) -> Outcome:
            dsn = reply_dsn(reply)
            if reply.is_positive:
                status = RecipientStatus.SENT
            elif _too_many_recipients(reply, to_rcpt=to_rcpt):
                status, dsn = RecipientStatus.PENDING, f"4{dsn[1:]}"
            elif reply.code >= 500:
                status = RecipientStatus.FAILED
            else:
                status = RecipientStatus.PENDING
            text, breaks = transcribe(reply)  # the server's own words (RFC 3464 §2.3.6)
            return Outcome(
                status,
                dsn,
                text,
                relay,
                attempt.host,
                detail_breaks=breaks,
                from_remote=from_remote,
                tls=tls,
                tls_policy=policy.label,
                dsn_passed=passed,
            )

        on_batch = None if record is None else _batch_recorder(deliveries, record, outcome)
        try:
            converted = await _carried(client, entry, content, relay)
            mail_params = (
                _forwarded_mail_params(client, entry)
                | _declared_body(entry, converted)
                | _declared_size(client, converted)
            )
            rcpt_params = self._rcpt_params(client, entry, deliveries) if passed else {}
            # A queued sender that no longer parses is refused here, as for good as any
            # other unsendable message (the worker refuses it before it comes here).
            sender: Mailbox | str = "" if not entry.sender else parse_mailbox(entry.sender)
            with await _outgoing(converted, content) as message:
                result = await client.send_message(
                    message,
                    sender,
                    rcpts,
                    mail_params=mail_params,
                    rcpt_params=lambda mailbox: rcpt_params.get(same_address(mailbox), {}),
                    on_batch=on_batch,
                    resend_too_many=True,
                )
        except LocalProtocolError as exc:
            # The client's own refusal of what it was about to send: the same message
            # is refused again on every retry, so it fails for good, alone.
            unsendable = Reply(
                554, quoted(f"the message cannot be sent on as queued: {exc}"), "5.3.0"
            )
            return dict.fromkeys(addresses, outcome(unsendable, from_remote=False))
        except SenderRefused as exc:
            if exc.result is not None:  # per batch (LIMITS): as a refusal of recipients
                return self._refused(deliveries, exc.result, outcome(exc.reply), outcome)
            if exc.reply.code < 500:
                raise TryNext(
                    self._error_text(exc, relay), reply_dsn(exc.reply), exc.reply
                ) from exc
            return dict.fromkeys(addresses, outcome(exc.reply))
        except ExtensionNotOffered as exc:
            # What the session lacks for the message, found before MAIL by the relay
            # (_carried) or the client (a UTF-8 address): a reply on the exchanger's behalf.
            refusal = _lacking(client, relay, exc.reply)
            _say_unreturnable(entry, relay, exc)
            return dict.fromkeys(addresses, outcome(refusal, from_remote=False))
        except (RecipientsRefused, MessageRefused) as exc:
            # A local refusal (a SIZE overrun) is the client's reply on the exchanger's
            # behalf, for what it announced.
            refused = outcome(exc.reply, from_remote=not exc.local)
            if exc.result is None:
                return dict.fromkeys(addresses, refused)
            return self._refused(deliveries, exc.result, refused, outcome)
        except SMTPError as exc:
            if isinstance(exc, SMTPConnectionError) and exc.local and exc.result is not None:
                # The client's own stop at the exchanger's MAILMAX or RCPTDOMAINMAX (RFC
                # 9422 §4.1, §4.3): the recipients it did not send go in a new session to
                # the same exchanger.
                answered = self._refused(deliveries, exc.result, None, outcome)
                fates = _fates(deliveries, exc.result.recipients)
                unsent = [a for a in addresses if a not in fates or fates[a].reply is None]
                raise _SessionFull(
                    {a: o for a, o in answered.items() if a not in unsent}, unsent
                ) from exc
            settled = self._settled(client, exc, deliveries, outcome)
            reply = exc.reply
            if reply is not None and 500 <= reply.code < 600:
                # Refused for good, by the exchanger or for what it announced: bounce now.
                refused = outcome(reply, from_remote=not exc.local)
                return {address: settled.get(address, refused) for address in addresses}
            why = self._error_text(
                exc, relay, end_unanswered=bool(end_unanswered(client.connection))
            )
            raise TryNext(why, reply=reply, settled=settled, local=exc.local) from exc
        return self._refused(deliveries, result, None, outcome)

    def _rcpt_params(
        self, client: BaseSMTPClient, entry: QueueEntry, deliveries: Mapping[str, RemoteDelivery]
    ) -> dict[tuple[str, str], dict[str, str | None]]:
        """The queued DSN parameters of each recipient, by its address as
        :func:`same_address` compares it, for an exchanger that speaks DSN (RFC 3461
        §6.2)."""
        queued = {r.address: r for r in entry.recipients}
        rcpt_params: dict[tuple[str, str], dict[str, str | None]] = {}
        for address, delivery in deliveries.items():
            recipient = queued[address]
            params = rcpt_params.setdefault(same_address(delivery.mailbox), {})
            if recipient.notify is not None:
                params["NOTIFY"] = recipient.notify
            orcpt = None if recipient.orcpt is None else _passed_orcpt(client, recipient.orcpt)
            if orcpt is not None:
                params["ORCPT"] = orcpt
        return rcpt_params

    def _refused(
        self,
        deliveries: Mapping[str, RemoteDelivery],
        result: TransactionResult,
        last: Outcome | None,
        outcome: _OutcomeOf,
    ) -> dict[str, Outcome]:
        """Each recipient's outcome from its own reply in ``result`` (its RCPT's
        refusal, or the reply after the content or the refusal of the content that
        its transaction had). A recipient with no reply of its own there (a LIMITS
        batch not sent, RFC 9422 §4.2) waits: another transaction's reply, ``last``
        (the refusal raised, if any), says nothing of its fate (RFC 5321 §6.1)."""
        fates = _fates(deliveries, result.recipients)
        outcomes = {}
        for address in deliveries:
            item = fates.get(address)
            fate = None if item is None else _own_outcome(item, outcome)
            if fate is not None:
                outcomes[address] = fate
                continue
            known = "" if last is None else f" (the last refusal: {last.detail})"
            unknown = outcome(Reply(451, "no reply known", "4.0.0"), from_remote=False)
            outcomes[address] = replace(
                unknown, detail=f"no reply known for it{known}", detail_breaks=()
            )
        return outcomes

    def _settled(
        self,
        client: BaseSMTPClient,
        exc: SMTPError,
        deliveries: Mapping[str, RemoteDelivery],
        outcome: _OutcomeOf,
    ) -> dict[str, Outcome]:
        """What a session that failed as a whole had decided for good, recipient by
        recipient: delivered (2xx) or refused (5xx, RFC 5321 §4.2.1). From the
        transaction record (the last transaction's RCPT replies) and what the error
        carries (each LIMITS batch's, LMTP's replies after the content)."""
        record = client.connection.transaction
        fates = _fates(deliveries, record.recipients if record is not None else ())
        if exc.result is not None:
            answered = [item for item in exc.result.recipients if item.reply is not None]
            fates.update(_fates(deliveries, answered))
        settled = {}
        for address, item in fates.items():
            fate = _own_outcome(item, outcome)
            if fate is not None and fate.status is not RecipientStatus.PENDING:
                settled[address] = fate
        return settled
