"""An SMTP server in plain blocking sockets and threads, around the sans-I/O machine.

    python examples/threaded_server.py 2525

It accepts mail for @pqr.example and prints each message. It is the
embedder's tutorial in docs/tutorials/embedder.rst, and a test runs it.
"""

from __future__ import annotations

import socket
import sys
import threading

from smtpcore import NEED_DATA, PAUSED, RemoteProtocolError
from smtpcore.smtp import (
    BadCommand,
    ConnectionClosed,
    Data,
    EndOfMessage,
    Event,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    RejectedMessage,
    Reply,
    ServerConnection,
)


def answer(event: Event, envelope: dict[str, object]) -> Reply | None:
    """The application: what to say to each event."""
    if isinstance(event, BadCommand | RejectedMessage):
        return event.reply
    if isinstance(event, Mail):
        envelope.update(sender=event.sender, recipients=[], content=[])
        return Reply(250, "OK")
    if isinstance(event, Rcpt):
        if event.recipient.ascii_domain != "pqr.example":
            return Reply(550, "Relay access denied", "5.7.1")
        envelope["recipients"].append(event.recipient)  # type: ignore[attr-defined]  # a list
        return Reply(250, "OK")
    if isinstance(event, Data):
        return Reply(354, "End data with <CR><LF>.<CR><LF>")
    if isinstance(event, MessageData):
        envelope["content"].append(event.data)  # type: ignore[attr-defined]  # a list
        return None
    if isinstance(event, EndOfMessage):
        print(envelope["sender"], "->", envelope["recipients"])
        print(b"".join(envelope["content"]).decode(errors="replace"))  # type: ignore[arg-type]  # bytes
        return Reply(250, "Queued")
    if isinstance(event, Quit):
        return Reply(221, "Bye")
    return Reply(250, "OK")


def serve_client(sock: socket.socket) -> None:
    conn = ServerConnection("mx.pqr.example")
    envelope: dict[str, object] = {}
    with sock:
        sock.sendall(conn.send(Reply(220, "mx.pqr.example ESMTP")))
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                if exc.reply_hint is not None:
                    sock.sendall(conn.send(exc.reply_hint))
                return
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif event is PAUSED:
                raise AssertionError("every event is answered before the next one")
            elif isinstance(event, ConnectionClosed):
                return
            else:
                reply = answer(event, envelope)
                if reply is not None:
                    sock.sendall(conn.send(reply))
                if conn.state.name == "CLOSED":
                    return


def main(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as listener:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=serve_client, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2525)
