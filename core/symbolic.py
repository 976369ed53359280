"""The symbolic layer (the `symbolic` capability, for PROSE): equations as sympy expressions,
their prefix token form, and symbolic corruption.

Convention. A single-instance problem's `symbolic()` returns one sympy expression per field, each
equal to the matching column of `residual(f)` (same sign and scale), over Symbols named for the
axes (`x`, `t`), the fields (`u`) and the derivatives, named field + "_" + axes in the problem's
axis order (`u_t`, `u_xx`, `u_xt` for axes ("x", "t")); parameters are numbers (`num`).
`evaluate` computes them from a `Fields` object, so tests can hold symbolic() to residual().

Tokens (PROSE, Liu, Zhang & Schaeffer 2024; its `symbolicregression/envs/encoders.py`). Prefix
(Polish) notation with binary `add sub mul div pow` and unary `neg sin cos exp log sqrt tanh abs`;
sympy's n-ary sums and products become left-folded binary chains (`sub` for a negative term,
`div` for negative rational powers, `neg` for a coefficient -1). Leaves:
- a variable name, or `pi` (e = `exp INT+ 1`);
- an integer: `INT+`/`INT-`, then its base-10 digits, one token each (`INT- 1 2` is -12);
- a rational p/q: `div INT± p INT+ q`;
- a float: its sign `+`/`-`, a mantissa token `N` + `precision + 1` digits and an exponent token
  `E<k>`, value = sign * mantissa * 10^k (3.14159 at precision 3: `+ N3142 E-3`); |k| <=
  `max_exponent`, and floats below 10^-max_exponent encode as zero, as in PROSE.
Equations of a system are separated by `|`. `vocabulary` lists every token `encode` can emit;
a model adds its own special tokens (BOS, EOS, PAD).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

import numpy as np
import sympy as sp
import torch
from torch import Tensor


class SymbolSource(Protocol):
    """What the symbols of an equation come from (`problems.base.Problem` has it)."""

    name: str
    axes: tuple[str, ...]
    fields: tuple[str, ...]


class FieldValues(Protocol):
    """Field values and derivatives at points (`problems.fields.Fields` is one)."""

    points: Tensor
    n: int

    def __getitem__(self, name: str) -> Tensor: ...

    def d(self, name: str, *axes: str) -> Tensor: ...


__all__ = ["SEPARATOR", "SymbolicError", "corrupt", "decode", "decode_system", "derivative_names"]
__all__ += ["encode", "encode_system", "evaluate", "num", "parses", "variables", "vocabulary"]
__all__ += ["MAX_DIM", "T", "X", "evaluate_rhs", "lambdify_rhs", "parse_system"]

SEPARATOR = "|"
BINARY = ("add", "sub", "mul", "div", "pow")
FUNCTIONS = {sp.sin: "sin", sp.cos: "cos", sp.exp: "exp", sp.log: "log", sp.tanh: "tanh"}
FUNCTIONS[sp.Abs] = "abs"
UNARY = {"neg": lambda a: -a, "sqrt": sp.sqrt, **{name: fn for fn, name in FUNCTIONS.items()}}
CONSTANTS = {"pi": sp.pi}
INT_SIGNS = ("INT+", "INT-")
FLOAT_SIGNS = ("+", "-")
DIGITS = tuple(str(i) for i in range(10))
MAX_POWER = 100  # a larger numeric exponent in decoded tokens is rejected
MAX_MAGNITUDE = 1000  # so is a numeric power above 10^MAX_MAGNITUDE (nested powers of integers)
MAX_DIGITS = 30  # likewise for integer literals
MAX_ORDER = 4  # derivative names up to this order are recognised
_NUMBERISH = re.compile(r"^(N\d+|E-?\d+|INT[+-])$")


class SymbolicError(ValueError):
    """An expression cannot be encoded, or a token sequence is not a well-formed expression."""


def num(value: float) -> sp.Expr:
    """A parameter as a sympy number: an Integer when it is integral, else a Float (53 bits)."""
    value = float(value)
    if not math.isfinite(value):
        raise SymbolicError(f"parameter {value!r} is not finite")
    if value.is_integer() and abs(value) < 2**53:
        return sp.Integer(int(value))
    return sp.Float(value)


# -- problem symbols and evaluation ------------------------------------------------------------
def derivative_names(
    problem: SymbolSource, max_order: int = MAX_ORDER
) -> dict[str, tuple[str, ...]]:
    """`{"u_xt": ("u", "x", "t"), ...}`: every derivative symbol of `problem` up to `max_order`,
    axes in the problem's axis order."""
    names = {}
    for field in problem.fields:
        for order in range(1, max_order + 1):
            for axes in itertools.combinations_with_replacement(problem.axes, order):
                names[f"{field}_{''.join(axes)}"] = (field, *axes)
    return names


