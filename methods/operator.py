"""What every operator learner shares: data windows, normalisation, the autoregressive trainer,
validation-only checkpoint selection and the predictor.

A learner subclasses `OperatorMethod` and implements `build_net(in_channels, out_channels, dim,
grid, data)`: a module mapping `[B, in_channels, *grid]` to the next frame `[B, out_channels,
*grid]`. Everything else is here, so the learners differ only in their nets and defaults:

- Data: `problem.operator_data("train" | "val", data_scale(budget.name))`; at most
  `budget.samples` training trajectories. The test split is never touched.
- One step of the net sees the last `history` frames (<= the problem's `context`), the extra
  input channels `inputs[:, c_out:]` (parameters such as nu) and one coordinate channel per axis
  (in [0, 1]); all channels are normalised per channel with statistics of the training split.
- Training windows: `history` frames at a random start of a random training trajectory (seeded
  shuffling, one window per trajectory per epoch), then `rollout_train` autoregressive steps,
  each fed the net's own previous outputs, with gradients through the whole rollout. The loss
  is per-sample relative L2 (`rel_l2`) or relative MSE (`rel_mse`) over the rolled-out frames,
  in the data's own units, averaged over the batch.
- One optimiser step is one `report` step (the loop: `methods/minibatch.py`). `val_rel_l2`
  (mean per-sample relative L2 of the full rollout on the validation split, the test protocol)
  is computed every `val_every` steps and at the end; `select: val` returns the weights with
  the best `val_rel_l2`, `select: last` the last ones.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from core.metrics import per_sample_rel_l2
from methods.base import Budget, Method, OperatorPredictor, Report, count_params
from methods.minibatch import fit_minibatch
from problems.base import ConfigError, OperatorData, Problem, check_int, check_real
from problems.capabilities import data_scale

__all__ = ["OperatorMethod", "Selector", "StepModel", "TorchOperatorPredictor"]

Loss = Literal["rel_l2", "rel_mse"]
Norm = Literal["std", "minmax", "none"]
Select = Literal["val", "last"]
Optimizer = Literal["adam", "adamw"]
EPS = 1e-12


def _stats(x: np.ndarray, axis: tuple[int, ...], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (shift, scale) so that (x - shift) / scale is normalised; a constant channel
    gets scale 1 (it then carries no information, and must not blow up)."""
    x = x.astype(np.float64)
    channels = [a for a in range(x.ndim) if a not in axis]
    if x.size == 0 or kind == "none":
        shape = tuple(x.shape[a] for a in channels)
        return np.zeros(shape), np.ones(shape)
    if kind == "std":
        shift, scale = x.mean(axis=axis), x.std(axis=axis)
    else:  # minmax, DyMixOp's: onto [0, 1]
        shift, scale = x.min(axis=axis), x.max(axis=axis) - x.min(axis=axis)
    scale = np.where(scale > 1e-12 * (1 + np.abs(shift)), scale, 1.0)
    return shift, scale


def _cast(model: nn.Module, dtype: torch.dtype, device: torch.device | str) -> nn.Module:
    """`model` on `device`, its real floating-point tensors in `dtype` and its complex ones in
    the complex dtype of that precision. (`Module.to(dtype)` casts complex tensors to real,
    dropping their imaginary parts; a library's net may keep complex weights, as neuralop's
    FNO does.)"""
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    model.to(device=device)
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_complex():
            t.data = t.data.to(complex_dtype)
        elif t.is_floating_point():
            t.data = t.data.to(dtype)
    return model


