"""Strategies for whole SMTP client sessions: :func:`sessions` and :class:`ClientSession`.

Sessions follow the state machine of RFC 5321 §4.1.4 (EHLO, optional
STARTTLS and AUTH, transactions ending in DATA or BDAT, RSET, NOOP, QUIT)
and come grouped the way a pipelining client writes them (RFC 2920 §3.1):
a group ends at EHLO, DATA, BDAT ... LAST, AUTH, STARTTLS, NOOP or QUIT, and
each answer to a 334 challenge is a group of its own (RFC 4954 §4).

A session draws its parameters (``_smtp_parameters``) and, hostile, its broken
lines (``_smtp_lines``) from strategies built once, before its first draw.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from smtpcore._words import ascii_upper
from smtpcore.address import Mailbox
from smtpcore.sasl import PlainClient
from smtpcore.smtp import (
    Auth,
    AuthResponse,
    Bdat,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Lhlo,
    Mail,
    MessageData,
    Noop,
    Parameters,
    Quit,
    Rcpt,
    Rset,
    StartTls,
)
from smtpcore.smtp._commands import format_command
from smtpcore.testing._addresses import mailboxes
from smtpcore.testing._content import message_contents
from smtpcore.testing._group_bytes import group_answer_points, group_write
from smtpcore.testing._smtp_commands import MAX_COMMAND_LINE
from smtpcore.testing._smtp_lines import session_lines
from smtpcore.testing._smtp_parameters import EXTENSIONS, mail_parameters, rcpt_parameters

__all__ = [
    "AUTH_MECHANISMS",
    "ClientSession",
    "sessions",
]


AUTH_MECHANISMS: Final = ("PLAIN", "LOGIN")
"""The SASL mechanisms whose exchange :func:`sessions` plays (RFC 4616; LOGIN as deployed)."""


@dataclass(frozen=True, slots=True)
class ClientSession:
    """A client's side of a whole SMTP session, as the groups it writes.

    Each group goes out in one write and is answered before the next one is
    sent (RFC 2920 §3.1). A group is a tuple of events: commands, or a
    message's content as :class:`~smtpcore.smtp.MessageData` and
    :class:`~smtpcore.smtp.EndOfMessage` after ``DATA`` (perhaps followed by
    the commands pipelined behind its end), or ``Bdat`` and its
    octets, or one :class:`~smtpcore.smtp.AuthResponse` answering a 334
    challenge (``*`` when it cancels the exchange). Items that are ``bytes``
    are hostile lines written as they are.
    """

    groups: tuple[tuple[Event | bytes, ...], ...]
    """The groups, in order, each written in one go. A failing example prints as
    ``ClientSession(groups=..., ...)`` in public names, and pastes back to be
    played again (:ref:`replaying a failing session <replaying-failing-sessions>`)."""
    extensions: frozenset[str] = EXTENSIONS
    """The extensions the session uses (what the server must offer)."""
    lmtp: bool = False
    """Whether it is an LMTP session (LHLO; a reply per accepted recipient at the end
    of content, RFC 2033 §4.2)."""

    @property
    def events(self) -> tuple[Event | bytes, ...]:
        """Every item of every group, in order."""
        return tuple(item for group in self.groups for item in group)

    @property
    def messages(self) -> tuple[bytes, ...]:
        """The content of each message, as the client means it (after DATA or BDAT)."""
        found: list[bytes] = []
        current: list[bytes] = []
        closing = False
        for item in (*self.events, None):
            if isinstance(item, MessageData):
                current.append(item.data)
                continue
            if closing:
                found.append(b"".join(current))
                current, closing = [], False
            if isinstance(item, EndOfMessage):
                found.append(b"".join(current))
                current = []
            elif isinstance(item, Bdat) and item.last:
                closing = True
        return tuple(found)

    def writes(self) -> list[bytes]:
        """The bytes of each group, as a client puts them on the wire.

        Commands in their wire form, DATA content dot-stuffed (its line
        endings left as they are, so smuggling sequences reach the server)
        and ended by ``CRLF.CRLF``, BDAT octets unchanged.
        """
        return [group_write(group) for group in self.groups]

    def answer_points(self) -> list[list[int]]:
        """For each group, the offsets in its write at which a reply falls due.

        A command is due once its line is in (only CRLF ends a line, RFC 5321
        §2.3.8: a hostile path holding one is two lines), a BDAT once its octets are in
        (RFC 3030 §2), the end of DATA content once the final dot line is in;
        a server that answers before has not read what it answers. (LMTP
        gives one reply per accepted recipient at the end of content.)
        """
        return [group_answer_points(group) for group in self.groups]

    def __iter__(self) -> Iterator[tuple[Event | bytes, ...]]:
        return iter(self.groups)


@functools.cache
def _envelope_strategies(
    offered: frozenset[str], *, utf8: bool
) -> tuple[
    st.SearchStrategy[Parameters], st.SearchStrategy[Mailbox], st.SearchStrategy[Parameters]
]:
    """MAIL parameters, mailboxes and RCPT parameters for a transaction, built once
    per offer: a strategy built inside a draw is validated again at every draw,
    which made a session slow enough to fail Hypothesis's too_slow health check."""
    return (
        mail_parameters(extensions=offered - {"SMTPUTF8", "AUTH"}),
        mailboxes(utf8=utf8),
        rcpt_parameters(extensions=offered),
    )


