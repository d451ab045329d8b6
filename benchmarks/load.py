"""Load-time and peak-memory benchmark for checkpoint loading (issue: core loader).

Writes a ~1 GB float16 ChatGLM-architecture checkpoint (real vocabulary size, 6 layers of a 2048-wide model,
3 shards) as safetensors and as torch .bin, then loads each with `glmrun.LLM` in a fresh process per run and
reports wall time and peak RSS against the size of the weights in the compute dtype. The page cache is warm
(the files were just written). Needs ../shared/assets/chatglm/tokenizer.model (or $GLMRUN_SHARED).

    python benchmarks/load.py [--runs 3] [--out benchmarks/results/load.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GLMRUN_SHARED", REPO.parent / "shared"))

CONFIG = {
    "_name_or_path": "THUDM/chatglm3-6b",
    "model_type": "chatglm",
    "num_layers": 6,
    "hidden_size": 2048,
    "num_attention_heads": 16,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "kv_channels": 128,
    "ffn_hidden_size": 5632,
    "padded_vocab_size": 65024,
    "seq_length": 8192,
    "layernorm_epsilon": 1e-5,
    "add_qkv_bias": True,
    "add_bias_linear": False,
    "rmsnorm": True,
    "post_layer_norm": True,
    "original_rope": True,
    "torch_dtype": "float16",
}

# Runs in a fresh interpreter: baseline RSS after imports, then the load, then the peak.
CHILD = """
import json, resource, sys, time
import glmrun
def rss_mib(field="VmRSS"):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024
baseline = rss_mib()
start = time.perf_counter()
llm = glmrun.LLM(sys.argv[1], dtype=sys.argv[2], progress=False)
seconds = time.perf_counter() - start
weights = sum(t.numel() * t.element_size() for t in llm.model.parameters()) / 2**20
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "baseline_mib": baseline, "peak_mib": peak, "after_mib": rss_mib(),
                  "after_anon_mib": rss_mib("RssAnon"), "after_file_mib": rss_mib("RssFile"), "weights_mib": weights}))
"""


def official_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    hidden, ffn, vocab = config["hidden_size"], config["ffn_hidden_size"], config["padded_vocab_size"]
    heads, groups, head_dim = config["num_attention_heads"], config["multi_query_group_num"], config["kv_channels"]
    qkv = (heads + 2 * groups) * head_dim
    shapes = {"transformer.embedding.word_embeddings.weight": (vocab, hidden)}
    for n in range(config["num_layers"]):
        prefix = f"transformer.encoder.layers.{n}."
        shapes |= {
            prefix + "input_layernorm.weight": (hidden,),
            prefix + "self_attention.query_key_value.weight": (qkv, hidden),
            prefix + "self_attention.query_key_value.bias": (qkv,),
            prefix + "self_attention.dense.weight": (hidden, heads * head_dim),
            prefix + "post_attention_layernorm.weight": (hidden,),
            prefix + "mlp.dense_h_to_4h.weight": (2 * ffn, hidden),
            prefix + "mlp.dense_4h_to_h.weight": (hidden, ffn),
        }
    shapes["transformer.encoder.final_layernorm.weight"] = (hidden,)
    shapes["transformer.output_layer.weight"] = (vocab, hidden)
    return shapes


def write_checkpoint(folder: Path, fmt: str, shards: int = 3) -> int:
    """Random float16 weights in the official layout; returns the bytes written."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(CONFIG))
    shutil.copy(SHARED / "assets" / "chatglm" / "tokenizer.model", folder / "tokenizer.model")
    names = list(official_shapes(CONFIG).items())
    stem, suffix = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    weight_map, total = {}, 0
    for i in range(shards):
        filename = f"{stem}-{i + 1:05d}-of-{shards:05d}.{suffix}"
        part = {name: torch.randn(shape, dtype=torch.float16) * 0.02 for name, shape in names[i::shards]}
        if fmt == "safetensors":
            save_file(part, str(folder / filename))
        else:
            torch.save(part, folder / filename)
        weight_map |= dict.fromkeys(part, filename)
        total += sum(t.nbytes for t in part.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps(index))
    return total


def measure(folder: Path, dtype: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(folder), dtype], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "load.json")
    args = parser.parse_args()
    if not (SHARED / "assets" / "chatglm" / "tokenizer.model").is_file():
        raise SystemExit(f"needs {SHARED}/assets/chatglm/tokenizer.model (set GLMRUN_SHARED)")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as workdir:
        for fmt in ("safetensors", "bin"):
            folder = Path(workdir) / fmt
            file_mib = write_checkpoint(folder, fmt) / 2**20
            print(f"wrote {file_mib:.0f} MiB of {fmt} shards", file=sys.stderr)
            for dtype in ("float16", "bfloat16", "float32"):
                runs = [measure(folder, dtype) for _ in range(args.runs)]
                peak = max(run["peak_mib"] for run in runs)
                baseline = statistics.median(run["baseline_mib"] for run in runs)
                weights = runs[0]["weights_mib"]
                rows.append(
                    {
                        "format": fmt,
                        "compute_dtype": dtype,
                        "file_mib": file_mib,
                        "weights_mib": weights,
                        "seconds_median": statistics.median(run["seconds"] for run in runs),
                        "baseline_rss_mib": baseline,
                        "peak_rss_mib": peak,
                        "peak_over_weights": (peak - baseline) / weights,
                        "runs": runs,
                    }
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    header = ("format", "dtype", "weights", "load s", "base RSS", "peak RSS", "(peak-base)/weights")
    print("\n{:<12}{:<10}{:>10}{:>8}{:>10}{:>10}{:>21}".format(*header))
    for row in rows:
        print(
            f"{row['format']:<12}{row['compute_dtype']:<10}{row['weights_mib']:>7.0f} MiB{row['seconds_median']:>8.2f}"
            f"{row['baseline_rss_mib']:>6.0f} MiB{row['peak_rss_mib']:>6.0f} MiB{row['peak_over_weights']:>21.2f}"
        )
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
