"""Every attention backend equals the reference `math` backend, over random shapes (property-based)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glmrun import LLM, GlmrunError
from glmrun.attention import cpu_auto_attention, flash_attention, make_attention, math_attention, sdpa_attention
from glmrun.kv_cache import KVCache


@st.composite
def attention_case(draw):
    """Random batch, heads/groups, head size, new tokens, cached prefix and per-row valid lengths."""
    batch = draw(st.integers(1, 3))
    kv_heads = draw(st.integers(1, 4))
    group = draw(st.integers(1, 4))  # query heads per KV head (1 = multi-head, kv_heads = 1 = multi-query)
    head_dim = draw(st.sampled_from([4, 8, 16, 32]))
    query_len = draw(st.integers(1, 40))  # 1 = a decode step
    prefix = draw(st.integers(0, 40))  # tokens already in the cache
    ragged = batch > 1 and draw(st.booleans())
    key_len = prefix + query_len
    lengths = None
    if ragged:  # rows of different lengths, each holding at least its T queries
        lengths = torch.tensor([draw(st.integers(query_len, key_len)) for _ in range(batch)])
    seed = draw(st.integers(0, 2**16))
    block = draw(st.integers(1, 48))
    return batch, kv_heads, group, head_dim, query_len, key_len, lengths, seed, block


@settings(max_examples=150, deadline=None)
@given(attention_case())
def test_backends_equal_math(case):
    batch, kv_heads, group, head_dim, query_len, key_len, lengths, seed, block = case
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, kv_heads * group, query_len, head_dim, generator=generator)
    k = torch.randn(batch, kv_heads, key_len, head_dim, generator=generator)
    v = torch.randn(batch, kv_heads, key_len, head_dim, generator=generator)
    reference = math_attention(q, k, v, lengths)
    torch.testing.assert_close(flash_attention(q, k, v, lengths, block_size=block), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sdpa_attention(q, k, v, lengths), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cpu_auto_attention(q, k, v, lengths), reference, atol=1e-5, rtol=1e-5)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """One row, one head, one query at a time, straight from the definition (K/V repeated per query head)."""
    batch, heads, query_len, head_dim = q.shape
    group = heads // k.shape[1]
    out = torch.zeros_like(q)
    for b in range(batch):
        for h in range(heads):
            for t in range(query_len):
                position = lengths[b] - query_len + t
                keys, values = k[b, h // group, : position + 1], v[b, h // group, : position + 1]
                weights = torch.softmax(keys @ q[b, h, t] / head_dim**0.5, dim=0)
                out[b, h, t] = weights @ values
    return out


def test_math_follows_the_definition():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=generator) for shape in [(2, 6, 4, 8), (2, 3, 9, 8), (2, 3, 9, 8)])
    for lengths in (None, torch.tensor([9, 5])):
        expected = naive_attention(q, k, v, [9, 9] if lengths is None else lengths.tolist())
        torch.testing.assert_close(math_attention(q, k, v, lengths), expected, atol=1e-5, rtol=1e-5)


def test_padding_after_a_row_s_length_is_never_read():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 3, 8, generator=generator)
    k, v = torch.randn(2, 2, 10, 8, generator=generator), torch.randn(2, 2, 10, 8, generator=generator)
    lengths = torch.tensor([10, 6])
    before = [backend(q, k, v, lengths) for backend in (math_attention, flash_attention, sdpa_attention)]
    k[1, :, 6:], v[1, :, 6:] = 1e4, -1e4  # stale values beyond row 1's length (a cache holds finite garbage)
    for backend, expected in zip((math_attention, flash_attention, sdpa_attention), before):
        torch.testing.assert_close(backend(q, k, v, lengths), expected)


@pytest.mark.parametrize("backend", ["math", "flash", "sdpa"])
def test_bfloat16_inputs_stay_close_to_float32(backend):
    attend = make_attention(backend, torch.device("cpu"), block_size=16)
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(*shape, generator=generator) for shape in [(1, 8, 40, 32), (1, 2, 50, 32), (1, 2, 50, 32)])
    exact = math_attention(q, k, v)
    low = attend(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), exact, atol=3e-2, rtol=0)  # bf16 keeps ~3 significant digits


@pytest.mark.parametrize("backend", ["auto", "math", "flash", "sdpa"])
def test_model_cached_decoding_equals_full_recomputation(make_checkpoint, backend):
    llm = LLM(make_checkpoint(), dtype="float32", progress=False, attention=backend, flash_block_size=5)
    tokens = torch.randint(0, 400, (2, 21))
    full = llm.model(tokens)
    cache = KVCache(llm.config, 2, 21, torch.float32, "cpu")
    with torch.inference_mode():
        steps = [llm.model(tokens[:, :13], 0, cache)]  # a prefill, a continued prefill, then decode steps
        steps.append(llm.model(tokens[:, 13:17], 13, cache))
        steps += [llm.model(tokens[:, i : i + 1], i, cache) for i in range(17, 21)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_unknown_backend_is_refused(tiny_model):
    with pytest.raises(GlmrunError, match="unknown attention backend"):
        LLM(tiny_model, attention="fast")
    with pytest.raises(GlmrunError, match="block size"):
        make_attention("flash", torch.device("cpu"), block_size=0)
