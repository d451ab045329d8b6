"""ModelConfig: the engine's description of a model, and the ONLY place that knows checkpoint config keys.

`load_config(folder)` reads a Hugging Face folder (ChatGLM's `config.json`, and `tokenizer_config.json` for the
family; or a Llama/Qwen2 `config.json`), and `ModelConfig.from_gguf` a GGUF file's metadata, into a frozen
dataclass in the engine's own terms (layers, heads, KV heads, head size, rotary settings). It does not read
weights or tokenizers, and it never imports the remote-code `.py` files shipped with a model.

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

import gguf

from glmrun.errors import GlmrunError

Family = Literal["chatglm2", "chatglm3", "llama"]
FAMILIES: tuple[str, ...] = ("chatglm2", "chatglm3")  # the ChatGLM families a user may name (--family)
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
    architecture: str = "chatglm"  # "chatglm" or "llama" (Llama, Qwen2, SmolLM: same layers, other names)
    rotary_dim: int = 0  # leading dims of each head that rotate (ChatGLM: half of them; Llama: all); 0 = half
    rope_interleaved: bool = True  # pairs (0,1), (2,3)... (ChatGLM, llama.cpp's GGUF) or halves (HF Llama)
    tie_word_embeddings: bool = False  # the output layer reuses the embedding matrix

    def __post_init__(self) -> None:
        if not self.rotary_dim:
            object.__setattr__(self, "rotary_dim", self.head_dim // 2)

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

    @classmethod
    def from_hf_llama_config(cls, hf: dict[str, Any]) -> ModelConfig:
        """A Hugging Face `LlamaForCausalLM` / `Qwen2ForCausalLM` config.json (half-split rotary over whole heads)."""
        if hf.get("rope_scaling"):
            raise GlmrunError(f"unsupported config.json setting rope_scaling={hf['rope_scaling']!r}")
        try:
            heads = int(hf["num_attention_heads"])
            head_dim = int(hf.get("head_dim") or int(hf["hidden_size"]) // heads)
            config = cls(
                family="llama",
                num_layers=int(hf["num_hidden_layers"]),
                hidden_size=int(hf["hidden_size"]),
                num_heads=heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or heads),
                head_dim=head_dim,
                ffn_hidden_size=int(hf["intermediate_size"]),
                vocab_size=int(hf["vocab_size"]),
                max_seq_len=int(hf.get("max_position_embeddings", 2048)),
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                qkv_bias=bool(hf.get("attention_bias", hf.get("model_type") == "qwen2")),
                linear_bias=False,
                rope_base=float(hf.get("rope_theta", 10000.0)),
                rope_position_scale=1.0,
                checkpoint_dtype=str(hf.get("torch_dtype", "float32")),
                architecture="llama",
                rotary_dim=head_dim,
                rope_interleaved=False,
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            )
        except KeyError as missing:
            raise GlmrunError(f"config.json lacks the key {missing}, which every Llama config has") from None
        config._validate()
        return config

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], has_output_tensor: bool) -> ModelConfig:
        """A GGUF file's metadata (`general.architecture` llama, qwen2 or chatglm). For Llama, llama.cpp's converter
        permutes Q/K rows so that rotating interleaved pairs equals Hugging Face's half-split rotation: no
        un-permuting needed. ChatGLM's tensors are stored as they are."""
        arch = meta.get("general.architecture")
        if arch not in ("llama", "qwen2", "chatglm"):
            raise GlmrunError(f"unsupported GGUF architecture {arch!r}: glmrun runs llama, qwen2 and chatglm")

        def key(name: str, default: Any = None) -> Any:
            value = meta.get(f"{arch}.{name}", default)
            if value is None:
                raise GlmrunError(f"the GGUF file lacks {arch}.{name}")
            return value

        heads = int(key("attention.head_count"))
        head_dim = int(key("embedding_length")) // heads
        chatglm = arch == "chatglm"  # ChatGLM keeps its own rotary layout: half of each head, no permutation
        family = "llama"
        if chatglm:
            family = "chatglm3" if "<|user|>" in meta.get("tokenizer.ggml.tokens", []) else "chatglm2"
        config = cls(
            family=family,
            num_layers=int(key("block_count")),
            hidden_size=int(key("embedding_length")),
            num_heads=heads,
            num_kv_heads=int(key("attention.head_count_kv", heads)),
            head_dim=head_dim,
            ffn_hidden_size=int(key("feed_forward_length")),
            vocab_size=int(meta.get(f"{arch}.vocab_size") or len(meta["tokenizer.ggml.tokens"])),
            max_seq_len=int(key("context_length")),
            norm_eps=float(key("attention.layer_norm_rms_epsilon")),
            qkv_bias=chatglm or arch == "qwen2",
            linear_bias=False,
            rope_base=float(key("rope.freq_base", 10000.0)),  # the converter has already applied rope_ratio
            rope_position_scale=1.0,
            checkpoint_dtype=f"GGUF {gguf_file_type(meta.get('general.file_type'))}",
            architecture="chatglm" if chatglm else "llama",
            rotary_dim=int(key("rope.dimension_count", head_dim // 2 if chatglm else head_dim)),
            rope_interleaved=True,
            tie_word_embeddings=not has_output_tensor,
        )
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
        if self.rotary_dim % 2 or self.rotary_dim > self.head_dim:
            raise GlmrunError(f"config: {self.rotary_dim} rotary dims do not fit heads of {self.head_dim}")


def gguf_file_type(code: int | None) -> str:
    """llama.cpp's name for a GGUF file's storage type (e.g. 1 -> F16, 3 -> Q4_1)."""
    try:
        return gguf.LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return "unknown"


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
    if hf.get("model_type") in ("llama", "qwen2"):
        return ModelConfig.from_hf_llama_config(hf)
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
