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

from smtpcore.testing._addresses import (
    address_literals,
    domains,
    hostnames,
    lenient_paths,
    local_parts,
    mailboxes,
    paths,
)
from smtpcore.testing._content import (
    SMUGGLING_SEQUENCES,
    chunk_sizes,
    chunkings,
    message_contents,
)
from smtpcore.testing._hostile import hostile_bytes, other_spaces
from smtpcore.testing._pop3_answers import pop3_responses
from smtpcore.testing._pop3_lines import pop3_command_lines, pop3_response_lines
from smtpcore.testing._pop3_strategies import (
    POP3_CAPABILITIES,
    POP3Session,
    pop3_capabilities,
    pop3_commands,
    pop3_sessions,
    pop3_unique_ids,
)
from smtpcore.testing._smtp_commands import commands, xclients, xforwards
from smtpcore.testing._smtp_lines import command_lines
from smtpcore.testing._smtp_parameters import (
    EXTENSIONS,
    mail_parameters,
    parameter_texts,
    rcpt_parameters,
    xtexts,
)
from smtpcore.testing._smtp_replies import replies, reply_lines
from smtpcore.testing._smtp_sessions import AUTH_MECHANISMS, ClientSession, sessions
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
