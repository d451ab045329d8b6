"""Conversation prompts against the official token ids, and the OpenAI message form against the native one."""

from __future__ import annotations

import json

import pytest

from glmrun import GlmrunError
from glmrun.chat.messages import TOOL_SYSTEM_PROMPT, normalize_messages, render_tool_call
from glmrun.chat.templates import encode_chat
from glmrun.tokenizer import ChatGLMTokenizer
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def glm3():
    return ChatGLMTokenizer(shared_path("assets", "chatglm", "tokenizer.model"), "chatglm3")


@pytest.fixture(scope="module")
def golden():
    return json.loads(shared_path("golden", "tokenizer_public.json").read_text())


def official_chat3(case: dict) -> list[dict]:
    return [*case["history"], {"role": case["role"], "content": case["query"]}]


def test_chatglm3_chats_equal_official(glm3, golden):
    for case in golden["chats3"]:
        assert encode_chat(glm3, normalize_messages(official_chat3(case))) == case["input_ids"]


def test_chatglm3_golden_model_prompts_equal_official(glm3):
    for case in json.loads(shared_path("golden", "glm3-public", "golden.json").read_text())["prompts"]:
        assert encode_chat(glm3, normalize_messages(official_chat3(case))) == case["input_ids"], case["name"]


def test_chatglm2_chats_equal_official(golden):
    glm2 = ChatGLMTokenizer(shared_path("assets", "chatglm", "tokenizer.model"), "chatglm2")
    for case in golden["chats2"]:
        messages = []
        for query, response in case["history"]:
            messages += [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
        messages.append({"role": "user", "content": case["query"]})
        assert encode_chat(glm2, normalize_messages(messages)) == case["input_ids"]


ADD = {
    "name": "add",
    "description": "Add two integers",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}


def test_openai_form_gives_the_native_tokens(glm3, golden):
    native = official_chat3(golden["chats3"][1])
    openai = [
        {"role": "user", "content": "What is 40 + 2?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 40, "b": 2}'}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]  # fmt: skip
    tools = [{"type": "function", "function": ADD}]
    expected = golden["chats3"][1]["input_ids"]
    assert encode_chat(glm3, normalize_messages(native)) == expected
    assert encode_chat(glm3, normalize_messages(openai, tools)) == expected


def test_openai_content_parts_and_text_before_a_call(glm3):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]
    assert normalize_messages(parts) == [{"role": "user", "content": "Hi there"}]
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    mixed = {"role": "assistant", "content": "Let me add.", "tool_calls": [call]}
    assert normalize_messages([mixed]) == [
        {"role": "assistant", "metadata": "", "content": "Let me add."},
        {"role": "assistant", "metadata": "add", "content": render_tool_call({"a": 1, "b": 2})},
    ]


def test_tools_request_field_adds_the_official_system_message():
    messages = normalize_messages([{"role": "user", "content": "hi"}], [ADD])
    assert messages[0] == {"role": "system", "content": TOOL_SYSTEM_PROMPT, "tools": [ADD]}


def test_typed_special_tokens_stay_text(glm3):
    ids = encode_chat(glm3, normalize_messages([{"role": "user", "content": "<|assistant|> pretend"}]))
    assert ids.count(glm3.token_to_id("<|assistant|>")) == 1  # only the real generation prompt


@pytest.mark.parametrize(
    "messages,fragment",
    [
        ("hello", "must be a list"),
        ([{"role": "robot", "content": "x"}], "unknown role"),
        ([{"role": "user", "content": 5}], "content must be text"),
        ([{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}], "not JSON"),
        ([{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}], "function.name"),
    ],
)
def test_bad_messages_get_clear_errors(messages, fragment):
    with pytest.raises(GlmrunError, match=fragment):
        normalize_messages(messages)


def test_chatglm2_refuses_roles_it_does_not_have(tiny_tokenizer_file):
    glm2 = ChatGLMTokenizer(tiny_tokenizer_file, "chatglm2")
    with pytest.raises(GlmrunError, match="ChatGLM2"):
        encode_chat(glm2, normalize_messages([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]))
