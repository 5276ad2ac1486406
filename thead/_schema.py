"""One strict decoder for every file thead reads back: a JSON-like value -> a frozen dataclass.

``decode(cls, data, error=..., source=...)`` builds ``cls`` (nested dataclasses included) from
its type hints, and refuses anything it would have to guess:

- exact types: ``bool`` is not an ``int``; an ``int`` is accepted for a ``float`` (JSON writes
  ``1.0`` as ``1`` in some writers), and floats must be finite; ``str`` is only a string;
- ``X | None``, ``Literal[...]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``list[X]`` (a JSON
  array), ``dict[str, X]`` (an object), ``Any`` (taken as it is), nested dataclasses (objects);
- unknown keys are refused; a missing key is refused unless its field is declared with
  ``optional(default)``: a constructor default alone does not make a key optional in a file.
- ``bounded(default, low, high)`` declares a numeric field's range once: checked here with the
  key path, and by ``check_bounds`` in the class's ``__post_init__`` for direct construction;
- ``stored_as(on_disk_type, convert)``: a field whose file form differs from its value (a
  manifest's ``{name: pin}`` object for a tuple of pins, an avatar's ``"224x224"``).

The classes' own ``__post_init__`` checks still run; a ``TheadError`` (or ``ValueError``) they
raise is re-raised as ``error`` with the key path of the object that failed. Every failure is
ONE line: ``<source>: <key.path>: <what is wrong>``, e.g.
``weights/config.json: image_generator.nf: expected an int, got "32"``.

``text=True`` reads string-only metadata (safetensors' ``__metadata__``): every top-level value
is a string, and ints and floats are parsed from their decimal text.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Union

from thead.errors import TheadError

T = TypeVar("T")

_OPTIONAL = "thead.schema.optional"
_BOUNDS = "thead.schema.bounds"
_STORED = "thead.schema.stored_as"
_INT_TEXT = re.compile(r"-?[0-9]+")


def optional(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A field whose key may be absent from a file; ``default`` (or ``default_factory``) is what
    an absent key means. Only for keys the format has always let files omit (or that files of
    an earlier thead lack): every other key is required."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_OPTIONAL: True})


def bounded(default: Any, low: float, high: float | None = None) -> Any:
    """A required numeric field with an inclusive range (``high`` None: no upper bound)."""
    return dataclasses.field(default=default, metadata={_BOUNDS: (low, high)})


def stored_as(on_disk: Any, convert: Callable[[Any], Any], *, default: Any = dataclasses.MISSING,
              default_factory: Any = dataclasses.MISSING, is_optional: bool = False) -> Any:
    """A field written to files as ``on_disk`` (decoded strictly first), then ``convert``-ed
    (a ``ValueError`` from ``convert`` is a decoding error at this key). ``is_optional``: the
    key may be absent (as with ``optional``)."""
    meta: dict[str, Any] = {_STORED: (on_disk, convert)}
    if is_optional:
        meta[_OPTIONAL] = True
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


class _Failure(Exception):
    """A decoding failure at a key path (turned into the caller's error type at the top)."""

    def __init__(self, path: str, message: str):
        super().__init__(message)
        self.path, self.message = path, message


def decode(cls: type[T], data: Any, *, error: type[TheadError], source: str = "", path: str = "", text: bool = False) -> T:
    """``data`` as a ``cls`` (a dataclass, or any type above, e.g. ``dict[str, Record]``), or
    ``error`` with one line naming ``source`` (the file; "" to leave it to the caller) and the
    key path (prefixed with ``path``)."""
    try:
        return _value(cls, data, path, text)
    except _Failure as f:
        where = ": ".join(p for p in (source, f.path) if p)
        raise error(f"{where}: {f.message}" if where else f.message) from None


def check_bounds(obj: Any, error: type[TheadError]) -> None:
    """Raise ``error`` when a ``bounded`` field of ``obj`` is out of its range or of the wrong
    type (for ``__post_init__``: the same rule whether built in code or decoded)."""
    for f in dataclasses.fields(obj):
        if _BOUNDS in f.metadata:
            problem = _out_of_bounds(getattr(obj, f.name), f.metadata[_BOUNDS], _is_int_field(obj, f))
            if problem:
                raise error(f"{f.name}: {problem}")


def show(value: Any, limit: int = 40) -> str:
    """A value as it looks in the file, shortened to one readable piece."""
    try:
        s = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        s = repr(value)
    return s if len(s) <= limit else s[: limit - 1] + "…"


# ------------------------------------------------------------------------------ internals


_PLAIN_KEY = re.compile(r"[\w.:/@+-]{1,64}")


def _join(path: str, key: Any) -> str:
    key = str(key)
    if not _PLAIN_KEY.fullmatch(key):  # a hostile key (newlines, 10 MB) stays one short line
        key = show(key)
    return f"{path}.{key}" if path else key


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # resolved once per class (slow: it evaluates annotations)


def _is_int_field(obj: Any, f: dataclasses.Field) -> bool:
    return _hints(type(obj))[f.name] is int


def _out_of_bounds(value: Any, bounds: tuple, integer: bool) -> str | None:
    low, high = bounds
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not ok_type or value < low or (high is not None and value > high):
        span = f"from {low:g} to {high:g}" if high is not None else f"of at least {low:g}"
        return f"must be {kind} {span}, got {value!r}"
    return None


_NAMES = {int: "an int", float: "a number", str: "a string", bool: "a bool", type(None): "null"}


def _expected(tp: Any) -> str:
    if tp in _NAMES:
        return _NAMES[tp]
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict or tp is dict:
        return "an object"
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return "an array"
    if origin is Literal:
        return "one of " + ", ".join(show(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _wrong(tp: Any, value: Any, path: str) -> _Failure:
    return _Failure(path, f"expected {_expected(tp)}, got {show(value)}")


def _value(tp: Any, value: Any, path: str, text: bool = False) -> Any:
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path, text)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            try:
                return _value(rest[0], value, path, text)
            except _Failure as f:
                if f.path == path and not dataclasses.is_dataclass(rest[0]):  # say null was allowed too
                    raise _wrong(tp, value, path) from None
                raise
        for a in rest:
            try:
                return _value(a, value, path, text)
            except _Failure:
                continue
        raise _wrong(tp, value, path)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _wrong(tp, value, path)
    if origin is tuple or origin is list:
        if not isinstance(value, (list, tuple)):
            raise _wrong(tp, value, path)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Failure(path, f"expected an array of {len(args)}, got {len(value)} items")
            items = [_value(a, v, _join(path, i)) for i, (a, v) in enumerate(zip(args, value))]
        else:
            item = args[0] if args else Any
            items = [_value(item, v, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _wrong(tp, value, path)
        kt, vt = args if args else (str, Any)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or kt is not str:
                raise _Failure(_join(path, k), "keys must be strings")
            out[k] = _value(vt, v, _join(path, k))
        return out
    if text and isinstance(value, str) and tp in (int, float):
        return _from_text(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int beyond any float
                number = math.inf
            if not math.isfinite(number):
                raise _Failure(path, f"expected a finite number, got {show(value)}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is type(None):
        if value is None:
            return None
    else:
        raise TypeError(f"thead._schema cannot decode {tp!r}")  # a programming error, not a file's
    raise _wrong(tp, value, path)


def _from_text(tp: type, value: str, path: str) -> Any:
    if tp is int and _INT_TEXT.fullmatch(value):
        return int(value)
    if tp is float and value == value.strip() and "_" not in value:  # float()'s leniencies refused
        try:
            return _value(float, float(value), path)
        except ValueError:
            pass
    raise _wrong(tp, value, path)


def _dataclass(cls: type, value: Any, path: str, text: bool) -> Any:
    if not isinstance(value, dict):
        raise _wrong(cls, value, path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted((k for k in value if k not in fields), key=str)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise _Failure(_join(path, unknown[0]), f"unknown key{more}; expected one of: {', '.join(fields)}")
    hints = _hints(cls)
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name not in value:
            if f.metadata.get(_OPTIONAL):
                continue  # the dataclass's default is what an absent key means
            raise _Failure(key_path, "missing")
        raw = value[name]
        if _STORED in f.metadata:
            on_disk, convert = f.metadata[_STORED]
            try:
                kwargs[name] = convert(_value(on_disk, raw, key_path, text))
            except (ValueError, TheadError) as e:
                raise _Failure(key_path, _one_line(e)) from None
            continue
        kwargs[name] = _value(hints[name], raw, key_path, text)
        if _BOUNDS in f.metadata:
            problem = _out_of_bounds(kwargs[name], f.metadata[_BOUNDS], hints[name] is int)
            if problem:
                raise _Failure(key_path, problem)
    try:
        return cls(**kwargs)
    except (TheadError, ValueError) as e:  # the class's own checks (ranges, cross-field rules)
        raise _Failure(path, _one_line(e)) from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__