class StepModel(nn.Module):
    """One autoregressive step in normalised units, with the normalisation as buffers.

    `step(window, extra)`: `window` `[B, H, c_out, *grid]` and `extra` `[B, c_x, *grid]`
    (normalised) -> the next frame `[B, c_out, *grid]` (normalised). The net sees the frames
    (flattened over H and c_out), then `extra`, then one coordinate channel per axis.
    """

    def __init__(
        self,
        net: nn.Module,
        history: int,
        state: tuple[np.ndarray, np.ndarray],
        extra: tuple[np.ndarray, np.ndarray],
        dim: int,
    ) -> None:
        super().__init__()
        self.net, self.history, self.dim = net, history, dim
        bcast = (1,) * dim
        for name, (shift, scale) in (("state", state), ("extra", extra)):
            self.register_buffer(f"{name}_shift", torch.as_tensor(shift).reshape(-1, *bcast))
            self.register_buffer(f"{name}_scale", torch.as_tensor(scale).reshape(-1, *bcast))

    @property
    def c_out(self) -> int:
        return self.state_shift.shape[0]

    def encode(self, frames: Tensor) -> Tensor:
        return (frames - self.state_shift) / self.state_scale

    def decode(self, frames: Tensor) -> Tensor:
        return frames * self.state_scale + self.state_shift

    def encode_extra(self, extra: Tensor) -> Tensor:
        return (extra - self.extra_shift) / self.extra_scale

    def coords(self, grid: tuple[int, ...], like: Tensor) -> Tensor:
        axes = [torch.linspace(0.0, 1.0, n, dtype=like.dtype, device=like.device) for n in grid]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]

    def step(self, window: Tensor, extra: Tensor) -> Tensor:
        b, grid = window.shape[0], tuple(window.shape[3:])
        coords = self.coords(grid, window).expand(b, -1, *grid)
        return self.net(torch.cat([window.flatten(1, 2), extra, coords], dim=1))

    def rollout(self, window: Tensor, extra: Tensor, steps: int) -> Tensor:
        """`steps` frames `[B, steps, c_out, *grid]` after `window` (normalised units)."""
        window = window[:, -self.history :]
        out = []
        for _ in range(steps):
            nxt = self.step(window, extra)
            out.append(nxt)
            window = torch.cat([window[:, 1:], nxt[:, None]], dim=1)
        return torch.stack(out, dim=1)


class TorchOperatorPredictor(OperatorPredictor):
    """Advances trajectories with a `StepModel` (see `OperatorPredictor.rollout`), `batch`
    trajectories at a time under no_grad, in the model's dtype; float64 numpy out."""

    def __init__(self, model: StepModel, batch: int = 64) -> None:
        self.model = model
        self.batch = batch

    def rollout(self, window: np.ndarray, inputs: np.ndarray, steps: int) -> np.ndarray:
        m = self.model
        h, c = m.history, m.c_out
        if window.ndim != 3 + m.dim or window.shape[1] < h or window.shape[2] != c:
            raise ValueError(
                f"window must be [n, >= {h}, {c}, *grid] on a {m.dim}-D grid, got {window.shape}"
            )
        like = next(m.parameters())
        n, grid = window.shape[0], window.shape[3:]
        out = np.empty((n, steps, c, *grid), dtype=np.float64)
        m.eval()
        with torch.no_grad():
            for i in range(0, n, self.batch):
                w = torch.as_tensor(window[i : i + self.batch, -h:], device=like.device)
                x = torch.as_tensor(inputs[i : i + self.batch, c:], device=like.device)
                w, x = m.encode(w.to(like.dtype)), m.encode_extra(x.to(like.dtype))
                y = m.decode(m.rollout(w, x, steps))
                out[i : i + self.batch] = y.double().cpu().numpy()
        return out

    def n_params(self) -> int:
        return count_params(self.model)


