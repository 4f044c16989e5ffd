"""`gateway.controlUi.*` in the schema and the reload plan: upstream's keys accepted, a bad base path named, and
an edit applied in place (no listener move, no worker touched) with upstream's "hot" hint."""

from __future__ import annotations

from openclaw_sup.config.plan import HINT_HOT, classify, decide, restart_hint
from openclaw_sup.config.schema import validate
from openclaw_sup.gateway.controlui import UiSettings, accepts_html, normalize_base_path, relative_path

BASE = {"gateway": {"mode": "local", "port": 18789}}


def with_ui(ui: dict) -> dict:
    return {"gateway": {**BASE["gateway"], "controlUi": ui}}


def test_upstream_keys_accepted_and_a_bad_base_path_named() -> None:
    ok = validate(with_ui({"enabled": True, "basePath": "/openclaw/", "root": "/srv/ui", "communityInvite": False,
                           "environment": {"label": "edge", "color": "amber"}, "automaticallyFetchFavicons": False,
                           "experimental": {"customPlugins": False}, "allowedOrigins": ["https://x.example"]}))
    assert ok.ok, ok.one_line()
    bad = validate(with_ui({"basePath": "/a/../b"}))
    assert not bad.ok and "gateway.controlUi.basePath" in bad.one_line() and "no \"..\"" in bad.one_line()
    assert "did you mean" in validate(with_ui({"enabeld": True})).one_line()


def test_a_control_ui_edit_is_applied_in_place() -> None:
    for mode in ("hybrid", "hot"):
        d = decide(mode, classify(with_ui({"enabled": True}), with_ui({"enabled": False, "basePath": "/ops"})))
        assert d.apply_in_place == ("gateway.controlUi",) and not d.rebind_listener and not d.not_applied
        assert d.workers.empty and d.summary() == "apply gateway.controlUi"
        assert restart_hint(d) == HINT_HOT
    assert decide("hybrid", classify(BASE, {"gateway": {**BASE["gateway"], "port": 1}})).rebind_listener


def test_settings_paths_and_accept() -> None:
    assert [normalize_base_path(v) for v in ("", "/", "openclaw", "/openclaw/", None)] == [
        "", "", "/openclaw", "/openclaw", ""]
    s = UiSettings.from_config({"gateway": {"controlUi": {"enabled": False, "root": "~/ui"}}})
    assert not s.enabled and s.root is not None and "~" not in str(s.root)
    assert UiSettings.from_config({}).enabled
    assert relative_path("/assets/app.js") == "assets/app.js"
    assert relative_path("/a/%2e%2e/b") is None and relative_path("/%2e%2e%2f") is None
    assert relative_path("/x%00y") is None and relative_path("/a%5cb") is None and relative_path("/%ff") is None
    assert accepts_html(None) and accepts_html("*/*") and accepts_html("text/*;q=0.5")
    assert not accepts_html("text/html;q=0, */*") and not accepts_html("application/json")
    assert accepts_html("application/json;q=0.9, text/html")
