"""A trio listener out of descriptors rests as an asyncio one does: one second and one
line a pass. It rested a tenth of a second and logged a warning each time, ten lines a
second a listener (about 95 MB of log a day), while asyncio logged one."""

from __future__ import annotations

import errno
import logging

import pytest
import trio
import trio.testing

from smtpcore._driver._accept_rest import ACCEPT_REST
from smtpcore.handler import Handler
from smtpcore.trio import SMTPServer


class _OutOfDescriptors:
    """A listener whose accept fails as a process out of descriptors does, ``times``
    times, then as a closed one does (which ends the accept loop)."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.tried_at: list[float] = []

    async def accept(self) -> trio.SocketStream:
        self.tried_at.append(trio.current_time())
        if not self.left:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.left -= 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_a_trio_listener_out_of_descriptors_rests_a_second_and_logs_once_a_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = SMTPServer(Handler(), host="127.0.0.1", port=0, hostname="mx.test")
    listener = _OutOfDescriptors(3)

    async def main() -> None:
        with pytest.raises(OSError, match="Bad file descriptor"):
            await server._accept_loop(listener)  # type: ignore[arg-type]  # accept() alone

    with caplog.at_level(logging.DEBUG, logger="smtpcore"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    waits = [b - a for a, b in zip(listener.tried_at, listener.tried_at[1:], strict=False)]
    assert len(waits) == 3 and all(wait >= ACCEPT_REST for wait in waits), waits
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert (
        lines
        == [
            (
                logging.ERROR,
                "cannot accept connections ([Errno 24] Too many open files); "
                f"trying again in {ACCEPT_REST} s",
            )
        ]
        * 3
    )
