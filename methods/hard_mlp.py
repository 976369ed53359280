"""`hard_moe`'s MLP backbone for single-instance problems (PI-HC-MoE with a coordinate net).

An MLP maps a point (its coordinates, normalised to [-1, 1]) to N basis functions b_k, each with
one value per field; the solution is u(x) = sum_k w^e_k b_k(x), with w^e the coefficients of the
expert e whose box holds x. The experts are a fixed grid of blocks over the problem's box (one
count per axis). Each training step:

1. draws fresh points: interior collocation points and each condition's points;
2. forms every basis function's values and the derivatives the residuals read, once, with the
   harness's derivative backend (`methods/taylor.py`: forward-mode jets, or autograd);
3. finds every expert's w^e by Levenberg–Marquardt (float64, with the ridge term) so that the
   PDE residual and the condition residuals vanish at that expert's points
   (`methods/least_squares.py`, the operator backbone's solver), warm-started from the last
   step's w; the PDE rows are unweighted, as the operator backbone's (so `ridge` means the
   same), and each condition's rows are weighted by sqrt(PDE rows / its rows), so that a
   200-point boundary condition counts as much as 8,000 interior points (the PINN's loss:
   the sum of the terms' mean squares);
4. attaches dw*/dtheta by the implicit function theorem and minimises the RMS residual of the
   constrained solution with Adam.

The predictor is the net with the coefficients of the latest solve (fresh collocation points,
never the reference). The residual rows must be pointwise: row i may read only the values
and derivatives at point i (each expert's least-squares problem holds its own points).
Conditions that pair points (periodicity) are therefore out of scope: `hard_moe` says so
before training (`pointwise_reason`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from methods.base import Budget, Report, TorchPredictor
from methods.least_squares import implicit_solution, lm_solve
from methods.minibatch import fit_minibatch
from methods.nets import build_net
from methods.taylor import FieldsBuilder, Key, probe
from problems.base import Box, ConfigError, Problem
from problems.fields import Fields, FieldsError

__all__ = [
    "BoxExperts",
    "CoefficientFields",
    "HardPredictor",
    "PointSystem",
    "Trainer",
    "affine_terms",
    "box_blocks",
    "fit_mlp",
    "mlp_reason",
    "pointwise_reason",
]

log = logging.getLogger(__name__)
LR_EVERY = 1000  # MLP backbone: lr x lr_gamma every lr_step x LR_EVERY steps
MLP_MAX_AXES = 3  # beyond this, the basis derivatives on every axis cost too much: pinn + SDGD


class BoxExperts:
    """A fixed decomposition of `box` into `blocks` (one count per axis, in the box's order):
    expert ids are row-major over the per-axis block indices."""

    def __init__(self, box: Box, blocks: Sequence[int]) -> None:
        if len(blocks) != len(box.axes):
            raise ValueError(f"{len(blocks)} block counts for the axes {box.axes}")
        self.lo = torch.as_tensor(box.lo)
        self.width = torch.as_tensor(box.hi - box.lo)
        self.blocks = tuple(int(b) for b in blocks)
        self.n = math.prod(self.blocks)

    def of(self, points: Tensor) -> Tensor:
        """The expert id [P] of each point [P, d] (points on a shared face go to the upper
        block; points outside the box to the nearest one)."""
        u = (points.detach().double().cpu() - self.lo) / self.width
        ids = torch.zeros(len(points), dtype=torch.int64)
        for j, nb in enumerate(self.blocks):
            ids = ids * nb + (u[:, j] * nb).floor().long().clamp(0, nb - 1)
        return ids.to(points.device)


class Combined(nn.Module):
    """u(x) = sum_k w[e(x), k] b_k(x): the basis net with each point's expert's coefficients
    (`w` [E, N], a buffer updated after every solve)."""

    def __init__(self, net: nn.Module, experts: BoxExperts, n_basis: int, n_fields: int) -> None:
        super().__init__()
        self.net, self.experts = net, experts
        self.n_basis, self.n_fields = n_basis, n_fields
        like = next(net.parameters())
        self.register_buffer("w", like.new_zeros(experts.n, n_basis))

    def forward(self, x: Tensor) -> Tensor:
        b = self.net(x).reshape(len(x), self.n_basis, self.n_fields)
        return torch.einsum("pnc,pn->pc", b, self.w[self.experts.of(x)])


class CoefficientFields(Fields):
    """`Fields` whose values and derivatives are given (`terms`, by key); asking for any
    other derivative is an error, not a silent zero."""

    def __init__(
        self, points: Tensor, axes: Sequence[str], names: Sequence[str], terms: dict[Key, Tensor]
    ) -> None:
        values = torch.stack([terms[(n,)] for n in names], dim=1)
        super().__init__(points, axes, names, values=values)
        self._cache.update({k: v for k, v in terms.items() if len(k) > 1})

    def _derivative(self, key: Key) -> Tensor:
        raise FieldsError(
            f"hard_moe: the residual asked for the derivative {key}, which its probe did not "
            "see (a residual must read the same derivatives at every call)"
        )


def _as_rows(r: Tensor, n: int) -> Tensor:
    return r.reshape(n, -1)


def _requested(
    problem: Problem, residuals: Sequence[Callable], points: Sequence[Tensor]
) -> list[list[Key]]:
    """The derivative keys each residual reads, plus every field's value, sorted: sums over
    them must not depend on the process's string-hash seed (set order), or the runs would not
    be reproducible."""
    gen = torch.Generator().manual_seed(0)  # the probe's values do not matter; keep it seeded
    net = build_net(problem.domain, len(problem.fields), width=8, depth=1, generator=gen)
    found = probe(net, problem.axes, problem.fields, residuals, points)
    return [sorted(set(r) | {(n,) for n in problem.fields}) for r in found]


def pointwise_reason(problem: Problem, n: int = 6) -> str | None:
    """None when every residual row reads only its own point's terms (what the per-expert
    least squares needs), else a one-line reason naming the term that couples points."""
    gen = torch.Generator().manual_seed(0)
    conds = problem.conditions()
    names = ["pde"] + [c.name for c in conds]
    fns = [problem.residual] + [c.residual for c in conds]
    pts = [problem.sample_interior(n, gen)] + [c.sample(n, gen) for c in conds]
    for name, fn, p, keys in zip(names, fns, pts, _requested(problem, fns, pts)):
        leaves = {k: torch.rand(n, dtype=torch.float64, generator=gen).add(0.5) for k in keys}
        for v in leaves.values():
            v.requires_grad_(True)
        reason = (
            f"hard_moe's experts need pointwise residuals, and the term {name!r} of problem "
            f"{problem.name!r} couples points (e.g. periodicity)"
        )
        with torch.enable_grad():
            rows = fn(CoefficientFields(p, problem.axes, problem.fields, leaves))
            if rows.shape[0] != n:  # fewer rows than points: pairs of points
                return reason
            rows = _as_rows(rows, n)
            for i in range(n):
                for j in range(rows.shape[1]):
                    if not rows[i, j].requires_grad:
                        continue
                    grads = torch.autograd.grad(
                        rows[i, j], list(leaves.values()), retain_graph=True, allow_unused=True
                    )
                    for g in grads:
                        if g is not None and bool(((g != 0) & (torch.arange(n) != i)).any()):
                            return reason
    return None


def mlp_reason(method: Any, problem: Problem) -> str | None:
    """None when `hard_moe`'s MLP backbone can run on `problem` with `method.experts`, else
    a one-line reason (too many axes, an integer `experts` without a time and a space axis,
    residuals that pair points)."""
    axes = problem.axes
    if len(axes) > MLP_MAX_AXES:
        return (
            f"hard_moe's MLP backbone forms every basis function's derivatives on every "
            f"axis; problem {problem.name!r} has {len(axes)} (at most {MLP_MAX_AXES}: "
            "use pinn, with method.sdgd_dims for high dimensions)"
        )
    e = method.experts
    if isinstance(e, int) and not isinstance(e, bool) and ("t" not in axes or len(axes) < 2):
        return (
            f"an integer method.experts splits the space axes of a time-dependent PDE, "
            f"and problem {problem.name!r} has axes {axes}: give one count per axis, e.g. "
            f"method.experts={[1] * len(axes)} (one expert: the single hard constraint)"
        )
    return pointwise_reason(problem)


def box_blocks(method: Any, problem: Problem) -> tuple[int, ...]:
    """The experts of `method` on `problem`: one block count per axis (an integer n splits
    the space axes as the operator backbone splits its grid's: n in 1-D, near-square in 2-D)."""
    axes = problem.axes
    e = method.experts
    if isinstance(e, int) and not isinstance(e, bool):
        blocks = [1] * len(axes)
        space = [i for i, a in enumerate(axes) if a != "t"]
        for i, nb in zip(space, method._blocks_for(min(2, len(space)))[1:]):
            blocks[i] = nb
        return tuple(blocks)
    given = tuple(method._blocks_for(0))
    if len(given) != len(axes):
        raise ConfigError(
            f"method.experts={list(given)} needs {len(axes)} counts here, one per axis of "
            f"{axes} (the problem's order), e.g. {[2] * len(axes)}"
        )
    return given


def affine_terms(
    problem: Problem, fns: Sequence[Callable], points: Sequence[Tensor], requested: Sequence[list]
) -> list[bool]:
    """Per residual: True when it is affine in the terms (its gradient with respect to them is
    the same at two random values), so that its Jacobian in w is fixed within a step."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for fn, p, keys in zip(fns, points, requested):
        grads = []
        for _ in range(2):
            vals = {k: torch.randn(len(p), dtype=torch.float64, generator=gen) for k in keys}
            for v in vals.values():
                v.requires_grad_(True)
            with torch.enable_grad():
                r = fn(CoefficientFields(p, problem.axes, problem.fields, vals))
                g = torch.autograd.grad(r.sum(), list(vals.values()), allow_unused=True)
            grads.append([torch.zeros(len(p)) if x is None else x.detach() for x in g])
        out.append(all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(*grads)))
    return out


class PointSystem:
    """The residual rows of one step as functions of the coefficients w [1, E, N].

    `blocks[i]` are the points of loss term i, `residuals[i]` its residual, `basis[i][key]`
    [P_i, N] the basis functions' value or derivative `key` there (with the net's graph).
    Rows are packed per expert into F [1, E, M] (zero-weight padding), each term's rows
    weighted by sqrt(the expert's PDE rows / its own rows): every term weighs as much as the
    PDE, whose rows are unweighted (as the operator backbone's, so `ridge` means the same).
    """

    def __init__(
        self,
        problem: Problem,
        experts: BoxExperts,
        blocks: Sequence[Tensor],
        residuals: Sequence[Callable[[Fields], Tensor]],
        basis: Sequence[dict[Key, Tensor]],
        affine: Sequence[bool] = (),
    ) -> None:
        self.problem, self.blocks, self.fns, self.basis = problem, blocks, residuals, basis
        self.affine = list(affine) or [False] * len(blocks)
        self._fixed: dict[int, tuple[Tensor, Tensor]] = {}  # affine block: (F at w = 0, J)
        self.ids = [experts.of(p) for p in blocks]
        n_basis = next(iter(basis[0].values())).shape[1]
        like = next(iter(basis[0].values()))
        zero = like.new_zeros(1, experts.n, n_basis)
        widths = [_as_rows(r, len(p)).shape[1] for r, p in zip(self._rows(zero, True), blocks)]
        row_ids, row_wt = [], []
        rows_pde = (torch.bincount(self.ids[0], minlength=experts.n) * widths[0]).clamp(min=1)
        for ids, m in zip(self.ids, widths):
            rows = (torch.bincount(ids, minlength=experts.n) * m).clamp(min=1)
            row_ids.append(ids.repeat_interleave(m))
            row_wt.append((rows_pde[ids] / rows[ids]).to(like).sqrt().repeat_interleave(m))
        self.widths = widths
        self.rows_pde = int(rows_pde.sum())
        all_ids, self.row_weight = torch.cat(row_ids), torch.cat(row_wt)
        per_e = [torch.nonzero(all_ids == e).flatten() for e in range(experts.n)]
        m_max = max(1, max(len(p) for p in per_e))
        self.index = all_ids.new_zeros(experts.n, m_max)
        self.mask = like.new_zeros(experts.n, m_max)
        for e, p in enumerate(per_e):
            self.index[e, : len(p)] = p
            self.mask[e, : len(p)] = 1.0
        self.n_experts = experts.n

    def _terms(self, i: int, w: Tensor, detach: bool) -> dict[Key, Tensor]:
        we = w[0][self.ids[i]]  # [P, N]
        return {k: (b.detach() if detach else b).mul(we).sum(-1) for k, b in self.basis[i].items()}

    def _rows(self, w: Tensor, detach: bool) -> list[Tensor]:
        p = self.problem
        return [
            self.fns[i](
                CoefficientFields(self.blocks[i], p.axes, p.fields, self._terms(i, w, detach))
            )
            for i in range(len(self.blocks))
        ]

    def _pack(self, flat: Tensor) -> Tensor:
        """Rows [R, ...] (weighted) as [E, M, ...] with zero padding."""
        out = (flat * self.row_weight.reshape(-1, *[1] * (flat.ndim - 1)))[self.index]
        return out * self.mask.reshape(*self.mask.shape, *[1] * (flat.ndim - 1))

    def residuals(self, w: Tensor) -> Tensor:
        """F [1, E, M], differentiable in w and in the basis."""
        rows = [_as_rows(r, len(b)).flatten() for r, b in zip(self._rows(w, False), self.blocks)]
        return self._pack(torch.cat(rows))[None]

    def residuals_and_jacobian(
        self, w: Tensor, active: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(F [1, E, M], J = dF/dw [1, E, N, M]) with the basis detached, or where `active`
        [1, E] is given, F [K, M] and J [K, N, M] of its K experts (formed for every expert,
        then selected; see `least_squares.Residuals`). Rows are pointwise in the terms, so
        one backward pass per residual column gives every dR/dterm, and J = sum over terms
        of dR/dterm x (the term's basis functions)."""
        fs, js = [], []
        for i in range(len(self.blocks)):
            if not self.affine[i]:
                f, j = self._block_jacobian(i, w)
            else:  # affine: F = F(0) + J w, with J fixed for the step
                if i not in self._fixed:
                    self._fixed[i] = self._block_jacobian(i, torch.zeros_like(w))
                f0, j = self._fixed[i]
                m = self.widths[i]
                f = f0 + (j * w[0][self.ids[i]].repeat_interleave(m, dim=0)).sum(-1)
            fs.append(f)
            js.append(j)
        F = self._pack(torch.cat(fs))[None]
        J = self._pack(torch.cat(js)).movedim(-1, 1)[None]
        if active is not None:
            return F[active], J[active]
        return F, J

    def _block_jacobian(self, i: int, w: Tensor) -> tuple[Tensor, Tensor]:
        """Block i's rows [P m] and their Jacobian [P m, N] in its points' coefficients."""
        p, pts = self.problem, self.blocks[i]
        with torch.enable_grad():
            vals = {k: v.detach().requires_grad_(True) for k, v in self._terms(i, w, True).items()}
            rows = _as_rows(self.fns[i](CoefficientFields(pts, p.axes, p.fields, vals)), len(pts))
            keys = list(vals)
            jac = rows.new_zeros(*rows.shape, next(iter(self.basis[i].values())).shape[1])
            for j in range(rows.shape[1]):
                if not rows[:, j].requires_grad:
                    continue
                grads = torch.autograd.grad(
                    rows[:, j].sum(),
                    [vals[k] for k in keys],
                    retain_graph=True,
                    allow_unused=True,
                )
                for k, g in zip(keys, grads):
                    if g is not None:
                        jac[:, j] += g[:, None] * self.basis[i][k].detach()
        return rows.detach().flatten(), jac.flatten(0, 1)

    def term_rms(self, F: Tensor) -> list[float]:
        """Each term's RMS residual (unweighted) from the packed F [1, E, M]."""
        flat = torch.zeros_like(self.row_weight)
        flat[self.index[self.mask > 0]] = F[0][self.mask > 0].detach()
        flat = flat / self.row_weight
        out, start = [], 0
        for pts, m in zip(self.blocks, self.widths):
            n = len(pts) * m
            out.append(float(flat[start : start + n].square().mean().sqrt()))
            start += n
        return out


class Trainer:
    """One run of the MLP backbone: the net, the experts, the point samplers and the solve."""

    def __init__(self, method: Any, problem: Problem, budget: Budget) -> None:
        dev, dt = torch.device(method.device), torch.float64
        self.method, self.problem = method, problem
        conds = problem.conditions()
        self.names = ["pde"] + [c.name for c in conds]
        self.fns: list[Callable[[Fields], Tensor]] = [problem.residual]
        self.fns += [c.residual for c in conds]
        self.samplers = [problem.sample_interior] + [c.sample for c in conds]
        sizes = [method.points or problem.n_collocation] + [c.n_points for c in conds]
        if budget.points is not None:
            sizes = [min(n, budget.points) for n in sizes]
        self.sizes = sizes
        self.experts = BoxExperts(problem.domain, box_blocks(method, problem))
        held = torch.zeros(self.experts.n, dtype=torch.bool)
        for c in conds:
            held[
                self.experts.of(c.sample(max(c.n_points, 64), torch.Generator().manual_seed(0)))
            ] = True
        if not bool(held.all()):
            log.warning(
                "method.experts=%s: expert(s) %s hold no condition points; their coefficients "
                "are pinned by the PDE alone (the zero solution of a homogeneous equation)",
                list(self.experts.blocks), torch.nonzero(~held).flatten().tolist(),
            )  # fmt: skip
        n, c = self.n_basis, _ = method.basis, len(problem.fields)
        self.net = build_net(
            problem.domain, n * c, width=method.mlp_width, depth=method.mlp_depth,
            activation=method.activation, generator=method.generator(1), dtype=dt, device=dev,
        )  # fmt: skip
        self.model = Combined(self.net, self.experts, n, c)
        self.gen = method.generator(0)
        self.eval_gen = method.generator(2)  # the predictor's solves: their own stream
        pts0 = [s(4, self.gen).to(device=dev, dtype=dt) for s in self.samplers]
        self.requested = _requested(problem, self.fns, pts0)
        self.affine = affine_terms(problem, self.fns, pts0, self.requested)
        basis_names = [f"{f}.{k}" for k in range(n) for f in problem.fields]  # column k*c + j
        self.builder = FieldsBuilder(
            self.net, problem.axes, basis_names, "auto",
            [{(f"{key[0]}.{k}", *key[1:]) for key in r for k in range(n)} for r in self.requested],
        )  # fmt: skip
        self.w = torch.zeros(1, self.experts.n, n, dtype=dt, device=dev)
        self.dev, self.dt = dev, dt

    def system(self, gen: torch.Generator) -> PointSystem:
        """Fresh points from `gen` and the basis functions' terms there (with the graph)."""
        pts = [
            s(m, gen).to(device=self.dev, dtype=self.dt) for s, m in zip(self.samplers, self.sizes)
        ]
        n = self.n_basis
        basis = [
            {
                key: torch.stack([f.d(f"{key[0]}.{k}", *key[1:]) for k in range(n)], -1)
                for key in keys
            }  # fmt: skip
            for f, keys in zip(self.builder(pts), self.requested)
        ]
        return PointSystem(self.problem, self.experts, pts, self.fns, basis, self.affine)

    def solve(self, system: PointSystem, keep: bool = True) -> Any:
        """LM from the last training solve's w; with `keep`, the next one starts here."""
        m = self.method
        sol = lm_solve(
            system.residuals_and_jacobian, self.w, m.ridge, m.lm_iters, m.lm_tol, m.lm_tol
        )
        if keep:
            self.w = sol.w.detach()
        return sol

    def state_dict(self) -> dict[str, Any]:
        """For checkpoints: the two point streams and the training's warm start."""
        return {"gen": self.gen.get_state(), "eval_gen": self.eval_gen.get_state(), "w": self.w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.eval_gen.set_state(state["eval_gen"])
        self.w = state["w"].to(device=self.dev, dtype=self.dt)

    def refresh(self) -> None:
        """The predictor's coefficients for the current net, from a solve on fresh points
        (the training's warm start stays: evaluating never changes the training)."""
        with torch.no_grad():
            sol = self.solve(self.system(self.eval_gen), keep=False)
            self.model.w.copy_(sol.w[0])


class HardPredictor(TorchPredictor):
    """The net with coefficients solved for its current weights (lazily: one solve on fresh
    collocation points the first time it is called after a training step)."""

    def __init__(self, trainer: Trainer) -> None:
        super().__init__(trainer.model, trainer.problem.axes, trainer.problem.fields)
        self.trainer, self.version, self.solved = trainer, 0, -1

    def _current(self) -> None:
        if self.solved != self.version:
            self.trainer.refresh()
            self.solved = self.version

    def __call__(self, points: Any) -> Any:
        self._current()
        return super().__call__(points)

    def fields(self, points: Tensor) -> Fields:
        self._current()
        return super().fields(points)


def fit_mlp(method: Any, problem: Problem, budget: Budget, report: Report) -> TorchPredictor:
    """Train `hard_moe`'s MLP backbone on a single-instance problem (see the module doc). Every
    step draws its own points, so the shared loop runs over one sample, in order; lr x lr_gamma
    every lr_step x `LR_EVERY` steps."""
    tr = Trainer(method, problem, budget)
    opt = method.optimiser(list(tr.net.parameters()))  # method.optimizer: adam | adamw
    pred = HardPredictor(tr)

    def batch_loss(idx: Tensor) -> tuple[Tensor, dict[str, float]]:
        system = tr.system(tr.gen)
        sol = tr.solve(system)
        w = implicit_solution(system.residuals, sol.w, method.ridge, sol.hess)
        F = system.residuals(w)
        pred.version += 1  # the optimiser step that follows changes the net
        scalars = {"lm_iters": float(sol.iterations), "lm_converged": sol.converged}
        scalars.update({f"loss_{t}": v for t, v in zip(tr.names, system.term_rms(F))})
        return F.square().sum().div(system.rows_pde).sqrt(), scalars

    fit_minibatch(
        batch_loss,
        n=1,
        batch_size=1,
        gen=None,
        model=tr.net,
        opt=opt,
        schedule=method.schedule(opt, LR_EVERY),
        report=report,
        predictor=pred,
        clip=method.clip,
        extra=tr,
    )
    return pred
