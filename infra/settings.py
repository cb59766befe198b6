"""Typed settings: one generic loader from plain mappings (params.yaml sections) into frozen dataclasses.

A settings class is a frozen dataclass whose annotations say what each value may be:

    @dataclass(frozen=True)
    class BlurConfig:
        kernel_size: Annotated[int, odd, at_least(1)] = 101
        sigma: Annotated[float, above(0)] | None = None

`load(BlurConfig, {"kernel_size": 51}, "anonymisers.blur")` checks every key against its
annotation and rejects keys the class does not have; every error is a `ParamsError` naming the
dotted key (`anonymisers.blur.kernel_size must be odd; got 50`). Supported annotations: bool, int,
float (ints accepted), str, `Literal[...]` choices, `X | None`, `tuple[X, ...]` / `tuple[X, Y]`
(from YAML lists), `list[X]`, `dict[str, X]` (keys may carry checks too: `dict[Annotated[str, slug], X]`),
nested settings classes, and `Annotated[X, *checks]`.
A missing key takes the field's default; a field with `metadata={"params": False}` is derived
from data, not settable. Checks that involve several fields live in the class's
`__post_init__` and raise `FieldError(field, message)`, which the loader also prefixes with the
section's dotted name.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from infra.errors import ParamsError


@dataclass(frozen=True)
class Check:
    """A constraint on a value: `test(value)` must hold; `text` completes "<key> must be ...". """

    test: Callable[[Any], bool]
    text: str


def at_least(minimum: float) -> Check:
    return Check(lambda value: value >= minimum, f">= {minimum}")


def above(minimum: float) -> Check:
    return Check(lambda value: value > minimum, f"> {minimum}")


def between(low: float, high: float) -> Check:
    return Check(lambda value: low <= value <= high, f"in [{low}, {high}]")


def _is_slug(value: str) -> bool:
    return re.fullmatch(r"[a-z0-9_-][a-z0-9._-]*", value) is not None and ".." not in value


#: A name that becomes part of a path (a method's output folder, a model folder): it can never leave that folder.
slug = Check(_is_slug, "a plain name (lower-case letters, digits, '.', '_' and '-', not starting with '.', no '..')")
odd = Check(lambda value: value % 2 == 1, "odd")
even = Check(lambda value: value % 2 == 0, "even")
#: A probability or share.
unit_interval = between(0.0, 1.0)


class FieldError(ParamsError):
    """Raised by a settings class's `__post_init__`: `field` is the key it blames."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field} {message}")
        self.field, self.message = field, message


def load(cls: type, mapping: Any, where: str) -> Any:
    """An instance of the settings class `cls` from `mapping`, every value checked (see module doc)."""
    if not isinstance(mapping, Mapping):
        raise ParamsError(f"{where} must be a mapping of settings; got {mapping!r}")
    hints = _hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls)
              if field.init and field.metadata.get("params", True)}
    unknown = sorted(set(map(str, mapping)) - set(fields))
    if unknown:
        known = ", ".join(fields) or "no settings"
        raise ParamsError(f"{join(where, unknown[0])} is not a setting; {where or 'params.yaml'} has {known}")
    values = {}
    for name, field in fields.items():
        if name in mapping:
            values[name] = convert(hints[name], mapping[name], join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{join(where, name)} is missing")
    try:
        return cls(**values)
    except FieldError as error:
        raise ParamsError(f"{join(where, error.field)} {error.message}") from None


def join(where: str, key: str) -> str:
    """The dotted name of `key` inside section `where` ("" is the top level)."""
    return f"{where}.{key}" if where else key


def convert(annotation: Any, value: Any, where: str) -> Any:
    """`value` checked against `annotation` and converted (lists to tuples, ints to floats, ...)."""
    checks: tuple = ()
    if typing.get_origin(annotation) is Annotated:
        annotation, *extras = typing.get_args(annotation)
        checks = tuple(extra for extra in extras if isinstance(extra, Check))
    result = _convert(annotation, value, where)
    for check in checks:
        if result is not None and not check.test(result):
            raise ParamsError(f"{where} must be {check.text}; got {value!r}")
    return result


def describe(annotation: Any) -> str:
    """What a value of this annotation looks like, for messages."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        checks = [extra.text for extra in args[1:] if isinstance(extra, Check)]
        return " and ".join([describe(args[0]), *checks])
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if arg is type(None) else describe(arg) for arg in args)
    if origin in (tuple, list):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def _convert(annotation: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        for option in options:
            try:
                return convert(option, value, where)
            except ParamsError:
                if len(options) == 1 and _has_type(option, value):
                    raise  # the right kind of value failing a check: that check's message says more
        raise ParamsError(f"{where} must be {describe(annotation)}; got {value!r}")
    if origin is Annotated:
        return convert(annotation, value, where)
    if origin is Literal:
        # bool is an int in Python: `true` must not pass for a choice of 1.
        if any(value == arg and type(value) is type(arg) for arg in args):
            return value
        raise ParamsError(f"{where} must be {describe(annotation)}; got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where} must be a list; got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise ParamsError(f"{where} must be a list of {len(args)} values; got {value!r}")
        return tuple(convert(arg, item, f"{where}[{i}]") for i, (arg, item) in enumerate(zip(args, value, strict=True)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where} must be a list; got {value!r}")
        return [convert(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where} must be a mapping; got {value!r}")
        # Keys are checked like values (`dict[Annotated[str, slug], X]`); a key's message names the entry.
        return {convert(args[0], str(key), join(where, str(key))): convert(args[1], item, join(where, str(key)))
                for key, item in value.items()}
    if dataclasses.is_dataclass(annotation):
        return load(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{where}: unsupported settings annotation {annotation!r}")
    raise ParamsError(f"{where} must be {describe(annotation)}; got {value!r}")


def _has_type(annotation: Any, value: Any) -> bool:
    """Whether `value` has the annotation's type, its checks aside."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    try:
        _convert(annotation, value, "")
    except ParamsError:
        return False
    return True


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def to_dict(settings: Any) -> dict[str, Any]:
    """A settings instance as plain data (tuples as lists), as params.yaml would hold it."""
    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        return value

    return {key: plain(value) for key, value in dataclasses.asdict(settings).items()}


def replaced(settings: Any, changes: Mapping[str, Any], where: str) -> Any:
    """A copy of `settings` with `changes` applied, each checked like a loaded value (errors name `where`)."""
    cls = type(settings)
    hints = _hints(cls)
    fields = {field.name for field in dataclasses.fields(cls) if field.init and field.metadata.get("params", True)}
    unknown = sorted(set(map(str, changes)) - fields)
    if unknown:
        raise ParamsError(f"{join(where, unknown[0])} is not a setting; {where} has {', '.join(sorted(fields))}")
    values = {name: convert(hints[name], value, join(where, name)) for name, value in changes.items()}
    try:
        return dataclasses.replace(settings, **values)
    except FieldError as error:
        raise ParamsError(f"{join(where, error.field)} {error.message}") from None
