"""`deepxde`: DeepXDE's own PINN engine (Lu et al., SIAM Review 2021) on our problem, as a peer
row beside `pinn` (the optional extra `compare`: `pip install -e .[compare]`).

DeepXDE's code does the training: its network (`dde.nn.FNN`, Glorot-normal weights, zero
biases), its `dde.Model`, its optimisers and its training loop (`model.compile("adam", lr)`,
`model.train(iterations=adam_steps)`, then `model.compile("L-BFGS")` and `model.train()` while
the budget lasts), with DeepXDE's MSE loss, one term per loss, summed with unit weights. Ours
are the problem and the points: a `dde.data.Data` subclass computes our problem's `residual`
and each `Condition.residual` on DeepXDE's outputs through our `Fields` API (autograd, on
DeepXDE's input tensor), at the points our `pinn` trains on with `hard_constraints=false`
(the same seeded draws, counts and `budget.points` cap; fixed, as `dde.data.PDE` keeps them).

How it differs from our `pinn` on the same problem, by DeepXDE's design:
- conditions are always loss terms (no trial function: run `pinn` with
  `method.hard_constraints=false` to compare like with like);
- the net sees raw coordinates (no scaling of the inputs to [-1, 1]), and the predictor
  feeds it raw coordinates too; Adam's learning rate is constant;
- DeepXDE computes each derivative once over the whole batch (all loss terms' points
  together) and slices it per term, as its `dde.grad` does;
- L-BFGS is torch's, with DeepXDE's options (history 100, gradient tolerance 1e-8, at most
  1.25 evaluations per iteration on average), run by DeepXDE in steps of
  `lbfgs_iter_per_step` iterations (its `iter_per_step`) between callbacks; after each step
  DeepXDE evaluates its training and test losses for its own display (both on our points;
  not counted as evaluations, charged to the clock).

Budget: a DeepXDE callback reports every Adam step and every L-BFGS step to the harness (steps
count Adam steps, then L-BFGS iterations; evaluations are one per Adam step, then torch
L-BFGS's own count) and stops DeepXDE's loop when `report` says so. Each L-BFGS step is
capped at the iterations left and at the evaluations left, which it may exceed by at most one
line search. Importing DeepXDE is declared to `report` as `import` (not training).

DeepXDE keeps global state: its default float (`dde.config.set_default_float`, which also
sets torch's default dtype), its L-BFGS options, and, on import, torch's default device (CUDA
when present). `fit` sets the float to the run's dtype (DeepXDE's float32 unless `dtype` says
otherwise) and restores all of them, so other cells in the same process are unaffected.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import ClassVar

import torch
from torch import Tensor

from methods.base import Budget, Method, Predictor, Report, TorchPredictor
from methods.pinn import point_counts
from problems.base import ConfigError, Problem, check_int, check_real
from problems.fields import Fields

__all__ = ["DeepXDE"]


def _import_deepxde() -> ModuleType:
    """DeepXDE on its pytorch backend, imported on first use; torch's default device as it
    was (DeepXDE moves it to CUDA on import when CUDA is present)."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    device = torch.get_default_device()
    try:
        import deepxde
    finally:
        torch.set_default_device(device)
    if deepxde.backend.backend_name != "pytorch":
        raise ConfigError(
            f"method 'deepxde' runs DeepXDE's pytorch backend, but DeepXDE loaded "
            f"{deepxde.backend.backend_name!r}: unset DDE_BACKEND or set DDE_BACKEND=pytorch"
        )
    return deepxde


