"""``python -m smtpcore send`` and ``fetch`` against a running ``serve``."""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import socket
import ssl
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

import smtpcore.__main__ as cli
from peers import ipv6_loopback_port, make_tls_files
from smtpcore.server.maildir import Maildir
from smtpcore.server.sendstatus import EX_NOUSER, EX_TEMPFAIL, EX_UNAVAILABLE
from test_cli_serve import serve

USERS = ["john@abc.example:john-pw", "mary@abc.example:mary-pw"]


def test_send_then_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(tmp_path / "abc", "abc.example", USERS) as abc:
        server = f"127.0.0.1:{abc.ports['submission']}"
        login = ["--user", "john@abc.example", "--password", "john-pw"]
        sent = cli.main(
            [
                *("send", "--server", server, "--from", "john@abc.example"),
                *("--to", "mary@abc.example", "--subject", "Grüße", "--body", "first\n.second"),
                *login,
            ]
        )
        out = capsys.readouterr().out
        assert sent == 0
        assert out.startswith("<mary@abc.example>: accepted by 127.0.0.1:")
        assert "250 2.0.0 Ok: queued as " in out
        refused = cli.main(
            [
                *("send", "--server", server, "--from", "john@abc.example"),
                *("--to", "mary@abc.example", "--to", "nobody@abc.example"),
                *login,
            ]
        )
        out = capsys.readouterr().out
        assert refused == EX_NOUSER
        assert "<nobody@abc.example>: refused by 127.0.0.1:" in out and "550 5.1.1" in out
        assert "<mary@abc.example>: accepted" in out
        unauthenticated = cli.main(
            ["send", "--server", server, "--from", "john@abc.example", "--to", "mary@abc.example"]
        )
        assert unauthenticated == EX_UNAVAILABLE and "530 5.7.0" in capsys.readouterr().out

        pop3 = f"127.0.0.1:{abc.ports['pop3']}"
        target = tmp_path / "fetched"
        fetched = cli.main(
            [
                *("fetch", "--server", pop3, "--user", "Mary@abc.example"),
                *("--password", "mary-pw", "--delete", "--to-maildir", str(target)),
            ]
        )
        out = capsys.readouterr().out
        assert fetched == 0
        lines = out.splitlines()
        assert lines[0].startswith("1: ") and "from <john@abc.example>" in lines[0]
        assert '"Grüße"' in lines[0]
        assert lines[-1].startswith("2 messages, ") and "deleted from the server" in lines[-1]
        stored = [p.read_bytes() for p in Maildir(target).messages()]
        assert len(stored) == 2 and b"\nfirst\n.second\n" in stored[0]
        assert abc.mailbox("mary@abc.example") == []
        wrong = cli.main(
            ["fetch", "--server", pop3, "--user", "mary@abc.example", "--password", "nope"]
        )
        assert wrong == 1 and "smtpcore fetch:" in capsys.readouterr().err


@pytest.mark.parametrize("null", ["", "<>"])
def test_send_from_the_null_sender(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], null: str
) -> None:
    """``--from '<>'`` (or ``''``) sends from the null reverse-path, as a bounce is
    (RFC 5321 §4.5.5): the mailbox gets ``Return-Path: <>``."""
    with serve(tmp_path / "abc", "abc.example", USERS) as abc:
        server = f"127.0.0.1:{abc.ports['smtp']}"
        argv = ["send", "--server", server, "--from", null, "--to", "mary@abc.example"]
        assert cli.main([*argv, "--no-starttls"]) == 0, capsys.readouterr()
        (stored,) = abc.mailbox("mary@abc.example")
    assert stored.startswith(b"Return-Path: <>")


def test_send_names_an_ipv6_server_in_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    """``refused by ::1:2587: cannot connect to ::1:2587``: which colon is the port's?
    The address is written as ``--server`` takes it, ``[::1]:2587``."""
    port = ipv6_loopback_port()  # nothing listens there
    argv = ["send", "--server", f"[::1]:{port}", "--from", "a@b.example", "--to", "c@d.example"]
    assert cli.main([*argv, "--no-starttls", "--helo", "client.b.example"]) == EX_TEMPFAIL
    out = capsys.readouterr().out
    where = f"[::1]:{port}"
    assert out.startswith(f"<c@d.example>: refused by {where}: cannot connect to {where}: ")


