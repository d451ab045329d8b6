"""LLM: the public entry point that owns a model, its tokenizer and the generation loop.

`LLM(folder or .gguf file)` reads the config, the tokenizer and the weights (`LLM()`: the default model);
`generate`, `stream` and `logits` serve requests one at a time (n samples or beams of one request decode as a
batch). Prompts are text (encoded with the tokenizer's special prefix, `[gMASK] sop` for ChatGLM) or token ids;
`encode_chat`, `chat` and `chat_stream` take conversations (formats in chat/, the tool loop in
tools/agent.py). There is no batching across requests yet.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glmrun.attention import DEFAULT_FLASH_BLOCK, Attend, make_attention, math_attention
from glmrun.beam_search import beam_search
from glmrun.chat.messages import Message, normalize_messages
from glmrun.chat.templates import encode_chat
from glmrun.config import ModelConfig
from glmrun.errors import GlmrunError
from glmrun.generate import SamplingRun, TokenLogprobs, Vocabulary
from glmrun.interpreter import CodeInterpreter
from glmrun.kv_cache import KVCache
from glmrun.model import Transformer
from glmrun.sampling import SamplingParams
from glmrun.sources import open_model
from glmrun.stop_strings import StopStringMatcher
from glmrun.tokenizer import IncrementalDetokenizer, Tokenizer
from glmrun.tools.agent import Agent, AgentEvent, NewMessage, tool_descriptions
from glmrun.weights import load_state

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class StreamPiece:
    """One generated token of sequence `index` and the text it made printable (may be empty)."""

    token_id: int
    text: str
    finish_reason: str | None  # "stop" | "length" on the sequence's last piece, else None
    index: int = 0
    logprobs: TokenLogprobs | None = None


@dataclass(frozen=True)
class CompletionOutput:
    """One finished sequence: new tokens only. A stop token ends `token_ids` but adds no text."""

    index: int
    token_ids: list[int]
    text: str
    finish_reason: str
    logprobs: list[TokenLogprobs] | None = None
    cumulative_logprob: float | None = None  # sum of the chosen log-probs (beam search: the beam's score)


@dataclass(frozen=True)
class GenerationOutput:
    """All sequences of one request (n samples, or the best beams first); the fields below are the first's."""

    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]

    @property
    def token_ids(self) -> list[int]:
        return self.outputs[0].token_ids

    @property
    def text(self) -> str:
        return self.outputs[0].text

    @property
    def finish_reason(self) -> str:
        return self.outputs[0].finish_reason


class _SequenceText:
    """Streamed text of one sequence: UTF-8-safe detokenization, then stop-string matching."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: tuple[str, ...]) -> None:
        self.detokenizer = IncrementalDetokenizer(tokenizer)
        self.matcher = StopStringMatcher(stop_strings)

    def add(self, token_id: int, match_stop_strings: bool) -> tuple[str, bool]:
        return self.matcher.feed(self.detokenizer.add(token_id), match_stop_strings)

    def finish(self, match_stop_strings: bool) -> tuple[str, bool]:
        """The text still held back when the sequence ends, and whether it completed a stop string."""
        text, stopped = self.matcher.feed(self.detokenizer.flush(), match_stop_strings)
        return (text, True) if stopped else (text + self.matcher.flush(), False)


class ConversationCache:
    """The KV cache of one conversation and the token ids whose keys and values it holds.

    The next request reuses the longest common prefix and prefills only the rest. History is re-encoded from
    text each turn, as the official code does, so the reused part ends where the last answer begins; everything
    before it (system prompt, earlier turns) is never computed again.
    """

    def __init__(self) -> None:
        self.kv: KVCache | None = None
        self.token_ids: list[int] = []

    def clear(self) -> None:
        self.token_ids = []

    def reusable(self, prompt_ids: list[int]) -> int:
        """How many leading prompt tokens are already cached (at least one token is always left to run)."""
        common = 0
        for cached, new in zip(self.token_ids, prompt_ids[:-1]):
            if cached != new:
                break
            common += 1
        return common

    def reserve(self, model: Transformer, capacity: int, keep: int) -> KVCache:
        """A cache of at least `capacity` positions whose first `keep` positions are the cached ones."""
        if self.kv is None or self.kv.capacity < capacity:
            weight = model.embed.weight
            grown = KVCache(model.config, 1, capacity, weight.dtype, weight.device)
            if self.kv is not None and keep:
                grown.keys[:, :, :, :keep] = self.kv.keys[:, :1, :, :keep]
                grown.values[:, :, :, :keep] = self.kv.values[:, :1, :, :keep]
            self.kv = grown
        return self.kv


def resolve_dtype(name: str, config: ModelConfig, device: torch.device) -> torch.dtype:
    """ "auto" keeps float32 checkpoints in float32; half-precision ones run in bfloat16 on a CPU (fast and
    safe from float16 overflow there) and in their stored dtype on a GPU; GGUF weights, dequantized at load,
    run in float32 on a CPU (float16 on a GPU)."""
    if name != "auto":
        if name not in DTYPES:
            raise GlmrunError(f"unknown dtype {name!r}: choose auto, {', '.join(DTYPES)}")
        return DTYPES[name]
    if config.checkpoint_dtype.startswith("GGUF"):
        return torch.float32 if device.type == "cpu" else torch.float16
    stored = DTYPES.get(config.checkpoint_dtype, torch.float16)
    if stored == torch.float32 or device.type != "cpu":
        return stored
    return torch.bfloat16


def build_model(config: ModelConfig, attend: Attend = math_attention) -> Transformer:
    """The model's modules with no memory behind them (the meta device), ready for `load_state_dict(assign=True)`."""
    with torch.device("meta"):
        return Transformer(config, attend)


