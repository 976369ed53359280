"""Registries of problems and methods, keyed by their YAML option names.

The harness discovers them: a problem or method is a class in a module of `problems/` or
`methods/` that names itself,

    class Burgers(Problem):
        name = "burgers"

so problem and method modules never import the harness (docs/architecture.md). The YAML file
`conf/problem/burgers.yaml` holds its hyper-parameters only. `build_problem` and
`build_method` compose the YAML with overrides and return the same objects the CLI builds.
`register_problem` / `register_method` add a class defined elsewhere (a user's notebook or
test) under a name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bench.settings import validate
from methods.base import Method
from problems.base import ConfigError, Problem

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

PROBLEMS: dict[str, type[Problem]] = {}
METHODS: dict[str, type[Method]] = {}

T = TypeVar("T")
_loaded = False


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name]} and {cls})")
        cls.name = name  # type: ignore[attr-defined]
        table[name] = cls
        return cls

    return deco


def register_problem(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a Problem available as `+problem=<name>`."""
    return _register(PROBLEMS, "problem", name)


def register_method(name: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a Method available as `+method=<name>`."""
    return _register(METHODS, "method", name)


def load_all() -> None:
    """Import every module in `problems/` and `methods/` and register the Problem and Method
    classes defined there that set their own `name`."""
    global _loaded
    if _loaded:
        return
    for pkg_name, base, table, kind in (
        ("problems", Problem, PROBLEMS, "problem"),
        ("methods", Method, METHODS, "method"),
    ):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{pkg_name}.{info.name}")
            for cls in vars(module).values():
                if (
                    inspect.isclass(cls)
                    and issubclass(cls, base)
                    and cls.__module__ == module.__name__
                    and cls.__dict__.get("name")
                ):
                    _register(table, kind, cls.__dict__["name"])(cls)
    _loaded = True


def problems() -> dict[str, type[Problem]]:
    load_all()
    return PROBLEMS


def methods() -> dict[str, type[Method]]:
    load_all()
    return METHODS


def yaml_options(group: str) -> list[str]:
    """Option names of a config group, from the YAML files in `conf/<group>/`."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _lookup(table: dict[str, type[T]], kind: str, name: str) -> type[T]:
    if name not in table:
        avail = ", ".join(sorted(table)) or "(none registered)"
        raise ConfigError(f"unknown {kind} {name!r}; available {kind}s: {avail}")
    return table[name]


def _construct(cls: type[T], kind: str, name: str, params: dict[str, Any]) -> T:
    """Call `cls(**params)` once `bench.settings.validate` has checked the keys and types
    against the signature; the class's own (range) checks are prefixed with its name."""
    validate(cls, kind, name, params)
    try:
        return cls(**params)
    except ConfigError as e:
        raise ConfigError(f"{kind} {name!r}: {e}") from None


def _compose(group: str, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    path = CONF_DIR / group / f"{name}.yaml"
    base = OmegaConf.load(path) if path.exists() else OmegaConf.create({})
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(overrides))
    except OmegaConfBaseException as e:  # e.g. a list where the YAML has a mapping
        keys = ", ".join(f"{group}.{k}" for k in overrides)
        raise ConfigError(
            f"{group} {name!r}: cannot merge {keys} into {path.name}: {str(e).splitlines()[0]}"
        ) from None
    out = OmegaConf.to_container(merged, resolve=True)
    return dict(out or {})


def build_problem(name: str, **overrides: Any) -> Problem:
    """The problem `name` with its YAML hyper-parameters, updated by `overrides`."""
    cls = _lookup(problems(), "problem", name)
    return _construct(cls, "problem", name, _compose("problem", name, overrides))


def build_method(name: str, **overrides: Any) -> Method:
    """The method `name` with its YAML hyper-parameters, updated by `overrides`."""
    cls = _lookup(methods(), "method", name)
    return _construct(cls, "method", name, _compose("method", name, overrides))
