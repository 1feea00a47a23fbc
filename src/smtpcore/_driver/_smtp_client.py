"""The one SMTP client session, shared by the asyncio and trio adapters.

:class:`BaseSMTPClient` drives a :class:`~smtpcore.smtp.ClientConnection`
over a :class:`~smtpcore._driver.Transport` the adapter opens: greeting,
EHLO (HELO if refused), STARTTLS, AUTH (RFC 4954) when given credentials,
then per message ``MAIL``, every ``RCPT`` and ``DATA`` in one write when the
server offers PIPELINING (RFC 2920), the content, and ``RSET`` before the
next message of a reused session.
"""

from __future__ import annotations

import copy
import email.message
import email.utils
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Final, TypeAlias, TypeVar

from smtpcore._driver._client_base import BaseClient
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
)
from smtpcore._driver._timeouts import DEFAULT_TIMEOUTS, Timeouts
from smtpcore._driver._transport import Link
from smtpcore._errors import LocalProtocolError, RemoteProtocolError
from smtpcore._numbers import parse_number
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore.address import Mailbox, parse_mailbox
from smtpcore.sasl import (
    CLIENT_MECHANISMS,
    PREFERENCE,
    ClientMechanism,
    CramMD5Client,
    LoginClient,
    OAuthBearerClient,
    PlainClient,
    ScramSHA256Client,
    XOAuth2Client,
    choose_mechanism,
)
from smtpcore.smtp import (
    AuthenticationFailed,
    AuthResponse,
    ClientAuth,
    ClientConnection,
    Command,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Helo,
    Lhlo,
    Mail,
    MessageData,
    Parameters,
    Quit,
    Rcpt,
    Reply,
    Rset,
    StartTls,
    TransactionResult,
)
from smtpcore.smtp._extensions import parameter_problem, unoffered_parameter
from smtpcore.smtp._params import ParametersLike
from smtpcore.smtp._state import RULES

__all__ = [
    "AuthenticationError",
    "AuthenticationNotAvailable",
    "BaseSMTPClient",
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
]

T = TypeVar("T")

_CHUNK: Final = 65536
_QUIT_STATES: Final = RULES[Quit].allowed


Recipients = str | Mailbox | Iterable[str | Mailbox]

RecipientParameters: TypeAlias = ParametersLike | Callable[[Mailbox], ParametersLike]
"""What ``rcpt_params`` takes: the parameters of every RCPT, or a function giving
each recipient its own (an ``ORCPT``, say)."""

_PASSWORD_MECHANISMS: Final[dict[str, Callable[[str, str], ClientMechanism]]] = {
    "SCRAM-SHA-256": ScramSHA256Client,
    "CRAM-MD5": CramMD5Client,
    "PLAIN": PlainClient,
    "LOGIN": LoginClient,
}


def _mailbox(value: str | Mailbox) -> Mailbox:
    return value if isinstance(value, Mailbox) else parse_mailbox(value)


def _from_email(
    message: email.message.EmailMessage,
    sender: str | Mailbox | None,
    recipients: Recipients | None,
) -> tuple[bytes, str | Mailbox | None, Recipients]:
    """Envelope and wire bytes of an EmailMessage, as smtplib.send_message derives them."""
    if sender is None:
        header = message["Sender"] or message["From"]
        if header is None:
            raise ValueError("no sender given and the message has no From or Sender header")
        sender = email.utils.getaddresses([str(header)])[0][1]
    if recipients is None:
        fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
        recipients = [address for _, address in email.utils.getaddresses(fields) if address]
    outgoing = copy.copy(message)  # RFC 5322 §3.6.3: Bcc recipients stay hidden
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]
    return outgoing.as_bytes(policy=message.policy.clone(linesep="\r\n")), sender, recipients


def _params_of(given: RecipientParameters, recipient: Mailbox) -> Parameters:
    return Parameters.coerce(given(recipient) if callable(given) else given)


