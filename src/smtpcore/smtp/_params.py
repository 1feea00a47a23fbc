"""ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2, RFC 6531 §3.3).

``Mail-parameters = esmtp-param *(SP esmtp-param)``, where
``esmtp-param = esmtp-keyword ["=" esmtp-value]``. Keywords are
case-insensitive, so :class:`Parameters` stores them upper-cased.
"""

from __future__ import annotations

import re
from collections.abc import ItemsView, Iterable, Iterator, Mapping
from typing import Final, Protocol, TypeAlias, TypeVar, overload

from smtpcore._errors import LocalProtocolError, wrong_type

__all__ = ["NO_PARAMETERS", "ParameterValue", "Parameters", "ParametersLike", "parse_parameters"]

_KEYWORD_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# esmtp-value: %d33-60 / %d62-126, and UTF-8 beyond ASCII (RFC 6531 §3.3).
_VALUE_RE: Final = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")


class ParameterValue(Protocol):
    """A typed parameter value (:class:`~smtpcore.smtp.Notify`, say) that writes its
    own wire form."""

    def to_parameter(self) -> str | None: ...


_D = TypeVar("_D")

GivenValue: TypeAlias = "str | int | ParameterValue | None"
"""A value as :class:`Parameters` takes it: the wire text, a number, a typed value,
``True`` or None for a keyword without a value."""


def _wire_value(value: GivenValue) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value is True:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    to_parameter = getattr(value, "to_parameter", None)
    if to_parameter is None:
        raise LocalProtocolError(f"not a parameter value: {value!r}")
    written: str | None = to_parameter()
    return written


def _not_parameters(items: object) -> LocalProtocolError:
    return wrong_type("ESMTP parameters", items, "a mapping or (keyword, value) pairs")


class Parameters(Mapping[str, "str | None"]):
    """An immutable, ordered, case-insensitive map of ESMTP parameters.

    ``None`` is the value of a keyword given without ``=value``
    (``SMTPUTF8``). Every keyword and value is checked on construction.
    Values may be given typed (``{"NOTIFY": Notify.FAILURE, "SIZE": 1200,
    "SMTPUTF8": True}``); they are kept in their wire form.
    """

    __slots__ = ("_everyday", "_items")

    def __init__(
        self, items: Mapping[str, GivenValue] | Iterable[tuple[str, GivenValue]] = ()
    ) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        checked: dict[str, str | None] = {}
        try:
            iterator = iter(pairs)
        except TypeError:
            raise _not_parameters(items) from None
        for pair in iterator:
            if isinstance(pair, str | bytes | bytearray):  # "NV" would unpack as N=V
                raise _not_parameters(items)
            try:
                keyword, given = pair
            except (TypeError, ValueError):
                raise _not_parameters(items) from None
            value = _wire_value(given)
            if not isinstance(keyword, str) or not _KEYWORD_RE.fullmatch(keyword):
                raise LocalProtocolError(f"invalid ESMTP keyword {keyword!r}")
            if value is not None and (
                not isinstance(value, str) or not _VALUE_RE.fullmatch(value)
            ):
                raise LocalProtocolError(f"invalid value for {keyword}: {value!r}")
            upper = keyword.upper()
            if upper in checked:
                raise LocalProtocolError(f"ESMTP keyword {keyword} given twice")
            checked[upper] = value
        self._items: tuple[tuple[str, str | None], ...] = tuple(checked.items())
        self._everyday = 0
        """The keywords present as bits, when the server's parser read every parameter
        in a shape its extension accepts as it stands (``smtp/_everyday_params.py``):
        then the server checks them by these bits alone. 0 otherwise."""

    @classmethod
    def from_checked_words(cls, words: list[str]) -> Parameters | None:
        """The parameters of ``KEYWORD`` or ``KEYWORD=value`` words that the caller has
        matched against the esmtp-param syntax already (the server's everyday-line
        parser); None when a keyword is given twice, which the constructor refuses."""
        checked: dict[str, str | None] = {}
        for word in words:
            keyword, sep, value = word.partition("=")
            checked[keyword.upper()] = value if sep else None
        if len(checked) != len(words):
            return None
        params = object.__new__(cls)
        params._items = tuple(checked.items())
        params._everyday = 0
        return params

    @classmethod
    def coerce(cls, value: ParametersLike) -> Parameters:
        if isinstance(value, Parameters):
            return value
        if not value:
            return NO_PARAMETERS
        return cls(value)

    def __getitem__(self, keyword: str) -> str | None:
        upper = keyword.upper()
        for key, value in self._items:
            if key == upper:
                return value
        raise KeyError(keyword)

    @overload
    def get(self, keyword: str, /) -> str | None: ...

    @overload
    def get(self, keyword: str, /, default: str | _D) -> str | _D | None: ...

    def get(self, keyword: str, /, default: object = None) -> object:
        """As :meth:`Mapping.get`, without a ``KeyError`` raised and caught for each
        absent keyword (clients ask for ``BODY`` and ``SIZE`` on every message)."""
        upper = keyword.upper()
        for key, value in self._items:
            if key == upper:
                return value
        return default

    def __contains__(self, keyword: object) -> bool:
        if not self._items or not isinstance(keyword, str):
            return False
        upper = keyword.upper()
        for key, _ in self._items:  # noqa: SIM110  # a loop: any() would make a generator per lookup
            if key == upper:
                return True
        return False

    def items(self) -> ItemsView[str, str | None]:
        """The keyword-value pairs in order, as a dict view: the Mapping default
        iterates through ``__getitem__`` in Python, once per keyword."""
        return dict(self._items).items()

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Parameters):
            return self._items == other._items
        if isinstance(other, Mapping):
            return dict(self._items) == {str(k).upper(): v for k, v in other.items()}
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return f"Parameters({dict(self._items)!r})"

    def __str__(self) -> str:
        """The wire form: ``SIZE=1000 BODY=8BITMIME``."""
        return " ".join(key if value is None else f"{key}={value}" for key, value in self._items)


NO_PARAMETERS: Final = Parameters()
"""The empty parameters of a command given none, shared (``Parameters`` are
immutable): the client machine knows by identity that there is nothing to check."""

ParametersLike = Parameters | Mapping[str, GivenValue] | None
"""What event constructors accept for ``params``."""


def parse_parameters(text: str) -> Parameters:
    """Parse the parameters after a path; raises ``LocalProtocolError`` if malformed."""
    items: list[tuple[str, str | None]] = []
    for word in text.split(" "):
        if not word:
            continue
        keyword, sep, value = word.partition("=")
        items.append((keyword, value if sep else None))
    return Parameters(items)
