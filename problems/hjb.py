"""High-dimensional terminal-value problems on [0, T] x R^d (SDGD: Hu et al. 2024; FBSNN).

- `hjb`: u_t + Δu - λ|∇u|² = 0, u(T, x) = ln((1 + |x|²)/2) (Han, Jentzen & E, PNAS 2018; SDGD's
  "HJB-Log"). Reference: the Hopf–Cole formula, one 1-D quadrature per point
  (`problems/solvers/hjb_quadrature.py`), at any (t, x).
- `hjb_lin`: u_t + Δu - (1/d) Σ_i |u_{x_i}|^c = -2, u(T, x) = Σ_i x_i; exact u = Σ_i x_i + T - t
  (SDGD v1 "HJB-Lin"; the STDE code's `HJB_LIN`).
- `bsb`: Black–Scholes–Barenblatt, u_t + (σ²/2) Σ_i x_i² u_{x_i x_i} - r (u - x·∇u) = 0,
  u(T, x) = |x|²; exact u = exp((r + σ²)(T - t)) |x|² (Raissi's FBSNN `BlackScholesBarenblatt100D`).

Axes are ("x0", ..., "x{d-1}", "t"), one field "u". Space is all of R^d: collocation, terminal and
evaluation points are drawn from x ~ N(0, I_d), t ~ U[0, T] (t = T on the terminal condition), as
in the SDGD and STDE codes. The `domain` box, x_i in [-3, 3], is only the scale that nets
normalise their inputs with; it is not a boundary and carries no condition.

The evaluation set is `n_eval` points of that law from numpy's `default_rng(eval_seed)` (t first,
then x), as in the SDGD code's test set. It holds `n_eval x (d + 1)` float64 coordinates, so
`n_eval` must shrink as d grows (capped at `MAX_EVAL_ENTRIES` entries). The papers' quantity of
interest is scored apart (`points_of_interest`): u(0, 0) (Han, Jentzen & E), or u(0, X0) for
`bsb` (FBSNN, X0 = (1, 0.5, 1, ...)). In high dimensions these points lie far from where the law
puts its mass (|x|^2 is about d), so inside rel_l2 one extrapolated point would outweigh the rest.

`trial` is u = g(x) + (T - t) N, exact at t = T, as in the SDGD code; g enters it through the
trial inputs |x|^2 and sum_i x_i.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

from problems.base import (
    Box,
    Condition,
    ConfigError,
    Problem,
    Reference,
    TrialInput,
    check_int,
    check_real,
)
from problems.fields import Fields
from problems.solvers.hjb_quadrature import hjb_log_u

__all__ = ["BlackScholesBarenblatt", "HJB", "HJBLin", "MAX_EVAL_ENTRIES", "X_SCALE"]

X_SCALE = 3.0
"""Half-width of the normalisation box in each x_i (three standard deviations of N(0, 1))."""

MAX_EVAL_ENTRIES = 20_000_000
"""Most coordinates in the evaluation set, n_eval x (d + 1): 160 MB of float64."""


class _TerminalValueProblem(Problem):
    """Shared set-up: axes, sampling, the terminal condition and the evaluation set.

    Subclasses define `terminal(x)` (g on a `[N, d]` tensor) and `terminal_expr` (g as a trial
    expression), `residual`, and `_solution(x, t)` on numpy arrays.
    """

    fields = ("u",)
    # the CI smoke grid: 64 collocation points (default 256) and 64 terminal ones (128); at
    # d = 100 each collocation point carries 1 + 2d derivative rows through the net
    smoke: ClassVar[dict[str, Any]] = {"n_collocation": 64, "n_terminal": 64}

    def __init__(
        self,
        d: int,
        T: float,
        n_collocation: int,
        n_terminal: int,
        n_eval: int,
        eval_seed: int,
        **extra: float,
    ) -> None:
        d = check_int("d", d)
        T = check_real("T", T, 0.0)
        n_collocation = check_int("n_collocation", n_collocation)
        n_terminal = check_int("n_terminal", n_terminal)
        n_eval = check_int("n_eval", n_eval)
        eval_seed = check_int("eval_seed", eval_seed, minimum=0)
        if n_eval * (d + 1) > MAX_EVAL_ENTRIES:
            raise ConfigError(
                f"n_eval * (d + 1) must be <= {MAX_EVAL_ENTRIES:_} (the evaluation set's float64 "
                f"coordinates); got n_eval={n_eval}, d={d}: lower n_eval to "
                f"{MAX_EVAL_ENTRIES // (d + 1)} or less"
            )
        super().__init__(
            d=d,
            T=T,
            **extra,
            n_collocation=n_collocation,
            n_terminal=n_terminal,
            n_eval=n_eval,
            eval_seed=eval_seed,
        )
        self.d, self.T = d, T
        self.n_collocation, self.n_terminal = n_collocation, n_terminal
        self.n_eval, self.eval_seed = n_eval, eval_seed
        self.space = tuple(f"x{i}" for i in range(d))
        self.axes = (*self.space, "t")
        self.domain = Box({**{a: (-X_SCALE, X_SCALE) for a in self.space}, "t": (0.0, T)})

    # -- sampling ---------------------------------------------------------------------------
    spread: float = 0.0
    """Collocation variance added per unit of t (see `sample_interior`); 0: x ~ N(0, I_d)."""

    def _draw(self, n: int, generator: torch.Generator | None, t: float | None) -> Tensor:
        x = torch.randn(n, self.d, generator=generator, dtype=torch.float64)
        if t is None:
            tt = self.T * torch.rand(n, 1, generator=generator, dtype=torch.float64)
            if self.spread:
                v = torch.rand(n, 1, generator=generator, dtype=torch.float64)
                x *= torch.sqrt(1 + self.spread * v * tt)
        else:
            tt = torch.full((n, 1), t, dtype=torch.float64)
        return torch.cat([x, tt], dim=1)

    def sample_interior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`[n, d + 1]` collocation points: t ~ U[0, T] and x ~ N(0, I_d) (space is unbounded),
        or with `spread` s > 0, x ~ N(0, (1 + s v t) I_d), v ~ U[0, 1]: at time t, the
        variances from the evaluation law's to the one that the diffusion reaches from it by
        t (see `HJB`)."""
        return self._draw(n, generator, None)

    def conditions(self) -> list[Condition]:
        """`tc`: u - g(x) at t = T, x ~ N(0, I_d)."""

        def sample_tc(n: int, generator: torch.Generator | None = None) -> Tensor:
            return self._draw(n, generator, self.T)

        def tc(f: Fields) -> Tensor:
            return (f["u"] - self.terminal(f.points[:, : self.d]))[:, None]

        return [Condition("tc", sample_tc, tc, self.n_terminal)]

    def terminal(self, x: Tensor) -> Tensor:
        """g(x) for `[N, d]` points, shape `[N]`."""
        raise NotImplementedError

    # -- hard constraint ----------------------------------------------------------------------
    terminal_expr: ClassVar[str]
    """g as a trial expression over the trial inputs `r2` = |x|^2 and `xsum` = sum_i x_i."""

    def trial(self) -> dict[str, str]:
        """u = g(x) + (T - t) N: the terminal condition holds exactly (SDGD's HJB code does
        the same with T = 1)."""
        return {"u": f"({self.terminal_expr}) + (T - t) * u"}

    def trial_inputs(self) -> dict[str, TrialInput]:
        """`r2` = |x|^2 and `xsum` = sum_i x_i (t, the last axis, does not enter)."""
        d = self.d

        def space(g: Tensor) -> Tensor:
            g[:, d:] = 0.0
            return g

        return {
            "r2": TrialInput(
                value=lambda p: p[:, :d].square().sum(dim=1),
                gradient=lambda p: space(2 * p),
                second=lambda p, i, j: 2.0 if i == j < d else 0.0,
            ),
            "xsum": TrialInput(
                value=lambda p: p[:, :d].sum(dim=1),
                gradient=lambda p: space(torch.ones_like(p)),
                second=lambda p, i, j: 0.0,
            ),
        }

    # -- reference --------------------------------------------------------------------------
    reference_version = 2  # 2: the anchors left the evaluation set (`points_of_interest`)

    def points_of_interest(self) -> dict[str, np.ndarray]:
        """u(0, 0): the quantity Han, Jentzen & E report."""
        return {"origin": np.zeros((1, self.d + 1))}

    def evaluation_points(self) -> np.ndarray:
        """`n_eval` points with t ~ U[0, T], x ~ N(0, I_d) (seeded)."""
        rng = np.random.default_rng(self.eval_seed)
        t = rng.uniform(0.0, self.T, size=(self.n_eval, 1))
        x = rng.standard_normal((self.n_eval, self.d))
        return np.concatenate([x, t], axis=1)

    def _solution(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def exact(self, points: np.ndarray) -> np.ndarray:
        """The solution `[M, 1]` at `points` `[M, d + 1]` (columns x0..x{d-1}, t; 0 <= t <= T)."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != self.d + 1:
            raise ValueError(f"expected points of shape [M, {self.d + 1}], got {points.shape}")
        t = points[:, -1]
        if np.any(t > self.T):
            raise ValueError(f"the solution is defined for t <= T = {self.T}")
        return self._solution(points[:, :-1], t)[:, None]

    def _compute_reference(self) -> Reference:
        points = self.evaluation_points()
        return Reference(points, self.exact(points), exact=self.exact)


class HJB(_TerminalValueProblem):
    """u_t + Δu - λ|∇u|² = 0 on [0, T) x R^d, u(T, x) = ln((1 + |x|²)/2).

    The solution at (t, x) is set by g where the diffusion √2 W carries x by T: |x|² grows
    by about 2d(T - t). The evaluation law puts every point on the shell |x|² ≈ d, and there
    g + 2(T - t) satisfies the PDE to within about 1/d while it is wrong by up to ln(1 + 2T)
    away from T, so collocation points from the evaluation law alone (the SDGD code's) cannot
    tell it from the solution once d is large. `collocation: forward` (the default) spreads
    them over the variances the diffusion reaches, 1 to 1 + 2t at time t
    (`sample_interior`); `normal` is the SDGD code's N(0, I_d).

    Arguments:
        d: space dimension.
        T: terminal time (> 0).
        lam: the control cost λ (> 0); 1 in Han–Jentzen–E and SDGD.
        n_collocation, n_terminal: default numbers of interior and terminal points.
        n_eval: random evaluation points.
        eval_seed: seed of the evaluation set.
        collocation: `forward` or `normal`, the law of the collocation points (above).
    """

    name = "hjb"

    reference_keys = ("d", "T", "lam", "n_eval", "eval_seed")

    def __init__(
        self,
        d: int = 100,
        T: float = 1.0,
        lam: float = 1.0,
        n_collocation: int = 256,
        n_terminal: int = 128,
        n_eval: int = 10_000,
        eval_seed: int = 0,
        collocation: Literal["forward", "normal"] = "forward",
    ) -> None:
        lam = check_real("lam", lam, 0.0)
        super().__init__(
            d, T, n_collocation, n_terminal, n_eval, eval_seed, lam=lam, collocation=collocation
        )
        self.lam = lam
        self.spread = 2.0 if collocation == "forward" else 0.0  # the variance rate of √2 W

    def residual(self, f: Fields) -> Tensor:
        """u_t + Δu - λ|∇u|², shape `[N, 1]`."""
        grad = f.grad("u", axes=self.space)
        lap = f.laplacian("u", axes=self.space)
        return (f.d("u", "t") + lap - self.lam * grad.square().sum(dim=1))[:, None]

    terminal_expr = "log(0.5 + 0.5 * r2)"

    def terminal(self, x: Tensor) -> Tensor:
        return torch.log1p(x.square().sum(dim=1)) - math.log(2.0)

    def _solution(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        sq_norm = np.einsum("ij,ij->i", x, x)
        return hjb_log_u(sq_norm, self.T - t, self.d, self.lam)


class HJBLin(_TerminalValueProblem):
    """u_t + Δu - (1/d) Σ_i |u_{x_i}|^c = -2 on [0, T) x R^d, u(T, x) = Σ_i x_i.

    The exact solution u = Σ_i x_i + T - t does not depend on c (every |u_{x_i}| is 1).

    Arguments:
        c: exponent of the gradient term (>= 1, so the residual is differentiable); 1.75 in SDGD.
        Other arguments as in `HJB`.
    """

    name = "hjb_lin"

    reference_keys = ("d", "T", "n_eval", "eval_seed")

    def __init__(
        self,
        d: int = 100,
        T: float = 1.0,
        c: float = 1.75,
        n_collocation: int = 256,
        n_terminal: int = 128,
        n_eval: int = 10_000,
        eval_seed: int = 0,
    ) -> None:
        c = check_real("c", c, 1.0, strict=False)
        super().__init__(d, T, n_collocation, n_terminal, n_eval, eval_seed, c=c)
        self.c = c

    def residual(self, f: Fields) -> Tensor:
        """u_t + Δu - mean_i |u_{x_i}|^c + 2, shape `[N, 1]`."""
        grad = f.grad("u", axes=self.space)
        lap = f.laplacian("u", axes=self.space)
        return (f.d("u", "t") + lap - grad.abs().pow(self.c).mean(dim=1) + 2.0)[:, None]

    terminal_expr = "xsum"

    def terminal(self, x: Tensor) -> Tensor:
        return x.sum(dim=1)

    def _solution(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return x.sum(axis=1) + (self.T - t)


class BlackScholesBarenblatt(_TerminalValueProblem):
    """u_t + (σ²/2) Σ_i x_i² u_{x_i x_i} - r (u - x·∇u) = 0 on [0, T) x R^d, u(T, x) = |x|².

    Exact: u = exp((r + σ²)(T - t)) |x|². The evaluation set also holds FBSNN's point (0, X0),
    X0 = (1, 0.5, 1, 0.5, ...), where u = exp((r + σ²) T) |X0|².

    Arguments:
        r: interest rate (0.05 in FBSNN).
        sigma: volatility σ (> 0; 0.4 in FBSNN).
        Other arguments as in `HJB`.
    """

    name = "bsb"

    reference_keys = ("d", "T", "r", "sigma", "n_eval", "eval_seed")

    def __init__(
        self,
        d: int = 100,
        T: float = 1.0,
        r: float = 0.05,
        sigma: float = 0.4,
        n_collocation: int = 256,
        n_terminal: int = 128,
        n_eval: int = 10_000,
        eval_seed: int = 0,
    ) -> None:
        r = check_real("r", r)
        sigma = check_real("sigma", sigma, 0.0)
        super().__init__(d, T, n_collocation, n_terminal, n_eval, eval_seed, r=r, sigma=sigma)
        self.r, self.sigma = r, sigma

    def residual(self, f: Fields) -> Tensor:
        """u_t + (σ²/2) Σ_i x_i² u_{x_i x_i} - r (u - x·∇u), shape `[N, 1]`."""
        x = f.points[:, : self.d]
        x_grad = (x * f.grad("u", axes=self.space)).sum(dim=1)
        diffusion = 0.5 * self.sigma**2 * f.laplacian("u", axes=self.space, weights=x.square())
        return (f.d("u", "t") + diffusion - self.r * (f["u"] - x_grad))[:, None]

    terminal_expr = "r2"

    def terminal(self, x: Tensor) -> Tensor:
        return x.square().sum(dim=1)

    def x0(self) -> np.ndarray:
        """FBSNN's initial point X0 = (1, 0.5, 1, 0.5, ...)."""
        return np.where(np.arange(self.d) % 2 == 0, 1.0, 0.5)

    def points_of_interest(self) -> dict[str, np.ndarray]:
        """u(0, X0): FBSNN's quantity (u(0, 0) = 0 has no relative error)."""
        return {"x0": np.append(self.x0(), 0.0)[None, :]}

    def _solution(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        rate = self.r + self.sigma**2
        return np.exp(rate * (self.T - t)) * np.einsum("ij,ij->i", x, x)
