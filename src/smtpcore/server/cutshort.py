"""What a stop (``serve``'s SIGTERM, past its ``--stop-timeout``) that cuts a delivery
round short tells the operator of each recipient it leaves pending on disk, with no line
of its own yet: a deferred line, as any deferral's, saying why it is tried again at the
next start.

The round keeps a :class:`RoundProgress` for it: the exchanger each recipient's session
is at, and whether the end of its data (the final dot, or BDAT LAST) went out with its
reply not read. In that window the exchanger may have taken the message, and the next
start sends it again (RFC 5321 §6.1): the line says so, in Postfix's words.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from smtpcore.server.exchanger import Outcome
from smtpcore.server.queue import RecipientStatus

__all__ = ["CUT_IN_END_OF_DATA", "CUT_SHORT", "RoundProgress", "cut_short_outcome"]

CUT_SHORT: Final = "delivery cut short by shutdown"
"""The deferral of a recipient whose delivery the stop cut short: 4.3.0, the mail
system's own trouble (RFC 3463 §3.4), as for this server's other local errors."""

CUT_IN_END_OF_DATA: Final = (
    f"{CUT_SHORT} while sending end of data -- message may be sent more than once"
)
"""The deferral of a recipient whose transaction's end of data was sent and its reply
not read: the exchanger may have the message already (Postfix's wording)."""


class RoundProgress:
    """How far each remote recipient of one round has come, as the stop finds it: the
    exchanger its delivery is at (``none`` before the first: the lookup, or the wait for
    a session), and whether the end of its data is unanswered."""

    __slots__ = ("_end_unanswered", "_relay")

    def __init__(self) -> None:
        self._relay: dict[str, str] = {}
        self._end_unanswered: set[str] = set()

    def trying(self, addresses: Iterable[str], relay: str) -> None:
        """``addresses`` go to the exchanger ``relay`` now."""
        self._relay.update(dict.fromkeys(addresses, relay))

    def end_unanswered(self, addresses: Iterable[str]) -> None:
        """The end of the data for ``addresses`` went out; the stop came before its
        reply was read."""
        self._end_unanswered.update(addresses)

    def relay(self, address: str) -> str:
        return self._relay.get(address, "none")

    def may_have_been_sent(self, address: str) -> bool:
        return address in self._end_unanswered


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
    cut = CUT_IN_END_OF_DATA if progress.may_have_been_sent(address) else CUT_SHORT
    return Outcome(RecipientStatus.PENDING, "4.3.0", cut, progress.relay(address))
