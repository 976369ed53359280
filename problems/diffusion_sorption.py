"""`diffusion_sorption`: PDEBench's 1-D diffusion–sorption operator data (PI-HC-MoE's 1-D case).

    u_t = D / R(u) u_xx,   x in (0, 1),   t in (0, t_final],
    R(u) = 1 + ((1 - phi) / phi) rho_s k n_f u^(n_f - 1)      (Freundlich sorption),
    u(t, 0) = u_left = 1,   u(t, 1) + D u_x(t, 1) = 0         (outflow; see below),

with PDEBench's parameters (D = 5e-4, phi = 0.29, rho_s = 2880, k = 3.5e-4, n_f = 0.874,
t_final = 500, 101 frames), solved by the finite-volume method of
`problems/solvers/sorption_fv.py` on n = 1024 cells (PDEBench's grid) and averaged down to
s = 256 data cells. Layout (`problems/operator.py`): inputs `[N, 1, s]` = u0, outputs
`[N, nt, 1, s]` with `outputs[:, 0] = u0`, `grid` = the s cell centres; `context = 1`.

Following PDEBench's generator (`pdebench/data_gen/src/sim_diff_sorp.py`): the initial state is
a CONSTANT u0 ~ U(0, 0.2) per sample (`np.ones(Nx) * np.random.uniform(0, 0.2)`, not per-cell
noise), and R uses the floor (u + 1e-6)^(n_f - 1) (here (max(u, 0) + eps)^(n_f - 1), eps = 1e-6).
The data are therefore a one-parameter family; `ic: smooth` draws instead
u0 = (u0_max / 2)(1 + tanh g), g = sum_{m=1..4} a_m cos(m pi x + phase_m), a_m ~ N(0, 1/m^2),
for a harder operator-learning task. The jumps between u0 and the boundary values at t = 0
make thin initial layers (width ~sqrt(D t / R): 0.015-0.025 at the first frame, 4-6 data
cells), resolved by the solver; the first frames' finite differences are the least accurate.

Deviations, on purpose:
- the right boundary condition. The papers write u(t, 1) = D u_x(t, 1); with that sign the
  problem has a boundary mode ~exp((x - 1) / D) growing like exp(t / (D R)) (rate 1/(D R),
  150-650 per unit time here; 2000 without sorption), and a consistent discretisation blows up
  as soon as h < 2 D (n > 1000: the k = 0 operator's top eigenvalue is +2127 at n = 4096,
  -0.005 at n = 512). PDEBench's
  generator sets the ghost cell to D (c[-2] - c[-1]) / dx ~ -D u_x, i.e. an outflow; we impose
  that outflow consistently, u + D u_x = 0 at x = 1 (outward flux -D u_x = u >= 0);
- the boundaries: PDEBench puts the boundary values in the ghost cells (first order, the
  Dirichlet value sits h/2 outside the domain); we use second-order ghost cells (module doc of
  the solver) and BDF with an exact Jacobian instead of explicit RK45;
- the data grid: 256 of PDEBench's 1024 cells (cell averages), to keep the data small.

`right_bc: paper` keeps the data (the outflow solution, as PDEBench's generator computes it) and
changes only the discrete residual at x = 1 to the papers' u - D u_x (PI-HC-MoE's constraint), so
that their protocol runs as published: its boundary residual then contradicts the data, which
satisfy u + D u_x = 0 (`tests/test_diffusion_sorption.py` measures by how much).

The discrete PDE on the frames (`grid_residuals`): u_t by `time_derivative`; u_x, u_xx by
second-order differences on the cell centres (central inside, one-sided in the first and last
cell); `u_face`, `u_x_face`: quadratic extrapolations from the three cells next to x = 0 (first
column) and x = 1 (last column) to that face, zero in the other columns. Residuals:
`pde` = t_ref (u_t - D u_xx / R(u)) with t_ref = t_final / 100 (the error of the change over
PDEBench's frame interval, in units of u like the boundary residuals, so that a pooled
least-squares fit weighs them alike),
`left` = u_face - u_left, `right` = u_face + D u_x_face. Masks: every frame but
t = 0 (given, and inconsistent with the boundary values), `pde` in the interior columns,
`left`/`right` in the first/last column.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from problems.base import Box, ConfigError, OperatorData, check_int, check_real
from problems.capabilities import SCALES, Progress, uniform_step
from problems.operator import OperatorProblem, check_sizes, time_derivative
from problems.solvers.sorption_fv import Sorption, average_down, cell_centres, prolong, solve

__all__ = ["DiffusionSorption", "check_resolution"]

BATCH = 16  # trajectories per solver call (one progress tick each); larger batches share steps
DEFAULT_DATA = {
    "smoke": {"train": 16, "val": 4, "test": 4, "grid": {"s": 64, "nt": 26}},
    "standard": {"train": 1000, "val": 100, "test": 200},
    "paper": {"train": 9000, "val": 500, "test": 1000},
}


class DiffusionSorption(OperatorProblem):
    """1-D diffusion–sorption operator data (see the module doc).

    Arguments:
        D, phi, rho_s, k, n_f: diffusion coefficient, porosity, bulk density, Freundlich
            coefficient and exponent (k = 0 switches sorption off: R = 1).
        u_left: the Dirichlet value at x = 0. eps: the floor in R near u = 0.
        t_final: horizon; nt: frames, linspace(0, t_final, nt) (>= 3).
        n: solver cells; s: data cells (s divides n, s >= 4). rtol: the solver's tolerance.
        ic: "constant" (PDEBench) or "smooth"; u0_max: initial states lie in [0, u0_max].
        right_bc: the boundary residual at x = 1: "outflow" (u + D u_x, the data's) or
            "paper" (u - D u_x, PI-HC-MoE's; the data are unchanged).
        data: sizes per scale and split, and a scale's own `grid: {s, nt}` where it differs
            (the smoke scale's is coarser); data_seed: seeds the draws of every split.
    """

    name = "diffusion_sorption"

    axes = ("x", "t")
    fields = ("u",)
    context = 1
    data_version = 1
    data_keys = (
        "D", "phi", "rho_s", "k", "n_f", "u_left", "eps", "t_final", "nt", "n", "s", "rtol",
        "ic", "u0_max",
    )  # fmt: skip

    def __init__(
        self,
        D: float = 5e-4,
        phi: float = 0.29,
        rho_s: float = 2880.0,
        k: float = 3.5e-4,
        n_f: float = 0.874,
        u_left: float = 1.0,
        eps: float = 1e-6,
        t_final: float = 500.0,
        nt: int = 101,
        n: int = 1024,
        s: int = 256,
        rtol: float = 1e-6,
        ic: Literal["constant", "smooth"] = "constant",
        u0_max: float = 0.2,
        right_bc: Literal["outflow", "paper"] = "outflow",
        data: dict[str, Any] | None = None,
        data_seed: int = 0,
    ) -> None:
        n = check_int("n", n, minimum=4)
        s = check_int("s", s, minimum=4)
        if n % s:
            raise ConfigError(
                f"the solver grid n = {n} must be a multiple of the data grid s = {s}"
            )
        phys = Sorption(
            D=check_real("D", D, minimum=0.0),
            phi=check_real("phi", phi, minimum=0.0, maximum=1.0),
            rho_s=check_real("rho_s", rho_s, minimum=0.0, strict=False),
            k=check_real("k", k, minimum=0.0, strict=False),
            n_f=check_real("n_f", n_f, minimum=0.0),
            u_left=check_real("u_left", u_left, minimum=0.0, strict=False),
            eps=check_real("eps", eps, minimum=0.0),
        )
        if phys.n_f > 1.0:
            raise ConfigError(f"n_f must be in (0, 1] (a Freundlich exponent), got {n_f!r}")
        u0_max = check_real("u0_max", u0_max, minimum=0.0, strict=False)
        super().__init__(
            **{f: getattr(phys, f) for f in ("D", "phi", "rho_s", "k", "n_f", "u_left", "eps")},
            t_final=check_real("t_final", t_final, minimum=0.0),
            nt=check_int("nt", nt, minimum=3),
            n=n,
            s=s,
            rtol=check_real("rtol", rtol, minimum=0.0, maximum=1.0),
            ic=ic,
            u0_max=u0_max,
            right_bc=right_bc,
            data=DEFAULT_DATA if data is None else data,
            data_seed=check_int("data_seed", data_seed, minimum=0),
        )
        check_sizes(self.params["data"])
        self._grids = {scale: _check_grid(scale, self.data_grid(scale), n) for scale in SCALES}
        self.phys, self.n, self.s, self.t_final = phys, n, s, self.params["t_final"]
        self.domain = Box({"x": (0.0, 1.0), "t": (0.0, self.t_final)})

    # -- data ------------------------------------------------------------------------------
    @property
    def grid(self) -> np.ndarray:
        """The data grid's cell centres."""
        return cell_centres(self.s)

    @property
    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.t_final, self.params["nt"])

    def initial_states(self, n: int, seed: int) -> np.ndarray:
        """`[n, self.n]` initial states on the solver grid; sample i depends only on
        (seed, i), so a split's first samples do not depend on its size."""
        x = cell_centres(self.n)
        top = self.params["u0_max"]
        out = np.empty((n, self.n))
        for i in range(n):
            rng = np.random.default_rng([seed, i])
            if self.params["ic"] == "constant":
                out[i] = rng.uniform(0.0, top)
            else:
                m = np.arange(1, 5)
                amp = rng.standard_normal(4) / m
                phase = rng.uniform(0.0, 2 * math.pi, 4)
                g = (amp[:, None] * np.cos(math.pi * m[:, None] * x + phase[:, None])).sum(0)
                out[i] = 0.5 * top * (1.0 + np.tanh(g))
        return out

    def data_settings(self, scale: str) -> dict[str, Any]:
        """A scale's own data grid and frames (`data.<scale>.grid`); part of the cache key."""
        return dict(self._grids[scale])

    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None, scale: str = ""
    ) -> OperatorData:
        cfg = {"s": self.s, "nt": self.params["nt"], **self.data_settings(scale)}
        s, times = cfg["s"], np.linspace(0.0, self.t_final, cfg["nt"])
        u0 = self.initial_states(n, seed)
        out = np.empty((n, len(times), 1, s))
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            traj = solve(u0[lo:hi], times, self.phys, self.params["rtol"], self._atol())
            out[lo:hi, :, 0] = average_down(traj, s)
            if progress is not None:
                progress(hi, n)
        meta = {"ic": f"{self.params['ic']} (PDEBench: constant U(0, 0.2))", "settings": cfg}
        return OperatorData(out[:, 0].copy(), out, (cell_centres(s),), times, meta)

    def _atol(self, rtol: float | None = None) -> float:
        return 1e-3 * (self.params["rtol"] if rtol is None else rtol)

    # -- the classical solver as a competitor -------------------------------------------------
    def solve(
        self,
        start: np.ndarray,
        inputs: np.ndarray,
        times: np.ndarray,
        resolution: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """From `start` `[N, 1, s]` (cell averages) at `times[0]`, the states at `times[1:]`
        `[N, T - 1, 1, s]`, on `resolution` {"n": cells, "rtol": tolerance} ({} = the data's):
        the start is moved to n cells (averages when n < s, a linear reconstruction when
        n > s), solved there, and the result averaged to (or reconstructed on) the s cells."""
        start = np.asarray(start, dtype=np.float64)
        grids = (self.s, *(g["s"] for g in self._grids.values() if "s" in g))
        if start.ndim != 3 or start.shape[1] != 1 or start.shape[2] not in grids:
            raise ValueError(f"start must be [N, 1, s] with s in {grids}, got {start.shape}")
        s = start.shape[2]
        n, rtol = check_resolution(resolution or {}, self.n, self.params["rtol"], s)
        u0 = start[:, 0]
        u0 = prolong(u0, n) if n >= s else average_down(u0, n)
        traj = solve(u0, np.asarray(times, dtype=np.float64), self.phys, rtol, self._atol(rtol))
        traj = traj[:, 1:]
        out = average_down(traj, s) if n >= s else prolong(traj, s)
        return out[:, :, None]

    def classical_ladder(self) -> list[dict[str, Any]]:
        """Fine to coarse: the data's resolution, then 2x to 16x fewer cells at looser
        tolerances (relative L2 at the defaults in the test of this ladder)."""
        rungs: list[dict[str, Any]] = [{}]
        for factor, rtol in ((2, 1e-5), (4, 1e-4), (8, 1e-3), (16, 1e-3)):
            n = self.n // factor
            if n >= 4 and (n % self.s == 0 or self.s % n == 0):
                rungs.append({"n": n, "rtol": rtol})
        return rungs

    # -- the discrete PDE on the frames (grid_residuals; see problems/operator.py) -------------
    def grid_terms(self, u: Tensor, times: Tensor) -> dict[str, Tensor]:
        """u, u_t, u_x, u_xx and the face extrapolations u_face, u_x_face (module doc); all
        linear in u and second order on the cell-centred data grid."""
        u = u[:, :, 0]
        h = 1.0 / u.shape[-1]
        ux = torch.cat(
            [
                (-3 * u[..., :1] + 4 * u[..., 1:2] - u[..., 2:3]) / (2 * h),
                (u[..., 2:] - u[..., :-2]) / (2 * h),
                (3 * u[..., -1:] - 4 * u[..., -2:-1] + u[..., -3:-2]) / (2 * h),
            ],
            dim=-1,
        )
        uxx = torch.cat(
            [
                (2 * u[..., :1] - 5 * u[..., 1:2] + 4 * u[..., 2:3] - u[..., 3:4]) / h**2,
                (u[..., 2:] - 2 * u[..., 1:-1] + u[..., :-2]) / h**2,
                (2 * u[..., -1:] - 5 * u[..., -2:-1] + 4 * u[..., -3:-2] - u[..., -4:-3]) / h**2,
            ],
            dim=-1,
        )
        zeros = torch.zeros_like(u[..., 1:-1])
        left = (15 * u[..., :1] - 10 * u[..., 1:2] + 3 * u[..., 2:3]) / 8
        right = (15 * u[..., -1:] - 10 * u[..., -2:-1] + 3 * u[..., -3:-2]) / 8
        dleft = (-2 * u[..., :1] + 3 * u[..., 1:2] - u[..., 2:3]) / h
        dright = (2 * u[..., -1:] - 3 * u[..., -2:-1] + u[..., -3:-2]) / h
        return {
            "u": u,
            "u_t": time_derivative(u, uniform_step(times)),
            "u_x": ux,
            "u_xx": uxx,
            "u_face": torch.cat([left, zeros, right], dim=-1),
            "u_x_face": torch.cat([dleft, zeros, dright], dim=-1),
        }

    def grid_inputs(self, inputs: Tensor) -> dict[str, Tensor]:
        return {}

    def retardation(self, u: Tensor) -> Tensor:
        """R(u) with the floor (torch, differentiable; dR/du = 0 where u < 0)."""
        p = self.phys
        return 1.0 + p.K * p.n_f * (torch.clamp(u, min=0.0) + p.eps) ** (p.n_f - 1.0)

    def grid_residuals(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """`pde` = t_ref (u_t - D u_xx / R(u)): the mismatch of the change of u over PDEBench's
        frame interval, in units of u, like `left` = u_face - u_left and `right` = u_face +
        D u_x_face (`right_bc: paper`: u_face - D u_x_face), so that a pooled least-squares
        fit (hard_moe) weighs them alike."""
        p = self.phys
        rate = terms["u_t"] - p.D * terms["u_xx"] / self.retardation(terms["u"])
        sign = -1.0 if self.params["right_bc"] == "paper" else 1.0
        return {
            "pde": self.t_ref * rate,
            "left": terms["u_face"] - p.u_left,
            "right": terms["u_face"] + sign * p.D * terms["u_x_face"],
        }

    @property
    def t_ref(self) -> float:
        """The residual's time scale: PDEBench's frame interval, t_final / 100 (fixed, so
        that every data scale's residuals are in the same units)."""
        return self.params["t_final"] / 100

    def grid_masks(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Every frame but t = 0; `pde` inside, `left`/`right` in the first/last column."""
        masks = {name: np.zeros(shape, dtype=bool) for name in ("pde", "left", "right")}
        masks["pde"][1:, 1:-1] = True
        masks["left"][1:, 0] = True
        masks["right"][1:, -1] = True
        return masks


def _check_grid(scale: str, grid: dict[str, Any], n: int) -> dict[str, int]:
    """A scale's data grid {s, nt} (either may be left out): s divides the solver grid n,
    nt >= 3."""
    unknown = sorted(set(grid) - {"s", "nt"})
    if unknown:
        raise ConfigError(f"data.{scale}.grid: unknown key(s) {unknown}; use s, nt")
    out = {}
    if "s" in grid:
        s = check_int(f"data.{scale}.grid.s", grid["s"], minimum=4)
        if n % s:
            raise ConfigError(f"data.{scale}.grid.s = {s} must divide the solver grid n = {n}")
        out["s"] = s
    if "nt" in grid:
        out["nt"] = check_int(f"data.{scale}.grid.nt", grid["nt"], minimum=3)
    return out


def check_resolution(resolution: dict[str, Any], n: int, rtol: float, s: int) -> tuple[int, float]:
    """The (cells, tolerance) of a `solve` resolution, defaulting to (`n`, `rtol`); the cells
    must divide or be a multiple of the data grid's `s`, and be >= 4."""
    unknown = sorted(set(resolution) - {"n", "rtol"})
    if unknown:
        raise ConfigError(f"resolution keys are 'n' and 'rtol', got {unknown}")
    n = resolution.get("n", n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 4 or (n % s and s % n):
        raise ConfigError(f"resolution n must be an integer >= 4 dividing or divisible by {s}")
    rtol = check_real("resolution rtol", resolution.get("rtol", rtol), minimum=0.0, maximum=1.0)
    return n, rtol