def _transaction(
    draw: st.DrawFn,
    offered: frozenset[str],
    content: st.SearchStrategy[bytes],
    binary_content: st.SearchStrategy[bytes] | None,
    *,
    pipelining: bool,
    hostile: bool,
    max_recipients: int,
) -> list[tuple[Event | bytes, ...]]:
    """One transaction; a ``BODY=BINARYMIME`` one, with ``binary_content``, when
    that is given (RFC 3030 §3: its content goes in BDAT chunks only)."""
    utf8 = "SMTPUTF8" in offered and draw(st.booleans())
    mail_params, senders, rcpt_params = _envelope_strategies(offered, utf8=utf8)
    params = dict(draw(mail_params))
    params.pop("BODY", None)  # set below, to what the content needs
    if utf8:
        params["SMTPUTF8"] = None
    binary = False
    if binary_content is not None and draw(st.booleans()):
        binary, content = True, binary_content
    body = draw(content)
    if binary:
        params["BODY"] = "BINARYMIME"
    elif any(octet > 127 for octet in body):
        params["BODY"] = "8BITMIME"
    if "SIZE" in params:
        params["SIZE"] = str(len(body))
    sender = draw(st.none() | senders)
    recipients = draw(st.lists(senders, min_size=1, max_size=max_recipients))
    mail = _fitting(Mail(sender, Parameters(params)), keep={"SMTPUTF8", "BODY"})
    envelope: list[Event | bytes] = [mail]
    envelope += [_fitting(Rcpt(rcpt, draw(rcpt_params)), keep=set()) for rcpt in recipients]
    if hostile:
        for line in draw(st.lists(session_lines(offered), max_size=2)):
            envelope.insert(draw(st.integers(1, len(envelope))), line)
    groups: list[tuple[Event | bytes, ...]] = []
    use_bdat = binary or ("CHUNKING" in offered and draw(st.booleans()))
    if use_bdat:
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=3))))
        bounds = [0, *cuts, len(body)]
        chunks = [body[a:b] for a, b in itertools.pairwise(bounds)]
        chunk_events: list[Event | bytes] = []
        for index, chunk in enumerate(chunks):
            chunk_events.append(Bdat(len(chunk), last=index == len(chunks) - 1))
            if chunk:
                chunk_events.append(MessageData(chunk))
        commands_and_chunks = [*envelope, *chunk_events]
        if pipelining:
            # RFC 3030 §4.2: BDAT chunks may be pipelined; LAST ends the group.
            groups.append(tuple(commands_and_chunks))
        else:
            groups += [(event,) for event in envelope]
            pairs: list[tuple[Event | bytes, ...]] = []
            for event in chunk_events:
                if isinstance(event, Bdat):
                    pairs.append((event,))
                else:
                    pairs[-1] = (*pairs[-1], event)
            groups += pairs
        return groups
    if pipelining:
        groups.append((*envelope, Data()))
    else:
        groups += [(event,) for event in envelope] + [(Data(),)]
    content_group: tuple[Event | bytes, ...] = (EndOfMessage(),)
    if body:
        content_group = (MessageData(body), EndOfMessage())
    groups.append(content_group)
    return groups


