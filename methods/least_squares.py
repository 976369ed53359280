"""Batched Levenberg–Marquardt with implicit-function-theorem gradients, and the fixed domain
decomposition (experts) of a space-time grid: the constraint layer of `hard_moe`.

The problems solved are small and many: one coefficient vector w (N numbers) per sample and
expert, chosen to minimise

    C(w) = 1/2 |F(w)|^2 + 1/2 ridge^2 |w|^2,

where F stacks the residuals at that expert's points. `lm_solve` runs all of them at once,
each with its own damping, under no_grad; `implicit_solution` then attaches the gradient
dw*/dtheta of the optimum with respect to whatever F depends on (the basis functions, hence
the network) by the implicit function theorem on the optimality condition g(w, theta) =
dC/dw = 0: dw*/dtheta = -H^-1 dg/dtheta, with H the Gauss–Newton matrix J J^T + ridge^2 I
(exact where F(w*) = 0, which is what the constraint aims for). No solver iteration is in the
backward graph: one extra evaluation of g with `create_graph` carries it.

`ConstraintSystem` is F for one `hard_moe` shot: the residuals of a problem's discrete PDE
(`grid_residuals`) as functions of w, from the linear terms of every basis function formed on
the whole grid and gathered per expert. `residual_rms` and `field_loss` are `hard_moe`'s two
training losses (the experts' own residuals; the assembled solution's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from problems.capabilities import frame_residuals

__all__ = [
    "ConstraintSystem",
    "LMResult",
    "Partition",
    "field_loss",
    "implicit_solution",
    "lm_solve",
    "normal_equations",
    "residual_rms",
    "solve_spd",
    "terms_used",
]

# F(w, active) -> (F, J): the residuals and their Jacobian (rows along the last axis) of the
# problems where `active` [B, E] is True, F [K, M] and J [K, N, M] in row-major order, or of
# every problem, F [B, E, M] and J [B, E, N, M], where `active` is None
Residuals = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]


@dataclass
class LMResult:
    w: Tensor  # [B, E, N] the solution (no grad)
    hess: Tensor  # [B, E, N, N] the Gauss–Newton matrix J J^T + ridge^2 I there
    iterations: int  # iterations until every problem converged (or max_iter)
    converged: float  # fraction of the problems that met the tolerance
    cost0: float  # mean of C at the initial w
    cost: float  # mean of C at the solution


def normal_equations(
    F: Tensor, J: Tensor, w: Tensor, ridge: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(cost [...], gradient [..., N], Gauss–Newton matrix [..., N, N]) from F [..., M],
    J [..., N, M] and w [..., N]."""
    n = w.shape[-1]
    eye = torch.eye(n, dtype=w.dtype, device=w.device)
    cost = 0.5 * (F.square().sum(-1) + ridge**2 * w.square().sum(-1))
    grad = (J @ F[..., None])[..., 0] + ridge**2 * w
    hess = J @ J.transpose(-1, -2) + ridge**2 * eye
    return cost, grad, hess


def solve_spd(a: Tensor, b: Tensor) -> Tensor:
    """x = a^-1 b for symmetric positive definite a [..., N, N] and b [..., N]: one batched
    Cholesky factorisation, and LU for the matrices where it fails (not positive definite to
    rounding), whose failed factors are replaced by the identity so that no NaN reaches
    autograd. Differentiable in b."""
    chol, info = torch.linalg.cholesky_ex(a)
    bad = info != 0
    failed = bool(bad.any())
    if failed:
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        chol = torch.where(bad[..., None, None], eye, chol)
    x = torch.cholesky_solve(b[..., None], chol)[..., 0]
    if failed:
        x = torch.where(bad[..., None], torch.linalg.solve(a, b), x)
    return x


