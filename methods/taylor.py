"""Forward-mode (Taylor/jet) derivatives through the nets of `methods/nets.py`.

Nested autograd builds a graph per derivative order and walks the network once per derivative.
Here one forward pass carries, next to each activation, its first derivatives along the planned
axes and its second derivatives for the planned axis pairs (the chain rule to order two), layer
by layer with one matmul per layer, so the loss needs a single backward pass. Each dense layer
with its activation is one autograd node with a hand-written backward (first order only: no
double backward through a jet): on small nets per-operation overhead sets the step time, on
large batches memory traffic, and fewer, fused operations help both.

`TaylorFields` exposes the result through the `Fields` API; derivatives that were not planned
(or of order above two) fall back to autograd, lazily. The plan comes from `Fields.requested`
of one probing autograd call of each residual (`probe`). `FieldsBuilder` builds the `Fields` of
several blocks of points (collocation, initial, boundary...) at once: the blocks that need
derivatives share one jet pass, the others one plain forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from methods.gaussians import PIGNet
from methods.jets import Key, Plan, jet_forward_plain, supports_plain, transform_jet
from methods.nets import MLP, FourierFeatures, ModifiedMLP, Net, OutputTransform
from problems.base import ConfigError
from problems.fields import Fields

__all__ = [
    "BACKENDS",
    "FieldsBuilder",
    "SampledLaplacianFields",
    "TaylorFields",
    "jet_forward",
    "probe",
    "supports",
]

BACKENDS = ("auto", "autograd", "taylor")


# -- fused dense layers ---------------------------------------------------------------------
# A jet is stored feature-major, `[width, rows, N]`: the matmuls then run as
# `[w_out, w_in] @ [w_in, rows * N]`, which BLAS runs faster in float64 than the
# point-major `[rows * N, w_in] @ [w_in, w_out]` on these tall, thin shapes.
# For z = W S (+ b on the value row) and y = f(z), the jet rows of y are
#   y0 = f(z0),   y_a = f'(z0) z_a,   y_ab = f'(z0) z_ab + f''(z0) z_a z_b.
# Each layer is one autograd node whose backward applies the transpose of this map by hand.


_PAIR_LOOP = 4
"""Up to this many second-derivative pairs, a layer loops over them (fewest operations);
above, it gathers them (one operation for any number: a Laplacian in d dimensions)."""


def _pair_index(pairs: Sequence[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """The first and second members of `pairs` as index tensors."""
    first, second = zip(*pairs)
    return (
        torch.tensor(first, dtype=torch.long, device=device),
        torch.tensor(second, dtype=torch.long, device=device),
    )


def _act(name: str, z0: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    """Write f(z0) into `out`; return f'(z0) and f''(z0)."""
    if name == "tanh":
        # tanh z = 2 sigmoid(2 z) - 1: torch's CPU tanh is slower than its sigmoid (float32 and
        # float64); the absolute error stays at round-off, and only the jet path (training)
        # uses it
        t = torch.sigmoid(z0 * 2, out=out).mul_(2).sub_(1)
        f1 = 1 - t * t
        return f1, -2 * t * f1
    if name == "sin":
        torch.sin(z0, out=out)
        return torch.cos(z0), -out
    if name == "cos":
        torch.cos(z0, out=out)
        return -torch.sin(z0), -out
    raise ValueError(f"no jet rule for activation {name!r}")


def _f3(name: str, y0: Tensor, f1: Tensor) -> Tensor:
    """The third derivative f'''(z0), from y0 = f(z0) and f1 = f'(z0)."""
    if name == "tanh":
        return f1 * (6 * y0 * y0 - 2)
    return -f1  # sin: -cos; cos: sin


