"""`fno`: the Fourier neural operator (Li et al., ICLR 2021; arXiv 2010.08895), 1-D and 2-D.

lift (1x1 conv) -> `layers` Fourier layers, each `SpectralConv` (the lowest `modes` modes per
axis) plus a pointwise 1x1 conv, GELU between layers (none after the last) -> projection
(1x1 conv to `proj` channels, GELU, 1x1 conv to the output fields). This is PDEBench's FNO1d /
FNO2d (`pdebench/models/fno/fno.py`) written with 1x1 convs, which are its `nn.Linear` layers
applied per grid point, with the same default initialisation.

Training is the shared autoregressive protocol of `methods.operator` with PDEBench's optimiser
(Adam, lr 1e-3, weight decay 1e-4, StepLR halving every 100 epochs). Deviations from PDEBench:
- the loss is the per-sample relative L2 of Li et al. (PDEBench sums per-step MSEs), so that
  fields of any scale train alike;
- no zero padding before the FFT (PDEBench pads 2 points, for non-periodic data; our operator
  problems are periodic);
- inputs are normalised per channel with training statistics (PDEBench feeds raw values);
- checkpoints are selected on the validation split (PDEBench saves the best on its test
  loader);
- `width` 34 instead of 20, so that `fno` and `dymixop` have the same parameter count
  (within 3 %) on the 1-D benchmarks (`ks`, `burgers_op`); `width: 20` is PDEBench's.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from methods.nets import SpectralConv
from methods.operator import OperatorMethod
from problems.base import OperatorData, check_int

__all__ = ["FNO", "FNONet"]


def conv1x1(dim: int, c_in: int, c_out: int) -> nn.Module:
    return (nn.Conv1d if dim == 1 else nn.Conv2d)(c_in, c_out, 1)


class FNONet(nn.Module):
    """`[B, in_ch, *grid] -> [B, out_ch, *grid]` on a 1-D or 2-D periodic grid."""

    def __init__(
        self, in_ch: int, out_ch: int, dim: int, width: int, modes: int, layers: int, proj: int
    ) -> None:
        super().__init__()
        self.lift = conv1x1(dim, in_ch, width)
        self.spectral = nn.ModuleList(SpectralConv(width, width, modes, dim) for _ in range(layers))
        self.pointwise = nn.ModuleList(conv1x1(dim, width, width) for _ in range(layers))
        self.proj = nn.Sequential(conv1x1(dim, width, proj), nn.GELU(), conv1x1(dim, proj, out_ch))
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.lift(x)
        last = len(self.spectral) - 1
        for i, (spec, point) in enumerate(zip(self.spectral, self.pointwise)):
            x = spec(x) + point(x)
            if i < last:
                x = self.act(x)
        return self.proj(x)


class FNO(OperatorMethod):
    """The Fourier neural operator.

    Arguments:
        width: channels of the Fourier layers.
        modes: Fourier modes kept per axis.
        layers: Fourier layers.
        proj: channels of the projection's hidden layer (PDEBench's `fc1`: 128).
        **common: the shared operator-training options (`methods.operator.OperatorMethod`).
    """

    name = "fno"

    smoke: ClassVar[dict[str, Any]] = {
        "width": 8,
        "modes": 6,
        "proj": 16,
        "batch_size": 4,
        "rollout_train": 1,
        "val_every": 200,
    }

    def __init__(
        self,
        width: int = 34,
        modes: int = 12,
        layers: int = 4,
        proj: int = 128,
        **common: Any,
    ) -> None:
        defaults = dict(optimizer="adam", lr=1e-3, weight_decay=1e-4, lr_step=100, lr_gamma=0.5)
        super().__init__(**{**defaults, **common})
        self.width = check_int("method.width", width)
        self.modes = check_int("method.modes", modes)
        self.layers = check_int("method.layers", layers)
        self.proj = check_int("method.proj", proj)

    def build_net(
        self,
        in_channels: int,
        out_channels: int,
        dim: int,
        grid: tuple[int, ...],
        data: OperatorData,
    ) -> nn.Module:
        SpectralConv.check_modes("method.modes", self.modes, grid)
        return FNONet(
            in_channels, out_channels, dim, self.width, self.modes, self.layers, self.proj
        )
