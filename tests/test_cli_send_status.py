"""``python -m smtpcore send``'s exit status tells failures apart as sendmail's does
(``sysexits.h``): 75 to try again, 67 every refused recipient unknown, 69 refused for
good otherwise; a script no longer has to read the output to know whether to retry."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import smtpcore.__main__ as cli
from peers import free_port
from smtpcore.server.sendstatus import EX_NOUSER, EX_TEMPFAIL, EX_UNAVAILABLE
from smtpcore.testing import ScriptedServer, script

#: The answer to RCPT for each local part; the server offers no PIPELINING, so that
#: each command is answered before the next goes.
RCPT_ANSWERS = {
    b"ok": b"250 2.1.5 ok\r\n",
    b"busy": b"450 4.2.1 mailbox busy\r\n",
    b"nouser": b"550 5.1.1 no such user\r\n",
    b"policy": b"550 5.7.1 relaying denied\r\n",
}


@contextmanager
def rcpt_server() -> Iterator[int]:
    """One SMTP session on 127.0.0.1 whose ``RCPT`` answers are by local part
    (:data:`RCPT_ANSWERS`), every message taken, until QUIT."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener, listener.accept()[0] as conn, conn.makefile("rb") as lines:
            conn.settimeout(10)
            conn.sendall(b"220 mx.test ESMTP\r\n")
            in_data = False
            for line in lines:
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"RCPT":
                    local = line.split(b"<", 1)[1].split(b"@", 1)[0]
                    conn.sendall(RCPT_ANSWERS[local])
                elif verb == b"DATA":
                    in_data = True
                    conn.sendall(b"354 go\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 mx.test\r\n")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        thread.join(10)


@pytest.mark.parametrize(
    ("locals_", "status"),
    [
        (["ok"], 0),
        (["busy"], EX_TEMPFAIL),
        (["nouser"], EX_NOUSER),
        (["policy"], EX_UNAVAILABLE),
        (["ok", "busy"], EX_TEMPFAIL),
        (["ok", "nouser"], EX_NOUSER),
        (["ok", "policy"], EX_UNAVAILABLE),
        (["nouser", "policy"], EX_UNAVAILABLE),
        (["nouser", "busy"], EX_TEMPFAIL),
    ],
)
def test_send_exits_with_what_a_script_needs_to_retry_or_give_up(
    locals_: list[str], status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """send exited 1 for every failure: a script could not tell a 4xx, which a retry may
    get past, from a 5xx, which it will not. A recipient refused for now makes the whole
    status 75 whatever the others' fates; else 67 when every refusal is 5.1.1."""
    rcpts = [x for local in locals_ for x in ("--to", f"{local}@pqr.example")]
    with rcpt_server() as port:
        got = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{port}", "--helo", "client.abc.example"),
                *("--from", "a@abc.example", *rcpts),
            ]
        )
    assert got == status, capsys.readouterr().out


def test_send_exits_75_when_the_server_cannot_be_reached(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A connection refused is a failure for now (Postfix defers it): 75, not 1."""
    argv = ["send", "--server", f"127.0.0.1:{free_port()}", "--helo", "client.abc.example"]
    assert cli.main([*argv, "--from", "a@abc.example", "--to", "b@pqr.example"]) == EX_TEMPFAIL
    assert "cannot connect to 127.0.0.1:" in capsys.readouterr().out


#: The EHLO reply of a server without STARTTLS, and what ``send`` is told to do with
#: it: require STARTTLS, or log in (which needs TLS to show the password).
NO_TLS: dict[str, tuple[str, list[str]]] = {
    "--starttls": ("S: 250 mx.test\n", ["--starttls"]),
    "--user": (
        "S: 250-mx.test\nS: 250 AUTH PLAIN\n",
        ["--user", "u", "--password", "p"],
    ),
}


@pytest.mark.parametrize("case", list(NO_TLS))
def test_send_exits_75_when_the_tls_it_needs_is_not_offered(
    case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that offers no STARTTLS is deferred by Postfix whether TLS was required
    or a login needed it: the TLS may be mended. ``--starttls`` gave 75, but ``--user``
    gave 69 (the client's ``538 5.7.11``, as if refused for good); both give 75."""
    ehlo, options = NO_TLS[case]
    steps = script("S: 220 mx.test ESMTP\nC~ EHLO .+\n" + ehlo + "C: QUIT\n-- expect close")
    with ScriptedServer(steps) as server:
        got = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{server.port}", "--helo", "client.abc.example"),
                *("--from", "a@abc.example", "--to", "b@pqr.example", *options),
            ]
        )
    assert got == EX_TEMPFAIL, capsys.readouterr().out
