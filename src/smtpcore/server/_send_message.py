"""The message ``send`` sends and its envelope: read from a file or standard input,
or made from ``--subject`` and ``--body``; the envelope taken from its header fields
where ``--from`` or ``--to`` is not given, as ``sendmail -t`` takes it.

Apart from sending: what goes is settled here before any connection, so a message
that cannot give an envelope is a usage mistake
(:class:`~smtpcore.server.config.ConfigError`), never a server's refusal.
"""

from __future__ import annotations

import argparse
import email.header
import email.parser
import email.policy
import email.utils
import sys
from collections.abc import Sequence
from pathlib import Path

from smtpcore._driver._smtp_envelope_fields import recipient_fields, resent_prefix, sender_field
from smtpcore._driver._smtp_envelope_header import header_lines, unobsolete_names
from smtpcore.address import parse_mailbox
from smtpcore.server._send_checks import check_header_text
from smtpcore.server._tools_printable import printable
from smtpcore.server.config import ConfigError

__all__ = ["_envelope_form", "_envelope_from_headers", "_read_message", "make_test_message"]


def make_test_message(
    sender: str, recipients: Sequence[str], subject: str, body: str, hostname: str
) -> bytes:
    """A small RFC 5322 message for ``send`` without a file; a UTF-8 subject is
    encoded as RFC 2047 says, so the header stays ASCII."""
    check_header_text("--subject", subject)
    text = body if body.endswith("\n") else body + "\n"
    if not subject.isascii():
        subject = email.header.Header(subject, "utf-8").encode(linesep="\r\n")
    headers = [
        f"From: <{sender}>",
        f"To: {', '.join(f'<{r}>' for r in recipients)}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=True)}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    lines = [*headers, "", *text.splitlines()]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _envelope_from_headers(
    content: bytes, sender: str | None, recipients: list[str]
) -> tuple[str, list[str]]:
    """The envelope of a message where ``--from`` or ``--to`` is not given, as
    ``sendmail -t`` takes it and ``send_message`` does (one derivation: the library's,
    the ``Resent-`` fields of a message resent once included, said on stderr by
    :func:`_say_if_resent`), with the address fields read as the UTF-8 they may hold
    (RFC 6532 §3.2). With ``--to`` given, only a return address is asked: a message
    resent more than once, or whose resent block names no sender, gives its original
    one, as it always did. What cannot be read is a :class:`ConfigError`, its text
    printable (:func:`printable`: the fields are the message's, not the user's)."""
    head = unobsolete_names(header_lines(content))
    header = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    used: list[str] = []
    try:
        if sender is None:
            field, sender = sender_field(header, fall_back_to_original=bool(recipients))
            used.append(field)
        if not recipients:
            fields = recipient_fields(header)
            recipients = [address for addresses in fields.values() for address in addresses]
            used += fields
            if not recipients and resent_prefix(header):
                raise ValueError(
                    "the message was resent (RFC 5322 §3.6.6) and its Resent-To, "
                    "Resent-Cc and Resent-Bcc name no recipient"
                )
    except ValueError as exc:
        raise ConfigError(printable(f"{exc} (--from and --to give the envelope)")) from None
    _say_if_resent(used)
    return sender, recipients


def _say_if_resent(used: list[str]) -> None:
    """One line on stderr naming the ``Resent-`` fields the envelope came from (``used``
    names every field read), when the message was resent once (RFC 5322 §3.6.6): a
    saved message may hold a stale block, and its first recipients are then not the
    ones it goes to."""
    resent = [name for name in used if name.startswith("Resent-")]
    if resent:
        text = (
            f"the envelope comes from the message's {', '.join(resent)} (resent, RFC 5322 §3.6.6)"
        )
        print(printable(f"smtpcore send: {text}"), file=sys.stderr)


def _read_message(args: argparse.Namespace) -> bytes | None:
    if args.message is None:
        return None
    if args.message == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(args.message).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.message}: {exc.strerror}") from None


def _envelope_form(address: str) -> str:
    """``address`` (``""`` for the null path) as the envelope names it to a server
    without SMTPUTF8: a UTF-8 domain in A-labels. The test message's header fields
    name their addresses so, or they would hold UTF-8 that only SMTPUTF8 allows
    (RFC 6531 §3.2); an address with a UTF-8 local part needs SMTPUTF8 anyway."""
    return str(parse_mailbox(address).a_label_form) if address else address
