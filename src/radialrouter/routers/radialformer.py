"""RadialFormer (Jin et al. 2025) and the ablation backbones of the paper's Table 2, behind one module.

Nodes: one relay r (the query) and one satellite s_i per candidate LLM (initialised from its learnable embedding
m_i). Per layer every satellite attends over [s_i; m_i; r] only — satellites never see each other — and then the
relay attends over [r; s_1 … s_n]: O(n·d) per layer. An MLP head scores each final satellite; a softmax over the
LLMs gives the routing distribution.

Choices the paper leaves open (papers.md §1, documented here and in docs/radialrouter.md):
- Update rule: Star-Transformer's ``LayerNorm(ReLU(MHA(·)))`` **with a residual**, ``LayerNorm(x + ReLU(MHA))``
  (``residual=False`` gives the plain Star-Transformer form); no FFN; dropout on the attention output.
- Separate attention weights for satellites and relay in every layer; satellite weights are shared by all LLMs,
  so the only per-LLM parameters are the rows of ``llm`` (the pool grows or shrinks by adding/dropping rows).
- The relay starts from ``LayerNorm(Linear(q))`` (the projection from the encoder width is our addition; the norm
  puts query and LLM embeddings, initialised N(0, 1), on the same scale).
- Trade-off conditioning: each satellite's initial state gets ``Linear(φ(λ·c_i, c_i))`` added, where c_i is the
  LLM's mean cost per 1,000 queries, and the relay gets ``Linear(ψ(λ))``. Fixed-λ models see constants; the
  λ-conditioned router (one model for every λ) needs them, and the cost feature lets a newly added LLM be priced.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BACKBONES = ("radial", "star", "transformer", "mlp")
N_SAT_FEATURES = 4
N_RELAY_FEATURES = 3


def trade_off_features(lam: torch.Tensor, cost_per_1k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Satellite features (B, n, 4) and relay features (B, 3) from per-query λ (B,) and per-LLM cost (n,).

    Log-compressed, since useful λ·cost spans three orders of magnitude (0.002 … 5 on RouterBench)."""
    lam = lam.reshape(-1, 1)
    pen = lam * cost_per_1k.reshape(1, -1)  # (B, n): the penalty Score subtracts
    sat = torch.stack([pen, torch.log1p(10 * pen), torch.log1p(100 * pen),
                       torch.log1p(cost_per_1k).expand_as(pen)], dim=-1)
    relay = torch.cat([torch.log1p(10 * lam), torch.log1p(100 * lam), torch.log1p(1000 * lam)], dim=-1)
    return sat, relay


