"""Checked by the suite's ``mypy --strict`` run, never executed: every client
option is a typed keyword, so a misspelt or mistyped one is an error.

Each ``type: ignore`` below must be needed: ``--strict`` turns on
``warn_unused_ignores``, so if the call it sits on ever type-checks (an
option typed ``Any`` again), mypy fails the suite.
"""

from __future__ import annotations

import asyncio

from typing_extensions import assert_type

import smtpcore.asyncio
import smtpcore.sync
import smtpcore.trio
from smtpcore.smtp import TransactionResult
from smtpcore.transport import Transport


async def asyncio_options() -> TransactionResult:
    await smtpcore.asyncio.send_message(
        b"x", "a@b.example", "c@d.example", host="h", starttls=True
    )
    await smtpcore.asyncio.send_message(
        b"x",
        "a@b.example",
        "c@d.example",
        host="h",
        start_tls=True,  # type: ignore[call-arg]
    )
    return await smtpcore.asyncio.send_message(
        b"x",
        "a@b.example",
        "c@d.example",
        host="h",
        lmtp="yes",  # type: ignore[arg-type]
    )


async def trio_options() -> TransactionResult:
    await smtpcore.trio.send_message(b"x", "a@b.example", "c@d.example", host="h", usrname="u")  # type: ignore[call-arg]
    return await smtpcore.trio.send_message(
        b"x", "a@b.example", "c@d.example", host="h", mail_params={"RET": "HDRS"}
    )


def sync_options() -> TransactionResult:
    smtpcore.sync.send_message(b"x", "a@b.example", "c@d.example", host="h", timeuot=5)  # type: ignore[call-arg]
    with smtpcore.sync.SMTPClient("h", pasword="p") as client:  # type: ignore[call-arg]
        client.noop()
    return smtpcore.sync.send_message(b"x", "a@b.example", "c@d.example", host="h", timeout=5)


def sync_pop3_options() -> None:
    smtpcore.sync.POP3Client("h", stls=True, pipelining=None).close()
    smtpcore.sync.POP3Client("h", tls=True).close()  # type: ignore[call-arg]


def stream_options(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    smtpcore.asyncio.SMTPClient.over_stream(reader, writer, host="mx.test", lmtp=True)
    smtpcore.asyncio.SMTPClient.over_stream(reader, writer, lmpt=True)  # type: ignore[call-arg]
    smtpcore.trio.POP3Client.over_unix_socket("/run/pop3", stsl=False)  # type: ignore[call-arg]


def transport_options(transport: Transport) -> None:
    assert_type(
        smtpcore.trio.SMTPClient.over_transport(transport, hostname="c.test"),
        smtpcore.trio.SMTPClient,
    )
    assert_type(
        smtpcore.asyncio.POP3Client.over_unix_socket("/run/pop3"), smtpcore.asyncio.POP3Client
    )
    smtpcore.asyncio.POP3Client.over_transport(transport, lmtp=True)  # type: ignore[call-arg]