def test_send_from_stdin_by_mx_and_over_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = tmp_path / "zone"
    zone.write_text("pqr.example MX 10 mx.test\nmx.test A 127.0.0.1\n")  # the name certified
    tls = make_tls_files(tmp_path)
    options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    listeners = ("smtp", "submission", "smtps", "pop3", "pop3s")
    with serve(
        tmp_path / "pqr", "pqr.example", ["b@pqr.example:pw"], listeners=listeners, extra=options
    ) as pqr:
        message = b"From: john@abc.example\r\nSubject: by MX\r\n\r\nhello\r\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(message)))
        by_mx = cli.main(
            [
                *("send", "--from", "john@abc.example", "--to", "b@pqr.example", "-"),
                *("--resolver", f"static:{zone}", "--remote-port", str(pqr.ports["smtp"])),
                *("--starttls", "--cafile", str(tls.ca_file)),
            ]
        )
        out = capsys.readouterr().out
        assert by_mx == 0, out
        assert "accepted by mx.test[127.0.0.1]:" in out
        smtps = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{pqr.ports['smtps']}", "--tls", "--insecure"),
                *("--from", "b@pqr.example", "--to", "b@pqr.example"),
                *("--user", "b@pqr.example", "--password", "pw"),
            ]
        )
        assert smtps == 0, capsys.readouterr().out
        fetched = cli.main(
            [
                *("fetch", "--server", f"127.0.0.1:{pqr.ports['pop3s']}", "--tls"),
                *("--cafile", str(tls.ca_file), "--user", "b@pqr.example", "--password", "pw"),
            ]
        )
        out = capsys.readouterr().out
        assert fetched == 0 and out.splitlines()[-1].startswith("2 messages")
        assert "left on the server" in out
        # On the plain POP3 port STLS is used when offered, as send uses STARTTLS, so that
        # USER/PASS does not cross in the clear; --no-stls keeps the session plain.
        pop3 = ("fetch", "--server", f"127.0.0.1:{pqr.ports['pop3']}", "--auth", "user")
        login = ("--cafile", str(tls.ca_file), "--user", "b@pqr.example", "--password", "pw")
        assert cli.main([*pop3, *login]) == 0
        assert "in the clear" not in capsys.readouterr().err
        # Without TLS the password itself is refused before it is sent (RFC 2595 §2.2),
        # saying how to log in; --allow-plaintext-auth sends it, with a warning.
        assert cli.main([*pop3, *login, "--no-stls"]) == 1
        refused = capsys.readouterr().err
        assert (
            "smtpcore fetch: USER/PASS needs TLS and the session has none: use --stls or "
            "--tls, or --auth scram-sha-256|apop|cram-md5 where offered; "
            "--allow-plaintext-auth sends the password in the clear anyway"
        ) in refused
        anyway = ("--no-stls", "--allow-plaintext-auth")
        assert cli.main([*pop3, *login, *anyway]) == 0
        assert "in the clear (USER/PASS)" in capsys.readouterr().err
        plain = ("--auth", "plain", *anyway)
        assert cli.main([*pop3[:-2], *login, *plain]) == 1  # PLAIN is offered under TLS only
        assert "in the clear (AUTH PLAIN)" in capsys.readouterr().err
    first = email.message_from_bytes(pqr.mailbox("b@pqr.example")[0], policy=email.policy.default)
    assert "with ESMTPS" in str(first["Received"])


_BLOCK = (b"A" * 1022 + b"\r\n") * 64  # 64 KiB of message lines
_HEAD = b"From: <a@abc.example>\r\nSubject: big\r\n\r\n"


