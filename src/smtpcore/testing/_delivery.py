"""Test messages the POP3 battery delivers over SMTP, and how it finds and judges them.

A user testing their own POP3 server need not load its maildrop by hand:
given an SMTP server that delivers into the same mailbox, the battery
submits a few messages, each built around one thing POP3 servers get wrong
in RETR and TOP (RFC 1939 §3: a line that is a lone dot, lines that start
with ``..`` or ``.x``, a 998-octet line, 8-bit octets), and one whose last
line is submitted without CRLF, which the SMTP client ends (RFC 5321
§4.1.1.4): that tests the MTA stores the last line ended and POP3 serves it
whole, not a last line stored unended, which submission with DATA cannot
make. The client is smtpcore's own public one (:mod:`smtpcore.sync`).

Each message starts with a marker header, ``X-Smtpcore-Check: <run>.<name>``,
unique to the run, so that the battery finds its messages among the user's
mail; the delivering MTA adds its trace fields (``Return-Path``,
``Received``) before the marker, so a message is compared from the marker on.
"""

from __future__ import annotations

import re
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from smtpcore._errors import ProtocolError
from smtpcore._ip import host_port
from smtpcore._secret import SECRET, secret_repr
from smtpcore.address import parse_mailbox
from smtpcore.sync import (
    AuthenticationNotAvailable,
    SMTPClient,
    SMTPError,
)
from smtpcore.testing._battery import insecure_context
from smtpcore.testing._hiding import credential_forms

__all__ = [
    "MARKER_FIELD",
    "DeliveredMessage",
    "Delivery",
    "DeliveryFailed",
    "checked_recipient",
    "first_difference",
    "marker_of",
    "delivery_messages",
]

MARKER_FIELD: Final = b"X-Smtpcore-Check"
"""The header field that marks the battery's messages (RFC 5322 §3.6.8, an optional field)."""

_MARKER_LINE: Final = re.compile(rb"^X-Smtpcore-Check: ([!-~]+)\r?$", re.MULTILINE | re.IGNORECASE)
_SENDER: Final = "check@smtpcore.test"
_HELO: Final = "check.smtpcore.test"
_EXCERPT: Final = 40


@dataclass(frozen=True)
class DeliveredMessage:
    """One test message: its ``name``, the ``marker`` that finds it, and its ``content``
    as the mailbox must hold it, from the marker on (CRLF line ends, a CRLF after the
    last line, as SMTP submits it: RFC 5321 §4.1.1.4)."""

    name: str
    marker: bytes
    content: bytes

    @property
    def body(self) -> bytes:
        """The content after the header section's blank line (RFC 5322 §2.1)."""
        return self.content.partition(b"\r\n\r\n")[2]


_BODIES: Final[dict[str, bytes]] = {
    "dot-lines": b".\r\n..\r\n.x\r\n...\r\n. \r\nend of the dots\r\n.\r\n",
    "no-final-crlf": b"the next line is the last, and is submitted without CRLF\r\nlast",
    "long-line": b"y" * 998 + b"\r\n." + b"z" * 997 + b"\r\nafter the long lines\r\n",
}
"""What each message's body exercises, by name: stuffing (a lone dot, ``..``, ``.x``, a
lone dot as the last line), a last line submitted without CRLF, which the client
ends (RFC 5321 §4.1.1.4), so that it is stored and served whole, the longest line
SMTP carries (998 octets, §4.5.3.1.6), once with a dot."""

_EIGHT_BIT_BODY: Final = (
    "caf\u00e9, na\u00efve, \u00fcber\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
)
"""Sent only where the SMTP server offers 8BITMIME (RFC 6152): UTF-8 text and every
octet from 0x80, which a server that strips the eighth bit changes."""


def delivery_messages(run: str, recipient: str, *, eight_bit: bool) -> list[DeliveredMessage]:
    """The run's messages, each headed by its marker and the fields an MTA adds when
    they are missing (``Message-ID``, ``Date``, ``From``, ``To``), so that it adds none after
    the marker."""
    bodies = dict(_BODIES)
    if eight_bit:
        bodies["eight-bit"] = _EIGHT_BIT_BODY
    return [_message(run, recipient, name, body) for name, body in bodies.items()]


