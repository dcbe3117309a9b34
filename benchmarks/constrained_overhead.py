"""Per-token cost of constrained calls: free decoding next to decoding held to the tool's JSON Schema.

A tiny random GLM (built here, no downloads) is in the middle of a call to a function tool: the prompt
ends with ``<|assistant|>notes\\n`` and 1, 4 or 16 kB of the call's JSON body, inside a string value.
``--format glm45`` does the same with a tiny random GLM-4.5 (``Glm4MoeForCausalLM``, GLM-4.5's tags as
single tokens) in a GLM-4.5 XML call: ``<tool_call>notes``, a ``title`` pair, and the ``text`` value.
Each side continues it for up to ``--tokens`` tokens, greedy, from the same warm KV cache: free
decoding (``constrained_calls = false``) and constrained decoding (``true``). A side's time per token is
``(T(n tokens) - T(1 token)) / (n - 1)``, so the one-off work of a call (prefilling the last prompt
token, reading the body already written) is left out and shown apart as ``setup``; each time is the
fastest of ``--reps`` runs (other processes on the machine only ever add time). ``mask`` times the
logits processor alone along the same tokens, without the model: on a shared machine it is the figure
that noise does not blur. A constraint that re-reads the body at every token costs more per token the
longer the body; one that keeps its parser's state between tokens does not.

    python benchmarks/constrained_overhead.py [--tokens 48] [--reps 5] [--sizes 1,4,16] [--format glm45]

The last line is ``constrained_overhead: overhead_ms_1k=A mask_ms_1k=B … mask_growth=C``: per size,
constrained minus free milliseconds per token, and the processor's own milliseconds per token;
mask_growth is the processor's cost at the largest size divided by its cost at the smallest.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model builders

from tiny_glm import build_tiny_glm

from agent.messages import Message, ToolSpec
from agent.models.transformers import TransformersModel
from agent.policy import ModelSettings
from agent.protocol import glm4
from agent.protocol.format import ChatFormat
from agent.protocol.glm45 import GLM45

NOTES = ToolSpec(name="notes", description="Save a note.", parameters={
    "type": "object", "additionalProperties": False, "required": ["title", "text"],
    "properties": {"title": {"type": "string"}, "text": {"type": "string"},
                   "tags": {"type": "array", "items": {"type": "string"}}}})
FILLER = ("What is the weather in Beijing today? It is sunny. The answer is 5. A watercolor painting of a cat "
          "sitting on a windowsill at sunset, warm light, soft colors. ")


def call_prompt(body_bytes: int, chat_format: ChatFormat = glm4.GLM4) -> str:
    """A prompt that ends inside a call to ``notes`` whose body is ``body_bytes`` long, in an open string
    (GLM-4: the JSON body; GLM-4.5: the XML pairs, inside the ``text`` value)."""
    messages = [Message(role="user", content="Write down what you saw today.")]
    if chat_format.call_syntax == "xml":
        head = chat_format.render(messages, [NOTES]) + "<think></think>\n<tool_call>notes"
        body = "\n<arg_key>title</arg_key>\n<arg_value>observations</arg_value>\n<arg_key>text</arg_key>\n<arg_value>"
    else:
        head, body = glm4.render_prompt(messages, [NOTES]) + "notes\n", '{"title": "observations", "text": "'
    return head + body + (FILLER * (body_bytes // len(FILLER) + 1))[: body_bytes - len(body)]


async def fastest(model: TransformersModel, prompt: str, settings: ModelSettings,
                  reps: int) -> tuple[float, str, int]:
    """The fastest of ``reps`` completions of ``prompt`` (the cache holds all of it but the last token):
    its seconds, the text and the number of tokens written (greedy: the same every time)."""
    times, texts = [], set()
    for _ in range(reps):
        started = time.perf_counter()
        completion = await model.complete(prompt, settings, tools=[NOTES])
        times.append(time.perf_counter() - started)
        texts.add((completion.text, completion.usage.completion_tokens))
        assert completion.usage.prefilled_tokens == 1, completion.usage  # only the last prompt token
    assert len(texts) == 1, texts
    (text, written), = texts
    return min(times), text, written


async def per_token(model: TransformersModel, prompt: str, constrained: bool, tokens: int,
                    reps: int) -> tuple[float, float, str]:
    """Milliseconds per generated token after the first, the first token's milliseconds, and the text written."""
    one = ModelSettings(max_new_tokens=1, constrained_calls=constrained)
    many = ModelSettings(max_new_tokens=tokens, constrained_calls=constrained)
    await model.complete(prompt, many, tools=[NOTES])  # warm-up; fills the cache with the prompt
    first, _, _ = await fastest(model, prompt, one, reps)
    total, text, written = await fastest(model, prompt, many, reps)
    if written < 2:
        raise SystemExit(f"the model stopped after {written} token(s): nothing to measure; try another --seed")
    return 1000 * (total - first) / (written - 1), 1000 * first, text


