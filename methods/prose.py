"""`prose`: PROSE, a multimodal transformer that predicts ODE trajectories and writes their
equations (Liu, Zhang & Schaeffer, Neural Networks 180:106707, 2024; arXiv 2309.16816).

Five parts (`ProseNet`), all pre-LN transformers without dropout:
- data encoder: one token per observed sample, an MLP of (Fourier features of t, the state
  divided by the sample's RMS, the mask of true components, log RMS);
- symbol encoder: token + learned position embeddings over the `encode_system` tokens;
- fusion encoder over [data tokens; symbol tokens] plus a modality embedding;
- data decoder: embeddings of the query times cross-attend to the fused features (no
  self-attention between queries, so each time is predicted on its own: any times, any number);
- symbol decoder: autoregressive over BOS + tokens (causal mask, cross-attention to the fused
  features), teacher forcing in training, greedy decoding up to `max_len` at inference.

Loss (PROSE's): `data_weight` x L_data + L_text, L_data the squared error over the true
components on the query times (the whole window) over ||y||^2 per sample, L_text token
cross-entropy. AdamW, linear warmup then inverse-sqrt decay, gradient clip 1.0.

Deviations from PROSE-ODE: states enter divided by the per-sample RMS of the observed window
(its log is an input feature, the output is multiplied back), so that Lorenz (|u| ~ 40) and
Adler (|u| ~ 3) share one scale; times enter as Fourier features, not raw; sizes per budget
(`sizes`), PROSE's (d 512, 8 heads, 2/4/8/8/8 layers) only at `paper`; AdamW (PROSE-ODE:
Adam) with lr 1e-3 at our small sizes; greedy decoding only (PROSE also has beam search);
number tokens also embed their value (`numeric_embedding`, off restores PROSE's plain table);
at `smoke`/`standard` (conf/method/prose.yaml), `Sizes.symbol_latents` learned queries
summarise the symbol tokens, read without a symbol encoder (`text_layers` 0), and only these
summaries enter the fusion (PROSE's layout, 0 and 4 layers, at `paper`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import sympy as sp
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.optim.lr_scheduler import LambdaLR

from core.metrics import per_sample_rel_l2
from core.symbolic import SymbolicError, decode_system, encode_system, parses, vocabulary
from methods.base import Budget, FamilyPredictor, Method, Report, count_params
from methods.minibatch import fit_minibatch
from methods.operator import Selector
from methods.prose_net import BOS, EOS, PAD, SPECIALS, UNK, ProseNet, Sizes, numeric_features
from problems.base import ConfigError, Problem, check_int, check_real
from problems.capabilities import FamilyDataSource, capability, data_scale

__all__ = ["PROSE", "ProsePredictor"]

VARIABLES = ("t", "x0", "x1", "x2")
BUDGETS = ("smoke", "standard", "paper")
SIZES = {  # model sizes per budget name (conf/method/prose.yaml's `sizes`)
    "smoke": dict(dim=32, heads=2, ffn=64, data_layers=1, text_layers=0, fusion_layers=1,
                  data_dec_layers=1, text_dec_layers=1, symbol_latents=8),
    "standard": dict(dim=64, heads=4, ffn=128, data_layers=1, text_layers=0, fusion_layers=2,
                     data_dec_layers=2, text_dec_layers=2, symbol_latents=4),
    "paper": dict(dim=512, heads=8, ffn=2048, data_layers=2, text_layers=4, fusion_layers=8,
                  data_dec_layers=8, text_dec_layers=8, symbol_latents=0),  # PROSE's
}  # fmt: skip


def _check_sizes(sizes: object) -> dict[str, Sizes]:
    if not isinstance(sizes, Mapping) or set(sizes) != set(BUDGETS):
        raise ConfigError(f"method.sizes must map exactly {list(BUDGETS)} to model sizes")
    return {b: Sizes.check(f"method.sizes.{b}", sizes[b]) for b in BUDGETS}


class ProsePredictor(FamilyPredictor):
    """`predict` and `equations` (see `FamilyPredictor`) with a trained `ProseNet`."""

    def __init__(self, net: ProseNet, method: PROSE, vocab: list[str], batch: int = 64) -> None:
        self.net, self.method, self.vocab, self.batch = net, method, vocab, batch
        self.index = {tok: i for i, tok in enumerate(vocab)}
        self._ids: dict[tuple[str, ...], list[int]] = {}  # symbol_ids by input (sympy is slow)

    def symbol_ids(self, tokens: Sequence[str]) -> list[int]:
        """Ids of one sample's symbols: `encode_system` tokens at our precision as they are;
        tokens at another precision, or the equations as strings (one per component, for
        sympify), re-encoded; else unknown tokens become UNK. Cut to the position table."""
        key = tuple(tokens)
        if key not in self._ids:
            self._ids[key] = self._symbol_ids(list(tokens))
        return self._ids[key]

    def _symbol_ids(self, tokens: list[str]) -> list[int]:
        if not (all(t in self.index for t in tokens) and parses(tokens)):
            for read in (decode_system, _sympify):
                try:
                    tokens = self.method.encode(read(tokens))
                    break
                except (ValueError, TypeError, SyntaxError):  # SymbolicError, SympifyError
                    continue
        ids = [self.index.get(t, UNK) for t in tokens][: self.net.n_pos]
        return ids or [UNK]

    def _encoded(
        self, observed: np.ndarray, obs_times: np.ndarray, dims: np.ndarray,
        symbols: list[list[str]] | None,
    ) -> Iterator[tuple[slice, Tensor, Tensor | None, Tensor, Tensor]]:  # fmt: skip
        """Per batch of `self.batch` samples (no grad, eval mode): the slice, fused features,
        their padding mask, the per-sample scale and the component mask."""
        like = next(self.net.parameters())
        obs = torch.as_tensor(np.asarray(observed), device=like.device).to(like.dtype)
        t = torch.as_tensor(np.asarray(obs_times), device=like.device).to(like.dtype)
        d = torch.as_tensor(np.asarray(dims), device=like.device)
        mask = (torch.arange(3, device=like.device) < d[:, None]).to(like.dtype)
        use = symbols is not None and self.net.text_input
        self.net.eval()
        with torch.no_grad():
            for i in range(0, len(obs), self.batch):
                k = slice(i, i + self.batch)
                sym = _pad([self.symbol_ids(s) for s in symbols[k]], like) if use else None
                yield (k, *self.net.encode(obs[k] * mask[k, None], t, mask[k], sym), mask[k])

    def predict(
        self, observed: np.ndarray, obs_times: np.ndarray, query_times: np.ndarray,
        dims: np.ndarray, symbols: list[list[str]] | None,
    ) -> np.ndarray:  # fmt: skip
        like = next(self.net.parameters())
        q = torch.as_tensor(np.asarray(query_times), device=like.device).to(like.dtype)
        out = np.zeros((len(observed), len(q), 3))
        for k, fused, pad, scale, mask in self._encoded(observed, obs_times, dims, symbols):
            with torch.no_grad():
                out[k] = self.net.decode_data(fused, pad, scale, mask, q).double().cpu().numpy()
        return out

    def equations(
        self, observed: np.ndarray, obs_times: np.ndarray, dims: np.ndarray,
        symbols: list[list[str]] | None,
    ) -> list[list[str]] | None:  # fmt: skip
        if not self.net.text_output:
            return None
        out: list[list[str]] = []
        for _, fused, pad, _, _ in self._encoded(observed, obs_times, dims, symbols):
            for row in self.net.greedy(fused, pad, self.method.max_len).tolist():
                row = row[: row.index(EOS)] if EOS in row else row
                out.append([self.vocab[k] for k in row])
        return out

    def n_params(self) -> int:
        return count_params(self.net)


def _pad(rows: list[list[int]], like: Tensor) -> Tensor:
    out = torch.full((len(rows), max(map(len, rows))), PAD, dtype=torch.long, device=like.device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r)
    return out


def _sympify(equations: Sequence[str]) -> list[sp.Expr]:
    names = {v: sp.Symbol(v) for v in VARIABLES}
    return [sp.sympify(e, locals=names) for e in equations]


class PROSE(Method):
    """PROSE (module doc). Options are described in `conf/method/prose.yaml`."""

    name = "prose"

    needs: ClassVar[frozenset[str]] = frozenset({"family_data"})
    default_dtype: ClassVar[torch.dtype] = torch.float32
    smoke: ClassVar[dict[str, Any]] = {"batch_size": 8, "val_every": 100, "max_len": 96}

    def __init__(
        self,
        sizes: Mapping[str, Any] | None = None,
        text_input: bool = True,
        text_output: bool = True,
        numeric_embedding: bool = True,
        data_weight: float = 6.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup: int = 200,
        batch_size: int = 32,
        max_len: int = 128,
        precision: int = 2,
        max_exponent: int = 6,
        train_noise: float = 0.0,
        select: Literal["val", "last"] = "val",
        val_every: int = 250,
        eval_batch: int = 64,
    ) -> None:
        super().__init__()
        self.sizes = _check_sizes(SIZES if sizes is None else sizes)
        self.text_input, self.text_output = text_input, text_output
        self.numeric_embedding = numeric_embedding
        self.data_weight = check_real("method.data_weight", data_weight, 0.0, strict=False)
        self.lr = check_real("method.lr", lr, 0.0)
        self.weight_decay = check_real("method.weight_decay", weight_decay, 0.0, strict=False)
        self.warmup = check_int("method.warmup", warmup)
        self.batch_size = check_int("method.batch_size", batch_size)
        self.max_len = check_int("method.max_len", max_len, minimum=2)
        self.precision = check_int("method.precision", precision, minimum=0)
        self.max_exponent = check_int("method.max_exponent", max_exponent, minimum=0)
        try:
            self.vocab = [*SPECIALS, *vocabulary(VARIABLES, self.precision, self.max_exponent)]
        except SymbolicError as e:
            raise ConfigError(f"method.precision / method.max_exponent: {e}") from None
        self.train_noise = check_real("method.train_noise", train_noise, 0.0, strict=False)
        self.select = select
        self.val_every = check_int("method.val_every", val_every)
        self.eval_batch = check_int("method.eval_batch", eval_batch)
        if self.data_weight == 0 and not text_output:
            raise ConfigError("method.data_weight = 0 with text_output = false leaves no loss")

    def encode(self, exprs: Sequence[sp.Expr]) -> list[str]:
        """The tokens of a system at this model's precision."""
        return encode_system(exprs, self.precision, self.max_exponent)

    def _train_tokens(self, equations: list[list[str]]) -> list[list[int]]:
        """Token ids of every training system; a ConfigError when one does not encode."""
        index = {tok: i for i, tok in enumerate(self.vocab)}
        out = []
        for eqs in equations:
            try:
                toks = self.encode(_sympify(eqs))
                if "N" + "0" * (self.precision + 1) in toks:  # a constant underflowed to zero
                    raise SymbolicError(f"a constant is below 10^-{self.max_exponent}")
            except SymbolicError as e:
                raise ConfigError(
                    f"training equations {eqs} do not encode with method.max_exponent = "
                    f"{self.max_exponent} ({e}): raise method.max_exponent"
                ) from None
            out.append([index[t] for t in toks])
        return out

    def fit(self, problem: Problem, budget: Budget, report: Report) -> ProsePredictor:
        scale = data_scale(budget.name)
        source = capability(problem, FamilyDataSource)
        train = source.family_data("train", scale)
        val = source.family_data("val", scale)
        n = min(len(train), budget.samples or len(train))
        ids = self._train_tokens(train.equations[:n])
        n_pos = max(self.max_len, max(map(len, ids)) + 1)
        sizes = self.sizes[budget.name if budget.name in BUDGETS else "standard"]
        num = numeric_features(self.vocab, self.max_exponent) if self.numeric_embedding else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = ProseNet(sizes, len(self.vocab), n_pos, self.text_input, self.text_output,
                           float(train.times[-1]), num)  # fmt: skip
        net = net.to(dtype=self.dtype, device=self.device)
        pred = ProsePredictor(net, self, self.vocab, self.eval_batch)
        like = next(net.parameters())

        def tensor(a: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(a), device=like.device).to(like.dtype)

        length = train.input_len
        obs, values = tensor(train.observed[:n]), tensor(train.values[:n])
        times = tensor(train.times)
        dims = torch.as_tensor(train.dims[:n], device=like.device)
        mask = (torch.arange(3, device=like.device) < dims[:, None]).to(like.dtype)
        sym_in = _pad(ids, like)
        dec_in = _pad([[BOS, *r] for r in ids], like)
        dec_tgt = _pad([[*r, EOS] for r in ids], like)
        sym_len = torch.as_tensor([len(r) for r in ids], device=like.device)
        self._val_symbols = [self.encode(_sympify(e)) for e in val.equations]
        selector = Selector(self, pred, val, length, net)  # type: ignore[arg-type]

        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        warmup = self.warmup
        schedule = LambdaLR(
            opt, lambda step: min((step + 1) / warmup, math.sqrt(warmup / (step + 1)))
        )
        gen = self.generator(11)

        def batch_loss(idx: Tensor) -> tuple[Tensor, dict[str, float]]:
            idx = idx.to(like.device)
            x = obs[idx]
            if self.train_noise > 0:  # PROSE: additive, |noise| = train_noise |u| per sample
                z = torch.randn(x.shape, generator=gen).to(x) * mask[idx][:, None]
                ratio = x.flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-12)
                x = x + z * (self.train_noise * ratio)[:, None, None]
            s = int(sym_len[idx].max())
            fused, pad, sc = net.encode(x, times[:length], mask[idx], sym_in[idx, :s])
            y = net.decode_data(fused, pad, sc, mask[idx], times)
            ref = values[idx]
            err = (y - ref).square().sum((1, 2)) / ref.square().sum((1, 2)).clamp_min(1e-12)
            loss_data = err.mean()
            loss = self.data_weight * loss_data
            scalars = {"loss_data": float(loss_data.detach())}
            if self.text_output:
                logits = net.text_logits(fused, pad, dec_in[idx, : s + 1])
                loss_text = F.cross_entropy(
                    logits.flatten(0, 1), dec_tgt[idx, : s + 1].flatten(), ignore_index=PAD
                )
                loss = loss + loss_text
                scalars["loss_text"] = float(loss_text.detach())
            return loss, scalars

        fit_minibatch(
            batch_loss,
            n=n,
            batch_size=min(self.batch_size, n),
            gen=gen,
            model=net,
            opt=opt,
            schedule=schedule,
            report=report,
            predictor=pred,
            clip=1.0,
            drop_last=True,
            selector=selector,
        )
        return pred

    def validate(self, pred: ProsePredictor, val: Any, length: int) -> float:
        """Mean per-sample rel_l2 on the val split after the observed window (the harness's
        protocol, on val), with the val equations as symbols (for `Selector`)."""
        out = pred.predict(val.observed, val.times[:length], val.times, val.dims, self._val_symbols)
        return float(per_sample_rel_l2(out[:, length:], val.values[:, length:]).mean())
