"""An SMTP server on trio, started in a nursery, that keeps each message in a list.

``nursery.start(serve, ...)`` returns once the server listens; cancelling
the nursery shuts it down gracefully.
"""

from __future__ import annotations

import trio

from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply
from smtpcore.trio import SMTPClient, SMTPServer, serve


class Inbox(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        if command.recipient.domain != "pqr.example":
            return Reply(550, "Not a domain of ours", "5.7.1")
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        return None  # 250


async def main() -> Inbox:
    inbox = Inbox()
    async with trio.open_nursery() as nursery:
        server: SMTPServer = await nursery.start(serve, inbox, "127.0.0.1", 0)
        print(f"SMTP on port {server.port}")
        async with SMTPClient("127.0.0.1", server.port, hostname="client.example") as client:
            result = await client.send_message(
                b"Subject: hello\r\n\r\nfrom trio\r\n",
                "john@abc.example",
                ["brendon@pqr.example", "someone@elsewhere.example"],
            )
        print("refused:", [str(refusal.recipient) for refusal in result.refused])
        nursery.cancel_scope.cancel()  # stops the server
    return inbox


if __name__ == "__main__":
    trio.run(main)
