"""The reference server's per-session error limit (``max_errors``, 20) counts what the
client does wrong, never the server's own temporary failures: a relay that sends its
batch down one connection is not ended with ``421 4.7.0 ... Too many errors``, which
the fail2ban filter bans, while DNS fails for now (RFC 3463 §3.5, ``4.4.3``)."""

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


def _relay_sending_recipients(messages: int) -> Callable[[int], list[int]]:
    """A relay that offers ``messages`` down one connection, one recipient each, and
    moves on to the next after a refused RCPT (RSET, no DATA), as a relay does."""

    def client(port: int) -> list[int]:
        codes = []
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.ehlo("relay.example")
            for _ in range(messages):
                assert smtp.docmd("MAIL FROM:<a@relay.example>")[0] == 250
                codes.append(smtp.docmd("RCPT TO:<john@abc.example>")[0])
                smtp.rset()
        return codes

    return client


def test_a_relay_is_not_cut_off_and_banned_while_dns_fails_for_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """25 recipients refused ``451 4.4.3`` (a router that looks the domain up at RCPT,
    and whose DNS does not answer): each counted toward the session's error limit, and
    the 21st command got ``421 4.7.0 ... Too many errors``, banned for the server's
    own failure."""
    caplog.set_level(logging.INFO, "smtpcore")

    def route(
        self: Router, recipient: Mailbox, **kwargs: object
    ) -> LocalDelivery | RemoteDelivery | Rejected:
        return DNS_FAILS_FOR_NOW

    monkeypatch.setattr(Router, "route", route)
    assert _serve(_config(tmp_path), _relay_sending_recipients(25)) == [451] * 25
    refused = [r for r in caplog.messages if "reject: RCPT" in r]
    assert len(refused) == 25 and "451 4.4.3 temporary DNS failure" in refused[0]
    assert _hosts(_as_logged(caplog.records)) == []
    assert "Too many errors" not in caplog.text
