"""Second-order jet arithmetic, for output transforms on the forward-mode backend, and the
same jets in plain operations for `torch.compile` (`jet_forward_plain`).

`methods/taylor.py` propagates jets (values, planned first and second derivatives) through the
nets; an `OutputTransform` then applies an expression to the net's outputs. `Jet` evaluates
that expression on jets by the chain and product rules, so trial functions (hard constraints)
cost no autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from methods.nets import MLP, Net, OutputTransform
from problems.base import ConfigError, TrialInput

Key = tuple[str, ...]  # (field, axis, ...) as recorded by `Fields.requested`


@dataclass(frozen=True)
class Plan:
    """Which derivatives to propagate, by axis index.

    A jet is one tensor `[rows, N, width]`: row 0 holds values, then one row per first
    derivative along `axes` (in order), then one per second derivative for `pairs`
    (`(i, j)` with `i <= j`).
    """

    axes: tuple[int, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_requested(cls, requested: Iterable[Key], axes: Sequence[str]) -> Plan:
        """The smallest plan covering every key of order 1 or 2 in `requested`."""
        firsts: set[int] = set()
        pairs: set[tuple[int, int]] = set()
        for key in requested:
            idx = sorted(axes.index(a) for a in key[1:])
            if len(idx) == 1:
                firsts.add(idx[0])
            elif len(idx) == 2:
                firsts.update(idx)
                pairs.add((idx[0], idx[1]))
        return cls(tuple(sorted(firsts)), tuple(sorted(pairs)))

    @property
    def k(self) -> int:
        return len(self.axes)

    @property
    def rows(self) -> int:
        return 1 + len(self.axes) + len(self.pairs)

    def row(self, idx: Sequence[int]) -> int | None:
        """Jet row of the derivative along axis indices `idx` (sorted), or None if unplanned."""
        if len(idx) == 1 and idx[0] in self.axes:
            return 1 + self.axes.index(idx[0])
        if len(idx) == 2 and tuple(idx) in self.pairs:
            return 1 + self.k + self.pairs.index((idx[0], idx[1]))
        return None

    def pair_rows(self) -> tuple[list[int], list[int]]:
        """For each pair `(i, j)`: the jet rows of the first derivatives along `i` and `j`."""
        return [self.row([i]) for i, _ in self.pairs], [self.row([j]) for _, j in self.pairs]  # type: ignore[misc]

    def __post_init__(self) -> None:
        # plain attributes, not cached properties: torch.compile's tracer reads these freely
        firsts = tuple((self.axes.index(i), self.axes.index(j)) for i, j in self.pairs)
        object.__setattr__(self, "pair_firsts", firsts)
        object.__setattr__(self, "pair_rows_zipped", tuple(zip(*self.pair_rows())))

    pair_firsts: tuple[tuple[int, int], ...] = field(init=False, compare=False, repr=False)
    """For each pair `(i, j)`: the positions of `i` and `j` in `axes`."""
    pair_rows_zipped: tuple[tuple[int, int], ...] = field(init=False, compare=False, repr=False)
    """`pair_rows` as `((row_i, row_j), ...)`."""


__all__ = [
    "JET_FUNCTIONS",
    "Jet",
    "Key",
    "Plan",
    "jet_forward_plain",
    "supports_plain",
    "transform_jet",
]


def _is(v: object, c: float) -> bool:
    """True when `v` is the plain number `c` (not a tensor): a known constant entry."""
    return not isinstance(v, Tensor) and v == c


def _add(a: object, b: object) -> object:
    if _is(a, 0):
        return b
    return a if _is(b, 0) else a + b


def _mul(a: object, b: object) -> object:
    """a * b, skipping the work when either is the number 0 or 1 (coordinates' jets are full
    of them: d x / d x = 1, d x / d t = 0, no curvature)."""
    if _is(a, 0) or _is(b, 0):
        return 0.0
    if _is(a, 1):
        return b
    return a if _is(b, 1) else a * b


def _neg(a: object) -> object:
    return 0.0 if _is(a, 0) else -a


class Jet:
    """A value with its planned first and second derivatives, for evaluating an output
    transform (`methods.nets.OutputTransform`) on the jet of the net it wraps.

    `d[i]` is the derivative along `plan.axes[i]`, `dd[p]` along `plan.pairs[p]`. Entries may
    be tensors `[N]` or plain numbers (0 and 1 for a coordinate); products and sums with the
    numbers 0 and 1 are skipped, so a coordinate's jet costs nothing. Arithmetic follows the
    chain and product rules to second order; transforms are elementwise, so this is exact.
    """

    __slots__ = ("v", "d", "dd", "plan")

    def __init__(self, v: object, d: list, dd: list, plan: Plan) -> None:
        self.v, self.d, self.dd, self.plan = v, d, dd, plan

    def _lift(self, other: object) -> Jet:
        if isinstance(other, Jet):
            return other
        return Jet(other, [0.0] * self.plan.k, [0.0] * len(self.plan.pairs), self.plan)

    def unary(self, g: object, g1: object, g2: object) -> Jet:
        """f(self) given f, f' and f'' at self.v."""
        d = [_mul(g1, a) for a in self.d]
        dd = [
            _add(_mul(g1, self.dd[p]), _mul(g2, _mul(self.d[i], self.d[j])))
            for p, (i, j) in enumerate(self.plan.pair_firsts)
        ]
        return Jet(g, d, dd, self.plan)

    def __add__(self, other: object) -> Jet:
        if not isinstance(other, Jet):  # a constant shifts the value only
            return Jet(_add(self.v, other), self.d, self.dd, self.plan)
        o = other
        return Jet(
            _add(self.v, o.v),
            [_add(a, b) for a, b in zip(self.d, o.d)],
            [_add(a, b) for a, b in zip(self.dd, o.dd)],
            self.plan,
        )

    __radd__ = __add__

    def __neg__(self) -> Jet:
        return Jet(_neg(self.v), [_neg(a) for a in self.d], [_neg(a) for a in self.dd], self.plan)

    def __pos__(self) -> Jet:
        return self

    def __sub__(self, other: object) -> Jet:
        return self + (-self._lift(other))

    def __rsub__(self, other: object) -> Jet:
        return self._lift(other) + (-self)

    def __mul__(self, other: object) -> Jet:
        if not isinstance(other, Jet):  # a constant
            c = other
            d = [_mul(a, c) for a in self.d]
            return Jet(_mul(self.v, c), d, [_mul(a, c) for a in self.dd], self.plan)
        u, w = self, other
        d = [_add(_mul(a, w.v), _mul(u.v, b)) for a, b in zip(u.d, w.d)]
        dd = [
            _add(
                _add(_mul(u.dd[p], w.v), _mul(u.v, w.dd[p])),
                _add(_mul(u.d[i], w.d[j]), _mul(u.d[j], w.d[i])),
            )
            for p, (i, j) in enumerate(self.plan.pair_firsts)
        ]
        return Jet(_mul(u.v, w.v), d, dd, self.plan)

    __rmul__ = __mul__

    def reciprocal(self) -> Jet:
        r = 1 / self.v
        return self.unary(r, -r * r, 2 * r * r * r)

    def __truediv__(self, other: object) -> Jet:
        return self * (other.reciprocal() if isinstance(other, Jet) else 1 / other)

    def __rtruediv__(self, other: object) -> Jet:
        return self.reciprocal() * other

    def __pow__(self, p: object) -> Jet:
        if isinstance(p, Jet):
            raise ConfigError("output_transform: a power with a field or axis in the exponent")
        if p == 2:  # the common square: one product, not pow calls
            return self * self
        return self.unary(self.v**p, p * self.v ** (p - 1), p * (p - 1) * self.v ** (p - 2))

    def __rpow__(self, c: object) -> Jet:  # c ** jet = exp(jet log c), c > 0
        return _jet_exp(self * math.log(c))