class BaseSMTPClient(BaseClient):
    """An SMTP client session to ``host``; the adapters add how to open a connection.

    ``tls_on_connect`` speaks TLS from the first byte (port 465, RFC 8314).
    ``starttls``: True requires STARTTLS, None (the default) uses it when the
    server offers it, False never does. Certificates are checked against
    ``host`` (or ``server_hostname``) with ``ssl_context``, by default
    :func:`ssl.create_default_context`, which verifies them.

    With ``username`` and ``password`` (or ``oauth_token``) the client
    authenticates after EHLO and STARTTLS, with the strongest mechanism both
    sides have (:func:`~smtpcore.sasl.choose_mechanism`), limited to
    ``auth_mechanisms`` if given; ``sasl_mechanism`` supplies a client
    mechanism instead (a factory of one, for a client that connects more
    than once). Mechanisms that show a reusable
    secret (PLAIN, LOGIN, bearer tokens) are used only under TLS unless
    ``allow_plaintext_auth`` is true.
    """

    connection_error = SMTPConnectionError
    timeout_error = SMTPTimeout
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
    ) -> None:
        if (password is not None or oauth_token is not None) and not username:
            raise ValueError("a password or an oauth_token needs a username")
        if username is not None and password is None and oauth_token is None:
            raise ValueError("a username needs a password or an oauth_token")
        self.host = host
        self.port = port if port is not None else (465 if tls_on_connect else 25)
        self.hostname = hostname or socket.getfqdn()
        self.tls_on_connect = tls_on_connect
        self.starttls = starttls
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.timeouts = timeouts
        self.lmtp = lmtp
        self.username = username
        self.password = password
        self.oauth_token = oauth_token
        self.auth_mechanisms = (
            None if auth_mechanisms is None else [name.upper() for name in auth_mechanisms]
        )
        self.sasl_mechanism = sasl_mechanism
        self.allow_plaintext_auth = allow_plaintext_auth
        self.authenticated_with: str | None = None
        """The mechanism the session authenticated with, once it has."""
        self._transport: Link | None = None
        self._conn: ClientConnection | None = None
        self._sent_messages = 0

    @property
    def connection(self) -> ClientConnection:
        """The machine of the open session."""
        if self._conn is None:
            raise SMTPConnectionError("not connected")
        return self._conn

    # -- session ------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, read the greeting, say EHLO, and start TLS as configured."""
        await self._open_transport()
        try:
            if self.tls_on_connect:
                await self._handshake()
            self._conn = ClientConnection(self.hostname, lmtp=self.lmtp)
            greeting = await self._reply(self.timeouts.greeting)
            if greeting.code != 220:
                await self.quit()  # RFC 5321 §3.1: after a 554 greeting, QUIT
                raise HelloRefused("greeting", greeting)
            await self._hello()
            conn = self._conn
            if self.starttls is not False and not conn.tls:
                if conn.extensions.starttls:
                    await self._starttls()
                elif self.starttls:
                    raise TLSNotAvailable("the server does not offer STARTTLS")
            if self.username is not None or self.sasl_mechanism is not None:
                await self._authenticate()
        except BaseException:
            await self._abort()
            raise

    async def _hello(self) -> None:
        conn = self.connection
        hello = Lhlo(self.hostname) if self.lmtp else Ehlo(self.hostname)
        reply = await self._command(hello, self.timeouts.command)
        if not reply.is_positive and not self.lmtp and reply.code in (500, 501, 502, 504):
            reply = await self._command(Helo(self.hostname), self.timeouts.command)
        if not reply.is_positive:
            raise HelloRefused(type(hello).__name__.upper(), reply)
        assert conn is self._conn

    async def _starttls(self) -> None:
        reply = await self._command(StartTls(), self.timeouts.command)
        if reply.code != 220:
            raise SMTPReplyError("STARTTLS", reply)
        await self._handshake()
        # Bytes that came with the 220 arrived before the handshake: the machine drops them.
        self.connection.tls_started()
        await self._hello()

    # -- AUTH ---------------------------------------------------------------

    def _mechanism(self) -> ClientMechanism:
        """The client mechanism to run: the one given, or the strongest both sides have."""
        conn = self.connection
        if "AUTH" not in conn.extensions:
            raise AuthenticationNotAvailable("the server does not offer AUTH")
        offered = conn.extensions.auth
        secure = conn.tls or self.allow_plaintext_auth
        given = self.sasl_mechanism
        if given is not None:
            mechanism = given if isinstance(given, ClientMechanism) else given()
            if mechanism.name.upper() not in offered:
                raise AuthenticationNotAvailable(f"the server does not offer {mechanism.name}")
            if mechanism.requires_tls and not secure:
                raise AuthenticationNotAvailable(f"{mechanism.name} needs TLS", needs_tls=True)
            return mechanism
        names = list(_PASSWORD_MECHANISMS) if self.password is not None else []
        if self.oauth_token is not None:
            names += ["OAUTHBEARER", "XOAUTH2"]
        if self.auth_mechanisms is not None:
            names = [name for name in names if name in self.auth_mechanisms]
        usable = [name for name in names if secure or not CLIENT_MECHANISMS[name].requires_tls]
        name = choose_mechanism(offered, usable)
        if name is None:
            shared = [name for name in PREFERENCE if name in offered and name in names]
            detail = "needs TLS" if len(shared) == 1 else "need TLS"
            if shared:
                raise AuthenticationNotAvailable(
                    f"{', '.join(shared)} {detail} (allow_plaintext_auth=True to send anyway)",
                    needs_tls=True,
                )
            raise AuthenticationNotAvailable(
                f"no mechanism in common: the server offers {' '.join(sorted(offered))}"
            )
        assert self.username is not None
        if name in _PASSWORD_MECHANISMS:
            assert self.password is not None
            return _PASSWORD_MECHANISMS[name](self.username, self.password)
        assert self.oauth_token is not None
        if name == "XOAUTH2":
            return XOAuth2Client(self.username, self.oauth_token)
        host = self.server_hostname if self.server_hostname.isascii() else None
        return OAuthBearerClient(self.username, self.oauth_token, host=host, port=self.port)

    async def _authenticate(self) -> None:
        """Run one AUTH exchange (RFC 4954 §4); raise unless the server accepted."""
        flow = ClientAuth(self._mechanism())
        command = f"AUTH {flow.mechanism.name}"
        timeout = self.timeouts.command
        reply = await self._command(flow.start(), timeout)
        cancelled = False
        while reply.code == 334 and not cancelled:
            try:
                response = flow.respond(reply)
            except RemoteProtocolError:  # a challenge that is not base64
                response = AuthResponse(cancel=True)
            cancelled = response.cancel
            reply = await self._command(response, timeout)
        if cancelled:
            # RFC 4954 §4: "*" ends the exchange, whatever the server answers.
            message = (
                f"{command} cancelled by the client: a malformed challenge, "
                "or a server that could not prove it holds the user's keys"
            )
            raise AuthenticationError(command, reply, message)
        try:
            flow.finish(reply)
        except AuthenticationFailed as exc:
            detail = None if reply.code != 235 else f"{command}: {exc}"
            raise AuthenticationError(command, reply, detail) from exc
        self.authenticated_with = flow.mechanism.name

    async def quit(self) -> None:
        """Say QUIT and close; a server that is already gone is not an error.

        QUIT goes out only where the session can take it (not in the middle
        of a message, not after the session broke down); the connection is
        closed in every case.
        """
        conn = self._conn
        try:
            if (
                conn is not None
                and self._transport is not None
                and not conn.pending
                and conn.state in _QUIT_STATES
            ):
                await self._command(Quit(), self.timeouts.command)
        except SMTPError:
            pass
        finally:
            await self._abort()

    # -- messages -------------------------------------------------------------

    async def send_message(
        self,
        message: bytes | email.message.EmailMessage,
        sender: str | Mailbox | None = None,
        recipients: Recipients | None = None,
        *,
        mail_params: ParametersLike = None,
        rcpt_params: RecipientParameters = None,
    ) -> TransactionResult:
        """Send one message over this session; returns each recipient's fate.

        ``message`` is the content as bytes (CRLF line ends; others are made
        CRLF), or an :class:`~email.message.EmailMessage`, whose headers give
        the sender and recipients when they are not passed and whose Bcc
        header is not sent. Raises :class:`SenderRefused`,
        :class:`RecipientsRefused` when no recipient is accepted, or
        :class:`MessageRefused`; a partial success returns, with the refused
        recipients in ``result.refused``.

        ``mail_params`` adds ESMTP parameters to MAIL (``{"RET": "HDRS"}``);
        ``SIZE``, ``BODY`` and ``SMTPUTF8`` are added by the client unless
        given. ``rcpt_params`` adds parameters to every RCPT
        (``{"NOTIFY": "FAILURE,DELAY"}``), or is a function giving each
        recipient's. A parameter of an extension the server did not offer
        raises :class:`ExtensionNotOffered`, and a malformed one
        :class:`~smtpcore.LocalProtocolError`, before anything is sent.

        A message the server has said it cannot take is refused before
        ``MAIL``, with the reply RFC 3463 names: :class:`MessageTooLarge`
        (``552 5.3.4``) over its ``SIZE``, :class:`ExtensionNotOffered` for a
        UTF-8 address without ``SMTPUTF8`` (``553 5.6.7``) or 8-bit content
        without ``8BITMIME`` (``554 5.6.3``). After any other error than a
        refusal the connection is closed.
        """
        if isinstance(message, email.message.EmailMessage):
            content, sender, recipients = _from_email(message, sender, recipients)
        else:
            content = bytes(message)
            if recipients is None:
                raise ValueError("recipients are needed with bytes content")
        if sender is None:
            raise ValueError("a sender is needed with bytes content ('' for the null path)")
        from_ = None if sender == "" else _mailbox(sender)
        if isinstance(recipients, (str, Mailbox)):
            recipients = [recipients]
        rcpts = [_mailbox(r) for r in recipients]
        if not rcpts:
            raise ValueError("no recipients")
        given = Parameters.coerce(mail_params)
        mail = Mail(from_, {**self._mail_params(from_, rcpts, content, given), **given})
        commands = [Rcpt(r, _params_of(rcpt_params, r)) for r in rcpts]
        self._check_sendable(mail, commands, content)
        self._check_offered(mail, commands)
        return await self._closing_unless_refused(self._transaction(mail, commands, content))

    def _check_sendable(self, mail: Mail, rcpts: Sequence[Rcpt], content: bytes) -> None:
        """Refuse, before MAIL, a message this server has said it cannot take."""
        extensions = self.connection.extensions
        addresses = [r.recipient for r in rcpts]
        if mail.sender is not None:
            addresses.append(mail.sender)
        if not extensions.smtputf8 and not all(a.is_ascii for a in addresses):
            address = next(a for a in addresses if not a.is_ascii)
            # RFC 6531 §3.2 (no internationalized message to a server without
            # SMTPUTF8), with the status RFC 6531 §3.6 / RFC 3463 name for it.
            reply = Reply(
                553, f"the server does not offer SMTPUTF8, needed for {address}", "5.6.7"
            )
            raise ExtensionNotOffered(None, "SMTPUTF8", reply)
        if not content.isascii() and not (extensions.eight_bit_mime or extensions.binary_mime):
            reply = Reply(
                554, "the server does not offer 8BITMIME, needed for 8-bit content", "5.6.3"
            )
            raise ExtensionNotOffered(None, "8BITMIME", reply)
        limit = extensions.size
        declared = mail.params.get("SIZE")
        size = parse_number(declared, max_digits=20) if declared else None
        size = len(content) if size is None else size
        if limit is not None and size > limit:
            raise MessageTooLarge(size, limit)

    def _check_offered(self, mail: Mail, rcpts: Sequence[Rcpt]) -> None:
        extensions = self.connection.extensions
        commands: list[Mail | Rcpt] = [mail, *rcpts]
        for command in commands:
            for keyword, value in command.params.items():
                extension = unoffered_parameter(extensions, keyword, value)
                if extension is not None:
                    raise ExtensionNotOffered(keyword, extension)
                problem = parameter_problem(extensions, keyword, value)
                if problem is not None:
                    raise LocalProtocolError(problem)

    def _mail_params(
        self, sender: Mailbox | None, rcpts: Sequence[Mailbox], content: bytes, given: Parameters
    ) -> dict[str, str | None]:
        """SIZE, BODY and SMTPUTF8, where the server offers them and ``given`` does not
        say otherwise."""
        extensions = self.connection.extensions
        params: dict[str, str | None] = {}
        if "BODY" in given:
            params["BODY"] = given["BODY"]
        if extensions.size is not None or "SIZE" in extensions:
            params["SIZE"] = str(len(content))
        if not content.isascii() and extensions.eight_bit_mime:
            params["BODY"] = "8BITMIME"
        needs_utf8 = (sender is not None and not sender.is_ascii) or any(
            not r.is_ascii for r in rcpts
        )
        if needs_utf8 and extensions.smtputf8:
            params["SMTPUTF8"] = None
        return {keyword: value for keyword, value in params.items() if keyword not in given}

    async def _transaction(
        self, mail: Mail, rcpts: Sequence[Rcpt], content: bytes
    ) -> TransactionResult:
        conn = self.connection
        timeouts = self.timeouts
        pipelining = conn.extensions.pipelining
        commands: list[Rset | Mail | Rcpt | Data] = []
        if self._sent_messages:
            commands.append(Rset())
        self._sent_messages += 1
        commands += [mail, *rcpts, Data()]
        replies: list[Reply] = []
        if pipelining:
            await self._write(b"".join(conn.send(c) for c in commands), timeouts.command)
            for command in commands:
                timeout = (
                    timeouts.data_initiation if isinstance(command, Data) else timeouts.command
                )
                replies.append(await self._reply(timeout))
        else:
            accepted = 0
            for command in commands:
                mail_refused = isinstance(conn.answered, Mail) and not replies[-1].is_positive
                if isinstance(command, Rcpt) and mail_refused:
                    break
                if isinstance(command, Data) and accepted == 0:
                    break
                timeout = (
                    timeouts.data_initiation if isinstance(command, Data) else timeouts.command
                )
                reply = await self._command(command, timeout)
                replies.append(reply)
                accepted += isinstance(command, Rcpt) and reply.is_positive
        offset = 1 if isinstance(commands[0], Rset) else 0
        mail_reply = replies[offset]
        if not mail_reply.is_positive:
            raise SenderRefused("MAIL", mail_reply)
        result = conn.transaction
        assert result is not None
        data_reply = replies[-1] if len(replies) == len(commands) else None
        if not result.accepted:
            if data_reply is not None and data_reply.code == 354:
                # Every RCPT refused, yet a pipelined DATA got its 354 (RFC 2920 §3.1
                # allows it): end the empty message so the session can go on.
                await self._write(conn.send(EndOfMessage()), timeouts.data_block)
                await self._reply(timeouts.data_termination)
            raise RecipientsRefused(result.recipients[-1].reply or mail_reply, result)
        if data_reply is None or data_reply.code != 354:
            raise MessageRefused("DATA", data_reply or mail_reply, conn.transaction)
        view = memoryview(content)
        for start in range(0, len(content), _CHUNK):
            chunk = bytes(view[start : start + _CHUNK])
            await self._write(conn.send(MessageData(chunk)), timeouts.data_block)
        await self._write(conn.send(EndOfMessage()), timeouts.data_block)
        due = len(conn.transaction.accepted) if self.lmtp and conn.transaction else 1
        last = None
        for _ in range(due):
            last = await self._reply(timeouts.data_termination)
        result = conn.transaction
        assert result is not None and last is not None
        if not result.delivered:
            raise MessageRefused("end of data", last, result)
        return result

    async def _closing_unless_refused(self, call: Awaitable[T]) -> T:
        """Await ``call``; close the connection if it fails other than by a refusal.

        After a refusal (an :class:`SMTPReplyError`) the session goes on;
        after anything else (a lost connection, a timeout, a broken reply,
        cancellation) nobody can say where it stands, so it ends here rather
        than leave a socket open behind an exception.
        """
        try:
            return await call
        except SMTPReplyError:
            raise
        except BaseException:
            await self._abort()
            raise

    # -- I/O ------------------------------------------------------------------

    async def _command(
        self,
        command: Command | AuthResponse,
        timeout: float | None,
    ) -> Reply:
        await self._write(self.connection.send(command), timeout)
        return await self._reply(timeout)

    async def _write(self, data: bytes, timeout: float | None) -> None:
        transport = self._transport
        if transport is None:
            raise SMTPConnectionError("not connected")
        try:
            async with transport.deadline(timeout):
                await transport.send_all(data)
        except TimeoutError as exc:
            self.connection.send_failed()
            raise SMTPTimeout("the server stopped reading") from exc
        except OSError as exc:
            self.connection.send_failed()
            raise SMTPConnectionError(f"connection lost: {exc}") from exc

    async def _reply(self, timeout: float | None) -> Reply:
        """The next reply, reading as needed under ``timeout``."""
        conn = self.connection
        transport = self._transport
        if transport is None:
            raise SMTPConnectionError("not connected")
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                raise SMTPProtocolError(str(exc)) from exc
            if isinstance(event, Reply):
                if event.code == 421:
                    raise SMTPConnectionError("the server is closing the session", event)
                return event
            if isinstance(event, ConnectionClosed):
                raise SMTPConnectionError("the server closed the connection")
            if event is PAUSED:
                raise SMTPProtocolError("no reply is awaited")
            assert event is NEED_DATA
            try:
                async with transport.deadline(timeout):
                    data = await transport.receive_some(_CHUNK)
            except TimeoutError as exc:
                raise SMTPTimeout(f"no reply within {timeout} s") from exc
            except OSError:
                data = b""
            conn.receive_data(data)
