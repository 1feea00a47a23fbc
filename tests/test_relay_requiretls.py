"""REQUIRETLS (RFC 8689) in the reference relay (issue 16): a message that came with
REQUIRETLS goes only over verified TLS to an exchanger that offers REQUIRETLS, with
REQUIRETLS on MAIL, else to the next exchanger, else back to its sender with 5.7.30;
``TLS-Required: No`` lets a message go under opportunistic TLS whatever the policy.
Each case runs the delivery worker against scripted exchangers on loopback, and one
runs two ``serve`` processes end to end."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest

from peers import make_tls_files
from relay_remote import LOOPBACK, ScriptedRemote, remote
from smtpcore.asyncio import ExtensionNotOffered, SMTPClient
from smtpcore.server.config import ServerConfig
from smtpcore.server.mailserver import MailServer
from smtpcore.server.queue import QueuedRecipient
from smtpcore.server.relay_tls import MessageTLS, RelayTLS, message_tls, tls_required_no
from test_cli_serve import _until, serve
from test_server_relay import _lines, _relay, _run, _wait_closed
from test_server_relay import _until as _eventually

REQUIRETLS = (("REQUIRETLS", None),)
MESSAGE = b"From: john@abc.example\r\nSubject: the secret plan\r\n\r\nsecret body line\r\n"
TWO_MX = (
    "pqr.example MX 10 mx.pqr.example\n"
    "pqr.example MX 20 mx2.pqr.example\n"
    "mx.pqr.example A 127.0.0.1\n"
    "mx2.pqr.example A 127.0.0.2\n"
)


@dataclass(frozen=True)
class MXCertificates:
    server: ssl.SSLContext
    """For mx.pqr.example and mx2.pqr.example."""
    ca_file: Path
    other_ca_file: Path
    """A CA that signed neither."""


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> MXCertificates:
    import trustme

    directory = tmp_path_factory.mktemp("requiretls")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.pqr.example", "mx2.pqr.example").configure_cert(server)
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = directory / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return MXCertificates(server, ca_file, other)


def _bounced(relay_reports: list[bytes]) -> bytes:
    (raw,) = relay_reports
    assert b"Action: failed" in raw and b"Status: 5.7.30" in raw
    assert b"REQUIRETLS support required" in b" ".join(raw.split())
    # RFC 8689 §5: the bounce of a REQUIRETLS message returns its header, not its content.
    assert b"Content-Type: text/rfc822-headers" in raw
    assert b"Subject: the secret plan" in raw and b"secret body line" not in raw
    return raw


# -- relayed ------------------------------------------------------------------------------


def test_requiretls_goes_over_verified_tls_to_an_exchanger_offering_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(starttls="tls", tls_context=mx.server, requiretls=True) as server:
        # The configured policy is "may": the message asks for more.
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.tls and transaction.content == MESSAGE
    assert transaction.mail_line.rstrip().endswith(b" REQUIRETLS")
    (line,) = _lines(caplog, "status=sent")
    assert "tls=verified, tls_policy=requiretls" in line
    assert relay.reports() == []


def test_requiretls_tries_the_next_exchanger_when_one_does_not_offer_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(starttls="tls", tls_context=mx.server) as first:
        options = {"host": "127.0.0.2", "port": first.port, "requiretls": True}
        with remote(starttls="tls", tls_context=mx.server, **options) as second:
            relay = _relay(tmp_path, first.port, zone=TWO_MX, relay_ca=mx.ca_file)
            relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
            _run(relay, relay.empty)
            _wait_closed(first)
            _wait_closed(second)
    assert first.connections == 1 and first.mail_lines == []
    (transaction,) = second.transactions
    assert transaction.tls and transaction.mail_line.rstrip().endswith(b" REQUIRETLS")
    assert _lines(caplog, "does not offer REQUIRETLS after TLS; trying the next exchanger")
    assert relay.reports() == []


# -- bounced with 5.7.30, never sent ------------------------------------------------------


def test_requiretls_to_an_exchanger_without_starttls_bounces_with_5_7_30(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(requiretls=True) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.mail_lines == []
    raw = _bounced(relay.reports())
    assert b"Final-Recipient: rfc822; brendon@pqr.example" in raw
    assert b"Diagnostic-Code: x-local; 550 5.7.30 REQUIRETLS support required" in raw
    assert b"but was not offered by host" in b" ".join(raw.split())
    (line,) = _lines(caplog, "status=bounced")
    assert "dsn=5.7.30" in line and "tls_policy=requiretls" in line


def test_requiretls_to_an_unverified_certificate_bounces_with_5_7_30(
    tmp_path: Path, mx: MXCertificates
) -> None:
    with remote(starttls="tls", tls_context=mx.server, requiretls=True) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.other_ca_file)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.mail_lines == []
    raw = _bounced(relay.reports())
    assert b"TLS handshake failed" in b" ".join(raw.split())


def test_requiretls_to_an_exchanger_not_offering_requiretls_bounces_with_5_7_30(
    tmp_path: Path, mx: MXCertificates
) -> None:
    with remote(starttls="tls", tls_context=mx.server) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.connections == 1 and server.mail_lines == []
    raw = _bounced(relay.reports())
    assert b"does not offer REQUIRETLS after TLS" in b" ".join(raw.split())


@pytest.mark.parametrize(
    ("refusal", "deferred"),
    [(b"451 4.3.0 ESMTP temporarily unavailable", True), (b"550 5.5.1 no ESMTP under TLS", False)],
    ids=["4xx", "5xx"],
)
def test_requiretls_when_ehlo_is_refused_after_starttls(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    mx: MXCertificates,
    refusal: bytes,
    deferred: bool,
) -> None:
    """An exchanger that refuses EHLO only under TLS is sent HELO there, a session
    without REQUIRETLS: after a 4xx the message waits, the EHLO reply its reason (the
    exchanger may offer REQUIRETLS next time); after a 5xx it bounces with 5.7.30 (RFC
    8689 §5), as for an exchanger that never offers it."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    options = {"tls_hello_replies": {b"EHLO": refusal}, "requiretls": True}
    with remote(starttls="tls", tls_context=mx.server, **options) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file, retry_after=300)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
        _run(relay, lambda: bool(_lines(caplog, "status=")))
        _wait_closed(server)
    assert server.verbs == [b"EHLO", b"STAR", b"EHLO", b"HELO", b"QUIT"]
    (line,) = _lines(caplog, "status=")
    if deferred:
        assert line.endswith(f"dsn=4.3.0, status=deferred ({refusal.decode()})")
        assert relay.reports() == [] and len(relay.entries()) == 1
    else:
        assert "dsn=5.7.30, status=bounced" in line
        _run(relay, lambda: bool(relay.reports()))
        _bounced(relay.reports())


