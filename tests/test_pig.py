"""The `pig` method (Physics-Informed Gaussians): the closed-form derivatives of the Gaussian
embedding agree with nested autograd (values, first, second and mixed derivatives, and the
parameter gradients through them), the fused and chunked evaluations agree with the plain one,
the error falls on Helmholtz, and its options are validated."""

from __future__ import annotations

import pytest
import torch

from bench.monitor import Monitor
from bench.registry import build_method, build_problem
from methods.base import Budget
from methods.gaussians import build_pig_net
from methods.jets import Plan
from methods.taylor import jet_forward
from problems.base import Box, ConfigError
from problems.fields import Fields

BOX = Box({"x": (-1.0, 1.0), "y": (-2.0, 3.0), "t": (0.0, 0.5)})
PLAN = Plan((0, 1, 2), ((0, 0), (0, 1), (1, 1), (1, 2), (2, 2)))
KEYS = [("u",), ("u", "x"), ("u", "y"), ("u", "t")] + [
    ("u", "x", "x"), ("u", "x", "y"), ("u", "y", "y"), ("u", "y", "t"), ("u", "t", "t")
]  # fmt: skip


def _net(**kw):
    net = build_pig_net(BOX, 1, generator=torch.Generator().manual_seed(1), **kw)
    with torch.no_grad():  # O(1) weights and varied widths: every term of the jet matters
        net.embedding.weight.normal_(generator=torch.Generator().manual_seed(2))
        net.embedding.sigma.uniform_(0.2, 0.6, generator=torch.Generator().manual_seed(3))
    return net


def _points(n=50):
    return BOX.sample(n, torch.Generator().manual_seed(4))


def _autograd_rows(net, x):
    f = Fields(x.clone().requires_grad_(True), BOX.axes, ("u",), model=net)
    return [f["u"] if len(k) == 1 else f.d(*k) for k in KEYS]


def test_closed_form_derivatives_match_autograd():
    net = _net(n_gaussians=40, channels=3, width=8)
    x = _points()
    jet = jet_forward(net, x, PLAN)[0]
    ref = _autograd_rows(net, x)
    for row, (key, r) in enumerate(zip(KEYS, ref, strict=True)):
        err = (jet[row] - r).abs().max() / r.abs().max()
        assert err < 1e-12, (key, float(err))
    # the gradients with respect to every parameter, through a Laplacian-like loss
    params = list(net.parameters())
    gj = torch.autograd.grad((jet[4] + jet[6]).square().sum(), params, allow_unused=True)
    ga = torch.autograd.grad((ref[4] + ref[6]).square().sum(), params, allow_unused=True)
    for a, b in zip(gj, ga, strict=True):
        if a is None or b is None:
            assert a is None and b is None or float((a if a is not None else b).abs().max()) == 0
            continue
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))


def test_fused_chunked_and_plain_evaluations_agree(monkeypatch):
    import methods.gaussians as nets

    net = _net(n_gaussians=30, channels=2, width=8)
    x = _points(200)
    whole = jet_forward(net, x, PLAN)
    grads = torch.autograd.grad(whole.square().sum(), list(net.embedding.parameters()))
    monkeypatch.setattr(nets, "FUSED_ELEMENTS", 2 * 30 * 7)  # 7 points per chunk
    chunked = jet_forward(net, x, PLAN)
    g2 = torch.autograd.grad(chunked.square().sum(), list(net.embedding.parameters()))
    assert torch.allclose(chunked, whole, rtol=1e-13, atol=1e-13)
    for a, b in zip(g2, grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-11 * float(b.abs().max()))
    # the autograd path (points that require grad), in checkpointed chunks, against the fused
    net.embedding.max_elements = 2 * 30 * 9  # 9 points per chunk
    xn = net.norm(x)
    fused = net.embedding(xn)
    plain = net.embedding(xn.clone().requires_grad_(True))
    assert torch.allclose(plain, fused, rtol=1e-13, atol=1e-14)
    emb = list(net.embedding.parameters())
    ga = torch.autograd.grad(plain.sin().sum(), emb)
    gf = torch.autograd.grad(fused.sin().sum(), emb)
    for a, b in zip(ga, gf, strict=True):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-11 * float(b.abs().max()))


