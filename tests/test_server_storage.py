"""The reference server's storage: Maildir delivery and the outbound queue."""

from __future__ import annotations

import asyncio
import errno
import io
import itertools
import json
import mailbox
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtpcore._driver._failures import BY_ERRNO
from smtpcore.address import AddressError, Mailbox, parse_mailbox
from smtpcore.maildrop import Maildir as MaildropMaildir
from smtpcore.maildrop import pop3_size
from smtpcore.server import maildir as maildir_module
from smtpcore.server import queue as queue_module
from smtpcore.server._app_content import _Incoming
from smtpcore.server.config import ServerConfig
from smtpcore.server.diskrefusal import DISK_REFUSALS, is_disk_refusal
from smtpcore.server.mailboxes import LocalMailboxes
from smtpcore.server.maildir import LFWriter, Maildir
from smtpcore.server.queue import Queue, QueuedRecipient, QueueEntry, RecipientStatus
from smtpcore.server.queuectl import QueueCommand, submit
from smtpcore.server.trace import (
    count_received,
    header_field_follows,
    protocol_name,
    received_header,
    return_path_header,
)
from smtpcore.testing import strategies as sst

# -- the CRLF to LF writer ------------------------------------------------------


@given(
    content=st.lists(st.sampled_from([b"a", b"\r\n", b"\r", b"\n", b".", b"xyz"]), max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
)
def test_lf_writer_is_chunking_independent(content: list[bytes], cuts: list[int]) -> None:
    data = b"".join(content)
    out = io.BytesIO()
    writer = LFWriter(out)
    last = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        writer.write(data[last:cut])
        last = cut
    writer.write(data[last:])
    writer.close()
    ended = data + b"\n" if data.endswith(b"\r") else data
    expected = ended.replace(b"\r\n", b"\n")
    if expected and not expected.endswith(b"\n"):
        expected += b"\n"
    assert out.getvalue() == expected
    assert writer.size == len(expected)
    # What a POP3 server sends for the file (LIST trusts the name's W=, RETR sends this).
    assert writer.wire_size == pop3_size([expected])
    if b"\r" not in expected:  # Dovecot's W=: each octet, and one more for each LF
        assert writer.wire_size == len(expected) + expected.count(b"\n")


@pytest.mark.parametrize(
    ("chunks", "stored"),
    [
        ([b"a\r\nb\r\n"], b"a\nb\n"),
        ([b"a\r", b"\nb"], b"a\nb\n"),
        ([b"bare\rcr\r"], b"bare\rcr\n"),
        ([b"bare\nlf"], b"bare\nlf\n"),
        ([b"", b"x"], b"x\n"),
        ([b"ended\r\n"], b"ended\n"),
        ([b"ended\r", b"\n"], b"ended\n"),
        ([b""], b""),
    ],
)
def test_lf_writer_table(chunks: list[bytes], stored: bytes) -> None:
    out = io.BytesIO()
    writer = LFWriter(out)
    for chunk in chunks:
        writer.write(chunk)
    writer.close()
    assert out.getvalue() == stored


# -- Maildir ------------------------------------------------------------------------


def test_stage_then_commit_makes_a_standard_maildir_message(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "brendon@pqr.example")
    staged = box.stage(b"Return-Path: <john@abc.example>\r\n", [b"Subject: hi\r\n\r\nbody\r\n"])
    assert staged.tmp_path.exists() and not staged.new_path.exists()
    assert list((box.path / "new").iterdir()) == []
    path = staged.commit()
    assert path.parent == box.path / "new" and not staged.tmp_path.exists()
    assert path.read_bytes() == b"Return-Path: <john@abc.example>\nSubject: hi\n\nbody\n"
    assert f",S={path.stat().st_size}," in path.name
    assert path.name.endswith(",W=54")  # four LFs become CRLF on the wire
    # Python's own Maildir reader sees it.
    reader = mailbox.Maildir(box.path, create=False)
    (message,) = list(reader)
    assert message["Subject"] == "hi"
    assert box.messages() == [path]


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "m")
    staged = box.stage(b"", io.BytesIO(b"x\r\n"))
    staged.discard()
    staged.discard()
    assert list((box.path / "tmp").iterdir()) == []
    assert box.exists()


def test_the_mailboxes_directory_and_each_mailbox_are_private(tmp_path: Path) -> None:
    """Path.mkdir(parents=True) made ``mailboxes/`` and ``mailboxes/ADDRESS/`` with the
    default mode (0755 under the usual umask): any local user could list who has a
    mailbox here, though the mail itself sat in 0700 directories. Postfix and Dovecot
    keep mail directories private."""
    config = ServerConfig(
        domains=("abc.example",), users={"john@abc.example": "pw"}, data_dir=tmp_path / "data"
    )
    config.data_dir.mkdir()
    old_umask = os.umask(0o022)
    try:
        LocalMailboxes(config).create_all()
        queue = Queue(config.queue_dir)
        queue.open()
    finally:
        os.umask(old_umask)
    private = [config.mailboxes_dir, config.mailbox_path("john@abc.example"), config.queue_dir]
    private += [config.mailbox_path("john@abc.example") / sub for sub in ("tmp", "new", "cur")]
    assert {str(path): oct(path.stat().st_mode & 0o777) for path in private} == {
        str(path): "0o700" for path in private
    }


