"""`ks`: operator data of the 1-D Kuramoto–Sivashinsky equation (DyMixOp's 1-D benchmark).

    u_t + u u_x + u_xx + u_xxxx = 0,   x in [0, L) periodic,

i.e. u_t = L u + N(u) with the symbol L(k) = k^2 - k^4 and N(u) = -(u^2 / 2)_x, solved by the
batched ETDRK4 pseudo-spectral solver (`problems/solvers/etdrk4.py`, 2/3-dealiased).

DyMixOp's data (`Lain-PY/DyMixOp@bc6951b`: `DataGeneration/1dKS_generation.m`, a Kassam &
Trefethen ETDRK4 script, and `Configs/DyMixOp/Base/config_1dks_DyMixOp.json`): L = 64 pi, 4096
points, dt = 1/4, initial states uniform(-1, 1) at every grid point, frames every time unit from
t = 100 (the burn-in past the transient) to 120; the model reads every 16th point (256) and
maps 10 frames to the next 10. This problem keeps L, the burn-in, the frame spacing, the data
grid (256 points) and the 10 + 10 frames (`context = 10`, `nt = 20`: outputs[:, :10] are the
history, the rest the frames to predict). `times` are counted from the first recorded frame
(0, 1, ..., 19; physical time t = burn_in + times). Inputs `[N, 1, s]` are the first frame.

Deviations, on purpose:
- solver grid n = 512, not 4096: at L = 64 pi the attractor's spectrum falls to ~1e-11 of its
  peak by k = 8, and 512 points (modes |k| < 5.3 kept by the 2/3 rule) reproduce 1024 points
  to ~1e-10 over a 10-unit window; the published script does not dealias.
- dt = 1/8 in the recorded window (rel. error ~1e-4 over 10 time units against dt -> 0, where
  dt = 1/4 gives ~8e-4); the burn-in, whose accuracy does not matter, steps at
  max(dt, 1/4).
- the random initial state has its mean removed (the mean is conserved and would only add a
  Galilean drift; the script's white noise has a mean of ~1e-2), and is drawn on the n-point
  solver grid. The script also seeds its generator after drawing, so its draws are unseeded.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from problems.base import Box, OperatorData, check_int, check_real
from problems.burgers_op import check_grids, check_resolution, ladder
from problems.capabilities import Progress
from problems.operator import OperatorProblem, check_sizes
from problems.solvers.etdrk4 import integrate, quadratic_flux, solve_on_grid, to_grid, wavenumbers

__all__ = ["KuramotoSivashinsky"]

BATCH = 64  # trajectories per solver call (one progress tick each; see etdrk4.py)
BURN_DT = 0.25  # the burn-in's largest step (DyMixOp's dt)
DEFAULT_DATA = {
    "smoke": {"train": 16, "val": 4, "test": 4},
    "standard": {"train": 1000, "val": 100, "test": 200},
    "paper": {"train": 1000, "val": 100, "test": 200},
}


class KuramotoSivashinsky(OperatorProblem):
    """Kuramoto–Sivashinsky operator data (see the module doc).

    Arguments:
        length_pi: domain length in units of pi (64: L = 64 pi).
        n: solver grid (even, a multiple of `s`).
        s: data grid, x_j = L j / s.
        dt: largest ETDRK4 step in the recorded window.
        burn_in: time from the random initial state to the first recorded frame.
        frame_dt: time between frames.
        nt: frames per trajectory (> context = 10).
        data: sizes per scale and split; data_seed: seeds the draws of every split.
    """

    name = "ks"

    axes = ("x", "t")
    fields = ("u",)
    context = 10
    data_version = 1
    data_keys = ("length_pi", "n", "s", "dt", "burn_in", "frame_dt", "nt")

    def __init__(
        self,
        length_pi: float = 64.0,
        n: int = 512,
        s: int = 256,
        dt: float = 0.125,
        burn_in: float = 100.0,
        frame_dt: float = 1.0,
        nt: int = 20,
        data: dict[str, Any] | None = None,
        data_seed: int = 0,
    ) -> None:
        length_pi = check_real("length_pi", length_pi, minimum=0.0)
        n, s = check_grids(n, s)
        super().__init__(
            length_pi=length_pi,
            n=n,
            s=s,
            dt=check_real("dt", dt, minimum=0.0),
            burn_in=check_real("burn_in", burn_in, minimum=0.0, strict=False),
            frame_dt=check_real("frame_dt", frame_dt, minimum=0.0),
            nt=check_int("nt", nt, minimum=self.context + 1),
            data=check_sizes(DEFAULT_DATA if data is None else data),
            data_seed=check_int("data_seed", data_seed, minimum=0),
        )
        self.length = math.pi * length_pi
        self.n, self.s, self.dt = n, s, self.params["dt"]
        t_span = self.params["frame_dt"] * (self.params["nt"] - 1)
        self.domain = Box({"x": (0.0, self.length), "t": (0.0, t_span)})

    @property
    def grid(self) -> np.ndarray:
        return self.length * np.arange(self.s, dtype=np.float64) / self.s

    @property
    def times(self) -> np.ndarray:
        """Frame times counted from the first recorded frame."""
        return self.params["frame_dt"] * np.arange(self.params["nt"], dtype=np.float64)

    @staticmethod
    def symbol(k: np.ndarray) -> np.ndarray:
        """The Fourier symbol of the linear part, k^2 - k^4."""
        return k * k - k**4

    def initial_states(self, n: int, seed: int) -> np.ndarray:
        """`[n, self.n]` uniform(-1, 1) states on the solver grid, mean removed; sample i
        depends only on (seed, i)."""
        u = np.stack(
            [np.random.default_rng([seed, i]).uniform(-1.0, 1.0, self.n) for i in range(n)]
        )
        return u - u.mean(axis=1, keepdims=True)

    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None, scale: str = ""
    ) -> OperatorData:
        u0 = self.initial_states(n, seed)
        lin = self.symbol(wavenumbers(self.n, self.length))
        flux = quadratic_flux(self.n, self.length)
        burn = self.params["burn_in"]
        out = np.empty((n, self.params["nt"], 1, self.s))
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            start = integrate(u0[lo:hi], lin, flux, [burn], max(self.dt, BURN_DT))[:, 0]
            traj = integrate(start, lin, flux, burn + self.times, self.dt, t0=burn)
            out[lo:hi, :, 0] = to_grid(traj, self.s)
            if progress is not None:
                progress(hi, n)
        meta = {"burn_in": burn, "ic": "uniform(-1, 1) per solver grid point, mean removed"}
        return OperatorData(out[:, 0].copy(), out, (self.grid,), self.times, meta)

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
        return solve_on_grid(start[:, 0], times, n, dt, self.length, self.symbol)[:, :, None]

    def classical_ladder(self) -> list[dict[str, Any]]:
        """Fine to coarse: the data's own solver, 2x and 4x the step, then 2x and 8/3x coarser
        grids (at the defaults rel_l2 ~1e-7, 3e-4, 2e-3, 4e-3, 2e-2, 9e-2 over the 10 predicted
        frames; a 4x coarser grid no longer resolves the attractor and blows up)."""
        return ladder(self.n, self.dt, [(1, 2), (1, 4), (2, 4), (2, 8), (8 / 3, 4)])
