"""Building blocks for problems' hard-constraint trial functions and condition samplers.

Trial functions are expressions in the syntax of the PINN's `output_transform` (see
`problems/base.py`). For Dirichlet data on a rectangle, `rectangle_trial` builds

    field = lift(x, y) + D(x, y) * N(x, y),

the data's transfinite (Coons) lifting plus a distance-like function that vanishes on the
constrained sides times the raw net output `N`. The lifting uses the data on the boundary only
(never the interior solution): it is the bilinearly blended interpolation of the four edges,
exact on every edge when the data are continuous at the corners.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from problems.base import Box, Condition
from problems.fields import Fields

__all__ = ["SIDES", "periodic_conditions", "rectangle_trial", "sample_boundary", "substitute"]

SIDES = ("lo0", "hi0", "lo1", "hi1")  # the four sides of a rectangle: axis 0 low/high, axis 1


_MATH = {name: getattr(math, name) for name in ("exp", "log", "sin", "cos", "tanh", "sqrt", "pi")}
_MATH["abs"] = abs


def substitute(expr: str, values: dict[str, float]) -> str:
    """`expr` (parenthesised) with each name in `values` replaced by that number, and every
    subexpression left without variables folded to a number (so that no function of the
    transform syntax is ever called on a plain number)."""

    class _Fold(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            if isinstance(node, ast.Name) and node.id in values:
                return ast.copy_location(ast.Constant(float(values[node.id])), node)
            if isinstance(node, ast.expr) and not isinstance(node, ast.Constant):
                names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                if names <= set(values) | set(_MATH):
                    code = compile(
                        ast.fix_missing_locations(ast.Expression(node)), "<data>", "eval"
                    )
                    scope = {**_MATH, **{k: float(v) for k, v in values.items()}}
                    value = eval(code, {"__builtins__": {}}, scope)  # noqa: S307
                    if isinstance(value, int | float):  # not a bare function name
                        return ast.copy_location(ast.Constant(float(value)), node)
            return self.generic_visit(node)

    tree = _Fold().visit(ast.parse(expr, mode="eval"))
    return f"({ast.unparse(ast.fix_missing_locations(tree))})"


def rectangle_trial(box: Box, field: str, data: str, sides: Sequence[str] = SIDES) -> str:
    """A trial expression for `field` that equals `data` on the given sides of the 2-D `box`.

    Arguments:
        box: the rectangle; its two axes are the first two of the problem's axes.
        field: the raw net output's name, multiplied by the distance function.
        data: the boundary data as one expression in the axes (only its values on the
            constrained sides are used; it must be continuous at constrained corners).
        sides: all four `SIDES` (Coons lifting, D = 16 s(1-s) r(1-r) in unit coordinates), or a
            single side (lifting = data on that side, D = distance to it over the box width).
    """
    (a0, (lo0, hi0)), (a1, (lo1, hi1)) = list(box.bounds.items())[:2]
    s = f"(({a0} - {lo0!r}) / {hi0 - lo0!r})"  # unit coordinates
    r = f"(({a1} - {lo1!r}) / {hi1 - lo1!r})"
    g = {
        "lo0": substitute(data, {a0: lo0}),
        "hi0": substitute(data, {a0: hi0}),
        "lo1": substitute(data, {a1: lo1}),
        "hi1": substitute(data, {a1: hi1}),
    }
    sides = tuple(sides)
    unknown = [side for side in sides if side not in SIDES]
    if unknown:
        raise ValueError(f"unknown rectangle sides {unknown}; choose from {SIDES}")
    if set(sides) == set(SIDES):
        corner = {
            (i, j): substitute(data, {a0: x0, a1: x1})
            for i, x0 in enumerate((lo0, hi0))
            for j, x1 in enumerate((lo1, hi1))
        }
        lift = (
            f"(1 - {s}) * {g['lo0']} + {s} * {g['hi0']} + (1 - {r}) * {g['lo1']} + {r} * {g['hi1']}"
            f" - ((1 - {s}) * (1 - {r}) * {corner[0, 0]} + {s} * (1 - {r}) * {corner[1, 0]}"
            f" + (1 - {s}) * {r} * {corner[0, 1]} + {s} * {r} * {corner[1, 1]})"
        )
        dist = f"16 * {s} * (1 - {s}) * {r} * (1 - {r})"
    elif len(sides) == 1:
        side = sides[0]
        lift = g[side]
        dist = {"lo0": s, "hi0": f"(1 - {s})", "lo1": r, "hi1": f"(1 - {r})"}[side]
    else:
        raise ValueError(f"rectangle_trial supports all four sides or one side, got {sides}")
    return f"{lift} + {dist} * {field}"


def sample_boundary(
    box: Box, n: int, generator: torch.Generator | None = None, sides: Sequence[str] = SIDES
) -> Tensor:
    """`n` points uniform by length on the given sides of the 2-D `box` (its first two axes;
    further axes, e.g. time, uniform in their range)."""
    (a0, (lo0, hi0)), (a1, (lo1, hi1)) = list(box.bounds.items())[:2]
    length = {"lo0": hi1 - lo1, "hi0": hi1 - lo1, "lo1": hi0 - lo0, "hi1": hi0 - lo0}
    weights = torch.tensor([length[s] for s in sides], dtype=torch.float64)
    which = torch.multinomial(weights / weights.sum(), n, replacement=True, generator=generator)
    pts = box.sample(n, generator)
    fix = {"lo0": (0, lo0), "hi0": (0, hi0), "lo1": (1, lo1), "hi1": (1, hi1)}
    for i, side in enumerate(sides):
        col, value = fix[side]
        pts[which == i, col] = value
    return pts


def periodic_conditions(
    box: Box,
    axis: str,
    fields: Sequence[str],
    n_points: int,
    derivative: bool = True,
    name: str | None = None,
) -> list[Condition]:
    """Periodicity in `axis` as loss terms on pairs of points: the first half of a sample on the
    low face, the second half on the high face at the same other coordinates (an odd last point
    is unused). `bc_<axis>`: values differ; with `derivative`, `bc_<axis>_d`: the normal
    derivatives differ (what a second-order equation needs)."""
    j = box.axes.index(axis)
    lo, hi = box.bounds[axis]
    label = name or f"bc_{axis}"

    def sample(n: int, generator: torch.Generator | None = None) -> Tensor:
        m = n // 2
        pts = box.sample(n, generator)
        pts[m : 2 * m] = pts[:m]
        pts[:m, j] = lo
        pts[m : 2 * m, j] = hi
        if n % 2:
            pts[-1, j] = lo
        return pts

    def jump(*axes: str):
        def residual(f: Fields) -> Tensor:
            m = f.n // 2
            vals = torch.stack([f.d(name, *axes) for name in fields], dim=1)
            if m == 0:  # a single point has no partner: a zero residual with a graph
                return vals - vals
            return vals[:m] - vals[m : 2 * m]

        return residual

    conds = [Condition(label, sample, jump(), n_points)]
    if derivative:
        conds.append(Condition(f"{label}_d", sample, jump(axis), n_points))
    return conds
