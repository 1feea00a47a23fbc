"""The greeting and EHLO in a server session (RFC 5321 §4.1.1.1, RFC 2033 LHLO).

What the session offers after a hello: the EHLO lines of the extensions in
force, the command line limit they make, the commands HELP lists. Most EHLOs of
a server get the same reply, so it is built once per configuration and state of
the session's facts and remembered (``ServerConfig.first_hello``,
``SessionTables.hellos``). Apart from the other layers of
:class:`~smtpcore.smtp.ServerConnection` (see ``smtp/_server.py``) because it
alone asks the extension entries what to offer.
"""

from __future__ import annotations

import functools

from smtpcore._errors import LocalProtocolError
from smtpcore.smtp._events import Ehlo, Helo, Lhlo
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._server_auth import AuthLayer
from smtpcore.smtp._server_config import HELLOS_KEPT
from smtpcore.smtp._state import State


@functools.lru_cache(maxsize=64)
def _hello_bytes(lines: tuple[str, ...]) -> bytes:
    """The bytes of a 250 reply of ``lines``: a server writes the same EHLO reply to
    most of its clients, so it is built once (no enhanced status: RFC 2034 §3)."""
    return Reply(250, lines).to_bytes()


_PLAIN_SERVER: type = object
""":class:`~smtpcore.smtp.ServerConnection` itself, which ``smtp/_server.py`` binds
here once it has built the class on this layer (this module cannot import it): a
remembered EHLO reply serves that class's sessions alone, not a subclass's, whose
methods may offer more."""


