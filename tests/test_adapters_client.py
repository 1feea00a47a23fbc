"""The SMTP client of both adapters, one suite run on asyncio and on trio.

The client runs in the test's thread under ``asyncio.run`` or ``trio.run``;
the server it talks to is ours (``peers.running_smtp_server``) or, where the
bytes on the wire are the point (response injection), a
:class:`~smtpcore.testing.ScriptedServer`.
"""

from __future__ import annotations

import email.message
import email.policy
import importlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peers import (
    ADAPTERS,
    HeldAnswer,
    TLSFiles,
    alongside,
    free_port,
    module,
    run,
    running_smtp_server,
    until,
)
from smtpcore import LocalProtocolError
from smtpcore._driver import Timeouts
from smtpcore.address import AddressError, Mailbox, parse_mailbox
from smtpcore.handler import Envelope, Handler, MessageReply, Session
from smtpcore.smtp import Mail, Rcpt, Reply, ServerConnection, xtext
from smtpcore.sync import SMTPClient as SyncSMTPClient
from smtpcore.testing import (
    Close,
    ExpectClose,
    ScriptedServer,
    Send,
    script,
)
from smtpcore.testing import strategies as sst

MESSAGE = b"Subject: client test\r\n\r\n.leading dot\r\nbody\r\n"


class Sink(Handler):
    def __init__(self, *, refuse_mail: bool = False, refuse_message: bool = False) -> None:
        self.messages: list[Envelope] = []
        self.sessions: list[Session] = []
        self.refuse_mail = refuse_mail
        self.refuse_message = refuse_message

    async def handle_connect(self, session: Session) -> Reply | None:
        self.sessions.append(session)
        return None

    async def handle_mail(self, session: Session, command: Mail) -> Reply | None:
        return Reply(550, "not from you", "5.7.1") if self.refuse_mail else None

    async def handle_rcpt(
        self, session: Session, envelope: Envelope, command: Rcpt
    ) -> Reply | None:
        if command.recipient.domain == "pqr.example":
            return Reply(250, "OK")
        return Reply(550, "no such user", "5.1.1")

    async def handle_message(self, session: Session, envelope: Envelope) -> MessageReply:
        if self.refuse_message:
            return Reply(554, "looks like spam", "5.7.1")
        self.messages.append(envelope)
        return None


def test_send_bytes_returns_per_recipient_results(adapter: str) -> None:
    handler = Sink()
    with running_smtp_server(adapter, handler) as server:
        result = run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "alice@abc.example",
                ["bob@pqr.example", "eve@xyz.example"],
                host=server.host,
                port=server.port,
                hostname="client.test",
            ),
        )
    assert [r.recipient.local_part for r in result.delivered] == ["bob"]
    [refused] = result.refused
    assert refused.reply is not None and refused.reply.code == 550
    [envelope] = handler.messages
    assert envelope.content == MESSAGE
    assert envelope.mail_params["SIZE"] == str(len(MESSAGE))
    assert handler.sessions[0].helo_name == "client.test"


def test_send_email_message_uses_its_headers_and_hides_bcc(adapter: str) -> None:
    handler = Sink()
    message = email.message.EmailMessage()
    message["From"] = "Alice <alice@abc.example>"
    message["To"] = "bob@pqr.example"
    message["Cc"] = "Carol <carol@pqr.example>"
    message["Bcc"] = "dave@pqr.example"
    message["Subject"] = "hello"
    message.set_content("line one\n.line two\n")
    with running_smtp_server(adapter, handler) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(message, host=server.host, port=server.port),
        )
    [envelope] = handler.messages
    assert str(envelope.sender) == "alice@abc.example"
    assert [str(r.mailbox) for r in envelope.recipients] == [
        "bob@pqr.example",
        "carol@pqr.example",
        "dave@pqr.example",
    ]
    assert b"Bcc" not in envelope.content and b"dave" not in envelope.content
    assert b"\r\n.line two\r\n" in envelope.content
    assert b"\n" not in envelope.content.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("from_", "error"),
    [
        ("", "From has no address"),
        ("undisclosed-senders:;", "From has no address"),
        ("Alice", "missing '@'"),
    ],
)
def test_a_from_field_without_an_address_is_no_null_sender(
    adapter: str, from_: str, error: str
) -> None:
    """A From that names no address (empty, a group, a bare name) gives no sender: an
    error before anything is sent, not ``MAIL FROM:<>``, whose bounces are lost."""
    message = email.message.EmailMessage()
    message["From"] = from_
    message["To"] = "bob@pqr.example"
    message.set_content("hi\n")
    handler = Sink()
    with (
        running_smtp_server(adapter, handler) as server,
        pytest.raises(ValueError, match=error),
    ):
        run(
            adapter,
            lambda: module(adapter).send_message(message, host=server.host, port=server.port),
        )
    assert handler.messages == []


@pytest.mark.parametrize("hostname", ["x" * 256, "client test", "cliént.example"])
def test_a_hostname_ehlo_cannot_carry_is_refused_when_the_client_is_built(
    adapter: str, hostname: str
) -> None:
    """The client's own name goes in EHLO: ASCII, one word of at most 255 octets (RFC
    5321 §4.5.3.1.2). Another is a ValueError at once, not a refused EHLO (or a line
    over 512 octets sent) at the first connection."""
    from smtpcore import sync

    with pytest.raises(ValueError, match="cannot go in EHLO"):
        module(adapter).SMTPClient("127.0.0.1", 25, hostname=hostname)
    with pytest.raises(ValueError, match="cannot go in EHLO"):
        sync.SMTPClient("127.0.0.1", 25, hostname=hostname)


