"""What a maildrop raises, apart from :mod:`smtpcore.maildrop` so that
:mod:`smtpcore._maildir_open` may raise it too without importing its own user.

The classes are public as ``smtpcore.maildrop.MaildropError`` and so on, and
say so in ``__module__``, which tracebacks, pickling and the documentation read.
"""

from __future__ import annotations

__all__ = ["MaildropError", "MaildropInUse", "MessageUnavailable"]


class MaildropError(Exception):
    """The maildrop cannot serve the session; the client gets ``-ERR [code] message``.

    ``code`` is an RFC 2449 §8 response code: ``SYS/TEMP`` (the default: try
    again later), ``SYS/PERM``, ``IN-USE`` or ``LOGIN-DELAY``, or ``None``. The
    server logs a code that is not one (``""``, ``"SYS/PERM "``) and leaves it out.

    ``logged`` says whether the store has told the log why already. It is False (a
    class attribute, so that a subclass that sets ``code`` without calling this
    ``__init__`` has it too), and the server logs the refusal, naming the hook that
    raised it. A store that has logged it (a :class:`~smtpcore.maildrop.Maildir`
    names the file or folder it could not read) sets it on the exception before
    raising it (``error.logged = True``), and the server adds no line of its own:
    every refusal leaves one trace, and only one.
    """

    logged: bool = False

    def __init__(self, message: str, code: str | None = "SYS/TEMP") -> None:
        super().__init__(message)
        self.code = code


class MaildropInUse(MaildropError):
    """Another session holds the maildrop's lock (RFC 1939 §8, RFC 2449 §8.1.1)."""

    def __init__(self, message: str = "Maildrop already locked by another session") -> None:
        super().__init__(message, "IN-USE")


class MessageUnavailable(MaildropError):
    """The message went away since the listing (another program removed it)."""

    def __init__(self, message: str = "Message no longer available") -> None:
        super().__init__(message, None)


for _error in (MaildropError, MaildropInUse, MessageUnavailable):
    _error.__module__ = "smtpcore.maildrop"
