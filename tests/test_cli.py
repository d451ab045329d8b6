"""The `glmrun` command line: generate, tokenize, info, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glmrun import LLM, SamplingParams
from glmrun.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("dtype,dtype_bytes", [("float32", 4), ("bfloat16", 2), ("float16", 2)])
def test_info_reports_kv_bytes_per_token(capsys, tiny_model, dtype, dtype_bytes):
    code, out, _ = run(capsys, "info", str(tiny_model), "--dtype", dtype, "--json")
    info = json.loads(out)
    assert code == 0
    layers, kv_heads, head_dim = 2, 2, 8  # tests/tiny.py's config
    assert info["kv_bytes_per_token"] == 2 * layers * kv_heads * head_dim * dtype_bytes
    assert info["kv_bytes_per_token_full_mha"] == 2 * layers * 4 * head_dim * dtype_bytes
    parameters = sum(t.numel() for t in LLM(tiny_model, progress=False).model.parameters())
    assert info["parameters"] == parameters
    assert info["weight_bytes"] == parameters * dtype_bytes


def test_info_text(capsys, tiny_model):
    code, out, _ = run(capsys, "info", str(tiny_model), "--dtype", "float16")
    assert code == 0
    assert "4 query heads share 2 KV head(s)" in out
    assert "128 B per token" in out and "(2x more)" in out


def test_generate_json_equals_the_api(capsys, tiny_model):
    code, out, _ = run(
        capsys,
        "generate",
        str(tiny_model),
        "--prompt",
        "the model",
        "--temperature",
        "0",
        "--max-tokens",
        "6",
        "--ignore-eos",
        "--dtype",
        "float32",
        "--json",
    )
    assert code == 0
    result = json.loads(out)
    expected = LLM(tiny_model, dtype="float32", progress=False).generate(
        "the model", SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    )
    assert result == {"token_ids": expected.token_ids, "text": expected.text, "finish_reason": "length"}


def test_generate_streams_text(capsys, tiny_model):
    code, out, _ = run(
        capsys,
        "generate",
        str(tiny_model),
        "--prompt-ids",
        "401,403,259",
        "--temperature",
        "0",
        "--max-tokens",
        "5",
        "--ignore-eos",
        "--dtype",
        "float32",
    )
    expected = LLM(tiny_model, dtype="float32", progress=False).generate(
        [401, 403, 259], SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)
    )
    assert code == 0 and out == expected.text + "\n"


def test_tokenize(capsys, tiny_model):
    code, out, _ = run(capsys, "tokenize", str(tiny_model), "--text", "你好", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["ids"][:2] == [401, 403] and result["pieces"][:2] == ["[gMASK]", "sop"]


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["info", "/no/such/folder"], "does not exist"),
        (["generate", "{model}", "--prompt-ids", "1,x"], "comma-separated"),
        (["generate", "{model}", "--prompt", "hi", "--top-p", "2"], "top_p"),
        (["generate", "{model}", "--prompt", "hi", "--max-tokens", "1000"], "context"),
    ],
)
def test_errors_are_one_line(capsys, tiny_model, argv, fragment):
    code, out, err = run(capsys, *[part.format(model=tiny_model) for part in argv])
    assert code == 1 and out == ""
    assert err.startswith("glmrun: error:") and fragment in err and err.count("\n") == 1


def test_console_script_is_installed(tiny_model):
    command = Path(sys.executable).parent / "glmrun"  # installed beside the interpreter running the tests
    result = subprocess.run(
        [str(command), "info", str(tiny_model), "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["family"] == "chatglm3"