def test_an_lmtp_client_connects_to_the_lmtp_port_by_default(adapter: str) -> None:
    """LMTP must not be used on TCP port 25 (RFC 2033 §1): with no port given, an LMTP
    client connects to 24, the port IANA assigns to lmtp (Postfix's ``lmtp:`` uses it),
    implicit TLS or not; an SMTP client keeps 25 (465 with implicit TLS)."""
    from smtpcore import sync

    for client_class in (module(adapter).SMTPClient, sync.SMTPClient):
        assert client_class("127.0.0.1", lmtp=True).port == 24
        assert client_class("127.0.0.1", lmtp=True, tls_on_connect=True).port == 24
        assert client_class("127.0.0.1").port == 25
        assert client_class("127.0.0.1", tls_on_connect=True).port == 465
        assert client_class("127.0.0.1", 2424, lmtp=True).port == 2424


def test_an_lmtp_client_refuses_port_25_when_it_is_built(adapter: str) -> None:
    """RFC 2033 §1: LMTP MUST NOT be used on TCP port 25, where an SMTP server would
    read LHLO as an error and an SMTP client take LMTP's replies for its own. A
    ValueError at once, not a session that cannot work."""
    from smtpcore import sync

    for client_class in (module(adapter).SMTPClient, sync.SMTPClient):
        with pytest.raises(ValueError, match=r"port 25 \(RFC 2033 §1\)"):
            client_class("127.0.0.1", 25, lmtp=True)


def test_one_str_for_the_auth_mechanisms_is_a_type_error(adapter: str) -> None:
    """``auth_mechanisms="PLAIN"`` would allow P, L, A, I and N, none of them a
    mechanism, and AUTH would fail at the first connection for want of a shared one."""
    from smtpcore import sync

    with pytest.raises(TypeError, match=r"auth_mechanisms=\['PLAIN'\]"):
        module(adapter).SMTPClient("127.0.0.1", 25, auth_mechanisms="PLAIN")
    with pytest.raises(TypeError, match="not one str"):
        sync.SMTPClient("127.0.0.1", 25, auth_mechanisms="PLAIN")


def test_a_compat32_message_is_sent_as_an_email_message(adapter: str) -> None:
    """``email.message_from_bytes`` gives a compat32 :class:`email.message.Message` by
    default, which ``smtplib.send_message`` takes: its headers give the envelope, its
    Bcc stays hidden, and it is not read as an iterable of content (its header names)."""
    handler = Sink()
    message = email.message_from_bytes(
        b"From: Alice <alice@abc.example>\nTo: bob@pqr.example\nBcc: dave@pqr.example\n"
        b"Subject: parsed\n\n.dotted line\nbody\n"
    )
    assert type(message) is email.message.Message
    with running_smtp_server(adapter, handler) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(message, host=server.host, port=server.port),
        )
        run(
            adapter,
            lambda: module(adapter).send_message(
                message,
                "carol@abc.example",
                ["erin@pqr.example"],
                host=server.host,
                port=server.port,
            ),
        )
    derived, given = handler.messages
    assert str(derived.sender) == "alice@abc.example"
    assert [str(r.mailbox) for r in derived.recipients] == ["bob@pqr.example", "dave@pqr.example"]
    assert [str(r.mailbox) for r in given.recipients] == ["erin@pqr.example"]
    for envelope in (derived, given):
        assert b"Bcc" not in envelope.content and b"dave" not in envelope.content
        assert envelope.content.endswith(b"\r\n.dotted line\r\nbody\r\n")
        assert b"\n" not in envelope.content.replace(b"\r\n", b"")


def test_an_internationalized_email_message_keeps_its_addresses_in_utf8(adapter: str) -> None:
    """RFC 6532 §3: with SMTPUTF8 the header fields are UTF-8 as they are; the RFC 2047
    encoded words the default policy writes may not stand in an address (§5)."""
    handler = Sink()
    message = email.message.EmailMessage()
    message["From"] = "Alice <alice@abc.example>"
    message["To"] = "Jörg <jörg@pqr.example>"
    message["Subject"] = "Grüße"
    message.set_content("Hallo Jörg\n")
    with running_smtp_server(adapter, handler) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(message, host=server.host, port=server.port),
        )
    [envelope] = handler.messages
    assert "SMTPUTF8" in envelope.mail_params
    assert [r.mailbox.local_part for r in envelope.recipients] == ["jörg"]
    assert "To: Jörg <jörg@pqr.example>\r\n".encode() in envelope.content
    assert b"=?utf-8?" not in envelope.content


def without_smtputf8(options: Any) -> ServerConnection:
    """A server machine that does not offer SMTPUTF8."""
    return ServerConnection(options.hostname, smtputf8=False)