class NodeUpdate(nn.Module):
    """One node update, ``LayerNorm(x + ReLU(MHA(x, keys)))`` (without ``x +`` when ``residual`` is off).

    Multi-head attention written out rather than `nn.MultiheadAttention`: every query here has its own small key
    set (3 for a satellite), and key/value projections of shared nodes (m_i, r) are computed once, then
    broadcast — several times faster on a CPU at batch 1, the routing hot path."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, residual: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.residual = residual

    # Submodules are applied through torch.nn.functional (same weights, same state dict): a module call costs a few
    # microseconds of Python, and batch-1 routing makes dozens of them.
    def keys(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head keys and values of ``nodes`` (..., d) → two (..., heads, d/heads) tensors."""
        k, v = F.linear(nodes, self.kv.weight, self.kv.bias).chunk(2, dim=-1)
        shape = (*nodes.shape[:-1], self.n_heads, -1)
        return k.reshape(shape), v.reshape(shape)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor | None = None):
        """``x`` (B, L, d) queries; ``k``/``v`` (B, L or 1, K, heads, d/heads) their keys and values; ``pad``
        (B, L or 1, K) True where a key is masked."""
        b, length, d = x.shape
        q = F.linear(x, self.q.weight, self.q.bias).reshape(b, length, 1, self.n_heads, -1)
        att = (q * k).sum(-1) * q.shape[-1] ** -0.5  # (B, L, K, heads)
        if pad is not None:
            att = att.masked_fill(pad.unsqueeze(-1), float("-inf"))
        att = att.softmax(dim=2)
        if self.training:  # (at inference the call alone costs more than the attention arithmetic)
            att = F.dropout(att, self.drop.p, True)
        h = (att.unsqueeze(-1) * v).sum(2).reshape(b, length, d)
        h = torch.relu(F.linear(h, self.out.weight, self.out.bias))
        if self.training:
            h = F.dropout(h, self.drop.p, True)
        norm = self.norm
        return F.layer_norm(x + h if self.residual else h, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


class RadialFormer(nn.Module):
    """Query embedding (B, in_dim) + per-LLM trade-off features → routing logits (B, n_llms).

    ``backbone``: ``radial`` (the paper's), ``star`` (satellites also see their ring neighbours s_{i−1}, s_{i+1},
    as Star-Transformer), ``transformer`` (full self-attention over the 1+n nodes), ``mlp`` (an MLP on
    [relay; satellite], no attention). Every backbone works for any pool size and takes the same candidate mask.
    """

    def __init__(self, in_dim: int, n_llms: int, d_model: int = 128, n_layers: int = 2, n_heads: int = 4,
                 dropout: float = 0.1, backbone: str = "radial", residual: bool = True) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}; got {backbone!r}")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.backbone = backbone
        self.proj = nn.Sequential(nn.Linear(in_dim, d_model), nn.LayerNorm(d_model))
        self.llm = nn.Parameter(torch.randn(n_llms, d_model))
        self.sat_cond = nn.Linear(N_SAT_FEATURES, d_model)
        self.relay_cond = nn.Linear(N_RELAY_FEATURES, d_model)
        layers = 0 if backbone == "mlp" else n_layers
        self.sat = nn.ModuleList(NodeUpdate(d_model, n_heads, dropout, residual) for _ in range(layers))
        self.relay = nn.ModuleList(NodeUpdate(d_model, n_heads, dropout, residual)
                                   for _ in range(layers if backbone in {"radial", "star"} else 0))
        self.mlp = nn.Sequential(nn.Linear(2 * d_model, d_model), nn.ReLU(), nn.Dropout(dropout),
                                 nn.LayerNorm(d_model)) if backbone == "mlp" else None
        self.head = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 1))

    def project(self, q: torch.Tensor) -> torch.Tensor:
        """The relay's initial state r⁰ from the encoder vector: what the query–query loss shapes."""
        return self.proj(q)

    def conditioning(self, lam: float, cost_per_1k: torch.Tensor) -> dict[str, Any]:
        """What a forward pass computes from λ, the pool and the weights but not from the query: the relay's and
        satellites' trade-off terms, the first layer's satellite keys and every layer's LLM-embedding keys. At
        inference they are computed once per λ and reused (`forward`'s ``cond``): a third of batch-1 routing."""
        sat_f, relay_f = trade_off_features(torch.tensor([float(lam)], device=self.llm.device), cost_per_1k)
        m = self.llm.unsqueeze(0)
        s0 = m + self.sat_cond(sat_f)  # (1, n, d)
        return {"relay": self.relay_cond(relay_f), "s0": s0, "s0_keys": self.sat[0].keys(s0) if self.sat else None,
                "m_keys": [sat.keys(m) for sat in self.sat]}

    def forward(self, q: torch.Tensor, lam: torch.Tensor, cost_per_1k: torch.Tensor,
                mask: torch.Tensor | None = None, r0: torch.Tensor | None = None,
                cond: dict[str, Any] | None = None) -> torch.Tensor:
        """Logits (B, n); ``lam`` (B,) per query, ``cost_per_1k`` (n,), ``mask`` (B, n) True = candidate (masked
        LLMs get −inf and are hidden from the relay). ``r0`` reuses an already projected query; ``cond`` (from
        `conditioning`, for the one λ every query of the batch has) skips the query-independent work."""
        if cond is None:
            sat_f, relay_f = trade_off_features(lam, cost_per_1k)
            r = (self.project(q) if r0 is None else r0) + self.relay_cond(relay_f)  # (B, d)
            m = self.llm.unsqueeze(0).expand(r.shape[0], -1, -1)  # (B, n, d)
            s = m + self.sat_cond(sat_f)
        else:
            r = (self.project(q) if r0 is None else r0) + cond["relay"]
            m = self.llm.unsqueeze(0).expand(r.shape[0], -1, -1)
            s = cond["s0"].expand(r.shape[0], -1, -1)
        pad = None if mask is None else ~mask  # True where masked
        if self.backbone in {"radial", "star"}:
            s, r = self._radial(s, m, r, pad, cond)
        elif self.backbone == "transformer":
            s = self._transformer(s, r, pad)
        else:
            s = self.mlp(torch.cat([r.unsqueeze(1).expand_as(s), s], dim=-1))
        logits = self.head(s).squeeze(-1)
        return logits if mask is None else logits.masked_fill(pad, float("-inf"))

    def _radial(self, s: torch.Tensor, m: torch.Tensor, r: torch.Tensor, pad: torch.Tensor | None,
                cond: dict[str, Any] | None = None):
        b, n, _ = s.shape
        relay_pad = None if pad is None else torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1).unsqueeze(1)
        sat_pad = None
        if self.backbone == "star" and pad is not None:
            own = torch.zeros_like(pad)
            sat_pad = torch.stack([torch.roll(pad, 1, dims=1), torch.roll(pad, -1, dims=1), own, own, own], -1)
        for layer, (sat, relay) in enumerate(zip(self.sat, self.relay)):
            # Satellite i attends over [s_i; m_i; r] only (plus s_{i±1} for Star-Transformer).
            if cond is None:
                (ks, vs), (km, vm) = sat.keys(s), sat.keys(m[:1])
            else:
                (ks, vs) = [t.expand(b, -1, -1, -1) for t in cond["s0_keys"]] if layer == 0 else sat.keys(s)
                km, vm = cond["m_keys"][layer]
            kr, vr = sat.keys(r.unsqueeze(1))
            k = [ks, km.expand_as(ks), kr.expand_as(ks)]
            v = [vs, vm.expand_as(vs), vr.expand_as(vs)]
            if self.backbone == "star":
                k = [torch.roll(ks, 1, dims=1), torch.roll(ks, -1, dims=1), *k]
                v = [torch.roll(vs, 1, dims=1), torch.roll(vs, -1, dims=1), *v]
            s = sat(s, torch.stack(k, dim=2), torch.stack(v, dim=2), sat_pad)
            # The relay attends over [r; s_1 … s_n].
            nodes = torch.cat([r.unsqueeze(1), s], dim=1)
            k, v = relay.keys(nodes)
            r = relay(r.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), relay_pad).squeeze(1)
        return s, r

    def _transformer(self, s: torch.Tensor, r: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        x = torch.cat([r.unsqueeze(1), s], dim=1)
        full_pad = None if pad is None else torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1).unsqueeze(1)
        for layer in self.sat:
            k, v = layer.keys(x)
            x = layer(x, k.unsqueeze(1), v.unsqueeze(1), full_pad)
        return x[:, 1:]


__all__ = ["BACKBONES", "NodeUpdate", "RadialFormer", "trade_off_features"]
