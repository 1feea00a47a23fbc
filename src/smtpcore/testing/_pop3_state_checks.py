"""The POP3 checks of session state: ``stls-injection`` and ``state-order``.

Both ask whether a command runs only in its state: nothing pipelined behind
STLS survives the TLS handshake (RFC 2595 §4), and no TRANSACTION command runs
before login, nor USER, PASS or APOP after it (RFC 1939 §3, §4). The POP3
counterpart of ``_smtp_state_checks``; how a failed handshake is judged lives
here with the one check that needs it.
"""

from __future__ import annotations

import re
import ssl
from typing import Final

from smtpcore.testing._battery import Failed, Skipped, insecure_context
from smtpcore.testing._pop3_probe import POP3Probe
from smtpcore.testing._pop3_refusals import RefusalSessions
from smtpcore.testing._pop3_responses import ask, read_response
from smtpcore.testing._pop3_wire import ask_login

__all__ = ["check_state_order", "check_stls_injection"]


# -- stls-injection ----------------------------------------------------------------------


def check_stls_injection(probe: POP3Probe) -> str:
    """Nothing pipelined behind STLS is run, before the handshake or after (RFC 2595 §4).

    ``STLS`` and ``CAPA`` go in one plaintext write; after the handshake
    ``QUIT`` must get the only response, ``+OK``, then the close. A server
    that kept the plaintext it had read runs the injected CAPA over TLS (the
    POP3 twin of CVE-2011-0411, found in several POP3 servers in 2011); one
    that answers it in plaintext before TLS makes the handshake fail on bytes
    that are no TLS record, and fails too; so does a handshake that stalls. A
    handshake the server ended, by a close, a reset or a TLS alert (a record,
    RFC 8446 §6), passes, if a clean STLS works.
    """
    context = probe.tls_context or insecure_context()
    client = probe.connect()
    offered = probe.capabilities(client) or set()
    if "STLS" not in offered:
        raise Skipped("STLS is not offered in CAPA")
    client.send(b"STLS\r\nCAPA\r\n")
    answer = read_response(client, multi_line=False)
    if answer is None:
        raise Failed("the server closed the connection instead of answering STLS")
    if not answer.ok:
        raise Skipped(f"STLS was answered {answer}")
    if client.unread:
        raise Failed(f"the server answered in plaintext after its +OK: {client.unread!r}")
    try:
        client.start_tls(context)
    except (OSError, ssl.SSLError) as exc:
        return _injected_handshake_failed(probe, context, exc)
    client.send(b"QUIT\r\n")
    lines = client.read_lines_until_closed()
    if not lines:
        raise Failed(
            "over TLS, QUIT got no response before the server closed the connection or "
            f"fell silent for {client.timeout:g} s"
        )
    if len(lines) != 1 or not lines[0].startswith(b"+OK"):
        raise Failed(
            f"over TLS, QUIT got {probe.lines_said(lines)}: the CAPA pipelined in plaintext "
            "behind STLS was run after the handshake (RFC 2595 §4)"
        )
    if not client.closed:
        raise Failed(f"the server did not close within {client.timeout:g} s of QUIT")
    return "the plaintext behind STLS was dropped"


_CLOSED_AT_HANDSHAKE: Final = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)
"""How a handshake fails when the server ends the session: a close or a reset."""

_ALERT_REASON: Final = re.compile(r"(?:\A|_)ALERT_")
"""OpenSSL's reason for a handshake ended by the peer's alert record:
``SSLV3_ALERT_UNEXPECTED_MESSAGE``, ``TLSV1_ALERT_INTERNAL_ERROR``, ..."""

_NO_TLS_RECORD_REASONS: Final = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LAYER_FAILURE",
        "UNKNOWN_PROTOCOL",
        "RECORD_LENGTH_MISMATCH",
    }
)
"""OpenSSL's reasons for bytes that do not parse as a TLS record (RFC 8446 §5.1): a
line of plaintext read as a record header gives ``WRONG_VERSION_NUMBER`` (its
second and third octets are no version) or ``PACKET_LENGTH_TOO_LONG``."""


def _ended_by_server(exc: BaseException) -> bool:
    """Whether the server ended the handshake, by a close, a reset or a TLS alert
    (a TLS record, RFC 8446 §6): no sign it answered the injected command."""
    if isinstance(exc, _CLOSED_AT_HANDSHAKE):
        return True
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    return isinstance(reason, str) and _ALERT_REASON.search(reason) is not None


