"""One duration grammar: every value the schema accepts is parsed by the heartbeat and the scheduler, and every
value it refuses is refused there too, with a message that names the value and the fix."""

from __future__ import annotations

import itertools

import pytest

from openclaw_sup.config.durations import DurationError, parse_duration_ms
from openclaw_sup.config.schema import validate
from openclaw_sup.workers.scheduler import heartbeat
from openclaw_sup.workers.scheduler.schedule import ScheduleError, normalize
from openclaw_sup.workers.scheduler.timeparse import parse_instant_ms

MIN, HOUR = 60_000, 3_600_000


def schema_accepts(every: str) -> bool:
    cfg = {"agents": {"defaults": {"heartbeat": {"every": every}}}}
    return not [i for i in validate(cfg).errors if i.path.endswith("heartbeat.every")]


def heartbeat_every_ms(every: str) -> int | None:
    try:
        spec = heartbeat.resolve({"every": every}, None)
    except ValueError:
        return None
    return next(iter(spec.values())).every_ms if spec else 0


def corpus() -> list[str]:
    """Every string of up to 4 symbols over digits, a dot, the unit letters and a blank, plus known cases."""
    alphabet = ["1", "0", "5", ".", "m", "s", "h", "d", "w", " ", "ms"]
    made = {"".join(p) for n in range(1, 5) for p in itertools.product(alphabet, repeat=n)}
    return sorted(made | {"1h30m", "2m30s", "1d2h3m4s5ms", "1H30M", " 20m ", "2w", "1h30", "30m1", "1.5h"})


def test_schema_and_runtime_agree_on_every_string() -> None:
    disagreements = []
    for text in corpus():
        accepted, parsed = schema_accepts(text), heartbeat_every_ms(text)
        if accepted != (parsed is not None):
            disagreements.append((text, accepted, parsed))
    assert not disagreements, disagreements[:20]


@pytest.mark.parametrize(("text", "ms"), [
    ("1h30m", 90 * MIN), ("2m30s", 150_000), ("500ms", 500), ("0m", 0), ("20", 20 * MIN), ("1.5h", 90 * MIN),
    (" 1H ", HOUR), ("1d2h", 26 * HOUR), ("1m500ms", MIN + 500),
])
def test_values_upstream_accepts(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms
    assert schema_accepts(text)


@pytest.mark.parametrize("text", ["2w", "1h30", "30m1", "1 h", "h", "", "-5m", "1h-30m", "soon", "1.h"])
def test_values_upstream_refuses(text: str) -> None:
    with pytest.raises(DurationError, match=r"invalid duration .*e\.g\. 30s, 20m, 1h30m"):
        parse_duration_ms(text)
    assert not schema_accepts(text)
    assert heartbeat_every_ms(text) is None


def test_cron_every_and_at_use_the_same_grammar() -> None:
    assert normalize({"kind": "every", "every": "1h30m"}, 0)["everyMs"] == 90 * MIN
    with pytest.raises(ScheduleError, match="a unit is required"):
        normalize({"kind": "every", "every": "90"}, 0)
    with pytest.raises(ScheduleError, match="invalid duration '2w'"):
        normalize({"kind": "every", "every": "2w"}, 0)
    assert parse_instant_ms("+1h30m", 1000) == 1000 + 90 * MIN
    assert parse_instant_ms("20m", 0) == 20 * MIN
