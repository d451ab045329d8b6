"""Show what each decoding control does, on a real model, for one prompt.

1. One step: the next-token distribution after each processor, applied cumulatively in glmrun's order
   (penalties, temperature, top-k, top-p, min-p), drawn as a PNG of bar charts (the 20 likeliest tokens).
2. Whole answers: greedy, sampling at several temperatures, top-k, top-p, min-p and beam search, side by
   side for the same prompt, printed as a Markdown table and written as JSON.

    python examples/explain_decoding.py MODEL --prompt "What is attention?" --out docs/img/decoding.png

It uses glmrun's own processor functions, so the picture is exactly what the engine does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from glmrun import LLM, SamplingParams  # noqa: E402
from glmrun.sampling import min_p_filter, top_k_filter, top_p_filter  # noqa: E402

SHOWN = 20  # tokens per bar chart


def token_label(llm: LLM, token_id: int) -> str:
    """A piece as plain ASCII for the plot's default font: '▁' as '_', other non-ASCII as escapes."""
    piece = llm.tokenizer.id_to_piece(token_id).replace("\u2581", "_")
    return piece.encode("ascii", "backslashreplace").decode()


def processor_stages(logits: torch.Tensor, args: argparse.Namespace) -> list[tuple[str, torch.Tensor]]:
    """The distribution after each processor, each stage applied on top of the previous one."""
    stages = [("model (temperature 1)", logits)]
    stages.append((f"temperature {args.temperature}", stages[-1][1] / args.temperature))
    stages.append((f"+ top-k {args.top_k}", top_k_filter(stages[-1][1], args.top_k)))
    stages.append((f"+ top-p {args.top_p}", top_p_filter(stages[-1][1], args.top_p)))
    stages.append((f"+ min-p {args.min_p}", min_p_filter(stages[-1][1], args.min_p)))
    return [(name, stage.softmax(dim=-1)[0]) for name, stage in stages]


def plot_stages(llm: LLM, stages: list[tuple[str, torch.Tensor]], prompt: str, out: Path) -> None:
    shown = stages[0][1].topk(SHOWN).indices  # the same tokens in every panel, likeliest first
    figure, axes = plt.subplots(len(stages), 1, figsize=(11, 2.3 * len(stages)), sharex=True)
    for axis, (name, probs) in zip(axes, stages):
        values = probs[shown]
        kept = int((probs > 0).sum())
        axis.bar(range(SHOWN), values, color=["tab:blue" if v > 0 else "lightgray" for v in values])
        axis.set_title(f"{name}: {kept} tokens can still be drawn; top token p = {probs.max():.3f}", fontsize=10)
        axis.set_ylabel("probability")
    axes[-1].set_xticks(range(SHOWN), [token_label(llm, int(t)) for t in shown], rotation=60, ha="right", fontsize=8)
    figure.suptitle(f"Next-token distribution after each processor (prompt: {prompt!r})", fontsize=11)
    figure.tight_layout()
    figure.savefig(out, dpi=90)


def strategies(args: argparse.Namespace) -> dict[str, SamplingParams]:
    common = {"max_tokens": args.max_tokens}
    sampled = {"seed": args.seed, **common}
    return {
        "greedy": SamplingParams(temperature=0, **common),
        **{f"sampling T={t}": SamplingParams(temperature=t, **sampled) for t in (0.3, 0.7, 1.0, 1.5)},
        "top-k 20, T=1": SamplingParams(temperature=1.0, top_k=20, **sampled),
        "top-p 0.8, T=0.8 (ChatGLM default)": SamplingParams(temperature=0.8, top_p=0.8, **sampled),
        "min-p 0.1, T=1": SamplingParams(temperature=1.0, min_p=0.1, **sampled),
        "beam search, 3 beams": SamplingParams(temperature=0, num_beams=3, **common),
        "beam search, 5 beams": SamplingParams(temperature=0, num_beams=5, **common),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--min-p", type=float, default=0.2)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", type=Path, default=Path("decoding.png"), help="PNG path; JSON goes beside it")
    args = parser.parse_args()

    llm = LLM(args.model, dtype=args.dtype)
    prompt_ids = llm.tokenizer.encode(args.prompt)
    logits = llm.logits(prompt_ids)[-1:, : llm.tokenizer.vocab_size]  # (1, vocab): padding rows left out
    stages = processor_stages(logits, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_stages(llm, stages, args.prompt, args.out)

    results = {}
    print(f"Prompt: {args.prompt!r} ({len(prompt_ids)} tokens), {args.max_tokens} new tokens at most\n")
    print("| strategy | output | finish |\n| --- | --- | --- |")
    for name, params in strategies(args).items():
        out = llm.generate(prompt_ids, params)
        results[name] = {"text": out.text, "token_ids": out.token_ids, "finish_reason": out.finish_reason}
        shown = out.text.replace("|", "\\|").replace("\n", "\\n")
        print(f"| {name} | {shown} | {out.finish_reason} |")
    stage_summary = {name: {"drawable_tokens": int((p > 0).sum()), "top_p": float(p.max())} for name, p in stages}
    args.out.with_suffix(".json").write_text(
        json.dumps({"prompt": args.prompt, "stages": stage_summary, "outputs": results}, ensure_ascii=False, indent=1)
    )
    print(f"\nplot: {args.out}\nJSON: {args.out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
