"""The Method interface, the Budget every method respects, and the Predictor it returns.

A method declares the problem capabilities it `needs` and implements
`fit(problem, budget, report) -> Predictor`. It calls `report(step, ...)` after every optimiser
step; the harness logs, evaluates on its schedule, and answers True when the budget is spent.
A method never sees reference values and never scores itself.
"""

from __future__ import annotations

import importlib.util
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

from problems.base import ConfigError, Problem
from problems.fields import Fields

__all__ = [
    "Budget",
    "Checkpointable",
    "count_params",
    "FamilyPredictor",
    "Method",
    "OperatorPredictor",
    "Predictor",
    "Report",
    "TorchPredictor",
]


@dataclass(frozen=True)
class Budget:
    """Caps on one run; whichever is hit first ends training.

    Arguments:
        name: preset name (`smoke`, `standard`, `paper`) or `custom`.
        steps: optimiser steps (Adam steps plus L-BFGS iterations).
        evals: loss-and-gradient evaluations (L-BFGS line-search evaluations count).
        seconds: wall-clock training time.
        eval_every: the harness evaluates on the reference every this many steps.
        samples: training samples, for operator learners.
        points: most training points per loss term in one step, for pointwise methods
            (collocation points, and the points of each condition); None: the method's own.
    """

    name: str = "custom"
    steps: int = 1000
    evals: int | None = None
    seconds: float | None = None
    eval_every: int = 100
    samples: int | None = None
    points: int | None = None

    def __post_init__(self) -> None:
        for key in ("steps", "evals", "eval_every", "samples", "points"):
            v = getattr(self, key)
            if v is None and key in ("steps", "eval_every"):
                raise ConfigError(f"budget.{key} must be set (a positive integer)")
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(f"budget.{key} must be a positive integer, got {v!r}")
        s = self.seconds
        if s is not None and (
            isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s <= 0
        ):
            raise ConfigError(f"budget.seconds must be a positive number of seconds, got {s!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "custom") -> Budget:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown budget key(s) {unknown}; valid keys are {sorted(known - {'name'})}"
            )
        return cls(**{"name": name, **d})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(module: torch.nn.Module) -> int:
    """Real parameters of `module`: a complex parameter counts as two (its real and imaginary
    parts), so nets that store spectral weights as complex or as real pairs compare alike."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in module.parameters())


class Checkpointable(Protocol):
    """Training state a method registers with `report.checkpoint`: `state_dict()` returns
    everything its loop needs to continue exactly where it was (tensors and plain containers:
    parameters, optimiser states, counters, generator states, sampled points), and
    `load_state_dict(state)` puts a returned state back."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Report(Protocol):
    """The harness's callback, passed to `Method.fit`.

    `report(step, evals=..., predictor=..., **scalars)` records the scalars (loss terms) at
    `step`, evaluates `predictor` on the reference when the schedule says so, and returns True
    when the method must stop (a budget cap is hit). `evals` is the cumulative count of loss
    evaluations; `predictor` need only be passed once (the latest one is kept).
    `report.evals_left()` tells an optimiser with inner evaluations (L-BFGS) how many remain.
    `report.exclude(name, seconds)` declares seconds of one-off preparation inside `fit` that
    are not training (`compile`: `torch.compile`): they leave the training clock and its
    `seconds` cap and are reported as the metric `<name>_seconds`, for every method alike.
    `report.checkpoint(state)` registers the loop's `Checkpointable` state once, after it is
    built and before the first step: the harness then saves it on its own schedule (inside
    `report` calls) and, when the run continues an earlier one, loads it right away and returns
    the step to continue after (0 for a fresh start). A method that never calls it starts
    over when resumed.
    """

    def __call__(
        self,
        step: int,
        *,
        evals: int | None = None,
        predictor: Predictor | None = None,
        **scalars: float,
    ) -> bool: ...

    def evals_left(self) -> int | None: ...

    def exclude(self, name: str, seconds: float) -> None: ...

    def checkpoint(self, state: Checkpointable) -> int: ...


class Predictor(ABC):
    """Maps evaluation points `[N, d]` to predictions `[N, k]` (numpy, float64)."""

    @abstractmethod
    def __call__(self, points: np.ndarray) -> np.ndarray: ...

    def fields(self, points: Tensor) -> Fields | None:
        """A differentiable view at `points` for residual scoring, or None if not available."""
        return None

    def n_params(self) -> int:
        return 0


class OperatorPredictor(Predictor):
    """What an operator learner returns: it advances trajectories (see `problems/operator.py`
    for the data layout). The harness scores it: one-step error (true frames in the window),
    full-rollout error (its own frames), error over rollout time, inference seconds.

    `rollout(window, inputs, steps)`: from `window` `[n, H, c_out, *grid]`, the last `H` known
    frames (H = the problem's `context`; a method may use fewer of them) and `inputs`
    `[n, c_in, *grid]`, the next `steps` frames `[n, steps, c_out, *grid]` (numpy, float64).

    `whole_window`: True for predictors that compute a fixed window of frames per call (a
    space-time model such as `hard_moe`): their one step is the first frame of a whole window,
    so the harness does not score one-step errors for them (one window per start frame).

    `diagnostics()`: what the method itself measured during its last `rollout` call (e.g. the
    residual of its own constraint solve), logged as `method/<name>`; never a score against the
    truth (the harness computes those).
    """

    whole_window: ClassVar[bool] = False

    @abstractmethod
    def rollout(self, window: np.ndarray, inputs: np.ndarray, steps: int) -> np.ndarray: ...

    def diagnostics(self) -> dict[str, float]:
        return {}

    def __call__(self, points: np.ndarray) -> np.ndarray:
        raise TypeError("an operator predictor advances trajectories: call rollout()")


