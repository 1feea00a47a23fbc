"""Where names split out of large modules live: what a split must not change.

A pure-move split may leave a name in a new private module, but not where its
annotations can no longer be resolved, nor, for a public value class, where a
pickle made by one version names a module the other lacks.
"""

from __future__ import annotations

import typing

from smtpcore._driver import _smtp_envelope


def test_envelope_from_fields_type_hints_resolve() -> None:
    """Its annotations name ``Recipients``, which lives next to it, so that
    ``typing.get_type_hints`` (Sphinx, runtime checkers) resolves them."""
    hints = typing.get_type_hints(_smtp_envelope.envelope_from_fields)
    assert hints["recipients"] == _smtp_envelope.Recipients | None
    assert set(hints) == {"message", "sender", "recipients", "return"}
