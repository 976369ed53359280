"""The derivative API that residuals are written against.

A residual reads `f.x`, `f["u"]`, `f.d("u", "x")`, `f.d("u", "x", "x")`, `f.laplacian("u")` and
`f.grad("u")` and never calls autograd itself. Values and derivatives are computed lazily and
cached, so a residual that names `u_x` twice pays for it once.

The backend is the method's choice. `Fields` is the autograd backend; a backend that computes
derivatives another way (forward/Taylor mode, closed form for Gaussians) subclasses it and
overrides `_derivative`. `requested` records every derivative a residual asked for, so a
forward-mode backend can be planned from one probing call.

Sampled dimensions (SDGD; Hu, Shukla, Karniadakis & Kawaguchi 2024) are an option of the
Laplacian: with `laplacian_dims = B`, `laplacian` over d > B axes returns the unbiased estimate
(d / B) * sum of u_ii over B axes drawn without replacement, fresh at every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


class FieldsError(KeyError):
    """A residual asked for a field or axis the problem does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Fields:
    """Lazy, cached values and derivatives of a model's outputs at a batch of points.

    Arguments:
        points: `[N, len(axes)]` coordinates. For the autograd backend they must require grad
            (the constructor takes care of it when `model` is given).
        axes: coordinate names, in column order.
        names: output field names, in column order.
        model: maps `[N, d]` points to `[N, k]` values. Ignored when `values` is given.
        values: precomputed `[N, k]` outputs (must be a differentiable function of `points`).
        create_graph: keep derivatives differentiable (needed to train on them).
        laplacian_dims: SDGD: the number B of axes `laplacian` samples (0: all, exactly).
        generator: the source of those samples (CPU generator).
    """

    def __init__(
        self,
        points: Tensor,
        axes: Sequence[str],
        names: Sequence[str],
        model: Callable[[Tensor], Tensor] | None = None,
        values: Tensor | None = None,
        create_graph: bool = True,
        laplacian_dims: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        self.axes = tuple(axes)
        self.names = tuple(names)
        self._axis_index = {a: i for i, a in enumerate(self.axes)}  # O(1) lookups for large d
        if values is None:
            if model is None:
                raise ValueError("Fields needs a model or precomputed values")
            if not points.requires_grad:
                points = points.detach().requires_grad_(True)
            values = model(points)
        if values.ndim != 2 or values.shape[1] != len(self.names):
            raise ValueError(
                f"model output has shape {tuple(values.shape)}, expected [N, {len(self.names)}] "
                f"for fields {self.names}"
            )
        self.points = points
        self.values = values
        self.create_graph = create_graph
        self.laplacian_dims = int(laplacian_dims)
        self.generator = generator
        self.requested: set[tuple[str, ...]] = set()
        self._cache: dict[tuple[str, ...], Tensor] = {}
        self._gradients: dict[str, Tensor] = {}

    # -- lookups --------------------------------------------------------------------------
    def _axis(self, axis: str) -> int:
        try:
            return self._axis_index[axis]
        except KeyError:
            raise FieldsError(
                f"unknown axis {axis!r}; this problem's axes are {self.axes}"
            ) from None

    def _field(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise FieldsError(
                f"unknown field {name!r}; this problem's fields are {self.names}"
            ) from None

    def __getitem__(self, name: str) -> Tensor:
        """Values of field `name`, shape `[N]`."""
        return self.values[:, self._field(name)]

    def __getattr__(self, axis: str) -> Tensor:
        """Coordinate column `axis` (e.g. `f.x`, `f.t`), shape `[N]`."""
        index = self.__dict__.get("_axis_index", {})
        if axis.startswith("_") or axis not in index:
            raise AttributeError(axis)
        return self.points[:, index[axis]]

    @property
    def n(self) -> int:
        return self.points.shape[0]

    # -- derivatives ----------------------------------------------------------------------
    def d(self, name: str, *axes: str) -> Tensor:
        """Partial derivative of field `name` along `axes` (in any order), shape `[N]`."""
        self._field(name)
        for a in axes:
            self._axis(a)
        if not axes:
            return self[name]
        key = (name, *sorted(axes, key=self._axis_index.__getitem__))
        self.requested.add(key)
        if key not in self._cache:
            self._cache[key] = self._derivative(key)
        return self._cache[key]

    def grad(self, name: str, axes: Sequence[str] | None = None) -> Tensor:
        """Gradient of `name` over `axes` (default: all axes), shape `[N, len(axes)]`."""
        axes = self.axes if axes is None else tuple(axes)
        if not axes:
            return self.points[:, :0]
        return self._gradient(name, axes)

    def _gradient(self, name: str, axes: Sequence[str]) -> Tensor:
        """`[N, len(axes)]` first derivatives. Autograd: the columns of the one backward pass,
        taken at once (d single-column views would each cost an `[N, d]` zero-filled tensor
        in the backward pass of training: O(d^2) in d dimensions)."""
        self._field(name)
        idx = [self._axis(a) for a in axes]
        self.requested.update((name, a) for a in axes)
        if name not in self._gradients:
            self._gradients[name] = self._backward(self[name])
        g = self._gradients[name]
        if idx == list(range(idx[0], idx[0] + len(idx))):  # a run of axes: a view, no copy
            return g[:, idx[0] : idx[0] + len(idx)]
        return g[:, idx]

    def laplacian(
        self, name: str, axes: Sequence[str] | None = None, weights: Tensor | None = None
    ) -> Tensor:
        """Sum of second derivatives of `name` over `axes` (default: all axes but `t`); with
        `weights` `[N, len(axes)]`, the weighted sum sum_i w_i u_ii (e.g. x_i^2 for
        Black–Scholes).

        With `laplacian_dims = B < len(axes)`: the SDGD estimate over B sampled axes, scaled
        by `len(axes) / B`, so that its expectation is the (weighted) Laplacian.
        """
        if axes is None:
            axes = tuple(a for a in self.axes if a != "t")
        axes = tuple(axes)
        if weights is not None and tuple(weights.shape) != (self.n, len(axes)):
            raise ValueError(
                f"laplacian weights have shape {tuple(weights.shape)}, "
                f"expected [N, len(axes)] = [{self.n}, {len(axes)}]"
            )
        picks = range(len(axes))
        scale = 1.0
        b = self.laplacian_dims
        if 0 < b < len(axes):
            picks = torch.randperm(len(axes), generator=self.generator)[:b].sort().values.tolist()
            scale = len(axes) / b
        picks = list(picks)
        second = self._diagonal(name, [axes[i] for i in picks])
        if weights is None:
            return scale * sum(second)
        return scale * sum(weights[:, i] * s for i, s in zip(picks, second))

    def _diagonal(self, name: str, axes: Sequence[str]) -> list[Tensor]:
        """The second derivatives of `name` along each of `axes`, `[N]` each (a backend may
        compute them together)."""
        return [self.d(name, a, a) for a in axes]

    def _derivative(self, key: tuple[str, ...]) -> Tensor:
        """Autograd backend: differentiate the cached lower-order derivative once more.

        One backward pass gives the derivative along every axis at once; first derivatives
        keep the whole gradient (`[N, d]`, the size of the inputs), so a gradient over d axes
        costs one pass, not d. Higher orders keep only the column asked for: their full
        gradients would add up to the Hessian.
        """
        if len(key) == 2:
            if key[0] not in self._gradients:
                self._gradients[key[0]] = self._backward(self[key[0]])
            return self._gradients[key[0]][:, self._axis(key[1])]
        # a copy of the column: a view would keep the whole [N, d] gradient alive in the cache
        return self._backward(self.d(key[0], *key[1:-1]))[:, self._axis(key[-1])].clone()

    def _backward(self, lower: Tensor) -> Tensor:
        """`[N, d]`: the derivative of `lower` `[N]` (pointwise in the inputs) along every axis."""
        if not lower.requires_grad:  # the lower derivative is constant in the inputs
            return torch.zeros_like(self.points)
        (g,) = torch.autograd.grad(
            lower,
            self.points,
            grad_outputs=torch.ones_like(lower),
            create_graph=self.create_graph,
            allow_unused=True,
        )
        return torch.zeros_like(self.points) if g is None else g
