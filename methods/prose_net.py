"""The PROSE network (`methods/prose.py` trains it): five transformers and their building
blocks. A data encoder over the observed samples, a symbol pathway over prefix tokens, a fusion
encoder, a data decoder queried at any times and an autoregressive equation decoder."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from problems.base import ConfigError, check_int

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "ProseNet", "Sizes", "TokenEmbedding",
           "numeric_features"]  # fmt: skip

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
N_FREQ = 8  # Fourier features sin/cos(k pi t / t_scale), k = 1..N_FREQ, plus t / t_scale
ZERO_OK = ("text_layers", "symbol_latents")  # sizes that may be 0


@dataclass(frozen=True)
class Sizes:
    """Model sizes: width, heads, feed-forward width, layers of each of the five parts."""

    dim: int
    heads: int
    ffn: int
    data_layers: int
    text_layers: int
    fusion_layers: int
    data_dec_layers: int
    text_dec_layers: int
    symbol_latents: int
    """0: every symbol token enters the fusion (PROSE); k: k learned queries cross-attend to the
    encoded symbols and only these k summaries enter it (the fusion and both decoders then
    attend over input_len + k tokens instead of input_len + up to 75: a cheaper step)."""

    @classmethod
    def check(cls, key: str, d: object) -> Sizes:
        names = [f.name for f in fields(cls)]
        if not isinstance(d, Mapping) or set(d) != set(names):
            raise ConfigError(f"{key} must give exactly {names}, got {d!r}")
        out = cls(**{k: check_int(f"{key}.{k}", d[k], 0 if k in ZERO_OK else 1) for k in names})
        if out.dim % out.heads:
            raise ConfigError(f"{key}.dim = {out.dim} must be a multiple of heads = {out.heads}")
        return out


def _time_features(t: Tensor, t_scale: float) -> Tensor:
    """`[..., 1 + 2 N_FREQ]` features of times `t` `[...]`."""
    s = t[..., None] / t_scale
    k = torch.arange(1, N_FREQ + 1, dtype=t.dtype, device=t.device) * math.pi
    return torch.cat([s, torch.sin(k * s), torch.cos(k * s)], dim=-1)


def _mlp(d_in: int, dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, dim), nn.GELU(), nn.Linear(dim, dim))


def _encoder(s: Sizes, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        s.dim, s.heads, s.ffn, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(
        layer, layers, norm=nn.LayerNorm(s.dim), enable_nested_tensor=False
    )


def numeric_features(vocab: Sequence[str], max_exponent: int) -> Tensor:
    """`[vocab, 2]`: a mantissa token `Nddd`'s digits as a fraction (N109 -> 0.109), an exponent
    token `Ek`'s k / max_exponent; zero for every other token."""
    out = torch.zeros(len(vocab), 2)
    for i, tok in enumerate(vocab):
        if tok[:1] == "N" and tok[1:].isdigit():
            out[i, 0] = int(tok[1:]) / 10 ** len(tok[1:])
        elif tok[:1] == "E" and tok[1:].lstrip("+-").isdigit():
            out[i, 1] = int(tok[1:]) / max(max_exponent, 1)
    return out


