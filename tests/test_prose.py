"""`prose`: the predictor's contract (shapes, arbitrary query times, data-only mode ignoring
symbols, equations or None), causality of the symbol decoder, that training on a tiny ODE family
lowers both losses and the held-out error and makes the decoded equations parse, and that bad
options are rejected at construction with the key named."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.registry import build_method, build_problem
from core.symbolic import encode_system, parses
from methods.base import Budget
from methods.prose import PROSE, ProsePredictor, _sympify
from methods.prose_net import BOS, TokenEmbedding, numeric_features
from problems.base import ConfigError

TINY = dict(dim=32, heads=2, ffn=64, data_layers=1, text_layers=1, fusion_layers=1,
            data_dec_layers=1, text_dec_layers=1, symbol_latents=0)  # fmt: skip
SIZES = {b: TINY for b in ("smoke", "standard", "paper")}
# a small family that a tiny model learns in seconds: two 1-/2-D systems, one held out
FAMILY = dict(
    systems=["adler", "damped_pendulum", "van_der_pol"],
    held_out_systems=["van_der_pol"],
    data={
        "smoke": {"train": 64, "val": 16, "test": 4, "test_systems": 2},
        "standard": {"train": 8, "val": 4, "test": 4, "test_systems": 2},
        "paper": {"train": 8, "val": 4, "test": 4, "test_systems": 2},
    },
)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHYSBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        p = build_problem("ode_family", **FAMILY)
        yield p, p.family_data("train", "smoke"), p.family_data("val", "smoke")


def tiny(**kw) -> PROSE:
    m = build_method("prose", sizes=SIZES, **kw)
    m.dtype = torch.float32
    return m


def fit(method: PROSE, problem, steps: int) -> tuple[ProsePredictor, list[dict]]:
    log: list[dict] = []

    def report(step, evals=None, predictor=None, **scalars):
        log.append(scalars)
        return step >= steps

    return method.fit(problem, Budget(name="smoke", steps=steps, samples=64), report), log


def symbols_of(data, method: PROSE) -> list[list[str]]:
    return [method.encode(_sympify(e)) for e in data.equations]


def val_error(pred: ProsePredictor, val, symbols) -> float:
    length = val.input_len
    out = pred.predict(val.observed, val.times[:length], val.times, val.dims, symbols)
    err = np.linalg.norm((out - val.values)[:, length:].reshape(len(out), -1), axis=1)
    return float(
        np.mean(err / np.linalg.norm(val.values[:, length:].reshape(len(out), -1), axis=1))
    )


def fitted_inputs(method: PROSE, problem, data, steps: int, n: int):
    """The predictor after `steps` steps, and the first `n` samples of `data` as the net's
    inputs: observed states, their times, the component mask and the symbol ids."""
    pred, _ = fit(method, problem, steps)
    obs = torch.as_tensor(data.observed[:n], dtype=torch.float32)
    mask = (torch.arange(3) < torch.as_tensor(data.dims[:n])[:, None]).float()
    t = torch.as_tensor(data.times[: data.input_len], dtype=torch.float32)
    ids = [pred.symbol_ids(s) for s in symbols_of(data, method)[:n]]
    return pred, (obs, t, mask, ids)


def test_contract_shapes_times_and_symbols(family):
    problem, train, _ = family
    m = tiny()
    pred, _ = fit(m, problem, 1)
    obs, length = train.observed[:5], train.input_len
    obs_t, dims, syms = train.times[:length], train.dims[:5], symbols_of(train, m)[:5]
    q = np.array([0.05, 1.234, 3.3, 5.999, 7.5])  # off the training grid, and beyond it
    out = pred.predict(obs, obs_t, q, dims, syms)
    assert out.shape == (5, 5, 3) and out.dtype == np.float64 and np.isfinite(out).all()
    for i, d in enumerate(dims):  # padded components are zero
        assert np.all(out[i, :, d:] == 0)
    # each query time is predicted on its own: a subset gives the same values
    np.testing.assert_allclose(pred.predict(obs, obs_t, q[[3, 1]], dims, syms), out[:, [3, 1]],
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # symbols matter in the multimodal model, and other-precision tokens are re-encoded
    other = [encode_system(_sympify(e), 4, 6) for e in train.equations[:5]]
    assert pred.symbol_ids(other[0]) == pred.symbol_ids(syms[0])
    np.testing.assert_allclose(pred.predict(obs, obs_t, q, dims, other), out, rtol=1e-6)
    # ... and so are the equations as strings (what the harness passes)
    strings = [list(e) for e in train.equations[:5]]
    np.testing.assert_allclose(pred.predict(obs, obs_t, q, dims, strings), out, rtol=1e-6)
    assert not np.allclose(pred.predict(obs, obs_t, q, dims, syms[::-1]), out)
    eqs = pred.equations(obs, obs_t, dims, syms)
    assert len(eqs) == 5 and all(isinstance(t, str) for e in eqs for t in e)
    assert all(len(e) <= m.max_len for e in eqs)

    blind, _ = fit(tiny(text_input=False, text_output=False), problem, 1)
    ref = blind.predict(obs, obs_t, q, dims, None)
    for s in (syms, syms[::-1], [["x0"]] * 5):
        np.testing.assert_array_equal(blind.predict(obs, obs_t, q, dims, s), ref)
    assert blind.equations(obs, obs_t, dims, syms) is None
    assert blind.n_params() < pred.n_params()


def test_symbol_decoder_is_causal(family):
    problem, train, _ = family
    pred, (obs, t, mask, ids) = fitted_inputs(tiny(), problem, train, 1, 2)
    net = pred.net
    sym = torch.tensor([r[:8] for r in ids])
    with torch.no_grad():
        fused, pad, _ = net.encode(obs, t, mask, sym)
        x = torch.tensor([[BOS, *r[:9]] for r in ids])
        base = net.text_logits(fused, pad, x)
        for k in (3, 7):
            y = x.clone()
            y[:, k:] = 5 + (y[:, k:] + 11) % 40  # other tokens from position k on
            changed = net.text_logits(fused, pad, y)
            torch.testing.assert_close(changed[:, :k], base[:, :k])
            assert not torch.allclose(changed[:, k], base[:, k])


def test_training_lowers_losses_and_the_error(family):
    problem, train, val = family
    m = tiny(batch_size=8, warmup=50, lr=2e-3, select="last", val_every=1000)
    before, _ = fit(m, problem, 1)
    val_syms = symbols_of(val, m)
    untrained = val_error(before, val, val_syms)
    pred, log = fit(m, problem, 300)
    first = {k: np.mean([s[k] for s in log[:10]]) for k in ("loss_data", "loss_text")}
    last = {k: np.mean([s[k] for s in log[-10:]]) for k in ("loss_data", "loss_text")}
    assert last["loss_data"] < first["loss_data"] / 3, (first, last)
    assert last["loss_text"] < first["loss_text"] / 3, (first, last)
    trained = val_error(pred, val, val_syms)
    assert trained < 0.6 * untrained, (untrained, trained)
    # greedy decoding on the training split: most systems parse
    length = train.input_len
    eqs = pred.equations(train.observed, train.times[:length], train.dims, symbols_of(train, m))
    rate = np.mean([parses(e) for e in eqs])
    assert rate >= 0.8, rate


def test_training_is_deterministic(family):
    problem, train, _ = family
    length, q = train.input_len, train.times[::7]
    outs = []
    for _ in range(2):
        m = tiny(batch_size=4, train_noise=0.02)
        pred, log = fit(m, problem, 5)
        syms = symbols_of(train, m)[:3]
        out = pred.predict(train.observed[:3], train.times[:length], q, train.dims[:3], syms)
        outs.append((log[-1]["loss"], out))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_too_small_max_exponent_is_a_clear_error(family):
    problem, _, _ = family
    with pytest.raises(ConfigError, match="max_exponent"):
        fit(tiny(max_exponent=1), problem, 1)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"sizes": {**SIZES, "smoke": {**TINY, "dim": 30, "heads": 4}}}, "sizes.smoke.dim"),
        ({"sizes": {**SIZES, "standard": {**TINY, "depth": 2}}}, "sizes.standard"),
        ({"sizes": {**SIZES, "paper": {**TINY, "ffn": 0}}}, "sizes.paper.ffn"),
        ({"select": "best"}, "select"),
        ({"text_input": "yes"}, "text_input"),
        ({"numeric_embedding": 1}, "numeric_embedding"),
        ({"sizes": {**SIZES, "smoke": {**TINY, "symbol_latents": -1}}}, "smoke.symbol_latents"),
        ({"lr": -1.0}, "lr"),
        ({"warmup": 0}, "warmup"),
        ({"train_noise": -0.1}, "train_noise"),
        ({"max_len": 1}, "max_len"),
        ({"batch": 4}, "batch"),
    ],
)
def test_bad_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key):
        build_method("prose", **overrides)


def test_applicable_only_to_families(family):
    m = build_method("prose")
    assert m.applicable(family[0]) is None
    reason = m.applicable(build_problem("burgers"))
    assert reason and "family_data" in reason


def test_numeric_embedding_reads_the_value_of_number_tokens():
    vocab = ["<pad>", "add", "N109", "N999", "E-2", "E3", "INT+", "7", "x0"]
    f = numeric_features(vocab, max_exponent=6)
    expected = [
        [0, 0],
        [0, 0],
        [0.109, 0],
        [0.999, 0],
        [0, -2 / 6],
        [0, 0.5],
        [0, 0],
        [0, 0],
        [0, 0],
    ]
    torch.testing.assert_close(f, torch.tensor(expected))
    emb = TokenEmbedding(len(vocab), 4, f)
    ids = torch.tensor([2, 3])  # two mantissas: their embeddings differ by the value map too
    diff = emb(ids)[1] - emb(ids)[0] - (emb.table.weight[3] - emb.table.weight[2])
    torch.testing.assert_close(diff, emb.value.weight[:, 0] * (0.999 - 0.109))
    assert TokenEmbedding(len(vocab), 4, None).value is None  # numeric_embedding=false: PROSE's


def test_without_numeric_embedding_it_still_trains(family):
    problem, _, _ = family
    pred, log = fit(tiny(numeric_embedding=False), problem, 3)
    assert pred.net.text_embed.value is None and len(log) == 3


def test_symbol_latents_summarise_the_symbols_in_k_tokens(family):
    problem, train, _ = family
    latent = {**TINY, "symbol_latents": 4, "text_layers": 0}  # standard's layout
    m = build_method("prose", sizes={b: latent for b in SIZES})
    m.dtype = torch.float32
    pred, (obs, t, mask, ids) = fitted_inputs(m, problem, train, 2, 3)
    net, length = pred.net, train.input_len
    with torch.no_grad():
        for n in (5, 9):  # whatever the symbols' length, the fusion sees length + 4 tokens
            fused, pad, _ = net.encode(obs, t, mask, torch.tensor([r[:n] for r in ids]))
            assert fused.shape[1] == length + 4 and pad is None  # nothing padded
        other, _, _ = net.encode(obs, t, mask, torch.tensor([r[:9] for r in ids[::-1]]))
    assert not torch.allclose(other, fused)  # ... and they still depend on the symbols
