"""1-D focusing nonlinear Schrödinger equation (NLSE) on periodic boxes: five cases.

    i psi_t + 1/2 psi_xx + |psi|^2 psi = 0,   psi = re + i im,   x in [lo, lo + L) periodic.

Cases (each box is chosen so that the periodic problem is a faithful model of the intended one):
- `nlse`: Raissi et al.'s PINN benchmark, psi0 = 2 sech x on [-5, 5], t in [0, pi/2]. The
  periodic problem *is* the benchmark (2 sech 5 = 0.027 is not negligible), so the reference is
  the 256-mode pseudo-spectral solve on Raissi's 256 x 201 grid; it matches his `NLS.mat`.
- `nlse_soliton`: one moving sech soliton (exact); its tails at the boundary stay below 1e-10.
- `nlse_two_soliton`: two solitons colliding once; spectral reference. The box is wide enough
  that neither reaches the boundary, so the collision shifts are the whole-line ones.
- `nlse_breather`: the Akhmediev breather (exact), one spatial period in the box, growing from a
  nearly uniform background to its peak at `t_peak` and decaying again.
- `nlse_mi`: modulational instability of a plane wave seeded with small band-limited noise;
  spectral reference.

Published setups: research/problems.md section 2 (Raissi 2019; Herho et al., arXiv:2509.05901).
Conditions: `ic` (psi at t = 0), `bc` (psi(lo, t) = psi(hi, t)) and `bc_x` (same for psi_x), on
re and im, as in Raissi. `invariants` scores a prediction's mass and energy drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from problems.base import Box, Condition, ConfigError, Problem, Reference, check_int, check_real
from problems.fields import Fields
from problems.solvers.nlse_exact import akhmediev, collision_shifts, sech, soliton
from problems.solvers.nlse_spectral import energy, grid, mass, solve_nlse

__all__ = [
    "NLSEBreather",
    "NLSEModulationInstability",
    "NLSEProblem",
    "NLSERaissi",
    "NLSESoliton",
    "NLSETwoSoliton",
]

TAIL = 1e-10  # largest relative soliton amplitude allowed at the boundary of a soliton box


# -- validation --------------------------------------------------------------------------------


def _reals(key: str, value: object, lo: float | None = None) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ConfigError(f"{key} must be a non-empty list of numbers, got {value!r}")
    return tuple(check_real(f"{key}[{i}]", v, lo) for i, v in enumerate(value))


# -- the shared problem ------------------------------------------------------------------------
class NLSEProblem(Problem):
    """Common machinery; subclasses set the box and the initial field `_initial`.

    A case is the box [lo, lo + length) x [0, t_final], the initial field, and the reference
    grid: `nx` periodic points (no endpoint) by `nt` times linspace(0, t_final, nt). Without
    an `exact` formula the reference is `solve_nlse` with `nx` Fourier modes at tolerance
    `rtol`, so `nx` is also the solver's resolution.
    """

    axes = ("x", "t")
    fields = ("re", "im")
    counts = ("n_collocation", "n_initial", "n_boundary")

    def _setup(self, lo: float, length: float, t_final: float, params: dict[str, Any]) -> None:
        """Validate the shared keys in `params`, then store everything."""
        params["n_collocation"] = check_int("n_collocation", params["n_collocation"])
        params["n_initial"] = check_int("n_initial", params["n_initial"])
        params["n_boundary"] = check_int("n_boundary", params["n_boundary"], minimum=2)
        params["nx"] = check_int("nx", params["nx"], minimum=8)
        params["nt"] = check_int("nt", params["nt"], minimum=2)
        if "rtol" in params:
            params["rtol"] = check_real("rtol", params["rtol"], 0.0, maximum=1e-3)
        Problem.__init__(self, **params)
        for k, v in params.items():
            setattr(self, k, v)
        self.lo, self.length, self.t_final = lo, length, t_final
        self.hi = lo + length
        self.domain = Box({"x": (lo, self.hi), "t": (0.0, t_final)})
        self.reference_keys = tuple(k for k in params if k not in self.counts)

    def _initial(self, x: Any, xp: Any) -> tuple[Any, Any]:
        """(re, im) of psi(x, 0), for numpy arrays (xp=np) or torch tensors (xp=torch)."""
        raise NotImplementedError

    def initial(self, x: np.ndarray) -> np.ndarray:
        """psi(x, 0), complex128."""
        re, im = self._initial(np.asarray(x, dtype=np.float64), np)
        return re + 1j * im

    # -- equations -------------------------------------------------------------------------
    def residual(self, f: Fields) -> Tensor:
        """Real and imaginary parts of i psi_t + 1/2 psi_xx + |psi|^2 psi, shape `[N, 2]`:
        [-im_t + re_xx/2 + (re^2 + im^2) re,  re_t + im_xx/2 + (re^2 + im^2) im]."""
        re, im = f["re"], f["im"]
        rho = re * re + im * im
        return torch.stack(
            [
                -f.d("im", "t") + 0.5 * f.d("re", "x", "x") + rho * re,
                f.d("re", "t") + 0.5 * f.d("im", "x", "x") + rho * im,
            ],
            dim=1,
        )

    def conditions(self) -> list[Condition]:
        """`ic`: psi - psi0 at t = 0. `bc`, `bc_x`: psi(lo, t) - psi(hi, t) and the same for
        psi_x, on pairs of points: the first half of a sample at x = lo, the second half at
        x = hi with the same times (an odd last point is unused)."""

        def sample_ic(n: int, generator: torch.Generator | None = None) -> Tensor:
            return self.domain.sample(n, generator, t=0.0)

        def sample_pairs(n: int, generator: torch.Generator | None = None) -> Tensor:
            m = n // 2
            pts = self.domain.sample(n, generator)
            pts[:m, 0] = self.lo
            pts[m : 2 * m, 0] = self.hi
            pts[m : 2 * m, 1] = pts[:m, 1]
            if n % 2:
                pts[-1, 0] = self.lo
            return pts

        def ic(f: Fields) -> Tensor:
            re0, im0 = self._initial(f.x, torch)
            return torch.stack([f["re"] - re0, f["im"] - im0], dim=1)

        def periodic(*axes: str):
            def residual(f: Fields) -> Tensor:
                m = f.n // 2
                vals = torch.stack([f.d(name, *axes) for name in self.fields], dim=1)
                if m == 0:  # a single point has no partner: a zero residual with a graph
                    return vals - vals
                return vals[:m] - vals[m : 2 * m]

            return residual

        return [
            Condition("ic", sample_ic, ic, self.n_initial),
            Condition("bc", sample_pairs, periodic(), self.n_boundary),
            Condition("bc_x", sample_pairs, periodic("x"), self.n_boundary),
        ]

    # -- reference -------------------------------------------------------------------------
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference grid: periodic x (no endpoint) and t = linspace(0, t_final, nt)."""
        return grid(self.nx, self.length, self.lo), np.linspace(0.0, self.t_final, self.nt)

    def _compute_reference(self) -> Reference:
        x, t = self.grid()
        X, T = np.meshgrid(x, t, indexing="ij")
        points = np.stack([X.ravel(), T.ravel()], axis=1)
        if self.exact is not None:
            values = self.exact(points)
        else:
            psi = solve_nlse(self.initial(x), self.length, t, rtol=self.rtol)  # [nt, nx]
            values = np.stack([psi.real.T.ravel(), psi.imag.T.ravel()], axis=1)
        return Reference(points, values, exact=self.exact, grid=(x, t))

    # -- scoring ---------------------------------------------------------------------------
    def invariants(self, points: np.ndarray, values: np.ndarray) -> dict[str, float]:
        """Mass and energy drift of a prediction on the (periodic, tensor) reference grid.

        N(t) = int |psi|^2 dx and H(t) = K - U = int (1/2 |psi_x|^2 - 1/2 |psi|^4) dx, the
        invariants of this equation, by the rectangle rule with a spectral psi_x (the grid is
        periodic, so both are spectrally accurate; a non-periodic prediction is charged for
        the jump). Relative to the exact initial field psi0 on the same grid:
            mass_drift   = max_t |N(t) - N(psi0)| / N(psi0)
            energy_drift = max_t |H(t) - H(psi0)| / (K(psi0) + U(psi0))
        The energy is scaled by K + U because H itself can vanish (a soliton with v^2 = A^2/3).
        """
        x, t = _tensor_grid(np.asarray(points, dtype=np.float64))
        if not np.allclose(np.diff(x), self.length / len(x), rtol=1e-9, atol=0):
            raise ValueError("invariants need a uniform periodic x grid over the whole box")
        values = np.asarray(values, dtype=np.float64).reshape(len(x), len(t), 2)
        psi = (values[..., 0] + 1j * values[..., 1]).T  # [nt, nx]
        psi0 = self.initial(x)
        n0 = mass(psi0, self.length)
        k0, u0 = energy(psi0, self.length, parts=True)
        n_t = mass(psi, self.length)
        h_t = energy(psi, self.length)
        return {
            "mass_drift": float(np.max(np.abs(n_t - n0)) / n0),
            "energy_drift": float(np.max(np.abs(h_t - (k0 - u0))) / (k0 + u0)),
        }


