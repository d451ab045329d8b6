"""The transformer's pieces and invariants on tiny random checkpoints (no shared assets needed)."""

from __future__ import annotations

import pytest
import torch

from glmrun import LLM
from glmrun.config import ModelConfig
from glmrun.kv_cache import KVCache
from glmrun.model import apply_rotary, rotary_angles
from tests.tiny import tiny_hf_config


def complex_rotary(x: torch.Tensor, positions: torch.Tensor, base: float) -> torch.Tensor:
    """An independent formulation: interleaved pairs of the first half as complex numbers times e^(i*pos*theta)."""
    head_dim = x.shape[-1]
    rotary_dim = head_dim // 2
    theta = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim)
    phase = torch.polar(
        torch.ones(len(positions), rotary_dim // 2, dtype=torch.float64), positions.double()[:, None] * theta
    )  # (T, R/2)
    pairs = torch.view_as_complex(x[..., :rotary_dim].double().reshape(*x.shape[:-1], rotary_dim // 2, 2).contiguous())
    rotated = torch.view_as_real(pairs * phase[None, :, None, :]).flatten(-2)
    return torch.cat([rotated, x[..., rotary_dim:].double()], dim=-1)


@pytest.mark.parametrize("family,rope_ratio", [("chatglm3", 1), ("chatglm3", 50), ("chatglm2", 16)])
def test_rotary_matches_complex_formulation(family, rope_ratio):
    config = ModelConfig.from_hf_config(tiny_hf_config(kv_channels=16, rope_ratio=rope_ratio), family)
    x = torch.randn(2, 5, 3, 16)  # (B, T, H, D)
    cos, sin = rotary_angles(config, start_pos=7, length=5, dtype=torch.float32, device=torch.device("cpu"))
    positions = torch.arange(7, 12)
    if family == "chatglm2":  # ChatGLM2-32K interpolates positions; ChatGLM3 scales the base
        expected = complex_rotary(x, positions / rope_ratio, 10000.0)
    else:
        expected = complex_rotary(x, positions, 10000.0 * rope_ratio)
    torch.testing.assert_close(apply_rotary(x, cos, sin).double(), expected, atol=1e-5, rtol=1e-5)


def test_rotary_leaves_the_second_half_of_each_head_alone():
    config = ModelConfig.from_hf_config(tiny_hf_config(), "chatglm3")
    x = torch.randn(1, 4, 2, config.head_dim)
    cos, sin = rotary_angles(config, 3, 4, torch.float32, torch.device("cpu"))
    assert torch.equal(apply_rotary(x, cos, sin)[..., config.rotary_dim :], x[..., config.rotary_dim :])


@pytest.mark.parametrize("groups", [1, 2, 4])  # multi-query, grouped-query, full multi-head (4 heads)
def test_cached_decoding_equals_full_recomputation(make_checkpoint, groups):
    llm = LLM(make_checkpoint(multi_query_group_num=groups), dtype="float32", progress=False)
    tokens = torch.randint(0, 400, (1, 20))
    full = llm.model(tokens)  # (1, 20, vocab), no cache
    cache = KVCache(llm.config, 1, 20, torch.float32, "cpu")
    with torch.inference_mode():
        steps = [llm.model(tokens[:, :12], 0, cache)]  # prefill 12, then 8 one-token steps
        steps += [llm.model(tokens[:, i : i + 1], i, cache) for i in range(12, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.keys.shape == (2, 1, groups, 20, llm.config.head_dim)  # only the KV heads are stored


def test_bfloat16_agrees_with_float32(make_checkpoint):
    """bf16 keeps 8 bits of mantissa (relative error ~4e-3 per operation); after 2 layers the logits, which span
    about +-10 here, stay within 0.25 of float32 and the top token agrees on nearly every position."""
    folder = make_checkpoint()
    tokens = list(range(3, 43))
    reference = LLM(folder, dtype="float32", progress=False).logits(tokens)
    low = LLM(folder, dtype="bfloat16", progress=False).logits(tokens)
    assert low.dtype == torch.float32  # logits are always returned in float32
    assert (low - reference).abs().max() < 0.25
    assert (low.argmax(-1) == reference.argmax(-1)).float().mean() >= 0.9


def test_dtype_auto_and_explicit(make_checkpoint):
    folder = make_checkpoint(dtype=torch.float32, torch_dtype="float32")
    assert LLM(folder, progress=False).model.embed.weight.dtype == torch.float32
    half = make_checkpoint(dtype=torch.float16)
    assert LLM(half, progress=False).model.embed.weight.dtype == torch.bfloat16  # auto on a CPU
    assert LLM(half, dtype="float16", progress=False).model.embed.weight.dtype == torch.float16
