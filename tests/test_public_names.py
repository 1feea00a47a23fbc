"""The public names ../shared/DESIGN.md promises, importable from where it lists them."""

from __future__ import annotations

import importlib

import pytest

PUBLIC_NAMES = {
    "smtpcore": [
        "NEED_DATA",
        "PAUSED",
        "ProtocolError",
        "LocalProtocolError",
        "RemoteProtocolError",
        "__version__",
    ],
    "smtpcore.address": ["Mailbox", "parse_mailbox", "parse_path"],
    "smtpcore.smtp": [
        "ServerConnection",
        "ClientConnection",
        "Ehlo",
        "Helo",
        "Lhlo",
        "Mail",
        "Rcpt",
        "Data",
        "Bdat",
        "Rset",
        "Noop",
        "Quit",
        "Vrfy",
        "Expn",
        "Help",
        "StartTls",
        "Auth",
        "AuthResponse",
        "MessageData",
        "EndOfMessage",
        "Reply",
        "EnhancedStatus",
        "BadCommand",
        "ConnectionClosed",
    ],
    "smtpcore.pop3": [
        "ServerConnection",
        "ClientConnection",
        "User",
        "Pass",
        "Apop",
        "Auth",
        "Capa",
        "Stls",
        "Stat",
        "List",
        "Retr",
        "Dele",
        "Noop",
        "Rset",
        "Top",
        "Uidl",
        "Quit",
        "Utf8",
        "Ok",
        "Err",
        "ResponseData",
        "EndOfResponse",
        "ConnectionClosed",
    ],
    "smtpcore.routing": [
        "Router",
        "LocalDelivery",
        "RemoteDelivery",
        "Rejected",
        "MXRecord",
        "Resolver",
        "StaticResolver",
        "order_exchangers",
    ],
}

MACHINE_METHODS = ["receive_data", "next_event", "send", "send_failed", "tls_started", "state"]


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, names in PUBLIC_NAMES.items() for name in names],
)
def test_public_name_is_importable_and_exported(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    assert hasattr(imported, name)
    if name != "__version__":
        assert name in imported.__all__


@pytest.mark.parametrize("module", ["smtpcore.smtp", "smtpcore.pop3"])
@pytest.mark.parametrize("role", ["ServerConnection", "ClientConnection"])
def test_machines_have_the_four_verbs(module: str, role: str) -> None:
    machine = getattr(importlib.import_module(module), role)
    for method in MACHINE_METHODS:
        assert hasattr(machine, method), f"{module}.{role}.{method}"


@pytest.mark.parametrize(
    "mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "XOAUTH2", "OAUTHBEARER"]
)
def test_one_client_and_one_server_class_per_sasl_mechanism(mechanism: str) -> None:
    sasl = importlib.import_module("smtpcore.sasl")
    assert sasl.CLIENT_MECHANISMS[mechanism].name == mechanism
    assert sasl.SERVER_MECHANISMS[mechanism].name == mechanism


def test_sentinels_are_enum_members() -> None:
    import enum

    import smtpcore

    assert isinstance(smtpcore.NEED_DATA, enum.Enum)
    assert isinstance(smtpcore.PAUSED, enum.Enum)
