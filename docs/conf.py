"""Sphinx configuration for smtpcore's documentation.

Built by ``scripts/test`` with ``sphinx-build -W``: every warning fails the
build. No extension here reaches the network (no intersphinx), since CI has none.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Let autodoc import the package from the source tree even without an install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from smtpcore import __version__

project = "smtpcore"
author = "the smtpcore developers"
copyright = "the smtpcore developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
