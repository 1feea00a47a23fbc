"""docs/tutorials/operator.rst's ``serve`` commands work after the README's plain install
(``pip install -e .``, no extras): without dnspython, ``serve`` refuses to start when
remote mail would need MX lookups, so each command either resolves without it (a
zone file, a smart host) or stands in a section that says to install the ``dns``
extra first. The relay example's first server had no ``--resolver``: started with
``&``, it exited 2 with one line of stderr, and the send and fetch after it failed.
"""

from __future__ import annotations

import itertools
import re
import shlex
import smtplib
import textwrap
from pathlib import Path

import pytest

from smtpcore.server import cli
from smtpcore.server.config import ConfigError
from smtpcore.server.resolvers import SystemResolver, check_remote_delivery, make_resolver
from test_cli_serve import LOOPBACK, ZONE, serve

PAGE = Path(__file__).parent.parent / "docs" / "tutorials" / "operator.rst"
_BLOCK = re.compile(r"\.\. code-block:: sh\n\n((?:(?:   .*)?\n)+)")
_HEADING = re.compile(r"^\S.*\n[-=~^]{3,}\n", re.MULTILINE)
_TEXT = re.compile(r"\.\. code-block:: text\n\n((?:(?:   .*)?\n)+)")
_ZONE = re.compile(r"cat > (\S+) <<'EOF'\n(.*?)\nEOF\n", re.DOTALL)


def _serve_commands(block: str) -> list[list[str]]:
    """The ``serve`` commands of a shell block, as argv after ``python -m smtpcore``."""
    script = textwrap.dedent(block).replace("\\\n", " ")
    commands = []
    for line in script.splitlines():
        words = shlex.split(line.removesuffix("&"))
        if words[:4] == ["python", "-m", "smtpcore", "serve"]:
            commands.append(words[3:])
    return commands


def _write_files(block: str, where: Path) -> None:
    """The files a shell block writes with ``cat > FILE <<'EOF'`` (the zone file)."""
    for name, text in _ZONE.findall(textwrap.dedent(block)):
        (where / name).write_text(text + "\n", encoding="utf-8")


def _sections() -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    starts = [m.start() for m in _HEADING.finditer(text)] + [len(text)]
    return [text[a:b] for a, b in itertools.pairwise(starts)]


def test_the_intro_promises_only_what_is_true() -> None:
    """The page said the server "needs nothing but Python 3.10 or newer"."""
    intro = _sections()[0]
    assert "needs nothing but Python" not in intro
    assert "smtpcore[dns]" in intro


def test_every_serve_command_starts_without_dnspython_or_says_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SystemResolver, "can_look_up_mx", property(lambda self: False))
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    checked = 0
    for section in _sections():
        for block in _BLOCK.findall(section):
            _write_files(block, tmp_path)
            for argv in _serve_commands(block):
                checked += 1
                args = parser.parse_args(argv)
                try:
                    check_remote_delivery(make_resolver(args.resolver), args.relay_host)
                except ConfigError:
                    before = section[: section.index(block)]
                    assert "smtpcore[dns]" in before, (argv, "needs dnspython, unsaid")
    assert checked >= 5


def test_the_relay_example_needs_no_dnspython(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its servers resolve from the zone file it writes, both of them."""
    monkeypatch.setattr(SystemResolver, "can_look_up_mx", property(lambda self: False))
    monkeypatch.chdir(tmp_path)
    (relay,) = [s for s in _sections() if "cat > zone.txt" in s]
    for block in _BLOCK.findall(relay):
        _write_files(block, tmp_path)
    commands = [argv for block in _BLOCK.findall(relay) for argv in _serve_commands(block)]
    assert len(commands) == 2
    for argv in commands:
        args = cli.build_parser().parse_args(argv)
        check_remote_delivery(make_resolver(args.resolver), args.relay_host)


def test_the_two_domain_server_runs_with_its_users_file_and_aliases(tmp_path: Path) -> None:
    """The section's ``serve`` command as written, with the ``users.txt`` its text
    blocks write (its users, and its sender alias, which names the ``--user`` john),
    only its data directory, ports and resolver moved to the test's: the users file's
    parser refused the alias, and the server exited 2. Here john sends as the alias."""
    (section,) = [s for s in _sections() if s.startswith("A server for two domains")]
    blocks = [textwrap.dedent(block) for block in _TEXT.findall(section)]
    users = next(block for block in blocks if block.startswith("# users.txt"))
    alias = next(block for block in blocks if "->" in block)
    users_file = tmp_path / "users.txt"
    users_file.write_text(users + alias, encoding="utf-8")
    users_file.chmod(0o600)
    (argv,) = [argv for block in _BLOCK.findall(section) for argv in _serve_commands(block)]
    assert "--user" in argv and "users.txt" in argv
    argv = [str(users_file) if word == "users.txt" else word for word in argv[1:]]
    zone = tmp_path / "zone.txt"
    zone.write_text(ZONE, encoding="utf-8")
    data = tmp_path / "data"
    moved = ("--data-dir", str(data), "--resolver", f"static:{zone}")
    extra = (*argv, *moved)
    with serve(data, "abc.example", [], listeners=("submission",), extra=extra) as abc:
        with smtplib.SMTP(LOOPBACK, abc.ports["submission"], timeout=10) as smtp:
            smtp.login("john@abc.example", "s3cret")
            assert smtp.mail("sales@abc.example")[0] == 250
        assert abc.stop() == 0
