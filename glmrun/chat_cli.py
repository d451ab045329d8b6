"""`glmrun chat`: an interactive conversation in the terminal, in ChatGLM3's three modes (others: chat only).

- chat: plain conversation (the official chat system prompt);
- tool: the built-in tools (time, calculator, random numbers) offered to the model, calls and results shown;
- code: a sandboxed code interpreter; code, its output and saved image paths shown.
Commands: /clear (forget the conversation), /system TEXT, /mode chat|tool|code, /exit. Ctrl-C stops the
current answer (what was said so far stays), Ctrl-D or /exit leaves. The conversation's KV cache is kept
between turns, so a new turn runs only the tokens past the unchanged prefix. Works with piped input too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from glmrun.chat.messages import CHAT_SYSTEM_PROMPT, CODE_SYSTEM_PROMPT, TOOL_SYSTEM_PROMPT, Message
from glmrun.chat.parser import TextDelta
from glmrun.engine import LLM, ConversationCache
from glmrun.errors import GlmrunError
from glmrun.interpreter import CodeInterpreter
from glmrun.sampling import SamplingParams
from glmrun.tools.agent import CodeCall, CodeOutput, NewMessage, RoundLimit, ToolCall, ToolOutput, tool_descriptions
from glmrun.tools.builtin import BUILTIN_TOOLS

MODES = {"chat": CHAT_SYSTEM_PROMPT, "tool": TOOL_SYSTEM_PROMPT, "code": CODE_SYSTEM_PROMPT}
HELP = "commands: /clear, /system TEXT, /mode chat|tool|code, /exit (Ctrl-C stops an answer, Ctrl-D leaves)"


class ChatSession:
    """One terminal conversation: its messages, mode, KV cache and (in code mode) interpreter."""

    def __init__(self, llm: LLM, params: SamplingParams, mode: str, system: str | None, out: TextIO,
                 image_dir: Path) -> None:  # fmt: skip
        self.llm, self.params, self.out, self.image_dir = llm, params, out, image_dir
        self.speaker = "ChatGLM: " if llm.tokenizer.family.startswith("chatglm") else "Assistant: "
        self.conversation = ConversationCache()
        self.interpreter: CodeInterpreter | None = None
        self.messages: list[Message] = []
        self.system_override = system
        self.set_mode(mode)

    def say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise GlmrunError(f"unknown mode {mode!r}: choose chat, tool or code")
        if mode != "chat" and self.llm.tokenizer.family != "chatglm3":
            raise GlmrunError(f"only ChatGLM3 has the tool and code modes; this is a {self.llm.config.family} model")
        self.mode = mode
        if mode == "code" and self.interpreter is None:
            self.interpreter = CodeInterpreter(image_dir=self.image_dir)
        self.clear()

    def clear(self) -> None:
        chatglm3 = self.llm.tokenizer.family == "chatglm3"  # others: the chat template's own default, if any
        system = self.system_override if self.system_override is not None else MODES[self.mode] if chatglm3 else ""
        no_system = self.llm.tokenizer.family == "chatglm2" or not system
        self.messages = [] if no_system else [{"role": "system", "content": system}]
        if self.mode == "tool":  # the official tool prompt: the system message lists the tools
            self.messages = [{"role": "system", "content": system, "tools": tool_descriptions(BUILTIN_TOOLS)}]
        self.conversation.clear()

    def close(self) -> None:
        if self.interpreter is not None:
            self.interpreter.close()

    def command(self, line: str) -> bool:
        """Handle a /command; False means leave."""
        name, _, argument = line.partition(" ")
        if name == "/exit":
            return False
        if name == "/clear":
            self.clear()
            self.say("(conversation cleared)\n")
        elif name == "/system":
            self.system_override = argument
            self.clear()
            self.say("(system prompt set; conversation cleared)\n")
        elif name == "/mode":
            self.set_mode(argument.strip())
            self.say(f"(mode: {self.mode}; conversation cleared)\n")
        else:
            self.say(HELP + "\n")
        return True

    def turn(self, text: str) -> None:
        """One user message and the model's whole answer, tool rounds included."""
        messages = [*self.messages, {"role": "user", "content": text}]
        tools = BUILTIN_TOOLS if self.mode == "tool" else None
        events = self.llm.chat_stream(messages, tools, self.params, interpreter=self.interpreter,
                                      conversation=self.conversation)  # fmt: skip
        new: list[Message] = []
        self.say(self.speaker)
        try:
            for event in events:
                self._show(event)
                if isinstance(event, NewMessage):
                    new.append(event.message)
        except KeyboardInterrupt:
            events.close()
            self.say("\n(stopped)")
        self.messages = messages + new
        self.say("\n")

    def _show(self, event: object) -> None:
        if isinstance(event, TextDelta):
            self.say(event.text)
        elif isinstance(event, ToolCall):
            arguments = ", ".join(f"{name}={value!r}" for name, value in event.arguments.items())
            self.say(f"\n[tool call] {event.name}({arguments})\n")
        elif isinstance(event, ToolOutput):
            self.say(f"[observation] {event.result.observation}\n{self.speaker}")
        elif isinstance(event, CodeCall):
            self.say(f"\n[code]\n{event.code}\n")
        elif isinstance(event, CodeOutput):
            self.say(f"[output]\n{event.result.output}\n")
            for image in event.result.images:
                self.say(f"[image saved] {image}\n")
            self.say(self.speaker)
        elif isinstance(event, RoundLimit):
            self.say(f"\n(stopped after {event.rounds} tool rounds)")


def run_chat(llm: LLM, params: SamplingParams, mode: str, system: str | None, image_dir: Path,
             stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:  # fmt: skip
    session = ChatSession(llm, params, mode, system, out, image_dir)
    interactive = stdin.isatty()
    session.say(f"glmrun chat ({llm.config.family}, mode {mode}); {HELP}\n")
    try:
        while True:
            if interactive:
                session.say("\nUser: ")
            try:
                line = stdin.readline()
            except KeyboardInterrupt:
                session.say("\n")
                continue
            if not line:
                break
            line = line.strip()
            if not line:
                continue
            if not interactive:
                session.say(f"User: {line}\n")
            try:
                if line.startswith("/"):
                    if not session.command(line):
                        break
                else:
                    session.turn(line)
            except GlmrunError as error:  # a bad command or request ends nothing but itself
                session.say(f"(error: {error})\n")
    finally:
        session.close()
