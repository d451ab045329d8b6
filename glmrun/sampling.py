"""SamplingParams and the pure functions that turn a batch of logits into next tokens.

The order is Hugging Face's: penalties (repetition, then OpenAI presence/frequency), suppression of stop
tokens before `min_tokens`, then temperature, top-k, top-p, min-p, and a draw. Temperature 0 means greedy
argmax. Every function takes and returns tensors on the logits' device and never reads a value back to the
host, so the decode loop does not stall on them. This module does not run the model or know about text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from glmrun.errors import GlmrunError

NEG_INF = float("-inf")
MAX_LOGPROBS = 20  # like the OpenAI API


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token and when to stop; validated on construction."""

    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p; 1 = off
    min_p: float = 0.0  # drop tokens less likely than min_p x the most likely one; 0 = off
    repetition_penalty: float = 1.0  # HF: divide positive / multiply negative logits of tokens seen; 1 = off
    presence_penalty: float = 0.0  # OpenAI: subtract once from every token generated so far
    frequency_penalty: float = 0.0  # OpenAI: subtract per occurrence in the generated tokens
    seed: int | None = None  # same seed and request -> same tokens
    stop: str | list[str] | tuple[str, ...] | None = None  # strings that end the text (not returned)
    stop_token_ids: list[int] | tuple[int, ...] = ()  # token ids that end generation, besides the model's
    ignore_eos: bool = False  # keep generating through the model's own stop tokens
    max_tokens: int | None = None  # new tokens at most; None = up to the model's context length
    min_tokens: int = 0  # no stop token or stop string before this many new tokens
    n: int = 1  # independent samples of the same prompt (one shared prefill)
    logprobs: int | None = None  # per step: the chosen token's log-probability and the top-N alternatives
    num_beams: int = 1  # > 1: beam search (deterministic; needs temperature 0)
    length_penalty: float = 1.0  # beam score = sum of log-probs / length ** length_penalty
    early_stopping: bool | str = False  # beam search: True, False (heuristic) or "never", as in HF
    num_return_sequences: int = 1  # beam search: how many of the best hypotheses to return
    stop_strings: tuple[str, ...] = field(init=False, repr=False)  # `stop` normalised to a tuple

    def __post_init__(self) -> None:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop_strings", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        for problem in self._problems():
            raise GlmrunError(problem)

    def _problems(self) -> list[str]:
        checks = [
            (self.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k >= 0, f"top_k must be >= 0 (0 = off), got {self.top_k}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (self.repetition_penalty > 0, f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}"),
            (-2 <= self.presence_penalty <= 2, f"presence_penalty must be in [-2, 2], got {self.presence_penalty}"),
            (-2 <= self.frequency_penalty <= 2, f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}"),
            (self.max_tokens is None or self.max_tokens >= 1, f"max_tokens must be >= 1, got {self.max_tokens}"),
            (self.min_tokens >= 0, f"min_tokens must be >= 0, got {self.min_tokens}"),
            (
                self.max_tokens is None or self.min_tokens <= self.max_tokens,
                f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})",
            ),
            (all(self.stop_strings), "stop strings must not be empty"),
            (self.n >= 1, f"n must be >= 1, got {self.n}"),
            (
                self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
                f"logprobs must be in [0, {MAX_LOGPROBS}], got {self.logprobs}",
            ),
            (self.num_beams >= 1, f"num_beams must be >= 1, got {self.num_beams}"),
            (self.num_return_sequences >= 1, f"num_return_sequences must be >= 1, got {self.num_return_sequences}"),
            (
                self.num_return_sequences <= self.num_beams,
                f"num_return_sequences ({self.num_return_sequences}) cannot exceed num_beams ({self.num_beams})",
            ),
            (
                self.early_stopping in (True, False, "never"),
                f"early_stopping must be True, False or 'never', got {self.early_stopping!r}",
            ),
        ]
        problems = [message for ok, message in checks if not ok]
        if self.num_beams > 1:
            problems += [
                message
                for unsupported, message in [
                    (
                        self.temperature != 0,
                        "beam search is deterministic: set temperature=0 (beam sampling is not supported)",
                    ),
                    (
                        self.top_k or self.top_p != 1 or self.min_p,
                        "top_k, top_p and min_p filter samples and have no effect in beam search: leave them off",
                    ),
                    (self.n != 1, "with beam search, ask for several results with num_return_sequences, not n"),
                    (self.logprobs is not None, "logprobs are not reported for beam search"),
                    (self.stop_strings, "stop strings are not supported with beam search (stop_token_ids are)"),
                ]
                if unsupported
            ]
        return problems

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TokenHistory:
    """Per-row token statistics that the penalties need, kept on the device: `[rows, vocab]` each."""

    def __init__(self, prompt_ids: list[int], rows: int, vocab_size: int, device: torch.device) -> None:
        self.prompt_mask = torch.zeros(rows, vocab_size, dtype=torch.bool, device=device)
        self.prompt_mask[:, prompt_ids] = True
        self.output_counts = torch.zeros(rows, vocab_size, dtype=torch.int32, device=device)

    def append(self, tokens: torch.Tensor) -> None:
        """Count one new token per row (`tokens` `[rows]`)."""
        self.output_counts.scatter_add_(1, tokens[:, None], torch.ones_like(tokens[:, None], dtype=torch.int32))

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder, or repeat) the given rows, as the KV cache does for beams and finished samples."""
        self.prompt_mask = self.prompt_mask[rows]
        self.output_counts = self.output_counts[rows]


def mask_invalid_rows(logits: torch.Tensor, fallback_token: int) -> torch.Tensor:
    """Rows holding NaN or +inf (a broken forward pass) pick `fallback_token` instead of crashing the draw.

    The official ChatGLM code does the same with its InvalidScoreLogitsProcessor (it forces token 5); glmrun
    forces the end-of-sequence token so that a broken model ends its answer instead of rambling.
    """
    broken = (logits.isnan() | (logits == float("inf"))).any(dim=-1, keepdim=True)  # (B, 1)
    forced = torch.full_like(logits, NEG_INF)
    forced[:, fallback_token] = 0.0
    return torch.where(broken, forced, logits)


def apply_penalties(logits: torch.Tensor, history: TokenHistory, params: SamplingParams) -> torch.Tensor:
    """Repetition penalty over prompt + output tokens (HF), then presence/frequency over output tokens (OpenAI)."""
    counts = history.output_counts
    if params.repetition_penalty != 1.0:
        seen = history.prompt_mask | (counts > 0)
        penalized = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, penalized, logits)
    if params.frequency_penalty or params.presence_penalty:
        logits = logits - params.frequency_penalty * counts - params.presence_penalty * (counts > 0)
    return logits


def suppress_tokens(logits: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    """Make the given tokens impossible (used for the stop tokens before `min_tokens`)."""
    if not token_ids:
        return logits
    logits = logits.clone()
    logits[:, token_ids] = NEG_INF
    return logits


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits per row (ties with the k-th are kept), the rest become -inf."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, NEG_INF)


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
    return logits.masked_fill(drop, NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p x the top token's (HF MinPLogitsWarper)."""
    if min_p <= 0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
    return logits.masked_fill(probs < threshold, NEG_INF)


