"""The exit status of ``python -m smtpcore send``: what a script needs to tell apart.

The numbers are sendmail's, from ``sysexits.h``, as Postfix's ``sendmail(1)`` exits
with them too: a script or a program that hands mail to ``sendmail`` already knows
them. 75 (``EX_TEMPFAIL``) says "try again later", which is what a caller acts on;
69 (``EX_UNAVAILABLE``) and 67 (``EX_NOUSER``) say trying again will not help.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from smtpcore.smtp import Reply

__all__ = ["EX_NOUSER", "EX_TEMPFAIL", "EX_UNAVAILABLE", "no_such_user", "send_status"]

EX_NOUSER: Final = 67
"""Every recipient not accepted was refused for good as unknown (``5.1.1``, RFC 3463
§3.2: "Bad destination mailbox address"), as sendmail says ``550 5.1.1 User unknown``."""
EX_UNAVAILABLE: Final = 69
"""Some recipient not accepted was refused for good for another reason."""
EX_TEMPFAIL: Final = 75
"""Some recipient not accepted may yet be delivered by trying again: refused for now
(a 4xx), not reached (the connection refused, lost or timed out, no exchanger
answered), or whose reply to the end of the message never came (it may even have
been delivered: RFC 5321 §6.1)."""


class Fate(Protocol):
    """What ``send`` knows of one recipient, as far as its exit status goes."""

    @property
    def accepted(self) -> bool: ...

    @property
    def temporary(self) -> bool: ...

    @property
    def unknown(self) -> bool: ...

    @property
    def no_such_user(self) -> bool: ...


def no_such_user(reply: Reply | None) -> bool:
    """Whether ``reply`` refuses a recipient for good as an unknown mailbox: ``5.1.1``,
    its enhanced status, or, from a server that does not announce ENHANCEDSTATUSCODES,
    the first word of its text, as Postfix's client reads a status there too."""
    if reply is None or reply.code // 100 != 5:
        return False
    if reply.status is not None:
        return str(reply.status) == "5.1.1"
    words = reply.lines[0].split(None, 1) if reply.lines else []
    return bool(words) and words[0] == "5.1.1"


def send_status(fates: Sequence[Fate]) -> int:
    """0 when every recipient was accepted. Otherwise, whatever the others' fates (some
    accepted and some not is a failure: the caller must act on those not accepted):
    :data:`EX_TEMPFAIL` if trying again may still deliver to one of them, else
    :data:`EX_NOUSER` if every one was refused as unknown, else :data:`EX_UNAVAILABLE`.
    A retry matters more than a refusal, as sendmail's queue keeps a message while
    one recipient waits, whatever the others' bounces."""
    if not fates:
        return EX_UNAVAILABLE
    failed = [fate for fate in fates if not fate.accepted]
    if not failed:
        return 0
    if any(fate.temporary or fate.unknown for fate in failed):
        return EX_TEMPFAIL
    if all(fate.no_such_user for fate in failed):
        return EX_NOUSER
    return EX_UNAVAILABLE
