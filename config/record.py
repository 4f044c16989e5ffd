"""`@record`: a dataclass whose methods are shared, not written and compiled for each class.

`@dataclass` generates the source of `__init__`, `__repr__`, `__eq__`, `__hash__` (and, frozen, `__setattr__` and
`__delattr__`) for every class and compiles it: about a millisecond of CPU a class, paid at import by the supervisor,
the fork server and every process started from scratch, for classes that are only records. A record is still a
dataclass (`dataclasses.fields`, `replace`, `asdict` and `field(...)` work unchanged); its methods read the
class's field table instead, with the same behaviour as the generated ones. Not supported (refused at
definition): `__post_init__`, `InitVar`, keyword-only fields; use `@dataclass` for those.
"""

from __future__ import annotations

from dataclasses import MISSING, FrozenInstanceError, dataclass, field, fields
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T", bound=type)

_INIT = "__record_init__"
_COMPARED = "__record_compared__"
_SHOWN = "__record_shown__"


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    spec, rest = getattr(cls, _INIT)
    if len(args) > len(spec):
        raise TypeError(f"{cls.__qualname__}.__init__() takes {len(spec) + 1} positional arguments but "
                        f"{len(args) + 1} were given")
    assign = object.__setattr__ if cls.__dataclass_params__.frozen else setattr
    for i, (name, default, factory) in enumerate(spec):
        if i < len(args):
            if name in kwargs:
                raise TypeError(f"{cls.__qualname__}.__init__() got multiple values for argument '{name}'")
            value = args[i]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif default is not MISSING:
            value = default
        elif factory is not MISSING:
            value = factory()
        else:
            raise TypeError(f"{cls.__qualname__}.__init__() missing 1 required positional argument: '{name}'")
        assign(self, name, value)
    if kwargs:
        raise TypeError(f"{cls.__qualname__}.__init__() got an unexpected keyword argument '{next(iter(kwargs))}'")
    for name, default, factory in rest:
        assign(self, name, default if factory is MISSING else factory())


def _repr(self: Any) -> str:
    cls = type(self)
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in getattr(cls, _SHOWN))
    return f"{cls.__qualname__}({shown})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names = getattr(type(self), _COMPARED)
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in type(self).__record_hashed__))


def _frozen_setattr(self: Any, name: str, value: Any) -> None:  # any name, as for the class @dataclass froze
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@overload
def record(cls: T, /) -> T:
    ...


@overload
def record(*, frozen: bool = False) -> Any:
    ...


@dataclass_transform(field_specifiers=(field,))
def record(cls: Any = None, /, *, frozen: bool = False) -> Any:
    """Like `@dataclass` / `@dataclass(frozen=True)`: `__init__`, `__repr__`, `__eq__`, and `__hash__` when frozen
    (unhashable otherwise), assignment refused when frozen."""
    if cls is None:
        return lambda c: _make(c, frozen)
    return _make(cls, frozen)


def _make(cls: T, frozen: bool) -> T:
    if "__post_init__" in cls.__dict__:
        raise TypeError(f"{cls.__qualname__}: a record has no __post_init__ (use @dataclass)")
    for name in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__"):
        if name in cls.__dict__ and not (name == "__hash__" and cls.__dict__[name] is None):
            raise TypeError(f"{cls.__qualname__} defines {name}: a record writes its own (use @dataclass)")
    if cls.__doc__ is None:
        cls.__doc__ = cls.__name__
    cls = dataclass(init=False, repr=False, eq=False, frozen=False)(cls)
    params = cls.__dataclass_params__  # this class's own; its constructor's arguments differ between versions
    params.init = params.repr = params.eq = True
    params.frozen = frozen
    own = fields(cls)
    if len(own) != len(cls.__dataclass_fields__) or any(f.kw_only is True for f in own):
        raise TypeError(f"{cls.__qualname__}: InitVar and keyword-only fields are not supported by @record")
    setattr(cls, _INIT, (tuple((f.name, f.default, f.default_factory) for f in own if f.init),
                         tuple((f.name, f.default, f.default_factory) for f in own if not f.init
                               and (f.default is not MISSING or f.default_factory is not MISSING))))
    setattr(cls, _SHOWN, tuple(f.name for f in own if f.repr))
    setattr(cls, _COMPARED, tuple(f.name for f in own if f.compare))
    cls.__init__ = _init
    cls.__repr__ = _repr
    cls.__eq__ = _eq
    if frozen:
        cls.__record_hashed__ = tuple(f.name for f in own if (f.compare if f.hash is None else f.hash))
        cls.__hash__ = _hash
        cls.__setattr__ = _frozen_setattr
        cls.__delattr__ = _frozen_delattr
    else:
        cls.__hash__ = None
    return cls
