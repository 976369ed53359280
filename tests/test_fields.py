"""The derivative API (`Fields`) and its forward-mode backend (`methods/taylor.py`).

Both backends are checked against central finite differences of the model itself, and the
taylor backend against autograd to round-off, values, derivatives and parameter gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.jets import Plan
from methods.nets import build_net
from methods.taylor import FieldsBuilder, TaylorFields, probe, supports
from problems.base import Box, ConfigError
from problems.fields import Fields, FieldsError

BOX = Box({"x": (-1.0, 1.0), "y": (0.0, 2.0), "t": (0.0, 0.5)})
AXES = BOX.axes
NAMES = ("u", "v")
KEYS = [("u", "x"), ("v", "t"), ("u", "x", "x"), ("v", "y", "y"), ("u", "x", "y"), ("v", "y", "t")]


def _net(kind="mlp", fourier=0, act="tanh", seed=0):
    g = torch.Generator().manual_seed(seed)
    return build_net(
        BOX, 2, kind=kind, width=12, depth=3, activation=act, fourier_features=fourier, generator=g
    )


def _points(n=40, seed=1):
    return BOX.sample(n, torch.Generator().manual_seed(seed))


def _fields(net, pts, backend, keys=KEYS):
    return FieldsBuilder(net, AXES, NAMES, backend, [set(keys)])([pts])[0]


def _fd(net, pts, key):
    """Central finite difference of `net` for derivative `key` (order 1 or 2)."""
    j = NAMES.index(key[0])
    axes = [AXES.index(a) for a in key[1:]]

    def f(shift):
        with torch.no_grad():
            return net(pts + shift)[:, j]

    # steps relative to each axis's extent (the net sees coordinates scaled to [-1, 1])
    h = [(1e-5 if len(axes) == 1 else 2e-4) * (BOX.hi[a] - BOX.lo[a]) / 2 for a in axes]
    e = [torch.zeros(len(AXES), dtype=torch.float64) for _ in axes]
    for ei, a, hi in zip(e, axes, h):
        ei[a] = hi
    if len(axes) == 1:
        return (f(e[0]) - f(-e[0])) / (2 * h[0])
    num = f(e[0] + e[1]) - f(e[0] - e[1]) - f(e[1] - e[0]) + f(-e[0] - e[1])
    return num / (4 * h[0] * h[1])


@pytest.mark.parametrize("backend", ["autograd", "taylor"])
@pytest.mark.parametrize("kind,fourier", [("mlp", 0), ("modified_mlp", 3)])
def test_derivatives_match_finite_differences(backend, kind, fourier):
    net, pts = _net(kind, fourier), _points()
    f = _fields(net, pts, backend)
    assert isinstance(f, TaylorFields) == (backend == "taylor")
    with torch.no_grad():
        torch.testing.assert_close(f["u"], net(pts)[:, 0], rtol=0, atol=1e-14)
    for key in KEYS:
        tol = 1e-8 if len(key) == 2 else 1e-5
        torch.testing.assert_close(f.d(*key), _fd(net, pts, key), rtol=tol, atol=tol, msg=str(key))
    # mixed derivatives are symmetric and cached under one key
    assert f.d("u", "y", "x") is f.d("u", "x", "y")
    lap = f.laplacian("u")  # default: all axes but t
    lap_fd = _fd(net, pts, ("u", "x", "x")) + _fd(net, pts, ("u", "y", "y"))
    torch.testing.assert_close(lap, lap_fd, rtol=1e-5, atol=1e-5)
    grad = f.grad("v")
    assert grad.shape == (len(pts), 3)
    for i, a in enumerate(AXES):
        torch.testing.assert_close(grad[:, i], _fd(net, pts, ("v", a)), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(f.grad("v", ["t"])[:, 0], f.d("v", "t"))


@pytest.mark.parametrize(
    "kind,fourier,act", [("mlp", 0, "tanh"), ("mlp", 4, "sin"), ("modified_mlp", 0, "tanh")]
)
def test_taylor_equals_autograd(kind, fourier, act):
    """Values, derivatives and the parameter gradient of a loss built from them."""
    net = _net(kind, fourier, act, seed=3)
    blocks = [_points(50, 4), _points(7, 5), _points(9, 6)]
    requested = [set(KEYS), set(), {("u", "t")}]  # a values-only block rides along

    def loss(fs):
        f0, f1, f2 = fs
        terms = [torch.tanh(f0.d(*k)).square().mean() for k in KEYS]
        return sum(terms) + f0["v"].pow(3).mean() + f1["u"].square().mean() + f2.d("u", "t").mean()

    params = list(net.parameters())
    fs_t = FieldsBuilder(net, AXES, NAMES, "taylor", requested)(blocks)
    fs_a = FieldsBuilder(net, AXES, NAMES, "autograd", requested)(blocks)
    # the plain-operation jets (the torch.compile path) where the net allows, else the same
    fs_p = FieldsBuilder(net, AXES, NAMES, "taylor", requested, plain=True)(blocks)
    for key in KEYS:
        torch.testing.assert_close(fs_t[0].d(*key), fs_a[0].d(*key), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fs_p[0].d(*key), fs_a[0].d(*key), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fs_t[1]["u"], fs_a[1]["u"], rtol=1e-12, atol=1e-14)
    g_t = torch.autograd.grad(loss(fs_t), params)
    g_a = torch.autograd.grad(loss(fs_a), params)
    g_p = torch.autograd.grad(loss(fs_p), params)
    for a, b, c in zip(g_t, g_a, g_p):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(c, b, rtol=1e-10, atol=1e-12)


def test_unplanned_and_third_order_derivatives_fall_back_to_autograd():
    net, pts = _net(), _points()
    f_t = _fields(net, pts, "taylor", keys=[("u", "x")])
    f_a = Fields(pts, AXES, NAMES, model=net)
    for key in [("u", "x"), ("u", "t"), ("v", "y", "y"), ("u", "x", "x", "x")]:
        torch.testing.assert_close(f_t.d(*key), f_a.d(*key), rtol=1e-10, atol=1e-12)


def test_auto_picks_taylor_only_where_supported():
    net = _net()
    assert FieldsBuilder(net, AXES, NAMES, "auto", [set(KEYS)]).backend == "taylor"
    third = {("u", "x", "x", "x")}
    assert FieldsBuilder(net, AXES, NAMES, "auto", [third]).backend == "autograd"
    plain = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    assert not supports(plain)
    assert FieldsBuilder(plain, AXES, NAMES, "auto", [set(KEYS)]).backend == "autograd"
    with pytest.raises(ConfigError, match="derivatives=taylor"):
        FieldsBuilder(plain, AXES, NAMES, "taylor", [set(KEYS)])
    with pytest.raises(ConfigError, match="derivatives must be one of"):
        FieldsBuilder(net, AXES, NAMES, "jax", [set(KEYS)])


def test_plan_from_probe():
    net, pts = _net(), _points()

    def residual(f):
        return f.d("u", "t") + f["u"] * f.d("u", "x") - f.d("u", "x", "x") + f.d("v", "y", "x")

    (req,) = probe(net, AXES, NAMES, [residual], [pts])
    # the autograd backend reaches v_xy through v_x, so that is requested too
    assert req == {("u", "t"), ("u", "x"), ("u", "x", "x"), ("v", "x"), ("v", "x", "y")}
    plan = Plan.from_requested(req, AXES)
    assert plan.axes == (0, 1, 2) and plan.pairs == ((0, 0), (0, 1))
    assert plan.rows == 1 + 3 + 2 and plan.row([0, 1]) == 5 and plan.row([1, 1]) is None


@pytest.mark.parametrize("backend", ["autograd", "taylor"])
def test_unknown_names_are_explained(backend):
    f = _fields(_net(), _points(), backend)
    with pytest.raises(FieldsError, match=r"unknown field 'w'.*\('u', 'v'\)"):
        f["w"]
    with pytest.raises(FieldsError, match=r"unknown field 'w'"):
        f.d("w", "x")
    with pytest.raises(FieldsError, match=r"unknown axis 'z'.*\('x', 'y', 't'\)"):
        f.d("u", "z")
    with pytest.raises(FieldsError, match=r"unknown axis 'z'"):
        f.laplacian("u", ["x", "z"])
    with pytest.raises(AttributeError):
        f.z  # noqa: B018
    torch.testing.assert_close(f.y, _points()[:, 1])


# -- SDGD: sampled Laplacian -------------------------------------------------------------------
def _quadratic(d: int, n: int = 8):
    """u = sum_i c_i x_i^2 over d axes: Laplacian 2 sum_i c_i, u_ii = 2 c_i."""
    axes = tuple(f"x{i}" for i in range(d))
    c = torch.arange(1, d + 1, dtype=torch.float64)
    pts = torch.rand(n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return axes, c, pts, lambda x: (c * x**2).sum(1, keepdim=True)


def test_sampled_laplacian_is_unbiased_and_samples_without_replacement():
    d, b = 6, 2
    axes, c, pts, model = _quadratic(d)
    gen = torch.Generator().manual_seed(1)
    draws = []
    for _ in range(3000):
        f = Fields(pts, axes, ("u",), model=model, laplacian_dims=b, generator=gen)
        est = f.laplacian("u")
        assert torch.allclose(est, est[0].expand_as(est))  # one sample of axes per call
        seconds = [k for k in f.requested if len(k) == 3]
        assert len(seconds) == b and all(k[1] == k[2] for k in seconds)  # distinct u_ii only
        draws.append(est[0].item())
    draws = torch.tensor(draws)
    exact = 2 * c.sum().item()
    stderr = draws.std().item() / len(draws) ** 0.5
    assert abs(draws.mean().item() - exact) < 4 * stderr
    # each draw is (d / b) * 2 * (c_i + c_j) for a pair i < j
    pairs = {(d / b) * 2 * (c[i] + c[j]).item() for i in range(d) for j in range(i + 1, d)}
    assert all(min(abs(v - p) for p in pairs) < 1e-9 for v in draws.tolist())


def test_sampled_laplacian_with_all_dimensions_is_exact():
    axes, c, pts, model = _quadratic(5)
    f = Fields(pts, axes, ("u",), model=model, laplacian_dims=5)
    assert torch.allclose(f.laplacian("u"), torch.full((8,), 2 * c.sum().item(), dtype=c.dtype))


def test_gradient_over_many_axes_is_one_backward_pass():
    """First derivatives along all d axes come from one autograd call, cached as [N, d]."""
    d = 300
    axes, c, pts, model = _quadratic(d, n=4)
    f = Fields(pts, axes, ("u",), model=model)
    calls = 0
    real = torch.autograd.grad

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    torch.autograd.grad = counting
    try:
        g = f.grad("u")
        second = f.d("u", "x7", "x7")
    finally:
        torch.autograd.grad = real
    assert calls == 2  # one for the whole gradient, one for u_x7x7
    assert torch.allclose(g, 2 * c * pts)
    assert torch.allclose(second, torch.full((4,), 2 * c[7].item(), dtype=c.dtype))


def test_weighted_laplacian_exact_and_sampled():
    """sum_i w_i u_ii, exactly and as an unbiased SDGD estimate."""
    d = 4
    axes, c, pts, model = _quadratic(d)
    w = pts.square()
    exact = (w * 2 * c).sum(1)
    assert torch.allclose(Fields(pts, axes, ("u",), model=model).laplacian("u", weights=w), exact)
    gen = torch.Generator().manual_seed(3)
    est = torch.stack(
        [
            Fields(pts, axes, ("u",), model=model, laplacian_dims=1, generator=gen).laplacian(
                "u", weights=w
            )
            for _ in range(4000)
        ]
    )
    stderr = est.std(0) / len(est) ** 0.5
    assert ((est.mean(0) - exact).abs() < 4 * stderr).all()
    with pytest.raises(ValueError, match=r"expected \[N, len\(axes\)\]"):
        Fields(pts, axes, ("u",), model=model).laplacian("u", weights=w[:, :2])


# -- output transforms on jets -----------------------------------------------------------------
TRANSFORMS = [
    {"u": "t * (1 - x**2) * u - sin(pi * x)", "v": "exp(-y) * v + u * v / (2 + cos(t))"},
    {"u": "sqrt(1 + u**2) + log(2 + tanh(x * y)) * abs(v)", "v": "2**x * v - 1 / (1.5 + sin(u))"},
    {"v": "k * (y - 1) + v"},  # u passes through; a parameter; a term without the net
]


@pytest.mark.parametrize("exprs", TRANSFORMS)
def test_output_transform_jets_equal_autograd(exprs):
    """The chain rule on jets (`Jet`) gives the transformed fields' derivatives exactly as
    autograd does, and the same parameter gradient."""
    from methods.nets import OutputTransform

    model = OutputTransform(_net(seed=5), exprs, AXES, NAMES, {"k": 0.7})
    assert supports(model)
    pts = _points(30, 8)
    fs_t = FieldsBuilder(model, AXES, NAMES, "taylor", [set(KEYS)])([pts])[0]
    fs_a = FieldsBuilder(model, AXES, NAMES, "autograd", [set(KEYS)])([pts])[0]
    assert isinstance(fs_t, TaylorFields) and not isinstance(fs_a, TaylorFields)
    torch.testing.assert_close(fs_t["u"], fs_a["u"], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(fs_t["v"], fs_a["v"], rtol=1e-12, atol=1e-13)
    for key in KEYS:
        torch.testing.assert_close(fs_t.d(*key), fs_a.d(*key), rtol=1e-10, atol=1e-11)
    params = list(model.parameters())

    def loss(f):
        return sum(f.d(*k).square().mean() for k in KEYS) + f["v"].square().mean()

    for a, b in zip(
        torch.autograd.grad(loss(fs_t), params), torch.autograd.grad(loss(fs_a), params)
    ):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
