"""The shared operator trainer (`methods/operator.py`), on small synthetic operator problems with
exact Fourier solutions: rollout shapes, determinism, validation-only checkpoint selection (the
test split is never touched), the budget's stop and sample caps, per-channel normalisation on
the training split, and config errors that name their key.

`Transport1D` and `Transport2D` are shared with `test_fno.py` and `test_dymixop.py`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from bench.registry import build_method, build_problem
from core.metrics import per_sample_rel_l2 as rel_l2
from methods.base import Budget
from methods.operator import OperatorMethod, TorchOperatorPredictor
from problems.base import Box, ConfigError, OperatorData
from problems.operator import OperatorProblem

TWO_PI = 2 * math.pi
SIZES = {"train": 48, "val": 16, "test": 16}


class SplitTouched(AssertionError):
    """Raised when a method asks for the test split (it never may)."""


class FakeOperatorProblem(OperatorProblem):
    """Advection-diffusion u_t + c . grad u = nu lap u on the periodic box [0, 2pi)^d, from
    random Fourier initial data (modes |k_i| <= `modes`, plus a mean of 1), solved exactly mode
    by mode. With `random_nu`, each sample has its own nu, given as an input channel."""

    fields = ("u",)
    data_keys = ("n", "nt", "dt", "c", "nu", "modes", "random_nu")
    dim = 1

    def __init__(self, **params: Any) -> None:
        params.setdefault("data", {s: dict(SIZES) for s in ("smoke", "standard", "paper")})
        params.setdefault("data_seed", 0)
        super().__init__(**params)
        self.context = params.get("context", 1)
        axes = ("x", "y")[: self.dim]
        self.axes = (*axes, "t")
        bounds = {a: (0.0, TWO_PI) for a in axes}
        self.domain = Box({**bounds, "t": (0.0, params["dt"] * (params["nt"] - 1))})

    def operator_data(self, split: str, scale: str = "standard", progress=None) -> OperatorData:
        if split == "test":
            raise SplitTouched("the trainer asked for the test split")
        return super().operator_data(split, scale, progress)

    def generate(self, split: str, n: int, seed: int, progress=None, scale="") -> OperatorData:
        p, d = self.params, self.dim
        rng = np.random.default_rng(seed)
        x = np.linspace(0.0, TWO_PI, p["n"], endpoint=False)
        t = np.arange(p["nt"]) * p["dt"]
        nu = rng.uniform(0.5, 2.0, n) * p["nu"] if p["random_nu"] else np.full(n, p["nu"])
        ks = np.arange(-p["modes"], p["modes"] + 1)
        kgrid = np.stack(np.meshgrid(*[ks] * d, indexing="ij"), -1).reshape(-1, d)
        kgrid = kgrid[np.abs(kgrid).sum(1) > 0]
        amp = (rng.normal(size=(n, len(kgrid))) + 1j * rng.normal(size=(n, len(kgrid)))) / (
            1 + np.abs(kgrid).sum(1)
        )
        mesh = np.stack(np.meshgrid(*[x] * d, indexing="ij"), -1)  # [*grid, d]
        c = np.full(d, p["c"])
        out = np.empty((n, len(t), 1, *mesh.shape[:-1]))
        for j, tj in enumerate(t):
            phase = np.exp(1j * (mesh @ kgrid.T - (kgrid @ c) * tj))  # [*grid, K]
            decay = np.exp(-nu[:, None] * (kgrid**2).sum(1) * tj)  # [n, K]
            out[:, j, 0] = 1.0 + np.real(np.tensordot(amp * decay, phase, axes=(1, d)))
        chans = [out[:, 0]]
        if p["random_nu"]:
            chans.append(np.broadcast_to(nu.reshape(-1, 1, *[1] * d), out[:, 0].shape))
        return OperatorData(np.concatenate(chans, 1), out, (x,) * d, t)


class Transport1D(FakeOperatorProblem):
    name = "fake_transport1d"

    def __init__(self, **params: Any) -> None:
        base = dict(n=32, nt=9, dt=0.15, c=1.0, nu=0.1, modes=3, random_nu=True, context=2)
        super().__init__(**{**base, **params})


class Transport2D(FakeOperatorProblem):
    name = "fake_transport2d"
    dim = 2

    def __init__(self, **params: Any) -> None:
        base = dict(n=16, nt=6, dt=0.15, c=1.0, nu=0.1, modes=2, random_nu=False, context=1)
        super().__init__(**{**base, **params})


class Recorder:
    """A `report` that records every call and says stop at `steps`."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.calls: list[dict[str, Any]] = []
        self.predictor = None

    def __call__(self, step: int, *, evals=None, predictor=None, **scalars: float) -> bool:
        self.calls.append({"step": step, "evals": evals, **scalars})
        self.predictor = predictor or self.predictor
        return step >= self.steps

    def evals_left(self) -> None:
        return None

    def checkpoint(self, state) -> int:
        return 0  # never resumes


