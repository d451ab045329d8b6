"""`glmrun chat`: commands, turns, Ctrl-C during an answer, bad input, and how tool/code events are shown."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from glmrun import LLM, SamplingParams
from glmrun.chat.parser import TextDelta
from glmrun.chat_cli import ChatSession, run_chat
from glmrun.interpreter import ExecutionResult
from glmrun.tools.agent import CodeCall, CodeOutput, NewMessage, ToolCall, ToolOutput
from glmrun.tools.dispatcher import ToolResult

PARAMS = SamplingParams(temperature=0, max_tokens=5)


@pytest.fixture(scope="module")
def llm(tmp_path_factory, tiny_tokenizer_file):
    from tests.tiny import write_checkpoint

    folder = write_checkpoint(tmp_path_factory.mktemp("chat") / "model", tiny_tokenizer_file, seq_length=512)
    return LLM(folder, dtype="float32", progress=False)


def chat(llm: LLM, lines: str, tmp_path: Path, mode: str = "chat") -> str:
    out = io.StringIO()
    run_chat(llm, PARAMS, mode, None, tmp_path, stdin=io.StringIO(lines), out=out)
    return out.getvalue()


def test_turns_and_commands(llm, tmp_path):
    out = chat(llm, "the model reads\n/clear\nsecond question\n/system Be brief.\n/help\n/exit\nnever read\n", tmp_path)
    assert out.count("ChatGLM: ") == 2 and "User: the model reads" in out
    assert "(conversation cleared)" in out and "(system prompt set; conversation cleared)" in out
    assert "commands: /clear" in out and "never read" not in out


def test_history_and_cache_carry_across_turns(llm, tmp_path):
    session = ChatSession(llm, PARAMS, "chat", None, io.StringIO(), tmp_path)
    session.turn("the model reads")
    session.turn("and writes")
    roles = [m["role"] for m in session.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert len(session.conversation.token_ids) > len(llm.encode_chat(session.messages[:2]))


def test_bad_commands_do_not_end_the_session(llm, tmp_path):
    out = chat(llm, "/mode nonsense\nstill here\n", tmp_path)
    assert "(error: unknown mode 'nonsense'" in out and "User: still here" in out and "ChatGLM: " in out


def test_ctrl_c_stops_the_answer_not_the_session(llm, tmp_path, monkeypatch):
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        yield TextDelta("partial answer")
        if len(calls) == 1:
            raise KeyboardInterrupt
        yield NewMessage({"role": "assistant", "metadata": "", "content": "fine"})

    monkeypatch.setattr(llm, "chat_stream", interrupted)
    out = chat(llm, "first\nsecond\n", tmp_path)
    assert "partial answer\n(stopped)" in out and "User: second" in out and len(calls) == 2


def test_tool_and_code_events_are_shown(tmp_path):
    out = io.StringIO()
    session = ChatSession.__new__(ChatSession)
    session.out, session.speaker = out, "ChatGLM: "
    for event in [
        ToolCall("calculator", {"expression": "6*7"}),
        ToolOutput(ToolResult("calculator", {"expression": "6*7"}, "42", ok=True)),
        CodeCall("print(1)"),
        CodeOutput(ExecutionResult("1\n[Image]", images=[tmp_path / "image-001.png"])),
    ]:
        session._show(event)
    text = out.getvalue()
    assert "[tool call] calculator(expression='6*7')" in text and "[observation] 42" in text
    assert "[code]\nprint(1)" in text and "[output]\n1\n[Image]" in text
    assert f"[image saved] {tmp_path / 'image-001.png'}" in text


def test_chatglm2_has_only_chat_mode(tmp_path, tiny_tokenizer_file):
    from tests.tiny import write_checkpoint

    folder = write_checkpoint(tmp_path / "glm2", tiny_tokenizer_file, _name_or_path="THUDM/chatglm2-6b", seq_length=256)
    llm2 = LLM(folder, dtype="float32", progress=False)
    out = chat(llm2, "hello\n/mode tool\n", tmp_path)
    assert "ChatGLM: " in out and "(error: only ChatGLM3 has the tool and code modes; this is a chatglm2" in out


def test_console_script_with_piped_input(llm, tmp_path):
    command = [str(Path(sys.executable).parent / "glmrun"), "chat", str(llm.folder), "--max-tokens", "3",
               "--temperature", "0", "--image-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, input="hello there\n/exit\n", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "User: hello there" in result.stdout and "ChatGLM: " in result.stdout


def test_tool_mode_lists_the_tools_once(llm, tmp_path, monkeypatch):
    prompts = []
    original = llm.stream

    def recording(prompt, *args, **kwargs):
        prompts.append(prompt)
        return original(prompt, *args, **kwargs)

    monkeypatch.setattr(llm, "stream", recording)
    chat(llm, "/mode tool\nwhat time is it\n", tmp_path)
    text = llm.tokenizer.decode(prompts[0])
    assert text.count("You have access to the following tools") == 1
    assert text.count('"name": "calculator"') == 1