@contextlib.contextmanager
def _one_message_pop3(listed: int, blocks: int) -> Iterator[tuple[str, list[str]]]:
    """A POP3 server on loopback with one message of ``blocks`` times 64 KiB, whose
    LIST says it has ``listed`` octets; the commands it got, by verb."""
    commands: list[str] = []
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn, conn.makefile("rb") as lines:
                conn.sendall(b"+OK ready\r\n")
                for line in lines:
                    verb = (line.split() or [b""])[0].upper()
                    commands.append(verb.decode())
                    if verb == b"CAPA":
                        conn.sendall(b"+OK\r\nUSER\r\n.\r\n")
                    elif verb == b"LIST":
                        conn.sendall(b"+OK\r\n1 %d\r\n.\r\n" % listed)
                    elif verb == b"RETR":
                        conn.sendall(b"+OK\r\n" + _HEAD)
                        for _ in range(blocks):
                            conn.sendall(_BLOCK)
                        conn.sendall(b".\r\n")
                    else:
                        conn.sendall(b"+OK\r\n")
                    if verb == b"QUIT":
                        return

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", commands
    finally:
        listener.close()
        thread.join(10)


def _fetch(server: str, *options: str) -> int:
    login = ("--user", "u", "--password", "p", "--no-stls", "--auth", "user")
    return cli.main(["fetch", "--server", server, *login, "--allow-plaintext-auth", *options])


def test_fetch_refuses_a_message_far_larger_than_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server whose LIST said 100 octets and whose RETR ran on for megabytes filled
    memory (8 times the size) and then the Maildir. Past LIST's size, 10% and 64 KiB,
    the message is refused: nothing stored, nothing left in ``tmp/``, nothing deleted."""
    target = tmp_path / "fetched"
    with _one_message_pop3(listed=100, blocks=32) as (server, commands):
        assert _fetch(server, "--to-maildir", str(target), "--delete") == 1
    err = capsys.readouterr().err
    assert "smtpcore fetch: message 1 runs past 65646 octets, where LIST said 100" in err
    assert "DELE" not in commands and "QUIT" not in commands  # no UPDATE: nothing deleted
    assert Maildir(target).messages() == []
    assert list((target / "tmp").iterdir()) == []


def test_fetch_streams_a_large_message_into_the_maildir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An 8 MB message is written as it arrives and summed up from its header alone:
    fetch held it whole, and copies of it, about 8 times its size at its peak."""
    size = len(_HEAD) + 128 * len(_BLOCK)
    target = tmp_path / "fetched"
    with _one_message_pop3(listed=size, blocks=128) as (server, commands):
        tracemalloc.start()
        try:
            assert _fetch(server, "--to-maildir", str(target), "--delete") == 0
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 2_000_000, peak
    out = capsys.readouterr().out
    assert f'1: {size} octets, from <a@abc.example>: "big"' in out
    assert commands[-2:] == ["DELE", "QUIT"]  # deleted once stored and synced
    [stored] = Maildir(target).messages()
    assert stored.stat().st_size == size - (size - len(_HEAD)) // 1024 - 3  # LF line ends


def _listeners_on_one_port(*addresses: str) -> list[socket.socket]:
    """A listening socket on each of ``addresses``, all on one port (the exchangers of
    an MX list share ``--remote-port``). A port free on the first address may be
    taken on another: try again with a new one, as many times as it takes, bounded."""
    for _ in range(50):
        first = socket.create_server((addresses[0], 0))
        port = first.getsockname()[1]
        listeners = [first]
        try:
            listeners += [socket.create_server((address, port)) for address in addresses[1:]]
        except OSError:
            for listener in listeners:
                listener.close()
            continue
        return listeners
    raise AssertionError(f"no port free on all of {addresses}")


@contextlib.contextmanager
def _exchanger(
    listener: socket.socket,
    rcpt_reply: bytes,
    end_reply: bytes = b"250 2.0.0 queued\r\n",
    *,
    ehlo_reply: bytes = b"250 ok\r\n",
    mails: int | None = None,
) -> Iterator[list[bytes]]:
    """One SMTP session on ``listener`` that answers EHLO with ``ehlo_reply``, RCPT with
    ``rcpt_reply`` and takes messages, answering each end with ``end_reply`` (``b""``:
    the connection closed instead, the reply lost), and closes the connection at a
    ``MAIL`` past the first ``mails``; yields the lines it read, commands and
    content."""
    lines: list[bytes] = []

    def run() -> None:
        with (
            contextlib.suppress(OSError),  # the unused one's wake-up connection, reset
            listener,
            listener.accept()[0] as conn,
            conn.makefile("rb") as reader,
        ):
            conn.settimeout(10)
            conn.sendall(b"220 mx ready\r\n")
            in_data = False
            for line in reader:
                if in_data:
                    lines.append(line)
                    in_data = line != b".\r\n"
                    if not in_data:
                        if not end_reply:
                            return
                        conn.sendall(end_reply)
                    continue
                lines.append(line)
                verb = line[:4].upper()
                if verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                if verb == b"MAIL" and lines.count(b".\r\n") == mails:
                    return
                answer = {
                    b"EHLO": ehlo_reply,
                    b"RCPT": rcpt_reply,
                    b"DATA": b"354 go ahead\r\n",
                }.get(verb)
                in_data = verb == b"DATA"
                conn.sendall(answer or b"250 ok\r\n")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield lines
    finally:
        with contextlib.suppress(OSError):
            socket.create_connection(listener.getsockname()[:2], timeout=1).close()
        thread.join(5)


