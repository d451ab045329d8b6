"""ChatGLM3 responses -> segments: text, a tool call, interpreter code, or an invalid call.

A generation is one or more assistant segments separated by `<|assistant|>` tokens. Each segment starts with
a metadata line: empty for text, a tool name for a tool call, `interpreter` for code. Tool calls are a python
block calling `tool_call(name=literal, ...)` (or a JSON object): the keyword values are read with
`ast.literal_eval`, never evaluated, so model output cannot run code. A malformed call becomes an `invalid`
segment that keeps the raw text and says what was wrong; parsing never raises.

`parse_response` works on a finished generation; `StreamingParser` on one token at a time, emitting text as soon
as it is known to be text and a tool call or code block as soon as its segment ends.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

from glmrun.tokenizer import IncrementalDetokenizer, Tokenizer

INTERPRETER = "interpreter"
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:\n?```|$)", re.DOTALL)


@dataclass(frozen=True)
class Segment:
    """One assistant segment. `kind` is "text", "tool_call", "code" or "invalid" (a tool call that failed to parse)."""

    kind: str
    metadata: str
    content: str  # the text after the metadata line, as generated (what goes back into the history)
    name: str | None = None  # tool name
    arguments: dict[str, Any] = field(default_factory=dict)
    code: str | None = None  # interpreter code
    error: str | None = None  # why an invalid call was refused

    def as_message(self) -> dict[str, Any]:
        """The history message that re-encodes this segment exactly (metadata kept)."""
        return {"role": "assistant", "metadata": self.metadata, "content": self.content}


def _fenced_body(content: str) -> str:
    match = _FENCE.search(content)
    return (match.group(1) if match else content).strip()


def parse_tool_arguments(content: str) -> dict[str, Any]:
    """Keyword arguments of `tool_call(...)` (or a JSON object) as Python values; ValueError if malformed."""
    body = _fenced_body(content)
    if body.startswith("{"):
        try:
            arguments = json.loads(body)
        except json.JSONDecodeError as bad:
            raise ValueError(f"the arguments are not valid JSON: {bad}") from None
        if not isinstance(arguments, dict):
            raise ValueError("the JSON arguments must be an object")
        return arguments
    try:
        call = ast.parse(body, mode="eval").body
    except SyntaxError as bad:
        raise ValueError(f"the call is not valid Python: {bad.msg}") from None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError("expected a call like tool_call(name=value, ...)")
    if call.args or any(keyword.arg is None for keyword in call.keywords):
        raise ValueError("tool arguments must be given by keyword (name=value)")
    arguments = {}
    for keyword in call.keywords:
        try:
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(f"argument {keyword.arg!r} is not a literal value (nothing is evaluated)") from None
    return arguments


def make_segment(metadata: str, content: str) -> Segment:
    """Classify one segment by its metadata line and parse its content."""
    name = metadata.strip()
    if not name:
        return Segment("text", metadata, content.strip())
    if name == INTERPRETER:
        return Segment("code", metadata, content, code=_fenced_body(content))
    try:
        return Segment("tool_call", metadata, content, name=name, arguments=parse_tool_arguments(content))
    except ValueError as bad:
        return Segment("invalid", metadata, content, name=name, error=str(bad))


def split_metadata(text: str) -> tuple[str, str]:
    metadata, newline, content = text.partition("\n")
    return (metadata, content) if newline else ("", text)


def parse_response(tokenizer: Tokenizer, token_ids: list[int]) -> list[Segment]:
    """All segments of a finished generation (a final stop token, if any, is ignored)."""
    separator = tokenizer.token_to_id("<|assistant|>")
    chunks: list[list[int]] = [[]]
    for token_id in token_ids:
        if token_id == separator:
            chunks.append([])
        elif token_id not in tokenizer.stop_token_ids:
            chunks[-1].append(token_id)
    segments = [make_segment(*split_metadata(tokenizer.decode(chunk))) for chunk in chunks]
    return [segment for segment in segments if segment.kind != "text" or segment.content or len(segments) == 1]


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class SegmentDone:
    """A segment ended; for text the deltas already carried its content."""

    segment: Segment


class StreamingParser:
    """Feed generated tokens one at a time; get TextDelta events at once and SegmentDone when a segment ends.

    Text deltas concatenate to the stripped text content that `parse_response` gives: leading whitespace is
    dropped and trailing whitespace is held back until more text follows.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.separator = tokenizer.token_to_id("<|assistant|>")
        self._start_segment()

    def _start_segment(self) -> None:
        self.tokens: list[int] = []
        self.detokenizer = IncrementalDetokenizer(self.tokenizer)
        self.text = ""  # decoded so far
        self.metadata: str | None = None  # known once the first newline arrives
        self.emitted = 0  # characters of the content already sent as deltas
        self.started = False  # any non-whitespace content sent yet

    def feed(self, token_id: int) -> list[TextDelta | SegmentDone]:
        if token_id in self.tokenizer.stop_token_ids:
            return []
        if token_id == self.separator:
            return self._end_segment()
        self.tokens.append(token_id)
        self.text += self.detokenizer.add(token_id)
        return self._text_events()

    def finish(self) -> list[TextDelta | SegmentDone]:
        """End of generation: flush the last segment."""
        return self._end_segment()

    def _text_events(self) -> list[TextDelta | SegmentDone]:
        if self.metadata is None:
            metadata, newline, _ = self.text.partition("\n")
            if not newline:
                return []
            self.metadata = metadata
        if self.metadata.strip():
            return []  # a tool call or code: reported whole when the segment ends
        content = self.text.partition("\n")[2]
        if not self.started:
            stripped = content.lstrip()
            self.emitted = len(content) - len(stripped)
            self.started = bool(stripped)
        ready = content.rstrip()  # trailing whitespace waits for more text (and is dropped at the end)
        delta = ready[self.emitted :]
        self.emitted = max(self.emitted, len(ready))
        return [TextDelta(delta)] if delta else []

    def _end_segment(self) -> list[TextDelta | SegmentDone]:
        if not self.tokens:
            self._start_segment()
            return []
        self.text += self.detokenizer.flush()
        events = self._text_events()
        metadata, content = split_metadata(self.text)
        if self.metadata is None and content.strip():  # text without a metadata line: send it now
            events.append(TextDelta(content.strip()))
        events.append(SegmentDone(make_segment(metadata, content)))
        self._start_segment()
        return events
