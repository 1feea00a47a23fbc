"""What SASL mechanisms check and convert, on either side: the verdicts and results
of the application's credential callbacks, credentials and options given to a
mechanism, UTF-8 (RFC 3629), SASLprep'd user names (RFC 4013) and saslnames
(RFC 5802 §5.1).

Kept in one place so that every mechanism words a bad value alike and a
callback's mistake never lets anyone in; the server's base class
(:mod:`smtpcore.sasl._base_server`) turns the exceptions raised here into a
:class:`~smtpcore.sasl.Failure`.
"""

from __future__ import annotations

from typing import TypeVar

from smtpcore._errors import LocalProtocolError, wrong_type
from smtpcore.sasl._base import _CallbackError, _Reject
from smtpcore.sasl._saslprep import saslprep_login


def _require_true(verdict: object, callback: str, refusal: str) -> None:
    """Go on only if a callback's verdict is ``True``; ``False`` ends the exchange
    with ``refusal``, and a verdict that is not a bool (``"no"``, ``None``, a
    coroutine) as the callback's mistake: a mistake must never let anyone in."""
    if verdict is not True:
        if verdict is not False:
            raise _CallbackError(f"{callback} gave {type(verdict).__name__}, not a bool")
        raise _Reject(refusal)


_Found = TypeVar("_Found")


def _require_found(found: object, kind: type[_Found], callback: str) -> _Found | None:
    """A lookup callback's result (``get_password``'s str, ``get_credentials``'s keys),
    or None for an unknown user; a result of any other type (a password as bytes, the
    coroutine an ``async def`` lookup gives) is the callback's mistake, as a verdict
    that is not a bool is in :func:`_require_true`: nothing the mechanism could use."""
    if found is None or isinstance(found, kind):
        return found
    raise _CallbackError(f"{callback} gave {type(found).__name__}, not {kind.__name__} or None")


def decode_utf8(data: bytes, what: str) -> str:
    """UTF-8 (RFC 3629) as SASL mechanisms require: no surrogates, no overlongs."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reject(f"{what} is not valid UTF-8") from None


def require_str(value: object, what: str) -> str:
    """``value``, a credential or option given to a mechanism, if it is a str;
    anything else is the application's misuse, a ``LocalProtocolError`` worded as every
    public constructor words it (:func:`~smtpcore._errors.wrong_type`), before the
    ``TypeError`` a regex or ``in`` would meet further in."""
    if not isinstance(value, str):
        raise wrong_type(what, value, "a str")
    return value


def require_count(value: object, what: str, least: int, most: int | None = None) -> int:
    """``value``, a numeric option given to a mechanism, if it is an int from ``least``
    (to ``most``); anything else is the application's misuse, a ``LocalProtocolError``
    as for a value of the wrong type, when the mechanism is built: an iteration count of
    0 or a response size of -1 means nothing the protocol can carry out."""
    if not isinstance(value, int) or isinstance(value, bool):  # True is no count
        raise wrong_type(what, value, "an int")
    if value < least or (most is not None and value > most):
        bounds = f"at least {least}" if most is None else f"from {least} to {most}"
        raise LocalProtocolError(f"{what} must be {bounds}, not {value}")
    return value


def encode_utf8(text: str, what: str) -> bytes:
    """Encode a credential given to a client; a value that is no str, or holds a lone
    surrogate, is the caller's mistake (``LocalProtocolError``)."""
    if not isinstance(text, str):  # require_str's check, one call fewer per credential
        raise wrong_type(what, text, "a str")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"{what} cannot be encoded in UTF-8") from None


def prepare_identity(name: str, what: str) -> str:
    """SASLprep a user name the client sent, as a query (RFC 4013; RFC 3454 §7:
    unassigned code points allowed), so that every way of typing it names one user
    (RFC 5802 §5.1, RFC 4616 §2); without the bidirectional rule, which would refuse
    every address with a right-to-left local part; and the domain of an address left
    as it is (:func:`~smtpcore.sasl.saslprep_login`: SASLprep would drop
    the joiner that tells one IDNA domain from another). Refused (a control or private-use
    character), or left empty, it fails the exchange, as RFC 4616 §2 says ("If
    preparation fails or results in an empty string, verification SHALL fail")."""
    try:
        prepared = saslprep_login(name)
    except ValueError as exc:
        raise _Reject(f"{what} refused by SASLprep: {exc}") from None
    if not prepared:
        raise _Reject(f"{what} is empty after SASLprep")
    return prepared


def escape_saslname(name: str) -> str:
    """RFC 5802 §5.1 / RFC 5801 §4 saslname: "=" as "=3D", "," as "=2C"."""
    return name.replace("=", "=3D").replace(",", "=2C")


def unescape_saslname(value: str) -> str | None:
    """Undo :func:`escape_saslname`; ``None`` for any other "=" or for a NUL."""
    head, *rest = value.split("=")
    parts = [head]
    for part in rest:
        if part.startswith("2C"):
            parts.append("," + part[2:])
        elif part.startswith("3D"):
            parts.append("=" + part[2:])
        else:
            return None
    name = "".join(parts)
    return None if "\x00" in name else name
