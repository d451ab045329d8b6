"""Causal attention backends behind one signature, chosen once per model.

    attend(q, k, v, key_lengths=None) -> out

`q` is `[B, heads, T, D]` for the new tokens, `k`, `v` are `[B, kv_heads, S, D]` (a cached prefix plus the new
tokens). Row b holds `key_lengths[b]` valid keys (all S when None) and its T queries are the last T of them:
query t sits at position key_lengths[b] - T + t and sees keys 0..that position. This one rule covers causal
prefill (S = T), a prefill that continues a cache (a second chat turn), one-token decode (T = 1) and batches
whose rows have different lengths (each row needs key_lengths[b] >= T). Query head h reads KV head
h // (heads / kv_heads), as in the official ChatGLM code; no backend copies K/V per query head.

- `math`: the reference, written for clarity: the full score matrix, a mask, float32 softmax, weighted sum.
- `flash`: FlashAttention's algorithm in PyTorch: loops over query and key tiles with a running max and sum
  (online softmax), never holding more than one tile of scores, and skipping the tiles above the diagonal.
- `sdpa`: `torch.nn.functional.scaled_dot_product_attention` with its native grouped-query support.
- `auto`: `sdpa`, except for one-token decode steps on a CPU, where `math` measured faster.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from glmrun.errors import GlmrunError

Attend = Callable[..., torch.Tensor]
DEFAULT_FLASH_BLOCK = 128  # fastest of 32..1024 on a 2-core AVX-512 CPU (benchmarks/attention.py)


def query_positions(
    query_len: int, key_len: int, key_lengths: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """Absolute position of every query: `[B, T]` (`[1, T]` when all rows hold `key_len` keys)."""
    ends = torch.tensor([key_len], device=device) if key_lengths is None else key_lengths.to(device)
    return ends[:, None] - query_len + torch.arange(query_len, device=device)  # (B, T)


def visible(positions: torch.Tensor, key_start: int, key_end: int) -> torch.Tensor:
    """`[B, T, K]` bool: may the query at `positions[b, t]` see key j (key_start <= j < key_end)? Iff j <= position."""
    keys = torch.arange(key_start, key_end, device=positions.device)
    return keys[None, None, :] <= positions[:, :, None]


def _grouped(q: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """`[B, H, T, D]` -> `[B, kv_heads, G*T, D]`: the G query heads of one KV head stacked, so one matmul serves
    the whole group without repeating K or V."""
    batch, heads, length, head_dim = q.shape
    return q.reshape(batch, num_kv_heads, heads // num_kv_heads * length, head_dim)


def math_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference attention. Memory: the whole `[B, heads, T, S]` score matrix in float32."""
    batch, num_heads, query_len, head_dim = q.shape
    num_kv_heads, key_len = k.shape[1], k.shape[2]
    group = num_heads // num_kv_heads
    scores = (_grouped(q, num_kv_heads) @ k.transpose(-1, -2)).float() * head_dim**-0.5  # (B, kvh, G*T, S)
    if query_len > 1 or key_lengths is not None:
        allowed = visible(query_positions(query_len, key_len, key_lengths, q.device), 0, key_len)  # (B, T, S)
        scores = scores.view(batch, num_kv_heads, group, query_len, key_len)  # (B, kvh, G, T, S)
        scores.masked_fill_(~allowed[:, None, None], float("-inf"))
        scores = scores.view(batch, num_kv_heads, group * query_len, key_len)  # (B, kvh, G*T, S)
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    out = probs @ v  # (B, kvh, G*T, D)
    return out.view(batch, num_heads, query_len, head_dim)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_lengths: torch.Tensor | None = None,
    block_size: int = DEFAULT_FLASH_BLOCK,
) -> torch.Tensor:
    """Tiled attention with an online softmax. Memory: one tile of at most `[B, heads, block, block]` scores."""
    batch, num_heads, query_len, head_dim = q.shape
    num_kv_heads, key_len = k.shape[1], k.shape[2]
    group = num_heads // num_kv_heads
    scale = head_dim**-0.5
    positions = query_positions(query_len, key_len, key_lengths, q.device)  # (B or 1, T)
    q = q.view(batch, num_kv_heads, group, query_len, head_dim)  # (B, kvh, G, T, D)
    out = torch.empty_like(q)
    for q_start in range(0, query_len, block_size):
        q_end = min(q_start + block_size, query_len)
        tile_len = q_end - q_start
        q_tile = q[:, :, :, q_start:q_end].reshape(batch, num_kv_heads, group * tile_len, head_dim)  # (B,kvh,G*t,D)
        tile_positions = positions[:, q_start:q_end]  # (B or 1, t)
        # Keys after the last query of the tile are invisible to every row: those tiles are never computed.
        key_stop = key_len - query_len + q_end
        # A tile holds at most block_size^2 scores per query head: short query tiles (decode) take wide key tiles.
        key_block = block_size * max(1, block_size // tile_len)
        running_max = torch.full((batch, num_kv_heads, group * tile_len, 1), float("-inf"), device=q.device)
        running_sum = torch.zeros_like(running_max)
        acc = torch.zeros(batch, num_kv_heads, group * tile_len, head_dim, device=q.device)  # float32
        for k_start in range(0, key_stop, key_block):
            k_end = min(k_start + key_block, key_stop)
            scores = (q_tile @ k[:, :, k_start:k_end].transpose(-1, -2)).float() * scale  # (B, kvh, G*t, k)
            if k_end - 1 > key_len - query_len + q_start or key_lengths is not None:  # tile crosses the diagonal
                allowed = visible(tile_positions, k_start, k_end)  # (B or 1, t, k)
                scores = scores.view(batch, num_kv_heads, group, tile_len, k_end - k_start)
                scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
                scores = scores.view(batch, num_kv_heads, group * tile_len, k_end - k_start)
            new_max = torch.maximum(running_max, scores.amax(dim=-1, keepdim=True))
            safe_max = new_max.masked_fill(new_max == float("-inf"), 0.0)  # rows that have seen no key yet
            probs = torch.exp(scores - safe_max)  # (B, kvh, G*t, k), unnormalised
            rescale = torch.exp(running_max - safe_max)  # shrink what was summed under the old maximum
            running_sum = running_sum * rescale + probs.sum(dim=-1, keepdim=True)
            acc = acc * rescale + (probs.to(v.dtype) @ v[:, :, k_start:k_end]).float()
            running_max = new_max
        tile_out = (acc / running_sum).to(q.dtype)  # (B, kvh, G*t, D)
        out[:, :, :, q_start:q_end] = tile_out.view(batch, num_kv_heads, group, tile_len, head_dim)
    return out.view(batch, num_heads, query_len, head_dim)


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """PyTorch's fused kernel; K/V heads are shared natively (`enable_gqa`), never repeated by glmrun."""
    query_len, key_len = q.shape[2], k.shape[2]
    if key_lengths is None and query_len == key_len:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    if key_lengths is None and query_len == 1:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    allowed = visible(query_positions(query_len, key_len, key_lengths, q.device), 0, key_len)  # (B, T, S)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], enable_gqa=True)


def cpu_auto_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """On a CPU: sdpa's fused kernel for prompts, math's grouped matmul for one-token decode steps, which
    benchmarks/attention.py measured faster there (PyTorch's CPU kernel is tuned for long queries)."""
    if q.shape[2] == 1:
        return math_attention(q, k, v, key_lengths)
    return sdpa_attention(q, k, v, key_lengths)


BACKENDS = ("math", "flash", "sdpa")


def make_attention(name: str, device: torch.device, block_size: int = DEFAULT_FLASH_BLOCK) -> Attend:
    """The backend called `name`. "auto": sdpa on a GPU; on a CPU, sdpa for prompts and math for decode."""
    if name == "auto":
        return cpu_auto_attention if device.type == "cpu" else sdpa_attention
    if name == "math":
        return math_attention
    if name == "flash":
        if block_size < 1:
            raise GlmrunError(f"flash block size must be >= 1, got {block_size}")
        return partial(flash_attention, block_size=block_size)
    if name == "sdpa":
        return sdpa_attention
    raise GlmrunError(f"unknown attention backend {name!r}: choose auto, {', '.join(BACKENDS)}")
