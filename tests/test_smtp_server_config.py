"""The server machine's options live in one configuration its server's connections share.

A server makes a machine per connection, and the options are the same for all
of them: the driver builds one configuration per server and starts each
connection's machine from it (``ServerOptions.new_connection``). The options
stay the machine's public attributes, read and written as before; a write gives
that one machine a copy. Held here: what the machines share, that a write
changes one machine alone, and that a machine started from a server's
configuration is the machine its constructor builds from the same options.
"""

from __future__ import annotations

import inspect
import ssl

import pytest

from smtp_helpers import EHLO, codes, greeted, run
from smtpcore._driver._smtp_server import ServerOptions
from smtpcore._lines import FramingPolicy
from smtpcore.address import AddressPolicy
from smtpcore.smtp import Reply, ServerConnection
from smtpcore.smtp._ext.size import MAX_MESSAGE_SIZE
from smtpcore.smtp._server_config import ServerConfig

# Every constructor option, each with a value other than its default.
OTHER_VALUES: dict[str, object] = {
    "lmtp": True,
    "max_command_line": 600,
    "max_text_line": 2000,
    "max_recipients": 7,
    "max_message_size": 1234,
    "max_errors": 5,
    "max_bad_commands": 4,
    "max_junk_commands": 9,
    "max_recipient_overshoot": 3,
    "framing": FramingPolicy.lenient(),
    "addresses": AddressPolicy.postfix(),
    "pipelining": False,
    "eight_bit_mime": False,
    "enhanced_status_codes": False,
    "smtputf8": False,
    "chunking": False,
    "binarymime": True,
    "size": False,
    "limits": True,
    "requiretls": True,
    "xclient": True,
    "xforward": True,
    "trusted_forwarder": True,
    "dsn": True,
    "starttls": True,
    "tls": True,
    "require_tls": True,
    "auth_mechanisms": ("PLAIN",),
    "auth_require_tls": False,
    "require_auth": True,
    "max_auth_failures": 2,
    "max_auth_line": 100,
    "reject_early_content": False,
    "extra_extensions": ("HELP",),
}


def test_every_option_is_listed_here_and_kept_in_the_configuration() -> None:
    options = set(inspect.signature(ServerConnection).parameters) - {"hostname"}
    assert options == set(OTHER_VALUES)
    # Besides the options: the tables they make, and the first EHLO's answer remembered.
    assert set(ServerConfig.__slots__) == {*options, "hostname", "tables", "first_hello"}


def test_a_write_forgets_the_first_ehlo_answer_remembered() -> None:
    """The answer remembered for a session's first EHLO was made with the options as
    they were: a machine given a copy of the configuration answers afresh."""
    options = ServerOptions(hostname="mx.pqr.example", max_message_size=1000)
    first, second = options.new_connection(), options.new_connection()
    for conn in (first, second):
        conn.send(Reply(220, "mx.pqr.example ESMTP"))
    hello = Reply(250, "Hello")
    first.receive_data(b"EHLO c.example\r\n")
    first.next_event()
    assert b"250-SIZE 1000\r\n" in first.send(hello)
    assert first._config.first_hello is not None
    second.max_message_size = 2000
    assert second._config.first_hello is None
    second.receive_data(b"EHLO c.example\r\n")
    second.next_event()
    assert b"250-SIZE 2000\r\n" in second.send(hello)


def test_every_option_reads_back_as_given() -> None:
    conn = ServerConnection("mx.pqr.example", **OTHER_VALUES)  # type: ignore[arg-type]
    assert conn.hostname == "mx.pqr.example"
    for name, value in OTHER_VALUES.items():
        assert getattr(conn, name) == value, name


def test_the_connections_of_a_server_share_one_configuration() -> None:
    options = ServerOptions(hostname="mx.pqr.example", max_recipients=7)
    first, second = options.new_connection(), options.new_connection()
    assert first._config is second._config
    assert first._buffer is not second._buffer
    assert (first.max_recipients, first.hostname) == (7, "mx.pqr.example")


def test_a_write_changes_one_machine_alone() -> None:
    options = ServerOptions(hostname="mx.pqr.example")
    first, second = options.new_connection(), options.new_connection()
    for conn in (first, second):
        conn.send(Reply(220, "mx.pqr.example ESMTP"))
    first.max_recipients = 1
    first.hostname = "other.pqr.example"
    assert (first.max_recipients, first.hostname) == (1, "other.pqr.example")
    assert (second.max_recipients, second.hostname) == (100, "mx.pqr.example")
    assert options.new_connection().max_recipients == 100
    envelope = EHLO + b"MAIL FROM:<a@abc.example>\r\nRCPT TO:<b@pqr.example>\r\n"
    _, out = run(first, envelope + b"RCPT TO:<c@pqr.example>\r\n")
    assert b"452 4.5.3" in out
    _, out = run(second, envelope + b"RCPT TO:<c@pqr.example>\r\n")
    assert b"452" not in out


