"""The optimiser loop shared by pointwise methods: Adam steps, then L-BFGS iterations, under
the harness's budget.

A method's trainer subclasses `StepTrainer`: it sets `params`, `predictor`, `dtype`,
`lbfgs_history` and `lbfgs_max_eval`, and implements `losses()` (the unweighted terms),
`total(losses)` and `scalars(total, losses)` (what `report` logs), plus `adam_step()` when it
trains with Adam. `train(trainer, adam_steps, lbfgs, budget, report)` is the loop every such
method's `fit` runs: each step is reported, each loss evaluation (L-BFGS line searches
included) counts against `budget.evals`.

Checkpoints: a trainer is the `Checkpointable` state `train` registers with the harness
(`report.checkpoint`). `state_dict` holds the parameters, Adam's and L-BFGS's states (its
curvature pairs and line-search memory), the counters, the cached evaluations L-BFGS re-reads,
and `extra_state()`: what a trainer adds of its own (sampled points, its generators, loss
weights). A run resumed from it continues with the same iterates as one never stopped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from methods.base import Budget, Predictor, Report

__all__ = ["StepTrainer", "adam", "train"]

Entry = tuple[Tensor, float, list[Tensor], dict[str, float]]


class _OutOfEvals(Exception):
    """Raised inside the L-BFGS closure instead of exceeding the evaluation budget."""


def adam(params: list[Tensor], lr: float, **kwargs: object) -> torch.optim.Adam:
    """Adam, with the fused kernel where this torch build has it (same updates, fewer ops)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, **kwargs)


