"""The sampling functions on hand-made logits, and SamplingParams validation."""

from __future__ import annotations

import math

import pytest
import torch

from glmrun import GlmrunError, SamplingParams
from glmrun.sampling import mask_invalid_rows, sample, top_k_filter, top_p_filter

NEG = float("-inf")


def test_temperature_zero_is_argmax_with_first_index_on_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    assert sample(logits, SamplingParams(temperature=0), None).tolist() == [1]


def test_top_k_keeps_the_k_largest_and_ties():
    logits = torch.tensor([[1.0, 4.0, 3.0, 3.0, 0.0]])
    assert top_k_filter(logits, 2).tolist() == [[NEG, 4.0, 3.0, 3.0, NEG]]
    assert torch.equal(top_k_filter(logits, 10), logits)  # k beyond the vocabulary keeps everything
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    kept = top_p_filter(logits, 0.8).isfinite().tolist()[0]
    assert kept == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert top_p_filter(logits, 0.81).isfinite().tolist()[0] == [True, True, True, False]
    assert top_p_filter(logits, 1e-6).isfinite().tolist()[0] == [True, False, False, False]  # best survives
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[math.log(0.7), math.log(0.2), math.log(0.1)]]).repeat(20000, 1)
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample(logits, SamplingParams(temperature=1.0), generator), minlength=3) / 20000
    torch.testing.assert_close(counts, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)


def test_filtered_tokens_are_never_sampled():
    logits = torch.tensor([[2.0, 1.9, 1.8, -5.0]]).repeat(5000, 1)
    generator = torch.Generator().manual_seed(1)
    drawn = sample(logits, SamplingParams(temperature=5.0, top_k=2), generator)
    assert set(drawn.tolist()) == {0, 1}


def test_broken_rows_pick_the_fallback_and_healthy_rows_are_untouched():
    logits = torch.tensor([[0.0, float("nan"), 1.0], [0.0, 2.0, 1.0], [float("inf"), 0.0, 0.0]])
    guarded = mask_invalid_rows(logits, fallback_token=0)
    assert sample(guarded, SamplingParams(temperature=0), None).tolist() == [0, 1, 0]
    assert sample(guarded, SamplingParams(temperature=1.0), torch.Generator().manual_seed(0))[[0, 2]].tolist() == [0, 0]


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_invalid_params_are_refused(kwargs, fragment):
    with pytest.raises(GlmrunError, match=fragment):
        SamplingParams(**kwargs)
