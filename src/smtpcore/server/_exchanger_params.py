"""The MAIL and RCPT parameters that go on with a queued message: those queued that the
exchanger can take (RFC 5321 §2.2.2; DSN's, RFC 3461 §6.2), the ``BODY`` and ``SIZE``
of what is sent, and ORCPT in a form the exchanger takes (RFC 6533 §3). Apart from
the session because each is a pure function of the message and the extensions
offered."""

from __future__ import annotations

from typing import Final

from smtpcore._driver import BaseSMTPClient
from smtpcore.server._exchanger_content import _BINARYMIME, _AsBinary, _Carried, _queued_binary
from smtpcore.server.downgrade import SevenBitReader
from smtpcore.server.log import loggable, logger
from smtpcore.server.queue import QueueEntry
from smtpcore.smtp import (
    DSNError,
    OriginalRecipient,
)
from smtpcore.smtp._dsn import MAX_ORCPT

__all__ = ["_declared_body", "_declared_size", "_forwarded_mail_params", "_passed_orcpt"]

_FORWARDED_MAIL_PARAMS: Final = frozenset({"SMTPUTF8", "RET", "ENVID", "REQUIRETLS"})
"""The queued MAIL parameters that travel on with the message. SIZE is the client's to
write for what it sends (the relay's for a converted message, :func:`_declared_size`),
and BODY the relay's for what it sends (:func:`_declared_body`); AUTH= is not passed on
to another domain."""


def _forwarded_mail_params(client: BaseSMTPClient, entry: QueueEntry) -> dict[str, str | None]:
    """The queued MAIL parameters the exchanger can take: each only where it offers the
    extension the parameter's entry names (RFC 5321 §2.2.2), so DSN's RET and ENVID go
    where it speaks DSN (RFC 3461 §6.2). A message that needs what is not offered
    (SMTPUTF8, 8-bit content, REQUIRETLS) was refused or sent elsewhere before this."""
    offered = client.connection.extensions
    return {
        keyword: value
        for keyword, value in entry.params
        if keyword in _FORWARDED_MAIL_PARAMS and offered.missing_for(keyword, value) is None
    }


def _declared_body(entry: QueueEntry, converted: _Carried) -> dict[str, str | None]:
    """``BODY=BINARYMIME`` where the content goes so (RFC 3030 §3; the client then sends
    it by BDAT, as it is): a message queued so, which
    :func:`~smtpcore.server._exchanger_content._needs_binarymime` let go only to an
    exchanger that offers BINARYMIME and CHUNKING, and 8-bit content to an exchanger
    that takes 8-bit octets only so (:class:`_AsBinary`).

    No other queued ``BODY`` goes on: the client declares ``BODY=8BITMIME`` itself to an
    8BITMIME exchanger, for any content read from the queue (8BITMIME allows 8-bit
    octets, it does not claim them), and to an exchanger that offers neither, no
    ``BODY`` is 7BIT, the content converted first where it holds 8-bit octets
    (:func:`~smtpcore.server._exchanger_content._carried`). A queued ``BODY=7BIT`` is
    the sender's word, which the server does not check: passed on, a message that said
    it but held 8-bit octets went to an 8BITMIME exchanger labelled 7BIT."""
    if _queued_binary(entry) or isinstance(converted, _AsBinary):
        return {"BODY": _BINARYMIME}
    return {}


def _declared_size(client: BaseSMTPClient, converted: _Carried) -> dict[str, str | None]:
    """``SIZE=`` for a message converted to 7-bit (exact), or sent as BINARYMIME with
    its line ends made CRLF (the queue file's size, an estimate), where the exchanger
    offers SIZE. The
    client declares the size of what it can measure (bytes, a file), not of a reader
    that converts as it is read; the planning pass knew that size exactly, and RFC 1870
    §6 wants the exchanger's limit checked before MAIL (the client refuses ``552
    5.3.4`` a declared size over it)."""
    if not isinstance(converted, (SevenBitReader, _AsBinary)):
        return {}
    size = str(converted.size)
    if client.connection.extensions.missing_for("SIZE", size) is not None:
        return {}
    return {"SIZE": size}


def _passed_orcpt(client: BaseSMTPClient, orcpt: str) -> str | None:
    """A queued ``ORCPT`` as it goes on: a raw UTF-8 one (utf-8-addr-unitext, taken in an
    SMTPUTF8 transaction) in its utf-8-addr-xtext form where the exchanger does not
    offer SMTPUTF8, which the unitext form needs (RFC 6533 §3).

    None when no form the exchanger can take exists: the escapes can grow a value past
    RFC 3461 §4.2's 500 characters (``to_parameter`` then writes it raw, which needs
    SMTPUTF8). RFC 3461 §5.2.1 asks that ORCPT go on, but it is information for a
    report, and the report this relay makes on a failure still carries it: the message
    goes without it rather than not at all."""
    passed: str | None = orcpt
    if not orcpt.isascii() and not client.connection.extensions.smtputf8:
        try:
            passed = OriginalRecipient.parse(orcpt, utf8=True).to_parameter()
        except DSNError:
            passed = None
        if passed is not None and not passed.isascii():
            passed = None
    if passed is None or len(passed) > MAX_ORCPT:
        logger.info(
            "ORCPT %s cannot go on in a form the exchanger takes; left off", loggable(orcpt)
        )
        return None
    return passed
