"""Seconds to generate operator datasets, per problem, scale and split.

Every run uses a fresh temporary cache directory (`PHYSBENCH_CACHE`), so the data are always
generated, never loaded; the directory is deleted afterwards.

    .venv/bin/python benchmarks/operator_data.py                          # ks, burgers_op
    .venv/bin/python benchmarks/operator_data.py --problems ks --scales standard --threads 1
    .venv/bin/python benchmarks/operator_data.py --scales smoke standard paper

The issue's target: `ks` at `standard` (1,000 training trajectories) within the standard
budget's 170 s on this CPU. Timings on a shared machine drift; run it on an idle one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=["ks", "burgers_op"])
    parser.add_argument("--scales", nargs="+", default=["smoke", "standard"])
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--threads", type=int, default=1, help="BLAS/FFT/torch threads")
    args = parser.parse_args()

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch  # after the thread variables, so that they apply

    torch.set_num_threads(args.threads)
    from bench.registry import build_problem

    cache = tempfile.mkdtemp(prefix="physbench-opdata-")
    os.environ["PHYSBENCH_CACHE"] = cache
    cpu = platform.processor() or platform.machine()
    print(f"# {cpu}, {args.threads} thread(s), cache {cache}")
    head = ("problem", "scale", "split", "samples", "seconds", "ms/sample")
    print(f"{head[0]:<12} {head[1]:<9} {head[2]:<6} {head[3]:>8} {head[4]:>9} {head[5]:>10}")
    try:
        for name in args.problems:
            problem = build_problem(name)
            for scale in args.scales:
                total_n, total_s = 0, 0.0
                for split in args.splits:
                    t0 = time.perf_counter()
                    data = problem.operator_data(split, scale)
                    seconds = time.perf_counter() - t0
                    if data.meta.get("cached"):
                        raise RuntimeError(f"{name}/{scale}/{split} came from a cache")
                    n = len(data.outputs)
                    total_n, total_s = total_n + n, total_s + seconds
                    per = 1e3 * seconds / n
                    print(f"{name:<12} {scale:<9} {split:<6} {n:>8} {seconds:>9.2f} {per:>10.2f}")
                per = 1e3 * total_s / total_n
                print(f"{name:<12} {scale:<9} {'all':<6} {total_n:>8} {total_s:>9.2f} {per:>10.2f}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
