"""Causal attention over a (possibly cached) prefix, with grouped-query heads.

One signature for every backend: `attention(q, k, v)` where `k`, `v` are `[B, kv_heads, S, D]` (a cached
prefix plus the new tokens) and `q` is `[B, heads, T, D]` for the new tokens, the last T of the S positions.
Query head h reads KV head h // (heads / kv_heads), as in the official ChatGLM code. The K/V heads are never
copied per query head: the queries of one group are stacked instead.

Only the reference `math` backend lives here for now: scores, mask, float32 softmax, weighted sum.
"""

from __future__ import annotations

import torch


def causal_mask(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """`[T, S]` bool, True where query i (at position S - T + i) may see key j: j <= S - T + i."""
    query_positions = torch.arange(key_len - query_len, key_len, device=device)
    return torch.arange(key_len, device=device)[None, :] <= query_positions[:, None]


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Reference attention; the new queries are the last T positions of the S keys. Returns `[B, heads, T, D]`."""
    batch, num_heads, query_len, head_dim = q.shape
    num_kv_heads, key_len = k.shape[1], k.shape[2]
    group = num_heads // num_kv_heads
    # Query heads of one KV group side by side, so one matmul serves the whole group without copying K.
    grouped_q = q.reshape(batch, num_kv_heads, group * query_len, head_dim)  # (B, kvh, G*T, D)
    scores = (grouped_q @ k.transpose(-1, -2)).float() * head_dim**-0.5  # (B, kvh, G*T, S)
    if query_len > 1:
        scores = scores.view(batch, num_kv_heads, group, query_len, key_len)  # (B, kvh, G, T, S)
        scores = scores.masked_fill(~causal_mask(query_len, key_len, q.device), float("-inf"))
        scores = scores.view(batch, num_kv_heads, group * query_len, key_len)  # (B, kvh, G*T, S)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = probs @ v  # (B, kvh, G*T, D)
    return out.view(batch, num_heads, query_len, head_dim)