def lm_solve(
    residuals: Residuals,
    w0: Tensor,
    ridge: float = 1e-4,
    max_iter: int = 100,
    rtol: float = 1e-4,
    atol: float = 1e-4,
) -> LMResult:
    """Minimise C(w) for every (sample, expert) from `w0` [B, E, N] by Levenberg–Marquardt
    with Marquardt's diagonal scaling: step (H + lam diag(H)) d = -g, accepted when C falls
    (then lam / 3, else lam x 2). A problem has converged when an accepted step is below
    atol + rtol |w| and lowered C by at most atol^2 + rtol C (optimistix's Cauchy test), or
    when a step that small was rejected (at the optimum, rounding rejects every step).

    Each iteration solves for, and evaluates `residuals` (see `Residuals`) at the trial points
    of, only the problems that have not converged: a converged problem is never touched
    again. The damped matrices are solved by LU, not Cholesky: with lam down to 1e-12 they
    can be too ill-conditioned for Cholesky to reproduce LU's iterates."""
    with torch.no_grad():
        lead, n = w0.shape[:-1], w0.shape[-1]
        w = w0.reshape(-1, n).clone()  # [P, N]: the problems in row-major order
        F, J = residuals(w0, None)
        cost, grad, hess = normal_equations(F.flatten(0, -2), J.flatten(0, -3), w, ridge)
        cost0 = float(cost.mean())
        lam = torch.full(cost.shape, 1e-3, dtype=w.dtype, device=w.device)
        done = torch.zeros(cost.shape, dtype=torch.bool, device=w.device)
        eye = torch.eye(n, dtype=w.dtype, device=w.device)
        iterations = 0
        for _ in range(max_iter):
            iterations += 1
            rows = torch.nonzero(~done).flatten()  # [K]
            h, g, c, wa, la = hess[rows], grad[rows], cost[rows], w[rows], lam[rows]
            damped = h + la[:, None, None] * (torch.diag_embed(h.diagonal(0, -2, -1)) + 1e-12 * eye)
            step = -torch.linalg.solve(damped, g)
            trial = w.clone()
            trial[rows] = wa + step
            active = None if len(rows) == len(w) else ~done.reshape(lead)
            F_new, J_new = residuals(trial.reshape(*lead, n), active)
            cost_new, grad_new, hess_new = normal_equations(
                F_new.flatten(0, -2), J_new.flatten(0, -3), wa + step, ridge
            )
            ok = (cost_new <= c) & torch.isfinite(cost_new)
            small = step.norm(dim=-1) <= atol + rtol * wa.norm(dim=-1)
            settled = c - cost_new <= atol * atol + rtol * c
            acc = rows[ok]
            w[acc] = (wa + step)[ok]
            cost[acc] = cost_new[ok]
            grad[acc] = grad_new[ok]
            hess[acc] = hess_new[ok]
            lam[rows] = torch.where(ok, la / 3, la * 2).clamp(1e-12, 1e12)
            # done: an accepted step that was small and lowered C by little, or a rejected
            # step that was already small (no smaller step lowers C: the optimum, to rounding)
            done[rows] = (ok & small & settled) | (~ok & small)
            if bool(done.all()):
                break
    return LMResult(
        w.reshape(*lead, n),
        hess.reshape(*lead, n, n),
        iterations,
        float(done.double().mean()),
        cost0,
        float(cost.mean()),
    )


def implicit_solution(
    residuals: Callable[[Tensor], Tensor], w_star: Tensor, ridge: float, hess: Tensor
) -> Tensor:
    """`w_star` (detached) with the implicit-function-theorem gradient attached: the value is
    exactly `w_star`; its derivative with respect to what `residuals(w) -> F [B, E, M]` depends
    on is -H^-1 dg/dtheta, g = J F + ridge^2 w the gradient of C, `hess` the H [B, E, N, N] at
    `w_star` (detached; solved by Cholesky, `solve_spd`)."""
    w = w_star.detach().requires_grad_(True)
    F = residuals(w)
    cost = 0.5 * (F.square().sum() + ridge**2 * w.square().sum())
    (g,) = torch.autograd.grad(cost, w, create_graph=True)
    correction = solve_spd(hess.detach(), g - g.detach())
    return w_star.detach() - correction


