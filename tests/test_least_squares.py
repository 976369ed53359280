"""The constraint layer's building blocks: batched Levenberg–Marquardt, implicit gradients,
and the fixed domain decomposition (methods/least_squares.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.least_squares import Partition, implicit_solution, lm_solve, solve_spd


@pytest.fixture(autouse=True)
def _float64():
    """float64 tensors by default in this module only."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _rows(fj):
    """`fj(w) -> (F, J)` of every problem, as `lm_solve` calls it: with `active`, the rows of
    the active problems only."""

    def call(w, active):
        F, J = fj(w)
        return (F, J) if active is None else (F[active], J[active])

    return call


def _rosen_like(target: torch.Tensor):
    """F(w) = (w0^2 - a, w1 - b, w0 w1 - sqrt(a) b) per problem: the root is (sqrt a, b)."""

    def residuals(w: torch.Tensor) -> torch.Tensor:
        a, b = target[..., 0], target[..., 1]
        return torch.stack(
            [w[..., 0] ** 2 - a, w[..., 1] - b, w[..., 0] * w[..., 1] - a.sqrt() * b], dim=-1
        )

    def with_jacobian(w: torch.Tensor):
        jac = torch.func.vmap(torch.func.vmap(torch.func.jacfwd(residuals_one)))(w, target)
        return residuals(w), jac.transpose(-1, -2)

    def residuals_one(w, t):
        return torch.stack([w[0] ** 2 - t[0], w[1] - t[1], w[0] * w[1] - t[0].sqrt() * t[1]])

    return residuals, with_jacobian


def test_lm_finds_the_roots_of_every_problem_in_the_batch():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(3, 4, 2, generator=gen) + 0.5  # B = 3 samples, E = 4 experts
    _, fj = _rosen_like(target)
    sol = lm_solve(_rows(fj), torch.ones(3, 4, 2), ridge=0.0, max_iter=100, rtol=1e-10, atol=1e-12)
    assert sol.converged == 1.0
    want = torch.stack([target[..., 0].sqrt(), target[..., 1]], dim=-1)
    assert torch.allclose(sol.w, want, atol=1e-8)
    assert sol.cost < 1e-16 < sol.cost0


def test_lm_stops_once_even_small_steps_are_rejected():
    """Where no step lowers C (here a Jacobian of the wrong sign makes every step uphill, as
    rounding does at an optimum), the damping grows until the step is below tolerance, and LM
    stops there, converged, without moving, instead of running to max_iter."""
    gen = torch.Generator().manual_seed(1)
    A, b = torch.randn(2, 3, 5, 4, generator=gen), torch.randn(2, 3, 5, generator=gen)

    def uphill(w):
        return torch.einsum("beij,bej->bei", A, w) - b, -A.transpose(-1, -2)

    w0 = torch.randn(2, 3, 4, generator=gen)
    sol = lm_solve(_rows(uphill), w0, ridge=0.0, max_iter=500, rtol=1e-6, atol=1e-6)
    assert sol.converged == 1.0 and sol.iterations < 100, sol.iterations
    torch.testing.assert_close(sol.w, w0)  # every step was rejected
    assert sol.cost == pytest.approx(sol.cost0)


def test_lm_with_a_ridge_matches_the_closed_form_of_a_linear_problem():
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(2, 3, 20, 5, generator=gen)  # [B, E, M, N]
    y = torch.randn(2, 3, 20, generator=gen)
    ridge = 0.3

    def fj(w):
        F = torch.einsum("bemn,ben->bem", A, w) - y
        return F, A.transpose(-1, -2)

    sol = lm_solve(_rows(fj), torch.zeros(2, 3, 5), ridge=ridge, rtol=1e-12, atol=1e-12)
    eye = torch.eye(5)
    want = torch.linalg.solve(
        A.transpose(-1, -2) @ A + ridge**2 * eye, (A.transpose(-1, -2) @ y[..., None])
    )[..., 0]
    assert torch.allclose(sol.w, want, atol=1e-9)


