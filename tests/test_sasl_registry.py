"""Names, registries, the mechanism choice, the public surface and the imports."""

from __future__ import annotations

import ast
import itertools
import pathlib
import subprocess
import sys

import pytest

import smtpcore.sasl
from smtpcore.sasl import (
    CLIENT_MECHANISMS,
    PREFERENCE,
    SERVER_MECHANISMS,
    ClientMechanism,
    ServerMechanism,
    choose_mechanism,
    scram_client,
)

SASL_DIR = pathlib.Path(smtpcore.sasl.__file__).parent

FLAGS = {
    # name: (plaintext, requires_tls)
    "SCRAM-SHA-256-PLUS": (False, False),
    "SCRAM-SHA-1-PLUS": (False, False),
    "SCRAM-SHA-256": (False, False),
    "SCRAM-SHA-1": (False, False),
    "OAUTHBEARER": (False, True),
    "XOAUTH2": (False, True),
    "CRAM-MD5": (False, False),
    "PLAIN": (True, True),
    "LOGIN": (True, True),
}


def test_registries_hold_one_client_and_one_server_per_mechanism() -> None:
    assert set(CLIENT_MECHANISMS) == set(SERVER_MECHANISMS) == set(PREFERENCE) == set(FLAGS)
    for name in PREFERENCE:
        client, server = CLIENT_MECHANISMS[name], SERVER_MECHANISMS[name]
        assert issubclass(client, ClientMechanism)
        assert issubclass(server, ServerMechanism)
        assert client.name == server.name == name
        assert (client.plaintext, client.requires_tls) == FLAGS[name]
        assert (server.plaintext, server.requires_tls) == FLAGS[name]


def test_registries_are_read_only() -> None:
    with pytest.raises(TypeError):
        CLIENT_MECHANISMS["X"] = ClientMechanism  # type: ignore[index]


