"""SamplingParams and the pure functions that turn a batch of logits into next tokens.

Order (the same as Hugging Face's logits processors): temperature, top-k, top-p, then a draw. Temperature 0
means greedy argmax. Every function takes and returns tensors on the logits' device and never reads a value
back to the host, so the decode loop does not stall on it. This module does not run the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glmrun.errors import GlmrunError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token and when to stop; validated on construction."""

    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p; 1 = off
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    seed: int | None = None  # same seed and request -> same tokens
    max_tokens: int | None = None  # new tokens at most; None = up to the model's context length
    ignore_eos: bool = False  # keep generating through the model's stop tokens

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise GlmrunError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GlmrunError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise GlmrunError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise GlmrunError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def mask_invalid_rows(logits: torch.Tensor, fallback_token: int) -> torch.Tensor:
    """Rows holding NaN or +inf (a broken forward pass) pick `fallback_token` instead of crashing the draw.

    The official ChatGLM code does the same with its InvalidScoreLogitsProcessor (it forces token 5); glmrun
    forces the end-of-sequence token so that a broken model ends its answer instead of rambling.
    """
    broken = (logits.isnan() | (logits == float("inf"))).any(dim=-1, keepdim=True)  # (B, 1)
    forced = torch.full_like(logits, float("-inf"))
    forced[:, fallback_token] = 0.0
    return torch.where(broken, forced, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits per row (ties with the k-th are kept), the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering with HF semantics: drop the least likely tokens whose total probability is <= 1 - p.

    The most likely token always survives.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1 - p
    drop_sorted[:, -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token ids `[B]` from float32 logits `[B, vocab]`."""
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    logits = top_k_filter(logits, params.top_k)
    logits = top_p_filter(logits, params.top_p)
    probs = logits.softmax(dim=-1)
    # Exponential-race draw: argmax(p / E) with E ~ Exp(1) picks token i with probability p_i, on the device.
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)
