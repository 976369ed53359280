"""Milliseconds per PINN training step, by derivative backend and precision, side by side
with DeepXDE and against the GEMM floor.

One step is what `pinn` does per Adam iteration: forward pass with the residual's derivatives,
residual and condition losses, one backward pass, one Adam update. The backend `deepxde` is
DeepXDE's own training step (its `Model`, `FNN` and Adam, torch backend) on the same
configuration with soft constraints (pip install -e .[compare]); the column `x deepxde` is
DeepXDE's time over our fastest backend's, in the same run and precision. Configurations:

* `deepxde`: DeepXDE's Burgers example (2540 domain + 80 boundary + 160 initial points,
  3 hidden layers of 20 tanh units, Adam, soft constraints).
* `deepxde_trial`: the same with our default hard constraints (the trial function satisfies
  the initial and boundary conditions, so only the 2540 residual points are computed).
* `large`: 8192 domain + 256 boundary + 256 initial points, 4 hidden layers of 64 units.

    .venv/bin/python benchmarks/step_time.py                 # all, default threads and 1 thread
    .venv/bin/python benchmarks/step_time.py --configs deepxde --threads 1 --plain
    .venv/bin/python benchmarks/step_time.py --configs deepxde --backends taylor compiled \
        --dtypes float32 --warmup 30     # torch.compile: the warm-up absorbs the compilation
    .venv/bin/python benchmarks/step_time.py --device cuda --threads 1 --plain

Each cell is measured in `--rounds` fresh processes (`--warmup` steps, then `--repeat / rounds`
timed steps each) and shows the median over all timed steps and, in parentheses, the smallest
per-round median. The two differ when the machine's speed drifts: on a shared 2-core VM a
process runs slower for minutes (whatever it computes). Run it on an otherwise idle
machine: torch's OpenMP threads slow down by orders of magnitude when another process holds
a core. With `--device cuda`, the steps run on the GPU and each is timed between two
`torch.cuda.synchronize()` calls (the compiled backend is `pinn`'s default `torch.compile`
mode, without CUDA graphs, as in a run).

The floor (column `floor ms`, and `x floor`, our fastest over it): the step's GEMM arithmetic
(forward through every hidden and output layer for each derivative row the residual needs,
value rows for condition points, and twice that backward) at the GEMM throughput measured in
the same run, same precision and threads, on one stacked product `[rows * points, width] @
[width, width]`. Elementwise work is left out, so no engine reaches it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from bench.registry import build_method, build_problem
from bench.run import pick_device
from problems.base import ConfigError

CONFIGS = {
    "deepxde": dict(  # as DeepXDE runs it: soft constraints, three loss terms
        width=20,
        depth=3,
        n_collocation=2540,
        n_points={"bc": 80, "ic": 160},
        hard_constraints=False,
        label="3x20/2780",
    ),
    "deepxde_trial": dict(  # the same net and points with our default trial function
        width=20,
        depth=3,
        n_collocation=2540,
        n_points={"bc": 80, "ic": 160},
        label="3x20/2540 trial",
    ),
    "large": dict(
        width=64,
        depth=4,
        n_collocation=8192,
        n_points={"bc": 256, "ic": 256},
        label="4x64/8704",
    ),
}


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS (and faulting it back
    in, zeroed, on the next step: megabytes per step for these activations). True if applied."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    big = 2**30
    # mallopt(M_TRIM_THRESHOLD=-1 / M_TOP_PAD=-2 / M_MMAP_THRESHOLD=-3, bytes) returns 1 on success
    return all(libc.mallopt(opt, big) == 1 for opt in (-1, -2, -3))


def trainer(config: str, backend: str, dtype: str, device: torch.device):
    """A `pinn` trainer on Burgers for one configuration, backend, precision and device; the
    backend `compiled` is the forward-mode one under `torch.compile`."""
    cfg = {k: v for k, v in CONFIGS[config].items() if k != "label"}
    compiled = backend == "compiled"
    backend = "taylor" if compiled else backend
    method = build_method("pinn", derivatives=backend, lbfgs=False, compile=compiled, **cfg)
    method.dtype, method.device = getattr(torch, dtype), device
    return method.trainer(build_problem("burgers"))


def deepxde_step(config: str, dtype: str) -> Callable[[], None]:
    """One Adam step of DeepXDE's own training loop on the configuration (its Burgers example:
    soft constraints on the same point counts, `FNN` with Glorot normal, Adam at 1e-3)."""
    os.environ.setdefault("DDE_BACKEND", "pytorch")
    try:
        import deepxde as dde
    except ImportError:
        sys.exit("step_time.py: the deepxde backend needs DeepXDE: pip install -e .[compare]")
    import numpy as np

    cfg = CONFIGS[config]
    dde.config.set_default_float(dtype)
    space = dde.geometry.Interval(-1, 1)
    geomtime = dde.geometry.GeometryXTime(space, dde.geometry.TimeDomain(0, 0.99))
    nu = 0.01 / np.pi

    def pde(x, y):
        dy_x = dde.grad.jacobian(y, x, i=0, j=0)
        dy_t = dde.grad.jacobian(y, x, i=0, j=1)
        dy_xx = dde.grad.hessian(y, x, i=0, j=0)
        return dy_t + y * dy_x - nu * dy_xx

    bc = dde.icbc.DirichletBC(geomtime, lambda x: 0, lambda _, on_b: on_b)
    ic = dde.icbc.IC(geomtime, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_i: on_i)
    n_points = cfg["n_points"]
    data = dde.data.TimePDE(geomtime, pde, [bc, ic], num_domain=cfg["n_collocation"],
                            num_boundary=n_points["bc"], num_initial=n_points["ic"],
                            num_test=64)  # fmt: skip
    net = dde.nn.FNN([2] + [cfg["width"]] * cfg["depth"] + [1], "tanh", "Glorot normal")
    model = dde.Model(data, net)
    model.compile("adam", lr=1e-3)
    model.train(iterations=1, display_every=10**9, verbose=0)  # sets up its train state
    state = model.train_state

    def step() -> None:  # the body of DeepXDE's `Model._train_sgd` loop, one iteration
        model._train_step(state.X_train, state.y_train, state.train_aux_vars)

    return step


def gemm_floor_ms(config: str, dtype: str, threads: int, device: torch.device) -> float:
    """Milliseconds of the step's GEMM arithmetic at the GEMM throughput measured now."""
    torch.set_num_threads(threads)
    cfg = CONFIGS[config]
    w, depth = cfg["width"], cfg["depth"]
    rows = 4  # u, u_x, u_t, u_xx: what Burgers' residual needs
    n_pde = cfg["n_collocation"]
    n_cond = 0 if cfg.get("hard_constraints", True) else sum(cfg["n_points"].values())
    per_point = 2 * ((depth - 1) * w * w + w)  # hidden layers and the output layer, one row
    flops = 3 * per_point * (rows * n_pde + n_cond)  # forward, and twice that backward
    a = torch.randn(rows * n_pde, w, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(w, w, dtype=a.dtype, device=device)
    for _ in range(20):
        a @ b
    reps, best = 50, math.inf
    for _ in range(5):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    rate = 2 * a.shape[0] * w * w / best  # FLOP/s of the stacked GEMM
    return 1e3 * flops / rate


def _cell(
    config: str, dtype: str, backend: str, threads: int, warmup: int, n: int, device: torch.device
) -> list:
    """Seconds of `n` single steps after `warmup` steps, in this process; on a GPU, from the
    moment all queued work is done until the step's own is."""
    torch.set_num_threads(threads)
    if backend == "deepxde":
        step = deepxde_step(config, dtype)
        for _ in range(warmup):
            step()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return times
    tr = trainer(config, backend, dtype, device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        tr.adam_step()
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        tr.adam_step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def step_ms(config: str, combos: list, threads: int, args: argparse.Namespace) -> dict:
    """Milliseconds of one Adam step per (dtype, backend): the median over all timed steps, and
    the smallest median of one round (one process).

    Every measurement runs in a fresh process (one trainer, as in a real run: the allocator
    state a previous configuration leaves behind can change step times by 2x), in `rounds`
    rounds that spread each combination over the whole measurement, so that a drift in machine
    speed affects all alike.
    """
    rounds: dict = {c: [] for c in combos}
    per_round = max(1, args.repeat // args.rounds)
    for _ in range(args.rounds):
        for dt, be in combos:
            cmd = [sys.executable, __file__, "--cell", config, dt, be, str(threads)]
            cmd += ["--warmup", str(args.warmup), "--repeat", str(per_round)]
            cmd += ["--device", args.device]
            if args.keep_freed_memory:
                cmd.append("--keep-freed-memory")
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rounds[dt, be].append(json.loads(out.strip().splitlines()[-1]))
    return {
        c: (
            1e3 * statistics.median([t for r in rs for t in r]),
            1e3 * min(statistics.median(r) for r in rs),
        )
        for c, rs in rounds.items()
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument(
        "--backends",
        nargs="+",
        default=["autograd", "taylor"],
        choices=["autograd", "taylor", "compiled", "deepxde"],
        help="compiled: taylor under torch.compile (warm-up steps absorb the compilation); "
        "deepxde: DeepXDE's own step, soft constraints (pip install -e .[compare])",
    )
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument(
        "--threads", nargs="+", type=int, default=None, help="default: torch's default, then 1"
    )
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=80, help="timed steps per cell")
    ap.add_argument("--rounds", type=int, default=4, help="fresh processes per cell")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    ap.add_argument("--floor", action="store_true", help="add the GEMM floor of each row")
    ap.add_argument("--plain", action="store_true", help="a plain-text table instead of rich")
    ap.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc mallopt: never trim the heap nor mmap large blocks (fewer page faults)",
    )
    ap.add_argument("--cell", nargs=4, help=argparse.SUPPRESS)  # config dtype backend threads
    args = ap.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ConfigError as e:  # not a device, or CUDA missing: one line, no traceback
        sys.exit(f"step_time.py: {e}")
    kept = args.keep_freed_memory and keep_freed_memory()
    if args.cell:  # one measurement, in a child process
        config, dt, be, n = args.cell
        print(json.dumps(_cell(config, dt, be, int(n), args.warmup, args.repeat, device)))
        return

    default_threads = torch.get_num_threads()
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine()
    )
    threads = args.threads or sorted({default_threads, 1}, reverse=True)
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    for n in threads:
        for config in args.configs:
            combos = [(dt, be) for dt in args.dtypes for be in args.backends]
            ms = step_ms(config, combos, n, args)
            for dt in args.dtypes:
                by_backend = {be: ms[dt, be] for be in args.backends}
                floor = gemm_floor_ms(config, dt, n, device) if args.floor else math.nan
                rows.append((config, CONFIGS[config]["label"], dt, n, by_backend, floor))

    ours = [b for b in args.backends if b != "deepxde"]
    header = ["config", "net/points", "dtype", "threads"] + [f"{b} ms" for b in args.backends]
    if "autograd" in args.backends and "taylor" in args.backends:
        header.append("speed-up")
    if "deepxde" in args.backends and ours:
        header.append("x deepxde")
    if args.floor:
        header += ["floor ms", "x floor"]
    table = []
    for config, label, dt, n, ms, floor in rows:
        cells = [config, label, dt, str(n)]
        cells += [f"{ms[b][0]:.2f} ({ms[b][1]:.2f})" for b in args.backends]
        best = min((ms[b][0] for b in ours), default=math.nan)
        if "speed-up" in header:
            cells.append(f"{ms['autograd'][0] / ms['taylor'][0]:.2f}x")
        if "x deepxde" in header:
            cells.append(f"{ms['deepxde'][0] / best:.2f}x")
        if args.floor:
            cells += [f"{floor:.2f}", f"{best / floor:.2f}x"]
        table.append(cells)
    title = (
        f"pinn ms/step on Burgers: median of {args.repeat} steps (best round's median); "
        f"torch {torch.__version__}, "
        f"{where}, {default_threads} default threads, "
        f"load average {load:.2f} at start{', glibc keeps freed memory' if kept else ''}"
    )
    if args.plain:
        widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
        print(title)
        for r in [header, ["-" * w for w in widths], *table]:
            print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i < 2 else "right")
    for r in table:
        t.add_row(*r)
    Console(width=max(100, Console().width)).print(t)


if __name__ == "__main__":
    main()
