"""Driving an SMTP server machine in tests, answering like a permissive application."""

from __future__ import annotations

import re

from smtpcore import NEED_DATA, PAUSED
from smtpcore.smtp import (
    BadCommand,
    Bdat,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Help,
    MessageData,
    Quit,
    RejectedMessage,
    Reply,
    ServerConnection,
    StartTls,
)

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def greeted(**options: object) -> ServerConnection:
    conn = ServerConnection("mx.pqr.example", **options)  # type: ignore[arg-type]  # test options
    conn.send(Reply(220, "mx.pqr.example ESMTP"))
    return conn


def default_answer(conn: ServerConnection, event: Event) -> Reply:
    if isinstance(event, BadCommand | RejectedMessage):
        return event.reply
    if isinstance(event, Data):
        return Reply(354, "End data with <CR><LF>.<CR><LF>")
    if isinstance(event, Quit):
        return Reply(221, "Bye")
    if isinstance(event, StartTls):
        return Reply(220, "Ready to start TLS")
    if isinstance(event, Help):
        return Reply(214, "See RFC 5321")
    if isinstance(event, EndOfMessage):
        return Reply(250, "Queued")
    return Reply(250, "OK")


def run(conn: ServerConnection, data: bytes = b"") -> tuple[list[Event], bytes]:
    """Feed ``data``, answer every event by default, and return (events, output)."""
    if data:
        conn.receive_data(data)
    events: list[Event] = []
    out = b""
    while True:
        event = conn.next_event()
        if event is PAUSED and isinstance(conn.pending, Bdat):
            # A BDAT chunk is answered once its octets are in (RFC 3030 §2).
            out += conn.send(Reply(250, "Chunk accepted"))
            continue
        if event is NEED_DATA or event is PAUSED:
            return events, out
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events, out
        if isinstance(event, Bdat | MessageData):
            continue
        if isinstance(event, EndOfMessage) and conn.lmtp:
            for _ in range(conn.accepted_recipients):
                out += conn.send(Reply(250, "Delivered"))
            continue
        out += conn.send(default_answer(conn, event))


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
