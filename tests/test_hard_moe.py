"""`hard_moe` / `soft_constraint` (methods/hard_moe.py): the constraint system's Jacobian, the
constrained solve, the implicit gradient through a whole shot, training, and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from bench.registry import build_method, build_problem
from methods.base import Budget
from methods.least_squares import ConstraintSystem, Partition, field_loss, lm_solve, residual_rms
from problems.base import ConfigError

TINY = {s: {"train": 8, "val": 2, "test": 2} for s in ("smoke", "standard", "paper")}
BUDGET = Budget(name="smoke", steps=10)


def tiny_burgers():
    return build_problem("burgers_op", n=32, s=16, nt=11, k_tot=2, t_final=0.1, data=TINY)


def tiny_sorption(**kw):
    return build_problem(
        "diffusion_sorption",
        n=32,
        s=16,
        nt=11,
        t_final=50.0,
        data={**TINY, "smoke": {**TINY["smoke"], "grid": {"s": 16, "nt": 11}}},
        ic="smooth",
        **kw,
    )


def _system(problem, n_basis: int, blocks: tuple[int, ...], seed: int = 0):
    data = problem.operator_data("train", "smoke")
    u = torch.as_tensor(data.outputs[:2], dtype=torch.float64)  # [2, T, 1, s]
    x = torch.as_tensor(data.inputs[:2], dtype=torch.float64)
    t_len, s = u.shape[1], u.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    b = 0.1 * torch.randn(2, n_basis, t_len, 1, s, generator=gen, dtype=torch.float64)
    b[:, :, 0] = 0.0
    shape = (t_len, s)
    part = Partition(shape, blocks, problem.grid_masks(shape))
    times = torch.as_tensor(data.times, dtype=torch.float64)
    return ConstraintSystem(problem, part, b, u[:, 0], x, times), u, b, part


@pytest.mark.parametrize("make", [tiny_burgers, tiny_sorption])
def test_jacobian_of_the_constraint_system_matches_finite_differences(make):
    system, _, _, _ = _system(make(), 3, (1, 2))
    gen = torch.Generator().manual_seed(1)
    w = 0.5 * torch.randn(2, 2, 3, generator=gen, dtype=torch.float64)
    F, J = system.residuals_and_jacobian(w)
    torch.testing.assert_close(F, system.residuals(w))
    h = 1e-6
    for k in range(3):
        e = torch.zeros_like(w)
        e[..., k] = h
        fd = (system.residuals(w + e) - system.residuals(w - e)) / (2 * h)
        torch.testing.assert_close(J[:, :, k], fd, rtol=1e-5, atol=1e-7)


def test_the_solve_finds_the_truth_when_the_basis_spans_it():
    """Basis 0 = the true trajectory minus its start, the others random: the solve picks
    basis 0 (w ~ e_0) and its residual is at most the truth's, and below that of w = 0."""
    p = tiny_burgers()
    system, u, b, part = _system(p, 4, (1, 1))
    b[:, 0] = u - u[:, :1]
    system = ConstraintSystem(p, part, b, u[:, 0], system_inputs(p), system_times(p))
    w_true = torch.zeros(2, 1, 4, dtype=torch.float64)
    w_true[..., 0] = 1.0
    sol = lm_solve(system.residuals_and_jacobian, torch.zeros_like(w_true), 1e-8, 200, 1e-10, 1e-12)
    at = lambda w: residual_rms(system.residuals(w), part)  # noqa: E731
    assert torch.all(at(sol.w) <= at(w_true) * (1 + 1e-6))
    assert torch.all(at(sol.w) < 0.2 * at(torch.zeros_like(w_true)))
    torch.testing.assert_close(sol.w, w_true, rtol=0, atol=0.05)


def _penalty_system(p, n_basis: int, blocks: tuple[int, ...], weights=None):
    """`initial='penalty'`: basis 0 = the true frames (frame 0 included), the others random."""
    _, u, b, _ = _system(p, n_basis, blocks)
    b = b.clone()
    b[:, 1:, 0] = 0.1
    b[:, 0] = u
    shape = tuple(u.shape[i] for i in (1, 3))
    masks = p.grid_masks(shape)
    masks["ic"] = np.zeros(shape, dtype=bool)
    masks["ic"][0] = True
    part = Partition(shape, blocks, masks)
    args = (p, part, b, u[:, 0], system_inputs(p), system_times(p))
    return ConstraintSystem(*args, "penalty", weights), u, b, part


