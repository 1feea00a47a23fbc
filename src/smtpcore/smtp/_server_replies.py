"""How a server session writes its answers: enhanced status codes and the error count.

Every answer but the everyday successes ends in :meth:`RepliesLayer._finish`:
the enhanced status a reply gets when the application gave none (RFC 2034 §3),
and whether a refusal counts toward ``max_errors`` (RFC 5321 §3.8) or was the
server's own failure. Apart from the layers that decide *which* answer is
legal (see ``smtp/_server.py``), because these rules hold for every command.
"""

from __future__ import annotations

from typing import Final

from smtpcore.smtp._events import (
    Auth,
    AuthResponse,
    BadCommand,
    Ehlo,
    Event,
    Helo,
    Lhlo,
    Mail,
    Rcpt,
    RejectedMessage,
    StartTls,
)
from smtpcore.smtp._ext.size import OVER_SIZE_LIMIT
from smtpcore.smtp._replies import EnhancedStatus, Reply
from smtpcore.smtp._server_options import OptionsLayer
from smtpcore.smtp._state import State

_Statuses = tuple[EnhancedStatus | None, ...]
_DEFAULT_STATUS: Final[_Statuses] = (
    *(None, None),
    EnhancedStatus(2, 0, 0),
    None,  # 3yz replies carry no enhanced status (RFC 2034 §3)
    EnhancedStatus(4, 0, 0),
    EnhancedStatus(5, 0, 0),
)
"""The enhanced status a reply gets when the application gave none, by its first digit."""
_SUCCESS: Final = _DEFAULT_STATUS[2]
_NO_STATUS: Final[_Statuses] = (None,) * 6
"""For the replies RFC 2034 §3 leaves without an enhanced status, whatever their code:
those to EHLO, HELO (and LHLO), as the greeting."""
_STATUS_FOR: Final[dict[type[Event | None], _Statuses]] = {
    **{
        command: (*_DEFAULT_STATUS[:2], success, *_DEFAULT_STATUS[3:])
        for command, success in (
            (Mail, EnhancedStatus(2, 1, 0)),
            (Rcpt, EnhancedStatus(2, 1, 5)),
            (Auth, EnhancedStatus(2, 7, 0)),
            (AuthResponse, EnhancedStatus(2, 7, 0)),
        )
    },
    Ehlo: _NO_STATUS,
    Helo: _NO_STATUS,
    Lhlo: _NO_STATUS,
}
"""As ``_DEFAULT_STATUS``, for the commands whose replies have statuses of their own."""
_MAIL_SYSTEM_SUBJECT: Final = 3
"""RFC 3463 §3.4's X.3.XXX, Mail System Status: "something having to do with the
destination system", under "the destination system administrator"'s control, caused
the reply (``451 4.3.0`` local error, ``452 4.3.1`` insufficient storage). Not §3.5's
X.4.XXX, Network and Routing Status: a ``451 4.4.3`` for a DNS lookup that failed for
now may answer a RCPT whose domain the client chose, lame name servers and all, and
each costs the server lookups, so it counts as Postfix counts every refusal."""
_TOO_BIG_FOR_SYSTEM: Final = 4
"""RFC 3463's X.3.4, "message too big for system": permanent, yet the server's own
failure when the message was within the SIZE it offered (a file size limit, ``EFBIG``),
unlike the machine's own :data:`OVER_SIZE_LIMIT`, which shares the status."""
_SERVER_UNAVAILABLE: Final = frozenset({(StartTls, 454), (Auth, 454), (AuthResponse, 454)})
"""Answers whose code alone says the server failed: ``454`` to STARTTLS (RFC 3207 §4,
"TLS not available due to temporary reason") and to AUTH (RFC 4954 §6, "a temporary
server failure")."""


def _servers_own_failure(answered: Event, event: Reply) -> bool:
    """Whether the refusal ``event`` of ``answered`` says the server failed, not the
    client: by its code alone (:data:`_SERVER_UNAVAILABLE`), or by a mail system status
    (:data:`_MAIL_SYSTEM_SUBJECT`), temporary (``4.3.X``) or ``5.3.4`` for a message
    the server could not hold (:data:`_TOO_BIG_FOR_SYSTEM`). The machine's own
    ``5.3.4``, for what was over ``max_message_size`` (:data:`OVER_SIZE_LIMIT`, the
    suggested reply of the :class:`BadCommand` or :class:`RejectedMessage` answered),
    is the client's: it was told the limit in SIZE. Any other 5xx is the client's."""
    if (type(answered), event.code) in _SERVER_UNAVAILABLE:
        return True
    status = event.status
    if status is None or status.subject != _MAIL_SYSTEM_SUBJECT:
        return False
    if event.code < 500:
        return True
    return status.detail == _TOO_BIG_FOR_SYSTEM and not (
        isinstance(answered, BadCommand | RejectedMessage) and answered.reply == OVER_SIZE_LIMIT
    )


class RepliesLayer(OptionsLayer):
    """Writing an answer: its enhanced status, and what it counts."""

    __slots__ = ()

    # Rarely used state: class attributes until a session sets its own (SessionLayer).
    _forgiven: BadCommand | None = None
    """The pending refusal of an excess recipient, which counts as no error."""

    def _close_with(self, event: Reply, *, greeting: bool = False) -> bytes:
        """A 421: the greeting's carries no enhanced status (RFC 2034 §3), nor one to a
        hello; any other the status it was given or its class's."""
        answered = self._pending
        self._state = State.CLOSED
        self._pending = None
        return event.to_bytes(None if greeting else self._status_for(answered, event))

    def _finish(self, answered: Event, event: Reply) -> bytes:
        code = event.code
        if code >= 400 and self._clients_error(answered, event):
            self._errors += 1
        if code == 421:
            self._state = State.CLOSED
        status = None
        if self._config.enhanced_status_codes:  # as _status_for, read here: every answer ends here
            statuses = _STATUS_FOR.get(type(answered), _DEFAULT_STATUS)
            if statuses is not _NO_STATUS:
                status = event.status if code < 300 or code >= 400 else None
                if status is None:
                    status = statuses[code // 100]
        for known, data in event._wire:  # Reply.to_bytes's memory, read without the call
            if known is status:
                return data
        return event.to_bytes(status)

    def _clients_error(self, answered: Event, event: Reply) -> bool:
        """Whether the refusal ``event`` of ``answered`` counts toward ``max_errors``: a
        limit on what the client does wrong (RFC 5321 §3.8's "erroneous commands").
        Excused: a refusal the machine forgave (:meth:`_behind_refused_mail`, an excess
        recipient: ``max_recipient_overshoot`` counts those), and one that says the
        server itself failed (:func:`_servers_own_failure`): a relay that sends its
        batch down one connection while the disk is full, a spool file cannot be made
        or a file size limit stops each message is not cut off, and banned, for the
        server's fault. A temporary DNS failure counts: the client may own the domain
        whose name servers do not answer."""
        if answered is self._forgiven:
            return False
        return not _servers_own_failure(answered, event)

    def _status_for(self, answered: Event | None, event: Reply) -> EnhancedStatus | None:
        """The enhanced status ``event`` is written with, answering ``answered`` (RFC
        2034 §3): the application's, or the one its code and command imply."""
        statuses = _STATUS_FOR.get(type(answered), _DEFAULT_STATUS)
        if (
            not self._config.enhanced_status_codes
            or 300 <= event.code < 400
            or statuses is _NO_STATUS
        ):
            return None
        if event.status is not None:
            return event.status
        return statuses[event.code // 100]
