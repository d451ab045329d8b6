"""glmrun: run ChatGLM-family language models exactly like the official implementation.

The public API is what this module exports; everything else is internal.
"""

from glmrun.engine import LLM, CompletionOutput, GenerationOutput, StreamPiece
from glmrun.errors import GlmrunError
from glmrun.generate import TokenLogprobs
from glmrun.sampling import SamplingParams

__all__ = [
    "LLM",
    "SamplingParams",
    "GenerationOutput",
    "CompletionOutput",
    "StreamPiece",
    "TokenLogprobs",
    "GlmrunError",
]
__version__ = "0.1.0"
