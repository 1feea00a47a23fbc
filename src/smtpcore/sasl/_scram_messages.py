"""The grammar of SCRAM's messages (RFC 5802 §7): their attributes, the nonces, the
iteration count, and the error a message off the grammar raises.

Client and server parse the same ``attr-val`` lists and make and check nonces
the same way; what each side does with a malformed message differs (the client
raises, the server fails the exchange), so the parsers raise :class:`_Malformed`
and leave the answer to the side.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Final

from smtpcore._errors import LocalProtocolError
from smtpcore.sasl._base_checks import require_str

_NONCE: Final = re.compile(r"[!-+\--~]+")  # printable ASCII except "," (RFC 5802 §7)
_ITERATIONS: Final = re.compile(r"[1-9][0-9]{0,9}")
_ATTR_VAL: Final = re.compile(r"[A-Za-z]=[^\x00,]+")
"""RFC 5802 §7 ``attr-val``: ``ALPHA "=" value``, a value being one or more
``value-char`` (any UTF-8 character but NUL and ",")."""


class _Malformed(ValueError):
    """A SCRAM message off RFC 5802 §7's grammar: the client raises a SASLError for
    it, the server fails the exchange."""


class _MandatoryExtension(_Malformed):
    """A ``reserved-mext`` first (``m=``, RFC 5802 §7): an extension the receiver
    must understand to go on, and none is defined."""


def _attributes(message: str) -> list[tuple[str, str]]:
    """``message``'s attributes, (name, value) in order. Every field must be an
    ``attr-val`` (:data:`_ATTR_VAL`): where RFC 5802 §7 allows more than a
    message's own attributes it allows ``extensions``, which are attr-vals too,
    so a field that is none is an error wherever it stands."""
    fields = message.split(",")
    if fields[0].startswith("m="):
        raise _MandatoryExtension
    if not all(_ATTR_VAL.fullmatch(field) for field in fields):
        raise _Malformed
    return [(field[0], field[2:]) for field in fields]


def _values(message: str, leading: str, *, last: str = "") -> list[str]:
    """The values of the attributes ``leading`` names (a letter each) in the order
    they open ``message``, then of the one ``last`` names, which ends it (the
    client's proof ``p=``). What stands between them is ``extensions`` (RFC 5802 §7),
    checked by :func:`_attributes` and ignored, as §7 has a receiver do."""
    attributes = _attributes(message)
    names = "".join(name for name, _ in attributes)
    if (
        len(names) < len(leading) + len(last)
        or not names.startswith(leading)
        or not names.endswith(last)
    ):
        raise _Malformed
    values = [value for _, value in attributes]
    return values[: len(leading)] + values[len(values) - len(last) :]


def _default_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(18)).decode("ascii")


def _check_nonce(nonce: str) -> str:
    if not _NONCE.fullmatch(require_str(nonce, "SCRAM nonce")):
        raise LocalProtocolError("SCRAM nonce must be printable ASCII without ','")
    return nonce