def sent_with_and_without_smtputf8(
    adapter: str, message: email.message.Message, *envelope: Any
) -> tuple[Envelope, Any]:
    """``message`` (with the ``envelope`` given, if any) as a server offering SMTPUTF8
    receives it, and the refusal of one that does not offer it (which receives
    nothing)."""
    mod = module(adapter)
    handler, refusing = Sink(), Sink()
    with running_smtp_server(adapter, handler) as server:
        run(
            adapter,
            lambda: mod.send_message(message, *envelope, host=server.host, port=server.port),
        )
    with (
        running_smtp_server(adapter, refusing, connection_factory=without_smtputf8) as server,
        pytest.raises(mod.ExtensionNotOffered) as refused,
    ):
        run(
            adapter,
            lambda: mod.send_message(message, *envelope, host=server.host, port=server.port),
        )
    assert refusing.messages == []
    [envelope_received] = handler.messages
    return envelope_received, refused.value


def test_a_utf8_address_in_a_header_field_needs_smtputf8_whatever_the_envelope(
    adapter: str,
) -> None:
    """RFC 6532 §3 and RFC 2047 §5: a UTF-8 address in a header field goes as UTF-8, in an
    SMTPUTF8 transaction, even with an ASCII envelope given; to a server without
    SMTPUTF8 it is refused before MAIL (an encoded word in an address was sent)."""
    message = email.message.EmailMessage()
    message["From"] = "Alice <alice@abc.example>"
    message["To"] = "Jörg <jörg@pqr.example>"
    message.set_content("Hallo\n")
    envelope, refused = sent_with_and_without_smtputf8(
        adapter, message, "alice@abc.example", ["bob@pqr.example"]
    )
    assert "SMTPUTF8" in envelope.mail_params
    assert "To: Jörg <jörg@pqr.example>\r\n".encode() in envelope.content
    assert refused.code == 553 and "To field" in str(refused)


def test_a_utf8_policy_gives_utf8_fields_only_in_an_smtputf8_transaction(adapter: str) -> None:
    """RFC 6531 §3.2: UTF-8 header fields only to a server that offers SMTPUTF8, and then
    with SMTPUTF8 on MAIL; to one without it, the policy's utf8 gives way to RFC 2047
    encoded words (the fields were sent raw, without SMTPUTF8)."""
    message = email.message.EmailMessage(policy=email.policy.SMTPUTF8)
    message["From"] = "alice@abc.example"
    message["To"] = "bob@pqr.example"
    message["Subject"] = "Grüße"
    message.set_content("ascii body\n")
    mod = module(adapter)
    contents = []
    for offered in (True, False):
        handler = Sink()
        factory = None if offered else without_smtputf8
        with running_smtp_server(adapter, handler, connection_factory=factory) as server:
            run(adapter, lambda: mod.send_message(message, host=server.host, port=server.port))
        [envelope] = handler.messages
        assert ("SMTPUTF8" in envelope.mail_params) is offered
        contents.append(envelope.content)
    assert "Subject: Grüße\r\n".encode() in contents[0]
    assert contents[1].isascii() and b"Subject: =?utf-8?" in contents[1]


def test_a_latin1_display_name_needs_smtputf8_and_is_called_8_bit(adapter: str) -> None:
    """A Latin-1 display name from old mail refuses nothing in the envelope, but the
    field goes as it came, 8-bit: only in an SMTPUTF8 transaction (RFC 6532 §3), and a
    server without it refuses it before MAIL, naming 8-bit fields, not UTF-8 ones."""
    raw = b"From: J\xf6rg <alice@abc.example>\nTo: bob@pqr.example\n\nbody\n"
    message = email.message_from_bytes(raw)
    envelope, refused = sent_with_and_without_smtputf8(adapter, message)
    assert "SMTPUTF8" in envelope.mail_params
    assert b"From: J\xf6rg <alice@abc.example>\r\n" in envelope.content
    assert refused.code == 553 and "its 8-bit header fields" in str(refused)


@pytest.mark.parametrize("policy", [email.policy.default, email.policy.compat32])
def test_utf8_header_fields_parsed_from_bytes_need_smtputf8(
    adapter: str, policy: email.policy.Policy
) -> None:
    """A message parsed from bytes keeps its header fields as they came: raw UTF-8 goes
    only in an SMTPUTF8 transaction (RFC 6532 §3), and a server without SMTPUTF8
    refuses it before MAIL (553 5.6.7); it went raw with BODY=8BITMIME alone."""
    raw = "From: alice@abc.example\nTo: bob@pqr.example\nSubject: café\n\nbody\n".encode()
    message = email.message_from_bytes(raw, policy=policy)
    envelope, refused = sent_with_and_without_smtputf8(adapter, message)
    assert "SMTPUTF8" in envelope.mail_params
    assert "Subject: café\r\n".encode() in envelope.content
    assert refused.code == 553 and "UTF-8 header fields" in str(refused)
    # No header fields at all: the UTF-8 is the body's, which 8BITMIME carries.
    headless = email.message_from_bytes("\ncafé\n\nmore\n".encode(), policy=policy)
    mod, refusing = module(adapter), Sink()
    with running_smtp_server(adapter, refusing, connection_factory=without_smtputf8) as server:
        run(
            adapter,
            lambda: mod.send_message(
                headless, "a@abc.example", ["b@pqr.example"], host=server.host, port=server.port
            ),
        )
    [sent] = refusing.messages
    assert sent.mail_params.get("BODY") == "8BITMIME" and "SMTPUTF8" not in sent.mail_params


