"""How ``fetch`` secures its session and logs in: STLS chosen from ``--stls``,
``--no-stls`` and ``--tls``, and the ``--auth`` method, chosen by ``auto`` when not
named, among USER/PASS, APOP and the SASL mechanisms.

Apart because it is the one part of a run that handles the password: which method
shows it on the wire, and what the refusal to send it in the clear says, are settled
here and nowhere else (RFC 2595 §2.2). ``AUTH_CHOICES`` is public, and stays
importable from :mod:`smtpcore.server.fetch`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final

from smtpcore._words import ascii_upper
from smtpcore.asyncio import POP3AuthenticationNotAvailable, POP3Client, POP3ResponseError
from smtpcore.sasl import (
    ClientMechanism,
    CramMD5Client,
    LoginClient,
    PlainClient,
    ScramSHA256Client,
)
from smtpcore.server._fetch_output import _warn
from smtpcore.server.tools import plaintext_auth_refused, plaintext_auth_warning


def _stls_choice(args: argparse.Namespace) -> bool | None:
    """STLS whenever the server offers it, the certificate checked, as ``send`` uses
    STARTTLS and as fetchmail does; required with ``--stls``, never with ``--no-stls``
    or over ``--tls``, where the session is TLS already."""
    if args.tls or args.no_stls:
        return False
    return True if args.stls else None


_SASL_CLIENTS: dict[str, Callable[[str, str], ClientMechanism]] = {
    "scram-sha-256": ScramSHA256Client,
    "cram-md5": CramMD5Client,
    "plain": PlainClient,
    "login": LoginClient,
}
_IN_THE_CLEAR = {"user": "USER/PASS", "plain": "AUTH PLAIN", "login": "AUTH LOGIN"}
"""The ways of logging in that show the password itself (base64 is no cover)."""
AUTH_CHOICES = ("auto", "user", "apop", *_SASL_CLIENTS)
"""``fetch --auth``: how to log in; ``auto`` chooses as :func:`_log_in` says."""


def _auto_method(client: POP3Client) -> str:
    """Without TLS, a method that does not send the password in the clear when the
    server offers one: SCRAM-SHA-256, then APOP, then CRAM-MD5; else USER/PASS."""
    if client.tls:
        return "user"
    offered = {ascii_upper(name) for name in client.capabilities.get("SASL", ())}
    if "SCRAM-SHA-256" in offered:
        return "scram-sha-256"
    if client.connection.apop_timestamp is not None:
        return "apop"
    if "CRAM-MD5" in offered:
        return "cram-md5"
    return "user"


async def _log_in(client: POP3Client, args: argparse.Namespace) -> None:
    """Switch to UTF-8 mode where the server offers it (RFC 6856 §2), then log in by
    ``--auth``; a server that refuses UTF8 (§2.1: it MAY) is warned of and logged in
    to anyway, as before UTF8 was sent (a UTF-8 user name still needs ``UTF8 USER``
    listed, §2.2, and the client says so). A method that shows the password is
    refused without TLS by the client itself (RFC 2595 §2.2), unless
    ``--allow-plaintext-auth``, which warns; the refusal says, in the command line's
    words, how to log in."""
    if "UTF8" in client.capabilities:
        # RFC 6856 §2.1: outside UTF-8 mode a message with UTF-8 header fields
        # is refused or replaced; fetch stores mail as it is, so it asks for it.
        try:
            await client.utf8()
        except POP3ResponseError as exc:
            _warn(f"{exc}; logging in without UTF-8 mode")
    method = args.auth if args.auth != "auto" else _auto_method(client)
    if method in _IN_THE_CLEAR and not client.tls and args.allow_plaintext_auth:
        warning = plaintext_auth_warning("fetch", _IN_THE_CLEAR[method], use=_TLS_OPTIONS)
        print(warning, file=sys.stderr)
    try:
        if method in ("user", "apop"):
            await client.login(args.user, args.password, apop=method == "apop")
            return
        await client.authenticate(_SASL_CLIENTS[method](args.user, args.password))
    except POP3AuthenticationNotAvailable as exc:
        safely = f"{_TLS_OPTIONS}, or --auth scram-sha-256|apop|cram-md5 where offered"
        refused = plaintext_auth_refused(_IN_THE_CLEAR[method], use=safely)
        raise POP3AuthenticationNotAvailable(refused) from exc


_TLS_OPTIONS: Final = "--stls or --tls"
