"""The reference server's per-session error limit (``max_errors``, 20) counts a
temporary DNS failure (RFC 3463 §3.5, ``451 4.4.3``) as Postfix counts every refused
command: the client may name a domain of its own whose name servers never answer, and
each such recipient costs the server lookups."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Callable
from pathlib import Path

import pytest

from smtpcore.address import Mailbox
from smtpcore.routing import LocalDelivery, Rejected, RejectReason, RemoteDelivery, Router
from test_fail2ban_filter import _as_logged, _hosts
from test_server_disk_full import LOOPBACK, _config, _serve

DNS_FAILS_FOR_NOW = Rejected(
    451, "4.4.3", "temporary DNS failure looking up xyz.example", RejectReason.DNS_TEMPORARY
)


def _client_sending_recipients(count: int) -> Callable[[int], list[int]]:
    """A client that names ``count`` recipients in one transaction, up to a ``421``."""

    def client(port: int) -> list[int]:
        codes = []
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("relay.example")
            assert smtp.docmd("MAIL FROM:<a@relay.example>")[0] == 250
            for number in range(count):
                codes.append(smtp.docmd(f"RCPT TO:<u{number}@abc.example>")[0])
                if codes[-1] == 421:
                    break
        return codes

    return client


def test_recipients_refused_while_dns_fails_for_now_end_the_session_at_max_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Twenty ``451 4.4.3``, then ``421 4.7.0 ... Too many errors``, which the fail2ban
    filter bans: a session cannot buy lookups without end."""
    caplog.set_level(logging.INFO, "smtpcore")

    def route(
        self: Router, recipient: Mailbox, **kwargs: object
    ) -> LocalDelivery | RemoteDelivery | Rejected:
        return DNS_FAILS_FOR_NOW

    monkeypatch.setattr(Router, "route", route)
    assert _serve(_config(tmp_path), _client_sending_recipients(30)) == [451] * 20 + [421]
    refused = [r for r in caplog.messages if "reject: RCPT" in r]
    assert len(refused) == 21 and "451 4.4.3 temporary DNS failure" in refused[0]
    assert "Too many errors" in refused[-1]
    assert [host for host, _ in _hosts(_as_logged(caplog.records))] == [LOOPBACK]
