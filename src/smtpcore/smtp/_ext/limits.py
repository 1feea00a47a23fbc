"""LIMITS (RFC 9422): limits the server will apply in this session, told up front.

The server lists ``LIMITS RCPTMAX=n`` (its ``max_recipients``); a client
reads the registered limits (RFC 9422 §5: MAILMAX, RCPTMAX, RCPTDOMAINMAX)
and keeps under them, splitting a transaction with more recipients than
RCPTMAX into several (§5.2), and sending no more MAIL commands in a session
than MAILMAX (§5.1), the rest left for a new one. The extension brings no
command and no parameter.
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

# RFC 9422 §4: limit-name = 1*(ALPHA / DIGIT / "-" / "_"); limit-value = VCHAR but ";".
_NAME_VALUE: Final = re.compile(r"([A-Za-z0-9_-]+)(?:=([!-:<-~]+))?")


@dataclass(frozen=True, slots=True)
class Limits:
    """The registered limits a server announced; None where it announced none."""

    mail_max: int | None = None
    """MAILMAX: transactions in this session (RFC 9422 §5.1)."""
    rcpt_max: int | None = None
    """RCPTMAX: recipients in one transaction (RFC 9422 §5.2)."""
    rcpt_domain_max: int | None = None
    """RCPTDOMAINMAX: distinct recipient domains in one transaction (RFC 9422 §5.3)."""

    @classmethod
    def parse(cls, params: tuple[str, ...]) -> Limits:
        """Read the LIMITS parameters; malformed, unknown or zero ones are ignored
        (a client can only keep to limits it understands)."""
        found: dict[str, int] = {}
        for param in params:
            match = _NAME_VALUE.fullmatch(param)
            if match is None or match.group(2) is None:
                continue
            value = parse_number(match.group(2), max_digits=9)
            if value:
                found.setdefault(ascii_upper(match.group(1)), value)
        return cls(found.get("MAILMAX"), found.get("RCPTMAX"), found.get("RCPTDOMAINMAX"))

    def split(self, recipients: Sequence[Mailbox]) -> list[list[Mailbox]]:
        """``recipients`` in order, in groups each within RCPTMAX recipients and
        RCPTDOMAINMAX distinct domains: one transaction each (RFC 9422 §5.2, §5.3)."""
        groups: list[list[Mailbox]] = []
        group: list[Mailbox] = []
        domains: set[str] = set()
        for recipient in recipients:
            domain = recipient.domain.lower()
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


def _arguments(facts: ServerFacts) -> str:
    return f"RCPTMAX={facts.max_recipients}"


LIMITS: Final = Extension(
    "LIMITS",
    "RFC 9422",
    "the limits the server applies, told up front: RCPTMAX",
    option="limits",
    arguments=_arguments,
)