def test_a_penalised_start_is_solved_for_with_the_pde():
    """`initial='penalty'` (PI-HC-MoE's diffusion–sorption code): no offset, frame 0 is fitted
    through the relative `ic` residual; the Jacobian matches finite differences, and when basis
    0 is the truth the solve picks it and the assembled frames start at u0."""
    p = tiny_sorption()
    system, u, b, part = _penalty_system(p, 3, (1, 2))
    gen = torch.Generator().manual_seed(1)
    w = 0.5 * torch.randn(2, 2, 3, generator=gen, dtype=torch.float64)
    F, J = system.residuals_and_jacobian(w)
    torch.testing.assert_close(F, system.residuals(w))
    e = torch.zeros_like(w)
    e[..., 2] = 1e-6
    fd = (system.residuals(w + e) - system.residuals(w - e)) / 2e-6
    torch.testing.assert_close(J[:, :, 2], fd, rtol=1e-5, atol=1e-7)
    # w = 0 is the zero field, whose start residual is -1 at every point (relative)
    zero = system.residuals(torch.zeros_like(w))
    ic_rows = part.weight["ic"].sum().item()
    assert zero.square().sum().item() >= 2 * ic_rows * (1 - 1e-9)
    w_true = torch.zeros(2, 2, 3, dtype=torch.float64)
    w_true[..., 0] = 1.0
    sol = lm_solve(system.residuals_and_jacobian, torch.zeros_like(w), 1e-8, 200, 1e-10, 1e-12)
    at = lambda w: residual_rms(system.residuals(w), part)  # noqa: E731
    assert torch.all(at(sol.w) <= at(w_true) * (1 + 1e-6))
    assert torch.all(at(sol.w) < 0.1 * at(torch.zeros_like(w)))
    torch.testing.assert_close(sol.w[..., 0], w_true[..., 0], rtol=0, atol=0.05)
    frames = system.assemble(sol.w, b)
    torch.testing.assert_close(frames[:, 0], u[:, 0], rtol=0.02, atol=1e-4)


def test_term_weights_scale_their_residual_rows_only():
    p = tiny_sorption()
    plain, _, _, part = _penalty_system(p, 3, (1, 1))
    scaled, _, _, _ = _penalty_system(p, 3, (1, 1), weights={"pde": 0.2})
    w = torch.full((2, 1, 3), 0.3, dtype=torch.float64)
    start = 0
    for name in part.index:
        m = part.index[name].shape[-1]
        a = plain.residuals(w)[..., start : start + m]
        c = scaled.residuals(w)[..., start : start + m]
        torch.testing.assert_close(c, a * (0.2 if name == "pde" else 1.0))
        start += m


def system_inputs(p):
    return torch.as_tensor(p.operator_data("train", "smoke").inputs[:2], dtype=torch.float64)


def system_times(p):
    return torch.as_tensor(p.operator_data("train", "smoke").times, dtype=torch.float64)


def _method(name: str, **kw):
    m = build_method(name, width=6, modes=4, layers=1, proj=8, **kw)
    m.dtype = torch.float64
    return m


@pytest.mark.parametrize("initial", ["exact", "penalty"])
def test_shot_gradient_matches_finite_differences_of_the_solved_loss(initial):
    """On a linear PDE (sorption off) the Gauss–Newton matrix is exact, so the implicit
    gradient of the residual after the solve equals finite differences of the whole shot
    (with the start held or penalised)."""
    p = tiny_sorption(k=0.0)
    m = _method(
        "hard_moe", basis=3, experts=2, ridge=1e-3, lm_iters=200, lm_tol=1e-12, initial=initial
    )
    model, train, _, part, dt = m._setup(p, BUDGET)
    start = torch.as_tensor(train.outputs[:2, 0], dtype=torch.float64)
    x = torch.as_tensor(train.inputs[:2], dtype=torch.float64)

    def loss():
        return residual_rms(m.shot(model, p, part, start, x, dt)[1], part).mean()

    param = model.net.proj[2].weight
    model.zero_grad()
    loss().backward()
    g = param.grad.clone()
    gen = torch.Generator().manual_seed(3)
    direction = torch.randn(param.shape, generator=gen, dtype=torch.float64)
    h = 1e-5
    with torch.no_grad():
        param += h * direction
        up = float(loss())
        param -= 2 * h * direction
        down = float(loss())
        param += h * direction
    fd = (up - down) / (2 * h)
    assert float((g * direction).sum()) == pytest.approx(fd, rel=1e-4, abs=1e-9)


