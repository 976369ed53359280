"""The minibatch training loop shared by the operator learners (`fno`, `dymixop`, `hard_moe`,
`soft_constraint`), `prose` and `hard_moe`'s MLP backbone.

`fit_minibatch` owns everything but the loss: epochs over a seeded permutation of the `n`
training samples, cut into batches; per batch `model.train()`, the method's
`batch_loss(idx) -> (loss, scalars)`, backward, optional gradient-norm clipping, the optimiser
step and one step of its learning-rate scheduler (a `torch.optim.lr_scheduler`); then
`selector.after(step, scalars)` and `report(step, evals=step, predictor=..., **scalars)`, until
`report` says stop; then `selector.finish(step)`. The logged scalars are `loss`, `lr` (the
learning rate the step used) and the method's own, in that order.

Random numbers: one `torch.randperm(n, generator=gen)` per epoch, then whatever `batch_loss`
draws, batch by batch, so a method that draws from the same generator sees one stream.

Checkpoints: the loop registers its state with `report.checkpoint` (`MinibatchState`: the
model's and the optimiser's and the scheduler's states, the generator, the epoch's
permutation and the position in it, the selector's state, and `extra`: state of the method's
own that `batch_loss` changes, e.g. another generator it draws from or a warm start), so a
resumed run continues with the very batch it would have drawn next.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from methods.base import Checkpointable, Predictor, Report

__all__ = ["MinibatchState", "Selection", "fit_minibatch"]


class Selection(Protocol):
    """Checkpoint selection during training (`methods.operator.Selector`): `after` may add
    scalars (a validation score) to a step's before it is reported; `finish` runs once, at the
    end."""

    def after(self, step: int, scalars: dict[str, float]) -> None: ...

    def finish(self, step: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class MinibatchState:
    """What `fit_minibatch` needs to continue where it was (the `Checkpointable` it
    registers): the training objects' states, and the epoch's order and position in it."""

    def __init__(
        self,
        model: nn.Module,
        opt: torch.optim.Optimizer,
        schedule: LRScheduler,
        gen: torch.Generator | None,
        selector: Selection | None,
        extra: Checkpointable | None = None,
    ) -> None:
        self.model, self.opt, self.schedule, self.gen = model, opt, schedule, gen
        self.selector, self.extra = selector, extra
        self.order: Tensor | None = None  # this epoch's sample order
        self.pos = 0  # the next batch of the epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "schedule": self.schedule.state_dict(),
            "gen": None if self.gen is None else self.gen.get_state(),
            "order": self.order,
            "pos": self.pos,
            "selector": None if self.selector is None else self.selector.state_dict(),
            "extra": None if self.extra is None else self.extra.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.schedule.load_state_dict(state["schedule"])
        if self.gen is not None:
            self.gen.set_state(state["gen"])
        self.order, self.pos = state["order"], int(state["pos"])
        if self.selector is not None:
            self.selector.load_state_dict(state["selector"])
        if self.extra is not None:
            self.extra.load_state_dict(state["extra"])


def fit_minibatch(
    batch_loss: Callable[[Tensor], tuple[Tensor, dict[str, float]]],
    *,
    n: int,
    batch_size: int,
    gen: torch.Generator | None,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    schedule: LRScheduler,
    report: Report,
    predictor: Predictor,
    clip: float = 0.0,
    drop_last: bool = False,
    selector: Selection | None = None,
    extra: Checkpointable | None = None,
) -> None:
    """Train until `report` says stop (see the module doc).

    `batch_loss` gets the sample indices of one batch (int64, on the CPU) and returns the loss
    to minimise and its own scalars to log. `gen` None visits the samples in order (no draw).
    `drop_last` skips each epoch's last partial batch. `clip` > 0 clips the gradient norm of
    `model.parameters()` to it. `schedule` steps once per optimiser step (step 0 runs at the
    learning rate it was built with). `extra` joins the loop's checkpoints (module doc).
    """
    stop = n - batch_size + 1 if drop_last else n
    batches = range(0, stop, batch_size)
    if not batches:
        raise ValueError(f"no batch of {batch_size} in {n} samples with drop_last")
    st = MinibatchState(model, opt, schedule, gen, selector, extra)
    register = getattr(report, "checkpoint", None)  # a bare function as `report` has none
    step = 0 if register is None else register(st)
    while True:
        if st.order is None or st.pos >= len(batches):
            st.order = torch.arange(n) if gen is None else torch.randperm(n, generator=gen)
            st.pos = 0
        order = st.order
        while st.pos < len(batches):
            i = batches[st.pos]
            st.pos += 1
            model.train()
            loss, own = batch_loss(order[i : i + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            scalars = {"loss": float(loss.detach()), "lr": float(schedule.get_last_lr()[0])}
            scalars.update(own)
            schedule.step()
            step += 1
            if selector is not None:
                selector.after(step, scalars)
            if report(step, evals=step, predictor=predictor, **scalars):
                if selector is not None:
                    selector.finish(step)
                return
