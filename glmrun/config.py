"""ModelConfig: the engine's description of a model, and the ONLY place that knows checkpoint config keys.

`load_config(folder)` reads a Hugging Face ChatGLM folder (`config.json`, and `tokenizer_config.json` for the
family) into a frozen dataclass in the engine's own terms (layers, heads, KV heads, head size, rotary settings).
It does not read weights or tokenizers, and it never imports the remote-code `.py` files shipped with a model.

ChatGLM2 and ChatGLM3 share one architecture and one `config.json` schema, but differ in the tokenizer's
special tokens, the conversation format and what `rope_ratio` means. The family is detected from the model's
recorded name (`_name_or_path`) and can always be overridden; where it matters and cannot be detected, loading
fails and asks for it instead of guessing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from glmrun.errors import GlmrunError

Family = Literal["chatglm2", "chatglm3"]
FAMILIES: tuple[str, ...] = ("chatglm2", "chatglm3")
log = logging.getLogger(__name__)

# Switches of the official ChatGLMConfig that glmrun does not implement, with the value it requires.
_REQUIRED_SWITCHES: dict[str, Any] = {
    "rmsnorm": True,
    "post_layer_norm": True,
    "apply_residual_connection_post_layernorm": False,
    "original_rope": True,
    "pre_seq_len": None,  # P-tuning v2 prefix encoders
    "quantization_bit": 0,  # the official int4/int8 CUDA kernels
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a ChatGLM-style decoder, in the engine's terms."""

    family: Family
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int  # `multi_query_group_num`: query heads are split into this many groups sharing K/V
    head_dim: int  # `kv_channels`
    ffn_hidden_size: int
    vocab_size: int  # rows of the embedding and output layer (`padded_vocab_size`)
    max_seq_len: int  # `seq_length`: the context the model was trained for
    norm_eps: float
    qkv_bias: bool
    linear_bias: bool
    rope_base: float  # base of the rotary frequencies, rope_ratio already applied where it scales the base
    rope_position_scale: float  # positions are divided by this (ChatGLM2-32K's interpolation); 1 elsewhere
    checkpoint_dtype: str  # `torch_dtype` of the stored weights, e.g. "float16"

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head that are rotated: the first half (the rest passes through)."""
        return self.head_dim // 2

    @property
    def queries_per_kv_head(self) -> int:
        return self.num_heads // self.num_kv_heads

    @property
    def qkv_size(self) -> int:
        """Output rows of the fused query_key_value layer: all Q heads, then K and V of the KV heads."""
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    def kv_cache_bytes_per_token(self, dtype_bytes: int, num_kv_heads: int | None = None) -> int:
        """K and V for one token in every layer; `num_kv_heads` lets callers price full multi-head attention."""
        heads = self.num_kv_heads if num_kv_heads is None else num_kv_heads
        return 2 * self.num_layers * heads * self.head_dim * dtype_bytes

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], family: Family) -> ModelConfig:
        """Translate an official ChatGLM2/3 `config.json` dict; `family` decides what `rope_ratio` means."""
        if hf.get("model_type") != "chatglm":
            raise GlmrunError(
                f"unsupported model_type {hf.get('model_type')!r}: glmrun loads ChatGLM2/ChatGLM3 checkpoints "
                "(config.json with model_type 'chatglm')"
            )
        for key, required in _REQUIRED_SWITCHES.items():
            if hf.get(key) is not None and hf[key] != required:
                raise GlmrunError(f"unsupported config.json setting {key}={hf[key]!r} (glmrun needs {required!r})")
        try:
            num_heads = int(hf["num_attention_heads"])
            multi_query = bool(hf.get("multi_query_attention", False))
            rope_ratio = float(hf.get("rope_ratio", 1.0) or 1.0)
            config = cls(
                family=family,
                num_layers=int(hf["num_layers"]),
                hidden_size=int(hf["hidden_size"]),
                num_heads=num_heads,
                num_kv_heads=int(hf["multi_query_group_num"]) if multi_query else num_heads,
                head_dim=int(hf["kv_channels"]),
                ffn_hidden_size=int(hf["ffn_hidden_size"]),
                vocab_size=int(hf.get("padded_vocab_size") or hf["vocab_size"]),
                max_seq_len=int(hf["seq_length"]),
                norm_eps=float(hf["layernorm_epsilon"]),
                qkv_bias=bool(hf.get("add_qkv_bias", False)),
                linear_bias=bool(hf.get("add_bias_linear", False)),
                # ChatGLM3 and GLM-4 scale the base; ChatGLM2-32K interpolates positions instead.
                rope_base=10000.0 * (rope_ratio if family != "chatglm2" else 1.0),
                rope_position_scale=rope_ratio if family == "chatglm2" else 1.0,
                checkpoint_dtype=str(hf.get("torch_dtype", "float16")),
            )
        except KeyError as missing:
            raise GlmrunError(f"config.json lacks the key {missing}, which every ChatGLM config has") from None
        except (TypeError, ValueError) as bad:
            raise GlmrunError(f"config.json has a value of the wrong type: {bad}") from None
        config._validate()
        return config

    def _validate(self) -> None:
        if min(self.num_layers, self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim) <= 0:
            raise GlmrunError("config.json: layers, hidden size, heads, groups and kv_channels must be positive")
        if self.num_heads % self.num_kv_heads:
            raise GlmrunError(
                f"config.json: num_attention_heads {self.num_heads} is not a multiple of "
                f"multi_query_group_num {self.num_kv_heads}"
            )
        if self.head_dim % 4:
            raise GlmrunError(f"config.json: kv_channels {self.head_dim} must be a multiple of 4 (rotary pairs)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as bad:
        raise GlmrunError(f"cannot read {path}: {bad}") from None
    if not isinstance(data, dict):
        raise GlmrunError(f"{path} does not hold a JSON object")
    return data


def detect_family(folder: Path, hf: dict[str, Any]) -> Family | None:
    """ChatGLM2 or ChatGLM3 from the name the checkpoint records for itself; None when it says neither."""
    names = [str(hf.get("_name_or_path", ""))]
    tokenizer_config = folder / "tokenizer_config.json"
    if tokenizer_config.is_file():
        names.append(str(_read_json(tokenizer_config).get("name_or_path", "")))
    for name in names:
        for family in FAMILIES:
            if family in name.lower():
                return family  # type: ignore[return-value]
    return None


def load_config(folder: str | Path, family: str | None = None) -> ModelConfig:
    """Read `folder/config.json`; `family` ("chatglm2" | "chatglm3") overrides detection."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GlmrunError(f"model folder {folder} does not exist (give the folder holding config.json)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise GlmrunError(f"{folder} has no config.json: is it a Hugging Face ChatGLM model folder?")
    hf = _read_json(config_path)
    if family is not None and family not in FAMILIES:
        raise GlmrunError(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")
    chosen = family or detect_family(folder, hf)
    if chosen is None:
        if float(hf.get("rope_ratio", 1.0) or 1.0) != 1.0:
            raise GlmrunError(
                f"{config_path} sets rope_ratio, which means different things for ChatGLM2 and ChatGLM3, and the "
                "folder does not say which it is: pass family='chatglm2' or 'chatglm3' (CLI: --family)"
            )
        chosen = "chatglm3"
        log.warning("%s does not name its family; assuming chatglm3 (override with family=/--family)", folder)
    return ModelConfig.from_hf_config(hf, chosen)  # type: ignore[arg-type]
