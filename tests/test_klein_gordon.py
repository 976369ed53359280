"""The `klein_gordon` problem: the exact solution satisfies the equation and its three
conditions, the forcing against Wang et al.'s closed form, the test grid and bad values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.registry import build_problem
from problems.base import ConfigError
from problems.fields import Fields


def fields_of(model, points: torch.Tensor) -> Fields:
    return Fields(points, ("x", "t"), ("u",), model=model)


def exact_model(p):
    return lambda q: p.exact_torch(q[:, 0], q[:, 1])[:, None]


@pytest.mark.parametrize("kw", [{}, {"alpha": 0.5, "beta": 2.0, "gamma": -3.0}], ids=str)
def test_exact_satisfies_equation_and_conditions(kw):
    p = build_problem("klein_gordon", **kw)
    g = torch.Generator().manual_seed(0)
    pts = p.sample_interior(500, g)
    r = p.residual(fields_of(exact_model(p), pts))
    assert r.shape == (500, 1) and r.abs().max() < 1e-11
    # a slightly wrong solution leaves a residual (the check can fail)
    bent = lambda q: exact_model(p)(q) + 1e-2 * torch.sin(3 * q[:, :1] + 2 * q[:, 1:])  # noqa: E731
    assert p.residual(fields_of(bent, pts)).abs().max() > 1e-2
    conds = {c.name: c for c in p.conditions()}
    assert set(conds) == {"ic", "ic_t", "bc"}
    for c in conds.values():
        b = c.sample(64, g)
        assert c.residual(fields_of(exact_model(p), b)).abs().max() < 1e-12, c.name
        wrong = c.residual(fields_of(lambda q: 1 + q[:, :1] * q[:, 1:], b))
        assert wrong.abs().max() > 0.5, c.name
    assert (conds["ic"].sample(10, g)[:, 1] == 0).all()
    b = conds["bc"].sample(100, g)
    assert ((b[:, 0] == 0) | (b[:, 0] == 1)).all() and 20 < (b[:, 0] == 0).sum() < 80


def test_forcing_is_wangs():
    # Klein_Gordon.py: f = u_tt + alpha u_xx + beta u + gamma u^k with their u_tt, u_xx
    p = build_problem("klein_gordon")
    t, x = np.meshgrid(np.linspace(0, 1, 13), np.linspace(0, 1, 11))
    u = x * np.cos(5 * np.pi * t) + (x * t) ** 3
    u_tt = -25 * np.pi**2 * x * np.cos(5 * np.pi * t) + 6 * t * x**3
    u_xx = 6 * x * t**3
    want = u_tt - u_xx + u**3
    got = p.forcing(torch.as_tensor(x), torch.as_tensor(t)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-12)


def test_reference_is_wangs_test_grid(monkeypatch, tmp_path):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    ref = build_problem("klein_gordon").reference()
    assert ref.shape == (100, 100)
    x, t = ref.grid
    np.testing.assert_array_equal(t, np.linspace(0, 1, 100))
    X, T = np.meshgrid(x, t, indexing="ij")
    want = X * np.cos(5 * math.pi * T) + (X * T) ** 3
    np.testing.assert_allclose(ref.values[:, 0], want.ravel(), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("key", "value"),
    [("alpha", float("nan")), ("gamma", "1"), ("n_initial", 0), ("n_boundary", -1), ("nt", 1)],
)
def test_bad_params_raise(key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_problem("klein_gordon", **{key: value})