def _jet_exp(u: Jet) -> Jet:
    e = torch.exp(u.v) if isinstance(u.v, Tensor) else math.exp(u.v)
    return u.unary(e, e, e)


def _on_jets(torch_fn: Callable, jet_fn: Callable) -> Callable:
    return lambda u: jet_fn(u) if isinstance(u, Jet) else torch_fn(u)


def _jet_tanh(u: Jet) -> Jet:
    t = torch.tanh(u.v)
    return u.unary(t, 1 - t * t, -2 * t * (1 - t * t))


def _jet_sqrt(u: Jet) -> Jet:
    r = torch.sqrt(u.v)
    return u.unary(r, 0.5 / r, -0.25 / (r * r * r))


JET_FUNCTIONS: dict[str, object] = {
    "exp": _on_jets(torch.exp, _jet_exp),
    "log": _on_jets(torch.log, lambda u: u.unary(torch.log(u.v), 1 / u.v, -1 / (u.v * u.v))),
    "sin": _on_jets(torch.sin, lambda u: u.unary(torch.sin(u.v), torch.cos(u.v), -torch.sin(u.v))),
    "cos": _on_jets(torch.cos, lambda u: u.unary(torch.cos(u.v), -torch.sin(u.v), -torch.cos(u.v))),
    "tanh": _on_jets(torch.tanh, _jet_tanh),
    "sqrt": _on_jets(torch.sqrt, _jet_sqrt),
    "abs": _on_jets(torch.abs, lambda u: u.unary(torch.abs(u.v), torch.sign(u.v), 0.0)),
    "pi": math.pi,
}


