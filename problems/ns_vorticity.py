"""2-D incompressible Navier–Stokes in vorticity form on the unit torus: `ns_vorticity` (the
FNO benchmark) and `kolmogorov` (the primitive-variable cases: `problems/navier_stokes.py`).

Fields (w, u, v):

    w_t + u w_x + v w_y - nu (w_xx + w_yy) - f = 0,   w - (v_x - u_y) = 0,   u_x + v_y = 0

with the FNO benchmark's forcing f = 0.1 [sin 2 pi (x + y) + cos 2 pi (x + y)] and an initial
vorticity drawn (seeded) from its Gaussian random field (`kolmogorov`: Kolmogorov forcing
f = -2 pi k scale cos(2 pi k y) with linear drag, + drag w in the first equation); reference
from the batched pseudo-spectral solver `problems/solvers/ns_spectral.py`.

`ns_vorticity` also has operator data (the FNO benchmark's, nu = 1e-3: GRF initial vorticity,
T = 50, a frame per time unit, 64^2; 10 frames in, 41 predicted) from the same solver, `heun`
at dt = 0.02: within 4e-5 (relative l2, worst frame) of dt = 1e-3 and 4e-9 of a 128^2 solve,
at half the cost of dt = 0.01 (`cnab2` at dt = 0.01, the same cost, is 3e-5 off but blows up
at dt = 0.025, `heun` only above 0.05). `solve` and `classical_ladder` make that solver, on a
coarser grid or with a larger step, a competitor.

Every case reports `rel_l2_velocity` (u and v pooled) and the RMS divergence of the prediction
on fresh points (`divergence_rms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from problems.base import (
    Box,
    Condition,
    ConfigError,
    OperatorData,
    Problem,
    Reference,
    check_int,
    check_real,
    grid_points,
)
from problems.capabilities import SCALES, Progress, uniform_step
from problems.constraints import periodic_conditions
from problems.fields import Fields
from problems.navier_stokes import divergence
from problems.operator import (
    OperatorMixin,
    after_first_frame,
    check_sizes,
    periodic_derivative,
    time_derivative,
)
from problems.solvers import ns_spectral as sp
from problems.solvers.ns_spectral import resample

__all__ = ["Kolmogorov", "NSVorticity", "VorticityFlow"]

# trajectories solved together when generating operator data: at 64^2 a batch of ~10 stays in
# a CPU's cache (9 ms per trajectory and time unit on one thread, 18 ms in a batch of 80)
GEN_BATCH = {"cpu": 10, "cuda": 1000}
DEFAULT_DATA = {
    "smoke": {"train": 8, "val": 2, "test": 2, "grid": {"s": 32, "t_final": 12.0, "frames": 12}},
    "standard": {"train": 80, "val": 10, "test": 10},
    "paper": {"train": 1000, "val": 100, "test": 200},
}


class VorticityFlow(Problem):
    """2-D periodic vorticity form on the unit torus with the FNO forcing (see module doc); the
    single-instance task shared by `ns_vorticity` and `kolmogorov`.

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


