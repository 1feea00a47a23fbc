"""Mail exchanger records and their order (RFC 5321 section 5.1, RFC 7505).

Everything here is a pure function of its arguments: the random source and
the clock are passed in, so that a test can replay any order it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from smtpcore.address import normalize_domain

__all__ = [
    "FailedExchangers",
    "MXRecord",
    "RandomSource",
    "canonical_host",
    "order_exchangers",
    "own_level",
]


def canonical_host(name: str) -> str:
    """Return the form under which two spellings of one DNS name compare equal.

    DNS compares ASCII names without regard to case and writes the root as a
    trailing dot (RFC 1035 sections 2.3.3 and 3.1); internationalised names
    compare as A-labels (RFC 5890). An ASCII name is not held to host-name
    syntax, since DNS names are not (RFC 2181 section 11): an exchanger
    called ``mx_1.example`` is unusual, not malformed. Raises ``ValueError``
    for what cannot be a domain name at all.
    """
    text = name[:-1] if name.endswith(".") else name
    if not text.isascii():
        return normalize_domain(text)
    labels = text.split(".")
    if (
        len(text) > 253
        or any(not 0 < len(label) < 64 for label in labels)
        or not all(c.isprintable() and not c.isspace() for c in text)
        or text.startswith("[")
    ):
        raise ValueError(f"not a domain name: {name!r}")
    return text.lower()


class RandomSource(Protocol):
    """What ``order_exchangers`` needs from a random number generator.

    ``random.Random`` and ``random.SystemRandom`` fit; so does any object with
    a ``randrange(n)`` that returns an integer in ``range(n)``.
    """

    def randrange(self, stop: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class MXRecord:
    """One MX resource record: a preference and an exchange host (RFC 1035 section 3.3.9).

    ``exchange`` is kept in canonical form (lowercase A-labels, no trailing
    dot). The root name ``"."`` is stored as ``""``: such a record is a null
    MX (RFC 7505 section 3), which names no host at all.
    """

    preference: int
    exchange: str

    def __post_init__(self) -> None:
        if isinstance(self.preference, bool) or not isinstance(self.preference, int):
            raise TypeError("MX preference must be an int")
        if not 0 <= self.preference <= 0xFFFF:
            raise ValueError(f"MX preference {self.preference} is not a 16-bit value")
        if self.exchange in ("", "."):
            object.__setattr__(self, "exchange", "")
            return
        object.__setattr__(self, "exchange", canonical_host(self.exchange))

    @property
    def is_null(self) -> bool:
        """True for a record whose exchange is the root: it names no host (RFC 7505)."""
        return self.exchange == ""


def _failure_key(host: str) -> str:
    """What a failure is remembered under: a host's canonical name, or an address
    literal's text (``[192.0.2.1]``, a recipient's ``user@[...]``), which has none."""
    if host.startswith("[") and host.endswith("]"):
        return host.lower()
    return canonical_host(host)


class FailedExchangers:
    """A memory of exchangers that failed recently, each forgotten after ``duration`` seconds.

    ``order_exchangers`` moves a remembered host to the back of its
    preference level, so that a queue retrying soon after a failure tries
    the others first, without ever skipping a host (as Twisted's
    ``MXCalculator.markBad`` does, for one hour by default). The clock is
    injected (for example ``time.monotonic``) because routing may not read
    time itself.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        duration: float = 3600.0,
        max_entries: int = 10_000,
    ) -> None:
        if duration <= 0:
            raise ValueError("duration must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._clock = clock
        self._duration = duration
        self._max_entries = max_entries
        self._until: dict[str, float] = {}

    def mark_bad(self, host: str) -> None:
        """Remember that ``host`` failed just now (a connection or a 4xx greeting)."""
        now = self._clock()
        self._expire(now)
        key = _failure_key(host)
        self._until.pop(key, None)
        if len(self._until) >= self._max_entries:
            # Forget the entry closest to expiry: dicts keep insertion order,
            # and every entry lasts the same duration.
            del self._until[next(iter(self._until))]
        self._until[key] = now + self._duration

    def mark_good(self, host: str) -> None:
        """Forget a failure of ``host``: it has just accepted a connection."""
        self._until.pop(_failure_key(host), None)

    def is_bad(self, host: str) -> bool:
        """True while a failure of ``host`` is remembered."""
        key = _failure_key(host)
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]
            return False
        return True

    def __len__(self) -> int:
        self._expire(self._clock())
        return len(self._until)

    def _expire(self, now: float) -> None:
        for key in [key for key, until in self._until.items() if now >= until]:
            del self._until[key]


def _shuffle(items: list[MXRecord], rng: RandomSource) -> None:
    # Fisher-Yates, with the index folded into range so that even a broken
    # source yields a permutation.
    for i in range(len(items) - 1, 0, -1):
        j = rng.randrange(i + 1) % (i + 1)
        items[i], items[j] = items[j], items[i]


def own_level(records: Iterable[MXRecord], local_names: Iterable[str]) -> int | None:
    """The most preferred level at which one of ``local_names`` (this host) is listed,
    or None: where ``order_exchangers`` cuts the list. Its caller needs the level too,
    to tell "this host is the best exchanger" from "the better ones are unusable now"."""
    own = {canonical_host(name) for name in local_names}
    levels = [r.preference for r in records if not r.is_null and r.exchange in own]
    return min(levels, default=None)


def order_exchangers(
    records: Iterable[MXRecord],
    rng: RandomSource,
    *,
    local_names: Iterable[str] = (),
    failures: FailedExchangers | None = None,
) -> list[MXRecord]:
    """Return the exchangers to try, most preferred first (RFC 5321 section 5.1).

    - Lower preference values come first; exchangers of equal preference are
      shuffled with ``rng``, which spreads the load as section 5.1 requires.
    - Null MX records (RFC 7505) name no host and are left out; deciding that
      a domain accepts no mail is the caller's job (see
      ``resolve_exchangers``).
    - A host listed twice keeps only its most preferred record.
    - If one of ``local_names`` (this host's own names) is listed, it and
      every exchanger of equal or higher preference value are dropped: mail
      may only move towards more preferred exchangers, or it would loop.
      An empty result from non-empty input therefore means "this host is
      the best exchanger", which is a routing loop unless the domain is
      local.
    - Hosts that ``failures`` remembers go to the back of their level, still
      shuffled among themselves.
    """
    records = tuple(records)
    best: dict[str, MXRecord] = {}
    for record in records:
        if record.is_null:
            continue
        known = best.get(record.exchange)
        if known is None or record.preference < known.preference:
            best[record.exchange] = record
    cutoff = own_level(records, local_names)
    if cutoff is not None:
        best = {host: r for host, r in best.items() if r.preference < cutoff}
    levels: dict[int, list[MXRecord]] = {}
    for record in best.values():
        levels.setdefault(record.preference, []).append(record)
    ordered: list[MXRecord] = []
    for preference in sorted(levels):
        level = levels[preference]
        _shuffle(level, rng)
        if failures is not None:
            # sorted() is stable: the shuffled order survives inside each half.
            level.sort(key=lambda record: failures.is_bad(record.exchange))
        ordered.extend(level)
    return ordered
