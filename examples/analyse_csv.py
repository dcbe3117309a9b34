"""Hand the agent a CSV, let its sandboxed Python analyse it, and get the files it wrote back.

    python examples/analyse_csv.py sales.csv                                   # local GLM-4-9B
    python examples/analyse_csv.py sales.csv --base-url http://localhost:8000/v1 --model glm-4-9b-chat

Without a CSV of your own, ``--demo`` writes a small one to start from (only if the file does not
exist yet). The file is copied into the sandbox's ``/mnt/data``; whatever the code saves there comes back under ``agent_runs/<session>/``
(or stays in ``--workdir``, if you give one) and is listed in ``result.artifacts``.
"""

import argparse
import sys
from pathlib import Path

from agent import Agent, AgentError
from agent.models import CompletionsModel, TransformersModel

TASK = ("Read {name}, compute the total of each numeric column and save them as /mnt/data/totals.csv; "
        "then tell me which column has the largest total.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("csv", type=Path, nargs="?", default=Path("sales.csv"))
    parser.add_argument("--demo", action="store_true", help="write a small sales.csv first")
    parser.add_argument("--base-url", help="a server with GLM-4 behind /v1/completions; default: the local model")
    parser.add_argument("--model", default="THUDM/glm-4-9b-chat-hf")
    parser.add_argument("--workdir", type=Path, help="use this folder as /mnt/data (outputs stay there)")
    args = parser.parse_args()
    if args.demo and not args.csv.exists():
        args.csv.write_text("month,north,south\njan,120,80\nfeb,150,95\nmar,130,160\n")

    try:
        model = CompletionsModel(args.base_url, args.model) if args.base_url else TransformersModel(args.model)
        with Agent(model=model, tools=["python"], workdir=args.workdir) as agent:
            result = agent.run(TASK.format(name=args.csv.name), files=[args.csv])
    except AgentError as exc:  # no weights, a file that cannot be handed in: one line, not a traceback
        sys.exit(f"error: {exc}")
    if result.status == "error":
        sys.exit(f"error: {result.error}")
    print(f"answer ({result.status}): {result.answer}")
    for artifact in result.artifacts:
        print(f"saved {artifact.kind}: {artifact.path}")


if __name__ == "__main__":
    main()
