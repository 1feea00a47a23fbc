"""smtpcore.testing: a toolkit for testing and fuzzing mail software, in any language.

- :mod:`smtpcore.testing.strategies`: Hypothesis strategies for addresses,
  ESMTP parameters, commands, whole client sessions, message content,
  replies, POP3 sessions and responses, and network chunkings.
- :class:`ConnectionPair` and :class:`POP3ConnectionPair`: a client machine
  and a server machine back to back, recording both sides;
  :func:`run_server` and :func:`run_pop3_server` drive a server machine
  alone, answered by an application callable.
- :class:`ScriptedServer` and :class:`ScriptedClient`: a peer that plays a
  transcript (:func:`script`) over a loopback socket and fails with a diff
  when the other side departs from it.
- :class:`SMTPTestServer`: a real server in a background thread, for
  synchronous tests (``smtplib``), collecting messages in a list.
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
from smtpcore.testing._scripted import (
    Call,
    Close,
    Expect,
    ExpectClose,
    ScriptedClient,
    ScriptedConnection,
    ScriptedPeer,
    ScriptedServer,
    ScriptMismatch,
    Send,
    StartTLS,
    Step,
    script,
)
from smtpcore.testing._server import CollectingHandler, SMTPTestServer

__all__ = [
    "Answered",
    "Call",
    "Close",
    "CollectingHandler",
    "ConnectionPair",
    "Expect",
    "ExpectClose",
    "POP3Answer",
    "POP3ConnectionPair",
    "SMTPAnswer",
    "SMTPTestServer",
    "ScriptMismatch",
    "ScriptedClient",
    "ScriptedConnection",
    "ScriptedPeer",
    "ScriptedServer",
    "Send",
    "StartTLS",
    "Step",
    "permissive_pop3_answer",
    "permissive_smtp_answer",
    "run_pop3_server",
    "run_server",
    "script",
]
