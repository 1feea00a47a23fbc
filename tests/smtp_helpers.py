"""Driving an SMTP server machine in tests, answering like a permissive application.

The driver and the application are :mod:`smtpcore.testing`'s; what is left
here is shorthand for the suite's own tables.
"""

from __future__ import annotations

import re

from smtpcore.smtp import Event, MessageData, Reply, ServerConnection
from smtpcore.testing import run_server as run

__all__ = ["EHLO", "ENVELOPE", "codes", "content_of", "greeted", "run"]

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def greeted(**options: object) -> ServerConnection:
    conn = ServerConnection("mx.pqr.example", **options)  # type: ignore[arg-type]  # test options
    conn.send(Reply(220, "mx.pqr.example ESMTP"))
    return conn


def codes(output: bytes) -> list[str]:
    """The final line of each reply in ``output``, as 'code status'."""
    result = []
    for line in output.decode().split("\r\n"):
        if len(line) == 3 or (len(line) > 3 and line[3] == " "):
            first = line[4:].split(" ", 1)[0]
            result.append(f"{line[:3]} {first}" if _STATUS.fullmatch(first) else line[:3])
    return result


def content_of(events: list[Event]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, MessageData))


EHLO = b"EHLO client.abc.example\r\n"
ENVELOPE = EHLO + b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<brendon@pqr.example>\r\n"