class TokenEmbedding(nn.Module):
    """A learned embedding per token, plus (with `numeric`) a learned linear map of the token's
    numeric value (`numeric_features`): neighbouring mantissas start with neighbouring
    embeddings instead of 1000 unrelated ones, each seen a few times in a short training."""

    def __init__(self, vocab: int, dim: int, numeric: Tensor | None) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, dim, padding_idx=PAD)
        self.value = nn.Linear(2, dim, bias=False) if numeric is not None else None
        if numeric is not None:
            self.register_buffer("numeric", numeric, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        out = self.table(ids)
        if self.value is not None:
            out = out + self.value(self.numeric.to(out.dtype)[ids])
        return out


class QueryLayer(nn.Module):
    """Query tokens cross-attend to the memory, then a feed-forward block (pre-LN)."""

    def __init__(self, s: Sizes) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(s.dim), nn.LayerNorm(s.dim)
        self.attn = nn.MultiheadAttention(s.dim, s.heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(s.dim, s.ffn), nn.GELU(), nn.Linear(s.ffn, s.dim))

    def forward(self, q: Tensor, memory: Tensor, memory_mask: Tensor | None) -> Tensor:
        h = self.norm1(q)
        q = q + self.attn(h, memory, memory, key_padding_mask=memory_mask, need_weights=False)[0]
        return q + self.ffn(self.norm2(q))


class ProseNet(nn.Module):
    """The five transformers (module doc). Inputs in physical units; `n_pos` learned positions
    for symbol sequences; `t_scale` the time unit of the Fourier features."""

    def __init__(
        self, s: Sizes, vocab: int, n_pos: int, text_input: bool, text_output: bool,
        t_scale: float, numeric: Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sizes, self.n_pos, self.t_scale = s, n_pos, t_scale
        self.text_input, self.text_output = text_input, text_output
        n_feat = 1 + 2 * N_FREQ
        self.data_embed = _mlp(n_feat + 3 + 3 + 1, s.dim)
        self.data_encoder = _encoder(s, s.data_layers)
        self.modality = nn.Embedding(2, s.dim)
        self.fusion = _encoder(s, s.fusion_layers)
        self.query_embed = _mlp(n_feat, s.dim)
        self.query_layers = nn.ModuleList(QueryLayer(s) for _ in range(s.data_dec_layers))
        self.data_out = nn.Sequential(nn.LayerNorm(s.dim), nn.Linear(s.dim, 3))
        if text_input:
            self.text_embed = TokenEmbedding(vocab, s.dim, numeric)
            self.text_pos = nn.Embedding(n_pos, s.dim)
            self.text_encoder = _encoder(s, s.text_layers) if s.text_layers else None
            self.text_pool = QueryLayer(s) if s.symbol_latents else None
            if s.symbol_latents:
                self.text_latents = nn.Parameter(0.02 * torch.randn(s.symbol_latents, s.dim))
        if text_output:
            self.out_embed = TokenEmbedding(vocab, s.dim, numeric)
            self.out_pos = nn.Embedding(n_pos + 1, s.dim)
            layer = nn.TransformerDecoderLayer(
                s.dim, s.heads, s.ffn, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True,
            )  # fmt: skip
            self.text_decoder = nn.TransformerDecoder(layer, s.text_dec_layers, nn.LayerNorm(s.dim))
            self.text_out = nn.Linear(s.dim, vocab)

    @staticmethod
    def scale_of(observed: Tensor, mask: Tensor) -> Tensor:
        """The per-sample RMS `[B]` of the observed true components (floored)."""
        sq = (observed * mask[:, None]).square().sum((1, 2))
        return (sq / (mask.sum(1) * observed.shape[1])).sqrt().clamp_min(1e-6)

    def encode(
        self, observed: Tensor, obs_times: Tensor, mask: Tensor, symbols: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Fused features `[B, L + S, dim]`, their padding mask (None when nothing is padded:
        no symbols, or `symbol_latents` summaries of them) and the per-sample scale `[B]`."""
        b, length, _ = observed.shape
        scale = self.scale_of(observed, mask)
        feats = [
            _time_features(obs_times, self.t_scale).expand(b, length, -1),
            observed / scale[:, None, None],
            mask[:, None].expand(b, length, 3),
            scale.log()[:, None, None].expand(b, length, 1),
        ]
        x = self.data_encoder(self.data_embed(torch.cat(feats, -1))) + self.modality.weight[0]
        pad = None
        if self.text_input and symbols is not None:
            pos = torch.arange(symbols.shape[1], device=symbols.device)
            pad = symbols == PAD
            y = self.text_embed(symbols) + self.text_pos(pos)
            if self.text_encoder is not None:
                y = self.text_encoder(y, src_key_padding_mask=pad)
            if self.text_pool is not None:  # `Sizes.symbol_latents` summaries replace the tokens
                y = self.text_pool(self.text_latents.expand(b, -1, -1), y, pad)
                pad = None  # nothing padded any more: no masks in the fusion and decoders
            y = y + self.modality.weight[1]
            x = torch.cat([x, y], 1)
            if pad is not None:
                pad = torch.cat([torch.zeros(b, length, dtype=torch.bool, device=x.device), pad], 1)
        return self.fusion(x, src_key_padding_mask=pad), pad, scale

    def decode_data(
        self, fused: Tensor, pad: Tensor | None, scale: Tensor, mask: Tensor, times: Tensor
    ) -> Tensor:
        """The states `[B, Q, 3]` at `times` `[Q]` (zero past the true dimension)."""
        q = self.query_embed(_time_features(times, self.t_scale)).expand(fused.shape[0], -1, -1)
        for layer in self.query_layers:
            q = layer(q, fused, pad)
        return self.data_out(q) * scale[:, None, None] * mask[:, None]

    def text_logits(
        self, fused: Tensor, pad: Tensor | None, inputs: Tensor, last: bool = False
    ) -> Tensor:
        """Next-token logits `[B, S, vocab]` for decoder inputs `[B, S]` (BOS first); with
        `last`, only the last position's `[B, 1, vocab]` (greedy decoding)."""
        n = inputs.shape[1]
        pos = torch.arange(n, device=inputs.device)
        y = self.out_embed(inputs) + self.out_pos(pos)
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=y.device), 1)
        y = self.text_decoder(
            y, fused, tgt_mask=causal, tgt_key_padding_mask=inputs == PAD,
            memory_key_padding_mask=pad,
        )  # fmt: skip
        return self.text_out(y[:, -1:] if last else y)

    @torch.no_grad()
    def greedy(self, fused: Tensor, pad: Tensor | None, max_len: int) -> Tensor:
        """Greedy token ids `[B, <= max_len]` (EOS included where reached, PAD after it)."""
        b = fused.shape[0]
        seq = torch.full((b, 1), BOS, dtype=torch.long, device=fused.device)
        done = torch.zeros(b, dtype=torch.bool, device=fused.device)
        for _ in range(min(max_len, self.n_pos)):
            nxt = self.text_logits(fused, pad, seq, last=True)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            seq = torch.cat([seq, nxt[:, None]], 1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return seq[:, 1:]
