"""The one SMTP client session, shared by the asyncio, trio and blocking clients.

:class:`BaseSMTPClient` drives a :class:`~smtpcore.smtp.ClientConnection`
over a :class:`~smtpcore._driver.Link` the adapter opens: greeting,
EHLO (HELO if refused), STARTTLS, AUTH (RFC 4954) when given credentials,
then per message ``MAIL``, every ``RCPT`` and ``DATA`` in one write when the
server offers PIPELINING (RFC 2920), the content and its end in one more, and
``RSET`` before the next message only if this one failed. The low-level
commands (``ehlo``, ``noop``, ``rset``, ``verify``, ``command``,
``starttls``, ``login``) are public for those who drive a session by hand,
as smtplib users do.

This module holds what a client is built with (its options) and
:meth:`BaseSMTPClient.send_message`, which turns a message into an envelope and
picks its path; the session's parts are its bases, each in its own module,
each layer using only those below it:

- ``_smtp_client_wire.py``: commands written, replies read;
- ``_smtp_client_commands.py``: QUIT, NOOP, RSET, VRFY, ``command()``, and the
  close after an error;
- ``_smtp_client_setup.py``: connect, EHLO/HELO, STARTTLS, XCLIENT, AUTH;
- ``_smtp_client_content.py``: DATA content and BDAT chunks;
- ``_smtp_client_everyday.py``: the transaction most messages are, written out;
- ``_smtp_client_transaction.py``: any one transaction (RSET, XFORWARD,
  PIPELINING, LMTP);
- ``_smtp_client_batches.py``: a message in several transactions (LIMITS, a
  resend of recipients refused as too many).
"""

from __future__ import annotations

import email.message
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TypedDict

from smtpcore._dial_name import dial_names
from smtpcore._driver._content import (
    Content,
    ReadAhead,
    first_piece_checked,
)
from smtpcore._driver._ports import client_port
from smtpcore._driver._smtp_client_batches import SMTPClientBatches, mailmax_reason, start_of
from smtpcore._driver._smtp_client_setup import SMTPClientSetup
from smtpcore._driver._smtp_client_transaction import BINARYMIME
from smtpcore._driver._smtp_client_wire import CHUNK
from smtpcore._driver._smtp_credentials import Credentials
from smtpcore._driver._smtp_envelope import (
    Offer,
    RecipientParameters,
    Recipients,
    build_envelope,
)
from smtpcore._driver._smtp_errors import (
    AuthenticationError,
    AuthenticationNotAvailable,
    ExtensionNotOffered,
    HelloRefused,
    MessageRefused,
    MessageTooLarge,
    RecipientsRefused,
    SenderRefused,
    SMTPConnectionError,
    SMTPError,
    SMTPProtocolError,
    SMTPReplyError,
    SMTPTimeout,
    TLSNotAvailable,
    not_offered,
)
from smtpcore._driver._smtp_resend import any_too_many
from smtpcore._driver._timeouts import DEFAULT_TIMEOUTS, Timeouts
from smtpcore._driver._trace import Trace, WireTrace
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError
from smtpcore._hostname import MAX_HOSTNAME
from smtpcore._words import ascii_upper, listed
from smtpcore.address import Mailbox
from smtpcore.sasl import ClientMechanism
from smtpcore.smtp import (
    ClientConnection,
    Ehlo,
    Mail,
    Reply,
    TransactionResult,
    Xforward,
)
from smtpcore.smtp._params import NO_PARAMETERS, ParametersLike

__all__ = [
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "BaseSMTPClient",
    "ExtensionNotOffered",
    "HelloRefused",
    "MessageRefused",
    "MessageTooLarge",
    "RecipientParameters",
    "Recipients",
    "RecipientsRefused",
    "SMTPClientOptions",
    "SMTPConnectionError",
    "SMTPError",
    "SMTPProtocolError",
    "SMTPReplyError",
    "SMTPTimeout",
    "SenderRefused",
    "TLSNotAvailable",
    "check_hello_name",
]


class SMTPClientOptions(TypedDict, total=False):
    """The keyword options of an SMTP client, for functions that pass them on
    (``send_message(..., **options)``): a misspelt one fails type checking."""

    hostname: str | None
    tls_on_connect: bool
    starttls: bool | None
    ssl_context: ssl.SSLContext | None
    server_hostname: str | None
    timeouts: Timeouts
    lmtp: bool
    username: str | None
    password: str | None
    oauth_token: str | None
    auth_mechanisms: Sequence[str] | None
    sasl_mechanism: ClientMechanism | Callable[[], ClientMechanism] | None
    allow_plaintext_auth: bool
    trace: Trace | None
    chunking: bool | None
    chunk_size: int


