"""Strategies for whole server transcripts, to test SMTP clients (RFC 5321 §4.2, §4.3.2).

A transcript is what a server writes in answer to a client's session: the
greeting, then for each group the client writes, the replies due, one per
command (RFC 2920 §3.1), the EHLO reply listing the extensions the session
uses, an AUTH exchange's 334 challenges those of a real server mechanism.
A client under test plays the session and reads the transcript, cut as a
network may cut it (:func:`~smtpcore.testing.strategies.chunkings`).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass

from hypothesis import strategies as st

from smtpcore.smtp import (
    Auth,
    AuthResponse,
    Data,
    Ehlo,
    Event,
    Lhlo,
    MessageData,
    Quit,
    Reply,
    ServerAuth,
    StartTls,
)
from smtpcore.testing._drive import permissive_auth
from smtpcore.testing._smtp_parameters import EXTENSIONS
from smtpcore.testing._smtp_replies import replies
from smtpcore.testing._smtp_sessions import ClientSession, sessions

__all__ = ["ServerTranscript", "server_transcripts"]

_EHLO_LINES = {
    "PIPELINING": "PIPELINING",
    "SIZE": "SIZE 10485760",
    "8BITMIME": "8BITMIME",
    "SMTPUTF8": "SMTPUTF8",
    "CHUNKING": "CHUNKING",
    "DSN": "DSN",
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH PLAIN LOGIN",
}


@dataclass(frozen=True, slots=True)
class ServerTranscript:
    """A client's session and the server's answer to it, group by group.

    ``replies[i]`` answers ``session.groups[i]``; :attr:`greeting` comes
    first. With a ``421`` drawn, the transcript stops there: the server
    closes, and the groups after it get no replies.
    """

    session: ClientSession
    greeting: Reply
    replies: tuple[tuple[Reply, ...], ...]

    def writes(self) -> list[bytes]:
        """The server's bytes: the greeting, then each group's replies."""
        out = [self.greeting.to_bytes(self.greeting.status)]
        out += [b"".join(r.to_bytes(r.status) for r in group) for group in self.replies]
        return out


def _unstatused(reply: Reply) -> Reply:
    """``reply`` with its enhanced status written into its text, as a client reads it
    from a server that did not offer ENHANCEDSTATUSCODES (RFC 2034 §3: the status is
    text then), which the transcript's EHLO reply does not; a transcript's replies
    compare equal to what a correct client reads."""
    if reply.status is None:
        return reply
    return Reply(reply.code, [f"{reply.status} {line}" for line in reply.lines])


def _answers(
    item: Event | bytes, extensions: Collection[str], tls: bool, auth: ServerAuth
) -> list[Reply]:
    """The positive replies ``item`` is due (none for a content piece); ``auth``
    runs the session's AUTH exchanges (PLAIN and LOGIN, any credentials)."""
    if isinstance(item, MessageData):
        return []
    if isinstance(item, bytes):
        return [Reply(500, "5.5.2 Command unrecognized")]
    if isinstance(item, Ehlo | Lhlo):
        offered = [
            line
            for name, line in _EHLO_LINES.items()
            if name in extensions and not (tls and name == "STARTTLS")
        ]
        return [Reply(250, ["mx.transcript.test", *offered])]
    if isinstance(item, StartTls):
        return [Reply(220, "2.0.0 Ready to start TLS")]
    if isinstance(item, Auth):
        return [_unstatused(auth.start(item))]
    if isinstance(item, AuthResponse):
        return [_unstatused(auth.step(item))]
    if isinstance(item, Data):
        return [Reply(354, "End data with <CR><LF>.<CR><LF>")]
    if isinstance(item, Quit):
        return [Reply(221, "2.0.0 Bye")]
    return [Reply(250, "2.0.0 Ok")]  # MAIL, RCPT, a BDAT chunk, the end of DATA, RSET, NOOP


@st.composite
def server_transcripts(
    draw: st.DrawFn,
    *,
    extensions: Collection[str] = EXTENSIONS,
    shutdown: bool = False,
    text: bool = True,
) -> ServerTranscript:
    """A whole server transcript answering a drawn client session.

    The session comes from :func:`~smtpcore.testing.strategies.sessions`
    narrowed to ``extensions``; every command is accepted, the EHLO reply
    listing what the session uses, an AUTH exchange run by the server side
    of PLAIN or LOGIN (334 challenges, then 235; 501 to a ``*``). With
    ``text``, the text of each reply but the EHLO one and the challenges is
    drawn (single or multi-line, any printable text) rather than fixed.
    ``shutdown=True`` may put a ``421 4.3.2`` in place of any reply due,
    after which the server closes (RFC 5321 §3.8): a client must report it
    and stop, not wait for the rest.

    >>> from hypothesis import given
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.server_transcripts(extensions={"PIPELINING"}), st.data())
    ... def test_my_client(transcript, data):
    ...     for write in transcript.writes():
    ...         pieces = data.draw(sst.chunkings(write))
    ...         ...
    """
    session = draw(sessions(extensions=extensions))
    due = _due(session)
    stop_at = None
    if shutdown and draw(st.booleans()):
        stop_at = draw(st.integers(0, sum(len(group) for group in due) - 1))
    greeting = Reply(220, "mx.transcript.test ESMTP")
    answered = 0
    groups: list[tuple[Reply, ...]] = []
    for group in due:
        out: list[Reply] = []
        for item, reply in group:
            if answered == stop_at:
                out.append(Reply(421, "4.3.2 Service shutting down"))
                return ServerTranscript(session, greeting, (*groups, tuple(out)))
            if text and not isinstance(item, Ehlo | Lhlo) and reply.code != 334:
                reply = draw(_reply_texts(reply.code))
            out.append(reply)
            answered += 1
        groups.append(tuple(out))
    return ServerTranscript(session, greeting, tuple(groups))


@functools.cache
def _reply_texts(code: int) -> st.SearchStrategy[Reply]:
    """Replies with ``code`` and drawn text, built once per code: a strategy built
    inside a draw is built and validated again at every draw, slow enough to fail
    Hypothesis's too_slow health check."""
    return replies(codes=[code], enhanced=False)


def _due(session: ClientSession) -> list[list[tuple[Event | bytes, Reply]]]:
    """For each group, the replies due and the item each answers."""
    auth = permissive_auth()
    tls = False
    due: list[list[tuple[Event | bytes, Reply]]] = []
    for group in session.groups:
        due.append([])
        for item in group:
            due[-1] += [(item, reply) for reply in _answers(item, session.extensions, tls, auth)]
            tls = tls or isinstance(item, StartTls)
    return due
