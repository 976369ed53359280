"""The problems' optional capabilities as typed interfaces: what a method or the harness may
ask of a problem beyond `problems.base.Problem` (docs/architecture.md).

A problem has a capability when it defines its methods (`Problem.capabilities` lists them).
Code that needs one takes it with `capability(problem, Proto)`, which checks it and returns the
problem typed as that protocol, so no call site is duck-typed:

    data = capability(problem, OperatorDataSource).operator_data("train", scale)

Also here, because methods and the harness share them: the data scales of operator and family
data, and the assembly of a problem's discrete PDE on whole frames (`frame_residuals`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from torch import Tensor

from problems.base import Characteristics, FamilyData, OperatorData

__all__ = [
    "SCALES",
    "SPLITS",
    "CharacteristicsSource",
    "FamilyDataSource",
    "GridResiduals",
    "OperatorDataSource",
    "Progress",
    "Solvable",
    "capability",
    "data_scale",
    "frame_residuals",
    "uniform_step",
]

SCALES = ("smoke", "standard", "paper")  # data sizes, named for the budgets that use them
SPLITS = ("train", "val", "test")
Progress = Callable[[int, int], None]  # progress(done, total) while generating


def data_scale(budget_name: str) -> str:
    """The data size for a budget: its own name for the presets, `standard` for custom ones."""
    return budget_name if budget_name in SCALES else "standard"


@runtime_checkable
class OperatorDataSource(Protocol):
    """`operator_data`: trajectories from the problem's own solver (`problems.operator`)."""

    context: int

    def operator_data(
        self, split: str, scale: str = "standard", progress: Progress | None = None
    ) -> OperatorData: ...


@runtime_checkable
class Solvable(Protocol):
    """`solve`: the problem's classical solver as a competitor on its operator data."""

    def solve(
        self, start: np.ndarray, inputs: np.ndarray, times: np.ndarray, resolution: dict[str, Any]
    ) -> np.ndarray: ...

    def classical_ladder(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class GridResiduals(Protocol):
    """`grid_residuals`: the discrete PDE on the data's frames (`problems.operator` documents
    the four methods)."""

    def grid_terms(self, u: Tensor, times: Tensor) -> dict[str, Tensor]: ...

    def grid_inputs(self, inputs: Tensor) -> dict[str, Tensor]: ...

    def grid_residuals(self, terms: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def grid_masks(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]: ...


@runtime_checkable
class FamilyDataSource(Protocol):
    """`family_data`: samples of a family of systems with their equations (`ode_family`)."""

    def family_data(
        self, split: str, scale: str = "standard", progress: Progress | None = None
    ) -> FamilyData: ...


@runtime_checkable
class CharacteristicsSource(Protocol):
    """`characteristics`: the Lagrangian form of a 1-D convection–diffusion law (LPINN)."""

    def characteristics(self) -> Characteristics: ...


P = TypeVar("P")


def capability(problem: object, proto: type[P]) -> P:
    """`problem` as `proto`, or a TypeError naming what it lacks (the harness checks a
    method's needs before `fit`, so this fails only on a wiring error)."""
    if not isinstance(problem, proto):
        name = getattr(problem, "name", "") or type(problem).__name__
        raise TypeError(f"problem {name!r} lacks the capability {proto.__name__}")
    return problem


def frame_residuals(
    problem: GridResiduals, u: Tensor, inputs: Tensor, times: Tensor
) -> dict[str, Tensor]:
    """Every `grid_residuals` term `[B, T, *grid]` of whole frames `u` `[B, T, c, *grid]` at
    `times`, with the samples' `inputs` `[B, c_in, *grid]`."""
    terms = problem.grid_terms(u, times)
    for k, v in problem.grid_inputs(inputs).items():
        terms[k] = v.expand(u.shape[0], u.shape[1], *v.shape[2:])
    return problem.grid_residuals(terms)


def uniform_step(times: Any) -> float:
    """The spacing of uniformly spaced `times` (array or tensor), or a ValueError."""
    if isinstance(times, Tensor):
        times = times.detach().cpu()
    t = np.asarray(times, dtype=np.float64)
    step = np.diff(t)
    if len(t) < 2 or not np.allclose(step, step[0], rtol=1e-6, atol=0.0):
        raise ValueError("grid residuals need uniformly spaced frame times")
    return float(step[0])
