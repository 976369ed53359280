"""A multi-operator family of ODE systems (the data PROSE learns from, issue 8).

Each sample is one system of the table `SYSTEMS` (Duffing, Adler, van der Pol, Lotka–Volterra,
damped pendulum, Lorenz, Rössler, Thomas, Aizawa, Chen–Lee), with parameters drawn uniformly
within `±param_spread` of nominal (PROSE: ±10 %) and rounded to `param_digits` significant
digits (as PROSE rounds them to its float vocabulary, so that the written equation is exact), an
initial state from the system's box, and the trajectory at `t_num` uniform times on [0, t_end]
(PROSE: 192 on [0, 6]). States are padded with zeros to 3 components, the true dimension kept.

The equations are sympy expressions over the states `x0, x1, x2` (and `t` for the forced
Duffing). A sample's equations are stored as strings (`str`, which `sympy.sympify` parses back),
and the trajectory is integrated from THOSE strings, parsed and lambdified, with the validated
DOP853 integrator: what a model reads is exactly what generated its data. A system's own time
unit may differ from the common one (`time_scale` s: its window is [0, s t_end]); its equations
are then written in the common time, dx/dt = s f(x, s t).

The first `input_len` samples are the observed input (with relative additive noise
`noise` · ‖u‖ per sample, PROSE's protocol, on the true components only); the clean trajectory
over the whole window is the target. Splits train/val/test draw independently from the held-in
systems; `test_systems` holds only `held_out_systems`. Clean splits are cached like operator
data (checksummed, regenerated when corrupt); noise is added on load, so noise levels share one
cache. The problem's only capability is `family_data`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from core import cache
from core.cache import cache_dir, content_key
from core.symbolic import MAX_DIM, T, X, lambdify_rhs
from problems.base import (
    Box,
    Condition,
    ConfigError,
    FamilyData,
    Problem,
    Reference,
    check_int,
    check_real,
)
from problems.capabilities import SCALES, Progress
from problems.operator import check_sizes
from problems.solvers.ode import integrate

__all__ = [
    "FAMILY_SPLITS",
    "SYSTEMS",
    "ODEFamily",
    "SystemSpec",
    "solve_equations",
]

log = logging.getLogger(__name__)

RTOL = 1e-10  # DOP853 tolerance of every generated trajectory (atol = rtol)
MAX_ABS = 1e3  # a trajectory leaving |u| <= MAX_ABS is redrawn (PROSE's filter)
MAX_TRIES = 50  # redraws per sample before generation gives up
FAMILY_SPLITS = ("train", "val", "test", "test_systems")
_SPLIT_SEED = {"train": 0, "val": 1, "test": 2, "test_systems": 3}


# -- the systems -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SystemSpec:
    """One ODE system: `rhs` in the states `x0..x{dim-1}`, `t` and the symbols named in
    `params` (nominal values), initial states uniform in `box`, own time = `time_scale` x common
    time."""

    name: str
    params: dict[str, float]
    rhs: tuple[sp.Expr, ...]
    box: tuple[tuple[float, float], ...]
    time_scale: float = 1.0

    @property
    def dim(self) -> int:
        return len(self.rhs)

    def equations(self, values: Mapping[str, float]) -> list[sp.Expr]:
        """The right-hand sides in the common time with parameter `values` substituted."""
        subs = {sp.Symbol(k): sp.Float(float(values[k])) for k in self.params}
        exprs = [e.subs(subs) for e in self.rhs]
        s = self.time_scale
        if s != 1.0:
            exprs = [sp.Float(s) * e.subs(T, sp.Float(s) * T) for e in exprs]
        return exprs

    def fingerprint(self) -> str:
        """Everything that determines this system's data (part of the cache key)."""
        return repr((self.name, self.params, [str(e) for e in self.rhs], self.box, self.time_scale))


def _system(
    name: str,
    params: dict[str, float],
    rhs: Sequence[str],
    box: Sequence[tuple[float, float]],
    time_scale: float = 1.0,
) -> SystemSpec:
    """A table row: `rhs` strings in `t, x0..x2` and the parameter names (parsed with exactly
    these symbols, so that e.g. `gamma` is a parameter, not the gamma function)."""
    names = {"t": T, **{str(x): x for x in X}, **{k: sp.Symbol(k) for k in params}}
    exprs = tuple(sp.sympify(e, locals=names) for e in rhs)
    if len(box) != len(exprs):
        raise ValueError(f"{name}: {len(exprs)} equations but a {len(box)}-d box")
    return SystemSpec(name, dict(params), exprs, tuple(tuple(b) for b in box), time_scale)


