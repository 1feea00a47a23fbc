"""Hypothesis strategies for SMTP and POP3 (needs ``smtpcore[testing]``).

Every strategy returns a :class:`hypothesis.strategies.SearchStrategy`,
takes keyword options only, and draws valid values unless asked for
near-valid or hostile ones (``hostile=True``, ``smuggling=True``), so that a
property test starts from what a server must accept and widens from there::

    from hypothesis import given
    from smtpcore.testing import strategies as sst

    @given(sst.sessions(extensions={"PIPELINING", "8BITMIME"}), sst.chunk_sizes())
    def test_my_server(session, sizes): ...
"""

from typing import Final

from smtpcore.testing._addresses import (
    address_literals,
    domains,
    hostnames,
    lenient_paths,
    local_parts,
    mailboxes,
    paths,
)
from smtpcore.testing._content import SMUGGLING_SEQUENCES as _SMUGGLING_SEQUENCES
from smtpcore.testing._content import (
    chunk_sizes,
    chunkings,
    message_contents,
)
from smtpcore.testing._hostile import hostile_bytes, other_spaces
from smtpcore.testing._pop3_answers import pop3_responses
from smtpcore.testing._pop3_lines import pop3_command_lines, pop3_response_lines
from smtpcore.testing._pop3_strategies import POP3_CAPABILITIES as _POP3_CAPABILITIES
from smtpcore.testing._pop3_strategies import (
    POP3Session,
    pop3_capabilities,
    pop3_commands,
    pop3_sessions,
    pop3_unique_ids,
)
from smtpcore.testing._smtp_commands import commands, xclients, xforwards
from smtpcore.testing._smtp_lines import command_lines
from smtpcore.testing._smtp_parameters import EXTENSIONS as _EXTENSIONS
from smtpcore.testing._smtp_parameters import (
    mail_parameters,
    parameter_texts,
    rcpt_parameters,
    xtexts,
)
from smtpcore.testing._smtp_replies import replies, reply_lines
from smtpcore.testing._smtp_sessions import AUTH_MECHANISMS as _AUTH_MECHANISMS
from smtpcore.testing._smtp_sessions import ClientSession, sessions
from smtpcore.testing._transcripts import ServerTranscript, server_transcripts

__all__ = [
    "AUTH_MECHANISMS",
    "EXTENSIONS",
    "POP3_CAPABILITIES",
    "SMUGGLING_SEQUENCES",
    "ClientSession",
    "POP3Session",
    "ServerTranscript",
    "address_literals",
    "chunk_sizes",
    "chunkings",
    "command_lines",
    "commands",
    "domains",
    "hostnames",
    "hostile_bytes",
    "local_parts",
    "mail_parameters",
    "parameter_texts",
    "mailboxes",
    "message_contents",
    "other_spaces",
    "lenient_paths",
    "paths",
    "pop3_capabilities",
    "pop3_command_lines",
    "pop3_commands",
    "pop3_response_lines",
    "pop3_responses",
    "pop3_sessions",
    "pop3_unique_ids",
    "rcpt_parameters",
    "replies",
    "reply_lines",
    "server_transcripts",
    "sessions",
    "xclients",
    "xforwards",
    "xtexts",
]

# Bound again here, where users import them: autodoc reads a data docstring from
# this module, and would show frozenset's or tuple's for a bare re-export.
AUTH_MECHANISMS: Final = _AUTH_MECHANISMS
"""The SASL mechanisms whose exchange :func:`sessions` plays (RFC 4616 PLAIN;
LOGIN as deployed)."""

EXTENSIONS: Final = _EXTENSIONS
"""The ESMTP extensions :func:`sessions` uses unless ``extensions`` narrows them;
it uses BINARYMIME and REQUIRETLS too where ``extensions`` names them."""

POP3_CAPABILITIES: Final = _POP3_CAPABILITIES
"""The CAPA lines (RFC 2449 §6) :func:`pop3_sessions` knows how to use; pass a
server's own (``conn.capabilities()`` of a :class:`smtpcore.pop3.ServerConnection`)
to draw only what it offers."""

SMUGGLING_SEQUENCES: Final = _SMUGGLING_SEQUENCES
"""End-of-data look-alikes (``LF.LF``, ``CR.CR``, ``CRLF.LF`` and neighbours, NUL
and blanks beside the dot) that :func:`message_contents` puts in content where
``smuggling=True``: only ``CRLF.CRLF`` ends data (RFC 5321 §4.1.1.4), and a server
ending a message on any of these lets a client smuggle a second one past a filter."""
