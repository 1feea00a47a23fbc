"""Public constructors given a value of the wrong type raise LocalProtocolError.

Misuse by the application is a ``LocalProtocolError`` (DESIGN.md), worded alike
("... must be ..., not <type>"), never a ``TypeError`` or ``AttributeError``
from deeper in.
"""

from __future__ import annotations

import enum
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
OK_BYTES: Any = b"ok"
LINES_WITH_NONE: Any = ["a", None]
TWO_CHARS: Any = ["NV"]
TRUE: Any = True


class Class(enum.IntEnum):
    SUCCESS = 2
    PERMANENT = 5


WRONG: dict[str, tuple[Callable[[], object], str]] = {
    "Reply text an int": (
        lambda: Reply(250, FIVE),
        "reply text must be a str or a sequence of str, not int",
    ),
    "Reply text None": (lambda: Reply(250, NONE), "not NoneType"),
    "Reply text bytes": (
        lambda: Reply(250, OK_BYTES),
        "reply text must be a str or a sequence of str, not bytes",
    ),
    "Reply text a line None": (
        lambda: Reply(250, LINES_WITH_NONE),
        "each line of reply text must be a str, not NoneType",
    ),
    "Reply status an int": (
        lambda: Reply(250, "x", status=FIVE),
        "reply status must be an EnhancedStatus, a str or None, not int",
    ),
    "EnhancedStatus subject a str": (
        lambda: EnhancedStatus(2, ZERO_TEXT, 0),
        "class, subject and detail must be ints, not str",
    ),
    "EnhancedStatus class a float": (lambda: EnhancedStatus(TWO_FLOAT, 0, 0), "not float"),
    "EnhancedStatus subject a bool": (lambda: EnhancedStatus(2, TRUE, 0), "ints, not bool"),
    "Mail params an int": (
        lambda: Mail(None, FIVE),
        "ESMTP parameters must be a mapping or (keyword, value) pairs, not int",
    ),
    "Mail params a str": (lambda: Mail(None, SIZE_TEXT), "not str"),
    "Rcpt params a list of str": (lambda: Rcpt(BOB, WORDS), "not list"),
    "Mail params a two-character str for a pair": (
        lambda: Mail(None, TWO_CHARS),
        "(keyword, value) pairs, not list",
    ),
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


def test_an_int_enum_is_an_int_in_an_enhanced_status() -> None:
    """An IntEnum member is an int (only bool, also one, is refused), kept as the plain
    int so that the status reads as digits on the wire."""
    status = EnhancedStatus(Class.PERMANENT, 1, 1)
    assert status == EnhancedStatus(5, 1, 1) and str(status) == "5.1.1"
    assert type(status.class_code) is int
    assert Reply(550, "no", status=status).status == status
