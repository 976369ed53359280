"""Problems' trial functions (`trial`, used by `method.hard_constraints`): each makes the
conditions it claims hold exactly, whatever the net outputs."""

from __future__ import annotations

import pytest
import torch

from bench.registry import build_method, build_problem, problems
from methods.base import Budget
from methods.nets import OutputTransform, build_net
from methods.taylor import FieldsBuilder, probe

# the conditions each trial function imposes exactly (the rest stay loss terms)
EXACT = {
    "burgers": {"ic", "bc"},
    "nlse": {"ic"},
    "duffing": {"ic", "ic_v"},
    "duffing_free": {"ic", "ic_v"},
    "mems_snic": {"ic", "ic_v"},
    "adler": {"ic"},
    "adler_slip": {"ic"},
    "legendre": {"norm"},
    "hypergeometric": {"norm"},
    "accretion": {"outer"},
    "kovasznay": {"bc", "bc_p"},
    "taylor_green": {"ic"},
    "convection": {"ic"},
    "convection_diffusion": {"ic"},
    "burgers_periodic": {"ic"},
    "helmholtz": {"bc"},
    "klein_gordon": {"ic", "ic_t", "bc"},
    "hjb": {"tc"},
    "hjb_lin": {"tc"},
    "bsb": {"tc"},
}
# cases whose trial function depends on a parameter: (problem, overrides) -> conditions
VARIANTS = {
    ("cavity", (("lid", "smooth"),)): {"bc"},
    ("cavity", (("lid", "parabolic"),)): {"bc"},
    ("cavity_re1000", (("lid", "smooth"), ("lid_param", 20.0))): {"bc"},
    ("convection_diffusion", (("u0", "gauss"),)): {"ic"},
    ("burgers_periodic", (("C", 50.0),)): {"ic"},
    ("helmholtz", (("a1", 10.0), ("a2", 10.0))): {"bc"},
    ("helmholtz", (("a1", 1.5), ("a2", 2.25))): {"bc"},  # non-zero data: Coons lifting
}
CASES = {(name, ()): conds for name, conds in EXACT.items()} | VARIANTS


def test_every_trial_function_is_listed_here():
    with_trial = {n for n in problems() if "trial" in build_problem(n).capabilities}
    assert with_trial == set(EXACT)


@pytest.mark.parametrize("case", sorted(CASES), ids=lambda c: "-".join([c[0], *map(str, c[1])]))
@pytest.mark.parametrize("backend", ["autograd", "taylor"])
def test_trial_function_satisfies_its_conditions(case, backend):
    name, overrides = case
    exact = CASES[case]
    p = build_problem(name, **dict(overrides))
    g = torch.Generator().manual_seed(0)
    net = build_net(p.domain, len(p.fields), width=8, depth=2, generator=g)
    consts = {k: v for k, v in p.params.items() if isinstance(v, int | float)}
    model = OutputTransform(net, p.trial(), p.axes, p.fields, consts, p.trial_inputs())
    conds = {c.name: c for c in p.conditions()}
    assert exact <= set(conds)
    blocks = [conds[c].sample(8, g) for c in sorted(exact)]
    fns = [conds[c].residual for c in sorted(exact)]
    requested = probe(model, p.axes, p.fields, fns, blocks)
    fs = FieldsBuilder(model, p.axes, p.fields, backend, requested)(blocks)
    for c, fn, f in zip(sorted(exact), fns, fs):
        assert fn(f).abs().max() < 1e-12, (name, c)
    # and the raw net alone does not satisfy them (the test can fail)
    raw = FieldsBuilder(net, p.axes, p.fields, backend, requested)(blocks)
    assert max(fn(f).abs().max() for fn, f in zip(fns, raw)) > 1e-3


def test_hard_constraints_option_uses_the_trial_function():
    p = build_problem("burgers")
    tr = build_method("pinn", width=8, depth=2, hard_constraints=True).trainer(p, Budget(points=64))
    assert isinstance(tr.net, OutputTransform) and tr.fields.taylor
    assert tr.terms == ["pde"]  # ic and bc hold exactly, so they are no loss terms
    soft = build_method("pinn", width=8, depth=2, hard_constraints=False).trainer(p)
    assert soft.terms == ["pde", "ic", "bc"] and min(soft.losses()[1:]) > 1e-6
    # an explicit output_transform field overrides the problem's
    tr = build_method("pinn", hard_constraints=True, output_transform={"u": "0 * u"}).trainer(p)
    assert tr.predictor(p.sample_interior(3).numpy()) == pytest.approx(0.0)
