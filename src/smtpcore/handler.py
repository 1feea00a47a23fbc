"""What an application writes to receive mail: a :class:`Handler` and the objects it sees.

The asyncio and trio adapters drive a :class:`~smtpcore.smtp.ServerConnection`
and call the handler's hooks at each step of a session (RFC 5321 §3).

The contract is one rule: **what a hook returns is the answer**. A hook
returns the :class:`~smtpcore.smtp.Reply` to send, or ``None``, which stands
for what :class:`Handler`'s own hook returns: ``return None`` and
``return await super().handle_mail(session, command)`` are the same answer.
The defaults live in :class:`Handler` alone (the adapters hold none of their
own), so which hooks a subclass overrides never changes a session, only what
they return does. The defaults accept a session, a sender and a message, but
refuse every recipient: a server that accepts every recipient is an open
relay, so the application has to say which recipients it takes (RFC 5321
§7.1).

SMTP AUTH (RFC 4954) is configured on the server with an
:class:`Authenticator`, which turns the application's credential checks into
:mod:`smtpcore.sasl` mechanisms; a successful AUTH leaves an
:class:`AuthIdentity` in :attr:`Session.authenticated`.

This module does no I/O and imports no framework: one handler class serves
both adapters.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from smtpcore._errors import LocalProtocolError
from smtpcore._handler_auth import Authenticator
from smtpcore._handler_auth import MechanismFactory as _MechanismFactory
from smtpcore._rarely_set import _RarelySet
from smtpcore.address import Mailbox
from smtpcore.smtp import Ehlo, Helo, Lhlo, Mail, Parameters, Rcpt, Reply, Xclient, Xforward

__all__ = [
    "AuthIdentity",
    "Authenticator",
    "Envelope",
    "Handler",
    "MechanismFactory",
    "MessageReply",
    "Recipient",
    "Session",
    "TLSInfo",
]

MessageReply: TypeAlias = "Reply | Sequence[Reply] | None"
"""What :meth:`Handler.handle_message` returns: one reply, one per recipient
(LMTP, RFC 2033 §4.2), or None for the default."""

MechanismFactory: TypeAlias = _MechanismFactory
"""Builds a fresh server mechanism for one ``AUTH`` command."""


@dataclass(frozen=True, slots=True)
class AuthIdentity:
    """Who the client proved to be with ``AUTH`` (RFC 4954, RFC 4422 §3.4).

    ``str()`` gives :attr:`authzid`, the identity to apply policy to.
    """

    authcid: str
    """The name whose credentials were checked."""
    authzid: str
    """The identity the client acts as: :attr:`authcid` itself unless the client
    asked for another and the :class:`Authenticator`'s ``authorize`` allowed it."""
    mechanism: str
    """The SASL mechanism used, such as ``"PLAIN"``."""

    def __str__(self) -> str:
        return self.authzid


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """The TLS state of a connection, as the handshake left it."""

    version: str | None
    """Protocol version, such as ``"TLSv1.3"``."""
    cipher: str | None
    """Cipher suite name."""
    peer_certificate: dict[str, Any] | None = None
    """The peer's certificate as :meth:`ssl.SSLSocket.getpeercert` gives it, if it sent one
    that was verified."""
    terminated_by_proxy: bool = False
    """True when a trusted proxy ended the client's TLS and said so in its PROXY header
    (PP2_TYPE_SSL, HAProxy's ``send-proxy-v2-ssl``): the hop from the proxy is not
    TLS, so there are no channel bindings, and ``version`` and ``cipher`` are what
    the proxy reported (None where it did not)."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """One accepted ``RCPT TO``: the mailbox and its ESMTP parameters (RFC 5321 §4.1.1.3)."""

    mailbox: Mailbox
    params: Parameters = field(default_factory=Parameters)


class _Commit(enum.Enum):
    """Where a message at its end stands for :meth:`Session.begin_commit` (before
    that, while its content comes, the mark is unset: :class:`_CommitMark`)."""

    ANSWERING = enum.auto()
    """``handle_message`` runs: it may begin the commit."""
    COMMITTING = enum.auto()
    """``handle_message`` began the commit: a 421 from here on would be false."""


class _CommitMark:
    """Where a message stands for :meth:`Session.begin_commit`, kept with its own
    transaction, so that no mark outlives the message it was set for. A slot set
    only just before ``handle_message`` (:func:`_answering`) and by ``begin_commit``;
    unset, the content is still coming: the adapter builds an envelope at each MAIL, and
    spends no time on it there."""

    __slots__ = ("_commit",)
    _commit: _Commit


@dataclass(slots=True, eq=False)
class Envelope(_CommitMark):
    """One mail transaction: sender, accepted recipients and, once read, the content.

    A new envelope starts with each accepted ``MAIL``. ``content`` holds the
    message (without dot-stuffing) when the handler lets the adapter collect
    it in memory; a streaming handler leaves it empty.
    """

    sender: Mailbox | None
    """The reverse-path; ``None`` is the null path ``<>`` of a bounce (RFC 5321 §4.5.5)."""
    mail_params: Parameters = field(default_factory=Parameters)
    submitter: str | None = None
    """The ``AUTH=`` mailbox of ``MAIL`` (xtext-decoded), from an authenticated client only.

    A mailbox (RFC 4954 §5), in its wire form, that holds no control or format
    character (ZWNJ and ZWJ excepted: some scripts cannot be written without them,
    as log text keeps them): an ``AUTH=`` whose xtext decodes to anything else (a bare user name, a
    CR LF) is taken as ``AUTH=<>``, and one that is no xtext gets ``501 5.5.4``.

    ``None`` when the client gave ``AUTH=<>``, no ``AUTH=``, or has not
    authenticated: RFC 4954 §5 then has the server act as if ``AUTH=<>``
    was given. Whether to trust the authenticated client's word is the
    handler's decision (``mail_params`` keeps the raw value for logging).
    """
    recipients: list[Recipient] = field(default_factory=list)
    xforward: Xforward | None = None
    """Who sent this message to the host before, as a trusted content filter said with
    XFORWARD before ``MAIL`` (Postfix); None when it said nothing."""
    content: bytes = b""
    """The message as received, once :meth:`Handler.handle_message` is called."""
    size: int = 0
    """Octets of content received so far (after unstuffing)."""
    chunks: list[bytes] = field(default_factory=list, repr=False)
    """Where the default :meth:`Handler.handle_data_chunk` collects content."""


def _answering(envelope: Envelope) -> None:
    """The adapter's call, just before ``handle_message``: from now on that hook may
    call :meth:`Session.begin_commit`."""
    mark: _CommitMark = envelope  # the slot is the base class's, not a field
    mark._commit = _Commit.ANSWERING


@dataclass(slots=True, eq=False)
class Session(_RarelySet):
    """One SMTP connection, as far as the handler needs to know it."""

    hostname: str
    """This server's own name, as used in the greeting."""
    peer: tuple[str, int] | None = None
    """The client's address and port: from the connection, a trusted proxy's PROXY
    header, or a trusted client's XCLIENT (``None`` when it said ``[UNAVAILABLE]``; port
    0, reserved by RFC 9293 §3.1 and so no client's, when it named ``ADDR`` without
    ``PORT``: the log writes no port for it)."""
    local: tuple[str, int] | None = None
    """The address and port the client connected to; an IPv4 address as such, as in
    ``peer``, though a dual-stack socket gives it IPv4-mapped (``::ffff:192.0.2.1``)."""
    peer_name: str | None = None
    """The client's host name, when a trusted client named it with XCLIENT; smtpcore
    looks up no names itself."""
    helo_name: str | None = None
    """The name given in EHLO, HELO or LHLO; reset by STARTTLS (RFC 3207 §4.2), and set
    by XCLIENT's ``HELO`` until the next EHLO (as in Postfix)."""
    extended: bool = False
    """True after EHLO or LHLO, False after HELO."""
    tls: TLSInfo | None = None
    """Set once TLS is up, by STARTTLS or on connect."""
    authenticated: AuthIdentity | None = None
    """Who the client proved to be; ``None`` until AUTH succeeds (RFC 4954), and again
    after STARTTLS (RFC 3207 §4.2). After an XCLIENT with ``LOGIN``, that login, with
    the mechanism ``"XCLIENT"``."""
    xclient: Xclient | None = None
    """Everything trusted clients said with XCLIENT in this session (later commands
    overwriting what they name), less the ``HELO`` and ``LOGIN`` a STARTTLS since
    discarded (RFC 3207 §4.2); None if none did, or all it said was those. ``peer``,
    ``peer_name``, ``helo_name``, ``authenticated`` and ``local`` already show it."""
    envelope: Envelope | None = None
    """The open mail transaction, if any."""
    transactions: int = 0
    """Messages that reached the end of their content in this session."""

    def begin_commit(self) -> None:
        """Say, in :meth:`Handler.handle_message`, that the message is being taken: call
        it just before the step that cannot be taken back (handing the message to a
        disk write or a queue that runs on, cancelled or not). From then until the
        hook has answered, neither a shutdown past its grace nor the
        ``data_termination`` timeout answers a 4xx in its place: that would say the
        message was not taken, and the client would send it again (RFC 5321 §4.2.5,
        §6.1), a duplicate when it was. The cut-off waits for the hook's own replies
        instead, through its last words (a second), and sends them before its
        ``421``; a hook that has still not answered by then, or by the timeout, is
        cancelled and the session closed with no reply at all, which at worst makes a
        duplicate possible (RFC 1047), where the 4xx made it certain. Until this call,
        the 421 of a cut-off is true, and is sent.

        The mark belongs to the message (its :class:`Envelope`) and ends with it.
        Called anywhere but in ``handle_message`` (``handle_data_chunk``, before the
        content has all come; outside a transaction), it raises
        :class:`~smtpcore.LocalProtocolError`."""
        envelope = self.envelope
        if envelope is None or getattr(envelope, "_commit", None) is None:
            raise LocalProtocolError("begin_commit is called in handle_message only")
        mark: _CommitMark = envelope  # the slot is the base class's, not a field
        mark._commit = _Commit.COMMITTING

    @property
    def committing(self) -> bool:
        """True from :meth:`begin_commit` until ``handle_message`` has answered: its
        replies are then queued, and sent before a cut-off's ``421``."""
        envelope = self.envelope
        return getattr(envelope, "_commit", None) is _Commit.COMMITTING