class NSVorticity(OperatorMixin, VorticityFlow):
    """The FNO benchmark (see module doc), with its operator data: trajectories from GRF
    initial vorticity, input channel [w0], output channel [w], `context` = 10 frames.

    Arguments: those of the single-instance task (`VorticityFlow`), plus
        op_s, op_t_final, op_frames, op_dt, op_scheme: the operator data's grid, horizon,
            recorded frames after t = 0 (times linspace(0, op_t_final, op_frames + 1)), solver
            step and scheme (`problems/solvers/ns_spectral.py`); they leave the single-instance
            reference alone.
        op_device: where the data is generated (`auto`: CUDA when available).
        data: trajectories per scale and split, and a scale's own `grid: {s, t_final, frames}`
            where it differs from op_s, op_t_final, op_frames (the smoke scale's is smaller);
            data_seed: the initial fields' draw.
    """

    name = "ns_vorticity"

    context = 10  # FNO's setting: 10 frames in, the rest predicted
    data_version = 1
    data_keys = ("nu", "op_s", "op_t_final", "op_frames", "op_dt", "op_scheme", "data_seed")

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
        op_s: int = 64,
        op_t_final: float = 50.0,
        op_frames: int = 50,
        op_dt: float = 0.02,
        op_scheme: str = "heun",
        op_device: str = "auto",
        data: dict[str, Any] | None = None,
        data_seed: int = 0,
    ) -> None:
        super().__init__(nu, t_final, s, nt, dt, seed, n_collocation, n_initial, n_boundary)
        if op_scheme not in sp.SCHEMES:
            raise ConfigError(f"op_scheme must be one of {list(sp.SCHEMES)}, got {op_scheme!r}")
        if op_device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"op_device must be auto, cpu or cuda, got {op_device!r}")
        ops = dict(
            op_s=check_int("op_s", op_s, minimum=8),
            op_t_final=check_real("op_t_final", op_t_final, minimum=0.0),
            op_frames=check_int("op_frames", op_frames, minimum=self.context),
            op_dt=check_real("op_dt", op_dt, minimum=0.0),
            op_scheme=op_scheme,
        )
        self.params.update(ops, op_device=op_device, data_seed=int(data_seed))
        self.params["data"] = data if data is not None else DEFAULT_DATA
        check_sizes(self.params["data"])
        for scale in sorted(SCALES, key=lambda s: s != "standard"):
            self._settings(scale)  # validates op_* (at `standard`), then each scale's grid

    def _settings(self, scale: str) -> dict[str, Any]:
        """The trajectory settings (s, t_final, frames, dt, scheme) of a data scale."""
        p = self.params
        out = dict(
            s=p["op_s"], t_final=p["op_t_final"], frames=p["op_frames"], dt=p["op_dt"],
            scheme=p["op_scheme"],
        )  # fmt: skip
        grid = self.data_grid(scale)
        key = f"data.{scale}.grid"
        unknown = sorted(set(grid) - {"s", "t_final", "frames"})
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {unknown}; use s, t_final, frames")
        out.update(grid)
        out["s"] = check_int(f"{key}.s", out["s"], minimum=8)
        out["t_final"] = check_real(f"{key}.t_final", out["t_final"], 0.0)
        out["frames"] = check_int(f"{key}.frames", out["frames"], minimum=self.context)
        key = key if grid else "op_t_final / op_frames"
        _check_steps(key, out["t_final"] / out["frames"], out["dt"])
        return out

    # -- operator data ------------------------------------------------------------------------
    def data_settings(self, scale: str) -> dict[str, Any]:
        """A scale's trajectory settings (its own `data.<scale>.grid` where given); part of the
        cache key."""
        return self._settings(scale)

    def draw_initial(self, n: int, s: int, seed: int) -> Tensor:
        """`n` initial vorticities `[n, s, s]` from the FNO Gaussian random field."""
        return sp.grf(n, s, seed=seed)

    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None, scale: str = ""
    ) -> OperatorData:
        cfg = self._settings(scale or "standard")
        s, frames = cfg["s"], cfg["frames"]
        times = np.linspace(0.0, cfg["t_final"], frames + 1)
        w0 = self.draw_initial(n, s, seed).to(torch.float64)
        out = np.empty((n, frames + 1, 1, s, s), dtype=np.float32)
        out[:, 0, 0] = w0.numpy()
        done = 0

        def tick(b: int) -> None:  # b trajectories advanced by one frame
            nonlocal done
            done += b
            if progress is not None:
                progress(done, n * frames)

        out[:, 1:, 0] = self._advance(w0, times, s, cfg["dt"], cfg["scheme"], tick).numpy()
        x = sp.grid(s)
        return OperatorData(out[:, 0].copy(), out, (x, x), times, {"settings": cfg})

    def _device(self) -> torch.device:
        want = self.params["op_device"]
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device(want)

    def _advance(
        self,
        w: Tensor,
        times: np.ndarray,
        s: int,
        dt: float,
        scheme: str,
        tick: Callable[[int], None] | None = None,
    ) -> Tensor:
        """From `w` `[b, m, m]` at `times[0]`, the states at `times[1:]` `[b, T - 1, m, m]`
        (float64, CPU), solved on an s x s grid (Fourier resampled in and out) in batches of
        `GEN_BATCH`, one `solve_vorticity` call per frame (so a start at any recorded frame
        reproduces the rest of a trajectory: `cnab2` restarts there with a `heun` step)."""
        m, dev = w.shape[-1], self._device()
        f = sp.fno_forcing(s, device=dev)
        chunks = []
        for chunk in torch.split(w, GEN_BATCH.get(dev.type, 10)):
            chunk = resample(chunk.to(device=dev, dtype=torch.float64), s)
            frames = []
            for gap in np.diff(times):
                _, chunk = sp.solve_vorticity(
                    chunk, f, self.nu, float(gap), 1, dt=dt, scheme=scheme
                )
                chunk = chunk[:, 0]
                frames.append(resample(chunk, m).cpu())
                if tick is not None:
                    tick(len(chunk))
            chunks.append(torch.stack(frames, dim=1))
        return torch.cat(chunks)

    # -- the discrete PDE on the frames (grid_residuals; see problems/operator.py) ----------
    def grid_terms(self, u: Tensor, times: Tensor) -> dict[str, Tensor]:
        """w, w_t (backward differences between frames), w_x, w_y, lap w (spectral) and
        the velocity (u, v) of w (spectral, linear in w)."""
        w = u[:, :, 0]
        vx, vy = sp.velocity(w)
        return {
            "w": w,
            "w_t": time_derivative(w, uniform_step(times)),
            "w_x": periodic_derivative(w, -2),
            "w_y": periodic_derivative(w, -1),
            "lap": periodic_derivative(w, -2, 2) + periodic_derivative(w, -1, 2),
            "u": vx,
            "v": vy,
        }

    def grid_inputs(self, inputs: Tensor) -> dict[str, Tensor]:
        s = inputs.shape[-1]
        f = sp.fno_forcing(s, dtype=inputs.dtype, device=inputs.device)
        return {"f": f.expand(inputs.shape[0], 1, s, s)}

    def grid_residuals(self, terms: dict[str, Tensor]) -> dict[str, Tensor]:
        """`pde`: w_t + u w_x + v w_y - nu lap w - f (the vorticity transport equation)."""
        t = terms
        adv = t["u"] * t["w_x"] + t["v"] * t["w_y"]
        return {"pde": t["w_t"] + adv - self.nu * t["lap"] - t["f"]}

    def grid_masks(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {"pde": after_first_frame(shape)}

    # -- the classical solver as a competitor --------------------------------------------------
    def solve(
        self,
        start: np.ndarray,
        inputs: np.ndarray,
        times: np.ndarray,
        resolution: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """The states at `times[1:]` `[n, T - 1, 1, s, s]` from `start` `[n, 1, s, s]` at
        `times[0]`, on the data grid. `resolution`: `s` (solver grid) or `coarsen` (solver grid
        = data grid / coarsen), `dt`, `scheme`; {} is the data's own."""
        start = np.asarray(start, dtype=np.float64)
        m = start.shape[-1]
        res = dict(resolution or {})
        unknown = sorted(set(res) - {"s", "coarsen", "dt", "scheme"})
        if unknown:
            raise ConfigError(f"resolution: unknown key(s) {unknown}; use s, coarsen, dt, scheme")
        coarsen = check_real("resolution.coarsen", res.get("coarsen", 1.0), 1.0, strict=False)
        s = check_int("resolution.s", res.get("s", max(8, round(m / coarsen))), minimum=8)
        dt = check_real("resolution.dt", res.get("dt", self.params["op_dt"]), 0.0)
        scheme = res.get("scheme", self.params["op_scheme"])
        if scheme not in sp.SCHEMES:
            raise ConfigError(
                f"resolution.scheme must be one of {list(sp.SCHEMES)}, got {scheme!r}"
            )
        times = np.asarray(times, dtype=np.float64)
        for gap in np.diff(times):
            _check_steps("resolution.dt", float(gap), dt)
        traj = self._advance(torch.as_tensor(start[:, 0]), times, s, dt, scheme)
        return traj[:, :, None].numpy()

    def classical_ladder(self) -> list[dict[str, Any]]:
        """Fine to coarse: the data's resolution, a 2.5x step, half the grid, then half, 3/8
        and a quarter of the grid at a 5x step (all stable for `heun` at nu = 1e-3; a step
        that does not divide the frame intervals is left out)."""
        dt = self.params["op_dt"]
        rungs: list[dict[str, Any]] = [
            {},
            {"dt": 2.5 * dt},
            {"coarsen": 2},
            {"coarsen": 2, "dt": 5 * dt},
            {"coarsen": 8 / 3, "dt": 5 * dt},
            {"coarsen": 4, "dt": 5 * dt},
        ]
        gaps = [c["t_final"] / c["frames"] for c in map(self._settings, SCALES)]
        return [r for r in rungs if all(_divides(g, r.get("dt", dt)) for g in gaps)]


def _divides(span: float, dt: float) -> bool:
    steps = span / dt
    return round(steps) >= 1 and abs(steps - round(steps)) <= 1e-9 * steps


def _check_steps(key: str, span: float, dt: float) -> None:
    if not _divides(span, dt):
        raise ConfigError(
            f"{key}: the frame interval {span:g} must be a whole number of steps dt = {dt:g}"
        )


class Kolmogorov(VorticityFlow):
    """Kolmogorov flow in vorticity form on the unit torus: the body force
    (scale sin 2 pi k y, 0), i.e. the vorticity forcing f = -2 pi k scale cos(2 pi k y), with
    linear drag (+ drag w), from a GRF initial vorticity. The laminar state
    w = f / (nu (2 pi k)^2 + drag) is steady and exact (checked in the solver's tests).

    Arguments: those of `ns_vorticity`, plus `k` (forcing wavenumber), `scale` and `drag`.
    At the YAML's defaults (nu = 4e-3, s = 64, dt = 5e-4) the reference is converged in space
    to ~3e-7 (against s = 128) and in time to ~4e-6 (from dt = 1e-3 vs 5e-4), relative L2.
    """

    name = "kolmogorov"

    reference_keys = (*VorticityFlow.reference_keys, "k", "scale", "drag")

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
        return sp.kolmogorov_forcing(self.s, k=self.k, scale=self.scale)
