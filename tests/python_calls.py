"""The Python calls a piece of code makes, for tests that hold a hot path to the calls
it needs (issue 17): a ``sys.setprofile`` counter, exact and deaf to the machine's load."""

from __future__ import annotations

import gc
import sys
from types import FrameType, TracebackType


class python_calls:  # used as a function: with python_calls() as calls
    """The names of the Python functions called in the ``with`` block, in order (the
    counter's own leaving of the block not among them).

    The garbage collector is off in the block: a collection that falls inside it runs
    callbacks that are not the code's (Hypothesis registers one in ``gc.callbacks``),
    which made the count depend on when the process last collected."""

    def __init__(self) -> None:
        self.called: list[str] = []
        self._collecting = False

    def _profile(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code is not _EXIT:
            self.called.append(frame.f_code.co_name)

    def __enter__(self) -> list[str]:
        self._collecting = gc.isenabled()
        gc.disable()
        sys.setprofile(self._profile)
        return self.called

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        sys.setprofile(None)
        if self._collecting:
            gc.enable()


_EXIT = python_calls.__exit__.__code__