class _JetDense(torch.autograd.Function):
    """`act(W S + b)` on a jet `S` `[w_in, R, N]` (bias on the value row only).

    `act="linear"` skips the activation (the output layer).
    """

    @staticmethod
    def forward(ctx, S, W, b, act, k, pairs):  # type: ignore[override]
        w_in, R, N = S.shape
        Z = (W @ S.reshape(w_in, R * N)).view(-1, R, N)
        if b is not None:
            Z[:, 0] += b[:, None]
        ctx.meta = (act, k, pairs, b is not None)
        if act == "linear":
            ctx.save_for_backward(S, W)
            return Z
        Y = torch.empty_like(Z)
        f1, f2 = _act(act, Z[:, 0], Y[:, 0])
        torch.mul(Z[:, 1:], f1[:, None], out=Y[:, 1:])
        if len(pairs) > _PAIR_LOOP:
            ri, rj = _pair_index(pairs, Z.device)
            Y[:, 1 + k :].addcmul_(f2[:, None] * Z[:, ri], Z[:, rj])
        else:
            for p, (i, j) in enumerate(pairs):
                Y[:, 1 + k + p].addcmul_(f2 * Z[:, i], Z[:, j])
        ctx.save_for_backward(S, W, Z, Y, f1, f2)
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, G):  # type: ignore[override]
        act, k, pairs, has_bias = ctx.meta
        if act == "linear":
            S, W = ctx.saved_tensors
            gZ = G
        else:
            S, W, Z, Y, f1, f2 = ctx.saved_tensors
            gZ = G * f1[:, None]
            if G.shape[1] > 1:  # every derivative row depends on z0 through f' and f''
                gZ[:, 0].addcmul_(f2, (G[:, 1:] * Z[:, 1:]).sum(1))
            if len(pairs) > _PAIR_LOOP:  # the same sums, over all pairs at once
                f3 = _f3(act, Y[:, 0], f1)
                ri, rj = _pair_index(pairs, Z.device)
                Gp, Zi, Zj = G[:, 1 + k :], Z[:, ri], Z[:, rj]
                gZ[:, 0].addcmul_(f3, (Gp * Zi * Zj).sum(1))
                H = Gp * f2[:, None]
                gZ.index_add_(1, ri, H * Zj)
                gZ.index_add_(1, rj, H * Zi)
            elif pairs:
                f3 = _f3(act, Y[:, 0], f1)
                for p, (i, j) in enumerate(pairs):
                    Gp = G[:, 1 + k + p]
                    gZ[:, 0].addcmul_(f3 * Gp, Z[:, i] * Z[:, j])
                    H = Gp * f2
                    if i == j:
                        gZ[:, i].addcmul_(H, Z[:, i], value=2.0)
                    else:
                        gZ[:, i].addcmul_(H, Z[:, j])
                        gZ[:, j].addcmul_(H, Z[:, i])
        w_in, R, N = S.shape
        g2 = gZ.reshape(-1, R * N)
        gS = (W.T @ g2).view(w_in, R, N) if ctx.needs_input_grad[0] else None
        gW = g2 @ S.reshape(w_in, R * N).T if ctx.needs_input_grad[1] else None
        gb = gZ[:, 0].sum(1) if has_bias and ctx.needs_input_grad[2] else None
        return gS, gW, gb, None, None, None


class _JetInputDense(torch.autograd.Function):
    """The first layer's activation on its pre-activation `z0` `[w, N]` (`W xn + b`, computed
    by the caller with autograd, so that two jets at the same points share it and its
    weight gradient).

    The input jet is constant along the points (`d xn / d x_a = scale_a e_a`, no curvature),
    so the derivative rows of `z` are the vectors `c_a = scale_a W[:, a]`, the columns of `C`
    `[w, k]`, and zero: no matmul over the derivative rows, forward or backward.
    """

    @staticmethod
    def forward(ctx, z0, C, act, pairs):  # type: ignore[override]
        (w, N), k = z0.shape, C.shape[1]
        Y = torch.empty(w, 1 + k + len(pairs), N, dtype=z0.dtype, device=z0.device)
        f1, f2 = _act(act, z0, Y[:, 0])
        torch.mul(C[:, :, None], f1[:, None], out=Y[:, 1 : 1 + k])
        if len(pairs) > _PAIR_LOOP:
            pi, pj = _pair_index(pairs, C.device)
            torch.mul(f2[:, None], (C[:, pi] * C[:, pj])[:, :, None], out=Y[:, 1 + k :])
        for p, (i, j) in enumerate(pairs if len(pairs) <= _PAIR_LOOP else ()):  # C's columns
            torch.mul(f2, (C[:, i] * C[:, j])[:, None], out=Y[:, 1 + k + p])
        ctx.save_for_backward(C, Y, f1, f2)
        ctx.meta = (act, pairs)
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, G):  # type: ignore[override]
        C, Y, f1, f2 = ctx.saved_tensors
        act, pairs = ctx.meta
        k = C.shape[1]
        G1 = G[:, 1 : 1 + k]
        g0 = G[:, 0] * f1
        g0.addcmul_(f2, (G1 * C[:, :, None]).sum(1))
        gC = (G1 * f1[:, None]).sum(2)  # [w, k]
        if len(pairs) > _PAIR_LOOP:  # the same sums, over all pairs at once
            f3 = _f3(act, Y[:, 0], f1)
            pi, pj = _pair_index(pairs, C.device)
            Gp, Ci, Cj = G[:, 1 + k :], C[:, pi], C[:, pj]
            g0.addcmul_(f3, (Gp * (Ci * Cj)[:, :, None]).sum(1))
            s = (Gp * f2[:, None]).sum(2)  # [w, P]
            gC.index_add_(1, pi, s * Cj)
            gC.index_add_(1, pj, s * Ci)
        elif pairs:
            f3 = _f3(act, Y[:, 0], f1)
            for p, (i, j) in enumerate(pairs):
                Gp = G[:, 1 + k + p]
                g0.addcmul_(f3, Gp * (C[:, i] * C[:, j])[:, None])
                s = (Gp * f2).sum(1)
                if i == j:
                    gC[:, i].addcmul_(s, C[:, i], value=2.0)
                else:
                    gC[:, i].addcmul_(s, C[:, j])
                    gC[:, j].addcmul_(s, C[:, i])
        return g0, gC, None, None