def heldout_error(problem: FakeOperatorProblem, pred: TorchOperatorPredictor) -> float:
    """Mean per-sample rel_l2 of the full rollout on a test set drawn here (as the harness
    does; the method never sees it)."""
    data = problem.generate("test", 16, seed=999)
    h = problem.context
    out = pred.rollout(data.outputs[:, :h], data.inputs, data.outputs.shape[1] - h)
    return float(np.mean(rel_l2(out, data.outputs[:, h:])))


def persistence_error(problem: FakeOperatorProblem) -> float:
    """The same error for the trivial predictor that holds the last known frame."""
    data = problem.generate("test", 16, seed=999)
    h = problem.context
    held = np.repeat(data.outputs[:, h - 1 : h], data.outputs.shape[1] - h, axis=1)
    return float(np.mean(rel_l2(held, data.outputs[:, h:])))


def fit(name: str, problem, steps: int, seed: int = 0, budget: Budget | None = None, **kw):
    method = build_method(name, **kw)
    method.seed, method.dtype = seed, torch.float32
    rec = Recorder(steps)
    pred = method.fit(problem, budget or Budget(name="smoke", steps=steps), rec)
    return method, pred, rec


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PHYSBENCH_CACHE", str(tmp_path / "cache"))


class StencilNet(nn.Module):
    """A 3-point circular stencil over the input channels: the smallest learner that can
    represent one step of a linear advection-diffusion law."""

    def __init__(self, c_in: int, c_out: int, dim: int) -> None:
        super().__init__()
        cls = nn.Conv1d if dim == 1 else nn.Conv2d
        self.conv = cls(c_in, c_out, 3, padding=1, padding_mode="circular")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Stencil(OperatorMethod):
    """The trainer with the smallest possible net (fast tests of the trainer itself)."""

    name = "stencil"

    def build_net(self, in_channels, out_channels, dim, grid, data) -> nn.Module:
        return StencilNet(in_channels, out_channels, dim)


def stencil_fit(problem, steps: int, seed: int = 0, budget: Budget | None = None, **kw):
    method = Stencil(**{"batch_size": 8, "rollout_train": 3, "val_every": 10, "lr": 1e-2, **kw})
    method.seed, method.dtype = seed, torch.float32
    rec = Recorder(steps)
    pred = method.fit(problem, budget or Budget(name="smoke", steps=steps), rec)
    return method, pred, rec


