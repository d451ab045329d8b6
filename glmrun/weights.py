"""Checkpoint files -> tensors named the way glmrun's model names them, in the compute dtype.

Reads Hugging Face folders (`model.safetensors` or `pytorch_model.bin`, single or sharded through their
`*.index.json`) and takes tensors from GGUF files (gguf_file.py). `.bin` files are opened with
`torch.load(weights_only=True, mmap=True)`, so no pickle code runs and no file is read twice; each tensor is
converted to the compute dtype as it arrives, so the peak stays near the size of the converted weights.
Names are translated by the tables below (data, not code), one per architecture and file layout. It does not
build the model, and never imports the remote-code `.py` files of a checkpoint.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from tqdm import tqdm

from glmrun.errors import GlmrunError

# Stored tensor name -> glmrun module name; {layer} is the layer index. A (name, part) target means the
# stored tensor is one part of a fused glmrun weight: the parts are concatenated in part order along rows.
CHATGLM_WEIGHT_NAMES = {
    "transformer.embedding.word_embeddings.weight": "embed.weight",
    "transformer.encoder.layers.{layer}.input_layernorm.weight": "layers.{layer}.attention_norm.weight",
    "transformer.encoder.layers.{layer}.self_attention.query_key_value.weight": "layers.{layer}.attention.qkv.weight",
    "transformer.encoder.layers.{layer}.self_attention.query_key_value.bias": "layers.{layer}.attention.qkv.bias",
    "transformer.encoder.layers.{layer}.self_attention.dense.weight": "layers.{layer}.attention.out.weight",
    "transformer.encoder.layers.{layer}.self_attention.dense.bias": "layers.{layer}.attention.out.bias",
    "transformer.encoder.layers.{layer}.post_attention_layernorm.weight": "layers.{layer}.mlp_norm.weight",
    "transformer.encoder.layers.{layer}.mlp.dense_h_to_4h.weight": "layers.{layer}.mlp.gate_up.weight",
    "transformer.encoder.layers.{layer}.mlp.dense_h_to_4h.bias": "layers.{layer}.mlp.gate_up.bias",
    "transformer.encoder.layers.{layer}.mlp.dense_4h_to_h.weight": "layers.{layer}.mlp.down.weight",
    "transformer.encoder.layers.{layer}.mlp.dense_4h_to_h.bias": "layers.{layer}.mlp.down.bias",
    "transformer.encoder.final_layernorm.weight": "norm.weight",
    "transformer.output_layer.weight": "lm_head.weight",
}
HF_LLAMA_WEIGHT_NAMES = {
    "model.embed_tokens.weight": "embed.weight",
    "model.layers.{layer}.input_layernorm.weight": "layers.{layer}.attention_norm.weight",
    "model.layers.{layer}.self_attn.q_proj.weight": ("layers.{layer}.attention.qkv.weight", 0),
    "model.layers.{layer}.self_attn.k_proj.weight": ("layers.{layer}.attention.qkv.weight", 1),
    "model.layers.{layer}.self_attn.v_proj.weight": ("layers.{layer}.attention.qkv.weight", 2),
    "model.layers.{layer}.self_attn.q_proj.bias": ("layers.{layer}.attention.qkv.bias", 0),
    "model.layers.{layer}.self_attn.k_proj.bias": ("layers.{layer}.attention.qkv.bias", 1),
    "model.layers.{layer}.self_attn.v_proj.bias": ("layers.{layer}.attention.qkv.bias", 2),
    "model.layers.{layer}.self_attn.o_proj.weight": "layers.{layer}.attention.out.weight",
    "model.layers.{layer}.post_attention_layernorm.weight": "layers.{layer}.mlp_norm.weight",
    "model.layers.{layer}.mlp.gate_proj.weight": ("layers.{layer}.mlp.gate_up.weight", 0),
    "model.layers.{layer}.mlp.up_proj.weight": ("layers.{layer}.mlp.gate_up.weight", 1),
    "model.layers.{layer}.mlp.down_proj.weight": "layers.{layer}.mlp.down.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
}
GGUF_LLAMA_WEIGHT_NAMES = {
    "token_embd.weight": "embed.weight",
    "blk.{layer}.attn_norm.weight": "layers.{layer}.attention_norm.weight",
    "blk.{layer}.attn_q.weight": ("layers.{layer}.attention.qkv.weight", 0),
    "blk.{layer}.attn_k.weight": ("layers.{layer}.attention.qkv.weight", 1),
    "blk.{layer}.attn_v.weight": ("layers.{layer}.attention.qkv.weight", 2),
    "blk.{layer}.attn_q.bias": ("layers.{layer}.attention.qkv.bias", 0),
    "blk.{layer}.attn_k.bias": ("layers.{layer}.attention.qkv.bias", 1),
    "blk.{layer}.attn_v.bias": ("layers.{layer}.attention.qkv.bias", 2),
    "blk.{layer}.attn_output.weight": "layers.{layer}.attention.out.weight",
    "blk.{layer}.ffn_norm.weight": "layers.{layer}.mlp_norm.weight",
    "blk.{layer}.ffn_gate.weight": ("layers.{layer}.mlp.gate_up.weight", 0),
    "blk.{layer}.ffn_up.weight": ("layers.{layer}.mlp.gate_up.weight", 1),
    "blk.{layer}.ffn_down.weight": "layers.{layer}.mlp.down.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}
GGUF_CHATGLM_WEIGHT_NAMES = {  # llama.cpp's chatglm architecture keeps ChatGLM's fused tensors
    "token_embd.weight": "embed.weight",
    "blk.{layer}.attn_norm.weight": "layers.{layer}.attention_norm.weight",
    "blk.{layer}.attn_qkv.weight": "layers.{layer}.attention.qkv.weight",
    "blk.{layer}.attn_qkv.bias": "layers.{layer}.attention.qkv.bias",
    "blk.{layer}.attn_output.weight": "layers.{layer}.attention.out.weight",
    "blk.{layer}.ffn_norm.weight": "layers.{layer}.mlp_norm.weight",
    "blk.{layer}.ffn_up.weight": "layers.{layer}.mlp.gate_up.weight",
    "blk.{layer}.ffn_down.weight": "layers.{layer}.mlp.down.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}
# Stored but derived from the config instead (the rotary frequencies).
IGNORED_WEIGHTS = ("transformer.rotary_pos_emb.inv_freq", "model.layers.{layer}.self_attn.rotary_emb.inv_freq")

# (index file, single file) per format, in order of preference.
_LAYOUTS = [
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
]
Target = tuple[str, int]  # (glmrun name, part index)


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{layer}"), r"(?P<layer>\d+)"))


class NameTable:
    """One checkpoint layout's names, compiled: stored name -> (glmrun name, part), and how many parts each has."""

    def __init__(self, table: dict[str, str | Target]) -> None:
        targets = [(source, target if isinstance(target, tuple) else (target, 0)) for source, target in table.items()]
        self.rules = [(_pattern(source), target) for source, target in targets]
        self.ignored = [_pattern(name) for name in IGNORED_WEIGHTS]
        self.parts: dict[str, int] = {}  # glmrun name template -> number of stored parts
        self.sources: dict[str, str] = {}  # glmrun name template -> stored name template (of part 0)
        for source, (name, part) in targets:
            self.parts[name] = max(self.parts.get(name, 0), part + 1)
            if part == 0:
                self.sources[name] = source

    def translate(self, name: str) -> Target | None:
        """(glmrun name with the layer filled in, part); None for ignored tensors; GlmrunError if unknown."""
        if any(pattern.fullmatch(name) for pattern in self.ignored):
            return None
        for pattern, (target, part) in self.rules:
            match = pattern.fullmatch(name)
            if match:
                return target.format(**match.groupdict()), part
        hint = " (P-tuning v2 prefix encoders are not supported)" if "prefix_encoder" in name else ""
        raise GlmrunError(f"unexpected tensor {name!r} in the checkpoint: not a weight of this architecture{hint}")

    def part_count(self, name: str) -> int:
        return self.parts[re.sub(r"\.\d+\.", ".{layer}.", name, count=1)]

    def source_name(self, name: str) -> str:
        """The stored name behind a glmrun name, for error messages (the first part's, for fused weights)."""
        layer = re.search(r"\.(\d+)\.", name)
        template = self.sources[re.sub(r"\.\d+\.", ".{layer}.", name, count=1)]
        return template.format(layer=layer.group(1)) if layer else template


