"""KV-cache reuse across agent steps: ``TransformersModel`` with its cache kept vs a full prefill every step.

A 10-step agent trajectory on a random GLM built here (no downloads): at each step the model writes
its turn (greedy, ``--new-tokens`` tokens or until a stop token), the turn goes into the conversation
the way the agent loop puts it there, and a tool observation of ``--observation-words`` words follows.
Both sides run the same trajectory in the same process after a warm-up, interleaved (full, reuse,
full, reuse…) over ``--samples`` samples so that load on the machine falls on both alike; the outputs
are checked to be identical. Printed: prefilled tokens and median wall time of each side, generated
tokens per second, and the last line ``kv_reuse: ... prefill_ratio=X wall_ratio=min/median/max``
(full ÷ reuse). The prefill ratio is a count of tokens, fixed by the trajectory (the same in every
sample and on every machine); the wall ratio is what it buys in time here, one per sample.

The limit of the prefill ratio is "each token prefilled once": the full-prefill side prefills the sum
of all prompt lengths, the reuse side about the length of the last prompt. In float32 the two sides'
outputs are identical; in bf16 (the CUDA default) a prefill in pieces rounds differently from one in a
whole, so a random model's near-tied greedy choices may differ ("outputs identical: False").

    python benchmarks/kv_reuse.py                         # tiny GLM on CPU (seconds)
    python benchmarks/kv_reuse.py --format glm45          # a tiny GLM-4.5 (MoE) in its own XML format
    python benchmarks/kv_reuse.py --format glm47          # the same model in GLM-4.7's format
    python benchmarks/kv_reuse.py --size 1b --device cuda # ~1.3B-parameter random GLM on a GPU
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model builders

from tiny_glm import build_tiny_glm

from agent.builtins import builtin_class
from agent.messages import Message, ToolSpec
from agent.models.base import Usage, turn_from_completion
from agent.models.transformers import TransformersModel
from agent.policy import ModelSettings
from agent.protocol.formats import chat_format

SIZES = {  # random GLMs with GLM-4-9B's attention layout (GQA with 2 KV heads, partial RoPE); 1b: its vocabulary
    "tiny": {"hidden_size": 256, "num_layers": 4, "num_heads": 8, "num_kv_heads": 2, "intermediate_size": 688,
             "max_positions": 32768},
    "1b": {"hidden_size": 2048, "num_layers": 16, "num_heads": 16, "num_kv_heads": 2, "intermediate_size": 5632,
           "vocab_size": 151552, "max_positions": 32768},
}
TOOLS = [ToolSpec(name=name, builtin=name, prompt=builtin_class(name).builtin_prompt) for name in ("python", "simple_browser")]
OBSERVATION = ("Result of step {step}: the search returned ten pages about GLM-4 All Tools, python "
               "sandboxes, browsers and image generation; the first page says the model reads tool "
               "output as observations and answers once it has enough information. ")


def observation_text(step: int, words: int) -> str:
    text = OBSERVATION.format(step=step)
    while len(text.split()) < words:
        text += OBSERVATION.format(step=step)
    return " ".join(text.split()[:words])


async def trajectory(model: TransformersModel, steps: int, settings: ModelSettings,
                     observation_words: int) -> tuple[list[str], Usage, float, int]:  # in the model's format
    """Run the steps; return each step's raw output, the summed usage, the wall time, the last prompt's size."""
    model.reset_cache()
    messages = [Message(role="user", content="Find out what GLM-4 All Tools can do and summarise it.")]
    outputs, usage = [], Usage()
    started = time.perf_counter()
    for step in range(steps):
        completion = await model.complete(model.chat_format.render(messages, TOOLS), settings)
        outputs.append(completion.text)
        usage = usage + completion.usage
        messages.append(turn_from_completion(completion, TOOLS, model.chat_format).as_message())
        messages.append(Message(role="observation", content=observation_text(step, observation_words)))
    return outputs, usage, time.perf_counter() - started, completion.usage.prompt_tokens


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=24, help="max new tokens per step")
    parser.add_argument("--observation-words", type=int, default=60)
    parser.add_argument("--samples", type=int, default=5, help="interleaved runs of each side")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--device", default=None, help="cpu, cuda… (default: cuda when there is one)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--format", choices=["glm4", "glm45", "glm47"], default="glm4",
                        help="glm4: a GLM-4 (GlmForCausalLM); glm45, glm47: a GLM-4.5 mixture of experts in "
                             "GLM-4.5's or GLM-4.7's format (XML calls, thinking)")
    args = parser.parse_args()

    settings = ModelSettings(max_new_tokens=args.new_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        build_dtype = "bfloat16" if args.size == "1b" else "float32"  # 1b: half the bytes to write and read
        architecture = "glm" if args.format == "glm4" else "glm4_moe"
        directory = build_tiny_glm(Path(tmp) / args.size, dtype=build_dtype, architecture=architecture,
                                   **SIZES[args.size])
        model = TransformersModel(directory, device=args.device, dtype=args.dtype, chat_format=chat_format(args.format))
        weights = model.load()
        print(f"model: {type(weights).__name__} {weights.num_parameters() / 1e6:.1f}M parameters, "
              f"{model.chat_format.label} format, on "
              f"{weights.device} ({str(weights.dtype).removeprefix('torch.')}); {args.steps} steps, "
              f"<= {args.new_tokens} new tokens and {args.observation_words}-word observations per step")

        await trajectory(model, 2, settings, args.observation_words)  # warm-up: kernels, allocator, threads
        full_times, ours_times = [], []
        for _ in range(args.samples):
            model.reuse_cache = False  # the baseline: what backends without reuse do, a full prefill each step
            full_out, full_usage, full_s, _ = await trajectory(model, args.steps, settings, args.observation_words)
            model.reuse_cache = True
            ours_out, ours_usage, ours_s, last_prompt = await trajectory(model, args.steps, settings,
                                                                         args.observation_words)
            full_times.append(full_s)
            ours_times.append(ours_s)
        full_s, ours_s = statistics.median(full_times), statistics.median(ours_times)
        ratios = sorted(full / ours for full, ours in zip(full_times, ours_times))

    print(f"{'':14}{'prefilled':>11}{'reused':>9}{'generated':>11}{'median s':>9}{'gen tok/s':>11}")
    for label, usage, seconds in (("full prefill", full_usage, full_s), ("kv reuse", ours_usage, ours_s)):
        print(f"{label:14}{usage.prefilled_tokens:>11}{usage.reused_tokens:>9}{usage.completion_tokens:>11}"
              f"{seconds:>9.3f}{usage.completion_tokens / seconds:>11.1f}")
    print(f"last prompt: {last_prompt} tokens (the least any side can prefill); "
          f"outputs identical: {full_out == ours_out}")
    print(f"kv_reuse: format={args.format} size={args.size} steps={args.steps} samples={args.samples} "
          f"prefill_ratio={full_usage.prefilled_tokens / ours_usage.prefilled_tokens:.2f} (tokens, fixed by the "
          f"trajectory) wall_ratio={ratios[0]:.2f}/{statistics.median(ratios):.2f}/{ratios[-1]:.2f} (min/median/max "
          f"of {args.samples} interleaved samples)")


if __name__ == "__main__":
    asyncio.run(main())
