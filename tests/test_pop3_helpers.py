"""The small POP3 helpers: APOP, listings, capabilities, message numbers, the package."""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtpcore.pop3
from smtpcore import LocalProtocolError, RemoteProtocolError
from smtpcore.pop3 import (
    Err,
    MessageNumbers,
    Ok,
    ResponseData,
    apop_digest,
    apop_matches,
    apop_timestamp,
    find_apop_timestamp,
    format_lines,
    parse_capabilities,
    parse_listing,
    parse_stat,
    parse_uid_listing,
    top_chunks,
    top_chunks_async,
)
from smtpcore.testing import strategies as sst


class TestApop:
    def test_rfc1939_example(self) -> None:
        """RFC 1939 §7: the example digest of ``tanstaaf``."""
        timestamp = apop_timestamp(1896, 697170952, "dbc.mtview.ca.us")
        assert timestamp == "<1896.697170952@dbc.mtview.ca.us>"
        assert apop_digest(timestamp, "tanstaaf") == "c4c9334bac560ecc979e58001b3e22fb"
        assert apop_matches(timestamp, "tanstaaf", "C4C9334BAC560ECC979E58001B3E22FB")
        assert not apop_matches(timestamp, "tanstaa", "c4c9334bac560ecc979e58001b3e22fb")

    def test_a_secret_that_is_not_utf8_matches_nothing(self) -> None:
        """A stored secret with a lone surrogate no client can have hashed: no match,
        and no UnicodeEncodeError for the driver to answer as a store failure."""
        timestamp = apop_timestamp(1896, 697170952, "dbc.mtview.ca.us")
        secret = "pen\udcffcil"
        for octets in (secret.encode("utf-8", "surrogatepass"), b"pen\xffcil"):
            digest = hashlib.md5(timestamp.encode() + octets).hexdigest()
            assert not apop_matches(timestamp, secret, digest)

    @pytest.mark.parametrize(
        ("process", "clock", "host"), [("1 2", 3, "h"), ("", 2, "h"), (1, "<2>", "h"), (1, 2, "")]
    )
    def test_timestamp_parts_are_checked(self, process: object, clock: object, host: str) -> None:
        with pytest.raises(LocalProtocolError):
            apop_timestamp(process, clock, host)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("host", "stands"),
        [
            ("mäil.example", "xn--mil-qla.example"),
            ("MÄIL.Example", "xn--mil-qla.example"),  # IDNA lowercases (RFC 5891 §5.2)
            ("例子.测试", "xn--fsqu00a.xn--0zwm56d"),
            ("POP.Example", "POP.Example"),  # ASCII stays as given
            ("straße.de", "xn--strae-oqa.de"),  # IDNA 2008 keeps ß (RFC 5892)
            ("stra\u1e9ee.de", "stra-e.de"),  # IDNA 2003 would make it strasse: refused
            ("a@b", "a-b"),
            ("<h>", "-h-"),
        ],
    )
    def test_the_host_stands_in_ascii(self, host: str, stands: str) -> None:
        """A timestamp is a msg-id (RFC 1939 §7), ASCII: an application building its
        own greeting with a non-ASCII hostname got LocalProtocolError; the name is now
        in the A-label form the greeting uses, by the project's IDNA conversion."""
        assert apop_timestamp(1, 2, host) == f"<1.2@{stands}>"

    @pytest.mark.parametrize(
        ("greeting", "timestamp"),
        [
            (
                "POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
                "<1896.697170952@dbc.mtview.ca.us>",
            ),
            ("<a@b> ready", "<a@b>"),
            ("Dovecot ready.", None),
            ("<no-at-sign> ready", None),
            ("<a b@c>", None),
        ],
    )
    def test_find_timestamp(self, greeting: str, timestamp: str | None) -> None:
        assert find_apop_timestamp(greeting) == timestamp

    @given(st.text(alphabet="<>@a .\x7f\u00e9", max_size=24))
    def test_find_timestamp_finds_what_the_one_pattern_would(self, greeting: str) -> None:
        """The scan of bracketed runs finds exactly what ``<part+@part+>`` searched for
        (the pattern it replaces, which was quadratic in a run of ``@``)."""
        part = r"[\x21-\x3b\x3d\x3f-\x7e]"
        found = re.search(f"<{part}+@{part}+>", greeting)
        assert find_apop_timestamp(greeting) == (found[0] if found else None)

    def test_a_greeting_of_at_signs_is_scanned_once(self) -> None:
        """``<`` and 64k ``@`` with no ``>``: one pass, where the pattern it replaced
        tried every ``@`` against every other (seconds of CPU)."""
        assert find_apop_timestamp("<" + "@" * 65536) is None
        assert find_apop_timestamp("<" + "@" * 65536 + ">") == "<" + "@" * 65536 + ">"


