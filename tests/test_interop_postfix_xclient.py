"""Our clients' XCLIENT and XFORWARD to Postfix's smtpd (issue 16): a private Postfix
(its own config, queue, loopback port and master, stopped by its PID; see
private_postfix.py) trusts 127.0.0.1 with ``smtpd_authorized_xclient_hosts`` and
``smtpd_authorized_xforward_hosts``. Postfix must then judge and log the session as
the client XCLIENT named, and log the up-stream client XFORWARD passed on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from peers import module, run
from private_postfix import PrivatePostfix, private_postfix
from smtpcore.smtp import Xclient, Xforward

pytestmark = pytest.mark.interop

MESSAGE = b"Subject: via a proxy\r\n\r\nnamed by XCLIENT\r\n"


@pytest.fixture(scope="module")
def postfix() -> Iterator[PrivatePostfix]:
    main_cf = {
        "smtpd_authorized_xclient_hosts": "127.0.0.1",
        "smtpd_authorized_xforward_hosts": "127.0.0.1",
        "smtpd_client_port_logging": "yes",
    }
    with private_postfix(main_cf=main_cf) as instance:
        yield instance


def logged(postfix: PrivatePostfix, text: str) -> str:
    """Postfix's log once it holds ``text`` (postlogd writes it a moment later)."""
    for _ in range(200):
        log = postfix.log()
        if text in log:
            return log
        time.sleep(0.05)
    return postfix.log()


def test_postfix_takes_the_client_xclient_names(postfix: PrivatePostfix, adapter: str) -> None:
    smtp = module(adapter)
    address = "192.0.2.7" if adapter == "asyncio" else "192.0.2.8"

    async def go() -> Any:
        async with smtp.SMTPClient(
            postfix.host, postfix.port, starttls=False, hostname="filter.test"
        ) as client:
            announced = client.connection.extensions.xclient
            assert {"NAME", "ADDR", "PORT", "PROTO", "HELO"} <= announced
            greeting = await client.xclient(
                Xclient(
                    name="mail.abc.example",
                    addr=address,
                    port=40312,
                    proto="ESMTP",
                    helo="helo.abc.example",
                )
            )
            assert greeting.code == 220
            assert client.connection.extensions  # EHLO said again
            # Postfix now judges relaying by the named client, which is not in
            # mynetworks: mail for a domain it does not relay for is refused...
            with pytest.raises(smtp.RecipientsRefused) as refused:
                await client.send_message(MESSAGE, "a@abc.example", ["x@elsewhere.example"])
            assert refused.value.code == 554, refused.value
            # ...and mail for its relay domain taken.
            return await client.send_message(MESSAGE, "a@abc.example", ["b@smtpcore.test"])

    result = run(adapter, go)
    assert result.delivered
    line = f"client=mail.abc.example[{address}]:40312"
    log = logged(postfix, line)
    assert line in log, log
    assert "from=<a@abc.example>" in log
    assert "Relay access denied; from=<a@abc.example> to=<x@elsewhere.example>" in log
    assert "helo=<helo.abc.example>" in log, log


def test_postfix_logs_what_xforward_passes_on(postfix: PrivatePostfix, adapter: str) -> None:
    smtp = module(adapter)
    ident = f"UPSTREAM{adapter.upper()}"

    async def go() -> Any:
        async with smtp.SMTPClient(postfix.host, postfix.port, starttls=False) as client:
            assert {"NAME", "ADDR", "IDENT"} <= client.connection.extensions.xforward
            return await client.send_message(
                MESSAGE,
                "a@abc.example",
                ["b@smtpcore.test"],
                xforward=Xforward(
                    name="up.abc.example",
                    addr="192.0.2.9",
                    port=2525,
                    ident=ident,
                    source="REMOTE",
                ),
            )

    assert run(adapter, go).delivered
    line = f"orig_queue_id={ident}"
    log = logged(postfix, line)
    assert line in log and "orig_client=up.abc.example[192.0.2.9]" in log, log
