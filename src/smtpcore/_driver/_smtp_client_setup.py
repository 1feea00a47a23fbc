"""The SMTP client's session set-up: connect, EHLO (HELO if refused), STARTTLS, XCLIENT, AUTH.

What happens before the first message, and again when the server's side
changes: the greeting (RFC 5321 §3.1), EHLO or LHLO with the HELO fallback
(§4.1.4, RFC 2033 §4.1), STARTTLS as required or as offered (RFC 3207), Postfix's
XCLIENT, and AUTH (RFC 4954) with the mechanism given or the strongest both sides
have. Kept apart from the mail transaction: none of it runs once a message is
under way.
"""

from __future__ import annotations

from smtpcore._driver._client_base import one_call, sasl_failure_text
from smtpcore._driver._smtp_client_commands import SMTPClientCommands
from smtpcore._driver._smtp_credentials import Credentials
from smtpcore._driver._smtp_errors import (
    AuthenticationError,
    HelloRefused,
    SMTPConnectionError,
    SMTPProtocolError,
    SMTPReplyError,
    TLSNotAvailable,
    not_offered,
)
from smtpcore.sasl import ClientMechanism
from smtpcore.smtp import (
    AuthenticationFailed,
    ClientAuth,
    ClientConnection,
    Ehlo,
    Helo,
    Lhlo,
    Reply,
    StartTls,
    Xclient,
)

__all__ = ["SMTPClientSetup"]


