"""What a stop (``serve``'s SIGTERM, past its ``--stop-timeout``) that cuts a delivery
round short tells the operator of each recipient it leaves pending on disk, with no line
of its own yet: a deferred line, as any deferral's, saying why it is tried again at the
next start.

The round keeps a :class:`RoundProgress` for it from its start, local stage included:
the recipients it is to deliver, those whose delivery began, where each is (the
exchanger its session is at, or ``local``), whether the end of its data (the final
dot, or BDAT LAST) went out with its reply not read, and the failures whose line the
bounce step wrote. In that window the exchanger may have taken the message, and the
next start sends it again (RFC 5321 §6.1): the line says so, in Postfix's words. The
lines are written once, for the whole round, wherever in it the stop lands
(:func:`cut_short_outcomes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from smtpcore.server.exchanger import Outcome, while_sending_end_of_data
from smtpcore.server.queue import QueueEntry, RecipientStatus

__all__ = [
    "CUT_IN_END_OF_DATA",
    "CUT_SHORT",
    "RoundProgress",
    "cut_short_outcome",
    "cut_short_outcomes",
]

CUT_SHORT: Final = "delivery cut short by shutdown"
"""The deferral of a recipient whose delivery the stop cut short: 4.3.0, the mail
system's own trouble (RFC 3463 §3.4), as for this server's other local errors."""

CUT_IN_END_OF_DATA: Final = while_sending_end_of_data(CUT_SHORT)
"""The deferral of a recipient whose transaction's end of data was sent and its reply
not read: the exchanger may have the message already (Postfix's wording)."""


class RoundProgress:
    """How far each recipient of one round has come, as the stop finds it: whether its
    delivery began (a local copy, or its destination's job: the lookup, the wait for a
    session, the session), where it is (``none`` before the first exchanger), whether the
    end of its data is unanswered, and whether its failure's line is written."""

    __slots__ = ("_bounced", "_copies_made", "_end_unanswered", "_planned", "_relay")

    def __init__(self) -> None:
        self._planned: dict[str, None] = {}
        """Each recipient the round is to deliver, begun or not, in the entry's order."""
        self._relay: dict[str, str] = {}
        """Each recipient whose delivery began, in that order, and where it is."""
        self._end_unanswered: set[str] = set()
        self._bounced: set[str] = set()
        self._copies_made: dict[str, list[str]] = {}
        """Per failed recipient, which copies of its bounce are made (``sender``...)."""

    def plan(self, addresses: Iterable[str]) -> None:
        """The round is to deliver ``addresses`` (before it begins any): a stop before
        it comes to one still gives it its line, as Postfix logs every recipient of a
        delivery it interrupts."""
        self._planned.update(dict.fromkeys(addresses))

    def begin(self, addresses: Iterable[str]) -> None:
        """The delivery of ``addresses`` begins, at no exchanger yet."""
        for address in addresses:
            self._relay.setdefault(address, "none")

    def trying(self, addresses: Iterable[str], relay: str) -> None:
        """``addresses`` go to ``relay`` now: an exchanger, or ``local``."""
        self._relay.update(dict.fromkeys(addresses, relay))

    def end_unanswered(self, addresses: Iterable[str]) -> None:
        """The end of the data for ``addresses`` went out; the stop came before its
        reply was read."""
        self._end_unanswered.update(addresses)

    def bounce_logged(self, address: str) -> None:
        """``address``'s failure has its line, written with its bounce: a stop after it
        (in the bounce's record) must not write another."""
        self._bounced.add(address)

    def bounce_copy_made(self, addresses: Iterable[str], label: str) -> None:
        """The ``label`` copy of the bounce has reported ``addresses``, and its records
        say so (it landed now and they did, or they were found): a stop before the
        bounce is recorded in the envelope does not report them in it again. A copy the
        disk would not record is not told: the next attempt may make it again."""
        for address in addresses:
            self._copies_made.setdefault(address, []).append(label)

    def copies_made(self, address: str) -> list[str]:
        return self._copies_made.get(address, [])

    @property
    def begun(self) -> list[str]:
        return list(self._relay)

    @property
    def planned(self) -> list[str]:
        return list(self._planned)

    def relay(self, address: str) -> str:
        return self._relay.get(address, "none")

    def may_have_been_sent(self, address: str) -> bool:
        return address in self._end_unanswered

    def has_bounce_line(self, address: str) -> bool:
        return address in self._bounced


def cut_short_outcomes(
    progress: RoundProgress,
    entry: QueueEntry,
    failed: Mapping[str, Outcome],
    deferred: Mapping[str, Outcome],
) -> dict[str, Outcome]:
    """The line of each recipient a stop leaves pending on disk with none of its own,
    once each: those whose delivery began (``progress``), then those the round had not
    come to yet (a later local copy, a destination waiting for its session or its
    place), that were neither recorded sent in ``entry`` nor logged ``deferred``, and
    those ``failed`` this round whose bounce step did not log them. A recipient the
    round was not to deliver (a catch-up round's others) has none."""
    recorded = {r.address for r in entry.recipients if not r.pending}
    left = dict.fromkeys([*progress.begun, *failed, *progress.planned])
    return {
        address: cut_short_outcome(progress, address, failed.get(address))
        for address in left
        if address not in recorded
        and address not in deferred
        and not progress.has_bounce_line(address)
    }


def cut_short_outcome(progress: RoundProgress, address: str, failure: Outcome | None) -> Outcome:
    """The line of ``address``, pending on disk as the stop left it. ``failure``: its
    refusal for good this round (a 5xx, or an expiry), logged only once its bounce is made
    (:meth:`RoundSettlement.finish_round
    <smtpcore.server.settlement.RoundSettlement.finish_round>`), which the stop kept from
    being made: the line quotes the refusal, or the operator could not tell why a
    recipient refused for good is tried again after the restart, and names the copies
    of the bounce made already (not made again: :mod:`smtpcore.server.bouncerecords`)."""
    if failure is not None:
        made = progress.copies_made(address)
        if not made:
            when = "before its bounce was made"
        elif len(made) == 1:
            when = f"after the {made[0]} copy of its bounce was made"
        else:
            when = f"after the {' and '.join(made)} copies of its bounce were made"
        detail = f"{CUT_SHORT} {when} (failed: {failure.detail}); tried again at the next start"
        return Outcome(RecipientStatus.PENDING, "4.3.0", detail, failure.relay)
    cut = CUT_IN_END_OF_DATA if progress.may_have_been_sent(address) else CUT_SHORT
    return Outcome(RecipientStatus.PENDING, "4.3.0", cut, progress.relay(address))
