"""Every docstring example in smtpcore.testing runs, as doctest runs it.

An example that shows what ``.example()`` draws is marked ``+SKIP`` (its
value is random, as Hypothesis's own documentation shows them); everything
else runs: the imports, the ``@given`` tests the examples define and call,
the harnesses' transcripts.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

import smtpcore.testing


def package_modules() -> list[str]:
    names = [smtpcore.testing.__name__]
    for info in pkgutil.iter_modules(smtpcore.testing.__path__, smtpcore.testing.__name__ + "."):
        if info.name.rsplit(".", 1)[1] != "__main__":
            names.append(info.name)
    return sorted(names)


def examples(module: ModuleType) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module) if test.examples]


@pytest.mark.parametrize("name", package_modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples(module):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}"


def test_every_strategy_has_an_example() -> None:
    from smtpcore.testing import strategies

    missing = [
        name
        for name in strategies.__all__
        if callable(getattr(strategies, name))
        and not name[0].isupper()
        and ">>>" not in (getattr(strategies, name).__doc__ or "")
    ]
    assert missing == []
