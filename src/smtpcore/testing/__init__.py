"""smtpcore.testing: a toolkit for testing and fuzzing mail software, in any language.

- :mod:`smtpcore.testing.strategies`: Hypothesis strategies for addresses,
  ESMTP parameters, commands, whole client sessions, message content,
  replies, POP3 sessions and responses, and network chunkings.
- :class:`ConnectionPair` and :class:`POP3ConnectionPair`: a client machine
  and a server machine back to back, recording both sides;
  :func:`run_server` and :func:`run_pop3_server` drive a server machine
  alone, answered by an application callable.
- :mod:`smtpcore.testing.check`: a battery of checks for any SMTP server.
- :mod:`smtpcore.testing.fuzz`: coverage-guided fuzzing of the machines.

Hypothesis is an optional extra (``pip install smtpcore[testing]``), needed
by the strategies; ``import smtpcore`` never imports this package.
"""

from smtpcore.testing._drive import (
    POP3Answer,
    SMTPAnswer,
    permissive_pop3_answer,
    permissive_smtp_answer,
    run_pop3_server,
    run_server,
)
from smtpcore.testing._pair import Answered, ConnectionPair, POP3ConnectionPair

__all__ = [
    "Answered",
    "ConnectionPair",
    "POP3Answer",
    "POP3ConnectionPair",
    "SMTPAnswer",
    "permissive_pop3_answer",
    "permissive_smtp_answer",
    "run_pop3_server",
    "run_server",
]
