"""What the POP3 clients raise: one hierarchy, every refusal carrying the server's ``-ERR``.

Modelled on poplib's single ``error_proto``, split where a caller acts differently:
a refusal (:class:`POP3ResponseError`, with the RFC 2449 §8 response code), a
refused login, a login this client declined to send without TLS, a lost
connection, a timeout, and a server that broke the protocol. Kept apart from the
session that raises them: the asyncio, trio and blocking clients export them,
and a caller's ``except`` clause should not have to import a client to name one.
"""

from __future__ import annotations

from smtpcore.pop3 import Err

__all__ = [
    "POP3AuthenticationError",
    "POP3AuthenticationNotAvailable",
    "POP3ConnectionError",
    "POP3Error",
    "POP3ProtocolError",
    "POP3ResponseError",
    "POP3TLSNotAvailable",
    "POP3Timeout",
]


class POP3Error(Exception):
    """Base class of the client's errors; ``response`` is the server's ``-ERR``, if any."""

    local = False
    """True when this client declined to go on and the server refused nothing: the
    :class:`POP3ConnectionError` of a TLS handshake that failed our own check of the
    server's certificate (RFC 2595 §2.4), as ``SMTPError.local``."""

    def __init__(self, message: str, response: Err | None = None) -> None:
        if response is not None:
            message = f"{message}: {response.to_bytes().decode('utf-8', 'replace').strip()}"
        super().__init__(message)
        self.response = response


class POP3ResponseError(POP3Error):
    """The server answered ``-ERR``; ``command`` says to what.

    ``code`` is the RFC 2449 §8 response code, such as ``"IN-USE"`` or
    ``"SYS/TEMP"``, or ``None``.
    """

    response: Err

    def __init__(self, command: str, response: Err) -> None:
        super().__init__(f"{command} refused", response)
        self.command = command

    @property
    def code(self) -> str | None:
        return self.response.code


class POP3AuthenticationError(POP3ResponseError):
    """The login was refused (a wrong password, or a maildrop that cannot be opened)."""


class POP3AuthenticationNotAvailable(POP3Error):
    """The client refused to log in, before sending anything: USER/PASS, or a SASL
    mechanism that shows a reusable secret (PLAIN, LOGIN, a bearer token), on a
    session without TLS while ``allow_plaintext_auth`` is false (RFC 2595 §2.2, §6).
    The server refused nothing (``local``); the session goes on, and APOP or a
    challenge-response mechanism (CRAM-MD5, SCRAM) may still log in. As the SMTP
    clients' ``AuthenticationNotAvailable``."""

    local = True
    needs_tls = True
    """Whether what the login lacked is TLS: always true here, as the SMTP
    ``AuthenticationNotAvailable.needs_tls`` is for the same refusal."""


class POP3TLSNotAvailable(POP3Error):
    """STLS was required but the server does not offer it (RFC 2595 §4)."""


class POP3ConnectionError(POP3Error, ConnectionError):
    """The connection failed or closed."""


class POP3Timeout(POP3Error, TimeoutError):
    """The server did not answer in time."""


class POP3ProtocolError(POP3Error):
    """The server broke the protocol beyond repair (or the SASL exchange failed)."""