def _send_by_mx(
    tmp_path: Path,
    port: int,
    to: list[str],
    *,
    domain: str = "pqr.example",
    mx1: str = "127.0.0.2",
    mx2: str = "127.0.0.1",
    extra: list[str] | None = None,
) -> list[str]:
    """The argv of a ``send`` to ``to`` by MX on ``port``, without STARTTLS: a static
    zone in ``tmp_path`` gives ``domain`` mx1.pqr.example (MX 10) at ``mx1`` and
    mx2.pqr.example (MX 20) at ``mx2``."""
    zone = tmp_path / "zone"
    zone.write_text(
        f"{domain} MX 10 mx1.pqr.example\nmx1.pqr.example A {mx1}\n"
        f"{domain} MX 20 mx2.pqr.example\nmx2.pqr.example A {mx2}\n"
    )
    return [
        *("send", "--from", "john@abc.example"),
        *(option for address in to for option in ("--to", address)),
        *("--resolver", f"static:{zone}", "--remote-port", str(port), "--no-starttls"),
        *("--helo", "client.abc.example", *(extra or [])),
    ]


@pytest.mark.parametrize(
    ("first_reply", "second_used"),
    [(b"451 4.3.0 busy, try later\r\n", True), (b"550 5.1.1 no such user\r\n", False)],
    ids=["4xx: next exchanger", "5xx: final"],
)
def test_send_by_mx_tries_the_next_exchanger_for_a_recipient_refused_for_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], first_reply: bytes, second_used: bool
) -> None:
    """RFC 5321 §5.1: a busy exchanger is no reason to give up; a 5xx is final. send
    stopped at the first exchanger that answered, whatever it answered."""
    first, other = _listeners_on_one_port("127.0.0.2", "127.0.0.1")
    argv = _send_by_mx(tmp_path, first.getsockname()[1], ["b@pqr.example"])
    with (
        _exchanger(first, first_reply),
        _exchanger(other, b"250 2.1.5 ok\r\n") as second,
    ):
        status = cli.main(argv)
    out = capsys.readouterr().out
    if second_used:
        assert status == 0, out
        assert out.startswith("<b@pqr.example>: accepted by mx2.pqr.example[127.0.0.1]:")
        assert b"RCPT TO:<b@pqr.example>\r\n" in second
    else:
        assert status == EX_NOUSER
        assert "refused by mx1.pqr.example[127.0.0.2]" in out and "550 5.1.1" in out
        assert not second


