"""What a POP3 server session hands its mailstore from USER, PASS and APOP (RFC 6856 §2.2).

Where CAPA lists ``UTF8 USER`` the names and passwords may be UTF-8, and the
server prepares them with SASLprep (RFC 4013) before judging them: USER, PASS
and the APOP name as query strings, the APOP secret as a stored string; one
SASLprep refuses (a control, a private-use or other §2.3 character) or leaves
empty logs no one in. Where it does not, the client may send none (§2.2) and a
non-ASCII one logs no one in, as Dovecot's default ``auth_username_chars``
fails such a name. Either way the login fails as a wrong password does, so
the answer never says which part was wrong. Ill-formed UTF-8 never gets this
far: the machine refuses the line (``-ERR [UTF8]``).

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
    log no one in: not ASCII where ``UTF8 USER`` is not listed, refused or emptied by
    SASLprep (a query, RFC 6856 §2.2) where it is."""
    if not utf8_user:
        return name if name.isascii() else None
    try:
        prepared = saslprep_login(name)
    except ValueError:
        return None
    return prepared or None


def prepared_password(password: str, *, utf8_user: bool) -> str | None:
    """The PASS argument as the mailstore checks it, or None where it can match no
    password: not ASCII where ``UTF8 USER`` is not listed, refused or emptied by
    SASLprep (a query: an unassigned code point is kept) where it is."""
    if not utf8_user:
        return password if password.isascii() else None
    try:
        prepared = saslprep(password, allow_unassigned=True)
    except ValueError:
        return None
    return prepared or None


def prepared_apop_secret(secret: str, *, utf8_user: bool) -> str | None:
    """The secret an APOP digest is computed over (RFC 6856 §2.2: SASLprep'd as a
    stored string, so ``u`` with a combining diaeresis stored hashes as ``ü``, as a
    client computes it), or None where no digest can match: a secret that is not
    ASCII where ``UTF8 USER`` is not listed, as PASS takes none. A secret SASLprep
    refuses (an emoji, unassigned in Unicode 3.2) is hashed as it is stored, as PASS
    compares it (:func:`~smtpcore.sasl.passwords_match`, RFC 4616 §2 "including
    none"): no client that prepares it can compute a digest at all."""
    if not utf8_user:
        return secret if secret.isascii() else None
    try:
        prepared = saslprep(secret)
    except ValueError:
        return secret
    return prepared or secret
