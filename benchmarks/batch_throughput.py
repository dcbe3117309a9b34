"""Throughput of ``agent batch``/``agent eval``'s runner: tasks per second at concurrency 1 and 32.

A loopback server (asyncio, in a process of its own) plays a served GLM-4 behind ``/v1/completions``
that answers every request after a fixed 200 ms (a model's latency, with no compute here). The runner
(:mod:`agent.eval.runner`, set up as ``agent batch --backend completions --tools none`` sets it up: one
agent and one chat session per task, its events read, a transcript per task, every result appended to a
JSONL file as it ends) runs the same 200 tasks twice, at concurrency 1 and at 32, each into a fresh
results file (at 32, the best of ``--reps`` runs: other processes on a shared machine can only slow
a run down; at 1 the run takes 40 s and varies little). With the model's time fixed, the ratio is how
much of the concurrency the runner turns into throughput (32 at best). Peak RSS is the runner's process (the server's is not counted).

    python benchmarks/batch_throughput.py [--tasks 200] [--delay 0.2] [--concurrency 32] [--reps 3]

The last line is ``batch_throughput: c1=X/s c32=Y/s ratio=Z peak_rss_mb=W`` (target: ratio >= 20).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

TARGET_RATIO = 20.0
ANSWER = json.dumps({"id": "cmpl", "object": "text_completion", "model": "glm-4-9b-chat",
                     "choices": [{"index": 0, "text": "\nDone.", "finish_reason": "stop", "stop_reason": 151336}],
                     "usage": {"prompt_tokens": 20, "completion_tokens": 2, "total_tokens": 22}}).encode()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """One keep-alive connection: each POST is answered with a GLM-4 completion after ``delay`` seconds."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            await asyncio.sleep(delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _serve(delay: float, port: multiprocessing.Queue) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _answer(r, w, delay), "127.0.0.1", 0, backlog=256)
        port.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def serve(delay: float) -> tuple[multiprocessing.Process, str]:
    """The served model, in a process of its own (as a real server is): its work is not the runner's."""
    port: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(delay, port), daemon=True)
    process.start()
    return process, f"http://127.0.0.1:{port.get(timeout=30)}/v1"


def timed_run(url: str, tasks: int, concurrency: int, folder: Path) -> float:
    """Seconds for the runner to finish ``tasks`` tasks at ``concurrency`` (all answered, all recorded)."""
    from agent.eval import Recipe, Run, Task, run_local

    work = [Task(id=f"t{i}", task=f"Task number {i}: say done.") for i in range(tasks)]
    run = Run(work, folder / f"c{concurrency}.jsonl", {"type": "header", "kind": "batch", "model": "glm-4-9b-chat"})
    recipe = Recipe(model="glm-4-9b-chat", base_urls=[url], backend="completions", served={"max_retries": 0},
                    runs_dir=str(folder / "runs"), transcripts=str(folder / f"transcripts-c{concurrency}"))
    executor = recipe.executor(lanes=concurrency)
    started = time.perf_counter()
    asyncio.run(run_local(run, executor, concurrency))
    elapsed = time.perf_counter() - started
    run.close()
    records = run.records()
    assert len(records) == tasks and all(r["status"] == "answered" for r in records), records[:2]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.2, help="the served model's latency per request (s)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3, help="runs at the high concurrency (the best is kept)")
    args = parser.parse_args()
    server, url = serve(args.delay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            timed_run(url, 8, 8, Path(tmp) / "warmup")  # imports and first connections, not timed
            one = timed_run(url, args.tasks, 1, Path(tmp))
            # The best of a few: other processes on the machine can only slow a run down.
            many = min(timed_run(url, args.tasks, args.concurrency, Path(tmp) / str(rep)) for rep in range(args.reps))
    finally:
        server.terminate()
    rate_one, rate_many = args.tasks / one, args.tasks / many
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = rate_many / rate_one
    print(f"{args.tasks} tasks, the served model answering each after {args.delay * 1000:.0f} ms:")
    print(f"  concurrency 1:  {one:7.2f} s  {rate_one:7.2f} tasks/s  (ideal {1 / args.delay:.2f})")
    print(f"  concurrency {args.concurrency}: {many:7.2f} s  {rate_many:7.2f} tasks/s  "
          f"(ideal {args.concurrency / args.delay:.2f})")
    print(f"  ratio {ratio:.1f}x (target >= {TARGET_RATIO:g}x){'' if ratio >= TARGET_RATIO else '  BELOW TARGET'}")
    print(f"batch_throughput: tasks={args.tasks} delay_ms={args.delay * 1000:.0f} c1={rate_one:.2f}/s c{args.concurrency}={rate_many:.2f}/s ratio={ratio:.1f} "
          f"peak_rss_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
