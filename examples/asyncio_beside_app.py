"""An SMTP server in the event loop of an asyncio app that was there first.

The app here is a line-echo service; yours might be aiohttp or anything else
on asyncio. Both listen side by side in one loop, one task each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from smtpcore.asyncio import SMTPServer
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply


class Inbox(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        return None  # 250


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The existing app."""
    while line := await reader.readline():
        writer.write(line)
        await writer.drain()
    writer.close()


async def main(started: Callable[[int, int], Awaitable[None]] | None = None) -> Inbox:
    """Serve both until cancelled, or until ``started(app_port, smtp_port)`` returns."""
    inbox = Inbox()
    app = await asyncio.start_server(echo, "127.0.0.1", 0)
    async with app, SMTPServer(inbox, "127.0.0.1", 0, hostname="mx.example") as smtp:
        app_port = app.sockets[0].getsockname()[1]
        print(f"echo on port {app_port}, SMTP on port {smtp.port}")
        if started is None:
            await smtp.serve_forever()
        else:
            await started(app_port, smtp.port)
    return inbox


if __name__ == "__main__":
    asyncio.run(main())
