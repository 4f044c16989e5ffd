"""Listener address per `gateway.bind`, the unauthenticated-exposure guard, derived ports."""

from __future__ import annotations

import pytest

from openclaw_sup.config.paths import derived_ports
from openclaw_sup.gateway import bind


def test_bind_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert bind.resolve_host({}) == "127.0.0.1"
    assert bind.resolve_host({"bind": "loopback"}) == "127.0.0.1"
    assert bind.resolve_host({"bind": "lan"}) == "0.0.0.0"
    assert bind.resolve_host({"bind": "custom", "customBindHost": "10.1.2.3"}) == "10.1.2.3"
    monkeypatch.setattr(bind, "_in_container", lambda: False)
    assert bind.resolve_host({"bind": "auto"}) == "127.0.0.1"
    monkeypatch.setattr(bind, "_in_container", lambda: True)
    assert bind.resolve_host({"bind": "auto"}) == "0.0.0.0"
    monkeypatch.setattr(bind, "_tailnet_ipv4", lambda: None)
    assert bind.resolve_host({"bind": "tailnet"}) == "127.0.0.1"
    monkeypatch.setattr(bind, "_tailnet_ipv4", lambda: "100.101.102.103")
    assert bind.resolve_host({"bind": "tailnet"}) == "100.101.102.103"


@pytest.mark.parametrize("host", ["localhost", "0.0.0.0.1", None, "::1"])
def test_custom_bind_needs_an_ipv4_address(host: object) -> None:
    with pytest.raises(bind.BindRefused, match="customBindHost"):
        bind.resolve_host({"bind": "custom", "customBindHost": host})


def test_guard_refuses_exposure_without_auth() -> None:
    bind.guard("127.0.0.1", 18789, has_shared_secret=False)
    bind.guard("0.0.0.0", 18789, has_shared_secret=True)
    with pytest.raises(bind.BindRefused, match=r"refusing to bind gateway to 0\.0\.0\.0:18789 without auth"):
        bind.guard("0.0.0.0", 18789, has_shared_secret=False)


def test_derived_ports_shift_with_the_gateway_port() -> None:
    assert derived_ports(18789) == {"browserControl": 18791, "cdpFirst": 18800, "cdpLast": 18899}
    assert derived_ports(19001) == {"browserControl": 19003, "cdpFirst": 19012, "cdpLast": 19111}
