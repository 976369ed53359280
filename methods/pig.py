"""Physics-Informed Gaussians (Kang, Oh, Hong & Park, ICLR 2025; arXiv 2412.05994).

A PINN whose net is a trainable Gaussian feature embedding followed by a very small MLP
(`methods.gaussians.PIGNet`): means, per-axis widths and weights of every Gaussian are trained with
the net, on the same residual loss as the PINN. Everything else (points, conditions, hard
constraints, the Adam/L-BFGS loop, the budget) is the PINN's; only the net and the defaults
differ. The forward-mode backend (`derivatives: auto`) takes the embedding's derivatives in
closed form (matmuls of the one Gaussian tensor with per-Gaussian coefficients); `autograd`
differentiates the same forward pass by nested autograd.

The paper's Helmholtz protocol (`Helmholtz2d/helmholtz2d_pig.sh`): 800 Gaussians in each of 4
channels, sigma 0.1 on [-1, 1]^2, one hidden layer of 16 tanh units, L-BFGS (strong Wolfe, lr 1)
from the start, 10k collocation points redrawn every 20 L-BFGS iterations (torch's `step` with
its default `max_iter=20`; its curvature pairs carry over to the new points).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.gaussians import build_pig_net
from methods.pinn import PINN, _int, _real
from problems.base import Problem

__all__ = ["PIG"]

# PIG's own defaults for PINN options (conf/method/pig.yaml): the paper's Helmholtz protocol
DEFAULTS = dict(width=16, depth=1, lr=1e-2, decay_steps=2000, adam_steps=0, lbfgs_history=100,
                compile=False)  # fmt: skip


class PIG(PINN):
    """PIG: the PINN's options (see `methods.pinn.PINN`), with a Gaussian embedding as the net.

    Arguments:
        n_gaussians: Gaussians per channel.
        channels: embedding channels (each with its own Gaussians), the MLP's input width.
        sigma_init: initial width of every Gaussian, on coordinates normalised to [-1, 1].
        width, depth: the MLP after the embedding (hidden units, hidden layers).
        max_elements: most entries of the Gaussian tensor (channels x points x Gaussians) held at
            once under autograd; larger batches are chunked and recomputed in the backward pass.
        max_dim: problems with more inputs are not applicable (a Gaussian of width sigma in
            d dimensions covers a vanishing fraction of the box: the paper goes up to 3).
        **pinn: every other PINN option (optimiser, points, weights, hard constraints...).
    """

    name = "pig"
    fixed_keys = ("net", "fourier_features", "fourier_scale")  # the net is the embedding

    smoke = {"n_gaussians": 48}  # the CI smoke grid: 4 x 48 Gaussians, seconds per cell

    def __init__(
        self,
        n_gaussians: int = 800,
        channels: int = 4,
        sigma_init: float = 0.1,
        max_elements: int = 2**24,
        max_dim: int = 4,
        **pinn: Any,
    ) -> None:
        super().__init__(**{**DEFAULTS, **pinn})
        self.n_gaussians = _int("n_gaussians", n_gaussians, 1)
        self.channels = _int("channels", channels, 1)
        self.sigma_init = _real("sigma_init", sigma_init, 0.0)
        self.max_elements = _int("max_elements", max_elements, 1)
        self.max_dim = _int("max_dim", max_dim, 1)

    def applicable(self, problem: Problem) -> str | None:
        reason = super().applicable(problem)
        if reason is None and len(problem.axes) > self.max_dim:
            return (
                f"method 'pig' covers the input box with Gaussians, which cannot resolve a "
                f"{len(problem.axes)}-dimensional problem (max_dim={self.max_dim}); set "
                "method.max_dim to run it anyway"
            )
        return reason

    def build_net(self, problem: Problem) -> nn.Module:
        return build_pig_net(
            problem.domain,
            len(problem.fields),
            n_gaussians=self.n_gaussians,
            channels=self.channels,
            sigma_init=self.sigma_init,
            width=self.width,
            depth=self.depth,
            activation=self.activation,
            generator=self.generator(1),
            dtype=self.dtype,
            device=torch.device(self.device),
            max_elements=self.max_elements,
        )
