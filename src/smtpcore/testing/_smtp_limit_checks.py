"""Checks of the limits RFC 5321 §4.5.3.1 sets, and of the replies for going over
them: ``command-line-length``, ``text-line-length``, ``recipient-limit`` and
``size-limit`` (RFC 1870). Every server MUST take a line at the limit; what it does
past the limit may differ, but a line is one line, and a message one message.
"""

from __future__ import annotations

from typing import Final

from smtpcore.testing._battery import Failed as _Failed
from smtpcore.testing._battery import Skipped as _Skipped
from smtpcore.testing._battery import unjudged
from smtpcore.testing._smtp_probe import (
    CLOSING,
    Probe,
    ask,
    message_then_quit,
    offered_size,
    probe_headers,
    quit_session,
    reply_codes,
    session_end,
    shown_codes,
)
from smtpcore.testing._wire import ServerReply, WireClient

__all__ = [
    "check_command_line_length",
    "check_recipient_limit",
    "check_size_limit",
    "check_text_line_length",
]


def check_command_line_length(probe: Probe) -> str:
    """An over-long command line is one line: one reply, 250 or 500, or 421 and the close.

    RFC 5321 §4.5.3.1.4 sets the limit, §4.5.3.1.9 gives "500 Line too long",
    and §3.8 lets a server end the session with 421 instead. A line at the
    limit goes first and must get 250 (:func:`_shortest_limit_taken`): a
    server may refuse longer lines, never that one (a server that refuses
    NOOP's argument is tried with a long HELO instead).

    A 10,000-octet ``NOOP`` line, then ``NOOP`` and ``QUIT``; a server that
    cuts the line at its limit and reads the rest as more commands answers
    too often. Where the long line gets a reply that ends the session
    (:data:`CLOSING`), nothing more is sent (:func:`_closed_at_long_line`).
    """
    client = _shortest_limit_taken(probe, probe.connect())
    client.send(b"NOOP " + b"x" * 9993 + b"\r\n")
    first = client.read_reply()
    if first is None:  # smtp-sink does: no 500, nor the 421 a close owes (§3.8)
        raise _Failed(
            "the server closed the connection at the 10,000-octet line without a reply "
            "(500 Line too long, or 421 before the close: RFC 5321 §4.5.3.1.9, §3.8)"
        )
    if first.code in CLOSING:
        return _closed_at_long_line(client, first)
    client.send(b"NOOP\r\n")
    replies = [first, *client.read_replies(1)]
    if len(replies) == 1:  # read_replies gives none only at the close
        raise _Failed(
            f"the long line got {first.code}, then the server closed the connection "
            "without a reply to the NOOP after it (a server that ends the session sends "
            "421 first: RFC 5321 §3.8)"
        )
    replies += quit_session(client)
    codes = reply_codes(replies)
    if len(codes) != 3 or codes[1:] != [250, 221]:
        raise _Failed(f"a long line, NOOP and QUIT got {shown_codes(codes)}, not one reply each")
    if codes[0] not in (250, 500):
        raise _Failed(f"the long line was answered {codes[0]}, not 500 (or 250)")
    return f"the 10,000-octet line got {codes[0]}"


_COMMAND_LINE_MINIMUM: Final = 512
"""The command line every server MUST take, CRLF included (RFC 5321 §4.5.3.1.4)."""


_TEXT_LINE_MINIMUM: Final = 1000
"""The text line every server MUST take, CRLF included (RFC 5321 §4.5.3.1.6)."""


def _noop_at_the_limit() -> bytes:
    """``NOOP`` padded to :data:`_COMMAND_LINE_MINIMUM` octets with its CRLF: NOOP
    takes an optional string argument (RFC 5321 §4.1.1.9), so the padding is legal
    and the line must get 250."""
    padding = _COMMAND_LINE_MINIMUM - len(b"NOOP \r\n")
    return b"NOOP " + b"x" * padding