def _input_jet(fn: TrialInput, x: Tensor, plan: Plan, memo: dict | None) -> Jet:
    """The jet of a trial input at points `x`, from its closed-form derivatives (it holds no
    parameters, so the jet is a constant); its value and gradient come from `memo` when a
    jet at the same points computed them."""
    x = x.detach()
    key = ("input", id(fn))
    value_grad = None if memo is None else memo.get(key)
    if value_grad is None:
        value_grad = (fn.value(x), fn.gradient(x))
        if memo is not None:
            memo[key] = value_grad
    v, g = value_grad
    dd = [fn.second(x, i, j) for i, j in plan.pairs]
    return Jet(v, [g[:, a] for a in plan.axes], dd, plan)


def transform_jet(
    model: OutputTransform, raw: Tensor, x: Tensor, plan: Plan, memo: dict | None = None
) -> Tensor:
    """The jet `[k, rows, N]` of an output transform at raw points `x`, from the jet `raw`
    `[k, rows, N]` of the net it wraps, pushed through its expressions by the chain rule."""
    n_pairs = len(plan.pairs)
    fields = {
        name: Jet(
            raw[j, 0],
            [raw[j, 1 + i] for i in range(plan.k)],
            [raw[j, 1 + plan.k + p] for p in range(n_pairs)],
            plan,
        )
        for j, name in enumerate(model.names)
    }
    xs = x.detach()
    coords = {
        axis: Jet(xs[:, i], [1.0 if a == i else 0.0 for a in plan.axes], [0.0] * n_pairs, plan)
        for i, axis in model.used_axes
    }
    for name, fn in model.used_inputs.items():
        coords[name] = _input_jet(fn, xs, plan, memo)
    outs = model.evaluate(coords, fields, JET_FUNCTIONS)
    rows = []
    for j, out in enumerate(outs):
        if out is None:
            rows.append(raw[j])
            continue
        jet = out if isinstance(out, Jet) else Jet(out, [0.0] * plan.k, [0.0] * n_pairs, plan)
        entries = [jet.v, *jet.d, *jet.dd]
        shape = raw[j, 0].shape
        rows.append(
            torch.stack([torch.broadcast_to(torch.as_tensor(e).to(raw), shape) for e in entries])
        )
    return torch.stack(rows)


# -- the same jets in plain operations, for torch.compile -------------------------------------
def _plain_act(name: str, z0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """f(z0), f'(z0), f''(z0) in plain operations (for `torch.compile` to fuse)."""
    if name == "tanh":
        t = torch.tanh(z0)
        f1 = 1 - t * t
        return t, f1, -2 * t * f1
    s, c = torch.sin(z0), torch.cos(z0)
    return s, c, -s


def supports_plain(net: nn.Module) -> bool:
    """True when `jet_forward_plain` handles `net`: an MLP (tanh or sin), no features."""
    if isinstance(net, OutputTransform):
        return supports_plain(net.net)
    return (
        isinstance(net, Net)
        and isinstance(net.body, MLP)
        and net.body.activation in ("tanh", "sin")
        and net.features is None
    )


def jet_forward_plain(net: Net, x: Tensor, plan: Plan) -> Tensor:
    """The same jet as `jet_forward`, in plain autograd operations on one `[N, width]` tensor
    per row, for `torch.compile`: it fuses the elementwise work of every layer, forward and
    backward, which the hand-written layers (`_JetDense`, faster in eager mode) hide from it."""
    if isinstance(net, OutputTransform):
        return transform_jet(net, jet_forward_plain(net.net, x, plan), x, plan)
    xn, scale = net.norm(x.detach()), net.norm.scale
    layers, act = net.body.layers, net.body.activation
    W, b = layers[0].weight, layers[0].bias
    z0 = xn @ W.T + b
    c = [W[:, a] * scale[a] for a in plan.axes]  # first-derivative rows of z: constants
    y0, f1, f2 = _plain_act(act, z0)
    # list comprehensions, not generators: torch.compile's tracer steps through these only
    rows = [y0] + [f1 * ca for ca in c] + [f2 * (c[i] * c[j]) for i, j in plan.pair_firsts]
    k = plan.k
    for layer in layers[1:-1]:
        W = layer.weight
        z = [rows[0] @ W.T + layer.bias] + [r @ W.T for r in rows[1:]]
        y0, f1, f2 = _plain_act(act, z[0])
        rows = [y0] + [f1 * za for za in z[1 : 1 + k]]
        rows += [
            f1 * z[1 + k + p] + f2 * z[1 + i] * z[1 + j]
            for p, (i, j) in enumerate(plan.pair_firsts)
        ]
    W = layers[-1].weight
    out = [rows[0] @ W.T + layers[-1].bias] + [r @ W.T for r in rows[1:]]
    return torch.stack(out).permute(2, 0, 1)  # [rows, N, k] -> [k, rows, N]
