"""Text from a peer made safe for a log line, and for the terminal it may be read on.

Much of what a mail log says is the peer's choice: a HELO name, a user name,
an address, the text of a remote server's reply. Raw, a control character
in it drives the terminal the log is read on (xterm obeys the 8-bit CSI,
U+009B, as it does ESC [), and a line or paragraph separator (NEL, U+2028,
the C0 separators) splits the line for any reader that follows
:meth:`str.splitlines`, so that a peer could write lines of its own into the
log. Every such field goes through :func:`loggable`, and so do the lines of
a client's wire trace; what goes on the wire or into mail is left alone.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from smtpcore._driver._own_timeouts import DeadlinePassed
from smtpcore._textsafe import backslash_escaped, escape_unsafe

__all__ = [
    "LOGGED_NAME_LIMIT",
    "NO_CLEAR_PASSWORD",
    "NO_CREDENTIAL_CHECKED",
    "describe_error",
    "login_fields",
    "loggable",
    "loggable_reply",
    "named_mechanism",
    "no_credential_line",
    "printable",
]


def loggable(text: str) -> str:
    """``text`` with every character unsafe in text (:mod:`smtpcore._textsafe`: controls,
    C1 among them, line and paragraph separators, format characters such as the bidi
    controls) and every tab shown as its escape (``\\x9b``, ``\\u2028``), never raw."""
    return escape_unsafe(text).replace("\t", "\\x09")


def printable(text: str) -> str:
    """``text`` as :func:`loggable` shows it, and every other character
    :meth:`str.isprintable` refuses (a non-ASCII space, an unassigned code point) as its
    escape too: what a peer gave, quoted in the text of a reply or a refusal, which must
    be one printable line (RFC 5321 §4.2)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else backslash_escaped(char) for char in text)


LOGGED_NAME_LIMIT: Final = 255
"""The most characters of a user name a failed login's line shows, escapes counted:
an AUTH line of 12,288 octets must not make a log line of 9,000."""

NO_CLEAR_PASSWORD: Final = "not possible for this user: no password in the clear"
"""Why a CRAM-MD5 or APOP attempt for a user whose secret is SCRAM keys failed: no
password could have succeeded, so it is no guess, and its line says so in place of
``reject:``, which fail2ban's filter counts."""


NO_CREDENTIAL_CHECKED: Final = "no credential checked"
"""What the log calls a login refusal that judged no credential (RFC 4954 §4, §6, RFC
5034 §4, RFC 2595 §4: an unknown mechanism, a mechanism or a login that needs TLS, a
syntax error, an initial response to CRAM-MD5, an answer to a challenge that is not
base64 or too long): not ``reject:``, which fail2ban's filter counts as a failed
login. Postfix likewise warns ``SASL ... authentication failed`` only once a
credential was checked."""


def no_credential_line(
    where: str, command: str, peer: str, answered: str, mechanism: str | None = None
) -> str:
    """The line of a login refusal that judged no credential, SMTP and POP3 alike:
    ``WHERE: no credential checked: COMMAND from PEER: ANSWER[; mechanism=NAME]``.
    ``where`` is the queue id's place (``NOQUEUE``) or the protocol (``pop3``),
    ``answered`` the reply already made loggable (:func:`loggable_reply`), and
    ``mechanism`` one the server knows, never a word the client sent in its place
    (:func:`named_mechanism`): it may be a password."""
    named = f"; mechanism={loggable(mechanism)}" if mechanism else ""
    return f"{where}: {NO_CREDENTIAL_CHECKED}: {command} from {peer}: {answered}{named}"


def named_mechanism(line: bytes, known: Collection[str]) -> str | None:
    """The mechanism an AUTH command ``line`` names, when it is one of ``known`` (the
    server's own, upper case): any other word there may be a password typed in its
    place, so it is never logged."""
    words = line[len(b"AUTH") :].split(maxsplit=1)
    name = words[0].upper().decode("latin-1") if words else ""
    return name if name in known else None


def login_fields(user: str | None, mechanism: str | None = None) -> str:
    """``mechanism=NAME user=<USER>`` (``user=<USER>`` without a mechanism), the end of
    every failed login's line, SMTP and POP3 alike: ``user`` escaped, and cut to
    :data:`LOGGED_NAME_LIMIT` characters ending ``...``, never inside an escape.
    ``None`` or empty gives ``user=<>``: whether a name may be shown at all (a
    password typed as one may not) is the caller's rule."""
    shown = ""
    if user:
        shown = loggable(user[: LOGGED_NAME_LIMIT + 1])
        if len(shown) > LOGGED_NAME_LIMIT:
            cut, room = [], LOGGED_NAME_LIMIT - 3
            for char in user[:LOGGED_NAME_LIMIT]:  # bounded: each round fills one or more
                piece = loggable(char)
                if len(piece) > room:
                    break
                cut.append(piece)
                room -= len(piece)
            shown = "".join(cut) + "..."
    fields = f"user=<{shown}>"
    return fields if not mechanism else f"mechanism={mechanism} {fields}"


def loggable_reply(reply: object) -> str:
    """A reply (SMTP or POP3) as one log line: its lines joined by a space, escaped."""
    return loggable(" ".join(str(reply).split()))


def describe_error(exc: BaseException) -> str:
    """``exc`` as the reason on a log line: its text, escaped, or its type's name when it
    has none (``ConnectionResetError()``, as asyncio raises for a client that gives up
    in the TLS handshake; ``TimeoutError()``), so that "failed:" is never left bare. A
    passed deadline is the ``TimeoutError`` the operator knows, not its private class."""
    if isinstance(exc, DeadlinePassed):
        return "TimeoutError"
    return loggable(str(exc)) or type(exc).__name__
