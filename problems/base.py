"""The Problem interface: equations, constraints and a trusted reference.

A problem knows its equations (`residual`, written against `Fields`), its constraints
(`conditions`) and a trusted reference solution (`reference`). It knows nothing about methods or
about the harness. Optional capabilities (`characteristics`, `grid_residuals`,
`operator_data`, `symbolic`, `solve`, `trial`) are methods a problem may define; `capabilities`
lists the ones it has.
`trial() -> {field: expression}` is a hard-constraint trial function that satisfies the
problem's conditions whatever the raw outputs are, in the syntax of the PINN's
`output_transform` (expressions over the axes, the raw outputs by field name, the problem's
numeric parameters, the problem's `trial_inputs`, and exp/log/sin/cos/tanh/sqrt/abs/pi).
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from core.cache import cache_dir, cached, content_key
from problems.fields import Fields

__all__ = [
    "Box",
    "Characteristics",
    "Condition",
    "ConfigError",
    "OperatorData",
    "Problem",
    "Reference",
    "TrialInput",
    "check_int",
    "check_real",
    "grid_points",
]


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and how to fix it."""


def check_int(key: str, value: object, minimum: int = 1) -> int:
    """`value` as an int, or a ConfigError naming `key` unless it is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_real(
    key: str,
    value: object,
    minimum: float | None = None,
    strict: bool = True,
    maximum: float | None = None,
) -> float:
    """`value` as a float, or a ConfigError naming `key` unless it is a finite real number,
    `> minimum` (`>=` when not `strict`) and `< maximum` where those are given."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum
    if not ok:
        bounds = [] if minimum is None else [f"{'>' if strict else '>='} {minimum:g}"]
        bounds += [] if maximum is None else [f"< {maximum:g}"]
        text = " " + " and ".join(bounds) if bounds else ""
        raise ConfigError(f"{key} must be a finite number{text}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class TrialInput:
    """A function of the points for trial expressions (`Problem.trial_inputs`), with its
    derivatives in closed form, so that the forward-mode backend needs no autograd for it.

    value: `[N, d]` -> `[N]`, each value from its own point's coordinates (torch operations,
        so that autograd differentiates it too).
    gradient: `[N, d]` -> `[N, d]`, the derivative along every axis.
    second: `(points, i, j)` -> the derivative along axes i and j, `[N]` or a number.
    """

    value: Callable[[Tensor], Tensor]
    gradient: Callable[[Tensor], Tensor]
    second: Callable[[Tensor, int, int], Tensor | float]


OPTIONAL_CAPABILITIES = (
    "characteristics",
    "grid_residuals",
    "operator_data",
    "symbolic",
    "solve",
    "trial",
)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: `bounds[axis] = (lo, hi)`, in the problem's axis order."""

    bounds: dict[str, tuple[float, float]]

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(self.bounds)

    @property
    def lo(self) -> np.ndarray:
        return np.array([b[0] for b in self.bounds.values()], dtype=np.float64)

    @property
    def hi(self) -> np.ndarray:
        return np.array([b[1] for b in self.bounds.values()], dtype=np.float64)

    def sample(self, n: int, generator: torch.Generator | None = None, **fixed: float) -> Tensor:
        """`n` uniform points `[n, d]` (float64, CPU); axes named in `fixed` are held there."""
        u = torch.rand(n, len(self.bounds), generator=generator, dtype=torch.float64)
        cols = []
        for j, (axis, (lo, hi)) in enumerate(self.bounds.items()):
            if axis in fixed:
                cols.append(torch.full((n,), float(fixed[axis]), dtype=torch.float64))
            else:
                cols.append(lo + (hi - lo) * u[:, j])
        return torch.stack(cols, dim=1)


@dataclass(frozen=True)
class Condition:
    """One constraint: where it holds and what must vanish there.

    Arguments:
        name: short label used for its loss term, e.g. `"ic"`, `"bc"`.
        sample: `(n, generator) -> [n, d]` float64 points where the condition holds.
        residual: `Fields -> [n, m]`, zero when the condition is satisfied
            (e.g. `u - g` for Dirichlet data, `u_x - h` for Neumann data).
        n_points: how many points a method should sample by default.
    """

    name: str
    sample: Callable[[int, torch.Generator | None], Tensor]
    residual: Callable[[Fields], Tensor]
    n_points: int


class Reference:
    """Trusted solution values at evaluation points, and a way to evaluate it anywhere.

    Arguments:
        points: `[N, d]` evaluation points (float64).
        values: `[N, k]` trusted values at `points` (float64).
        exact: a formula `[M, d] -> [M, k]`, used by `__call__` when given.
        grid: per-axis 1-D coordinates when `points` is their `meshgrid(indexing="ij")`,
            flattened in C order; enables interpolation and the harness's field plots.
        gauge: columns of `values` defined only up to an additive constant (a pressure);
            `align` shifts a prediction's such columns by the best constant before scoring.
        time_column: the column of `points` holding time, if any: the gauge constant is then
            chosen per time (pressure is fixed only up to a function of time).
    """

    def __init__(
        self,
        points: np.ndarray,
        values: np.ndarray,
        exact: Callable[[np.ndarray], np.ndarray] | None = None,
        grid: Sequence[np.ndarray] | None = None,
        gauge: Sequence[int] = (),
        time_column: int | None = None,
    ) -> None:
        self.gauge = tuple(int(j) for j in gauge)
        self.time_column = time_column
        self.points = np.asarray(points, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        if self.points.shape[0] != self.values.shape[0]:
            raise ValueError("reference points and values differ in length")
        self.exact = exact
        self.grid = None if grid is None else tuple(np.asarray(g, dtype=np.float64) for g in grid)
        if self.grid is not None and np.prod([len(g) for g in self.grid]) != len(self.points):
            raise ValueError("reference grid does not match the number of points")

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Grid shape when the reference lives on a tensor grid."""
        return None if self.grid is None else tuple(len(g) for g in self.grid)

    def align(self, pred: np.ndarray) -> np.ndarray:
        """`pred` (`[N, k]` at `points`) with each gauge column shifted by the constant (per
        time, with a time column) that minimises its L2 distance to the reference: the mean
        difference. A copy; `pred` itself is unchanged. Identity without gauge columns."""
        if not self.gauge:
            return pred
        pred = np.array(pred, dtype=np.float64, copy=True)
        if self.time_column is None:
            groups, n_groups = np.zeros(len(pred), dtype=np.int64), 1
        else:
            _, groups = np.unique(self.points[:, self.time_column], return_inverse=True)
            n_groups = int(groups.max()) + 1 if len(groups) else 0
        counts = np.bincount(groups, minlength=n_groups)
        for j in self.gauge:
            shift = np.bincount(groups, self.values[:, j] - pred[:, j], n_groups) / counts
            pred[:, j] += shift[groups]
        return pred

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Reference values `[M, k]` at arbitrary `points` `[M, d]`."""
        points = np.asarray(points, dtype=np.float64)
        if self.exact is not None:
            return np.asarray(self.exact(points), dtype=np.float64).reshape(len(points), -1)
        if self.grid is None:
            raise ValueError("this reference has neither a formula nor a grid to interpolate on")
        from scipy.interpolate import RegularGridInterpolator
        from scipy.sparse.linalg import spsolve

        vals = self.values.reshape(*self.shape, -1)
        # the spline's linear system solved directly: the default iterative solver's loose
        # tolerance leaves errors ~1e-6 between nodes of fine grids
        interp = RegularGridInterpolator(self.grid, vals, method="cubic", solver=spsolve)
        return interp(points)


def grid_points(*axes: np.ndarray) -> np.ndarray:
    """The points `[N, len(axes)]` of the tensor grid of 1-D `axes`, in `Reference.grid` order
    (`meshgrid(indexing="ij")`, flattened in C order)."""
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


@dataclass(frozen=True)
class Characteristics:
    """The Lagrangian form of a 1-D periodic convection–diffusion law (the `characteristics`
    capability, for LPINN):

        u_t + a(u) u_x = nu u_xx  on a periodic interval `period` of axis `axis`,

    followed along the characteristics X(x0, t) from the label x0 (the position at t = 0):

        dX/dt = a(U),   dU/dt = nu U_xx,   X(x0, 0) = x0,   U(x0, 0) = u0(x0),

    where U(x0, t) = u(X(x0, t), t). For a constant speed X_x0 = 1 and U_xx = U_x0x0 exactly;
    otherwise U_xx = (U_x0 / X_x0)_x0 / X_x0.

    Arguments:
        axis: the spatial axis (the other axis is `t`).
        period: `(lo, hi)`, the spatial period.
        speed: `a(u)`, elementwise on a tensor of states.
        nu: the diffusion coefficient (>= 0).
        u0: the initial state at labels x0 (a tensor), elementwise.
        constant_speed: True when `a` does not depend on u (the characteristics are straight).
    """

    axis: str
    period: tuple[float, float]
    speed: Callable[[Tensor], Tensor]
    nu: float
    u0: Callable[[Tensor], Tensor]
    constant_speed: bool


@dataclass
class OperatorData:
    """Input/output samples for operator learners (docs/architecture.md)."""

    inputs: np.ndarray  # [n, c_in, *grid]
    outputs: np.ndarray  # [n, T, c_out, *grid]
    grid: tuple[np.ndarray, ...]
    times: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class FamilyData:
    """Samples of an ODE family (the `family_data` capability, `problems.ode_family`).
    `values` `[n, T, 3]` is the clean trajectory at `times` `[T]` (zero-padded past `dims`);
    `observed` `[n, input_len, 3]` is the model's input (`values[:, :input_len]` plus noise);
    `system` `[n]` names each sample's system, `params` its parameters and `equations` its
    right-hand sides (strings for sympify)."""

    times: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    dims: np.ndarray
    system: np.ndarray
    params: list[dict[str, float]]
    equations: list[list[str]]
    input_len: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.values)


class Problem(ABC):
    """Base class for problems. Subclasses set `axes`, `fields`, `domain` and implement
    `residual`, `conditions` and `_compute_reference`; `reference()` caches the latter on disk.

    `name` is set by the registry decorator; `params` holds the constructor's hyper-parameters
    (the YAML values) and keys the reference cache.
    """

    name: str = ""
    axes: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    domain: Box
    n_collocation: int = 10_000
    reference_version: int = 1  # bump when the reference algorithm changes
    reference_keys: tuple[str, ...] | None = None  # params the reference depends on (None: all)
    gauge_fields: tuple[str, ...] = ()  # fields defined only up to a constant (pressure)
    field_groups: dict[str, tuple[str, ...]] = {}  # extra pooled rel_l2, e.g. velocity: (u, v)
    smoke: ClassVar[dict[str, Any]] = {}
    """Overrides of the problem's settings for the CI smoke grid (`bench-check`) only, e.g. fewer
    points per step where each point is costly; empty for most problems. Never the equation or
    the reference: the smoke cell guards the same problem, only cheaper."""

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)
        self._reference: Reference | None = None

    # -- equations ------------------------------------------------------------------------
    @abstractmethod
    def residual(self, f: Fields) -> Tensor:
        """PDE/ODE residual `[N, k]` at the points of `f`."""

    @abstractmethod
    def conditions(self) -> list[Condition]:
        """Initial, boundary and other constraints."""

    # -- reference ------------------------------------------------------------------------
    @abstractmethod
    def _compute_reference(self) -> Reference:
        """Compute the trusted reference (called once per parameter set, then cached on disk)."""

    def reference(self) -> Reference:
        """The trusted reference, cached in memory and on disk by a hash of `params`."""
        if self._reference is None:
            ref = self._load_or_compute_reference()
            ref.gauge = tuple(self.fields.index(name) for name in self.gauge_fields)
            timed = self.gauge_fields and self.time_dependent
            ref.time_column = self.axes.index("t") if timed else None
            self._reference = ref
        return self._reference

    def _cache_key(self) -> str:
        keys = self.params if self.reference_keys is None else self.reference_keys
        params = {k: self.params[k] for k in keys}
        name = self.name or type(self).__name__
        return content_key({"name": name, "v": self.reference_version, **params})

    def _load_or_compute_reference(self) -> Reference:
        path = cache_dir() / f"ref-{self.name or type(self).__name__}-{self._cache_key()}.npz"
        computed: list[Reference] = []

        def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
            ref = self._compute_reference()
            computed.append(ref)
            arrays = {"points": ref.points, "values": ref.values}
            arrays.update({f"grid{i:02d}": g for i, g in enumerate(ref.grid or ())})
            return arrays, {}

        arrays, _, _ = cached(path, compute)
        if computed:  # freshly computed: keep the solver's own object (and its exact, if any)
            ref = computed[0]
            if ref.exact is None:
                ref.exact = self.exact
            return ref
        grid = [arrays[k] for k in sorted(k for k in arrays if k.startswith("grid"))] or None
        return Reference(arrays["points"], arrays["values"], exact=self.exact, grid=grid)

    exact: Callable[[np.ndarray], np.ndarray] | None = None
    """Closed-form (or quadrature) solution `[M, d] -> [M, k]`, when the problem has one."""

    # -- capabilities ---------------------------------------------------------------------
    @property
    def capabilities(self) -> set[str]:
        """`residual` and `reference`, plus each optional capability this problem defines."""
        caps = {"residual", "reference"}
        caps.update(c for c in OPTIONAL_CAPABILITIES if callable(getattr(self, c, None)))
        return caps

    def points_of_interest(self) -> dict[str, np.ndarray]:
        """Named points `[M, d]` outside the evaluation set whose relative error against
        `exact` the harness reports as `rel_err_<name>` (e.g. a paper's quantity of interest
        at a point the sampling law rarely visits). None here."""
        return {}

    def trial_inputs(self) -> dict[str, TrialInput]:
        """Named functions of the points that `trial` expressions may use like axes: what an
        expression over single axes cannot say, e.g. |x|^2 in d dimensions. None here."""
        return {}

    @property
    def time_dependent(self) -> bool:
        return "t" in self.axes

    def sample_interior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Uniform collocation points in the domain, `[n, d]` float64."""
        return self.domain.sample(n, generator)

    def invariants(self, points: np.ndarray, values: np.ndarray) -> dict[str, float]:
        """Problem-specific diagnostics of a prediction's values (mass drift...)."""
        return {}

    def diagnostics(self, f: Fields) -> dict[str, Tensor]:
        """Pointwise diagnostics of a differentiable prediction (e.g. `divergence`), each `[N]`;
        the harness reports `<name>_rms` over the fresh residual-scoring points."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"
