"""Local decoding speed: ``TransformersModel`` vs plain ``model.generate`` on the same model, in one run.

Eight requests (GLM-4 prompts of different lengths, greedy, up to ``--new-tokens`` tokens each) are
served three ways, interleaved over ``--samples`` samples so that load on the machine falls on all alike:

- ``generate``: transformers' ``model.generate``, one request after another in a worker thread (what a
  local backend built on it does when several sessions share the model: they take turns);
- ``ours, batch 1``: ``TransformersModel.complete``, one request after another;
- ``ours, 8 sessions``: the eight ``complete`` calls at once (``asyncio.gather``) on the one model, whose
  decoder steps them together.

KV reuse is off on our side (``reuse_cache=False``), so both sides prefill every prompt whole; the
outputs are checked to be identical. Printed: generated tokens per second of each side (min/median/max
over the samples), the ratios, and on a GPU the bandwidth limit of batch-1 decoding: every weight is read
once per token, so tokens/s cannot exceed the device's memory bandwidth ÷ the bytes of the weights
(``--bandwidth-gbs``, or a known device's figure). The last line is
``local_decode: ours_tps=… generate_tps=… ratio=… batch8_tps=… limit_fraction=…`` (ratio: ours ÷
generate at batch 1; limit_fraction: ours at batch 1 ÷ the bandwidth limit, ``n/a`` on CPU).

    python benchmarks/local_decode.py                                # tiny random GLM on CPU (a minute)
    python benchmarks/local_decode.py --device cuda --size 9b        # GLM-4-9B's exact shape, random, bf16
    python benchmarks/local_decode.py --device cuda --size 9b --bandwidth-gbs 3350
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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


async def generate_one_at_a_time(model: TransformersModel, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """Plain ``model.generate``, greedy, with the model's stop tokens: each request in turn, in a worker thread."""
    import torch

    stop_ids = list(model._stop_ids)

    def generate(prompt: str) -> list[int]:
        ids = torch.tensor([model.tokenizer(prompt, add_special_tokens=False)["input_ids"]], device=model.device)
        output = model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                      do_sample=False, eos_token_id=stop_ids, pad_token_id=stop_ids[0])
        return output[0, ids.shape[1]:].tolist()

    return [await asyncio.to_thread(generate, prompt) for prompt in prompts]


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default=None, help="cpu, cuda… (default: cuda when there is one)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--sessions", type=int, default=8, help="requests, and concurrent sessions on our side")
    parser.add_argument("--new-tokens", type=int, default=128, help="max new tokens per request")
    parser.add_argument("--samples", type=int, default=3, help="interleaved runs of each side")
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=None,
                        help="our batch-1 decoding on a static cache with a compiled forward pass (default: on CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads for both sides (default: torch's; 1 on a small shared machine, "
                             "where a second thread waits for a busy core at every operation)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="the device's memory bandwidth (default: known for H200, H100 SXM, A100 80GB)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # before any thread of either side starts: they all take it

    prompts = requests(args.sessions)
    with tempfile.TemporaryDirectory() as tmp:
        big = args.size != "tiny"  # half the bytes to write and read
        directory = build_tiny_glm(Path(tmp) / args.size, dtype="bfloat16" if big else "float32", **SIZES[args.size])
        model = TransformersModel(directory, device=args.device, dtype=args.dtype, reuse_cache=False,
                                  compiled=args.compiled)
        weights = await asyncio.to_thread(model.load)  # where steps load it (in the main thread, torch runs slower here)
        print(f"model: {type(weights).__name__} {weights.num_parameters() / 1e9:.2f}B parameters on {weights.device} "
              f"({str(weights.dtype).removeprefix('torch.')}); {args.sessions} requests of <= {args.new_tokens} "
              f"new tokens, prompts of {min(map(len, prompts))}-{max(map(len, prompts))} characters")
        limit, described = bandwidth_limit(model, args.bandwidth_gbs)
        print(described)

        started = time.perf_counter()
        await generate_one_at_a_time(model, prompts[:2], 8)  # warm-up: kernels, allocator, threads
        await ours(model, prompts[:2], 8, together=True)
        await ours(model, prompts, 8, together=False)  # compiles, where the static path is on
        print(f"warm-up: {time.perf_counter() - started:.1f} s; ours compiled at batch 1: "
              f"{model._decoder is not None and model._decoder.static_forward is not None}")
        rates: dict[str, list[float]] = {"generate": [], "ours": [], "batch8": []}
        identical = True
        for _ in range(args.samples):
            started = time.perf_counter()
            baseline = await generate_one_at_a_time(model, prompts, args.new_tokens)
            rates["generate"].append(sum(map(len, baseline)) / (time.perf_counter() - started))
            expected = [text_of(model, generated) for generated in baseline]
            for side, together in (("ours", False), ("batch8", True)):
                started = time.perf_counter()
                texts, tokens = await ours(model, prompts, args.new_tokens, together)
                rates[side].append(tokens / (time.perf_counter() - started))
                identical &= texts == expected

    generate_tps, ours_tps, batch8_tps = (statistics.median(rates[side]) for side in ("generate", "ours", "batch8"))
    print(f"{'':26}{'tokens/s min/median/max':>26}")
    for label, side in (("generate, one at a time", "generate"), ("ours, one at a time", "ours"),
                        (f"ours, {args.sessions} sessions at once", "batch8")):
        print(f"{label:26}{spread(rates[side]):>26}")
    print(f"outputs identical: {identical}; ours ÷ generate: batch 1 {ours_tps / generate_tps:.2f}x, "
          f"{args.sessions} sessions {batch8_tps / generate_tps:.2f}x (the sessions take turns on generate)")
    fraction = f"{ours_tps / limit:.2f}" if limit else "n/a"
    print(f"local_decode: ours_tps={ours_tps:.1f} generate_tps={generate_tps:.1f} ratio={ours_tps / generate_tps:.2f} "
          f"batch8_tps={batch8_tps:.1f} limit_fraction={fraction}")


if __name__ == "__main__":
    asyncio.run(main())
