"""Closed forms of the focusing NLSE i psi_t + 1/2 psi_xx + |psi|^2 psi = 0 used by the NLSE
problems (`problems/nlse.py`, `problems/nlse_op.py`): the moving soliton, the Akhmediev
breather, the modulational-instability growth rate and the two-soliton collision shifts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["akhmediev", "collision_shifts", "mi_growth_rate", "sech", "soliton"]


# -- formulas, written once for numpy and torch (`xp` is the module) ---------------------------
def sech(z: Any, xp: Any) -> Any:
    """sech z without overflow for large |z|."""
    e = xp.exp(-abs(z))
    return 2.0 * e / (1.0 + e * e)


def soliton(x: Any, t: Any, amplitude: float, position: float, velocity: float, xp: Any = np):
    """The moving sech soliton, `(re, im)`:
    psi = A sech(A (x - x0 - v t)) exp(i [v x + (A^2 - v^2) t / 2]).
    """
    a, v = amplitude, velocity
    mod = a * sech(a * (x - position - v * t), xp)
    phase = v * x + 0.5 * (a * a - v * v) * t
    return mod * xp.cos(phase), mod * xp.sin(phase)


def akhmediev(x: Any, t: Any, a: float, xp: Any = np):
    """The Akhmediev breather, `(re, im)`, with its peak at t = 0:
    psi = [(1 - 4a) cosh(bt) + sqrt(2a) cos(wx) + i b sinh(bt)] / [sqrt(2a) cos(wx) - cosh(bt)]
          * exp(i t),   w = 2 sqrt(1 - 2a),  b = sqrt(8a (1 - 2a)),  0 < a < 1/2.
    It tends to the plane wave exp(i t) (|psi| = 1) as t -> +-inf; |psi(0, 0)| = 1 + 2 sqrt(2a).
    """
    w, b, s = 2.0 * math.sqrt(1.0 - 2.0 * a), math.sqrt(8.0 * a * (1.0 - 2.0 * a)), math.sqrt(2 * a)
    ch, sh = xp.cosh(b * t), xp.sinh(b * t)
    den = s * xp.cos(w * x) - ch  # < 0 everywhere since s < 1 <= cosh
    num_re = (1.0 - 4.0 * a) * ch + s * xp.cos(w * x)
    num_im = b * sh
    c, sn = xp.cos(t), xp.sin(t)
    return (num_re * c - num_im * sn) / den, (num_re * sn + num_im * c) / den


def mi_growth_rate(k: float | np.ndarray, power: float) -> np.ndarray:
    """Linear MI growth rate of a plane wave of power P0 = |psi|^2 against a perturbation of
    wavenumber k: sigma = |k|/2 sqrt(4 P0 - k^2) inside the band |k| < 2 sqrt(P0), else 0.
    The maximum, sigma = P0, is at k = sqrt(2 P0)."""
    k = np.abs(np.asarray(k, dtype=np.float64))
    return 0.5 * k * np.sqrt(np.clip(4.0 * power - k * k, 0.0, None))


def collision_shifts(amplitudes: Sequence[float], velocities: Sequence[float]) -> np.ndarray:
    """Position shifts `(dx1, dx2)` of two solitons after one collision on the whole line:
    dx1 = s ln(R) / A1, dx2 = -s ln(R) / A2, s = sign(v1 - v2),
    R = [(v1 - v2)^2 + (A1 + A2)^2] / [(v1 - v2)^2 + (A1 - A2)^2],
    i.e. each soliton is pushed forward along its motion relative to the other (Zakharov–Shabat
    eigenvalues (-v_j + i A_j)/2; research notes 2b, checked here numerically)."""
    (a1, a2), (v1, v2) = amplitudes, velocities
    ln_r = math.log(((v1 - v2) ** 2 + (a1 + a2) ** 2) / ((v1 - v2) ** 2 + (a1 - a2) ** 2))
    sign = 1.0 if v1 > v2 else -1.0
    return np.array([sign * ln_r / a1, -sign * ln_r / a2])
