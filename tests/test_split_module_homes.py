"""Where names split out of large modules live: what a split must not change.

A pure-move split may leave a name in a new private module, but not where its
annotations can no longer be resolved, nor, for a public value class, where a
pickle made by one version names a module the other lacks.
"""

from __future__ import annotations

import pickle
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpcore import LocalProtocolError
from smtpcore._driver import _smtp_envelope
from smtpcore.address import Mailbox
from smtpcore.handler import AuthIdentity, Envelope, Recipient, Session, TLSInfo, _answering
from smtpcore.maildrop import POP3Session
from smtpcore.testing import strategies as sst


def test_envelope_from_fields_type_hints_resolve() -> None:
    """Its annotations name ``Recipients``, which lives next to it, so that
    ``typing.get_type_hints`` (Sphinx, runtime checkers) resolves them."""
    hints = typing.get_type_hints(_smtp_envelope.envelope_from_fields)
    assert hints["recipients"] == _smtp_envelope.Recipients | None
    assert set(hints) == {"message", "sender", "recipients", "return"}


def test_handler_value_classes_keep_their_public_module() -> None:
    """The value classes a handler sees stay in :mod:`smtpcore.handler`: their
    ``__module__`` is what a pickle names, and what the API reference shows."""
    for cls in (AuthIdentity, Envelope, Recipient, Session, TLSInfo):
        assert cls.__module__ == "smtpcore.handler", cls


@settings(max_examples=50, deadline=None)
@given(sender=sst.mailboxes(), recipients=st.lists(sst.mailboxes(), max_size=3))
def test_session_pickle_names_public_modules_only(
    sender: Mailbox, recipients: list[Mailbox]
) -> None:
    """A pickled session names no private module of the handler's, so a pickle one
    version makes loads in another, and comes back equal in what it holds."""
    session = Session("mx.example", peer=("192.0.2.1", 25))
    session.authenticated = AuthIdentity("alice", "alice", "PLAIN")
    session.envelope = Envelope(sender, recipients=[Recipient(r) for r in recipients])
    session.extra["seen"] = 1
    data = pickle.dumps(session)
    for private in (b"smtpcore._handler", b"smtpcore._rarely_set"):
        assert private not in data
    back = pickle.loads(data)
    assert back.authenticated == session.authenticated
    assert back.envelope is not None
    assert back.envelope.sender == sender
    assert [r.mailbox for r in back.envelope.recipients] == recipients
    assert back.extra == {"seen": 1}


def test_sessions_keep_the_shared_properties_documented() -> None:
    """Both sessions inherit ``extra``, ``peer_stands_in_for`` and ``client_address``
    from one private base, with their docstrings (the API reference shows them)."""
    for cls in (Session, POP3Session):
        for name in ("extra", "peer_stands_in_for", "client_address"):
            prop = getattr(cls, name)
            assert isinstance(prop, property)
            assert prop.__doc__


def test_begin_commit_is_marked_by_the_adapters_call() -> None:
    """The commit mark stays with ``begin_commit``: refused before the adapter's
    mark, taken after it, and read by ``committing``."""
    session = Session("mx.example")
    session.envelope = Envelope(None)
    with pytest.raises(LocalProtocolError):
        session.begin_commit()
    _answering(session.envelope)
    assert not session.committing
    session.begin_commit()
    assert session.committing
