"""What a stop (``serve``'s SIGTERM, past its ``--stop-timeout``) that cuts a delivery
round short tells the operator of each recipient it leaves pending on disk, with no line
of its own yet: a deferred line, as any deferral's, saying why it is tried again at the
next start.

The round keeps a :class:`RoundProgress` for it: the exchanger each recipient's session
is at.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from smtpcore.server.exchanger import Outcome
from smtpcore.server.queue import RecipientStatus

__all__ = ["CUT_SHORT", "RoundProgress", "cut_short_outcome"]

CUT_SHORT: Final = "delivery cut short by shutdown"
"""The deferral of a recipient whose delivery the stop cut short: 4.3.0, the mail
system's own trouble (RFC 3463 §3.4), as for this server's other local errors."""


class RoundProgress:
    """How far each remote recipient of one round has come, as the stop finds it: the
    exchanger its delivery is at (``none`` before the first: the lookup, or the wait for
    a session)."""

    __slots__ = ("_relay",)

    def __init__(self) -> None:
        self._relay: dict[str, str] = {}

    def trying(self, addresses: Iterable[str], relay: str) -> None:
        """``addresses`` go to the exchanger ``relay`` now."""
        self._relay.update(dict.fromkeys(addresses, relay))

    def relay(self, address: str) -> str:
        return self._relay.get(address, "none")


def cut_short_outcome(progress: RoundProgress, address: str, failure: Outcome | None) -> Outcome:
    """The line of ``address``, pending on disk as the stop left it. ``failure``: its
    refusal for good this round (a 5xx, or an expiry), logged only once its bounce is made
    (:meth:`RoundSettlement.finish_round
    <smtpcore.server.settlement.RoundSettlement.finish_round>`), which the stop kept from
    being made: the line quotes the refusal, or the operator could not tell why a
    recipient refused for good is tried again after the restart."""
    if failure is not None:
        detail = (
            f"{CUT_SHORT} before its bounce was made (failed: {failure.detail}); "
            "tried again at the next start"
        )
        return Outcome(RecipientStatus.PENDING, "4.3.0", detail, failure.relay)
    return Outcome(RecipientStatus.PENDING, "4.3.0", CUT_SHORT, progress.relay(address))