@pytest.mark.parametrize("policy", [email.policy.default, email.policy.compat32])
def test_utf8_addresses_parsed_from_bytes_give_an_smtputf8_envelope(
    adapter: str, policy: email.policy.Policy
) -> None:
    """RFC 6532 §3.2: an address field may hold UTF-8. compat32 (what
    ``email.message_from_bytes`` gives by default) keeps it as surrogate escapes,
    read back as the UTF-8 they stand for: the envelope is the fields' addresses, in
    an SMTPUTF8 transaction, and refused before MAIL by a server without SMTPUTF8."""
    raw = (
        "From: José <josé@abc.example>\nTo: Jörg <jörg@pqr.example>\n"
        "Cc: zoë@pqr.example\nSubject: hi\n\nbody\n"
    ).encode()
    message = email.message_from_bytes(raw, policy=policy)
    envelope, refused = sent_with_and_without_smtputf8(adapter, message)
    assert "SMTPUTF8" in envelope.mail_params
    assert str(envelope.sender) == "josé@abc.example"
    assert [str(r.mailbox) for r in envelope.recipients] == [
        "jörg@pqr.example",
        "zoë@pqr.example",
    ]
    assert "To: Jörg <jörg@pqr.example>\r\n".encode() in envelope.content
    assert refused.code == 553


@pytest.mark.parametrize("policy", [email.policy.default, email.policy.compat32])
@pytest.mark.parametrize("field", ["From", "To", "Bcc", "Reply-To"])
def test_an_address_field_that_is_not_utf8_is_a_value_error_naming_it(
    adapter: str, field: str, policy: email.policy.Policy
) -> None:
    """Octets that are not UTF-8 (a Latin-1 ``ö``) in an address cannot be read as
    an address (RFC 6532 §3.2 allows UTF-8 only): a ValueError naming the field,
    before anything is sent, rather than an address of U+FFFD, whatever the policy."""
    head = {"From": b"a@abc.example", "To": b"b@pqr.example"}
    head[field] = b"j\xf6rg@pqr.example"
    raw = b"".join(name.encode() + b": " + value + b"\n" for name, value in head.items())
    message = email.message_from_bytes(raw + b"Subject: hi\n\nbody\n", policy=policy)
    handler = Sink()
    with (
        running_smtp_server(adapter, handler) as server,
        pytest.raises(ValueError, match=f"{field} field") as raised,
    ):
        run(
            adapter,
            lambda: module(adapter).send_message(message, host=server.host, port=server.port),
        )
    assert "\ufffd" not in str(raised.value)
    assert handler.messages == []


def _envelope_of(message: email.message.Message, *given: Any) -> tuple[Mail, list[Rcpt]]:
    """The ``MAIL`` and ``RCPT`` commands ``send_message`` makes of ``message`` for a
    server offering 8BITMIME and SMTPUTF8, with the envelope ``given`` or derived."""
    from smtpcore._driver._smtp_envelope import Offer, build_envelope
    from smtpcore.smtp._extensions import ServerExtensions

    lines = ["mx.example", "8BITMIME", "SMTPUTF8"]
    offer = Offer.of(ServerExtensions.from_reply(Reply(250, lines)))
    sender, recipients = given or (None, None)
    envelope = build_envelope(offer, message, sender, recipients, None, None)
    return envelope.mail, list(envelope.rcpts)


_LATIN1_NAMES = (
    st.text("Jörg Müller ÅØßé", min_size=1, max_size=12)
    .map(lambda name: name.strip().encode("latin-1"))
    .filter(lambda name: name.strip() != name.strip().decode("ascii", "ignore").encode())
)


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([email.policy.compat32, email.policy.default]),
    st.sampled_from(["From", "Sender", "Reply-To", "Cc", "Resent-From", "Resent-To"]),
    _LATIN1_NAMES,
    # A field short enough not to be refolded: EmailPolicy cannot refold one that
    # holds octets that are not UTF-8 (UnicodeEncodeError in the standard library).
    sst.mailboxes(utf8=True, quoted=False, literals=False, at_limits=False).filter(
        lambda mailbox: len(str(mailbox).encode()) <= 40
    ),
    st.booleans(),
)
def test_octets_that_are_not_utf8_in_a_display_name_do_not_matter(
    policy: email.policy.Policy, field: str, name: bytes, mailbox: Mailbox, given_: bool
) -> None:
    """Old mail has Latin-1 display names (``From: J\\xf6rg <a@abc.example>``), sent as
    they came before RFC 6532. Only an address must be UTF-8 (§3.2): the envelope is
    the addresses, the caller's or the fields', whatever the field and the policy."""
    head = {
        "From": b"a@abc.example",
        "To": b"b@pqr.example",
        "Resent-Date": b"Mon, 1 Jan 2024 00:00:00 +0000",
        "Resent-From": b"r@abc.example",
        "Resent-To": b"c@pqr.example",
    }
    head[field] = b'"' + name + b'" <' + str(mailbox).encode() + b">"
    raw = b"".join(key.encode() + b": " + value + b"\n" for key, value in head.items())
    message = email.message_from_bytes(raw + b"\nbody\n", policy=policy)
    # Resent once: the envelope is the Resent- block's (RFC 5322 §3.6.6).
    expected_mail = mailbox if field == "Resent-From" else parse_mailbox("r@abc.example")
    expected_rcpts = [mailbox if field == "Resent-To" else parse_mailbox("c@pqr.example")]
    if given_:
        expected_mail = parse_mailbox("x@abc.example")
        mail, rcpts = _envelope_of(message, "x@abc.example", [str(expected_rcpts[0])])
    else:
        mail, rcpts = _envelope_of(message)
    assert mail.sender == expected_mail
    assert [rcpt.recipient for rcpt in rcpts] == expected_rcpts