def process_logits(
    logits: torch.Tensor, history: TokenHistory, params: SamplingParams, suppressed: list[int]
) -> torch.Tensor:
    """All processors in the documented order; the result is what `sample` draws from."""
    logits = apply_penalties(logits, history, params)
    logits = suppress_tokens(logits, suppressed)
    if params.greedy:
        return logits
    logits = logits / params.temperature
    logits = top_k_filter(logits, params.top_k)
    logits = top_p_filter(logits, params.top_p)
    return min_p_filter(logits, params.min_p)


def sample(processed: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Next token ids `[B]` from processed logits `[B, vocab]`."""
    if params.greedy:
        return processed.argmax(dim=-1)
    probs = processed.softmax(dim=-1)
    # Exponential-race draw: argmax(p / E) with E ~ Exp(1) picks token i with probability p_i, on the device.
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)


def chosen_logprobs(
    logits: torch.Tensor, chosen: torch.Tensor, top_n: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities of the model's own distribution (before penalties and filters, like vLLM's default).

    Returns the chosen tokens' `[B]`, and the top-N alternatives' values and ids `[B, N]`.
    """
    logprobs = logits.log_softmax(dim=-1)
    top = logprobs.topk(top_n, dim=-1)
    return logprobs.gather(1, chosen[:, None])[:, 0], top.values, top.indices