def _injected_handshake_failed(
    probe: POP3Probe, context: ssl.SSLContext, exc: BaseException
) -> str:
    """The verdict on a failed handshake after STLS with CAPA behind it, by what was
    received; each failure is judged only where a clean STLS works."""
    if _ended_by_server(exc):
        return _ended_at_handshake(probe, context, exc)
    _clean_handshake_works(probe, context)
    if isinstance(exc, TimeoutError):
        raise Failed(
            f"after STLS with CAPA behind it, the TLS handshake did not end within "
            f"{probe.timeout:g} s where a clean STLS works: the server neither answered "
            "the ClientHello nor closed (RFC 2595 §4)"
        ) from None
    if getattr(exc, "reason", None) in _NO_TLS_RECORD_REASONS:
        raise Failed(
            f"after STLS with CAPA behind it, the TLS handshake failed ({exc}) where a "
            "clean STLS works: the server sent bytes that are no TLS record, as a "
            "plaintext answer to the injected CAPA is (RFC 2595 §4)"
        ) from None
    raise Failed(
        f"after STLS with CAPA behind it, the TLS handshake failed ({exc}) where a "
        "clean STLS works (RFC 2595 §4)"
    ) from None


def _ended_at_handshake(probe: POP3Probe, context: ssl.SSLContext, exc: BaseException) -> str:
    """Fine where the server ended the injected session at the handshake, if a clean
    STLS works; skipped where TLS does not work at all."""
    _clean_handshake_works(probe, context)
    return f"the server ended the injected session at the handshake ({exc})"


def _clean_handshake_works(probe: POP3Probe, context: ssl.SSLContext) -> None:
    """A new session's STLS, alone, and its handshake; skips the check if they fail."""
    probe.close()
    clean = probe.connect()
    if not ask(clean, b"STLS").ok:
        raise Skipped("a clean STLS is refused too") from None
    try:
        clean.start_tls(context)
    except (OSError, ssl.SSLError) as clean_exc:
        raise Skipped(f"the TLS handshake fails even without injection: {clean_exc}") from None


# -- state-order ---------------------------------------------------------------------------

_TRANSACTION_ONLY: Final = (b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"UIDL", b"TOP 1 0", b"RSET")


def check_state_order(probe: POP3Probe) -> str:
    """Each command only in its state (RFC 1939 §3, §4, §7).

    Before login, STAT, LIST, RETR, DELE, UIDL, TOP, RSET and ``PASS``
    without ``USER`` get ``-ERR`` (a server that serves mail before the
    password, or takes a PASS alone, logs in whoever asks). After a wrong
    PASS, STAT still gets ``-ERR`` (the failed login let nobody in), unless
    the server closed after the refusal, which it may. Once logged in, USER,
    PASS and APOP get ``-ERR``. It runs last: a wrong password slows down a
    server's later logins (Dovecot's auth penalty).
    """
    problems = probe.problems
    before_login = RefusalSessions(probe, logged_in=False)
    before_login.expect_err(_TRANSACTION_ONLY, "before login")
    before_login.expect_err_one(b"PASS ", "without USER", probe.password.encode())
    before_login.drop()
    logged_in = RefusalSessions(probe)
    apop = b"APOP " + probe.user.encode() + b" " + b"0" * 32
    logged_in.expect_err([b"USER " + probe.user.encode(), b"PASS x", apop], "after login")
    client = logged_in.current()
    stat = ask(client, b"STAT")
    if not stat.ok:
        problems.append(f"STAT after the refusals got {stat}: the session did not go on")
    probe.end(client)
    problems += _wrong_password(probe)  # last: a server may slow down logins after it
    if problems:
        raise Failed("; ".join(problems))
    return "every command out of its state got -ERR, and the session went on"


def _wrong_password(probe: POP3Probe) -> list[str]:
    """A wrong PASS lets nobody in: STAT after it gets -ERR (or the server closed,
    which it may after a failed login), and QUIT ends the session. The right
    password is not tried after it: Dovecot delays a login after a failed one."""
    client = probe.connect()
    user = ask(client, b"USER " + probe.user.encode())
    if not user.ok:
        raise Skipped(f"USER was answered {user}: the server may take only SASL")
    wrong = ask_login(client, b"PASS ", probe.wrong_password())
    if not wrong.err:
        probe.abandon(client)
        return [f"a wrong password got {wrong}, not -ERR"]
    client.send(b"STAT\r\n")
    stat = read_response(client, multi_line=False)
    if stat is None:
        return []  # a server may close after a failed login
    if not stat.err:
        probe.abandon(client)
        return [f"STAT after a wrong PASS got {stat}, not -ERR"]
    probe.end(client)
    return []
