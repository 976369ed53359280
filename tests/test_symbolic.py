"""The symbolic layer (`core/symbolic.py`): every problem's `symbolic()` against its own
`residual()`, the prefix encoding's round trip over every registered equation and random
corruptions of them, its vocabulary, its errors on malformed tokens, and `corrupt()`."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from bench.registry import build_problem, problems
from core.symbolic import (
    SEPARATOR,
    SymbolicError,
    corrupt,
    decode,
    decode_system,
    encode,
    encode_system,
    evaluate,
    parses,
    variables,
    vocabulary,
)
from methods.nets import build_net
from problems.fields import Fields

SYMBOLIC = sorted(n for n, cls in problems().items() if callable(getattr(cls, "symbolic", None)))

# non-default parameters, so that each parameter is seen to flow into the expressions
OVERRIDES = {
    "duffing": {"delta": 0.7, "alpha": 1.3, "beta": 0.25, "gamma": -0.1, "omega": 2.1},
    "duffing_free": {"alpha": 0.5, "beta": 2.0, "amplitude": 0.8},
    "adler": {"nu": -0.3, "K": 0.7},
    "mems_snic": {"eps": 0.1, "mu": 1.5, "kappa": -0.2, "f": 0.5, "omega": 0.9},
    "legendre": {"l": 5},
    "hypergeometric": {"a": -3, "b": 2.5, "c": 1.5},
    "burgers": {"nu": 0.05},
    "klein_gordon": {"alpha": -0.5, "beta": 0.3, "gamma": 2.0},
    "helmholtz": {"a1": 1.5, "a2": 2.5, "k": 3.0},
}
CASES = [(n, {}) for n in SYMBOLIC] + [(n, o) for n, o in OVERRIDES.items() if n in SYMBOLIC]
EXACT = ["legendre", "hypergeometric", "duffing_free", "klein_gordon", "helmholtz"]


def _id(case: tuple[str, dict]) -> str:
    return case[0] + ("-override" if case[1] else "")


def _terms_scale(expr: sp.Expr, args: dict) -> np.ndarray:
    """Sum of the absolute values of `expr`'s additive terms at `args` (the error scale)."""
    return sum(np.abs(_value(t, args)) for t in sp.Add.make_args(expr))


def _value(expr: sp.Expr, args: dict) -> np.ndarray:
    syms = sorted(expr.free_symbols, key=lambda s: s.name)
    out = sp.lambdify(syms, expr, "numpy")(*(args[s.name] for s in syms))
    return np.broadcast_to(np.asarray(out, dtype=float), next(iter(args.values())).shape)


def assert_close(original: sp.Expr, decoded: sp.Expr, rtol: float, seed: int = 0) -> None:
    """`decoded` equals `original` to `rtol` of the size of its terms at random points."""
    names = {s.name for s in original.free_symbols | decoded.free_symbols}
    rng = np.random.default_rng(seed)
    args = {name: rng.uniform(0.5, 1.5, 64) for name in sorted(names)} or {"_": np.zeros(64)}
    err = np.abs(_value(original, args) - _value(decoded, args))
    scale = _terms_scale(original, args)
    assert np.all(err <= rtol * scale), f"{original} vs {decoded}: {np.max(err / scale):.2e}"


def rounded(expr: sp.Expr, precision: int) -> sp.Expr:
    """`expr` with every float rounded to `precision + 1` significant digits (what the tokens
    keep); magnitudes below 1e-7 (mantissa 1000 at exponent -10) become zero."""

    def keep(c: sp.Float) -> sp.Float:
        return sp.Float(float(f"{float(c):.{precision}e}") if abs(c) >= 1e-7 else 0.0)

    return expr.xreplace({c: keep(c) for c in expr.atoms(sp.Float)})


# -- symbolic() against residual() --------------------------------------------------------------
def test_the_expected_problems_have_the_capability():
    expected = {"duffing", "duffing_free", "adler", "adler_slip", "mems_snic", "legendre"}
    expected |= {"hypergeometric", "burgers", "klein_gordon", "helmholtz"}
    assert expected <= set(SYMBOLIC)
    assert all("symbolic" in build_problem(n).capabilities for n in expected)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_symbolic_equals_residual(case):
    name, overrides = case
    problem = build_problem(name, **overrides)
    exprs = problem.symbolic()
    assert len(exprs) == len(problem.fields)
    allowed = set(variables(problem))
    for expr in exprs:
        assert {s.name for s in expr.free_symbols} <= allowed
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    net = build_net(problem.domain, len(problem.fields), width=16, depth=2, generator=gen)
    f = Fields(problem.sample_interior(64, gen), problem.axes, problem.fields, model=net)
    residual = problem.residual(f).detach()
    symbolic = evaluate(problem, exprs, f).detach()
    assert residual.abs().min() > 0  # a random net is no solution: the comparison has content
    torch.testing.assert_close(symbolic, residual, rtol=1e-10, atol=1e-10 * residual.abs().max())


