"""The server's name: the machine's, taken for want of ``--hostname``, and the warning
when it is not a fully qualified domain name (RFC 5321 §4.1.1.1, §2.3.5).

Apart from the rest of the configuration because it asks the system (the resolver's
``getfqdn``), and the command line warns with it before any configuration is built.
Every public name is still imported from :mod:`smtpcore.server.config`.
"""

from __future__ import annotations

import ipaddress
import socket

from smtpcore.address import AddressError, normalize_host_name
from smtpcore.server._config_values import ConfigError

__all__ = ["default_hostname_warning", "machine_name", "server_hostname"]


def default_hostname_warning(hostname: str, option: str) -> str | None:
    """What to tell the operator when ``hostname``, the machine's name taken for want
    of ``option``, is not a fully qualified domain name (no dot, ``localhost``,
    ``localhost.localdomain`` or an IP address, as ``socket.getfqdn()`` gives on a host
    whose ``/etc/hosts`` lists ``127.0.0.1 localhost`` first), or is no domain name at
    all (:func:`server_hostname`); None when it is one.

    EHLO gives the client's fully qualified domain name (RFC 5321 §2.3.5, §4.1.1.1),
    and many servers refuse one that is not (Postfix's
    ``reject_non_fqdn_helo_hostname``); Postfix itself will not start without one."""
    name = hostname.rstrip(".").lower()
    try:
        ipaddress.ip_address(name)
    except ValueError:
        if "." in name and name != "localhost.localdomain":
            return _no_domain_warning(hostname, option)
    return (
        f"this machine's name {hostname!r}, used for want of {option}, is not a fully "
        f"qualified domain name, which EHLO must give (RFC 5321 §4.1.1.1): other servers "
        f"may refuse the mail; give {option} NAME"
    )


def _no_domain_warning(hostname: str, option: str) -> str | None:
    """The warning for a machine's name that is no domain name (``build!box``)."""
    try:
        normalize_host_name(hostname)
    except AddressError as exc:
        return (
            f"this machine's name {hostname!r}, used for want of {option}, is not a domain "
            f"name ({exc}), which the greeting and EHLO must give (RFC 5321 §4.1.1.1, "
            f"§4.2): other servers may refuse the mail; give {option} NAME"
        )
    return None


def machine_name() -> str:
    """This machine's fully qualified name, as the resolver knows it: the default name
    of a server that is given none."""
    return socket.getfqdn()


def server_hostname(hostname: str) -> str:
    """The name the mail server gives itself, in the form it is used everywhere: its
    greeting and EHLO reply, its ``Received`` lines, its relay's EHLO and its bounces'
    ``Reporting-MTA``. A :class:`ConfigError` naming ``--hostname`` if it is no domain.

    RFC 5321 §4.1.2, §4.2: a Domain of LDH labels (``_`` allowed, as Postfix allows it;
    see :func:`smtpcore.address.normalize_host_name`), a U-label converted to its A-label,
    since RFC 6531 allows UTF-8 only after SMTPUTF8 is agreed, which the greeting and
    our EHLO come before. Peers answer any other name with 501 and the mail defers
    until it bounces. This machine's own name, the default, which the operator did not
    choose, is kept as it is (``serve`` warns of it, see
    :func:`default_hostname_warning`), as one that is not fully qualified is: the
    library takes it (:mod:`smtpcore._hostname`), and a server that would not start
    for it helps no one.
    """
    try:
        return normalize_host_name(hostname)
    except AddressError as exc:
        if hostname == machine_name():
            return hostname
        raise ConfigError(f"--hostname: not a domain name: {hostname!r} ({exc})") from None
