"""Typed settings: a method's or problem's constructor signature is the declaration.

A class's keyword parameters, with their annotations and defaults, are the one declaration of
its settings. `conf/<group>/<name>.yaml` gives the values a run starts from (a test holds them
equal to the signature's defaults), and `validate` checks what a run passes against the
signature before the class sees it: an unknown key or a value of the wrong type is refused
with a ConfigError that names the key, the type it must have, and the value given. The class
itself checks only what a type cannot say (ranges, relations between settings).

A constructor that forwards `**kwargs` to its base class declares the union of both
signatures (`parameters` follows the chain up the MRO), less the base settings it fixes itself
(its `fixed_keys`, e.g. `hard_moe` fixes the operator learners' `history` at one frame).
"""

from __future__ import annotations

import collections.abc as cabc
import inspect
import numbers
import types
import typing
from typing import Any, Literal, Union

from problems.base import ConfigError

__all__ = ["conforms", "describe", "parameters", "validate"]


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of `cls(...)`, annotations resolved to types, following
    `**kwargs` into the base classes' constructors."""
    out: dict[str, inspect.Parameter] = {}
    fixed = set(getattr(cls, "fixed_keys", ()))
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            hints = typing.get_type_hints(init)
        except Exception:  # an annotation that does not resolve: leave it unchecked
            hints = {}
        sig = inspect.signature(init)
        forwards = False
        for name, p in sig.parameters.items():
            if name == "self" or p.kind is p.VAR_POSITIONAL:
                continue
            if p.kind is p.VAR_KEYWORD:
                forwards = True
                continue
            if name not in out and name not in fixed:
                out[name] = p.replace(annotation=hints.get(name, Any))
        if not forwards:
            break
    return out


def conforms(value: Any, hint: Any) -> bool:
    """Whether a config value (as OmegaConf gives it: lists, dicts, scalars) fits `hint`."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, cabc.Sequence) or hint in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(conforms, value, args))
        return not args or all(conforms(v, args[0]) for v in value)
    if origin in (dict, cabc.Mapping) or hint is dict:
        if not isinstance(value, dict):
            return False
        return len(args) != 2 or all(
            conforms(k, args[0]) and conforms(v, args[1]) for k, v in value.items()
        )
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a construct this checker does not know: the class checks it


def describe(hint: Any) -> str:
    """`hint` in words, for an error message."""
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in names:
        return names[hint]
    if origin in (list, tuple, cabc.Sequence):
        return f"a list of {describe(args[0])}" if args else "a list"
    if origin in (dict, cabc.Mapping):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def validate(cls: type, kind: str, name: str, params: dict[str, Any]) -> None:
    """A ConfigError for a key `cls` does not declare or a value of the wrong type."""
    declared = parameters(cls)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {[f'{kind}.{k}' for k in unknown]} for {kind} {name!r}; "
            f"valid keys: {', '.join(declared)}"
        )
    for key, value in params.items():
        found = _mismatch(f"{kind}.{key}", value, declared[key].annotation)
        if found:
            where, hint, got = found
            raise ConfigError(f"{where} must be {describe(hint)}, got {got!r} ({kind} {name!r})")


def _mismatch(key: str, value: Any, hint: Any) -> tuple[str, Any, Any] | None:
    """None if `value` fits `hint`, else the innermost (key, hint, value) that does not: an
    entry of a mapping or list is named (`method.weights.ic`) where the container fits."""
    if conforms(value, hint):
        return None
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    inner = (
        arms[0] if typing.get_origin(hint) in (Union, types.UnionType) and len(arms) == 1 else hint
    )
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin in (dict, cabc.Mapping) and len(args) == 2 and isinstance(value, dict):
        for k, v in value.items():
            if conforms(k, args[0]):
                found = _mismatch(f"{key}.{k}", v, args[1])
                if found:
                    return found
    if origin in (list, cabc.Sequence) and args and isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _mismatch(f"{key}[{i}]", v, args[0])
            if found:
                return found
    return key, hint, value
