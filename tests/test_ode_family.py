"""The ODE family dataset (`problems/ode_family.py`): the table's sympy equations against
hand-written right-hand sides, generated trajectories against invariants and closed forms,
stored equations against the stored trajectories' derivatives, splits, padding, noise, the
cache, config errors, and that no existing method claims the family."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import sympy as sp
from omegaconf import OmegaConf

from bench import registry
from core.symbolic import evaluate_rhs, lambdify_rhs
from problems.base import ConfigError
from problems.ode_family import SYSTEMS, ODEFamily, solve_equations
from problems.solvers.oscillator_exact import adler_phase

SIZES = {
    "smoke": {"train": 6, "val": 3, "test": 4, "test_systems": 2},
    "standard": {"train": 8, "val": 3, "test": 4},
    "paper": {"train": 9, "val": 3, "test": 4},
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path))
    return tmp_path


def family(**kw) -> ODEFamily:
    kw.setdefault("data", SIZES)
    return registry.build_problem("ode_family", **kw)


def only(system: str, **kw) -> ODEFamily:
    return family(systems=[system], held_out_systems=[], **kw)


# hand-written right-hand sides in each system's own time, f(t, y, p)
HAND = {
    "duffing": lambda t, y, p: [
        y[1],
        -p["delta"] * y[1] - p["alpha"] * y[0] - p["beta"] * y[0] ** 3
        + p["gamma"] * np.cos(p["omega"] * t),
    ],
    "adler": lambda t, y, p: [p["nu"] - p["K"] * np.sin(y[0])],
    "van_der_pol": lambda t, y, p: [y[1], p["mu"] * (1 - y[0] ** 2) * y[1] - y[0]],
    "lotka_volterra": lambda t, y, p: [
        p["a"] * y[0] - p["b"] * y[0] * y[1],
        p["d"] * y[0] * y[1] - p["c"] * y[1],
    ],
    "damped_pendulum": lambda t, y, p: [y[1], -p["k"] * np.sin(y[0]) - p["gamma"] * y[1]],
    "lorenz": lambda t, y, p: [
        p["sigma"] * (y[1] - y[0]),
        y[0] * (p["rho"] - y[2]) - y[1],
        y[0] * y[1] - p["beta"] * y[2],
    ],
    "rossler": lambda t, y, p: [
        -y[1] - y[2], y[0] + p["a"] * y[1], p["b"] + y[2] * (y[0] - p["c"])
    ],
    "thomas": lambda t, y, p: [np.sin(y[(i + 1) % 3]) - p["b"] * y[i] for i in range(3)],
    "aizawa": lambda t, y, p: [
        (y[2] - p["b"]) * y[0] - p["d"] * y[1],
        p["d"] * y[0] + (y[2] - p["b"]) * y[1],
        p["c"] + p["a"] * y[2] - y[2] ** 3 / 3 - (y[0] ** 2 + y[1] ** 2) * (1 + p["e"] * y[2])
        + p["f"] * y[2] * y[0] ** 3,
    ],
    "chen_lee": lambda t, y, p: [
        p["a"] * y[0] - y[1] * y[2],
        p["b"] * y[1] + y[0] * y[2],
        p["c"] * y[2] + y[0] * y[1] / 3,
    ],
}  # fmt: skip


def test_table_has_the_required_systems():
    required = {"duffing", "adler", "van_der_pol", "lotka_volterra", "damped_pendulum", "lorenz"}
    assert required <= set(SYSTEMS) and len(SYSTEMS) >= 8
    chaotic_3d = {"rossler", "thomas", "aizawa", "chen_lee"} & set(SYSTEMS)
    assert len(chaotic_3d) >= 2 and all(SYSTEMS[s].dim == 3 for s in chaotic_3d)
    assert set(HAND) == set(SYSTEMS)
    assert all(1 <= s.dim <= 3 and len(s.box) == s.dim for s in SYSTEMS.values())


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_lambdified_rhs_equals_hand_written(name):
    """The sympy table (in the common time: s f(x, s t)) against an independent transcription,
    at random states, times and parameters."""
    spec, rng = SYSTEMS[name], np.random.default_rng(3)
    s = spec.time_scale
    for _ in range(5):
        p = {k: v * rng.uniform(0.9, 1.1) for k, v in spec.params.items()}
        rhs = lambdify_rhs(spec.equations(p))
        for _ in range(10):
            y, t = rng.uniform(-3, 3, spec.dim), rng.uniform(0, 6)
            want = s * np.asarray(HAND[name](s * t, y, p))
            np.testing.assert_allclose(rhs(t, y), want, rtol=1e-13, atol=1e-13)


def test_lotka_volterra_conserves_its_first_integral():
    d = only("lotka_volterra").family_data("train", "smoke")
    for u, p in zip(d.values, d.params, strict=True):
        x, y = u[:, 0], u[:, 1]
        v = p["d"] * x - p["c"] * np.log(x) + p["b"] * y - p["a"] * np.log(y)
        assert np.ptp(v) < 1e-8 * abs(v[0])
        assert np.ptp(x) > 0.1  # it does move
    assert np.all(d.values[:, :, 2] == 0) and np.all(d.dims == 2)


def test_adler_matches_its_closed_form():
    d = only("adler").family_data("train", "smoke")
    for u, p in zip(d.values, d.params, strict=True):
        exact = adler_phase(d.times, p["nu"], p["K"], u[0, 0])
        np.testing.assert_allclose(u[:, 0], exact, rtol=0, atol=1e-8)
    assert np.all(d.values[:, :, 1:] == 0) and np.all(d.dims == 1)


def test_damped_pendulum_loses_energy_at_the_damping_rate():
    d = only("damped_pendulum", t_num=401).family_data("train", "smoke")
    for u, p in zip(d.values, d.params, strict=True):
        th, om = u[:, 0], u[:, 1]
        e = om**2 / 2 + p["k"] * (1 - np.cos(th))
        assert np.all(np.diff(e) <= 1e-12 * e[0]) and e[-1] < 0.5 * e[0]
        # E(t) - E(0) = -gamma int_0^t x1^2: the trapezoid rule on 401 points, O(dt^2)
        loss = p["gamma"] * np.sum((om[1:] ** 2 + om[:-1] ** 2) / 2 * np.diff(d.times))
        assert abs((e[0] - e[-1]) - loss) < 1e-3 * loss


def test_equations_round_trip_and_match_the_trajectories():
    """Every system: the stored strings parse back to themselves, and their right-hand sides at
    the stored states equal the stored trajectory's derivative (4th-order central differences,
    whose error at this step is ~1e-5 of the derivative)."""
    sizes = {**SIZES, "smoke": {**SIZES["smoke"], "train": len(SYSTEMS)}}
    d = family(held_out_systems=[], t_num=801, data=sizes).family_data("train", "smoke")
    h = d.times[1] - d.times[0]
    for u, dim, eqs, name in zip(d.values, d.dims, d.equations, d.system, strict=True):
        assert len(eqs) == dim == SYSTEMS[name].dim
        for e in eqs:
            assert str(sp.sympify(e)) == e
        x = u[:, :dim]
        fd = (x[:-4] - 8 * x[1:-3] + 8 * x[3:-1] - x[4:]) / (12 * h)
        f = evaluate_rhs(eqs, d.times, x)[2:-2]
        err = np.linalg.norm(fd - f) / np.linalg.norm(f)
        assert err < 1e-4, (name, err)
        again = solve_equations(eqs, x[0], d.times)
        np.testing.assert_allclose(again, x, atol=1e-9 * np.abs(x).max(), rtol=0)
    assert set(d.system) == set(SYSTEMS)  # round robin: one sample per system


def test_splits_sizes_systems_and_reproducibility(tmp_path, monkeypatch):
    yaml = OmegaConf.to_container(OmegaConf.load(registry.CONF_DIR / "problem/ode_family.yaml"))
    p = registry.build_problem("ode_family")
    assert p.capabilities == {"family_data"}
    held_out = set(yaml["held_out_systems"])
    data = {s: p.family_data(s, "smoke") for s in ("train", "val", "test", "test_systems")}
    for split, d in data.items():
        assert len(d) == yaml["data"]["smoke"][split]
        assert d.values.shape == (len(d), yaml["t_num"], 3)
        assert d.observed.shape == (len(d), yaml["input_len"], 3)
        in_held_out = {str(s) in held_out for s in d.system}
        assert in_held_out == {split == "test_systems"}
    assert set(data["train"].system) == set(yaml["systems"]) - held_out
    # independent parameter draws per split
    key = lambda d: {(str(s), tuple(p.items())) for s, p in zip(d.system, d.params, strict=True)}  # noqa: E731
    assert not key(data["train"]) & key(data["test"])
    assert not key(data["train"]) & key(data["val"])
    # parameters within +-10 % of nominal (up to the rounding to 4 digits)
    for s, prm in zip(data["train"].system, data["train"].params, strict=True):
        for k, v in SYSTEMS[s].params.items():
            assert abs(prm[k] - v) <= 0.1 * abs(v) * (1 + 1e-3)
    # the same seed in a fresh cache: identical arrays; another seed: different ones
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "fresh"))
    (tmp_path / "fresh").mkdir()
    again = registry.build_problem("ode_family").family_data("test", "smoke")
    assert again.meta["cached"] is False
    np.testing.assert_array_equal(again.values, data["test"].values)
    assert again.equations == data["test"].equations
    other = registry.build_problem("ode_family", data_seed=1).family_data("test", "smoke")
    assert not np.allclose(other.values, again.values)


def test_noise_changes_only_the_observed_window():
    clean = only("lorenz").family_data("train", "smoke")
    noisy = only("lorenz", noise=0.05, input_len=10).family_data("train", "smoke")
    assert noisy.meta["cached"] is True  # noise is added on load: one cache for every level
    np.testing.assert_array_equal(noisy.values, clean.values)
    np.testing.assert_array_equal(clean.observed, clean.values[:, :64])
    eps = noisy.observed - noisy.values[:, :10]
    rel = np.linalg.norm(eps, axis=(1, 2)) / np.linalg.norm(noisy.values[:, :10], axis=(1, 2))
    np.testing.assert_allclose(rel, 0.05, rtol=1e-10)
    pend = only("adler", noise=0.1).family_data("train", "smoke")
    assert np.all(pend.observed[:, :, 1:] == 0)  # padding stays zero
    assert np.all(pend.observed[:, :, 0] != pend.values[:, :64, 0])


def test_cache_loads_and_regenerates_corrupt_files(tmp_path, monkeypatch, caplog):
    calls = []
    generate = ODEFamily.generate
    monkeypatch.setattr(
        ODEFamily, "generate", lambda self, *a, **k: calls.append(a) or generate(self, *a, **k)
    )
    first = only("van_der_pol").family_data("val", "smoke")
    again = only("van_der_pol").family_data("val", "smoke")
    assert len(calls) == 1 and first.meta["cached"] is False and again.meta["cached"] is True
    assert again.meta["seconds"] == first.meta["seconds"]
    np.testing.assert_array_equal(again.values, first.values)
    (path,) = tmp_path.glob("family-ode_family-val-*.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        fixed = only("van_der_pol").family_data("val", "smoke")
    assert len(calls) == 2 and fixed.meta["cached"] is False and "unusable" in caplog.text
    np.testing.assert_array_equal(fixed.values, first.values)
    assert only("van_der_pol", t_num=100).family_data("val", "smoke").meta["cached"] is False


@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"systems": ["lorenz", "nope"]}, r"systems: unknown or repeated \['nope'\].*'lorenz'"),
        ({"systems": "lorenz"}, "systems must be a list"),
        ({"held_out_systems": ["thomas"], "systems": ["lorenz"]}, r"held_out_systems.*'lorenz'"),
        ({"held_out_systems": ["lorenz"], "systems": ["lorenz"]}, "held_out_systems"),
        ({"input_len": 192}, "input_len"),
        ({"t_num": 2}, "t_num"),
        ({"noise": -0.1}, "noise"),
        ({"param_spread": 1.0}, "param_spread"),
        ({"param_digits": 1}, "param_digits"),
        ({"t_end": 0.0}, "t_end"),
        ({"data": {"smoke": {"train": 0}}}, r"data\.smoke\.train"),
        ({"data": {**SIZES, "smoke": {**SIZES["smoke"], "test_systems": 0}}}, "test_systems"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        family(**{"data": SIZES, **kwargs})


def test_bad_split_scale_and_missing_held_out():
    p = only("adler")
    for split, scale, key in [("nope", "smoke", "split"), ("train", "big", "scale")]:
        with pytest.raises(ConfigError, match=key):
            p.family_data(split, scale)
    with pytest.raises(ConfigError, match="held_out_systems"):
        p.family_data("test_systems", "smoke")


def test_decoded_equations_are_checked():
    with pytest.raises(ValueError, match="allowed"):
        lambdify_rhs(["x0 + y"])
    with pytest.raises(ValueError):
        lambdify_rhs(["x0 +* 2"])
    y = solve_equations(["-x0"], [1.0], np.linspace(0, 1, 5))
    np.testing.assert_allclose(y[:, 0], np.exp(-np.linspace(0, 1, 5)), rtol=1e-9)


def test_no_existing_method_applies():
    p = registry.build_problem("ode_family")
    assert "symbolic" not in p.capabilities and "operator_data" not in p.capabilities
    for name in registry.methods():
        if name == "prose":  # the one method meant for the family
            continue
        assert registry.build_method(name).applicable(p) is not None, name
    with pytest.raises(NotImplementedError, match="family"):
        p.reference()
    assert math.isclose(p.domain.hi[0], 6.0)