TABLES = {
    ("chatglm", "hf"): NameTable(CHATGLM_WEIGHT_NAMES),
    ("llama", "hf"): NameTable(HF_LLAMA_WEIGHT_NAMES),
    ("llama", "gguf"): NameTable(GGUF_LLAMA_WEIGHT_NAMES),
    ("chatglm", "gguf"): NameTable(GGUF_CHATGLM_WEIGHT_NAMES),
}


def translate_name(name: str) -> str | None:
    """glmrun's name for an official ChatGLM tensor; None if ignored; GlmrunError if unknown."""
    target = TABLES["chatglm", "hf"].translate(name)
    return None if target is None else target[0]


def checkpoint_files(folder: Path) -> list[Path]:
    """The weight files of a model folder, shards in index order; GlmrunError if any is missing."""
    for index_name, single_name in _LAYOUTS:
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as bad:
                raise GlmrunError(f"cannot read the shard list {index}: {bad!r}") from None
            missing = [shard for shard in shards if not (folder / shard).is_file()]
            if missing:
                raise GlmrunError(
                    f"{folder} lacks {len(missing)} weight shard(s) listed in {index_name}, e.g. {missing[0]} "
                    "(an unfinished download?)"
                )
            return [folder / shard for shard in shards]
        if (folder / single_name).is_file():
            return [folder / single_name]
    raise GlmrunError(
        f"no weights in {folder}: expected model.safetensors or pytorch_model.bin (or their sharded *.index.json)"
    )


