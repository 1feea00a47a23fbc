"""TLS for the command-line clients, ``send`` and ``fetch``: the context they check a
server's certificate with, and what they say when the check fails or when a login
would show the password without TLS.

Apart from either command, because both say these things in the same words: a user
who meets a refusal in one recognizes it in the other. Protocol-free; the options it
names (``--cafile``, ``--insecure``, ``--allow-plaintext-auth``) are both commands'.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

__all__ = [
    "client_tls_context",
    "declined_certificate",
    "failed_certificate_check",
    "plaintext_auth_refused",
    "plaintext_auth_warning",
]


def client_tls_context(cafile: Path | None, insecure: bool) -> ssl.SSLContext:
    """Verified TLS by default; ``cafile`` adds a CA to trust, ``insecure`` checks nothing."""
    context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def plaintext_auth_refused(login: str, *, use: str) -> str:
    """Why ``send`` or ``fetch`` did not log in: ``login`` (``USER/PASS``, ``AUTH
    PLAIN``) would show the password itself on a session without TLS, which the
    library's clients refuse (RFC 4954 §4, RFC 2595 §2.2), said in the command line's
    words: ``use`` names the options that log in safely, and ``--allow-plaintext-auth``
    the one that sends it anyway."""
    return (
        f"{login} needs TLS and the session has none: use {use}; "
        "--allow-plaintext-auth sends the password in the clear anyway"
    )


def plaintext_auth_warning(command: str, login: str, *, use: str) -> str:
    """The warning of ``smtpcore COMMAND`` that ``login`` went without TLS, as
    ``--allow-plaintext-auth`` let it; ``use`` names the options that protect it."""
    return (
        f"smtpcore {command}: warning: the password crosses the network in the clear "
        f"({login}); use {use}"
    )


_UNTRUSTED_ISSUER: Final = frozenset({2, 18, 19, 20, 21, 27})
"""OpenSSL's ``X509_V_ERR_`` codes for a certificate whose signer this client does not
trust (UNABLE_TO_GET_ISSUER_CERT, DEPTH_ZERO_SELF_SIGNED_CERT, SELF_SIGNED_CERT_IN_CHAIN,
UNABLE_TO_GET_ISSUER_CERT_LOCALLY, UNABLE_TO_VERIFY_LEAF_SIGNATURE, CERT_UNTRUSTED):
the failures that ``--cafile`` can change."""
_NAME_MISMATCH: Final = frozenset({62, 64})
"""``X509_V_ERR_HOSTNAME_MISMATCH`` and ``X509_V_ERR_IP_ADDRESS_MISMATCH``: a certificate
issued to another name than the one checked (RFC 6125 §6), whoever signed it."""


def failed_certificate_check(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The failed check of the server's certificate behind ``exc`` (along its
    ``__cause__`` chain), or None when ``exc`` is no such failure."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


def declined_certificate(
    exc: Exception, failure: ssl.SSLCertVerificationError, checked_name: str | None
) -> str:
    """The text of ``exc``, by which this client declined a server certificate that
    failed its check (``failure``; RFC 3207 §4.1, RFC 2595 §2.4): the client's own
    refusal, with what would change the check for that failure."""
    return (
        f"this client refused to go on: {exc} ({_what_changes_the_check(failure, checked_name)})"
    )


def _what_changes_the_check(
    failure: ssl.SSLCertVerificationError, checked_name: str | None
) -> str:
    """``--cafile`` only where the signer is not trusted: for a certificate issued to
    another name, the name it was checked against (the one ``--server`` gives)."""
    code = failure.verify_code
    if code in _UNTRUSTED_ISSUER:
        return "--cafile FILE trusts the CA that signed it, --insecure checks nothing"
    if code in _NAME_MISMATCH:
        against = "the server's name" if checked_name is None else repr(checked_name)
        return f"the certificate was checked against {against}, --insecure checks nothing"
    return "--insecure checks nothing"
