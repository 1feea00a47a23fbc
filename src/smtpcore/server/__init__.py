"""The reference mail server behind ``python -m smtpcore serve``.

A thin layer over the library: everything protocol-shaped lives in
:mod:`smtpcore.smtp`, :mod:`smtpcore.pop3`, :mod:`smtpcore.routing` and the
adapters; this package owns storage (Maildirs, the outbound queue),
delivery with retries and bounces, and the command line.
"""

from smtpcore.server.config import ConfigError, ServerConfig
from smtpcore.server.mailserver import Listener, MailServer

__all__ = ["ConfigError", "Listener", "MailServer", "ServerConfig"]
