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
- :func:`play_smtp_session` and :func:`play_pop3_session`: play a session
  of the strategies' making to any server over a socket, and return its
  answers in order, in bounded time however the server misbehaves.
- :class:`SMTPTestServer`: a real server in a background thread, for
  synchronous tests (``smtplib``), collecting messages in a list.
- :mod:`smtpcore.testing.check`: a battery of checks for any SMTP server.
- :mod:`smtpcore.testing.fuzz`: coverage-guided fuzzing of the machines.

Hypothesis is an optional extra (``pip install smtpcore[testing]``), needed
by the strategies and the connection pairs; ``import smtpcore`` never
imports this package, and the pairs are imported on first use, so that the
check battery, the fuzzer and ``python -m smtpcore.testing`` need the
standard library alone.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from smtpcore.testing._drive import (
    POP3Answer,
    SMTPAnswer,
    permissive_pop3_answer,
    permissive_smtp_answer,
    run_pop3_server,
    run_server,
)
from smtpcore.testing._play_pop3 import PlayedPOP3Session, PlayedResponse, play_pop3_session
from smtpcore.testing._play_smtp import PlayedSMTPSession, play_smtp_session
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

if TYPE_CHECKING:
    from smtpcore.testing._pair import Answered, ConnectionPair, POP3ConnectionPair

#: Names whose module imports Hypothesis, and that module (PEP 562).
_LAZY: Final = dict.fromkeys(
    ("Answered", "ConnectionPair", "POP3ConnectionPair"), "smtpcore.testing._pair"
)

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
    "PlayedPOP3Session",
    "PlayedResponse",
    "PlayedSMTPSession",
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
    "play_pop3_session",
    "play_smtp_session",
    "run_pop3_server",
    "run_server",
    "script",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
