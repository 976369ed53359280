"""Throughput of the 2-D periodic vorticity solver (`problems/solvers/ns_spectral.py`).

(a) Simulated steps per second for a batch of fields (default 32 at 64^2, dt = 1e-4), per
    scheme. A step of `heun` costs two advection evaluations, `euler` and `cnab2` one.
(b) Wall time to generate FNO-style operator data: `--n-traj` GRF initial fields and their
    trajectories of `--snapshots` snapshots to `--t-final` (FNO nu = 1e-3 set: 100 fields at
    64^2, T = 50, a snapshot every time unit, dt = 1e-4, i.e. 500,000 steps). Unless
    `--measure-t` >= `--t-final`, only the first `--measure-t` time units are simulated and the
    full time is EXTRAPOLATED linearly in the number of steps (the cost per step does not
    depend on the state); the output says which.

    .venv/bin/python benchmarks/ns_vorticity.py                      # CPU, both parts
    .venv/bin/python benchmarks/ns_vorticity.py --device cuda --measure-t 50   # full run on GPU
    .venv/bin/python benchmarks/ns_vorticity.py --part a --threads 1 --schemes heun euler cnab2

All in float64 (the FNO generator ran in float32). Timings on a shared machine drift; run it on
an otherwise idle one.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch

from problems.solvers.ns_spectral import SCHEMES, fno_forcing, grf, solve_vorticity


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(
    scheme: str, batch: int, s: int, steps: int, dt: float, nu: float, device: torch.device
) -> float:
    """Simulated steps per second of `solve_vorticity` on a GRF batch (after a warm-up)."""
    w0 = grf(batch, s, seed=0, device=device)
    f = fno_forcing(s, device=device)
    solve_vorticity(w0, f, nu, 10 * dt, 1, dt=dt, scheme=scheme)  # warm-up (plans, kernels)
    _sync(device)
    t0 = time.perf_counter()
    solve_vorticity(w0, f, nu, steps * dt, 1, dt=dt, scheme=scheme)
    _sync(device)
    return steps / (time.perf_counter() - t0)


def generation_time(args: argparse.Namespace, scheme: str, device: torch.device) -> dict:
    """Seconds to sample `n_traj` GRF fields and solve them in batches of `traj_batch`, over
    `measure_t` (or the full `t_final`) time units; and the extrapolation to `t_final`."""
    steps_full = round(args.t_final / args.dt)
    interval = args.t_final / args.snapshots
    if args.measure_t >= args.t_final:
        t_run, n_snap = args.t_final, args.snapshots
    elif args.measure_t >= interval:
        n_snap = int(args.measure_t / interval + 1e-9)
        t_run = n_snap * interval
    else:
        t_run, n_snap = args.measure_t, 1
    f = fno_forcing(args.s, device=device)
    solve_vorticity(grf(1, args.s, device=device), f, args.nu, 10 * args.dt, 1, dt=args.dt)
    _sync(device)
    t0 = time.perf_counter()
    done, seed = 0, 0
    while done < args.n_traj:
        n = min(args.traj_batch, args.n_traj - done)
        w0 = grf(n, args.s, seed=seed, device=device)
        _, w = solve_vorticity(w0, f, args.nu, t_run, n_snap, dt=args.dt, scheme=scheme)
        w.cpu()
        done, seed = done + n, seed + 1
    _sync(device)
    seconds = time.perf_counter() - t0
    steps_run = round(t_run / args.dt)
    return {
        "t_run": t_run,
        "steps_run": steps_run,
        "seconds": seconds,
        "full_seconds": seconds * steps_full / steps_run,
        "extrapolated": steps_run < steps_full,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    ap.add_argument("--part", choices=["a", "b", "both"], default="both")
    ap.add_argument("--schemes", nargs="+", default=["heun", "euler"], choices=list(SCHEMES))
    ap.add_argument("--s", type=int, default=64, help="grid size")
    ap.add_argument("--dt", type=float, default=1e-4)
    ap.add_argument("--nu", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=32, help="(a) fields per batch")
    ap.add_argument("--steps", type=int, default=200, help="(a) timed steps")
    ap.add_argument("--rounds", type=int, default=3, help="(a) measurements per scheme")
    ap.add_argument("--n-traj", type=int, default=100, help="(b) trajectories")
    ap.add_argument("--traj-batch", type=int, default=100, help="(b) trajectories per solve")
    ap.add_argument("--t-final", type=float, default=50.0, help="(b) final time")
    ap.add_argument("--snapshots", type=int, default=50, help="(b) snapshots per trajectory")
    ap.add_argument(
        "--measure-t",
        type=float,
        default=0.2,
        help="(b) time units actually simulated; the rest is extrapolated (>= t-final: full run)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(
        f"ns_vorticity: torch {torch.__version__}, device {device} ({name}), "
        f"{torch.get_num_threads()} CPU threads, float64, load average {load:.2f} at start"
    )

    if args.part in ("a", "both"):
        print(
            f"(a) batch {args.batch} x {args.s}^2, dt = {args.dt}, {args.steps} timed steps; "
            f"best (median) of {args.rounds} interleaved rounds"
        )
        rates: dict[str, list[float]] = {scheme: [] for scheme in args.schemes}
        for _ in range(args.rounds):  # interleaved, so that a drift in speed affects all alike
            for scheme in args.schemes:
                rates[scheme].append(
                    steps_per_second(
                        scheme, args.batch, args.s, args.steps, args.dt, args.nu, device
                    )
                )
        for scheme, r in rates.items():
            best, med = max(r), statistics.median(r)
            print(
                f"    {scheme:6s} {best:9.1f} ({med:7.1f}) steps/s  "
                f"({best * args.batch:9.0f} field-steps/s, {1e3 / best:7.2f} ms/step)"
            )

    if args.part in ("b", "both"):
        steps_full = round(args.t_final / args.dt)
        print(
            f"(b) {args.n_traj} trajectories x {args.snapshots} snapshots at {args.s}^2, "
            f"nu = {args.nu}, T = {args.t_final} ({steps_full} steps of {args.dt}), "
            f"batches of {args.traj_batch}"
        )
        for scheme in args.schemes:
            r = generation_time(args, scheme, device)
            how = (
                f"EXTRAPOLATED from {r['steps_run']} steps (T = {r['t_run']:g}) in "
                f"{r['seconds']:.1f} s"
                if r["extrapolated"]
                else "measured (full run)"
            )
            print(
                f"    {scheme:6s} {r['full_seconds']:10.0f} s = {r['full_seconds'] / 3600:6.2f} h"
                f"  [{how}]"
            )


if __name__ == "__main__":
    main()
