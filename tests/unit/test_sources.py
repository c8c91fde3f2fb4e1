"""Who a caller is for per-caller bounds (loopchain.sources.host_source), from the address forms
aiohttp's request.remote and gRPC's peer strings give: an IPv6 host's addresses in one /64 are one
caller (websocket monitors counted each address apart: a host cycling its addresses held them
all, review)."""

from __future__ import annotations

import pytest

from loopchain.sources import host_source


@pytest.mark.parametrize(
    ("remote", "source"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:1", "2001:db8::/64"),
        ("[2001:db8:0:1::1]", "2001:db8:0:1::/64"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("::1", "::/64"),
        ("", ""),
        ("/tmp/loopchain-peer/peer.sock", "/tmp/loopchain-peer/peer.sock"),
    ],
)
def test_a_caller_is_its_ipv4_address_or_its_ipv6_hosts_network(remote: str, source: str) -> None:
    assert host_source(remote) == source