def _set_float(dde: ModuleType, name: str) -> None:
    """`dde.config.set_default_float(name)`, without its message on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        dde.config.set_default_float(name)


class _Rows(Fields):
    """Rows `a:b` of a `Fields` over a whole batch: values and coordinates are those rows,
    each derivative is computed once over the whole batch (and cached there) and sliced."""

    def __init__(self, whole: Fields, a: int, b: int) -> None:
        super().__init__(whole.points[a:b], whole.axes, whole.names, values=whole.values[a:b])
        self.whole, self.rows = whole, slice(a, b)

    def _derivative(self, key: tuple[str, ...]) -> Tensor:
        return self.whole.d(*key)[self.rows]


def peer_classes(dde: ModuleType) -> tuple[type, type]:
    """DeepXDE's `Data` and `Callback` subclasses, made once DeepXDE is imported."""

    class ProblemData(dde.data.Data):
        """Our problem's loss terms on our points, one block per term in `terms` order.

        `losses` evaluates each term's residual on its rows of DeepXDE's inputs and outputs
        and returns DeepXDE's loss of it (`loss_fn(0, r)`, the MSE); `last` holds the terms of
        the latest training evaluation, for `report`."""

        def __init__(
            self,
            points: Tensor,
            sizes: list[int],
            residuals: list[Callable[[Fields], Tensor]],
            terms: list[str],
            axes: tuple[str, ...],
            fields: tuple[str, ...],
        ) -> None:
            self.points, self.residuals, self.terms = points, residuals, terms
            self.axes, self.fields = axes, fields
            ends = torch.tensor(sizes).cumsum(0).tolist()
            self.spans = list(zip([0, *ends[:-1]], ends))
            self.last: list[Tensor] = []

        def losses(self, targets, outputs, loss_fn, inputs, model, aux=None) -> list[Tensor]:
            whole = Fields(inputs, self.axes, self.fields, values=outputs)
            out = []
            for residual, (a, b) in zip(self.residuals, self.spans):
                r = residual(_Rows(whole, a, b))
                out.append(loss_fn(torch.zeros_like(r), r))
            return out

        def losses_train(self, targets, outputs, loss_fn, inputs, model, aux=None):
            out = self.losses(targets, outputs, loss_fn, inputs, model, aux)
            self.last = [term.detach() for term in out]
            return out

        def train_next_batch(self, batch_size=None) -> tuple[Tensor, None]:
            # a fresh tensor object on the same storage: DeepXDE sets requires_grad on it
            return self.points.detach(), None

        def test(self) -> tuple[Tensor, None]:
            return self.points.detach(), None  # as `dde.data.PDE` without `num_test`

        def scalars(self) -> dict[str, float]:
            values = [float(term) for term in self.last]
            return {"loss": sum(values)} | {f"loss_{t}": v for t, v in zip(self.terms, values)}

    class Reporter(dde.callbacks.Callback):
        """Reports each DeepXDE training step to the harness and stops DeepXDE's loop when
        the budget is spent; in the L-BFGS phase, caps each DeepXDE step at what is left."""

        def __init__(
            self, report: Report, predictor: Predictor, data: ProblemData, budget: Budget
        ) -> None:
            super().__init__()
            self.report, self.predictor, self.data, self.budget = report, predictor, data, budget
            self.stopped = False
            self.reported = 0
            self.lbfgs_from: int | None = None  # Adam steps (= evaluations) before L-BFGS
            self.chunk = self.chunk_evals = 0

        def start_lbfgs(self, adam_steps: int, chunk: int, chunk_evals: int) -> None:
            self.lbfgs_from = adam_steps
            self.chunk, self.chunk_evals = chunk, chunk_evals

        def counts(self) -> tuple[int, int]:
            """Steps and evaluations so far: one each per Adam step, then torch L-BFGS's own
            counts of iterations and evaluations (DeepXDE's step count misses the last
            iteration when it ends L-BFGS before its callback)."""
            if self.lbfgs_from is None:
                return self.model.train_state.step, self.model.train_state.step
            state = self.model.opt.state_dict()["state"]
            n_iter, evals = (state[0]["n_iter"], state[0]["func_evals"]) if state else (0, 0)
            return self.lbfgs_from + int(n_iter), self.lbfgs_from + int(evals)

        def on_epoch_begin(self) -> None:
            if self.lbfgs_from is None:
                return
            group = self.model.opt.param_groups[0]
            group["max_iter"] = min(self.chunk, self.budget.steps - self.counts()[0])
            left = self.report.evals_left()
            group["max_eval"] = max(
                1, self.chunk_evals if left is None else min(self.chunk_evals, left)
            )

        def on_batch_end(self) -> None:
            self.send()

        def send(self) -> None:
            step, evals = self.counts()
            self.reported = step
            scalars = self.data.scalars()
            if self.report(step, evals=evals, predictor=self.predictor, **scalars):
                self.model.stop_training = True
                self.stopped = True

    return ProblemData, Reporter