class Partition:
    """A fixed decomposition of a grid of `shape` (T, *space) into `blocks` (one count per
    axis): expert e owns the points whose block index along each axis is e's. For each named
    residual mask (bool, of `shape`), `index[name]` [E, M] holds the flat indices of its points
    per expert and `weight[name]` [E, M] is 1 there and 0 on the padding that makes the
    experts' lists one length (an expert may own none of a boundary's points)."""

    def __init__(
        self, shape: tuple[int, ...], blocks: tuple[int, ...], masks: dict[str, np.ndarray]
    ) -> None:
        if len(blocks) != len(shape):
            raise ValueError(f"{len(blocks)} block counts for a {len(shape)}-axis grid")
        ids = np.zeros(shape, dtype=np.int64)
        for ax, (n, nb) in enumerate(zip(shape, blocks)):
            if not 1 <= nb <= n:
                raise ValueError(f"{nb} blocks along an axis of {n} points")
            along = (np.arange(n) * nb) // n
            ids = ids * nb + along.reshape([-1 if a == ax else 1 for a in range(len(shape))])
        self.shape, self.blocks = shape, blocks
        self.n_experts = int(np.prod(blocks))
        self.expert_of = torch.as_tensor(ids)
        self.index: dict[str, Tensor] = {}
        self.weight: dict[str, Tensor] = {}
        flat_ids = ids.ravel()
        for name, mask in masks.items():
            if mask.shape != shape:
                raise ValueError(f"mask {name!r} has shape {mask.shape}, the grid {shape}")
            per = [np.flatnonzero(mask.ravel() & (flat_ids == e)) for e in range(self.n_experts)]
            m = max(1, max(len(p) for p in per))
            idx = np.zeros((self.n_experts, m), dtype=np.int64)
            wt = np.zeros((self.n_experts, m))
            for e, p in enumerate(per):
                idx[e, : len(p)] = p
                wt[e, : len(p)] = 1.0
            self.index[name] = torch.as_tensor(idx)
            self.weight[name] = torch.as_tensor(wt)

    def subsample(self, fraction: float, generator: torch.Generator) -> Partition:
        """The same experts keeping a random `fraction` of each expert's points per residual
        (at least one where it has any), e.g. for the random constrained points of a step."""
        if fraction >= 1.0:
            return self
        out = object.__new__(Partition)
        out.shape, out.blocks, out.n_experts = self.shape, self.blocks, self.n_experts
        out.expert_of, out.index, out.weight = self.expert_of, {}, {}
        for name, idx in self.index.items():
            valid = self.weight[name] > 0
            rows = []
            for e in range(self.n_experts):
                pts = idx[e][valid[e]]
                if len(pts):
                    keep = max(1, round(fraction * len(pts)))
                    pts = pts[torch.randperm(len(pts), generator=generator)[:keep]]
                rows.append(pts)
            m = max(1, max(len(r) for r in rows))
            new_idx = torch.zeros(self.n_experts, m, dtype=torch.int64)
            new_wt = torch.zeros(self.n_experts, m, dtype=torch.float64)
            for e, r in enumerate(rows):
                new_idx[e, : len(r)] = r
                new_wt[e, : len(r)] = 1.0
            out.index[name], out.weight[name] = new_idx, new_wt
        return out

    def count(self) -> int:
        """Constrained points over all experts and residuals."""
        return int(sum(float(w.sum()) for w in self.weight.values()))

    def gather(self, x: Tensor, name: str) -> Tensor:
        """`x` [..., *shape] at `name`'s points: [..., E, M]."""
        flat = x.flatten(-len(self.shape))
        idx = self.index[name].to(flat.device)
        return flat[..., idx]

    def spread(self, w: Tensor) -> Tensor:
        """Per-expert coefficients `w` [B, E, N] as a field [B, N, *shape]: each point gets its
        expert's coefficients."""
        ids = self.expert_of.to(w.device)
        return w[:, ids].movedim(-1, 1)


IC_FLOOR = 1e-6  # the smallest |u0| the relative start residual divides by


def start_scale(u0: Tensor) -> Tensor:
    """What the relative start residual (u - u0) / start_scale(u0) divides by (`initial=
    'penalty'`): |u0|, at least IC_FLOOR."""
    return u0.abs().clamp_min(IC_FLOOR)


