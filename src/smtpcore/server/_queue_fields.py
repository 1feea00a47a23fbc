"""The checks of a queue file's JSON fields: each field read with its own type (a
number finite, a flag a real boolean, a text a string), a ``ValueError`` naming the
field otherwise.

Apart from the entry they build (:mod:`smtpcore.server._queue_entry`): what the file
holds is data to check, not to convert, and these say how, one type each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = [
    "_array",
    "_flag",
    "_integer",
    "_integers",
    "_number",
    "_object",
    "_optional_text",
    "_param",
    "_text",
    "_texts",
]


def _param(item: object) -> tuple[str, str | None]:
    if not (isinstance(item, list) and len(item) == 2):
        raise ValueError(f"params: {item!r} is not a [keyword, value] pair")
    keyword, value = item
    if not isinstance(keyword, str) or not (value is None or isinstance(value, str)):
        raise ValueError(f"params: {item!r} is not a [keyword, value] pair")
    return keyword, value


def _object(value: object) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise ValueError(f"{type(value).__name__} where an object belongs")
    return value


def _array(fields: Mapping[str, object], key: str) -> list[object]:
    value = fields[key]
    if not isinstance(value, list):
        raise ValueError(f"{key}: {type(value).__name__}, not an array")
    return value


def _texts(fields: Mapping[str, object], key: str) -> list[str]:
    """An array of strings, empty when absent (files written before it existed)."""
    if key not in fields:
        return []
    items = _array(fields, key)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"{key}: not an array of strings")
    return [str(item) for item in items]


def _integers(fields: Mapping[str, object], key: str) -> list[int]:
    """An array of integers, empty when absent (files written before it existed)."""
    if key not in fields:
        return []
    items = _array(fields, key)
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in items):
        raise ValueError(f"{key}: not an array of integers")
    return [item for item in items if isinstance(item, int)]


def _text(fields: Mapping[str, object], key: str) -> str:
    value = fields[key]
    if not isinstance(value, str):
        raise ValueError(f"{key}: {type(value).__name__}, not a string")
    return value


def _optional_text(
    fields: Mapping[str, object], key: str, *, absent_ok: bool = False
) -> str | None:
    if absent_ok and key not in fields:
        return None
    value = fields[key]
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}: {type(value).__name__}, not a string or null")
    return value


def _integer(fields: Mapping[str, object], key: str) -> int:
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, int):  # a float, even 1e400, is not
        raise ValueError(f"{key}: {value!r} is not an integer")
    return value


def _number(fields: Mapping[str, object], key: str) -> float:
    """A finite number. A time that is NaN is never due (every comparison with it is
    false: the delivery worker woke for it without end, and never delivered it), and
    one that is infinite never comes."""
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key}: {value!r} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer past float's range
        raise ValueError(f"{key}: {value!r} is out of range") from None
    if not math.isfinite(number):
        raise ValueError(f"{key}: {value!r} is not finite")
    return number


def _flag(fields: Mapping[str, object], key: str) -> bool:
    """A flag, false when absent (files written before it existed)."""
    value = fields.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"{key}: {value!r} is not true or false")
    return value
