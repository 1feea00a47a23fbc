"""A scripted SMTP session played through the server machine, for the CLI.

Nothing here touches the network: a client's bytes, pipelined the way a real
client sends them, go into a :class:`~smtpcore.smtp.ServerConnection`, a tiny
application answers each event, and both sides of the conversation are
printed as they would appear on the wire.
"""

from __future__ import annotations

from collections.abc import Callable

from smtpcore import NEED_DATA, PAUSED
from smtpcore.smtp import (
    BadCommand,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    MessageData,
    Quit,
    Rcpt,
    RejectedMessage,
    Reply,
    ServerConnection,
)

__all__ = ["play_scripted_session"]

LOCAL_USERS = {"brendon@pqr.example"}

CLIENT_WRITES = [
    b"EHLO mail.abc.example\r\n",
    # PIPELINING: the whole envelope in one write, DATA last (RFC 2920).
    b"MAIL FROM:<john@abc.example> SIZE=120\r\n"
    b"RCPT TO:<brendon@pqr.example>\r\n"
    b"RCPT TO:<nobody@pqr.example>\r\n"
    b"DATA\r\n",
    b"From: john@abc.example\r\nTo: brendon@pqr.example\r\nSubject: Hello\r\n\r\n"
    b"..a line that starts with a dot\r\n.\r\n",
    b"MAIL FROM:<john@abc.example>\r\nRCPT TO:<brendon@pqr.example>\r\nDATA\r\n",
    # An SMTP smuggling attempt: LF.LF is not the end of the message.
    b"Subject: innocent\r\n\r\nhello\n.\nMAIL FROM:<admin@pqr.example>\r\n.\r\n",
    b"QUIT\r\n",
]


def _answer(event: Event) -> Reply | None:
    if isinstance(event, BadCommand | RejectedMessage):
        return event.reply
    if isinstance(event, Rcpt):
        if str(event.recipient).lower() in LOCAL_USERS:
            return Reply(250, "OK")
        return Reply(550, "No such user here", "5.1.1")
    if isinstance(event, Data):
        return Reply(354, "End data with <CR><LF>.<CR><LF>")
    if isinstance(event, EndOfMessage):
        return Reply(250, "Queued")
    if isinstance(event, Quit):
        return Reply(221, "Bye")
    if isinstance(event, MessageData):
        return None
    return Reply(250, "OK")


def _show(prefix: str, data: bytes, say: Callable[[str], None]) -> None:
    for line in data.decode("utf-8", "replace").splitlines():
        say(f"{prefix} {line}")


def play_scripted_session(say: Callable[[str], None] = print) -> bool:
    """Play the script, print the transcript, return True if it went as expected."""
    conn = ServerConnection("mx.pqr.example")
    _show("S:", conn.send(Reply(220, "mx.pqr.example ESMTP smtpcore")), say)
    messages: list[bytes] = []
    content: list[bytes] = []
    for write in CLIENT_WRITES:
        _show("C:", write, say)
        conn.receive_data(write)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is PAUSED or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, MessageData):
                content.append(event.data)
            elif isinstance(event, EndOfMessage):
                messages.append(b"".join(content))
            if isinstance(event, EndOfMessage | RejectedMessage):
                content.clear()
            answer = _answer(event)
            if answer is not None:
                _show("S:", conn.send(answer), say)
    say("")
    say(f"{len(messages)} message accepted; the smuggling attempt was refused as a whole.")
    return len(messages) == 1 and messages[0].endswith(b".a line that starts with a dot\r\n")