def _tensor_grid(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The axes (x, t) of points laid out as meshgrid(x, t, indexing="ij"), C order."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"expected points of shape [N, 2] (x, t), got {points.shape}")
    x, t = np.unique(points[:, 0]), np.unique(points[:, 1])
    if len(x) * len(t) != len(points):
        raise ValueError("invariants need points on a tensor grid in x and t")
    X, T = np.meshgrid(x, t, indexing="ij")
    if not (np.array_equal(points[:, 0], X.ravel()) and np.array_equal(points[:, 1], T.ravel())):
        raise ValueError("invariants need points laid out as meshgrid(x, t, indexing='ij')")
    return x, t


def _check_tails(key: str, lo: float, hi: float, amplitude: float, paths: list[float]) -> None:
    """Raise unless a soliton of `amplitude` whose centre visits `paths` stays far enough
    inside [lo, hi] that its tail at the boundary, 2 exp(-A d), is below TAIL."""
    d = min(min(c - lo, hi - c) for c in paths)
    tail = 2.0 * math.exp(-amplitude * d) if d > 0 else math.inf
    if tail > TAIL:
        raise ConfigError(
            f"{key} too small: a soliton of amplitude {amplitude:g} comes within {d:.3g} of the "
            f"boundary, where its relative tail {tail:.1e} exceeds {TAIL:g}; widen the box, "
            "move the solitons inward or shorten t_final"
        )


# -- the cases ---------------------------------------------------------------------------------
class NLSERaissi(NLSEProblem):
    """Raissi et al. (2019): psi0 = 2 sech x, periodic on [-5, 5], t in [0, pi/2].

    2 sech x is the N = 2 bound state, breathing with period pi/2 (peak |psi| ~ 4 at pi/4).
    The reference is the periodic problem solved with `nx` Fourier modes (Raissi: 256, on his
    256 x 201 grid); the whole-line closed form is off by ~1e-2 here because 2 sech 5 = 0.027.

    Arguments:
        n_collocation, n_initial, n_boundary: default training points (Raissi: 20000, 50, and
            50 times on each side, i.e. 100 boundary points in 50 pairs).
        nx, nt: reference grid (and solver modes); rtol: solver tolerance.
    """

    name = "nlse"

    def __init__(
        self,
        n_collocation: int = 20000,
        n_initial: int = 50,
        n_boundary: int = 100,
        nx: int = 256,
        nt: int = 201,
        rtol: float = 1e-10,
    ) -> None:
        params = dict(
            n_collocation=n_collocation, n_initial=n_initial, n_boundary=n_boundary,
            nx=nx, nt=nt, rtol=rtol,
        )  # fmt: skip
        self._setup(-5.0, 10.0, math.pi / 2, params)

    def _initial(self, x: Any, xp: Any) -> tuple[Any, Any]:
        re = 2.0 * sech(x, xp)
        return re, 0.0 * re

    def trial(self) -> dict[str, str]:
        """psi(x, 0) = 2 sech x exactly (the periodic boundary conditions stay soft)."""
        return {"re": "4 / (exp(x) + exp(-x)) + t * re", "im": "t * im"}


class NLSESoliton(NLSEProblem):
    """A single soliton moving across the box (Herho et al.'s case 1 setup): exact solution
    psi = A sech(A (x - x0 - v t)) exp(i [v x + (A^2 - v^2) t / 2]).

    Arguments:
        amplitude, velocity, x0: A, v and the centre at t = 0.
        length, t_final: box [-length/2, length/2) and horizon; the centre must stay far
            enough inside that the tail at the boundary is below 1e-10 (checked).
        nx, nt: reference grid; n_collocation, n_initial, n_boundary: training points.
    """

    name = "nlse_soliton"

    def __init__(
        self,
        amplitude: float = 2.0,
        velocity: float = 1.0,
        x0: float = -10.0,
        length: float = 50.0,
        t_final: float = 20.0,
        n_collocation: int = 20000,
        n_initial: int = 256,
        n_boundary: int = 200,
        nx: int = 512,
        nt: int = 101,
    ) -> None:
        amplitude = check_real("amplitude", amplitude, 0.0)
        velocity = check_real("velocity", velocity)
        x0 = check_real("x0", x0)
        length = check_real("length", length, 0.0)
        t_final = check_real("t_final", t_final, 0.0)
        _check_tails("length", -length / 2, length / 2, amplitude, [x0, x0 + velocity * t_final])
        params = dict(
            amplitude=amplitude, velocity=velocity, x0=x0, length=length, t_final=t_final,
            n_collocation=n_collocation, n_initial=n_initial, n_boundary=n_boundary,
            nx=nx, nt=nt,
        )  # fmt: skip
        self._setup(-length / 2, length, t_final, params)

    def _initial(self, x: Any, xp: Any) -> tuple[Any, Any]:
        return soliton(x, 0.0, self.amplitude, self.x0, self.velocity, xp)

    def exact(self, points: np.ndarray) -> np.ndarray:
        """The soliton `[M, 2]` (re, im) at `points` `[M, 2]` (x, t)."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack(soliton(p[:, 0], p[:, 1], self.amplitude, self.x0, self.velocity), 1)


class NLSETwoSoliton(NLSEProblem):
    """Solitons A_j sech(A_j (x - x_j)) exp(i v_j x) superposed at t = 0 (no relative phase),
    colliding; spectral reference. Herho et al.'s pair, (2, -10, 2) and (1.5, 10, -2), meets
    once at t = 5; unlike their L = 50, t = 20 setup (which wraps round and collides twice),
    the box here is wide enough that the solitons never reach the boundary, so it models the
    whole line and the collision shifts are the classical ones (`collision_shifts`).

    Arguments:
        amplitudes, velocities, positions: A_j, v_j, x_j, one entry per soliton.
        length, t_final: box [-length/2, length/2) and horizon; every soliton's free path,
            widened by its largest possible collision shift, must keep its tail at the
            boundary below 1e-10 (checked).
        nx, nt, rtol: reference grid = solver modes, and solver tolerance.
        n_collocation, n_initial, n_boundary: default training points.
    """

    name = "nlse_two_soliton"

    def __init__(
        self,
        amplitudes: Sequence[float] = (2.0, 1.5),
        velocities: Sequence[float] = (2.0, -2.0),
        positions: Sequence[float] = (-10.0, 10.0),
        length: float = 60.0,
        t_final: float = 10.0,
        n_collocation: int = 20000,
        n_initial: int = 512,
        n_boundary: int = 200,
        nx: int = 1024,
        nt: int = 101,
        rtol: float = 1e-12,
    ) -> None:
        amplitudes = _reals("amplitudes", amplitudes, 0.0)
        velocities = _reals("velocities", velocities)
        positions = _reals("positions", positions)
        if not len(amplitudes) == len(velocities) == len(positions):
            raise ConfigError(
                "amplitudes, velocities and positions must have one entry per soliton, got "
                f"lengths {len(amplitudes)}, {len(velocities)}, {len(positions)}"
            )
        length = check_real("length", length, 0.0)
        t_final = check_real("t_final", t_final, 0.0)
        for j, (a, v, x) in enumerate(zip(amplitudes, velocities, positions)):
            shift = sum(  # every partner could shift it once (whole-line formula)
                abs(collision_shifts((a, b), (v, w))[0])
                for k, (b, w) in enumerate(zip(amplitudes, velocities))
                if k != j and v != w
            )
            ends = [x, x + v * t_final]
            _check_tails("length", -length / 2 + shift, length / 2 - shift, a, ends)
        params = dict(
            amplitudes=list(amplitudes), velocities=list(velocities), positions=list(positions),
            length=length, t_final=t_final, n_collocation=n_collocation, n_initial=n_initial,
            n_boundary=n_boundary, nx=nx, nt=nt, rtol=rtol,
        )  # fmt: skip
        self._setup(-length / 2, length, t_final, params)

    def _initial(self, x: Any, xp: Any) -> tuple[Any, Any]:
        re, im = 0.0 * x, 0.0 * x
        for a, v, x0 in zip(self.amplitudes, self.velocities, self.positions):
            r, i = soliton(x, 0.0, a, x0, v, xp)
            re, im = re + r, im + i
        return re, im


class NLSEBreather(NLSEProblem):
    """The Akhmediev breather (exact), shifted to peak at t = t_peak:
    psi(x, t) = akhmediev(x, t - t_peak; a), on one spatial period [-pi/w, pi/w), w = 2 sqrt(1-2a).

    It grows from a plane wave with a small modulation (relative size ~ e^{-b t_peak}) at the
    MI growth rate b = sqrt(8a(1-2a)), peaks at |psi| = 1 + 2 sqrt(2a), and decays back. The
    box holds exactly one period, the only unstable mode it admits (for a >= 1/8 its second
    harmonic 2w is stable), so round-off cannot seed other modulations.
    (Herho et al.'s "breather" is a perturbed sech pulse, not this; see research notes 2b.)

    Arguments:
        a: breather parameter, 0 < a < 1/2 (a = 1/4: fastest growth, b = 1, peak 1 + sqrt 2).
        t_peak, t_final: time of the peak (0 <= t_peak <= t_final) and horizon.
        nx, nt: reference grid; n_collocation, n_initial, n_boundary: training points.
    """

    name = "nlse_breather"

    def __init__(
        self,
        a: float = 0.25,
        t_peak: float = 4.0,
        t_final: float = 8.0,
        n_collocation: int = 20000,
        n_initial: int = 128,
        n_boundary: int = 200,
        nx: int = 256,
        nt: int = 201,
    ) -> None:
        a = check_real("a", a, 0.0, maximum=0.5)
        t_final = check_real("t_final", t_final, 0.0)
        t_peak = check_real("t_peak", t_peak)
        if not 0.0 <= t_peak <= t_final:
            raise ConfigError(f"t_peak must lie in [0, t_final] = [0, {t_final}], got {t_peak}")
        self.omega = 2.0 * math.sqrt(1.0 - 2.0 * a)
        period = 2.0 * math.pi / self.omega
        params = dict(
            a=a, t_peak=t_peak, t_final=t_final, n_collocation=n_collocation,
            n_initial=n_initial, n_boundary=n_boundary, nx=nx, nt=nt,
        )  # fmt: skip
        self._setup(-period / 2, period, t_final, params)

    def _initial(self, x: Any, xp: Any) -> tuple[Any, Any]:
        return akhmediev(x, -self.t_peak + 0.0 * x, self.a, xp)

    def exact(self, points: np.ndarray) -> np.ndarray:
        """The breather `[M, 2]` (re, im) at `points` `[M, 2]` (x, t)."""
        p = np.asarray(points, dtype=np.float64)
        return np.stack(akhmediev(p[:, 0], p[:, 1] - self.t_peak, self.a), 1)


class NLSEModulationInstability(NLSEProblem):
    """Modulational instability: psi0 = sqrt(P0) (1 + eps eta(x)), a plane wave of power P0
    with seeded complex noise eta = sum_{0 < |j| <= J} c_j exp(i k_j x), k_j = 2 pi j / L, c_j
    complex Gaussian (numpy default_rng(seed)) normalised so that mean |eta|^2 = 1.

    Perturbations with |k| < 2 sqrt(P0) grow at `mi_growth_rate`, fastest (rate P0) at
    k = sqrt(2 P0). The box holds `fastest_wavelengths` wavelengths of that mode, so it is a
    box mode. Defaults (P0 = 1, 8 wavelengths, eps = 0.01, J = 16): modes j <= 11 are unstable;
    the noise grows until t ~ 5, then breaks into breathers (|psi| up to ~3 by t = 10); the
    horizon stops there, before long-time chaotic dynamics make the solution ill-conditioned.
    The noise is a finite Fourier sum, so psi0 is smooth, periodic and known everywhere.

    Arguments:
        power: P0. noise: eps. noise_modes: J (< nx/2). seed: noise seed.
        fastest_wavelengths: box length in wavelengths of the fastest-growing mode.
        t_final: horizon. nx, nt, rtol: reference grid = solver modes, and solver tolerance.
        n_collocation, n_initial, n_boundary: default training points.
    """

    name = "nlse_mi"

    def __init__(
        self,
        power: float = 1.0,
        noise: float = 0.01,
        noise_modes: int = 16,
        seed: int = 0,
        fastest_wavelengths: int = 8,
        t_final: float = 10.0,
        n_collocation: int = 20000,
        n_initial: int = 512,
        n_boundary: int = 200,
        nx: int = 512,
        nt: int = 201,
        rtol: float = 1e-12,
    ) -> None:
        power = check_real("power", power, 0.0)
        noise = check_real("noise", noise, 0.0, maximum=1.0)
        noise_modes = check_int("noise_modes", noise_modes)
        seed = check_int("seed", seed, minimum=0)
        fastest_wavelengths = check_int("fastest_wavelengths", fastest_wavelengths)
        t_final = check_real("t_final", t_final, 0.0)
        nx_checked = check_int("nx", nx, minimum=8)
        if 2 * noise_modes >= nx_checked:
            raise ConfigError(f"noise_modes must be < nx/2 = {nx_checked / 2:g}, got {noise_modes}")
        length = fastest_wavelengths * 2.0 * math.pi / math.sqrt(2.0 * power)
        params = dict(
            power=power, noise=noise, noise_modes=noise_modes, seed=seed,
            fastest_wavelengths=fastest_wavelengths, t_final=t_final,
            n_collocation=n_collocation, n_initial=n_initial, n_boundary=n_boundary,
            nx=nx, nt=nt, rtol=rtol,
        )  # fmt: skip
        self._setup(-length / 2, length, t_final, params)
        rng = np.random.default_rng(seed)
        j = np.concatenate([np.arange(-noise_modes, 0), np.arange(1, noise_modes + 1)])
        c = rng.standard_normal(j.size) + 1j * rng.standard_normal(j.size)
        self.noise_k = 2.0 * math.pi * j / length
        self.noise_c = c / np.linalg.norm(c)

    def _initial(self, x: Any, xp: Any) -> tuple[Any, Any]:
        re, im = 1.0 + 0.0 * x, 0.0 * x
        for k, c in zip(self.noise_k.tolist(), self.noise_c.tolist()):
            cos, sin = xp.cos(k * x), xp.sin(k * x)
            re = re + self.noise * (c.real * cos - c.imag * sin)
            im = im + self.noise * (c.real * sin + c.imag * cos)
        amp = math.sqrt(self.power)
        return amp * re, amp * im
