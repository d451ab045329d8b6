"""Beam search with Hugging Face transformers' semantics and a KV cache reordered after every step.

Each step scores every continuation of every beam (beam score + log-softmax of the next-token logits, after
the penalties), keeps the best `max(2, 1 + stop tokens) x beams` candidates and walks them in order: a stop
token among the first `num_beams` candidates finishes a hypothesis, other tokens fill the next beams. The
cache rows are then copied to follow their beams, never recomputed. Search ends when `early_stopping` says
no running beam can beat the finished ones, or at the token budget, where the running beams join the
finished hypotheses.

Length penalty: a hypothesis scores sum(log-probs) / length ** length_penalty, where length counts the
generated tokens including the stop token that ended it. (HF 4.40 counts without that token, which divides
by zero when the very first token is a stop token; the two agree whenever no stop token is generated.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glmrun.generate import Vocabulary, prefill_rows
from glmrun.model import Transformer
from glmrun.sampling import SamplingParams, TokenHistory, apply_penalties, mask_invalid_rows, suppress_tokens


@dataclass(frozen=True)
class Hypothesis:
    token_ids: list[int]  # generated tokens, ending with the stop token if one ended it
    score: float  # sum of log-probs / len ** length_penalty
    sum_logprobs: float
    finish_reason: str  # "stop" | "length"


class FinishedHypotheses:
    """The best `num_beams` finished hypotheses, and HF's test of whether search can stop."""

    def __init__(self, params: SamplingParams, max_new_tokens: int) -> None:
        self.num_beams, self.length_penalty = params.num_beams, params.length_penalty
        self.early_stopping, self.max_new_tokens = params.early_stopping, max_new_tokens
        self.hypotheses: list[Hypothesis] = []

    def add(self, token_ids: list[int], sum_logprobs: float, finish_reason: str) -> None:
        score = sum_logprobs / len(token_ids) ** self.length_penalty
        if len(self.hypotheses) == self.num_beams and score <= self.worst_score:
            return
        self.hypotheses.append(Hypothesis(token_ids, score, sum_logprobs, finish_reason))
        if len(self.hypotheses) > self.num_beams:
            self.hypotheses.remove(min(self.hypotheses, key=lambda hypothesis: hypothesis.score))

    @property
    def worst_score(self) -> float:
        return min(hypothesis.score for hypothesis in self.hypotheses)

    def is_done(self, best_sum_logprobs: float, length: int) -> bool:
        """Can no running beam (best candidate `best_sum_logprobs` at `length` tokens) beat the finished ones?"""
        if len(self.hypotheses) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0:
            length = self.max_new_tokens  # the longest continuation divides a negative score the most
        return self.worst_score >= best_sum_logprobs / length**self.length_penalty

    def best(self, count: int) -> list[Hypothesis]:
        return sorted(self.hypotheses, key=lambda hypothesis: hypothesis.score, reverse=True)[:count]


@torch.inference_mode()
def beam_search(
    model: Transformer,
    prompt_ids: list[int],
    params: SamplingParams,
    max_new_tokens: int,
    vocabulary: Vocabulary,
) -> list[Hypothesis]:
    """The `params.num_return_sequences` best hypotheses, best first."""
    beams = params.num_beams
    stop_ids = vocabulary.stops_for(params)
    cache, logits = prefill_rows(model, prompt_ids, beams, len(prompt_ids) + max_new_tokens)  # (beams, vocab)
    device = logits.device
    history = TokenHistory(prompt_ids, beams, model.config.vocab_size, device)
    # All beams start as copies of the prompt; only the first may expand at step 1 (the others are -1e9 behind).
    beam_scores = torch.full((beams,), -1e9, device=device)
    beam_scores[0] = 0.0
    running: list[list[int]] = [[] for _ in range(beams)]
    finished = FinishedHypotheses(params, max_new_tokens)
    candidates = max(2, 1 + len(stop_ids)) * beams
    position = len(prompt_ids)
    for step in range(max_new_tokens):
        # Log-softmax over every row, padding included, as HF does; padding is then ruled out.
        scores = mask_invalid_rows(logits.float().log_softmax(dim=-1), vocabulary.eos_id)  # (beams, vocab)
        scores[:, vocabulary.size :] = float("-inf")
        scores = apply_penalties(scores, history, params)
        scores = suppress_tokens(scores, stop_ids if step < params.min_tokens else [])
        total = (scores + beam_scores[:, None]).view(-1)  # (beams * vocab)
        top_scores, top_ids = total.topk(candidates)  # sorted, best first
        width = scores.shape[1]
        next_rows, next_tokens, next_scores = [], [], []
        for rank, (score, flat_id) in enumerate(zip(top_scores.tolist(), top_ids.tolist())):
            row, token = divmod(flat_id, width)
            if token in stop_ids:
                if rank < beams:
                    finished.add([*running[row], token], score, "stop")
                continue
            next_rows.append(row)
            next_tokens.append(token)
            next_scores.append(score)
            if len(next_rows) == beams:
                break
        if finished.is_done(top_scores[0].item(), step + 1):
            return finished.best(params.num_return_sequences)
        rows = torch.tensor(next_rows, device=device)
        tokens = torch.tensor(next_tokens, device=device)
        running = [[*running[row], token] for row, token in zip(next_rows, next_tokens)]
        beam_scores = torch.tensor(next_scores, device=device)
        if step == max_new_tokens - 1:
            break
        cache.reorder(rows, position)
        history.select(rows)
        history.append(tokens)
        logits = model(tokens[:, None], start_pos=position, cache=cache, last_only=True)[:, -1]  # (beams, vocab)
        position += 1
    for token_ids, score in zip(running, beam_scores.tolist()):
        finished.add(token_ids, score, "length")
    return finished.best(params.num_return_sequences)
