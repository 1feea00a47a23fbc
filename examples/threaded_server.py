"""An SMTP server in blocking sockets and threads around the sans-I/O machine.

``python examples/threaded_server.py 2525`` accepts mail for @pqr.example and
prints each message (docs/tutorials/embedder.rst walks through it).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

from smtpcore import NEED_DATA, PAUSED, RemoteProtocolError, smtp
from smtpcore.smtp import Reply


def answer(event: smtp.Event, content: list[bytes]) -> Reply | None:
    """The application: the reply to an event, or None when it takes none."""
    if isinstance(event, smtp.BadCommand | smtp.RejectedMessage):
        return event.reply
    if isinstance(event, smtp.Rcpt) and event.recipient.ascii_domain != "pqr.example":
        return Reply(550, "Relay access denied", "5.7.1")
    if isinstance(event, smtp.Mail):
        content.clear()
    if isinstance(event, smtp.MessageData):
        content.append(event.data)
        return None
    if isinstance(event, smtp.EndOfMessage):
        print(b"".join(content).decode(errors="replace"))
        return Reply(250, "Queued")
    if isinstance(event, smtp.Data):
        return Reply(354, "End data with <CR><LF>.<CR><LF>")
    return Reply(221, "Bye") if isinstance(event, smtp.Quit) else Reply(250, "OK")


def serve_client(sock: socket.socket) -> None:
    """One session. Every event is answered at once except ``Bdat`` (RFC 3030): its
    octets come first, then ``PAUSED`` (or, for the last chunk, ``EndOfMessage``)."""
    conn = smtp.ServerConnection("mx.pqr.example")
    content: list[bytes] = []
    with sock, contextlib.suppress(OSError):
        sock.sendall(conn.send(Reply(220, "mx.pqr.example ESMTP")))
        while conn.state is not smtp.State.CLOSED:
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                if exc.reply_hint is not None:
                    sock.sendall(conn.send(exc.reply_hint))
                return
            reply = None
            if event is NEED_DATA:
                conn.receive_data(sock.recv(65536))
            elif event is PAUSED and isinstance(conn.pending, smtp.Bdat):
                reply = Reply(250, f"{conn.pending.size} octets received")
            elif event is not PAUSED and not isinstance(event, smtp.Bdat | smtp.ConnectionClosed):
                reply = answer(event, content)
            if reply is not None:
                sock.sendall(conn.send(reply))


if __name__ == "__main__":
    with socket.create_server(("127.0.0.1", int(sys.argv[1]))) as listener:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=serve_client, args=(client,), daemon=True).start()
