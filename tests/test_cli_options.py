"""The command line: ``python -m smtpcore`` options as the issue lists them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from smtpcore.server.backoff import MAX_BACKOFF, MIN_BACKOFF
from smtpcore.server.cli import build_parser, config_from_args, main
from smtpcore.server.config import LISTENERS, MAX_SIZE, ConfigError, ServerConfig
from smtpcore.smtp._ext.size import MAX_MESSAGE_SIZE


def test_serve_options_as_the_issue_lists_them(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("mary@pqr.example:two\n")
    args = build_parser().parse_args(
        [
            "serve",
            "--domain",
            "pqr.example",
            "--domain",
            "abc.example",
            "--user",
            "brendon@pqr.example:pw",
            "--users-file",
            str(users),
            "--data-dir",
            str(tmp_path),
            "--smtp-port",
            "0",
            "--lmtp-port",
            "2424",
            "--max-message-size",
            "1M",
            "--max-recipients",
            "5",
            "--resolver",
            "dns:127.0.0.1:5353",
            "--remote-port",
            "2525",
            "--relay-host",
            "[smart.example]:587",
            "--retry-after",
            "1",
            "--max-queue-age",
            "2h",
        ]
    )
    config = config_from_args(args)
    assert config.domains == ("pqr.example", "abc.example")
    assert dict(config.users) == {"brendon@pqr.example": "pw", "mary@pqr.example": "two"}
    assert [name for name, _ in config.listeners()] == ["submission", "lmtp", "pop3"]
    assert config.max_message_size == 1 << 20 and config.max_recipients == 5
    assert config.relay_host == ("[smart.example]", 587)
    assert (config.retry_after, config.max_queue_age, config.remote_port) == (1.0, 7200.0, 2525)
    defaults = config_from_args(build_parser().parse_args(["serve"]))
    assert defaults.domains == ("localhost",) and defaults.host == "127.0.0.1"
    assert (defaults.smtp_port, defaults.submission_port, defaults.pop3_port) == (2525, 2587, 2110)
    assert (defaults.lmtp_port, defaults.smtps_port, defaults.pop3s_port) == (0, 0, 0)
    assert defaults.data_dir == Path("smtpcore-data") and defaults.remote_port == 25
    assert defaults.retry_after == 300 and defaults.max_queue_age == 5 * 86400


def test_lmtp_port_25_is_refused(tmp_path: Path) -> None:
    """RFC 2033 §1: LMTP MUST NOT be used on TCP port 25; ``--lmtp-port 25`` is a
    configuration mistake named at start, not a listener SMTP clients would reach."""
    args = ["serve", "--data-dir", str(tmp_path), "--smtp-port", "0", "--lmtp-port", "25"]
    with pytest.raises(ConfigError, match=r"--lmtp-port: .*port 25 \(RFC 2033 §1\)"):
        config_from_args(build_parser().parse_args(args))
    args[-1] = "24"
    assert dict(config_from_args(build_parser().parse_args(args)).listeners())["lmtp"] == 24


def test_two_listeners_on_one_port_are_refused_naming_both_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pop3-port`` equal to ``--smtp-port`` failed only at bind time, as ``cannot
    listen: pop3 listener on 127.0.0.1:2525: Address already in use``, naming neither
    option nor the listener that held the port."""
    args = ["serve", "--data-dir", str(tmp_path), "--smtp-port", "2525", "--pop3-port", "2525"]
    with pytest.raises(ConfigError) as refused:
        config_from_args(build_parser().parse_args(args))
    assert str(refused.value) == (
        "--smtp-port and --pop3-port are both 2525: two listeners cannot share a port on "
        "--host 127.0.0.1; give one another port, or 0 to turn it off"
    )
    with pytest.raises(ConfigError, match="--submission-port and --lmtp-port are both 2587"):
        config_from_args(build_parser().parse_args([*args[:3], "--lmtp-port", "2587"]))
    assert main(args) == 2  # before anything is made or bound
    assert capsys.readouterr().err.startswith("smtpcore serve: --smtp-port and --pop3-port ")
    assert not tmp_path.joinpath("queue").exists()


