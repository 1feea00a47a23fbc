"""LIMITS (RFC 9422): limits the server will apply in this session, told up front.

The server lists ``LIMITS RCPTMAX=n`` (its ``max_recipients``); a client
reads the registered limits (RFC 9422 §4: MAILMAX, RCPTMAX, RCPTDOMAINMAX)
and keeps under them, splitting a transaction with more recipients than
RCPTMAX into several (§4.2), and sending no more MAIL commands in a session
than MAILMAX (§4.1), nor recipients of more domains than RCPTDOMAINMAX
(§4.3), the rest left for a new one. The extension brings no command and no
parameter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from smtpcore._numbers import parse_number
from smtpcore._words import ascii_upper
from smtpcore.address import Mailbox
from smtpcore.smtp._extension import Extension, ServerFacts

__all__ = ["LIMITS", "Limits"]

# RFC 9422 §3: limit-name = 1*(ALPHA / DIGIT / "-" / "_"); limit-value = VCHAR but ";".
_NAME_VALUE: Final = re.compile(r"([A-Za-z0-9_-]+)(?:=([!-:<-~]+))?")
_MAX_DIGITS: Final = 6
"""RFC 9422 §4.1-§4.3: each registered value is ``%x31-39 0*5DIGIT`` (1 to 999999)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The registered limits a server announced; None where it announced none."""

    mail_max: int | None = None
    """MAILMAX: MAIL commands in this session, refused ones too (RFC 9422 §4.1)."""
    rcpt_max: int | None = None
    """RCPTMAX: RCPT commands in one transaction (RFC 9422 §4.2)."""
    rcpt_domain_max: int | None = None
    """RCPTDOMAINMAX: distinct recipient domains in this session (RFC 9422 §4.3)."""

    @classmethod
    def parse(cls, params: tuple[str, ...]) -> Limits:
        """Read the LIMITS parameters. A parameter that is not ``name[=value]`` makes
        the whole list unreadable, read as no limits (RFC 9422 §3.7: proceed as if
        LIMITS had not been used); a registered limit whose value is not 1 to 999999
        (§4.1-§4.3: no leading zero, six digits at most), and an unknown one, are
        ignored alone. Of a limit given twice, the first counts."""
        found: dict[str, int] = {}
        for param in params:
            match = _NAME_VALUE.fullmatch(param)
            if match is None:
                return cls()
            text = match.group(2)
            if text is None or text[0] == "0":
                continue
            value = parse_number(text, max_digits=_MAX_DIGITS)
            if value is not None:
                found.setdefault(ascii_upper(match.group(1)), value)
        return cls(found.get("MAILMAX"), found.get("RCPTMAX"), found.get("RCPTDOMAINMAX"))

    def admit(
        self, recipients: Sequence[Mailbox], domains: set[str]
    ) -> tuple[list[int], list[int]]:
        """The indexes of ``recipients`` this session may still take and of those it
        may not, given ``domains``, the recipient domains it has had (updated with
        the ones taken): RCPTDOMAINMAX counts the distinct domains of a session, not
        of a transaction (RFC 9422 §4.3), so a recipient of a domain more goes in a
        new session. Every recipient is taken without RCPTDOMAINMAX."""
        if self.rcpt_domain_max is None:
            return list(range(len(recipients))), []
        taken: list[int] = []
        left: list[int] = []
        for index, recipient in enumerate(recipients):
            domain = _domain_of(recipient)
            if domain in domains or len(domains) < self.rcpt_domain_max:
                domains.add(domain)
                taken.append(index)
            else:
                left.append(index)
        return taken, left

    def split(self, recipients: Sequence[Mailbox]) -> list[list[Mailbox]]:
        """``recipients`` in order, in groups each within RCPTMAX recipients and
        RCPTDOMAINMAX distinct domains: one transaction each (RFC 9422 §4.2). The
        domains are bounded per session too (:meth:`admit`, §4.3): a group never
        has more than the session may."""
        groups: list[list[Mailbox]] = []
        group: list[Mailbox] = []
        domains: set[str] = set()
        for recipient in recipients:
            domain = _domain_of(recipient)
            full = self.rcpt_max is not None and len(group) >= self.rcpt_max
            too_many_domains = (
                self.rcpt_domain_max is not None
                and domain not in domains
                and len(domains) >= self.rcpt_domain_max
            )
            if group and (full or too_many_domains):
                groups.append(group)
                group, domains = [], set()
            group.append(recipient)
            domains.add(domain)
        if group:
            groups.append(group)
        return groups


def _domain_of(recipient: Mailbox) -> str:
    """The domain RCPTDOMAINMAX counts a recipient under, one for every spelling: case
    aside (RFC 5321 §2.4), and a U-label and its A-label are one name (RFC 5890
    §2.3.2.1), however the client sends it."""
    return recipient.ascii_domain.lower()


def _arguments(facts: ServerFacts) -> str | None:
    """``RCPTMAX=max_recipients``; no LIMITS line for a limit RFC 9422 §4.2 cannot
    write (1 to 999999), as a bare ``LIMITS`` would be a syntax error (§3)."""
    rcpt_max = facts.max_recipients
    if not 0 < rcpt_max < 10**_MAX_DIGITS:
        return None
    return f"RCPTMAX={rcpt_max}"


LIMITS: Final = Extension(
    "LIMITS",
    "RFC 9422",
    "the limits the server applies, told up front: RCPTMAX",
    option="limits",
    arguments=_arguments,
)