def _shortest_limit_taken(probe: Probe, client: WireClient) -> WireClient:
    """A 512-octet command line gets 250, or the check fails: every server MUST
    take command lines that long (RFC 5321 §4.5.3.1), so refusing it is no limit
    of its own to choose. Returns the connection the check goes on with.

    The padded NOOP is refused by a server that refuses NOOP's argument, which
    RFC 5321 §4.1.1.9 only says it SHOULD ignore (CPython's smtpd answers 501),
    so a refusal fails the check only when a short ``NOOP x`` is taken. Otherwise
    a HELO padded to the limit is tried (:func:`_helo_at_the_limit`); when that is
    refused too, the minimum goes unjudged and the transcript says why.

    The padded NOOP is the connection's first command, and a 421 to it (RFC 5321
    §3.8) is either a server refusing the connection (a rate limit that answers the
    first command, as at EHLO in :meth:`Probe.hello`) or one ending the session at
    the line it will not take: the defect. A new connection tells which: ``NOOP x``
    first, where a 421 refuses the connection and skips the check
    (:meth:`Probe.refused`), then the padded NOOP again, whose 421 there answers
    the line."""
    answer = _ask_at_the_limit(client, _noop_at_the_limit(), "NOOP")
    control = None
    if answer.code == 421:
        client = probe.connect()
        control = ask(client, b"NOOP x")
        probe.refused(control)  # the first command, a line the check does not test
        answer = _ask_at_the_limit(client, _noop_at_the_limit(), "NOOP")
    if answer.code == 250:
        return client
    if control is None:
        control = ask(client, b"NOOP x")
    if control.code == 250:
        raise _Failed(
            f"a {_COMMAND_LINE_MINIMUM}-octet command line (NOOP, CRLF included) got "
            f"{answer}, not 250, where NOOP x got 250: every server MUST take command "
            f"lines of {_COMMAND_LINE_MINIMUM} octets (RFC 5321 §4.5.3.1, §4.5.3.1.4)"
        )
    if _ask_at_the_limit(client, _helo_at_the_limit(), "HELO").code != 250:
        unjudged(
            client,
            "NOOP with an argument is refused, and so is a HELO padded to "
            f"{_COMMAND_LINE_MINIMUM} octets: the {_COMMAND_LINE_MINIMUM}-octet minimum "
            "cannot be checked this way",
        )
    return client


def _ask_at_the_limit(client: WireClient, line: bytes, verb: str) -> ServerReply:
    """``line``, a ``verb`` padded to :data:`_COMMAND_LINE_MINIMUM` octets, and its
    reply; a close instead fails the check, said in words rather than by quoting
    the 512 octets (as :func:`ask` quotes a line): the server died on a line every
    server MUST take (RFC 5321 §4.5.3.1.4)."""
    answer = client.command(line)
    if answer is None:
        raise _Failed(
            f"the server closed the connection instead of answering a "
            f"{_COMMAND_LINE_MINIMUM}-octet command line ({verb} padded, CRLF included): "
            f"every server MUST take command lines of {_COMMAND_LINE_MINIMUM} octets (RFC "
            "5321 §4.5.3.1, §4.5.3.1.4)"
        )
    return answer


def _helo_at_the_limit() -> bytes:
    """``HELO`` padded to :data:`_COMMAND_LINE_MINIMUM` octets with its CRLF, its
    domain in labels of at most 63 octets (RFC 1035 §2.3.4). The domain is longer
    than the 255 octets of RFC 5321 §4.5.3.1.2, so a refusal proves nothing, but a
    250 shows the line taken; HELO opens no transaction, and a server that refuses
    NOOP's argument (CPython's smtpd) takes it. Sent before any other HELO, as some
    servers refuse a second one."""
    return b"HELO " + _domain_of_octets(_COMMAND_LINE_MINIMUM - len(b"HELO \r\n")).encode()


def _domain_of_octets(octets: int) -> str:
    """An LDH domain of exactly ``octets`` octets, in labels of at most 63."""
    labels = []
    left = octets
    while left > 63:
        labels.append("x" * 62)
        left -= 63
    labels.append("x" * left)
    return ".".join(labels)


def _closed_at_long_line(client: WireClient, first: ServerReply) -> str:
    """The verdict on a long line answered with a reply that ends the session: the
    close must follow (RFC 5321 §3.8), and no other reply, which would answer a
    piece of the line cut off and run as a command."""
    after = client.read_until_closed()
    if after:
        raise _Failed(
            f"the long line got {shown_codes(reply_codes([first, *after]))}: more than one "
            "reply, as from a server that cut it at its limit and ran the rest as commands"
        )
    if not client.closed:
        raise _Failed(
            f"the long line got {first.code}, but the server did not close the connection "
            f"within {client.timeout:g} s (RFC 5321 §3.8)"
        )
    return f"the 10,000-octet line got {first.code}, then the close (RFC 5321 §3.8)"


