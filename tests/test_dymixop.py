"""`dymixop`: its finite-difference branch annihilates constants and is the stencil it claims,
the gate follows the chosen convention (`code`: sigmoid(lambda); `paper`: sigmoid(lambda *
kappa)), the default sizes give `fno` and `dymixop` equal parameter counts on the 1-D
benchmarks, and the held-out rollout error falls with training on the synthetic 1-D and 2-D
problems of `test_operator_method.py`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.registry import build_method
from methods.base import Budget
from methods.dymixop import DyMixOp, DyMixOpNet, FDConv, structure_change
from methods.fno import FNONet
from methods.operator import TorchOperatorPredictor
from problems.base import ConfigError
from tests.test_operator_method import (
    Transport1D,
    Transport2D,
    fit,
    heldout_error,
    persistence_error,
)

SMALL = dict(hidden=12, layers=2, global_modes=6, batch_size=8, rollout_train=3, val_every=50)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("dim", [1, 2])
def test_fd_branch_is_a_zero_sum_stencil(dim):
    torch.manual_seed(0)
    fd = FDConv(3, 2, dim).double()
    grid = (12,) * dim
    const = torch.ones(1, 3, *grid, dtype=torch.float64) * torch.tensor([1.0, -2.0, 0.5]).view(
        1, 3, *[1] * dim
    )
    assert fd(const).abs().max() < 1e-12  # a difference operator: constants map to zero
    x = torch.randn(2, 3, *grid, dtype=torch.float64)
    w = fd.weight.detach()
    want = torch.zeros(2, 2, *grid, dtype=torch.float64)
    offsets = [(i,) for i in range(3)] if dim == 1 else [(i, j) for i in range(3) for j in range(3)]
    for off in offsets:  # circular cross-correlation with the stencil, centre reduced by its sum
        shift = tuple(1 - o for o in off)
        rolled = torch.roll(x, shifts=shift, dims=tuple(range(2, 2 + dim)))
        coef = w[(slice(None), slice(None), *off)]
        if all(o == 1 for o in off):
            coef = coef - w.sum(dim=tuple(range(2, 2 + dim)))
        want += torch.einsum("oi,bi...->bo...", coef, rolled)
    torch.testing.assert_close(fd(x), want, atol=1e-12, rtol=0)


def test_gate_conventions():
    t = np.linspace(0, 1, 5)
    frames = np.stack([np.cos(t[:, None] + np.arange(8)[None] * 0.3)] * 3)  # [3, 5, 8]
    a, b = frames[:, 1:].reshape(3, 4, -1), frames[:, :-1].reshape(3, 4, -1)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    kappa = structure_change(frames)
    assert kappa == pytest.approx(1 - cos.mean(), rel=1e-6) and 0 < kappa < 0.1
    assert structure_change(np.ones((2, 4, 6))) == pytest.approx(0.0, abs=1e-7)

    code = DyMixOpNet(2, 1, 1, hidden=16, layers=2, modes=4)
    paper = DyMixOpNet(2, 1, 1, hidden=16, layers=2, modes=4, gate_coeff=kappa)
    gate = lambda net: torch.sigmoid(net.dyia.lam * net.dyia.gate_coeff).item()  # noqa: E731
    assert gate(code) == pytest.approx(1.0, abs=1e-6)  # sigmoid(16): the released code
    assert gate(paper) == pytest.approx(1 / (1 + np.exp(-16 * kappa)), rel=1e-6)
    m = build_method("dymixop", gate="paper", **SMALL)
    m.dtype = torch.float32
    model, train, _ = m.prepare(Transport1D(), Budget(name="smoke"))
    assert model.net.dyia.gate_coeff == pytest.approx(structure_change(train.outputs))


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(("case", "history", "extra"), [("ks", 10, 0), ("burgers_op", 1, 1)])
def test_default_sizes_match_fno_parameter_count_in_1d(case, history, extra):
    """`ks`: 1 field, context 10; `burgers_op`: 1 field and nu as an input channel, context 1;
    both 1-D, so the nets see history + extra + 1 coordinate channels."""
    d, f = build_method("dymixop"), build_method("fno")
    c_in = history + extra + 1
    nd = n_params(DyMixOpNet(c_in, 1, 1, d.hidden, d.layers, d.global_modes))
    nf = n_params(FNONet(c_in, 1, 1, f.width, f.modes, f.layers, f.proj))
    assert abs(nf / nd - 1) < 0.10, (case, nd, nf)  # measured 123,877 vs 120,753 on ks


@pytest.mark.parametrize(("cls", "steps"), [(Transport1D, 150), (Transport2D, 100)])
def test_error_falls(cls, steps):
    p = cls()
    method = build_method("dymixop", **SMALL)
    method.dtype = torch.float32
    model, _, _ = method.prepare(p, Budget(name="smoke"))
    untrained = heldout_error(p, TorchOperatorPredictor(model))
    _, pred, rec = fit("dymixop", p, steps, **SMALL)
    err = heldout_error(p, pred)
    # observed: 1-D 0.027 after 150 steps (persistence 0.49);
    # 2-D 0.038 after 100 steps (persistence 0.62)
    assert err < 0.2 * min(untrained, persistence_error(p)), (err, untrained)
    vals = [c["val_rel_l2"] for c in rec.calls if "val_rel_l2" in c]
    assert vals and vals[-1] < 0.2


def test_bad_values_name_their_key():
    for kw, key in [
        ({"hidden": 0}, "hidden"),
        ({"layers": 0}, "layers"),
        ({"global_modes": 0}, "global_modes"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"a_kernel_size": 4}, "a_kernel_size"),
        ({"gate": "adaptive"}, "gate"),
        ({"num_linear": 0}, "num_linear"),
    ]:
        with pytest.raises(ConfigError, match=rf"method\.{key}"):
            build_method("dymixop", **kw)
    with pytest.raises(ConfigError, match=r"method\.global_modes"):
        build_method("dymixop", global_modes=40).prepare(Transport1D(), Budget(name="smoke"))


def test_smoke_overrides_build():
    assert build_method("dymixop", **DyMixOp.smoke).hidden == DyMixOp.smoke["hidden"]
