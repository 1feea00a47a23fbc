"""``python -m smtpcore``: ``serve``, ``send``, ``fetch`` and ``demo``.

The commands live in :mod:`smtpcore.server.cli`; ``demo --scripted`` plays a
scripted session through the SMTP server machine alone.
"""

from __future__ import annotations

import sys

from smtpcore.server.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