def variables(problem: SymbolSource, max_order: int = MAX_ORDER) -> list[str]:
    """The symbol names `problem`'s equations may use: axes, fields, derivatives."""
    return [*problem.axes, *problem.fields, *derivative_names(problem, max_order)]


def _pow(base: Tensor | float, exponent: Tensor | float) -> Tensor | float:
    """`**`: torch's printer emits `pow`, which refuses two Python numbers (`pi**2`)."""
    return base**exponent


def evaluate(problem: SymbolSource, exprs: Sequence[sp.Expr], f: FieldValues) -> Tensor:
    """`exprs` (one per column) at the points of `f`, `[N, len(exprs)]`: axes from the points,
    fields from `f[name]`, derivative symbols from `f.d(field, *axes)`; via `sympy.lambdify`."""
    table = derivative_names(problem)
    columns = []
    for expr in exprs:
        expr = sp.sympify(expr)
        syms = sorted(expr.free_symbols, key=lambda s: s.name)
        args = []
        for s in syms:
            if s.name in problem.axes:
                args.append(f.points[:, problem.axes.index(s.name)])
            elif s.name in problem.fields:
                args.append(f[s.name])
            elif s.name in table:
                args.append(f.d(*table[s.name]))
            else:
                raise SymbolicError(
                    f"symbol {s.name!r} is not an axis, field or derivative of "
                    f"{problem.name or type(problem).__name__} (axes {problem.axes}, "
                    f"fields {problem.fields})"
                )
        value = sp.lambdify(syms, expr, modules=[{"pow": _pow}, "torch"])(*args)
        value = torch.as_tensor(value, dtype=f.points.dtype, device=f.points.device)
        columns.append(torch.broadcast_to(value, (f.n,)))
    return torch.stack(columns, dim=1)


# -- encoding ----------------------------------------------------------------------------------
def _check_format(precision: int, max_exponent: int) -> None:
    if isinstance(precision, bool) or not isinstance(precision, int) or not 0 <= precision <= 6:
        raise SymbolicError(f"precision must be an integer in [0, 6], got {precision!r}")
    if isinstance(max_exponent, bool) or not isinstance(max_exponent, int) or max_exponent < 0:
        raise SymbolicError(f"max_exponent must be an integer >= 0, got {max_exponent!r}")


def _int_tokens(value: int) -> list[str]:
    return ["INT-" if value < 0 else "INT+", *str(abs(value))]


def _float_tokens(value: float, precision: int, max_exponent: int) -> list[str]:
    if not math.isfinite(value):
        raise SymbolicError(f"cannot encode the non-finite float {value!r}")
    mantissa, exponent = f"{abs(value):.{precision}e}".split("e")
    digits, k = mantissa.replace(".", ""), int(exponent) - precision
    if k < -max_exponent:  # below the smallest representable magnitude: zero, as in PROSE
        digits, k = "0" * (precision + 1), 0
    if k > max_exponent:
        raise SymbolicError(
            f"cannot encode {value!r}: its exponent {k} exceeds max_exponent = {max_exponent}"
        )
    return ["-" if value < 0 else "+", "N" + digits, f"E{k}"]


def _chain(op: str, items: Sequence[sp.Expr], out: list[str], p: int, m: int) -> None:
    """Left-folded binary chain `op op a b c` = (a op b) op c."""
    out.extend([op] * (len(items) - 1))
    for item in items:
        _encode(item, out, p, m)