def test_symbolic_follows_the_parameters():
    base, changed = build_problem("duffing"), build_problem("duffing", **OVERRIDES["duffing"])
    assert base.symbolic() != changed.symbolic()
    assert sp.Float(0.7) in changed.symbolic()[0].atoms(sp.Number)


def test_evaluate_rejects_foreign_symbols():
    problem = build_problem("burgers")
    points = torch.rand(4, 2, dtype=torch.float64)
    f = Fields(points, problem.axes, problem.fields, model=lambda p: p[:, :1] ** 2)
    with pytest.raises(SymbolicError, match="'w' is not an axis, field or derivative"):
        evaluate(problem, [sp.Symbol("w") * sp.Symbol("u")], f)


# -- round trip -----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_round_trip_of_every_registered_equation(case):
    problem = build_problem(case[0], **case[1])
    exprs = problem.symbolic()
    vocab = set(vocabulary(variables(problem)))
    for precision in (2, 3, 4):
        tokens = encode_system(exprs, precision=precision)
        assert set(tokens) <= set(vocabulary(variables(problem), precision=precision))
        back = decode_system(tokens, vocab if precision == 3 else None)
        assert len(back) == len(exprs)
        for original, decoded in zip(exprs, back):
            assert_close(original, decoded, 10.0**-precision)
            assert_close(rounded(original, precision), decoded, 1e-9)
            if not original.atoms(sp.Float):
                assert decoded == original  # integers, rationals and pi are exact


def test_exact_cases_are_exact():
    for name in EXACT:
        (expr,) = build_problem(name).symbolic()
        assert not expr.atoms(sp.Float), name
        assert decode(encode(expr)) == expr


@pytest.mark.parametrize("name", SYMBOLIC)
def test_round_trip_of_corrupted_equations(name):
    exprs = build_problem(name).symbolic()
    vocab = set(vocabulary(variables(build_problem(name))))
    for seed in range(3):
        rng = np.random.default_rng(seed)
        noisy = corrupt(exprs, rng, coef_noise=0.1, add_terms=2, remove_terms=1)
        tokens = encode_system(noisy)
        assert set(tokens) <= vocab
        for original, decoded in zip(noisy, decode_system(tokens, vocab)):
            # equal up to the rounding of its floats (nested ones, as in accretion's
            # denominators, can move the value by more than 10^-precision of its terms)
            assert_close(rounded(original, 3), decoded, 1e-9, seed)


def test_round_trip_of_numbers_and_operators():
    x, y = sp.symbols("x y")
    exact = [
        sp.Integer(0),
        sp.Integer(-120),
        sp.Rational(-2, 7),
        x / 3 - y / (x * y**2),
        sp.sqrt(x) / sp.sqrt(y + 1) + sp.E * sp.pi,
        sp.exp(-x) * sp.cos(5 * sp.pi * y) + sp.log(x) * sp.tanh(y) - sp.Abs(x - y) ** 3,
        2**x + x ** sp.Rational(3, 2) - sp.sin(x) ** -2,
    ]
    for expr in exact:
        assert decode(encode(expr)) == expr, expr
    assert encode(sp.Float(3.14159)) == ["+", "N3142", "E-3"]
    assert encode(sp.Float(-0.05), precision=2) == ["-", "N500", "E-4"]
    assert encode(sp.Integer(-12)) == ["INT-", "1", "2"]
    assert encode(sp.Float(1e-20)) == ["+", "N0000", "E0"]  # below 10^-max_exponent: zero
    for value in (1.0, 123456.0, 2.5e-7, -9.9994e13):
        (back,) = decode(encode(sp.Float(value))).atoms(sp.Number)
        assert abs(float(back) - value) <= 5e-4 * abs(value)


def test_encode_rejects_what_it_cannot_write():
    x = sp.Symbol("x")
    for bad in (sp.I * x, sp.Function("g")(x), sp.Float(1e30) * x, sp.oo, sp.atan(x)):
        with pytest.raises(SymbolicError, match="cannot encode"):
            encode(bad)
    with pytest.raises(SymbolicError, match="precision"):
        encode(x, precision=9)
    with pytest.raises(SymbolicError, match="reserved"):
        vocabulary(["x", "add"])


# -- vocabulary and malformed sequences --------------------------------------------------------
def test_vocabulary_is_fixed_and_complete():
    vocab = vocabulary(["t", "u"], precision=2, max_exponent=4)
    assert len(vocab) == len(set(vocab))
    assert vocab == vocabulary(["t", "u"], precision=2, max_exponent=4)
    assert {"N000", "N999", "E-4", "E4", "INT+", "9", SEPARATOR, "t", "u"} <= set(vocab)
    assert len([v for v in vocab if v.startswith("N")]) == 1000
    assert "E5" not in vocab and "N0000" not in vocab


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([], "empty"),
        (["add", "x"], "truncated"),
        (["mul", "x", "INT+"], "malformed integer"),
        (["add", "x", "+", "N1000"], "malformed float"),
        (["x", "y"], "extra tokens"),
        (["add", "x", "y", "z"], "extra tokens"),
        (["add", "x", "@"], "unknown token '@' at position 2"),
        (["add", "x", "w"], "unknown token 'w' at position 2"),  # not in the vocabulary
        (["div", "x", "INT+", "0"], "non-finite"),
        (["pow", "INT+", "9", "INT+", "9", "9", "9"], "exceeds 100"),
        (["pow", "pow", "pow", "INT+", "9", "9", *["INT+", "9", "9"] * 3], "exceeds 10"),
        (["x", SEPARATOR, "y"], "separator"),
    ],
)
def test_malformed_tokens_raise(tokens, message):
    vocab = vocabulary(["x", "y", "z"])
    with pytest.raises(SymbolicError, match=message):
        decode(tokens, vocab)
    if SEPARATOR not in tokens:
        assert not parses(tokens, vocab)


