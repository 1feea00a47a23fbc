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


def _docstring_where_defined(app, what, name, obj, options, lines):  # type: ignore[no-untyped-def]
    """For a module constant re-exported from the module that defines it (such as
    ``smtpcore.testing.strategies.POP3_CAPABILITIES``), autodoc finds no docstring
    beside the name where it is documented, and shows its type's (``frozenset``'s,
    ``tuple``'s) instead. Take the docstring written under the constant where it is
    defined: the module of the package that binds the same object and documents it."""
    if what != "data" or "." not in name:
        return
    from sphinx.pycode import ModuleAnalyzer

    module_name, attribute = name.rsplit(".", 1)
    package = module_name.split(".", 1)[0]
    for candidate_name, module in sorted(sys.modules.items()):
        if candidate_name.split(".", 1)[0] != package or module is None:
            continue
        if getattr(module, attribute, None) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(candidate_name).find_attr_docs()
        except Exception:  # a module with no source to read
            continue
        doc = docs.get(("", attribute))
        if doc:
            if candidate_name != module_name:
                lines[:] = list(doc)
            return


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("autodoc-process-docstring", _docstring_where_defined)
    return {"parallel_read_safe": True}
