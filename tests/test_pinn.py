"""The `pinn` method: its error falls, it respects every budget cap, it is deterministic, its
hyper-parameters are validated, and learning-rate annealing moves the weights."""

from __future__ import annotations

import math
import time

import pytest
import torch

from bench.monitor import Monitor
from bench.registry import build_method, build_problem
from methods.base import Budget
from methods.taylor import SampledLaplacianFields
from problems.base import Box, ConfigError, Problem
from problems.fields import Fields

# a small net on few points keeps each run to seconds on 2 cores
SMALL = dict(width=16, depth=4, n_collocation=1000, n_points={"ic": 100, "bc": 100})


@pytest.fixture(scope="module")
def burgers():
    return build_problem("burgers")


def _run(problem, budget, seed=0, dtype=torch.float64, **overrides):
    method = build_method("pinn", **{**SMALL, **overrides})
    method.seed, method.dtype = seed, dtype
    monitor = Monitor(budget, problem.reference())
    monitor.start()
    predictor = method.fit(problem, budget, monitor)
    monitor.finish()
    return monitor, predictor


def test_conditions_the_trial_satisfies_leave_the_loss(burgers):
    hard = build_method("pinn", **SMALL).trainer(burgers)
    soft = build_method("pinn", **SMALL, hard_constraints=False).trainer(burgers)
    assert hard.terms == ["pde"] and len(hard.batch) == 1
    assert soft.terms == ["pde", "ic", "bc"] and len(soft.batch) == 3
    # a transform that fixes only the initial condition keeps the boundary term
    ic_only = build_method("pinn", **SMALL, output_transform={"u": "t * u - sin(pi * x)"})
    assert ic_only.trainer(burgers).terms == ["pde", "bc"]


def test_error_falls_on_burgers(burgers):
    budget = Budget(steps=500, eval_every=50)
    mon, pred = _run(burgers, budget, adam_steps=250)
    errors = [row["rel_l2"] for row in mon.curve]
    assert mon.stop_reason == "steps" and mon.step == 500
    assert errors[-1] < 0.5 * errors[0]
    assert errors[-1] < 0.35, errors  # observed 0.26 (0.88 at step 1): Adam, then L-BFGS
    assert mon.evals > mon.step  # L-BFGS line-search evaluations are counted
    row = mon.curve[-1]  # the trial function satisfies ic and bc: only the PDE is a loss term
    assert {"loss", "loss_pde"} <= set(row) and not {"loss_ic", "loss_bc"} & set(row)
    assert math.isclose(row["loss"], row["loss_pde"])
    # the harness scores residuals through the predictor's Fields
    f = pred.fields(burgers.sample_interior(64))
    assert burgers.residual(f).shape == (64, 1)


@pytest.mark.parametrize("evals", [37, 40])
def test_lbfgs_respects_the_evaluation_cap(burgers, evals):
    budget = Budget(steps=10_000, evals=evals, eval_every=5)
    mon, _ = _run(burgers, budget, adam_steps=5)
    assert mon.evals <= evals
    assert mon.evals >= evals - 1  # stops only when no further iteration fits
    assert mon.step > 5  # L-BFGS ran


def test_lbfgs_stops_on_the_step_cap(burgers):
    budget = Budget(steps=12, eval_every=4)
    mon, _ = _run(burgers, budget, adam_steps=4)
    assert mon.stop_reason == "steps" and mon.step == 12


def test_lbfgs_resampling_draws_fresh_points_and_restarts(burgers):
    m = build_method("pinn", width=8, depth=2, adam_steps=0, lbfgs_resample_every=3)
    tr = m.trainer(burgers, Budget(points=64))
    first = [b.clone() for b in tr.batch]
    for _ in range(3):
        assert tr.lbfgs_step() is not None
    assert all(torch.equal(a, b) for a, b in zip(first, tr.batch))  # fixed for 3 iterations
    old = tr.lbfgs
    assert tr.lbfgs_step() is not None
    assert not torch.equal(first[0], tr.batch[0]) and tr.lbfgs is not old


