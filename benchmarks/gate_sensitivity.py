"""Does the accuracy gate catch real regressions? Plant real bugs in the code path and run it.

Each plant is a monkeypatch applied in every worker process before any cell runs (as
`bench.check.run_grid`'s `setup`), so the bug is in the code the cells execute, not in a
metrics file. For each plant the script runs the gate's accuracy cells that the plant touches
(`CELLS`; `--all` runs every accuracy cell), compares them with the committed baselines exactly
as `bench-check` does, and prints caught/missed and the rows that caught it.

    .venv/bin/python benchmarks/gate_sensitivity.py              # every plant
    .venv/bin/python benchmarks/gate_sensitivity.py --plant lbfgs_skipped --plant sign_error
    .venv/bin/python benchmarks/gate_sensitivity.py --seeds 3 4 5  # other seeds than the gate's

`--plant none` runs the same cells with no plant: the false-alarm check.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# -- the plants (module-level, so that spawned workers can unpickle them) -----------------------
def adam_lr() -> None:
    """Every Adam (and AdamW) step runs at a tenth of its learning rate: a bug in a shared
    optimiser or schedule."""
    import torch

    for cls in (torch.optim.Adam, torch.optim.AdamW):
        if "step" not in cls.__dict__:
            continue  # inherits the patched step
        step = cls.step

        def tenth(self, *args, _step=step, **kw):  # type: ignore[no-untyped-def]
            saved = [g["lr"] for g in self.param_groups]
            for g in self.param_groups:
                g["lr"] = 0.1 * g["lr"]
            try:
                return _step(self, *args, **kw)
            finally:
                for g, lr in zip(self.param_groups, saved):
                    g["lr"] = lr

        cls.step = tenth


def adam_lr_pinn() -> None:
    """Only the PINN engine's Adam (pinn, pig, lpinn) at a tenth of its learning rate."""
    from methods.train import StepTrainer

    update = StepTrainer.adam_update
    StepTrainer.adam_update = lambda self, lr, losses: update(self, 0.1 * lr, losses)


def lbfgs_skipped() -> None:
    """L-BFGS never takes a step: its phase ends at once, as if it had converged."""
    from methods.train import StepTrainer

    StepTrainer.lbfgs_step = lambda self, evals_left=None: None


def sign_error() -> None:
    """Burgers' advection term with the wrong sign: u_t - u u_x - nu u_xx."""
    from problems.burgers import Burgers

    def residual(self, f):  # type: ignore[no-untyped-def]
        u = f["u"]
        return (f.d("u", "t") - u * f.d("u", "x") - self.nu * f.d("u", "x", "x"))[:, None]

    Burgers.residual = residual


def half_steps() -> None:
    """Operator learners (fno, dymixop, ...) stop training at half the budget's steps, as a
    loop that breaks early would (the harness's monitor still enforces the full budget)."""
    from methods.operator import OperatorMethod

    fit = OperatorMethod.fit

    class Early:
        """The harness's report, saying "stop" from half the budget's steps on."""

        def __init__(self, report, limit):  # type: ignore[no-untyped-def]
            self.report, self.limit = report, limit

        def __call__(self, step, **kw):  # type: ignore[no-untyped-def]
            return self.report(step, **kw) or step >= self.limit

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self.report, name)

    def half(self, problem, budget, report):  # type: ignore[no-untyped-def]
        return fit(self, problem, budget, Early(report, budget.steps // 2))

    OperatorMethod.fit = half


def trial_bc() -> None:
    """Trial functions that miss their boundary condition: Burgers' vanishes at x = 1 only
    (u(-1, t) = 0 lost), the hypergeometric one at x = -0.1 instead of 0 (y(0) = 1 lost).
    The PINN then keeps those conditions as loss terms (it checks them numerically)."""
    from problems.burgers import Burgers
    from problems.singular import Hypergeometric

    Burgers.trial = lambda self: {"u": "t * (1 - x) * u - sin(pi * x)"}
    Hypergeometric.trial = lambda self: {"y": "1 + (x + 0.1) * y"}


def half_resolution() -> None:
    """burgers_op's data (the operator learners' reference) computed on half the solver grid,
    in a fresh cache so that the committed data are not reused."""
    import problems.burgers_op as bo

    os.environ["PHYSBENCH_CACHE"] = tempfile.mkdtemp(prefix="physbench-plant-")
    generate = bo.BurgersOp.generate

    def coarse(self, *args, **kw):  # type: ignore[no-untyped-def]
        n = self.n
        self.n = n // 2
        try:
            return generate(self, *args, **kw)
        finally:
            self.n = n

    bo.BurgersOp.generate = coarse


PLANTS: dict[str, Callable[[], None] | None] = {
    "none": None,
    "adam_lr": adam_lr,
    "adam_lr_pinn": adam_lr_pinn,
    "lbfgs_skipped": lbfgs_skipped,
    "sign_error": sign_error,
    "half_steps": half_steps,
    "trial_bc": trial_bc,
    "half_resolution": half_resolution,
}
# the accuracy cells each plant touches (methods or problems); None: every accuracy cell
TOUCHES: dict[str, tuple[str, ...] | None] = {
    "none": None,
    "adam_lr": None,
    "adam_lr_pinn": ("pinn/", "pig/", "lpinn/"),
    "lbfgs_skipped": ("pinn/", "pig/", "lpinn/"),
    "sign_error": ("/burgers/",),
    "half_steps": ("fno/", "dymixop/"),
    "trial_bc": ("/burgers/", "/hypergeometric/"),
    "half_resolution": ("/burgers_op/",),
}


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from bench import check

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plant", action="append", choices=sorted(PLANTS), default=[])
    p.add_argument("--all", action="store_true", help="run every accuracy cell for each plant")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the gate's")
    p.add_argument("--variant", default="native")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=REPO / "results" / "check" / "sensitivity")
    args = p.parse_args(argv)
    console = Console(highlight=False, width=120)
    gate = check.load_gate()
    baselines = check.read_baselines(check.BASELINES)
    variant = gate.variants[args.variant]
    summary = []
    for name in args.plant or [k for k in PLANTS if k != "none"]:
        touch = TOUCHES[name]
        cells = [
            c for c in gate.cells
            if args.all or touch is None or any(t in "/".join(c) + "/" for t in touch)
        ]  # fmt: skip
        tasks = check.tasks_for(gate, cells, args.out / name, variant, args.seeds)
        console.print(f"[bold]plant {name}[/]: {len(cells)} cell(s), {len(tasks)} run(s)")
        records = check.run_grid(
            tasks, console, jobs=max(1, args.jobs // variant.threads), env=variant.env,
            setup=PLANTS[name],
        )  # fmt: skip
        rows = check.rows_of(baselines, cells)
        checks = check.compare(records, rows, gate, cells)
        bad = [c for c in checks if not c.ok]
        who = ", ".join(f"{c.cell} {c.metric} ({c.verdict}, ×{c.ratio or 0:.3g})" for c in bad)
        verdict = ("false alarm" if bad else "clean") if name == "none" else (
            "caught" if bad else "MISSED")  # fmt: skip
        summary.append((name, verdict, len(cells), who or "—"))
        console.print(f"plant {name}: {verdict} {who}")
    console.print("\n| plant | verdict | cells run | failing rows (verdict, ratio to centre) |")
    console.print("| --- | --- | ---: | --- |")
    for row in summary:
        console.print("| " + " | ".join(map(str, row)) + " |")
    missed = [n for n, v, *_ in summary if v in ("MISSED", "false alarm")]
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
