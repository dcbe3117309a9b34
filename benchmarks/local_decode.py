"""Local decoding speed: ``TransformersModel`` vs plain ``model.generate`` on the same model, in one run.

Eight requests (GLM-4 prompts of different lengths, greedy, up to ``--new-tokens`` tokens each) are
served three ways, interleaved over ``--samples`` samples so that load on the machine falls on all alike:

- ``generate``: transformers' ``model.generate``, one request after another (what a local backend built
  on it does when several sessions share the model: they take turns);
- ``ours, batch 1``: ``TransformersModel.complete``, one request after another;
- ``ours, 8 sessions``: the eight ``complete`` calls at once (``asyncio.gather``) on the one model, whose
  decoder steps them together.

Each side runs in a process of its own, on the same checkpoint, as a user runs one: once two threads of
one process have run torch's parallel CPU kernels, GNU OpenMP throttles its idle threads' spinning (it
then has more threads than cores), which slowed whichever side ran second by up to 40% here.

KV reuse is off on our side (``reuse_cache=False``), so both sides prefill every prompt whole; the
outputs are compared with generate's (identical in float32). Printed: generated tokens per second of each
side (min/median/max over the samples), the ratios, and on a GPU the bandwidth limit of batch-1 decoding:
every weight is read once per token, so tokens/s cannot exceed the device's memory bandwidth ÷ the bytes of
the weights (``--bandwidth-gbs``, or a known device's figure). The last line is
``local_decode: ours_tps=… generate_tps=… ratio=… batch8_tps=… limit_fraction=…`` (ratio: ours ÷
generate at batch 1; limit_fraction: ours at batch 1 ÷ the bandwidth limit, ``n/a`` on CPU).

    python benchmarks/local_decode.py                                # tiny random GLM on CPU (a minute)
    python benchmarks/local_decode.py --size 1b --new-tokens 32      # a 1.3B GLM on CPU (bf16 with AMX)
    python benchmarks/local_decode.py --device cuda --size 9b        # GLM-4-9B's exact shape, random, bf16
    python benchmarks/local_decode.py --device cuda --size 9b --bandwidth-gbs 3350
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's agent, even where another is installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model builders

from kv_reuse import SIZES as TRAJECTORY_SIZES
from tiny_glm import build_tiny_glm

from agent.messages import Message
from agent.models.transformers import TransformersModel
from agent.policy import ModelSettings
from agent.protocol import glm4

SIZES = {
    **TRAJECTORY_SIZES,  # tiny, and 1b: a ~1.3B GLM with GLM-4-9B's vocabulary
    # GLM-4-9B-chat's config: 40 layers, GQA with 2 KV heads, 151552 tokens, ~9.4B parameters
    "9b": {"hidden_size": 4096, "num_layers": 40, "num_heads": 32, "num_kv_heads": 2, "intermediate_size": 13696,
           "vocab_size": 151552, "max_positions": 32768},
}
BANDWIDTH_GBS = {"H200": 4800, "H100": 3350, "A100-SXM4-80GB": 2039, "A100 80GB": 2039}  # by CUDA device name
TOPICS = ["the weather in Beijing", "python sandboxes", "GLM-4 All Tools", "browsing the web", "image generation",
          "tool calls", "KV caches", "batched decoding"]


def requests(count: int) -> list[str]:
    """``count`` GLM-4 prompts of different lengths (10 to ~50 words of user text: what an agent's step
    prefills when the KV cache holds the conversation before it)."""
    return [glm4.render_prompt([Message(role="user", content=f"Tell me about {TOPICS[i % len(TOPICS)]}. "
                                        + "Please explain it in detail. " * (1 + i))]) for i in range(count)]


def generate_one_at_a_time(model: TransformersModel, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """Plain ``model.generate``, greedy, with the model's stop tokens: each request in turn."""
    import torch

    stop_ids = list(model._stop_ids)
    generated = []
    for prompt in prompts:
        ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=model.device)
        output = model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      do_sample=False, eos_token_id=stop_ids, pad_token_id=stop_ids[0])
        generated.append(output[0, ids.shape[1]:].tolist())
    return generated


