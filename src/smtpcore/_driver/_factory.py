"""What a ``connection_factory`` may change in a server's machine, shared by the SMTP
and POP3 servers.

A server builds each session's machine with its own settings (TLS, AUTH, SIZE,
...). A factory either starts from that machine (``options.build_connection``),
which refuses a keyword the server sets, or builds its own, which the server
checks against its settings: a machine that disagrees would run a session
without the server's guards, so it is refused, never served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["check_agreement", "refuse_server_keywords"]


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
    conn: object, expected: Mapping[str, object], server_keywords: Mapping[str, str]
) -> None:
    """``ValueError`` naming the first option on which the machine ``conn`` disagrees
    with the values the server enforces (``expected``, by machine option)."""
    for name, value in expected.items():
        actual = getattr(conn, name)
        if actual != value:
            raise ValueError(
                f"connection_factory: the machine has {name}={actual!r} where the "
                f"server's {server_keywords.get(name, name)} make it {value!r}: build it "
                "with options.build_connection(), or set that on the server"
            )