def _fitting(command: Mail | Rcpt, *, keep: set[str]) -> Mail | Rcpt:
    """``command`` without the optional parameters that take it over 512 octets."""
    if len(format_command(command)) <= MAX_COMMAND_LINE:
        return command
    params = Parameters({key: value for key, value in command.params.items() if key in keep})
    if isinstance(command, Mail):
        return Mail(command.sender, params)
    return Rcpt(command.recipient, params)


def sessions(
    *,
    extensions: Collection[str] = EXTENSIONS,
    lmtp: bool = False,
    max_transactions: int = 3,
    max_recipients: int = 4,
    content: st.SearchStrategy[bytes] | None = None,
    binary_content: st.SearchStrategy[bytes] | None = None,
    hostile: bool = False,
    auth_mechanisms: Collection[str] = AUTH_MECHANISMS,
) -> st.SearchStrategy[ClientSession]:
    """A whole client session that follows the state machine.

    Opens with EHLO (LHLO with ``lmtp``), then optionally STARTTLS and
    EHLO again, optionally AUTH (when AUTH is offered, over TLS if
    STARTTLS is), then up to ``max_transactions``
    mail transactions (DATA, or BDAT chunks when CHUNKING is offered, the
    recipients' content drawn from ``content``, by default
    :func:`message_contents` with 8-bit lines only under 8BITMIME),
    with RSET and NOOP between them, and QUIT. Under PIPELINING the group
    that ends a message (the end of DATA content, or ``BDAT ... LAST``) may
    also carry what follows it, as a pipelining client writes it (RFC 2920
    §3.1): an RSET, a NOOP, the next transaction's MAIL, RCPTs and DATA (or
    its chunks), or QUIT. Each transaction has one to
    ``max_recipients`` recipients. Where ``extensions`` names BINARYMIME and
    CHUNKING, a transaction may declare ``BODY=BINARYMIME`` and send content
    drawn from ``binary_content`` (by default :func:`message_contents` with
    ``binary=True``: any octets, bare CR and LF, NUL), in BDAT chunks only
    (RFC 3030 §3), never DATA. Narrow ``extensions`` to what
    your server offers: without PIPELINING every command is its own group.
    Narrow the limits to your server's too, so that no command goes past
    one: ``max_recipients`` to the recipients it takes a transaction (what
    it announces as ``LIMITS RCPTMAX``, RFC 9422 §4.2), ``max_transactions``
    to the MAIL commands it takes a session (``LIMITS MAILMAX``, §4.1).
    ``hostile=True`` slips broken command lines (bytes items) in between
    and into the envelope's pipelined group, where their refusals must
    come back in order; they are not counted against those limits.
    No session sends a well-formed command out of sequence (RCPT before
    MAIL, DATA after RSET or a new EHLO with no RCPT since): a server that
    takes one is what ``check``'s ``state-order`` finds, not a drawn session.
    A failing session shrinks to the transactions the failure needs, wherever
    they stood in the example first found: each transaction, with the RSET,
    NOOP or hostile line before it, is one draw, which the shrinker deletes
    whole.

    AUTH runs a whole exchange with one of ``auth_mechanisms`` (narrow it
    to the mechanisms your server lists; those of :data:`AUTH_MECHANISMS`
    are played, others left out): PLAIN with an initial response or after
    an empty 334 challenge, or LOGIN with the user name and the password
    each answering a challenge; an exchange may first be started and
    cancelled with ``*``, which the server answers with 501 (RFC 4954 §4).

    >>> from hypothesis import given
    >>> from smtpcore.smtp import ServerConnection
    >>> from smtpcore.testing import ConnectionPair
    >>> from smtpcore.testing import strategies as sst
    >>> @given(sst.sessions(extensions={"PIPELINING", "8BITMIME"}, max_recipients=2))
    ... def test_my_server(session):
    ...     pair = ConnectionPair(server=ServerConnection("mx.test", max_recipients=2))
    ...     pair.play(session)
    ...     assert all(answer.reply.code < 400 for answer in pair.answers)
    >>> test_my_server()
    """
    if max_transactions < 0:
        raise InvalidArgument(f"max_transactions={max_transactions!r} must be at least 0")
    if max_recipients < 1:
        raise InvalidArgument(
            f"max_recipients={max_recipients!r} must be at least 1: a transaction needs one"
        )
    offered = frozenset(ascii_upper(name) for name in extensions)
    # Built here, once per call: a strategy built inside a draw is validated at every draw.
    if content is None:
        content = message_contents(eight_bit="8BITMIME" in offered)
    if not {"BINARYMIME", "CHUNKING"} <= offered:
        binary_content = None  # RFC 3030 §3: BINARYMIME content goes with BDAT only
    elif binary_content is None:
        binary_content = message_contents(binary=True)
    _prepare(offered, content, binary_content, hostile=hostile)
    steps = {
        offer: _steps(
            offer,
            content,
            binary_content,
            pipelining="PIPELINING" in offered,
            hostile=hostile,
            max_recipients=max_recipients,
        )
        for offer in _offers_in_force(offered)
    }
    return _sessions(
        offered=offered,
        lmtp=lmtp,
        max_transactions=max_transactions,
        steps=steps,
        auth_mechanisms=auth_mechanisms,
    )


