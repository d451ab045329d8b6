"""A preallocated key/value cache that stores only the KV heads.

With grouped-query attention (ChatGLM3-6B: 32 query heads share 2 KV heads) the cache holds
`num_kv_heads` heads, not `num_heads`: 16x less memory than full multi-head attention. The tensors are
allocated once per generation and written in place; the cache does not know about positions or masks (the
caller says where to write) and never grows. `reorder` copies whole rows, for beam search and for the
samples that share one prefill.
"""

from __future__ import annotations

import torch

from glmrun.config import ModelConfig


class KVCache:
    """Keys and values of every layer: `[layers, batch, kv_heads, capacity, head_dim]` each."""

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        capacity: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        shape = (config.num_layers, batch_size, config.num_kv_heads, capacity, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def capacity(self) -> int:
        """Tokens per sequence that fit."""
        return self.keys.shape[3]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def write(
        self, layer: int, start_pos: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store `keys`/`values` `[B, kv_heads, T, D]` at positions start_pos.. of `layer`.

        Returns views of everything stored for that layer so far: `[B, kv_heads, start_pos + T, D]`.
        """
        batch, end = keys.shape[0], start_pos + keys.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} tokens; writing up to position {end}")
        self.keys[layer, :batch, :, start_pos:end] = keys
        self.values[layer, :batch, :, start_pos:end] = values
        return self.keys[layer, :batch, :, :end], self.values[layer, :batch, :, :end]

    def reorder(self, rows: torch.Tensor, length: int) -> None:
        """Make row i hold what row `rows[i]` held, for the first `length` positions (rows may repeat).

        Beam search calls this after every step; n samples call it once to copy the prefilled prompt.
        """
        count = rows.shape[0]
        self.keys[:, :count, :, :length] = self.keys[:, rows, :, :length]
        self.values[:, :count, :, :length] = self.values[:, rows, :, :length]
