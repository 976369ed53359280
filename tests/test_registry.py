"""Registries and YAML agree, every compatible pair composes, bad names are explained."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from bench import registry
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