def _no_space(*args: object, **kwargs: object) -> NoReturn:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_delivery_whose_rename_fails_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed commit delivered nothing: neither a copy in ``tmp/`` (holding space
    until the 36-hour sweep) nor one in ``new/`` whose rename was not made durable."""
    maildir = Maildir(tmp_path / "m")
    replace = os.replace

    def into_new_fails(source: Path, target: Path) -> None:
        if target.parent.name == "new":
            _no_space()
        replace(source, target)

    for where, name, failing in [
        (os, "replace", _no_space),  # the rename that names the file with its sizes
        (os, "replace", into_new_fails),
        (maildir_module, "fsync_directory", _no_space),  # the rename is made, not durable
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(where, name, failing)
            with pytest.raises(OSError):
                maildir.deliver(b"", [b"Subject: x\r\n\r\nbody\r\n"])
        assert [list((maildir.path / sub).iterdir()) for sub in ("tmp", "new")] == [[], []]


def test_unique_names(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "m")
    names = {box.deliver(b"", [b"x"]).name for _ in range(50)}
    assert len(names) == 50


def test_a_copy_delivered_once_is_found_where_a_reader_moved_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue entry's copy is named after the entry and the mailbox, in the Maildir
    shape (Dovecot's sizes, a unique part before ``:``, the POP3 unique-id): delivered
    again, found in ``cur/`` with its flags (the host renamed meanwhile), it is not
    written twice; another entry's, or another mailbox's, is a copy of its own."""
    box = Maildir(tmp_path / "m")
    once = maildir_module.once_name(1700000000.5, "0A1B2C3D4E", "mary@abc.example")
    assert once.startswith("1700000000.Q0A1B2C3D4EK") and "/" not in once and ":" not in once
    path, written = box.deliver_once(once, b"", [b"Subject: x\r\n\r\nbody\r\n"])
    assert written and path.parent.name == "new"
    assert path.name == f"{once}.{maildir_module._host_part()},S=17,W=20"
    moved = path.parent.parent / "cur" / f"{path.name}:2,S"
    path.rename(moved)
    monkeypatch.setattr(maildir_module, "_host_part", lambda: "renamed.example")
    assert box.deliver_once(once, b"", [b"other"]) == (moved, False)
    others = [
        maildir_module.once_name(1700000000.5, "0A1B2C3D4F", "mary@abc.example"),
        maildir_module.once_name(1700000000.5, "0A1B2C3D4E", "john@abc.example"),
    ]
    assert all(box.deliver_once(other, b"", [b"x"])[1] for other in others)
    listing = asyncio.run(MaildropMaildir(box.path).messages())
    assert sorted(m.uid for m in listing) == sorted(p.name.split(":")[0] for p in box.messages())


def test_a_failed_write_leaves_no_tmp_file(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "m")

    def broken() -> list[bytes]:
        raise OSError("disk full")

    class Chunks:
        def __iter__(self) -> object:
            yield b"start"
            broken()

    with pytest.raises(OSError):
        box.stage(b"", Chunks())  # type: ignore[arg-type]  # an iterable that fails midway
    assert list((box.path / "tmp").iterdir()) == []


# -- trace headers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"lmtp": False, "extended": False, "tls": False, "auth": False, "utf8": False}, "SMTP"),
        ({"lmtp": False, "extended": True, "tls": False, "auth": False, "utf8": False}, "ESMTP"),
        ({"lmtp": False, "extended": True, "tls": True, "auth": True, "utf8": False}, "ESMTPSA"),
        ({"lmtp": False, "extended": True, "tls": False, "auth": True, "utf8": False}, "ESMTPA"),
        ({"lmtp": False, "extended": False, "tls": True, "auth": False, "utf8": False}, "ESMTPS"),
        ({"lmtp": True, "extended": True, "tls": False, "auth": False, "utf8": False}, "LMTP"),
        ({"lmtp": False, "extended": True, "tls": True, "auth": False, "utf8": True}, "UTF8SMTPS"),
        ({"lmtp": True, "extended": True, "tls": False, "auth": True, "utf8": True}, "UTF8LMTPA"),
    ],
)
def test_protocol_names(options: dict[str, bool], name: str) -> None:
    assert protocol_name(**options) == name


def test_received_header_shape() -> None:
    header = received_header(
        helo="mail.abc.example",
        peer=("::ffff:127.0.0.1", 4000),
        by="mx.pqr.example",
        protocol="ESMTPS",
        queue_id="ABCDEF0123",
        recipient=Mailbox("brendon", "pqr.example"),
        when=0.0,
        tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
    )
    text = header.decode()
    assert text.startswith("Received: from mail.abc.example ([127.0.0.1])\r\n\t(using TLSv1.3")
    assert "\tby mx.pqr.example (smtpcore) with ESMTPS id ABCDEF0123\r\n" in text
    assert "\tfor <brendon@pqr.example>; " in text and text.endswith("\r\n")
    several = received_header(
        helo=None,
        peer=("2001:db8::1", 25),
        by="mx",
        protocol="ESMTP",
        queue_id="Q",
        recipient=None,
        when=0.0,
    ).decode()
    assert several.startswith("Received: from [IPv6:2001:db8::1] ([IPv6:2001:db8::1])")
    assert "for <" not in several and "id Q;\r\n\t" in several


