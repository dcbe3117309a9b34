"""Tokenizing an agent's prompt at each step: ``PromptTokenizer`` (only the new text) vs the whole prompt.

An agent run of ``--steps`` steps in the GLM-4 (or ``--format glm45``) format with the tiny tokenizer
built in tests/tiny_glm.py (byte-level BPE with GLM's special tokens; no downloads): each step adds a
call and an observation of ``--observation-words`` words. Both sides tokenize the same prompts,
interleaved step by step, once each (ours keeps its state across the run, as the model does, so a
step can be timed only once); their ids are checked equal at every step. Printed: ms per step of each side at a few points of the run, and the last line
``tokenize_steps: ...`` with the parameters, the median ms per step over the first and the last tenth
of the run on each side (flat for ours, growing with the conversation for the whole tokenization).

    python benchmarks/tokenize_steps.py                      # 320 steps, GLM-4 format
    python benchmarks/tokenize_steps.py --format glm45 --steps 160
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model builders

from tiny_glm import add, build_tokenizer

from agent.messages import Message, ToolCall
from agent.models._tokenizing import PromptTokenizer
from agent.protocol.formats import chat_format

OBSERVATION = "the search returned pages about GLM-4 All Tools, python sandboxes and browsers; 结果 "


def timed(function, prompt: str) -> tuple[float, list[int]]:
    start = time.perf_counter()
    ids = function(prompt)
    return (time.perf_counter() - start) * 1000, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=320)
    parser.add_argument("--format", choices=["glm4", "glm45"], default="glm4")
    parser.add_argument("--observation-words", type=int, default=40)
    args = parser.parse_args()

    tokenizer = build_tokenizer(glm45=args.format == "glm45")
    form = chat_format(args.format)
    whole = lambda prompt: tokenizer(prompt, add_special_tokens=False)["input_ids"]  # noqa: E731
    ours_ms, whole_ms, lengths = [], [], []
    messages = [Message(role="user", content="Find out what GLM-4 All Tools can do, step by step.")]
    observation = " ".join((OBSERVATION * (args.observation_words // 10 + 1)).split()[:args.observation_words])
    incremental = PromptTokenizer(tokenizer)
    for step in range(args.steps):
        prompt = form.render(messages, [add.spec])
        ms_ours, ids_ours = timed(incremental, prompt)  # one PromptTokenizer over the run, as the model keeps
        ms_whole, ids_whole = timed(whole, prompt)
        if ids_ours != ids_whole:
            raise SystemExit(f"step {step}: the ids differ from a whole tokenization")
        ours_ms.append(ms_ours)
        whole_ms.append(ms_whole)
        lengths.append(len(ids_whole))
        call = ToolCall(id=f"c{step}", name="add", body=json.dumps({"a": step, "b": 3}))
        messages += [Message(role="assistant", content=f"Step {step}.", tool_calls=[call]),
                     Message(role="observation", content=f"{step}: {observation}", tool_call_id=f"c{step}",
                             name="add")]

    print(f"{'step':>6} {'prompt tokens':>14} {'ours ms':>9} {'whole ms':>9}")
    for step in sorted({0, 1, args.steps // 4, args.steps // 2, 3 * args.steps // 4, args.steps - 1}):
        print(f"{step:>6} {lengths[step]:>14} {ours_ms[step]:>9.3f} {whole_ms[step]:>9.3f}")
    tenth = max(1, args.steps // 10)
    early = slice(1, tenth + 1)  # the first step of ours is a whole tokenization plus its one-off check
    late = slice(args.steps - tenth, args.steps)
    print(f"tokenize_steps: format={args.format} steps={args.steps} observation_words={args.observation_words} "
          f"prompt_tokens={lengths[1]}..{lengths[-1]} ms/step (median, steps 1-{tenth} -> "
          f"last {tenth}): ours {statistics.median(ours_ms[early]):.3f} -> {statistics.median(ours_ms[late]):.3f}, "
          f"whole {statistics.median(whole_ms[early]):.3f} -> {statistics.median(whole_ms[late]):.3f}")


if __name__ == "__main__":
    main()