_ROWS = (
    # forced Duffing, chaotic at nominal: x'' + delta x' + alpha x + beta x^3 = gamma cos(omega t)
    ("duffing", {"alpha": -1.0, "beta": 1.0, "delta": 0.3, "gamma": 0.5, "omega": 1.2},
     ["x1", "-delta*x1 - alpha*x0 - beta*x0**3 + gamma*cos(omega*t)"], [(-1.5, 1.5), (-1, 1)]),
    # Adler's phase equation, locked for |nu| < K
    ("adler", {"nu": 0.5, "K": 1.0}, ["nu - K*sin(x0)"], [(-3, 3)]),
    ("van_der_pol", {"mu": 1.0}, ["x1", "mu*(1 - x0**2)*x1 - x0"], [(-2, 2), (-2, 2)]),
    # prey x0, predator x1: V = d x0 - c ln x0 + b x1 - a ln x1 is conserved
    ("lotka_volterra", {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0},
     ["a*x0 - b*x0*x1", "d*x0*x1 - c*x1"], [(1, 5), (0.5, 3)]),
    # the energy x1^2/2 + k (1 - cos x0) decays at the rate gamma x1^2
    ("damped_pendulum", {"k": 4.0, "gamma": 0.3}, ["x1", "-k*sin(x0) - gamma*x1"],
     [(-2.5, 2.5), (-1, 1)]),
    ("lorenz", {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0},
     ["sigma*(x1 - x0)", "x0*(rho - x2) - x1", "x0*x1 - beta*x2"], [(-15, 15), (-15, 15), (5, 40)]),
    # one loop takes ~6 time units: two loops per window
    ("rossler", {"a": 0.2, "b": 0.2, "c": 5.7}, ["-x1 - x2", "x0 + a*x1", "b + x2*(x0 - c)"],
     [(-8, 8), (-8, 8), (0, 2)], 2.0),
    # slow: its window is [0, 24] of its own time
    ("thomas", {"b": 0.208186}, ["sin(x1) - b*x0", "sin(x2) - b*x1", "sin(x0) - b*x2"],
     [(-3, 3)] * 3, 4.0),
    ("aizawa", {"a": 0.95, "b": 0.7, "c": 0.6, "d": 3.5, "e": 0.25, "f": 0.1},
     ["(x2 - b)*x0 - d*x1", "d*x0 + (x2 - b)*x1",
      "c + a*x2 - x2**3/3 - (x0**2 + x1**2)*(1 + e*x2) + f*x2*x0**3"],
     [(-1, 1), (-1, 1), (-0.5, 1.5)]),
    ("chen_lee", {"a": 5.0, "b": -10.0, "c": -0.38},
     ["a*x0 - x1*x2", "b*x1 + x0*x2", "c*x2 + x0*x1/3"], [(-5, 5)] * 3),
)  # fmt: skip
SYSTEMS: dict[str, SystemSpec] = {row[0]: _system(*row) for row in _ROWS}  # type: ignore[arg-type]


# -- equations -> numbers --------------------------------------------------------------------
def solve_equations(
    equations: Sequence[str | sp.Expr], y0: Sequence[float], times: np.ndarray
) -> np.ndarray:
    """The trajectory `[T, d]` of the equations from `y0` at `times[0]` (DOP853, rtol 1e-10)."""
    times = np.asarray(times, dtype=np.float64)
    return integrate(lambdify_rhs(equations, len(y0)), y0, times, rtol=RTOL, t0=float(times[0]))


# -- the data --------------------------------------------------------------------------------
def _round_sig(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def _check_names(key: str, names: object, allowed: Sequence[str]) -> list[str]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"{key} must be a list of system names from {list(allowed)}")
    bad = [n for n in names if n not in allowed]
    if bad or len(set(names)) != len(names):
        raise ConfigError(f"{key}: unknown or repeated {bad or names}; valid: {list(allowed)}")
    return list(names)