class FamilyPredictor(Predictor):
    """What a multi-operator learner returns (problem capability `family_data`, e.g.
    `ode_family`; see `problems/ode_family.py` for the data). The harness scores it on held-out
    parameters (`test`) and held-out systems (`test_systems`), on the window after the observed
    part, and, for a method that writes equations, the fraction of its decoded expressions
    that parse and the error of the trajectories they integrate to.

    `predict(observed, obs_times, query_times, dims, symbols)`: `observed` `[n, L, 3]` (the
    first L samples of each trajectory, possibly noisy, zero-padded past `dims` `[n]`) at
    `obs_times` `[L]`; `symbols` is one list of equation strings per sample (the right-hand
    sides over t, x0..x2 that `sympy.sympify` parses, possibly corrupted; the method tokenises
    them at its own precision) or None when the harness gives no symbols; returns the
    trajectories `[n, Q, 3]` at `query_times` `[Q]` (numpy, float64).

    `equations(observed, obs_times, dims, symbols)`: one decoded token list per sample
    (`core.symbolic.decode_system` reads it), or None for a method without an equation
    output (the default).
    """

    @abstractmethod
    def predict(
        self,
        observed: np.ndarray,
        obs_times: np.ndarray,
        query_times: np.ndarray,
        dims: np.ndarray,
        symbols: list[list[str]] | None,
    ) -> np.ndarray: ...

    def equations(
        self,
        observed: np.ndarray,
        obs_times: np.ndarray,
        dims: np.ndarray,
        symbols: list[list[str]] | None,
    ) -> list[list[str]] | None:
        return None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        raise TypeError("a family predictor maps observed windows: call predict()")


class TorchPredictor(Predictor):
    """A predictor around a torch module mapping `[N, d]` to `[N, k]`.

    `fields_type`: the `Fields` class of `fields` (residual scoring), built as
    `fields_type(points, axes, names, model=model)`; plain autograd `Fields` by default.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        axes: tuple[str, ...],
        names: tuple[str, ...],
        batch: int = 65_536,
        fields_type: Callable[..., Fields] = Fields,
    ) -> None:
        self.model = model
        self.axes = axes
        self.names = names
        self.batch = batch
        self.fields_type = fields_type

    @property
    def _like(self) -> Tensor:
        return next(self.model.parameters())

    def __call__(self, points: np.ndarray) -> np.ndarray:
        like = self._like
        out = []
        with torch.no_grad():
            for i in range(0, len(points), self.batch):
                x = torch.as_tensor(
                    points[i : i + self.batch], dtype=like.dtype, device=like.device
                )
                out.append(self.model(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.names)))

    def fields(self, points: Tensor) -> Fields:
        like = self._like
        x = points.to(dtype=like.dtype, device=like.device).detach().requires_grad_(True)
        return self.fields_type(x, self.axes, self.names, model=self.model)

    def n_params(self) -> int:
        return count_params(self.model)


class Method(ABC):
    """Base class for methods. The constructor takes the YAML hyper-parameters as keywords.

    The harness sets `device`, `dtype` and `seed` before calling `fit`.
    """

    name: str = ""
    needs: ClassVar[frozenset[str]] = frozenset({"residual"})
    default_dtype: ClassVar[torch.dtype] = torch.float64
    """The precision `dtype=auto` (the default) gives this method."""
    fixed_keys: ClassVar[tuple[str, ...]] = ()
    """Settings of a base class's constructor that this method sets itself: not its settings
    (`bench.settings` refuses them as unknown keys)."""
    smoke: ClassVar[dict[str, Any]] = {}
    """Hyper-parameter overrides for the CI smoke grid (`bench-check`) only, e.g. a smaller
    model so that every cell runs in seconds; empty for most methods."""
    extra: ClassVar[tuple[str, str] | None] = None
    """`(extra, package)` for a method that runs a package from an optional extra of
    `pyproject.toml` (a peer's own code, `("compare", "deepxde")`): it imports the package
    inside `fit` only, and `applicable` refuses every cell while the package is not installed."""

    def __init__(self) -> None:
        self.device = torch.device("cpu")
        self.dtype = torch.float64
        self.seed = 0

    @abstractmethod
    def fit(self, problem: Problem, budget: Budget, report: Report) -> Predictor:
        """Train on `problem` within `budget`, calling `report` after every step."""

    def needs_for(self, problem: Problem) -> frozenset[str]:
        """The capabilities this method needs on `problem`: `needs`, unless the method has
        one mode per kind of problem (`hard_moe`: an FNO on operator data, an MLP on a
        single instance)."""
        return self.needs

    def applicable(self, problem: Problem) -> str | None:
        """None when this method can run on `problem`, else a one-line reason why not."""
        missing = sorted(self.needs_for(problem) - problem.capabilities)
        if missing:
            return (
                f"method {self.name!r} needs {missing}, which problem {problem.name!r} "
                f"does not provide (it has {sorted(problem.capabilities)})"
            )
        if self.extra is not None and importlib.util.find_spec(self.extra[1]) is None:
            return (
                f"method {self.name!r} needs the optional extra: pip install -e .[{self.extra[0]}]"
            )
        return None

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run's seed (for reproducible sampling)."""
        g = torch.Generator()
        g.manual_seed(self.seed * 1_000_003 + offset)
        return g
