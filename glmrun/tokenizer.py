"""The ChatGLM2/ChatGLM3 tokenizer (SentencePiece + appended special tokens) and a streaming detokenizer.

Reproduces the official `ChatGLMTokenizer`: special tokens get the ids right after the SentencePiece pieces,
ordinary text is encoded by SentencePiece as is (text that merely looks like `<|user|>` stays ordinary pieces),
and decoding renders special ids as their text. It does not build conversation prompts (that is `chat/`),
and it never imports the tokenizer `.py` shipped with a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import sentencepiece

from glmrun.errors import GlmrunError

# Appended after the SentencePiece vocabulary, in this order (ids 64789.. for the real tokenizer.model).
_GLM_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop"]
_ROLE_SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
SPECIAL_TOKENS = {"chatglm2": _GLM_SPECIALS, "chatglm3": _GLM_SPECIALS + _ROLE_SPECIALS}
# Generation ends at these tokens (ChatGLM3 also hands the turn back at <|user|> and <|observation|>).
STOP_TOKENS = {"chatglm2": ["</s>"], "chatglm3": ["</s>", "<|user|>", "<|observation|>"]}


class Tokenizer(Protocol):
    """What the engine needs of a tokenizer: this module's ChatGLMTokenizer, or bpe_tokenizer.BPETokenizer."""

    family: str
    vocab_size: int
    eos_id: int
    stop_token_ids: list[int]
    special_tokens: dict[str, int]
    chat_template: str | None  # a Jinja template shipped with the model; None where the format is code (ChatGLM)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def token_to_id(self, token: str) -> int: ...
    def id_to_piece(self, token_id: int) -> str: ...


class ChatGLMTokenizer:
    """Text <-> token ids exactly like the official ChatGLM2/ChatGLM3 tokenizer."""

    chat_template = None  # ChatGLM's conversation formats are code (chat/templates.py), not Jinja

    def __init__(self, model: str | Path | bytes, family: str) -> None:
        """`model`: a tokenizer.model file, or a serialized SentencePiece model (as gguf_vocab.py rebuilds one)."""
        self.sp = sentencepiece.SentencePieceProcessor()
        if isinstance(model, bytes):
            self.sp.LoadFromSerializedProto(model)
        else:
            model_file = Path(model)
            if not model_file.is_file():
                raise GlmrunError(f"tokenizer file {model_file} not found: copy tokenizer.model into the model folder")
            try:
                self.sp.Load(str(model_file))
            except (OSError, RuntimeError) as bad:
                raise GlmrunError(f"{model_file} is not a SentencePiece model: {bad}") from None
        self.family = family
        first_special = self.sp.vocab_size()
        self.special_tokens = {name: first_special + i for i, name in enumerate(SPECIAL_TOKENS[family])}
        self._special_text = {token_id: name for name, token_id in self.special_tokens.items()}
        self.vocab_size = first_special + len(self.special_tokens)
        self.bos_id, self.eos_id, self.pad_id = self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id()
        self.stop_token_ids = [self.token_to_id(name) for name in STOP_TOKENS[family]]

    @classmethod
    def from_folder(cls, folder: str | Path, family: str) -> ChatGLMTokenizer:
        return cls(Path(folder) / "tokenizer.model", family)

    def token_to_id(self, token: str) -> int:
        """Id of a special token (`[gMASK]`, `<|user|>`) or of one SentencePiece piece (`</s>`, `▁Hi`)."""
        if token in self.special_tokens:
            return self.special_tokens[token]
        token_id = self.sp.PieceToId(token)
        if token_id == self.sp.unk_id() and token != self.sp.IdToPiece(token_id):
            raise GlmrunError(f"{token!r} is not a token of this tokenizer")
        return token_id

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; `add_special_tokens` prepends `[gMASK] sop` like the official `encode`."""
        ids = self.sp.EncodeAsIds(text)
        if add_special_tokens:
            return [self.special_tokens["[gMASK]"], self.special_tokens["sop"], *ids]
        return ids

    def id_to_piece(self, token_id: int) -> str:
        """The piece text of one id (`▁Hi`, `<0x0A>`), or a special token's name."""
        if token_id in self._special_text:
            return self._special_text[token_id]
        if not 0 <= token_id < self.sp.vocab_size():
            raise GlmrunError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.sp.IdToPiece(token_id)

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, special tokens rendered as their names, as the official `decode` does.

        SentencePiece joins the pieces, so byte-fallback pieces combine into UTF-8 characters (an incomplete
        character becomes U+FFFD); a piece it does not know, such as a special token's name, stays as written.
        """
        return self.sp.DecodePieces([self.id_to_piece(token_id) for token_id in ids])


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas, never emitting half a UTF-8 character.

    Decodes only a short window of recent tokens per step: the text of `tokens[prefix:]` minus the text of
    `tokens[prefix:read]` is what the new tokens add (both windows start at the same token, so SentencePiece's
    handling of a leading space cancels out). A delta ending in U+FFFD waits for the bytes that complete it.
    The concatenated deltas plus `flush()` equal `tokenizer.decode(all ids)`.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self._prefix = 0  # window start: tokens before it are already emitted and never decoded again
        self._read = 0  # tokens before it have their text emitted

    def add(self, token_id: int) -> str:
        """Append one token; returns the text that became printable (possibly empty)."""
        self.tokens.append(token_id)
        emitted = self.tokenizer.decode(self.tokens[self._prefix : self._read])
        text = self.tokenizer.decode(self.tokens[self._prefix :])
        if text.endswith("\ufffd") or len(text) <= len(emitted):
            return ""
        self._prefix, self._read = self._read, len(self.tokens)
        return text[len(emitted) :]

    def flush(self) -> str:
        """Text still held back (an incomplete character at the very end); call once when generation ends."""
        emitted = self.tokenizer.decode(self.tokens[self._prefix : self._read])
        text = self.tokenizer.decode(self.tokens[self._prefix :])
        self._prefix, self._read = self._read, len(self.tokens)
        return text[len(emitted) :]
