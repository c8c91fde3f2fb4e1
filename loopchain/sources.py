"""Network addresses: who a caller is, for the bounds a server keeps per caller, from its
address alone (an IPv4 address, an IPv6 address's /64 network: what one host is given, so that a
host's many addresses count as one; a link-local IPv6 address with its zone alone), and which
targets a node may be dialed at (`is_target`)."""

from __future__ import annotations

import ipaddress
import re


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


# host:port as a node is dialed by: a host name or IPv4 address (letters, digits, '.', '-', '_'),
# or an IPv6 address in brackets, and a port of ASCII digits. Nothing else: gRPC reads a target
# with a scheme ("unix:/path:1", "dns:///x:1", "xds:///x:1", "ipv4:...") as a URI, so such a
# target had the RadioStation dial local sockets and resolvers a registering stranger chose (and
# gRPC's core log an ERROR for each it could not parse); a port of other digits ("²") made int()
# raise, answered UNKNOWN with a traceback. A host name is of labels of 1 to 63 characters (as
# DNS has them), 253 characters at most: a longer or an empty label ("a..b") is no name a resolver
# takes, and Python's raised UnicodeError for it where an OSError was caught (answered UNKNOWN).
_LABEL = r"[A-Za-z0-9_-]{1,63}"
_HOST = rf"(?=[A-Za-z0-9_])(?:{_LABEL}\.)*{_LABEL}\.?"
_TARGET = re.compile(rf"({_HOST}|\[[0-9A-Fa-f:.]{{2,45}}\]):([0-9]{{1,5}})")
MAX_HOST_CHARS = 253


def is_target(text: str) -> bool:
    """True when `text` is host:port (a host name, an IPv4 address or an IPv6 address in
    brackets; a port in 1..65535 in ASCII digits)."""
    match = _TARGET.fullmatch(text)
    return (
        match is not None
        and len(match.group(1)) <= MAX_HOST_CHARS
        and 0 < int(match.group(2)) < 65536
    )
