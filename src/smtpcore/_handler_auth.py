"""AUTH on an SMTP server: the :class:`~smtpcore.handler.Authenticator`.

An :class:`Authenticator` turns the application's credential checks into
:mod:`smtpcore.sasl` mechanisms, each built fresh for one ``AUTH`` command
(RFC 4954); a successful exchange leaves a :class:`~smtpcore.handler.AuthIdentity`.
Kept apart from the hooks of :mod:`smtpcore.handler`, which re-exports it, so that
the credential checks and the mechanism table can be read in one place; the POP3
server reads the same Authenticator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeAlias

from smtpcore._sasl_settings import check_callable, check_flag, mechanism_names
from smtpcore.sasl import (
    PREFERENCE,
    Authorize,
    CheckToken,
    CramMD5Server,
    GetCredentials,
    GetPassword,
    LoginServer,
    OAuthBearerServer,
    PlainServer,
    ScramSHA256PlusServer,
    ScramSHA256Server,
    ServerMechanism,
    XOAuth2Server,
    passwords_match,
)
from smtpcore.sasl._base_checks import _require_found
from smtpcore.sasl._scram_keys import _MOST_ITERATIONS, DEFAULT_ITERATIONS

MechanismFactory: TypeAlias = Callable[[], ServerMechanism]
"""Builds a fresh server mechanism for one ``AUTH`` command (documented where it is
imported from, :data:`smtpcore.handler.MechanismFactory`)."""


@dataclass(frozen=True, slots=True)
class Authenticator:
    """The credential checks of a server that offers SMTP AUTH (RFC 4954).

    Give the callables your user store can answer; each one enables the
    mechanisms that need it, and the server offers them strongest first:

    - ``check_password(username, password) -> bool``: PLAIN and LOGIN. The
      user name comes prepared with SASLprep, the password as the client sent
      it: compare it with :func:`~smtpcore.sasl.passwords_match`.
    - ``get_scram_credentials(username) -> ScramCredentials | None``:
      SCRAM-SHA-256 from stored keys (see
      :func:`~smtpcore.sasl.derive_scram_credentials`); the password never
      crosses the wire and the server never stores it. Also
      SCRAM-SHA-256-PLUS, which a session offers only over a TLS layer that
      gives channel binding data (:mod:`smtpcore.transport`).
    - ``get_password(username) -> str | None``: the password in the clear, for
      CRAM-MD5; it also serves PLAIN and LOGIN when ``check_password`` is not
      given, both passwords prepared with SASLprep before they are compared
      (:func:`~smtpcore.sasl.passwords_match`). Only for stores that must keep
      passwords anyway.
    - ``check_token(username, token) -> bool | str``: OAuth 2.0 bearer
      tokens, OAUTHBEARER (RFC 7628) and XOAUTH2.

    ``has_passwords() -> bool``, with ``get_password``, says whether any user's
    password is in the clear now: while it answers ``False`` (every user's
    secret is SCRAM keys), :meth:`withheld` names CRAM-MD5, which the server
    adapters then leave out of what a session offers. No exchange of it could
    succeed, and a client that tries it first (fetchmail's default) would
    log a failed login at every connection.

    ``is_user(username) -> bool`` says whether a name the client gave (as it
    sent it) is one of the users; a failed AUTH is logged with that name only
    then, and with ``user=<>`` otherwise, or when ``is_user`` is not given: a
    client may type a password where the name is due, and what a client sends
    that names no user is not logged. It is asked only after a failed
    exchange, in a worker thread with ``in_thread=True``. A CRAM-MD5 attempt
    for a user ``is_user`` knows and ``get_password`` has no password for is
    logged as not possible, not as a refusal (see
    :attr:`smtpcore.sasl.Failure.no_secret`).

    ``scram_mock_iterations`` is the iteration count SCRAM shows for an
    unknown user: the count the users' keys have (4,096 by default, that of
    :func:`~smtpcore.sasl.derive_scram_credentials`).

    ``authorize(authzid, authcid) -> bool`` decides whether a client that
    proved it is ``authcid`` may act as another ``authzid``; by default
    nobody may. ``mechanisms`` offers only the names listed, in that order: a
    list or any other iterable of names but one ``str``, kept as a tuple of them
    upper-cased; a name no Authenticator builds, or one whose credential check is
    not given, is a ``ValueError``.

    Each setting is checked as the Authenticator is built, a wrong type a
    ``TypeError`` naming it: the callables must be callable (or None),
    ``in_thread`` ``True`` or ``False``, ``scram_mock_iterations`` an int.

    The callables run in the event loop, one at a time: keep them quick (an
    in-memory lookup), or pass ``in_thread=True``, and the server adapters
    run each step of an exchange, the callables with it, in a worker thread
    (one of a few kept for credential checks, apart from the framework's
    shared ones), so that a slow check (a key derivation, a database query)
    never holds the other sessions; the callables must then be thread-safe,
    as several sessions' checks may run at once. ``in_thread=True`` is also
    what makes a step's deadline hold (SMTP: ``Timeouts.command``; POP3:
    ``POP3Timeouts.store``): past it the client gets a temporary failure, not
    counted as a failed login, and the thread's late answer is dropped. A
    check run in the event loop cannot be cut off: it holds the loop until it
    returns. Either way, compare passwords with
    :func:`~smtpcore.sasl.passwords_match` and tokens with
    :func:`hmac.compare_digest`, take as long for an unknown user as for a
    wrong password, and raise
    :class:`~smtpcore.sasl.CredentialsUnavailable` when the store cannot
    answer (the client gets ``454 4.7.0``). A callable that gives a verdict
    of another type (an ``async def`` one gives a coroutine) is logged as the
    application's error, and the client gets ``454 4.7.0`` too.
    """

    check_password: Callable[[str, str], bool] | None = None
    get_scram_credentials: GetCredentials | None = None
    get_password: GetPassword | None = None
    check_token: CheckToken | None = None
    authorize: Authorize | None = None
    mechanisms: Iterable[str] | None = None
    in_thread: bool = False
    scram_mock_iterations: int = DEFAULT_ITERATIONS
    """The iteration count SCRAM gives for a user ``get_scram_credentials`` does not
    know (made-up credentials, see :class:`~smtpcore.sasl.ScramSHA256Server`): set it
    to the count the users' keys have, or the count in the server-first message
    tells which users exist (RFC 5802 §9)."""
    # Fields added later are keyword-only and come last, so that a positional call
    # written for an older Authenticator still means what it meant.
    has_passwords: Callable[[], bool] | None = field(default=None, kw_only=True)
    """Whether any user's password is in the clear now (see the class's docs)."""
    is_user: Callable[[str], bool] | None = field(default=None, kw_only=True)
    """Whether a name the client gave names a user: only then does a failed AUTH's log
    line show it (``user=<>`` otherwise, and without this callable), so that a
    password typed as a name is never logged."""

    def __post_init__(self) -> None:
        for option in _CHECKS:
            check_callable(option, getattr(self, option))
        check_flag("in_thread", self.in_thread)
        if self.mechanisms is not None:
            # Read once, here: an iterator would be used up by the check below.
            object.__setattr__(self, "mechanisms", mechanism_names("mechanisms", self.mechanisms))
        available = self._available()
        if not available:
            raise ValueError("an Authenticator needs at least one credential check")
        count = self.scram_mock_iterations
        # Checked here, as the SCRAM servers check it: found at each SCRAM login, True
        # (taken for 1) or "4096" would fail every one. A wrong type is TypeError and a
        # count out of range ValueError, as for the Authenticator's other settings.
        if not isinstance(count, int) or isinstance(count, bool):
            raise TypeError(f"scram_mock_iterations must be an int, not {type(count).__name__}")
        if not 1 <= count <= _MOST_ITERATIONS:
            raise ValueError(
                f"scram_mock_iterations must be from 1 to {_MOST_ITERATIONS}, not {count}"
            )
        for name in self.mechanisms or ():
            if name not in _BUILT:
                raise ValueError(
                    f"an Authenticator offers no mechanism {name}: it builds {', '.join(_BUILT)} "
                    "(auth= takes a mapping of names to factories for others)"
                )
            if name not in available:
                raise ValueError(f"{name} needs a credential check the Authenticator lacks")

    def _available(self) -> list[str]:
        return [
            name
            for name in _BUILT
            if any(getattr(self, check) is not None for check in _RUNS_ON[name])
        ]

    def server_mechanisms(self, hostname: str) -> dict[str, MechanismFactory]:
        """The mechanisms to offer, by name, each with its factory.

        ``hostname`` goes into the CRAM-MD5 challenge (RFC 2195 §2), so it
        must be a domain name or an address literal when CRAM-MD5 is offered.
        """
        names = self._available()
        if self.mechanisms is not None:
            names = list(self.mechanisms)
        factories = {name: self._factory(name, hostname) for name in names}
        if "CRAM-MD5" in factories:
            factories["CRAM-MD5"]()  # checks the hostname now, not at the first AUTH
        return factories

    def withheld(self) -> frozenset[str]:
        """The mechanisms of :meth:`server_mechanisms` that no user could use now, to be
        left out of what a session starting now offers: CRAM-MD5 while
        ``has_passwords`` answers ``False``. Asked per session, so that it follows
        the users when they change."""
        if self.has_passwords is not None and not self.has_passwords():
            return frozenset({"CRAM-MD5"})
        return frozenset()

    def _factory(self, name: str, hostname: str) -> MechanismFactory:
        factory = self._mechanism_factory(name, hostname)
        return _InThread(factory) if self.in_thread else factory

    def _mechanism_factory(self, name: str, hostname: str) -> MechanismFactory:
        authorize = self.authorize
        if name in ("PLAIN", "LOGIN"):
            check = self._password_check()
            if name == "LOGIN":
                return lambda: LoginServer(check)
            return lambda: PlainServer(check, authorize=authorize)
        if name == "CRAM-MD5":
            get_password = self.get_password
            assert get_password is not None
            return lambda: CramMD5Server(get_password, hostname)
        if name in ("SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"):
            get_credentials = self.get_scram_credentials
            assert get_credentials is not None
            mock = self.scram_mock_iterations
            if name == "SCRAM-SHA-256-PLUS":
                return lambda: ScramSHA256PlusServer(
                    get_credentials, authorize=authorize, mock_iterations=mock
                )
            return lambda: ScramSHA256Server(
                get_credentials, authorize=authorize, mock_iterations=mock
            )
        check_token = self.check_token
        assert check_token is not None
        if name == "OAUTHBEARER":
            return lambda: OAuthBearerServer(check_token, authorize=authorize)
        return lambda: XOAuth2Server(check_token, authorize=authorize)

    def _password_check(self) -> Callable[[str, str, str], bool]:
        check_password = self.check_password
        if check_password is not None:
            return lambda authzid, authcid, password: check_password(authcid, password)
        get_password = self.get_password
        assert get_password is not None

        def check(authzid: str, authcid: str, password: str) -> bool:
            # Checked as CRAM-MD5 checks the same callable: one contract for one lookup.
            stored = _require_found(get_password(authcid), str, "get_password")
            return passwords_match(stored or "", password) and stored is not None

        return check


_CHECKS: Final = (
    "check_password",
    "get_scram_credentials",
    "get_password",
    "check_token",
    "authorize",
    "has_passwords",
    "is_user",
)
"""The Authenticator's settings that are callables (or None), checked as it is built."""

_RUNS_ON: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "SCRAM-SHA-256-PLUS": ("get_scram_credentials",),
        "SCRAM-SHA-256": ("get_scram_credentials",),
        "OAUTHBEARER": ("check_token",),
        "XOAUTH2": ("check_token",),
        "CRAM-MD5": ("get_password",),
        "PLAIN": ("check_password", "get_password"),
        "LOGIN": ("check_password", "get_password"),
    }
)
"""Each mechanism an Authenticator builds (``_mechanism_factory``), with the credential
checks it can run on, any one of which makes it available."""

_BUILT: Final = tuple(name for name in PREFERENCE if name in _RUNS_ON)
"""The mechanisms an Authenticator can build, strongest first (:data:`PREFERENCE`)."""


@dataclass(frozen=True, slots=True)
class _InThread:
    """A factory of an :class:`Authenticator` made with ``in_thread=True``: the adapters
    see it, and run each step of the mechanisms it builds in a worker thread."""

    factory: MechanismFactory

    def __call__(self) -> ServerMechanism:
        return self.factory()


def _runs_in_thread(factory: object) -> bool:
    """Whether the steps of the mechanisms ``factory`` builds run in a worker thread."""
    return isinstance(factory, _InThread)