def test_rad_sampler_concentrates_points_where_the_residual_is_large(burgers):
    m = build_method("pinn", width=16, depth=2, adam_steps=0, sampler="rad", rad_c=0.0)
    tr = m.trainer(burgers, Budget(points=2000))
    for _ in range(30):
        tr.lbfgs_step()
    uniform, rad = tr.sample()[0], tr.sample(adaptive=True)[0]
    assert rad.shape == uniform.shape and tr.method.sampler == "rad"

    def mean_residual(points):
        f = tr.predictor.fields(points)
        return burgers.residual(f).detach().abs().mean().item()

    assert mean_residual(rad) > 2 * mean_residual(uniform)
    # with a large c the density is nearly uniform
    tr.method.rad_c = 1e6
    assert mean_residual(tr.sample(adaptive=True)[0]) < 1.5 * mean_residual(uniform)


def test_runs_are_deterministic(burgers):
    budget = Budget(steps=60, eval_every=10)

    def curve():
        mon, _ = _run(burgers, budget, seed=3, adam_steps=40, resample_every=7)
        return [{k: v for k, v in row.items() if k != "seconds"} for row in mon.curve]

    first = curve()
    assert first == curve()
    other, _ = _run(burgers, budget, seed=4, adam_steps=40)
    assert other.curve[-1]["rel_l2"] != first[-1]["rel_l2"]


def test_float32_and_both_backends_train(burgers):
    budget = Budget(steps=30, eval_every=10)
    for backend in ("autograd", "taylor"):
        mon, _ = _run(burgers, budget, dtype=torch.float32, derivatives=backend, adam_steps=30)
        errors = [row["rel_l2"] for row in mon.curve]
        assert all(math.isfinite(e) for e in errors) and errors[-1] < errors[0]


def test_modified_mlp_with_fourier_features_trains(burgers):
    budget = Budget(steps=30, eval_every=10)
    mon, _ = _run(burgers, budget, net="modified_mlp", fourier_features=8, adam_steps=30)
    assert mon.curve[-1]["rel_l2"] < mon.curve[0]["rel_l2"]


def test_lra_updates_the_condition_weights(burgers):
    method = build_method("pinn", **SMALL, lra=True, lra_every=10, hard_constraints=False)
    trainer = method.trainer(burgers)
    for _ in range(21):  # updates at Adam steps 0, 10 and 20
        scalars = trainer.adam_step()
    assert trainer.lam[0] == 1.0
    assert all(lam != 1.0 and math.isfinite(lam) and lam > 0 for lam in trainer.lam[1:])
    assert scalars["lambda_ic"] == trainer.lam[1] and scalars["lambda_bc"] == trainer.lam[2]
    # the weighted total is what Adam minimises
    expected = sum(lam * scalars[f"loss_{t}"] for t, lam in zip(trainer.terms, trainer.lam))
    assert math.isclose(scalars["loss"], expected, rel_tol=1e-12)


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"lr": -1}, "method.lr"),
        ({"lr": float("nan")}, "method.lr"),
        ({"width": 0}, "method.width"),
        ({"depth": 2.5}, "method.depth"),
        ({"net": "resnet"}, "method.net"),
        ({"activation": "relu"}, "method.activation"),
        ({"derivatives": "jax"}, "method.derivatives"),
        ({"decay_rate": 1.5}, "method.decay_rate"),
        ({"lbfgs_resample_every": -1}, "method.lbfgs_resample_every"),
        ({"sampler": "lhs"}, "method.sampler"),
        ({"rad_c": -1.0}, "method.rad_c"),
        ({"adam_steps": -1}, "method.adam_steps"),
        ({"lbfgs": "yes"}, "method.lbfgs"),
        ({"resample_every": -2}, "method.resample_every"),
        ({"weights": {"pde": -1.0}}, "method.weights.pde"),
        ({"n_points": {"ic": 0}}, "method.n_points.ic"),
        ({"n_collocation": 0}, "method.n_collocation"),
        ({"lra_alpha": 0}, "method.lra_alpha"),
    ],
)
def test_bad_hyperparameters_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method("pinn", **overrides)


def test_output_transform_imposes_a_hard_constraint(burgers):
    """`(1 - x**2) * u` vanishes at x = +-1 whatever the net; the error still falls."""
    budget = Budget(steps=250, eval_every=50)
    transform = {"u": "(1 - x**2) * u"}
    mon, pred = _run(burgers, budget, adam_steps=150, output_transform=transform)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    edges = torch.cat([torch.stack([s * torch.ones(7), t], 1) for s in (-1.0, 1.0)])
    assert abs(pred(edges.numpy())).max() < 1e-12
    errors = [row["rel_l2"] for row in mon.curve]
    assert errors[-1] < 0.5 * errors[0], errors


