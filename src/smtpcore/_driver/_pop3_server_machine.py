"""The machine a POP3 server session runs, and the logins it offers this client.

:class:`SessionMachine` decides, as a session starts, what its machine offers:
USER/PASS and APOP as the mailstore serves them, the SASL mechanisms, and
whether logins wait for TLS (by default for a client off loopback); and it
takes a ``connection_factory``'s machine only once that machine agrees with
the server. Apart from the session's loop because it runs once a session,
before the greeting, and holds every rule about a machine the server did not
build.
"""

from __future__ import annotations

import ipaddress

from smtpcore._driver._factory import check_agreement
from smtpcore._driver._pop3_server_auth import SaslAuth
from smtpcore._driver._pop3_server_options import (
    LOGIN_PLACEHOLDERS,
    POP3_SERVER_KEYWORDS,
    SessionLogins,
)
from smtpcore._ip import unmapped
from smtpcore.pop3 import ServerConnection


def _is_loopback(peer: tuple[str, int] | None) -> bool:
    if peer is None:
        return False
    try:
        return ipaddress.ip_address(unmapped(peer[0].split("%", 1)[0])).is_loopback
    except ValueError:
        return False


class SessionMachine(SaslAuth):
    """The logins a session offers, and a ``connection_factory``'s machine checked."""

    __slots__ = ()

    async def _logins(self, client: tuple[str, int] | None) -> SessionLogins:
        """What this session offers: the store's logins and mechanisms, and
        ``require_tls`` (by default, for a ``client`` off loopback: see
        :meth:`_known_client`)."""
        self._sasl.mechanisms = await self._offered_mechanisms()
        require_tls = self.options.require_tls
        if require_tls is None:
            require_tls = self.options.stls and not _is_loopback(client)
        return SessionLogins(
            user=self.state.user_login,
            apop=self.state.apop_login and bool(self.store.apop),
            sasl_mechanisms=tuple(self._sasl.mechanisms),  # more once TLS is up: _stls
            require_tls=require_tls,
        )

    def _factory_connection(self, logins: SessionLogins) -> ServerConnection:
        """The ``connection_factory``'s machine, checked against the server
        (:meth:`POP3ServerOptions.check_connection`), with the session's ``logins``:
        on a machine of ``build_connection`` that kept its placeholders, they are
        the session's to fill; logins the factory chose (by hand, or by changing the
        placeholders) are checked, one rule for both, never silently replaced. A
        machine running another session is refused, and one that passes is taken
        (:class:`~smtpcore._driver._factory.MachinesInUse`) until :meth:`_ended`."""
        options = self.options
        assert options.connection_factory is not None
        conn = options.connection_factory(options)
        self.state.factory_machines.check_free(conn)
        conn = options.check_connection(conn)
        placeholders = getattr(conn, LOGIN_PLACEHOLDERS, None)
        chosen = SessionLogins.of(conn)
        if chosen != placeholders:
            try:
                self._check_chosen_logins(conn, logins)
            except ValueError as exc:
                if placeholders is None:
                    raise
                raise ValueError(
                    f"the factory changed {', '.join(placeholders.changed(chosen))} on its "
                    "build_connection() machine, whose logins are then all its own, "
                    f"checked as a hand-built machine's: {exc}"
                ) from None
        conn.offers_user = logins.user
        conn.offers_apop = logins.apop  # before the greeting: its APOP timestamp
        conn.sasl_mechanisms = logins.sasl_mechanisms
        conn.require_tls = logins.require_tls
        self.state.factory_machines.take(conn)  # once every check passed: see _ended
        return conn

    @staticmethod
    def _check_chosen_logins(conn: ServerConnection, logins: SessionLogins) -> None:
        """``ValueError`` for a machine whose logins the factory chose and the
        session's would change: the server never lowers what a factory chose (its
        ``require_tls``, the mechanisms it listed), nor offers logins the mailstore
        does not serve."""
        expected = {"offers_user": logins.user, "offers_apop": logins.apop}
        check_agreement(conn, expected, POP3_SERVER_KEYWORDS)
        if conn.require_tls and not logins.require_tls:
            raise ValueError(
                "connection_factory: the machine has require_tls=True where the server "
                "does not require TLS of this client: set require_tls on the server"
            )
        named = conn.sasl_mechanisms
        if named and set(named) != set(logins.sasl_mechanisms):
            raise ValueError(
                f"connection_factory: the machine offers SASL {' '.join(named)} where the "
                f"mailstore offers {' '.join(logins.sasl_mechanisms) or 'none'}: leave "
                "sasl_mechanisms to the server (options.build_connection()), or change "
                "the mailstore's sasl_mechanisms"
            )
