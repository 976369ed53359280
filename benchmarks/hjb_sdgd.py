"""Step time and memory of the PINN on `hjb` as the dimension grows, with and without SDGD.

One step is one Adam iteration of `pinn` (fresh collocation points every step, as in the SDGD
paper). The full Laplacian costs d second-derivative backward passes per step; SDGD samples B of
them. Each configuration runs in a fresh process, so that its peak RSS is its own:

    .venv/bin/python benchmarks/hjb_sdgd.py                       # d = 100, 1000, 10000
    .venv/bin/python benchmarks/hjb_sdgd.py --dims 1000 --sdgd 0 16 --steps 5

Columns: ms/step (median after one warm-up step), the peak RSS of the process, how much the
RSS grew while stepping (the training graph; the inputs and the net are allocated before), and
the step's floor: the first layer's three `[N, d] x [d, width]` products that any PINN step
on d inputs does (the forward pass, the input gradient for |grad u|, the weight gradient), at
the throughput of that product measured in the same process (the hidden layers, d-free, are
left out), and the step time over it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import psutil
import torch

from bench.registry import build_method, build_problem


def _floor_seconds(n: int, d: int, width: int) -> float:
    """Seconds of three float64 `[n, d] x [d, width]` products at the rate measured now."""
    a = torch.randn(n, d, dtype=torch.float64)
    w = torch.randn(d, width, dtype=torch.float64)
    a @ w
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ w
        best = min(best, time.perf_counter() - t0)
    return 3 * best


def _cell(d: int, dims: int, args: argparse.Namespace) -> dict:
    if args.memory_limit_gb:  # fail cleanly (an allocation error) instead of swapping the box
        limit = int(args.memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(args.threads)
    problem = build_problem("hjb", d=d, n_eval=10, n_collocation=args.points)
    method = build_method(
        "pinn",
        width=args.width,
        depth=args.depth,
        lbfgs=False,
        derivatives=args.derivatives,
        resample_every=1,
        sdgd_dims=dims,
        sdgd_variant=args.variant,
    )
    tr = method.trainer(problem)
    rss0 = psutil.Process().memory_info().rss
    tr.adam_step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        tr.adam_step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "ms": 1e3 * statistics.median(times),
        "floor_ms": 1e3 * _floor_seconds(args.points, d + 1, args.width),
        "peak_mb": peak / 2**20,
        "grew_mb": max(0, peak - rss0) / 2**20,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dims", nargs="+", type=int, default=[100, 1000, 10000])
    ap.add_argument("--sdgd", nargs="+", type=int, default=[0, 16], help="B; 0 = full Laplacian")
    ap.add_argument("--variant", type=int, default=2)
    ap.add_argument(
        "--derivatives",
        default="auto",
        choices=["auto", "autograd"],
        help="auto (pinn's default): the sampled Laplacian from one jet of the sampled axes; "
        "autograd: one backward pass per sampled axis (the paper's)",
    )
    ap.add_argument("--points", type=int, default=100, help="collocation points per step")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument(
        "--memory-limit-gb", type=float, default=16.0, help="address-space cap per cell (0: none)"
    )
    ap.add_argument("--cell", nargs=2, type=int, help=argparse.SUPPRESS)  # d, B
    args = ap.parse_args(argv)
    if args.cell:
        print(json.dumps(_cell(*args.cell, args)))
        return
    print(
        f"pinn on hjb: {args.width}x{args.depth} tanh, {args.points} fresh points per step, "
        f"SDGD variant {args.variant}, derivatives {args.derivatives}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {args.threads} threads"
    )
    print(
        f"{'d':>6} {'B':>6} {'ms/step':>10} {'peak RSS MB':>12} {'grew MB':>9} "
        f"{'floor ms':>9} {'x floor':>8}"
    )
    passthrough = [
        f"--{k.replace('_', '-')}={getattr(args, k)}"
        for k in (
            "variant",
            "derivatives",
            "points",
            "width",
            "depth",
            "steps",
            "threads",
            "memory_limit_gb",
        )
    ]
    for d in args.dims:
        for b in args.sdgd:
            cmd = [sys.executable, __file__, "--cell", str(d), str(b), *passthrough]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                why = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][:120]
                print(f"{d:>6} {b or 'full':>6}  failed: {why}", flush=True)
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(
                f"{d:>6} {b or 'full':>6} {r['ms']:>10.1f} {r['peak_mb']:>12.0f} "
                f"{r['grew_mb']:>9.0f} {r['floor_ms']:>9.1f} {r['ms'] / r['floor_ms']:>8.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
