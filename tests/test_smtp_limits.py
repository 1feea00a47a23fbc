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
    assert read(("rcptmax=7", "X-OTHER=a", "FOO")) == Limits(rcpt_max=7)
    assert read(("RCPTMAX=0", "MAILMAX=1e3", "RCPTMAX=")) == Limits()
    assert read(("RCPTMAX=٣",)) == Limits()  # ASCII digits only
    assert ServerExtensions().limits == Limits()


def test_a_value_rfc_9422_does_not_allow_is_ignored_alone() -> None:
    """RFC 9422 §4.1-§4.3: a value is ``%x31-39 0*5DIGIT``, 1 to 999999 with no leading
    zero; any other value of a limit is ignored, the limit alone (§3.7)."""
    read = Limits.parse
    assert read(("RCPTMAX=1000000", "MAILMAX=999999")) == Limits(mail_max=999999)
    assert read(("RCPTMAX=010", "RCPTDOMAINMAX=1")) == Limits(rcpt_domain_max=1)


def test_a_parameter_list_that_breaks_the_syntax_is_read_as_no_limits() -> None:
    """RFC 9422 §3.7: an error in the basic parameter syntax (here a ";", which no
    limit-value holds) makes the client proceed as if LIMITS had not been used."""
    assert Limits.parse(("RCPTMAX=20", "X-OTHER=a;b")) == Limits()
    offered = ServerExtensions.from_reply(Reply(250, ["mx", "LIMITS RCPTMAX=2 MAILMAX=1 =3"]))
    assert offered.limits == Limits()


def test_no_limits_line_for_an_rcptmax_rfc_9422_cannot_write() -> None:
    """RFC 9422 §4.2: RCPTMAX is 1 to 999999; a server whose ``max_recipients`` is
    outside lists no LIMITS rather than a value a client must ignore (or a bare
    ``LIMITS``, which breaks the §3 syntax)."""
    for max_recipients in (0, 1_000_000):
        _, out = run(greeted(limits=True, max_recipients=max_recipients), EHLO)
        assert b"LIMITS" not in out
    _, out = run(greeted(limits=True, max_recipients=999_999), EHLO)
    assert b"250 LIMITS RCPTMAX=999999\r\n" in out


# Narrow on purpose: few domains and names, so that per-domain limits and repeats bite.
# A U-label and its A-label spell one domain (RFC 5890 §2.3.2.1), as do cases.
domains = st.sampled_from(
    ["a.example", "B.example", "c.example", "bücher.example", "XN--BCHER-KVA.example"]
)
mailboxes = st.builds(Mailbox, st.sampled_from(["x", "y", "z"]), domains)


def one_domain(recipient: Mailbox) -> str:
    return recipient.ascii_domain.lower()


def test_a_u_label_and_its_a_label_are_one_domain_to_split_and_admit() -> None:
    """RFC 9422 §4.3 counts domains; a client may send a UTF-8 domain in A-labels, so the
    two spellings must count once both where a session's domains are admitted and where a
    transaction's are split, or a message goes in more transactions than it needs."""
    both = [Mailbox("x", "bücher.example"), Mailbox("y", "xn--bcher-kva.example")]
    limits = Limits(rcpt_domain_max=1)
    assert limits.split(both) == [both]
    assert limits.admit(both, set()) == ([0, 1], [])


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
        assert domain_max is None or len({one_domain(r) for r in group}) <= domain_max
    if rcpt_max is None and domain_max is None:
        assert len(groups) <= 1


@given(st.lists(mailboxes, max_size=30), st.integers(1, 3), st.sets(domains, max_size=3))
def test_admit_keeps_a_session_within_rcptdomainmax(
    recipients: list[Mailbox], domain_max: int, had: set[str]
) -> None:
    """RFC 9422 §4.3: RCPTDOMAINMAX counts the recipient domains of a session; ``admit``
    takes recipients in order while their domains fit with those the session had."""
    seen = {one_domain(Mailbox("x", domain)) for domain in had}
    before = set(seen)
    taken, left = Limits(rcpt_domain_max=domain_max).admit(recipients, seen)
    assert sorted(taken + left) == list(range(len(recipients)))
    assert seen == before | {one_domain(recipients[i]) for i in taken}
    assert len(seen) <= max(domain_max, len(before))
    for index in left:
        assert one_domain(recipients[index]) not in seen
    assert Limits().admit(recipients, set()) == (list(range(len(recipients))), [])