def _encode_product(expr: sp.Expr, out: list[str], p: int, m: int) -> None:
    coeff, factors = expr.as_coeff_mul()
    if coeff.is_Rational and coeff.is_negative and abs(coeff.p) == 1:
        out.append("neg")
        coeff = -coeff
    numer, denom = [], []
    if coeff.is_Rational:
        numer += [] if coeff.p == 1 else [sp.Integer(coeff.p)]
        denom += [] if coeff.q == 1 else [sp.Integer(coeff.q)]
    elif coeff != 1:
        numer.append(coeff)
    for factor in factors:
        if factor.is_Pow and factor.exp.is_Rational and factor.exp.is_negative:
            denom.append(sp.Pow(factor.base, -factor.exp))
        else:
            numer.append(factor)
    if denom:
        out.append("div")
    _chain("mul", numer or [sp.Integer(1)], out, p, m)
    if denom:
        _chain("mul", denom, out, p, m)


def _encode(expr: sp.Expr, out: list[str], p: int, m: int) -> None:
    if expr.is_Symbol:
        out.append(expr.name)
    elif expr.is_Integer:
        out.extend(_int_tokens(int(expr)))
    elif expr.is_Rational:
        out.extend(["div", *_int_tokens(expr.p), *_int_tokens(expr.q)])
    elif expr.is_Float:
        out.extend(_float_tokens(float(expr), p, m))
    elif expr is sp.pi:
        out.append("pi")
    elif expr is sp.E:
        out.extend(["exp", *_int_tokens(1)])
    elif expr.is_Add:
        first, *rest = expr.as_ordered_terms()
        ops = ["sub" if t.could_extract_minus_sign() else "add" for t in rest]
        out.extend(reversed(ops))
        _encode(first, out, p, m)
        for op, term in zip(ops, rest):
            _encode(-term if op == "sub" else term, out, p, m)
    elif expr.is_Mul or (expr.is_Pow and expr.exp.is_Rational and expr.exp.is_negative):
        _encode_product(expr, out, p, m)
    elif expr.is_Pow and expr.exp == sp.Rational(1, 2):
        out.append("sqrt")
        _encode(expr.base, out, p, m)
    elif expr.is_Pow:
        out.append("pow")
        _encode(expr.base, out, p, m)
        _encode(expr.exp, out, p, m)
    elif expr.func in FUNCTIONS and len(expr.args) == 1:
        out.append(FUNCTIONS[expr.func])
        _encode(expr.args[0], out, p, m)
    else:
        raise SymbolicError(f"cannot encode {expr!r} (type {type(expr).__name__})")


def encode(expr: sp.Expr, precision: int = 3, max_exponent: int = 10) -> list[str]:
    """Prefix tokens of `expr`; floats keep `precision + 1` significant digits."""
    _check_format(precision, max_exponent)
    out: list[str] = []
    _encode(sp.sympify(expr), out, precision, max_exponent)
    return out


def encode_system(exprs: Sequence[sp.Expr], precision: int = 3, max_exponent: int = 10) -> list:
    """The tokens of each expression, separated by `SEPARATOR`."""
    if not exprs:
        raise SymbolicError("cannot encode an empty system")
    out: list[str] = []
    for i, expr in enumerate(exprs):
        out += ([SEPARATOR] if i else []) + encode(expr, precision, max_exponent)
    return out


def vocabulary(variables: Sequence[str], precision: int = 3, max_exponent: int = 10) -> list:
    """Every token `encode` can emit for expressions over `variables`, in a fixed order."""
    _check_format(precision, max_exponent)
    for name in variables:
        if not name.isidentifier() or _reserved(name):
            raise SymbolicError(f"variable name {name!r} is not an identifier, or is reserved")
    if len(set(variables)) != len(variables):
        raise SymbolicError(f"variable names repeat: {list(variables)}")
    width = precision + 1
    return [
        SEPARATOR,
        *BINARY,
        *UNARY,
        *CONSTANTS,
        *INT_SIGNS,
        *DIGITS,
        *FLOAT_SIGNS,
        *(f"N{i:0{width}d}" for i in range(10**width)),
        *(f"E{k}" for k in range(-max_exponent, max_exponent + 1)),
        *variables,
    ]


