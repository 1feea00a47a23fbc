"""Telling a deadline's ``TimeoutError`` from one an application's own code raised.

Both come out of ``transport.within(seconds, call)``: the deadline's when the
server gave up waiting (an expected event, logged in one line), the call's own
when a hook's database client or socket timed out (its failure, logged with its
traceback and its text). The deadline raises :class:`DeadlinePassed` itself,
outside the call, so any other ``TimeoutError`` is the call's own: no mark, no
wrapper around the call (which would hide the hook's own code object from
trio's per-hook habits, ``smtpcore._trio_clock._CallHabits``).
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["DeadlinePassed", "seconds_text"]


class DeadlinePassed(TimeoutError):
    """The server's own deadline of ``seconds`` for a call passed: an expected event
    (a slow disk, a big maildrop), not the call's failure. It carries no text, as the
    plain ``TimeoutError()`` it replaces did: log lines name it ``TimeoutError``
    (``describe_error``, ``fault_text``), and the store-timeout line writes
    :attr:`seconds` itself."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds


def seconds_text(seconds: float) -> str:
    """``120s``, ``0.3s``, ``0.00001s``: a configured deadline as written, never in
    exponent form (``1e-05s``)."""
    text = format(Decimal(repr(float(seconds))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}s"
