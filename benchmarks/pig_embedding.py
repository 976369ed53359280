"""Seconds per PIG loss-and-gradient evaluation on Helmholtz, by derivative backend.

One evaluation is what L-BFGS does per line-search trial: the residual (a Laplacian) at every
collocation point, its mean square, and one backward pass to every parameter. Backends:

* `closed` (`derivatives=auto`): the embedding's values and derivatives as matmuls of the one
  Gaussian tensor with per-Gaussian coefficient columns, fused in cache-sized chunks and
  recomputed in the backward pass (`methods/gaussians.py`, `GaussianEmbedding`), then jets through
  the MLP.
* `autograd`: nested autograd through the same forward pass (the paper code's way), with the
  Gaussian tensor stored for the backward pass (chunked and recomputed above `max_elements`).

    .venv/bin/python benchmarks/pig_embedding.py                    # paper size, 2k and 10k points
    .venv/bin/python benchmarks/pig_embedding.py --points 10000 --threads 1 --dtype float32

Also prints the peak resident memory of each process. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch


def measure(backend: str, points: int, dtype: str, threads: int, repeat: int) -> dict:
    from bench.registry import build_method, build_problem

    torch.set_num_threads(threads)
    problem = build_problem("helmholtz")
    method = build_method("pig", n_collocation=points, derivatives=backend)
    method.dtype = getattr(torch, dtype)
    tr = method.trainer(problem)
    for _ in range(2):  # warm-up
        tr.total(tr.losses()).backward()
    t0 = time.perf_counter()
    for _ in range(repeat):
        tr.total(tr.losses()).backward()
    seconds = (time.perf_counter() - t0) / repeat
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"backend": tr.fields.backend, "seconds": seconds, "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--points", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--backends", nargs="+", default=["auto", "autograd"])
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:  # one cell, in a fresh process (peak memory is per process)
        backend, points = args.child.split(":")
        print(json.dumps(measure(backend, int(points), args.dtype, args.threads, args.repeat)))
        return
    print(f"PIG on helmholtz (4 x 800 Gaussians, 16 tanh units), {args.dtype}, "
          f"{args.threads} thread(s); seconds per loss-and-gradient evaluation")  # fmt: skip
    print(f"{'points':>8} {'backend':>9} {'s/eval':>8} {'peak MB':>8}")
    for points in args.points:
        for backend in args.backends:
            cmd = [sys.executable, __file__, "--child", f"{backend}:{points}"]
            cmd += ["--dtype", args.dtype, "--threads", str(args.threads)]
            cmd += ["--repeat", str(args.repeat)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{points:>8} {r['backend']:>9} {r['seconds']:>8.3f} {r['peak_rss_mb']:>8.0f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
