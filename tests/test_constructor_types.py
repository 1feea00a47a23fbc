"""Public constructors given a value of the wrong type raise LocalProtocolError.

Misuse by the application is a ``LocalProtocolError`` (DESIGN.md), worded alike
("... must be ..., not <type>"), never a ``TypeError`` or ``AttributeError``
from deeper in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from smtpcore import LocalProtocolError, pop3
from smtpcore.address import parse_mailbox
from smtpcore.smtp import EnhancedStatus, Mail, Parameters, Rcpt, Reply

BOB = parse_mailbox("bob@pqr.example")
FIVE: Any = 5  # the wrong types, typed Any: the misuse is what is tested
NONE: Any = None
ZERO_TEXT: Any = "0"
TWO_FLOAT: Any = 2.0
SIZE_TEXT: Any = "SIZE=5"
WORDS: Any = ["NOTIFY=NEVER"]

WRONG: dict[str, tuple[Callable[[], object], str]] = {
    "Reply text an int": (
        lambda: Reply(250, FIVE),
        "reply text must be a str or a sequence of str, not int",
    ),
    "Reply text None": (lambda: Reply(250, NONE), "not NoneType"),
    "Reply status an int": (
        lambda: Reply(250, "x", status=FIVE),
        "reply status must be an EnhancedStatus, a str or None, not int",
    ),
    "EnhancedStatus subject a str": (
        lambda: EnhancedStatus(2, ZERO_TEXT, 0),
        "class, subject and detail must be ints, not str",
    ),
    "EnhancedStatus class a float": (lambda: EnhancedStatus(TWO_FLOAT, 0, 0), "not float"),
    "Mail params an int": (
        lambda: Mail(None, FIVE),
        "ESMTP parameters must be a mapping or (keyword, value) pairs, not int",
    ),
    "Mail params a str": (lambda: Mail(None, SIZE_TEXT), "not str"),
    "Rcpt params a list of str": (lambda: Rcpt(BOB, WORDS), "not list"),
    "Parameters of None": (lambda: Parameters(NONE), "not NoneType"),
    "pop3 Ok text an int": (lambda: pop3.Ok(FIVE), "not int"),
}


@pytest.mark.parametrize(("build", "words"), WRONG.values(), ids=WRONG.keys())
def test_wrong_type_is_a_local_protocol_error_saying_so(
    build: Callable[[], object], words: str
) -> None:
    with pytest.raises(LocalProtocolError) as raised:
        build()
    assert words in str(raised.value)


def test_the_right_types_still_build() -> None:
    assert Reply(250, ["a", "b"], status="2.0.0").lines == ("a", "b")
    assert str(EnhancedStatus(5, 1, 1)) == "5.1.1"
    assert Mail(None, {"SIZE": 5}).params["SIZE"] == "5"
    assert Parameters([("SIZE", "5")])["SIZE"] == "5"
