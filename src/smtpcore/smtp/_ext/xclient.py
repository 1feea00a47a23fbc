"""XCLIENT (Postfix): a trusted proxy names the client it speaks for.

Offered, with the attributes this server reads as its argument
(``XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT``), only to a
client the server trusts (``trusted_forwarder``); to any other the command is
unknown. It may come at any time outside a mail transaction, before EHLO and
right after another XCLIENT too: a proxy splits long attributes over several
commands, sent back to back (XCLIENT_README, "XCLIENT Command syntax" and its
note 1). The command is :class:`~smtpcore.smtp.Xclient`; the answer is the
greeting of the client it names, which becomes the session's client: ``220``
and the session starts again at EHLO, or ``554`` and no service (RFC 5321
§3.1). The attribute grammar is in ``smtp/_forwarding.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smtpcore._words import ascii_upper
from smtpcore.smtp._events import ForwardingCommand
from smtpcore.smtp._extension import TRUSTED_FORWARDER, Extension
from smtpcore.smtp._forwarding import XCLIENT_ATTRIBUTES

if TYPE_CHECKING:
    from smtpcore.smtp._extensions import ServerExtensions

__all__ = ["XCLIENT", "unannounced"]


def unannounced(offered: ServerExtensions, command: ForwardingCommand) -> str | None:
    """What a client must check before XCLIENT or XFORWARD: that the server announced
    every attribute it sends (the EHLO line lists them)."""
    announced = {ascii_upper(name) for name in offered.get(command.verb, ())}
    missing = [name for name in command.attributes if name not in announced]
    if missing:
        return f"the server did not announce {command.verb} {' '.join(missing)}"
    return None


XCLIENT: Final = Extension(
    "XCLIENT",
    "Postfix",
    "a trusted proxy names the client it speaks for; the session starts over",
    option="xclient",
    arguments=lambda facts: " ".join(attribute.name for attribute in XCLIENT_ATTRIBUTES),
    verbs=("XCLIENT",),
    requires=(TRUSTED_FORWARDER,),
    needs_ehlo=False,
    client_check=unannounced,
)
