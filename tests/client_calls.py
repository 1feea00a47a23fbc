"""One test body for the blocking client and the async ones (``kind``: ``"sync"``,
``"asyncio"`` or ``"trio"``): the client made alike for each, its calls awaited
where they need it, and the session run on a loop that suits it."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

from peers import LOOPBACK, TLSFiles, run

__all__ = ["client_of", "done", "run_session"]


def client_of(kind: str, name: str, port: int, tls: TLSFiles | None = None, **options: Any) -> Any:
    """The ``kind``'s client class ``name`` (``"SMTPClient"``, ``"POP3Client"``) for a
    server on loopback at ``port``, under TLS from the first byte with ``tls``'s
    client context if given (RFC 8314 §3.3); the blocking one with a 10-second
    timeout, so that a test that goes wrong fails instead of hanging."""
    module: Any = importlib.import_module(f"smtpcore.{kind}")
    if tls is not None:
        options.update(tls_on_connect=True, ssl_context=tls.client_context)
    if kind == "sync":
        options["timeout"] = 10
    return getattr(module, name)(LOOPBACK, port, **options)


async def done(value: Any) -> Any:
    """A call's result, awaited on the async clients (the blocking one has it already)."""
    return await value if hasattr(value, "__await__") else value


def run_session(kind: str, session: Callable[[], Any]) -> None:
    """Run the coroutine function ``session`` to its end: under the adapter's framework
    for an async client; for the blocking one, whose calls block, on any loop."""
    if kind == "sync":
        asyncio.run(session())
    else:
        run(kind, session)
