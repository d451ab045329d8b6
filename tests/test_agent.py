"""The agent loop end to end: a scripted model drives the real parser, dispatcher and a real kernel; a real
tiny model checks that reusing a conversation's KV cache changes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest

from glmrun import LLM, SamplingParams
from glmrun.chat.parser import TextDelta
from glmrun.engine import ConversationCache, StreamPiece
from glmrun.interpreter import CodeInterpreter
from glmrun.tokenizer import ChatGLMTokenizer
from glmrun.tools import tool
from glmrun.tools.agent import Agent, CodeCall, CodeOutput, NewMessage, RoundLimit, ToolCall, ToolOutput


class ScriptedLLM:
    """Stands in for LLM: each generation emits the next scripted answer as tokens, whatever the prompt."""

    def __init__(self, tokenizer: ChatGLMTokenizer, answers: list[str]) -> None:
        self.tokenizer, self.answers, self.prompts = tokenizer, iter(answers), []

    def stream(self, prompt, params, conversation=None):
        self.prompts.append(prompt)
        separator = self.tokenizer.token_to_id("<|assistant|>")
        ids: list[int] = []
        for i, segment in enumerate(next(self.answers).split("<|assistant|>")):
            ids += ([separator] if i else []) + self.tokenizer.encode(segment, add_special_tokens=False)
        stop = "<|observation|>" if "tool_call" in segment or "```" in segment else "<|user|>"
        for token_id in ids + [self.tokenizer.token_to_id(stop)]:
            yield StreamPiece(token_id, "", None)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_file):
    return ChatGLMTokenizer(tiny_tokenizer_file, "chatglm3")


@tool
def get_weather(city: Annotated[str, "city name"]) -> dict:
    """Get the current weather."""
    return {"city": city, "weather": "sunny", "celsius": 24}


def run(agent: Agent, messages: list[dict]) -> list:
    return list(agent.run(messages, SamplingParams(temperature=0), ConversationCache()))


def test_tool_loop_runs_the_tool_and_feeds_the_observation_back(tokenizer):
    model = ScriptedLLM(tokenizer, [
        "\nLet me look that up.<|assistant|>get_weather\n```python\ntool_call(city='北京')\n```",
        "\nIt is sunny in 北京, 24 degrees.",
    ])  # fmt: skip
    events = run(Agent(model, tools=[get_weather]), [{"role": "user", "content": "Weather in 北京?"}])
    assert ToolCall("get_weather", {"city": "北京"}) in events
    output = next(e for e in events if isinstance(e, ToolOutput)).result
    assert output.ok and json.loads(output.observation) == {"city": "北京", "weather": "sunny", "celsius": 24}
    new = [e.message for e in events if isinstance(e, NewMessage)]
    assert [(m["role"], m.get("metadata")) for m in new] == [
        ("assistant", ""),
        ("assistant", "get_weather"),
        ("observation", None),
        ("assistant", ""),
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == (
        "Let me look that up.It is sunny in 北京, 24 degrees."
    )
    # The second round's prompt is the whole history re-encoded: tool descriptions, tool name, observation.
    decoded = tokenizer.decode(model.prompts[1])
    assert decoded.startswith("[gMASK]sop<|system|>") and decoded.count('"name": "get_weather"') == 1
    assert "<|assistant|> get_weather\n" in decoded and '<|observation|> \n {"city": "北京"' in decoded
    assert model.prompts[1][-1] == tokenizer.token_to_id("<|assistant|>")
    assert model.prompts[1][: len(model.prompts[0]) - 1] == model.prompts[0][:-1]  # the history only grew


def test_malicious_arguments_are_reported_not_run(tokenizer, tmp_path: Path):
    marker = tmp_path / "pwned"
    model = ScriptedLLM(tokenizer, [
        f"get_weather\n```python\ntool_call(city=__import__('os').system('touch {marker}'))\n```",
        "\nSorry.",
    ])  # fmt: skip
    events = run(Agent(model, tools=[get_weather]), [{"role": "user", "content": "hi"}])
    output = next(e for e in events if isinstance(e, ToolOutput)).result
    assert not output.ok and "malformed tool call" in output.observation and "not a literal" in output.observation
    assert not any(isinstance(e, ToolCall) for e in events)  # nothing was dispatched
    assert not marker.exists()


def test_described_but_not_runnable_tools_return_to_the_caller(tokenizer):
    model = ScriptedLLM(tokenizer, ["get_weather\n```python\ntool_call(city='Paris')\n```"])
    described = [get_weather.description_dict()]  # a dict, as an OpenAI client sends it
    events = run(Agent(model, tools=described), [{"role": "user", "content": "Paris?"}])
    assert [e.message["metadata"] for e in events if isinstance(e, NewMessage)] == ["get_weather"]
    assert not any(isinstance(e, ToolOutput) for e in events)


def test_round_limit(tokenizer):
    call = "get_weather\n```python\ntool_call(city='Rome')\n```"
    model = ScriptedLLM(tokenizer, [call] * 3)
    events = run(Agent(model, tools=[get_weather], max_tool_rounds=2), [{"role": "user", "content": "?"}])
    assert sum(isinstance(e, ToolOutput) for e in events) == 2 and events[-1] == RoundLimit(2)


def test_code_interpreter_loop_with_a_real_kernel_and_an_image(tokenizer, tmp_path):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.show()\nprint('plotted', 6 * 7)"
    model = ScriptedLLM(tokenizer, [f"interpreter\n```python\n{code}\n```", "\nThe plot is above."])
    with CodeInterpreter(image_dir=tmp_path / "images", timeout=20) as interpreter:
        events = run(Agent(model, interpreter=interpreter), [{"role": "user", "content": "Plot squares"}])
    assert CodeCall(code) in events
    result = next(e for e in events if isinstance(e, CodeOutput)).result
    assert "[Image]" in result.output and "plotted 42" in result.output
    assert len(result.images) == 1 and result.images[0].read_bytes().startswith(b"\x89PNG")
    observation = [e.message for e in events if isinstance(e, NewMessage)][1]
    assert observation == {"role": "observation", "content": result.output}


def test_code_without_an_interpreter_is_reported(tokenizer):
    model = ScriptedLLM(tokenizer, ["interpreter\n```python\nprint(1)\n```", "\nOK."])
    events = run(Agent(model), [{"role": "user", "content": "run it"}])
    observation = [e.message for e in events if isinstance(e, NewMessage)][1]
    assert "no code interpreter" in observation["content"]


def test_conversation_cache_reuse_equals_re_encoding(make_checkpoint):
    llm = LLM(make_checkpoint(seq_length=256), dtype="float32", progress=False)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    conversation = ConversationCache()
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "the model reads"}]
    for turn in ("tokens and writes", "cache decode prefill"):
        prompt = llm.encode_chat(messages)
        reused = conversation.reusable(prompt)
        cached = [piece.token_id for piece in llm.stream(prompt, params, conversation)]
        fresh = llm.generate(prompt, params).token_ids
        assert cached == fresh
        if len(messages) > 2:  # every turn after the first reuses the system prompt and earlier turns
            assert reused >= len(llm.encode_chat(messages[:-2], add_generation_prompt=False))
        messages += [{"role": "assistant", "content": llm.tokenizer.decode(cached)}, {"role": "user", "content": turn}]