class HelloLayer(AuthLayer):
    """The greeting, the hellos, and the extensions in force."""

    __slots__ = ()

    def in_force(self, keyword: str) -> bool:
        """Whether the extension ``keyword`` is in force in this session now: offered
        by this server, the session opened with EHLO or LHLO (if the extension needs
        it), and its requirements met (STARTTLS only before TLS, say)."""
        for entry in self._config.tables.offerable:
            if entry.keyword == keyword:
                if entry.needs_ehlo and not self.extended:
                    return False
                return entry.unmet(self) is None and (
                    not entry.depends or all(self.in_force(needed) for needed in entry.depends)
                )
        return False

    def commands(self) -> list[str]:
        """The commands this session knows now, for HELP: those of RFC 5321 and of the
        extensions in force."""
        owners = self._config.tables.verb_owner
        return [
            verb
            for verb in self._verbs
            if verb not in owners or self.in_force(owners[verb].keyword)
        ]

    def _greet(self, event: Reply) -> bytes:
        if event.code == 220:
            self._state = State.HELLO
        elif event.code == 554:
            self._state = State.NO_SERVICE
        else:
            raise LocalProtocolError("the greeting must be 220, 554 or 421")
        for known, data in event._wire:  # to_bytes's memory, read without the call
            if known is None:
                return data
        return event.to_bytes()

    def _hello_accepted(self, command: Ehlo | Helo | Lhlo, event: Reply) -> bytes:
        """The session opened (RFC 5321 §4.1.1.1). The reply is built first: one that
        cannot be written (an EHLO keyword line over 512 octets, RFC 5321 §4.5.3.1.5,
        say a long ``auth_mechanisms`` list) raises ``LocalProtocolError`` with the
        session's fields as they were (:meth:`_answer_command` puts back its state).

        The application's reply is one line, the one naming this host: after it,
        an EHLO reply's lines are ehlo-lines (§4.1.1.1's ``ehlo-ok-rsp``; a HELO's
        is one line), read by clients as extensions offered, and the machine writes
        them from its entries (``extra_extensions`` for the application's own)."""
        if len(event.lines) > 1:
            raise LocalProtocolError(
                "a positive reply to a hello is one line (RFC 5321 §4.1.1.1): the machine "
                "adds the EHLO lines (extra_extensions for extensions of one's own)"
            )
        config = self._config
        extended = not isinstance(command, Helo)
        if not extended:
            data = self._hello_reply(event, ())
            verbs = config.tables.plain_verbs
            limit = config.max_command_line
        else:
            verbs = config.tables.extended_verbs
            # A session's first EHLO, its facts still the configuration's (no TLS, AUTH
            # or XCLIENT of its own yet), answered with the reply every EHLO of the
            # server gets: most connections' EHLO, answered as the one before (a test
            # holds it to the general path below).
            first = config.first_hello
            fresh = (
                self.tls is config.tls
                and not self.authenticated
                and self.trusted_forwarder is config.trusted_forwarder
                and self._auth_mechanisms is config.auth_mechanisms
                and type(self) is _PLAIN_SERVER
            )
            if fresh and first is not None and first[0] is event:
                limit = first[1]
                data = first[2]
            else:
                # The extensions are asked as of a session opened with EHLO.
                kept = self.helo_name, self.extended
                self.helo_name = command.domain
                self.extended = True
                try:
                    keywords, limit = self._offered_now()
                    data = self._hello_reply(event, keywords)
                except LocalProtocolError:
                    self.helo_name, self.extended = kept
                    raise
                if fresh and config.tables.hellos is not None:  # built-in extensions alone
                    config.first_hello = (event, limit, data)
        self.helo_name = command.domain
        self.extended = extended
        # _reset_transaction's fields, set without the call (once a connection).
        self._utf8_transaction = self._binary_transaction = False
        self._accepted = self._overshoot = 0
        self._forwarded_message = None
        self._verbs = verbs
        self._command_line_limit = limit
        return data

    def _offered_now(self) -> tuple[tuple[str, ...], int]:
        """The EHLO keyword lines of a session opened with EHLO, and the command line
        limit: ``max_command_line`` and the octets their extensions add to it (RFC
        5321 §4.5.3.1.4).

        Built-in extensions ask only the session's facts (:class:`ServerFacts`):
        the lines are remembered per configuration and per state of those facts,
        so that most EHLOs cost a lookup, and every session of a server shares
        the limit's int. Not with extensions of the application's own, or in a
        subclass, which may ask more.
        """
        config = self._config
        hellos = config.tables.hellos
        if hellos is None or type(self) is not _PLAIN_SERVER:
            return self._offered()
        facts = (
            self.tls,
            self.authenticated,
            self.trusted_forwarder,
            config.max_message_size,
            config.max_recipients,
            self._auth_mechanisms,
            config.auth_require_tls,
            config.max_command_line,
        )
        offered = hellos.get(facts)
        if offered is None:
            offered = self._offered()
            if len(hellos) >= HELLOS_KEPT:
                hellos.clear()
            hellos[facts] = offered
        return offered

    def _offered(self) -> tuple[tuple[str, ...], int]:
        """What :meth:`_offered_now` gives, asked of each extension."""
        utf8 = self.in_force("SMTPUTF8")
        allowance = sum(
            [
                entry.allowance(utf8)
                for entry in self._config.tables.offerable
                if (entry.line_allowance or entry.utf8_line_allowance)
                and self.in_force(entry.keyword)
            ]
        )
        return tuple(self.extensions()), self._config.max_command_line + allowance

    def _hello_reply(self, event: Reply, keywords: tuple[str, ...]) -> bytes:
        """RFC 5321 §4.1.1.1: the first line names this host; EHLO adds keywords."""
        first, *rest = event.lines
        if first.split(" ", 1)[0].lower() != self._config.hostname.lower():
            first = f"{self._config.hostname} {first}".rstrip()
        return _hello_bytes((first, *rest, *keywords))

    def extensions(self) -> list[str]:
        """The EHLO keywords this session offers now (RFC 5321 §4.1.1.1), one line each."""
        lines = []
        for entry in self._config.tables.offerable:
            line = entry.ehlo_line(self)
            if line is not None:
                lines.append(line)
        return lines
