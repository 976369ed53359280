"""The physics-informed neural network (Raissi, Perdikaris & Karniadakis 2019), with options.

A net (plain or modified MLP, optional Fourier features) is trained on the mean squared residual
of the equations at collocation points plus the mean squared residual of each condition
(initial, boundary...), with Adam and an exponentially decaying learning rate, then L-BFGS with
a strong-Wolfe line search for as long as the budget lasts. Options: static per-term weights,
learning-rate annealing of the condition weights (Wang, Teng & Perdikaris 2021), collocation
resampling, and the derivative backend (`methods/taylor.py`: forward-mode jets, or autograd).
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn

from methods.base import Budget, Method, Predictor, Report, TorchPredictor
from methods.jets import supports_plain
from methods.nets import ACTIVATIONS, NETS, OutputTransform, build_net, compile_transform
from methods.taylor import BACKENDS, FieldsBuilder, SampledLaplacianFields, probe, supports
from methods.train import StepTrainer, adam, train
from problems.base import Condition, ConfigError, Problem
from problems.fields import Fields

__all__ = ["PINN", "Trainer", "point_counts"]

log = logging.getLogger(__name__)


# -- validation -----------------------------------------------------------------------------
def _int(key: str, v: Any, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise ConfigError(f"method.{key} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _real(key: str, v: Any, lo: float, hi: float = math.inf, lo_open: bool = True) -> float:
    ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
    if ok:
        ok = (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        rng = f"> {lo}" if lo_open else f">= {lo}"
        if hi < math.inf:
            rng += f" and <= {hi}"
        raise ConfigError(f"method.{key} must be a finite number {rng}, got {v!r}")
    return float(v)


def _choice(key: str, v: Any, options: tuple[str, ...]) -> str:
    if v not in options:
        raise ConfigError(f"method.{key} must be one of {list(options)}, got {v!r}")
    return str(v)


def _mapping(key: str, v: Any, check: Callable[[str, Any], Any]) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"method.{key} must be a mapping of term names to values, got {v!r}")
    return {str(k): check(f"{key}.{k}", x) for k, x in v.items()}


def point_counts(
    problem: Problem,
    conds: list[Condition],
    n_collocation: int | None,
    n_points: Mapping[str, int],
    max_points: int | None,
) -> list[int]:
    """Training points per loss term: the interior (`n_collocation`, else the problem's
    default), then each condition (`n_points` by name, else its default), each at most the
    budget's `max_points` per term."""
    sizes = [n_collocation or problem.n_collocation]
    sizes += [n_points.get(c.name, c.n_points) for c in conds]
    return sizes if max_points is None else [min(n, max_points) for n in sizes]