def test_output_transform_sees_the_problem_parameters(burgers):
    trainer = build_method("pinn", **SMALL, output_transform={"u": "0 * u + nu"}).trainer(burgers)
    out = trainer.predictor(burgers.sample_interior(5).numpy())
    assert out == pytest.approx(burgers.nu)


@pytest.mark.parametrize(
    "transform,match",
    [
        ({"u": "(1 - x**2) * u +"}, r"output_transform\.u.*not a valid expression"),
        ({"u": 3}, r"method\.output_transform\.u must be a string, got 3"),
        ("u * x", r"output_transform must be a mapping"),
    ],
)
def test_bad_output_transform_is_rejected_at_construction(transform, match):
    with pytest.raises(ConfigError, match=match):
        build_method("pinn", output_transform=transform)


@pytest.mark.parametrize(
    "transform,match",
    [
        ({"v": "u"}, r"unknown field 'v'"),
        ({"u": "y * u"}, r"unknown name\(s\) \['y'\].*axes \['x', 't'\]"),
        ({"u": "__import__('os')"}, r"unknown name\(s\) \['__import__'\]"),
    ],
)
def test_output_transform_names_are_checked_against_the_problem(burgers, transform, match):
    with pytest.raises(ConfigError, match=match):
        build_method("pinn", **SMALL, output_transform=transform).trainer(burgers)


# -- SDGD ----------------------------------------------------------------------------------------
class _Poisson(Problem):
    """-Laplacian(u) = 1 in [0, 1]^5 (no conditions: only the PDE term matters here)."""

    axes = tuple(f"x{i}" for i in range(5))
    fields = ("u",)
    domain = Box({a: (0.0, 1.0) for a in axes})
    n_collocation = 16

    def residual(self, f):
        return (f.laplacian("u", self.axes) + f["u"] ** 2 + 1)[:, None]

    def conditions(self):
        return []

    def _compute_reference(self):
        raise NotImplementedError


def _pde_gradient(trainer):
    trainer.net.zero_grad()
    trainer.losses()[0].backward()
    return torch.cat([p.grad.reshape(-1) for p in trainer.params])


@pytest.mark.parametrize(
    "variant,unbiased,derivatives",
    [(1, True, "autograd"), (2, True, "autograd"), (3, False, "autograd"), (2, True, "auto")],
)
def test_sdgd_gradient_is_unbiased_in_variants_1_and_2(variant, unbiased, derivatives):
    """Averaged over many draws, the SDGD gradient of the PDE loss equals the full-Laplacian
    gradient for the two unbiased variants, by autograd and by the sampled axes' jet; the
    plain sampled loss (variant 3) misses it."""
    problem = _Poisson()
    kw = dict(width=8, depth=2, lbfgs=False, derivatives=derivatives)
    full = _pde_gradient(build_method("pinn", **kw).trainer(problem))
    tr = build_method("pinn", **kw, sdgd_dims=2, sdgd_variant=variant).trainer(problem)
    draws = torch.stack([_pde_gradient(tr) for _ in range(800)])
    mean, stderr = draws.mean(0), draws.std(0) / len(draws) ** 0.5
    z = ((mean - full) / stderr.clamp_min(1e-12)).abs()
    if unbiased:
        assert z.max() < 5, z.max()
    else:
        assert z.max() > 10, z.max()


def test_sdgd_options_are_checked():
    with pytest.raises(ConfigError, match=r"method\.lbfgs=false"):
        build_method("pinn", sdgd_dims=10)
    with pytest.raises(ConfigError, match=r"sdgd_variant must be 1, 2 or 3"):
        build_method("pinn", sdgd_dims=10, lbfgs=False, sdgd_variant=4)