# -- the synthetic problems are right (their data are exact solutions) ---------------------------
@pytest.mark.parametrize("cls", [Transport1D, Transport2D])
def test_fake_problem_data_solve_the_pde(cls):
    p = cls()
    d = p.generate("train", 4, seed=0)
    u, dt, nu = d.outputs[:, :, 0], p.params["dt"], d.inputs[:, -1].reshape(4, -1)[:, 0]
    if cls is Transport2D:
        nu = np.full(4, p.params["nu"])
    k = np.fft.fftfreq(p.params["n"], 1.0 / p.params["n"])
    kk = np.stack(np.meshgrid(*[k] * p.dim, indexing="ij"))
    axes = tuple(range(-p.dim, 0))
    uh = np.fft.fftn(u, axes=axes)
    # each Fourier mode evolves by exactly exp(lambda dt), lambda = -i c.k - nu |k|^2
    lam = -1j * p.params["c"] * kk.sum(0) - nu.reshape(-1, 1, *[1] * p.dim) * (kk**2).sum(0)
    np.testing.assert_allclose(uh[:, 1:], np.exp(lam * dt) * uh[:, :-1], atol=1e-9 * abs(uh).max())
    # and a centred difference in time converges to lambda u at second order
    errs = []
    for q in (cls(), cls(dt=dt / 2, nt=2 * p.params["nt"] - 1)):
        uq = np.fft.fftn(q.generate("train", 4, seed=0).outputs[:, :, 0], axes=axes)
        dq = q.params["dt"]
        resid = (uq[:, 2:] - uq[:, :-2]) / (2 * dq) - lam * uq[:, 1:-1]
        errs.append(np.abs(resid[:, :3]).max() / np.abs(lam * uq[:, 1:4]).max())
    assert errs[0] < 0.1 and 3.5 < errs[0] / errs[1] < 4.5, errs
    assert d.inputs.shape[1] == (2 if cls is Transport1D else 1)
    np.testing.assert_allclose(d.inputs[:, :1], d.outputs[:, 0])


# -- the trainer ---------------------------------------------------------------------------------
def test_not_applicable_without_operator_data():
    method = build_method("fno")
    assert method.applicable(build_problem("burgers")) is not None
    assert method.applicable(Transport1D()) is None


@pytest.mark.parametrize("cls", [Transport1D, Transport2D])
def test_error_falls_and_rollout_shapes(cls):
    p = cls()
    _, pred, rec = stencil_fit(p, 0 + 120)
    data = p.generate("test", 5, seed=3)
    h = p.context
    out = pred.rollout(data.outputs[:, :h], data.inputs, 4)
    assert out.shape == (5, 4, 1, *data.outputs.shape[3:]) and out.dtype == np.float64
    # a longer window: only its last `history` frames count
    longer = np.concatenate([data.outputs[:, :1] * 0 + 7.0, data.outputs[:, :h]], axis=1)
    np.testing.assert_allclose(pred.rollout(longer, data.inputs, 4), out, rtol=1e-6)
    with pytest.raises(ValueError, match="window"):
        pred.rollout(data.outputs[:, :h, 0], data.inputs, 4)
    losses = [c["loss"] for c in rec.calls]
    assert np.mean(losses[-10:]) < 0.3 * np.mean(losses[:5])
    # observed 0.14 (1-D: a linear stencil cannot form nu * u_xx) and 0.03 (2-D), against
    # 0.49 and 0.62 for persistence (the last known frame held) and 0.55 / 0.82 untrained
    assert heldout_error(p, pred) < 0.4 * persistence_error(p), heldout_error(p, pred)
    assert [c["step"] for c in rec.calls] == list(range(1, 121))
    assert all(c["evals"] == c["step"] for c in rec.calls)


def test_deterministic_for_a_seed():
    p = Transport1D()
    runs = [stencil_fit(p, 25, seed=s) for s in (0, 0, 1)]
    losses = [[c["loss"] for c in r[2].calls] for r in runs]
    assert losses[0] == losses[1] and losses[0] != losses[2]
    d = p.generate("test", 3, seed=5)
    outs = [r[1].rollout(d.outputs[:, :2], d.inputs, 3) for r in runs]
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_budget_stop_is_honoured():
    _, _, rec = stencil_fit(Transport1D(), 7)
    assert [c["step"] for c in rec.calls] == list(range(1, 8))  # never a step past True