@pytest.mark.parametrize(
    ("offered", "available", "expected"),
    [
        (["PLAIN", "LOGIN"], ["LOGIN", "PLAIN"], "PLAIN"),
        (["LOGIN"], ["PLAIN", "LOGIN"], "LOGIN"),
        (["CRAM-MD5", "PLAIN"], ["PLAIN", "CRAM-MD5"], "CRAM-MD5"),
        (["PLAIN", "SCRAM-SHA-256", "CRAM-MD5"], list(PREFERENCE), "SCRAM-SHA-256"),
        (["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], list(PREFERENCE), "SCRAM-SHA-256-PLUS"),
        (["SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"], ["SCRAM-SHA-256"], "SCRAM-SHA-256"),
        (["SCRAM-SHA-256"], ["SCRAM-SHA-256-PLUS"], None),
        (["XOAUTH2", "OAUTHBEARER"], ["XOAUTH2", "OAUTHBEARER"], "OAUTHBEARER"),
        (["XOAUTH2", "PLAIN"], ["XOAUTH2", "PLAIN"], "XOAUTH2"),
        (["OAUTHBEARER", "CRAM-MD5"], ["OAUTHBEARER", "CRAM-MD5"], "OAUTHBEARER"),
        (["scram-sha-256", "plain"], ["PLAIN", "SCRAM-SHA-256"], "SCRAM-SHA-256"),
        (["Plain"], ["pLAIN"], "PLAIN"),
        (["GSSAPI", "SCRAM-SHA-1", "PLAIN"], ["GSSAPI", "SCRAM-SHA-1", "PLAIN"], "SCRAM-SHA-1"),
        (["GSSAPI", "SCRAM-SHA-1", "PLAIN"], ["GSSAPI", "PLAIN"], "PLAIN"),
        (["SCRAM-SHA-1", "SCRAM-SHA-256"], list(PREFERENCE), "SCRAM-SHA-256"),
        # A client that can bind takes the -PLUS offered, whatever its hash (RFC 5802 §6).
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256"], list(PREFERENCE), "SCRAM-SHA-1-PLUS"),
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"], list(PREFERENCE), "SCRAM-SHA-256-PLUS"),
        (["SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"], ["SCRAM-SHA-1", "PLAIN"], "SCRAM-SHA-1"),
        (["GSSAPI"], ["GSSAPI"], None),
        (["PLAIN"], ["CRAM-MD5"], None),
        ([], list(PREFERENCE), None),
        (list(PREFERENCE), [], None),
    ],
)
def test_choose_mechanism(offered: list[str], available: list[str], expected: str | None) -> None:
    assert choose_mechanism(offered, available) == expected
    assert choose_mechanism(iter(offered), iter(available)) == expected  # one-shot iterables


def test_names_are_matched_in_ascii_case_alone() -> None:
    """RFC 4422 §3.1: a mechanism name is ASCII, and so is its case. ``str.upper()``
    matched ``"pla\u0131n"`` (dotless i) to PLAIN and ``"\u017fcram-sha-256"`` (long s)
    to SCRAM-SHA-256, offered or available; ASCII case still matches."""
    assert choose_mechanism(["pla\u0131n"], PREFERENCE) is None
    assert choose_mechanism(["PLAIN"], ["pla\u0131n"]) is None
    assert choose_mechanism(["plain"], ["Plain"]) == "PLAIN"
    long_s = scram_client("user", "pencil", offered=["\u017fcram-sha-256"], channel_bindings={})
    assert long_s is None
    assert scram_client("user", "pencil", offered=["scram-sha-256"], channel_bindings={})


def test_preference_is_strongest_first() -> None:
    assert PREFERENCE == (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1",
        "OAUTHBEARER",
        "XOAUTH2",
        "CRAM-MD5",
        "PLAIN",
        "LOGIN",
    )
    for stronger, weaker in itertools.pairwise(PREFERENCE):
        assert choose_mechanism([weaker, stronger], PREFERENCE) == stronger


def test_all_matches_exports() -> None:
    exported = {name for name in vars(smtpcore.sasl) if not name.startswith("_")}
    submodules = {path.stem for path in SASL_DIR.glob("*.py")}
    assert set(smtpcore.sasl.__all__) == exported - submodules
    assert len(smtpcore.sasl.__all__) == len(set(smtpcore.sasl.__all__))


def test_design_public_names() -> None:
    for name in (
        "PlainClient",
        "PlainServer",
        "LoginClient",
        "LoginServer",
        "CramMD5Client",
        "CramMD5Server",
        "ScramSHA256Client",
        "ScramSHA256Server",
        "ScramSHA256PlusClient",
        "ScramSHA256PlusServer",
        "ScramSHA1Client",
        "ScramSHA1Server",
        "ScramSHA1PlusClient",
        "ScramSHA1PlusServer",
        "XOAuth2Client",
        "XOAuth2Server",
        "OAuthBearerClient",
        "OAuthBearerServer",
    ):
        assert name in smtpcore.sasl.__all__


def _imported_modules(path: pathlib.Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "absolute imports only"
            assert node.module is not None
            modules.add(node.module)
    return modules


SASL_LEAVES = ("smtpcore._errors", "smtpcore._secret", "smtpcore._words")
"""What the SASL package may import of smtpcore outside it: the errors, the reprs that
hide secrets, and the ASCII case of mechanism names (RFC 4422 §3.1)."""


@pytest.mark.parametrize("leaf", ["smtpcore._secret", "smtpcore._words"])
def test_what_sasl_imports_outside_it_is_a_stdlib_only_leaf(leaf: str) -> None:
    path = SASL_DIR.parent / f"{leaf.rpartition('.')[2]}.py"
    for module in _imported_modules(path):
        assert module.partition(".")[0] in sys.stdlib_module_names, module


@pytest.mark.parametrize("path", sorted(SASL_DIR.glob("*.py")), ids=lambda path: path.name)
def test_sasl_imports_only_stdlib_and_errors(path: pathlib.Path) -> None:
    forbidden = {"asyncio", "trio", "socket", "ssl", "time", "random"}
    for module in _imported_modules(path):
        top = module.partition(".")[0]
        if top == "smtpcore":
            allowed = module in SASL_LEAVES
            assert allowed or module.startswith("smtpcore.sasl"), module
        else:
            assert top in sys.stdlib_module_names, module
            assert top not in forbidden, module


def test_importing_sasl_loads_nothing_outside_the_stdlib() -> None:
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import smtpcore.sasl\n"
        "new = {name.partition('.')[0] for name in set(sys.modules) - before}\n"
        "print(' '.join(sorted(new - set(sys.stdlib_module_names))))\n"
        "print(' '.join(sorted(name for name in sys.modules if name.startswith('smtpcore'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    third_party, ours = result.stdout.splitlines()
    assert third_party.split() == ["smtpcore"]
    for name in ours.split():
        # The package root's own imports come with any submodule; nothing else may.
        assert name.startswith("smtpcore.sasl") or name in {
            "smtpcore",
            "smtpcore._errors",
            "smtpcore._secret",  # reprs that hide secrets: stdlib only
            "smtpcore._words",  # the ASCII case of mechanism names: stdlib only
            "smtpcore._lines",  # FramingPolicy, which the root exports
            "smtpcore._sentinels",
            "smtpcore._version",
        }, name