class TestListings:
    def test_stat(self) -> None:
        assert parse_stat("2 320") == (2, 320)
        assert parse_stat("0 0 more text") == (0, 0)
        for bad in ("", "2", "two 320", "2 -1", "\u0662 3"):
            with pytest.raises(RemoteProtocolError):
                parse_stat(bad)

    def test_scan_listing(self) -> None:
        assert parse_listing(b"1 120\r\n2 200\r\n") == [(1, 120), (2, 200)]
        assert parse_listing("2 200") == [(2, 200)]  # the +OK text of LIST 2
        assert parse_listing(b"1 120 extra\r\n\r\n") == [(1, 120)]
        assert parse_listing(b"") == []
        with pytest.raises(RemoteProtocolError):
            parse_listing(b"1\r\n")

    def test_a_listing_helper_takes_bytes_like_content(self) -> None:
        """Content as it comes from ``ResponseData`` chunks may be joined into any
        bytes-like object."""
        assert parse_listing(bytearray(b"1 120\r\n")) == [(1, 120)]
        assert parse_uid_listing(memoryview(b"1 uid-1\r\n")) == [(1, "uid-1")]
        assert parse_capabilities(bytearray(b"TOP\r\n")) == {"TOP": ()}

    @pytest.mark.parametrize(
        ("helper", "given", "says"),
        [
            (
                parse_stat,
                Ok("2 320"),
                "parse_stat() text must be a str, not Ok: give it the response's .text",
            ),
            (parse_stat, b"2 320", "parse_stat() text must be a str, not bytes"),
            (parse_stat, None, "parse_stat() text must be a str, not NoneType"),
            (parse_listing, Ok("2 200"), "not Ok: give it the response's .text"),
            (parse_listing, ResponseData(b"1 120\r\n"), "the .data of the ResponseData chunks"),
            (
                parse_listing,
                [b"1 120\r\n"],
                "parse_listing() data must be bytes or a str, not list",
            ),
            (
                parse_uid_listing,
                None,
                "parse_uid_listing() data must be bytes or a str, not NoneType",
            ),
            (
                parse_capabilities,
                Err("no"),
                "parse_capabilities() data must be bytes or a str, not Err",
            ),
        ],
    )
    def test_a_listing_helper_given_what_it_cannot_read_says_what_it_takes(
        self, helper: object, given: object, says: str
    ) -> None:
        """A fetcher of its own that hands over the ``Ok`` event, or the list of
        chunks, got an ``AttributeError`` from deep inside that named neither the
        helper nor what it takes: a misuse is a ``LocalProtocolError`` that does."""
        assert callable(helper)
        with pytest.raises(LocalProtocolError) as caught:
            helper(given)
        assert says in str(caught.value)

    def test_a_listing_helper_decodes_any_bytes_like_content_alike(self) -> None:
        """Non-contiguous views are read too; a released one is a misuse."""
        content = b"1 120 moved \xff\r\n2 200\r\n"
        spread = memoryview(bytes(octet for octet in content for _ in "ab"))
        assert parse_listing(spread[::2]) == parse_listing(content) == [(1, 120), (2, 200)]
        released = memoryview(content)
        released.release()
        with pytest.raises(LocalProtocolError, match="released memoryview"):
            parse_listing(released)

    @pytest.mark.parametrize(
        ("call", "says"),
        [
            (
                lambda: find_apop_timestamp(Ok("ready <1.2@x>")),  # type: ignore[arg-type]
                "find_apop_timestamp() text must be a str, not Ok: give it the response's .text",
            ),
            (
                lambda: apop_digest(None, "secret"),  # type: ignore[arg-type]
                "the APOP timestamp must be a str, not NoneType",
            ),
            (
                lambda: apop_digest("<1.2@x>", b"secret"),  # type: ignore[arg-type]
                "the APOP secret must be a str, not bytes",
            ),
            (
                lambda: list(top_chunks(b"Subject: x\r\n\r\nbody\r\n", 1)),  # type: ignore[arg-type]
                "top_chunks() chunks must be an iterable of bytes chunks, not bytes: wrap",
            ),
            (
                lambda: list(top_chunks(None, 1)),  # type: ignore[arg-type]
                "top_chunks() chunks must be an iterable of bytes chunks, not NoneType",
            ),
            (
                lambda: list(top_chunks(["Subject: x\r\n"], 1)),  # type: ignore[list-item]
                "a top_chunks() chunk must be bytes, not str",
            ),
            (
                lambda: list(top_chunks([b"x"], "1")),  # type: ignore[arg-type]
                "TOP line count must be an int, not str",
            ),
            (
                lambda: top_chunks_async(b"Subject: x\r\n\r\nbody\r\n", 1),  # type: ignore[arg-type]
                "top_chunks_async() chunks must be an async iterable of bytes chunks, not bytes: "
                "yield it",
            ),
            (
                lambda: top_chunks_async([b"Subject: x\r\n"], 1),  # type: ignore[arg-type]
                "top_chunks_async() chunks must be an async iterable of bytes chunks, not list: "
                "it is not async",
            ),
            (
                lambda: top_chunks_async(None, 1),  # type: ignore[arg-type]
                "top_chunks_async() chunks must be an async iterable of bytes chunks, "
                "not NoneType",
            ),
            (
                lambda: format_lines("TOP"),
                "format_lines() lines must be an iterable of str lines, not str: wrap",
            ),
            (
                lambda: format_lines([b"TOP"]),  # type: ignore[list-item]
                "a format_lines() line must be a str, not bytes",
            ),
        ],
    )
    def test_the_other_pop3_helpers_given_what_they_cannot_read_say_what_they_take(
        self, call: Callable[[], object], says: str
    ) -> None:
        """The same misuse as the listing helpers' met a TypeError or AttributeError
        from inside, or, for a str of lines, a line written per character."""
        with pytest.raises(LocalProtocolError) as caught:
            call()
        assert says in str(caught.value)

    @pytest.mark.parametrize("after", ["\x0c7 999", "\x1cx", "\u0085 x", "\u2028y"])
    def test_only_line_ends_end_a_listing_line(self, after: str) -> None:
        """RFC 1939 §5 puts no limit on what follows the numbers: a form feed, a NEL or
        a U+2028 there is text, not the start of another line (a message 7 that is not)."""
        data = f"1 60 moved{after}\r\n2 70\r\n".encode()
        assert parse_listing(data) == [(1, 60), (2, 70)]
        assert parse_uid_listing(f"1 uid-1 {after}\r\n".encode()) == [(1, "uid-1")]
        assert parse_capabilities(f"TOP\r\nIMPLEMENTATION v1{after}\r\n".encode()) == {
            "TOP": (),
            "IMPLEMENTATION": tuple(f"v1{after}".split(" ")),
        }

    @given(sst.other_spaces())
    def test_a_listing_separates_its_words_with_the_ascii_space_alone(self, space: str) -> None:
        """RFC 1939 §5: a scan listing is the message number, a single space and the
        size; §7: a unique-id listing the number, a single space and the unique-id.
        ``str.split()`` also cut at a tab or U+00A0, so ``1\u00a0abc`` was message 1's
        unique-id ``abc``, where a client splitting at the space finds no unique-id:
        which message is which, and so which is deleted, would depend on the reader."""
        for bad in (f"1{space}120", f"{space}1 120", f"1 {space}120"):
            with pytest.raises(RemoteProtocolError):
                parse_stat(bad)
            with pytest.raises(RemoteProtocolError):
                parse_listing(f"{bad}\r\n".encode())
        # What follows a size is free (RFC 1939 §5): it ends at any white space.
        assert parse_stat(f"1 120{space}octets") == (1, 120)
        assert parse_listing(f"1 120{space}(new)\r\n".encode()) == [(1, 120)]
        for bad in (f"1{space}abc", f"1 abc{space}", f"{space}1 abc"):
            with pytest.raises(RemoteProtocolError):
                parse_uid_listing(f"{bad}\r\n".encode())
        assert parse_capabilities(f"SASL{space}PLAIN\r\n".encode()) == {f"SASL{space}PLAIN": ()}

    def test_unique_id_listing(self) -> None:
        assert parse_uid_listing(b"1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n") == [
            (1, "whqtswO00WBw418f9t5JxYwZ"),
            (2, "QhdPYR:00WBw1Ph7x7"),
        ]
        with pytest.raises(RemoteProtocolError):
            parse_uid_listing(b"1 " + b"x" * 71 + b"\r\n")
        with pytest.raises(RemoteProtocolError):
            parse_uid_listing(b"x abc\r\n")

    def test_a_message_or_a_unique_id_listed_twice_is_refused(self) -> None:
        """RFC 1939 §5, §7: a line for each message, and a unique-id names one message.
        Taken as it came, the later UID of a message listed twice replaced the first,
        and a unique-id given to two messages would leave one of them never fetched
        by a client that keeps the unique-ids it has fetched."""
        with pytest.raises(RemoteProtocolError, match="message number 1 twice"):
            parse_listing(b"1 120\r\n2 200\r\n1 300\r\n")
        with pytest.raises(RemoteProtocolError, match="message number 2 twice"):
            parse_uid_listing(b"1 abc\r\n2 def\r\n2 ghi\r\n")
        with pytest.raises(RemoteProtocolError, match="unique-id 'abc' twice"):
            parse_uid_listing(b"1 abc\r\n2 abc\r\n")
        assert parse_uid_listing(b"1 abc\r\n2 ABC\r\n") == [(1, "abc"), (2, "ABC")]

    @pytest.mark.parametrize("number", [0, 2**31, 2**32 + 1, 10**19])
    def test_a_message_number_no_command_can_name_is_refused(self, number: int) -> None:
        """RFC 1939 §5 numbers messages from 1, and RETR, DELE and TOP carry no more
        than MAX_MESSAGE_NUMBER. Taken, such a line made ``retrieve()`` of it raise
        ``LocalProtocolError``, the caller's mistake, and ``fetch`` stop there on every
        run: the listing is the server's fault, and refused as such, in the content
        of LIST and UIDL and in the ``+OK`` of ``LIST n`` and ``UIDL n`` alike."""
        largest = smtpcore.pop3.MAX_MESSAGE_NUMBER
        assert parse_listing(f"1 10\r\n{largest} 20\r\n") == [(1, 10), (largest, 20)]
        assert parse_uid_listing(f"{largest} abc") == [(largest, "abc")]
        match = f"listing names message {number},"
        for scan in (f"1 10\r\n{number} 20\r\n2 30\r\n".encode(), f"{number} 20"):
            with pytest.raises(RemoteProtocolError, match=match):
                parse_listing(scan)
        for uids in (f"1 a\r\n{number} b\r\n2 c\r\n".encode(), f"{number} b"):
            with pytest.raises(RemoteProtocolError, match=match):
                parse_uid_listing(uids)

    def test_capabilities(self) -> None:
        data = (
            b"TOP\r\nuser\r\nSASL PLAIN LOGIN\r\nEXPIRE 30 USER\r\n"
            b"IMPLEMENTATION Shlemazle-Plotz-v302\r\n"
        )
        assert parse_capabilities(data) == {
            "TOP": (),
            "USER": (),
            "SASL": ("PLAIN", "LOGIN"),
            "EXPIRE": ("30", "USER"),
            "IMPLEMENTATION": ("Shlemazle-Plotz-v302",),
        }

    def test_format_lines(self) -> None:
        assert format_lines(["1 120", "2 200"]) == b"1 120\r\n2 200\r\n"
        assert format_lines([]) == b""
        with pytest.raises(LocalProtocolError):
            format_lines(["1 120\r\n.\r\n+OK injected"])

    def test_the_listing_with_repeats_keeps_a_repeated_id_and_nothing_else(self) -> None:
        """The lenient reading the clients' ``list(allow_repeated_uids=True)`` uses: a
        unique-id given to two messages is kept for each; every other check of
        :func:`parse_uid_listing` holds, line by line and for the listing."""
        data = b"1 abc\r\n2 abc\r\n3 def\r\n"
        assert parse_uid_listing(data, allow_repeated_uids=True) == [
            (1, "abc"),
            (2, "abc"),
            (3, "def"),
        ]
        with pytest.raises(RemoteProtocolError, match="message number 2 twice"):
            parse_uid_listing(b"1 abc\r\n2 def\r\n2 ghi\r\n", allow_repeated_uids=True)
        for bad in (b"1 abc\r\n2\r\n", b"x abc\r\n", b"1\xc2\xa0abc\r\n", b"1 " + b"x" * 71):
            with pytest.raises(RemoteProtocolError):
                parse_uid_listing(bad, allow_repeated_uids=True)

    @given(st.lists(sst.pop3_unique_ids(), max_size=8), st.data())
    def test_the_listing_with_repeats_reads_as_the_strict_one(
        self, uids: list[str], data: st.DataObject
    ) -> None:
        """Whatever ids come, repeated or not, the lenient reading gives what the strict
        one gives where it takes the listing: no second parser to drift apart."""
        numbers = data.draw(st.permutations(range(1, len(uids) + 1)))
        listing = "".join(f"{n} {uid}\r\n" for n, uid in zip(numbers, uids, strict=True))
        expected = list(zip(numbers, uids, strict=True))
        assert parse_uid_listing(listing, allow_repeated_uids=True) == expected
        if len(set(uids)) == len(uids):
            assert parse_uid_listing(listing) == expected
        else:
            with pytest.raises(RemoteProtocolError, match="twice"):
                parse_uid_listing(listing)


