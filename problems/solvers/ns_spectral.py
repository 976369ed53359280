"""Batched Fourier pseudo-spectral solver for 2-D incompressible flow in vorticity form.

    w_t + u . grad w = nu lap w - drag w + f,   u = (psi_y, -psi_x),   -lap psi = w,

on the unit torus (0, 1)^2, the setting of the FNO Navier–Stokes benchmark (Li et al. 2021;
research/problems.md section 3). Arrays are `[..., s_x, s_y]`: the first spatial index is x
(numpy/torch `indexing="ij"`), on the collocation grid x_j = j / s.

Space: real FFTs of a batch `[B, s, s]` (torch, float64 fields, complex128 spectra, on the
input's device). The advection term is formed in physical space from spectral u, v, w_x, w_y and
transformed back; with `dealias` its modes with 3|m| >= s in either direction are zeroed (the
2/3 rule; for s not divisible by 3 this is the FNO generator's mask |m| <= (2/3)(s/2)). The
derivative of the Nyquist mode of an even grid is taken as zero. The vorticity mean is not
removed: the advection term has zero mean exactly, so it changes only by `drag` and the mean of f.

Time, fixed step `dt`, with L = -(nu |2 pi m|^2 + drag) treated by Crank–Nicolson and the
advection N(w) = u . grad w explicitly:

* `euler`: (1 - dt L/2) w^{n+1} = (1 + dt L/2) w^n + dt (f - N(w^n)). The FNO generator's
  scheme; formally first order (explicit Euler advection). (That generator also damps the mean
  mode at rate nu, a side effect of its lap[0, 0] = 1, and ran in float32; the mean of its
  fields is zero, so only round-off differs.)
* `heun` (default): the Euler step above as predictor w*, then the corrector with
  N -> (N(w^n) + N(w*)) / 2: an IMEX trapezoidal (Heun) step, second order, two advection
  evaluations per step.
* `cnab2`: Crank–Nicolson / Adams–Bashforth 2, N -> 3/2 N(w^n) - 1/2 N(w^{n-1}), started with
  one `heun` step: second order at one advection evaluation per step (the cost of `euler`).

All three keep the steady states of the linear part exactly (the CN fixed point of a constant
forcing is w* = f / (-L)), and on fields with N(w) = 0 all three reduce to CN, whose decay
factor per step is (1 + dt L/2) / (1 - dt L/2). `heun` at dt = 1e-2 stays closer to the
converged solution than `euler` at FNO's dt = 1e-4 (benchmarks/ns_vorticity.py measures both).

Verified in tests/test_ns_spectral.py: the exact laminar state f / (8 pi^2 nu) of the FNO
forcing is steady and its spin-up from rest follows CN's discrete solution; Taylor–Green decay;
the Kolmogorov laminar state with drag; the advection term against a closed form; a zero
vorticity mean; time-step convergence orders 1 (euler) and 2 (heun, cnab2) on a GRF field;
near-conservation of energy and enstrophy without viscosity; the GRF's spectrum against its
covariance; batch = one-by-one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SCHEMES",
    "advection",
    "fno_forcing",
    "grf",
    "grid",
    "kolmogorov_forcing",
    "resample",
    "solve_vorticity",
    "stream_function",
    "velocity",
]

SCHEMES = ("euler", "heun", "cnab2")
MIN_S = 4  # smallest grid that keeps a nonzero mode under the 2/3 rule
# Advection spectra [4, B, s, s // 2 + 1] with at least this many entries are transformed as 1-D
# FFTs into fixed buffers (no page faults); smaller ones as 2-D FFTs (fewer calls: each call is
# a parallel region, slow when other processes hold the cores).
SPLIT_FFT_ABOVE = 2**15


def grid(s: int) -> np.ndarray:
    """The periodic collocation grid x_j = j / s, j = 0..s-1, of the unit interval."""
    _check_s(s)
    return np.arange(s) / s


def fno_forcing(s: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """The FNO benchmark's forcing f = 0.1 [sin 2 pi (x + y) + cos 2 pi (x + y)], `[s, s]`.

    It has zero mean and depends on x + y only, so u . grad f = 0 for the velocity of any
    multiple of f: w* = f / (8 pi^2 nu) is an exact steady solution.
    """
    x = torch.as_tensor(grid(s), dtype=torch.float64, device=device)
    phase = 2.0 * math.pi * (x[:, None] + x[None, :])
    return (0.1 * (torch.sin(phase) + torch.cos(phase))).to(dtype)


def kolmogorov_forcing(
    s: int, k: int = 4, scale: float = 1.0, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """Vorticity forcing of the Kolmogorov body force F = (scale sin(2 pi k y), 0), `[s, s]`.

    The vorticity forcing is curl F = -dF_x/dy = -2 pi k scale cos(2 pi k y) (varying along the
    last axis, y). With linear drag the laminar flow u = scale sin(2 pi k y) / (nu (2 pi k)^2
    + drag), v = 0, i.e. w = f / (nu (2 pi k)^2 + drag), is steady and exact. On the unit torus
    this is jax-cfd's `kolmogorov_forcing` on [0, 2 pi)^2 with its wavenumber k, rescaled.
    """
    _check_s(s)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (the forcing wavenumber), got {k!r}")
    if 3 * k >= s:
        raise ValueError(f"k = {k} is removed by the 2/3-rule on s = {s}: use s > 3 k")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    y = torch.as_tensor(grid(s), dtype=torch.float64, device=device)
    f = -2.0 * math.pi * k * scale * torch.cos(2.0 * math.pi * k * y)
    return f[None, :].expand(s, s).contiguous().to(dtype)


def grf(
    n: int,
    s: int,
    alpha: float = 2.5,
    tau: float = 7.0,
    sigma: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> Tensor:
    """`n` samples `[n, s, s]` of the FNO initial-vorticity Gaussian random field.

    The covariance operator is sigma^2 (-lap + tau^2)^(-alpha) with zero mean, sigma =
    tau^(alpha - 1) by default (FNO's tau^(0.5 (2 alpha - d)), d = 2). So the field's Fourier
    coefficients c_m (w = sum_m c_m exp(2 pi i m . x)) are independent up to the Hermitian
    symmetry of a real field, with E|c_m|^2 = sigma^2 (4 pi^2 |m|^2 + tau^2)^(-alpha) for
    m != 0 and c_0 = 0; the grid variance of w is the sum of these over the s x s modes. This
    is the distribution of the FNO generator's samples (`random_fields.GaussianRF`: complex
    white noise times s^2 sqrt(2) sigma (...)^(-alpha/2), inverse FFT, real part).

    Here the field is real white noise on the grid filtered by the covariance's square root.
    The noise is drawn on the CPU from a generator seeded with `seed`, so a seed gives the same
    fields on every device.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (number of samples), got {n!r}")
    _check_s(s)
    for name, value in (("alpha", alpha), ("tau", tau)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if sigma is None:
        sigma = tau ** (alpha - 1.0)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(
            f"sigma must be a finite number > 0 (or None for the default), got {sigma!r}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(n, s, s, generator=gen, dtype=torch.float64)
    mx, my = _modes(s, torch.device("cpu"))
    # E|rfft2(noise)_m|^2 = s^2, and irfft2 divides by s^2: s * sigma * sqrt(eig) gives E|c_m|^2.
    root = s * sigma * (4.0 * math.pi**2 * (mx**2 + my**2) + tau**2) ** (-alpha / 2.0)
    root[0, 0] = 0.0
    w = torch.fft.irfft2(root * torch.fft.rfft2(noise), s=(s, s))
    return w.to(dtype=dtype, device=device)


def stream_function(w: Tensor) -> Tensor:
    """psi with -lap psi = w and zero mean, for vorticity `w` `[..., s, s]` (the mean of w is
    ignored: on the torus a field with nonzero mean has no stream function)."""
    w = _as_field(w, "w")
    ops = _Operators(w.shape[-1], w.device)
    return torch.fft.irfft2(ops.inv_k2 * torch.fft.rfft2(w), s=w.shape[-2:])


def velocity(w: Tensor) -> tuple[Tensor, Tensor]:
    """Velocity (u, v) = (psi_y, -psi_x) of vorticity `w` `[..., s, s]`, each `[..., s, s]`."""
    w = _as_field(w, "w")
    ops = _Operators(w.shape[-1], w.device)
    psi_h = ops.inv_k2 * torch.fft.rfft2(w)
    uv = torch.fft.irfft2(torch.stack((ops.iky * psi_h, -ops.ikx * psi_h)), s=w.shape[-2:])
    return uv[0], uv[1]


def advection(w: Tensor, dealias: bool = True) -> Tensor:
    """The advection term u . grad w of vorticity `w` `[..., s, s]`, as the solver forms it
    (with `dealias`, its modes outside the 2/3-rule square are removed)."""
    w = _as_field(w, "w")
    ops = _Operators(w.shape[-1], w.device)
    n_h = ops.advection(torch.fft.rfft2(w), dealias)
    return torch.fft.irfft2(n_h, s=w.shape[-2:])


def solve_vorticity(
    w0: Tensor,
    forcing: Tensor | None,
    nu: float,
    t_final: float,
    n_snapshots: int,
    dt: float = 1e-4,
    scheme: str = "heun",
    drag: float = 0.0,
    dealias: bool = True,
) -> tuple[np.ndarray, Tensor]:
    """Integrate the vorticity equation from `w0` with fixed steps, recording snapshots.

    Arguments:
        w0: initial vorticity `[B, s, s]` (x first), real; computed in float64 on its device.
        forcing: vorticity forcing f, `[s, s]` (shared) or `[B, s, s]`, constant in time;
            None for no forcing.
        nu: kinematic viscosity, >= 0 (0 integrates the Euler equations; keep `dealias`).
        t_final: final time, > 0; t_final / dt must be an integer number of steps (to 1e-9).
        n_snapshots: number of equally spaced recorded times t_final * i / n_snapshots,
            i = 1..n_snapshots (t = 0 is not recorded, as in the FNO data: w0 is the input).
            It must divide the number of steps.
        dt: time step (FNO: 1e-4).
        scheme: "euler" (the FNO generator's scheme, order 1), "heun" (order 2) or "cnab2"
            (order 2, one advection evaluation per step); see the module docstring.
        drag: linear damping coefficient (the term -drag w), >= 0; 0 for the FNO benchmark.
        dealias: apply the 2/3 rule to the advection term.

    Returns:
        `(times, w)`: the recorded times, float64 `[n_snapshots]`, and the vorticity there,
        float64 `[B, n_snapshots, s, s]` on w0's device.
    """
    w0 = _as_field(w0, "w0")
    if w0.ndim != 3:
        raise ValueError(
            f"w0 must have shape [B, s, s], got {tuple(w0.shape)}: add a batch axis (w0[None])"
        )
    b, s = w0.shape[0], w0.shape[-1]
    f = None
    if forcing is not None:
        f = torch.as_tensor(forcing).to(dtype=torch.float64, device=w0.device)
        if f.shape not in ((s, s), (b, s, s)):
            raise ValueError(
                f"forcing must have shape [{s}, {s}] or [{b}, {s}, {s}] to match w0, got "
                f"{tuple(f.shape)}"
            )
        if not torch.all(torch.isfinite(f)):
            raise ValueError("forcing must be finite")
    _check_real(nu, "nu", allow_zero=True)
    _check_real(drag, "drag", allow_zero=True)
    _check_real(t_final, "t_final")
    _check_real(dt, "dt")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    if not isinstance(n_snapshots, (int, np.integer)) or isinstance(n_snapshots, bool):
        raise ValueError(f"n_snapshots must be an integer >= 1, got {n_snapshots!r}")
    if n_snapshots < 1:
        raise ValueError(f"n_snapshots must be >= 1, got {n_snapshots}")
    steps = round(t_final / dt)
    if steps < 1 or abs(steps * dt - t_final) > 1e-9 * t_final:
        raise ValueError(
            f"t_final / dt = {t_final / dt!r} is not a whole number of steps: choose dt = "
            f"t_final / n for an integer n (t_final = {t_final!r}, dt = {dt!r})"
        )
    if steps % n_snapshots:
        raise ValueError(
            f"n_snapshots = {n_snapshots} must divide the {steps} steps (t_final / dt): change "
            "n_snapshots, t_final or dt"
        )
    per_snap = steps // n_snapshots

    ops = _Operators(s, w0.device)
    # CN: (1 - dt L/2) w^{n+1} = (1 + dt L/2) w^n + dt (f - N), i.e.
    # w^{n+1} = a w^n + c f - c N with a = (1 + dt L/2) / (1 - dt L/2), c = dt / (1 - dt L/2).
    lin = -(nu * ops.k2 + drag)
    c = dt / (1.0 - 0.5 * dt * lin)
    a = (1.0 + 0.5 * dt * lin) * (c / dt)
    cf = c * torch.fft.rfft2(f) if f is not None else torch.zeros_like(c)
    half_c = 0.5 * c

    out = torch.empty((b, n_snapshots, s, s), dtype=torch.float64, device=w0.device)
    w_h = torch.fft.rfft2(w0)
    # Updates are in place, into buffers reused every step: at 64^2 a fresh allocation per
    # operation costs as much time (page faults) as the FFTs.
    n_now, n_other = torch.empty_like(w_h), torch.empty_like(w_h)
    first = True
    for snap in range(n_snapshots):
        for _ in range(per_snap):
            ops.advection(w_h, dealias, out=n_now)
            w_h.mul_(a).add_(cf)  # the CN step without the advection term
            if scheme == "euler":
                w_h.addcmul_(c, n_now, value=-1.0)
            elif scheme == "heun" or first:
                w_h.addcmul_(c, n_now, value=-1.0)  # predictor: the euler step
                ops.advection(w_h, dealias, out=n_other)
                w_h.addcmul_(half_c, n_now).addcmul_(half_c, n_other, value=-1.0)
            else:  # cnab2; n_other holds N(w^{n-1})
                w_h.addcmul_(c, n_now, value=-1.5).addcmul_(c, n_other, value=0.5)
            if scheme == "cnab2":
                n_now, n_other = n_other, n_now
            first = False
        out[:, snap] = torch.fft.irfft2(w_h, s=(s, s))
    times = dt * per_snap * np.arange(1, n_snapshots + 1, dtype=np.float64)
    return times, out


class _Operators:
    """Spectral multipliers on the rfft2 half-plane `[s, s // 2 + 1]` of an s x s grid, and the
    work buffers of the advection term."""

    def __init__(self, s: int, device: torch.device) -> None:
        self.s = s
        mx, my = _modes(s, device)
        self.k2 = 4.0 * math.pi**2 * (mx**2 + my**2)
        self.inv_k2 = torch.where(self.k2 > 0, 1.0 / torch.where(self.k2 > 0, self.k2, 1.0), 0.0)
        # Derivative multipliers i 2 pi m, zero on the Nyquist mode (not representable).
        nyq = s // 2 if s % 2 == 0 else s
        self.ikx = 2j * math.pi * torch.where(mx.abs() == nyq, 0.0, mx)
        self.iky = 2j * math.pi * torch.where(my.abs() == nyq, 0.0, my)
        # w_h -> (u, v, w_x, w_y) spectra: (psi_y, -psi_x) with psi_h = w_h / |2 pi m|^2
        self.to_uvxy = torch.stack(
            torch.broadcast_tensors(
                self.iky * self.inv_k2, -self.ikx * self.inv_k2, self.ikx, self.iky
            )
        )
        self.keep = ((3 * mx.abs() < s) & (3 * my.abs() < s)).to(torch.float64)
        self._work: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def advection(self, w_h: Tensor, dealias: bool, out: Tensor | None = None) -> Tensor:
        """rfft2 of u . grad w, from w's rfft2 `[..., s, s // 2 + 1]` (into `out` if given)."""
        batch = w_h.shape[:-2]
        if self._work is None or self._work[0].shape[1:] != w_h.shape:
            spec = torch.empty((4, *w_h.shape), dtype=w_h.dtype, device=w_h.device)
            phys = torch.empty((4, *batch, self.s, self.s), dtype=torch.float64, device=w_h.device)
            self._work = (spec, torch.empty_like(spec), phys, torch.empty_like(phys[0]))
        spec, spec_y, phys, prod = self._work
        if out is None:
            out = torch.empty_like(w_h)
        to_uvxy = self.to_uvxy.reshape(4, *(1,) * len(batch), *self.to_uvxy.shape[1:])
        torch.mul(to_uvxy, w_h, out=spec)
        if spec.numel() < SPLIT_FFT_ABOVE:
            torch.fft.irfft2(spec, s=(self.s, self.s), out=phys)
        else:
            # As 1-D transforms into fixed buffers, the first one field by field: torch
            # allocates temporaries the size of the input for a 2-D c2r or a transform along
            # dim -2, and when they are large glibc returns them to the OS and faults them back
            # in on every call (at 64^2 x 100 fields that doubled the time per step).
            for i in range(4):
                torch.fft.ifft(spec[i], dim=-2, out=spec_y[i])
            torch.fft.irfft(spec_y, n=self.s, dim=-1, out=phys)
        u, v, wx, wy = phys
        torch.mul(u, wx, out=prod).addcmul_(v, wy)
        if spec.numel() < SPLIT_FFT_ABOVE:
            torch.fft.rfft2(prod, out=out)
        else:
            half = spec_y[0]
            torch.fft.rfft(prod, dim=-1, out=half)
            torch.fft.fft(half, dim=-2, out=out)
        return out.mul_(self.keep) if dealias else out


def _modes(s: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Integer wavenumbers m_x `[s, 1]` (FFT order) and m_y `[1, s // 2 + 1]` (rfft order)."""
    mx = torch.fft.fftfreq(s, d=1.0 / s, dtype=torch.float64, device=device)
    my = torch.fft.rfftfreq(s, d=1.0 / s, dtype=torch.float64, device=device)
    return mx[:, None], my[None, :]


def _check_s(s: int, name: str = "s") -> None:
    if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < MIN_S:
        raise ValueError(f"{name} must be an integer grid size >= {MIN_S}, got {s!r}")


def _check_real(value: float, name: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _as_field(w: Tensor, name: str) -> Tensor:
    w = torch.as_tensor(w)
    if w.is_complex() or w.dtype == torch.bool:
        raise ValueError(f"{name} must be a real field, got dtype {w.dtype}")
    if w.ndim < 2 or w.shape[-1] != w.shape[-2]:
        raise ValueError(f"{name} must have shape [..., s, s] (square grid), got {tuple(w.shape)}")
    _check_s(w.shape[-1], f"the grid size of {name}")
    w = w.to(torch.float64)
    if not torch.all(torch.isfinite(w)):
        raise ValueError(f"{name} must be finite")
    return w


def resample(w: Tensor, s: int) -> Tensor:
    """Periodic fields `[..., m, m]` on the s x s grid by Fourier truncation (s < m) or
    zero-padding (s > m); the Nyquist modes of the smaller even grid are dropped (a real grid
    cannot hold both of their signs). The identity when s == m."""
    m = w.shape[-1]
    if s == m:
        return w
    c = torch.fft.rfft2(w)
    out = torch.zeros((*w.shape[:-2], s, s // 2 + 1), dtype=c.dtype, device=c.device)
    k = (min(m, s) + 1) // 2  # modes 0..k-1 and -(k-1)..-1 per axis
    out[..., :k, :k] = c[..., :k, :k]
    if k > 1:
        out[..., -(k - 1) :, :k] = c[..., -(k - 1) :, :k]
    return torch.fft.irfft2(out * (s / m) ** 2, s=(s, s))
