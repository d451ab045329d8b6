"""The decode loop: prefill a prompt into the KV cache, then produce one token per step, as a generator.

`generate_tokens` yields token ids and finish reasons and stops on the stop tokens or the token budget. It
does not tokenize, detokenize or check the context length (the engine does that before calling it).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from glmrun.kv_cache import KVCache
from glmrun.model import Transformer
from glmrun.sampling import SamplingParams, mask_invalid_rows, sample


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private random stream: seeded when asked, otherwise freshly random; never the global one."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


@torch.inference_mode()
def generate_tokens(
    model: Transformer,
    prompt_ids: list[int],
    params: SamplingParams,
    max_new_tokens: int,
    stop_token_ids: list[int],
    vocab_size: int,
    eos_id: int,
) -> Iterator[tuple[int, str | None]]:
    """Yield `(token_id, finish_reason)` per new token; the reason is "stop" or "length" on the last one.

    `vocab_size` is the tokenizer's: logit rows past it are padding and never chosen. A stop token is
    yielded (with reason "stop") unless `params.ignore_eos`.
    """
    device = model.embed.weight.device
    cache = KVCache(model.config, 1, len(prompt_ids) + max_new_tokens, model.embed.weight.dtype, device)
    generator = make_generator(params.seed, device)
    stop_ids = set() if params.ignore_eos else set(stop_token_ids)
    tokens = torch.tensor([prompt_ids], device=device)  # (1, prompt_len)
    position = 0
    for step in range(max_new_tokens):
        logits = model(tokens, start_pos=position, cache=cache, last_only=True)[:, -1]  # (1, vocab)
        position += tokens.shape[1]
        logits[:, vocab_size:] = float("-inf")
        next_token = sample(mask_invalid_rows(logits, eos_id), params, generator)  # (1,)
        token_id = int(next_token)
        if token_id in stop_ids:
            yield token_id, "stop"
            return
        yield token_id, "length" if step == max_new_tokens - 1 else None
        tokens = next_token.view(1, 1)
