"""LIMITS (RFC 9422): the server tells its limits; the client keeps under them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtp_helpers import EHLO, codes, greeted, run
from smtpcore.address import Mailbox
from smtpcore.smtp import Limits, Reply, ServerExtensions


def test_off_by_default_and_rcptmax_when_on() -> None:
    _, out = run(greeted(), EHLO)
    assert b"LIMITS" not in out
    conn = greeted(limits=True, max_recipients=3)
    _, out = run(conn, EHLO)
    assert b"250 LIMITS RCPTMAX=3\r\n" in out
    offered = ServerExtensions.from_reply(Reply(250, ["mx", "LIMITS RCPTMAX=3"]))
    assert offered.limits == Limits(rcpt_max=3)
    _, out = run(conn, b"MAIL FROM:<a@b.example>\r\n" + b"RCPT TO:<c@d.example>\r\n" * 4)
    assert codes(out)[-1] == "452 4.5.3"  # what it said it would do


def test_reading_limits() -> None:
    read = Limits.parse
    assert read(("MAILMAX=1000", "RCPTMAX=50", "RCPTDOMAINMAX=1")) == Limits(1000, 50, 1)
    assert read(("rcptmax=7", "X-OTHER=a;b", "FOO")) == Limits(rcpt_max=7)
    assert read(("RCPTMAX=0", "MAILMAX=1e3", "RCPTMAX=")) == Limits()
    assert read(("RCPTMAX=٣",)) == Limits()  # ASCII digits only
    assert ServerExtensions().limits == Limits()


# Narrow on purpose: few domains and names, so that per-domain limits and repeats bite.
domains = st.sampled_from(["a.example", "B.example", "c.example", "d.example"])
mailboxes = st.builds(Mailbox, st.sampled_from(["x", "y", "z"]), domains)


@given(
    st.lists(mailboxes, max_size=30),
    st.none() | st.integers(1, 5),
    st.none() | st.integers(1, 3),
)
def test_split_keeps_order_and_every_limit(
    recipients: list[Mailbox], rcpt_max: int | None, domain_max: int | None
) -> None:
    groups = Limits(rcpt_max=rcpt_max, rcpt_domain_max=domain_max).split(recipients)
    assert [r for group in groups for r in group] == recipients
    for group in groups:
        assert group
        assert rcpt_max is None or len(group) <= rcpt_max
        assert domain_max is None or len({r.domain.lower() for r in group}) <= domain_max
    if rcpt_max is None and domain_max is None:
        assert len(groups) <= 1