def _offers_in_force(offered: frozenset[str]) -> set[frozenset[str]]:
    """The extensions a transaction may use: all of ``offered`` over TLS, and without
    REQUIRETLS before it (RFC 8689 §4.1)."""
    return {offered, offered - {"REQUIRETLS"}}


def _prepare(
    offered: frozenset[str],
    content: st.SearchStrategy[bytes],
    binary_content: st.SearchStrategy[bytes] | None,
    *,
    hostile: bool,
) -> None:
    """Build and validate now the strategies a session draws from inside its draws.

    Hypothesis does its one-time work on a strategy (checking the graph below it
    for emptiness, building lazy and regex strategies, reading the source of a
    filter's lambda) at the strategy's first draw, where it counted as the time
    of the first session's draw: a tenth of a second here, and seconds on a
    loaded machine, enough for the ``too_slow`` health check. Done here, it is
    paid once, when the test is defined."""
    for utf8 in (False, True) if "SMTPUTF8" in offered else (False,):
        for offer in _offers_in_force(offered):
            for strategy in _envelope_strategies(offer, utf8=utf8):
                strategy.validate()
    content.validate()
    if binary_content is not None:
        binary_content.validate()
    if hostile:
        for offer in _offers_in_force(offered):
            session_lines(offer).validate()


_BETWEEN_COMMANDS: Final[list[Rset | Noop]] = [Rset(), Noop()]
_BETWEEN: Final = st.sampled_from(_BETWEEN_COMMANDS)
"""What may come between transactions (RFC 5321 §4.1.4)."""


@dataclass(frozen=True, slots=True)
class _Step:
    """One transaction and what may come before it (RSET or NOOP, a hostile line),
    drawn in one draw of :func:`_steps`.

    So that a failing session shrinks to the transactions it needs, wherever they
    stand: when lowering the count drawn before them fails, Hypothesis's shrinker
    lowers it and deletes one whole draw after it. A transaction drawn as a dozen
    draws of its own (the envelope, the content, the flags) could not go that way,
    nor five choices at a time, and one that the failing transaction came after
    stayed in the shrunk example (an empty message before the one holding
    ``LF.LF``)."""

    between: Rset | Noop | None
    """RSET or NOOP before the transaction, if any."""
    between_joined: bool
    """Whether ``between`` goes on the group that ended the message before, where
    that group may go on (RFC 2920 §3.1)."""
    hostile_line: bytes | None
    """A broken command line in a group of its own before the transaction, if any."""
    transaction: tuple[tuple[Event | bytes, ...], ...]
    """The transaction's groups (:func:`_transaction`)."""
    joined: bool
    """Whether the transaction's first group goes on the group before, where that
    one ended a message and may go on."""


@st.composite
def _steps(
    draw: st.DrawFn,
    offered: frozenset[str],
    content: st.SearchStrategy[bytes],
    binary_content: st.SearchStrategy[bytes] | None,
    *,
    pipelining: bool,
    hostile: bool,
    max_recipients: int,
) -> _Step:
    """A :class:`_Step`. Each choice is drawn whether or not the session's groups
    so far let it apply, and shrinks to "nothing before, not joined"."""
    between: Rset | Noop | None = None
    between_joined = False
    if draw(st.booleans()):
        between = draw(_BETWEEN)
        between_joined = pipelining and draw(st.booleans())
    hostile_line = draw(session_lines(offered)) if hostile and draw(st.booleans()) else None
    transaction = _transaction(
        draw,
        offered,
        content,
        binary_content,
        pipelining=pipelining,
        hostile=hostile,
        max_recipients=max_recipients,
    )
    joined = pipelining and draw(st.booleans())
    return _Step(between, between_joined, hostile_line, tuple(transaction), joined)


