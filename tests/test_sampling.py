"""The sampling processors on hand-made logits, their order, and SamplingParams validation."""

from __future__ import annotations

import math

import pytest
import torch

from glmrun import GlmrunError, SamplingParams
from glmrun.sampling import (
    TokenHistory,
    apply_penalties,
    mask_invalid_rows,
    min_p_filter,
    process_logits,
    sample,
    top_k_filter,
    top_p_filter,
)

NEG = float("-inf")


def kept(logits: torch.Tensor) -> list[bool]:
    return logits.isfinite().tolist()[0]


def history_of(prompt: list[int], output: list[int], vocab: int) -> TokenHistory:
    history = TokenHistory(prompt, 1, vocab, torch.device("cpu"))
    for token in output:
        history.append(torch.tensor([token]))
    return history


def test_temperature_zero_is_argmax_with_first_index_on_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    params = SamplingParams(temperature=0)
    assert sample(process_logits(logits, history_of([], [], 4), params, []), params, None).tolist() == [1]


def test_top_k_keeps_the_k_largest_and_ties():
    logits = torch.tensor([[1.0, 4.0, 3.0, 3.0, 0.0]])
    assert top_k_filter(logits, 2).tolist() == [[NEG, 4.0, 3.0, 3.0, NEG]]
    assert torch.equal(top_k_filter(logits, 10), logits)  # k beyond the vocabulary keeps everything
    assert torch.equal(top_k_filter(logits, 0), logits)
    with_inf = torch.tensor([[NEG, 2.0, NEG, 1.0]])
    assert top_k_filter(with_inf, 3).tolist() == [[NEG, 2.0, NEG, 1.0]]


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert kept(top_p_filter(logits, 0.8)) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(top_p_filter(logits, 0.81)) == [True, True, True, False]
    assert kept(top_p_filter(logits, 1e-6)) == [True, False, False, False]  # the best always survives
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    with_inf = kept(top_p_filter(torch.tensor([[NEG, 0.0, 0.0, NEG]]), 0.5))
    assert not with_inf[0] and not with_inf[3] and sum(with_inf) == 1  # -inf stays out; one of the tied survives
    tie = torch.tensor([[0.0, 0.0]])  # two equal halves: p=0.5 keeps one of them, p=0.51 both
    assert sum(kept(top_p_filter(tie, 0.5))) == 1 and sum(kept(top_p_filter(tie, 0.51))) == 2


def test_min_p_is_relative_to_the_top_token():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    assert kept(min_p_filter(logits, 0.2)) == [True, True, True, False]  # threshold 0.1
    assert kept(min_p_filter(logits, 0.61)) == [True, False, False, False]  # 0.3 < 0.305
    assert kept(min_p_filter(logits, 1.0)) == [True, False, False, False]
    assert torch.equal(min_p_filter(logits, 0.0), logits)


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0, 1.0]])
    history = history_of(prompt=[0], output=[1], vocab=5)
    result = apply_penalties(logits, history, SamplingParams(repetition_penalty=2.0))
    assert result.tolist() == [[1.0, -4.0, 2.0, -2.0, 1.0]]


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    logits = torch.zeros(1, 4)
    history = history_of(prompt=[3], output=[0, 0, 1], vocab=4)
    result = apply_penalties(logits, history, SamplingParams(presence_penalty=0.5, frequency_penalty=0.25))
    assert result.tolist() == [[-1.0, -0.75, 0.0, 0.0]]  # token 0: 2 x 0.25 + 0.5; the prompt token is untouched


