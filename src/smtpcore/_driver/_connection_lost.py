"""The exception that ends a server session without another word.

Its own module: the served session's base class (:mod:`~smtpcore._driver._served_session`),
its parts (:mod:`~smtpcore._driver._session_opening`,
:mod:`~smtpcore._driver._session_closing`) and each protocol's session code all
raise or catch it, and none of them needs another for it.
"""

from __future__ import annotations

__all__ = ["ConnectionLost"]


class ConnectionLost(Exception):
    """The transport failed or the session must end: close without another word."""