class DeepXDE(Method):
    """DeepXDE's PINN (its net, model, optimisers and loop) on our problem and points.

    Arguments (the YAML hyper-parameters):
        width, depth: units per hidden layer, hidden layers of DeepXDE's `FNN`.
        activation: a DeepXDE activation name (`tanh`, `sin`, `silu`...).
        lr: Adam's learning rate (constant, DeepXDE's default schedule).
        adam_steps: Adam steps before L-BFGS.
        lbfgs: run DeepXDE's L-BFGS after Adam while the budget lasts.
        lbfgs_iter_per_step: L-BFGS iterations per DeepXDE training step (its `iter_per_step`,
            1000 by default in DeepXDE), each step allowed 1.25 times as many evaluations:
            the budget is checked, and the step reported, after each. DeepXDE ends L-BFGS
            after a step that made a single iteration (it reads that as convergence), so a
            step must allow more evaluations than one line search may take: at least 2, and
            small values end L-BFGS early.
        n_collocation: interior points (None: the problem's default).
        n_points: points per condition by name, e.g. `{ic: 200}` (missing: the problem's).
    """

    name = "deepxde"
    needs = frozenset({"residual"})
    default_dtype: ClassVar[torch.dtype] = torch.float32  # DeepXDE's default float
    extra: ClassVar[tuple[str, str] | None] = ("compare", "deepxde")
    initializer: ClassVar[str] = "Glorot normal"

    def __init__(
        self,
        width: int = 20,
        depth: int = 4,
        activation: str = "tanh",
        lr: float = 1e-3,
        adam_steps: int = 500,
        lbfgs: bool = True,
        lbfgs_iter_per_step: int = 50,
        n_collocation: int | None = None,
        n_points: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.width = check_int("method.width", width)
        self.depth = check_int("method.depth", depth)
        self.activation = activation
        self.lr = check_real("method.lr", lr, 0.0)
        self.adam_steps = check_int("method.adam_steps", adam_steps, minimum=0)
        self.lbfgs = lbfgs
        self.lbfgs_iter_per_step = check_int("method.lbfgs_iter_per_step", lbfgs_iter_per_step, 2)
        self.n_collocation = (
            None if n_collocation is None else check_int("method.n_collocation", n_collocation)
        )
        self.n_points = {
            str(k): check_int(f"method.n_points.{k}", v) for k, v in (n_points or {}).items()
        }

    def training_points(self, problem: Problem, budget: Budget) -> tuple[Tensor, list[int]]:
        """The interior points, then each condition's, concatenated (in the run's dtype and on
        its device), and the size of each block: our pinn's draws (`hard_constraints=false`)."""
        conds = problem.conditions()
        sizes = point_counts(problem, conds, self.n_collocation, self.n_points, budget.points)
        gen = self.generator(0)  # the stream our pinn draws its points from
        samplers = [problem.sample_interior] + [c.sample for c in conds]
        points = torch.cat([s(n, gen) for s, n in zip(samplers, sizes)])
        return points.to(device=self.device, dtype=self.dtype), sizes

    def fit(self, problem: Problem, budget: Budget, report: Report) -> Predictor:
        t0 = time.perf_counter()
        dde = _import_deepxde()
        report.exclude("import", time.perf_counter() - t0)
        if self.dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"method 'deepxde' runs in float32 or float64, not {self.dtype}")
        saved = dde.config.default_float(), torch.get_default_dtype()
        saved_lbfgs = dict(dde.optimizers.LBFGS_options)
        try:
            _set_float(dde, str(self.dtype).removeprefix("torch."))
            return self._train(dde, problem, budget, report)
        finally:
            _set_float(dde, saved[0])
            torch.set_default_dtype(saved[1])
            dde.optimizers.LBFGS_options.update(saved_lbfgs)

    def _train(
        self, dde: ModuleType, problem: Problem, budget: Budget, report: Report
    ) -> Predictor:
        ProblemData, Reporter = peer_classes(dde)
        conds = problem.conditions()
        points, sizes = self.training_points(problem, budget)
        data = ProblemData(
            points,
            sizes,
            [problem.residual] + [c.residual for c in conds],
            ["pde"] + [c.name for c in conds],
            tuple(problem.axes),
            tuple(problem.fields),
        )
        layers = [len(problem.axes)] + [self.width] * self.depth + [len(problem.fields)]
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            torch.manual_seed(self.seed)
            try:
                net = dde.nn.FNN(layers, self.activation, self.initializer)
            except (IndexError, KeyError, NotImplementedError, ValueError) as e:
                raise ConfigError(
                    f"method.activation={self.activation!r} is not a DeepXDE activation ({e})"
                ) from None
        net = net.to(device=self.device, dtype=self.dtype)
        predictor = TorchPredictor(net, tuple(problem.axes), tuple(problem.fields))
        model = dde.Model(data, net)
        reporter = Reporter(report, predictor, data, budget)
        if self.adam_steps:
            model.compile("adam", lr=self.lr, verbose=0)
            model.train(iterations=self.adam_steps, callbacks=[reporter], verbose=0)
        left = budget.steps - model.train_state.step
        if self.lbfgs and not reporter.stopped and left > 0:
            dde.optimizers.set_LBFGS_options(maxiter=left)  # DeepXDE's other defaults
            opts = dde.optimizers.LBFGS_options  # its chunking, as DeepXDE derives it on import
            opts["iter_per_step"] = min(self.lbfgs_iter_per_step, left)
            opts["fun_per_step"] = opts["maxfun"] * opts["iter_per_step"] // opts["maxiter"]
            model.compile("L-BFGS", verbose=0)
            reporter.start_lbfgs(
                model.train_state.step, opts["iter_per_step"], opts["fun_per_step"]
            )
            model.train(callbacks=[reporter], verbose=0)
            if not reporter.stopped and reporter.counts()[0] > reporter.reported:
                reporter.send()  # DeepXDE ended L-BFGS before its callback ("converged")
        return predictor
