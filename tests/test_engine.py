"""LLM.generate / stream / logits on a tiny random checkpoint: stopping, budgets, streaming, seeds, errors."""

from __future__ import annotations

import pytest
import torch

from glmrun import LLM, GlmrunError, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_model):
    return LLM(tiny_model, dtype="float32", progress=False)


def force_token_at_step(llm: LLM, prompt: list[int], step: int, forced: int) -> list[int]:
    """Swap output rows so that greedy decoding emits `forced` at `step`; returns the unforced tokens."""
    free = llm.generate(prompt, GREEDY).token_ids
    assert forced not in free[: step + 1]
    head = llm.model.lm_head.weight
    with torch.no_grad():
        head[[forced, free[step]]] = head[[free[step], forced]]
    return free


def restore(llm: LLM, free: list[int], step: int, forced: int) -> None:
    head = llm.model.lm_head.weight
    with torch.no_grad():
        head[[forced, free[step]]] = head[[free[step], forced]]


@pytest.mark.parametrize("stop_name", ["</s>", "<|user|>", "<|observation|>"])
def test_generation_stops_at_each_stop_token(llm, stop_name):
    prompt = llm.tokenizer.encode("the model reads")
    stop_id = llm.tokenizer.token_to_id(stop_name)
    free = force_token_at_step(llm, prompt, 3, stop_id)
    try:
        out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12))
        assert out.token_ids == [*free[:3], stop_id]  # the stop token ends the ids ...
        assert out.finish_reason == "stop"
        assert out.text == llm.tokenizer.decode(free[:3])  # ... but adds no text
        ignoring = llm.generate(prompt, GREEDY)
        assert len(ignoring.token_ids) == 12 and ignoring.token_ids[3] == stop_id
        assert ignoring.finish_reason == "length"
    finally:
        restore(llm, free, 3, stop_id)


def test_assistant_token_does_not_stop(llm):
    prompt = llm.tokenizer.encode("the model reads")
    assistant = llm.tokenizer.token_to_id("<|assistant|>")
    free = force_token_at_step(llm, prompt, 2, assistant)
    try:
        out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=6))
        assert out.token_ids[2] == assistant and out.finish_reason == "length" and len(out.token_ids) == 6
    finally:
        restore(llm, free, 2, assistant)


def test_stream_equals_generate(llm):
    params = SamplingParams(temperature=0.9, top_p=0.9, seed=7, max_tokens=16, ignore_eos=True)
    out = llm.generate("the model", params)
    pieces = list(llm.stream("the model", params))
    assert [piece.token_id for piece in pieces] == out.token_ids
    assert "".join(piece.text for piece in pieces) == out.text == llm.tokenizer.decode(out.token_ids)
    assert [piece.finish_reason for piece in pieces] == [None] * 15 + ["length"]


def test_seeded_sampling_is_reproducible_and_seeds_differ(llm):
    params = SamplingParams(temperature=1.0, seed=123, max_tokens=20, ignore_eos=True)
    first = llm.generate("the model", params).token_ids
    assert llm.generate("the model", params).token_ids == first
    other = llm.generate("the model", SamplingParams(temperature=1.0, seed=124, max_tokens=20, ignore_eos=True))
    assert other.token_ids != first


def test_text_prompt_gets_the_glm_prefix(llm):
    out = llm.generate("the model", GREEDY)
    assert out.prompt_token_ids[:2] == [
        llm.tokenizer.token_to_id("[gMASK]"),
        llm.tokenizer.token_to_id("sop"),
    ]
    assert llm.generate(out.prompt_token_ids, GREEDY).token_ids == out.token_ids


def test_padding_rows_are_never_generated(llm):
    head = llm.model.lm_head.weight
    saved = head[-1].clone()
    with torch.no_grad():
        head[-1] = head.abs().max() * 100 * torch.sign(llm.model.norm.weight)  # make a padding row dominate
    try:
        out = llm.generate("the model", GREEDY)
        assert max(out.token_ids) < llm.tokenizer.vocab_size
    finally:
        with torch.no_grad():
            head[-1] = saved


def test_context_limit_is_enforced(llm):
    context = llm.config.max_seq_len
    with pytest.raises(GlmrunError, match="context"):
        llm.generate([5] * context, GREEDY)
    with pytest.raises(GlmrunError, match="lower max_tokens"):
        llm.generate([5] * (context - 4), SamplingParams(max_tokens=5))
    out = llm.generate([5] * (context - 4), SamplingParams(temperature=0, ignore_eos=True))
    assert len(out.token_ids) == 4 and out.finish_reason == "length"  # no max_tokens: up to the context


def test_bad_prompts(llm):
    with pytest.raises(GlmrunError, match="empty"):
        llm.generate([], GREEDY)
    with pytest.raises(GlmrunError, match="outside the vocabulary"):
        llm.generate([1, 10**6], GREEDY)


def test_logits_is_a_full_forward(llm):
    ids = llm.tokenizer.encode("the model reads tokens")
    logits = llm.logits(ids)
    assert logits.shape == (len(ids), llm.config.vocab_size) and logits.dtype == torch.float32
    greedy = llm.generate(ids, SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)).token_ids[0]
    assert greedy == int(logits[-1, : llm.tokenizer.vocab_size].argmax())
