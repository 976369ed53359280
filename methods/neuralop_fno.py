"""`neuralop_fno`: the `neuraloperator` package's own FNO (`neuralop.models.FNO`) as a peer row
beside our `fno` (the optional extra `compare`: `pip install -e .[compare]`).

Only the net is neuralop's. Everything else is `methods.operator`'s, shared with `fno`: data
windows, per-channel normalisation, coordinate channels, the autoregressive rollout loss,
the optimiser and its schedule, the minibatch loop and validation-only checkpoint selection.
`width`, `modes` and `layers` have `fno`'s defaults, and so do the training settings, so a
difference between the two rows is the difference between the nets.

How neuralop's FNO (its defaults, read from `neuralop/models/fno.py` and
`neuralop/layers/`) differs from ours (`methods/fno.py`):
- Modes: neuralop's `n_modes` counts frequencies of both signs on an axis, and keeps
  `n_modes // 2 + 1` on the last (real-FFT) axis. We pass `2 * modes - 1` on the last axis
  and `2 * modes` on the first axis in 2-D, so that it keeps the same frequencies as ours:
  `0..modes-1` on the last axis, `-modes..modes-1` on the first.
- Lifting: a two-layer channel MLP (to `2 * width` channels, GELU, to `width`); ours is one
  1x1 convolution.
- Projection: a two-layer channel MLP through `2 * width` hidden channels; ours through
  `proj` (128).
- Each Fourier layer: the spectral convolution (complex weights drawn from a normal
  distribution of standard deviation `sqrt(1 / width)`, plus a bias of its own) plus a
  linear skip (a 1x1 convolution without bias), GELU, then a channel MLP (`width` to about
  `width / 2` to `width`, GELU) plus a soft-gating skip (a learned per-channel scale), GELU
  again; neither GELU after the last layer. Ours: the spectral convolution (complex weights
  uniform in `[0, 1/width^2)` per component) plus a 1x1 convolution with bias, GELU between
  layers (none after the last); no channel MLP. neuralop's net therefore has more parameters
  at the same `width`.
- Padding and normalisation: none in either (neuralop's `domain_padding` and `norm` are
  off by default).
- Coordinates: neuralop appends a grid embedding to its input by default; we turn it off,
  since our shared step model already appends one coordinate channel per axis.
- Precision: neuralop's spectral layers compute in complex64 whatever the model's dtype,
  so this row runs in float32 only (`dtype=auto` or `float32`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from methods.base import Budget, Report
from methods.nets import SpectralConv
from methods.operator import OperatorMethod, TorchOperatorPredictor
from problems.base import ConfigError, OperatorData, Problem, check_int

__all__ = ["NeuralopFNO"]


def _neuralop_fno() -> type[nn.Module]:
    """`neuralop.models.FNO`, imported on first use (its import changes no warning filter of
    ours: neuralop sets UserWarnings to `once` at import)."""
    with warnings.catch_warnings():
        from neuralop.models import FNO
    return FNO


class NeuralopFNO(OperatorMethod):
    """neuralop's FNO trained by the shared operator protocol.

    Arguments:
        width: neuralop's `hidden_channels`.
        modes: Fourier modes kept per axis, as in our `fno` (see the module doc for neuralop's
            `n_modes`).
        layers: neuralop's `n_layers`.
        **common: the shared operator-training options (`methods.operator.OperatorMethod`).
    """

    name = "neuralop_fno"
    extra: ClassVar[tuple[str, str] | None] = ("compare", "neuralop")

    smoke: ClassVar[dict[str, Any]] = {
        "width": 8,
        "modes": 6,
        "batch_size": 4,
        "rollout_train": 1,
        "val_every": 200,
    }

    def __init__(self, width: int = 34, modes: int = 12, layers: int = 4, **common: Any) -> None:
        defaults = dict(optimizer="adam", lr=1e-3, weight_decay=1e-4, lr_step=100, lr_gamma=0.5)
        super().__init__(**{**defaults, **common})
        self.width = check_int("method.width", width)
        self.modes = check_int("method.modes", modes)
        self.layers = check_int("method.layers", layers)

    def fit(self, problem: Problem, budget: Budget, report: Report) -> TorchOperatorPredictor:
        t0 = time.perf_counter()
        _neuralop_fno()
        report.exclude("import", time.perf_counter() - t0)
        return super().fit(problem, budget, report)

    def build_net(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        grid: tuple[int, ...],
        data: OperatorData,
    ) -> nn.Module:
        if self.dtype != torch.float32:
            raise ConfigError(
                "neuralop's FNO computes its spectral layers in complex64 whatever the model's "
                f"dtype: run method 'neuralop_fno' with dtype=float32 or auto, not {self.dtype}"
            )
        SpectralConv.check_modes("method.modes", self.modes, grid)
        n_modes = (2 * self.modes,) * (dim - 1) + (2 * self.modes - 1,)
        return _neuralop_fno()(
            n_modes=n_modes,
            in_channels=in_channels,
            out_channels=out_channels,
            hidden_channels=self.width,
            n_layers=self.layers,
            positional_embedding=None,
        )
