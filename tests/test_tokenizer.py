"""The ChatGLM tokenizer against the official token ids, and the streaming detokenizer's guarantees."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmrun.errors import GlmrunError
from glmrun.tokenizer import ChatGLMTokenizer, IncrementalDetokenizer
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def golden():
    return json.loads(shared_path("golden", "tokenizer_public.json").read_text())


@pytest.fixture(scope="module")
def real_tokenizer():
    return ChatGLMTokenizer(shared_path("assets", "chatglm", "tokenizer.model"), "chatglm3")


def test_encode_and_decode_equal_official(golden, real_tokenizer):
    for case in golden["strings"]:
        assert real_tokenizer.encode(case["text"], add_special_tokens=False) == case["sp_encode"], case["text"]
        assert real_tokenizer.encode(case["text"], add_special_tokens=True) == case["hf_encode"], case["text"]
        assert real_tokenizer.decode(case["sp_encode"]) == case["decode_sp"], case["text"]


def test_special_token_ids_equal_official(golden, real_tokenizer):
    assert real_tokenizer.special_tokens == golden["specials3"]
    assert real_tokenizer.vocab_size == 64798
    assert real_tokenizer.stop_token_ids == [2, 64795, 64797]


def test_chatglm2_has_only_the_glm_special_tokens():
    tokenizer = ChatGLMTokenizer(shared_path("assets", "chatglm", "tokenizer.model"), "chatglm2")
    assert tokenizer.vocab_size == 64794
    assert tokenizer.special_tokens["eop"] == 64793
    assert "<|user|>" not in tokenizer.special_tokens
    assert tokenizer.stop_token_ids == [2]


def test_decode_renders_special_tokens_like_official(golden, real_tokenizer):
    for chat in golden["chats3"]:
        assert real_tokenizer.decode(chat["input_ids"]) == chat["decoded"]


def test_text_that_looks_special_stays_ordinary(real_tokenizer):
    ids = real_tokenizer.encode("<|user|>", add_special_tokens=False)
    assert real_tokenizer.special_tokens["<|user|>"] not in ids
    assert real_tokenizer.decode(ids) == "<|user|>"


def test_ids_outside_the_vocabulary_are_refused(real_tokenizer):
    with pytest.raises(GlmrunError, match="outside the vocabulary"):
        real_tokenizer.decode([64900])


def test_missing_or_wrong_tokenizer_file(tmp_path):
    with pytest.raises(GlmrunError, match="tokenizer.model"):
        ChatGLMTokenizer.from_folder(tmp_path, "chatglm3")
    (tmp_path / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(GlmrunError, match="not a SentencePiece model"):
        ChatGLMTokenizer.from_folder(tmp_path, "chatglm3")


def stream(tokenizer: ChatGLMTokenizer, ids: list[int]) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.add(token_id) for token_id in ids]
    return [*deltas, detokenizer.flush()]


def test_stream_never_splits_a_character(real_tokenizer):
    ids = real_tokenizer.encode("a🙂b中文𝄞!", add_special_tokens=False)  # 𝄞 is four byte-fallback pieces
    deltas = stream(real_tokenizer, ids)
    assert "".join(deltas) == "a🙂b中文𝄞!"
    assert all("\ufffd" not in delta for delta in deltas)
    assert "𝄞" in deltas  # emitted whole, in one piece, once its last byte arrived


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 64797), max_size=30))
def test_stream_concatenates_to_decode(real_tokenizer, ids):
    assert "".join(stream(real_tokenizer, ids)) == real_tokenizer.decode(ids)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_stream_of_encoded_text_is_the_text(real_tokenizer, text):
    ids = real_tokenizer.encode(text, add_special_tokens=False)
    deltas = stream(real_tokenizer, ids)
    assert "".join(deltas) == real_tokenizer.decode(ids)
    if "\ufffd" not in text:
        assert all("\ufffd" not in delta for delta in deltas)
