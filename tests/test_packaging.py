"""The wheel a user installs: what it holds and what it promises (issue 15 item 8).

The wheel is built once per run from the source tree with ``python -m build
--no-isolation`` (the backend, hatchling, comes with the ``test`` extra), so
no network is needed.
"""

from __future__ import annotations

import email.message
import email.parser
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

import smtpcore

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    out = tmp_path_factory.mktemp("dist")
    command = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    done = subprocess.run([*command, str(ROOT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("smtpcore-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.parser.Parser().parsestr(wheel.read(name).decode())


def test_wheel_holds_the_package_and_its_typing_marker(wheel: zipfile.ZipFile) -> None:
    names = [PurePosixPath(name) for name in wheel.namelist()]
    assert PurePosixPath("smtpcore/py.typed") in names
    assert PurePosixPath("smtpcore/__init__.py") in names
    tops = {name.parts[0] for name in names}
    assert tops == {"smtpcore", f"smtpcore-{smtpcore.__version__}.dist-info"}


def test_wheel_holds_no_tests_and_no_build_debris(wheel: zipfile.ZipFile) -> None:
    names = [PurePosixPath(name) for name in wheel.namelist()]
    tests = [n for n in names if n.name.startswith("test_") or n.name == "conftest.py"]
    assert not tests
    debris = [n for n in names if "__pycache__" in n.parts or n.suffix in (".pyc", ".pyo")]
    assert not debris


def test_wheel_ships_the_license(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    text = wheel.read(name).decode()
    assert text == (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert metadata(wheel)["License-Expression"] == "MIT"


def test_no_runtime_dependency(wheel: zipfile.ZipFile) -> None:
    """Every ``Requires-Dist`` sits under an extra: the core needs nothing installed."""
    requires = metadata(wheel).get_all("Requires-Dist") or []
    assert requires, "the extras (trio, dns, test) should be declared"
    unconditional = [line for line in requires if "extra ==" not in line]
    assert not unconditional


def test_metadata_says_what_users_look_for(wheel: zipfile.ZipFile) -> None:
    meta = metadata(wheel)
    assert meta["Version"] == smtpcore.__version__
    classifiers = set(meta.get_all("Classifier") or [])
    wanted = {
        "Framework :: AsyncIO",
        "Framework :: Trio",
        "Typing :: Typed",
        "License :: OSI Approved :: MIT License",
        *(f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)),
    }
    assert wanted <= classifiers
    assert any(c.startswith("Topic :: Communications :: Email") for c in classifiers)
    urls = {line.split(",", 1)[0] for line in meta.get_all("Project-URL") or []}
    assert {"Source", "Documentation", "Changelog", "Issues"} <= urls
    assert meta["Requires-Python"] == ">=3.10"


def test_wheel_ships_the_fuzz_seed_corpus(wheel: zipfile.ZipFile) -> None:
    """``python -m smtpcore.testing fuzz`` reads its seeds from package data."""
    names = wheel.namelist()
    for target in ("smtp-server", "smtp-client", "pop3-server", "pop3-client"):
        assert any(name.startswith(f"smtpcore/testing/corpus/{target}/") for name in names)
