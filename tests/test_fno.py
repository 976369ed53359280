"""`fno`: the spectral convolution is the exact Fourier multiplier it claims to be (1-D and 2-D),
and the FNO's held-out rollout error falls with training on the synthetic 1-D and 2-D
advection-diffusion problems of `test_operator_method.py`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.registry import build_method
from methods.base import Budget
from methods.fno import FNO
from methods.nets import SpectralConv
from methods.operator import TorchOperatorPredictor
from problems.base import ConfigError
from tests.test_operator_method import (
    Transport1D,
    Transport2D,
    fit,
    heldout_error,
    persistence_error,
)

SMALL = dict(width=12, modes=6, proj=32, batch_size=8, rollout_train=3, val_every=50)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "cache"))


def test_spectral_conv_1d_is_a_fourier_multiplier():
    torch.manual_seed(0)
    sc = SpectralConv(2, 3, modes=4, dim=1).double()
    w = torch.view_as_complex(sc.weights[0]).detach()  # [in, out, modes]
    n = 32
    x = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    for k in range(8):
        u = torch.stack([torch.cos(k * x), torch.sin(k * x)])[None]  # two input channels
        out = sc(u)[0]
        want = torch.zeros(3, n, dtype=torch.float64)
        if k < 4:  # e^{ikx} -> w e^{ikx} per channel pair; higher modes are cut
            z = torch.exp(1j * k * x)
            amp = w[0, :, k] - 1j * w[1, :, k] if k else w[0, :, k]
            want = (amp[:, None] * z).real
        torch.testing.assert_close(out, want, atol=1e-12, rtol=0)


def test_spectral_conv_2d_keeps_both_kx_signs():
    torch.manual_seed(0)
    sc = SpectralConv(1, 1, modes=3, dim=2).double()
    w1, w2 = (torch.view_as_complex(p).detach()[0, 0] for p in sc.weights)
    n = 16
    x = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
    X, Y = torch.meshgrid(x, x, indexing="ij")
    for kx, ky, w in [(1, 2, w1[1, 2]), (-2, 1, w2[-2, 1]), (0, 0, w1[0, 0])]:
        u = torch.cos(kx * X + ky * Y)[None, None]
        # a real mode cos(k.x) has the pair +-k; rfft2 keeps ky >= 0, so only the half with
        # ky > 0 (or ky = 0 with both kx signs) is multiplied, and the output is real
        out = sc(u)[0, 0]
        if ky > 0:
            want = (w * torch.exp(1j * (kx * X + ky * Y))).real
        else:
            want = w.real * torch.ones_like(X)
        torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    high = torch.cos(5 * X)[None, None]  # beyond `modes`: removed
    assert sc(high).abs().max() < 1e-12
    assert SpectralConv.max_modes((16, 16)) == 8 and SpectralConv.max_modes((32,)) == 17


@pytest.mark.parametrize(("cls", "steps"), [(Transport1D, 150), (Transport2D, 100)])
def test_error_falls(cls, steps):
    p = cls()
    method = build_method("fno", **SMALL)
    method.dtype = torch.float32
    model, _, _ = method.prepare(p, Budget(name="smoke"))
    untrained = heldout_error(p, TorchOperatorPredictor(model))
    _, pred, rec = fit("fno", p, steps, **SMALL)
    err = heldout_error(p, pred)
    # observed: 1-D 0.020 after 150 steps (0.55 untrained, 0.49 persistence);
    # 2-D 0.051 after 100 steps (0.82 untrained, 0.62 persistence)
    assert err < 0.15 * min(untrained, persistence_error(p)), (err, untrained)
    assert np.isfinite([c["loss"] for c in rec.calls]).all()
    vals = [c["val_rel_l2"] for c in rec.calls if "val_rel_l2" in c]
    assert vals and vals[-1] < 0.2


def test_modes_beyond_the_grid_are_a_config_error():
    method = build_method("fno", modes=20)
    with pytest.raises(ConfigError, match=r"method\.modes"):
        method.prepare(Transport1D(n=32), Budget(name="smoke"))
    for key in ("width", "modes", "layers", "proj"):
        with pytest.raises(ConfigError, match=rf"method\.{key}"):
            build_method("fno", **{key: 0})


def test_smoke_overrides_build():
    assert build_method("fno", **FNO.smoke).width == FNO.smoke["width"]
