"""Conversation prompts as token ids, exactly as the official ChatGLM2 and ChatGLM3 code builds them.

- ChatGLM3: `[gMASK] sop`, then per message the role token, `encode(metadata + "\\n")` and `encode(content)` as
  separate encodes (a system message with tools carries them as indented JSON after its content), then a bare
  `<|assistant|>`: the model writes its own metadata line.
- ChatGLM2: the text "[Round i]\\n\\n问：{query}\\n\\n答：{response}\\n\\n" per finished round, then the open
  round, encoded with `[gMASK] sop`.
- Other models: their own Jinja chat template (jinja.py), as Hugging Face's `apply_chat_template` renders it.
For ChatGLM, text a user types that looks like a special token stays ordinary text. Messages are native
(messages.py).
"""

from __future__ import annotations

import json

from glmrun.bpe_tokenizer import BPETokenizer
from glmrun.chat.jinja import render_chat_template
from glmrun.chat.messages import Message
from glmrun.errors import GlmrunError
from glmrun.tokenizer import ChatGLMTokenizer, Tokenizer


def encode_chatglm3(tokenizer: ChatGLMTokenizer, messages: list[Message], add_generation_prompt: bool) -> list[int]:
    ids = [tokenizer.token_to_id("[gMASK]"), tokenizer.token_to_id("sop")]
    for message in messages:
        content = message["content"]
        if message.get("tools"):
            content += "\n" + json.dumps(message["tools"], indent=4, ensure_ascii=False)
        ids.append(tokenizer.token_to_id(f"<|{message['role']}|>"))
        ids += tokenizer.encode(message.get("metadata", "") + "\n", add_special_tokens=False)
        ids += tokenizer.encode(content, add_special_tokens=False)
    if add_generation_prompt:
        ids.append(tokenizer.token_to_id("<|assistant|>"))
    return ids


def encode_chatglm2(tokenizer: ChatGLMTokenizer, messages: list[Message], add_generation_prompt: bool) -> list[int]:
    """ChatGLM2 knows only alternating user and assistant turns, starting with the user."""
    rounds: list[list[str]] = []
    for message in messages:
        role = message["role"]
        if role == "user" and (not rounds or len(rounds[-1]) == 2):
            rounds.append([message["content"]])
        elif role == "assistant" and rounds and len(rounds[-1]) == 1:
            rounds[-1].append(message["content"])
        else:
            raise GlmrunError(
                f"ChatGLM2 prompts alternate user and assistant turns, starting with the user; got a {role} message "
                "out of place (ChatGLM2 has no system, tool or observation role)"
            )
    prompt = ""
    for number, turn in enumerate(rounds, start=1):
        prompt += f"[Round {number}]\n\n问：{turn[0]}\n\n答："
        if len(turn) == 2:
            prompt += f"{turn[1]}\n\n"
    if rounds and len(rounds[-1]) == 2 and add_generation_prompt:
        raise GlmrunError("the conversation ends with an assistant turn: add a user message to continue it")
    return tokenizer.encode(prompt, add_special_tokens=True)


def encode_templated(tokenizer: BPETokenizer, messages: list[Message], add_generation_prompt: bool) -> list[int]:
    """The model's own Jinja chat template, rendered and tokenized like HF `apply_chat_template`."""
    if not tokenizer.chat_template:
        raise GlmrunError("this model ships no chat template: use plain prompts (glmrun generate --raw)")
    template_messages = [
        {"role": "tool" if m["role"] == "observation" else m["role"], "content": m["content"]} for m in messages
    ]
    special = {token_id: text for text, token_id in tokenizer.special_tokens.items()}
    text = render_chat_template(
        tokenizer.chat_template,
        template_messages,
        add_generation_prompt,
        bos_token=special.get(tokenizer.bos_id, ""),
        eos_token=special.get(tokenizer.eos_id, ""),
    )
    return tokenizer.encode(text, add_special_tokens=False)


def encode_chat(tokenizer: Tokenizer, messages: list[Message], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of a native conversation in the tokenizer's family's format."""
    if tokenizer.family == "chatglm2":
        return encode_chatglm2(tokenizer, messages, add_generation_prompt)
    if tokenizer.family == "chatglm3":
        return encode_chatglm3(tokenizer, messages, add_generation_prompt)
    return encode_templated(tokenizer, messages, add_generation_prompt)
