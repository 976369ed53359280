"""Registries and YAML agree, every compatible pair composes, bad names are explained."""

from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from bench import registry, settings
from bench.run import compose
from methods.base import Budget
from problems.base import ConfigError


def test_registry_matches_yaml():
    assert set(registry.problems()) == set(registry.yaml_options("problem"))
    assert set(registry.methods()) == set(registry.yaml_options("method"))
    assert {"smoke", "standard", "paper"} <= set(registry.yaml_options("budget"))


PAIRS = [(m, p) for m in registry.yaml_options("method") for p in registry.yaml_options("problem")]


@pytest.mark.parametrize("method,problem", PAIRS)
def test_every_pair_composes(method, problem):
    cfg = compose(method, problem, ["budget=smoke"])
    assert cfg.hydra.runtime.choices["method"] == method
    p = registry.build_problem(problem, **cfg.problem)
    m = registry.build_method(method, **cfg.method)
    assert p.name == problem and m.name == method
    if m.applicable(p) is None:
        assert m.needs_for(p) <= p.capabilities
    for budget in ("smoke", "standard", "paper"):
        c = compose(method, problem, [f"budget={budget}"])
        Budget.from_dict(dict(c.budget), name=budget)


@pytest.mark.parametrize("kind", ["method", "problem"])
def test_smoke_overrides_are_valid_settings(kind):
    """bench-check's `smoke` overrides name settings of the YAML, with values it accepts."""
    table = registry.methods() if kind == "method" else registry.problems()
    build = registry.build_method if kind == "method" else registry.build_problem
    for name, cls in table.items():
        yaml = OmegaConf.load(registry.CONF_DIR / kind / f"{name}.yaml")
        assert set(cls.smoke) <= set(yaml), f"{kind} {name}: {set(cls.smoke) - set(yaml)}"
        build(name, **cls.smoke)


def _plain(value):
    """A constructed value as YAML would write it (dataclasses as mappings, tuples as lists)."""
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("kind", ["method", "problem"])
def test_yaml_values_are_the_constructor_defaults(kind):
    """One source: the YAML lists declared settings only, each of its declared type, and each
    value is what `cls()` (Python, no YAML) uses too; a null in the YAML is a null default."""
    table = registry.methods() if kind == "method" else registry.problems()
    for name, cls in table.items():
        yaml = OmegaConf.to_container(OmegaConf.load(registry.CONF_DIR / kind / f"{name}.yaml"))
        declared = settings.parameters(cls)
        settings.validate(cls, kind, name, yaml)  # declared keys, declared types
        made = cls()
        values = made.params if kind == "problem" else vars(made)
        for key, value in yaml.items():
            if value is None:
                assert declared[key].default is None, f"{kind} {name}: {key}"
            else:
                assert _plain(values[key]) == value, f"{kind} {name}: {key}"


@pytest.mark.parametrize(
    "kind,name,kw,message",
    [
        ("method", "fno", {"width": "wide"}, r"method\.width must be an integer, got 'wide'"),
        ("method", "fno", {"lr": True}, r"method\.lr must be a number, got True"),
        ("method", "dymixop", {"history": 1.5}, r"method\.history must be an integer or null"),
        ("method", "pinn", {"lbfgs": "yes"}, r"method\.lbfgs must be true or false"),
        ("method", "pinn", {"weights": {"ic": "big"}}, r"method\.weights\.ic must be a number"),
        ("problem", "ode_family", {"systems": ["lorenz", 3]}, r"problem\.systems\[1\] must be"),
        ("method", "prose", {"sizes": [1]}, r"cannot merge method\.sizes into prose\.yaml"),
        ("problem", "burgers", {"nu": "0.01"}, r"problem\.nu must be a number, got '0.01'"),
        ("problem", "ode_family", {"systems": "lorenz"}, r"problem\.systems"),
        # settings of a base class that the subclass fixes are not its settings
        ("method", "hard_moe", {"history": 2}, r"unknown key\(s\) \['method\.history'\]"),
        ("method", "soft_constraint", {"experts": [1]}, r"\['method\.experts'\]"),
        ("method", "pig", {"net": "mlp"}, r"unknown key\(s\) \['method\.net'\]"),
        ("method", "fno", {"hidden": 8}, r"\['method\.hidden'\] for method 'fno'; valid keys"),
    ],
)
def test_settings_are_checked_against_the_signature(kind, name, kw, message):
    build = registry.build_method if kind == "method" else registry.build_problem
    with pytest.raises(ConfigError, match=message):
        build(name, **kw)


def test_unknown_names_list_the_available_ones():
    with pytest.raises(ConfigError, match=r"unknown problem 'nope'.*burgers"):
        registry.build_problem("nope")
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*pinn"):
        registry.build_method("nope")


def test_unknown_hyperparameter_is_named():
    with pytest.raises(ConfigError, match=r"problem\.viscosity"):
        registry.build_problem("burgers", viscosity=0.1)
    with pytest.raises(ConfigError, match=r"method\.widht"):
        registry.build_method("pinn", widht=3)


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"steps": -1}, "budget.steps"),
        ({"steps": 10, "seconds": 0}, "budget.seconds"),
        ({"steps": 10, "eval_every": 0}, "budget.eval_every"),
        ({"steps": 10, "evals": 1.5}, "budget.evals"),
        ({"steps": 10, "walltime": 3}, "walltime"),
    ],
)
def test_bad_budget_is_rejected_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        Budget.from_dict(kwargs)