def _dense(S: Tensor, W: Tensor, b: Tensor | None, act: str, plan: Plan) -> Tensor:
    return _JetDense.apply(S, W, b, act, plan.k, plan.pair_rows_zipped)


def _input_dense(
    xn: Tensor,
    scale: Tensor,
    W: Tensor,
    b: Tensor | None,
    act: str,
    plan: Plan,
    memo: dict | None = None,
) -> Tensor:
    """The first layer's jet; its pre-activation comes from `memo` when a jet at the same
    points (and parameters) computed it."""
    key = ("z0", id(W))
    z0 = None if memo is None else memo.get(key)
    if z0 is None:
        z0 = W @ xn.T if b is None else torch.addmm(b[:, None], W, xn.T)
        if memo is not None:
            memo[key] = z0
    axes = list(plan.axes)
    C = W[:, axes] * scale[axes]  # [w, k]: column r is c_{axes[r]}
    return _JetInputDense.apply(z0, C, act, plan.pair_firsts)


def _mul(a: Tensor, b: Tensor, plan: Plan) -> Tensor:
    """Product rule to order two on jets `[w, R, N]` (plain autograd operations)."""
    a0, b0 = a[:, :1], b[:, :1]
    prod = a * b0 + a0 * b  # its row 0 is 2 a0 b0; replaced below
    parts = [a0 * b0, prod[:, 1 : 1 + plan.k]]
    if plan.pairs:
        ri, rj = plan.pair_rows()
        parts.append(prod[:, 1 + plan.k :] + a[:, ri] * b[:, rj] + a[:, rj] * b[:, ri])
    return torch.cat(parts, dim=1)


def supports(model: nn.Module) -> bool:
    """True when `jet_forward` can propagate derivatives through `model`."""
    if isinstance(model, OutputTransform):
        return supports(model.net)
    if isinstance(model, PIGNet):
        return model.body.activation in ("tanh", "sin")
    return (
        isinstance(model, Net)
        and isinstance(model.body, MLP | ModifiedMLP)
        and model.body.activation in ("tanh", "sin")
        and (model.features is None or isinstance(model.features, FourierFeatures))
    )


def jet_forward(net: Net, x: Tensor, plan: Plan, memo: dict | None = None) -> Tensor:
    """The jet `[k, plan.rows, N]` of `net` at raw points `x` `[N, d]`: values in row 0, then
    the planned derivatives with respect to the raw coordinates.

    `memo`: a dict shared by jets of other plans at the same points and parameters (one
    `Fields`), which then share the parts that do not depend on the plan: the normalised
    inputs, the first layer's pre-activation (computed once, with one weight gradient), the
    trial inputs."""
    if isinstance(net, OutputTransform):
        return transform_jet(net, jet_forward(net.net, x, plan, memo), x, plan, memo)
    if isinstance(net, PIGNet):  # the Gaussians' derivatives in closed form, then the MLP
        emb, norm = net.embedding, net.norm
        h = emb.jet(norm(x.detach()), norm.scale, plan.axes, plan.pairs)
        for layer in net.body.layers[:-1]:
            h = _dense(h, layer.weight, layer.bias, net.body.activation, plan)
        out = net.body.layers[-1]
        return _dense(h, out.weight, out.bias, "linear", plan)
    xn = None if memo is None else memo.get("xn")
    if xn is None:
        xn = net.norm(x.detach())
        if memo is not None:
            memo["xn"] = xn
    scale, body, act = net.norm.scale, net.body, net.body.activation
    h = None
    if net.features is not None:
        B = net.features.B.T
        h = torch.cat([_input_dense(xn, scale, B, None, f, plan, memo) for f in ("cos", "sin")])

    def dense(layer: nn.Linear) -> Tensor:
        if h is None:  # the first layer sees the coordinates themselves
            return _input_dense(xn, scale, layer.weight, layer.bias, act, plan, memo)
        return _dense(h, layer.weight, layer.bias, act, plan)

    if isinstance(body, MLP):
        for layer in body.layers[:-1]:
            h = dense(layer)
    else:
        u, v = dense(body.encoder_u), dense(body.encoder_v)
        gap = u - v
        for layer in body.layers[:-1]:
            h = v + _mul(dense(layer), gap, plan)
    out = body.layers[-1]
    return _dense(h, out.weight, out.bias, "linear", plan)


