"""The ChatGLM2/ChatGLM3 transformer (and the Llama family through config switches), top to bottom, in PyTorch.

embedding -> N x [RMSNorm -> attention (fused QKV, grouped-query, partial interleaved rotary) -> residual
-> RMSNorm -> SwiGLU MLP -> residual] -> final RMSNorm -> output layer. Activations are `[batch, seq, hidden]`.
Llama differs only in switches: rotary over whole heads in split halves, and an output layer that may reuse
the embedding (tied); its separate q/k/v and gate/up weights are fused when loaded.

It knows nothing of files, tokenizers, sampling, quantization or devices: weights arrive through
`load_state_dict` (see weights.py), keys and values go to a KVCache the caller owns, the caller says at
which position the new tokens start, and the attention backend is handed in (see attention.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glmrun.attention import Attend, math_attention
from glmrun.config import ModelConfig
from glmrun.kv_cache import KVCache


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 like the official ChatGLM code, returned in the input dtype."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (self.weight * (x * torch.rsqrt(variance + self.eps))).to(x.dtype)


def rotary_angles(
    config: ModelConfig, start_pos: int, length: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin `[T, rotary_dim/2]` for positions start_pos..start_pos+T-1, cast to the compute dtype.

    theta_i = base^(-2i/rotary_dim), computed in float32 as the official code does. ChatGLM2-32K divides the
    positions by rope_ratio instead and computes theta and positions in the compute dtype (its inv_freq
    buffer's dtype), which is reproduced here.
    """
    interpolated = config.rope_position_scale != 1.0
    table_dtype = dtype if interpolated else torch.float32
    theta = 1.0 / config.rope_base ** (
        torch.arange(0, config.rotary_dim, 2, dtype=table_dtype, device=device) / config.rotary_dim
    )
    positions = torch.arange(start_pos, start_pos + length, dtype=table_dtype, device=device)
    if interpolated:
        positions = positions / config.rope_position_scale
    angles = torch.outer(positions, theta).float()  # (T, rotary_dim/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool = True) -> torch.Tensor:
    """Rotate the first rotary_dim dims of each head of `x` `[B, T, H, D]`; the rest pass through unchanged.

    Interleaved (ChatGLM, llama.cpp's GGUF layout): dims (0,1), (2,3)... form the rotated pairs. Otherwise
    (Hugging Face Llama, "rotate half"): dim i pairs with dim i + rotary_dim/2.
    """
    batch, seq, heads, head_dim = x.shape
    rotary_dim = 2 * cos.shape[-1]
    rotated, passed = x[..., :rotary_dim], x[..., rotary_dim:]
    cos, sin = cos[:, None, :], sin[:, None, :]  # (T, 1, R/2): broadcast over heads
    if interleaved:
        pairs = rotated.reshape(batch, seq, heads, rotary_dim // 2, 2)  # (B, T, H, R/2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]  # (B, T, H, R/2)
        rotated = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(3)  # (B, T, H, R)
    else:
        first, second = rotated[..., : rotary_dim // 2], rotated[..., rotary_dim // 2 :]  # (B, T, H, R/2) each
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)  # (B, T, H, R)
    return torch.cat([rotated, passed], dim=-1)  # (B, T, H, D)


class Attention(nn.Module):
    """Self-attention with one fused QKV projection and `num_kv_heads` shared key/value heads."""

    def __init__(self, config: ModelConfig, layer: int, attend: Attend) -> None:
        super().__init__()
        self.layer, self.attend, self.interleaved = layer, attend, config.rope_interleaved
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_heads,
            config.num_kv_heads,
            config.head_dim,
        )
        self.qkv = nn.Linear(config.hidden_size, config.qkv_size, bias=config.qkv_bias)
        self.out = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=config.linear_bias)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None,
        start_pos: int,
    ) -> torch.Tensor:
        batch, seq, _ = x.shape
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = apply_rotary(q.view(batch, seq, self.num_heads, self.head_dim), *rotary, self.interleaved)  # (B,T,H,D)
        k = apply_rotary(k.view(batch, seq, self.num_kv_heads, self.head_dim), *rotary, self.interleaved)
        v = v.view(batch, seq, self.num_kv_heads, self.head_dim)  # (B, T, kvh, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if cache is not None:
            k, v = cache.write(self.layer, start_pos, k, v)  # (B, kvh, start_pos + T, D)
        y = self.attend(q, k, v)  # (B, H, T, D)
        return self.out(y.transpose(1, 2).reshape(batch, seq, q_size))  # (B, T, hidden)


class MLP(nn.Module):
    """SwiGLU: one projection to 2 x ffn, silu(first half) * second half, projected back."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.ffn_hidden_size, bias=config.linear_bias)
        self.down = nn.Linear(config.ffn_hidden_size, config.hidden_size, bias=config.linear_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, ffn) each
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer layer: x + attention(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, config: ModelConfig, layer: int, attend: Attend) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.attention = Attention(config, layer, attend)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        cache: KVCache | None,
        start_pos: int,
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), rotary, cache, start_pos)
        return h + self.mlp(self.mlp_norm(h))


class Transformer(nn.Module):
    """Token ids in, float32 logits out."""

    def __init__(self, config: ModelConfig, attend: Attend = math_attention) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, layer, attend) for layer in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight  # one matrix: token -> vector and vector -> logits

    def forward(
        self,
        tokens: torch.Tensor,
        start_pos: int = 0,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """`tokens` `[B, T]` at positions start_pos.. -> logits `[B, T, vocab]` (`[B, 1, vocab]` if last_only).

        Without a cache the tokens must start at position 0 and attend only to each other.
        """
        if cache is None and start_pos != 0:
            raise ValueError("tokens after position 0 need the KV cache holding the earlier positions")
        x = self.embed(tokens)  # (B, T, hidden)
        rotary = rotary_angles(self.config, start_pos, tokens.shape[1], x.dtype, x.device)
        for block in self.layers:
            x = block(x, rotary, cache, start_pos)
        if last_only:
            x = x[:, -1:]  # (B, 1, hidden): generation needs only the next-token distribution
        return self.lm_head(self.norm(x)).float()
