"""`burgers_op`: operator data of 1-D periodic viscous Burgers, PDEBench-like.

    u_t + (u^2 / 2)_x = nu u_xx,   x in [0, 1) periodic,   t in [0, t_final],

from random initial states, solved by the batched ETDRK4 pseudo-spectral solver
(`problems/solvers/etdrk4.py`; 2/3-dealiased, n-point grid) and recorded on every (n/s)-th grid
point at `nt` equally spaced times. Layout (`problems/operator.py`): inputs `[N, 2, s]` =
(u0, nu broadcast), outputs `[N, nt, 1, s]` with `outputs[:, 0] = u0`; `context = 1`.

Initial states follow PDEBench's 1-D generator (`pdebench/data_gen/data_gen_NLE/utils.py:
init_multi`, called with k_tot = 4 for Burgers): for each of the wavenumbers 1..k_tot an
amplitude U(0, 1) and a phase U(0, 2 pi); two picks (with replacement) from them select the
modes, a mode picked twice having its wavenumber doubled and an unpicked one contributing the
constant A sin(phase) (their formula, kept: it gives each sample a random mean); then
|u| with probability 0.1, a random sign, and with probability 0.1 the window
(tanh((x - xL)/0.01) - tanh((x - xR)/0.01)) / 2, xL ~ U(0.1, 0.45), xR ~ U(0.55, 0.9).
Deviations, on purpose:
- the wavenumbers are 2 pi m exactly (PDEBench divides by xc[-1] - xc[0] = 1 - dx, so its
  initial states are slightly non-periodic);
- the state is then band-limited to the modes the data grid resolves (|m| < min(n/3, s/2)), so
  that `outputs[:, 0]` is exactly the state that was evolved (|u| and the window have kinks
  and steep fronts whose unresolved tail would otherwise differ between grids);
- `nu` is the diffusion coefficient itself. PDEBench's files named `Nu0.01` use
  epsilon / pi = 0.01 / pi (its finite-volume flux divides by pi);
- PDEBench solves on 1024 cells with a second-order finite-volume scheme and stores 201 frames;
  its FNO baseline reads every 4th point and every 5th frame (256 points, 41 frames), which is
  this problem's default data grid. The spectral solver on 512 points at dt = 2e-3 matches a
  solve on 1024 points at dt = 5e-4 to ~2e-7 relative L2 (mean; the steepest of 32 samples
  ~4e-6; tests/test_burgers_op.py), and the exact Cole–Hopf solution from sin 2 pi x to 1e-7.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.fft import irfft, rfft
from torch import Tensor

from problems.base import Box, ConfigError, OperatorData, check_int, check_real
from problems.capabilities import Progress, uniform_step
from problems.operator import (
    OperatorProblem,
    after_first_frame,
    check_sizes,
    periodic_derivative,
    time_derivative,
)
from problems.solvers.etdrk4 import (
    integrate,
    quadratic_flux,
    solve_on_grid,
    to_grid,
    wavenumbers,
)

__all__ = ["BurgersOp", "check_grids", "check_resolution", "ladder", "pdebench_initial"]

BATCH = 64  # trajectories per solver call (one progress tick each; see etdrk4.py)
DEFAULT_DATA = {
    "smoke": {"train": 16, "val": 4, "test": 4},
    "standard": {"train": 1000, "val": 100, "test": 200},
    "paper": {"train": 9000, "val": 500, "test": 1000},
}


def pdebench_initial(rng: np.random.Generator, x: np.ndarray, k_tot: int = 4) -> np.ndarray:
    """One PDEBench-style random initial state at points `x` in [0, 1) (see the module doc)."""
    picks = rng.integers(0, k_tot, size=2)
    count = np.bincount(picks, minlength=k_tot)
    wave = 2.0 * math.pi * np.arange(1, k_tot + 1) * count  # 0 for unpicked modes
    amp = rng.uniform(0.0, 1.0, size=k_tot)
    phase = rng.uniform(0.0, 2.0 * math.pi, size=k_tot)
    u = (amp[:, None] * np.sin(wave[:, None] * x[None, :] + phase[:, None])).sum(axis=0)
    if rng.random() < 0.1:
        u = np.abs(u)
    u = u * rng.choice([-1.0, 1.0])
    if rng.random() < 0.1:
        lo, hi = rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9)
        u = u * 0.5 * (np.tanh((x - lo) / 0.01) - np.tanh((x - hi) / 0.01))
    return u


def band_limit(u: np.ndarray, modes: int) -> np.ndarray:
    """`u` `[..., n]` with every Fourier mode |m| >= `modes` removed."""
    c = rfft(u, axis=-1)
    c[..., modes:] = 0.0
    return irfft(c, u.shape[-1], axis=-1)


class BurgersOp(OperatorProblem):
    """1-D periodic viscous Burgers operator data (see the module doc).

    Arguments:
        nu: diffusion coefficient (> 0).
        t_final: horizon of each trajectory.
        nt: frames per trajectory, linspace(0, t_final, nt) (>= 2).
        n: solver grid (even, a multiple of `s`).
        s: data grid, x_j = j / s.
        dt: largest ETDRK4 step.
        k_tot: wavenumbers 1..k_tot of the random initial states.
        data: sizes per scale and split; data_seed: seeds the draws of every split.
    """

    name = "burgers_op"

    axes = ("x", "t")
    fields = ("u",)
    context = 1
    data_version = 1
    data_keys = ("nu", "t_final", "nt", "n", "s", "dt", "k_tot")
    length = 1.0

    def __init__(
        self,
        nu: float = 0.01,
        t_final: float = 2.0,
        nt: int = 41,
        n: int = 512,
        s: int = 256,
        dt: float = 2e-3,
        k_tot: int = 4,
        data: dict[str, Any] | None = None,
        data_seed: int = 0,
    ) -> None:
        nu = check_real("nu", nu, minimum=0.0)
        t_final = check_real("t_final", t_final, minimum=0.0)
        dt = check_real("dt", dt, minimum=0.0)
        nt = check_int("nt", nt, minimum=self.context + 1)
        n, s = check_grids(n, s)
        k_tot = check_int("k_tot", k_tot)
        if 2 * k_tot >= min(n / 3, s / 2):
            raise ConfigError(
                f"k_tot = {k_tot} needs wavenumbers up to {2 * k_tot}, beyond what the grids "
                f"resolve (|m| < min(n/3, s/2) = {min(n / 3, s / 2):g}): raise n and s"
            )
        data = DEFAULT_DATA if data is None else data
        super().__init__(
            nu=nu,
            t_final=t_final,
            nt=nt,
            n=n,
            s=s,
            dt=dt,
            k_tot=k_tot,
            data=check_sizes(data),
            data_seed=check_int("data_seed", data_seed, minimum=0),
        )
        self.nu, self.t_final, self.n, self.s, self.dt = nu, t_final, n, s, dt
        self.domain = Box({"x": (0.0, 1.0), "t": (0.0, t_final)})

    # -- data ----------------------------------------------------------------------------
    @property
    def grid(self) -> np.ndarray:
        return np.arange(self.s, dtype=np.float64) / self.s

    @property
    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.t_final, self.params["nt"])

    def initial_states(self, n: int, seed: int) -> np.ndarray:
        """`[n, self.n]` band-limited initial states on the solver grid; sample i depends only
        on (seed, i), so a split's first samples do not depend on its size."""
        x = np.arange(self.n, dtype=np.float64) / self.n
        raw = np.stack(
            [
                pdebench_initial(np.random.default_rng([seed, i]), x, self.params["k_tot"])
                for i in range(n)
            ]
        )
        return band_limit(raw, math.ceil(min(self.n / 3, self.s / 2)))

    def symbol(self, k: np.ndarray) -> np.ndarray:
        """The Fourier symbol of the linear part, -nu k^2."""
        return -self.nu * k * k

    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None, scale: str = ""
    ) -> OperatorData:
        u0 = self.initial_states(n, seed)
        k = wavenumbers(self.n, self.length)
        flux = quadratic_flux(self.n, self.length)
        out = np.empty((n, self.params["nt"], 1, self.s))
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            traj = integrate(u0[lo:hi], self.symbol(k), flux, self.times, self.dt)
            out[lo:hi, :, 0] = to_grid(traj, self.s)
            if progress is not None:
                progress(hi, n)
        inputs = np.stack([out[:, 0, 0], np.full((n, self.s), self.nu)], axis=1)
        meta = {"ic": "pdebench init_multi (k_tot, 2 picks, abs 0.1, window 0.1)"}
        return OperatorData(inputs, out, (self.grid,), self.times, meta)

    # -- the discrete PDE on the frames (grid_residuals; see problems/operator.py) ----------
    def grid_terms(self, u: Tensor, times: Tensor) -> dict[str, Tensor]:
        """u, u_t (backward differences between frames), u_x, u_xx (spectral)."""
        u = u[:, :, 0]
        return {
            "u": u,
            "u_t": time_derivative(u, uniform_step(times)),
            "u_x": periodic_derivative(u, -1, 1, self.length),
            "u_xx": periodic_derivative(u, -1, 2, self.length),
        }

    def grid_inputs(self, inputs: Tensor) -> dict[str, Tensor]:
        return {"nu": inputs[:, 1:2]}

    def grid_residuals(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """`pde`: u_t + u u_x - nu u_xx (non-conservative form: pointwise in the terms)."""
        u = terms["u"]
        return {"pde": terms["u_t"] + u * terms["u_x"] - terms["nu"] * terms["u_xx"]}

    def grid_masks(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {"pde": after_first_frame(shape)}

    # -- the classical solver as a competitor -------------------------------------------
    def solve(
        self,
        start: np.ndarray,
        inputs: np.ndarray,
        times: np.ndarray,
        resolution: dict[str, Any],
    ) -> np.ndarray:
        """From `start` `[N, 1, s]` at `times[0]`, the states at `times[1:]` on the data grid,
        by the generating solver at `resolution` {"n": grid, "dt": step} ({} = the data's)."""
        n, dt = check_resolution(resolution, self.n, self.dt)
        start = np.asarray(start, dtype=np.float64)
        if start.ndim != 3 or start.shape[1:] != (1, self.s):
            raise ValueError(f"start must be [N, 1, {self.s}], got {start.shape}")
        nus = np.asarray(inputs, dtype=np.float64)[:, 1]
        if not np.allclose(nus, self.nu, rtol=1e-6):
            raise ValueError(f"the samples' nu channel differs from this problem's nu = {self.nu}")
        out = solve_on_grid(start[:, 0], times, n, dt, self.length, self.symbol)
        return out[:, :, None]

    def classical_ladder(self) -> list[dict[str, Any]]:
        """Fine to coarse: the data's own solver, then grids 2x to 16x coarser with steps
        that stay stable (at the defaults rel_l2 ~2e-8, 2e-6, 1e-4, 1e-3, 2e-2)."""
        return ladder(self.n, self.dt, [(2, 2), (4, 5), (8, 5), (16, 10)])


def ladder(n: int, dt: float, rungs: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """`{}` (the data's resolution), then `{"n": n / a, "dt": b dt}` for each (a, b) of
    `rungs`, grids rounded down to even sizes >= 8, repeated rungs dropped."""
    out: list[dict[str, Any]] = [{}]
    for a, b in rungs:
        rung = {"n": max(8, int(n / a + 1e-9) // 2 * 2), "dt": b * dt}
        if rung not in out:
            out.append(rung)
    return out


def check_grids(n: object, s: object) -> tuple[int, int]:
    """The solver grid `n` and data grid `s`, or a ConfigError: even, s divides n."""
    n = check_int("n", n, minimum=8)
    s = check_int("s", s, minimum=8)
    if n % 2 or s % 2:
        raise ConfigError(f"n and s must be even (FFT grids), got n = {n}, s = {s}")
    if n % s:
        raise ConfigError(f"the solver grid n = {n} must be a multiple of the data grid s = {s}")
    return n, s


def check_resolution(resolution: dict[str, Any], n: int, dt: float) -> tuple[int, float]:
    """The (grid, step) of a `solve` resolution, defaulting to (`n`, `dt`)."""
    unknown = sorted(set(resolution) - {"n", "dt"})
    if unknown:
        raise ConfigError(f"resolution keys are 'n' and 'dt', got {unknown}")
    n = resolution.get("n", n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 8 or n % 2:
        raise ConfigError(f"resolution n must be an even integer >= 8, got {n!r}")
    return n, check_real("resolution dt", resolution.get("dt", dt), minimum=0.0)