def test_systems_split_at_the_separator():
    x, y = sp.symbols("x y")
    tokens = encode_system([x + 1, 2 * y])
    assert tokens.count(SEPARATOR) == 1 and parses(tokens)
    assert decode_system(tokens) == [x + 1, 2 * y]
    for bad in ([SEPARATOR, *tokens], [*tokens, SEPARATOR], tokens[:-1]):
        assert not parses(bad)
    with pytest.raises(SymbolicError, match="equation 1 .*truncated"):
        decode_system(tokens[:-1])


@pytest.mark.parametrize("name", SYMBOLIC)
def test_every_truncation_fails(name):
    """No proper prefix of an equation is an expression, except a cut inside a trailing
    multi-digit integer (`INT+ 1 2` cut to `INT+ 1`): PROSE's integer format has no end mark."""
    for expr in build_problem(name).symbolic():
        tokens = encode(expr)
        for k in range(1, len(tokens)):
            inside_int = tokens[k - 1].isdigit() and tokens[k].isdigit()
            assert parses(tokens[:k]) == (inside_int and k == len(tokens) - 1), (k, tokens)
        assert parses(tokens) and not parses([*tokens, "pi"])


# -- corruption -----------------------------------------------------------------------------------
def n_terms(exprs: list[sp.Expr]) -> list[int]:
    return [len(sp.Add.make_args(e)) for e in exprs]


def test_corrupt_without_corruption_is_the_identity():
    exprs = build_problem("accretion").symbolic()
    assert corrupt(exprs, np.random.default_rng(0)) == exprs


def test_corrupt_removes_and_adds_terms():
    exprs = build_problem("duffing").symbolic() + build_problem("legendre").symbolic()
    before = n_terms(exprs)
    fewer = corrupt(exprs, np.random.default_rng(1), remove_terms=3)
    assert sum(n_terms(fewer)) == sum(before) - 3
    for expr in fewer:  # what is left is a subset of the original terms
        assert set(sp.Add.make_args(expr)) <= set().union(*(sp.Add.make_args(e) for e in exprs))
    all_but_one = corrupt(exprs, np.random.default_rng(2), remove_terms=100)
    assert n_terms(all_but_one) == [1, 1]  # never the last term of an equation
    more = corrupt(exprs, np.random.default_rng(3), add_terms=4)
    assert sum(n_terms(more)) == sum(before) + 4
    pool = [sp.Symbol("u") ** 5]
    added = corrupt(exprs[:1], np.random.default_rng(4), add_terms=1, term_pool=pool)
    (new,) = set(sp.Add.make_args(added[0])) - set(sp.Add.make_args(exprs[0]))
    assert new.as_coeff_Mul()[1] == pool[0] and 0.1 <= abs(new.as_coeff_Mul()[0]) <= 10


def test_corrupt_is_deterministic_per_seed():
    exprs = build_problem("mems_snic").symbolic()
    kwargs = {"coef_noise": 0.05, "add_terms": 2, "remove_terms": 1}
    first = corrupt(exprs, np.random.default_rng(7), **kwargs)
    assert first == corrupt(exprs, np.random.default_rng(7), **kwargs)
    assert first != corrupt(exprs, np.random.default_rng(8), **kwargs)


def test_coefficient_noise_has_the_requested_size():
    (expr,) = build_problem("duffing").symbolic()  # u^3 - u + 0.3 u_t + u_tt - 0.5 cos(1.2 t)
    coeffs = {m: c for c, m in (t.as_coeff_Mul() for t in sp.Add.make_args(expr))}
    u, u_t = sp.symbols("u u_t")
    rng, ratios = np.random.default_rng(0), []
    for _ in range(200):
        (noisy,) = corrupt([expr], rng, coef_noise=0.1)
        new = {m: c for c, m in (t.as_coeff_Mul() for t in sp.Add.make_args(noisy))}
        assert new[u**3] == 1 and new[sp.Symbol("u_tt")] == 1  # no explicit coefficient
        ratios += [float(new[u] / coeffs[u]), float(new[u_t] / coeffs[u_t])]
        assert len(noisy.atoms(sp.cos)) == 1  # structure kept; the frequency is noisy too
    ratios = np.array(ratios) - 1
    assert abs(ratios.mean()) < 0.03 and 0.08 < ratios.std() < 0.12
