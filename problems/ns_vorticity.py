"""2-D incompressible Navier–Stokes in vorticity form on the unit torus: `ns_vorticity` (the
FNO benchmark) and `kolmogorov` (the primitive-variable cases: `problems/navier_stokes.py`).

Fields (w, u, v):

    w_t + u w_x + v w_y - nu (w_xx + w_yy) - f = 0,   w - (v_x - u_y) = 0,   u_x + v_y = 0

with the FNO benchmark's forcing f = 0.1 [sin 2 pi (x + y) + cos 2 pi (x + y)] and an initial
vorticity drawn (seeded) from its Gaussian random field (`kolmogorov`: Kolmogorov forcing
f = -2 pi k scale cos(2 pi k y) with linear drag, + drag w in the first equation); reference
from the batched pseudo-spectral solver `problems/solvers/ns_spectral.py`, the same one that
generates operator data.

Every case reports `rel_l2_velocity` (u and v pooled) and the RMS divergence of the prediction
on fresh points (`divergence_rms`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.registry import register_problem
from problems.base import (
    Box,
    Condition,
    ConfigError,
    Fields,
    Problem,
    Reference,
    check_int,
    check_real,
    grid_points,
)
from problems.constraints import periodic_conditions
from problems.navier_stokes import divergence

__all__ = ["Kolmogorov", "NSVorticity"]


@register_problem("ns_vorticity")
class NSVorticity(Problem):
    """2-D periodic vorticity form on the unit torus with the FNO forcing (see module doc).

    Arguments:
        nu: viscosity (> 0).
        t_final: horizon.
        s: spectral grid size per axis (also the reference grid).
        nt: reference snapshots, linspace(0, t_final, nt).
        dt: solver time step.
        seed: the initial vorticity's draw from the FNO Gaussian random field.
        n_collocation, n_initial, n_boundary: default points (interior, t = 0 on grid nodes,
            periodic pairs per axis).
    """

    axes = ("x", "y", "t")
    fields = ("w", "u", "v")
    field_groups = {"velocity": ("u", "v")}
    reference_keys = ("nu", "t_final", "s", "nt", "dt", "seed")

    def __init__(
        self,
        nu: float = 1e-3,
        t_final: float = 5.0,
        s: int = 64,
        nt: int = 26,
        dt: float = 1e-3,
        seed: int = 0,
        n_collocation: int = 20_000,
        n_initial: int = 2048,
        n_boundary: int = 1000,
    ) -> None:
        nu = check_real("nu", nu, minimum=0.0)
        t_final = check_real("t_final", t_final, minimum=0.0)
        dt = check_real("dt", dt, minimum=0.0)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ConfigError(f"seed must be an integer, got {seed!r}")
        s = check_int("s", s, minimum=8)
        nt = check_int("nt", nt, minimum=2)
        steps = t_final / dt / (nt - 1)
        if abs(steps - round(steps)) > 1e-9 * steps:
            raise ConfigError(
                f"t_final / (nt - 1) ({t_final / (nt - 1):g}) must be a whole number of dt ({dt:g})"
            )
        super().__init__(
            nu=nu,
            t_final=t_final,
            s=s,
            nt=nt,
            dt=dt,
            seed=int(seed),
            n_collocation=check_int("n_collocation", n_collocation),
            n_initial=check_int("n_initial", n_initial),
            n_boundary=check_int("n_boundary", n_boundary),
        )
        self.nu, self.t_final, self.s = nu, t_final, s
        self.n_collocation = self.params["n_collocation"]
        self.domain = Box({"x": (0.0, 1.0), "y": (0.0, 1.0), "t": (0.0, t_final)})
        self._w0: dict[str, Tensor] = {}

    def initial(self) -> tuple[Tensor, Tensor, Tensor]:
        """Initial (w, u, v) on the s x s grid, `[s, s]` each (float64, CPU)."""
        from problems.solvers import ns_spectral as sp

        if not self._w0:
            w0 = sp.grf(1, self.s, seed=self.params["seed"])
            u0, v0 = sp.velocity(w0)
            self._w0 = {"w": w0[0].cpu(), "u": u0[0].cpu(), "v": v0[0].cpu()}
        return self._w0["w"], self._w0["u"], self._w0["v"]

    drag = 0.0  # linear damping coefficient (the term + drag w)

    def forcing(self, x: Tensor, y: Tensor) -> Tensor:
        """The vorticity forcing at points (the FNO benchmark's)."""
        phase = 2 * math.pi * (x + y)
        return 0.1 * (torch.sin(phase) + torch.cos(phase))

    def _forcing_grid(self) -> Tensor:
        from problems.solvers import ns_spectral as sp

        return sp.fno_forcing(self.s)

    def residual(self, f: Fields) -> Tensor:
        w, u, v = f["w"], f["u"], f["v"]
        transport = f.d("w", "t") + u * f.d("w", "x") + v * f.d("w", "y") + self.drag * w
        transport = transport - self.nu * (f.d("w", "x", "x") + f.d("w", "y", "y"))
        transport = transport - self.forcing(f.x, f.y)
        curl = w - (f.d("v", "x") - f.d("u", "y"))
        return torch.stack([transport, curl, divergence(f)], dim=1)

    def diagnostics(self, f: Fields) -> dict[str, Tensor]:
        return {"divergence": divergence(f)}

    def conditions(self) -> list[Condition]:
        """`ic`: (w, u, v) minus the initial fields on random grid nodes at t = 0;
        `bc_x`, `bc_y` (and `_d`): periodic values and normal derivatives."""
        s = self.s

        def sample_ic(n: int, generator: torch.Generator | None = None) -> Tensor:
            idx = torch.randint(0, s, (n, 2), generator=generator)
            t = torch.zeros(n, 1, dtype=torch.float64)
            return torch.cat([idx.double() / s, t], dim=1)

        def ic(f: Fields) -> Tensor:
            i = torch.round(f.x.detach() * s).long().cpu() % s
            j = torch.round(f.y.detach() * s).long().cpu() % s
            target = torch.stack([a[i, j] for a in self.initial()], dim=1)
            pred = torch.stack([f["w"], f["u"], f["v"]], dim=1)
            return pred - target.to(pred)

        n_b = self.params["n_boundary"]
        return [
            Condition("ic", sample_ic, ic, self.params["n_initial"]),
            *periodic_conditions(self.domain, "x", self.fields, n_b),
            *periodic_conditions(self.domain, "y", self.fields, n_b),
        ]

    def _compute_reference(self) -> Reference:
        from problems.solvers import ns_spectral as sp

        w0, _, _ = self.initial()
        nt = self.params["nt"]
        times, w = sp.solve_vorticity(
            w0[None],
            self._forcing_grid(),
            self.nu,
            self.t_final,
            nt - 1,
            dt=self.params["dt"],
            drag=self.drag,
        )
        times = np.asarray(times, dtype=np.float64)
        if len(times) == nt - 1:  # the solver records t > 0 only
            w = torch.cat([w0[None, None].to(w), w], dim=1)
            times = np.concatenate([[0.0], times])
        w = w[0]  # [nt, s, s]
        u, v = sp.velocity(w)
        x = sp.grid(self.s)
        t = np.linspace(0.0, self.t_final, nt)
        if not np.allclose(times, t, atol=1e-9):
            raise RuntimeError(f"solver recorded times {times} instead of {t}")
        # values on the (x, y, t) grid: move time last
        values = np.stack([a.permute(1, 2, 0).cpu().numpy().ravel() for a in (w, u, v)], axis=1)
        return Reference(grid_points(x, x, t), values, grid=(x, x, t))


@register_problem("kolmogorov")
class Kolmogorov(NSVorticity):
    """Kolmogorov flow in vorticity form on the unit torus: the body force
    (scale sin 2 pi k y, 0), i.e. the vorticity forcing f = -2 pi k scale cos(2 pi k y), with
    linear drag (+ drag w), from a GRF initial vorticity. The laminar state
    w = f / (nu (2 pi k)^2 + drag) is steady and exact (checked in the solver's tests).

    Arguments: those of `ns_vorticity`, plus `k` (forcing wavenumber), `scale` and `drag`.
    At the YAML's defaults (nu = 4e-3, s = 64, dt = 5e-4) the reference is converged in space
    to ~3e-7 (against s = 128) and in time to ~4e-6 (from dt = 1e-3 vs 5e-4), relative L2.
    """

    reference_keys = (*NSVorticity.reference_keys, "k", "scale", "drag")

    def __init__(
        self,
        k: int = 2,
        scale: float = 1.0,
        drag: float = 0.1,
        nu: float = 4e-3,
        dt: float = 5e-4,
        **kw: Any,
    ) -> None:
        k = check_int("k", k)
        scale = check_real("scale", scale)
        drag = check_real("drag", drag, minimum=0.0, strict=False)
        super().__init__(nu=nu, dt=dt, **kw)
        if 3 * k >= self.s:
            raise ConfigError(f"k = {k} is removed by the 2/3 rule on s = {self.s}: use s > 3 k")
        self.params.update(k=k, scale=scale, drag=drag)
        self.k, self.scale, self.drag = k, scale, drag

    def forcing(self, x: Tensor, y: Tensor) -> Tensor:
        return -2 * math.pi * self.k * self.scale * torch.cos(2 * math.pi * self.k * y)

    def _forcing_grid(self) -> Tensor:
        from problems.solvers import ns_spectral as sp

        return sp.kolmogorov_forcing(self.s, k=self.k, scale=self.scale)
