"""Lid-driven cavity reference solver: cost and grid convergence of the centreline extrema.

For each Reynolds number and each grid (cells per side) this prints the wall time of
`solve_cavity`, its Newton steps on the finest grid and final residual, and the extrema of u on
x = 1/2 and of v on y = 1/2. Every three consecutive grids (each twice as fine) give a
Richardson extrapolation: the observed order p = log2((f1 - f2) / (f2 - f3)), the limit
f3 + (f3 - f2) / (2^p - 1), and the finest grid's error estimate |f3 - limit|.

    .venv/bin/python benchmarks/cavity.py                       # Re 100 and 1000, default grids
    .venv/bin/python benchmarks/cavity.py --re 100 --grids 64 128 256

The default grids end at n = 512 (Re = 100) and n = 1024 (Re = 1000: about a minute, 4 GB).
Published values printed for comparison: Ghia, Ghia & Shin (1982) list values at their grid
nodes, not extrema, and are ~1-3% off converged solutions; the high-accuracy values (Marchi et al.
2009 at Re = 100, Botella & Peyret 1998 at Re = 1000) are quotes circulating in public codes,
not yet checked against the papers.
"""

from __future__ import annotations

import argparse
import math
import time

from problems.solvers.cavity import centreline_extrema, solve_cavity

KEYS = ("u_min", "y_u_min", "v_min", "x_v_min", "v_max", "x_v_max")
GRIDS = {100.0: [64, 128, 256, 512], 1000.0: [128, 256, 512, 1024]}
PUBLISHED = {
    100.0: {
        "Ghia 1982 (nodes)": {"u_min": -0.21090, "v_min": -0.24533, "v_max": 0.17527},
        "Marchi 2009 [unverified]": {"u_min": -0.2140424, "v_min": -0.2538030, "v_max": 0.1795728},
    },
    1000.0: {
        "Ghia 1982 (nodes)": {"u_min": -0.38289, "v_min": -0.51550, "v_max": 0.37095},
        "Botella-Peyret 1998 [unverified]": {
            "u_min": -0.3885698,
            "y_u_min": 0.1717,
            "v_min": -0.5270771,
            "x_v_min": 0.9092,
            "v_max": 0.3769447,
            "x_v_max": 0.1578,
        },
    },
}


def richardson(f1: float, f2: float, f3: float) -> tuple[float, float]:
    """Observed order and extrapolated limit from three grids refined by 2."""
    d12, d23 = f1 - f2, f2 - f3
    if d23 == 0 or d12 / d23 <= 1:
        return math.nan, math.nan
    p = math.log2(d12 / d23)
    return p, f3 + (f3 - f2) / (2**p - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--re", type=float, nargs="+", default=list(GRIDS))
    parser.add_argument("--grids", type=int, nargs="+", default=None)
    args = parser.parse_args()
    for re in args.re:
        grids = args.grids or GRIDS.get(re, [64, 128, 256])
        print(f"\nRe = {re:g}")
        print(
            f"{'n':>5} {'seconds':>8} {'steps':>5} {'residual':>9} "
            + " ".join(f"{k:>10}" for k in KEYS)
        )
        rows = []
        for n in grids:
            start = time.perf_counter()
            sol = solve_cavity(re, n)
            seconds = time.perf_counter() - start
            ext = centreline_extrema(sol)
            rows.append(ext)
            values = " ".join(f"{ext[k]:10.6f}" for k in KEYS)
            print(
                f"{n:5d} {seconds:8.2f} {sol.iterations:5d} {sol.residual:9.1e} {values}",
                flush=True,
            )
        for i in range(len(rows) - 2):
            print(f"Richardson from n = {grids[i]}, {grids[i + 1]}, {grids[i + 2]}:")
            for k in KEYS:
                p, limit = richardson(*(rows[i + j][k] for j in range(3)))
                err = abs(rows[i + 2][k] - limit)
                print(f"  {k:>8}: order {p:5.2f}  limit {limit:10.7f}  error estimate {err:.1e}")
        for source, values in PUBLISHED.get(re, {}).items():
            diffs = "  ".join(
                f"{k} {v:.7g} (finest - it: {rows[-1][k] - v:+.1e})" for k, v in values.items()
            )
            print(f"{source}: {diffs}")


if __name__ == "__main__":
    main()
