"""A whole SMTP session over an in-memory pipe: no socket, no port, same code.

trio's ``memory_stream_pair()`` gives two connected streams; the server
serves one end and the client speaks over the other. Handy in tests, and
the same calls serve any ``trio.abc.Stream`` (a Unix socket, an SSLStream).
"""

from __future__ import annotations

import trio
import trio.testing

from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply
from smtpcore.trio import SMTPClient, SMTPServer


class Inbox(Handler):
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        self.messages.append(envelope.content)
        return None  # 250


async def main() -> Inbox:
    inbox = Inbox()
    server = SMTPServer(inbox, hostname="mx.example")  # listens nowhere
    server_end, client_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_end)
        async with SMTPClient.over_stream(client_end, hostname="client.example") as client:
            await client.send_message(
                b"Subject: piped\r\n\r\n.a line that starts with a dot\r\n",
                "john@abc.example",
                ["brendon@pqr.example"],
            )
    print(inbox.messages[0].decode())
    return inbox


if __name__ == "__main__":
    trio.run(main)
