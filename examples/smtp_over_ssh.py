"""SMTP through SSH direct-tcpip channels (asyncssh), with a transport of your own:
``asyncio.run(main())`` sends a message through one on loopback."""

from typing import Any

import asyncssh

from smtpcore.asyncio import SMTPClient, SMTPServer
from smtpcore.handler import Envelope, Handler, Session
from smtpcore.smtp import Rcpt, Reply


class ChannelTransport:  # a smtpcore.transport.Transport over an SSH channel
    peer_address = local_address = tls = None

    def __init__(self, reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]):
        self.reader, self.writer = reader, writer

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.reader.read(max_bytes)

    async def send_all(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def start_tls(self, context: object, **options: object) -> None:
        raise ConnectionRefusedError("SSH encrypts the channel already: no STARTTLS")

    async def aclose(self) -> None:
        self.writer.close()


class Inbox(Handler):
    async def handle_rcpt(self, session: Session, envelope: Envelope, command: Rcpt) -> Reply:
        return Reply(250, "OK")  # and every message is accepted (Handler's default)


class Gateway(asyncssh.SSHServer):
    smtp = SMTPServer(Inbox(), hostname="mx.example")  # serves channels, listens nowhere

    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this example listens on loopback only

    def connection_requested(self, *where: Any) -> Any:
        return lambda r, w: self.smtp.serve_transport(ChannelTransport(r, w))


async def main() -> str:
    key = asyncssh.generate_private_key("ssh-ed25519")
    ssh = await asyncssh.create_server(Gateway, "127.0.0.1", 0, server_host_keys=[key])
    async with ssh, asyncssh.connect("127.0.0.1", ssh.get_port(), known_hosts=None) as conn:
        channel = ChannelTransport(*await conn.open_connection("mx.example", 25))
        async with SMTPClient.over_transport(channel, hostname="client.example") as client:
            message = b"Subject: hi\r\n\r\nhello over SSH\r\n"
            result = await client.send_message(message, "a@abc.example", ["b@pqr.example"])
    return str(result.end_replies[0])
