"""The mail transaction of a server session: MAIL, RCPT, RSET (RFC 5321 §3.3).

The checks a MAIL or RCPT passes once it is in sequence (TLS or AUTH required,
its parameters, SMTPUTF8 for a UTF-8 path, the recipient limit), and what an
accepted one changes: the transaction's SMTPUTF8 and BINARYMIME flags and the
recipients counted. Apart from the other layers of
:class:`~smtpcore.smtp.ServerConnection` (see ``smtp/_server.py``) because the
transaction's state is set and cleared here alone (the hot paths that clear it
without a call say so, and a test holds them to :meth:`_reset_transaction`).
"""

from __future__ import annotations

from typing import Final

from smtpcore._words import ascii_upper
from smtpcore.smtp._commands import reply
from smtpcore.smtp._events import Data, Mail, Rcpt, Rset
from smtpcore.smtp._everyday_params import SIZE_BIT, SMTPUTF8_BIT
from smtpcore.smtp._ext import Body
from smtpcore.smtp._extension import entry_failed
from smtpcore.smtp._replies import Reply
from smtpcore.smtp._server_config import Readers
from smtpcore.smtp._server_hello import HelloLayer
from smtpcore.smtp._state import State

_TRANSACTION_STATES: Final = frozenset({State.MAIL, State.RCPT, State.BDAT})
_TOO_MANY_RECIPIENTS: Final = reply(452, "4.5.3", "Too many recipients")
_MAIL_REFUSED: Final = -1
"""What ``_accepted`` holds from a MAIL refused until the transaction state is next
reset (a MAIL accepted, RSET, a hello, STARTTLS, XCLIENT): no transaction is open, and
the RCPT, DATA and BDAT a pipelining client sent behind that MAIL (RFC 2920 §3.1) get
``503`` as the normal course of pipelining. Held in ``_accepted`` so that every point
that resets the recipients counted clears it, at no cost to the everyday path."""
_BINARY_NEEDS_BDAT: Final = reply(503, "5.5.1", "BINARYMIME content must be sent with BDAT")
_BINARYMIME: Final = Body.BINARYMIME.value


