"""A server option is declared once, in its options class: the adapters' keywords are
held to its fields, and every keyword reaches the options."""

from __future__ import annotations

import dataclasses
import typing

import pytest

import smtpcore.asyncio
from smtpcore._driver._pop3_server import POP3ServerKeywords, POP3ServerOptions
from smtpcore._driver._smtp_server import ServerKeywords, ServerOptions
from smtpcore.handler import Handler
from smtpcore.maildrop import Maildrop, Mailstore, POP3Session


@pytest.mark.parametrize(
    ("keywords", "options"),
    [(ServerKeywords, ServerOptions), (POP3ServerKeywords, POP3ServerOptions)],
)
def test_keywords_are_the_options_fields(keywords: type, options: type) -> None:
    fields = {f.name: f.type for f in dataclasses.fields(options) if f.init}
    del fields["hostname"]  # the servers take it separately: None means this host's FQDN
    declared = typing.get_type_hints(keywords)
    assert set(declared) == set(fields)
    hints = typing.get_type_hints(options)
    assert {name: hints[name] for name in fields} == declared


def test_machine_limits_reach_the_machine() -> None:
    server = smtpcore.asyncio.SMTPServer(
        Handler(), hostname="mx.example", max_junk_commands=7, max_recipient_overshoot=3
    )
    conn = server.options.new_connection()
    assert (conn.max_junk_commands, conn.max_recipient_overshoot) == (7, 3)


class _NoMaildrops(Mailstore):
    async def open_maildrop(self, session: POP3Session, user: str) -> Maildrop:
        raise AssertionError("never opened")


def test_every_pop3_keyword_reaches_the_options() -> None:
    server = smtpcore.asyncio.POP3Server(_NoMaildrops(), hostname="pop.example", expire="NEVER")
    assert server.options.hostname == "pop.example"
    assert server.options.expire == "NEVER"
