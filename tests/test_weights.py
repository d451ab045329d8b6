"""Checkpoint loading: every file layout and storage dtype round-trips; bad files get one clear line."""

from __future__ import annotations

import json

import pytest
import torch

from glmrun import LLM, GlmrunError
from glmrun.weights import translate_name
from tests.tiny import random_state_dict, tiny_hf_config, write_weights


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_loader_round_trips(make_checkpoint, fmt, shards, dtype):
    folder = make_checkpoint(fmt=fmt, shards=shards, dtype=dtype, seed=5)
    llm = LLM(folder, dtype="float32", progress=False)
    loaded = llm.model.state_dict()
    for name, tensor in random_state_dict(tiny_hf_config(), seed=5).items():
        ours = translate_name(name)
        if ours is not None:
            assert torch.equal(loaded[ours], tensor.to(dtype).float()), name


def test_remote_code_is_never_executed(make_checkpoint, tmp_path):
    folder = make_checkpoint()
    marker = tmp_path / "executed"
    for script in ("modeling_chatglm.py", "configuration_chatglm.py", "tokenization_chatglm.py"):
        (folder / script).write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    LLM(folder, progress=False).generate([1, 2, 3], None)
    assert not marker.exists()


def test_missing_folder(tmp_path):
    with pytest.raises(GlmrunError) as excinfo:
        LLM(tmp_path / "nowhere")
    assert_one_line_error(excinfo, "does not exist")


def test_missing_config(tmp_path):
    with pytest.raises(GlmrunError) as excinfo:
        LLM(tmp_path)
    assert_one_line_error(excinfo, "no config.json")


def test_unknown_model_type(make_checkpoint):
    folder = make_checkpoint(model_type="bert")
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "unsupported model_type 'bert'")


@pytest.mark.parametrize("switch,value", [("rmsnorm", False), ("pre_seq_len", 128), ("quantization_bit", 4)])
def test_unsupported_switch(make_checkpoint, switch, value):
    with pytest.raises(GlmrunError) as excinfo:
        LLM(make_checkpoint(**{switch: value}))
    assert_one_line_error(excinfo, switch)


def test_ambiguous_rope_ratio_asks_for_the_family(make_checkpoint):
    folder = make_checkpoint(_name_or_path="/home/me/finetuned", rope_ratio=16)
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "family")
    assert LLM(folder, family="chatglm2", progress=False).config.rope_position_scale == 16


def test_missing_shard(make_checkpoint):
    folder = make_checkpoint(shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "model-00002-of-00003.safetensors")


def test_no_weights(make_checkpoint):
    folder = make_checkpoint()
    (folder / "model.safetensors").unlink()
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "no weights")


@pytest.mark.parametrize("fmt,filename", [("safetensors", "model.safetensors"), ("bin", "pytorch_model.bin")])
@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weight_file(make_checkpoint, fmt, filename, damage):
    folder = make_checkpoint(fmt=fmt)
    path = folder / filename
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00garbage" * 100)
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, filename)


def test_tensor_with_the_wrong_shape(make_checkpoint):
    folder = make_checkpoint()
    config = json.loads((folder / "config.json").read_text())
    config["ffn_hidden_size"] = 64  # the stored MLP weights were made for 48
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "mlp.dense_", "has shape")


def test_unexpected_and_missing_tensors(make_checkpoint):
    folder = make_checkpoint(add_qkv_bias=False)  # config says no bias; write a checkpoint that has one
    write_weights(folder, random_state_dict(tiny_hf_config()), "safetensors", 1, torch.float16)
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "query_key_value.bias")
    state = random_state_dict(tiny_hf_config(add_qkv_bias=False))
    del state["transformer.output_layer.weight"]
    write_weights(folder, state, "safetensors", 1, torch.float16)
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "lacks 1 tensor", "transformer.output_layer.weight")


def test_prefix_encoder_is_named(make_checkpoint):
    with pytest.raises(GlmrunError, match="P-tuning"):
        translate_name("transformer.prefix_encoder.embedding.weight")


def test_missing_tokenizer(make_checkpoint):
    folder = make_checkpoint()
    (folder / "tokenizer.model").unlink()
    with pytest.raises(GlmrunError) as excinfo:
        LLM(folder)
    assert_one_line_error(excinfo, "tokenizer.model")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_weights_kept_in_the_stored_dtype_never_write_back(make_checkpoint, fmt):
    """Same-dtype loads keep the file's (private, copy-on-write) mapping: writes to a parameter stay in memory."""
    folder = make_checkpoint(fmt=fmt, dtype=torch.float16)
    path = next(p for p in folder.iterdir() if p.suffix in (".bin", ".safetensors"))
    before = path.read_bytes()
    llm = LLM(folder, dtype="float16", progress=False)
    with torch.no_grad():
        llm.model.lm_head.weight.fill_(7.0)
    del llm
    assert path.read_bytes() == before