def test_send_by_mx_to_an_idn_domain_without_smtputf8_delivers_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exchanger without SMTPUTF8 gets the recipient's domain in A-labels (RFC 5890
    §2.3.2.1), and the client reports it so. ``send`` looked its result up by the
    U-label form it was given: the recipient kept "no exchanger answered", went to the
    next exchanger as well (both took the message) and ``send`` said it failed. The
    test message's ``To:`` carried the U-labels raw, 8-bit in a header sent without
    SMTPUTF8 (RFC 6531 §3.2): it names the address as the envelope does now."""
    first, other = _listeners_on_one_port("127.0.0.2", "127.0.0.1")
    port = first.getsockname()[1]
    argv = _send_by_mx(
        tmp_path,
        port,
        ["u@bücher.example"],
        domain="xn--bcher-kva.example",
        extra=["--body", "hi"],
    )
    eight_bit = b"250-mx\r\n250 8BITMIME\r\n"
    with (
        _exchanger(first, b"250 2.1.5 ok\r\n", ehlo_reply=eight_bit) as lines,
        _exchanger(other, b"250 2.1.5 ok\r\n", ehlo_reply=eight_bit) as second,
    ):
        status = cli.main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert (
        out
        == f"<u@bücher.example>: accepted by mx1.pqr.example[127.0.0.2]:{port}: 250 2.0.0 queued\n"
    )
    assert not second
    assert b"RCPT TO:<u@xn--bcher-kva.example>\r\n" in lines
    assert b"To: <u@xn--bcher-kva.example>\r\n" in lines
    assert all(line.isascii() for line in lines), lines


@pytest.mark.parametrize(
    ("limits", "mails"),
    [("RCPTMAX=1 MAILMAX=1", None), ("RCPTMAX=1", 1)],
    ids=["MAILMAX reached", "connection lost at the second MAIL"],
)
def test_send_by_mx_does_not_send_again_what_an_exchanger_split_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], limits: str, mails: int | None
) -> None:
    """An exchanger that takes one recipient a transaction (RFC 9422 LIMITS) delivers
    b in the first; the second cannot be had (MAILMAX, or the connection lost), and
    the client's error carries the result so far. ``send`` took every recipient as
    refused for now and sent b to the next exchanger too: b is delivered once, c goes
    to the next exchanger."""
    first, other = _listeners_on_one_port("127.0.0.2", "127.0.0.1")
    port = first.getsockname()[1]
    argv = _send_by_mx(tmp_path, port, ["b@pqr.example", "c@pqr.example"])
    ehlo = f"250-mx\r\n250 LIMITS {limits}\r\n".encode()
    with (
        _exchanger(first, b"250 2.1.5 ok\r\n", ehlo_reply=ehlo, mails=mails) as lines,
        _exchanger(other, b"250 2.1.5 ok\r\n") as second,
    ):
        status = cli.main(argv)
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.splitlines() == [
        f"<b@pqr.example>: accepted by mx1.pqr.example[127.0.0.2]:{port}: 250 2.0.0 queued",
        f"<c@pqr.example>: accepted by mx2.pqr.example[127.0.0.1]:{port}: 250 2.0.0 queued",
    ]
    assert [line for line in lines if line.startswith(b"RCPT")] == [b"RCPT TO:<b@pqr.example>\r\n"]
    assert [line for line in second if line.startswith(b"RCPT")] == [
        b"RCPT TO:<c@pqr.example>\r\n"
    ]


@pytest.mark.parametrize("end_reply", [b"", b"2x0 garbled\r\n"], ids=["lost", "garbled"])
def test_send_by_mx_does_not_send_again_what_an_exchanger_may_have_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], end_reply: bytes
) -> None:
    """RFC 5321 §6.1: a connection lost after the final dot, before its reply, or a
    reply no client can read, may have delivered the message. A duplicate is accepted
    only from that window, not from a deliberate resend: the next exchanger is not
    tried, and ``send`` says the message may have been delivered by the first. It
    tried mx2 (here, where nothing listens), whose failure overwrote that line, or
    which delivered the message a second time."""
    [listener] = _listeners_on_one_port("127.0.0.1")
    port = listener.getsockname()[1]
    argv = _send_by_mx(tmp_path, port, ["b@pqr.example"], mx1="127.0.0.1", mx2="127.0.0.2")
    with _exchanger(listener, b"250 2.1.5 ok\r\n", end_reply=end_reply) as lines:
        status = cli.main(argv)
    out = capsys.readouterr().out
    assert status == EX_TEMPFAIL
    assert out.startswith("<b@pqr.example>: may have been delivered by mx1.pqr.example")
    assert "mx2" not in out
    assert lines.count(b"DATA\r\n") == 1


@contextlib.contextmanager
def _tls_server(
    answers: dict[bytes, bytes], greeting: bytes, tls: ssl.SSLContext | None
) -> Iterator[int]:
    """One session on a loopback port: ``greeting``, then each command answered from
    ``answers`` by its verb; after the answer to STARTTLS or STLS, a TLS handshake
    with ``tls`` (whose certificate no default store trusts), or, with ``None``, a
    close in the middle of the client's handshake. Yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        with contextlib.suppress(OSError), listener, listener.accept()[0] as conn:
            conn.settimeout(10)
            conn.sendall(greeting)
            with conn.makefile("rb") as reader:
                for line in reader:
                    verb = line.split()[0].upper() if line.split() else b""
                    conn.sendall(answers.get(verb, b"500 no\r\n"))
                    if verb in (b"STARTTLS", b"STLS"):
                        break
            if tls is not None:
                tls.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=1).close()
        thread.join(5)


