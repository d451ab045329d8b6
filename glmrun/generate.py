"""Sampling decode loop: n sequences from one prompt, one token per unfinished sequence per step.

The prompt is prefilled once (only past the tokens a conversation's cache already holds); its KV cache row
is copied to the n samples, which then decode as one batch. Sequences end on a stop token (unless
`ignore_eos`; `stop_token_ids` always count), on the token budget, or when the caller finishes them (stop
strings are matched on text, by the engine). Finished rows leave the batch, so the rest do not pay for them.
It does not tokenize, detokenize or check the context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from glmrun.kv_cache import KVCache
from glmrun.model import Transformer
from glmrun.sampling import SamplingParams, TokenHistory, chosen_logprobs, mask_invalid_rows, process_logits, sample
from glmrun.tokenizer import Tokenizer


@dataclass(frozen=True)
class Vocabulary:
    """What the decode loops must know of the tokenizer."""

    size: int  # the tokenizer's ids: logit rows past them are padding and never chosen
    eos_id: int  # chosen when a forward pass breaks (NaN or +inf logits)
    stop_ids: tuple[int, ...]  # the model's own stop tokens

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> Vocabulary:
        return cls(tokenizer.vocab_size, tokenizer.eos_id, tuple(tokenizer.stop_token_ids))

    def stops_for(self, params: SamplingParams) -> list[int]:
        """The request's stop tokens: its own `stop_token_ids`, and the model's unless `ignore_eos`."""
        return list(params.stop_token_ids) + ([] if params.ignore_eos else list(self.stop_ids))


@dataclass(frozen=True)
class TokenLogprobs:
    """One step's log-probabilities: the chosen token's and the top alternatives' (id -> logprob)."""

    token_id: int
    logprob: float
    top_logprobs: dict[int, float]


@dataclass(frozen=True)
class TokenChoice:
    """A token appended to sequence `index`; `finish_reason` is "stop" or "length" when it ends the sequence."""

    index: int
    token_id: int
    logprobs: TokenLogprobs | None
    finish_reason: str | None


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private random stream: seeded when asked, otherwise freshly random; never the global one."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def prefill_rows(
    model: Transformer,
    prompt_ids: list[int],
    rows: int,
    capacity: int,
    cache: KVCache | None = None,
    cached: int = 0,
) -> tuple[KVCache, torch.Tensor]:
    """Run the prompt once and copy it to `rows` cache rows (samples or beams share one prefill).

    A given `cache` may already hold the first `cached` prompt tokens in row 0 (a conversation's earlier
    turns); only the rest is run. Returns the cache and the last position's logits `[rows, vocab]`.
    """
    weight = model.embed.weight
    if cache is None:
        cache = KVCache(model.config, rows, capacity, weight.dtype, weight.device)
    tokens = torch.tensor([prompt_ids[cached:]], device=weight.device)  # (1, new tokens)
    logits = model(tokens, start_pos=cached, cache=cache, last_only=True)[:, -1]  # (1, vocab)
    if rows > 1:
        cache.reorder(torch.zeros(rows, dtype=torch.long, device=weight.device), len(prompt_ids))
    return cache, logits.expand(rows, -1)


class SamplingRun:
    """n samples of one prompt. Call `step()` until `done`; `finish(index)` ends a sequence early."""

    def __init__(
        self,
        model: Transformer,
        prompt_ids: list[int],
        params: SamplingParams,
        max_new_tokens: int,
        vocabulary: Vocabulary,
        cache: KVCache | None = None,
        cached: int = 0,
    ) -> None:
        """`cache` may already hold the first `cached` prompt tokens in row 0 (a conversation's earlier turns)."""
        self.model, self.params, self.max_new_tokens = model, params, max_new_tokens
        self.vocabulary = vocabulary
        self.stop_ids = vocabulary.stops_for(params)
        capacity = len(prompt_ids) + max_new_tokens
        self.cache, self._logits = prefill_rows(model, prompt_ids, params.n, capacity, cache, cached)  # (n, vocab)
        device = self._logits.device
        self.history = TokenHistory(prompt_ids, params.n, model.config.vocab_size, device)
        self.generator = make_generator(params.seed, device)
        self.position = len(prompt_ids)  # where the next token's K/V goes
        self.generated = 0  # tokens each unfinished sequence has
        self.rows = list(range(params.n))  # batch row -> sequence index
        self._finished: set[int] = set()
        self._pending: torch.Tensor | None = None  # tokens chosen by the last step, not yet run through the model

    @property
    def done(self) -> bool:
        return len(self._finished) == self.params.n

    def finish(self, index: int) -> None:
        self._finished.add(index)

    def _drop_finished_rows(self) -> None:
        keep = [row for row, index in enumerate(self.rows) if index not in self._finished]
        if len(keep) == len(self.rows):
            return
        kept = torch.tensor(keep, device=self.history.output_counts.device)
        self.cache.reorder(kept, self.position)
        self.history.select(kept)
        self._pending = self._pending[kept]
        self.rows = [self.rows[row] for row in keep]

    @torch.inference_mode()
    def step(self) -> list[TokenChoice]:
        """Choose the next token of every unfinished sequence."""
        if self._pending is not None:
            self._drop_finished_rows()
            tokens = self._pending[:, None]  # (B, 1)
            self._logits = self.model(tokens, start_pos=self.position, cache=self.cache, last_only=True)[:, -1]
            self.position += 1
        logits = self._logits.clone()  # (B, vocab)
        logits[:, self.vocabulary.size :] = float("-inf")  # padding rows of the vocabulary are never chosen
        logits = mask_invalid_rows(logits, self.vocabulary.eos_id)
        suppressed = self.stop_ids if self.generated < self.params.min_tokens else []
        chosen = sample(process_logits(logits, self.history, self.params, suppressed), self.params, self.generator)
        self.history.append(chosen)
        self._pending = chosen
        self.generated += 1
        token_ids = chosen.tolist()  # the step's one read back to the host
        logprobs = (
            self._logprobs(logits, chosen, token_ids) if self.params.logprobs is not None else [None] * len(token_ids)
        )
        choices = []
        for index, token_id, token_logprobs in zip(self.rows, token_ids, logprobs):
            reason = (
                "stop" if token_id in self.stop_ids else "length" if self.generated == self.max_new_tokens else None
            )
            if reason:
                self.finish(index)
            choices.append(TokenChoice(index, token_id, token_logprobs, reason))
        return choices

    def _logprobs(self, logits: torch.Tensor, chosen: torch.Tensor, token_ids: list[int]) -> list[TokenLogprobs]:
        top_n = self.params.logprobs or 0
        values, top_values, top_ids = chosen_logprobs(logits, chosen, max(top_n, 1))
        return [
            TokenLogprobs(token_id, value, dict(zip(ids[:top_n], tops[:top_n])))
            for token_id, value, ids, tops in zip(token_ids, values.tolist(), top_ids.tolist(), top_values.tolist())
        ]
