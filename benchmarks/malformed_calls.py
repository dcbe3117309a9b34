"""Malformed tool calls from a small local model, with and without constrained decoding.

A tiny GLM is trained here for a few seconds on CPU on one-step GLM-4 trajectories ("What is A plus
B?" → ``add\\n{"a": A, "b": B}`` → the sum → an answer), then asked held-out questions with numbers
it never saw. A call is malformed when the registry would refuse it: a body that is not JSON, or JSON
that does not fit ``add``'s schema. Both sides answer the same questions with the same weights,
greedy; the only difference is ``ModelSettings.constrained_calls``.

    python benchmarks/malformed_calls.py [--train 24] [--test 40] [--steps 40] [--seed 0]

The last line is ``malformed_calls: ... unconstrained: X% malformed, V% schema-valid, E/C argument-correct;
constrained: ...``: the share of calls the registry would refuse, the share it would take (schema-valid:
JSON that fits ``add``'s schema, whatever the numbers), and how many calls carry the question's own
numbers (argument-correct), out of all calls. Constrained decoding makes calls schema-valid; it cannot
make them argument-correct, which is the model's part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny-model builders

from pydantic import ValidationError
from tiny_glm import add, train_tiny_glm, training_examples

from agent.messages import Message
from agent.models.transformers import TransformersModel
from agent.policy import ModelSettings


def questions(count: int, rng: random.Random, avoid: set[tuple[int, int]]) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    while len(pairs) < count:
        pair = (rng.randint(0, 999), rng.randint(0, 999))
        if pair not in avoid and pair not in pairs:
            pairs.append(pair)
    return pairs


def is_malformed(body: str) -> bool:
    try:
        add.args_model.model_validate(add.parse_body(body))
    except (ValueError, ValidationError):
        return True
    return False


async def measure(model: TransformersModel, pairs: list[tuple[int, int]], settings: ModelSettings) -> dict:
    calls = malformed = exact = 0
    for a, b in pairs:
        turn = await model.generate([Message(role="user", content=f"What is {a} plus {b}?")], [add.spec], settings)
        for call in turn.tool_calls:
            calls += 1
            if is_malformed(call.body):
                malformed += 1
            elif json.loads(call.body) == {"a": a, "b": b}:
                exact += 1
    return {"questions": len(pairs), "calls": calls, "malformed": malformed, "exact": exact}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=24, help="training trajectories")
    parser.add_argument("--test", type=int, default=40, help="held-out questions")
    parser.add_argument("--steps", type=int, default=40, help="training steps (fewer: a weaker model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    train_pairs = questions(args.train, rng, set())
    test_pairs = questions(args.test, rng, set(train_pairs))
    trajectories = [(f"What is {a} plus {b}?", [f'add\n{{"a": {a}, "b": {b}}}', f"\n{a} plus {b} is {a + b}."])
                    for a, b in train_pairs]
    with tempfile.TemporaryDirectory() as tmp:
        directory = train_tiny_glm(Path(tmp) / "glm", training_examples(trajectories, [add]), steps=args.steps,
                                   seed=args.seed)
        model = TransformersModel(directory, reuse_cache=False)
        free = await measure(model, test_pairs, ModelSettings(max_new_tokens=40))
        constrained = await measure(model, test_pairs, ModelSettings(max_new_tokens=40, constrained_calls=True))

    print(f"tiny GLM trained {args.steps} steps on {args.train} trajectories; {args.test} held-out questions")
    print(f"{'':14}{'calls':>7}{'malformed':>11}{'share':>8}{'exact args':>12}")
    shares = {}
    for label, figures in (("unconstrained", free), ("constrained", constrained)):
        shares[label] = 100 * figures["malformed"] / max(1, figures["calls"])
        print(f"{label:14}{figures['calls']:>7}{figures['malformed']:>11}{shares[label]:>7.1f}%"
              f"{figures['exact']:>12}")
    print(f"malformed_calls: train={args.train} test={args.test} steps={args.steps} seed={args.seed} " + "; ".join(
        f"{label}: {shares[label]:.1f}% malformed, {100 - shares[label]:.1f}% schema-valid, "
        f"{figures['exact']}/{figures['calls']} argument-correct"
        for label, figures in (("unconstrained", free), ("constrained", constrained))))


if __name__ == "__main__":
    asyncio.run(main())
