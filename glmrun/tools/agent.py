"""The agent loop: model -> tool call or code -> observation -> model, until the model answers in text.

Each round encodes the whole conversation in the official format, generates (reusing the conversation's KV
cache for the unchanged prefix), and parses the answer into segments. The last segment decides: a tool call
goes through the dispatcher, interpreter code through the code interpreter, a malformed call is reported back
as an error; each result returns to the model as an `observation` message. Everything that happens is yielded
as an event, and every message added to the conversation (each assistant segment with its metadata, each
observation) as a `NewMessage`, so the history re-encodes exactly. A call to a tool that was only described
(a dict, as OpenAI clients send) ends the loop: the caller runs it. Nothing the model writes is evaluated here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from glmrun.chat.messages import Message, normalize_messages
from glmrun.chat.parser import Segment, SegmentDone, StreamingParser, TextDelta
from glmrun.chat.templates import encode_chat
from glmrun.errors import GlmrunError
from glmrun.interpreter import CodeInterpreter, ExecutionResult
from glmrun.sampling import SamplingParams
from glmrun.tools.dispatcher import Dispatcher, ToolResult, to_observation
from glmrun.tools.registry import Tool, ToolRegistry

if TYPE_CHECKING:
    from glmrun.engine import LLM, ConversationCache


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolOutput:
    result: ToolResult


@dataclass(frozen=True)
class CodeCall:
    code: str


@dataclass(frozen=True)
class CodeOutput:
    result: ExecutionResult


@dataclass(frozen=True)
class NewMessage:
    message: Message


@dataclass(frozen=True)
class RoundLimit:
    """The model asked for another tool round after `max_tool_rounds`; the loop stopped without running it."""

    rounds: int


AgentEvent = TextDelta | ToolCall | ToolOutput | CodeCall | CodeOutput | NewMessage | RoundLimit


def tool_descriptions(tools: list[Any] | ToolRegistry | None) -> list[dict[str, Any]] | None:
    """Tool descriptions for the system prompt from Tool objects, a registry or description dicts."""
    if tools is None:
        return None
    items = tools.tools.values() if isinstance(tools, ToolRegistry) else tools
    return [item.description_dict() if isinstance(item, Tool) else item for item in items]


class Agent:
    def __init__(
        self,
        llm: LLM,
        tools: list[Any] | ToolRegistry | None = None,
        interpreter: CodeInterpreter | None = None,
        max_tool_rounds: int = 5,
        tool_timeout: float = 30.0,
    ) -> None:
        if (tools or interpreter) and llm.tokenizer.family != "chatglm3":
            raise GlmrunError("tool calling and the code interpreter need ChatGLM3's format: use a ChatGLM3 model")
        self.llm, self.interpreter, self.max_tool_rounds = llm, interpreter, max_tool_rounds
        self.descriptions = tool_descriptions(tools)
        runnable = (
            tools if isinstance(tools, ToolRegistry) else ToolRegistry([t for t in tools or [] if isinstance(t, Tool)])
        )
        self.dispatcher = Dispatcher(runnable, tool_timeout)

    def _caller_runs(self, segment: Segment) -> bool:
        """A call to a tool that was described but not given as code: the caller runs it (as with OpenAI's API)."""
        described = {description["name"] for description in self.descriptions or []}
        return (
            segment.kind == "tool_call"
            and segment.name in described
            and self.dispatcher.registry.get(segment.name) is None
        )

    def run(
        self, messages: list[Message], params: SamplingParams, conversation: ConversationCache
    ) -> Iterator[AgentEvent]:
        history = normalize_messages(messages, self.descriptions)
        for round_number in range(self.max_tool_rounds + 1):
            segments: list[Segment] = []
            for event in self._generate(history, params, conversation):
                if isinstance(event, SegmentDone):
                    segments.append(event.segment)
                else:
                    yield event
            for segment in segments:
                history.append(segment.as_message())
                yield NewMessage(segment.as_message())
            last = segments[-1] if segments else None
            if last is None or last.kind == "text" or self._caller_runs(last):
                return
            if round_number == self.max_tool_rounds:
                yield RoundLimit(self.max_tool_rounds)
                return
            observation = yield from self._act(last)
            message = {"role": "observation", "content": observation}
            history.append(message)
            yield NewMessage(message)

    def _generate(
        self, history: list[Message], params: SamplingParams, conversation: ConversationCache
    ) -> Iterator[TextDelta | SegmentDone]:
        tokenizer = self.llm.tokenizer
        prompt = encode_chat(tokenizer, history, add_generation_prompt=True)
        if tokenizer.family != "chatglm3":  # plain text answers, no segments
            text = []
            for piece in self.llm.stream(prompt, params, conversation):
                text.append(piece.text)
                yield TextDelta(piece.text)
            yield SegmentDone(Segment("text", "", "".join(text).strip()))
            return
        parser = StreamingParser(tokenizer)
        for piece in self.llm.stream(prompt, params, conversation):
            yield from parser.feed(piece.token_id)
        yield from parser.finish()

    def _act(self, segment: Segment) -> Iterator[AgentEvent]:
        """Run what the segment asks for; returns the observation text (a generator's return value)."""
        if segment.kind == "code":
            yield CodeCall(segment.code or "")
            if self.interpreter is None:
                return to_observation({"error": "no code interpreter is available in this conversation"})
            result = self.interpreter.run(segment.code or "")
            yield CodeOutput(result)
            return result.output
        if segment.kind == "invalid":
            result = ToolResult(
                segment.name or "", {}, to_observation({"error": f"malformed tool call: {segment.error}"}), ok=False
            )
        else:
            yield ToolCall(segment.name or "", segment.arguments)
            result = self.dispatcher.run(segment.name or "", segment.arguments)
        yield ToolOutput(result)
        return result.observation