class LLM:
    """A ChatGLM2/ChatGLM3 model (or a Llama-family one, from a folder or a GGUF file) ready to generate.

    `attention` picks the backend once: "auto", "math", "flash" (tiles of `flash_block_size`) or "sdpa"; all
    give the same results (see attention.py).

    >>> llm = LLM("chatglm3-6b", dtype="bfloat16")
    >>> llm.generate("Hello", SamplingParams(temperature=0, max_tokens=8)).text
    """

    def __init__(
        self,
        model: str | Path | None = None,
        dtype: str = "auto",
        device: str = "cpu",
        family: str | None = None,
        progress: bool | None = None,
        attention: str = "auto",
        flash_block_size: int = DEFAULT_FLASH_BLOCK,
    ) -> None:
        source = open_model(model, family)
        self.folder, self.config, self.tokenizer = source.path, source.config, source.tokenizer
        self.vocabulary = Vocabulary.of(source.tokenizer)
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.config, self.device)
        self.model = build_model(self.config, make_attention(attention, self.device, flash_block_size))
        expected = {name: tuple(tensor.shape) for name, tensor in self.model.state_dict().items()}
        show_progress = sys.stderr.isatty() if progress is None else progress
        state = load_state(
            source.tensors(),
            source.table,
            expected,
            self.dtype,
            self.device,
            progress=show_progress,
            tie_word_embeddings=self.config.tie_word_embeddings,
        )
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

    @torch.no_grad()  # not inference_mode: the caller gets an ordinary tensor it may modify
    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits `[len(token_ids), vocab]` in float32 from one full forward pass (no cache)."""
        ids = self._prompt_ids(token_ids)
        if len(ids) > self.config.max_seq_len:
            raise GlmrunError(f"{len(ids)} tokens exceed this model's context of {self.config.max_seq_len}")
        tokens = torch.tensor([ids], device=self.device)  # (1, T)
        return self.model(tokens)[0]

    def stream(
        self,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        conversation: ConversationCache | None = None,
    ) -> Iterator[StreamPiece]:
        """Generate, yielding a StreamPiece per new token of each of the n sequences as soon as it is chosen.

        With a `conversation`, its cached prefix is reused and the cache is left holding this exchange.
        """
        params = params or SamplingParams()
        if params.num_beams > 1:
            raise GlmrunError("beam search settles its sequences only at the end: use generate(), not stream()")
        prompt_ids = self._prompt_ids(prompt)
        budget = self._token_budget(len(prompt_ids), params)
        cache, cached = None, 0
        if conversation is not None:
            if params.n != 1:
                raise GlmrunError("a conversation continues one answer: use n=1")
            cached = conversation.reusable(prompt_ids)
            cache = conversation.reserve(self.model, len(prompt_ids) + budget, cached)
            conversation.token_ids = prompt_ids[:cached]  # all that is certain until the prefill is done
        run = SamplingRun(self.model, prompt_ids, params, budget, self.vocabulary, cache=cache, cached=cached)
        texts = [_SequenceText(self.tokenizer, params.stop_strings) for _ in range(params.n)]
        previous: int | None = None
        while not run.done:
            for choice in run.step():
                if conversation is not None:  # the cache now holds the prompt and every token before this one
                    if previous is None:
                        conversation.token_ids = list(prompt_ids)
                    else:
                        conversation.token_ids.append(previous)
                    previous = choice.token_id
                text, match = texts[choice.index], run.generated >= params.min_tokens
                reason = choice.finish_reason
                if reason == "stop":  # a stop token: it adds no text
                    delta, _ = text.finish(match)
                else:
                    delta, stopped = text.add(choice.token_id, match)
                    if not stopped and reason == "length":
                        tail, stopped = text.finish(match)
                        delta += tail
                    if stopped:
                        reason = "stop"
                        run.finish(choice.index)
                yield StreamPiece(choice.token_id, delta, reason, choice.index, choice.logprobs)

    def generate(self, prompt: str | list[int], params: SamplingParams | None = None) -> GenerationOutput:
        """Generate to the end: every sample (n), or the best beams first (num_beams > 1)."""
        params = params or SamplingParams()
        prompt_ids = self._prompt_ids(prompt)
        if params.num_beams > 1:
            return GenerationOutput(prompt_ids, self._beam_search(prompt_ids, params))
        pieces: list[list[StreamPiece]] = [[] for _ in range(params.n)]
        for piece in self.stream(prompt_ids, params):
            pieces[piece.index].append(piece)
        outputs = []
        for index, sequence in enumerate(pieces):
            logprobs = [piece.logprobs for piece in sequence] if params.logprobs is not None else None
            outputs.append(
                CompletionOutput(
                    index=index,
                    token_ids=[piece.token_id for piece in sequence],
                    text="".join(piece.text for piece in sequence),
                    finish_reason=sequence[-1].finish_reason or "length",
                    logprobs=logprobs,
                    cumulative_logprob=sum(step.logprob for step in logprobs) if logprobs else None,
                )
            )
        return GenerationOutput(prompt_ids, outputs)

    def encode_chat(
        self, messages: list[Message], tools: list[Any] | None = None, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a conversation (native or OpenAI-form messages) in the model's official format."""
        return encode_chat(
            self.tokenizer, normalize_messages(messages, tool_descriptions(tools)), add_generation_prompt
        )

    def chat_stream(
        self,
        messages: list[Message],
        tools: list[Any] | None = None,
        params: SamplingParams | None = None,
        max_tool_rounds: int = 5,
        interpreter: CodeInterpreter | None = None,
        conversation: ConversationCache | None = None,
    ) -> Iterator[AgentEvent]:
        """Run model -> tool or code -> observation -> model until the model answers in text, yielding events
        (text deltas, tool calls and results, code and its output, and every new message)."""
        agent = Agent(self, tools, interpreter, max_tool_rounds)
        yield from agent.run(messages, params or SamplingParams(), conversation or ConversationCache())

    def chat(
        self,
        messages: list[Message],
        tools: list[Any] | None = None,
        params: SamplingParams | None = None,
        max_tool_rounds: int = 5,
        interpreter: CodeInterpreter | None = None,
    ) -> list[Message]:
        """The new messages of one exchange: each assistant segment with its metadata, and each observation."""
        events = self.chat_stream(messages, tools, params, max_tool_rounds, interpreter)
        return [event.message for event in events if isinstance(event, NewMessage)]

    def _beam_search(self, prompt_ids: list[int], params: SamplingParams) -> list[CompletionOutput]:
        budget = self._token_budget(len(prompt_ids), params)
        tokenizer = self.tokenizer
        hypotheses = beam_search(self.model, prompt_ids, params, budget, self.vocabulary)
        return [
            CompletionOutput(
                index=index,
                token_ids=hypothesis.token_ids,
                text=tokenizer.decode(
                    hypothesis.token_ids[:-1] if hypothesis.finish_reason == "stop" else hypothesis.token_ids
                ),
                finish_reason=hypothesis.finish_reason,
                cumulative_logprob=hypothesis.sum_logprobs,
            )
            for index, hypothesis in enumerate(hypotheses)
        ]
