"""`@record` behaves as `@dataclass` does for the records that use it (config/record.py)."""

from __future__ import annotations

import dataclasses
import pickle
from dataclasses import FrozenInstanceError, asdict, field, fields, replace
from typing import Any

import pytest

from openclaw_sup.config.record import record


def _pair(frozen: bool) -> tuple[type, type]:
    def body() -> dict[str, Any]:
        return {"__annotations__": {"name": "str", "port": "int", "tags": "list[str]", "secret": "str | None"},
                "port": 80, "tags": field(default_factory=list), "secret": field(default=None, repr=False)}

    ours = record(frozen=frozen)(type("Rec", (), body()))
    stdlib = dataclasses.dataclass(frozen=frozen)(type("Rec", (), body()))
    return ours, stdlib


@pytest.mark.parametrize("frozen", [True, False])
def test_construction_repr_and_equality_match_dataclass(frozen: bool) -> None:
    for args, kwargs in [(("a",), {}), (("a", 1), {"secret": "s"}), ((), {"name": "b", "tags": ["x"]})]:
        ours, stdlib = (cls(*args, **kwargs) for cls in _pair(frozen))
        assert repr(ours) == repr(stdlib)
        assert asdict(ours) == asdict(stdlib)
        assert [f.name for f in fields(ours)] == [f.name for f in fields(stdlib)]
    cls, _ = _pair(frozen)
    assert cls("a") == cls("a", 80, [])
    assert cls("a") != cls("a", 81)
    assert cls("a").__eq__(object()) is NotImplemented
    assert cls("a").tags is not cls("a").tags  # a fresh default from the factory each time
    assert replace(cls("a", secret="s"), port=9) == cls("a", 9, secret="s")


@pytest.mark.parametrize("frozen", [True, False])
def test_bad_arguments_fail_as_dataclass_does(frozen: bool) -> None:
    cls, _ = _pair(frozen)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'name'"):
        cls()
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        cls("a", nope=1)
    with pytest.raises(TypeError, match="multiple values for argument 'name'"):
        cls("a", name="b")
    with pytest.raises(TypeError, match="takes 5 positional arguments but 6 were given"):
        cls("a", 1, [], None, "extra")


def test_frozen_record_refuses_changes_and_hashes_like_dataclass() -> None:
    ours_cls, stdlib_cls = _pair(True)
    rec = ours_cls("a", 1, (), "s")
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'port'"):
        rec.port = 2
    with pytest.raises(FrozenInstanceError):
        del rec.name
    assert hash(rec) == hash(stdlib_cls("a", 1, (), "s"))
    assert {rec, ours_cls("a", 1, (), "s")} == {rec}
    assert ours_cls.__dataclass_params__.frozen


def test_mutable_record_assigns_and_is_unhashable() -> None:
    cls, _ = _pair(False)
    rec = cls("a")
    rec.port = 8080
    assert rec == cls("a", 8080)
    with pytest.raises(TypeError, match="unhashable"):
        hash(rec)


@record(frozen=True)
class Limits:
    """A module-level record: picklable like a dataclass."""

    low: int = 1
    high: int = 2


def test_record_pickles_and_keeps_its_docstring() -> None:
    assert pickle.loads(pickle.dumps(Limits(3))) == Limits(3, 2)
    assert Limits.__doc__.startswith("A module-level record")


def test_unsupported_dataclass_features_are_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="__post_init__"):
        @record
        class WithPostInit:
            x: int = 0

            def __post_init__(self) -> None:
                pass
    with pytest.raises(TypeError, match="defines __repr__"):
        @record
        class WithRepr:
            x: int = 0

            def __repr__(self) -> str:
                return "x"
    with pytest.raises(TypeError, match="keyword-only"):
        @record
        class WithKwOnly:
            x: int = field(default=0, kw_only=True)
