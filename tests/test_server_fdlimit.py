"""The open files limit ``serve`` asks for its session limits (``smtpcore.server.fdlimit``)."""

from __future__ import annotations

import resource

import pytest

from smtpcore.server.fdlimit import (
    FILES_PER_POP3_SESSION,
    FILES_PER_SMTP_SESSION,
    FILES_RESERVED,
    OpenFilesLimit,
    descriptors_needed,
    fit_open_files_limit,
)


def test_the_default_listeners_need_more_than_the_usual_soft_limit() -> None:
    """2,000 sessions on each of smtp, submission and pop3: far past 1,024."""
    needed = descriptors_needed(["smtp", "submission", "pop3"], 2000)
    assert needed == 2000 * 2 + 2000 * 2 + 2000 * 5 + FILES_RESERVED == 18_100


@pytest.mark.parametrize(
    ("listeners", "per_session"),
    [
        (["smtp"], FILES_PER_SMTP_SESSION),
        (["lmtp", "smtps"], 2 * FILES_PER_SMTP_SESSION),
        (["pop3", "pop3s"], 2 * FILES_PER_POP3_SESSION),
        ([], 0),
    ],
)
def test_each_listener_adds_its_sessions_files(listeners: list[str], per_session: int) -> None:
    assert descriptors_needed(listeners, 10) == FILES_RESERVED + 10 * per_session


def test_a_limit_that_suffices_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (4096, 8192))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    limit = fit_open_files_limit(1000)
    assert limit == OpenFilesLimit(4096, 4096, 8192, 1000)
    assert calls == [] and not limit.raised and not limit.short


@pytest.mark.parametrize(
    ("hard", "needed", "after", "short"),
    [
        (8192, 2000, 8192, False),  # raised to the hard limit, past what is needed
        (1500, 2000, 1500, True),  # raised as far as it goes, still short
        (resource.RLIM_INFINITY, 2000, 2000, False),  # no hard limit: what is needed
    ],
)
def test_a_short_soft_limit_is_raised_toward_the_hard_one(
    monkeypatch: pytest.MonkeyPatch, hard: int, needed: int, after: int, short: bool
) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, hard))
    monkeypatch.setattr(resource, "setrlimit", lambda which, limits: calls.append(limits))
    limit = fit_open_files_limit(needed)
    assert calls == [(after, hard)]
    assert (limit.before, limit.after, limit.raised, limit.short) == (1024, after, True, short)


def test_a_refused_raise_keeps_the_limit_and_warns_with_the_numbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(which: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(resource, "getrlimit", lambda which: (200, 200000))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    limit = fit_open_files_limit(18_100)
    assert (limit.after, limit.raised, limit.short) == (200, False, True)
    warning = limit.warning(2000)
    assert "ulimit -n) is 200" in warning and "18100" in warning
    assert "--max-sessions 2000" in warning and "lower --max-sessions" in warning
