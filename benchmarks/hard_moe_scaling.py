"""`hard_moe`: training step time and peak memory against the number of experts, at a fixed
total number of constrained points (PI-HC-MoE's scaling claim).

One step is what `hard_moe` does per optimiser step: the FNO forward pass, the linear terms of
every basis function, the batched Levenberg–Marquardt solve of every expert, the implicit
gradient, one backward pass and one Adam update. The batch, basis count, horizon and the
constrained points are the same for every expert count, so only the decomposition differs.

    .venv/bin/python benchmarks/hard_moe_scaling.py                      # diffusion_sorption
    .venv/bin/python benchmarks/hard_moe_scaling.py --problem ns_vorticity --horizon 10 \\
        --batch 4 --scale standard
    .venv/bin/python benchmarks/hard_moe_scaling.py --device cuda        # on a GPU
    .venv/bin/python benchmarks/hard_moe_scaling.py --problem burgers --points 8000
                                    # the MLP backbone (a single-instance problem)

On a single-instance problem a step is the MLP backbone's (methods/hard_mlp.py): fresh points
(`--points` interior points, the conditions' defaults), the basis functions' derivatives, the
experts' solves, the implicit gradient, backward and Adam; the experts split the space axes.

Each expert count runs in a fresh process: `--warmup` steps, then `--steps` timed steps; the
table shows the median ms/step, the mean LM iterations, and the peak memory of the steps
(CPU: the process's peak resident set minus its resident set before the timed steps, so
the data and the model are not counted; CUDA: torch's peak allocated memory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from bench.registry import build_method, build_problem
from methods.base import Budget
from methods.least_squares import residual_rms


def _rss_kb() -> int:
    """The current resident set in KiB (Linux), as ru_maxrss counts it."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def one(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    problem = build_problem(args.problem)
    extra = {} if args.horizon is None else {"horizon": args.horizon}
    m = build_method("hard_moe", basis=args.basis, experts=args.one, batch_size=args.batch, **extra)
    m.device, m.dtype, m.seed = device, torch.float32, 0
    if "operator_data" not in problem.capabilities:
        return one_mlp(args, m, problem)
    model, train, _, part, dt = m._setup(problem, Budget(name=args.scale, steps=10))
    frames = torch.as_tensor(train.outputs[: args.batch], dtype=torch.float64, device=device)
    inputs = torch.as_tensor(train.inputs[: args.batch], dtype=torch.float64, device=device)
    start = frames[:, problem.context - 1]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    fraction = 1.0 if args.points is None else args.points / part.count()

    def step() -> float:
        sub = part.subsample(fraction, gen)
        _, res, stats = m.shot(model, problem, sub, start, inputs, dt)
        loss = residual_rms(res, sub).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return stats["lm_iters"]

    points = part.count() if args.points is None else args.points
    return _measure(args, device, step, part.n_experts, list(part.blocks), points)


def _measure(
    args: argparse.Namespace,
    device: torch.device,
    step: Callable[[], float],
    experts: int,
    blocks: list[int],
    points: int,
) -> dict:
    """`--warmup` steps, then `--steps` timed ones: median ms, mean LM iterations, peak MB."""
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _rss_kb()
    times, iters = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        iters.append(step())
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return {
        "experts": experts,
        "blocks": blocks,
        "points": points,
        "points_per_expert": points / experts,
        "ms_per_step": 1000 * statistics.median(times),
        "lm_iters": statistics.mean(iters),
        "peak_mb": peak,
    }


def one_mlp(args: argparse.Namespace, m: object, problem: object) -> dict:
    """The same measurement for the MLP backbone on a single-instance problem."""
    from methods.hard_mlp import Trainer
    from methods.least_squares import implicit_solution

    m.points = args.points  # type: ignore[attr-defined]
    tr = Trainer(m, problem, Budget(name="custom", steps=10))  # type: ignore[arg-type]
    opt = torch.optim.Adam(tr.net.parameters(), lr=1e-3)

    def step() -> float:
        system = tr.system(tr.gen)
        sol = tr.solve(system)
        w = implicit_solution(system.residuals, sol.w, m.ridge, sol.hess)  # type: ignore[attr-defined]
        loss = system.residuals(w).square().sum().div(tr.experts.n).sqrt()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(sol.iterations)

    device = torch.device(args.device)
    return _measure(args, device, step, tr.experts.n, list(tr.experts.blocks), sum(tr.sizes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="diffusion_sorption")
    ap.add_argument("--experts", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--basis", type=int, default=16)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--horizon", type=int, default=None)
    ap.add_argument("--points", type=int, default=None, help="constrained points per step")
    ap.add_argument("--scale", default="smoke", help="data scale the training samples come from")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args)))
        return
    print(
        f"hard_moe on {args.problem}: basis {args.basis}, batch {args.batch}, "
        f"{args.threads} thread(s), {args.device} ({platform.processor() or platform.machine()})"
    )
    head = ("experts", "blocks", "points/expert", "ms/step", "LM iters", "peak MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (8, 12, 14, 9, 9, 9))))
    for e in args.experts:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", str(e)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode:
            print(f"{e:>8}  failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['experts']:>8} {str(r['blocks']):>12} {r['points_per_expert']:>14.0f} "
            f"{r['ms_per_step']:>9.0f} {r['lm_iters']:>9.1f} {r['peak_mb']:>9.0f}"
        )


if __name__ == "__main__":
    main()