@pytest.mark.parametrize("policy", [email.policy.default, email.policy.compat32])
@pytest.mark.parametrize("sender", ["Sender:", "Sender: undisclosed:;", "Sender:  (nobody)"])
def test_a_sender_field_without_an_address_falls_back_to_from(
    policy: email.policy.Policy, sender: str
) -> None:
    """An empty or group-only ``Sender`` names no mailbox: the envelope's sender comes
    from ``From``, as ``smtplib`` takes it (RFC 5322 §3.6.2 makes ``Sender`` the
    agent's, but one without an address says nothing)."""
    raw = f"{sender}\nFrom: A <a@abc.example>\nTo: b@pqr.example\n\nbody\n".encode()
    mail, _ = _envelope_of(email.message_from_bytes(raw, policy=policy))
    assert mail.sender == parse_mailbox("a@abc.example")
    nothing = email.message_from_bytes(b"Sender:\nFrom: undisclosed:;\nTo: b@pqr.example\n\n")
    with pytest.raises(ValueError, match="Sender and From have no address"):
        _envelope_of(nothing)


def test_a_resent_email_message_goes_to_its_resent_recipients(adapter: str) -> None:
    """RFC 5322 §3.6.6: a message resent once goes from the Resent-From (or Resent-Sender)
    to the Resent-To, -Cc and -Bcc, as smtplib sends it, not back to its first
    recipients; with more than one resent block the envelope must be given."""
    handler = Sink()
    message = email.message.EmailMessage()
    message["From"] = "alice@abc.example"
    message["To"] = "first@pqr.example"
    message["Resent-Date"] = "Sat, 05 Dec 2026 12:00:00 +0000"
    message["Resent-From"] = "forwarder@abc.example"
    message["Resent-To"] = "new@pqr.example"
    message["Resent-Bcc"] = "hidden@pqr.example"
    message.set_content("forwarded\n")
    mod = module(adapter)
    with running_smtp_server(adapter, handler) as server:
        run(adapter, lambda: mod.send_message(message, host=server.host, port=server.port))
        message["Resent-Date"] = "Sun, 06 Dec 2026 12:00:00 +0000"
        with pytest.raises(ValueError, match="more than one Resent- block"):
            run(adapter, lambda: mod.send_message(message, host=server.host, port=server.port))
        # Given, the envelope says which block is meant.
        run(
            adapter,
            lambda: mod.send_message(
                message, "x@abc.example", ["y@pqr.example"], host=server.host, port=server.port
            ),
        )
    envelope, given = handler.messages
    assert [str(r.mailbox) for r in given.recipients] == ["y@pqr.example"]
    assert str(envelope.sender) == "forwarder@abc.example"
    assert [str(r.mailbox) for r in envelope.recipients] == [
        "new@pqr.example",
        "hidden@pqr.example",
    ]
    assert b"hidden" not in envelope.content and b"Resent-To: new@pqr.example" in envelope.content


@pytest.mark.parametrize(
    ("sink", "recipients", "error", "code"),
    [
        (Sink(refuse_mail=True), ["bob@pqr.example"], "SenderRefused", 550),
        (Sink(), ["eve@xyz.example"], "RecipientsRefused", 550),
        (Sink(refuse_message=True), ["bob@pqr.example"], "MessageRefused", 554),
    ],
    ids=["sender", "recipients", "message"],
)
def test_refusals_raise_typed_errors_carrying_the_reply(
    adapter: str, sink: Sink, recipients: list[str], error: str, code: int
) -> None:
    with (
        running_smtp_server(adapter, sink) as server,
        pytest.raises(getattr(module(adapter), error)) as info,
    ):
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE, "a@abc.example", recipients, host=server.host, port=server.port
            ),
        )
    assert info.value.reply.code == code
    assert isinstance(info.value, module(adapter).SMTPError)


def test_one_session_carries_several_messages(adapter: str) -> None:
    handler = Sink()

    async def send_three(port: int) -> list[int]:
        delivered = []
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            for n in range(3):
                body = b"Subject: %d\r\n\r\nbody\r\n" % n
                result = await client.send_message(body, "a@abc.example", "bob@pqr.example")
                delivered.append(len(result.delivered))
            with pytest.raises(module(adapter).RecipientsRefused):
                await client.send_message(MESSAGE, "a@abc.example", "eve@xyz.example")
            result = await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            delivered.append(len(result.delivered))
        return delivered

    with running_smtp_server(adapter, handler) as server:
        assert run(adapter, lambda: send_three(server.port)) == [1, 1, 1, 1]
    assert len(handler.sessions) == 1
    assert [e.content[:11] for e in handler.messages[:3]] == [
        b"Subject: 0\r",
        b"Subject: 1\r",
        b"Subject: 2\r",
    ]