# -- the constraint system of one hard_moe shot ---------------------------------------------
class ConstraintSystem:
    """The residuals of one shot as functions of the coefficients w [B, E, N].

    Built from the basis `b` [B, N, T, c, *grid], the start `u0` [B, c, *grid], the samples'
    `inputs` and the shot's `times` [T]: the linear terms of the offset and of every basis
    function, gathered at each expert's points per residual name.

    `initial`: `exact` (the basis's frame 0 is zero and the frames are u0 + sum_k w_k b_k, so
    the start holds by construction) or `penalty` (PI-HC-MoE's diffusion–sorption code: the
    frames are sum_k w_k b_k, frame 0 included, and the partition's `ic` points carry the
    relative residual (u - u0) / `start_scale(u0)` of a single-channel state). `weights`
    scales named residuals (e.g. {"pde": 0.2}).
    """

    def __init__(
        self,
        problem: Any,
        part: Partition,
        b: Tensor,
        u0: Tensor,
        inputs: Tensor,
        times: Tensor,
        initial: str = "exact",
        weights: dict[str, float] | None = None,
    ) -> None:
        bsz, n, t_len = b.shape[:3]
        self.problem, self.part = problem, part
        self.base = u0 if initial == "exact" else torch.zeros_like(u0)
        frames0 = self.base[:, None].expand(bsz, t_len, *u0.shape[1:])
        terms0 = problem.grid_terms(frames0, times)
        terms_b = {
            k: v.reshape(bsz, n, *v.shape[1:])
            for k, v in problem.grid_terms(b.flatten(0, 1), times).items()
        }
        fixed = {
            k: v.expand(bsz, t_len, *v.shape[2:]) for k, v in problem.grid_inputs(inputs).items()
        }
        self.names = list(part.index)
        pde_names = [r for r in self.names if r != "ic"]
        used = terms_used(problem, pde_names, list(terms0), list(fixed))
        self.t0 = {r: {k: part.gather(terms0[k], r) for k in used[r]} for r in pde_names}
        self.tb = {
            r: {k: part.gather(terms_b[k], r).movedim(1, 2) for k in used[r]} for r in pde_names
        }  # [B, E, N, M]
        self.fixed = {r: {k: part.gather(v, r) for k, v in fixed.items()} for r in pde_names}
        # the other residuals' terms, as broadcastable zeros (grid_residuals forms them all)
        zero = b.new_zeros(())
        for r in pde_names:
            self.fixed[r].update({k: zero for k in terms0 if k not in used[r]})
        if "ic" in self.names:
            if initial != "penalty" or u0.shape[1] != 1 or "u" not in terms0:
                raise ValueError("an `ic` residual needs initial='penalty' and one channel u")
            target = part.gather(u0[:, None, 0].expand(bsz, t_len, *u0.shape[2:]), "ic")
            self.t0["ic"] = {"u": part.gather(terms0["u"], "ic")}
            self.tb["ic"] = {"u": part.gather(terms_b["u"], "ic").movedim(1, 2)}
            self.fixed["ic"] = {"ic_target": target, "ic_scale": start_scale(target)}
        scale = weights or {}
        self.weight = {
            r: (part.weight[r].to(b) * scale.get(r, 1.0)).expand(bsz, -1, -1) for r in self.names
        }
        self._picked: tuple[Tensor, dict] | None = None  # see _subset

    def _residual(self, r: str, vals: dict[str, Tensor]) -> Tensor:
        """Residual `r` at its points from the values of its terms (and fixed inputs)."""
        if r == "ic":
            return (vals["u"] - vals["ic_target"]) / vals["ic_scale"]
        return self.problem.grid_residuals(vals)[r]

    def _values(self, r: str, w: Tensor) -> dict[str, Tensor]:
        vals = {
            k: base + torch.einsum("ben,benm->bem", w, self.tb[r][k])
            for k, base in self.t0[r].items()
        }
        return {**vals, **self.fixed[r]}

    def residuals(self, w: Tensor) -> Tensor:
        """F [B, E, M] (padding rows zero), differentiable in w and in the basis."""
        out = []
        for r in self.names:
            res = self._residual(r, self._values(r, w))
            out.append(res * self.weight[r])
        return torch.cat(out, dim=-1)

    def residuals_and_jacobian(
        self, w: Tensor, active: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(F, J = dF/dw) with the basis detached: F [B, E, M] and J [B, E, N, M], or where
        `active` [B, E] is given, F [K, M] and J [K, N, M] of its K problems only (row-major;
        see `Residuals`). The residuals are pointwise in the terms, so one backward pass of
        their sum gives every dR/dterm, and J = sum over terms of dR/dterm x (the term's
        basis functions)."""
        if active is not None:
            w = w[active]
        fs, js = [], []
        with torch.enable_grad():
            for r, (t0, tb, fixed, weight) in self._subset(active).items():
                vals = {
                    k: (t0[k] + (w[..., None, :] @ tb[k])[..., 0, :]).requires_grad_(True)
                    for k in tb
                }
                res = self._residual(r, {**vals, **fixed})
                grads = torch.autograd.grad(res.sum(), list(vals.values()), allow_unused=True)
                jac = torch.zeros_like(next(iter(tb.values())))
                for k, g in zip(tb, grads):
                    if g is not None:
                        jac.addcmul_((g * weight)[..., None, :], tb[k])
                fs.append(res.detach() * weight)
                js.append(jac)
        return torch.cat(fs, dim=-1), torch.cat(js, dim=-1)

    def _subset(self, active: Tensor | None) -> dict[str, tuple[dict, dict, dict, Tensor]]:
        """Per residual, (t0, tb, fixed, weight) with t0 and tb detached, of every problem (None)
        or of the active ones, kept while LM passes the same `active`."""
        if active is None:
            return {
                r: (
                    {k: v.detach() for k, v in self.t0[r].items()},
                    {k: v.detach() for k, v in self.tb[r].items()},
                    self.fixed[r],
                    self.weight[r],
                )
                for r in self.names
            }
        if self._picked is None or not torch.equal(self._picked[0], active):

            def pick(x: Tensor) -> Tensor:  # x [B, E, ...] at the active problems; 0-d as is
                return x if x.ndim == 0 else x[active]

            self._picked = (
                active.clone(),
                {
                    r: (
                        {k: pick(v.detach()) for k, v in self.t0[r].items()},
                        {k: pick(v.detach()) for k, v in self.tb[r].items()},
                        {k: pick(v) for k, v in self.fixed[r].items()},
                        pick(self.weight[r]),
                    )
                    for r in self.names
                },
            )
        return self._picked[1]

    def assemble(self, w: Tensor, b: Tensor) -> Tensor:
        """The frames u [B, T, c, *grid]: the offset (u0 or 0) + sum_k w^e(point)_k b_k at
        each point."""
        field = self.part.spread(w)  # [B, N, T, *grid]
        return self.base[:, None] + (field[:, :, :, None] * b).sum(1)


def terms_used(
    problem: Any, names: list[str], terms: list[str], fixed: list[str]
) -> dict[str, list[str]]:
    """The linear terms each residual depends on, probed once with autograd at random values
    (the residuals are pointwise, so a term that gets no gradient there is not used)."""
    gen = torch.Generator().manual_seed(0)
    used = {}
    with torch.enable_grad():
        vals = {
            k: (0.1 + 0.8 * torch.rand(4, generator=gen, dtype=torch.float64)).requires_grad_()
            for k in [*terms, *fixed]
        }
        out = problem.grid_residuals(vals)
        for r in names:
            grads = torch.autograd.grad(
                out[r].sum(), [vals[k] for k in terms], retain_graph=True, allow_unused=True
            )
            used[r] = [k for k, g in zip(terms, grads) if g is not None]
    return used


def field_loss(
    problem: Any,
    u: Tensor,
    inputs: Tensor,
    times: Tensor,
    masks: dict[str, Tensor],
    weights: dict[str, float] | None = None,
    u0: Tensor | None = None,
) -> Tensor:
    """The paper's training loss per sample [B]: the sum over the `grid_residuals` terms of
    each term's L2 norm (not squared) over its whole mask, on the derivatives of the assembled
    frames `u` [B, T, c, *grid], so the seams between experts count (its code: `PDELoss` on the
    predicted solution, plus boundary losses). Each term is scaled by `weights` (default 1);
    with an `ic` mask, the relative initial residual against `u0` [B, 1, *grid] counts too
    (`ConstraintSystem`'s `initial='penalty'`)."""
    res = frame_residuals(problem, u, inputs, times)
    if "ic" in masks:
        if u0 is None:
            raise ValueError("an `ic` mask needs the start state u0")
        target = u0[:, None, 0]
        res["ic"] = (u[:, :, 0] - target) / start_scale(target)
    scale = weights or {}
    total = u.new_zeros(u.shape[0])
    for name, r in res.items():
        norm = (r * masks[name]).square().flatten(1).sum(1).sqrt()
        total = total + scale.get(name, 1.0) * norm
    return total


def residual_rms(res: Tensor, part: Partition) -> Tensor:
    """Per-sample RMS [B] of the residuals `res` [B, E, M] over the constrained points."""
    return (res.square().sum(dim=(1, 2)) / max(part.count(), 1)).sqrt()
