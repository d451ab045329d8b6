"""Attention backends side by side on a ChatGLM3-6B-shaped layer: time and peak extra memory.

32 query heads share 2 KV heads of 128 dims (float32). For each length L from 512 to 16k:
- prefill: causal attention of L new tokens (the prompt), T = S = L;
- decode: one new token over a cache of L tokens, T = 1, S = L.
Every measurement runs in a fresh process: the inputs are made, the kernel's peak-RSS mark is reset
(/proc/self/clear_refs), one call is made, and the peak minus the RSS before it is the call's extra memory.
Times are the median of --repeats calls. Decode reads the whole K/V cache, so its speed is reported as
achieved GB/s beside this machine's copy bandwidth, measured in the same run.

    python benchmarks/attention.py [--lengths 512,1024,2048,4096,8192,16384] [--repeats 3]

Writes benchmarks/results/attention.json and docs/img/attention.png, and prints a table last.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
HEADS, KV_HEADS, HEAD_DIM = 32, 2, 128  # ChatGLM3-6B
BACKENDS = ("math", "flash", "sdpa")


def read_kib(field: str, path: str = "/proc/self/status") -> int:
    with open(path) as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))


def run_child(backend: str, mode: str, length: int, repeats: int) -> dict:
    """In a fresh process: one call for memory, then `repeats` timed calls."""
    from glmrun.attention import make_attention

    torch.manual_seed(0)
    attend = make_attention(backend, torch.device("cpu"))
    query_len = length if mode == "prefill" else 1
    q = torch.randn(1, HEADS, query_len, HEAD_DIM)
    k, v = torch.randn(1, KV_HEADS, length, HEAD_DIM), torch.randn(1, KV_HEADS, length, HEAD_DIM)
    attend(q[:, :, :8], k[:, :, :8], v[:, :, :8])  # warm up kernels and allocator on a tiny input
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    before = read_kib("VmRSS")
    out = attend(q, k, v)
    peak = read_kib("VmHWM")
    del out
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        attend(q, k, v)
        seconds.append(time.perf_counter() - start)
    return {"peak_extra_mib": (peak - before) / 1024, "seconds": seconds}


def copy_bandwidth_gbs(repeats: int = 5) -> float:
    """Bytes read + written per second by a 1 GiB tensor copy: what decode attention can hope for."""
    source = torch.randn(2**28)  # 1 GiB of float32
    target = torch.empty_like(source)
    target.copy_(source)
    best = min(_timed(lambda: target.copy_(source)) for _ in range(repeats))
    return 2 * source.nbytes / best / 1e9


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def math_would_not_fit(length: int) -> str | None:
    """math holds the float32 score matrix twice (scores and softmax); refuse what the machine cannot hold."""
    needed = 2 * HEADS * length * length * 4
    available = read_kib("MemAvailable", "/proc/meminfo") * 1024
    if needed > 0.8 * available:
        return f"needs {needed / 2**30:.0f} GiB for scores, {available / 2**30:.0f} GiB available"
    return None


def measure(backend: str, mode: str, length: int, repeats: int) -> dict:
    row = {"backend": backend, "mode": mode, "length": length}
    if backend == "math" and mode == "prefill" and (reason := math_would_not_fit(length)):
        return {**row, "skipped": reason}
    command = [sys.executable, __file__, "--child", backend, mode, str(length), str(repeats)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return {**row, "skipped": f"failed: {result.stderr.strip().splitlines()[-1:]}"}
    child = json.loads(result.stdout)
    median = statistics.median(child["seconds"])
    row |= {"seconds": median, "seconds_all": child["seconds"], "peak_extra_mib": child["peak_extra_mib"]}
    if mode == "prefill":  # useful (causal) multiply-adds of QK^T and PV, 2 FLOPs each
        row["gflops"] = 2 * 2 * HEADS * HEAD_DIM * length * (length + 1) / 2 / median / 1e9
    else:  # the whole K/V cache is read once
        row["gbs"] = 2 * KV_HEADS * length * HEAD_DIM * 4 / median / 1e9
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("prefill", "seconds", "prefill time (s)"),
        ("prefill", "peak_extra_mib", "prefill peak extra memory (MiB)"),
        ("decode", "seconds", "decode step time (s)"),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for axis, (mode, key, title) in zip(axes, panels):
        for backend in BACKENDS:
            points = [(r["length"], r[key]) for r in rows if r["mode"] == mode and r["backend"] == backend and key in r]
            if points:
                axis.plot(*zip(*points), marker="o", label=backend)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("sequence length (tokens)")
        axis.set_title(title, fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle("ChatGLM3-6B attention layer (32 query heads, 2 KV heads, head dim 128, float32), one CPU")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "attention.json")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "attention.png")
    parser.add_argument("--child", nargs=4, metavar=("BACKEND", "MODE", "LENGTH", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        backend, mode, length, repeats = args.child
        print(json.dumps(run_child(backend, mode, int(length), int(repeats))))
        return
    bandwidth = copy_bandwidth_gbs()
    rows = []
    for mode in ("prefill", "decode"):
        for length in (int(part) for part in args.lengths.split(",")):
            for backend in BACKENDS:
                rows.append(measure(backend, mode, length, args.repeats))
                print(f"{mode} {length} {backend}: {rows[-1].get('seconds', rows[-1].get('skipped'))}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"copy_bandwidth_gbs": bandwidth, "threads": torch.get_num_threads(), "rows": rows},
                                   indent=1))  # fmt: skip
    plot(rows, args.plot)
    print(
        f"\ncopy bandwidth {bandwidth:.1f} GB/s, {torch.get_num_threads()} threads; JSON {args.out}; plot {args.plot}"
    )
    print(f"{'mode':<8}{'length':>7} {'backend':<6}{'time (s)':>10}{'peak extra':>13}{'throughput':>16}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['mode']:<8}{row['length']:>7} {row['backend']:<6}   skipped: {row['skipped']}")
            continue
        speed = f"{row['gflops']:.1f} GFLOP/s" if "gflops" in row else f"{row['gbs']:.1f} GB/s"
        print(f"{row['mode']:<8}{row['length']:>7} {row['backend']:<6}{row['seconds']:>10.4f}"
              f"{row['peak_extra_mib']:>9.1f} MiB{speed:>16}")  # fmt: skip


if __name__ == "__main__":
    main()