def test_training_lowers_the_residual_and_the_hard_constraint_ends_far_below_the_soft():
    """Physics-only training on diffusion–sorption: both losses (the residual RMS) fall; the
    constrained one falls much further (the soft one must learn the boundary layer at x = 0
    by gradient descent, the constrained one solves for it)."""
    p = tiny_sorption()
    out = {}
    for name, kw, fall in (
        ("hard_moe", {"basis": 8, "experts": 2}, 0.5),
        ("soft_constraint", {}, 0.95),
    ):
        m = _method(name, batch_size=4, lr=1e-2, select="last", **kw)
        seen: list[float] = []
        pred = m.fit(p, Budget(name="smoke", steps=80), _recorder(seen, 80))
        assert np.mean(seen[-10:]) < fall * np.mean(seen[:5]), (name, seen[:5], seen[-10:])
        test = p.operator_data("test", "smoke")
        frames = pred.rollout(test.outputs[:, :1], test.inputs, test.outputs.shape[1] - 1)
        assert np.all(np.isfinite(frames))
        out[name] = np.mean(seen[-10:])
    assert out["hard_moe"] < 0.3 * out["soft_constraint"], out


def test_the_field_loss_sees_the_seams_between_experts_the_constraint_residual_does_not():
    """burgers_op, one basis function (a ramp in time, the same at every x) and two space
    experts: w = (0.5, -0.5) is the seamless field w = 0.5 on the left half and w = -0.5 on
    the right. Each expert's own residual rows are exactly those of the seamless fields (the
    constraint is blind to the seam); the assembled field's residual norm is above that of
    the two seamless fields on their own halves (1.17x here: the jump at the block edges)."""
    p = tiny_burgers()
    _, u, _, part = _system(p, 1, (1, 2))
    t_len, s = u.shape[1], u.shape[-1]
    ramp = torch.linspace(0.0, 1.0, t_len, dtype=torch.float64)
    b = ramp.reshape(1, 1, t_len, 1, 1).expand(2, 1, t_len, 1, s)
    x, times = system_inputs(p), system_times(p)
    system = ConstraintSystem(p, part, b, u[:, 0], x, times)
    masks = {k: torch.as_tensor(v) for k, v in p.grid_masks(part.shape).items()}
    left = torch.arange(s) < s // 2
    halves = [{k: m & side for k, m in masks.items()} for side in (left, ~left)]

    def w_of(w0: float, w1: float) -> Tensor:
        return torch.tensor([w0, w1], dtype=torch.float64).reshape(1, 2, 1).expand(2, 2, 1)

    def field(w: Tensor, m: dict[str, Tensor]) -> Tensor:
        return field_loss(p, system.assemble(w, b), x, times, m)

    up, down, mix = w_of(0.5, 0.5), w_of(-0.5, -0.5), w_of(0.5, -0.5)
    torch.testing.assert_close(system.residuals(mix)[:, 0], system.residuals(up)[:, 0])
    torch.testing.assert_close(system.residuals(mix)[:, 1], system.residuals(down)[:, 1])
    seamless = (field(up, halves[0]).square() + field(down, halves[1]).square()).sqrt()
    assert list(masks) == ["pde"]  # one term: its norm over both halves combines as above
    assert torch.all(field(mix, masks) > 1.1 * seamless), (field(mix, masks), seamless)


def test_training_on_the_field_loss_reports_it():
    p = tiny_sorption()
    m = _method("hard_moe", basis=2, experts=2, batch_size=2, loss="field", select="last")
    seen: list[float] = []
    m.fit(p, Budget(name="smoke", steps=3), _recorder(seen, 3))
    assert len(seen) == 3 and all(np.isfinite(seen))


def _recorder(seen: list[float], steps: int):
    def report(step, evals=None, predictor=None, **scalars):
        seen.append(scalars["loss"])
        return step >= steps

    return report


