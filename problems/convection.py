"""1-D periodic transport on x in [0, 2 pi], t in [0, 1]: the convection failure mode of
Krishnapriyan et al. (NeurIPS 2021) and the LPINN cases (Mojgani et al., CMAME 2023).

* `convection`: u_t + c u_x = 0, u0 = sin x; exact u = sin(x - c t). Periodicity pairs values
  only (as Krishnapriyan et al.; the equation is first order in x).
* `convection_diffusion`: u_t + c u_x = nu u_xx, u0 = sin x or a Gaussian bump; exact Fourier
  series, each mode advected and damped exactly. Periodicity pairs values and u_x.
* `burgers_periodic`: u_t + u u_x = nu u_xx, u0 = sin x + C; exact by Cole–Hopf and Galilean
  invariance (`problems/solvers/periodic_burgers.py`). Periodicity pairs values and u_x.

The reference grid is Krishnapriyan's and LPINN's: x = linspace(0, 2 pi, 256, endpoint=False),
t = linspace(0, 1, 100). Each case has the `characteristics` capability (its Lagrangian form,
for LPINN) and a trial function u = u0(x) + t * N(x, t): the initial condition holds exactly,
periodicity stays a loss term (a periodic input encoding is the method's business).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from problems.base import (
    Box,
    Characteristics,
    Condition,
    ConfigError,
    Problem,
    Reference,
    check_int,
    check_real,
    grid_points,
)
from problems.constraints import periodic_conditions
from problems.fields import Fields
from problems.solvers.periodic_burgers import NU_MIN, cole_hopf_periodic

__all__ = ["BurgersPeriodic", "Convection", "ConvectionDiffusion", "fourier_modes"]

TWO_PI = 2.0 * math.pi
GAUSS_SIGMA = math.pi / 4  # LPINN's `gauss`: centre pi, width pi/4
N_SAMPLES = 1024  # samples of u0 for its Fourier coefficients (u0 needs far fewer modes)
MODE_TOL = 1e-15  # modes below this times the largest amplitude are round-off: dropped


def _gauss_torch(x: Tensor) -> Tensor:
    """The 2 pi-periodic sum of Gaussians exp(-(x - pi + 2 pi m)^2 / (2 sigma^2)); the images
    m = -1, 0, 1 on [0, 2 pi) leave out terms below e^{-72}."""
    xr = torch.remainder(x, TWO_PI)
    s2 = 2.0 * GAUSS_SIGMA**2
    return sum(torch.exp(-((xr - (2 * m + 1) * math.pi) ** 2) / s2) for m in (-1, 0, 1))


_GAUSS_EXPR = " + ".join(
    f"exp(-(x - {2 * m + 1} * pi)**2 / {2.0 * GAUSS_SIGMA**2!r})" for m in (-1, 0, 1)
)
INITIAL = {  # name -> (torch function, trial-syntax expression over x)
    "sin": (torch.sin, "sin(x)"),
    "gauss": (_gauss_torch, f"({_GAUSS_EXPR})"),
}


def fourier_modes(u0, n: int = N_SAMPLES, tol: float = MODE_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Wavenumbers `k` and complex amplitudes `A` with u0(x) = sum_k Re(A_k e^{i k x}), from
    the rfft of `n` samples of the 2 pi-periodic `u0` (a torch function); modes below `tol`
    times the largest amplitude (the FFT's round-off) are dropped. Raises if u0 is not
    resolved by `n // 4` modes."""
    x = torch.arange(n, dtype=torch.float64) * (TWO_PI / n)
    amp = np.fft.rfft(u0(x).numpy()) * (2.0 / n)
    amp[0] /= 2.0
    keep = np.flatnonzero(np.abs(amp) > tol * np.abs(amp).max())
    if keep.size and keep[-1] >= n // 4:
        raise ValueError(f"the initial condition needs more than {n // 4} Fourier modes")
    return keep.astype(np.float64), amp[keep]