def test_any_number_of_listeners_may_be_off(tmp_path: Path) -> None:
    """Port 0 turns a listener off: two, or all but one, at 0 are no clash."""
    base = ["serve", "--data-dir", str(tmp_path), "--smtp-port", "0", "--pop3-port", "0"]
    config = config_from_args(build_parser().parse_args([*base, "--submission-port", "0"]))
    assert list(config.listeners()) == []
    config = config_from_args(build_parser().parse_args(base))
    assert list(config.listeners()) == [("submission", 2587)]


def test_the_listener_options_are_read_from_the_one_table(tmp_path: Path) -> None:
    """``serve``'s port options, :meth:`ServerConfig.listeners` and the clash check all
    read :data:`LISTENERS`: a listener added there has its option and is opened."""
    args = ["serve", "--data-dir", str(tmp_path)]
    args += [
        arg
        for number, name in enumerate(LISTENERS)
        for arg in (f"--{name}-port", f"{3000 + number}")
    ]
    args += ["--tls-cert", __file__, "--tls-key", __file__]  # smtps, pop3s: read at start
    config = config_from_args(build_parser().parse_args(args))
    assert [name for name, _ in config.listeners()] == list(LISTENERS)


def test_session_limits_on_the_command_line(tmp_path: Path) -> None:
    base = ["serve", "--data-dir", str(tmp_path)]
    defaults = config_from_args(build_parser().parse_args(base))
    assert (defaults.max_sessions, defaults.max_sessions_per_address) == (2000, 50)
    args = [*base, "--max-sessions", "10", "--max-sessions-per-address", "0"]
    config = config_from_args(build_parser().parse_args(args))
    assert (config.max_sessions, config.max_sessions_per_address) == (10, None)
    with pytest.raises(ConfigError, match="--max-sessions "):
        config_from_args(build_parser().parse_args([*base, "--max-sessions", "0"]))


def test_the_ipv6_prefix_of_the_session_limit_on_the_command_line(tmp_path: Path) -> None:
    """An IPv6 client is counted by its /84, as Postfix's smtpd_client_ipv6_prefix_length;
    the listeners get the option."""
    from smtpcore.server.mailserver import MailServer

    base = ["serve", "--data-dir", str(tmp_path)]
    assert config_from_args(build_parser().parse_args(base)).client_ipv6_prefix_length == 84
    args = [*base, "--client-ipv6-prefix-length", "64"]
    config = config_from_args(build_parser().parse_args(args))
    assert MailServer(config)._smtp_handler("smtp")[1]["client_ipv6_prefix_length"] == 64
    with pytest.raises(ConfigError, match="--client-ipv6-prefix-length"):
        dataclasses.replace(config, client_ipv6_prefix_length=129)


def test_auth_failure_delay_on_the_command_line(tmp_path: Path) -> None:
    """Failed logins wait 2 seconds, as Dovecot's ``auth_failure_delay``; 0 answers at
    once; a negative or endless wait is refused. The server's listeners get it."""
    from smtpcore.server.mailserver import MailServer

    base = ["serve", "--data-dir", str(tmp_path)]
    assert config_from_args(build_parser().parse_args(base)).auth_failure_delay == 2.0
    config = config_from_args(build_parser().parse_args([*base, "--auth-failure-delay", "0"]))
    assert config.auth_failure_delay == 0.0
    config = config_from_args(build_parser().parse_args([*base, "--auth-failure-delay", "0.5"]))
    assert config.auth_failure_delay == 0.5
    assert MailServer(config)._smtp_handler("submission")[1]["auth_failure_delay"] == 0.5
    with pytest.raises(ConfigError, match="--auth-failure-delay"):
        dataclasses.replace(config, auth_failure_delay=-1.0)
    with pytest.raises(ConfigError, match="--auth-failure-delay"):
        dataclasses.replace(config, auth_failure_delay=float("inf"))
    no_durations: tuple[Any, ...] = (None, "2", True, 10**400)
    for wrong in no_durations:  # ConfigError, never TypeError or OverflowError
        for option in ("auth_failure_delay", "proxy_protocol_timeout", "retry_after"):
            with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')}"):
                dataclasses.replace(config, **{option: wrong})
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--auth-failure-delay", "-1"])