def test_a_second_call_while_one_is_in_progress_is_refused_at_once(adapter: str) -> None:
    """A session is one conversation: a message sent from a second task while the first
    waits for its reply is refused before anything goes out (the two would interleave
    their commands and read each other's replies), and the first goes on as if alone."""
    mod = module(adapter)
    held = HeldAnswer()

    greet = "S: 220 scripted.test ESMTP\nC~ EHLO .+\nS: 250 scripted.test\n"
    steps = [
        *script(greet + "C: NOOP"),
        held.step,
        *script("S: 250 2.0.0 ok\nC: QUIT\nS: 221 bye"),
    ]

    async def session(port: int) -> None:
        async with mod.SMTPClient("127.0.0.1", port) as client:

            async def meanwhile() -> None:
                await until(adapter, held.asked)
                try:
                    with pytest.raises(LocalProtocolError, match="another call is in progress"):
                        await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
                    with pytest.raises(LocalProtocolError, match="another call is in progress"):
                        await client.quit()
                finally:
                    held.release.set()

            reply = await alongside(adapter, client.noop, meanwhile)
            assert reply.code == 250

    with ScriptedServer(steps) as server:
        run(adapter, lambda: session(server.port))


def test_starttls_verifies_the_certificate(adapter: str, tls: TLSFiles) -> None:
    handler = Sink()
    with running_smtp_server(adapter, handler, ssl_context=tls.server_context) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                "bob@pqr.example",
                host="127.0.0.1",
                port=server.port,
                ssl_context=tls.client_context,
                starttls=True,
            ),
        )
        assert handler.sessions[0].tls is not None
        # The default context trusts the system's CAs only: our test CA is refused.
        with pytest.raises(module(adapter).SMTPConnectionError, match="certificate"):
            run(
                adapter,
                lambda: module(adapter).send_message(
                    MESSAGE, "a@abc.example", "bob@pqr.example", host="127.0.0.1", port=server.port
                ),
            )
    assert len(handler.messages) == 1


def test_starttls_required_but_not_offered(adapter: str) -> None:
    with (
        running_smtp_server(adapter, Sink()) as server,
        pytest.raises(module(adapter).TLSNotAvailable),
    ):
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                "b@pqr.example",
                host=server.host,
                port=server.port,
                starttls=True,
            ),
        )


#: Offers STARTTLS, answers it with 454 (RFC 3207 §4), then takes the message in plaintext.
STARTTLS_REFUSED = """
S: 220 scripted.test ESMTP
C~ EHLO .+
S: 250-scripted.test
S: 250-ENHANCEDSTATUSCODES
S: 250 STARTTLS
C: STARTTLS
S: 454 4.7.0 TLS not available due to temporary reason
"""
PLAINTEXT_MESSAGE = """
C: MAIL FROM:<a@abc.example>
S: 250 2.1.0 ok
C: RCPT TO:<bob@pqr.example>
S: 250 2.1.5 ok
C: DATA
S: 354 go
C: Subject: plain
C:
C: body
C: .
S: 250 2.0.0 queued
C: QUIT
S: 221 2.0.0 bye
"""


def _send_over(flavour: str, port: int, **options: Any) -> tuple[Reply | None, bool]:
    """Send one message with the ``flavour`` client (``asyncio``, ``trio`` or ``sync``);
    what it reports of a STARTTLS refusal, and whether the session had TLS."""
    message = b"Subject: plain\r\n\r\nbody\r\n"
    if flavour == "sync":
        with SyncSMTPClient("127.0.0.1", port, timeout=5, **options) as blocking:
            blocking.send_message(message, "a@abc.example", "bob@pqr.example")
            return blocking.starttls_refused, blocking.connection.tls

    async def session() -> tuple[Reply | None, bool]:
        async with module(flavour).SMTPClient("127.0.0.1", port, **options) as client:
            await client.send_message(message, "a@abc.example", "bob@pqr.example")
            return client.starttls_refused, client.connection.tls

    return run(flavour, session)


@pytest.mark.parametrize("flavour", [*ADAPTERS, "sync"])
def test_opportunistic_starttls_refused_with_454_goes_on_in_plaintext(flavour: str) -> None:
    """RFC 3207 §4: after a 454 "the client must decide whether or not to continue";
    ``starttls=None`` (use it when offered) continues on the same connection, as
    Postfix's ``smtp_tls_security_level = may`` does, and says so in
    ``starttls_refused``."""
    with ScriptedServer(script(STARTTLS_REFUSED + PLAINTEXT_MESSAGE)) as server:
        refused, tls = _send_over(flavour, server.port)
    assert refused is not None and refused.code == 454 and not tls
    assert str(refused.status) == "4.7.0"


@pytest.mark.parametrize("flavour", [*ADAPTERS, "sync"])
def test_required_starttls_refused_with_454_is_an_error(flavour: str) -> None:
    """``starttls=True``: a refused STARTTLS ends the session, with QUIT (RFC 5321
    §4.1.1.10), its reply not awaited; nothing goes in plaintext."""
    errors = importlib.import_module(f"smtpcore.{flavour}")
    steps = [*script(STARTTLS_REFUSED + "C: QUIT\n"), ExpectClose()]
    with (
        ScriptedServer(steps) as server,
        pytest.raises(errors.SMTPReplyError, match="454") as raised,
    ):
        _send_over(flavour, server.port, starttls=True)
    assert raised.value.command == "STARTTLS"


