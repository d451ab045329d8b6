"""Conversation messages in glmrun's native form, and the mapping from the OpenAI form into it.

Native messages are the official ChatGLM3 ones: `{"role": "system" | "user" | "assistant" | "observation",
"content": str}`, plus `metadata` on assistant messages (a tool name, `interpreter`, or empty for text) and
`tools` (a list of function descriptions) on a system message. OpenAI messages (`tools` as
`{"type": "function", "function": {...}}`, assistant `tool_calls` with JSON `arguments`, role `tool`) are
translated into exactly the native messages the model was trained on. This module builds no tokens.
"""

from __future__ import annotations

import json
from typing import Any

from glmrun.errors import GlmrunError

Message = dict[str, Any]
ROLES = ("system", "user", "assistant", "observation")

# The official ChatGLM3 demos' system prompts.
CHAT_SYSTEM_PROMPT = (
    "You are ChatGLM3, a large language model trained by Zhipu.AI. Follow the user's instructions carefully. "
    "Respond using markdown."
)
TOOL_SYSTEM_PROMPT = "Answer the following questions as best as you can. You have access to the following tools:"
CODE_SYSTEM_PROMPT = (
    "You are an intelligent AI assistant, named ChatGLM3. You are connected to a computer, but please note that "
    "you cannot connect to the internet. When using Python to solve tasks, you can run the code and get the "
    "results. If there are errors in the running results, you need to improve the code as much as possible. You "
    "can process files uploaded by users to your computer, and the default storage path for files is /mnt/data/."
)


def render_tool_call(arguments: dict[str, Any]) -> str:
    """The assistant content of a ChatGLM3 tool call: a python block calling `tool_call` with keyword literals."""
    keywords = ", ".join(f"{name}={value!r}" for name, value in arguments.items())
    return f"```python\ntool_call({keywords})\n```"


def _text(content: Any, where: str) -> str:
    """Message content as text: a string, None (empty) or a list of OpenAI text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, dict) and part.get("type") == "text" for part in content):
        return "".join(str(part.get("text", "")) for part in content)
    raise GlmrunError(f"{where}: content must be text (or a list of text parts), got {type(content).__name__}")


def _function(tool: Any, where: str) -> dict[str, Any]:
    """A native tool description from either `{"type": "function", "function": {...}}` or the bare function."""
    if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        tool = tool["function"]
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise GlmrunError(f"{where}: each tool needs a 'name' (a function description dict)")
    return tool


def _tool_call_messages(message: Message, where: str) -> list[Message]:
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise GlmrunError(f"{where}: tool_calls must be a list")
    result = []
    text = _text(message.get("content"), where)
    if text:
        result.append({"role": "assistant", "metadata": "", "content": text})
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise GlmrunError(f"{where}: a tool call needs function.name")
        arguments = function.get("arguments") or "{}"
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError as bad:
                raise GlmrunError(f"{where}: tool call arguments are not JSON: {bad}") from None
        if not isinstance(arguments, dict):
            raise GlmrunError(f"{where}: tool call arguments must be a JSON object")
        result.append({"role": "assistant", "metadata": function["name"], "content": render_tool_call(arguments)})
    return result


def normalize_messages(messages: list[Message], tools: list[Any] | None = None) -> list[Message]:
    """Native messages from native or OpenAI-form ones; `tools` (OpenAI's request field) become the official
    tool system message, placed first unless a system message already carries tools."""
    if not isinstance(messages, list):
        raise GlmrunError("messages must be a list of {'role': ..., 'content': ...} dicts")
    native: list[Message] = []
    if tools and not any(isinstance(m, dict) and m.get("role") == "system" and m.get("tools") for m in messages):
        functions = [_function(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
        native.append({"role": "system", "content": TOOL_SYSTEM_PROMPT, "tools": functions})
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise GlmrunError(f"{where} must be a dict with 'role' and 'content'")
        role = message.get("role")
        if role == "tool":
            role = "observation"
        if role not in ROLES:
            raise GlmrunError(f"{where}: unknown role {role!r} (use one of {', '.join(ROLES)} or 'tool')")
        if role == "assistant" and message.get("tool_calls"):
            native.extend(_tool_call_messages(message, where))
            continue
        entry: Message = {"role": role, "content": _text(message.get("content"), where)}
        if role == "assistant":
            entry["metadata"] = str(message.get("metadata") or "")
        if role == "system" and message.get("tools"):
            entry["tools"] = [_function(tool, f"{where}.tools[{j}]") for j, tool in enumerate(message["tools"])]
        native.append(entry)
    return native
