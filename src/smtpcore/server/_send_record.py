"""Where ``send`` keeps each recipient's fate as soon as it is known, and which
exchanger each is being tried at.

Apart from the sessions that add to it and from the printing that reads it: a
Ctrl-C can stop ``send`` between any two steps, and what it knows then must be
printable whole, with no fate an earlier exchanger gave passed off as the last word.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from smtpcore.server._send_fates import _Fate

__all__ = ["_Record"]


class _Record:
    """Each recipient's fate as soon as it is known, shared by the steps of ``send``,
    by the recipient's place in the order the fates are printed; a later fate replaces
    an earlier one (the next exchanger's, after a refusal for now). Added as each
    transaction (each LIMITS batch, RFC 9422) ends, before QUIT, and on a Ctrl-C with
    what the interrupted transaction told: whenever the user stops ``send``, every fate
    known so far can be printed."""

    def __init__(self) -> None:
        self._fates: dict[int, _Fate] = {}
        self._trying: dict[int, str] = {}
        """The exchanger each recipient is being tried at now, until it has a fate there."""

    def add(self, place: int, fate: _Fate) -> None:
        self._fates[place] = fate
        self._trying.pop(place, None)

    def trying(self, places: Iterable[int], where: str) -> None:
        """``places`` are being tried at the exchanger ``where`` now."""
        for place in places:
            self._trying[place] = where

    def fates_when_interrupted(self) -> list[_Fate]:
        """:meth:`fates`, each one an earlier exchanger gave while a later one was being
        tried saying so: that refusal for now was not the last word, and the user must
        not read it as the recipient's fate (the next exchanger may have taken it)."""
        fates = []
        for place in sorted(self._fates):
            fate = self._fates[place]
            where = self._trying.get(place)
            if where is not None:
                text = f"{fate.text}; interrupted while {where} was being tried"
                fate = replace(fate, text=text)
            fates.append(fate)
        return fates

    def fate(self, place: int) -> _Fate | None:
        return self._fates.get(place)

    def fates(self) -> list[_Fate]:
        return [self._fates[place] for place in sorted(self._fates)]
