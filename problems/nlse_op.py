"""`nlse_op`: operator data for the focusing NLSE, i psi_t + 1/2 psi_xx + |psi|^2 psi = 0, on a
periodic box [-length/2, length/2) (our conventions: `problems/nlse.py`).

Each sample starts from a seeded random initial field:
- (a fraction 1 - `breather_fraction`) a superposition of 1-3 solitons
  A sech(A (x - x0)) exp(i (v x + theta)), each with random amplitude A, position x0, velocity
  v and phase theta, made periodic by summing its images x + p length (|p| <= 2); or
- (a fraction `breather_fraction`) an Akhmediev breather on the unit background,
  exp(i theta) akhmediev(x - x0, t - t_peak; a), with the parameter a among those whose
  spatial period divides the box (so the field is exactly periodic), a random shift x0, peak
  time t_peak in [0, t_final] and phase theta. It is an exact solution on the box.

Fields are (re, im), two channels; inputs are the initial field; `context` = 1. Trajectories
come from the batched split-step Fourier solver (`split_step`, Yoshida's 4th order by default).
`solve` and `classical_ladder` make the same solver on a coarser grid or with a larger step a
competitor. Operator data only: residual-based methods are `not_applicable` (the single-instance
NLSE cases are `nlse*`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from problems.base import Box, ConfigError, OperatorData, check_int, check_real
from problems.capabilities import Progress
from problems.operator import OperatorProblem, check_sizes
from problems.solvers.nlse_exact import akhmediev, soliton
from problems.solvers.nlse_spectral import SPLIT_SCHEMES, grid, resample, split_step

__all__ = ["NLSEOperator"]

IMAGES = 2  # periodic images summed on each side of a soliton
GEN_BATCH = 100  # samples integrated together
DEFAULT_DATA = {
    "smoke": {"train": 8, "val": 2, "test": 2},
    "standard": {"train": 1000, "val": 100, "test": 100},
    "paper": {"train": 10000, "val": 1000, "test": 1000},
}


def _range(key: str, value: object, lo: float | None = None, hi: float | None = None):
    """A `[low, high]` pair of reals with lo < low <= high < hi (bounds where given)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ConfigError(f"{key} must be a pair [low, high], got {value!r}")
    a = check_real(f"{key}[0]", value[0], lo, maximum=hi)
    b = check_real(f"{key}[1]", value[1], lo, maximum=hi)
    if a > b:
        raise ConfigError(f"{key} must have low <= high, got {value!r}")
    return a, b