def test_requiretls_ignores_tls_required_no(tmp_path: Path, mx: MXCertificates) -> None:
    """RFC 8689 §4.1: under REQUIRETLS the header field is ignored."""
    content = b"TLS-Required: No\r\n" + MESSAGE
    with remote(requiretls=True) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file)
        relay.enqueue(["brendon@pqr.example"], content=content, params=REQUIRETLS)
        _run(relay, lambda: relay.empty() and bool(relay.reports()))
        _wait_closed(server)
    assert server.mail_lines == []
    _bounced(relay.reports())


def test_requiretls_waits_when_an_exchanger_could_not_be_reached(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    """Only when every exchanger was reached and none qualified is the message returned;
    one that could not be reached may qualify on the next round."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(starttls="tls", tls_context=mx.server) as first:  # no REQUIRETLS
        relay = _relay(tmp_path, first.port, zone=TWO_MX, relay_ca=mx.ca_file)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS)
        _run(relay, lambda: bool(_lines(caplog, "status=deferred")))
        _wait_closed(first)
    assert first.mail_lines == [] and relay.reports() == []
    (entry,) = relay.entries()
    assert entry.pending and entry.pending[0].dsn is not None
    assert entry.pending[0].dsn.startswith("4.")


# -- the reports on a REQUIRETLS message ---------------------------------------------------

REMOTE_SENDER = "carol@pqr.example"
"""A sender at the exchanger's domain: the reports on her message are relayed there."""


@pytest.mark.parametrize("kind", ["non-delivery", "delay", "success"])
def test_a_report_on_a_requiretls_message_goes_with_requiretls(
    tmp_path: Path, mx: MXCertificates, kind: str
) -> None:
    """RFC 8689 §5: a report holds the message's header, and goes as a "REQUIRETLS bounce
    message": over verified TLS, with REQUIRETLS on its ``MAIL FROM:<>``. A bounce, a
    delay notice and a success report all went without, under the relay's policy."""
    replies = {"non-delivery": b"550 5.1.1 no such user", "delay": b"450 4.2.1 try later"}
    rcpt_replies = {"brendon@pqr.example": replies[kind]} if kind in replies else {}
    with remote(
        starttls="tls", tls_context=mx.server, requiretls=True, rcpt_replies=rcpt_replies
    ) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file, delay_warning=0.0)
        notify = "SUCCESS" if kind == "success" else None  # relayed to a server without DSN
        relay.enqueue(
            [QueuedRecipient("brendon@pqr.example", notify=notify)],
            content=MESSAGE,
            params=REQUIRETLS,
            sender=REMOTE_SENDER,
        )
        _run(relay, lambda: any(t.recipients == [REMOTE_SENDER] for t in server.transactions))
        _wait_closed(server)
    (report,) = [t for t in server.transactions if t.recipients == [REMOTE_SENDER]]
    assert report.mail_line.startswith(b"MAIL FROM:<>")
    assert report.tls and report.mail_line.rstrip().endswith(b" REQUIRETLS")
    action = {"non-delivery": b"failed", "delay": b"delayed", "success": b"relayed"}[kind]
    assert b"Action: " + action in report.content
    assert b"Subject: the secret plan" in report.content
    assert b"secret body line" not in report.content