# -- decoding ----------------------------------------------------------------------------------
def _reserved(token: str) -> bool:
    reserved = {SEPARATOR, *BINARY, *UNARY, *CONSTANTS, *FLOAT_SIGNS}
    return token in reserved or bool(_NUMBERISH.match(token))


def _lex(tokens: Sequence[str], vocab: Collection[str] | None) -> list[tuple[int, str, object]]:
    """Items `(position, kind, value)`: kind "op" (value: the token) or "leaf" (a sympy atom);
    multi-token numbers become one leaf."""
    items, i, n = [], 0, len(tokens)
    while i < n:
        tok = tokens[i]
        if not isinstance(tok, str) or (vocab is not None and tok not in vocab):
            raise SymbolicError(f"unknown token {tok!r} at position {i}")
        if tok in BINARY or tok in UNARY:
            items.append((i, "op", tok))
            i += 1
        elif tok in CONSTANTS:
            items.append((i, "leaf", CONSTANTS[tok]))
            i += 1
        elif tok in INT_SIGNS:
            j = i + 1
            while j < n and tokens[j] in DIGITS:
                j += 1
            if j == i + 1:
                raise SymbolicError(f"malformed integer at position {i}: {tok!r} needs digits")
            if j - i - 1 > MAX_DIGITS:
                raise SymbolicError(f"integer at position {i} has more than {MAX_DIGITS} digits")
            value = int("".join(tokens[i + 1 : j]))
            items.append((i, "leaf", sp.Integer(-value if tok == "INT-" else value)))
            i = j
        elif tok in FLOAT_SIGNS:
            part = list(tokens[i + 1 : i + 3])
            ok = len(part) == 2 and all(isinstance(t, str) for t in part)
            ok = ok and re.fullmatch(r"N\d+", part[0]) and re.fullmatch(r"E-?\d+", part[1])
            if not ok:
                raise SymbolicError(
                    f"malformed float at position {i}: sign {tok!r} must be followed by a "
                    f"mantissa 'N<digits>' and an exponent 'E<k>', got {part}"
                )
            for k, t in enumerate(part, start=i + 1):
                if vocab is not None and t not in vocab:
                    raise SymbolicError(f"unknown token {t!r} at position {k}")
            items.append((i, "leaf", sp.Float(f"{tok}{part[0][1:]}e{part[1][1:]}")))
            i += 3
        elif tok == SEPARATOR:
            raise SymbolicError(
                f"separator {SEPARATOR!r} at position {i} inside one expression "
                "(a system is read by decode_system)"
            )
        elif tok.isidentifier() and not _reserved(tok):
            items.append((i, "leaf", sp.Symbol(tok)))
            i += 1
        else:
            raise SymbolicError(f"unknown token {tok!r} at position {i}")
    return items


def _apply(op: str, args: list[sp.Expr], pos: int) -> sp.Expr:
    if op in UNARY:
        return UNARY[op](args[0])
    a, b = args
    if op == "pow" and b.is_Number:
        if abs(b) > MAX_POWER:
            raise SymbolicError(f"exponent {b} of 'pow' at position {pos} exceeds {MAX_POWER}")
        try:  # 10^(b log10 |a|) must stay printable: nested integer powers grow without end
            huge = a.is_Number and abs(float(b)) * math.log10(abs(float(a)) + 1) > MAX_MAGNITUDE
        except OverflowError:
            huge = True
        if huge:
            raise SymbolicError(f"'pow' at position {pos} exceeds 10^{MAX_MAGNITUDE}")
    if op == "pow":
        return a**b
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    return a * b if op == "mul" else a / b