class NLSEOperator(OperatorProblem):
    """Random soliton superpositions and Akhmediev breathers (see module doc).

    Arguments:
        length: the box [-length/2, length/2); nx: grid points (= Fourier modes).
        t_final, frames: horizon and recorded frames after t = 0 (times linspace(0, t_final,
            frames + 1)); dt, scheme: the split-step solver's step and scheme.
        solitons: [min, max] solitons per sample; amplitude, velocity: [low, high] of A and v;
            separation: least distance between soliton centres at t = 0.
        breather_fraction: share of breather samples; breather_a: [low, high] of their a.
        data: samples per scale and split; data_seed: the draw of the initial fields.
    """

    name = "nlse_op"

    axes = ("x", "t")
    fields = ("re", "im")
    context = 1
    data_version = 1

    def __init__(
        self,
        length: float = 32.0,
        nx: int = 256,
        t_final: float = 5.0,
        frames: int = 25,
        dt: float = 0.005,
        scheme: str = "yoshida4",
        solitons: Sequence[int] = (1, 3),
        amplitude: Sequence[float] = (0.5, 1.5),
        velocity: Sequence[float] = (-1.5, 1.5),
        breather_fraction: float = 0.2,
        breather_a: Sequence[float] = (0.1, 0.45),
        separation: float = 3.0,
        data: dict[str, Any] | None = None,
        data_seed: int = 0,
    ) -> None:
        length = check_real("length", length, 0.0)
        t_final = check_real("t_final", t_final, 0.0)
        frames = check_int("frames", frames)
        dt = check_real("dt", dt, 0.0)
        if scheme not in SPLIT_SCHEMES:
            raise ConfigError(f"scheme must be one of {list(SPLIT_SCHEMES)}, got {scheme!r}")
        _check_steps("dt", t_final / frames, dt)
        if isinstance(solitons, (str, bytes)) or not isinstance(solitons, Sequence):
            raise ConfigError(f"solitons must be a pair [min, max], got {solitons!r}")
        if len(solitons) != 2:
            raise ConfigError(f"solitons must be a pair [min, max], got {solitons!r}")
        k_lo, k_hi = (check_int(f"solitons[{i}]", k) for i, k in enumerate(solitons))
        if k_lo > k_hi:
            raise ConfigError(f"solitons must have min <= max, got {solitons!r}")
        data = DEFAULT_DATA if data is None else data
        check_sizes(data)
        super().__init__(
            length=length, nx=check_int("nx", nx, minimum=16), t_final=t_final, frames=frames,
            dt=dt, scheme=scheme, solitons=[k_lo, k_hi],
            amplitude=list(_range("amplitude", amplitude, 0.0)),
            velocity=list(_range("velocity", velocity)),
            breather_fraction=check_real("breather_fraction", breather_fraction, 0.0, False),
            breather_a=list(_range("breather_a", breather_a, 0.0, 0.5)),
            separation=check_real("separation", separation, 0.0, strict=False),
            data=data, data_seed=int(data_seed),
        )  # fmt: skip
        if k_hi * self.params["separation"] > length / 2:
            raise ConfigError(
                f"separation {separation!r}: {k_hi} solitons that far apart do not fit easily "
                f"in length {length:g}; use solitons[1] * separation <= length / 2"
            )
        if self.params["breather_fraction"] > 1:
            raise ConfigError(f"breather_fraction must lie in [0, 1], got {breather_fraction!r}")
        self.data_keys = tuple(k for k in self.params if k != "data")
        self.length, self.nx, self.t_final = length, self.params["nx"], t_final
        self.lo = -length / 2
        self.domain = Box({"x": (self.lo, self.lo + length), "t": (0.0, t_final)})
        self.breather_modes = self._breather_modes()
        if self.params["breather_fraction"] > 0 and not self.breather_modes:
            raise ConfigError(
                f"breather_a {breather_a!r}: no Akhmediev breather of that range has a spatial "
                f"period 2 pi / w dividing length = {length:g}; widen breather_a or the box, or "
                "set breather_fraction: 0"
            )

    def _breather_modes(self) -> list[int]:
        """Box modes m whose breather, w = 2 pi m / length, has a = (1 - w^2/4) / 2 in range."""
        a_lo, a_hi = self.params["breather_a"]
        out, m = [], 1
        while (w := 2 * math.pi * m / self.length) < 2.0:
            if a_lo <= 0.5 * (1.0 - 0.25 * w * w) <= a_hi:
                out.append(m)
            m += 1
        return out

    # -- initial fields ---------------------------------------------------------------------
    def draw(self, n: int, seed: int) -> list[dict[str, Any]]:
        """`n` sample descriptions: `{"kind": "solitons", "A", "v", "x0", "theta": lists}` or
        `{"kind": "breather", "a", "x0", "t_peak", "theta"}` (numpy `default_rng(seed)`)."""
        p, rng = self.params, np.random.default_rng(seed)
        hi = self.lo + self.length
        out: list[dict[str, Any]] = []
        for _ in range(n):
            if rng.random() < p["breather_fraction"]:
                w = 2 * math.pi * int(rng.choice(self.breather_modes)) / self.length
                out.append(
                    dict(
                        kind="breather",
                        a=0.5 * (1.0 - 0.25 * w * w),
                        x0=float(rng.uniform(self.lo, hi)),
                        t_peak=float(rng.uniform(0.0, self.t_final)),
                        theta=float(rng.uniform(0.0, 2 * math.pi)),
                    )  # fmt: skip
                )
                continue
            k = int(rng.integers(p["solitons"][0], p["solitons"][1] + 1))
            out.append(
                dict(
                    kind="solitons",
                    A=rng.uniform(*p["amplitude"], k).tolist(),
                    v=rng.uniform(*p["velocity"], k).tolist(),
                    x0=self._positions(rng, k),
                    theta=rng.uniform(0.0, 2 * math.pi, k).tolist(),
                )  # fmt: skip
            )
        return out

    def _positions(self, rng: np.random.Generator, k: int) -> list[float]:
        """`k` soliton centres, pairwise at least `separation` apart on the circle (overlapping
        solitons focus into narrow peaks that the grid would not resolve)."""
        sep, out = self.params["separation"], []
        while len(out) < k:
            x = float(rng.uniform(self.lo, self.lo + self.length))
            d = np.abs(np.asarray(out) - x) % self.length
            if np.all(np.minimum(d, self.length - d) >= sep):
                out.append(x)
        return out

    def initial(self, desc: dict[str, Any], x: np.ndarray) -> np.ndarray:
        """psi(x, 0) of a sample description, complex128."""
        if desc["kind"] == "breather":
            return self.breather(desc, x, np.zeros(1))[0]
        psi = np.zeros(len(x), dtype=np.complex128)
        for a, v, x0, theta in zip(desc["A"], desc["v"], desc["x0"], desc["theta"]):
            for img in range(-IMAGES, IMAGES + 1):
                re, im = soliton(x + img * self.length, 0.0, a, x0, v)
                psi += np.exp(1j * theta) * (re + 1j * im)
        return psi

    def breather(self, desc: dict[str, Any], x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The exact breather sample at times `t` `[T]`, `[T, len(x)]` complex128."""
        re, im = akhmediev(x[None, :] - desc["x0"], t[:, None] - desc["t_peak"], desc["a"])
        return np.exp(1j * desc["theta"]) * (re + 1j * im)

    # -- operator data ----------------------------------------------------------------------
    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None, scale: str = ""
    ) -> OperatorData:
        p = self.params
        x = grid(self.nx, self.length, self.lo)
        times = np.linspace(0.0, self.t_final, p["frames"] + 1)
        descs = self.draw(n, seed)
        psi0 = np.stack([self.initial(d, x) for d in descs])
        out = np.empty((n, len(times), 2, self.nx), dtype=np.float32)
        out[:, 0] = _channels(psi0)
        for i in range(0, n, GEN_BATCH):
            traj = self._advance(psi0[i : i + GEN_BATCH], times, self.nx, p["dt"], p["scheme"])
            out[i : i + len(traj), 1:] = _channels(traj)
            if progress is not None:
                progress(i + len(traj), n)
        return OperatorData(out[:, 0].copy(), out, (x,), times, {"samples": descs})

    def _advance(
        self, psi: np.ndarray, times: np.ndarray, nx: int, dt: float, scheme: str
    ) -> np.ndarray:
        """From `psi` `[b, m]` at `times[0]`, psi at `times[1:]` `[b, T - 1, m]`, solved with
        `nx` modes (Fourier resampled in and out)."""
        m = psi.shape[-1]
        traj = split_step(resample(psi, nx), self.length, times[1:] - times[0], dt, scheme)
        return resample(traj, m)

    # -- the classical solver as a competitor -----------------------------------------------
    def solve(
        self,
        start: np.ndarray,
        inputs: np.ndarray,
        times: np.ndarray,
        resolution: dict[str, Any] | None = None,
    ) -> np.ndarray:
        """(re, im) at `times[1:]` `[n, T - 1, 2, nx]` from `start` `[n, 2, nx]` at `times[0]`,
        on the data grid. `resolution`: `nx` (solver grid) or `coarsen` (data grid / coarsen),
        `dt`, `scheme`; {} is the data's own."""
        start = np.asarray(start, dtype=np.float64)
        m = start.shape[-1]
        res = dict(resolution or {})
        unknown = sorted(set(res) - {"nx", "coarsen", "dt", "scheme"})
        if unknown:
            raise ConfigError(f"resolution: unknown key(s) {unknown}; use nx, coarsen, dt, scheme")
        coarsen = check_real("resolution.coarsen", res.get("coarsen", 1.0), 1.0, strict=False)
        nx = check_int("resolution.nx", res.get("nx", max(16, round(m / coarsen))), minimum=4)
        dt = check_real("resolution.dt", res.get("dt", self.params["dt"]), 0.0)
        scheme = res.get("scheme", self.params["scheme"])
        if scheme not in SPLIT_SCHEMES:
            raise ConfigError(f"resolution.scheme must be one of {list(SPLIT_SCHEMES)}")
        times = np.asarray(times, dtype=np.float64)
        for gap in np.diff(times):
            _check_steps("resolution.dt", float(gap), dt)
        psi = start[:, 0] + 1j * start[:, 1]
        return _channels(self._advance(psi, times, nx, dt, scheme)).astype(np.float64)

    def classical_ladder(self) -> list[dict[str, Any]]:
        """Fine to coarse: the data's resolution, then larger steps, Strang, and coarser grids
        (rungs whose step does not divide the frame interval are left out)."""
        dt = self.params["dt"]
        rungs: list[dict[str, Any]] = [
            {},
            {"dt": 4 * dt},
            {"dt": 4 * dt, "scheme": "strang"},
            {"coarsen": 2, "dt": 4 * dt},
            {"coarsen": 2, "dt": 10 * dt, "scheme": "strang"},
            {"coarsen": 4, "dt": 10 * dt, "scheme": "strang"},
        ]
        gap = self.t_final / self.params["frames"]
        return [r for r in rungs if _divides(gap, r.get("dt", dt))]


def _channels(psi: np.ndarray) -> np.ndarray:
    """Complex `[..., m]` as (re, im) channels `[..., 2, m]`."""
    return np.stack([psi.real, psi.imag], axis=-2)


def _divides(span: float, dt: float) -> bool:
    steps = span / dt
    return round(steps) >= 1 and abs(steps - round(steps)) <= 1e-9 * steps


def _check_steps(key: str, span: float, dt: float) -> None:
    if not _divides(span, dt):
        raise ConfigError(
            f"{key}: the frame interval {span:g} must be a whole number of steps dt = {dt:g}"
        )