@pytest.mark.parametrize("flavour", [*ADAPTERS, "sync"])
def test_opportunistic_starttls_refused_with_credentials_to_send_is_an_error(
    flavour: str,
) -> None:
    """With a login to make, a refused STARTTLS ends the session as ``starttls=True``
    does, naming the refusal: going on would send the credentials in plaintext (or be
    stopped by ``allow_plaintext_auth`` with a message that hides the 454). QUIT goes
    before the close."""
    errors = importlib.import_module(f"smtpcore.{flavour}")
    steps = [*script(STARTTLS_REFUSED + "C: QUIT\n"), ExpectClose()]
    with (
        ScriptedServer(steps) as server,
        pytest.raises(errors.SMTPReplyError, match="454") as raised,
    ):
        _send_over(flavour, server.port, username="anna", password="secret")
    assert raised.value.command == "STARTTLS"


def test_implicit_tls(adapter: str, tls: TLSFiles) -> None:
    handler = Sink()
    with running_smtp_server(
        adapter, handler, ssl_context=tls.server_context, tls_on_connect=True
    ) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                "bob@pqr.example",
                host="127.0.0.1",
                port=server.port,
                ssl_context=tls.client_context,
                tls_on_connect=True,
            ),
        )
    assert handler.sessions[0].tls is not None and len(handler.messages) == 1


#: Answers STARTTLS with the 220 and, in the same write, a forged EHLO reply.
INJECTING = [
    *script(
        """
S: 220 fake.test ESMTP
C~ EHLO .+
S: 250-fake.test
S: 250-PIPELINING
S: 250 STARTTLS
C: STARTTLS
"""
    ),
    Send(b"220 2.0.0 go ahead\r\n250-fake.test\r\n250 AUTH PLAIN\r\n"),
    *script(
        """
-- starttls
C~ EHLO .+
S: 250-fake.test
S: 250 SIZE 1000
C: QUIT
S: 221 bye
"""
    ),
]


def test_starttls_ignores_replies_injected_before_the_handshake(
    adapter: str, tls: TLSFiles
) -> None:
    async def session(port: int) -> dict[str, tuple[str, ...]]:
        client = module(adapter).SMTPClient("127.0.0.1", port, ssl_context=tls.client_context)
        async with client:
            return dict(client.connection.extensions)

    with ScriptedServer(INJECTING, ssl_context=tls.server_context) as server:
        extensions = run(adapter, lambda: session(server.port))
    assert "SIZE" in extensions and "AUTH" not in extensions


#: Answers STARTTLS with the 220 and closes before the handshake.
CLOSING_IN_HANDSHAKE = [
    *script(
        """
S: 220 fake.test ESMTP
C~ EHLO .+
S: 250-fake.test
S: 250 STARTTLS
C: STARTTLS
S: 220 2.0.0 go ahead
"""
    ),
    Close(),
]


def test_a_server_closing_in_the_handshake_is_named_in_the_error(
    adapter: str, tls: TLSFiles
) -> None:
    """asyncio raises a bare ``ConnectionResetError()`` for a peer that closes in the
    TLS handshake; the client's error still says why, never a bare "failed: "."""

    async def session(port: int) -> None:
        client = module(adapter).SMTPClient("127.0.0.1", port, ssl_context=tls.client_context)
        async with client:
            pass

    with (
        ScriptedServer(CLOSING_IN_HANDSHAKE) as server,
        pytest.raises(module(adapter).SMTPConnectionError) as raised,
    ):
        run(adapter, lambda: session(server.port))
    reason = str(raised.value).removeprefix("TLS handshake failed:").strip()
    assert reason, str(raised.value)
    assert raised.value.local is False


def test_greeting_timeout(adapter: str) -> None:
    """A server that never greets: the client gives up and closes, having sent nothing."""
    with (
        ScriptedServer([ExpectClose()]) as server,
        pytest.raises(module(adapter).SMTPTimeout),
    ):
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "a@abc.example",
                "b@pqr.example",
                host="127.0.0.1",
                port=server.port,
                timeouts=Timeouts(greeting=0.3),
            ),
        )


def test_connection_refused(adapter: str) -> None:
    port = free_port("127.0.0.1")  # nothing listens there
    with pytest.raises(module(adapter).SMTPConnectionError):
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE, "a@abc.example", "b@pqr.example", host="127.0.0.1", port=port
            ),
        )


def test_mail_and_rcpt_parameters_reach_the_server(adapter: str) -> None:
    """DSN parameters (RFC 3461) as smtplib's mail_options and rcpt_options: the
    same for every RCPT, or per recipient through a function."""
    handler = Sink()
    with running_smtp_server(adapter, handler, dsn=True) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "alice@abc.example",
                ["bob@pqr.example", "carol@pqr.example"],
                host=server.host,
                port=server.port,
                mail_params={"RET": "HDRS", "ENVID": "QQ314159"},
                rcpt_params=lambda rcpt: {
                    "NOTIFY": "FAILURE,DELAY",
                    "ORCPT": "rfc822;" + xtext(f"{rcpt.local_part}+tag@pqr.example"),
                },
            ),
        )
    [envelope] = handler.messages
    assert dict(envelope.mail_params) == {
        "SIZE": str(len(MESSAGE)),  # the client's own, beside the given ones
        "RET": "HDRS",
        "ENVID": "QQ314159",
    }
    assert [dict(r.params) for r in envelope.recipients] == [
        {"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;bob+2Btag@pqr.example"},
        {"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;carol+2Btag@pqr.example"},
    ]


