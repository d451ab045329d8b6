"""Shared fixtures: where ../shared is, golden model folders, and tiny random checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny import train_tiny_sentencepiece, write_checkpoint

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GLMRUN_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A file under ../shared (or $GLMRUN_SHARED); skips the test, saying why, when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the shared assets (set GLMRUN_SHARED to their folder)")
    return path


def golden_model_folder(case: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The golden checkpoint with the real tokenizer.model beside it, as a model folder of links."""
    source = shared_path("golden", case)
    tokenizer = shared_path("assets", "chatglm", "tokenizer.model")
    folder = tmp_path_factory.mktemp(case)
    for item in source.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "tokenizer.model").symlink_to(tokenizer)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_sentencepiece(tmp_path_factory.mktemp("sp") / "tokenizer.model")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_file: Path) -> Path:
    """A tiny random ChatGLM3 checkpoint (safetensors, fp16, 2 KV groups), shared by read-only tests."""
    return write_checkpoint(tmp_path_factory.mktemp("tiny") / "model", tiny_tokenizer_file)


@pytest.fixture
def make_checkpoint(tmp_path: Path, tiny_tokenizer_file: Path):
    """Factory: make_checkpoint(fmt=..., shards=..., dtype=..., **config overrides) -> model folder."""
    counter = iter(range(1000))

    def make(**kwargs) -> Path:
        return write_checkpoint(tmp_path / f"model{next(counter)}", tiny_tokenizer_file, **kwargs)

    return make