def test_processors_apply_in_hf_order():
    # Probabilities 0.4, 0.3, 0.2, 0.1. top-k 2 then top-p 0.5 keeps only the first token (0.4 of the renormalised
    # 0.7 is 0.57 >= 0.5); top-p first would keep two.
    logits = torch.tensor([[0.4, 0.3, 0.2, 0.1]]).log()
    history = history_of([], [], 4)
    both = process_logits(logits, history, SamplingParams(top_k=2, top_p=0.5), [])
    assert kept(both) == [True, False, False, False]
    assert kept(top_k_filter(top_p_filter(logits, 0.5), 2)) == [True, True, False, False]
    # Temperature comes before top-p: at T=4 the distribution flattens and p=0.5 needs two tokens.
    hot = process_logits(logits, history, SamplingParams(temperature=4.0, top_p=0.5), [])
    assert kept(hot) == [True, True, False, False]
    torch.testing.assert_close(hot[0, :2], logits[0, :2] / 4)
    # Penalties come before temperature: the penalty divides the raw logit, then temperature scales it.
    positive = torch.tensor([[4.0, 1.0]])
    penalized = process_logits(
        positive, history_of([0], [], 2), SamplingParams(temperature=2, repetition_penalty=2), []
    )
    assert penalized.tolist() == [[1.0, 0.5]]


def test_suppressed_tokens_cannot_be_chosen():
    logits = torch.tensor([[5.0, 1.0, 0.0]])
    processed = process_logits(logits, history_of([], [], 3), SamplingParams(temperature=0), [0])
    assert sample(processed, SamplingParams(temperature=0), None).tolist() == [1]


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample(logits, SamplingParams(temperature=1.0), generator), minlength=3) / 20000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)


def test_filtered_tokens_are_never_sampled():
    logits = torch.tensor([[2.0, 1.9, 1.8, -5.0]]).repeat(5000, 1)
    params = SamplingParams(temperature=5.0, top_k=2)
    drawn = sample(
        process_logits(logits, TokenHistory([], 5000, 4, torch.device("cpu")), params, []),
        params,
        torch.Generator().manual_seed(1),
    )
    assert set(drawn.tolist()) == {0, 1}


def test_same_seed_same_draws():
    logits = torch.randn(8, 100)
    params = SamplingParams(temperature=1.0)
    first = sample(logits, params, torch.Generator().manual_seed(3))
    assert torch.equal(first, sample(logits, params, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, sample(logits, params, torch.Generator().manual_seed(4)))


def test_broken_rows_pick_the_fallback_and_healthy_rows_are_untouched():
    logits = torch.tensor([[0.0, float("nan"), 1.0], [0.0, 2.0, 1.0], [float("inf"), 0.0, 0.0]])
    guarded = mask_invalid_rows(logits, fallback_token=0)
    assert sample(guarded, SamplingParams(temperature=0), None).tolist() == [0, 1, 0]
    drawn = sample(guarded, SamplingParams(temperature=1.0), torch.Generator().manual_seed(0))
    assert drawn[[0, 2]].tolist() == [0, 0]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": -3.0}, "frequency_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"min_tokens": 5, "max_tokens": 4}, "min_tokens"),
        ({"n": 0}, "n must be"),
        ({"logprobs": 21}, "logprobs"),
        ({"stop": ["ok", ""]}, "stop strings"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 2, "num_return_sequences": 3, "temperature": 0}, "num_return_sequences"),
        ({"num_return_sequences": 2}, "num_return_sequences"),
        ({"num_beams": 2}, "temperature=0"),
        ({"num_beams": 2, "temperature": 0, "top_p": 0.9}, "top_p"),
        ({"num_beams": 2, "temperature": 0, "n": 2}, "num_return_sequences"),
        ({"num_beams": 2, "temperature": 0, "stop": "x"}, "stop strings"),
        ({"num_beams": 2, "temperature": 0, "early_stopping": "sometimes"}, "early_stopping"),
    ],
)
def test_invalid_params_are_refused(kwargs, fragment):
    with pytest.raises(GlmrunError, match=fragment):
        SamplingParams(**kwargs)


def test_stop_is_normalised():
    assert SamplingParams(stop="###").stop_strings == ("###",)
    assert SamplingParams(stop=["a", "b"]).stop_strings == ("a", "b")
    assert SamplingParams().stop_strings == ()