def _received_for(recipient: Mailbox, *, by: str = "mx.abc.example") -> bytes:
    return received_header(
        helo="héllo.example",
        peer=("192.0.2.1", 4000),
        by=by,
        protocol="UTF8SMTPA",
        queue_id="Q",
        recipient=recipient,
        when=0.0,
        tls="TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
    )


def test_the_for_clause_names_an_idn_domain_in_a_labels() -> None:
    """``u3@bücher.pqr.example`` is ``u3@xn--bcher-kva.pqr.example`` (RFC 5890
    §2.3.2.1): written so, the header stays ASCII and the message can go to a next
    hop without SMTPUTF8, as its envelope can (it bounced 553 5.6.7 for our line)."""
    header = _received_for(Mailbox("u3", "bücher.pqr.example"))
    assert b"\tfor <u3@xn--bcher-kva.pqr.example>; " in header
    assert header.isascii()
    # A UTF-8 local part has no ASCII form: it needs SMTPUTF8 whatever we write.
    assert "\tfor <jörg@bücher.pqr.example>; ".encode() in _received_for(
        Mailbox("jörg", "bücher.pqr.example")
    )


@example(recipient=parse_mailbox("a" * 64 + "@" + "ü." * 30 + "example"), by="mx.abc.example")
@given(recipient=sst.mailboxes(utf8=True), by=sst.domains(utf8=True))
def test_the_received_line_is_ascii_exactly_when_the_envelope_can_be(
    recipient: Mailbox, by: str
) -> None:
    """Whatever the recipient, the line is 8-bit only where the recipient is, in the
    form the relay sends it to a next hop without SMTPUTF8; the HELO name (the
    client's claim) and this server's name never make it 8-bit. A recipient whose
    A-labels pass a 256-octet path (RFC 5321 §4.5.3.1.3, a size to take, not a limit)
    is written in them, where it raised and made the message a 451 at receipt."""
    header = _received_for(recipient, by=by)
    assert header.isascii() == recipient.a_label_form.is_ascii


