"""Parsing ChatGLM3 answers into text, tool calls and code, finished and streamed; model output is never run."""

from __future__ import annotations

from pathlib import Path

import pytest

from glmrun.chat.parser import SegmentDone, StreamingParser, TextDelta, parse_response
from glmrun.tokenizer import ChatGLMTokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_file):
    return ChatGLMTokenizer(tiny_tokenizer_file, "chatglm3")


def generated(tokenizer: ChatGLMTokenizer, *segments: str, stop: str | None = None) -> list[int]:
    """Token ids as the model would generate them: segments joined by <|assistant|>, then a stop token."""
    ids: list[int] = []
    for i, text in enumerate(segments):
        if i:
            ids.append(tokenizer.token_to_id("<|assistant|>"))
        ids += tokenizer.encode(text, add_special_tokens=False)
    return ids + ([tokenizer.token_to_id(stop)] if stop else [])


WEATHER = "get_weather\n```python\ntool_call(city='北京', days=3)\n```"
CASES = {
    "text": (["\nHello, 世界!  "], [("text", "Hello, 世界!")]),
    "text then tool call": (["\nLet me check.", WEATHER], [("text", "Let me check."), ("tool_call", "get_weather")]),
    "code": (["interpreter\n```python\nprint(1 + 1)\n```"], [("code", "interpreter")]),
    "text without a metadata line": (["Just text"], [("text", "Just text")]),
}


@pytest.mark.parametrize("name", CASES)
def test_segments(tokenizer, name):
    texts, expected = CASES[name]
    segments = parse_response(tokenizer, generated(tokenizer, *texts, stop="<|observation|>"))
    assert [(s.kind, s.content if s.kind == "text" else s.metadata.strip()) for s in segments] == expected


def test_tool_call_arguments(tokenizer):
    call = parse_response(tokenizer, generated(tokenizer, WEATHER))[0]
    assert call.name == "get_weather" and call.arguments == {"city": "北京", "days": 3}
    assert call.as_message() == {"role": "assistant", "metadata": "get_weather", "content": WEATHER.split("\n", 1)[1]}


def test_nested_and_json_arguments(tokenizer):
    nested = "configure\n```python\ntool_call(config={'a': [1, 2, {'b': None}]}, flag=True, x=-1.5, s='引号\"')\n```"
    call = parse_response(tokenizer, generated(tokenizer, nested))[0]
    assert call.arguments == {"config": {"a": [1, 2, {"b": None}]}, "flag": True, "x": -1.5, "s": '引号"'}
    as_json = parse_response(tokenizer, generated(tokenizer, 'search\n{"query": "上海", "top": 2}'))[0]
    assert as_json.kind == "tool_call" and as_json.arguments == {"query": "上海", "top": 2}


def test_code_is_extracted(tokenizer):
    code = parse_response(tokenizer, generated(tokenizer, "interpreter\n```python\nx = 1\nprint(x)\n```"))[0]
    assert code.kind == "code" and code.code == "x = 1\nprint(x)"


@pytest.mark.parametrize(
    "payload,fragment",
    [
        ("tool_call(city=", "not valid Python"),
        ("tool_call('Paris')", "by keyword"),
        ("tool_call(city=os.getcwd())", "not a literal"),
        ("tool_call(**{'a': 1})", "by keyword"),
        ("os.system('ls')", "expected a call like tool_call"),
        ("{'a': 1", "not valid JSON"),
    ],
)
def test_malformed_calls_become_invalid_segments(tokenizer, payload, fragment):
    segment = parse_response(tokenizer, generated(tokenizer, f"lookup\n```python\n{payload}\n```"))[0]
    assert segment.kind == "invalid" and fragment in segment.error
    assert payload in segment.content  # the raw text is kept


def test_code_in_arguments_is_never_run(tokenizer, tmp_path: Path):
    marker = tmp_path / "pwned"
    payload = f"lookup\n```python\ntool_call(x=__import__('os').system('touch {marker}'))\n```"
    segment = parse_response(tokenizer, generated(tokenizer, payload))[0]
    assert segment.kind == "invalid" and "not a literal" in segment.error
    assert not marker.exists()


def stream(tokenizer: ChatGLMTokenizer, ids: list[int]) -> tuple[str, list, list[str]]:
    parser = StreamingParser(tokenizer)
    text, segments, prefixes = "", [], []
    for token_id in ids:
        for event in parser.feed(token_id):
            if isinstance(event, TextDelta):
                text += event.text
            else:
                segments.append(event.segment)
        prefixes.append(text)
    for event in parser.finish():
        if isinstance(event, TextDelta):
            text += event.text
        else:
            segments.append(event.segment)
    return text, segments, prefixes


@pytest.mark.parametrize("name", CASES)
def test_streaming_equals_parsing_at_every_token_boundary(tokenizer, name):
    ids = generated(tokenizer, *CASES[name][0], stop="<|observation|>")
    text, segments, prefixes = stream(tokenizer, ids)
    expected = parse_response(tokenizer, ids)
    assert segments == expected
    assert text == "".join(s.content for s in expected if s.kind == "text")
    for prefix in prefixes:  # after every token, what was shown is a prefix of the final text
        assert text.startswith(prefix)
        assert "tool_call" not in prefix and "interpreter" not in prefix and "get_weather" not in prefix


def test_streaming_emits_text_before_the_answer_ends(tokenizer):
    ids = generated(tokenizer, "\nHello there, this is a long answer.")
    parser = StreamingParser(tokenizer)
    deltas = [e for token_id in ids for e in parser.feed(token_id) if isinstance(e, TextDelta)]
    assert deltas and "".join(d.text for d in deltas).startswith("Hello")
    assert [type(e) for e in parser.finish()][-1] is SegmentDone
