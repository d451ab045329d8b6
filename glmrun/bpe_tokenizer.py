"""Byte-level BPE tokenizers (GPT-2 style, as SmolLM, Llama 3 and Qwen2 use), built with the `tokenizers` library.

From a GGUF file the vocabulary, merges and special tokens come from its `tokenizer.ggml.*` metadata and the
pre-tokenizer (how text is split before BPE) from `tokenizer.ggml.pre`; from a Hugging Face folder,
`tokenizer.json` holds all of it. The interface is the ChatGLM tokenizer's (encode, decode, special tokens, stop
ids), plus the model's Jinja chat template. Special tokens typed in text are recognised as special, as Hugging
Face's tokenizers do. The BPE itself is the library's; nothing here re-implements it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from glmrun.errors import GlmrunError

CONTROL, USER_DEFINED = 3, 4  # llama.cpp's token types of special tokens


def _byte_level() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


# tokenizer.ggml.pre -> the pre-tokenizer of the model's own tokenizer.json (the ones tested against references).
PRE_TOKENIZERS = {
    "default": _byte_level,
    "gpt2": _byte_level,
    "smollm": lambda: pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _byte_level()]),
}


class BPETokenizer:
    family = "llama"

    def __init__(
        self,
        tokenizer: Tokenizer,
        bos_id: int | None,
        eos_id: int,
        add_bos: bool,
        chat_template: str | None,
        extra_stop_ids: tuple[int, ...] = (),
    ) -> None:
        self.tokenizer, self.bos_id, self.eos_id, self.add_bos = tokenizer, bos_id, eos_id, add_bos
        self.chat_template = chat_template
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.special_tokens = {
            token.content: token_id for token_id, token in tokenizer.get_added_tokens_decoder().items()
        }
        self.stop_token_ids = [eos_id, *(i for i in extra_stop_ids if i != eos_id)]

    @classmethod
    def from_gguf(cls, meta: dict[str, Any]) -> BPETokenizer:
        kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
        if kind != "gpt2":
            raise GlmrunError(f"unsupported GGUF tokenizer model {kind!r}: glmrun reads byte-level BPE ('gpt2')")
        if pre not in PRE_TOKENIZERS:
            raise GlmrunError(f"unsupported GGUF pre-tokenizer {pre!r}: glmrun knows {', '.join(PRE_TOKENIZERS)}")
        tokens = meta["tokenizer.ggml.tokens"]
        merges = [tuple(merge.split(" ", 1)) for merge in meta.get("tokenizer.ggml.merges", [])]
        tokenizer = Tokenizer(models.BPE(vocab={token: i for i, token in enumerate(tokens)}, merges=merges))
        tokenizer.pre_tokenizer = PRE_TOKENIZERS[pre]()
        tokenizer.decoder = decoders.ByteLevel()
        kinds = meta.get("tokenizer.ggml.token_type", [])
        tokenizer.add_special_tokens([
            AddedToken(token, special=True, normalized=False)
            for token, kind in zip(tokens, kinds) if kind in (CONTROL, USER_DEFINED)
        ])  # fmt: skip
        eot = meta.get("tokenizer.ggml.eot_token_id")
        return cls(
            tokenizer,
            bos_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_id=int(meta["tokenizer.ggml.eos_token_id"]),
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=meta.get("tokenizer.chat_template"),
            extra_stop_ids=() if eot is None else (int(eot),),
        )

    @classmethod
    def from_folder(cls, folder: Path) -> BPETokenizer:
        """A Hugging Face folder's tokenizer.json, with bos/eos and the chat template from tokenizer_config.json."""
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise GlmrunError(f"{folder} has no tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(path))
            settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except Exception as bad:  # the tokenizers library raises plain Exception for a bad file
            raise GlmrunError(f"cannot read the tokenizer in {folder}: {bad}") from None

        def token_id(key: str) -> int | None:
            token = settings.get(key)
            token = token.get("content") if isinstance(token, dict) else token
            return None if token is None else tokenizer.token_to_id(token)

        eos = token_id("eos_token")
        if eos is None:
            raise GlmrunError(f"{folder}/tokenizer_config.json names no eos_token")
        return cls(tokenizer, token_id("bos_token"), eos, bool(settings.get("add_bos_token", False)),
                   settings.get("chat_template"))  # fmt: skip

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            return [self.bos_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def token_to_id(self, token: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise GlmrunError(f"{token!r} is not a token of this tokenizer")
        return token_id

    def id_to_piece(self, token_id: int) -> str:
        piece = self.tokenizer.id_to_token(token_id)
        if piece is None:
            raise GlmrunError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return piece
