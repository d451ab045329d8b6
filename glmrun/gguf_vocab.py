"""ChatGLM's SentencePiece tokenizer, rebuilt from the vocabulary that llama.cpp's converter stores in a GGUF file.

llama.cpp writes ChatGLM2/3's tokenizer as `tokenizer.ggml.model` "llama" (SentencePiece) with every piece,
its score and its type, then ChatGLM's special tokens and `[PAD]` rows up to the padded vocabulary. Rebuilding
a SentencePiece model from those pieces, with the settings of ChatGLM's own tokenizer.model (BPE with byte
fallback, identity normalization, a dummy prefix, whitespace kept), gives the official tokenizer back, so
the ChatGLM tokenizer class serves GGUF files unchanged. It builds no other tokenizer.
"""

from __future__ import annotations

from typing import Any

from sentencepiece import sentencepiece_model_pb2 as sp_model

from glmrun.errors import GlmrunError

# llama.cpp renames SentencePiece's first three pieces; ChatGLM's tokenizer (and glmrun's stop tokens) use these.
_CONTROL_NAMES = {0: "<unk>", 1: "<s>", 2: "</s>"}
_TYPES = {1: sp_model.ModelProto.SentencePiece.NORMAL, 2: sp_model.ModelProto.SentencePiece.UNKNOWN,
          3: sp_model.ModelProto.SentencePiece.CONTROL, 6: sp_model.ModelProto.SentencePiece.BYTE}  # fmt: skip


def chatglm_sentencepiece(meta: dict[str, Any]) -> tuple[bytes, str]:
    """(serialized SentencePiece model, family) from a ChatGLM GGUF file's tokenizer metadata."""
    if meta.get("tokenizer.ggml.model") != "llama":
        raise GlmrunError("this ChatGLM GGUF file has no SentencePiece vocabulary (GLM-4's BPE is not supported)")
    tokens, scores, kinds = (
        meta["tokenizer.ggml.tokens"],
        meta["tokenizer.ggml.scores"],
        meta["tokenizer.ggml.token_type"],
    )
    if "[MASK]" not in tokens:
        raise GlmrunError("the GGUF vocabulary lacks ChatGLM's special tokens")
    pieces = tokens.index("[MASK]")  # the SentencePiece vocabulary ends where ChatGLM's specials begin
    model = sp_model.ModelProto()
    model.trainer_spec.model_type = sp_model.TrainerSpec.BPE
    model.trainer_spec.byte_fallback = True
    model.trainer_spec.unk_id, model.trainer_spec.bos_id, model.trainer_spec.eos_id, model.trainer_spec.pad_id = (
        0,
        1,
        2,
        -1,
    )
    model.normalizer_spec.name = "identity"
    model.normalizer_spec.add_dummy_prefix = True
    model.normalizer_spec.remove_extra_whitespaces = False
    for token_id in range(pieces):
        piece = model.pieces.add()
        piece.piece = _CONTROL_NAMES.get(token_id, tokens[token_id])
        piece.score = scores[token_id]
        piece.type = _TYPES.get(kinds[token_id], sp_model.ModelProto.SentencePiece.NORMAL)
    family = "chatglm3" if "<|user|>" in tokens else "chatglm2"
    return model.SerializeToString(), family
