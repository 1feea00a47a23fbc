"""How long a message waits after a failed round: Postfix's backoff, in one place for
the delivery worker that waits and the configuration that sets its bounds."""

from __future__ import annotations

from typing import Final

from smtpcore.routing import RandomSource

__all__ = ["MAX_BACKOFF", "MIN_BACKOFF", "backoff"]

MIN_BACKOFF: Final = 300.0
"""The wait before the first retry by default (Postfix's ``minimal_backoff_time``)."""
MAX_BACKOFF: Final = 4000.0
"""The longest wait between two attempts by default (Postfix's ``maximal_backoff_time``),
unless ``retry_after`` itself is longer."""


def backoff(
    retry_after: float,
    attempts: int,
    *,
    cap: float = MAX_BACKOFF,
    rng: RandomSource | None = None,
) -> float:
    """Seconds to wait after the ``attempts``-th failed round.

    ``retry_after``, doubling each round, up to ``cap`` (or ``retry_after``
    when that is longer), as Postfix's ``minimal_backoff_time`` and
    ``maximal_backoff_time``. With ``rng``, the wait is drawn between half
    that and all of it, never below ``retry_after``: messages deferred
    together by one outage do not all come back in the same second.
    """
    ceiling = max(retry_after, cap)
    # 64 doublings take even a nanosecond past 500 years, beyond any cap; counting every
    # round would overflow 2.0 ** n once a message has failed 1025 of them.
    doublings = min(max(attempts - 1, 0), 64)
    wait = min(retry_after * 2.0**doublings, ceiling)
    if rng is None:
        return wait
    low = max(retry_after, wait / 2)
    steps = int((wait - low) * 1000)
    return low + (rng.randrange(steps + 1) / 1000 if steps > 0 else 0.0)