class OperatorMethod(Method):
    """Base class of the operator learners (see the module doc for the protocol).

    Arguments:
        history: frames one step sees (null: the problem's `context`).
        rollout_train: autoregressive steps per training window (fewer where a trajectory is
            too short).
        batch_size: training windows per optimiser step.
        loss: `rel_l2` (per-sample relative L2) or `rel_mse` (its square).
        normalize: per-channel `std` (zero mean, unit variance), `minmax` (onto [0, 1]), `none`.
        optimizer: `adam` or `adamw`; `lr`, `weight_decay` its learning rate and decay.
        lr_step, lr_gamma: StepLR in epochs: lr x lr_gamma every `lr_step` epochs.
        select: `val` (the best weights on the validation split) or `last`.
        val_every: validation every this many steps (and at the end).
        eval_batch: trajectories per batch in rollouts without gradients.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"operator_data"})
    default_dtype: ClassVar[torch.dtype] = torch.float32  # `dtype=auto`: operator learners' usual

    def __init__(
        self,
        history: int | None = None,
        rollout_train: int = 10,
        batch_size: int = 32,
        loss: Loss = "rel_l2",
        normalize: Norm = "std",
        optimizer: Optimizer = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_step: int = 100,
        lr_gamma: float = 0.5,
        select: Select = "val",
        val_every: int = 50,
        eval_batch: int = 64,
    ) -> None:
        super().__init__()
        self.history = None if history is None else check_int("method.history", history)
        self.rollout_train = check_int("method.rollout_train", rollout_train)
        self.batch_size = check_int("method.batch_size", batch_size)
        self.loss, self.normalize, self.optimizer = loss, normalize, optimizer
        self.lr = check_real("method.lr", lr, 0.0)
        self.weight_decay = check_real("method.weight_decay", weight_decay, 0.0, strict=False)
        self.lr_step = check_int("method.lr_step", lr_step)
        self.lr_gamma = check_real("method.lr_gamma", lr_gamma, 0.0, maximum=1.0 + 1e-12)
        self.select = select
        self.val_every = check_int("method.val_every", val_every)
        self.eval_batch = check_int("method.eval_batch", eval_batch)

    # -- the net ------------------------------------------------------------------------------
    @abstractmethod
    def build_net(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        grid: tuple[int, ...],
        data: OperatorData,
    ) -> nn.Module:
        """`[B, in_channels, *grid] -> [B, out_channels, *grid]`; `data` is the training split
        (for data-dependent settings); raise ConfigError for options the grid cannot hold."""

    def optimiser(self, params: list[Tensor]) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)

    # -- training -----------------------------------------------------------------------------
    def prepare(
        self, problem: Problem, budget: Budget
    ) -> tuple[StepModel, OperatorData, OperatorData]:
        """The model (net + normalisation) and the train and val splits, train capped at
        `budget.samples` trajectories."""
        context = int(getattr(problem, "context", 1))
        history = context if self.history is None else self.history
        if history > context:
            raise ConfigError(
                f"method.history={history} exceeds problem {problem.name!r}'s context of "
                f"{context} frames: set method.history <= {context} (or null)"
            )
        scale = data_scale(budget.name)
        train = problem.operator_data("train", scale)
        val = problem.operator_data("val", scale)
        n = train.inputs.shape[0] if budget.samples is None else budget.samples
        train = OperatorData(
            train.inputs[:n], train.outputs[:n], train.grid, train.times, train.meta
        )
        dim, grid = len(train.grid), tuple(len(g) for g in train.grid)
        if dim not in (1, 2):
            raise ConfigError(
                f"method {self.name!r} has 1-D and 2-D nets; problem {problem.name!r} has "
                f"{dim}-D data"
            )
        c_out = train.outputs.shape[2]
        norm = self.normalize
        state = _stats(train.outputs, (0, 1, *range(3, 3 + dim)), norm)
        extra = _stats(train.inputs[:, c_out:], (0, *range(2, 2 + dim)), norm)
        c_in = history * c_out + (train.inputs.shape[1] - c_out) + dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self.build_net(c_in, c_out, dim, grid, train)
        model = StepModel(net, history, state, extra, dim)
        return _cast(model, self.dtype, self.device), train, val

    def schedule(self, opt: torch.optim.Optimizer, steps_per_epoch: int) -> LambdaLR:
        """StepLR in epochs: lr x lr_gamma every `lr_step` epochs of `steps_per_epoch` steps
        (lr_gamma raised to the power, not multiplied in step by step as `StepLR` does)."""
        gamma, every = self.lr_gamma, self.lr_step
        return LambdaLR(opt, lambda step: gamma ** (step // steps_per_epoch // every))

    def fit(self, problem: Problem, budget: Budget, report: Report) -> TorchOperatorPredictor:
        model, train, val = self.prepare(problem, budget)
        pred = TorchOperatorPredictor(model, self.eval_batch)
        like = next(model.parameters())
        frames = torch.as_tensor(train.outputs).to(like)  # physical units [n, T, c, *grid]
        extra = model.encode_extra(torch.as_tensor(train.inputs[:, model.c_out :]).to(like))
        n, t_len = frames.shape[:2]
        h = model.history
        r = min(self.rollout_train, t_len - h)
        b = min(self.batch_size, n)
        gen = self.generator(7)
        opt = self.optimiser(list(model.parameters()))
        context = int(getattr(problem, "context", 1))

        def batch_loss(idx: Tensor) -> tuple[Tensor, dict[str, float]]:
            starts = torch.randint(0, t_len - h - r + 1, (len(idx),), generator=gen)
            times = starts[:, None] + torch.arange(h + r)
            batch = frames[idx[:, None].to(frames.device), times.to(frames.device)]
            out = model.rollout(model.encode(batch[:, :h]), extra[idx.to(extra.device)], r)
            return self.loss_of(model.decode(out), batch[:, h:]), {}

        fit_minibatch(
            batch_loss,
            n=n,
            batch_size=b,
            gen=gen,
            model=model,
            opt=opt,
            schedule=self.schedule(opt, math.ceil(n / b)),
            report=report,
            predictor=pred,
            selector=Selector(self, pred, val, context, model),
        )
        return pred

    def loss_of(self, pred: Tensor, true: Tensor) -> Tensor:
        """Mean over the batch of the per-sample relative L2 (or its square)."""
        err = (pred - true).flatten(1).square().sum(1)
        ref = true.flatten(1).square().sum(1).clamp_min(EPS)
        ratio = err / ref
        return (ratio if self.loss == "rel_mse" else ratio.sqrt()).mean()

    def validate(self, pred: TorchOperatorPredictor, val: OperatorData, context: int) -> float:
        """Mean per-sample relative L2 of the full rollout from the first `context` frames."""
        steps = val.outputs.shape[1] - context
        out = pred.rollout(val.outputs[:, :context], val.inputs, steps)
        return float(np.mean(per_sample_rel_l2(out, val.outputs[:, context:].astype(np.float64))))


class Selector:
    """Validation every `val_every` steps (into the step's scalars as `val_rel_l2`) and, with
    `select: val`, the best weights restored at the end (validated once more if the last step
    was not); the model is left in eval mode."""

    def __init__(
        self, method: OperatorMethod, pred: OperatorPredictor, val: OperatorData, context: int,
        model: nn.Module,
    ) -> None:  # fmt: skip
        self.method, self.pred, self.val, self.context, self.model = (
            method,
            pred,
            val,
            context,
            model,
        )
        self.best: tuple[float, dict[str, Tensor] | None] = (math.inf, None)
        self.last = -1

    def after(self, step: int, scalars: dict[str, float]) -> None:
        if step % self.method.val_every == 0:
            scalars["val_rel_l2"] = self._validate()
            self.last = step

    def _validate(self) -> float:
        v = self.method.validate(self.pred, self.val, self.context)
        if self.method.select == "val" and math.isfinite(v) and v < self.best[0]:
            # tensors only: a library's net may add other entries (neuralop: `_metadata`)
            state = {
                k: t.detach().clone()
                for k, t in self.model.state_dict().items()
                if isinstance(t, Tensor)
            }
            self.best = (v, state)
        return v

    def state_dict(self) -> dict[str, Any]:
        """The best validation score and weights so far, and the last validated step."""
        return {"best": self.best[0], "weights": self.best[1], "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = (float(state["best"]), state["weights"])
        self.last = int(state["last"])

    def finish(self, step: int) -> None:
        if self.method.select == "val":
            if self.last != step:
                self._validate()
            if self.best[1] is not None:
                self.model.load_state_dict(self.best[1])
        self.model.eval()
