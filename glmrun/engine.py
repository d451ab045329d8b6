"""LLM: the public entry point that owns a model, its tokenizer and the generation loop.

`LLM(folder)` reads the config, the tokenizer and the weights; `generate`, `stream` and `logits` serve
requests one at a time. Prompts are text (encoded with `[gMASK] sop`) or token ids. Conversation formats
are not built here, and there is no batching across requests yet.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from glmrun.config import ModelConfig, load_config
from glmrun.errors import GlmrunError
from glmrun.generate import generate_tokens
from glmrun.model import Transformer
from glmrun.sampling import SamplingParams
from glmrun.tokenizer import ChatGLMTokenizer, IncrementalDetokenizer
from glmrun.weights import load_checkpoint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class StreamPiece:
    """One generated token and the text it made printable (may be empty while a character is incomplete)."""

    token_id: int
    text: str
    finish_reason: str | None  # "stop" | "length" on the last piece, else None


@dataclass(frozen=True)
class GenerationOutput:
    """A finished generation: new tokens only. A stop token ends `token_ids` but adds no text."""

    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str


def resolve_dtype(name: str, config: ModelConfig, device: torch.device) -> torch.dtype:
    """ "auto" keeps float32 checkpoints in float32; half-precision ones run in bfloat16 on a CPU (fast and
    safe from float16 overflow there) and in their stored dtype on a GPU."""
    if name != "auto":
        if name not in DTYPES:
            raise GlmrunError(f"unknown dtype {name!r}: choose auto, {', '.join(DTYPES)}")
        return DTYPES[name]
    stored = DTYPES.get(config.checkpoint_dtype, torch.float16)
    if stored == torch.float32 or device.type != "cpu":
        return stored
    return torch.bfloat16


def build_model(config: ModelConfig) -> Transformer:
    """The model's modules with no memory behind them (the meta device), ready for `load_state_dict(assign=True)`."""
    with torch.device("meta"):
        return Transformer(config)


class LLM:
    """A ChatGLM2/ChatGLM3 model ready to generate.

    >>> llm = LLM("chatglm3-6b", dtype="bfloat16")
    >>> llm.generate("Hello", SamplingParams(temperature=0, max_tokens=8)).text
    """

    def __init__(
        self,
        model: str | Path,
        dtype: str = "auto",
        device: str = "cpu",
        family: str | None = None,
        progress: bool | None = None,
    ) -> None:
        self.folder = Path(model)
        self.config = load_config(self.folder, family)
        self.tokenizer = ChatGLMTokenizer.from_folder(self.folder, self.config.family)
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.config, self.device)
        self.model = build_model(self.config)
        expected = {name: tuple(tensor.shape) for name, tensor in self.model.state_dict().items()}
        show_progress = sys.stderr.isatty() if progress is None else progress
        state = load_checkpoint(self.folder, expected, self.dtype, self.device, show_progress)
        self.model.load_state_dict(state, assign=True)
        self.model.eval()

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        else:
            ids = [int(token_id) for token_id in prompt]
        if not ids:
            raise GlmrunError("the prompt is empty")
        bad = [token_id for token_id in ids if not 0 <= token_id < self.tokenizer.vocab_size]
        if bad:
            raise GlmrunError(
                f"prompt token id {bad[0]} is outside the vocabulary (0..{self.tokenizer.vocab_size - 1})"
            )
        return ids

    def _token_budget(self, prompt_len: int, params: SamplingParams) -> int:
        context = self.config.max_seq_len
        if prompt_len >= context:
            raise GlmrunError(f"the prompt has {prompt_len} tokens; this model's context holds {context}")
        if params.max_tokens is None:
            return context - prompt_len
        if prompt_len + params.max_tokens > context:
            raise GlmrunError(
                f"prompt ({prompt_len} tokens) + max_tokens ({params.max_tokens}) exceeds the model's context of "
                f"{context} tokens: lower max_tokens to {context - prompt_len} or less"
            )
        return params.max_tokens

    @torch.inference_mode()
    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits `[len(token_ids), vocab]` in float32 from one full forward pass (no cache)."""
        ids = self._prompt_ids(token_ids)
        self._token_budget(len(ids) - 1, SamplingParams(max_tokens=1))
        tokens = torch.tensor([ids], device=self.device)  # (1, T)
        return self.model(tokens)[0]

    def stream(self, prompt: str | list[int], params: SamplingParams | None = None) -> Iterator[StreamPiece]:
        """Generate, yielding one StreamPiece per new token as soon as it is chosen."""
        params = params or SamplingParams()
        prompt_ids = self._prompt_ids(prompt)
        budget = self._token_budget(len(prompt_ids), params)
        detokenizer = IncrementalDetokenizer(self.tokenizer)
        tokens = generate_tokens(
            self.model,
            prompt_ids,
            params,
            budget,
            self.tokenizer.stop_token_ids,
            self.tokenizer.vocab_size,
            self.tokenizer.eos_id,
        )
        for token_id, finish_reason in tokens:
            if finish_reason == "stop":
                yield StreamPiece(token_id, detokenizer.flush(), finish_reason)
                return
            text = detokenizer.add(token_id)
            if finish_reason is not None:
                text += detokenizer.flush()
            yield StreamPiece(token_id, text, finish_reason)

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> GenerationOutput:
        """Generate until a stop token or the token budget; returns the new tokens and their text."""
        prompt_ids = self._prompt_ids(prompt)
        pieces = list(self.stream(prompt_ids, params))
        return GenerationOutput(
            prompt_token_ids=prompt_ids,
            token_ids=[piece.token_id for piece in pieces],
            text="".join(piece.text for piece in pieces),
            finish_reason=pieces[-1].finish_reason or "length",
        )
