"""Shared network building blocks for pointwise methods (PINN and its variants).

A `Net` maps raw coordinates `[N, d]` to outputs `[N, k]`: it normalises the coordinates to
[-1, 1] from the problem's box (so predictors take raw points), optionally lifts them with
random Fourier features, and applies a body: a plain `MLP` or the `ModifiedMLP` of Wang, Teng &
Perdikaris (2021). The pieces are deliberately few and explicit, because the forward-mode
derivative backend (`methods/taylor.py`) propagates Taylor coefficients through exactly them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from problems.base import Box, ConfigError, TrialInput

__all__ = [
    "ACTIVATIONS",
    "NETS",
    "FourierFeatures",
    "MLP",
    "ModifiedMLP",
    "Net",
    "Normalize",
    "OutputTransform",
    "SpectralConv",
    "build_net",
]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "sin": torch.sin}
NETS = ("mlp", "modified_mlp")


def _xavier(layer: nn.Linear, generator: torch.Generator | None, bias: bool = False) -> None:
    """Xavier-normal weights; zero bias, or a Xavier-normal bias (`xavier_init([1, width])`)."""
    nn.init.xavier_normal_(layer.weight, generator=generator)
    with torch.no_grad():
        if bias:
            std = (2.0 / (1 + layer.out_features)) ** 0.5
            layer.bias.normal_(0.0, std, generator=generator)
        else:
            layer.bias.zero_()


class Normalize(nn.Module):
    """Affine map of each coordinate from `[lo, hi]` to `[-1, 1]`: `x * scale + shift`."""

    def __init__(self, lo: Sequence[float], hi: Sequence[float]) -> None:
        super().__init__()
        lo_t = torch.as_tensor(lo, dtype=torch.float64)
        hi_t = torch.as_tensor(hi, dtype=torch.float64)
        if torch.any(hi_t <= lo_t):
            raise ValueError(f"box bounds must have hi > lo, got lo={lo}, hi={hi}")
        scale = 2.0 / (hi_t - lo_t)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", -1.0 - lo_t * scale)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


class FourierFeatures(nn.Module):
    """Random Fourier features `[cos(x B), sin(x B)]` with fixed `B ~ N(0, scale^2)`, `[d, m]`."""

    def __init__(
        self, in_dim: int, n_features: int, scale: float, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        B = torch.randn(in_dim, n_features, generator=generator, dtype=torch.float64) * scale
        self.register_buffer("B", B)

    @property
    def out_dim(self) -> int:
        return 2 * self.B.shape[1]

    def forward(self, x: Tensor) -> Tensor:
        z = x @ self.B
        return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)


class MLP(nn.Module):
    """`depth` hidden layers of `width` units with activation `activation`, then a linear layer.

    Xavier-normal weights and zero biases (Glorot & Bengio; as in Raissi's PINN code).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int,
        depth: int,
        activation: str = "tanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        sizes = [in_dim] + [width] * depth + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            _xavier(layer, generator)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.layers[-1](h)

    def main_weights(self) -> list[Tensor]:
        """Weight matrices of the layer stack (what learning-rate annealing looks at)."""
        return [layer.weight for layer in self.layers]


class ModifiedMLP(nn.Module):
    """The modified MLP of Wang, Teng & Perdikaris (2021), gating from the first layer.

        U = act(X W_U + b_U),  V = act(X W_V + b_V)
        H = X;  for each hidden layer: Z = act(H W + b);  H = Z * U + (1 - Z) * V
        out = H W_out + b_out

    Encoder biases are Xavier-initialised like their code; all other biases start at zero.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int,
        depth: int,
        activation: str = "tanh",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        self.encoder_u = nn.Linear(in_dim, width)
        self.encoder_v = nn.Linear(in_dim, width)
        sizes = [in_dim] + [width] * depth + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            _xavier(layer, generator)
        _xavier(self.encoder_u, generator, bias=True)
        _xavier(self.encoder_v, generator, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        u = self.act(self.encoder_u(x))
        v = self.act(self.encoder_v(x))
        h = x
        for layer in self.layers[:-1]:
            z = self.act(layer(h))
            h = v + z * (u - v)
        return self.layers[-1](h)

    def main_weights(self) -> list[Tensor]:
        """Weight matrices of the layer stack, encoders excluded (as in their LRA code)."""
        return [layer.weight for layer in self.layers]


class Net(nn.Module):
    """Raw coordinates -> `Normalize` -> optional `FourierFeatures` -> body (MLP/ModifiedMLP)."""

    def __init__(self, norm: Normalize, features: FourierFeatures | None, body: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.features = features
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        if self.features is not None:
            h = self.features(h)
        return self.body(h)

    def main_weights(self) -> list[Tensor]:
        return self.body.main_weights()


def build_net(
    domain: Box,
    out_dim: int,
    *,
    kind: str = "mlp",
    width: int = 20,
    depth: int = 8,
    activation: str = "tanh",
    fourier_features: int = 0,
    fourier_scale: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Net:
    """A `Net` for a problem with box `domain` and `out_dim` output fields.

    Arguments:
        kind: `"mlp"` or `"modified_mlp"`.
        width, depth: hidden units per layer and number of hidden layers.
        activation: `"tanh"` or `"sin"`.
        fourier_features: number `m` of random Fourier frequencies (0: none; the body then sees
            `2m` inputs).
        fourier_scale: standard deviation of the frequencies (on coordinates in [-1, 1]).
        generator: the source of all random initial values (for reproducible runs).

    Returns:
        The net, in `dtype` on `device`.
    """
    if kind not in NETS:
        raise ConfigError(f"net must be one of {list(NETS)}, got {kind!r}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    norm = Normalize(domain.lo.tolist(), domain.hi.tolist())
    in_dim = len(domain.axes)
    features = None
    if fourier_features:
        features = FourierFeatures(in_dim, fourier_features, fourier_scale, generator)
        in_dim = features.out_dim
    body_cls = MLP if kind == "mlp" else ModifiedMLP
    body = body_cls(in_dim, out_dim, width, depth, activation, generator)
    return Net(norm, features, body).to(dtype=dtype, device=device)


# Names an output-transform expression may use besides axes, fields and problem parameters.
TRANSFORM_FUNCTIONS: dict[str, object] = {
    "exp": torch.exp,
    "log": torch.log,
    "sin": torch.sin,
    "cos": torch.cos,
    "tanh": torch.tanh,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "pi": math.pi,
}


class OutputTransform(nn.Module):
    """A trial function around a net: field `f` becomes `expr_f(axes, raw outputs, params)`.

    This is how hard constraints enter (e.g. `y = 1 + (1 - exp(-x)) * y` fixes y(0) = 1, as
    the singular-ODE papers do), without special cases in any method. Each expression is
    Python syntax over the axis names (coordinate columns `[N]`), the field names (the net's
    raw outputs `[N]`), the problem's numeric hyper-parameters, and `TRANSFORM_FUNCTIONS`.
    Fields without an expression pass through unchanged. The forward-mode backend evaluates
    the same expressions on jets (`methods.taylor.Jet`), so derivatives stay fast.

    Arguments:
        net: the wrapped model, `[N, d] -> [N, k]`.
        exprs: `{field: expression}`.
        axes, names: the problem's axes and fields (column order).
        params: numeric constants the expressions may use (axes and fields shadow them).
        inputs: named functions of the points (`problems.base.TrialInput`) that the
            expressions may use like axes: what an expression over single axes cannot say
            (e.g. |x|^2 in d dimensions; `Problem.trial_inputs`).
    """

    def __init__(
        self,
        net: nn.Module,
        exprs: Mapping[str, str],
        axes: Sequence[str],
        names: Sequence[str],
        params: Mapping[str, float] | None = None,
        inputs: Mapping[str, TrialInput] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.axes, self.names = tuple(axes), tuple(names)
        consts = {k: float(v) for k, v in (params or {}).items()}
        self.consts = consts
        self.inputs = dict(inputs or {})
        allowed = (
            set(TRANSFORM_FUNCTIONS)
            | set(consts)
            | set(self.inputs)
            | set(self.axes)
            | set(self.names)
        )
        self.codes: dict[int, tuple[Callable[..., object], tuple[str, ...]]] = {}
        for field, expr in exprs.items():
            key = f"method.output_transform.{field}"
            if field not in self.names:
                raise ConfigError(f"{key}: unknown field {field!r}; the fields are {self.names}")
            code = compile_transform(key, expr)
            unknown = sorted(set(code.co_names) - allowed)
            if unknown:
                raise ConfigError(
                    f"{key}: unknown name(s) {unknown} in {expr!r}; usable names are the axes "
                    f"{list(self.axes)}, the fields {list(self.names)}, the problem's parameters "
                    f"{sorted(consts)}, its trial inputs {sorted(self.inputs)} and "
                    f"{sorted(TRANSFORM_FUNCTIONS)}"
                )
            # one plain function per expression (arguments: the names it uses), so that
            # torch.compile traces it like any code, instead of breaking its graph at eval
            args = tuple(sorted(set(code.co_names)))
            fn = eval(  # noqa: S307 (our own lambda around the checked expression)
                compile(f"lambda {', '.join(args)}: ({expr.strip()})", key, "eval"),
                {"__builtins__": {}},
            )
            self.codes[self.names.index(field)] = (fn, args)
        used = {a for _, args in self.codes.values() for a in args}
        self.used_inputs = {k: f for k, f in self.inputs.items() if k in used}
        # the axes the expressions read (a d-dimensional problem's trial reads one or two)
        self.used_axes = tuple((i, a) for i, a in enumerate(self.axes) if a in used)

    def evaluate(
        self,
        coords: Mapping[str, object],
        raw: Mapping[str, object],
        functions: Mapping[str, object] = TRANSFORM_FUNCTIONS,
    ) -> list[object | None]:
        """Each field's expression evaluated on `coords` (by axis) and `raw` (by field), or
        None for a field that passes through. The values may be tensors or jets
        (`methods/taylor.py`), with `functions` that accept them."""
        scope = {**functions, **self.consts, **coords, **raw}
        out: list[object | None] = []
        for j in range(len(self.names)):
            if j in self.codes:
                fn, args = self.codes[j]
                out.append(fn(*(scope[a] for a in args)))
            else:
                out.append(None)
        return out

    def forward(self, x: Tensor) -> Tensor:
        raw = self.net(x)
        coords = {a: x[:, i] for i, a in self.used_axes}
        coords.update({name: fn.value(x) for name, fn in self.used_inputs.items()})
        outs = self.evaluate(coords, {n: raw[:, j] for j, n in enumerate(self.names)})
        n = (len(x),)
        cols = [
            raw[:, j] if out is None else torch.broadcast_to(torch.as_tensor(out).to(raw), n)
            for j, out in enumerate(outs)
        ]
        return torch.stack(cols, dim=1)

    def main_weights(self) -> list[Tensor]:
        return self.net.main_weights()


def compile_transform(key: str, expr: object):  # noqa: ANN201 (a code object)
    """Compile one output-transform expression, or raise a ConfigError naming `key`."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{key} must be an expression string, got {expr!r}")
    try:
        return compile(expr.strip(), key, "eval")
    except SyntaxError as e:
        raise ConfigError(f"{key}: {expr!r} is not a valid expression ({e.msg})") from None