class Handler:
    """Base class of an application's mail handling; override the hooks you need.

    Each hook's docstring says what :class:`Handler` answers; a hook that
    returns ``None`` gets that answer (see the module's rule above). Hooks are
    coroutines, called one at a time per session, in the order of the
    client's commands. An exception in a hook is logged and the client gets
    ``451 4.3.0`` (a transient local error; ``421`` from
    :meth:`handle_connect`), so a bug never loses a message silently. Out of
    a hook of the mail transaction (:meth:`handle_mail`, :meth:`handle_rcpt`,
    :meth:`handle_data`, :meth:`handle_data_chunk`, :meth:`handle_message`), an ``OSError``
    that says a write found no room gets the reply that says so instead: a
    full disk or quota (``ENOSPC``, ``EDQUOT``) ``452 4.3.1`` (RFC 5321
    §4.2.2, RFC 3463 X.3.1), as temporary, but the client learns why; a file
    size limit (``EFBIG``) ``552 5.3.4`` (RFC 3463 X.3.4), for that message
    will never fit (an exception group, from a task group or nursery in the hook,
    whose failures all earn the same such reply, too: ``ENOSPC`` and ``EDQUOT`` are
    both ``452 4.3.1``); being the expected state of
    a full disk, it is logged as one
    ``reject:`` line at WARNING without a traceback (naming the refused MAIL's
    sender or RCPT's recipient). Any other exception out of such a hook refuses
    the transaction too, and gets the same ``reject:`` line first, its reason the
    hook and the error (``(handle_data_chunk failed: Input/output error)``), then
    its traceback; one out of any other hook is logged with its traceback alone.
    None of these refusals (``4.3.X``, and a ``552 5.3.4`` for a message within
    the ``SIZE`` offered) counts toward the session's ``max_errors``: the fault is
    the server's, not the client's.

    Message content reaches the handler through :meth:`handle_data_chunk`,
    one unstuffed chunk at a time. :class:`Handler`'s own keeps the chunks
    in :attr:`Envelope.chunks` (bounded by the server's size limit), which
    the adapter joins into :attr:`Envelope.content` before
    :meth:`handle_message`. A handler that writes each chunk elsewhere (to
    disk, say) and does not call ``super()`` streams the message with flat
    memory; :attr:`Envelope.content` then stays empty.
    """

    async def handle_connect(self, session: Session) -> Reply | None:
        """A client connected: ``220 <hostname> ESMTP smtpcore`` greets it.

        ``Reply(554, ...)`` refuses service (RFC 5321 §3.1), and ``Reply(421, ...)``
        closes at once. Asked again for the client a trusted XCLIENT names, whose
        greeting the answer is, with the same three choices, once
        :meth:`handle_close` has ended the session so far.
        """
        return _greeting(session.hostname)

    async def handle_hello(self, session: Session, command: Ehlo | Helo | Lhlo) -> Reply | None:
        """EHLO, HELO or LHLO: ``250 <hostname>``. A positive reply is one line, and
        gets the extension lines added (``extra_extensions`` for one's own): a reply
        of several lines is not legal (RFC 5321 §4.1.1.1), logged and answered ``451``."""
        return _hello(session.hostname)

    async def handle_auth(self, session: Session, identity: AuthIdentity) -> Reply | None:
        """AUTH succeeded as ``identity``: ``235 2.7.0`` accepts it.

        A veto (``Reply(535, ..., "5.7.8")``, say, for a disabled account, or
        ``454 4.7.0`` for a temporary problem) keeps the session
        unauthenticated; a 535 counts as a failed attempt. The exchange is
        over: any other reply (a ``334``) is this hook's failure, answered
        ``451 4.3.0``.
        """
        return _AUTHENTICATED

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        """``MAIL FROM``: ``250 OK`` accepts any sender."""
        return _OK

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        """``RCPT TO``: ``550 5.1.1`` refuses, so no server relays by accident.

        Return ``Reply(250, "OK")`` for a recipient you take.
        """
        return _NO_MAILBOX

    async def handle_data(self, session: Session, envelope: Envelope) -> Reply | None:
        """``DATA``: ``354`` lets the content follow; a 4xx or 5xx refuses it and keeps
        the transaction open (RFC 5321 §4.1.1.4)."""
        return _START_DATA

    async def handle_data_chunk(self, session: Session, envelope: Envelope, data: bytes) -> None:
        """A chunk of content, unstuffed: kept in :attr:`Envelope.chunks`."""
        envelope.chunks.append(data)

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        """The content ended and is within policy: ``250 OK: message accepted``.

        In LMTP one reply stands for every recipient, or return one per
        accepted recipient, in their order (RFC 2033 §4.2).
        """
        return _ACCEPTED

    async def handle_reset(self, session: Session, envelope: Envelope) -> None:
        """A transaction ended without delivery: RSET, a new EHLO, STARTTLS, a refused or
        broken message, or the client left. A streaming handler drops what it wrote."""

    async def handle_vrfy(self, session: Session, argument: str) -> Reply | None:
        """``VRFY``: ``252`` neither confirms nor denies (RFC 5321 §3.5.3)."""
        return _CANNOT_VRFY

    async def handle_expn(self, session: Session, argument: str) -> Reply | None:
        """``EXPN``: ``502 5.5.1`` refuses, as most servers do (RFC 5321 §3.5.2,
        §7.3: a list's members are not for strangers). Return a reply, ``250`` with
        one mailbox a line, to expand ``argument``."""
        return _NO_EXPN

    async def handle_close(self, session: Session) -> None:
        """The connection is gone, whatever the reason: it is closed before this is
        called, which has the ``command`` timeout, as every hook. Called for every
        session :meth:`handle_connect` was asked for, and for no other: a connection
        the server refuses before its greeting (a ``connection_factory``'s machine,
        a missing or bad PROXY header, a failed TLS handshake on connect, no room
        for it) gets neither hook, so that a handler can pair them. A trusted
        XCLIENT, which asks :meth:`handle_connect` again for the client it names,
        first ends the session so far with this hook."""