def read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor of one weight file, as stored; GlmrunError if it is not readable."""
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as file:
                for name in file.keys():
                    yield name, file.get_tensor(name)
        except (SafetensorError, OSError) as bad:
            raise GlmrunError(f"cannot read {path} (truncated or corrupt?): {bad}") from None
        return
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as bad:  # torch reports corrupt zips, pickles and truncation with many types
        raise GlmrunError(f"cannot read {path} (truncated or corrupt?): {str(bad).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise GlmrunError(f"{path} does not hold a state dict of tensors")
    yield from state.items()


def folder_tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a Hugging Face model folder, shard after shard."""
    for path in checkpoint_files(folder):
        yield from read_tensors(path)


def load_state(
    tensors: Iterator[tuple[str, torch.Tensor]],
    table: NameTable,
    expected_shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    progress: bool = True,
    tie_word_embeddings: bool = False,
) -> dict[str, torch.Tensor]:
    """Every tensor the model expects, renamed (parts fused), shape-checked and converted to `dtype`."""
    state: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[int, torch.Tensor]] = {}  # parts of fused weights seen so far
    with tqdm(total=len(expected_shapes), desc="loading weights", unit="tensor", disable=not progress) as bar:
        for stored_name, tensor in tensors:
            target = table.translate(stored_name)
            if target is None:
                continue
            name, part = target
            if name not in expected_shapes:
                raise GlmrunError(f"tensor {stored_name!r} does not fit the model's config (no {name})")
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise GlmrunError(f"tensor {stored_name!r} is not stored as floating point")
            parts = pending.setdefault(name, {})
            parts[part] = tensor
            if len(parts) < table.part_count(name):
                continue
            fused = parts[0] if len(parts) == 1 else torch.cat([parts[i] for i in range(len(parts))], dim=0)
            del pending[name]
            if tuple(fused.shape) != expected_shapes[name]:
                raise GlmrunError(
                    f"tensor {table.source_name(name)!r} has shape {list(fused.shape)}, but the config implies "
                    f"{list(expected_shapes[name])}"
                )
            # Converts (a new tensor) or keeps the tensor as read: safetensors hands over its own copy and
            # torch.load's mmap keeps file pages that the page cache can evict; never a second copy.
            state[name] = fused.to(device=device, dtype=dtype)
            del tensor, fused, parts
            bar.update()
        if tie_word_embeddings and "lm_head.weight" not in state and "embed.weight" in state:
            state["lm_head.weight"] = state["embed.weight"]  # one tensor, two uses
            bar.update()
    missing = [name for name in expected_shapes if name not in state]
    if missing:
        raise GlmrunError(
            f"the checkpoint lacks {len(missing)} tensor(s) the model needs, e.g. {table.source_name(missing[0])}"
        )
    return state