def test_a_report_on_a_requiretls_message_is_dropped_rather_than_sent_in_the_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    """The message goes nowhere without TLS, and nor does its bounce, which went in
    plaintext with the header the sender asked to protect. Being from ``<>``, the
    bounce is not bounced in turn (RFC 5321 §4.5.5): it is dropped, and logged."""
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(requiretls=True) as server:  # no STARTTLS
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file)
        relay.enqueue(
            ["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS, sender=REMOTE_SENDER
        )
        _run(relay, lambda: len(_lines(caplog, " status=")) == 2 and relay.empty())
        _wait_closed(server)
    assert server.mail_lines == []
    first, second = _lines(caplog, "status=bounced")
    assert "to=<brendon@pqr.example>" in first and "dsn=5.7.30" in first
    assert f"to=<{REMOTE_SENDER}>" in second and "dsn=5.7.30" in second
    assert "tls_policy=requiretls" in second
    assert _lines(caplog, "null sender: no bounce for 1 recipients")


def test_the_success_report_of_a_local_delivery_goes_with_requiretls(
    tmp_path: Path, mx: MXCertificates
) -> None:
    """The report ``NOTIFY=SUCCESS`` asks for when the ``smtp`` listener delivers the
    message itself, made in the session, is queued with REQUIRETLS as the relay's are."""
    tls = make_tls_files(tmp_path)
    zone = tmp_path / "zone"
    zone.write_text("pqr.example MX 10 mx.pqr.example\nmx.pqr.example A 127.0.0.1\n")

    def send(port: int) -> None:
        with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
            smtp.starttls(context=tls.client_context)
            smtp.ehlo()
            assert smtp.mail(REMOTE_SENDER, ["REQUIRETLS"])[0] == 250
            assert smtp.rcpt("john@abc.example", ["NOTIFY=SUCCESS"])[0] == 250
            assert smtp.data(MESSAGE)[0] == 250

    async def main(remote_port: int, server: ScriptedRemote) -> None:
        config = ServerConfig(
            domains=("abc.example",),
            users={"john@abc.example": "pw"},
            data_dir=tmp_path / "data",
            hostname="mx.abc.example",
            smtp_port=1,  # the socket replaces it
            min_free_space=0,  # a small temporary filesystem still takes mail
            submission_port=0,
            pop3_port=0,
            tls_cert=tls.cert_file,
            tls_key=tls.key_file,
            resolver=f"static:{zone}",
            remote_port=remote_port,
            relay_ca=mx.ca_file,
            allow_internal_relay=True,  # the exchanger is on loopback
        )
        sockets = {"smtp": socket.create_server((LOOPBACK, 0))}
        async with MailServer(config, sockets=sockets) as abc:
            await asyncio.to_thread(send, abc.listeners[0].port)
            await _eventually(lambda: bool(server.transactions))

    with remote(starttls="tls", tls_context=mx.server, requiretls=True) as server:
        asyncio.run(asyncio.wait_for(main(server.port, server), 30))
        _wait_closed(server)
    (report,) = server.transactions
    assert report.recipients == [REMOTE_SENDER] and b"Action: delivered" in report.content
    assert report.mail_line.startswith(b"MAIL FROM:<>")
    assert report.tls and report.mail_line.rstrip().endswith(b" REQUIRETLS")


# -- TLS-Required: No ---------------------------------------------------------------------


def test_tls_required_no_relaxes_verify_to_opportunistic_tls(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    content = b"TLS-Required: No\r\n" + MESSAGE
    with remote(starttls="tls", tls_context=mx.server) as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.VERIFY, relay_ca=mx.other_ca_file)
        relay.enqueue(["brendon@pqr.example"], content=content)
        _run(relay, relay.empty)
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.tls  # still encrypted: the certificate is what went unchecked
    assert b"REQUIRETLS" not in transaction.mail_line
    (line,) = _lines(caplog, "status=sent")
    assert "tls=yes, tls_policy=tls-required-no" in line


def test_tls_required_no_goes_in_plaintext_when_tls_is_not_offered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    content = b"tls-required:  no \r\n" + MESSAGE
    with remote() as server:
        relay = _relay(tmp_path, server.port, relay_tls=RelayTLS.ENCRYPT)
        relay.enqueue(["brendon@pqr.example"], content=content)
        _run(relay, relay.empty)
        _wait_closed(server)
    assert not server.transactions[0].tls
    assert "tls=no, tls_policy=tls-required-no" in _lines(caplog, "status=sent")[0]


@pytest.mark.parametrize(
    ("header", "relaxed"),
    [
        (b"Subject: x\r\nTLS-Required: No\r\n\r\n", True),
        (b"TLS-REQUIRED:no\r\n\r\n", True),
        (b"TLS-Required:\r\n No\r\n\r\n", True),  # folded
        (b"TLS-Required: Yes\r\n\r\n", False),
        (b"TLS-Required: No thanks\r\n\r\n", False),
        (b"X-TLS-Required: No\r\n\r\n", False),
        (b"Subject: TLS-Required: No\r\n\r\n", False),
        (b"Subject: x\r\n\r\nTLS-Required: No\r\n", True),  # the caller passes the header
    ],
)
def test_the_tls_required_field_is_read_as_rfc_8689_writes_it(
    header: bytes, relaxed: bool
) -> None:
    assert tls_required_no(header) is relaxed


def test_message_tls_follows_rfc_8689() -> None:
    no = b"TLS-Required: No\r\n\r\n"
    required = message_tls(RelayTLS.MAY, requiretls=True, header=no)
    assert required == MessageTLS(RelayTLS.VERIFY, requiretls=True, label="requiretls")
    relaxed = message_tls(RelayTLS.VERIFY, requiretls=False, header=no)
    assert relaxed == MessageTLS(RelayTLS.MAY, label="tls-required-no")
    plain = message_tls(RelayTLS.ENCRYPT, requiretls=False, header=b"Subject: x\r\n\r\n")
    assert plain == MessageTLS(RelayTLS.ENCRYPT, label="encrypt")


# -- the client adapter --------------------------------------------------------------------


def test_the_client_sends_requiretls_only_to_a_server_offering_it(
    mx: MXCertificates,
) -> None:
    """The client adapter checks REQUIRETLS through its extension entry, like any
    parameter (RFC 5321 §2.2.2): not offered, nothing is sent."""
    context = ssl.create_default_context(cafile=str(mx.ca_file))

    async def send(port: int, starttls: bool | None) -> None:
        async with SMTPClient(
            LOOPBACK,
            port,
            hostname="mx.abc.example",
            starttls=starttls,
            ssl_context=context,
            server_hostname="mx.pqr.example",
        ) as client:
            await client.send_message(
                MESSAGE,
                "john@abc.example",
                "brendon@pqr.example",
                mail_params={"REQUIRETLS": None},
            )

    with remote(starttls="tls", tls_context=mx.server, requiretls=True) as server:
        with pytest.raises(ExtensionNotOffered) as refused:
            asyncio.run(send(server.port, False))  # REQUIRETLS is offered only under TLS
        assert refused.value.keyword == "REQUIRETLS" and refused.value.extension == "REQUIRETLS"
        assert server.mail_lines == []
        asyncio.run(send(server.port, True))
        _wait_closed(server)
    (transaction,) = server.transactions
    assert transaction.tls and transaction.mail_line.rstrip().endswith(b" REQUIRETLS")


# -- end to end: two servers ---------------------------------------------------------------


def test_serve_keeps_requiretls_from_submission_to_the_next_server(tmp_path: Path) -> None:
    """A message submitted with REQUIRETLS is queued with it, and relayed to the other
    ``serve`` over verified TLS, which offers REQUIRETLS (its certificate names the MX)."""
    tls = make_tls_files(tmp_path)
    zone = tmp_path / "zone.txt"
    zone.write_text("pqr.example MX 10 mx.test\nmx.test A 127.0.0.1\n")
    tls_options = ("--tls-cert", str(tls.cert_file), "--tls-key", str(tls.key_file))
    with serve(
        tmp_path / "pqr",
        "pqr.example",
        ["brendon@pqr.example:pw"],
        listeners=("smtp",),
        extra=tls_options,
    ) as pqr:
        relay = ("--resolver", f"static:{zone}", "--remote-port", str(pqr.ports["smtp"]))
        relay_ca = ("--relay-ca", str(tls.ca_file))
        with serve(
            tmp_path / "abc",
            "abc.example",
            ["john@abc.example:john-pw"],
            listeners=("submission",),
            extra=tls_options + relay + relay_ca,
        ) as abc:
            with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
                smtp.ehlo()
                assert not smtp.has_extn("requiretls")  # not before TLS (RFC 8689 §4.1)
                smtp.starttls(context=tls.client_context)
                smtp.ehlo()
                assert smtp.has_extn("requiretls")
                smtp.login("john@abc.example", "john-pw")
                smtp.sendmail("john@abc.example", ["brendon@pqr.example"], MESSAGE, ["REQUIRETLS"])
            _until(lambda: len(pqr.mailbox("brendon@pqr.example")) == 1, "the relay", pqr)
            sent = "tls=verified, tls_policy=requiretls, dsn=2.0.0, status=sent"
            _until(lambda: sent in abc.log(), "the relay's log line", abc)
            assert abc.stop() == 0
    (delivered,) = pqr.mailbox("brendon@pqr.example")
    assert b"secret body line" in delivered


def test_a_null_sender_message_with_requiretls_is_dropped_not_sent_in_the_clear(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mx: MXCertificates
) -> None:
    caplog.set_level(logging.INFO, "smtpcore.mail")
    with remote(requiretls=True) as server:
        relay = _relay(tmp_path, server.port, relay_ca=mx.ca_file)
        relay.enqueue(["brendon@pqr.example"], content=MESSAGE, params=REQUIRETLS, sender="")
        _run(relay, relay.empty)
        _wait_closed(server)
    assert server.mail_lines == [] and relay.reports() == []
    assert "dsn=5.7.30" in _lines(caplog, "status=bounced")[0]
    assert _lines(caplog, "null sender: no bounce for 1 recipients")
