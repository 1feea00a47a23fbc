"""The submission listener's sender policy end to end through ``python -m smtpcore serve``
(issue 13 item 8): a login sends as itself or as an alias the users file grants it,
553 5.7.1 otherwise, logged; ``--no-sender-login-match`` turns the check off."""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

import pytest

from smtpcore.server import cli
from smtpcore.server.config import ConfigError, ServerConfig, read_users, read_users_and_aliases
from test_cli_serve import LOOPBACK, serve

USERS = """\
john@abc.example:john-pw
mary@abc.example:mary-pw
# sales@ is john's and mary's to send as
sales@abc.example -> john@abc.example, Mary@abc.example
"""


def test_the_users_file_grants_sender_aliases(tmp_path: Path) -> None:
    path = tmp_path / "users"
    path.write_text(USERS)
    users, aliases = read_users_and_aliases(path)
    assert set(users) == {"john@abc.example", "mary@abc.example"}
    assert aliases == {"sales@abc.example": ("john@abc.example", "mary@abc.example")}


def test_an_alias_naming_nobody_read_through_the_api_is_refused_by_server_config(
    tmp_path: Path,
) -> None:
    """``read_users_and_aliases()`` refused such an alias itself; it no longer knows
    every user (``--user`` gives more), and ``ServerConfig``, which does, refuses it."""
    path = tmp_path / "users"
    path.write_text(USERS + "info@abc.example -> nobody@abc.example\n")
    users, aliases = read_users_and_aliases(path)
    assert aliases["info@abc.example"] == ("nobody@abc.example",)
    with pytest.raises(ConfigError, match=r"info@abc\.example -> nobody@abc\.example: "):
        ServerConfig(domains=("abc.example",), users=users, sender_aliases=aliases)
    found = read_users(path)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:5: info@abc\.example -> "):
        ServerConfig(
            domains=("abc.example",),
            users=found.users,
            sender_aliases=found.aliases,
            alias_sources=found.alias_sources,
        )


def test_serve_with_an_alias_naming_nobody_exits_2_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "users"
    path.write_text(USERS + "info@abc.example -> nobody@abc.example\n")
    path.chmod(0o600)
    argv = ["serve", "--domain", "abc.example", "--data-dir", str(tmp_path / "data")]
    assert cli.main([*argv, "--users-file", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"smtpcore serve: {path}:5: info@abc.example -> nobody@abc.example: "
        "nobody@abc.example is not a user here\n"
    )


def test_an_alias_may_name_a_user_of_the_command_line(tmp_path: Path) -> None:
    """The operator tutorial gives john with ``--user`` and grants him an alias in the
    users file: the file's parser refused that alias, knowing only its own users, so
    the tutorial's server never started (exit 2)."""
    path = tmp_path / "users"
    path.write_text("mary@abc.example:mary-pw\nsales@abc.example -> john@abc.example\n")
    argv = ["serve", "--domain", "abc.example", "--user", "john@abc.example:john-pw"]
    args = cli.build_parser().parse_args([*argv, "--users-file", str(path)])
    config = cli.config_from_args(args)
    assert config.sender_aliases == {"sales@abc.example": ("john@abc.example",)}


def test_an_alias_naming_nobody_is_refused_with_its_line(tmp_path: Path) -> None:
    """Refused at start and so at a SIGHUP, whose reload reads the options again and
    keeps the old configuration when they fail."""
    path = tmp_path / "users"
    path.write_text(USERS + "info@abc.example -> nobody@abc.example\n")
    argv = ["serve", "--domain", "abc.example", "--user", "john2@abc.example:pw"]
    args = cli.build_parser().parse_args([*argv, "--users-file", str(path)])
    with pytest.raises(ConfigError) as refused:
        cli.config_from_args(args)
    assert str(refused.value) == (
        f"{path}:5: info@abc.example -> nobody@abc.example: nobody@abc.example is not a user here"
    )


def _mail_from(port: int, login: str, password: str, senders: list[str]) -> list[int]:
    codes = []
    with smtplib.SMTP(LOOPBACK, port, timeout=10) as smtp:
        smtp.login(login, password)
        for sender in senders:
            codes.append(smtp.mail(sender)[0])
            smtp.rset()
    return codes


def test_a_login_sends_as_itself_or_its_aliases_only(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text(USERS)
    with serve(
        tmp_path / "abc",
        "abc.example",
        [],
        listeners=("submission",),
        extra=("--users-file", str(users)),
    ) as abc:
        port = abc.ports["submission"]
        senders = [
            "john@abc.example",
            "JOHN@ABC.example",
            "sales@abc.example",
            "",
            "mary@abc.example",
        ]
        assert _mail_from(port, "john@abc.example", "john-pw", senders) == [
            250,
            250,
            250,
            250,
            553,
        ]
        assert _mail_from(port, "mary@abc.example", "mary-pw", ["john@elsewhere.example"]) == [553]
        assert abc.stop() == 0
    log = abc.log()
    assert (
        "NOQUEUE: reject: MAIL from [127.0.0.1]:" in log
        and "553 5.7.1 <mary@abc.example>: Sender address rejected: not owned by user "
        "john@abc.example; listener=submission from=<mary@abc.example> user=<john@abc.example>"
        in log
    )


def test_the_operator_can_turn_the_sender_check_off(tmp_path: Path) -> None:
    with serve(
        tmp_path / "abc",
        "abc.example",
        ["john@abc.example:john-pw"],
        listeners=("submission",),
        extra=("--no-sender-login-match",),
    ) as abc:
        port = abc.ports["submission"]
        assert _mail_from(port, "john@abc.example", "john-pw", ["boss@abc.example"]) == [250]
        assert abc.stop() == 0
