"""Decoding strategies end to end on a tiny random checkpoint: n samples, logprobs, stop strings, min_tokens,
beam search against a no-cache reference, and robustness to broken logits."""

from __future__ import annotations

import pytest
import torch

from glmrun import LLM, GlmrunError, SamplingParams
from glmrun.beam_search import FinishedHypotheses
from glmrun.stop_strings import StopStringMatcher

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_model):
    return LLM(tiny_model, dtype="float32", progress=False)


@pytest.fixture(scope="module")
def prompt(llm):
    return llm.tokenizer.encode("the model reads")


def full_logprobs(llm: LLM, ids: list[int]) -> torch.Tensor:
    """Log-softmax over the real vocabulary from one full forward pass (no cache)."""
    logits = llm.logits(ids)
    logits[:, llm.tokenizer.vocab_size :] = float("-inf")
    return logits.log_softmax(-1)


def test_n_greedy_samples_equal_the_single_greedy_output(llm, prompt):
    single = llm.generate(prompt, GREEDY).token_ids
    many = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, n=3))
    assert [output.token_ids for output in many.outputs] == [single] * 3  # the copied prefill cache is right
    assert [output.index for output in many.outputs] == [0, 1, 2]


def test_n_samples_are_independent_and_consistent_with_the_model(llm, prompt):
    params = SamplingParams(temperature=1.5, max_tokens=10, ignore_eos=True, n=4, seed=0, logprobs=0)
    outputs = llm.generate(prompt, params).outputs
    assert len({tuple(output.token_ids) for output in outputs}) == 4
    for output in outputs:  # each sample's log-probs match a recomputation of its own sequence
        reference = full_logprobs(llm, prompt + output.token_ids)
        for step, (token, step_logprobs) in enumerate(zip(output.token_ids, output.logprobs)):
            assert step_logprobs.token_id == token
            assert step_logprobs.logprob == pytest.approx(reference[len(prompt) - 1 + step, token].item(), abs=1e-4)


def test_first_tokens_of_n_samples_follow_the_distribution(llm, prompt):
    params = SamplingParams(temperature=1.0, max_tokens=1, ignore_eos=True, n=3000, seed=1)
    drawn = torch.tensor([output.token_ids[0] for output in llm.generate(prompt, params).outputs])
    expected = full_logprobs(llm, prompt)[-1].exp()
    top = expected.topk(3).indices
    observed = torch.stack([(drawn == token).float().mean() for token in top])
    torch.testing.assert_close(observed, expected[top], atol=0.03, rtol=0)


def test_seeded_n_samples_are_reproducible(llm, prompt):
    params = SamplingParams(temperature=1.0, max_tokens=8, ignore_eos=True, n=3, seed=42)
    first = [output.token_ids for output in llm.generate(prompt, params).outputs]
    assert [output.token_ids for output in llm.generate(prompt, params).outputs] == first


def test_logprobs_report_top_alternatives_and_sum_to_the_cumulative(llm, prompt):
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=5)).outputs[0]
    reference = full_logprobs(llm, prompt + out.token_ids)
    for step, step_logprobs in enumerate(out.logprobs):
        row = reference[len(prompt) - 1 + step]
        assert list(step_logprobs.top_logprobs) == row.topk(5).indices.tolist()  # best first
        assert step_logprobs.token_id == next(iter(step_logprobs.top_logprobs))  # greedy picks the top one
        for token, value in step_logprobs.top_logprobs.items():
            assert value == pytest.approx(row[token].item(), abs=1e-4)
    assert out.cumulative_logprob == pytest.approx(sum(step.logprob for step in out.logprobs))
    assert llm.generate(prompt, GREEDY).outputs[0].logprobs is None


