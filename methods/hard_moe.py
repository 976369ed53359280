"""`hard_moe` and `soft_constraint`: physics-informed hard constraints with a mixture of experts
(PI-HC-MoE; Chalapathi, Du & Krishnapriyan, ICLR 2024, arXiv 2402.13412) and the same
backbone trained with the residual as a penalty (the paper's soft-constraint baseline).

One *shot* maps the state u_s at a start frame to the next `horizon` frames:

1. An FNO (methods/fno.py) sees u_s, the problem's extra input channels and the coordinates
   (normalised) and outputs N basis functions b_k for each of the `horizon` frames (time
   is a channel axis; the paper's FNO runs over space-time).
2. u_j = u_s + sum_k w_k b_k(t_j), j = 1..horizon, and u_0 = u_s exactly (the initial
   condition holds by construction, as the paper's mollifier makes it hold for NS).
3. The grid is split into a fixed block decomposition over (time, *space) (`experts`, the
   paper's spatial-temporal router; [1, 1] is the single hard constraint PI-HC). The linear
   parts of the discrete PDE (`problem.grid_terms`: derivatives, velocities) are formed
   for every basis function on the WHOLE grid, then each expert takes its own points (the
   paper computes derivatives before partitioning: no one-sided stencils at block edges).
4. Each expert finds its coefficients w^e by Levenberg–Marquardt on its points' residuals
   (`problem.grid_residuals`: the PDE and any boundary conditions) plus the ridge term
   `ridge` * w (methods/least_squares.py), in float64, for every sample at once; the
   gradient reaches the network by the implicit function theorem (no unrolled iterations).
5. The loss is physics only, as in the paper: the batch mean of the RMS residual of the
   constrained solution over all constrained points (the paper: the L2 norm, not squared).

On a single-instance problem (no operator data) the backbone is an MLP over the coordinates
instead, with experts as blocks of the problem's box: `methods/hard_mlp.py`.

`soft_constraint` uses one basis function with w = 1: u_j = u_s + b(t_j), trained on the same
loss (the paper's PI-SC: the same FNO with one output). Prediction over more than `horizon`
frames chains shots from the last predicted frame (the problems are autonomous).

The residual is the problem's discrete PDE on the frames (`grid_residuals`), with backward
time differences: holding at every frame it is an A-stable implicit scheme (BDF2); with
central differences the least-squares fit can zigzag between odd and even frames.

Deviations from the paper: the FNO sees time as channels (a 1-D / 2-D FNO instead of 2-D /
3-D), smaller default sizes for a CPU (the YAML), the initial condition is exact by
construction for every problem (the paper penalises it for diffusion–sorption), and no
random subsampling of the constrained points unless `points` is set (all grid points are
used by default).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from methods.base import Budget, OperatorPredictor, Report, count_params
from methods.fno import FNONet
from methods.hard_mlp import fit_mlp, mlp_reason
from methods.least_squares import (
    ConstraintSystem,
    Partition,
    field_loss,
    implicit_solution,
    lm_solve,
    residual_rms,
)
from methods.minibatch import fit_minibatch
from methods.operator import OperatorMethod, Selector, StepModel
from problems.base import ConfigError, OperatorData, Problem, check_int, check_real
from problems.capabilities import data_scale, uniform_step

__all__ = ["HardMoE", "SoftConstraint"]

OPERATOR_NEEDS = frozenset({"operator_data", "grid_residuals"})


class HardMoE(OperatorMethod):
    """PI-HC-MoE (see the module doc).

    Arguments:
        basis: basis functions N per shot.
        experts: blocks per axis of (time, *space), e.g. [1, 4] (1-D) or [1, 2, 2] (2-D); an
            integer n splits space only: n blocks in 1-D, a near-square a x b = n in 2-D.
        horizon: at most this many frames per shot (null: all frames after the problem's
            context in one shot, the paper's protocol); longer rollouts chain shots.
        points: constrained points per training shot, a fresh random subset of every expert's
            points each step in proportion (the paper samples 20,000 for diffusion–sorption);
            null = the budget's `points` (smoke: 256), or all where it sets none. Predictions
            always constrain every grid point.
        ridge, lm_iters, lm_tol: the ridge term, most LM iterations, its rtol = atol.
        initial: `exact` (default): u_0 = u_s by construction (step 2 of the module doc);
            `penalty`: PI-HC-MoE's diffusion–sorption code, where the basis has a frame 0 of
            its own, u_j = sum_k w_k b_k(t_j) for every frame j >= 0, and the start enters the
            solve as the relative residual (u_0 - u_s) / |u_s| (`ic`) beside the PDE's
            (one-channel states only).
        term_weights: factors on named residuals in the solve and the loss, e.g. {pde: 0.2}
            (null: 1 each; the names are the problem's `grid_residuals` and `ic`).
        loss: `constraint` (default): the RMS of the residuals each expert solved for, at its
            own constrained points, as the constraint layer sees them (blind to the seams
            between experts); `field`: the paper's, the residual norms of the assembled
            solution on the whole grid (`least_squares.field_loss`). On diffusion_sorption
            `field` collapses to w ~ 0 (u stays at its start) with one expert and with
            [1, 4]; the README has the measurements.
        width, modes, layers, proj: the FNO backbone (methods/fno.py).
        clip: gradient-norm clipping (the paper: 1.0; 0 = none).
        mlp_width, mlp_depth, activation: the MLP backbone (single-instance problems).
        val_samples: validation rollouts use the first this many samples of the val split
            (each prediction runs the constrained solve on every grid point).
        Shared operator-training keys: batch_size, normalize, optimizer, lr, weight_decay,
        lr_step, lr_gamma (StepLR in epochs), select (val | last), val_every, eval_batch.

    On a single-instance problem (the MLP backbone, `methods/hard_mlp.py`, at most
    `hard_mlp.MLP_MAX_AXES` axes): an integer `experts` n splits the space axes of a time-dependent
    PDE as above (each block then holds its share of the initial condition); on a steady
    problem or an ODE, give one count per axis in the problem's order (e.g. [1]: the single
    hard constraint), since a block that holds no condition has only the zero solution of a
    homogeneous equation (such blocks get a warning); `points` is the interior points per
    step (null: the problem's default), conditions take their default counts, all capped by
    the budget's `points`;
    lr decays by lr_gamma every lr_step x 1000 steps; the final net is returned (there is no
    validation split); batch_size, normalize, select, val_every, eval_batch, val_samples and
    the FNO keys are unused.
    """

    name = "hard_moe"

    needs: ClassVar[frozenset[str]] = OPERATOR_NEEDS
    constrained: ClassVar[bool] = True
    # the CI smoke grid: fno's smoke FNO, a narrower MLP, half the basis, 3 samples per step,
    # validation every 100 steps, and at most 20 LM iterations per solve (the operator cells
    # take about 10; the MLP backbone's re-solves can take all 100 on klein_gordon): seconds
    # per cell (the operator cells cost 3x more with the default basis and batch)
    fixed_keys: ClassVar[tuple[str, ...]] = ("history", "rollout_train")  # one frame, one shot
    smoke: ClassVar[dict[str, Any]] = {
        "basis": 8,
        "batch_size": 3,
        "lm_iters": 20,
        "width": 8,
        "modes": 6,
        "proj": 16,
        "mlp_width": 32,
        "val_every": 100,
    }

    def __init__(
        self,
        basis: int = 16,
        experts: Any = 4,
        horizon: int | None = None,
        points: int | None = None,
        ridge: float = 1e-4,
        lm_iters: int = 100,
        lm_tol: float = 1e-4,
        width: int = 32,
        modes: int = 12,
        layers: int = 4,
        proj: int = 128,
        clip: float = 1.0,
        val_samples: int = 16,
        mlp_width: int = 64,
        mlp_depth: int = 4,
        activation: Literal["tanh", "sin"] = "tanh",
        loss: Literal["field", "constraint"] = "constraint",
        initial: Literal["exact", "penalty"] = "exact",
        term_weights: dict[str, float] | None = None,
        **common: Any,
    ) -> None:
        defaults = dict(batch_size=6, lr=1e-3, lr_step=5, lr_gamma=0.5, eval_batch=8)
        super().__init__(history=1, rollout_train=1, **{**defaults, **common})
        self.basis = check_int("method.basis", basis)
        self.experts = experts
        self.horizon = None if horizon is None else check_int("method.horizon", horizon)
        self.points = None if points is None else check_int("method.points", points)
        self.ridge = check_real("method.ridge", ridge, 0.0, strict=False)
        self.lm_iters = check_int("method.lm_iters", lm_iters)
        self.lm_tol = check_real("method.lm_tol", lm_tol, 0.0)
        self.width = check_int("method.width", width)
        self.modes = check_int("method.modes", modes)
        self.layers = check_int("method.layers", layers)
        self.proj = check_int("method.proj", proj)
        self.clip = check_real("method.clip", clip, 0.0, strict=False)
        self.val_samples = check_int("method.val_samples", val_samples)
        self.mlp_width = check_int("method.mlp_width", mlp_width)
        self.mlp_depth = check_int("method.mlp_depth", mlp_depth)
        self.activation, self.loss = activation, loss
        self.initial = initial
        self.term_weights = {
            str(k): check_real(f"method.term_weights.{k}", v, 0.0)
            for k, v in dict(term_weights or {}).items()
        }
        self._blocks_for(0)  # validates `experts` early (its length is checked per problem)
        self._shot: tuple[int, int] = (1, 1)  # (horizon, basis), set from the data

    # -- configuration ------------------------------------------------------------------------
    def needs_for(self, problem: Problem) -> frozenset[str]:
        """Operator data with grid residuals for the FNO backbone; a residual for the MLP one."""
        if "operator_data" in problem.capabilities or not self.constrained:
            return self.needs
        return frozenset({"residual"})

    def applicable(self, problem: Problem) -> str | None:
        reason = super().applicable(problem)
        if reason and not self.constrained and "operator_data" not in problem.capabilities:
            reason += (
                "; on a single-instance problem the soft-constraint baseline is "
                "`+method=pinn method.hard_constraints=false`"
            )
        if reason is None and "operator_data" not in problem.capabilities:
            reason = mlp_reason(self, problem)
        return reason

    def _blocks_for(self, dim: int) -> tuple[int, ...] | None:
        e = self.experts
        if isinstance(e, bool):
            raise ConfigError(f"method.experts must be a count or a list of counts, got {e!r}")
        if isinstance(e, int):
            if e < 1:
                raise ConfigError(f"method.experts must be >= 1, got {e}")
            if dim == 1:
                return (1, e)
            a = int(math.isqrt(e))
            while e % a:
                a -= 1
            return (1, e // a, a)
        try:
            blocks = tuple(int(x) for x in e)
        except (TypeError, ValueError):
            raise ConfigError(
                f"method.experts must be a count or a list of counts, got {e!r}"
            ) from None
        if any(b < 1 for b in blocks) or any(int(x) != x for x in e):
            raise ConfigError(f"method.experts must hold positive integers, got {e!r}")
        if dim > 0 and len(blocks) != dim + 1:
            raise ConfigError(
                f"method.experts={list(blocks)} needs {dim + 1} counts here: one for time and "
                f"one per space axis, e.g. {[1] + [2] * dim}"
            )
        return blocks

    def build_net(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        grid: tuple[int, ...],
        data: OperatorData,
    ) -> nn.Module:
        modes = min(self.modes, *(g // 2 for g in grid))
        out = self._frames_out * self._shot[1] * out_channels
        return FNONet(in_channels, out, dim, self.width, modes, self.layers, self.proj)

    @property
    def _frames_out(self) -> int:
        """Frames of basis functions the FNO outputs per shot: `horizon`, or horizon + 1 where
        frame 0 is free too (`initial: penalty`)."""
        return self._shot[0] + (self.initial == "penalty")

    def grid_masks(self, problem: Problem, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The problem's residual masks on a shot's grid, plus the `ic` mask (frame 0) where the
        start is a penalty (`initial: penalty`)."""
        masks = problem.grid_masks(shape)
        if self.initial == "penalty":
            masks["ic"] = np.zeros(shape, dtype=bool)
            masks["ic"][0] = True
        return masks

    def _setup(
        self, problem: Problem, budget: Budget
    ) -> tuple[StepModel, OperatorData, OperatorData, Partition, float]:
        t_len = len(problem.operator_data("val", data_scale(budget.name)).times)
        context = int(getattr(problem, "context", 1))
        avail = t_len - context
        horizon = avail if self.horizon is None else min(self.horizon, avail)
        if horizon < 2:
            raise ConfigError(
                f"method.horizon must be >= 2 (a time derivative needs 3 frames), got {horizon} "
                f"(problem {problem.name!r} predicts {avail} frames after its context)"
            )
        self._shot = (horizon, self.basis if self.constrained else 1)
        model, train, val = self.prepare(problem, budget)
        if self.initial == "penalty" and model.c_out != 1:
            raise ConfigError(
                f"method.initial=penalty needs a one-channel state; problem {problem.name!r} "
                f"has {model.c_out} channels (use method.initial=exact)"
            )
        dim = len(train.grid)
        shape = (horizon + 1, *(len(g) for g in train.grid))
        names = set(self.grid_masks(problem, shape))
        unknown = sorted(set(self.term_weights) - names)
        if unknown:
            raise ConfigError(
                f"method.term_weights: {unknown} are not residuals of problem "
                f"{problem.name!r}; its residuals: {sorted(names)}"
            )
        blocks = self._blocks_for(dim) if self.constrained else (1,) * (dim + 1)
        try:
            part = Partition(shape, blocks, self.grid_masks(problem, shape))
        except ValueError as e:
            raise ConfigError(
                f"method.experts={list(blocks)} does not fit the grid {shape}: {e}"
            ) from None
        return model, train, val, part, uniform_step(train.times)

    # -- one shot -----------------------------------------------------------------------------
    def shot_times(self, dt: float, device: torch.device) -> Tensor:
        """The times [horizon + 1] of a shot's frames, from its start (float64)."""
        return torch.arange(self._shot[0] + 1, dtype=torch.float64, device=device) * dt

    def shot(
        self,
        model: StepModel,
        problem: Any,
        part: Partition,
        start: Tensor,
        inputs: Tensor,
        dt: float,
    ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """(frames u [B, horizon + 1, c, *grid] with u[:, 0] = start (`initial: exact`; with
        `penalty` u[:, 0] is fitted too), the residuals F at the constrained points [B, E, M],
        solver statistics); float64 from the basis on."""
        horizon, n = self._shot
        c = model.c_out
        bsz, grid = start.shape[0], tuple(start.shape[2:])
        like = next(model.parameters())
        x = model.encode(start.to(like))[:, None]
        extra = model.encode_extra(inputs[:, c:].to(like))
        raw = model.step(x, extra).reshape(bsz, self._frames_out, n, c, *grid)
        scale = model.state_scale.to(torch.float64)
        b = raw.to(torch.float64) * scale
        if self.initial == "exact":
            b = torch.cat([torch.zeros_like(b[:, :1]), b], dim=1)
        b = b.movedim(2, 1)  # [B, N, T, c, *grid]
        u0 = start.to(torch.float64)
        times = self.shot_times(dt, b.device)
        system = ConstraintSystem(
            problem, part, b, u0, inputs.to(torch.float64), times, self.initial, self.term_weights
        )
        e = part.n_experts
        if not self.constrained:
            w = torch.ones(bsz, e, 1, dtype=torch.float64, device=b.device)
            return system.assemble(w, b), system.residuals(w), {}
        w0 = torch.zeros(bsz, e, n, dtype=torch.float64, device=b.device)
        sol = lm_solve(
            system.residuals_and_jacobian, w0, self.ridge, self.lm_iters, self.lm_tol, self.lm_tol
        )
        w = sol.w
        if torch.is_grad_enabled() and b.requires_grad:
            w = implicit_solution(system.residuals, sol.w, self.ridge, sol.hess)
        stats = {
            "lm_iters": float(sol.iterations),
            "lm_converged": sol.converged,
            "lm_cost0": sol.cost0,
            "lm_cost": sol.cost,
        }
        return system.assemble(w, b), system.residuals(w), stats

    # -- training -----------------------------------------------------------------------------
    def fit(self, problem: Problem, budget: Budget, report: Report) -> Any:
        if "operator_data" not in problem.capabilities:
            if self.initial != "exact" or self.term_weights:
                raise ConfigError(
                    "method.initial and method.term_weights apply to the FNO backbone (operator "
                    f"data); problem {problem.name!r} is a single instance: leave them unset"
                )
            return fit_mlp(self, problem, budget, report)
        model, train, val, part, dt = self._setup(problem, budget)
        k = self.val_samples
        val = OperatorData(val.inputs[:k], val.outputs[:k], val.grid, val.times, val.meta)
        horizon = self._shot[0]
        pred = ShotPredictor(self, model, problem, part, dt)
        like = next(model.parameters())
        frames = torch.as_tensor(train.outputs, dtype=torch.float64, device=like.device)
        inputs = torch.as_tensor(train.inputs, dtype=torch.float64, device=like.device)
        n, t_len = frames.shape[:2]
        context = int(getattr(problem, "context", 1))
        first, last = context - 1, t_len - 1 - horizon  # starts inside the evaluated frames
        b = min(self.batch_size, n)
        gen = self.generator(11)
        points = self.points if self.points is not None else budget.points
        fraction = 1.0 if points is None else min(1.0, points / part.count())
        times = self.shot_times(dt, like.device)
        masks = {
            k: torch.as_tensor(v, device=like.device)
            for k, v in self.grid_masks(problem, part.shape).items()
        }
        opt = self.optimiser(list(model.parameters()))

        def batch_loss(idx: Tensor) -> tuple[Tensor, dict[str, float]]:
            idx = idx.to(frames.device)
            starts = torch.randint(first, last + 1, (len(idx),), generator=gen).to(frames.device)
            sub = part.subsample(fraction, gen)
            start = frames[idx, starts]
            u, res, stats = self.shot(model, problem, sub, start, inputs[idx], dt)
            own = residual_rms(res, sub).mean()
            if self.loss == "field":
                loss = field_loss(
                    problem, u, inputs[idx], times, masks, self.term_weights, start
                ).mean()
            else:
                loss = own
            stats["constraint_residual"] = float(own.detach())
            return loss, stats

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
            clip=self.clip,
            selector=Selector(self, pred, val, context, model),
        )
        return pred


class SoftConstraint(HardMoE):
    """The soft-constraint baseline (PI-SC): `hard_moe`'s backbone with one output per frame
    and w = 1, trained on the same residual loss; it has no `basis` or `experts`."""

    name = "soft_constraint"

    constrained: ClassVar[bool] = False
    fixed_keys: ClassVar[tuple[str, ...]] = (*HardMoE.fixed_keys, "basis", "experts")
    smoke: ClassVar[dict[str, Any]] = {"width": 8, "modes": 6, "proj": 16, "val_every": 100}


class ShotPredictor(OperatorPredictor):
    """Chains shots from the last given frame (the constraint solve runs at prediction too)."""

    whole_window = True

    def __init__(
        self, method: HardMoE, model: StepModel, problem: Any, part: Partition, dt: float
    ) -> None:
        self.method, self.model, self.problem, self.part, self.dt = method, model, problem, part, dt

    def rollout(self, window: np.ndarray, inputs: np.ndarray, steps: int) -> np.ndarray:
        m, horizon = self.method, self.method._shot[0]
        like = next(self.model.parameters())
        n = window.shape[0]
        out = np.empty((n, steps, *window.shape[2:]), dtype=np.float64)
        sq, count, iters, shots = 0.0, 0, 0.0, 0
        self.model.eval()
        with torch.no_grad():
            for i in range(0, n, m.eval_batch):
                start = torch.as_tensor(window[i : i + m.eval_batch, -1], dtype=torch.float64)
                x = torch.as_tensor(inputs[i : i + m.eval_batch], dtype=torch.float64)
                start, x = start.to(like.device), x.to(like.device)
                done = 0
                while done < steps:
                    u, res, stats = m.shot(self.model, self.problem, self.part, start, x, self.dt)
                    k = min(horizon, steps - done)
                    out[i : i + len(start), done : done + k] = u[:, 1 : k + 1].cpu().numpy()
                    start, done = u[:, horizon], done + k
                    sq += float(res.square().sum())
                    count += len(start) * self.part.count()
                    iters, shots = iters + stats.get("lm_iters", 0.0), shots + 1
        self._diagnostics = {"constraint_residual": math.sqrt(sq / max(count, 1))}
        if m.constrained:
            self._diagnostics["lm_iters"] = iters / max(shots, 1)
        return out

    def diagnostics(self) -> dict[str, float]:
        """`constraint_residual`: the RMS residual at the constrained points of every shot of
        the last rollout (each expert's own solution there); `lm_iters`: mean LM iterations."""
        return dict(getattr(self, "_diagnostics", {}))

    def n_params(self) -> int:
        return count_params(self.model)