class TaylorFields(Fields):
    """`Fields` whose planned derivatives come from a jet.

    Arguments:
        points: `[n, d]` coordinates of this block (need not require grad).
        values: `[n, k]` model outputs at `points`.
        derivs: the jet rows `[n, k]` by row index (row 0 unused), or None (values only).
        plan: which derivative each row holds.
        model: the net, for the autograd fallback on derivatives outside the plan.
    """

    def __init__(
        self,
        points: Tensor,
        axes: Sequence[str],
        names: Sequence[str],
        values: Tensor,
        derivs: Sequence[Tensor] | None,
        plan: Plan,
        model: Callable[[Tensor], Tensor],
        create_graph: bool = True,
    ) -> None:
        super().__init__(points, axes, names, values=values, create_graph=create_graph)
        self._derivs = derivs
        self._plan = plan
        self._model = model
        self._fallback: Fields | None = None

    def _gradient(self, name: str, axes: Sequence[str]) -> Tensor:
        """The planned rows (or the autograd fallback), one per axis."""
        return torch.stack([self.d(name, a) for a in axes], dim=1)

    def _derivative(self, key: Key) -> Tensor:
        if self._derivs is not None:
            row = self._plan.row(sorted(self._axis(a) for a in key[1:]))
            if row is not None:
                return self._derivs[row][:, self._field(key[0])]
        if self._fallback is None:  # a derivative nobody planned: nested autograd, on demand
            pts = self.points.detach().requires_grad_(True)
            self._fallback = Fields(
                pts, self.axes, self.names, model=self._model, create_graph=self.create_graph
            )
        return self._fallback.d(*key)


class SampledLaplacianFields(Fields):
    """Autograd `Fields` whose (SDGD-sampled) Laplacian comes from one jet instead of one
    backward pass per sampled axis.

    A backward pass for u_ii computes the whole `[N, d]` gradient of u_i, through the first
    layer's `[N, width] @ [width, d]`, to keep one column: B sampled axes cost B such passes
    (and their double backward in training). The jet of the B sampled axes carries the first
    layer's derivative rows as its weight columns `W[:, i]`, so in d dimensions it costs one
    forward pass plus B + B rows through the hidden layers. First derivatives (the gradient
    over all d axes at once, in one backward pass) stay autograd's.

    With `laplacian_dims = 0` it is the exact Laplacian, from jets of `AXES_PER_JET` axes at a
    time (bounded memory in any d); `graph=False` computes them without a graph in the
    parameters, for values that nothing differentiates (residual scoring).
    """

    AXES_PER_JET = 64

    def __init__(
        self,
        points: Tensor,
        axes: Sequence[str],
        names: Sequence[str],
        model: nn.Module,
        laplacian_dims: int = 0,
        generator: torch.Generator | None = None,
        graph: bool = True,
    ) -> None:
        super().__init__(
            points, axes, names, model=model, laplacian_dims=laplacian_dims, generator=generator
        )
        self._net = model
        self._graph = graph
        self._memo: dict = {}  # what every jet at these points shares (`jet_forward`)

    def _diagonal(self, name: str, axes: Sequence[str]) -> list[Tensor]:
        wanted = [self._axis(a) for a in axes]
        idx = sorted(set(wanted))
        field = self._field(name)
        second: dict[int, Tensor] = {}
        with torch.set_grad_enabled(self._graph and torch.is_grad_enabled()):
            for lo in range(0, len(idx), self.AXES_PER_JET):
                block = idx[lo : lo + self.AXES_PER_JET]
                plan = Plan(tuple(block), tuple((i, i) for i in block))
                jet = jet_forward(self._net, self.points, plan, self._memo)  # type: ignore[arg-type]
                second.update({i: jet[field, plan.row([i, i])] for i in block})
        return [second[i] for i in wanted]