class _PeriodicLaw(Problem):
    """Shared parts: domain, grid, initial and periodic conditions, trial, characteristics.

    Subclasses set `c` (or the speed), `nu`, `periodic_derivative`, `u0_name` and implement
    `residual` and `exact_torch` (the exact solution on float64 tensors x, t).
    """

    axes = ("x", "t")
    fields = ("u",)
    domain = Box({"x": (0.0, TWO_PI), "t": (0.0, 1.0)})
    periodic_derivative = True  # pair u_x too (a second-order equation needs it)
    u0_name = "sin"
    nu = 0.0

    def _common(self, n_collocation, n_initial, n_boundary, nx, nt) -> dict:
        return {
            "n_collocation": check_int("n_collocation", n_collocation),
            "n_initial": check_int("n_initial", n_initial),
            "n_boundary": check_int("n_boundary", n_boundary, minimum=2),
            "nx": check_int("nx", nx, minimum=2),
            "nt": check_int("nt", nt, minimum=2),
        }

    def _init(self, **params) -> None:
        super().__init__(**params)
        self.n_collocation = self.params["n_collocation"]

    # -- the initial state ---------------------------------------------------------------------
    def u0(self, x: Tensor) -> Tensor:
        """u(x, 0), elementwise."""
        return INITIAL[self.u0_name][0](x)

    def _u0_expr(self) -> str:
        return INITIAL[self.u0_name][1]

    # -- conditions ----------------------------------------------------------------------------
    def conditions(self) -> list[Condition]:
        """`ic`: u - u0(x) at t = 0; `bc_x` (and `bc_x_d` for second-order cases): u (and
        u_x) equal at x = 0 and x = 2 pi, on pairs of points at the same t."""

        def sample_ic(n: int, generator: torch.Generator | None = None) -> Tensor:
            return self.domain.sample(n, generator, t=0.0)

        ic = Condition(
            "ic",
            sample_ic,
            lambda f: (f["u"] - self.u0(f.x))[:, None],
            self.params["n_initial"],
        )
        periodic = periodic_conditions(
            self.domain, "x", self.fields, self.params["n_boundary"], self.periodic_derivative
        )
        return [ic, *periodic]

    def trial(self) -> dict[str, str]:
        """u = u0(x) + t * N: the initial condition holds exactly for any net output N;
        periodicity is not imposed (it stays the `bc_x` loss terms)."""
        return {"u": f"{self._u0_expr()} + t * u"}

    # -- reference -----------------------------------------------------------------------------
    def exact_torch(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def exact(self, points: np.ndarray) -> np.ndarray:
        """The exact solution `[M, 1]` at `points` `[M, 2]` (columns x, t)."""
        pts = torch.as_tensor(np.asarray(points, dtype=np.float64))
        return self.exact_torch(pts[:, 0], pts[:, 1])[:, None].numpy()

    def _compute_reference(self) -> Reference:
        x = np.linspace(0.0, TWO_PI, self.params["nx"], endpoint=False)
        t = np.linspace(0.0, 1.0, self.params["nt"])
        points = grid_points(x, t)
        return Reference(points, self.exact(points), exact=self.exact, grid=(x, t))

    # -- Lagrangian form -----------------------------------------------------------------------
    def characteristics(self) -> Characteristics:
        """dX/dt = a(U), dU/dt = nu U_xx from X = x0, U = u0(x0) (see `Characteristics`)."""
        c = self.params.get("c")
        if c is None:
            speed, constant = (lambda u: u), False  # Burgers: a(u) = u
        else:
            speed, constant = (lambda u: torch.full_like(u, c)), True
        return Characteristics("x", (0.0, TWO_PI), speed, self.nu, self.u0, constant)


_DOC_COMMON = """
        n_collocation: default interior collocation points.
        n_initial: default initial-condition points (t = 0; Krishnapriyan's 256 grid points).
        n_boundary: default periodic-condition points (half at x = 0, half at x = 2 pi, paired).
        nx, nt: reference grid, x = linspace(0, 2 pi, nx, endpoint=False), t = linspace(0, 1, nt).
"""


# ----------------------------------------------------------------------------------------------
class Convection(_PeriodicLaw):
    name = "convection"
    __doc__ = (
        """Pure convection u_t + c u_x = 0, u0 = sin x; exact u = sin(x - c t).

    The PINN failure mode of Krishnapriyan et al. 2021: a vanilla PINN fails for c >~ 30.
    n_collocation defaults to their README's N_f = 1000 (their code's default is 100).

    Arguments:
        c: the speed (>= 0; 30 by default, the study goes to 70 and beyond)."""
        + _DOC_COMMON
    )

    reference_keys = ("c", "nx", "nt")
    periodic_derivative = False  # first order in x: values only, as Krishnapriyan et al.

    def __init__(
        self,
        c: float = 30.0,
        n_collocation: int = 1000,
        n_initial: int = 256,
        n_boundary: int = 200,
        nx: int = 256,
        nt: int = 100,
    ) -> None:
        c = check_real("c", c, minimum=0.0, strict=False)
        self._init(c=c, **self._common(n_collocation, n_initial, n_boundary, nx, nt))
        self.c = c

    def residual(self, f: Fields) -> Tensor:
        """u_t + c u_x, `[N, 1]`."""
        return (f.d("u", "t") + self.c * f.d("u", "x"))[:, None]

    def exact_torch(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.sin(x - self.c * t)


# ----------------------------------------------------------------------------------------------
class ConvectionDiffusion(_PeriodicLaw):
    name = "convection_diffusion"
    __doc__ = (
        """Convection–diffusion u_t + c u_x = nu u_xx (LPINN's `convection` equation).

    Exact: the equation is diagonal in Fourier space, u_k(t) = u_k(0) e^{-(i c k + nu k^2) t};
    `exact` sums the Fourier series of u0 (`fourier_modes`: every mode above round-off) so
    evolved, at any points. For u0 = sin x it is e^{-nu t} sin(x - c t).

    Arguments:
        c: the speed (>= 0).
        nu: the diffusivity (>= 0; LPINN's NU0 = 0.01).
        u0: `sin` (sin x) or `gauss`: LPINN's bump exp(-(x - pi)^2 / (2 (pi/4)^2)) made
            periodic by adding its two neighbouring images (a smooth periodic function, needing
            ~12 Fourier modes; LPINN's unperiodised bump differs from it by <= 3.4e-4, at the
            ends, where it has a kink in its periodic extension)."""
        + _DOC_COMMON
    )

    reference_keys = ("c", "nu", "u0", "nx", "nt")

    def __init__(
        self,
        c: float = 30.0,
        nu: float = 0.01,
        u0: str = "sin",
        n_collocation: int = 1000,
        n_initial: int = 256,
        n_boundary: int = 200,
        nx: int = 256,
        nt: int = 100,
    ) -> None:
        c = check_real("c", c, minimum=0.0, strict=False)
        nu = check_real("nu", nu, minimum=0.0, strict=False)
        if u0 not in INITIAL:
            raise ConfigError(f"u0 must be one of {sorted(INITIAL)}, got {u0!r}")
        common = self._common(n_collocation, n_initial, n_boundary, nx, nt)
        self._init(c=c, nu=nu, u0=u0, **common)
        self.c, self.nu, self.u0_name = c, nu, u0
        k, amp = fourier_modes(self.u0)
        self._k = torch.as_tensor(k)
        self._re = torch.as_tensor(amp.real.copy())
        self._im = torch.as_tensor(amp.imag.copy())

    def residual(self, f: Fields) -> Tensor:
        """u_t + c u_x - nu u_xx, `[N, 1]`."""
        u_t, u_x, u_xx = f.d("u", "t"), f.d("u", "x"), f.d("u", "x", "x")
        return (u_t + self.c * u_x - self.nu * u_xx)[:, None]

    def exact_torch(self, x: Tensor, t: Tensor) -> Tensor:
        """sum_k e^{-nu k^2 t} Re(A_k e^{i k (x - c t)}): differentiable in x and t."""
        xi = torch.remainder(x - self.c * t, TWO_PI)[:, None]  # exact phases for large c t
        k = self._k.to(x)
        phase = xi * k
        decay = torch.exp(-self.nu * t[:, None] * k * k)
        terms = self._re.to(x) * torch.cos(phase) - self._im.to(x) * torch.sin(phase)
        return (decay * terms).sum(dim=1)


# ----------------------------------------------------------------------------------------------
class BurgersPeriodic(_PeriodicLaw):
    name = "burgers_periodic"
    __doc__ = (
        """Viscous Burgers u_t + u u_x = nu u_xx with u0 = sin x + C on the periodic interval
    (LPINN's Burgers: U0 = sin x + C, NU0 = 0.01).

    With C = 0 the solution stays odd about x = pi and a shock forms there at t ~ 1; with
    C != 0 the same profile moves at speed C (u = C + w(x - C t, t)). Exact by Cole–Hopf with a
    256-node Gauss–Hermite rule, converged to round-off for nu >= 1e-3 on t in [0, 1]
    (`problems/solvers/periodic_burgers.py`). For large C the harness's rel_l2 is dominated
    by the constant C (LPINN's own metric divides by ||u - C|| instead).

    Arguments:
        nu: viscosity (>= 1e-3, where the quadrature is verified; LPINN's 0.01 by default).
        C: the constant in the initial condition (0 by default; LPINN uses e.g. 50)."""
        + _DOC_COMMON
    )

    reference_keys = ("nu", "C", "nx", "nt")

    def __init__(
        self,
        nu: float = 0.01,
        C: float = 0.0,  # noqa: N803 (LPINN's name)
        n_collocation: int = 1000,
        n_initial: int = 256,
        n_boundary: int = 200,
        nx: int = 256,
        nt: int = 100,
    ) -> None:
        nu = check_real("nu", nu, minimum=0.0)
        if nu < NU_MIN:
            raise ConfigError(
                f"nu must be >= {NU_MIN:g} (the Cole–Hopf reference is verified converged down "
                f"to there; the shock is unresolved below), got {nu!r}"
            )
        C = check_real("C", C)  # noqa: N806
        self._init(nu=nu, C=C, **self._common(n_collocation, n_initial, n_boundary, nx, nt))
        self.nu, self.C = nu, C

    def u0(self, x: Tensor) -> Tensor:
        return torch.sin(x) + self.C

    def _u0_expr(self) -> str:
        return f"sin(x) + {self.C!r}"

    def residual(self, f: Fields) -> Tensor:
        """u_t + u u_x - nu u_xx, `[N, 1]`."""
        u = f["u"]
        return (f.d("u", "t") + u * f.d("u", "x") - self.nu * f.d("u", "x", "x"))[:, None]

    def exact_torch(self, x: Tensor, t: Tensor) -> Tensor:
        """The Cole–Hopf solution (numpy quadrature: values only, not differentiable)."""
        u = cole_hopf_periodic(x.detach().cpu().numpy(), t.detach().cpu().numpy(), self.nu, self.C)
        return torch.as_tensor(u, dtype=x.dtype, device=x.device)