def test_rollout_chains_shots_beyond_the_horizon():
    p = tiny_burgers()
    m = _method("hard_moe", basis=2, experts=1, horizon=2, lm_iters=5)
    model, _, _, part, dt = m._setup(p, BUDGET)
    from methods.hard_moe import ShotPredictor

    test = p.operator_data("test", "smoke")
    pred = ShotPredictor(m, model, p, part, dt)
    frames = pred.rollout(test.outputs[:, :1], test.inputs.astype(np.float64), 5)
    assert frames.shape == (2, 5, 1, 16) and np.all(np.isfinite(frames))
    two = pred.rollout(test.outputs[:, :1], test.inputs.astype(np.float64), 2)
    np.testing.assert_allclose(frames[:, :2], two, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"experts": [1, 2, 2]}, "one for time and one per space axis"),
        ({"experts": 0}, "method.experts must be >= 1"),
        ({"experts": "x"}, "method.experts must be a count"),
        ({"horizon": 1}, "method.horizon must be >= 2"),
        ({"experts": [1, 40]}, "does not fit the grid"),
        ({"loss": "pde"}, "method.loss must be one of"),
        ({"initial": "free"}, "method.initial must be one of"),
        ({"term_weights": {"bulk": 2.0}}, "'bulk'.*not residuals of problem.*'pde'"),
    ],
)
def test_bad_settings_are_rejected_before_training_with_the_key(kw, match):
    with pytest.raises(ConfigError, match=match):
        m = _method("hard_moe", **kw)
        m._setup(tiny_burgers(), BUDGET)


def test_a_penalised_start_needs_one_channel_and_the_fno_backbone():
    with pytest.raises(ConfigError, match="initial=penalty needs a one-channel state"):
        _method("hard_moe", initial="penalty")._setup(build_problem("nlse_op", data=TINY), BUDGET)
    m = _method("hard_moe", initial="penalty", experts=[1])
    with pytest.raises(ConfigError, match="apply to the FNO backbone"):
        m.fit(build_problem("legendre"), BUDGET, lambda *a, **k: None)


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(ConfigError, match="method.rollout_train.*valid keys: basis"):
        build_method("hard_moe", rollout_train=3)


def test_problems_without_grid_residuals_are_not_applicable():
    m = build_method("hard_moe")
    why = m.applicable(build_problem("ks"))
    assert why is not None and "grid_residuals" in why
    assert m.applicable(tiny_burgers()) is None


def test_cell_through_the_harness_reports_residuals_and_no_one_step(tmp_path, monkeypatch):
    """A `hard_moe` cell as the CLI runs it: the harness's `pde_residual` of the assembled
    prediction and of the data, the method's own `constraint_residual`, no one-step score
    (a whole-window predictor), and the budget's `points` as the constrained points."""
    from bench.run import run_cell

    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "cache"))
    overrides = ["budget=smoke", "budget.steps=20", "budget.eval_every=10", "threads=1"]
    overrides += ["tracking.enabled=false", "method.width=6", "method.modes=4"]
    overrides += ["method.layers=1", "method.proj=8", "method.basis=4", "method.val_every=10"]
    overrides += ["problem.n=32", "problem.s=16", "problem.nt=11", "problem.t_final=50.0"]
    overrides += ["problem.ic=smooth"]
    overrides += ["+problem.data={smoke: {train: 8, val: 2, test: 2, grid: {s: 16, nt: 11}}, "]
    overrides[-1] += "standard: {train: 8, val: 2, test: 2}, paper: {train: 8, val: 2, test: 2}}"
    rec = run_cell("hard_moe", "diffusion_sorption", overrides=overrides, output_dir=tmp_path / "r")
    assert rec["status"] == "ok", rec.get("message")
    m = rec["metrics"]
    for key in ("rel_l2", "pde_residual", "pde_residual_data", "method/constraint_residual"):
        assert np.isfinite(m[key]) and m[key] > 0, key
    for term in ("pde", "left", "right"):  # each residual term of the rollout and of the data
        assert np.isfinite(m[f"pde_residual/{term}"]) and m[f"pde_residual_data/{term}"] >= 0
    assert "rel_l2_one_step" not in m and m["method/lm_iters"] >= 1
    assert m["steps"] == 20
