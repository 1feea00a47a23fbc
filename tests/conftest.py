"""Suite-wide pytest setup: the ``interop`` marker, the Hypothesis profiles, and the
fixtures the adapter suites share (``adapter``, ``tls``).

``CI=true`` selects the ``ci`` profile (derandomized); ``HYPOTHESIS_PROFILE=deep``
explores a thousand examples a test; ``HYPOTHESIS_PROFILE`` overrides the choice.
Both profiles have no deadline: a loaded 2-core machine must not turn a slow
example into a failure.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from peers import ADAPTERS, TLSFiles, make_tls_files

settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
)
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    # CI gates landing: the same examples every run, so a submission never
    # fails on a draw that the previous run did not make. Exploration is the
    # "dev" and "deep" profiles' job.
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "deep",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev")
)

_INTEROP_MARKER = "interop: talks to a real peer program on loopback"


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml declares it too; registering here keeps --strict-markers happy
    # if the suite is run with another configuration file.
    if not any(line.startswith("interop:") for line in config.getini("markers")):
        config.addinivalue_line("markers", _INTEROP_MARKER)


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """Each adapter in turn: ``"asyncio"``, ``"trio"``."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A test CA and a server certificate (127.0.0.1, localhost, mx.test), one set a module."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))
