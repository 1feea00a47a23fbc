"""What is wrong with a server's ``--tls-cert`` and ``--tls-key`` files, in plain words.

OpenSSL says ``[SSL] PEM lib`` whether the certificate file holds only a key, the key
file only a certificate, either is empty or garbage: the operator cannot tell which
file to fix. :func:`tls_files_problem` looks at the files once loading them failed,
and names the file and what it lacks, as Postfix's ``cannot get RSA certificate from
file`` / ``cannot get RSA private key from file`` and its key-mismatch warning do.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Final

__all__ = ["EncryptedKey", "refuse_passphrase", "tls_files_problem"]


class EncryptedKey(Exception):
    """The private key is encrypted: ``serve`` takes none (see :func:`refuse_passphrase`)."""


def refuse_passphrase() -> bytes:
    """The ``password`` callback of ``load_cert_chain``: without one, OpenSSL asks for
    the passphrase of an encrypted key on the terminal, which at a ``SIGHUP`` reload
    would block the event loop (and under a service manager wait for nobody)."""
    raise EncryptedKey


_READ_AT_MOST: Final = 1024 * 1024
"""Octets of a file looked at: a certificate chain is a few KiB; a file far larger is
no PEM file anyway, and must not be read whole to say so."""

_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
#: OpenSSL's reasons for a key that belongs to no certificate loaded: another key of
#: the certificate's type, or a key of another type (an ed25519 or RSA key beside an
#: EC certificate), for which no certificate of its type was loaded.
_MISMATCHES = frozenset({"KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})

_PRIVATE_KEY: Final = b"PRIVATE KEY-----"
"""The end of every PEM private key's label: ``PRIVATE KEY``, ``RSA PRIVATE KEY``,
``EC PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY`` (RFC 7468 §10, §11)."""

_DECODING_LIBRARIES: Final = frozenset({"PEM", "ASN1", "DECODER"})
"""The OpenSSL libraries whose errors mean a file's bytes could not be decoded."""

_KEY_HINT: Final = " (it holds a private key: give it as --tls-key)"
_CERTIFICATE_HINT: Final = " (it holds a certificate: give it as --tls-cert)"


def tls_files_problem(cert: Path, key: Path, error: BaseException) -> str:
    """The operator's mistake, given that loading ``cert`` and ``key`` raised ``error``:
    a file that cannot be read, is empty, holds no certificate (or no private key),
    holds a certificate that does not parse, or a key that does not match or does not
    parse; else OpenSSL's own reason (a key too small). Each names the option and the
    file."""
    texts: dict[str, bytes] = {}
    for option, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            with path.open("rb") as file:
                texts[option] = file.read(_READ_AT_MOST)
        except OSError as exc:
            return f"{option} {path}: cannot read it: {exc.strerror or exc}"
    cert_text, key_text = texts["--tls-cert"], texts["--tls-key"]
    if not cert_text.strip():
        return f"--tls-cert {cert} is empty: it must hold the certificate chain (PEM)"
    if _CERTIFICATE not in cert_text:
        hint = _KEY_HINT if _PRIVATE_KEY in cert_text else ""
        return f"--tls-cert {cert} has no certificate (PEM, {_CERTIFICATE.decode()}){hint}"
    if not _certificates_parse(cert):
        return f"--tls-cert {cert}: its certificate cannot be read (broken PEM)"
    if not key_text.strip():
        return f"--tls-key {key} is empty: it must hold the private key (PEM)"
    if _PRIVATE_KEY not in key_text:
        hint = _CERTIFICATE_HINT if _CERTIFICATE in key_text else ""
        return f"--tls-key {key} has no private key (PEM){hint}"
    if isinstance(error, ssl.SSLError) and error.reason in _MISMATCHES:
        kind = " (a key of another type)" if error.reason == "NO_CERTIFICATE_ASSIGNED" else ""
        return f"--tls-key {key}: the private key does not match the certificate in {cert}{kind}"
    if isinstance(error, EncryptedKey):
        return (
            f"--tls-key {key}: its private key is encrypted: serve needs an unencrypted key"
            " (openssl pkey -in KEY -out NEWKEY writes one)"
        )
    if _undecodable(error):
        return f"--tls-key {key}: its private key cannot be read (broken PEM)"
    return f"--tls-cert {cert} and --tls-key {key} cannot serve: {error}"


def _undecodable(error: BaseException) -> bool:
    """Whether OpenSSL failed to decode a file (its ``PEM lib``, which CPython gives no
    reason for, or an error of its PEM, ASN.1 or decoder library), rather than refused
    what it read: a key too small for its security level is no broken PEM, and only
    OpenSSL's own reason says what is wrong."""
    if not isinstance(error, ssl.SSLError):
        return False
    return error.reason is None or error.library in _DECODING_LIBRARIES


def _certificates_parse(cert: Path) -> bool:
    """Whether OpenSSL reads the certificates of ``cert``: a public way to load them
    without a key is to trust them, in a context made for that and thrown away."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=cert)
    except (OSError, ssl.SSLError):
        return False
    return True
