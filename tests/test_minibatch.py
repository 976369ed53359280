"""The shared minibatch loop: batches over a seeded permutation, one scheduler step per
optimiser step, the logged lr is the one the step used, and it stops when `report` says so."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from methods.minibatch import fit_minibatch


class _Report:
    """Records every call; says stop at step `stop_at`."""

    def __init__(self, stop_at: int) -> None:
        self.stop_at = stop_at
        self.calls: list[tuple[int, int | None, dict[str, float]]] = []

    def __call__(self, step, *, evals=None, predictor=None, **scalars) -> bool:
        self.calls.append((step, evals, scalars))
        return step >= self.stop_at

    def evals_left(self) -> int | None:
        return None

    def checkpoint(self, state) -> int:
        return 0  # never resumes


class _Selector:
    def __init__(self) -> None:
        self.after_steps: list[int] = []
        self.finished: list[int] = []

    def after(self, step: int, scalars: dict[str, float]) -> None:
        self.after_steps.append(step)
        scalars["val"] = float(step)

    def finish(self, step: int) -> None:
        self.finished.append(step)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _run(n: int, batch_size: int, stop_at: int, seed: int | None = 0, **kw):
    """Train a 1-parameter model; returns (batches seen, lr seen at each step, report, sched)."""
    model = nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = LambdaLR(opt, lambda step: 0.5**step)
    seen: list[list[int]] = []
    lrs: list[float] = []

    def batch_loss(idx):
        seen.append(idx.tolist())
        lrs.append(opt.param_groups[0]["lr"])
        return model.weight.square().sum() * len(idx), {"size": float(len(idx))}

    gen = None if seed is None else torch.Generator().manual_seed(seed)
    report = _Report(stop_at)
    fit_minibatch(
        batch_loss, n=n, batch_size=batch_size, gen=gen, model=model, opt=opt, schedule=sched,
        report=report, predictor=None, **kw,
    )  # fmt: skip
    return seen, lrs, report, sched


def test_stops_when_report_says_and_steps_the_schedule_once_per_step():
    selector = _Selector()
    seen, lrs, report, sched = _run(10, 4, stop_at=7, selector=selector)
    assert [c[0] for c in report.calls] == list(range(1, 8))
    assert all(evals == step for step, evals, _ in report.calls)
    assert sched.last_epoch == 7 and len(seen) == 7
    # the logged lr is the one the step used; the method's scalars follow loss and lr
    assert [c[2]["lr"] for c in report.calls] == lrs == [0.1 * 0.5**k for k in range(7)]
    assert list(report.calls[0][2]) == ["loss", "lr", "size", "val"]
    assert selector.after_steps == list(range(1, 8)) and selector.finished == [7]


def test_batches_follow_one_permutation_per_epoch():
    seen, _, _, _ = _run(10, 4, stop_at=6)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(2):
        perm = torch.randperm(10, generator=gen).tolist()
        assert seen[3 * epoch : 3 * epoch + 3] == [perm[0:4], perm[4:8], perm[8:10]]


def test_drop_last_skips_the_partial_batch():
    seen, _, _, _ = _run(10, 4, stop_at=4, drop_last=True)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(2):
        perm = torch.randperm(10, generator=gen).tolist()
        assert seen[2 * epoch : 2 * epoch + 2] == [perm[0:4], perm[4:8]]
    with pytest.raises(ValueError, match="no batch"):
        _run(3, 4, stop_at=1, drop_last=True)


def test_without_a_generator_the_samples_come_in_order():
    seen, _, _, _ = _run(3, 2, stop_at=4, seed=None)
    assert seen == [[0, 1], [2], [0, 1], [2]]


def test_clip_bounds_the_gradient_norm():
    grads = []

    class _Clipped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([3.0, 4.0]))

    model = _Clipped()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    opt.register_step_pre_hook(lambda o, a, k: grads.append(model.w.grad.clone()))
    fit_minibatch(
        lambda idx: (model.w.square().sum() / 2, {}), n=1, batch_size=1, gen=None, model=model,
        opt=opt, schedule=LambdaLR(opt, lambda s: 1.0), report=_Report(1), predictor=None,
        clip=1.0,
    )  # fmt: skip
    assert torch.allclose(grads[0], torch.tensor([0.6, 0.8]))


def test_a_resumed_loop_continues_with_the_same_batches_and_weights(tmp_path):
    """Checkpoints of the loop (bench.checkpoint through the harness's Monitor): stopped
    mid-epoch at step 11 and resumed from its step-10 checkpoint, the run ends with the
    weights of a run never stopped."""
    from bench.checkpoint import Checkpoints
    from bench.monitor import Monitor
    from methods.base import Budget

    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(2))
    y = x.sum(1, keepdim=True)

    def run(steps: int, out, every=None, src=None):
        torch.manual_seed(0)
        model = nn.Linear(3, 1)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        sched = torch.optim.lr_scheduler.StepLR(opt, 4, 0.5)
        gen = torch.Generator().manual_seed(1)

        def batch_loss(idx):  # draws from the permutation's generator too
            noise = 0.01 * torch.randn(len(idx), 1, generator=gen)
            return (model(x[idx]) - y[idx] - noise).square().mean(), {}

        mon = Monitor(Budget(steps=steps, eval_every=100), lambda p: 0.0)
        ident = {"code_version": "test", "config_hash": "test"}
        mon.checkpoints = Checkpoints(out, every, ident, src, say=lambda line: None)
        mon.start()
        fit_minibatch(
            batch_loss, n=10, batch_size=3, gen=gen, model=model, opt=opt, schedule=sched,
            report=mon, predictor=None,
        )  # fmt: skip
        return model.weight.detach().clone(), mon

    full, _ = run(23, tmp_path / "a")
    run(11, tmp_path / "b", every=1e-9)
    resumed, mon = run(23, tmp_path / "c", every=1e-9, src=tmp_path / "b")
    assert mon.checkpoints.loaded_from is not None and mon.step == 23
    assert torch.equal(full, resumed)
