"""``python -m smtpcore``: ``serve``, ``send``, ``fetch`` and ``demo``.

The commands live in :mod:`smtpcore.server.cli`; ``demo --scripted`` plays a
scripted session through the SMTP server machine alone.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence

from smtpcore._early_signals import held

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. For ``serve``, signals are held from here, before the server's
    modules are imported: one sent while it starts is carried out once it listens,
    never fatal (SIGHUP, SIGUSR1), or stops it right after (SIGTERM, SIGINT). For the
    other commands, a Ctrl-C while their modules load (most of a second) exits 130
    with no traceback, as one later does."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((arg for arg in args if not arg.startswith("-")), None)
    try:
        with held() if command == "serve" else contextlib.nullcontext():
            from smtpcore.server.cli import main as run

            return run(argv)
    except KeyboardInterrupt:  # Ctrl-C while the commands' modules load: as later, 130
        return 130


if __name__ == "__main__":
    sys.exit(main())