def test_float32_drops_only_negligible_gaussian_tails():
    """Below float64 the Gaussian tensor is exactly zero where exp(exponent) < ~2e-22
    (`EXP_FLOOR`: float32 CPU kernels are many times slower on those tails). With narrow
    Gaussians, where most exponents are below the floor, the float32 jet (fused path), the
    float32 embedding under autograd and their parameter gradients agree with float64's to
    float32 precision."""
    import copy

    from methods.gaussians import EXP_FLOOR

    net64 = _net(n_gaussians=40, channels=3, width=8)
    with torch.no_grad():
        net64.embedding.sigma.uniform_(0.04, 0.06, generator=torch.Generator().manual_seed(5))
    net32 = copy.deepcopy(net64).float()
    x = _points(200)
    xn = net64.norm(x)
    e = -0.5 * (((xn[:, None, None] - net64.embedding.mu) / net64.embedding.sigma) ** 2).sum(-1)
    assert float((e < EXP_FLOOR).double().mean()) > 0.5  # most terms are dropped in float32
    # float32's own error here: the exponent [x^2, x, 1] @ coef cancels terms of size
    # 1/sigma^2 ~ 300, so it is off by ~300 x 6e-8 ~ 2e-5 before any term is dropped
    j64, j32 = jet_forward(net64, x, PLAN)[0], jet_forward(net32, x.float(), PLAN)[0]
    for row, key in enumerate(KEYS):
        err = (j32[row].double() - j64[row]).abs().max() / j64[row].abs().max()
        assert err < 1e-4, (key, float(err))
    loss = lambda j: (j[4] + j[6]).square().sum()  # noqa: E731
    g64 = torch.autograd.grad(loss(j64), list(net64.parameters()), allow_unused=True)
    g32 = torch.autograd.grad(loss(j32), list(net32.parameters()), allow_unused=True)
    for a, b in zip(g32, g64, strict=True):
        if b is not None:
            assert float((a.double() - b).abs().max()) <= 1e-3 * float(b.abs().max())
    plain = net32.embedding(net32.norm(x.float()).requires_grad_(True)).detach()
    ref = net64.embedding(xn).detach()
    assert float((plain.double() - ref).abs().max()) < 1e-4 * float(ref.abs().max())


@pytest.mark.parametrize("backend", ["auto", "autograd"])
def test_error_falls_on_helmholtz(backend):
    # a small embedding of wide Gaussians on the (1, 1) mode: seconds, not minutes
    problem = build_problem("helmholtz", a2=1.0, nx=60, ny=60)
    method = build_method(
        "pig", n_gaussians=100, channels=2, sigma_init=0.3, n_collocation=500, derivatives=backend
    )
    budget = Budget(steps=100, eval_every=25)
    monitor = Monitor(budget, problem.reference())
    monitor.start()
    method.fit(problem, budget, monitor)
    monitor.finish()
    errors = [row["rel_l2"] for row in monitor.curve]
    assert monitor.stop_reason == "steps"
    assert errors[-1] < 0.02 * errors[0] and errors[-1] < 1e-2, errors


def test_backends_give_the_same_loss():
    problem = build_problem("helmholtz")
    losses = []
    for backend in ("auto", "autograd"):
        tr = build_method("pig", n_gaussians=50, channels=2, n_collocation=100,
                          derivatives=backend).trainer(problem)  # fmt: skip
        assert tr.fields.backend == ("taylor" if backend == "auto" else "autograd")
        losses.append(tr.total(tr.losses()))
    assert torch.allclose(losses[0], losses[1], rtol=1e-12)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"n_gaussians": 0}, "method.n_gaussians"),
        ({"channels": 1.5}, "method.channels"),
        ({"sigma_init": -0.1}, "method.sigma_init"),
        ({"net": "mlp"}, "method.net"),
        ({"fourier_features": 8}, "method.fourier_features"),
        ({"nonsense": 1}, "method.nonsense"),
    ],
)
def test_bad_options_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_method("pig", **overrides)


def test_high_dimensional_problems_are_not_applicable():
    method = build_method("pig")
    assert method.applicable(build_problem("helmholtz")) is None
    reason = method.applicable(build_problem("hjb"))
    assert reason is not None and "max_dim" in reason
    assert build_method("pig", max_dim=200).applicable(build_problem("hjb")) is None
