"""Every method's params, table-driven: each field sent with a wrong type answers INVALID_REQUEST naming the
method and the field, never an internal error; and every method the gateway serves has a params entry."""

from __future__ import annotations

from typing import Any

import pytest
from test_gateway_protocol import client, gw_config

from conftest import Gateway
from openclaw_sup.gateway import methods
from openclaw_sup.gateway.client import GatewayError
from openclaw_sup.gateway.params import PARAMS, Kind

pytestmark = pytest.mark.live

WRONG = [True, 12345, -7, 1.5, "x", "", None, [], ["a"], {}, {"a": 1}]


def wrong_value(kind: Kind) -> Any:
    return next(v for v in WRONG if not kind.ok(v))


def served_methods(g: Gateway) -> set[str]:
    """What the code serves: the method table of gateway/methods.py and what hello-ok advertises."""
    c = client(g)
    hello = c.connect()
    c.close()
    table = getattr(methods, "METHODS", None) or methods.SCOPES
    return set(table) | set(hello["features"]["methods"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory) -> Any:
    g = Gateway(tmp_path_factory.mktemp("params"), {"workers": {"scheduler": {"kind": "fake_owner"},
                                                                "agent": {"kind": "fake_owner"}}},
                config=gw_config())
    g.start()
    yield g
    g.stop()


def test_every_served_method_has_a_params_entry(gw: Gateway) -> None:
    missing = sorted(served_methods(gw) - set(PARAMS))
    assert not missing, f"methods served without a params entry in gateway/params.py: {missing}"


def test_a_wrong_type_in_any_field_of_any_method_names_the_field(gw: Gateway) -> None:
    c = client(gw, scopes=["operator.admin"])
    c.connect()
    checked = 0
    for method in sorted(served_methods(gw)):
        for field, kind in PARAMS[method].items():
            value = wrong_value(kind)
            with pytest.raises(GatewayError) as info:
                c.request(method, {field: value})
            err = info.value.error
            assert err["code"] == "INVALID_REQUEST", (method, field, err)
            assert err["message"].startswith(f"invalid {method} params: {field} must be {kind.what}"), (method, err)
            assert err["details"] == {"field": field}
            checked += 1
    assert checked > 100
    assert "internal error" not in gw.log_text()
    assert not [r for r in gw.log_lines() if r["level"] == "error" and "failed:" in r["message"]]


def test_channels_status_with_a_text_timeout(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    with pytest.raises(GatewayError) as info:
        c.request("channels.status", {"timeoutMs": "soon"})
    assert info.value.error["message"] == ("invalid channels.status params: timeoutMs must be a non-negative integer "
                                           "(got a string)")
    assert c.request("channels.status", {"timeoutMs": 500})["channelOrder"] == []


def test_params_that_are_not_an_object_are_refused(gw: Gateway) -> None:
    c = client(gw)
    c.connect()
    for params in ([1], "x", 3):
        with pytest.raises(GatewayError) as info:
            c.request("health", params)  # type: ignore[arg-type]
        assert info.value.error["message"] == "invalid params for health: expected an object"