def probe(
    model: Callable[[Tensor], Tensor],
    axes: Sequence[str],
    names: Sequence[str],
    residuals: Sequence[Callable[[Fields], Tensor]],
    points: Sequence[Tensor],
    n: int = 4,
) -> list[set[Key]]:
    """The derivatives each residual asks for, from one autograd call on `n` of its points."""
    out = []
    for fn, pts in zip(residuals, points, strict=True):
        f = Fields(pts[:n].detach(), axes, names, model=model)
        fn(f)
        out.append(set(f.requested))
    return out


class FieldsBuilder:
    """Builds the `Fields` of several blocks of points with the chosen derivative backend.

    Arguments:
        model: the net (`[N, d] -> [N, k]`).
        axes, names: the problem's axes and fields.
        backend: `"autograd"` (nested autograd per block), `"taylor"` (jets; the net must be
            supported) or `"auto"` (taylor when the net is supported and no block needs
            derivatives above order two, else autograd).
        requested: per block, the derivative keys its residual reads (see `probe`).
        laplacian_dims, generator: SDGD's sampled Laplacian (see `Fields`): from one jet of the
            sampled axes where the net supports jets and the backend is not `autograd`
            (`SampledLaplacianFields`), else one backward pass per sampled axis.
        plain: jets in plain operations (`jet_forward_plain`) where the net allows, for a loss
            that `torch.compile` will fuse.
    """

    def __init__(
        self,
        model: nn.Module,
        axes: Sequence[str],
        names: Sequence[str],
        backend: str,
        requested: Sequence[set[Key]],
        laplacian_dims: int = 0,
        generator: torch.Generator | None = None,
        plain: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"derivatives must be one of {list(BACKENDS)}, got {backend!r}")
        if backend == "taylor" and not supports(model):
            raise ConfigError(
                "derivatives=taylor supports Net(MLP|ModifiedMLP, tanh|sin) only; "
                "use derivatives=auto to fall back to autograd"
            )
        self.model = model
        self.axes = tuple(axes)
        self.names = tuple(names)
        self.laplacian_dims = laplacian_dims
        self.generator = generator
        requested = [set(r) for r in requested]
        max_order = max((len(k) - 1 for r in requested for k in r), default=0)
        self.taylor = backend == "taylor" or (
            backend == "auto" and supports(model) and max_order <= 2 and not laplacian_dims
        )
        self.backend = "taylor" if self.taylor else "autograd"
        self.backend_asked = backend
        self.needs = [any(len(k) > 1 for k in r) for r in requested]
        self.plan = Plan.from_requested(set().union(*requested), self.axes)
        self.jet = jet_forward_plain if plain and supports_plain(model) else jet_forward

    def __call__(self, blocks: Sequence[Tensor]) -> list[Fields]:
        """One `Fields` per block of points, in the order of `requested`."""
        if not self.taylor or self.laplacian_dims:
            jets = self.backend_asked != "autograd" and supports(self.model)
            cls = SampledLaplacianFields if self.laplacian_dims and jets else Fields
            return [
                cls(
                    b,
                    self.axes,
                    self.names,
                    model=self.model,
                    laplacian_dims=self.laplacian_dims,
                    generator=self.generator,
                )
                for b in blocks
            ]
        out: list[Fields] = [None] * len(blocks)  # type: ignore[list-item]
        for need in (True, False):
            idx = [i for i, b in enumerate(blocks) if self.needs[i] == need]
            if not idx:
                continue
            x = torch.cat([blocks[i] for i in idx]) if len(idx) > 1 else blocks[idx[0]]
            if need:  # jet rows [k, N] -> [N, k]
                jet = self.jet(self.model, x, self.plan)  # type: ignore[arg-type]
                rows = [r.T for r in jet.unbind(1)]
            else:
                rows = [self.model(x)]
            sizes = [len(blocks[i]) for i in idx]
            parts = [r.split(sizes) for r in rows]  # parts[row][block], each [n, k]
            for n, i in enumerate(idx):
                derivs = [p[n] for p in parts] if need else None
                out[i] = TaylorFields(
                    blocks[i], self.axes, self.names, parts[0][n], derivs, self.plan, self.model
                )
        return out