_SMTP_STARTTLS = {b"EHLO": b"250-mx.test\r\n250 STARTTLS\r\n", b"STARTTLS": b"220 2.0.0 go\r\n"}
_POP3_STLS = {b"CAPA": b"+OK\r\nSTLS\r\nUSER\r\n.\r\n", b"STLS": b"+OK begin TLS\r\n"}


@pytest.mark.parametrize("verified", [True, False], ids=["unverifiable", "closed"])
def test_send_says_whose_refusal_a_failed_handshake_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verified: bool
) -> None:
    """A certificate this client cannot verify is the client's own refusal (with the
    options that change it); a handshake the server ends is the server's doing."""
    tls = make_tls_files(tmp_path).server_context if verified else None
    with _tls_server(_SMTP_STARTTLS, b"220 mx.test ESMTP\r\n", tls) as port:
        status = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{port}", "--helo", "client.abc.example"),
                *("--from", "john@abc.example", "--to", "b@pqr.example"),
            ]
        )
    out = capsys.readouterr().out
    assert status == EX_TEMPFAIL
    if verified:
        assert out.startswith(
            f"<b@pqr.example>: not sent to 127.0.0.1:{port}: this client refused to go on: "
            "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED]"
        ), out
        assert "--cafile FILE" in out and "--insecure" in out
    else:
        assert out.startswith(f"<b@pqr.example>: refused by 127.0.0.1:{port}: TLS handshake"), out
        assert "this client refused" not in out


@pytest.mark.parametrize("verified", [True, False], ids=["unverifiable", "closed"])
def test_fetch_says_whose_refusal_a_failed_handshake_is(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    verified: bool,
) -> None:
    monkeypatch.setenv("SMTPCORE_PASSWORD", "pw")
    tls = make_tls_files(tmp_path).server_context if verified else None
    with _tls_server(_POP3_STLS, b"+OK pop.test ready\r\n", tls) as port:
        status = cli.main(["fetch", "--server", f"127.0.0.1:{port}", "--user", "ann"])
    err = capsys.readouterr().err
    assert status == 1
    if verified:
        assert err.startswith(
            "smtpcore fetch: this client refused to go on: "
            "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED]"
        ), err
        assert "--cafile FILE" in err and "--insecure" in err
    else:
        assert err.startswith("smtpcore fetch: TLS handshake failed"), err
        assert "this client refused" not in err


def test_send_and_fetch_name_what_a_certificate_was_checked_against(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A certificate signed by the CA given with ``--cafile`` but issued to another
    name (RFC 6125 §6) is not a matter of trust: the refusal names the name it was
    checked against, and not ``--cafile``, which the user has given already."""
    import trustme

    monkeypatch.setenv("SMTPCORE_PASSWORD", "pw")
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    elsewhere = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.other.example").configure_cert(elsewhere)  # checked against 127.0.0.1
    with _tls_server(_SMTP_STARTTLS, b"220 mx.test ESMTP\r\n", elsewhere) as port:
        status = cli.main(
            [
                *("send", "--server", f"127.0.0.1:{port}", "--helo", "client.abc.example"),
                *("--from", "john@abc.example", "--to", "b@pqr.example"),
                *("--cafile", str(ca_file)),
            ]
        )
    out = capsys.readouterr().out
    assert status == EX_TEMPFAIL
    with _tls_server(_POP3_STLS, b"+OK pop.test ready\r\n", elsewhere) as port:
        status = cli.main(
            ["fetch", "--server", f"127.0.0.1:{port}", "--user", "ann", "--cafile", str(ca_file)]
        )
    err = capsys.readouterr().err
    assert status == 1
    for text in (out, err):
        assert "this client refused to go on: " in text, text
        assert "the certificate was checked against '127.0.0.1'" in text, text
        assert "--insecure checks nothing" in text and "--cafile" not in text, text
