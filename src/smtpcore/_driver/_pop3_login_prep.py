"""What a POP3 server session hands its mailstore from USER, PASS and APOP (RFC 6856 §2.2).

Where CAPA lists ``UTF8 USER`` the names and passwords may be UTF-8. The USER
and APOP name is SASLprep'd (RFC 4013) as a query, as
:func:`~smtpcore.sasl.saslprep_login` prepares AUTH's, so USER and AUTH find one
user; a name SASLprep refuses (a control, a private-use or other §2.3
character) or leaves empty logs no one in, and the login fails as a wrong
password does, so the answer never says which part was wrong. The password
follows the one rule PLAIN and LOGIN follow: PASS's reaches the store as typed,
for :func:`~smtpcore.sasl.passwords_match` to prepare as a query, and APOP's
digest is checked over the stored secret as
:func:`~smtpcore.sasl.prepared_stored_secret` prepares it; a password SASLprep
refuses is compared (or hashed) exactly as stored by both, so no user logs in
by one command and is locked out by another.

Where ``UTF8 USER`` is not listed, names and the APOP secret pass through
exactly as typed: §2.2 binds the client ("Clients MUST NOT use UTF-8 ...") and
asks nothing of the server there, so a non-ASCII one a client sends anyway is
judged by the store, as Dovecot judges it and as this server always did.
Ill-formed UTF-8 never gets this far: the machine refuses the line
(``-ERR [UTF8]``).
"""

from __future__ import annotations

from smtpcore.sasl import prepared_stored_secret, saslprep_login

__all__ = ["prepared_apop_secret", "prepared_name"]


def prepared_name(name: str, *, utf8_user: bool) -> str | None:
    """The USER or APOP name as the mailstore is asked about it, or None where it can
    log no one in: where ``UTF8 USER`` is listed, SASLprep'd as a query (RFC 6856
    §2.2), None if SASLprep refuses or empties it; where it is not, as typed."""
    if not utf8_user:
        return name
    try:
        prepared = saslprep_login(name)
    except ValueError:
        return None
    return prepared or None


def prepared_apop_secret(secret: str, *, utf8_user: bool) -> str:
    """The secret an APOP digest is computed over: where ``UTF8 USER`` is listed, as
    :func:`~smtpcore.sasl.prepared_stored_secret` prepares it for PASS too (``u`` with
    a combining diaeresis stored hashes as ``ü``, as a client computes it); where it
    is not, as stored."""
    return prepared_stored_secret(secret) if utf8_user else secret