def _message(run: str, recipient: str, name: str, body: bytes) -> DeliveredMessage:
    marker = f"{run}.{name}".encode()
    header = (
        MARKER_FIELD + b": " + marker + b"\r\n"
        b"Message-ID: <" + marker + b"@smtpcore.test>\r\n"
        b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n"
        b"From: <" + _SENDER.encode() + b">\r\n"
        b"To: <" + recipient.encode() + b">\r\n"
        b"Subject: smtpcore check-pop3 test message " + name.encode() + b"\r\n"
    )
    content = header + b"\r\n" + body
    ended = content if content.endswith(b"\r\n") else content + b"\r\n"
    return DeliveredMessage(name, marker, ended)


def _submitted(message: DeliveredMessage) -> bytes:
    """What goes over SMTP: the no-final-crlf message without its last CRLF, which the
    client adds with DATA (RFC 5321 §4.1.1.4): the delivery never uses BDAT, which
    carries the octets as given (RFC 3030 §2), so that the message is stored ended."""
    if message.name == "no-final-crlf":
        return message.content.removesuffix(b"\r\n")
    return message.content


def checked_recipient(recipient: str) -> None:
    """Refuse a ``deliver_to`` that is no mailbox RCPT TO can name (RFC 5321 §4.1.2)."""
    try:
        parse_mailbox(recipient)
    except ValueError as exc:
        raise ValueError(f"deliver_to {recipient!r} is no mailbox to deliver to: {exc}") from None


def marker_of(header: bytes) -> bytes | None:
    """The marker in a message's header section, or None."""
    found = _MARKER_LINE.search(header.partition(b"\r\n\r\n")[0])
    return found.group(1) if found else None