class TransactionLayer(HelloLayer):
    """The open transaction: its checks, and what its commands change."""

    __slots__ = ()

    @property
    def accepted_recipients(self) -> int:
        """How many RCPTs of the open transaction were accepted."""
        return max(self._accepted, 0)  # not _MAIL_REFUSED: no transaction, no recipient

    # A command's own checks, once it is known and in sequence (see _CHECKS in
    # smtp/_server.py; AUTH's is AuthLayer's).

    def _check_data(self, command: Data, line: bytes) -> Reply | None:
        return _BINARY_NEEDS_BDAT if self._binary_transaction else None  # RFC 3030 §3

    def _check_mail(self, command: Mail, line: bytes) -> Reply | None:
        """Without SMTPUTF8 the whole path must be ASCII (RFC 6531 §3.3: U-labels and
        UTF-8 local parts need it), a source route too, though the parser drops the
        route (RFC 5321 §4.1.2 At-domain): so the line is asked, in C, rather than the
        mailbox. Its parameters are ASCII by then: the everyday ones always are, and
        the general check answers a UTF-8 value with 501 first."""
        config = self._config
        if config.require_tls and not self.tls:
            return reply(530, "5.7.0", "Must issue a STARTTLS command first")
        if config.require_auth and not self.authenticated:
            return reply(530, "5.7.0", "Authentication required")
        # The parameters' pairs, read in place: Parameters' own methods cost a call each.
        params = command.params
        items = params._items
        utf8 = False
        if items:
            if not self.extended:
                return reply(555, "5.5.4", "MAIL parameters need EHLO")
            everyday = params._everyday
            limit = config.max_message_size
            if everyday & SIZE_BIT and limit and int(items[0][1] or "") > limit:
                everyday = 0  # SIZE, always first, over the limit: the general path words it
            if everyday and not everyday & ~config.tables.everyday_mail:
                # Everyday parameters (smtp/_everyday_params.py): each a value its
                # extension takes, and every one of them in force.
                utf8 = everyday & SMTPUTF8_BIT != 0
            else:
                for keyword, _ in items:
                    if keyword == "SMTPUTF8":
                        utf8 = True
                problem = self._check_parameters(items, config.tables.mail_readers, utf8)
                if problem is not None:
                    return problem
        if not utf8 and not line.isascii():
            return reply(553, "5.6.7", "Non-ASCII sender address needs SMTPUTF8")
        return None

    def _check_rcpt(self, command: Rcpt, line: bytes) -> Reply | None:
        """The parameters first, then the recipient limit, as Postfix's ``rcpt_cmd``
        does: a broken RCPT gets its 5xx in any state, a 452 (RFC 5321 §4.5.3.1.10)
        would tell the client to send it again in the next transaction (§4.5.3.1.8's
        "chunks"). Outside an
        SMTPUTF8 transaction the whole path must be ASCII, its source route too: the
        line is asked, as in :meth:`_check_mail`."""
        config = self._config
        params = command.params
        items = params._items
        if items:
            everyday = params._everyday
            if not (everyday and self.extended and not everyday & ~config.tables.everyday_rcpt):
                problem = self._check_parameters(
                    items, config.tables.rcpt_readers, self._utf8_transaction
                )
                if problem is not None:
                    return problem
        if self._accepted >= config.max_recipients:
            return _TOO_MANY_RECIPIENTS
        if not self._utf8_transaction and not line.isascii():
            return reply(553, "5.6.7", "Non-ASCII recipient address needs SMTPUTF8")
        return None

    def _check_parameters(
        self, items: tuple[tuple[str, str | None], ...], readers: Readers, utf8: bool
    ) -> Reply | None:
        """Each parameter read by the entry it belongs to, if that is in force (RFC 5321
        §4.1.2: 555 for one the server does not know); UTF-8 in a value only in an
        SMTPUTF8 transaction (RFC 6531 §3.3), and only where the parameter's grammar
        has room for it (:attr:`Parameter.takes_utf8
        <smtpcore.smtp.Parameter.takes_utf8>`): elsewhere the reader refuses it in
        its own words, whatever the transaction."""
        for keyword, value in items:
            known = readers.get(keyword)
            if known is None or not self.extended:
                return reply(555, "5.5.4", f"Unsupported parameter {keyword}")
            entry, parameter = known
            # The readers hold offered entries only: what in_force() asks beyond that,
            # asked only of an entry that has requirements or depends on another.
            if (entry.requires and entry.unmet(self) is not None) or (
                entry.depends and not all([self.in_force(needed) for needed in entry.depends])
            ):
                return reply(555, "5.5.4", f"Unsupported parameter {keyword}")
            utf8_value = value is not None and not value.isascii()
            if utf8_value and not utf8 and parameter.takes_utf8:
                return reply(501, "5.5.4", f"Non-ASCII {keyword} value needs SMTPUTF8")
            read = parameter.read
            if read is None:
                problem = parameter.refusal(self, value)
            else:
                try:
                    problem = read(self, value)
                except Exception as exc:
                    raise entry_failed(f"the {keyword} parameter's read", exc) from exc
            if problem is None and utf8_value and not parameter.takes_utf8:
                # Its reader should have refused it: the entry's word holds all the same.
                problem = reply(501, "5.5.4", f"Malformed {keyword} value")
            if problem is not None:
                if not isinstance(problem, Reply):  # the application's entry, mistyped
                    raise entry_failed(
                        f"the {keyword} parameter's check gave {problem!r}, not a Reply or None"
                    )
                return problem
        return None

    @property
    def binary_transaction(self) -> bool:
        """The open transaction's MAIL said ``BODY=BINARYMIME`` (RFC 3030 §3): its
        content is octets with no line rules, and comes only in BDAT chunks."""
        return self._binary_transaction

    def _mail_accepted(self, command: Mail, event: Reply) -> None:
        # A new transaction: every field of _reset_transaction set here, without the
        # call, but the XFORWARD attributes, given before MAIL for this transaction.
        self._accepted = self._overshoot = 0
        params = command.params
        everyday = params._everyday
        if everyday or not params._items:  # never BODY=BINARYMIME
            self._utf8_transaction = everyday & SMTPUTF8_BIT != 0
            self._binary_transaction = False
            return
        utf8 = binary = False
        for keyword, value in params._items:  # in place, as _check_mail reads them
            if keyword == "SMTPUTF8":
                utf8 = True
            elif keyword == "BODY":
                binary = value is not None and ascii_upper(value) == _BINARYMIME
        self._utf8_transaction = utf8
        self._binary_transaction = binary

    def _rcpt_accepted(self, command: Rcpt, event: Reply) -> None:
        self._accepted += 1

    def _rset_accepted(self, command: Rset, event: Reply) -> None:
        # _reset_transaction's fields, set without the call.
        self._utf8_transaction = self._binary_transaction = False
        self._accepted = self._overshoot = 0
        self._forwarded_message = None

    def _reset_transaction(self) -> None:
        """The open transaction dropped, and everything that belonged to it: its
        SMTPUTF8 and BINARYMIME flags, the recipients counted, the XFORWARD attributes
        given for its message. Set in place too where every message passes (MAIL, RSET,
        the end of the content): a test holds each to this."""
        self._utf8_transaction = False
        self._binary_transaction = False
        self._accepted = 0
        self._overshoot = 0
        self._forwarded_message = None