def test_implicit_gradient_equals_the_gradient_of_the_closed_form_solution():
    """For a linear least-squares problem the Gauss–Newton matrix is the exact Hessian, so the
    implicit-function-theorem gradient must equal autograd through the closed form."""
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(2, 1, 12, 4, generator=gen, requires_grad=True)
    y = torch.randn(2, 1, 12, generator=gen)
    ridge = 0.1
    probe = torch.randn(2, 1, 4, generator=gen)

    def F(w, th):
        return torch.einsum("bemn,ben->bem", th, w) - y

    # reference: differentiate the closed form
    At = theta.transpose(-1, -2)
    w_ref = torch.linalg.solve(At @ theta + ridge**2 * torch.eye(4), At @ y[..., None])[..., 0]
    (g_ref,) = torch.autograd.grad((w_ref * probe).sum(), theta)
    # the LM solution, with the implicit gradient
    with torch.no_grad():
        sol = lm_solve(
            _rows(lambda w: (F(w, theta), theta.transpose(-1, -2))),
            torch.zeros(2, 1, 4),
            ridge,
            rtol=1e-13,
            atol=1e-13,
        )
    w = implicit_solution(lambda w_: F(w_, theta), sol.w, ridge, sol.hess)
    assert torch.equal(w.detach(), sol.w)  # the value is the solver's, untouched
    (g,) = torch.autograd.grad((w * probe).sum(), theta)
    assert torch.allclose(g, g_ref, rtol=1e-7, atol=1e-9)


def test_implicit_gradient_of_a_nonlinear_zero_residual_problem_matches_finite_differences():
    """w* = (sqrt a, b) for the problem above: d w0*/da = 1 / (2 sqrt a)."""
    target = torch.tensor([[[2.0, 0.7]]], requires_grad=True)
    res, fj = _rosen_like(target)
    with torch.no_grad():
        sol = lm_solve(_rows(fj), torch.ones(1, 1, 2), 0.0, rtol=1e-13, atol=1e-14)
    w = implicit_solution(res, sol.w, 0.0, sol.hess)
    (g,) = torch.autograd.grad(w[..., 0].sum(), target)
    assert g[0, 0, 0].item() == pytest.approx(1 / (2 * 2.0**0.5), rel=1e-8)
    assert g[0, 0, 1].item() == pytest.approx(0.0, abs=1e-10)


def test_solve_spd_falls_back_to_lu_where_cholesky_fails_with_the_same_solution():
    """A batch holding an indefinite matrix (no Cholesky factor): it is solved by LU, the
    positive definite ones by Cholesky, all to LU's answer, and no NaN reaches the gradient."""
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(4, 5, 5, generator=gen)
    a = a @ a.transpose(-1, -2) + 0.1 * torch.eye(5)
    a[2] = torch.diag(torch.tensor([2.0, -1.0, 3.0, 0.5, 1.0]))  # symmetric, indefinite
    assert (torch.linalg.cholesky_ex(a).info != 0).tolist() == [False, False, True, False]
    b = torch.randn(4, 5, generator=gen, requires_grad=True)
    x = solve_spd(a, b)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
    (g,) = torch.autograd.grad(x.sum(), b)
    (g_ref,) = torch.autograd.grad(torch.linalg.solve(a, b).sum(), b)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_partition_blocks_cover_every_masked_point_once():
    shape = (5, 12)
    mask = np.ones(shape, dtype=bool)
    edge = np.zeros(shape, dtype=bool)
    edge[:, 0] = True  # a boundary column: only the first space block owns it
    part = Partition(shape, (1, 4), {"pde": mask, "left": edge})
    assert part.n_experts == 4
    idx, wt = part.index["pde"], part.weight["pde"]
    owned = sorted(int(i) for e in range(4) for i, w in zip(idx[e], wt[e]) if w > 0)
    assert owned == list(range(60))
    # each block of 3 columns belongs to one expert
    ids = part.expert_of.numpy()
    assert (ids[:, :3] == 0).all() and (ids[:, 9:] == 3).all()
    assert part.weight["left"].sum(dim=1).tolist() == [5.0, 0.0, 0.0, 0.0]
    assert part.count() == 65


def test_partition_gather_and_spread_agree():
    shape = (3, 4, 6)
    part = Partition(shape, (1, 2, 3), {"pde": np.ones(shape, dtype=bool)})
    x = torch.arange(np.prod(shape), dtype=torch.float64).reshape(1, *shape)
    g = part.gather(x, "pde")  # [1, E, M]
    assert g.shape == (1, 6, 12)
    w = torch.arange(6, dtype=torch.float64).reshape(1, 6, 1)  # expert e's coefficient = e
    field = part.spread(w)[0, 0]  # [*shape]
    for e in range(6):
        pts = part.index["pde"][e]
        assert torch.all(field.flatten()[pts] == e)


def test_partition_rejects_more_blocks_than_points():
    with pytest.raises(ValueError, match="blocks along an axis"):
        Partition((3, 4), (1, 5), {"pde": np.ones((3, 4), dtype=bool)})
