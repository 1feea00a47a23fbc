"""Checks of what a server's SASL is configured with: an ``Authenticator``'s settings,
or the mapping of mechanism names to factories an SMTP server's ``auth=`` takes.

Checked when the object is built, each wrong type a TypeError naming the setting: found
later, ``mechanisms=[1]`` was an AttributeError from deep inside, and
``check_password=5`` or ``in_thread="yes"`` were taken, and every login failed (or ran
where it was not meant to) at each AUTH.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias

from smtpcore._words import ascii_upper, listed
from smtpcore.sasl import ServerMechanism

__all__ = ["check_callable", "check_flag", "mechanism_factories", "mechanism_names"]

Factory: TypeAlias = Callable[[], ServerMechanism]
"""Builds a fresh server mechanism for one AUTH (the handler's ``MechanismFactory``)."""


def check_callable(option: str, value: object) -> None:
    """A credential check or hook: a callable (a function, an ``async def`` one, an object
    with ``__call__``) or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{option} must be callable or None, not {type(value).__name__}")


def check_flag(option: str, value: object) -> None:
    """A yes or no: ``True`` or ``False`` alone, since ``"no"`` is true."""
    if not isinstance(value, bool):
        raise TypeError(f"{option} must be True or False, not {type(value).__name__}")


def mechanism_names(option: str, names: object) -> tuple[str, ...]:
    """``names``, the value of ``option``, an iterable of SASL mechanism names, as a tuple
    of them upper-cased (ASCII only, RFC 4422 §3.1): read once, so that an iterator is
    not used up by the check."""
    if not isinstance(names, Iterable):
        raise TypeError(f"{option} takes a list of mechanism names, not {type(names).__name__}")
    given: list[str] = []
    for name in listed(option, names):
        if not isinstance(name, str):
            raise TypeError(
                f"{option} takes mechanism names (str), not {type(name).__name__}: {name!r}"
            )
        given.append(ascii_upper(name))
    return tuple(given)


def mechanism_factories(option: str, mechanisms: object) -> dict[str, Factory]:
    """``mechanisms``, the value of ``option``, a mapping of mechanism names to the
    factories that build a mechanism for each AUTH, keyed by the names upper-cased;
    the machine the names are given to checks that each is a mechanism name."""
    if not isinstance(mechanisms, Mapping):
        raise TypeError(
            f"{option} takes an Authenticator or a mapping of mechanism names to "
            f"factories, not {type(mechanisms).__name__}"
        )
    factories: dict[str, Factory] = {}
    for name, factory in mechanisms.items():
        if not isinstance(name, str):
            raise TypeError(
                f"{option} takes mechanism names (str) as keys, not {type(name).__name__}: "
                f"{name!r}"
            )
        if not callable(factory):
            raise TypeError(
                f"{option}[{name!r}] must be a factory of a mechanism (callable), "
                f"not {type(factory).__name__}"
            )
        factories[ascii_upper(name)] = factory  # as the machine upper-cases the names it lists
    return factories
