"""Exactness against the official implementation: shared/golden outputs of a tiny random ChatGLM2/3 checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from glmrun import LLM, SamplingParams
from tests.conftest import golden_model_folder, shared_path

CASES = ["glm3-public", "glm2-public"]


BACKENDS = ["auto", "math", "flash", "sdpa"]


@pytest.fixture(scope="module", params=[(case, backend) for case in CASES for backend in BACKENDS], ids=str)
def golden(request, tmp_path_factory):
    case, backend = request.param
    golden = json.loads(shared_path("golden", case, "golden.json").read_text())
    logits = np.load(shared_path("golden", case, "golden_logits.npz"))
    # A small flash block, so that the golden prompts (12 to 168 tokens) span several tiles.
    folder = golden_model_folder(case, tmp_path_factory)
    llm = LLM(folder, dtype="float32", progress=False, attention=backend, flash_block_size=16)
    return llm, golden, logits


def test_family_is_detected(golden):
    llm, data, _ = golden
    assert llm.config.family == data["family"]


def test_greedy_continuations_equal_official(golden):
    llm, data, _ = golden
    for prompt in data["prompts"]:
        out = llm.generate(prompt["input_ids"], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
        assert out.token_ids == prompt["greedy_new_ids"], prompt["name"]
        assert out.text == prompt["greedy_text"], prompt["name"]
        assert out.finish_reason == "length"


def test_beam_search_equals_official(golden):
    llm, data, _ = golden
    params = SamplingParams(num_beams=3, max_tokens=12, ignore_eos=True, temperature=0)
    for prompt in data["prompts"]:
        assert llm.generate(prompt["input_ids"], params).token_ids == prompt["beam3_new_ids"], prompt["name"]


def test_logits_equal_official(golden):
    llm, data, reference = golden
    for prompt in data["prompts"]:
        name = prompt["name"]
        logits = llm.logits(prompt["input_ids"]).numpy()
        assert logits.shape == (len(prompt["input_ids"]), llm.config.vocab_size)
        np.testing.assert_array_equal(logits.argmax(-1), reference[f"{name}.argmax"], err_msg=name)
        assert np.abs(logits[-1] - reference[f"{name}.last"]).max() <= 1e-3, name
        assert np.abs(logits[0] - reference[f"{name}.first"]).max() <= 1e-3, name
        np.testing.assert_allclose(logits.max(-1), reference[f"{name}.max"], atol=1e-3, err_msg=name)


def test_prompt_text_encodes_like_official(golden):
    llm, data, _ = golden
    for prompt in data["prompts"]:
        if "prompt" in prompt:  # ChatGLM2 cases carry their [Round N] prompt text
            assert llm.tokenizer.encode(prompt["prompt"]) == prompt["input_ids"]
