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
from torch.autograd.function import once_differentiable

from problems.base import Box, ConfigError

__all__ = [
    "ACTIVATIONS",
    "NETS",
    "FourierFeatures",
    "GaussianEmbedding",
    "MLP",
    "ModifiedMLP",
    "Net",
    "Normalize",
    "OutputTransform",
    "PIGNet",
    "build_net",
    "build_pig_net",
]

FUSED_ELEMENTS = 2**17  # Gaussian-tensor entries per chunk of the fused kernel (1 MB: in cache)
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


def _gauss_contract(xn: Tensor, coef: Tensor, C: Tensor) -> Tensor:
    """`exp([xn^2, xn, 1] @ coef^T) @ C`: `[c, N, m]` from points `[N, d]`, exponent
    coefficients `[c, n, 2d + 1]` and columns `[c, n, m]` (plain autograd operations)."""
    return torch.exp(_quad_features(xn) @ coef.transpose(1, 2)) @ C


def _quad_features(xn: Tensor) -> Tensor:
    return torch.cat([xn * xn, xn, torch.ones_like(xn[:, :1])], dim=1)  # [N, 2d + 1]


class _GaussContract(torch.autograd.Function):
    """`_gauss_contract` for points that need no gradient, fused: the Gaussian tensor exists only
    `rows` points at a time, in cache, and is recomputed in the backward pass instead of being
    stored. On a CPU this is memory-bound work, so passes over memory are what cost."""

    @staticmethod
    def forward(ctx, feats, coef, C, rows):  # type: ignore[override]
        coef_t = coef.transpose(1, 2)
        parts = [torch.exp(f @ coef_t) @ C for f in feats.split(rows)]
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
            phi = torch.exp(f @ coef_t)  # [c, r, n]
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
        at `xn` `[N, d]`: `[c, 1 + len(axes) + len(pairs), N]`, rows as in `methods.taylor.Plan`
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
    """

    def __init__(
        self,
        net: nn.Module,
        exprs: Mapping[str, str],
        axes: Sequence[str],
        names: Sequence[str],
        params: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.axes, self.names = tuple(axes), tuple(names)
        consts = {k: float(v) for k, v in (params or {}).items()}
        self.consts = consts
        allowed = set(TRANSFORM_FUNCTIONS) | set(consts) | set(self.axes) | set(self.names)
        self.codes: dict[int, object] = {}
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
                    f"{sorted(consts)} and {sorted(TRANSFORM_FUNCTIONS)}"
                )
            self.codes[self.names.index(field)] = code

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
        return [
            eval(self.codes[j], {"__builtins__": {}}, scope) if j in self.codes else None  # noqa: S307
            for j in range(len(self.names))
        ]

    def forward(self, x: Tensor) -> Tensor:
        raw = self.net(x)
        outs = self.evaluate(
            {a: x[:, i] for i, a in enumerate(self.axes)},
            {n: raw[:, j] for j, n in enumerate(self.names)},
        )
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