def decode(tokens: Sequence[str], vocab: Collection[str] | None = None) -> sp.Expr:
    """The sympy expression of prefix `tokens` (inverse of `encode` up to float rounding).

    With `vocab` (e.g. `vocabulary(...)`), tokens outside it are rejected; without it any
    non-reserved identifier is a variable. Raises `SymbolicError` naming the problem for an
    empty, truncated or over-long sequence, an unknown token or a malformed number, and for
    an expression that is not finite (a division by zero, log(0)).
    """
    tokens = list(tokens)
    if not tokens:
        raise SymbolicError("empty token sequence")
    stack: list[tuple[int, sp.Expr]] = []  # (start position, expression), evaluated right to left
    for pos, kind, value in reversed(_lex(tokens, vocab)):
        if kind == "leaf":
            stack.append((pos, value))
            continue
        arity = 2 if value in BINARY else 1
        if len(stack) < arity:
            raise SymbolicError(
                f"truncated sequence: {value!r} at position {pos} needs {arity} operand(s), "
                f"found {len(stack)}"
            )
        args = [stack.pop()[1] for _ in range(arity)]
        try:
            stack.append((pos, _apply(value, args, pos)))
        except (ArithmeticError, RecursionError, TypeError) as e:  # sympy could not build it
            raise SymbolicError(f"{value!r} at position {pos} fails: {e!r}") from None
    if len(stack) > 1:
        raise SymbolicError(
            f"extra tokens: a complete expression ends before position {stack[-2][0]}, "
            f"followed by {len(stack) - 1} more expression(s) ({len(tokens)} tokens in all)"
        )
    expr = stack[0][1]
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise SymbolicError(f"the tokens decode to a non-finite expression: {expr}")
    return expr


def decode_system(tokens: Sequence[str], vocab: Collection[str] | None = None) -> list[sp.Expr]:
    """The expressions of `tokens` split at `SEPARATOR` (inverse of `encode_system`)."""
    tokens, exprs, start = list(tokens), [], 0
    for end in [*(i for i, t in enumerate(tokens) if t == SEPARATOR), len(tokens)]:
        try:
            exprs.append(decode(tokens[start:end], vocab))
        except SymbolicError as e:
            raise SymbolicError(f"equation {len(exprs)} (tokens {start}..{end - 1}): {e}") from None
        start = end + 1
    return exprs


def parses(tokens: Sequence[str], vocab: Collection[str] | None = None) -> bool:
    """Whether `tokens` decode to a system of finite expressions."""
    try:
        decode_system(tokens, vocab)
    except SymbolicError:
        return False
    return True


# -- corruption --------------------------------------------------------------------------------
def _noisy(expr: sp.Expr, scale: float, rng: np.random.Generator) -> sp.Expr:
    """Every explicit number but exponents (a coefficient -1 included: sympy writes -x as
    -1 * x) times (1 + scale N(0, 1)), in sympy's deterministic argument order."""
    if expr.is_Number:
        return expr if expr == 0 else num(float(expr) * (1 + scale * rng.standard_normal()))
    if not expr.args:
        return expr
    if expr.is_Pow:
        return sp.Pow(_noisy(expr.base, scale, rng), expr.exp)
    return expr.func(*(_noisy(a, scale, rng) for a in expr.args))


def _default_pool(exprs: Sequence[sp.Expr]) -> list[sp.Expr]:
    """PROSE's: a constant and the monomials of degree 1 and 2 in the system's symbols."""
    syms = sorted(set().union(*(e.free_symbols for e in exprs)), key=lambda s: s.name)
    pairs = [a * b for a, b in itertools.combinations_with_replacement(syms, 2)]
    return [sp.Integer(1), *syms, *pairs]


