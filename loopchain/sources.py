"""Who a caller is, for the bounds a server keeps per caller, from its network address alone:
an IPv4 address, an IPv6 address's /64 network (what one host is given, so that a host's many
addresses count as one), a link-local IPv6 address (with its zone) alone."""

from __future__ import annotations

import ipaddress


def host_source(host: str) -> str:
    """The source of a caller at IP address `host` (brackets and zone allowed); `host` as it is
    when it is not an IP address (a unix socket's path, a name)."""
    text = host.strip("[]")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    if ip.ipv4_mapped is not None:  # an IPv4 caller of a dual-stack port
        return str(ip.ipv4_mapped)
    if ip.is_link_local:  # fe80::/64 is every link's: each such address is a host's own
        return str(ip)
    return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