def test_a_machine_keeps_its_writes_through_its_session() -> None:
    conn = greeted()
    conn.max_message_size = 10
    conn.enhanced_status_codes = False
    _, out = run(conn, EHLO + b"MAIL FROM:<a@abc.example> SIZE=11\r\n")
    assert out.endswith(b"552 Message size exceeds fixed limit\r\n")
    assert ServerConnection("mx.pqr.example").max_message_size == 10_240_000


@pytest.mark.parametrize("size", [2**63, 10**19, 10**25])
def test_a_size_limit_past_the_largest_is_refused_where_the_option_is_taken(size: int) -> None:
    """``max_message_size=10**25`` was taken, and the EHLO reply offered ``SIZE`` and 26
    digits where RFC 1870 §3 allows 20 (``size-value = 1*20DIGIT``): the constructor,
    the adapters' options (built through it) and a write all refuse it now."""
    with pytest.raises(ValueError, match=r"max_message_size \d+ is over 9223372036854775807"):
        ServerConnection("mx.pqr.example", max_message_size=size)
    with pytest.raises(ValueError, match="is over 9223372036854775807"):
        ServerOptions(hostname="mx.pqr.example", max_message_size=size)
    conn = greeted()
    with pytest.raises(ValueError, match="is over 9223372036854775807"):
        conn.max_message_size = size
    assert conn.max_message_size == 10_240_000


def test_the_largest_size_limit_is_offered_in_19_digits() -> None:
    conn = greeted(max_message_size=MAX_MESSAGE_SIZE)
    _, out = run(conn, EHLO)
    assert b"250-SIZE 9223372036854775807\r\n" in out
    conn.max_message_size = -1  # refuses every message: no bound below
    assert conn.max_message_size == -1


def test_an_extension_written_on_a_machine_is_offered_and_read_so() -> None:
    """An extension's option written through the machine counts as if given to the
    constructor: listed or not by the next EHLO, its parameters and commands read
    or refused; no other machine of the server sees it."""
    options = ServerOptions(hostname="mx.pqr.example", dsn=True)
    first, second = options.new_connection(), options.new_connection()
    for conn in (first, second):
        conn.send(Reply(220, "mx.pqr.example ESMTP"))
    first.dsn = False
    first.size = False
    first.chunking = False
    transaction = b"MAIL FROM:<a@abc.example> RET=HDRS SIZE=10\r\nBDAT 1 LAST\r\n"
    _, out = run(first, EHLO + transaction)
    assert b"DSN" not in out and b"SIZE" not in out and b"CHUNKING" not in out
    assert codes(out)[1:] == ["555 5.5.4", "500 5.5.2"]
    _, out = run(second, EHLO + b"MAIL FROM:<a@abc.example> RET=HDRS SIZE=10\r\n")
    assert b"250 DSN\r\n" in out and codes(out)[-1] == "250 2.1.0"
    off = greeted()
    run(off, EHLO)
    off.dsn = True  # after EHLO: parameters at once, the EHLO line from the next EHLO
    envelope = b"MAIL FROM:<a@abc.example> RET=HDRS\r\nRCPT TO:<b@pqr.example> NOTIFY=NEVER\r\n"
    _, out = run(off, envelope)
    assert codes(out) == ["250 2.1.0", "250 2.1.5"]
    _, out = run(off, b"RSET\r\n" + EHLO)
    assert b"250 DSN\r\n" in out
    lmtp = greeted()
    lmtp.lmtp = True
    _, out = run(lmtp, b"LHLO c.example\r\n")
    assert codes(out) == ["250"]
    with pytest.raises(ValueError, match="built in"):
        lmtp.extra_extensions = ("SIZE 10",)  # refused as by the constructor
    assert lmtp.extra_extensions == ()


def test_a_server_starts_its_machines_as_the_constructor_builds_them() -> None:
    """``new_connection`` starts a machine from the server's configuration without the
    constructor: the same options and session as one built from those options."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    options = ServerOptions(
        hostname="mx.pqr.example",
        ssl_context=context,
        max_recipients=7,
        dsn=True,
        auth={"PLAIN": lambda: None},  # type: ignore[dict-item, return-value]  # not run
        xclient_from=("127.0.0.1",),
    )
    started = options.new_connection()
    built = ServerConnection(
        "mx.pqr.example",
        max_recipients=7,
        dsn=True,
        starttls=True,
        auth_mechanisms=["plain"],
        xclient=True,
        xforward=True,
    )
    for name in ServerConfig.__slots__:
        assert getattr(started._config, name) == getattr(built._config, name), name
    for name in ServerConnection.__slots__:
        if name in ("__dict__", "_config", "_buffer"):
            continue
        assert getattr(started, name) == getattr(built, name), name
    assert started._buffer is not built._buffer
    assert started._buffer == built._buffer == bytearray()