class PINN(Method):
    """A PINN trained by Adam, then L-BFGS.

    Arguments (the YAML hyper-parameters):
        net: `mlp` or `modified_mlp`. width, depth: units per hidden layer, hidden layers.
        activation: `tanh` or `sin`.
        fourier_features: number of random Fourier frequencies on the inputs (0: none).
        fourier_scale: their standard deviation (inputs are normalised to [-1, 1]).
        derivatives: `auto` (forward-mode jets where the net supports them), `taylor`, `autograd`.
        lr, decay_rate, decay_steps: Adam's learning rate `lr * decay_rate**(step/decay_steps)`.
        adam_steps: Adam steps before L-BFGS.
        lbfgs: run L-BFGS after Adam while the budget lasts.
        lbfgs_history: L-BFGS memory. lbfgs_max_eval: most evaluations per L-BFGS iteration.
        n_collocation: interior points (None: the problem's default).
        n_points: points per condition by name, e.g. `{ic: 200}` (missing: the problem's default).
        resample_every: draw fresh points every this many Adam steps (0: fixed points).
        sampler: how fresh interior points are drawn when resampling: `uniform`, or `rad`
            (residual-based adaptive distribution, Wu et al. 2023): from `rad_candidates` times
            as many uniform candidates, draw without replacement with probability proportional
            to |r|^rad_k / mean(|r|^rad_k) + rad_c, r the current PDE residual. The first
            points are always uniform.
        lbfgs_resample_every: draw fresh points every this many L-BFGS iterations and restart
            L-BFGS there (its curvature pairs belong to the old loss); 0: fixed points. Long
            L-BFGS runs on fixed points overfit them: the loss keeps falling, the error rises.
        weights: static loss weights by term (`pde` and condition names; missing: 1).
        lra: learning-rate annealing of the condition weights during Adam.
        lra_alpha, lra_every: its moving-average factor and update interval (steps).
        hard_constraints: use the problem's own trial function (its `trial` capability), which
            satisfies its conditions exactly; an `output_transform` field overrides it. On by
            default (Lagaris et al. 1998; DeepXDE's practice); false gives the vanilla PINN
            with every condition as a loss term.
        output_transform: a trial function per field, e.g. `{y: "1 + (1 - exp(-x)) * y"}`, over
            the axes, the raw net outputs (by field name), the problem's numeric parameters and
            exp/log/sin/cos/tanh/sqrt/abs/pi (see `methods.nets.OutputTransform`). Hard
            constraints this way (the forward-mode backend pushes jets through them).
        sdgd_dims: SDGD (Hu et al. 2024): each step, the Laplacian of the PDE residual sums
            over this many sampled dimensions, scaled by d / B (0: the full Laplacian). The
            sampled second derivatives come from one jet of those dimensions where the net
            supports jets (`derivatives` auto or taylor), else (`autograd`, the paper's way)
            from one backward pass each; first derivatives from one backward pass.
        sdgd_variant: 1: the full residual, detached, times the gradient of the sampled one
            (unbiased); 2: two independent samples for the value and the gradient (unbiased,
            cheap); 3: the sampled residual squared (biased, cheapest; the paper's Sec. 5.1).
        compile: compile the loss (jet forward pass, trial function, residuals) with
            `torch.compile`, which fuses its elementwise work into fewer kernels per step.
            `true` needs the forward-mode backend; `auto` compiles where that backend and an
            MLP allow it and the budget is long enough for the compilation (seconds of it,
            charged to training time) to pay off (>= 2000 steps and >= 60 s); a compilation
            that fails falls back to the eager loss with a warning.
    """

    name = "pinn"

    needs = frozenset({"residual"})

    def __init__(
        self,
        net: str = "mlp",
        width: int = 20,
        depth: int = 4,
        activation: str = "tanh",
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        derivatives: str = "auto",
        lr: float = 1e-3,
        decay_rate: float = 0.9,
        decay_steps: int = 1000,
        adam_steps: int = 500,
        lbfgs: bool = True,
        lbfgs_history: int = 50,
        lbfgs_max_eval: int = 25,
        n_collocation: int | None = None,
        n_points: Mapping[str, int] | None = None,
        resample_every: int = 0,
        lbfgs_resample_every: int = 0,
        sampler: Literal["uniform", "rad"] = "uniform",
        rad_k: float = 1.0,
        rad_c: float = 1.0,
        rad_candidates: int = 10,
        weights: Mapping[str, float] | None = None,
        lra: bool = False,
        lra_alpha: float = 0.1,
        lra_every: int = 10,
        hard_constraints: bool = True,
        output_transform: Mapping[str, str] | None = None,
        sdgd_dims: int = 0,
        sdgd_variant: int = 2,
        compile: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        self.net = _choice("net", net, NETS)
        self.width = _int("width", width, 1)
        self.depth = _int("depth", depth, 1)
        self.activation = _choice("activation", activation, tuple(ACTIVATIONS))
        self.fourier_features = _int("fourier_features", fourier_features, 0)
        self.fourier_scale = _real("fourier_scale", fourier_scale, 0.0)
        self.derivatives = _choice("derivatives", derivatives, BACKENDS)
        self.lr = _real("lr", lr, 0.0)
        self.decay_rate = _real("decay_rate", decay_rate, 0.0, 1.0)
        self.decay_steps = _int("decay_steps", decay_steps, 1)
        self.adam_steps = _int("adam_steps", adam_steps, 0)
        self.lbfgs = lbfgs
        self.lbfgs_history = _int("lbfgs_history", lbfgs_history, 1)
        self.lbfgs_max_eval = _int("lbfgs_max_eval", lbfgs_max_eval, 2)
        self.n_collocation = (
            None if n_collocation is None else _int("n_collocation", n_collocation, 1)
        )
        self.n_points = _mapping("n_points", n_points, lambda k, v: _int(k, v, 1))
        self.resample_every = _int("resample_every", resample_every, 0)
        self.lbfgs_resample_every = _int("lbfgs_resample_every", lbfgs_resample_every, 0)
        self.sampler = sampler
        self.rad_k = _real("rad_k", rad_k, 0.0, lo_open=False)
        self.rad_c = _real("rad_c", rad_c, 0.0, lo_open=False)
        self.rad_candidates = _int("rad_candidates", rad_candidates, 1)
        self.weights = _mapping("weights", weights, lambda k, v: _real(k, v, 0.0, lo_open=False))
        self.lra = lra
        self.lra_alpha = _real("lra_alpha", lra_alpha, 0.0, 1.0)
        self.lra_every = _int("lra_every", lra_every, 1)
        self.hard_constraints = hard_constraints
        self.output_transform = _mapping(
            "output_transform",
            output_transform,
            lambda k, v: (compile_transform(f"method.{k}", v), str(v).strip())[1],
        )
        self.sdgd_dims = _int("sdgd_dims", sdgd_dims, 0)
        self.sdgd_variant = _int("sdgd_variant", sdgd_variant, 1)
        if self.sdgd_variant > 3:
            raise ConfigError(f"method.sdgd_variant must be 1, 2 or 3, got {sdgd_variant!r}")
        if self.sdgd_dims and self.lbfgs:
            raise ConfigError(
                "method.sdgd_dims > 0 makes the loss stochastic, which L-BFGS cannot use: "
                "set method.lbfgs=false (and train with Adam for the whole budget)"
            )
        self.compile = compile
        if self.compile is True and (self.derivatives == "autograd" or self.sdgd_dims):
            raise ConfigError(
                "method.compile needs the forward-mode derivative backend (torch.compile cannot "
                "differentiate twice): set method.derivatives=auto or taylor, and sdgd_dims=0"
            )

    def build_net(self, problem: Problem) -> nn.Module:
        """The (seeded) net `[N, d] -> [N, len(problem.fields)]`, before any trial function."""
        return build_net(
            problem.domain,
            len(problem.fields),
            kind=self.net,
            width=self.width,
            depth=self.depth,
            activation=self.activation,
            fourier_features=self.fourier_features,
            fourier_scale=self.fourier_scale,
            generator=self.generator(1),
            dtype=self.dtype,
            device=torch.device(self.device),
        )

    def trainer(self, problem: Problem, budget: Budget | None = None) -> Trainer:
        """The net, points, loss and optimiser state of a run on `problem` (seeded); at most
        `budget.points` points per loss term."""
        long_run = budget is not None and budget.steps >= 2000 and (budget.seconds or 0) >= 60
        return Trainer(self, problem, None if budget is None else budget.points, long_run)

    def fit(self, problem: Problem, budget: Budget, report: Report) -> Predictor:
        return train(self.trainer(problem, budget), self.adam_steps, self.lbfgs, budget, report)


class Trainer(StepTrainer):
    """One PINN run: the net, the training points, the loss terms and the optimisers.

    `adam_step()` and `lbfgs_step()` each perform one optimiser step and return the loss
    scalars for `report`; `evals` counts loss-and-gradient evaluations.
    """

    def __init__(
        self,
        method: PINN,
        problem: Problem,
        max_points: int | None = None,
        long_run: bool = False,
    ) -> None:
        super().__init__()
        m = self.method = method
        self.problem = problem
        self.lbfgs_history, self.lbfgs_max_eval = m.lbfgs_history, m.lbfgs_max_eval
        dev, dt = torch.device(m.device), m.dtype
        self.device, self.dtype = dev, dt
        torch.manual_seed(m.seed)  # nothing below draws from it, but keep any stray draw seeded
        self.gen = m.generator(0)
        conds = problem.conditions()
        self.terms = ["pde"] + [c.name for c in conds]
        if len(set(self.terms)) != len(self.terms):
            raise ConfigError(f"loss terms must have distinct names, got {self.terms}")
        for key, table in (("weights", m.weights), ("n_points", m.n_points)):
            allowed = self.terms if key == "weights" else self.terms[1:]
            unknown = sorted(set(table) - set(allowed))
            if unknown:
                log.warning(
                    "method.%s: %s name no loss term of %s (its terms: %s); ignored",
                    key, unknown, problem.name or type(problem).__name__, allowed,
                )  # fmt: skip
        self.weights = [float(m.weights.get(t, 1.0)) for t in self.terms]
        self.lam = [1.0] * len(self.terms)  # LRA weights; lam[0] (pde) stays 1
        self.sizes = point_counts(problem, conds, m.n_collocation, m.n_points, max_points)
        self.samplers: list[Callable[..., Tensor]] = [problem.sample_interior] + [
            c.sample for c in conds
        ]
        self.residuals: list[Callable[[Fields], Tensor]] = [problem.residual] + [
            c.residual for c in conds
        ]
        self.net: nn.Module = m.build_net(problem)
        transform = dict(m.output_transform)
        if m.hard_constraints:
            if "trial" in problem.capabilities:
                transform = {**problem.trial(), **transform}
            else:  # the default is on: say it, without a warning
                log.info(
                    "%s has no trial function; its conditions are loss terms",
                    problem.name or type(problem).__name__,
                )
        if transform:
            consts = {
                k: v
                for k, v in problem.params.items()
                if isinstance(v, numbers.Real) and not isinstance(v, bool)
            }
            self.net = OutputTransform(  # type: ignore[assignment]
                self.net, transform, problem.axes, problem.fields, consts,
                problem.trial_inputs(),
            )  # fmt: skip
            self._drop_satisfied()
        # residual scoring: Laplacians from jets (fast and bounded in memory in d dimensions)
        scoring = partial(SampledLaplacianFields, graph=False) if supports(self.net) else Fields
        self.predictor = TorchPredictor(
            self.net, tuple(problem.axes), tuple(problem.fields), fields_type=scoring
        )
        self.batch = self.sample()
        backend = m.derivatives
        compile_ = m.compile is True or (
            m.compile == "auto"
            and long_run
            and backend != "autograd"
            and not m.sdgd_dims
            and supports_plain(self.net)
            and not m.lra  # LRA differentiates the loss terms separately: eager is simpler
        )
        if backend == "autograd" or m.sdgd_dims:  # no plan to make: skip the probe (costly in
            # high dimension); SDGD's sampled Laplacian makes its own jets
            requested: list[set] = [set() for _ in self.residuals]
        else:
            requested = probe(self.net, problem.axes, problem.fields, self.residuals, self.batch)
        self.sdgd_gen = m.generator(2)
        self.fields = FieldsBuilder(
            self.net,
            problem.axes,
            problem.fields,
            backend,
            requested,
            laplacian_dims=m.sdgd_dims,
            generator=self.sdgd_gen,
            plain=compile_,
        )
        self._compiled = None
        self.params = list(self.net.parameters())
        if compile_ and not self.fields.taylor:
            if m.compile is True:
                raise ConfigError(
                    "method.compile needs the forward-mode backend, which this net or problem "
                    "does not support (derivatives above order two)"
                )
        elif compile_:
            self._compiled = self._compile()
        self.adam = adam(self.params, m.lr)
        self.adam_steps = 0

    def _compile(self) -> Callable[[list[Tensor]], list[Tensor]] | None:
        """The compiled loss, compiled now (forward and backward, on the training points), or
        None with a warning when compilation fails (no C++ compiler, an unsupported op)."""
        compiled = torch.compile(self._losses, dynamic=False)
        t0 = time.perf_counter()
        try:
            total = sum(compiled(self.batch))
            torch.autograd.grad(total, self.params)
        except Exception as e:  # the eager loss is the same loss, only slower
            log.warning("torch.compile of the loss failed (%s: %s); training eagerly",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")  # fmt: skip
            return None
        finally:
            self.compile_seconds = time.perf_counter() - t0
        return compiled

    def _drop_satisfied(self) -> None:
        """Conditions that the trial function satisfies identically leave the loss: computing
        them is pure cost. A condition is taken as satisfied when its residual is at round-off
        on 64 fresh points for the initial net (a random net does not satisfy it by chance)."""
        g = self.method.generator(3)  # its own stream: the training points stay the same
        tol = 1e-9 if self.dtype == torch.float64 else 1e-4
        keep = [0]
        for i in range(1, len(self.terms)):
            pts = self.samplers[i](64, g).to(device=self.device, dtype=self.dtype)
            f = Fields(pts.requires_grad_(True), self.problem.axes, self.problem.fields, self.net)
            if float(self.residuals[i](f).detach().abs().max()) > tol:
                keep.append(i)
            else:
                log.info("condition %r holds by the trial function: not a loss term", self.terms[i])
        for name in ("terms", "weights", "lam", "sizes", "samplers", "residuals"):
            setattr(self, name, [getattr(self, name)[i] for i in keep])

    # -- checkpoints (methods/train.py) ----------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """The training points (resampling changes them), the LRA weights, the generators."""
        return {
            "batch": [b.detach() for b in self.batch],
            "lam": list(self.lam),
            "gen": self.gen.get_state(),
            "sdgd_gen": self.sdgd_gen.get_state(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.batch = [b.to(device=self.device, dtype=self.dtype) for b in state["batch"]]
        self.lam = [float(v) for v in state["lam"]]
        self.gen.set_state(state["gen"])
        self.sdgd_gen.set_state(state["sdgd_gen"])

    # -- loss -------------------------------------------------------------------------------
    def sample(self, adaptive: bool = False) -> list[Tensor]:
        """Fresh training points, one block per loss term; with `adaptive` and the `rad`
        sampler, interior points from the residual-based density of the current net."""
        blocks = [
            s(n, self.gen).to(device=self.device, dtype=self.dtype)
            for s, n in zip(self.samplers, self.sizes)
        ]
        if adaptive and self.method.sampler == "rad":
            blocks[0] = self._rad_sample(self.sizes[0])
        return blocks

    def _rad_sample(self, n: int) -> Tensor:
        """`n` of `rad_candidates * n` uniform candidates, drawn without replacement with
        probability proportional to |r|^k / mean(|r|^k) + c (Wu et al. 2023, RAD)."""
        m, p = self.method, self.problem
        cand = p.sample_interior(m.rad_candidates * n, self.gen)
        cand = cand.to(device=self.device, dtype=self.dtype)
        norms = []
        for chunk in cand.split(4096):  # in chunks: memory stays bounded
            norms.append(p.residual(self.predictor.fields(chunk)).detach().norm(dim=1))
        r = torch.cat(norms).double().cpu() ** m.rad_k
        mean = r.mean()
        density = (r / mean if mean > 0 and torch.isfinite(mean) else torch.zeros_like(r)) + m.rad_c
        if not bool(torch.isfinite(density).all()) or float(density.sum()) <= 0:
            density = torch.ones_like(r)  # a non-finite or zero residual: fall back to uniform
        idx = torch.multinomial(density, n, replacement=False, generator=self.gen)
        return cand[idx.to(cand.device)]

    def losses(self, batch: list[Tensor] | None = None) -> list[Tensor]:
        """The unweighted loss terms (mean squared residuals) on `batch`, in `self.terms` order."""
        batch = self.batch if batch is None else batch
        if self._compiled is not None:
            return self._compiled(batch)
        return self._losses(batch)

    def _losses(self, batch: list[Tensor]) -> list[Tensor]:
        fs = self.fields(batch)
        sdgd = self.method.sdgd_dims and self.method.sdgd_variant != 3
        return [
            self._sdgd_pde_loss(f, pts) if sdgd and i == 0 else fn(f).square().mean()
            for i, (fn, f, pts) in enumerate(zip(self.residuals, fs, batch))
        ]

    def _sdgd_pde_loss(self, f: Fields, points: Tensor) -> Tensor:
        """An SDGD loss whose value is mean(R_v^2) and whose gradient is mean(2 R_v dR_s):
        R_s is the residual on the Laplacian sampled in `f`; R_v is detached, and is either the
        full residual (variant 1) or the residual on an independent sample (variant 2). In
        variant 2 both residuals read the same `f`: the values and first derivatives are the
        same at the same points, so only the second sample's Laplacian is computed again."""
        m, p = self.method, self.problem
        r_s = p.residual(f)
        if m.sdgd_variant == 1:  # the full residual: every axis of the Laplacian
            r_v = p.residual(Fields(points, p.axes, p.fields, model=self.net)).detach()
        else:  # `f` draws an independent sample at each `laplacian` call
            r_v = p.residual(f).detach()
        return r_v.square().mean() + (2 * r_v * (r_s - r_s.detach())).mean()

    def total(self, losses: list[Tensor]) -> Tensor:
        return sum(w * lam * L for w, lam, L in zip(self.weights, self.lam, losses))  # type: ignore[return-value]

    def scalars(self, total: Tensor, losses: list[Tensor]) -> dict[str, float]:
        out = {"loss": total.item()}
        out.update({f"loss_{t}": L.item() for t, L in zip(self.terms, losses)})
        if self.method.lra:
            out.update({f"lambda_{t}": lam for t, lam in zip(self.terms[1:], self.lam[1:])})
        return out

    # -- Adam -------------------------------------------------------------------------------
    def adam_step(self) -> dict[str, float]:
        """One Adam step (with resampling, learning-rate decay and LRA when configured)."""
        m = self.method
        k = self.adam_steps
        if m.resample_every and k > 0 and k % m.resample_every == 0:
            self.batch = self.sample(adaptive=True)
        losses = self.losses()
        if m.lra and len(self.terms) > 1 and k % m.lra_every == 0:
            self._anneal(losses)
        return self.adam_update(m.lr * m.decay_rate ** (k / m.decay_steps), losses)

    def _anneal(self, losses: list[Tensor]) -> None:
        """Learning-rate annealing, as in Wang, Teng & Perdikaris's code: with g_r the largest
        |dL_pde/dW| over all weight matrices and g_i the mean over layers of the mean
        |d(lam_i L_i)/dW|, lam_i <- (1 - alpha) lam_i + alpha g_r / g_i (biases excluded)."""
        W = self.net.main_weights()
        a = self.method.lra_alpha
        g_r = max(g.abs().max() for g in torch.autograd.grad(losses[0], W, retain_graph=True))
        for i in range(1, len(losses)):
            grads = torch.autograd.grad(self.lam[i] * losses[i], W, retain_graph=True)
            g_i = torch.stack([g.abs().mean() for g in grads]).mean()
            if g_i > 0 and torch.isfinite(g_i) and torch.isfinite(g_r):
                self.lam[i] = (1 - a) * self.lam[i] + a * float(g_r / g_i)

    # -- L-BFGS -----------------------------------------------------------------------------
    def lbfgs_step(self, evals_left: int | None = None) -> dict[str, float] | None:
        """One L-BFGS iteration (see `StepTrainer.lbfgs_step`); with `lbfgs_resample_every`,
        fresh points, and a fresh L-BFGS, every that many iterations."""
        every = self.method.lbfgs_resample_every
        if every and self.lbfgs_iters and self.lbfgs_iters % every == 0 and self.lbfgs:
            self.batch = self.sample(adaptive=True)
            self.new_loss()
        return super().lbfgs_step(evals_left)