def test_max_message_size_zero_is_no_limit(tmp_path: Path) -> None:
    """As Postfix's ``message_size_limit = 0``, and as the machine reads it: the server
    announces ``SIZE 0`` (RFC 1870 §4: no fixed maximum) and keeps to it."""
    args = ["serve", "--data-dir", str(tmp_path), "--max-message-size", "0"]
    config = config_from_args(build_parser().parse_args(args))
    assert config.max_message_size == 0
    with pytest.raises(ConfigError, match="must not be negative"):
        dataclasses.replace(config, max_message_size=-1)


def test_min_free_space_is_a_size_and_defaults_to_half_again_the_size_limit(
    tmp_path: Path,
) -> None:
    """As Postfix keeps 1.5 x ``message_size_limit`` free with ``queue_minfree`` left
    alone: room for any message the server takes (RFC 1870 §6.1)."""
    base = ["serve", "--data-dir", str(tmp_path), "--max-message-size", "10M"]
    config = config_from_args(build_parser().parse_args(base))
    assert config.min_free_space is None and config.free_space_floor == 15 << 20
    config = config_from_args(build_parser().parse_args([*base, "--min-free-space", "64M"]))
    assert config.min_free_space == config.free_space_floor == 64 << 20
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--min-free-space", "lots"])