# Handler's answers, built once: replies are immutable.
_AUTHENTICATED: Final = Reply(235, "Authentication successful", "2.7.0")
_OK: Final = Reply(250, "OK")
_NO_MAILBOX: Final = Reply(550, "Mailbox unavailable", "5.1.1")
_START_DATA: Final = Reply(354, "End data with <CR><LF>.<CR><LF>")
_ACCEPTED: Final = Reply(250, "OK: message accepted")
_CANNOT_VRFY: Final = Reply(252, "Cannot VRFY user, but will accept message and attempt delivery")
_NO_EXPN: Final = Reply(502, "EXPN not available", "5.5.1")


def _greeting(hostname: str) -> Reply:
    """:meth:`Handler.handle_connect`'s answer, for a server named ``hostname``."""
    return Reply(220, f"{hostname} ESMTP smtpcore")


def _hello(hostname: str) -> Reply:
    """:meth:`Handler.handle_hello`'s answer, for a server named ``hostname``."""
    return Reply(250, hostname)


_BY_HOSTNAME: Final[dict[Callable[..., object], Callable[[str], Reply]]] = {
    Handler.handle_connect: _greeting,
    Handler.handle_hello: _hello,
}
"""Handler's hooks whose answer depends on the server's name alone, and how to make it:
a server makes it once for its name, while the hook is still this function (a test
holds each to its hook)."""

_FIXED_ANSWERS: Final[dict[Callable[..., object], Reply]] = {
    Handler.handle_auth: _AUTHENTICATED,
    Handler.handle_mail: _OK,
    Handler.handle_rcpt: _NO_MAILBOX,
    Handler.handle_data: _START_DATA,
    Handler.handle_message: _ACCEPTED,
    Handler.handle_vrfy: _CANNOT_VRFY,
    Handler.handle_expn: _NO_EXPN,
}
"""Handler's hooks that answer one reply whatever they are asked, and that reply: a
server answers with it without calling the hook, for a handler that does not override
it (or answers None), while the hook is still this function (a test holds each to its
hook)."""

_APPENDS_CHUNKS: Final = Handler.handle_data_chunk
"""Handler's chunk hook, which appends each chunk to :attr:`Envelope.chunks`: a server
does that itself, without the call, for a handler that does not override it, while the
hook is still this function (a test holds it to its hook)."""
