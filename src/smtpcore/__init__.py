"""smtpcore: SMTP and POP3 as sans-I/O state machines.

The protocol machines live in :mod:`smtpcore.smtp` and :mod:`smtpcore.pop3`;
this package root holds only what both share.
"""

from smtpcore._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from smtpcore._lines import FramingPolicy
from smtpcore._sentinels import NEED_DATA, PAUSED
from smtpcore._version import __version__

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "FramingPolicy",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
]