async def ours(model: TransformersModel, prompts: list[str], new_tokens: int, together: bool) -> tuple[list[str], int]:
    """``TransformersModel.complete`` for each prompt, in turn or all at once: the texts and the tokens generated."""
    settings = ModelSettings(max_new_tokens=new_tokens)
    if together:
        completions = await asyncio.gather(*(model.complete(prompt, settings) for prompt in prompts))
    else:
        completions = [await model.complete(prompt, settings) for prompt in prompts]
    return [c.text for c in completions], sum(c.usage.completion_tokens for c in completions)


def text_of(model: TransformersModel, generated: list[int]) -> str:
    """What ``complete`` returns for these generated ids: their text, without the stop token."""
    body = generated[:-1] if generated and generated[-1] in model._stop_ids else generated
    return model.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def bandwidth_limit(model: TransformersModel, bandwidth_gbs: float | None) -> tuple[float | None, str]:
    """Tokens/s at which batch-1 decoding reads every weight once per token at the device's bandwidth."""
    import torch

    weights = sum(p.numel() * p.element_size() for p in model.model.parameters())
    if model.device.type != "cuda":
        return None, f"weights: {weights / 1e9:.2f} GB; no bandwidth limit on CPU"
    name = torch.cuda.get_device_name(model.device)
    if bandwidth_gbs is None:
        bandwidth_gbs = next((gbs for key, gbs in BANDWIDTH_GBS.items() if key in name), None)
    if bandwidth_gbs is None:
        return None, f"weights: {weights / 1e9:.2f} GB; {name}'s bandwidth unknown: pass --bandwidth-gbs"
    limit = bandwidth_gbs * 1e9 / weights
    return limit, (f"weights: {weights / 1e9:.2f} GB read per token; {name} at {bandwidth_gbs:.0f} GB/s: "
                   f"at most {limit:.1f} tokens/s at batch 1")


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}/{statistics.median(values):.1f}/{max(values):.1f}"