def test_samples_cap_and_normalisation_on_train_only():
    p = Transport1D()
    method = Stencil(normalize="std")
    model, train, val = method.prepare(p, Budget(name="smoke", samples=5))
    assert train.inputs.shape[0] == 5 and train.outputs.shape[0] == 5
    assert val.inputs.shape[0] == SIZES["val"]
    u = p.operator_data("train", "smoke").outputs[:5].astype(np.float64)
    np.testing.assert_allclose(model.state_shift.flatten().numpy(), [u.mean()], rtol=1e-6)
    np.testing.assert_allclose(model.state_scale.flatten().numpy(), [u.std()], rtol=1e-5)
    nu = p.operator_data("train", "smoke").inputs[:5, 1].astype(np.float64)
    np.testing.assert_allclose(model.extra_shift.flatten().numpy(), [nu.mean()], rtol=1e-6)
    mm = Stencil(normalize="minmax").prepare(p, Budget(name="smoke", samples=5))[0]
    np.testing.assert_allclose(mm.state_shift.flatten().numpy(), [u.min()], rtol=1e-6)
    np.testing.assert_allclose(mm.state_scale.flatten().numpy(), [np.ptp(u)], rtol=1e-5)
    # a fit under the cap draws its batches from those 5 trajectories only
    _, _, rec = stencil_fit(p, 3, budget=Budget(name="smoke", steps=3, samples=5))
    assert len(rec.calls) == 3


@pytest.mark.parametrize("select", ["val", "last"])
def test_checkpoint_selection_uses_validation_only(monkeypatch, select):
    """Scripted validation errors: `val` returns the weights seen at the best one, `last` the
    final weights; the fake problem raises if the test split is asked for."""
    scripted = iter([0.5, 0.2, 0.9, 0.7, 0.8])
    seen: list[tuple[float, dict]] = []

    def fake_validate(self, pred, val, context):
        assert val.meta["split"] == "val"
        v = next(scripted)
        seen.append((v, {k: t.clone() for k, t in pred.model.state_dict().items()}))
        return v

    monkeypatch.setattr(OperatorMethod, "validate", fake_validate)
    _, pred, rec = stencil_fit(Transport1D(), 45, select=select)  # val at 10..40, then at 45
    assert [c["step"] for c in rec.calls if "val_rel_l2" in c] == [10, 20, 30, 40]
    assert len(seen) == (5 if select == "val" else 4)
    want = seen[1][1] if select == "val" else None
    got = pred.model.state_dict()
    if want is None:  # the last weights: not those of any earlier validation
        assert not torch.equal(got["net.conv.weight"], seen[-1][1]["net.conv.weight"])
    else:
        for k in want:
            assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"rollout_train": 0}, "method.rollout_train"),
        ({"batch_size": 1.5}, "method.batch_size"),
        ({"loss": "l1"}, "method.loss"),
        ({"select": "test"}, "method.select"),
        ({"normalize": "z"}, "method.normalize"),
        ({"optimizer": "sgd"}, "method.optimizer"),
        ({"lr": -1.0}, "method.lr"),
        ({"lr_gamma": 2.0}, "method.lr_gamma"),
        ({"val_every": 0}, "method.val_every"),
        ({"history": 0}, "method.history"),
        ({"no_such_key": 1}, "method.no_such_key"),
    ],
)
@pytest.mark.parametrize("name", ["fno", "dymixop"])
def test_bad_config_names_the_key(name, kw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method(name, **kw)


def test_history_beyond_context_and_3d_data_are_config_errors():
    with pytest.raises(ConfigError, match=r"method\.history"):
        Stencil(history=3).prepare(Transport1D(), Budget(name="smoke"))
    Stencil(history=1).prepare(Transport1D(), Budget(name="smoke"))  # fewer frames is fine

    class Cube(Transport2D):
        name = "fake_cube"

        def generate(self, split, n, seed, progress=None, scale=""):
            d = super().generate(split, n, seed)
            x = d.grid[0]
            return OperatorData(d.inputs[..., None], d.outputs[..., None], (x, x, x[:1]), d.times)

    with pytest.raises(ConfigError, match="3-D"):
        Stencil().prepare(Cube(), Budget(name="smoke"))