@st.composite
def _sessions(
    draw: st.DrawFn,
    *,
    offered: frozenset[str],
    lmtp: bool,
    max_transactions: int,
    steps: dict[frozenset[str], st.SearchStrategy[_Step]],
    auth_mechanisms: Collection[str],
) -> ClientSession:
    pipelining = "PIPELINING" in offered
    hello: Event = Lhlo("client.abc.example") if lmtp else Ehlo("client.abc.example")
    groups: list[tuple[Event | bytes, ...]] = [(hello,)]
    tls = "STARTTLS" in offered and draw(st.booleans())
    if tls:
        groups += [(StartTls(),), (hello,)]
    listed = {ascii_upper(name) for name in auth_mechanisms}
    mechanisms = [name for name in AUTH_MECHANISMS if name in listed]
    # A server that offers STARTTLS offers PLAIN and LOGIN only over TLS (RFC 4954 §4).
    usable = "AUTH" in offered and (tls or "STARTTLS" not in offered)
    if usable and mechanisms and draw(st.booleans()):
        groups += _authentication(draw, mechanisms)
    # REQUIRETLS is offered over TLS only (RFC 8689 §4.1).
    in_force = offered if tls or "STARTTLS" not in offered else offered - {"REQUIRETLS"}
    for _ in range(draw(st.integers(0, max_transactions))):
        _append_step(groups, draw(steps[in_force]), pipelining=pipelining)
    if pipelining and len(groups) > 1 and draw(st.booleans()) and _ends_with_end(groups[-1]):
        groups[-1] = (*groups[-1], Quit())  # QUIT may follow the end of content at once
    else:
        groups.append((Quit(),))
    return ClientSession(tuple(groups), offered, lmtp)


def _append_step(
    groups: list[tuple[Event | bytes, ...]], step: _Step, *, pipelining: bool
) -> None:
    """Add ``step``'s groups to ``groups``. The group that ends a message may go on
    (RFC 2920 §3.1): RSET and MAIL anywhere in a group, NOOP and DATA only last."""
    open_end = pipelining and _ends_with_end(groups[-1])
    if step.between is not None:
        if open_end and step.between_joined:
            groups[-1] = (*groups[-1], step.between)
            open_end = isinstance(step.between, Rset)
        else:
            groups.append((step.between,))
            open_end = False
    if step.hostile_line is not None:
        groups.append((step.hostile_line,))
        open_end = False
    transaction = list(step.transaction)
    if open_end and step.joined:
        groups[-1] = (*groups[-1], *transaction.pop(0))
    groups += transaction


_USER: Final = "john"
_PASSWORD: Final = "secret"


def _authentication(draw: st.DrawFn, mechanisms: Sequence[str]) -> list[tuple[Event | bytes, ...]]:
    """An AUTH exchange that logs in, perhaps after one cancelled with ``*``."""
    groups: list[tuple[Event | bytes, ...]] = []
    if draw(st.booleans()):
        groups += [(Auth(draw(st.sampled_from(mechanisms))),), (AuthResponse(cancel=True),)]
    plain = PlainClient(_USER, _PASSWORD).initial_response()
    mechanism = draw(st.sampled_from(mechanisms))
    if mechanism == "LOGIN":
        groups += [
            (Auth("LOGIN"),),
            (AuthResponse(_USER.encode()),),
            (AuthResponse(_PASSWORD.encode()),),
        ]
    elif draw(st.booleans()):
        groups.append((Auth("PLAIN", plain),))
    else:
        groups += [(Auth("PLAIN"),), (AuthResponse(plain),)]
    return groups


def _ends_with_end(group: tuple[Event | bytes, ...]) -> bool:
    last = group[-1]
    return isinstance(last, EndOfMessage) or (isinstance(last, Bdat) and last.last)