ARABIC_INDIC_26526 = "\u0662\u0666\u0665\u0662\u0666"
"""26526 in Arabic-Indic digits, which ``int()`` and ``float()`` read as 26526."""


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("--smtp-port", "abc", "'abc' is not a port (0 to 65535)"),
        ("--smtp-port", ARABIC_INDIC_26526, "is not a port (0 to 65535)"),
        ("--smtp-port", "70000", "'70000' is not a port (0 to 65535)"),
        ("--smtp-port", "-1", "'-1' is not a port (0 to 65535)"),
        ("--smtp-port", " 25", "' 25' is not a port"),
        ("--remote-port", "2_5", "'2_5' is not a port"),
        ("--max-sessions", "abc", "'abc' is not a whole number (digits 0-9)"),
        ("--max-sessions", "\u0665", "is not a whole number (digits 0-9)"),
        ("--max-recipients", "1_0", "'1_0' is not a whole number"),
        ("--max-sessions-per-address", "-3", "'-3' is not a whole number"),
        ("--client-ipv6-prefix-length", "\u0666\u0664", "is not a whole number"),
        ("--destination-concurrency", "9" * 5000, "is too large (at most 999999999)"),
        ("--max-recipients", "9999999999", "'9999999999' is too large (at most 999999999)"),
        ("--smtp-port", "0000070000", "'0000070000' is not a port (0 to 65535)"),
        ("--max-message-size", "\u0661\u0660M", "is not a size"),
        ("--max-message-size", "9" * 5000, "is too large (at most 9223372036854775807 octets)"),
        ("--min-free-space", "\u0665", "is not a size"),
        # RFC 1870's SIZE has at most 20 digits: the EHLO reply offered 30 of them.
        (
            "--max-message-size",
            "99999999999999999999G",
            "'99999999999999999999G' is too large (at most 9223372036854775807 octets)",
        ),
        ("--max-message-size", "9223372036854775808", "is too large (at most"),
        ("--max-message-size", "8589934592G", "is too large (at most"),  # 2**63 octets
        ("--min-free-space", "99999999999999999999", "is too large (at most"),
        ("--retry-after", "\u0665m", "is not a duration"),
        ("--stop-timeout", "1\u0660s", "is not a duration"),
        ("--relay-host", "smart.example:" + "9" * 5000, "is not HOST:PORT"),
        ("--relay-host", "smart.example:\u0662\u0665", "is not HOST:PORT"),
    ],
)
def test_numeric_options_take_ascii_digits_and_say_what_they_want(
    option: str, value: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--smtp-port abc`` showed ``invalid literal for int() with base 10: 'abc'``, and
    ``--smtp-port`` in Arabic-Indic digits bound port 26526: every number the server
    reads is ASCII digits (:mod:`smtpcore._numbers`), its options' too. 5000 digits
    made ``int()`` fail with its own message (past 4300 digits)."""
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["serve", option, value])
    assert stopped.value.code == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"python -m smtpcore serve: error: argument {option}: ")
    assert error in message, message
    assert "int()" not in message and "Exceeds" not in message


def test_the_largest_size_is_taken_and_offered_in_20_digits_at_most(tmp_path: Path) -> None:
    base = ["serve", "--data-dir", str(tmp_path), "--min-free-space", "8589934591G"]
    args = [*base, "--max-message-size", "9223372036854775807"]
    config = config_from_args(build_parser().parse_args(args))
    assert config.max_message_size == MAX_SIZE == MAX_MESSAGE_SIZE == 2**63 - 1  # the machine's
    assert config.min_free_space == 8589934591 << 30
    assert len(str(config.max_message_size)) <= 20  # RFC 1870 §8, size-value


@pytest.mark.parametrize("option", ["max_message_size", "min_free_space"])
def test_a_server_config_refuses_a_size_past_the_largest(tmp_path: Path, option: str) -> None:
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')}: .* is too large"):
        options: dict[str, Any] = {option: MAX_SIZE + 1}
        ServerConfig(data_dir=tmp_path, hostname="mx.abc.example", **options)


def test_numbers_in_ascii_digits_are_read_as_before(tmp_path: Path) -> None:
    base = ["serve", "--data-dir", str(tmp_path)]
    args = [*base, "--smtp-port", "02525", "--max-sessions", "10", "--max-message-size", "10M"]
    args += ["--pop3-port", "0000110", "--max-recipients", "0" * 20 + "7"]
    args += ["--retry-after", "1.5m", "--relay-host", "[smart.example]:0000587"]
    config = config_from_args(build_parser().parse_args(args))
    assert (config.smtp_port, config.max_sessions) == (2525, 10)
    # Leading zeros, as int() took them, past the digits a value may have.
    assert (config.pop3_port, config.max_recipients) == (110, 7)
    assert (config.max_message_size, config.retry_after) == (10 << 20, 90.0)
    assert config.relay_host == ("[smart.example]", 587)


def test_a_max_retry_after_given_alone_lowers_the_default_retry_after(
    tmp_path: Path,
) -> None:
    """``--max-retry-after 1m`` alone started before (the maximum raised to the default
    300 s), then was refused with ``--max-retry-after must not be shorter than
    --retry-after``, an option never given. Given alone, it lowers the first retry to
    it, as a lone ``--retry-after 2h`` raises the maximum (Postfix adjusts one backoff
    time to the other)."""
    base = ["serve", "--data-dir", str(tmp_path)]
    alone = config_from_args(build_parser().parse_args([*base, "--max-retry-after", "1m"]))
    assert (alone.retry_after, alone.max_retry_after) == (60.0, 60.0)
    longer = config_from_args(build_parser().parse_args([*base, "--max-retry-after", "10m"]))
    assert (longer.retry_after, longer.max_retry_after) == (300.0, 600.0)


def test_a_max_retry_after_shorter_than_the_retry_after_given_is_refused(
    tmp_path: Path,
) -> None:
    """``--retry-after 1h --max-retry-after 1m`` started, the maximum silently raised to
    the hour; the two given contradict each other, and are refused. ``--retry-after``
    over the default maximum, alone, still raises the maximum to it."""
    base = ["serve", "--data-dir", str(tmp_path)]
    both = [*base, "--retry-after", "1h", "--max-retry-after", "1m"]
    with pytest.raises(ConfigError, match="--max-retry-after must not be shorter than"):
        config_from_args(build_parser().parse_args(both))
    alone = config_from_args(build_parser().parse_args([*base, "--retry-after", "2h"]))
    assert (alone.retry_after, alone.max_retry_after) == (7200.0, 7200.0)
    default = config_from_args(build_parser().parse_args(base))
    assert (default.retry_after, default.max_retry_after) == (MIN_BACKOFF, MAX_BACKOFF)
    assert (MIN_BACKOFF, MAX_BACKOFF) == (300.0, 4000.0)  # Postfix's
    equal = [*base, "--retry-after", "1h", "--max-retry-after", "60m"]
    assert config_from_args(build_parser().parse_args(equal)).max_retry_after == 3600.0