def check_text_line_length(probe: Probe) -> str:
    """A long text line never ends a message (RFC 5321 §4.5.3.1.6).

    A message whose longest line is at the limit goes first, on its own
    connection, and must get 250 (:func:`_longest_legal_text_line_taken`).
    Then, on a new connection, each long line ends in a
    dot at the limits servers cut at (512, 1000, 1024, 2048, 4096, 8192
    octets): a server that cut there would read a lone dot and end the
    message, then run the rest as commands.
    """
    _longest_legal_text_line_taken(probe)
    client, _ = probe.hello()
    _data(probe, client)
    lines = [b"x" * cut + b".\r\n" for cut in (510, 512, 998, 1000, 1022, 1024, 2046, 2048)]
    lines += [b"x" * cut + b".\r\n" for cut in (4094, 4096, 8190, 8192)]
    client.send(b"Subject: long lines\r\n\r\n" + b"".join(lines) + b".\r\n" + b"QUIT\r\n")
    replies = client.read_until_closed()
    codes = reply_codes(replies)
    if not codes:
        raise _Failed(
            "the message of long lines got no reply before the server closed the "
            "connection or fell silent"
        )
    if len(codes) > 2:
        raise _Failed(
            f"a message of long lines and QUIT got {shown_codes(codes)}: a cut line ended it"
        )
    if not message_then_quit(codes):
        raise _Failed(f"a message of long lines and QUIT got {codes}, out of order")
    wrong = session_end(client, replies)
    if wrong:
        raise _Failed(f"a message of long lines and QUIT got {codes}: {wrong}")
    if codes[0] != 250 and codes[0] // 100 != 5:
        raise _Failed(f"the message of long lines was answered {codes[0]}")
    return f"the message of long lines got {codes[0]}"


def _data(probe: Probe, client: WireClient) -> None:
    """MAIL, RCPT and DATA, each alone; anything but 354 to DATA skips the check."""
    probe.transaction(client)
    answer = ask(client, b"DATA")
    if answer.code != 354:
        raise _Skipped(f"DATA was answered {answer}")


def _longest_legal_text_line_taken(probe: Probe) -> None:
    """A message whose longest line is 998 octets and the CRLF gets 250, or the
    check fails: every server MUST take text lines that long (RFC 5321 §4.5.3.1,
    §4.5.3.1.6), so a refusal is no limit of its own to choose.

    The long line starts with a dot: §4.5.3.1.6 does not count the dot doubled
    for transparency (§4.5.2), so a server must take the 1001 octets on the wire
    and a server that counts the stuffing dot fails. A refusal fails the check
    only when a message of short lines (:func:`_short_lines_taken`) is then
    taken on the same connection: a server that refuses every message to the
    recipient, or for a policy of its own, says nothing of lines, and the
    minimum goes unjudged."""
    client, _ = probe.hello()
    _data(probe, client)
    longest = b"." + b"x" * (_TEXT_LINE_MINIMUM - 3)
    client.send(probe_headers(probe, "a line at the limit") + b"." + longest + b"\r\n.\r\n")
    answer = client.read_reply()
    if answer is None:
        raise _Failed(
            "the server closed the connection instead of answering a message whose "
            f"longest line is {_TEXT_LINE_MINIMUM - 2} octets and the CRLF"
        )
    if answer.code == 250:
        return
    if not _short_lines_taken(probe, client):
        unjudged(client, "the recipient takes no mail, not even a message of short lines")
        return
    raise _Failed(
        f"a message whose longest line is {_TEXT_LINE_MINIMUM - 2} octets and the "
        f"CRLF got {answer}, not 250, where a message of short lines got 250: every "
        f"server MUST take text lines of {_TEXT_LINE_MINIMUM} octets (RFC 5321 "
        "§4.5.3.1, §4.5.3.1.6)"
    )