def test_parameters_the_server_was_not_offered_or_malformed_are_never_sent(
    adapter: str,
) -> None:
    """RFC 5321 §2.2.2: no parameter of an extension the server did not offer; and no
    value that could smuggle a line. Both fail before MAIL, and the session goes on."""
    handler = Sink()

    async def attempts(port: int) -> list[str]:
        errors = module(adapter)
        seen = []
        async with errors.SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(errors.ExtensionNotOffered) as refused:
                await client.send_message(
                    MESSAGE, "a@abc.example", "bob@pqr.example", rcpt_params={"NOTIFY": "NEVER"}
                )
            seen.append(refused.value.extension)
            for bad in ({"X-TAG": "a\r\nRCPT TO:<eve@xyz.example>"}, {"X TAG": None}):
                with pytest.raises(LocalProtocolError):
                    await client.send_message(
                        MESSAGE, "a@abc.example", "bob@pqr.example", mail_params=bad
                    )
            result = await client.send_message(MESSAGE, "a@abc.example", "bob@pqr.example")
            seen.append(str(len(result.delivered)))
        return seen

    with running_smtp_server(adapter, handler) as server:  # no DSN offered
        assert run(adapter, lambda: attempts(server.port)) == ["DSN", "1"]
    [envelope] = handler.messages  # only the last one: nothing else reached MAIL
    assert "NOTIFY" not in envelope.recipients[0].params


def test_a_file_refused_before_its_content_went_is_where_it_was(
    adapter: str, tmp_path: Path
) -> None:
    """A file is not read before the server takes the content (only an iterator's
    first piece is): refused at MAIL, it stands where the caller left it, and the
    same file sent again (to another server) goes whole."""
    path = tmp_path / "message.eml"
    path.write_bytes(b"skipped" + MESSAGE)
    refusing, taking = Sink(refuse_mail=True), Sink()
    mod = module(adapter)
    with (
        path.open("rb") as file,
        running_smtp_server(adapter, refusing) as first,
        running_smtp_server(adapter, taking) as second,
    ):
        file.seek(len(b"skipped"))
        with pytest.raises(mod.SenderRefused):
            run(
                adapter,
                lambda: mod.send_message(
                    file, "a@abc.example", "b@pqr.example", host=first.host, port=first.port
                ),
            )
        assert file.tell() == len(b"skipped")
        run(
            adapter,
            lambda: mod.send_message(
                file, "a@abc.example", "b@pqr.example", host=second.host, port=second.port
            ),
        )
    assert [m.content for m in taking.messages] == [MESSAGE]


def test_malformed_dsn_values_are_refused_before_mail(adapter: str) -> None:
    async def attempt(port: int) -> None:
        async with module(adapter).SMTPClient("127.0.0.1", port) as client:
            with pytest.raises(LocalProtocolError, match="NOTIFY"):
                await client.send_message(
                    MESSAGE,
                    "a@abc.example",
                    "bob@pqr.example",
                    rcpt_params={"NOTIFY": "NEVER,SUCCESS"},
                )
            with pytest.raises(LocalProtocolError, match="RET"):
                await client.send_message(
                    MESSAGE, "a@abc.example", "bob@pqr.example", mail_params={"RET": "ALL"}
                )

    with running_smtp_server(adapter, Sink(), dsn=True) as server:
        run(adapter, lambda: attempt(server.port))


def test_given_parameters_take_the_place_of_the_clients_own(adapter: str) -> None:
    handler = Sink()
    with running_smtp_server(adapter, handler) as server:
        run(
            adapter,
            lambda: module(adapter).send_message(
                MESSAGE,
                "alice@abc.example",
                "bob@pqr.example",
                host=server.host,
                port=server.port,
                mail_params={"size": "99999", "BODY": "8BITMIME"},
            ),
        )
    [envelope] = handler.messages
    assert dict(envelope.mail_params) == {"SIZE": "99999", "BODY": "8BITMIME"}


@pytest.mark.parametrize("sender", ["", "<>"])
@pytest.mark.parametrize("recipient", ["brendon@pqr.example", "<brendon@pqr.example>"])
def test_a_sender_and_recipients_in_angle_brackets_are_read_as_smtplib_reads_them(
    sender: str, recipient: str
) -> None:
    """``sendmail("<>", ...)``, as smtplib takes it for a bounce: ``"<>"`` is the null
    reverse-path (RFC 5321 §4.5.5) and an address in angle brackets is a path (§4.1.2),
    on the everyday path and the general one (a ``SIZE`` offer takes the general)."""
    from smtpcore._driver._smtp_envelope import Offer, build_envelope
    from smtpcore.smtp._extensions import ServerExtensions

    for lines in (["mx.example"], ["mx.example", "SIZE 1000"]):
        offer = Offer.of(ServerExtensions.from_reply(Reply(250, lines)))
        envelope = build_envelope(
            offer, b"Subject: x\r\n\r\nbody\r\n", sender, [recipient], None, None
        )
        assert envelope.mail.sender is None
        assert [str(rcpt.recipient) for rcpt in envelope.rcpts] == ["brendon@pqr.example"]


def test_the_null_path_is_no_recipient() -> None:
    from smtpcore._driver._smtp_envelope import Offer, build_envelope
    from smtpcore.smtp._extensions import ServerExtensions

    offer = Offer.of(ServerExtensions.from_reply(Reply(250, ["mx.example"])))
    with pytest.raises(AddressError, match="null path"):
        build_envelope(offer, b"Subject: x\r\n\r\nbody\r\n", "", ["<>"], None, None)