class StepTrainer(ABC):
    """One training run's parameters, loss and optimiser state, stepped by `train`."""

    params: list[Tensor]
    predictor: Predictor
    dtype: torch.dtype = torch.float64
    lbfgs_history: int = 50
    lbfgs_max_eval: int = 25
    adam: torch.optim.Adam  # set by trainers that train with Adam
    adam_steps: int = 0
    compile_seconds: float = 0.0  # spent compiling the loss when the trainer was built

    def __init__(self) -> None:
        self.lbfgs: torch.optim.LBFGS | None = None
        self.lbfgs_iters = 0
        self.evals = 0
        self._cache: list[Entry] = []

    @abstractmethod
    def losses(self) -> list[Tensor]:
        """The unweighted loss terms at the current parameters."""

    @abstractmethod
    def total(self, losses: list[Tensor]) -> Tensor:
        """The weighted sum that the optimisers minimise."""

    @abstractmethod
    def scalars(self, total: Tensor, losses: list[Tensor]) -> dict[str, float]:
        """The scalars `report` logs for one step."""

    def adam_step(self) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} does not train with Adam")

    def adam_update(self, lr: float, losses: list[Tensor]) -> dict[str, float]:
        """One update of `self.adam` at learning rate `lr` on the total of `losses`; counts the
        step and the evaluation and returns the scalars to report."""
        for group in self.adam.param_groups:
            group["lr"] = lr
        total = self.total(losses)
        self.adam.zero_grad(set_to_none=True)
        total.backward()
        self.adam.step()
        self.adam_steps += 1
        self.evals += 1
        return self.scalars(total, losses)

    def new_loss(self) -> None:
        """The loss changed (fresh points): forget L-BFGS's curvature pairs and cached values."""
        self._cache.clear()
        self.lbfgs = None

    # -- L-BFGS -----------------------------------------------------------------------------
    def lbfgs_step(self, evals_left: int | None = None) -> dict[str, float] | None:
        """One L-BFGS iteration; None when it cannot or need not go on.

        Every loss evaluation counts toward `evals`, except a repeat at parameters already
        evaluated (torch's L-BFGS re-evaluates the accepted point at the start of each `step`;
        the result is served from a cache). The iteration is capped so that `evals` grows by at
        most `evals_left`. If an iteration makes no progress, L-BFGS restarts from steepest
        descent once; a second stall in a row ends it.
        """
        limit = None if evals_left is None else self.evals + evals_left
        for _ in range(2):
            x0 = self._flat()
            scalars = self._lbfgs_iteration(x0, limit)
            if scalars is None:
                return None
            if not torch.equal(x0, self._flat()):
                return scalars
            self.lbfgs = None  # stalled: forget the curvature pairs and try again
        return None

    def _new_lbfgs(self) -> torch.optim.LBFGS:
        return torch.optim.LBFGS(
            self.params,
            lr=1.0,
            max_iter=1,
            max_eval=self.lbfgs_max_eval,
            tolerance_grad=0.0,
            tolerance_change=0.0,
            history_size=self.lbfgs_history,
            line_search_fn="strong_wolfe",
        )

    def _lbfgs_iteration(self, x0: Tensor, limit: int | None) -> dict[str, float] | None:
        if self.lbfgs is None:
            self.lbfgs = self._new_lbfgs()
        start = self._lookup(x0)
        cap = self.lbfgs_max_eval
        if limit is not None:
            # torch's step: one evaluation at x0 (free when cached), then at most `max_eval`
            left = limit - self.evals
            cap = min(cap, left if start is not None else left - 1)
            if cap < 1:
                return None
        self.lbfgs.param_groups[0]["max_eval"] = cap
        try:
            self.lbfgs.step(lambda: self._closure(limit))
        except _OutOfEvals:  # a safety net: the cap above keeps this from happening
            self._set_flat(x0)
            return None
        self.lbfgs_iters += 1
        hit = self._lookup(self._flat()) or start or self._cache[-1]
        return hit[3]

    def _flat(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def _set_flat(self, x: Tensor) -> None:
        i = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(x[i : i + p.numel()].view_as(p))
                i += p.numel()

    def _lookup(self, x: Tensor) -> Entry | None:
        for entry in reversed(self._cache):
            if torch.equal(entry[0], x):
                return entry
        return None

    def _closure(self, limit: int | None) -> Tensor:
        x = self._flat()
        hit = self._lookup(x)
        if hit is not None:
            for p, g in zip(self.params, hit[2]):
                p.grad = g.clone()
            return torch.tensor(hit[1], dtype=self.dtype)
        if limit is not None and self.evals >= limit:
            raise _OutOfEvals
        losses = self.losses()
        total = self.total(losses)
        self.lbfgs.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        total.backward()
        self.evals += 1
        grads = [p.grad.detach().clone() for p in self.params]  # type: ignore[union-attr]
        self._cache.append((x, total.item(), grads, self.scalars(total, losses)))
        del self._cache[: -(self.lbfgs_max_eval + 2)]
        return total.detach()

    # -- checkpoints ------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """A trainer's own state beyond parameters, optimisers and counters (module doc)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Put back what `extra_state` returned."""
        if state:
            raise NotImplementedError(f"{type(self).__name__} saved state it cannot load")

    def state_dict(self) -> dict[str, Any]:
        adam_opt = getattr(self, "adam", None)
        return {
            "params": [p.detach() for p in self.params],
            "adam": None if adam_opt is None else adam_opt.state_dict(),
            "lbfgs": None if self.lbfgs is None else self.lbfgs.state_dict(),
            "adam_steps": self.adam_steps,
            "lbfgs_iters": self.lbfgs_iters,
            "evals": self.evals,
            "cache": [list(entry) for entry in self._cache],
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"], strict=True):
                p.copy_(saved)
        if state["adam"] is not None:
            self.adam.load_state_dict(state["adam"])
        self.lbfgs = None
        if state["lbfgs"] is not None:
            self.lbfgs = self._new_lbfgs()
            self.lbfgs.load_state_dict(state["lbfgs"])
        self.adam_steps = int(state["adam_steps"])
        self.lbfgs_iters = int(state["lbfgs_iters"])
        self.evals = int(state["evals"])
        like = self.params[0]  # a checkpoint is read onto the CPU
        self._cache = [
            (x.to(like.device), float(v), [t.to(like.device) for t in g], dict(s))
            for x, v, g, s in state["cache"]
        ]
        self.load_extra_state(state["extra"])


def train(
    tr: StepTrainer, adam_steps: int, lbfgs: bool, budget: Budget, report: Report
) -> Predictor:
    """`adam_steps` Adam steps, then (with `lbfgs`) L-BFGS iterations until the budget is spent
    or L-BFGS can make no further progress; every step reported. Returns the final predictor.
    The trainer's compilation time is declared to `report` (not training: the README). The
    trainer is registered for checkpoints first: a resumed run continues after the step its
    checkpoint holds, in whichever phase that was."""
    step = report.checkpoint(tr)
    if tr.compile_seconds:
        report.exclude("compile", tr.compile_seconds)
    scalars: dict[str, float] = {}
    for _ in range(max(adam_steps - step, 0)):
        step += 1
        scalars = tr.adam_step()
        if report(step, evals=tr.evals, predictor=tr.predictor, **scalars):
            return tr.predictor
    if not lbfgs:
        return tr.predictor
    reported = tr.evals
    while step < budget.steps:
        new = tr.lbfgs_step(report.evals_left())
        if new is None:  # converged, or no evaluation left for another iteration
            if tr.evals > reported:  # evaluations spent on a stalled iteration still count
                report(step, evals=tr.evals, predictor=tr.predictor, **scalars)
            break
        scalars, reported = new, tr.evals
        step += 1
        if report(step, evals=tr.evals, predictor=tr.predictor, **scalars):
            break
    return tr.predictor
