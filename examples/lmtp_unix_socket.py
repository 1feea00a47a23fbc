"""LMTP on a Unix socket, the way Postfix hands mail to a delivery agent.

Point Postfix at it with ``mailbox_transport = lmtp:unix:/path/to/lmtp.sock``.
LMTP answers once per recipient after the message (RFC 2033 §4.2), so one
mailbox can be full while the others take the message.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from smtpcore.asyncio import SMTPClient, SMTPServer
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Rcpt, Reply, TransactionResult


class Mailboxes(Handler):
    def __init__(self) -> None:
        self.delivered: dict[str, bytes] = {}

    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        replies = []
        for recipient in envelope.recipients:  # one reply each, in order
            if recipient.mailbox.local_part == "full":
                replies.append(Reply(452, "Mailbox full", "4.2.2"))
            else:
                self.delivered[str(recipient.mailbox)] = envelope.content
                replies.append(Reply(250, "Delivered", "2.0.0"))
        return replies


async def main(path: Path) -> TransactionResult:
    async with (
        SMTPServer(Mailboxes(), unix_path=path, lmtp=True, hostname="lmtp.example"),
        SMTPClient.over_unix_socket(path, lmtp=True, hostname="mx.example") as lmtp,
    ):
        result = await lmtp.send_message(
            b"Subject: local delivery\r\n\r\nhello\r\n",
            "john@abc.example",
            ["brendon@pqr.example", "full@pqr.example"],
        )
    for recipient in result.recipients:
        print(recipient.recipient, recipient.delivery)  # 250 Delivered, 452 Mailbox full
    return result


if __name__ == "__main__":
    socket_path = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()) / "lmtp.sock"
    asyncio.run(main(socket_path))