def _check_data(data: object) -> dict[str, dict[str, int]]:
    """The `data:` sizes table: train/val/test as for operator data, plus an optional
    `test_systems` size per scale (default: the `test` size)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"data must map scales {list(SCALES)} to split sizes, got {data!r}")
    plain: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for scale, sizes in data.items():
        if isinstance(sizes, Mapping):
            sizes = dict(sizes)
            extra[scale] = sizes.pop("test_systems", None)
        plain[scale] = sizes
    out: dict[str, dict[str, int]] = check_sizes(plain)  # type: ignore[assignment]
    for scale, n in extra.items():
        key = f"data.{scale}.test_systems"
        out[scale]["test_systems"] = out[scale]["test"] if n is None else check_int(key, n)
    return out


DEFAULT_SYSTEMS = list(SYSTEMS)
DEFAULT_DATA = {
    "smoke": {"train": 36, "val": 9, "test": 18, "test_systems": 6},
    "standard": {"train": 2000, "val": 200, "test": 400, "test_systems": 200},
    "paper": {"train": 50000, "val": 1000, "test": 2000, "test_systems": 1000},
}


class ODEFamily(Problem):
    """A family of ODE systems with randomised parameters: `family_data` only (module doc)."""

    name = "ode_family"

    axes = ("t",)
    fields = ("x0", "x1", "x2")
    data_version = 1  # bump when generation changes: old caches are then ignored

    def __init__(
        self,
        systems: Sequence[str] | None = None,
        held_out_systems: Sequence[str] = ("rossler",),
        t_end: float = 6.0,
        t_num: int = 192,
        input_len: int = 64,
        noise: float = 0.0,
        param_spread: float = 0.1,
        param_digits: int = 4,
        data: Mapping[str, Any] | None = None,
        data_seed: int = 0,
    ) -> None:
        systems = _check_names(
            "systems", DEFAULT_SYSTEMS if systems is None else systems, list(SYSTEMS)
        )
        if not systems:
            raise ConfigError(f"systems must name at least one of {list(SYSTEMS)}")
        held_out = _check_names("held_out_systems", held_out_systems, systems)
        if len(held_out) == len(systems):
            raise ConfigError(
                f"held_out_systems {held_out} leaves no system to train on: keep at least one "
                f"of systems {systems} out of it"
            )
        t_num = check_int("t_num", t_num, minimum=3)
        param_digits = check_int("param_digits", param_digits, minimum=2)
        if param_digits > 15:
            raise ConfigError(f"param_digits must be <= 15 (float64), got {param_digits}")
        input_len = check_int("input_len", input_len)
        if input_len >= t_num:
            raise ConfigError(f"input_len must be < t_num = {t_num}, got {input_len}")
        super().__init__(
            systems=systems,
            held_out_systems=held_out,
            t_end=check_real("t_end", t_end, minimum=0.0),
            t_num=t_num,
            input_len=input_len,
            noise=check_real("noise", noise, minimum=0.0, strict=False),
            param_spread=check_real("param_spread", param_spread, 0.0, strict=False, maximum=1.0),
            param_digits=param_digits,
            data=_check_data(DEFAULT_DATA if data is None else data),
            data_seed=check_int("data_seed", data_seed, minimum=0),
        )
        self.domain = Box({"t": (0.0, self.params["t_end"])})
        self.times = np.linspace(0.0, self.params["t_end"], t_num)

    # -- not a single-instance problem ------------------------------------------------------
    def residual(self, f: Any) -> Any:
        raise NotImplementedError(f"{self.name} is a family of ODEs; see family_data()")

    def conditions(self) -> list[Condition]:
        return []

    def _compute_reference(self) -> Reference:
        raise NotImplementedError(f"{self.name} is a family of ODEs; see family_data()")

    @property
    def capabilities(self) -> set[str]:
        return {"family_data"}

    # -- splits ----------------------------------------------------------------------------
    def split_systems(self, split: str) -> list[str]:
        """The systems a split draws from: held-in ones, or the held-out ones for
        `test_systems`."""
        held_out = self.params["held_out_systems"]
        if split == "test_systems":
            return list(held_out)
        return [s for s in self.params["systems"] if s not in held_out]

    def _seed(self, split: str) -> int:
        return self.params["data_seed"] * 1000 + _SPLIT_SEED[split]

    def data_key(self, split: str, n: int) -> str:
        """A hash of everything the clean split depends on (not noise nor input_len)."""
        names = self.split_systems(split)
        return content_key(
            {
                "name": self.name or type(self).__name__,
                "v": self.data_version,
                "split": split,
                "n": n,
                "seed": self._seed(split),
                "systems": [SYSTEMS[s].fingerprint() for s in names],
                "params": {k: self.params[k] for k in ("t_end", "t_num", "param_spread")},
                "digits": self.params["param_digits"],
                "rtol": RTOL,
            }
        )

    def family_data(
        self, split: str, scale: str = "standard", progress: Progress | None = None
    ) -> FamilyData:
        """The `split` (train/val/test/test_systems) at `scale`'s size: clean trajectories from
        the cache when a valid copy exists (else generated and cached), then the observed
        window with this problem's noise. `meta["seconds"]` is the generation time."""
        if split not in FAMILY_SPLITS:
            raise ConfigError(f"split must be one of {list(FAMILY_SPLITS)}, got {split!r}")
        if scale not in SCALES:
            raise ConfigError(f"data scale must be one of {list(SCALES)}, got {scale!r}")
        if not self.split_systems(split):
            raise ConfigError("test_systems needs held_out_systems; none are held out")
        n = self.params["data"][scale][split]
        key = self.data_key(split, n)
        path = cache_dir() / f"family-{self.name or 'ode_family'}-{split}-{key}.npz"
        arrays = _load(path)
        if arrays is None:
            t0 = time.perf_counter()
            arrays = self.generate(split, n, self._seed(split), progress)
            meta = {"seconds": time.perf_counter() - t0, "redraws": int(arrays.pop("redraws"))}
            _save(path, arrays, meta)
            arrays["meta"] = {**meta, "cached": False}
        else:
            arrays["meta"]["cached"] = True
        arrays["meta"].update(split=split, key=key, n=n)
        return self._assemble(arrays, self._seed(split))

    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None
    ) -> dict[str, Any]:
        """`n` clean samples of `split`'s systems (round robin), drawn with `seed`."""
        split_names = self.split_systems(split)
        names = [split_names[i % len(split_names)] for i in range(n)]
        spread, digits = self.params["param_spread"], self.params["param_digits"]
        rng = np.random.default_rng(seed)
        n_params = max(len(s.params) for s in SYSTEMS.values())
        values = np.zeros((n, len(self.times), MAX_DIM))
        params = np.full((n, n_params), np.nan)
        equations = [[""] * MAX_DIM for _ in range(n)]
        redraws = 0
        for i in range(n):
            spec = SYSTEMS[names[i]]
            box = np.array(spec.box)
            for _ in range(MAX_TRIES):
                p = {
                    k: _round_sig(v + abs(v) * spread * rng.uniform(-1.0, 1.0), digits)
                    for k, v in spec.params.items()
                }
                y0 = box[:, 0] + (box[:, 1] - box[:, 0]) * rng.random(spec.dim)
                eqs = [str(e) for e in spec.equations(p)]
                try:
                    y = solve_equations(eqs, y0, self.times)
                except (ArithmeticError, RuntimeError, ValueError):
                    y = None
                if y is not None and np.isfinite(y).all() and np.abs(y).max() <= MAX_ABS:
                    break
                redraws += 1
            else:
                raise RuntimeError(f"{spec.name}: no bounded trajectory in {MAX_TRIES} draws")
            values[i, :, : spec.dim] = y
            params[i, : len(p)] = list(p.values())
            equations[i][: spec.dim] = eqs
            if progress is not None:
                progress(i + 1, n)
        return {
            "times": self.times.copy(),
            "values": values,
            "params": params,
            "dims": np.array([SYSTEMS[s].dim for s in names]),
            "system": np.array(names, dtype=str),
            "equations": np.array(equations, dtype=str),
            "redraws": redraws,
        }

    def _assemble(self, arrays: dict[str, Any], seed: int) -> FamilyData:
        """FamilyData from the stored arrays, with the observed window and its noise."""
        values, dims, system = arrays["values"], arrays["dims"], arrays["system"]
        input_len, noise = self.params["input_len"], self.params["noise"]
        observed = values[:, :input_len].copy()
        if noise > 0:  # PROSE: additive, scaled so that |noise| = noise * |u| per sample
            z = np.random.default_rng([seed, 1]).standard_normal(observed.shape)
            z *= (np.arange(MAX_DIM) < dims[:, None])[:, None, :]  # padding stays zero
            norm_u = np.sqrt((observed**2).sum(axis=(1, 2)))
            norm_z = np.sqrt((z**2).sum(axis=(1, 2)))
            observed += z * (noise * norm_u / norm_z)[:, None, None]
        params = [
            dict(zip(SYSTEMS[s].params, map(float, row), strict=False))
            for s, row in zip(system, arrays["params"], strict=True)
        ]
        return FamilyData(
            times=arrays["times"],
            values=values,
            observed=observed,
            dims=dims,
            system=system,
            params=params,
            equations=[
                list(map(str, e[:d])) for e, d in zip(arrays["equations"], dims, strict=True)
            ],
            input_len=input_len,
            meta={**arrays["meta"], "noise": noise},
        )


# -- the cache -------------------------------------------------------------------------------
_ARRAYS = ("times", "values", "params", "dims", "system", "equations")


def _save(path: Any, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    cache.save(path, {k: np.asarray(arrays[k]) for k in _ARRAYS}, meta)


def _load(path: Any) -> dict[str, Any] | None:
    """The cached arrays (and `meta`), or None when the file is unusable (`core.cache.load`)."""
    got = cache.load(path)
    if got is None:
        return None
    arrays: dict[str, Any] = {k: got[0][k] for k in _ARRAYS}
    arrays["meta"] = got[1]
    return arrays