class SpectralConv(nn.Module):
    """Fourier layer of Li et al. (2021): keep the lowest `modes` Fourier modes per axis, mix
    their channels with learned complex weights, zero the rest, transform back.

    1-D: weights `[in, out, m]` on the `rfft` modes `0..m-1`. 2-D: `rfft2` over the last two
    axes; the kept modes are the corners `kx in [0, m) and [-m, 0)` times `ky in [0, m)` (one
    weight tensor each), as in the FNO and DyMixOp codes. Weights are stored as real tensors
    with a trailing (re, im) axis, so `.to(dtype)` and optimisers treat them like any other
    parameter; they start uniform in `[0, 1/(in*out))` per component (FNO's initialisation).
    The grid must hold the modes: `m <= n // 2 + 1` on the last axis and `2m <= n` on the
    first axis in 2-D (`max_modes` gives the bound).
    """

    def __init__(self, in_ch: int, out_ch: int, modes: int, dim: int) -> None:
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"SpectralConv supports 1-D and 2-D grids, got dim={dim}")
        self.in_ch, self.out_ch, self.modes, self.dim = in_ch, out_ch, modes, dim
        scale = 1.0 / (in_ch * out_ch)
        shape = (in_ch, out_ch) + (modes,) * dim + (2,)
        self.weights = nn.ParameterList(
            nn.Parameter(scale * torch.rand(shape)) for _ in range(1 if dim == 1 else 2)
        )

    @staticmethod
    def max_modes(grid: Sequence[int]) -> int:
        """The most modes a grid of shape `grid` holds without the 2-D corners overlapping."""
        if len(grid) == 1:
            return grid[0] // 2 + 1
        return min(grid[0] // 2, grid[1] // 2 + 1)

    @staticmethod
    def check_modes(key: str, modes: int, grid: Sequence[int]) -> None:
        """A ConfigError naming `key` when `modes` exceeds what `grid` holds."""
        most = SpectralConv.max_modes(grid)
        if modes > most:
            raise ConfigError(
                f"{key}={modes} exceeds the {most} modes a {tuple(grid)} grid holds: "
                f"set {key} <= {most}"
            )

    def forward(self, x: Tensor) -> Tensor:
        m = self.modes
        w = [torch.view_as_complex(p) for p in self.weights]
        if self.dim == 1:
            x_ft = torch.fft.rfft(x)
            out = torch.einsum("bix,iox->box", x_ft[..., :m], w[0])
            return torch.fft.irfft(out, n=x.shape[-1])
        nx, ny = x.shape[-2:]
        x_ft = torch.fft.rfft2(x)
        out = x_ft.new_zeros(x.shape[0], self.out_ch, nx, ny // 2 + 1)
        out[..., :m, :m] = torch.einsum("bixy,ioxy->boxy", x_ft[..., :m, :m], w[0])
        out[..., nx - m :, :m] = torch.einsum("bixy,ioxy->boxy", x_ft[..., nx - m :, :m], w[1])
        return torch.fft.irfft2(out, s=(nx, ny))
