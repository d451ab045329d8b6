"""ChatGLM3 as a GGUF file: the golden checkpoint converted the way llama.cpp's converter does
(convert_hf_to_gguf.py, ChatGLMModel), then required to give the official golden outputs."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import sentencepiece
from safetensors import safe_open

from glmrun import LLM, SamplingParams
from tests.conftest import shared_path

SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
SP_TYPES = {"normal": 1, "unknown": 2, "control": 3, "user_defined": 4, "unused": 5, "byte": 6}


def llama_cpp_vocab(sp: sentencepiece.SentencePieceProcessor, padded: int) -> tuple[list[str], list[float], list[int]]:
    """set_vocab_chatglm3: every id up to the padded size, with llama.cpp's names, scores and types."""
    tokens, scores, kinds = [], [], []
    for token_id in range(padded):
        if token_id < sp.vocab_size():
            piece = {0: "<unk>", 1: "<bos>", 2: "<eos>"}.get(token_id, sp.id_to_piece(token_id))
            kind = "unknown" if sp.is_unknown(token_id) else "control" if sp.is_control(token_id) else \
                "unused" if sp.is_unused(token_id) else "byte" if sp.is_byte(token_id) else "normal"  # fmt: skip
            tokens.append(piece), scores.append(sp.get_score(token_id)), kinds.append(SP_TYPES[kind])
        elif token_id - sp.vocab_size() < len(SPECIALS):
            tokens.append(SPECIALS[token_id - sp.vocab_size()]), scores.append(0.0), kinds.append(SP_TYPES["control"])
        else:
            tokens.append(f"[PAD{token_id}]"), scores.append(0.0), kinds.append(SP_TYPES["unused"])
    return tokens, scores, kinds


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory):
    folder = shared_path("golden", "glm3-public")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(shared_path("assets", "chatglm", "tokenizer.model")))
    config = json.loads((folder / "config.json").read_text())
    path = tmp_path_factory.mktemp("gguf") / "chatglm3.gguf"
    writer = gguf.GGUFWriter(str(path), "chatglm")
    writer.add_context_length(config["seq_length"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["ffn_hidden_size"])
    writer.add_block_count(config["num_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["multi_query_group_num"])
    writer.add_layer_norm_rms_eps(config["layernorm_epsilon"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_rope_dimension_count(config["hidden_size"] // config["num_attention_heads"] // 2)
    writer.add_add_bos_token(False)
    writer.add_rope_freq_base(10000)
    tokens, scores, kinds = llama_cpp_vocab(sp, config["padded_vocab_size"])
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("chatglm-spm")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(kinds)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.CHATGLM, config["num_layers"])
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="np") as file:
            for name in file.keys():
                if name.endswith("rotary_pos_emb.inv_freq"):
                    continue
                base, suffix = name.removeprefix("transformer.").rsplit(".", 1)
                writer.add_tensor(f"{names.get_name(base)}.{suffix}", np.asarray(file.get_tensor(name), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return LLM(path, dtype="float32", progress=False)


def test_tokenizer_rebuilt_from_gguf_equals_official(gguf_model):
    golden = json.loads(shared_path("golden", "tokenizer_public.json").read_text())
    assert gguf_model.tokenizer.family == "chatglm3" and gguf_model.tokenizer.vocab_size == 64798
    for case in golden["strings"]:
        assert gguf_model.tokenizer.encode(case["text"], add_special_tokens=True) == case["hf_encode"], case["text"]
        assert gguf_model.tokenizer.decode(case["sp_encode"]) == case["decode_sp"]
    for chat in golden["chats3"]:
        messages = [*chat["history"], {"role": chat["role"], "content": chat["query"]}]
        assert gguf_model.encode_chat(messages) == chat["input_ids"]
    assert gguf_model.tokenizer.stop_token_ids == [2, 64795, 64797]


def test_gguf_chatglm3_gives_the_official_golden_outputs(gguf_model):
    data = json.loads(shared_path("golden", "glm3-public", "golden.json").read_text())
    reference = np.load(shared_path("golden", "glm3-public", "golden_logits.npz"))
    for prompt in data["prompts"]:
        out = gguf_model.generate(prompt["input_ids"], SamplingParams(temperature=0, max_tokens=24, ignore_eos=True))
        assert out.token_ids == prompt["greedy_new_ids"], prompt["name"]
        logits = gguf_model.logits(prompt["input_ids"]).numpy()
        np.testing.assert_array_equal(logits.argmax(-1), reference[f"{prompt['name']}.argmax"])
        assert np.abs(logits[-1] - reference[f"{prompt['name']}.last"]).max() <= 1e-3