@pytest.mark.parametrize(
    "helo, written",
    [
        ("mail.example([192.0.2.1])", "mail.example??192.0.2.1??"),  # a forged address
        ("[6.6.6.6", "?6.6.6.6"),  # a literal never closed
        ("[6.6.6.6 (evil)", "?6.6.6.6??evil?"),  # ... and a comment after it
        ("[6.6.6.6(evil)", "?6.6.6.6?evil?"),  # ... as one word, as EHLO can say it
        ("6.6.6.6]", "6.6.6.6?"),
        ("[[192.0.2.1]]", "??192.0.2.1??"),
        ("[192.0.2.1]x", "?192.0.2.1?x"),
        ("[x-tag:a(b]", "[x-tag:a?b]"),  # a general literal: its dcontent kept safe
        ("evil(", "evil?"),  # a comment never closed
        ("a;b", "a?b"),  # the end of the clauses
        ("héllo.example", "h?llo.example"),  # 8-bit in an ASCII header
        ("[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
    ],
)
def test_the_helo_name_keeps_only_the_characters_of_a_domain(helo: str, written: str) -> None:
    """The HELO name is the client's claim; in the Received line it may not add a
    comment, end a clause or make the header 8-bit (Postfix writes ``?`` too)."""
    header = received_header(
        helo=helo,
        peer=("127.0.0.1", 4000),
        by="mx",
        protocol="ESMTP",
        queue_id="Q",
        recipient=None,
        when=0.0,
    )
    assert header.startswith(f"Received: from {written} ([127.0.0.1])\r\n".encode())


def _from_domain_written(helo: str) -> str:
    """The From-domain of the Received line written for a client saying ``helo``."""
    header = received_header(
        helo=helo,
        peer=("192.0.2.1", 4000),
        by="mx",
        protocol="ESMTP",
        queue_id="Q",
        recipient=None,
        when=0.0,
    ).decode("ascii")
    first_line = header.split("\r\n", 1)[0]
    assert first_line.startswith("Received: from ")
    assert first_line.endswith(" ([192.0.2.1])"), first_line
    return first_line.removeprefix("Received: from ").removesuffix(" ([192.0.2.1])")


_MANGLED_LITERALS = sst.address_literals(general=True).flatmap(
    lambda literal: st.sampled_from(
        [literal[:-1], literal[1:], f"{literal[:-1]} (evil)", f"x{literal}", f"[{literal}]"]
    )
)


@example(helo="[6.6.6.6")
@example(helo="[6.6.6.6 (evil)")
@example(helo="]mail.example[")
@given(helo=st.one_of(st.text(), _MANGLED_LITERALS, sst.domains(utf8=True, literals=True)))
def test_the_from_domain_is_one_token_that_opens_nothing_it_does_not_close(helo: str) -> None:
    """RFC 5321 §4.4: the From-domain is a Domain or an address literal, one token that
    neither opens an RFC 5322 §3.2.2 comment nor leaves a bracket unclosed. Whatever
    the client (or a filter's XFORWARD HELO) claims, brackets survive only as the
    two ends of a valid address literal; no parenthesis or white space survives."""
    written = _from_domain_written(helo)
    assert written and written.isascii()
    assert not set(written) & set("() \t;")
    if "[" in written or "]" in written:
        assert written.startswith("[") and written.endswith("]"), written
        assert written.count("[") == written.count("]") == 1, written


@given(helo=sst.domains(literals=True))
def test_a_helo_name_that_is_a_domain_or_literal_is_written_as_it_is(helo: str) -> None:
    """A well-formed ASCII Domain or address literal (RFC 5321 §4.1.3) is the From-domain
    unchanged."""
    assert _from_domain_written(helo) == helo


@pytest.mark.parametrize(
    "helo, peer, first_line",
    [
        (None, None, "Received: from unknown"),  # XFORWARD ADDR=[UNAVAILABLE]
        ("c.example", None, "Received: from c.example"),  # XCLIENT ADDR=[UNAVAILABLE]
        (None, ("192.0.2.7", 0), "Received: from [192.0.2.7] ([192.0.2.7])"),
        (None, ("/run/client.sock", 0), "Received: from unknown"),  # a Unix socket's
        (None, ("", 0), "Received: from unknown"),  # an unnamed Unix socket (LMTP)
        ("postfix.example", ("", 0), "Received: from postfix.example"),
    ],
)
def test_an_unknown_client_gets_a_well_formed_from_clause(
    helo: str | None, peer: tuple[str, int] | None, first_line: str
) -> None:
    """RFC 5321 §4.4: the From-domain is a Domain or an address literal, and the
    TCP-info in parentheses an address literal. ``[unknown]`` is neither (§4.1.3): an
    unknown HELO of a client with no IP address is ``unknown`` (a Domain, Postfix's
    word), and a peer with no IP address (unknown, or a Unix socket's path, empty for
    an unnamed one) has no TCP-info at all: a path is no address literal, and
    ``([])`` is no TCP-info."""
    header = received_header(
        helo=helo, peer=peer, by="mx", protocol="ESMTP", queue_id="Q", recipient=None, when=0.0
    )
    assert header.startswith(f"{first_line}\r\n\tby mx ".encode()), header


@given(path=st.text().map(lambda tail: "/" + tail))  # a path: never an IP address
@example(path="/x\r\nX-Injected: yes")  # a header of its own
@example(path="/x]) (forged [192.0.2.1")
def test_a_peer_that_is_a_unix_path_never_reaches_the_received_line(path: str) -> None:
    """A peer named by a UNIX socket's path (a UNIX listener's client) is a local
    user's choice and no address: the Received line gives no TCP-info for it (RFC 5321
    §4.4), so nothing of it can end the line, a literal or the comment."""
    header = received_header(
        helo="c.example",
        peer=(path, 0),
        by="mx",
        protocol="ESMTP",
        queue_id="Q",
        recipient=None,
        when=0.0,
    )
    assert header.startswith(b"Received: from c.example\r\n\tby mx "), header
    assert header.count(b"\r\n") == header.count(b"\r\n\t") + 1


def test_return_path_and_hop_count() -> None:
    assert return_path_header("") == b"Return-Path: <>\r\n"
    header = b"Received: a\r\nreceived: b\r\n\tRECEIVED: folded\r\nSubject: Received: no\r\n"
    assert count_received(header) == 2
    # RFC 5322 §4.5's obsolete form: white space before the colon
    assert count_received(b"Received : a\r\nreceived\t: b\r\nReceivedX: c\r\n") == 2


@pytest.mark.parametrize(
    "sender",
    [
        '"s\u2028x"@abc.example',
        "s\u2028x@abc.example",
        '"(a)\\\u2028b"@abc.example',  # what could end or break a comment
        "a\u202eb@abc.example",
    ],
)
def test_a_sender_that_no_longer_parses_gets_a_null_return_path(sender: str) -> None:
    """An escaped form of an address that does not parse would name another address (in
    a quoted local part ``\\x`` is a quoted-pair): the path is the null one, which
    RFC 5321 §4.4 allows, and the sender is shown only in a trailing comment (RFC 5322
    §3.2.2) with its parentheses and backslashes quoted, so the field stays whole."""
    with pytest.raises(AddressError):
        parse_mailbox(sender)
    header = return_path_header(sender)
    assert header.startswith(b"Return-Path: <> (") and header.endswith(b")\r\n")
    assert header.count(b"\r\n") == 1 and header.isascii()
    comment = header.decode()[len("Return-Path: <> (") : -len(")\r\n")]
    assert not set(re.sub(r"\\.", "", comment)) & set("()\\")


def test_a_valid_sender_goes_raw_into_the_return_path() -> None:
    """A valid address that looks like an escaped one is itself, and nothing else."""
    sender = '"s\\x{2028}x"@abc.example'
    parse_mailbox(sender)
    assert return_path_header(sender) == f"Return-Path: <{sender}>\r\n".encode()
    assert return_path_header('"s\u2028x"@abc.example') != return_path_header(sender)


@given(
    content=st.lists(
        st.sampled_from([b"Subj", b"x", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\xe9"]),
        max_size=30,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
    received=st.sampled_from([b"", b"Received: a\r\n", b"Received: a\r\n\r\n"]),
)
def test_what_goes_to_the_spool_is_the_same_however_the_content_is_cut(
    content: bytes, cuts: list[int], received: bytes
) -> None:
    """The first line is held until it tells whether a separator is due, and the header
    is scanned for the hop count, as much in small pieces as whole: the pieces may
    only skip looking again at what cannot decide."""

    def fed(pieces: list[bytes]) -> tuple[bytes, int]:
        incoming = _Incoming(spool=None)  # type: ignore[arg-type]  # no file: only the logic
        out = b""
        for piece in pieces:
            incoming.scan(piece)
            out += incoming.spooled(piece)
        if not incoming.header_done:
            incoming.scan(b"\r\n\r\n")
        return out + incoming.rest(), incoming.hops

    whole = received + content
    bounds = [0, *sorted(min(cut, len(whole)) for cut in cuts), len(whole)]
    pieces = [whole[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    assert fed(pieces) == fed([whole] if whole else [])
    follows = header_field_follows(whole)
    spooled, _ = fed([whole] if whole else [])
    assert spooled == (whole if follows or not whole else b"\r\n" + whole)


@pytest.mark.parametrize(
    "start, follows",
    [
        (b"", None),
        (b"\r", None),
        (b"\r\nbody", True),  # an empty header section
        (b"Subj", None),
        (b"Subject: x", True),
        (b"Subject :", True),
        (b"Subject  ", None),
        (b" folded onto ours", False),
        (b"\tfolded", False),
        (b"hello world", False),
        (b":x", False),
        (b"x" * 997, None),
        (b"x" * 998, False),
    ],
)
def test_whether_a_header_field_begins_the_content(start: bytes, follows: bool | None) -> None:
    assert header_field_follows(start) is follows


# -- the queue ------------------------------------------------------------------------


def _queue(tmp_path: Path, now: float = 1000.0) -> Queue:
    queue = Queue(tmp_path / "queue", clock=lambda: now)
    assert queue.open() == []
    return queue


def test_a_committed_entry_survives_a_restart(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    spool = queue.spool()
    spool.write(b"Subject: x\r\n\r\n")
    spool.write(b"body\r\n")
    prepared = queue.prepare(
        spool,
        "john@abc.example",
        ["brendon@pqr.example", "b@pqr.example", "brendon@pqr.example"],
        client="[127.0.0.1]:1",
        params=[("SMTPUTF8", None), ("BODY", "8BITMIME")],
    )
    assert not queue.envelope_path(spool.id).exists()
    entry = prepared.commit()
    assert [r.address for r in entry.recipients] == ["brendon@pqr.example", "b@pqr.example"]
    assert entry.size == len(b"Subject: x\r\n\r\nbody\r\n") and entry.created == 1000.0
    again = Queue(tmp_path / "queue").open()
    assert again == [entry]
    assert queue.read_content(entry.id) == b"Subject: x\r\n\r\nbody\r\n"


def test_open_clears_what_a_crash_left(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    half = queue.spool()
    half.write(b"half a message")
    spool = queue.spool()
    spool.write(b"x")
    prepared = queue.prepare(spool, "", ["a@b.example"])
    # The content rename happened, the envelope one did not: an orphan.
    Path(prepared.content_tmp).replace(queue.content_path(spool.id))
    assert Queue(tmp_path / "queue").open() == []
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []
    assert list((tmp_path / "queue" / "messages").iterdir()) == []


@pytest.mark.parametrize(
    "damage",
    [b"{ truncated", b'{"format": 1, "id": "X"}', b"\xff\xfe not text", b"[]"],
    ids=["not-json", "fields-missing", "not-utf8", "not-an-object"],
)
def test_a_damaged_envelope_is_set_aside_and_the_rest_of_the_queue_goes_on(
    tmp_path: Path, damage: bytes
) -> None:
    """As Postfix moves a damaged queue file aside: the message is kept for the operator
    in ``corrupt/``, and neither ``open`` nor ``entries`` fails for it."""
    queue = _queue(tmp_path)
    good = queue.add(b"Subject: good\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    bad = queue.add(b"Subject: bad\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    queue.envelope_path(bad.id).write_bytes(damage)
    assert [e.id for e in queue.entries()] == [good.id]  # the tools read past it
    assert [e.id for e in Queue(tmp_path / "queue").open()] == [good.id]
    corrupt = tmp_path / "queue" / "corrupt"
    assert (corrupt / f"{bad.id}.envelope").read_bytes() == damage
    assert (corrupt / f"{bad.id}.message").read_bytes() == b"Subject: bad\r\n\r\nx\r\n"


def _envelope_with(entry: QueueEntry, field: str, value: str) -> bytes:
    """``entry``'s queue file with ``field``'s value replaced by the JSON text ``value``."""
    data = json.loads(entry.to_json())
    data[field] = "@@"
    return json.dumps(data).replace('"@@"', value).encode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (None, "[" * 100_000),  # RecursionError from the JSON reader
        ("size", "1e400"),  # infinity to Python's reader: int() of it overflowed
        ("attempts", "1e999"),
        ("attempts", "2.5"),
        ("created", '"12.5"'),
        ("sender", "7"),
        (
            "recipients",
            '[{"address": "a@pqr.example", "status": ["pending"], "reply": null, '
            '"dsn": null, "remote_mta": null}]',
        ),
        ("params", '[["SMTPUTF8"]]'),
        ("held", '"no"'),
        ("id", '"0123456789"'),  # another entry's id: its files would be the wrong ones
    ],
    ids=lambda v: v if v is None or len(v) < 20 else v[:12],
)
def test_an_envelope_of_the_wrong_types_is_set_aside_not_a_crash(
    tmp_path: Path, field: str | None, value: str
) -> None:
    """Such a file raised RecursionError or OverflowError, not ValueError, out of
    ``open`` (a server that could not start until the file was removed by hand) and out
    of ``entries`` (``queue list``)."""
    queue = _queue(tmp_path)
    good = queue.add(b"Subject: good\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    bad = queue.add(b"Subject: bad\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    damage = value.encode() if field is None else _envelope_with(bad, field, value)
    queue.envelope_path(bad.id).write_bytes(damage)
    with pytest.raises(ValueError):
        queue.load(bad.id)
    assert [e.id for e in queue.entries()] == [good.id]
    assert [e.id for e in Queue(tmp_path / "queue").open()] == [good.id]
    assert (tmp_path / "queue" / "corrupt" / f"{bad.id}.envelope").read_bytes() == damage


@pytest.mark.parametrize(
    ("field", "value"),
    [("next_attempt", "NaN"), ("next_attempt", "Infinity"), ("created", "-1e400")],
)
def test_an_envelope_whose_times_are_not_finite_is_set_aside(
    tmp_path: Path, field: str, value: str
) -> None:
    """Python's JSON reader takes these; a ``next_attempt`` of NaN is never due, and
    the delivery worker woke for it without end (a quarter of a CPU, idle), while the
    message was neither delivered nor set aside."""
    queue = _queue(tmp_path)
    bad = queue.add(b"Subject: bad\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    queue.envelope_path(bad.id).write_bytes(_envelope_with(bad, field, value))
    assert Queue(tmp_path / "queue").open() == []
    assert (tmp_path / "queue" / "corrupt" / f"{bad.id}.message").exists()


def test_an_envelope_that_cannot_be_read_is_set_aside_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A read that fails (here the envelope is a directory, as a disk or a hand can
    leave it) is damage like any other: the server still starts. If even ``corrupt/``
    cannot take it, it stays where it is, its content with it, and is skipped."""
    queue = _queue(tmp_path)
    good = queue.add(b"Subject: good\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    bad = queue.add(b"Subject: bad\r\n\r\nx\r\n", "john@abc.example", ["b@pqr.example"])
    queue.envelope_path(bad.id).unlink()
    queue.envelope_path(bad.id).mkdir()
    corrupt = tmp_path / "queue" / "corrupt"
    corrupt.write_bytes(b"not a directory")
    assert [e.id for e in Queue(tmp_path / "queue").open()] == [good.id]
    assert queue.envelope_path(bad.id).is_dir()
    assert queue.read_content(bad.id) == b"Subject: bad\r\n\r\nx\r\n"
    assert f"{bad.id}: queue file damaged" in caplog.text and "skipped" in caplog.text
    corrupt.unlink()
    assert [e.id for e in Queue(tmp_path / "queue").open()] == [good.id]
    assert (corrupt / f"{bad.id}.envelope").is_dir()
    assert (corrupt / f"{bad.id}.message").read_bytes() == b"Subject: bad\r\n\r\nx\r\n"


def test_an_envelope_whose_message_is_gone_is_kept_and_logged_not_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Content lost (a disk, an ``rm``): the envelope, the one record left of a message
    accepted for delivery, was deleted with no word in the log. It goes to ``corrupt/``
    now, and the log names its sender and undelivered recipients."""
    queue = _queue(tmp_path)
    entry = queue.add(b"Subject: x\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    queue.content_path(entry.id).unlink()
    assert Queue(tmp_path / "queue").open() == []
    corrupt = tmp_path / "queue" / "corrupt"
    assert QueueEntry.from_json((corrupt / f"{entry.id}.envelope").read_text()) == entry
    assert not queue.envelope_path(entry.id).exists()
    [record] = [r for r in caplog.records if entry.id in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "from=<john@abc.example> to=<a@pqr.example>" in record.getMessage()
    assert "no bounce" in record.getMessage()


def test_a_set_aside_cut_short_is_finished(tmp_path: Path) -> None:
    """A crash between :meth:`Queue._set_aside`'s two moves leaves the content in
    ``corrupt/`` and the envelope in the queue; the next ``open`` moves the envelope
    after it (it was deleted, and the operator had a message with no envelope)."""
    queue = _queue(tmp_path)
    entry = queue.add(b"Subject: x\r\n\r\nx\r\n", "john@abc.example", ["a@pqr.example"])
    corrupt = tmp_path / "queue" / "corrupt"
    corrupt.mkdir()
    queue.envelope_path(entry.id).write_bytes(b"{ damaged")
    queue.content_path(entry.id).replace(corrupt / f"{entry.id}.message")
    assert Queue(tmp_path / "queue").open() == []
    assert (corrupt / f"{entry.id}.envelope").read_bytes() == b"{ damaged"
    assert (corrupt / f"{entry.id}.message").read_bytes() == b"Subject: x\r\n\r\nx\r\n"
    assert list((tmp_path / "queue" / "envelopes").iterdir()) == []


def test_a_maildirs_old_tmp_files_are_cleared_and_young_ones_kept(tmp_path: Path) -> None:
    """The Maildir spec: a file untouched in tmp/ for 36 hours is a dead delivery. (A
    file's ctime cannot be set back: the clock is set forward instead.)"""
    maildir = Maildir(tmp_path / "m")
    maildir.create()
    (maildir.path / "tmp" / "left").write_bytes(b"half a message")
    (maildir.path / "tmp" / "a-directory").mkdir()
    now = time.time()
    assert maildir.clean_tmp(now=now + 35 * 3600) == 0
    assert maildir.clean_tmp(now=now + 37 * 3600) == 1
    assert [p.name for p in (maildir.path / "tmp").iterdir()] == ["a-directory"]


def test_update_and_remove(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    entry = queue.add(b"bounce\r\n", "", ["john@abc.example"])
    assert entry.sender == "" and entry.client == "local"
    sent = QueuedRecipient("john@abc.example", RecipientStatus.SENT, "250 ok", "2.0.0", "mx")
    updated = entry.with_recipients({"john@abc.example": sent})
    assert updated.pending == ()
    queue.update(updated)
    assert queue.load(entry.id) == updated
    queue.remove(entry.id)
    assert Queue(tmp_path / "queue").open() == []


def test_discarded_spool_and_prepared(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    spool = queue.spool()
    spool.write(b"x")
    spool.discard()
    assert not spool.path.exists()
    spool = queue.spool()
    prepared = queue.prepare(spool, "a@b.example", ["c@d.example"])
    prepared.discard()
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


class _FullDisk(io.BufferedWriter):
    """A file on a full disk: what is written waits in the buffer, and flushing fails."""

    def flush(self) -> None:
        _no_space()


def test_a_spool_on_a_full_disk_is_removed_when_discarded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing flushes the buffer, which fails: the file must go all the same, or it
    holds its disk space in ``tmp/`` until the next start."""
    queue = _queue(tmp_path)
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: _FullDisk(io.FileIO(fd, "w")))
    spool = queue.spool()
    spool.write(b"Subject: x\r\n\r\nbody\r\n")
    with pytest.raises(OSError):
        spool.finish()
    spool.discard()
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []


def test_envelopes_that_cannot_be_written_leave_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An envelope half written to a full disk is removed at once (by ``prepare`` and
    ``update`` alike); an entry whose commit fails is not half in place."""
    queue = _queue(tmp_path)
    entry = queue.add(b"x\r\n", "john@abc.example", ["a@pqr.example"])
    spool = queue.spool()
    spool.write(b"y\r\n")
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", _no_space)
        with pytest.raises(OSError):
            queue.prepare(spool, "john@abc.example", ["b@pqr.example"])
        with pytest.raises(OSError):
            queue.update(entry)
    assert list((tmp_path / "queue" / "tmp").iterdir()) == [spool.path]
    prepared = queue.prepare(spool, "john@abc.example", ["b@pqr.example"])
    with monkeypatch.context() as patch:
        patch.setattr(queue_module, "fsync_directory", _no_space)
        with pytest.raises(OSError):
            prepared.commit()
    prepared.discard()
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []
    assert [p.name for p in (tmp_path / "queue" / "envelopes").iterdir()] == [entry.id]
    assert [p.name for p in (tmp_path / "queue" / "messages").iterdir()] == [entry.id]


def _refused_rename(*args: object, **kwargs: object) -> NoReturn:
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def test_a_rename_the_directory_refuses_leaves_no_synced_copy_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``envelopes/`` that refuses the rename (read-only, no room to grow): each
    deferred round's ``update`` and each bounce's ``add`` fails, and must take its
    temporary file with it, or ``tmp/`` grows by one each round until the next start;
    so must a ``queue`` command whose rename fails."""
    queue = _queue(tmp_path)
    entry = queue.add(b"x\r\n", "john@abc.example", ["a@pqr.example"])
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _refused_rename)
        for _ in range(3):
            with pytest.raises(PermissionError):
                queue.update(replace(entry, attempts=entry.attempts + 1))
        with pytest.raises(PermissionError):
            queue.add(b"bounce\r\n", "", ["john@abc.example"])
        with pytest.raises(PermissionError):
            submit(tmp_path / "queue", QueueCommand("hold", (entry.id,)), pid=0)
    assert list((tmp_path / "queue" / "tmp").iterdir()) == []
    assert list((tmp_path / "queue" / "commands").iterdir()) == []
    assert queue.load(entry.id) == entry
    assert [p.name for p in (tmp_path / "queue" / "messages").iterdir()] == [entry.id]


@given(
    sender=st.sampled_from(["", "john@abc.example", "jöhn@äbc.example"]),
    statuses=st.lists(st.sampled_from(list(RecipientStatus)), min_size=1, max_size=4),
    reply=st.none() | st.text(max_size=30),
)
def test_entry_json_round_trip(
    sender: str, statuses: list[RecipientStatus], reply: str | None
) -> None:
    entry = QueueEntry(
        id="0123456789",
        sender=sender,
        recipients=tuple(
            QueuedRecipient(f"r{i}@x.example", status, reply, "4.0.0", None)
            for i, status in enumerate(statuses)
        ),
        created=12.5,
        size=3,
        attempts=2,
        next_attempt=99.0,
        params=(("SMTPUTF8", None),),
    )
    assert QueueEntry.from_json(entry.to_json()) == entry


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        QueueEntry.from_json('{"format": 99}')


def test_dsn_parameters_survive_the_queue_file_and_older_files_still_load() -> None:
    entry = QueueEntry(
        id="Q1",
        sender="john@abc.example",
        recipients=(
            QueuedRecipient("a@pqr.example", notify="SUCCESS,FAILURE", orcpt="rfc822;a@x.example"),
            QueuedRecipient("b@pqr.example"),
        ),
        created=1.0,
        params=(("RET", "HDRS"), ("ENVID", "QQ314")),
    )
    again = QueueEntry.from_json(entry.to_json())
    assert again == entry
    assert again.param("RET") == "HDRS" and again.param("SIZE") is None
    older = json.loads(entry.to_json())
    for recipient in older["recipients"]:
        del recipient["notify"], recipient["orcpt"]
    loaded = QueueEntry.from_json(json.dumps(older))
    assert [(r.notify, r.orcpt) for r in loaded.recipients] == [(None, None), (None, None)]


def test_where_a_reply_s_lines_meet_survives_the_queue_file() -> None:
    """A report made from the queue folds at the reply's own lines: the file keeps
    where they meet; an older file, without them, loads with none; a file whose list
    holds anything but integers is damaged."""
    reply = "450-4.2.1 busy 450 4.2.1 later"
    recipient = QueuedRecipient("a@pqr.example", reply=reply, reply_breaks=(14,))
    entry = QueueEntry(id="Q1", sender="john@abc.example", recipients=(recipient,), created=1.0)
    assert QueueEntry.from_json(entry.to_json()) == entry
    older = json.loads(entry.to_json())
    del older["recipients"][0]["reply_breaks"]
    assert QueueEntry.from_json(json.dumps(older)).recipients[0].reply_breaks == ()
    for damaged in (["14"], [True], [14.0], 14):
        older["recipients"][0]["reply_breaks"] = damaged
        with pytest.raises(ValueError, match="reply_breaks"):
            QueueEntry.from_json(json.dumps(older))


def test_messages_come_in_delivery_order_though_microseconds_are_not_padded(
    tmp_path: Path,
) -> None:
    """Within one second, ``M5`` was delivered before ``M123456`` and ``Q9``
    before ``Q10``; a string sort of the names puts them the other way round."""
    box = Maildir(tmp_path / "m")
    box.path.mkdir(parents=True, exist_ok=True)
    for sub in ("tmp", "new", "cur"):
        (box.path / sub).mkdir(exist_ok=True)
    names = [
        "1700000000.M5P7Q9R00.host",
        "1700000000.M5P7Q10R00.host",
        "1700000000.M123456P7Q11R00.host",
        "1700000001.M1P7Q12R00.host:2,S",
    ]
    for index, name in enumerate(names):
        sub = "cur" if ":" in name else "new"
        (box.path / sub / name).write_bytes(b"%d\n" % index)
    assert [p.read_bytes() for p in box.messages()] == [b"0\n", b"1\n", b"2\n", b"3\n"]


def test_the_disk_refusals_are_the_writes_that_found_no_room_and_a_closed_disk() -> None:
    """One table names a write that found no room, for the driver's replies and the
    server's refusals alike; a read-only or unwritable disk is added for the server."""
    assert set(BY_ERRNO) <= DISK_REFUSALS
    assert {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES} == DISK_REFUSALS
    assert is_disk_refusal(OSError(errno.EROFS, os.strerror(errno.EROFS)))
    assert not is_disk_refusal(OSError(errno.EIO, os.strerror(errno.EIO)))
    assert not is_disk_refusal(ValueError(errno.ENOSPC))