class TestMessageNumbers:
    def test_check_delete_reset(self) -> None:
        numbers = MessageNumbers(3)
        assert numbers.check(1) is None
        assert isinstance(numbers.check(0), Err)
        assert isinstance(numbers.check(4), Err)
        assert numbers.delete(2) is None
        problem = numbers.delete(2)
        assert problem is not None and "deleted" in problem.text
        assert numbers.deleted == {2}
        assert list(numbers) == [1, 3]
        assert len(numbers) == 2
        numbers.reset()
        assert list(numbers) == [1, 2, 3]
        assert numbers.count == 3

    def test_count_is_checked(self) -> None:
        with pytest.raises(LocalProtocolError):
            MessageNumbers(-1)


def test_all_lists_the_public_names() -> None:
    exported = smtpcore.pop3.__all__
    assert len(exported) == len(set(exported))
    public = {
        name
        for name, value in vars(smtpcore.pop3).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(exported)
    for name in (
        *("ServerConnection", "ClientConnection", "User", "Pass", "Apop", "Auth", "Capa"),
        *("Stls", "Stat", "List", "Retr", "Dele", "Noop", "Rset", "Top", "Uidl", "Quit"),
        *("Utf8", "Ok", "Err", "ResponseData", "EndOfResponse", "ConnectionClosed"),
    ):
        assert name in exported, name