def test_stop_string_across_token_boundaries(llm, prompt):
    free = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    pieces = [llm.tokenizer.decode(free.token_ids[: i + 1]) for i in range(len(free.token_ids))]
    # A stop string that starts inside token 3's text and ends inside token 5's.
    start = len(pieces[2]) - 1
    stop = free.text[start : len(pieces[4]) - 1]
    assert len(stop) >= 2 and free.text.find(stop) == start
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop=[stop]))
    assert out.text == free.text[:start]
    assert out.finish_reason == "stop"
    assert out.token_ids == free.token_ids[:5]  # ends with the token that completed the stop string
    streamed = list(llm.stream(prompt, SamplingParams(temperature=0, max_tokens=20, ignore_eos=True, stop=stop)))
    assert "".join(piece.text for piece in streamed) == free.text[:start]


def test_stop_string_matcher_holds_back_only_possible_starts():
    matcher = StopStringMatcher(("<END>", "##"))
    assert matcher.feed("hello <") == ("hello ", False)
    assert matcher.feed("E") == ("", False)
    assert matcher.feed("x and #") == ("<Ex and ", False)
    assert matcher.feed("#tail") == ("", True)
    other = StopStringMatcher(("abc",))
    assert other.feed("xab") == ("x", False)
    assert other.flush() == "ab"
    assert StopStringMatcher(("c", "abc")).feed("xabc") == ("x", True)  # the earliest match wins
    assert StopStringMatcher(("ab",)).feed("zabz", match=False) == ("zabz", False)


def force_token_at_step(llm: LLM, prompt: list[int], step: int, forced: int) -> tuple[list[int], callable]:
    """Swap output rows so greedy decoding emits `forced` at `step`; returns the free tokens and an undo."""
    free = llm.generate(prompt, GREEDY).token_ids
    head = llm.model.lm_head.weight
    pair = [forced, free[step]]

    def swap() -> None:
        with torch.no_grad():
            head[pair] = head[pair[::-1]]

    swap()
    return free, swap


def test_min_tokens_holds_back_stop_tokens(llm, prompt):
    eos = llm.tokenizer.eos_id
    free, undo = force_token_at_step(llm, prompt, 1, eos)
    try:
        assert llm.generate(prompt, SamplingParams(temperature=0, max_tokens=8)).token_ids == [free[0], eos]
        out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=8, min_tokens=4))
        assert eos not in out.token_ids[:4] and len(out.token_ids) >= 4
    finally:
        undo()


def test_user_stop_token_ids_apply_even_with_ignore_eos(llm, prompt):
    free = llm.generate(prompt, GREEDY).token_ids
    out = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop_token_ids=[free[3]]))
    assert out.token_ids == free[:4] and out.finish_reason == "stop"
    assert out.text == llm.tokenizer.decode(free[:3])


def test_min_tokens_ignores_early_stop_strings(llm, prompt):
    free = llm.generate(prompt, GREEDY)
    first_text = llm.tokenizer.decode(free.token_ids[:1])
    stop = first_text[-1]
    late = llm.generate(prompt, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, stop=stop, min_tokens=12))
    assert late.token_ids == free.token_ids and late.finish_reason == "length"


def reference_beam_search(llm: LLM, prompt: list[int], beams: int, steps: int) -> list[tuple[list[int], float]]:
    """Textbook beam search without stop tokens, recomputing every beam from scratch (no cache)."""
    running = [([], 0.0)]
    vocab = llm.tokenizer.vocab_size
    for _ in range(steps):
        candidates = []
        for tokens, score in running:
            logprobs = llm.logits(prompt + tokens)[-1].log_softmax(-1)  # all rows, padding included, as HF
            top = logprobs[:vocab].topk(beams)
            candidates += [(tokens + [t], score + v) for v, t in zip(top.values.tolist(), top.indices.tolist())]
        running = sorted(candidates, key=lambda candidate: candidate[1], reverse=True)[:beams]
    return running