class SMTPClientSetup(SMTPClientCommands):
    """Connect and set the session up: greeting, hello, TLS, XCLIENT and login."""

    hostname: str
    lmtp: bool
    use_starttls: bool | None
    allow_plaintext_auth: bool
    _credentials: Credentials
    authenticated_with: str | None
    starttls_refused: Reply | None
    ehlo_refused: Reply | None

    @one_call
    async def connect(self) -> None:
        """Connect, read the greeting, say EHLO, start TLS and authenticate as
        configured. Raises :class:`HelloRefused` for a greeting other than 220
        (RFC 5321 §3.1) or a refused hello, :class:`TLSNotAvailable` when
        ``starttls=True`` and the server offers no STARTTLS, :class:`SMTPReplyError`
        when it refuses the STARTTLS required (``starttls=True``, or credentials to
        send), and the login's own errors; after each, while the session stands
        between commands and holds no unread bytes, QUIT is said, its reply not
        waited for. :class:`SMTPConnectionError` for a 421, with
        which the server closes the connection; the connection is closed on every
        error."""
        await self._open_transport()
        try:
            tls = await self._tls_from_the_start()
            self._conn = ClientConnection(self.hostname, lmtp=self.lmtp, tls=tls)
            greeting = await self._reply(self.timeouts.greeting)
            if greeting.code != 220:
                raise HelloRefused("greeting", greeting)
            await self._hello(self.hostname)
            conn = self._conn
            if self.use_starttls is not False and not conn.tls:
                if conn.extensions.starttls:
                    await self._opportunistic_starttls()
                elif self.use_starttls:
                    raise TLSNotAvailable()
            if self._credentials.given:
                await self._authenticate_with(self._mechanism())
        except BaseException as exc:
            await self._end_failed_connect(exc)
            raise

    @one_call
    async def ehlo(self, hostname: str | None = None) -> Reply:
        """Say EHLO (LHLO in LMTP) again, as after a change on the server's side;
        :attr:`connection`'s ``extensions`` are what this reply lists. Falls back
        to HELO if EHLO is refused with anything but ``421`` (then no extension is
        offered); :class:`HelloRefused` if that is refused too."""
        return await self._closing_unless_refused(self._hello(hostname or self.hostname))

    @one_call
    async def starttls(self) -> None:
        """STARTTLS (RFC 3207), the handshake, and EHLO again; :class:`TLSNotAvailable`
        if the server does not offer it, :class:`SMTPReplyError` if it refuses."""
        conn = self.connection
        if not conn.extensions.starttls:
            raise TLSNotAvailable()
        refusal = await self._closing_unless_refused(self._starttls())
        if refusal is not None:
            raise SMTPReplyError("STARTTLS", refusal)

    @one_call
    async def xclient(self, attributes: Xclient) -> Reply:
        """XCLIENT (Postfix): from now on, speak for the client ``attributes`` names, as
        a proxy in front of the server does; the server must trust this client.

        Only the attributes the server announced are sent, xtext-encoded, in more
        than one command if they do not fit one line; after each ``220`` the
        session starts over and the client says EHLO again, with the ``helo``
        given (the forwarded client's own, which Postfix then logs) when it can
        be an EHLO argument, else with its own name. Returns the last
        ``220``. :class:`ExtensionNotOffered` if the server offers no XCLIENT (or
        none of the attributes given), :class:`SMTPReplyError` if it refuses.
        """
        conn = self.connection
        sent = attributes.only(conn.extensions.xclient)
        if sent is None:
            raise not_offered("XCLIENT")
        return await self._closing_unless_refused(self._xclient(sent))

    async def _xclient(self, attributes: Xclient) -> Reply:
        helo = attributes.helo
        hostname = helo if isinstance(helo, str) and helo.isascii() else self.hostname
        greeting = None
        for part in attributes.split():
            greeting = await self._command(part, self.timeouts.command)
            if greeting.code != 220:
                raise SMTPReplyError("XCLIENT", greeting)
            await self._hello(hostname)
        assert greeting is not None
        return greeting

    @one_call
    async def login(self, username: str, password: str) -> None:
        """AUTH with a password, by the strongest mechanism both sides have (RFC 4954);
        :class:`AuthenticationError` if refused, :class:`AuthenticationNotAvailable`
        if no mechanism fits."""
        self._credentials = Credentials(
            username,
            password,
            None,
            None,
            self._credentials.allowed,
        )
        await self._authenticate_with(self._mechanism())

    @one_call
    async def authenticate(self, mechanism: ClientMechanism) -> None:
        """AUTH with a ready SASL mechanism (see :mod:`smtpcore.sasl`).

        A mechanism that shows a reusable secret (PLAIN, LOGIN, a bearer token)
        is refused with :class:`AuthenticationNotAvailable` (``538 5.7.11``),
        before anything is sent, on a session without TLS unless
        ``allow_plaintext_auth`` is true, as it is when the client chooses."""
        await self._authenticate_with(mechanism)

    async def _authenticate_with(self, mechanism: ClientMechanism) -> None:
        """Every login, however the mechanism was chosen or given (``connect``,
        :meth:`login`, :meth:`authenticate`): the rule that keeps a reusable secret off
        a session without TLS is kept here once, before anything is sent, so that its
        refusal leaves the session as it stands."""
        if mechanism.requires_tls:
            self._refuse_without_tls(mechanism.name, tls=self.connection.tls)
        await self._closing_unless_refused(self._authenticate(mechanism))

    async def _hello(self, hostname: str) -> Reply:
        """EHLO (LHLO in LMTP); any refusal of EHLO but a ``421`` (which ends the
        session, raised by :meth:`_reply`) is followed by HELO, as Postfix's
        ``smtp_helo()`` does: RFC 5321 §4.1.4 has a server refuse EHLO with 500, 501,
        502 or 550 and stay where it was, and servers also say 503, 554 or a 4xx.
        After HELO the session has no extension at all (no SIZE, PIPELINING,
        STARTTLS, 8BITMIME, SMTPUTF8), so whatever needs one is refused or done
        without as for any server that offers none. LHLO has no fallback (RFC 2033
        §4.1). :class:`HelloRefused` names the command whose refusal it carries."""
        hello: Lhlo | Ehlo | Helo = Lhlo(hostname) if self.lmtp else Ehlo(hostname)
        self.ehlo_refused = None
        reply = await self._command(hello, self.timeouts.command)
        if not reply.is_positive and not self.lmtp:
            refusal = reply
            reply = await self._helo_after(refusal, hostname)
            hello = Helo(hostname)  # the command the reply raised is the one that got it
            if reply.is_positive:
                self.ehlo_refused = refusal
        if not reply.is_positive:
            raise HelloRefused(hello.verb, reply)
        return reply

    async def _helo_after(self, refusal: Reply, hostname: str) -> Reply:
        """HELO's reply, after ``refusal`` of EHLO. A server that closed the connection
        once it had refused EHLO (many do, a ``554`` for a blocklisted client) has
        said its last word there: :class:`HelloRefused` for EHLO carries it, as it
        did before the fallback, rather than a lost connection that hides it and
        that a relay would retry for days. A ``421`` left behind is its own end
        (:meth:`_lost_in_writing`)."""
        try:
            return await self._command(Helo(hostname), self.timeouts.command)
        except SMTPConnectionError as exc:
            if exc.reply is not None:
                raise
            raise HelloRefused("EHLO", refusal) from exc

    async def _opportunistic_starttls(self) -> None:
        """STARTTLS as ``connect`` runs it: a refusal raises when ``starttls`` is True
        or credentials are to be sent, which must not go in plaintext for want of TLS;
        else the session goes on in plaintext on the same connection (RFC 3207 §4
        leaves the choice to the client; RFC 7435 §3; Postfix's
        ``smtp_tls_security_level = may``), the reply kept in :attr:`starttls_refused`.
        A failed handshake still raises: the connection is unusable after it."""
        refusal = await self._starttls()
        if refusal is not None:
            if self.use_starttls or self._credentials.given:
                raise SMTPReplyError("STARTTLS", refusal)
            self.starttls_refused = refusal

    async def _starttls(self) -> Reply | None:
        """STARTTLS, the handshake and EHLO again; or, with nothing else done, the
        reply that refused STARTTLS. Any reply but 220 leaves the session where it
        was (RFC 3207 §4), except a 421, which ends it (raised by :meth:`_reply`)."""
        reply = await self._command(StartTls(), self.timeouts.command)
        if reply.code != 220:
            return reply
        await self._handshake()
        # Bytes that came with the 220 arrived before the handshake: the machine drops them.
        self.connection.tls_started()
        self._tls_just_started = True  # EHLO's reply takes the session tickets
        self.authenticated_with = None  # the server forgets a login made before (RFC 3207 §4.2)
        await self._hello(self.hostname)
        return None

    def _mechanism(self) -> ClientMechanism:
        """The client mechanism to run: the one given, or the strongest both sides have."""
        conn = self.connection
        bindings = self._transport.channel_bindings() if self._transport is not None else {}
        return self._credentials.choose(
            conn.extensions,
            tls=conn.tls,
            allow_plaintext=self.allow_plaintext_auth,
            host=self.server_hostname,
            port=self.port,
            channel_bindings=bindings,
        )

    async def _authenticate(self, mechanism: ClientMechanism) -> None:
        """Run one AUTH exchange (RFC 4954 §4); raise unless the server accepted.

        A ``235`` the client cannot take (a SCRAM server that did not prove itself,
        one that accepted the client's ``*``, or one before the client sent its part,
        RFC 4422 §3.6) may come from an impostor, and the exchange is unsuccessful
        (RFC 5802 §5): the server's side of the session is authenticated where the
        client's is not, so the connection is closed, and a later call raises
        :class:`SMTPConnectionError`. A refusal leaves the session between commands."""
        flow = ClientAuth(mechanism)
        reply = await self._command(flow.start(), self.timeouts.command)
        try:
            await self._finish_authentication(flow, reply)
        except AuthenticationError as exc:
            if exc.reply.code == 235:
                await self._abort()
            raise

    async def _finish_authentication(self, flow: ClientAuth, reply: Reply) -> None:
        """The rest of the exchange :meth:`_authenticate` began, ``reply`` its answer."""
        command = f"AUTH {flow.mechanism.name}"
        timeout = self.timeouts.command
        while reply.code == 334 and flow.cancel_error is None:
            reply = await self._command(flow.respond(reply), timeout)
        if flow.cancel_error is not None:
            if reply.code == 334:
                # RFC 4954 §4 has the server answer "*" with 501: one that goes on
                # challenging has lost the exchange, and the session with it.
                raise SMTPProtocolError(f"{command}: a 334 challenge after the client's '*'")
            # RFC 4954 §4: "*" ends the exchange, whatever the server answers.
            message = sasl_failure_text(command, flow.cancel_error)
            raise AuthenticationError(command, reply, message) from flow.cancel_error
        try:
            flow.finish(reply)
        except AuthenticationFailed as exc:
            # A 235 the mechanism refused (no proof, or too early): its SASLError, chained.
            detail = None if reply.code != 235 else sasl_failure_text(command, exc)
            raise AuthenticationError(command, reply, detail) from exc.__cause__ or exc
        self.authenticated_with = flow.mechanism.name
