"""Where the REST proxy reaches its peer: the peer's own listener, wherever IP_LOCAL puts it."""

from __future__ import annotations

import pytest

from loopchain.configure import load_config
from loopchain.rest.main import peer_target_of


@pytest.mark.parametrize(
    ("ip_local", "target"),
    [
        ("127.0.0.1", "127.0.0.1:7100"),
        ("10.213.7.10", "10.213.7.10:7100"),  # a peer bound to one address is not on loopback
        ("0.0.0.0", "127.0.0.1:7100"),
        ("::", "127.0.0.1:7100"),
        ("fd00::10", "[fd00::10]:7100"),
    ],
)
def test_the_proxy_calls_the_address_its_peer_listens_on(ip_local: str, target: str) -> None:
    config = load_config(None, environ={}, overrides={"IP_LOCAL": ip_local, "PORT_PEER": 7100})
    assert peer_target_of(config) == target


def test_with_mutual_tls_the_proxy_uses_the_peers_plain_loopback_port() -> None:
    overrides = {"IP_LOCAL": "10.213.7.10", "PORT_PEER": 7100, "GRPC_SSL_TYPE": 2}
    config = load_config(None, environ={}, overrides=overrides)
    assert peer_target_of(config) == "127.0.0.1:17100"
