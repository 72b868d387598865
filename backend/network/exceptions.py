"""The network driver's errors, and the one mapping of netlink's errnos to them.

::

    NetworkError (exit_status 1)
    ├── BadRequest (64)       a desired state that cannot be built (a device name taken by a
    │                         foreign link, a VNI reused within one body)
    ├── LinkExists            the kernel already has a link of that name
    ├── LinkNotFound          no such link (or namespace) where it was looked for
    ├── KernelUnsupported     the kernel lacks a kind or feature (a module not loaded)
    ├── DhcpError             dnsmasq would not start or stay up
    └── FirewallError         iptables, an ipset or conntrack refused a change of the firewall

Handlers turn a ``NetworkError`` into an ``OpError`` with its ``exit_status``.
"""

from __future__ import annotations

import errno

__all__ = ["BadRequest", "DhcpError", "FirewallError", "KernelUnsupported", "LinkExists", "LinkNotFound",
           "NetworkError", "from_errno"]


class NetworkError(Exception):
    exit_status = 1


class BadRequest(NetworkError):
    exit_status = 64


class LinkExists(NetworkError):
    pass


class LinkNotFound(NetworkError):
    pass


class KernelUnsupported(NetworkError):
    pass


class DhcpError(NetworkError):
    pass


class FirewallError(NetworkError):
    pass


def from_errno(code: int, message: str, what: str) -> NetworkError:
    """The named error for a failed netlink call on ``what``."""
    text = f"{what}: {message} (errno {code})"
    if code == errno.EEXIST:
        return LinkExists(text)
    if code in (errno.ENODEV, errno.ENOENT):
        return LinkNotFound(text)
    if code in (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
        return KernelUnsupported(text)
    return NetworkError(text)
