"""The trainable Gaussian feature embedding of Physics-Informed Gaussians (Kang et al., ICLR
2025) and the PIG net built on it, with the embedding's derivatives in closed form.

The exponent of every Gaussian is a quadratic in the coordinates, `[x^2, x, 1] @ coef`, so the
embedding's values and its first and second derivatives are polynomials in x whose
coefficients are matmuls of the one Gaussian tensor with per-Gaussian columns. The forward-mode
backend (`methods/taylor.py`) reads them through `GaussianEmbedding.jet`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from methods.nets import ACTIVATIONS, MLP, Normalize
from problems.base import Box, ConfigError

__all__ = ["GaussianEmbedding", "PIGNet", "build_pig_net"]

FUSED_ELEMENTS = 2**17  # Gaussian-tensor entries per chunk of the fused kernel (1 MB: in cache)
# Below float64 the Gaussian tensor drops terms under exp(EXP_FLOOR) ~ 1.9e-22, exactly: at least
# 1e14 below float32's resolution of any sum they enter. Computed, they are where float32 CPU
# kernels are slowest: torch's exp takes a slow path for arguments whose result underflows
# (below about -87), and products of such tails with gradients are subnormal numbers, which
# make the backward pass's batched matmuls many times slower.
EXP_FLOOR = -50.0
EXP_CUT = math.exp(EXP_FLOOR + 0.01)  # values at or under it are the floored ones: zero


def _gauss_exp(e: Tensor, inplace: bool = False) -> Tensor:
    """exp(e) of a Gaussian exponent; below float64, zero where e < EXP_FLOOR + 0.01 (`inplace`:
    e is the fused kernel's own buffer, and no autograd graph is recorded)."""
    if e.dtype == torch.float64:
        return torch.exp(e)
    if inplace:
        return F.threshold_(torch.exp_(e.clamp_min_(EXP_FLOOR)), EXP_CUT, 0.0)
    return F.threshold(torch.exp(e.clamp_min(EXP_FLOOR)), EXP_CUT, 0.0)


def _gauss_contract(xn: Tensor, coef: Tensor, C: Tensor) -> Tensor:
    """`exp([xn^2, xn, 1] @ coef^T) @ C`: `[c, N, m]` from points `[N, d]`, exponent
    coefficients `[c, n, 2d + 1]` and columns `[c, n, m]` (plain autograd operations)."""
    return _gauss_exp(_quad_features(xn) @ coef.transpose(1, 2)) @ C


def _quad_features(xn: Tensor) -> Tensor:
    return torch.cat([xn * xn, xn, torch.ones_like(xn[:, :1])], dim=1)  # [N, 2d + 1]


class _GaussContract(torch.autograd.Function):
    """`_gauss_contract` for points that need no gradient, fused: the Gaussian tensor exists only
    `rows` points at a time, in cache, and is recomputed in the backward pass instead of being
    stored. On a CPU this is memory-bound work, so passes over memory are what cost."""

    @staticmethod
    def forward(ctx, feats, coef, C, rows):  # type: ignore[override]
        coef_t = coef.transpose(1, 2)
        parts = [_gauss_exp(f @ coef_t, inplace=True) @ C for f in feats.split(rows)]
        ctx.save_for_backward(feats, coef, C)
        ctx.rows = rows
        return torch.cat(parts, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, gS):  # type: ignore[override]
        feats, coef, C = ctx.saved_tensors
        coef_t, C_t = coef.transpose(1, 2), C.transpose(1, 2)
        g_coef, g_C = torch.zeros_like(coef), torch.zeros_like(C)
        for f, g in zip(feats.split(ctx.rows), gS.split(ctx.rows, dim=1)):
            phi = _gauss_exp(f @ coef_t, inplace=True)  # [c, r, n]
            g_C.baddbmm_(phi.transpose(1, 2), g)
            g_phi = torch.bmm(g, C_t).mul_(phi)  # d/dE of exp: times phi
            g_coef.baddbmm_(g_phi.transpose(1, 2), f.expand(len(coef), -1, -1))
        return None, g_coef, g_C, None


class GaussianEmbedding(nn.Module):
    """The trainable Gaussian feature embedding of Physics-Informed Gaussians (Kang et al. 2025).

    Channel `c` of the embedding is `sum_i w_ci exp(-1/2 sum_d ((x_d - mu_cid) / sigma_cid)^2)`
    over its own `n` Gaussians (diagonal covariances), on coordinates normalised to [-1, 1]; the
    official code gives every channel its own set, as here. Means ~ U(-1, 1), sigma =
    `sigma_init`, weights ~ N(0, 0.01^2), as in the paper's code.

    The exponent is `[x^2, x, 1] @ coef`: one matmul, and one `exp` over `[c, N, n]`. The values
    and every derivative of the embedding with respect to the coordinates are then matmuls of
    that same tensor with small per-Gaussian coefficient columns (`jet` below), so the largest
    tensor is `c x N x n` whatever the derivative order, and at most `max_elements` of it exist
    at once under autograd: larger batches run in chunks that are recomputed in the backward
    pass (checkpointing).
    """

    def __init__(
        self,
        in_dim: int,
        channels: int,
        n: int,
        sigma_init: float,
        generator: torch.Generator | None = None,
        max_elements: int = 2**24,
    ) -> None:
        super().__init__()
        f64 = torch.float64
        self.mu = nn.Parameter(
            2 * torch.rand(channels, n, in_dim, generator=generator, dtype=f64) - 1
        )
        self.sigma = nn.Parameter(torch.full((channels, n, in_dim), float(sigma_init), dtype=f64))
        self.weight = nn.Parameter(0.01 * torch.randn(channels, n, generator=generator, dtype=f64))
        self.max_elements = max_elements

    @property
    def channels(self) -> int:
        return self.weight.shape[0]

    def jet(
        self, xn: Tensor, scale: Tensor, axes: Sequence[int], pairs: Sequence[tuple[int, int]]
    ) -> Tensor:
        """Values and derivatives with respect to the raw coordinates (`xn = x * scale + shift`)
        at `xn` `[N, d]`: `[c, 1 + len(axes) + len(pairs), N]`, rows as in `methods.jets.Plan`
        (values, first derivatives along `axes`, second derivatives for `pairs`)."""
        a = self.sigma.square().reciprocal()  # [c, n, d]
        w, mu = self.weight[..., None], self.mu  # [c, n, 1], [c, n, d]
        am = a * mu
        # the exponent -1/2 sum_d a_d (x_d - mu_d)^2 as [x^2, x, 1] @ coef
        coef = torch.cat([-0.5 * a, am, -0.5 * (am * mu).sum(-1, keepdim=True)], dim=-1)
        # d/dx_d sum_i w phi = -x_d sum w a_d phi + sum w a_d mu_d phi; the second derivatives
        # likewise: polynomials in x whose coefficients are matmuls of phi with these columns
        cols, terms = [w], []  # terms: per row, [(polynomial in x or None, column)]
        for d in axes:
            cols += [w * a[..., d : d + 1], w * am[..., d : d + 1]]
            terms.append([(-xn[:, d], len(cols) - 2), (None, len(cols) - 1)])
        for d, e in pairs:
            ad, ae = a[..., d : d + 1], a[..., e : e + 1]
            md, me = mu[..., d : d + 1], mu[..., e : e + 1]
            n0, w2 = len(cols), w * ad * ae
            if d == e:
                cols += [w2, w2 * md, w2 * md * md - w * ad]
                terms.append([(xn[:, d] ** 2, n0), (-2 * xn[:, d], n0 + 1), (None, n0 + 2)])
            else:
                cols += [w2, w2 * me, w2 * md, w2 * md * me]
                xd, xe = xn[:, d], xn[:, e]
                terms.append([(xd * xe, n0), (-xd, n0 + 1), (-xe, n0 + 2), (None, n0 + 3)])
        S = self._contract(xn, coef, torch.cat(cols, dim=-1))  # [c, N, m]
        out = [S[..., 0]]
        for idx in terms:
            acc = None
            for poly, j in idx:
                term = S[..., j] if poly is None else S[..., j] * poly
                acc = term if acc is None else acc + term
            out.append(acc)
        k = len(axes)  # the chain rule to the raw coordinates: d/dx_d = scale_d d/dxn_d
        for r, d in enumerate(axes):
            out[1 + r] = out[1 + r] * scale[d]
        for p, (d, e) in enumerate(pairs):
            out[1 + k + p] = out[1 + k + p] * (scale[d] * scale[e])
        return torch.stack(out, dim=1)  # [c, rows, N]

    def _contract(self, xn: Tensor, coef: Tensor, C: Tensor) -> Tensor:
        """`exp([x^2, x, 1] @ coef) @ C`, `[c, N, m]`, in chunks of points that keep the
        Gaussian tensor within `max_elements` (recomputed in the backward pass under autograd)."""
        per_point = self.channels * self.weight.shape[1]
        if not xn.requires_grad:  # the forward-mode backend: fused, in cache-sized chunks
            rows = max(1, FUSED_ELEMENTS // per_point)
            return _GaussContract.apply(_quad_features(xn), coef, C, rows)
        limit = max(1, self.max_elements // per_point)
        if len(xn) <= limit:
            return _gauss_contract(xn, coef, C)
        if not torch.is_grad_enabled():
            parts = [_gauss_contract(c, coef, C) for c in xn.split(limit)]
        else:
            from torch.utils.checkpoint import checkpoint

            parts = [
                checkpoint(_gauss_contract, c, coef, C, use_reentrant=False)
                for c in xn.split(limit)
            ]
        return torch.cat(parts, dim=1)

    def forward(self, xn: Tensor) -> Tensor:
        """The embedding `[N, c]` at normalised points `xn` `[N, d]`."""
        ones = torch.ones(xn.shape[1], dtype=xn.dtype, device=xn.device)
        return self.jet(xn, ones, (), ())[:, 0].T


class PIGNet(nn.Module):
    """Physics-Informed Gaussians: raw coordinates -> `Normalize` -> `GaussianEmbedding` ->
    a small MLP (the paper's: one hidden layer of 16 tanh units)."""

    def __init__(self, norm: Normalize, embedding: GaussianEmbedding, body: MLP) -> None:
        super().__init__()
        self.norm = norm
        self.embedding = embedding
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.embedding(self.norm(x)))

    def main_weights(self) -> list[Tensor]:
        return self.body.main_weights()


def build_pig_net(
    domain: Box,
    out_dim: int,
    *,
    n_gaussians: int = 800,
    channels: int = 4,
    sigma_init: float = 0.1,
    width: int = 16,
    depth: int = 1,
    activation: str = "tanh",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    max_elements: int = 2**24,
) -> PIGNet:
    """A `PIGNet` for a problem with box `domain`: `channels` x `n_gaussians` Gaussians, then an
    MLP with `depth` hidden layers of `width` units (`max_elements`: see `GaussianEmbedding`)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    norm = Normalize(domain.lo.tolist(), domain.hi.tolist())
    emb = GaussianEmbedding(
        len(domain.axes), channels, n_gaussians, sigma_init, generator, max_elements
    )
    body = MLP(channels, out_dim, width, depth, activation, generator)
    return PIGNet(norm, emb, body).to(dtype=dtype, device=device)
