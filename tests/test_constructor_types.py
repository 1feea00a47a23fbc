"""Public constructors given a value of the wrong type raise LocalProtocolError.

Misuse by the application is a ``LocalProtocolError`` (DESIGN.md), worded alike
("... must be ..., not <type>"), never a ``TypeError`` or ``AttributeError``
from deeper in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any, Final

import pytest

from smtpcore import LocalProtocolError, pop3
from smtpcore.address import parse_mailbox
from smtpcore.smtp import (
    EnhancedStatus,
    EnvelopeId,
    Mail,
    OriginalRecipient,
    Parameters,
    Rcpt,
    Reply,
    ServerExtensions,
)

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
BYTES_KEYWORD: Any = ((b"SIZE", ()),)
INT_KEYWORD: Any = ((5, ()),)
STR_PARAMETERS: Any = (("AUTH", "PLAIN"),)
NONE_PARAMETER: Any = (("AUTH", ("PLAIN", None)),)
NONE_ENTRY: Any = (None,)
TRIPLE: Any = (("SIZE", ("5",), "x"),)


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


WRONG_VALUES: dict[str, tuple[Callable[[], object], str]] = {
    "EnvelopeId of None": (lambda: EnvelopeId(NONE), "ENVID text must be a str, not NoneType"),
    "EnvelopeId of bytes": (lambda: EnvelopeId(OK_BYTES), "ENVID text must be a str, not bytes"),
    "EnvelopeId of an int": (lambda: EnvelopeId(FIVE), "not int"),
    "OriginalRecipient address an int": (
        lambda: OriginalRecipient("rfc822", FIVE),
        "ORCPT address must be a str, not int",
    ),
    "OriginalRecipient address bytes": (
        lambda: OriginalRecipient("rfc822", OK_BYTES),
        "ORCPT address must be a str, not bytes",
    ),
    "OriginalRecipient address None": (
        lambda: OriginalRecipient("rfc822", NONE),
        "not NoneType",
    ),
    "OriginalRecipient address type None": (
        lambda: OriginalRecipient(NONE, "bob@pqr.example"),
        "ORCPT address type must be a str, not NoneType",
    ),
    "OriginalRecipient address type bytes": (
        lambda: OriginalRecipient(OK_BYTES, "bob@pqr.example"),
        "not bytes",
    ),
    "ServerExtensions domain None": (
        lambda: ServerExtensions(NONE),
        "the server's domain must be a str, not NoneType",
    ),
    "ServerExtensions domain bytes": (lambda: ServerExtensions(OK_BYTES), "not bytes"),
    "ServerExtensions offered None": (
        lambda: ServerExtensions("mx.pqr.example", NONE),
        "offered extensions must be (keyword, parameters) pairs, not NoneType",
    ),
    "ServerExtensions offered a str": (
        lambda: ServerExtensions("mx.pqr.example", SIZE_TEXT),
        "offered extensions must be (keyword, parameters) pairs, not str",
    ),
    "ServerExtensions keyword bytes": (
        lambda: ServerExtensions("mx.pqr.example", BYTES_KEYWORD),
        "an offered keyword must be a str, not bytes",
    ),
    "ServerExtensions keyword an int": (
        lambda: ServerExtensions("mx.pqr.example", INT_KEYWORD),
        "an offered keyword must be a str, not int",
    ),
    "ServerExtensions parameters a str": (
        lambda: ServerExtensions("mx.pqr.example", STR_PARAMETERS),
        "the parameters of AUTH must be a tuple of str, not str",
    ),
    "ServerExtensions a parameter None": (
        lambda: ServerExtensions("mx.pqr.example", NONE_PARAMETER),
        "each parameter of AUTH must be a str, not NoneType",
    ),
    "ServerExtensions an entry None": (
        lambda: ServerExtensions("mx.pqr.example", NONE_ENTRY),
        "each offered extension must be a (keyword, parameters) pair, not NoneType",
    ),
    "ServerExtensions a triple": (
        lambda: ServerExtensions("mx.pqr.example", TRIPLE),
        "an offered extension is a pair, not 3 items",
    ),
    "ServerExtensions from a str": (
        lambda: ServerExtensions.from_reply(SIZE_TEXT),
        "an EHLO reply must be a Reply, not str",
    ),
}


@pytest.mark.parametrize(("build", "words"), WRONG_VALUES.values(), ids=WRONG_VALUES.keys())
def test_dsn_values_and_server_extensions_say_so_too(
    build: Callable[[], object], words: str
) -> None:
    """``EnvelopeId``, ``OriginalRecipient`` and ``ServerExtensions`` raised TypeError
    or AttributeError, or took the value (a domain of None, parameters "PLAIN" read as
    five letters), where the other public values raise LocalProtocolError."""
    with pytest.raises(LocalProtocolError) as raised:
        build()
    assert words in str(raised.value)


def test_dsn_values_and_server_extensions_of_the_right_types_still_build() -> None:
    assert EnvelopeId("QQ314159").to_parameter() == "QQ314159"
    assert OriginalRecipient("rfc822", "bob@pqr.example").to_parameter() == (
        "rfc822;bob@pqr.example"
    )
    as_lists: Any = [("auth", ["PLAIN"]), ("SIZE", ("5",))]  # lists, as JSON gives them
    listed = ServerExtensions("mx.pqr.example", as_lists)
    assert listed["AUTH"] == ("PLAIN",) and listed.size == 5
    reply = Reply(250, ["mx.pqr.example", "PIPELINING", "SIZE 100"])
    assert ServerExtensions.from_reply(reply).size == 100


NOT_STR_KEYWORDS: Final = [FIVE, b"SIZE", b"\xc3\xa9", b"\xff"]


@pytest.mark.parametrize("keyword", NOT_STR_KEYWORDS, ids=repr)
def test_a_keyword_that_is_no_str_is_not_offered(keyword: Any) -> None:
    """As ``in`` says, and as a dict answers: absent, not an AttributeError, nor the
    TypeError that non-ASCII bytes met in ``ascii_upper``."""
    offered = ServerExtensions("mx.pqr.example", (("SIZE", ("5",)),))
    assert keyword not in offered
    assert offered.get(keyword) is None and offered.get(keyword, ()) == ()
    with pytest.raises(KeyError):
        offered[keyword]


OFFERED_AS_TUPLES: Final = (("SIZE", ("1000",)), ("PIPELINING", ()))


@pytest.mark.parametrize(
    "offered",
    [
        [["SIZE", ["1000"]], ["PIPELINING", []]],
        {"SIZE": ("1000",), "PIPELINING": ()}.items(),
        (pair for pair in OFFERED_AS_TUPLES),
    ],
    ids=["lists", "dict items", "a generator"],
)
def test_offered_pairs_of_any_iterable_are_kept_as_tuples(offered: Any) -> None:
    """Lists were kept as lists (unhashable, unequal to the tuple form), and
    ``dict.items()``, which main took, was refused."""
    built = ServerExtensions("mx.pqr.example", offered)
    tupled = ServerExtensions("mx.pqr.example", OFFERED_AS_TUPLES)
    assert built.offered == OFFERED_AS_TUPLES
    assert built == tupled and hash(built) == hash(tupled)
    assert built.size == 1000 and built.pipelining


def test_from_reply_does_not_check_its_own_parsed_text_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What it read off the wire is str and tuples already; a client reads an EHLO
    reply on every connection, and the public constructor's checks cost it ~11%."""

    def refuse(self: ServerExtensions) -> None:
        raise AssertionError("the public constructor's checks ran")

    reply = Reply(250, ["mx.pqr.example", "PIPELINING", "SIZE 100", "AUTH=plain login"])
    monkeypatch.setattr(ServerExtensions, "__post_init__", refuse)
    parsed = ServerExtensions.from_reply(reply)
    monkeypatch.undo()
    assert parsed == ServerExtensions(
        "mx.pqr.example", (("PIPELINING", ()), ("SIZE", ("100",)), ("AUTH", ("PLAIN", "LOGIN")))
    )
    assert parsed.size == 100 and parsed.auth == {"PLAIN", "LOGIN"}
    assert hash(parsed) == hash(ServerExtensions.from_reply(reply))


@dataclasses.dataclass(frozen=True)
class _Tagged(ServerExtensions):
    """A subclass with a field of its own and a ``__post_init__`` that sets more."""

    source: str = "wire"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "checked", True)


def test_from_reply_on_a_subclass_runs_its_constructor() -> None:
    """The unchecked shortcut built a subclass with neither its ``__init__`` nor its
    ``__post_init__``: no ``source``, no ``checked``, and a repr that raised."""
    ext = _Tagged.from_reply(Reply(250, ["mx", "SIZE 1000", "PIPELINING"]))
    assert type(ext) is _Tagged
    assert ext.source == "wire" and ext.checked  # type: ignore[attr-defined]  # set by it
    assert ext == _Tagged("mx", (("SIZE", ("1000",)), ("PIPELINING", ())))
    assert "source='wire'" in repr(ext)