@pytest.mark.parametrize("name", ["hjb", "bsb"])
def test_sdgd_laplacian_from_one_jet_equals_autograd(name):
    """The sampled Laplacian from one jet of the sampled axes (through the trial function,
    where the problem has one) equals autograd's, one backward pass per axis, on the same
    sample: the residual and its gradient in the parameters."""
    problem = build_problem(name, d=12)
    tr = build_method("pinn", width=16, depth=3, lbfgs=False, sdgd_dims=3).trainer(problem)
    pts = tr.batch[0][:32]
    assert isinstance(tr.fields([pts])[0], SampledLaplacianFields)
    out = []
    for cls in (SampledLaplacianFields, Fields):
        gen = torch.Generator().manual_seed(7)
        f = cls(pts, problem.axes, problem.fields, model=tr.net, laplacian_dims=3, generator=gen)
        r = problem.residual(f)
        grads = torch.autograd.grad(r.square().mean(), tr.params, allow_unused=True)
        out.append((r, [torch.zeros_like(p) if g is None else g for g, p in zip(grads, tr.params)]))
    (r_jet, g_jet), (r_ag, g_ag) = out
    torch.testing.assert_close(r_jet, r_ag, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_jet, g_ag):  # (the output bias leaves a Laplacian and a gradient alone)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_compiled_loss_matches_the_eager_one(burgers):
    """`compile: true` changes how the loss is computed, not what it is (nor its gradient)."""
    kw = dict(SMALL, n_collocation=200)
    eager = build_method("pinn", **kw).trainer(burgers)
    comp = build_method("pinn", **kw, compile=True).trainer(burgers)
    for tr in (eager, comp):
        for _ in range(3):
            tr.adam_step()
    for a, b in zip(eager.losses(), comp.losses()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    with pytest.raises(ConfigError, match=r"method\.compile needs the forward-mode"):
        build_method("pinn", compile=True, derivatives="autograd")


def test_compiled_loss_is_one_graph(burgers):
    """The compiled loss (jets in plain operations, the trial function, the residual) traces
    as one graph: a graph break splits it into regions that cannot be fused, which is what
    made `compile: true` slower than eager before."""
    tr = build_method("pinn", **dict(SMALL, n_collocation=64), compile=True).trainer(burgers)
    explained = torch._dynamo.explain(tr._losses)(tr.batch)
    assert explained.graph_break_count == 0, explained.break_reasons


def test_budget_caps_the_points_per_loss_term(burgers):
    soft = dict(SMALL, hard_constraints=False)  # all three terms stay in the loss
    tr = build_method("pinn", **soft).trainer(burgers, Budget(steps=10, points=64))
    assert [len(b) for b in tr.batch] == [64, 64, 64]
    tr = build_method("pinn", **soft).trainer(burgers, Budget(steps=10))
    assert [len(b) for b in tr.batch] == [1000, 100, 100]
    with pytest.raises(ConfigError, match=r"budget\.points"):
        Budget(steps=10, points=0)


def test_compile_auto_only_where_it_pays_off(burgers, monkeypatch, caplog):
    """`compile: auto` compiles for long budgets on the forward-mode MLP path, and falls back
    to the eager loss, with a warning, when compilation fails."""
    kw = dict(SMALL, n_collocation=64)
    long, short = Budget(steps=5000, seconds=170), Budget(steps=200, seconds=60)
    assert build_method("pinn", **kw).trainer(burgers, long)._compiled is not None
    assert build_method("pinn", **kw).trainer(burgers, short)._compiled is None
    auto = build_method("pinn", **kw, derivatives="autograd").trainer(burgers, long)
    assert auto._compiled is None

    def broken(fn, **_):
        def run(*a, **k):
            raise RuntimeError("no C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level("WARNING"):
        tr = build_method("pinn", **kw).trainer(burgers, long)
    assert tr._compiled is None and "training eagerly" in caplog.text
    tr.adam_step()  # the eager loss still trains


def test_compilation_is_reported_and_not_charged_to_training(burgers, monkeypatch):
    """The seconds `torch.compile` takes are `compile_seconds`, outside the training clock:
    a compilation made 2 s slower shows in the metric and not in `train_seconds`."""
    real = torch.compile

    def slow(fn, **kw):
        compiled = real(fn, **kw)

        def run(*a, **k):
            if not slow.done:
                time.sleep(2.0)
                slow.done = True
            return compiled(*a, **k)

        return run

    slow.done = False
    monkeypatch.setattr(torch, "compile", slow)
    budget = Budget(steps=3, eval_every=3)
    t0 = time.perf_counter()
    monitor, _ = _run(burgers, budget, compile=True, n_collocation=64)
    elapsed = time.perf_counter() - t0
    assert monitor.excluded["compile"] >= 2.0
    assert monitor.train_seconds <= elapsed - monitor.excluded["compile"]