def _short_lines_taken(probe: Probe, client: WireClient) -> bool:
    """Whether a message of short lines gets 250 on ``client``: MAIL, RCPT and DATA
    again, each alone, then the message. Any refusal or a close is a no."""
    for line, wanted in ((probe.mail_line(), 2), (probe.rcpt_line(), 2), (b"DATA", 3)):
        answer = client.command(line)
        if answer is None or answer.code // 100 != wanted:
            return False
    client.send(probe_headers(probe, "short lines") + b"a short line\r\n.\r\n")
    answer = client.read_reply()
    return answer is not None and answer.code == 250


def check_recipient_limit(probe: Probe) -> str:
    """100 recipients are taken; the 101st gets 2xx, 452 or 552 (RFC 5321 §4.5.3.1.8, .10).

    The first RCPT goes alone, as in :meth:`Probe.transaction`, and a refusal
    skips the check: a server that refuses the recipient may end the session
    after a few more errors (421, RFC 5321 §3.8), which says nothing of its
    recipient limit.
    """
    client, offered = probe.hello()
    answer = ask(client, probe.mail_line())
    if answer.code // 100 != 2:
        raise _Skipped(f"MAIL was answered {answer}")
    first = ask(client, probe.rcpt_line())
    if first.code // 100 != 2:
        raise _Skipped(f"the recipient was refused ({first}): give one the server accepts")
    rcpt = probe.rcpt_line() + b"\r\n"
    if "PIPELINING" in offered:
        client.send(rcpt * 100)
        replies = client.read_replies(100)
    else:
        replies = [r for r in (client.command(rcpt[:-2]) for _ in range(100)) if r]
    codes = reply_codes([first, *replies])
    after = quit_session(client)
    if len(codes) < 101 or len(after) != 1:
        raise _Failed(f"101 RCPTs and QUIT got {len(codes) + len(after)} replies")
    refused = [(n, code) for n, code in enumerate(codes[:100], 1) if code // 100 != 2]
    if refused:
        number, code = refused[0]
        raise _Failed(f"recipient {number} of 100 was refused with {code}")
    if codes[100] // 100 != 2 and codes[100] not in (452, 552):
        raise _Failed(f"the 101st recipient got {codes[100]}, not 452")
    return f"100 recipients taken; the 101st got {codes[100]}"


def check_size_limit(probe: Probe) -> str:
    """Beyond the SIZE it offers, a server answers 552 (RFC 1870 §6.1, §6.3).

    ``MAIL ... SIZE=`` one over the limit; then, when the limit is at most
    ``max_size_probe``, a message that is too big: one 552 after its end. A
    plain MAIL goes first (:meth:`Probe.sender_accepted`): a server may apply
    its sender policy before it reads the parameters, and its refusal of the
    sender says nothing of SIZE, so it skips the check.
    """
    client, offered = probe.hello()
    limit = offered_size(offered)
    if limit is None:
        raise _Skipped("no SIZE limit is offered")
    probe.sender_accepted(client)
    over = probe.mail_line(f" SIZE={limit + 1}")
    answer = client.command(over)
    refused = probe.mail_refused_for_now(client, over, answer)
    if refused:
        raise _Skipped(refused)
    if answer is None:
        raise _Failed(
            f"the server closed the connection instead of answering MAIL with SIZE="
            f"{limit + 1} over the offered {limit} (552 expected, RFC 1870 §6.1)"
        )
    if answer.code != 552:
        raise _Failed(f"MAIL with SIZE={limit + 1} over the offered {limit} got {answer}")
    quit_session(client)
    if limit > probe.max_size_probe:
        return f"SIZE={limit + 1} got 552 (a {limit}-octet message is too big to send)"
    client, _ = probe.hello()
    probe.transaction(client)
    answer = ask(client, b"DATA")
    if answer.code != 354:
        raise _Skipped(f"DATA was answered {answer}")
    line = b"x" * 78 + b"\r\n"
    client.send(b"Subject: too big\r\n\r\n" + line * (limit // len(line) + 20) + b".\r\n")
    answer = client.read_reply()
    if answer is None:
        raise _Failed(
            f"the server closed the connection instead of answering a message over {limit} "
            "octets (552 expected, RFC 1870 §6.3)"
        )
    after = quit_session(client)
    if answer.code != 552 or len(after) != 1:
        raise _Failed(
            f"a message over {limit} octets got {answer}, then QUIT got {reply_codes(after)}"
        )
    return "SIZE= over the limit and a message over it both got 552"
