"""Tiny random ChatGLM checkpoints in the official file formats, and a tiny SentencePiece tokenizer.

The checkpoints use the official tensor names and config.json keys, stored as safetensors or torch `.bin`,
single or sharded with an index, in any storage dtype: the same files a user downloads, only small.
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import save_file

TINY_SP_VOCAB = 400  # 256 byte-fallback pieces + characters + a few words
_WORDS = (
    "the model reads tokens and writes text attention heads share keys values cache decode prefill "
    "sampling greedy beam search tool call observation user assistant system python code json"
).split()
_HANZI = "你好世界中文测试模型注意力缓存解码生成工具调用代码观察用户助手系统"


def train_tiny_sentencepiece(path: Path) -> Path:
    """A byte-fallback SentencePiece model (unk 0, bos 1, eos 2, like ChatGLM's) trained on made-up text."""
    rng = random.Random(0)
    lines = [
        " ".join(rng.choice(_WORDS) for _ in range(12)) + " " + "".join(rng.choice(_HANZI) for _ in range(8))
        for _ in range(400)
    ]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=TINY_SP_VOCAB,
        byte_fallback=True,
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
        # Like ChatGLM's: no normalization, whitespace kept as is, so "\n" survives (as the <0x0A> byte piece).
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
    )
    path.write_bytes(model.getvalue())
    return path


def tiny_hf_config(**overrides) -> dict:
    """An official-style ChatGLM3 config.json dict for a 2-layer model with grouped-query attention."""
    config = {
        "_name_or_path": "THUDM/chatglm3-6b",
        "architectures": ["ChatGLMForConditionalGeneration"],
        "model_type": "chatglm",
        "add_bias_linear": False,
        "add_qkv_bias": True,
        "apply_query_key_layer_scaling": True,
        "apply_residual_connection_post_layernorm": False,
        "ffn_hidden_size": 48,
        "hidden_size": 32,
        "kv_channels": 8,
        "layernorm_epsilon": 1e-5,
        "multi_query_attention": True,
        "multi_query_group_num": 2,
        "num_attention_heads": 4,
        "num_layers": 2,
        "original_rope": True,
        "padded_vocab_size": 416,
        "post_layer_norm": True,
        "pre_seq_len": None,
        "quantization_bit": 0,
        "rmsnorm": True,
        "seq_length": 64,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    config.update(overrides)
    return config


def random_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float32 weights under the official names, large enough that logits differ clearly between tokens."""
    generator = torch.Generator().manual_seed(seed)
    hidden, ffn, vocab = config["hidden_size"], config["ffn_hidden_size"], config["padded_vocab_size"]
    heads, head_dim = config["num_attention_heads"], config["kv_channels"]
    groups = config["multi_query_group_num"] if config["multi_query_attention"] else heads
    qkv = (heads + 2 * groups) * head_dim

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    state = {"transformer.embedding.word_embeddings.weight": randn(vocab, hidden)}
    for n in range(config["num_layers"]):
        prefix = f"transformer.encoder.layers.{n}."
        state[prefix + "input_layernorm.weight"] = 1 + randn(hidden, scale=0.1)
        state[prefix + "self_attention.query_key_value.weight"] = randn(qkv, hidden, scale=hidden**-0.5)
        if config["add_qkv_bias"]:
            state[prefix + "self_attention.query_key_value.bias"] = randn(qkv, scale=0.1)
        state[prefix + "self_attention.dense.weight"] = randn(hidden, heads * head_dim, scale=hidden**-0.5)
        state[prefix + "post_attention_layernorm.weight"] = 1 + randn(hidden, scale=0.1)
        state[prefix + "mlp.dense_h_to_4h.weight"] = randn(2 * ffn, hidden, scale=hidden**-0.5)
        state[prefix + "mlp.dense_4h_to_h.weight"] = randn(hidden, ffn, scale=ffn**-0.5)
    state["transformer.encoder.final_layernorm.weight"] = 1 + randn(hidden, scale=0.1)
    state["transformer.output_layer.weight"] = randn(vocab, hidden, scale=0.5)
    state["transformer.rotary_pos_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, head_dim // 2, 2) / (head_dim // 2))
    return state


def write_weights(folder: Path, state: dict[str, torch.Tensor], fmt: str, shards: int, dtype: torch.dtype) -> None:
    """Store `state` the way Hugging Face does: one file, or `shards` files plus an index json."""
    stored = {name: tensor.to(dtype).contiguous() for name, tensor in state.items()}
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    names = list(stored)
    groups = [names[i::shards] for i in range(shards)]
    weight_map = {}
    for i, group in enumerate(groups, start=1):
        filename = f"{stem}.{suffix}" if shards == 1 else f"{stem}-{i:05d}-of-{shards:05d}.{suffix}"
        part = {name: stored[name] for name in group}
        if fmt == "safetensors":
            save_file(part, str(folder / filename), metadata={"format": "pt"})
        else:
            torch.save(part, folder / filename)
        weight_map.update(dict.fromkeys(group, filename))
    if shards > 1:
        index = {"metadata": {"total_size": sum(t.nbytes for t in stored.values())}, "weight_map": weight_map}
        (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps(index, indent=2))


def write_checkpoint(
    folder: Path,
    tokenizer_file: Path,
    fmt: str = "safetensors",
    shards: int = 1,
    dtype: torch.dtype = torch.float16,
    seed: int = 0,
    **config_overrides,
) -> Path:
    """A complete model folder (config.json, tokenizer.model, weights) holding a random tiny ChatGLM."""
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_hf_config(**config_overrides)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer.model").write_bytes(tokenizer_file.read_bytes())
    write_weights(folder, random_state_dict(config, seed), fmt, shards, dtype)
    return folder