def run_side(args: argparse.Namespace) -> None:
    """A child process serving one side: loads the model, warms up, then runs each command read from stdin
    (``generate``, ``ours``, ``batch8``) and answers a JSON line with its tokens/s and texts."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    prompts = requests(args.sessions)
    # plain generate's process compiles nothing: compiling our path there slowed generate (205 vs 442 tokens/s)
    compiled = False if args.side == "generate" else args.compiled
    model = TransformersModel(args.checkpoint, device=args.device, dtype=args.dtype, reuse_cache=False,
                              compiled=compiled)
    weights = model.load()

    def sample(command: str, new_tokens: int) -> tuple[float, list[str]]:
        started = time.perf_counter()
        if command == "generate":
            generated = generate_one_at_a_time(model, prompts, new_tokens)
            texts, tokens = [text_of(model, ids) for ids in generated], sum(map(len, generated))
        else:
            texts, tokens = asyncio.run(ours(model, prompts, new_tokens, together=command == "batch8"))
        return tokens / (time.perf_counter() - started), texts

    if args.side == "generate":
        sample("generate", 8)  # warm-up: kernels, allocator, threads
    else:
        sample("batch8", 8)
        sample("ours", 8)  # compiles, where the static path is on
    limit, described = bandwidth_limit(model, args.bandwidth_gbs)
    compiled = model._decoder is not None and model._decoder.static_forward is not None
    print(json.dumps({"model": f"{type(weights).__name__} {weights.num_parameters() / 1e9:.2f}B parameters on "
                               f"{weights.device} ({str(weights.dtype).removeprefix('torch.')})",
                      "limit": limit, "described": described, "compiled": compiled}), flush=True)
    for line in sys.stdin:
        tps, texts = sample(line.strip(), args.new_tokens)
        print(json.dumps({"tps": tps, "texts": texts}), flush=True)


class Side:
    """A child process running one side (see :func:`run_side`), on the checkpoint the parent built."""

    def __init__(self, side: str, checkpoint: Path, argv: list[str]):
        environment = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        self.process = subprocess.Popen([sys.executable, __file__, *argv, "--side", side, "--checkpoint", str(checkpoint)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
        self.hello = self._answer()

    def run(self, command: str) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def _answer(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"the benchmark's child process failed (exit code {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default=None, help="cpu, cuda… (default: cuda when there is one)")
    parser.add_argument("--dtype", default=None,
                        help="float32, bfloat16 (default: TransformersModel's: bf16 on CUDA, and on a CPU with bf16 "
                             "units for --size 1b and 9b, which are saved in bf16; else float32)")
    parser.add_argument("--sessions", type=int, default=8, help="requests, and concurrent sessions on our side")
    parser.add_argument("--new-tokens", type=int, default=128, help="max new tokens per request")
    parser.add_argument("--samples", type=int, default=3, help="interleaved runs of each side")
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=None,
                        help="our batch-1 decoding on a static cache with a compiled forward pass (default: on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads on both sides (default: torch's)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="the device's memory bandwidth (default: known for H200, H100 SXM, A100 80GB)")
    parser.add_argument("--side", choices=["generate", "ours"], help=argparse.SUPPRESS)  # in a child process
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)

    prompts = requests(args.sessions)
    with tempfile.TemporaryDirectory() as tmp:
        big = args.size != "tiny"  # half the bytes to write and read
        directory = build_tiny_glm(Path(tmp) / args.size, dtype="bfloat16" if big else "float32", **SIZES[args.size])
        started = time.perf_counter()
        sides = {side: Side(side, directory, sys.argv[1:]) for side in ("generate", "ours")}
        hello = sides["ours"].hello
        print(f"model: {hello['model']}; {args.sessions} requests of <= {args.new_tokens} new tokens, prompts of "
              f"{min(map(len, prompts))}-{max(map(len, prompts))} characters")
        print(hello["described"])
        print(f"loading and warm-up (each side in a process of its own): {time.perf_counter() - started:.1f} s; "
              f"ours compiled at batch 1: {hello['compiled']}")
        rates: dict[str, list[float]] = {"generate": [], "ours": [], "batch8": []}
        identical = {"ours": True, "batch8": True}
        try:
            for _ in range(args.samples):
                baseline = sides["generate"].run("generate")
                rates["generate"].append(baseline["tps"])
                for command in ("ours", "batch8"):
                    answer = sides["ours"].run(command)
                    rates[command].append(answer["tps"])
                    identical[command] &= answer["texts"] == baseline["texts"]
        finally:
            for side in sides.values():
                side.close()

    generate_tps, ours_tps, batch8_tps = (statistics.median(rates[side]) for side in ("generate", "ours", "batch8"))
    print(f"{'':26}{'tokens/s min/median/max':>26}")
    for label, side in (("generate, one at a time", "generate"), ("ours, one at a time", "ours"),
                        (f"ours, {args.sessions} sessions at once", "batch8")):
        print(f"{label:26}{spread(rates[side]):>26}")
    print(f"outputs identical to generate's: batch 1 {identical['ours']}, {args.sessions} sessions "
          f"{identical['batch8']} (in bf16 a random model's near-ties may round either way)")
    print(f"ours ÷ generate: batch 1 {ours_tps / generate_tps:.2f}x, {args.sessions} sessions "
          f"{batch8_tps / generate_tps:.2f}x (the sessions take turns on generate)")
    limit = hello["limit"]
    fraction = f"{ours_tps / limit:.2f}" if limit else "n/a"
    print(f"local_decode: ours_tps={ours_tps:.1f} generate_tps={generate_tps:.1f} ratio={ours_tps / generate_tps:.2f} "
          f"batch8_tps={batch8_tps:.1f} limit_fraction={fraction}")


if __name__ == "__main__":
    main()
