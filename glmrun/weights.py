"""Checkpoint files -> tensors named the way glmrun's model names them, in the compute dtype.

Reads Hugging Face folders: `model.safetensors` or `pytorch_model.bin`, single or sharded through their
`*.index.json`. `.bin` files are opened with `torch.load(weights_only=True, mmap=True)`, so no pickle code
runs and no file is read twice; each tensor is converted to the compute dtype as it arrives, so the peak
stays near the size of the converted weights. Names are translated by the table below (data, not code).
It does not build the model, and never imports the remote-code `.py` files of a checkpoint.
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

# Official ChatGLM2/3 (and GLM-4) tensor names -> glmrun module names; {layer} is the layer index.
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
# Stored by some checkpoints but derived from the config instead (the rotary frequencies).
CHATGLM_IGNORED_WEIGHTS = {"transformer.rotary_pos_emb.inv_freq"}

# (index file, single file) per format, in order of preference.
_LAYOUTS = [
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
]


def _compile(table: dict[str, str]) -> list[tuple[re.Pattern[str], str]]:
    compiled = []
    for source, target in table.items():
        pattern = re.escape(source).replace(re.escape("{layer}"), r"(?P<layer>\d+)")
        compiled.append((re.compile(pattern), target))
    return compiled


_CHATGLM_PATTERNS = _compile(CHATGLM_WEIGHT_NAMES)
_CHATGLM_REVERSE = _compile({target: source for source, target in CHATGLM_WEIGHT_NAMES.items()})


def _rename(name: str, patterns: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, target in patterns:
        match = pattern.fullmatch(name)
        if match:
            return target.format(**match.groupdict())
    return None


def translate_name(name: str) -> str | None:
    """glmrun's name for a checkpoint tensor; None for tensors that are ignored; GlmrunError if unknown."""
    if name in CHATGLM_IGNORED_WEIGHTS:
        return None
    translated = _rename(name, _CHATGLM_PATTERNS)
    if translated is not None:
        return translated
    hint = " (P-tuning v2 prefix encoders are not supported)" if "prefix_encoder" in name else ""
    raise GlmrunError(f"unexpected tensor {name!r} in the checkpoint: not a ChatGLM weight{hint}")


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


def load_checkpoint(
    folder: str | Path,
    expected_shapes: dict[str, tuple[int, ...]],
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Every tensor the model expects, renamed, shape-checked and converted to `dtype` on `device`."""
    folder = Path(folder)
    files = checkpoint_files(folder)
    state: dict[str, torch.Tensor] = {}
    with tqdm(total=len(expected_shapes), desc="loading weights", unit="tensor", disable=not progress) as bar:
        for path in files:
            bar.set_postfix_str(path.name)
            for stored_name, tensor in read_tensors(path):
                name = translate_name(stored_name)
                if name is None:
                    continue
                if name not in expected_shapes:
                    raise GlmrunError(f"{path.name}: tensor {stored_name!r} does not fit config.json (no {name})")
                if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                    raise GlmrunError(f"{path.name}: tensor {stored_name!r} is not stored as floating point")
                if tuple(tensor.shape) != expected_shapes[name]:
                    raise GlmrunError(
                        f"{path.name}: tensor {stored_name!r} has shape {list(tensor.shape)}, but config.json "
                        f"implies {list(expected_shapes[name])}"
                    )
                # Converts (a new tensor) or keeps the tensor as read: safetensors hands over its own copy and
                # torch.load's mmap keeps file pages that the page cache can evict; never a second copy.
                state[name] = tensor.to(device=device, dtype=dtype)
                del tensor
                bar.update()
    missing = [name for name in expected_shapes if name not in state]
    if missing:
        example = _rename(missing[0], _CHATGLM_REVERSE)
        raise GlmrunError(f"the checkpoint in {folder} lacks {len(missing)} tensor(s) the model needs, e.g. {example}")
    return state