class BaseSMTPClient(SMTPClientSetup, SMTPClientBatches):
    """An SMTP client session to ``host``; the adapters add how to open a connection.

    ``hostname`` is the name the client gives in EHLO (the machine's FQDN by
    default): ASCII (A-labels), one word of at most 255 octets (RFC 5321
    §4.1.1.1, §4.5.3.1.2), else ``ValueError`` when the client is built.
    ``tls_on_connect`` speaks TLS from the first byte (port 465, RFC 8314).
    ``port`` is 25 by default, 465 with ``tls_on_connect``; with ``lmtp`` it is
    24, the lmtp port, and 25 is a ``ValueError``: LMTP must not be used on TCP
    port 25 (RFC 2033 §1).
    ``starttls``: True requires STARTTLS, None (the default) uses it when the
    server offers it, and goes on in plaintext when the server refuses it (any
    reply but ``220`` or ``421``: see :attr:`starttls_refused`) unless credentials
    are to be sent,
    False never does. Certificates are checked against
    ``host`` (or ``server_hostname``) with ``ssl_context``, by default
    :func:`ssl.create_default_context`, which verifies them. A non-ASCII ``host``
    or ``server_hostname`` is used in its A-label form, as IDNA 2008 makes it
    (``mx.straße.test``: ``mx.xn--strae-oqa.test``, never ``mx.strasse.test``);
    one IDNA refuses, or a name with an empty label or a label over 63 octets, is a
    ``ValueError`` when the client is built.

    With ``username`` and ``password`` (or ``oauth_token``) the client
    authenticates after EHLO and STARTTLS, with the strongest mechanism both
    sides have (:func:`~smtpcore.sasl.choose_mechanism`), limited to
    ``auth_mechanisms`` if given (a list of names); ``sasl_mechanism`` supplies a client
    mechanism instead (a factory of one, for a client that connects more
    than once). Mechanisms that show a reusable
    secret (PLAIN, LOGIN, bearer tokens) are used only under TLS unless
    ``allow_plaintext_auth`` is true.

    ``trace`` receives every line of the session both ways, AUTH secrets
    masked: a callback ``trace(direction, line)`` (``"C"`` or ``"S"``), or a
    :class:`logging.Logger`, which gets them at DEBUG.

    ``chunking``: None (the default) sends content with BDAT when the server
    offers CHUNKING (RFC 3030), True requires it, False always uses DATA;
    ``BODY=BINARYMIME`` content goes with BDAT whatever it says. Content is
    read and sent in pieces of ``chunk_size`` octets (a BDAT chunk each).
    """

    connection_error = SMTPConnectionError
    timeout_error = SMTPTimeout
    misuse_error = LocalProtocolError
    _plaintext_auth_error = partial(AuthenticationNotAvailable, needs_tls=True)
    """``538 5.7.11``, encryption required for the mechanism (RFC 4954 §6)."""
    timeouts: Timeouts

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        hostname: str | None = None,
        tls_on_connect: bool = False,
        starttls: bool | None = None,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        lmtp: bool = False,
        username: str | None = None,
        password: str | None = None,
        oauth_token: str | None = None,
        auth_mechanisms: Sequence[str] | None = None,
        sasl_mechanism: ClientMechanism | Callable[[], ClientMechanism] | None = None,
        allow_plaintext_auth: bool = False,
        trace: Trace | None = None,
        chunking: bool | None = None,
        chunk_size: int = CHUNK,
    ) -> None:
        self._credentials = Credentials(
            username,
            password,
            oauth_token,
            sasl_mechanism,
            None
            if auth_mechanisms is None
            else [ascii_upper(name) for name in listed("auth_mechanisms", auth_mechanisms)],
        )
        self.allow_plaintext_auth = allow_plaintext_auth
        self.host, self.server_hostname = dial_names(host, server_hostname)
        self.port = client_port(port, lmtp=lmtp, tls_on_connect=tls_on_connect)
        self.hostname = hostname or socket.getfqdn()
        if hostname:
            check_hello_name(hostname)
        self.tls_on_connect = tls_on_connect
        self.use_starttls = starttls
        """The ``starttls`` option: True requires it, None uses it if offered, False never."""
        self.ssl_context = ssl_context
        self.timeouts = timeouts
        self.lmtp = lmtp
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.chunking = chunking
        self.chunk_size = chunk_size
        self.authenticated_with: str | None = None
        """The mechanism the session authenticated with, once it has."""
        self.starttls_refused: Reply | None = None
        """The reply that refused the STARTTLS ``connect`` sent with ``starttls=None``
        (a ``454``, say), after which the session went on in plaintext (RFC 3207 §4);
        None when STARTTLS was not refused, or not sent."""
        self.ehlo_refused: Reply | None = None
        """The reply that refused EHLO (a ``4xx`` or a ``5xx``) when the session went
        on after HELO, with no extension, kept after QUIT until the next ``connect()``;
        None when EHLO was taken (an ``ehlo()`` too), or not sent (LMTP).
        A ``4xx`` says the refusal was temporary: what the session lacks for it may be
        offered later (a relay defers, rather than bounce, mail that needs it)."""
        self._trace = None if trace is None else WireTrace(trace)
        self._transport: Link | None = None
        self._conn: ClientConnection | None = None
        self._new_session()

    def _new_session(self) -> None:
        """Forget what the last session left: a new one is not logged in, and owes
        no RSET for a transaction that failed in the old one."""
        self.authenticated_with = None
        self.starttls_refused = None
        self.ehlo_refused = None
        self._transaction_failed = False
        self._mails = 0
        """The MAIL commands sent in this session, refused or not: what LIMITS MAILMAX
        counts (RFC 9422 §4.1), RSET or no RSET."""
        self._domains: set[str] = set()
        """The recipient domains this session has been given, while the server's
        LIMITS has RCPTDOMAINMAX: what that limit counts (RFC 9422 §4.3)."""
        self._offer: Offer | None = None
        """What the server's EHLO reply says about sending, read once per reply."""
        self._exchanging: Link | None = None
        """The link whose commands go through :meth:`_exchange` (see :meth:`_exchanges`)."""
        self._tls_just_started = False
        """Whether no command has gone since a STARTTLS handshake (see
        :meth:`_look_at_arrived`)."""

    async def send_message(
        self,
        message: Content | email.message.Message,
        sender: str | Mailbox | None = None,
        recipients: Recipients | None = None,
        *,
        mail_params: ParametersLike = None,
        rcpt_params: RecipientParameters = None,
        xforward: Xforward | None = None,
        on_batch: Callable[[TransactionResult], Awaitable[None]] | None = None,
        resend_too_many: bool = False,
    ) -> TransactionResult:
        """Send one message over this session; returns each recipient's fate.

        ``message`` is the content as bytes (CRLF line ends; others are made
        CRLF), a file opened in binary mode, a sync or async iterable of
        bytes (read ``chunk_size`` octets at a time, never whole; a ``str``,
        a file opened in text mode, or an iterable whose first piece is a
        ``str`` is a :class:`TypeError`, before anything is sent: that first
        piece is read before ``MAIL``; a later piece that is not bytes is
        found only as it is sent, and the connection is closed without the
        final dot; an iterator refused before its content went has lost that
        piece, where a file is read only once the server takes the content,
        so it can be sent again; an async iterator the message stopped
        reading, refused or cancelled, is closed before this returns, so that
        an async generator's ``finally`` runs then, PEP 525), or an email message (an
        :class:`~email.message.EmailMessage`, or a :class:`~email.message.Message`
        of any policy, as ``email.message_from_bytes`` makes), whose headers give
        the sender and recipients when they are not passed, as ``smtplib``
        takes them (the ``Resent-`` fields of a message resent once), whose
        Bcc header is not sent, and whose header fields are UTF-8 in an
        SMTPUTF8 transaction (RFC 6532; a UTF-8 address in one, or raw UTF-8
        fields of a message parsed from bytes, need it) and ASCII otherwise.
        Bytes whose header section (a first line that is a field, or after an
        mbox ``From`` line, up to the first empty line or the first line that
        is no field nor a fold; its first 256 KiB at most) holds raw UTF-8
        need SMTPUTF8 too (RFC 6531 §3.4): their fields go as they are, and a
        server without SMTPUTF8 gets none of it (§3.2). 8-bit octets that are
        no UTF-8 (a Latin-1 name in old mail) are 8-bit content, no more.
        Only bytes are looked at before they are sent, and only when they
        hold an 8-bit octet at all. Content whose 8-bit-ness cannot be seen
        before it is sent (a file, an iterable) is not: it goes as it is
        (a forwarder passing on received mail may give it so), and
        ``mail_params={"SMTPUTF8": None}`` makes its transaction SMTPUTF8. It
        is declared
        ``BODY=8BITMIME`` when the server offers 8BITMIME; to a server without
        it, an 8-bit octet found as the content is read is
        :class:`~smtpcore.LocalProtocolError`, and the connection is closed
        without the final dot, so that nothing of the message is delivered.
        Raises :class:`SenderRefused`, :class:`RecipientsRefused` when no
        recipient is accepted, or :class:`MessageRefused`; a partial success
        returns, with the refused recipients in ``result.refused``: those refused
        at ``RCPT`` and those refused after it (an LMTP reply after the content,
        RFC 2033 §4.2; a LIMITS batch whose content was refused), so that each
        recipient is in ``result.delivered`` or ``result.refused``.

        ``mail_params`` adds ESMTP parameters to MAIL (``{"RET": "HDRS"}``);
        ``SIZE``, ``BODY`` and ``SMTPUTF8`` are added by the client unless
        given. ``rcpt_params`` adds parameters to every RCPT
        (``{"NOTIFY": "FAILURE,DELAY"}``), or is a function giving each
        recipient's. A parameter of an extension the server did not offer
        raises :class:`ExtensionNotOffered`, and a malformed one
        :class:`~smtpcore.LocalProtocolError`, before anything is sent.

        ``xforward`` (Postfix's XFORWARD, for a content filter that passes on
        who sent the message to it) goes before ``MAIL``, with only the
        attributes the server announced; :class:`ExtensionNotOffered` if it
        offers no XFORWARD to this client, :class:`SMTPReplyError` if it
        refuses it (before ``MAIL``).

        A message the server has said it cannot take is refused before
        ``MAIL``, with the reply RFC 3463 names: :class:`MessageTooLarge`
        (``552 5.3.4``) over its ``SIZE``, :class:`ExtensionNotOffered` for a
        UTF-8 local part or 8-bit header fields (of an email message or of
        bytes) without ``SMTPUTF8`` (``553 5.6.7``, RFC 6531 §3.2; an address
        whose only UTF-8 is its domain goes in A-labels) or
        8-bit content without ``8BITMIME`` (``554 5.6.3``). After an error the session
        goes on where it still stands between commands, as the machine's state tells:
        after a refusal, a caller's mistake found before anything is sent (a
        :class:`TypeError`, :class:`ValueError` or
        :class:`~smtpcore.LocalProtocolError`), or an error of ``on_batch`` between
        two transactions. Anywhere else (a reply due, content half sent in DATA or
        BDAT chunks, a lost connection, a timeout, a broken reply) the connection is
        closed.

        A server's LIMITS (RFC 9422) are kept: more recipients than it takes
        in one transaction (``RCPTMAX``) go in several, and a session that has
        had the ``MAIL`` commands its ``MAILMAX`` allows, or the recipient
        domains its ``RCPTDOMAINMAX`` allows (in the session, not in one
        transaction), says QUIT and raises :class:`SMTPConnectionError`
        (``local``, ``421 4.5.3``) rather than send the rest, with the
        recipients not sent unanswered in ``result``.
        ``on_batch``, for a message that goes in several transactions, is awaited
        with each one's result as it ends (delivered or refused), before the next
        begins, so that a caller can record what each delivered though a later one
        fails or the call is cancelled (RFC 5321 §6.1: else it is sent again); a
        message that goes in one transaction has its result in the return value.
        Without ``on_batch``, an error in a later transaction carries them: its
        ``result`` (an :class:`SMTPError`'s, or a
        :class:`~smtpcore.LocalProtocolError`'s, for content found unsendable only
        then) holds the transactions done and, unanswered, the recipients not sent.

        ``resend_too_many``: recipients refused ``452`` (``4.5.3`` or no enhanced
        status, RFC 5321 §4.5.3.1.10) as past the server's limit on recipients in one
        transaction go at once in a new transaction on this session, the "chunks"
        §4.5.3.1.8 asks a client to be ready to send (``MAIL`` again, the same
        content, §3.3), again and again while each transaction delivers to someone:
        one that delivers to none leaves them refused, so that a server that takes
        none is not asked forever. Each
        recipient is in ``result`` once, with the reply of its last transaction, and
        ``on_batch`` is awaited for each transaction. Content must be bytes or a
        seekable file for it; other content goes once, the ``452`` left in ``result``.
        """
        if self._busy:  # as @one_call does, without a coroutine more to resume
            self._second_call()
        self._busy = True
        try:
            conn = self._conn
            if conn is None:
                raise SMTPConnectionError("not connected")
            extensions = conn._extensions  # conn.extensions, without the property's call
            offer = self._offer
            if offer is None or offer.extensions is not extensions:
                offer = self._offer = Offer.of(extensions)
            envelope = build_envelope(offer, message, sender, recipients, mail_params, rcpt_params)
            forward: Sequence[Xforward] = ()  # no list made for the message without it
            if xforward is not None:
                sent = xforward.only(extensions.xforward)
                if sent is None:
                    raise not_offered("XFORWARD")
                forward = sent.split()
            mail, content = envelope.mail, envelope.content
            if type(content) is not bytes:  # an iterator of str: refused before MAIL
                content = await first_piece_checked(content)
            chunked = (
                offer.chunking  # as _uses_bdat decides for a message without parameters
                if self.chunking is None and mail.params is NO_PARAMETERS
                else self._uses_bdat(mail, offer)
            )
            # Outside the try: content _batches refuses (ValueError) is the caller's
            # mistake, found before anything is sent, and the session goes on.
            plan = (
                None
                if offer.limits is None
                else await self._plan(envelope.rcpts, content, offer.limits)
            )
            try:  # as _closing_unless_refused does, without a coroutine more to resume
                if plan is not None:
                    limits = offer.limits
                    assert limits is not None  # the plan is made of them
                    if limits.mail_max is not None and self._mails >= limits.mail_max:
                        await self._no_more_mail(
                            mailmax_reason(limits.mail_max), mail, [envelope.rcpts]
                        )
                    batches, later, domains = plan
                    self._domains = domains  # checked: their RCPTs go now (RFC 9422 §4.3)
                    if len(batches) != 1 or later:
                        return await self._transactions(
                            mail,
                            batches,
                            content,
                            chunked=chunked,
                            forward=forward,
                            on_batch=on_batch,
                            later=later,
                            resend=resend_too_many,
                        )
                if resend_too_many:  # the one test the usual message pays for the option
                    start = start_of(content)
                    result = await self._transaction(
                        mail, envelope.rcpts, content, chunked=chunked, forward=forward
                    )
                    if not any_too_many(result):
                        return result
                    return await self._send_again(
                        mail,
                        envelope.rcpts,
                        content,
                        result,
                        start=start,
                        chunked=chunked,
                        forward=forward,
                        on_batch=on_batch,
                    )
                return await self._transaction(
                    mail, envelope.rcpts, content, chunked=chunked, forward=forward
                )
            except BaseException:
                try:
                    await self._end_unless_refused()
                finally:  # an async iterator the message stopped reading (refused, cut)
                    if type(content) is ReadAhead:
                        await content.aclose()
                raise
        finally:
            self._busy = False

    def _uses_bdat(self, mail: Mail, offer: Offer) -> bool:
        """BDAT for this message: BINARYMIME content must (RFC 3030 §3); otherwise as
        ``chunking`` says and the server offers."""
        params = mail.params
        if params is not NO_PARAMETERS and (params.get("BODY") or "").upper() == BINARYMIME:
            return True
        offered = offer.chunking
        if self.chunking and not offered:
            reply = Reply(502, "the server does not offer CHUNKING, needed for BDAT", "5.5.1")
            raise ExtensionNotOffered(None, "CHUNKING", reply)
        return offered and self.chunking is not False


def check_hello_name(hostname: str) -> None:
    """``ValueError`` for a ``hostname`` EHLO cannot carry (ASCII, one word of at most
    255 octets: RFC 5321 §4.1.1.1, §4.5.3.1.2), when the client is built rather than
    at its first connection."""
    try:
        Ehlo(hostname)
    except LocalProtocolError as exc:
        raise ValueError(f"hostname {hostname!r} cannot go in EHLO: {exc}") from None
    if not hostname.isascii() or len(hostname) > MAX_HOSTNAME:
        raise ValueError(
            f"hostname {hostname!r} cannot go in EHLO: it must be ASCII (A-labels) and at "
            f"most {MAX_HOSTNAME} octets"
        )