def first_difference(got: bytes, expected: bytes) -> str:
    """Where ``got`` first differs from ``expected``, with an excerpt of each around it."""
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    start = max(0, at - _EXCERPT // 2)
    return (
        f"at octet {at} of {len(expected)} (got {len(got)}): got "
        f"{got[start : at + _EXCERPT // 2]!r}, sent {expected[start : at + _EXCERPT // 2]!r}"
    )


class DeliveryFailed(Exception):
    """The SMTP server did not take the test messages; the text says why."""


@dataclass
class Delivery:
    """Where and how the battery delivers its test messages, and what it delivered.

    ``recipient`` is an RFC 5321 mailbox; ``user`` and ``password`` log in with
    AUTH when given; ``tls_context`` is used for STARTTLS where the server offers
    it; ``wait`` bounds, in seconds, how long the POP3 side waits for the
    messages to arrive (an MTA may queue them).
    """

    host: str
    port: int
    recipient: str
    user: str | None = None
    password: str | None = field(default=None, metadata=SECRET)
    tls_context: ssl.SSLContext | None = None
    wait: float = 10.0
    timeout: float = 10.0
    run: str = field(default_factory=lambda: secrets.token_hex(8))
    messages: list[DeliveredMessage] = field(default_factory=list)
    uids: dict[bytes, bytes] = field(default_factory=dict)
    """Each delivered message's unique-id by marker, where the server gives UIDL: what
    :func:`~smtpcore.testing._pop3_deletion.delete_delivered` deletes by."""
    sizes: dict[bytes, int | None] = field(default_factory=dict)
    """Each delivered message's size by LIST where the poll found it, by marker: with
    its unique-id, what tells the test message in a later session
    (:func:`~smtpcore.testing._pop3_mailbox.listed_before`'s rule)."""
    before: dict[bytes, int | None] = field(default_factory=dict)
    """The unique-ids listed before the messages were submitted, each with the size
    LIST gave its message (None where LIST gave none): a message listed under one at
    that size is one the session that confirms a deletion does not read."""
    uidl: bool | None = None
    """Whether the POP3 server answered UIDL when the messages were sought; None if
    they never were."""
    found: int = 0
    """How many of the messages the poll found, by marker, with UIDL or without: those
    it did not find may still arrive (an MTA that stores them past the wait)."""
    marked_before_quit: int = 0
    """How many test messages the delete session marked with DELE (answered ``+OK``)
    before it sent QUIT: those a server may have deleted (RFC 1939 §6) even where the
    session then failed; 0 where no QUIT followed a DELE."""

    __repr__ = secret_repr

    def __post_init__(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ValueError("give both deliver_user and deliver_password, or neither")
        checked_recipient(self.recipient)

    @property
    def markers(self) -> set[bytes]:
        return {message.marker for message in self.messages}

    def secrets(self) -> Sequence[bytes]:
        """What the delivery must never show: its password, in every form AUTH sends it
        (:func:`~smtpcore.testing._hiding.credential_forms`), which a server may quote."""
        if self.user is None or self.password is None:
            return ()
        return credential_forms(self.user, self.password)

    def _no_login(self, exc: AuthenticationNotAvailable) -> str:
        """Why AUTH was not tried, and what the user can do: the battery sends a password
        by PLAIN or LOGIN only under TLS (RFC 4954 §4), and has no switch to do otherwise."""
        where = f"the SMTP server {host_port(self.host, self.port)}"
        if exc.reply.code == 538:
            return (
                f"{where} offers no STARTTLS, and the AUTH mechanisms it offers need TLS: "
                "the battery does not send a password in the clear; give --deliver-via a "
                "port that offers STARTTLS (a submission port, 587), or leave out "
                "--deliver-user where the server takes the mail without AUTH"
            )
        text = exc.reply.text if isinstance(exc.reply.text, str) else " ".join(exc.reply.text)
        return (
            f"{where} offers no AUTH mechanism the battery can use ({text}); leave out "
            "--deliver-user where it takes the mail without AUTH"
        )

    def _login_failed(self, exc: Exception) -> str:
        """Why the AUTH exchange failed, by the reply's code and enhanced status only, or
        by the kind of failure where there is no reply: whatever ends the exchange (a
        535, a 421 that closes the session, RFC 5321 §3.8, a lost connection) may
        quote the credentials just sent (RFC 4954 §6 gives each code its meaning
        without the text), in forms the battery cannot all foresee."""
        reply = exc.reply if isinstance(exc, SMTPError) else None
        if reply is None:
            how = f"the exchange ended with {type(exc).__name__}"
        else:
            how = f"{reply.code}" + (f" {reply.status}" if reply.status is not None else "")
        return (
            f"the SMTP server {host_port(self.host, self.port)} refused AUTH as "
            f"{self.user}: {how} (its text is not shown: it may quote the password)"
        )

    def _log_in(self, client: SMTPClient) -> None:
        """AUTH as :attr:`user`, where one is given, as a step of its own: any failure
        in it is told by :meth:`_login_failed`. Only under TLS, where the server offers
        STARTTLS: a refused STARTTLS is no reason to send the password in the clear
        (RFC 3207 §4)."""
        if self.user is None or self.password is None:
            return
        refused = client.starttls_refused
        if refused is not None:
            raise DeliveryFailed(
                f"the SMTP server {host_port(self.host, self.port)} refused STARTTLS "
                f"({refused}): the battery does not log in without the TLS it offered"
            )
        try:
            client.login(self.user, self.password)
        except AuthenticationNotAvailable as exc:
            raise DeliveryFailed(self._no_login(exc)) from None
        except (SMTPError, ProtocolError, OSError, ValueError) as exc:
            raise DeliveryFailed(self._login_failed(exc)) from None

    def submit(self) -> list[DeliveredMessage]:
        """Submit the run's messages in one SMTP session; returns them, and keeps them
        in :attr:`messages`. Raises :class:`DeliveryFailed` saying why, never with
        the password: the login is a step of its own (:meth:`_log_in`)."""
        try:
            with SMTPClient(
                self.host,
                self.port,
                timeout=self.timeout,
                hostname=_HELO,
                ssl_context=self.tls_context or insecure_context(),
                chunking=False,
            ) as client:
                self._log_in(client)
                eight_bit = "8BITMIME" in client.connection.extensions
                messages = delivery_messages(self.run, self.recipient, eight_bit=eight_bit)
                for message in messages:
                    client.send_message(_submitted(message), _SENDER, [self.recipient])
                    self.messages.append(message)
        except (SMTPError, ProtocolError, OSError, ValueError) as exc:
            raise DeliveryFailed(
                f"delivering the test messages over SMTP to {host_port(self.host, self.port)} "
                f"failed after {len(self.messages)} of them: {exc}"
            ) from None
        return messages
