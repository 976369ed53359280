"""Operator data: trajectories that a problem's own solver generates, cached on disk.

A problem with the `operator_data` capability mixes in `OperatorMixin` and implements
`generate(split, n, seed, progress)`. `operator_data(split, scale)` then returns the split at
the size its YAML names for that scale (`data: {smoke: {train, val, test}, standard: ...}`),
generated once and cached under `results/cache/` by a hash of everything that determines it
(problem parameters, split, size, seed, `data_version`). A cached file carries a checksum of its
arrays; a corrupted or partial file is detected, reported and regenerated, never used.

Layout (docs/architecture.md): `inputs` `[n, c_in, *grid]` holds the initial state in its first
`c_out` channels, then any parameters broadcast as channels; `outputs` `[n, T, c_out, *grid]` is the
trajectory at `times`, with `outputs[:, 0]` the initial state. Predictors are given the first
`context` frames of each trajectory and predict the rest (`context` is the problem's, so every
method predicts the same frames).

A problem that has only operator data (no single-instance residual task) subclasses
`OperatorProblem`; residual-based methods are then `not_applicable` to it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core import cache
from core.cache import cache_dir, content_key
from problems.base import Condition, ConfigError, OperatorData, Problem, Reference
from problems.capabilities import SCALES, SPLITS, Progress

__all__ = [
    "OperatorMixin",
    "OperatorProblem",
    "after_first_frame",
    "check_sizes",
    "periodic_derivative",
    "time_derivative",
]

log = logging.getLogger(__name__)

SPLIT_SEED = {"train": 0, "val": 1, "test": 2}  # independent draws: test never depends on train


def check_sizes(data: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """The `data:` table of a problem YAML, validated: sizes per scale and split.

    A scale may also give `grid`: the generation settings that differ at that scale (e.g. a
    coarser grid for `smoke`), which the problem reads with `data_grid(scale)` and checks."""
    out: dict[str, dict[str, int]] = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"data must map scales {list(SCALES)} to split sizes, got {data!r}")
    for scale in SCALES:
        sizes = data.get(scale)
        if not isinstance(sizes, Mapping) or set(sizes) - {"grid"} != set(SPLITS):
            raise ConfigError(
                f"data.{scale} must give sizes for exactly {list(SPLITS)} (and optionally "
                f"`grid`, that scale's generation settings), got {sizes!r}"
            )
        if not isinstance(sizes.get("grid", {}), Mapping):
            raise ConfigError(f"data.{scale}.grid must be a mapping, got {sizes['grid']!r}")
        for split, n in ((s, sizes[s]) for s in SPLITS):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"data.{scale}.{split} must be a positive integer, got {n!r}")
        out[scale] = {s: int(sizes[s]) for s in SPLITS}
    unknown = sorted(set(data) - set(SCALES))
    if unknown:
        raise ConfigError(f"data: unknown scale(s) {unknown}; the scales are {list(SCALES)}")
    return out


def time_derivative(u: Tensor, dt: float) -> Tensor:
    """d/dt of frames `u` `[B, T, ...]` spaced `dt` apart by backward differences: BDF2
    (3 u_j - 4 u_j-1 + u_j-2) / (2 dt) from frame 2 on, BDF1 at frame 1, and the second-order
    forward formula at frame 0 (T >= 3).

    Backward, not central: a residual that holds at frames 1..T-1 then IS an implicit
    time-stepping scheme (A-stable BDF2 after one BDF1 step), with one solution frame by frame.
    Central differences decouple odd and even frames, so a least-squares fit of them (hard_moe)
    can satisfy the residual with a frame-to-frame zigzag that is no solution at all."""
    if u.shape[1] < 3:
        raise ValueError(f"a second-order time derivative needs >= 3 frames, got {u.shape[1]}")
    first = (-3 * u[:, :1] + 4 * u[:, 1:2] - u[:, 2:3]) / (2 * dt)
    second = (u[:, 1:2] - u[:, :1]) / dt
    rest = (3 * u[:, 2:] - 4 * u[:, 1:-1] + u[:, :-2]) / (2 * dt)
    return torch.cat([first, second, rest], dim=1)


def periodic_derivative(u: Tensor, dim: int, order: int = 1, length: float = 1.0) -> Tensor:
    """The `order`-th derivative of `u` along `dim`, periodic with period `length`, spectrally
    (the Nyquist mode of an odd derivative is dropped, as for any real derivative)."""
    n = u.shape[dim]
    k = torch.fft.rfftfreq(n, d=length / n, dtype=torch.float64, device=u.device) * 2 * math.pi
    factor = (1j * k) ** order
    if order % 2 and n % 2 == 0:
        factor[-1] = 0.0
    shape = [1] * u.ndim
    shape[dim] = len(k)
    c = torch.fft.rfft(u, dim=dim) * factor.reshape(shape).to(torch.complex128)
    return torch.fft.irfft(c, n=n, dim=dim).to(u.dtype)


def after_first_frame(shape: tuple[int, ...]) -> np.ndarray:
    """A `grid_masks` entry: every point of every frame but the first (the given start, where
    a backward difference has no past)."""
    mask = np.ones(shape, dtype=bool)
    mask[0] = False
    return mask


class OperatorMixin:
    """The `operator_data` capability (see the module doc).

    Subclasses set `data_keys` (the params the data depends on), `context` and `data_version`,
    and implement `generate`. `params` must hold `data` (the sizes table) and `data_seed`.
    """

    name: str
    params: dict[str, Any]
    context: int = 1  # frames of each trajectory given to predictors
    data_version: int = 1  # bump when the generator changes: old caches are then ignored
    data_keys: tuple[str, ...] = ()

    def generate(
        self, split: str, n: int, seed: int, progress: Progress | None = None, scale: str = ""
    ) -> OperatorData:
        """`n` fresh samples drawn with `seed` (float64 is fine; stored as float32), at the
        settings `data_settings(scale)` names for the scale (most problems have one setting)."""
        raise NotImplementedError

    def data_settings(self, scale: str) -> dict[str, Any]:
        """Generation settings that differ by scale (e.g. a coarser grid for `smoke`); part of
        the cache key. None by default: every scale differs only in its sizes."""
        return {}

    def data_grid(self, scale: str) -> dict[str, Any]:
        """The `grid` a scale's `data:` entry gives (unchecked: the problem checks its keys);
        {} where it gives none."""
        return dict(self.params["data"][scale].get("grid", {}))

    # The classical solver as a competitor (the `solve` capability), where a problem has one:
    #
    #   def solve(self, start, inputs, times, resolution) -> np.ndarray
    #
    # from states `start` `[n, c_out, *grid]` (on the data grid) at `times[0]`, the states at
    # `times[1:]`, `[n, len(times) - 1, c_out, *grid]` on the data grid, computed at
    # `resolution` (a dict of problem-specific keys, e.g. {"n": 64, "dt": 0.01}; {} = the
    # resolution that generated the data). `inputs` are the samples' input channels.
    #
    #   def classical_ladder(self) -> list[dict]
    #
    # resolutions from fine to coarse, for the error-against-cost curve of the classical solver.

    # The discrete PDE on the data's frames (the `grid_residuals` capability), for the
    # physics-informed operator learners (`hard_moe`, `soft_constraint`) and the `pde_residual`
    # metric of every operator run. The residual is split into a linear and a pointwise part,
    # so that a learner can form the linear part of each basis function once (on the whole
    # grid, before any domain decomposition) and combine it with coefficients:
    #
    #   def grid_terms(self, u: Tensor, times: Tensor) -> dict[str, Tensor]
    #       frames `u` `[B, T, c_out, *grid]` at uniformly spaced `times` -> named fields, each
    #       `[B, T, *grid]`, every one LINEAR in u (u itself, u_t, u_x, u_xx, the velocity of a
    #       vorticity...); time derivatives by `time_derivative` (backward, T >= 3).
    #   def grid_inputs(self, inputs: Tensor) -> dict[str, Tensor]
    #       the samples' input channels `[B, c_in, *grid]` -> named fixed fields `[B, 1, *grid]`
    #       (a coefficient, a forcing) that the residual uses beside the terms.
    #   def grid_residuals(self, terms: dict[str, Tensor]) -> dict[str, Tensor]
    #       POINTWISE: the terms and inputs at any points (all of one shape) -> each residual
    #       (the PDE, boundary conditions) at those points, in that shape.
    #   def grid_masks(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]
    #       per residual name, a bool array of `shape` = (T, *grid): where it holds.

    # -- cached access ----------------------------------------------------------------------
    def data_sizes(self, scale: str) -> dict[str, int]:
        if scale not in SCALES:
            raise ConfigError(f"data scale must be one of {list(SCALES)}, got {scale!r}")
        return check_sizes(self.params.get("data", {}))[scale]

    def data_key(self, split: str, n: int, scale: str = "standard") -> str:
        params = {k: self.params[k] for k in self.data_keys}
        return content_key(
            {
                "name": self.name or type(self).__name__,
                "v": self.data_version,
                "split": split,
                "n": n,
                "seed": self._split_seed(split),
                "params": params,  # nested: a param named like a key above must not replace it
                "settings": self.data_settings(scale),
            }
        )

    def _split_seed(self, split: str) -> int:
        return int(self.params.get("data_seed", 0)) * 1000 + SPLIT_SEED[split]

    def operator_data(
        self, split: str, scale: str = "standard", progress: Progress | None = None
    ) -> OperatorData:
        """The `split` (train/val/test) at `scale`'s size: from the cache when a valid copy
        exists, else generated (with `progress` calls) and cached. `meta["seconds"]` is the
        generation wall time (also when loaded: the data's cost is part of every run's cost)."""
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
        n = self.data_sizes(scale)[split]
        key = self.data_key(split, n, scale)
        path = cache_dir() / f"op-{self.name or type(self).__name__}-{split}-{key}.npz"
        data = self._load(path)
        if data is not None:
            data.meta["cached"] = True
            return data
        t0 = time.perf_counter()
        data = self.generate(split, n, self._split_seed(split), progress, scale=scale)
        seconds = time.perf_counter() - t0
        data = _as_float32(data)
        _validate(data, n, self.context, f"{self.name}.generate({split!r})")
        data.meta.update(split=split, key=key, seconds=seconds, cached=False, n=n)
        self._save(path, data)
        return data

    def _save(self, path: Any, data: OperatorData) -> None:
        arrays = {"inputs": data.inputs, "outputs": data.outputs, "times": data.times}
        arrays.update({f"grid{i:02d}": g for i, g in enumerate(data.grid)})
        cache.save(path, arrays, data.meta)

    def _load(self, path: Any) -> OperatorData | None:
        """The cached data, or None when the file is unusable (`core.cache.load`)."""
        got = cache.load(path)
        if got is None:
            return None
        arrays, meta = got
        grid = tuple(arrays[k] for k in sorted(arrays) if k.startswith("grid"))
        return OperatorData(arrays["inputs"], arrays["outputs"], grid, arrays["times"], meta)


def _as_float32(data: OperatorData) -> OperatorData:
    return OperatorData(
        np.ascontiguousarray(data.inputs, dtype=np.float32),
        np.ascontiguousarray(data.outputs, dtype=np.float32),
        tuple(np.asarray(g, dtype=np.float64) for g in data.grid),
        np.asarray(data.times, dtype=np.float64),
        dict(data.meta),
    )


def _validate(data: OperatorData, n: int, context: int, where: str) -> None:
    """Shapes agree with the layout, values are finite, the trajectory outlasts the context."""
    d = len(data.grid)
    grid = tuple(len(g) for g in data.grid)
    if data.inputs.shape[0] != n or data.outputs.shape[0] != n:
        raise ValueError(f"{where}: {n} samples asked, got {data.inputs.shape[0]}")
    if data.inputs.ndim != 2 + d or data.inputs.shape[2:] != grid:
        raise ValueError(f"{where}: inputs {data.inputs.shape} do not match the grid {grid}")
    if data.outputs.ndim != 3 + d or data.outputs.shape[3:] != grid:
        raise ValueError(f"{where}: outputs {data.outputs.shape} do not match the grid {grid}")
    if data.outputs.shape[1] != len(data.times) or len(data.times) <= context:
        raise ValueError(f"{where}: {len(data.times)} times for a context of {context} frames")
    if not (np.isfinite(data.inputs).all() and np.isfinite(data.outputs).all()):
        raise ValueError(f"{where}: non-finite values (the solver diverged)")


class OperatorProblem(OperatorMixin, Problem):
    """A problem with operator data only: no single-instance residual task, so methods that
    need `residual` are `not_applicable` to it."""

    def residual(self, f: Any) -> Any:
        raise NotImplementedError(f"{self.name} has operator data only, no residual task")

    def conditions(self) -> list[Condition]:
        return []

    def _compute_reference(self) -> Reference:
        raise NotImplementedError(f"{self.name} has operator data only; see operator_data()")

    @property
    def capabilities(self) -> set[str]:
        caps = {"operator_data"}
        caps.update(c for c in ("solve", "grid_residuals") if callable(getattr(self, c, None)))
        return caps
