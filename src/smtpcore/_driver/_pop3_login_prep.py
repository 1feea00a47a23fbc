"""What a POP3 server session hands its mailstore from USER, PASS and APOP (RFC 6856 §2.2).

Where CAPA lists ``UTF8 USER`` the names and passwords may be UTF-8, and the
server prepares them with SASLprep (RFC 4013) before judging them: USER, PASS
and the APOP name as query strings, the APOP secret as a stored string; one
SASLprep refuses (a control, a private-use or other §2.3 character) or leaves
empty logs no one in, and the login fails as a wrong password does, so the
answer never says which part was wrong. Where it does not, they pass through
exactly as typed: §2.2 binds the client ("Clients MUST NOT use UTF-8 ...")
and asks nothing of the server there, so a non-ASCII one a client sends anyway
is judged by the store, as Dovecot judges it and as this server always did.
Ill-formed UTF-8 never gets this far: the machine refuses the line
(``-ERR [UTF8]``).

The preparation is the one SASL's mechanisms use (:mod:`smtpcore.sasl`): a name
is prepared as :func:`~smtpcore.sasl.saslprep_login` prepares AUTH's, so USER
and AUTH find one user; a password as :func:`~smtpcore.sasl.passwords_match`
prepares the one it is given, so preparing it again there changes nothing.
"""

from __future__ import annotations

from smtpcore.sasl import saslprep, saslprep_login

__all__ = ["prepared_apop_secret", "prepared_name", "prepared_password"]


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


def prepared_password(password: str, *, utf8_user: bool) -> str | None:
    """The PASS argument as the mailstore checks it, or None where it can match no
    password: where ``UTF8 USER`` is listed, SASLprep'd as a query (an unassigned code
    point is kept), None if SASLprep refuses or empties it; where it is not, as typed."""
    if not utf8_user:
        return password
    try:
        prepared = saslprep(password, allow_unassigned=True)
    except ValueError:
        return None
    return prepared or None


def prepared_apop_secret(secret: str, *, utf8_user: bool) -> str:
    """The secret an APOP digest is computed over. Where ``UTF8 USER`` is listed,
    SASLprep'd as a stored string (RFC 6856 §2.2), so ``u`` with a combining diaeresis
    stored hashes as ``ü``, as a client computes it; a secret SASLprep refuses (an
    emoji, unassigned in Unicode 3.2) is hashed as it is stored, as PASS compares it
    (:func:`~smtpcore.sasl.passwords_match`, RFC 4616 §2 "including none"). Where it
    is not listed, as stored, as PASS takes its password as typed."""
    if not utf8_user:
        return secret
    try:
        prepared = saslprep(secret)
    except ValueError:
        return secret
    return prepared or secret
