"""Who an end of content sent, its reply not come, may have delivered to.

RFC 5321 §6.1: once the final dot (or ``BDAT ... LAST``) has gone, a session that ends
before its reply (the connection lost, a timeout, the caller cancelled) leaves the
message's fate unknown for the recipients it covers; sending it again may deliver it
twice. The client's errors and :attr:`BaseSMTPClient.unanswered_end`, the relay's
deferrals and the ``send`` tool's Ctrl-C all ask here, so that they agree.
"""

from __future__ import annotations

from smtpcore.smtp import Bdat, ClientConnection, EndOfMessage, Mail, Rcpt, RecipientResult

__all__ = ["end_unanswered"]


def end_unanswered(connection: ClientConnection) -> list[RecipientResult]:
    """The recipients an end of content sent with its reply not read may have had the
    message delivered to: the machine records the end as it makes the bytes, just
    before they go out, and drops it as the reply is read (``pending``, oldest first).
    An end covers its own transaction's recipients only: those accepted with no reply
    after the content, when its ``MAIL`` was answered (the machine's ``transaction``
    is then that one), and those whose ``RCPT``, pipelined with it, is unanswered too
    (a LIMITS batch in one write, RFC 9422: the server may have accepted them). Not
    the recipients of a transaction before it, which ``transaction`` still names until
    its ``MAIL`` is answered."""
    covered: list[RecipientResult] = []
    opened = connection.transaction  # a transaction whose MAIL is answered
    unanswered: list[RecipientResult] = []
    for event in connection.pending:
        if isinstance(event, Mail):
            opened, unanswered = None, []
        elif isinstance(event, Rcpt):
            unanswered.append(RecipientResult(event.recipient))
        elif isinstance(event, EndOfMessage) or (isinstance(event, Bdat) and event.last):
            carried = () if opened is None else opened.accepted
            covered += [item for item in carried if item.delivery is None]
            covered += unanswered
            opened, unanswered = None, []
    return covered
