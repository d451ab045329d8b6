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
    first = {key: result[key] for key in ("token_ids", "text", "finish_reason")}
    assert first == {"token_ids": expected.token_ids, "text": expected.text, "finish_reason": "length"}
    assert result["outputs"][0]["token_ids"] == expected.token_ids


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
        (["generate", "{model}", "--prompt", "hi", "--num-beams", "2", "--temperature", "0.5"], "temperature=0"),
        (["generate", "{model}", "--prompt", "hi", "--stop-token-ids", "2,a"], "--stop-token-ids"),
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


def test_generate_beams_json_equals_the_api(capsys, tiny_model):
    code, out, _ = run(capsys, "generate", str(tiny_model), "--prompt", "the model", "--num-beams", "3",
                       "--num-return-sequences", "2", "--max-tokens", "5", "--ignore-eos", "--dtype", "float32",
                       "--json")  # fmt: skip
    expected = LLM(tiny_model, dtype="float32", progress=False).generate(
        "the model", SamplingParams(temperature=0, num_beams=3, num_return_sequences=2, max_tokens=5, ignore_eos=True)
    )
    result = json.loads(out)
    assert code == 0
    assert [output["token_ids"] for output in result["outputs"]] == [output.token_ids for output in expected.outputs]
    assert result["token_ids"] == expected.token_ids


def test_generate_prints_every_sample_with_logprobs(capsys, tiny_model):
    code, out, _ = run(capsys, "generate", str(tiny_model), "--prompt", "the model", "--n", "3", "--logprobs", "2",
                       "--max-tokens", "4", "--ignore-eos", "--seed", "5")  # fmt: skip
    assert code == 0
    assert out.count("--- [") == 3 and "--- [2] 4 tokens, finish: length, cumulative logprob" in out
    assert len([line for line in out.splitlines() if line.startswith("    ")]) == 3 * 4  # a logprob row per token


def test_generate_json_logprobs_and_stop(capsys, tiny_model):
    code, out, _ = run(capsys, "generate", str(tiny_model), "--prompt", "the model", "--temperature", "0",
                       "--max-tokens", "6", "--ignore-eos", "--logprobs", "3", "--json")  # fmt: skip
    result = json.loads(out)
    steps = result["outputs"][0]["logprobs"]
    assert code == 0 and len(steps) == 6 and all(len(step["top_logprobs"]) == 3 for step in steps)
    assert result["outputs"][0]["cumulative_logprob"] == pytest.approx(sum(step["logprob"] for step in steps))
    stop = result["text"][2:4]
    code, out, _ = run(capsys, "generate", str(tiny_model), "--prompt", "the model", "--temperature", "0",
                       "--max-tokens", "6", "--ignore-eos", "--stop", stop, "--json")  # fmt: skip
    stopped = json.loads(out)
    assert stopped["text"] == result["text"][: result["text"].find(stop)] and stopped["finish_reason"] == "stop"
