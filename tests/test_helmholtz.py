"""The `helmholtz` problem: the exact solution satisfies the equation and the boundary data for
integer and non-integer frequencies, PIG's formula and test grid, resonant wavenumbers and bad
values are refused with the key named."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.registry import build_problem
from problems.base import ConfigError
from problems.fields import Fields
from problems.helmholtz import dirichlet_eigenvalue

CASES = [
    {},  # PIG's and Wang et al.'s (a1, a2) = (1, 4), k = 1
    {"a1": 10, "a2": 10},  # PIG's hard case
    {"a1": 1.5, "a2": 2.25, "k": 3.0},  # non-zero boundary data
]


def fields_of(model, points: torch.Tensor) -> Fields:
    return Fields(points, ("x", "y"), ("u",), model=model)


def exact_model(p):
    return lambda q: p.exact_torch(q[:, 0], q[:, 1])[:, None]


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_exact_satisfies_equation_and_boundary(kw):
    p = build_problem("helmholtz", **kw)
    g = torch.Generator().manual_seed(0)
    pts = p.sample_interior(500, g)
    r = p.residual(fields_of(exact_model(p), pts))
    scale = p.source(pts[:, 0], pts[:, 1]).abs().max()
    assert r.shape == (500, 1) and r.abs().max() < 1e-13 * scale
    # a slightly wrong solution leaves a residual (the check can fail)
    bent = lambda q: exact_model(p)(q) + 1e-2 * torch.sin(3 * q[:, :1] + 2 * q[:, 1:])  # noqa: E731
    assert p.residual(fields_of(bent, pts)).abs().max() > 1e-2
    (bc,) = p.conditions()
    assert bc.name == "bc" and bc.n_points == p.params["n_boundary"]
    b = bc.sample(200, g)
    on_side = (b.abs() == 1.0).any(dim=1)
    assert on_side.all() and (b.abs() <= 1).all()
    assert bc.residual(fields_of(exact_model(p), b)).abs().max() < 1e-12
    wrong = bc.residual(fields_of(lambda q: 1 + q[:, :1] * q[:, 1:], b))
    assert wrong.abs().max() > 0.5


def test_boundary_data_vanish_only_for_integer_frequencies():
    g = torch.Generator().manual_seed(1)
    for kw, zero in (({}, True), ({"a1": 10, "a2": 10}, True), ({"a1": 1.5}, False)):
        p = build_problem("helmholtz", **kw)
        assert p.zero_boundary is zero
        b = p.conditions()[0].sample(100, g)
        data = p._boundary_data(b[:, 0], b[:, 1])
        assert bool(data.abs().max() == 0) is zero
        if zero:  # the trial function is the plain bubble
            assert p.trial() == {"u": "(1 - x**2) * (1 - y**2) * u"}


def test_pig_formula_and_test_grid(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    ref = build_problem("helmholtz").reference()
    assert ref.shape == (250, 250)
    x, y = ref.grid
    np.testing.assert_array_equal(x, np.linspace(-1, 1, 250))
    X, Y = np.meshgrid(x, y, indexing="ij")
    # PIG's ground truth: sin(a1 pi y) sin(a2 pi x) with a1 = 4, a2 = 1
    np.testing.assert_allclose(
        ref.values[:, 0], (np.sin(4 * np.pi * Y) * np.sin(np.pi * X)).ravel(), rtol=0, atol=1e-15
    )
    # and its source with coefficient k^2 = 1: u_yy + u_xx + u
    q = build_problem("helmholtz").source(torch.as_tensor(X), torch.as_tensor(Y)).numpy()
    np.testing.assert_allclose(q, (1 - 17 * np.pi**2) * np.sin(np.pi * X) * np.sin(4 * np.pi * Y))


def test_resonant_wavenumbers_are_refused():
    assert dirichlet_eigenvalue(1.0) is None and dirichlet_eigenvalue(0.0) is None
    assert dirichlet_eigenvalue(math.pi / 2 * math.sqrt(5)) in ((1, 2), (2, 1))
    with pytest.raises(ConfigError, match=r"\bk\b.*not unique"):
        build_problem("helmholtz", k=math.pi / 2 * math.sqrt(2))
    build_problem("helmholtz", k=math.pi / 2 * math.sqrt(2) + 1e-3)  # near is allowed


@pytest.mark.parametrize(
    ("key", "value"),
    [("a1", 0.0), ("a2", -4.0), ("a1", float("nan")), ("k", -1.0), ("nx", 1), ("n_boundary", 0)],
)
def test_bad_params_raise(key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem("helmholtz", **{key: value})
