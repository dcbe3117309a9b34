"""Embedding the agent in an app: run a task, watch its events, read the result.

    python examples/embedding.py "What is 17**13 mod 1000?"                       # local GLM-4-9B
    python examples/embedding.py "..." --base-url http://localhost:8000/v1 --model glm-4-9b-chat
"""

import argparse
import sys
from collections.abc import Iterable

from agent import Agent, AgentError, Event
from agent.models import OpenAIChatModel, TransformersModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task")
    parser.add_argument("--base-url", help="an OpenAI-compatible server; default: the local model")
    parser.add_argument("--model", default="THUDM/glm-4-9b-chat-hf")
    parser.add_argument("--tools", default="python", help="comma-separated built-ins")
    args = parser.parse_args()

    try:
        model = OpenAIChatModel(args.base_url, args.model) if args.base_url else TransformersModel(args.model)
        with Agent(model=model, tools=[t for t in args.tools.split(",") if t], policy="default") as agent:
            show(agent.stream(args.task))
    except AgentError as exc:  # no weights, a model that cannot load: one line, not a traceback
        sys.exit(f"error: {exc}")


def show(events: Iterable[Event]) -> None:
    """Print each tool call and result as it happens, then the answer and what it cost."""
    for event in events:
        if event.type == "tool_call":
            print(f"→ {event.call.name}: {event.call.body or event.call.arguments}")
        elif event.type == "tool_result":
            print(f"← {event.observation.content[:200]}")
        elif event.type == "run_finished":
            result = event.result
            if result.status == "error":
                sys.exit(f"error: {result.error}")
            print(f"answer ({result.status}, {len(result.steps)} steps, "
                  f"{result.usage.prompt_tokens} prompt tokens): {result.answer}")
            for artifact in result.artifacts:
                print(f"saved {artifact.kind}: {artifact.path}")


if __name__ == "__main__":
    main()