def mask_ms(tokenizer: Any, prompt: str, text: str, chat_format: ChatFormat) -> float:
    """The constraint alone, without the model: median milliseconds of a call of the logits processor,
    token by token along ``text`` (after a first call that reads the body already in the prompt)."""
    from agent.models.constrained import ToolCallConstraint

    constraint = ToolCallConstraint(tokenizer, [NOTES], chat_format)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    scores = torch.randn(1, len(tokenizer), generator=torch.Generator().manual_seed(0))  # a random model's logits
    constraint(ids, scores.clone())
    times = []
    for token in tokenizer(prompt + text, add_special_tokens=False)["input_ids"][ids.shape[1]:]:
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        started = time.perf_counter()
        constraint(ids, scores.clone())
        times.append(time.perf_counter() - started)
    assert constraint.constrained_tokens, "the prompt does not end inside a constrained call"
    return 1000 * statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=48, help="tokens to generate per run")
    parser.add_argument("--reps", type=int, default=5, help="runs per figure (the fastest is reported)")
    parser.add_argument("--sizes", default="1,4,16", help="call body sizes in kB")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random tiny GLM")
    parser.add_argument("--format", choices=["glm4", "glm45"], default="glm4",
                        help="glm4: JSON calls (GlmForCausalLM); glm45: XML calls (Glm4MoeForCausalLM)")
    args = parser.parse_args()

    sizes = [int(size) for size in args.sizes.split(",")]
    architecture, chat_format = ("glm4_moe", GLM45) if args.format == "glm45" else ("glm", glm4.GLM4)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = TransformersModel(build_tiny_glm(Path(tmp) / "glm", architecture=architecture, seed=args.seed,
                                                 max_positions=32768), chat_format=chat_format)
        model.load()
        for constrained in (False, True):  # warm-up: threads, allocator, the grammar library's tokenizer
            await model.complete(call_prompt(1024, chat_format),
                                 ModelSettings(max_new_tokens=8, constrained_calls=constrained), tools=[NOTES])
        for size in sizes:
            prompt = call_prompt(size * 1024, chat_format)
            free, free_first, _ = await per_token(model, prompt, False, args.tokens, args.reps)
            constrained, first, text = await per_token(model, prompt, True, args.tokens, args.reps)
            rows.append({"size": size, "prompt": len(model.tokenizer(prompt)["input_ids"]), "free": free,
                         "constrained": constrained, "setup": first - free_first,
                         "mask": mask_ms(model.tokenizer, prompt, text, chat_format)})

    print(f"tiny random {chat_format.label} ({architecture}) on CPU, {chat_format.call_syntax} calls, greedy, "
          f"up to {args.tokens} tokens per run, fastest of {args.reps} runs; mask: the logits processor alone, "
          "median per token")
    print(f"{'body':>6}{'prompt tok':>12}{'free ms/tok':>13}{'constr ms/tok':>15}{'overhead':>10}"
          f"{'mask ms/tok':>13}{'setup ms':>10}")
    for row in rows:
        print(f"{row['size']:>4}kB{row['prompt']:>12}{row['free']:>13.2f}{row['constrained']:>15.2f}"
              f"{row['constrained'] - row['free']:>10.2f}{row['mask']:>13.3f}{row['setup']:>10.1f}")
    print(f"constrained_overhead: format={args.format} reps={args.reps} tokens={args.tokens} "
          f"prompt_tokens={'/'.join(str(row['prompt']) for row in rows)} " + " ".join(
        f"overhead_ms_{row['size']}k={row['constrained'] - row['free']:.2f} mask_ms_{row['size']}k={row['mask']:.3f}"
        for row in rows) + f" mask_growth={rows[-1]['mask'] / rows[0]['mask']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
