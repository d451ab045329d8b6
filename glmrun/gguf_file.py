"""GGUF files (llama.cpp's format), read with the `gguf` package (llama.cpp's own Python reader).

`GGUFFile` opens a file memory-mapped, gives its metadata as plain Python values, and yields its tensors
dequantized to float32 torch tensors in PyTorch's layout, one at a time. Supported tensor types are listed
in SUPPORTED_TYPES; anything else, a bad magic number or a truncated file is a clear GlmrunError. It does not
know tensor names or model architectures (that is weights.py and config.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from glmrun.errors import GlmrunError

Q = gguf.GGMLQuantizationType
SUPPORTED_TYPES = {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K}


class GGUFFile:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise GlmrunError(f"GGUF file {self.path} does not exist")
        try:
            self.reader = gguf.GGUFReader(self.path)
        except (ValueError, OSError, IndexError, KeyError, TypeError, NotImplementedError) as bad:
            raise GlmrunError(f"{self.path} is not a readable GGUF file (corrupt or truncated?): {bad}") from None
        for tensor in self.reader.tensors:
            if tensor.tensor_type not in SUPPORTED_TYPES:
                supported = ", ".join(sorted(kind.name for kind in SUPPORTED_TYPES))
                kind = tensor.tensor_type.name
                raise GlmrunError(f"{self.path.name}: tensor {tensor.name} has type {kind}; glmrun reads {supported}")

    def metadata(self) -> dict[str, Any]:
        """Every key-value field as a Python value (strings, numbers, lists)."""
        values = {}
        for name, field in self.reader.fields.items():
            try:
                values[name] = field.contents()
            except (ValueError, IndexError, UnicodeDecodeError) as bad:
                raise GlmrunError(f"{self.path.name}: metadata field {name} is unreadable: {bad}") from None
        return values

    def tensor_names(self) -> list[str]:
        return [tensor.name for tensor in self.reader.tensors]

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, float32 tensor) per tensor, in PyTorch's layout (GGUF lists dimensions innermost first)."""
        for tensor in self.reader.tensors:
            shape = tuple(int(size) for size in reversed(tensor.shape.tolist()))
            data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            # A copy: unquantized tensors are views of the read-only file mapping, which must never be written.
            yield tensor.name, torch.from_numpy(np.array(data, dtype=np.float32).reshape(shape))
