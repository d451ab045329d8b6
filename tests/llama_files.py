"""Tiny Llama-architecture checkpoints: a Hugging Face folder and GGUF files written with gguf's own writer,
holding the same random weights, plus a tiny byte-level BPE tokenizer trained with `tokenizers`."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Widths are multiples of 32, the block size of GGUF's quantized types.
CONFIG = {"hidden": 64, "layers": 2, "heads": 8, "kv_heads": 2, "ffn": 96, "context": 128, "theta": 10000.0}


def train_bpe() -> Tokenizer:
    """A byte-level BPE like GPT-2's, with ChatML's special tokens as ids 0..2."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    text = ["the capital of france is paris", "attention heads share keys and values", "hello world 123 你好"] * 50
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tokenizer.train_from_iterator(text, trainer)
    return tokenizer


def hf_weights(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    h, f = CONFIG["hidden"], CONFIG["ffn"]
    head_dim = h // CONFIG["heads"]
    kv = CONFIG["kv_heads"] * head_dim

    def randn(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    weights = {"model.embed_tokens.weight": randn(vocab, h, scale=1.0), "model.norm.weight": 1 + randn(h, scale=0.1)}
    for n in range(CONFIG["layers"]):
        p = f"model.layers.{n}."
        weights |= {
            p + "input_layernorm.weight": 1 + randn(h, scale=0.1),
            p + "self_attn.q_proj.weight": randn(h, h),
            p + "self_attn.k_proj.weight": randn(kv, h),
            p + "self_attn.v_proj.weight": randn(kv, h),
            p + "self_attn.o_proj.weight": randn(h, h),
            p + "post_attention_layernorm.weight": 1 + randn(h, scale=0.1),
            p + "mlp.gate_proj.weight": randn(f, h),
            p + "mlp.up_proj.weight": randn(f, h),
            p + "mlp.down_proj.weight": randn(h, f),
        }
    return weights  # tied embeddings: no lm_head.weight


def write_hf_folder(folder: Path, tokenizer: Tokenizer, weights: dict[str, torch.Tensor]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": CONFIG["hidden"],
        "num_hidden_layers": CONFIG["layers"], "num_attention_heads": CONFIG["heads"],
        "num_key_value_heads": CONFIG["kv_heads"], "intermediate_size": CONFIG["ffn"],
        "vocab_size": tokenizer.get_vocab_size(), "max_position_embeddings": CONFIG["context"],
        "rms_norm_eps": 1e-5, "rope_theta": CONFIG["theta"], "tie_word_embeddings": True, "torch_dtype": "float32",
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    save_file(weights, str(folder / "model.safetensors"))
    tokenizer.save(str(folder / "tokenizer.json"))
    settings = {"eos_token": "<|im_end|>", "bos_token": None, "chat_template": CHATML, "add_bos_token": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def permute_for_gguf(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """What llama.cpp's converter does to q/k rows: half-split rotary pairs become interleaved pairs."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}  # fmt: skip


def gguf_name(name: str) -> str:
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    layer, rest = name.removeprefix("model.layers.").split(".", 1)
    module = rest.rsplit(".", 1)[0]
    return f"blk.{layer}.{GGUF_NAMES[module]}.weight"


def write_gguf(path: Path, tokenizer: Tokenizer, weights: dict[str, torch.Tensor],
               kind: gguf.GGMLQuantizationType = gguf.GGMLQuantizationType.F32) -> Path:  # fmt: skip
    """A llama GGUF as llama.cpp's converter writes it; matrices stored as `kind`, norms as F32."""
    writer = gguf.GGUFWriter(str(path), "llama")
    head_dim = CONFIG["hidden"] // CONFIG["heads"]
    writer.add_block_count(CONFIG["layers"])
    writer.add_context_length(CONFIG["context"])
    writer.add_embedding_length(CONFIG["hidden"])
    writer.add_feed_forward_length(CONFIG["ffn"])
    writer.add_head_count(CONFIG["heads"])
    writer.add_head_count_kv(CONFIG["kv_heads"])
    writer.add_rope_freq_base(CONFIG["theta"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    vocab = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [" ".join(merge) for merge in json.loads(tokenizer.to_str())["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges(merges)
    writer.add_token_types([3 if token in SPECIALS else 1 for token in tokens])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML)
    for name, tensor in weights.items():
        array = tensor.numpy()
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = CONFIG["heads"] if "q_proj" in name else CONFIG["kv_heads"]
            array = permute_for_gguf(tensor, heads).numpy()
        if array.ndim == 2 and kind != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name(name), gguf.quants.quantize(array, kind), raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name(name), np.ascontiguousarray(array, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