@pytest.mark.parametrize("beams", [2, 3, 5])
def test_beam_search_with_cache_reorder_equals_no_cache_recomputation(llm, prompt, beams):
    params = SamplingParams(temperature=0, num_beams=beams, num_return_sequences=beams, max_tokens=6, ignore_eos=True)
    outputs = llm.generate(prompt, params).outputs
    reference = reference_beam_search(llm, prompt, beams, 6)
    assert [output.token_ids for output in outputs] == [tokens for tokens, _ in reference]
    for output, (_, score) in zip(outputs, reference):
        assert output.cumulative_logprob == pytest.approx(score, abs=1e-3)
        assert output.finish_reason == "length"
        assert output.text == llm.tokenizer.decode(output.token_ids)


def test_one_beam_is_greedy(llm, prompt):
    params = SamplingParams(temperature=0, num_beams=1, max_tokens=12, ignore_eos=True)
    assert llm.generate(prompt, params).token_ids == llm.generate(prompt, GREEDY).token_ids


def test_beam_hypothesis_ending_in_a_stop_token(llm, prompt):
    eos = llm.tokenizer.eos_id
    _, undo = force_token_at_step(llm, prompt, 2, eos)
    try:
        out = llm.generate(prompt, SamplingParams(temperature=0, num_beams=2, num_return_sequences=2, max_tokens=10))
        stopped = [output for output in out.outputs if output.finish_reason == "stop"]
        assert stopped and all(output.token_ids[-1] == eos for output in stopped)
        assert all(output.text == llm.tokenizer.decode(output.token_ids[:-1]) for output in stopped)
    finally:
        undo()


def hypotheses(early_stopping, length_penalty=1.0, beams=2, max_new_tokens=10) -> FinishedHypotheses:
    params = SamplingParams(
        temperature=0, num_beams=beams, early_stopping=early_stopping, length_penalty=length_penalty
    )
    return FinishedHypotheses(params, max_new_tokens)


def test_finished_hypotheses_keep_the_best_and_follow_early_stopping():
    finished = hypotheses(False)
    finished.add([1, 2], -4.0, "stop")  # score -2
    assert not finished.is_done(-1.0, 3)  # fewer than num_beams finished
    finished.add([1, 2, 3, 4], -4.0, "stop")  # score -1
    finished.add([5, 6], -10.0, "stop")  # score -5: worse than both, dropped
    assert [h.score for h in finished.best(2)] == [-1.0, -2.0]
    assert finished.is_done(-6.0, 3)  # best running beam could reach -2 at most: not better than the worst
    assert not finished.is_done(-5.0, 3)  # -5 / 3 = -1.67 > -2: keep searching
    eager = hypotheses(True)
    eager.add([1], -100.0, "stop")
    eager.add([2], -100.0, "stop")
    assert eager.is_done(0.0, 1)
    never = hypotheses("never", max_new_tokens=10)
    never.add([1, 2], -4.0, "stop")
    never.add([1, 2], -4.0, "stop")
    assert not never.is_done(-19.0, 3)  # could still reach -19 / 10 = -1.9 > -2
    assert never.is_done(-21.0, 3)
    short = hypotheses(False, length_penalty=0.0)  # no length normalisation: scores are sums
    short.add([1, 2, 3], -3.0, "stop")
    assert short.best(1)[0].score == -3.0


def test_broken_logits_end_the_answer_instead_of_crashing(llm, prompt):
    norm = llm.model.norm.weight
    saved = norm.detach().clone()
    with torch.no_grad():
        norm[0] = float("nan")
    try:
        for params in (SamplingParams(temperature=0, max_tokens=5), SamplingParams(temperature=0.7, max_tokens=5)):
            out = llm.generate(prompt, params)
            assert out.token_ids == [llm.tokenizer.eos_id] and out.finish_reason == "stop"
        beam = llm.generate(prompt, SamplingParams(temperature=0, num_beams=2, max_tokens=5))
        assert beam.token_ids[-1] == llm.tokenizer.eos_id
    finally:
        with torch.no_grad():
            norm.copy_(saved)


def test_beam_search_cannot_stream(llm, prompt):
    with pytest.raises(GlmrunError, match="generate"):
        next(llm.stream(prompt, SamplingParams(temperature=0, num_beams=2, max_tokens=4)))