def corrupt(
    exprs: Sequence[sp.Expr],
    rng: np.random.Generator,
    coef_noise: float = 0.0,
    add_terms: int = 0,
    remove_terms: int = 0,
    term_pool: Sequence[sp.Expr] | None = None,
) -> list[sp.Expr]:
    """A corrupted copy of a system, as PROSE studies (deterministic for a given `rng`).

    Arguments:
        coef_noise: each explicit number (not exponents; implicit unit coefficients stay) is
            multiplied by (1 + coef_noise N(0, 1)).
        remove_terms: additive terms removed, each drawn uniformly among the terms of equations
            that still have more than one (fewer when no equation has a term to spare).
        add_terms: terms added, each to a random equation: a coefficient of random sign and
            log-uniform magnitude in [0.1, 10] times a monomial from `term_pool` (default: 1 and
            the monomials of degree <= 2 in the system's symbols), preferring a monomial the
            equation does not contain.
    Returns:
        The corrupted expressions; the input unchanged when all three are zero.
    """
    out = [sp.sympify(e) for e in exprs]
    if coef_noise < 0 or add_terms < 0 or remove_terms < 0:
        raise SymbolicError("coef_noise, add_terms and remove_terms must be >= 0")
    for _ in range(remove_terms):
        spots = [(i, j) for i, e in enumerate(out) for j in range(len(sp.Add.make_args(e)))]
        spots = [(i, j) for i, j in spots if len(sp.Add.make_args(out[i])) > 1]
        if not spots:
            break
        i, j = spots[rng.integers(len(spots))]
        terms = list(sp.Add.make_args(out[i]))
        out[i] = sp.Add(*(terms[:j] + terms[j + 1 :]))
    pool = list(term_pool) if term_pool is not None else _default_pool(out)
    for _ in range(add_terms if pool else 0):
        i = int(rng.integers(len(out)))
        present = {t.as_coeff_Mul()[1] for t in sp.Add.make_args(out[i])}
        fresh = [m for m in pool if sp.sympify(m) not in present] or pool
        monomial = sp.sympify(fresh[rng.integers(len(fresh))])
        coeff = rng.choice([-1.0, 1.0]) * 10 ** rng.uniform(-1.0, 1.0)
        out[i] = out[i] + sp.Float(coeff) * monomial
    if coef_noise > 0:
        out = [_noisy(e, coef_noise, rng) for e in out]
    return out


# -- ODE systems as equation strings (the family_data capability) ------------------------------
T = sp.Symbol("t")
X = sp.symbols("x0 x1 x2")
MAX_DIM = 3  # states x0..x2


def parse_system(equations: Sequence[str | sp.Expr], dim: int | None) -> tuple[list[sp.Expr], int]:
    """Equations as sympy over `t, x0..x{d-1}` (strings parsed), checked for stray symbols."""
    d = len(equations) if dim is None else dim
    if not 1 <= d <= MAX_DIM or len(equations) != d:
        raise ValueError(f"need 1..{MAX_DIM} equations for dimension {d}, got {len(equations)}")
    names = {"t": T, **{str(s): s for s in X}}
    exprs = [e if isinstance(e, sp.Basic) else sp.sympify(e, locals=names) for e in equations]
    allowed = {T, *X[:d]}
    for e in exprs:
        stray = e.free_symbols - allowed
        if stray:
            raise ValueError(
                f"equation {e} uses {sorted(map(str, stray))}; allowed: t, x0..x{d - 1}"
            )
    return exprs, d


def lambdify_rhs(
    equations: Sequence[str | sp.Expr], dim: int | None = None
) -> Callable[[float, np.ndarray], list[float]]:
    """`rhs(t, y)` for `integrate`, from equation strings (or sympy expressions) in
    `t, x0..x{d-1}`; a ValueError when they do not parse or use other symbols."""
    exprs, d = parse_system(equations, dim)
    f = sp.lambdify((T, *X[:d]), exprs, modules="math")

    def rhs(t: float, y: np.ndarray) -> list[float]:
        return f(t, *y)

    return rhs


def evaluate_rhs(
    equations: Sequence[str | sp.Expr], times: np.ndarray, states: np.ndarray
) -> np.ndarray:
    """The right-hand sides at `states` `[T, d]` and `times` `[T]`, vectorised: `[T, d]`."""
    exprs, d = parse_system(equations, states.shape[-1])
    f = sp.lambdify((T, *X[:d]), exprs, modules="numpy")
    out = f(np.asarray(times, dtype=np.float64), *np.moveaxis(states, -1, 0))
    return np.stack(
        [np.broadcast_to(np.asarray(o, dtype=np.float64), times.shape) for o in out], -1
    )
