"""The envelope mailbox, :class:`~smtpcore.address.Mailbox`, and its everyday form:
the ASCII dot-atom at an LDH host name that most addresses are, recognised by two
compiled patterns (and, in a whole path, by one) before the full rules run.

The command parser matches every ``MAIL`` and ``RCPT`` line against
``SIMPLE_PATH_PATTERN`` and builds its mailboxes as :func:`simple_mailbox` does;
the full rules are :mod:`smtpcore._address_domains`' and the path parser's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from smtpcore._address_domains import _validate_domain
from smtpcore._address_syntax import (
    _DOT_STRING,
    MAX_DOMAIN_OCTETS,
    MAX_RECEIVED_PATH_OCTETS,
    AddressError,
    _check_chars,
)

__all__ = [
    "SIMPLE_PATH_PATTERN",
    "Mailbox",
    "quote_local_part",
    "simple_mailbox",
]

# The common case, checked with two compiled patterns before the full rules run:
# an ASCII dot-atom local part and an ASCII LDH host name.
_SIMPLE_LOCAL = re.compile(
    r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
)
# Labels of 1 to 63 letters, digits and hyphens, no hyphen first or last: a letter or
# digit first, a lookbehind for the last, and the dot before each further label, so that
# a match never backtracks (the everyday-line parser matches every MAIL and RCPT with it).
_SIMPLE_LABEL = r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(?<!-)"
_SIMPLE_DOMAIN = re.compile(rf"{_SIMPLE_LABEL}(?:\.{_SIMPLE_LABEL})*")

# In a path, each label but the last is followed by a dot: one all digits before the
# ">" is the last, which must not be numeric (as simple_mailbox asks).
_PATH_LABEL = rf"(?![0-9]+>){_SIMPLE_LABEL}"
SIMPLE_PATH_PATTERN: Final = (
    f"<(?=[^>]{{3,{MAX_RECEIVED_PATH_OCTETS - 2}}}>)"
    f"({_SIMPLE_LOCAL.pattern})@(?=[^>]{{1,{MAX_DOMAIN_OCTETS}}}>)"
    f"({_PATH_LABEL}(?:\\.{_PATH_LABEL})*)>"
)
"""The everyday path (ASCII dot-atom local part, LDH host name), its parts in two groups,
within the rules :func:`simple_mailbox` holds such parts to (a domain of at most 255
octets, a last label not all digits) and the limit :func:`check_received_path` holds a
received path to (:data:`MAX_RECEIVED_PATH_OCTETS`, which such a path, ASCII and
unquoted, meets in its length): the lookaheads read the lengths up to the ">", which
neither part can hold. A match is a mailbox as it stands and a path a server takes,
for the hot paths that recognise whole lines. Private to the package: the command
parser imports it from here, and :mod:`smtpcore.address` does not re-export it."""
_SIMPLE_PATH = re.compile(SIMPLE_PATH_PATTERN)


def quote_local_part(local_part: str) -> str:
    """The wire form of a local part: as is when a Dot-string, else a Quoted-string.

    RFC 5321 §4.1.2 asks senders not to quote needlessly, so only the two characters that
    qtextSMTP excludes (``"`` and ``\\``) are escaped as quoted-pairs.
    """
    if _DOT_STRING.fullmatch(local_part):
        return local_part
    escaped = local_part.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _check_local_part(local_part: str) -> None:
    """Characters of a local part. An empty one is valid: it is the empty
    Quoted-string ``""`` (RFC 5321 §4.1.2: ``DQUOTE *QcontentSMTP DQUOTE``). Its size is
    not limited (RFC 5321 §4.5.3.1: 64 octets is what every receiver must take, and
    SRS and VERP senders go past it): a peer's is bounded by
    :func:`check_received_path`."""
    _check_chars(local_part, "local part")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """An envelope mailbox, ``local_part@domain`` (RFC 5321 §4.1.2, RFC 6531 §3.3).

    ``local_part`` is the unquoted value (``john doe``, not ``"john doe"``; ``""`` for
    the empty Quoted-string, written ``""@domain``); ``domain`` is a domain name
    (U-labels allowed) or an address literal, both kept as given.
    ``domain == ""`` is allowed only for the ``RCPT TO:<Postmaster>`` form (§4.1.1.3).
    Construction enforces the domain's limits (255 octets, labels of 63: DNS's own);
    the local part and the path may be longer than the 64 and 256 octets of §4.5.3.1,
    which are minimums every receiver must take, not limits (§4.5.3.1.1, §4.5.3.1.3),
    and go as they are, as Postfix sends them.
    """

    local_part: str
    domain: str

    def __post_init__(self) -> None:
        if not isinstance(self.local_part, str) or not isinstance(self.domain, str):
            raise TypeError("Mailbox local_part and domain must be str")
        if _is_simple(self.local_part, self.domain):
            return
        _check_local_part(self.local_part)
        if not self.domain:
            if self.local_part.lower() != "postmaster":
                raise AddressError(
                    "empty domain: only Postmaster may be given without one (RFC 5321 §4.1.1.3)"
                )
            return
        _validate_domain(self.domain, allow_trailing_dot=False)

    def __str__(self) -> str:
        if not self.domain:
            return self.local_part
        return f"{quote_local_part(self.local_part)}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        """False when the mailbox can only be sent with SMTPUTF8 (RFC 6531 §3.4)."""
        return self.local_part.isascii() and self.domain.isascii()

    @property
    def is_address_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def ascii_domain(self) -> str:
        """The domain as DNS wants it: lowercase, A-labels; literals and "" unchanged."""
        if not self.domain or self.is_address_literal:
            return self.domain
        if self.domain.isascii():
            return self.domain.lower()
        return _validate_domain(self.domain, allow_trailing_dot=False)

    @property
    def a_label_form(self) -> Mailbox:
        """The same mailbox as a server without SMTPUTF8 can take it: a UTF-8 domain in
        A-labels, which name the same domain (RFC 5890 §2.3.2.1). Only a UTF-8 local
        part needs SMTPUTF8 (RFC 6531 §3.4): it has no ASCII form, so that mailbox,
        like an ASCII one, is returned as it is."""
        if self.domain.isascii() or not self.local_part.isascii():
            return self
        return Mailbox(self.local_part, self.ascii_domain)


def _is_simple(local: str, domain: str) -> bool:
    """True for the everyday ASCII mailbox that the full checks would accept."""
    return (
        _SIMPLE_LOCAL.fullmatch(local) is not None
        and _SIMPLE_DOMAIN.fullmatch(domain) is not None
        and simple_mailbox(local, domain) is not None
    )


def simple_mailbox(local: str, domain: str) -> Mailbox | None:
    """The mailbox of parts that matched the simple patterns (``_SIMPLE_LOCAL`` and
    ``_SIMPLE_DOMAIN``), or None when its domain is over 255 octets or its last label
    numeric: the rules such parts can still break. A mailbox has no length limit of its
    own (RFC 5321 §4.5.3.1); a received path's is :func:`check_received_path`'s.
    ``SIMPLE_PATH_PATTERN`` holds its parts to the same rules (a test holds the two
    equal), so the everyday-line parser builds its mailboxes without this call."""
    last_label = domain.rpartition(".")[2]
    if len(domain) > MAX_DOMAIN_OCTETS or (
        last_label.isascii() and last_label.isdigit()  # is_digits, in C
    ):
        return None
    # The parts are checked: skip Mailbox.__post_init__, and set the slots through their
    # descriptors (object.__setattr__ looks each name up first).
    mailbox = object.__new__(Mailbox)
    _SET_LOCAL_PART(mailbox, local)
    _SET_DOMAIN(mailbox, domain)
    return mailbox


_SET_LOCAL_PART: Final[Callable[[Mailbox, str], None]] = vars(Mailbox)["local_part"].__set__
_SET_DOMAIN: Final[Callable[[Mailbox, str], None]] = vars(Mailbox)["domain"].__set__
