"""What a ``connection_factory`` may change in a server's machine, shared by the SMTP
and POP3 servers.

One rule for both: what the server sets is the server's. A factory starts from the
server's machine (``options.build_connection``), which refuses a keyword the server
sets, or builds its own, which must have every option the server sets as the server
has it: a machine that disagrees, weaker or stricter, would run a session the
server's settings do not describe, so it is refused, never served. What the server
decides per session (SMTP's ``tls``, POP3's logins) it sets on every machine. And
either machine must be new: one that a session (or the factory) has already moved
on would start past the server's guards. What "new" looks like is read once, from
the machine the server builds with its options (:func:`session_state`), so that a
session runs on the factory's machine alone. Nor may a machine run two sessions at
once: each server keeps the machines its sessions run on (:class:`MachinesInUse`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "MachinesInUse",
    "check_agreement",
    "check_new",
    "refuse_server_keywords",
    "session_state",
]


def refuse_server_keywords(
    machine_options: Iterable[str], server_keywords: Mapping[str, str]
) -> None:
    """``ValueError`` for a machine option the server sets itself (``server_keywords``:
    machine option -> the server keyword that sets it): changed in the factory, it
    would silently override the server's setting."""
    for name in machine_options:
        if name in server_keywords:
            raise ValueError(
                f"build_connection: {name} is the server's to set: "
                f"give the server {server_keywords[name]}"
            )


def check_agreement(
    conn: object,
    expected: Mapping[str, object],
    server_keywords: Mapping[str, str],
    read: Callable[[object, str], object] = getattr,
) -> None:
    """``ValueError`` naming the first attribute on which the machine ``conn`` (read
    with ``read``) disagrees with the values the server sets (``expected``)."""
    for name, value in expected.items():
        actual = read(conn, name)
        if actual != value:
            raise ValueError(
                f"connection_factory: the machine has {name}={actual!r} where the "
                f"server's {server_keywords.get(name, name)} sets it to {value!r}: build "
                "it with options.build_connection(), or set it on the server"
            )


def session_state(conn: object, names: Iterable[str]) -> dict[str, object]:
    """What the machine ``conn`` shows of the session it has run, by attribute
    ``names``: taken once from a new machine, it is what :func:`check_new` expects."""
    return {name: getattr(conn, name) for name in names}


def check_new(conn: object, new: Mapping[str, object]) -> None:
    """``ValueError`` naming the first attribute of ``new`` (what a machine no session
    has used shows of its session, by :func:`session_state`: its state, whether the
    client authenticated, bytes received...) on which ``conn`` differs from it.
    The options agreeing is not enough: a machine already authenticated, greeted or
    holding a client's bytes would serve MAIL with no AUTH, or commands the server
    never read."""
    for name, expected in new.items():
        actual = getattr(conn, name)
        if actual != expected:
            raise ValueError(
                f"connection_factory: the machine is not new: its {name} is {actual!r} "
                f"where a new machine's is {expected!r}: return a machine no session has "
                "used, as options.build_connection() gives"
            )


class MachinesInUse:
    """The machines a ``connection_factory`` gave to a server's sessions still running,
    by identity. A factory that hands one machine to two sessions passes
    :func:`check_new` for the second while the first has not yet moved it (SMTP's
    waits for ``handle_connect``): both would then drive it. Kept only for sessions
    with a factory; a session gives its machine back as it ends, while it still holds
    it, so an identity here is never a later machine's."""

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: set[int] = set()

    def check_free(self, conn: object) -> None:
        """``ValueError`` when ``conn`` runs a session already."""
        if id(conn) in self._running:
            raise ValueError(
                "connection_factory: the machine is running another session already: "
                "return a new machine for each session, as options.build_connection() gives"
            )

    def take(self, conn: object) -> None:
        """``conn`` runs a session from now on (checked with :meth:`check_free`)."""
        self._running.add(id(conn))

    def give_back(self, conn: object) -> None:
        """The session on ``conn`` is over; nothing when ``conn`` was never taken (a
        refused session's machine)."""
        self._running.discard(id(conn))
