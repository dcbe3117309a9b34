"""``agent serve`` under load: 50 concurrent sessions against the fake served GLM-4, next to ``astream``.

Each session runs one turn of two steps: the model calls a trivial ``add`` tool, then answers in
about 30 streamed words, so a turn is ~40 events. The fake model (``tests/fake_glm_server.py``, on
loopback, in this process) answers at once, so what is measured is the framework and the server.

- **serve**: ``agent serve`` runs as a child process (``--backend completions``); 50 clients (httpx, in
  another child process) each create a session, open its event stream (SSE), post the task and read to
  ``run_finished``, all at once.
- **direct**: a child process runs the same agent and 50 ``ChatSession.astream`` turns at once, in
  process: what the same work costs without HTTP, SSE and JSON.

Reported: p50/p95 time to first event (from sending the task to its first event arriving), events per
second over the whole load, and the server's overhead per event: the difference of the two wall times
divided by the events delivered (both sides do the same model calls and tool calls).

    python benchmarks/serve_load.py [--sessions 50] [--rounds 3]

The last line is ``serve_load: sessions=N p50_first_event_ms=... p95_first_event_ms=... events_per_s=...
direct_events_per_s=... overhead_ms_per_event=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TOOLS = '''from agent import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b
'''
ANSWER = ("\n2 + 3 = 5. " + "This sentence is here so that the answer streams as many small tokens, as a model's "
          "answer does, word after word, until it ends.")


def reply(request):
    """The fake model: a call to ``add`` first, the answer once the observation is in the prompt."""
    last_turn = request.prompt.rsplit("<|user|>", 1)[-1]
    return ANSWER if "<|observation|>" in last_turn else 'add\n{"a": 2, "b": 3}'


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


# ---------------------------------------------------------------------------------------------------
# direct: astream in a child process


async def direct(url: str, model: str, tools_file: str, sessions: int) -> dict:
    from agent import Agent
    from agent.cli import load_tools_module
    from agent.models import CompletionsModel

    with tempfile.TemporaryDirectory() as runs:
        agent = Agent(model=CompletionsModel(url, model), tools=load_tools_module(tools_file), runs_dir=runs)
        firsts: list[float] = []

        async def one() -> int:
            count = 0
            async with agent.chat() as session:
                started = time.perf_counter()
                async for _ in session.astream("What is 2+3?"):
                    if not count:
                        firsts.append(time.perf_counter() - started)
                    count += 1
            return count

        await asyncio.gather(*(one() for _ in range(5)))  # warm up: connections, imports
        firsts.clear()
        started = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(sessions)))
        wall = time.perf_counter() - started
        await agent.aclose()
    return {"wall_s": wall, "events": sum(counts), "firsts": firsts}


# ---------------------------------------------------------------------------------------------------
# serve: HTTP clients against `agent serve` in a child process


async def load(base: str, sessions: int) -> dict:
    import httpx

    firsts: list[float] = []

    async def one(client: httpx.AsyncClient) -> int:
        created = (await client.post("/api/sessions")).json()["id"]
        count = 0
        async with client.stream("GET", f"/api/sessions/{created}/events") as stream:
            started = time.perf_counter()
            await client.post(f"/api/sessions/{created}/messages", json={"text": "What is 2+3?"})
            async for line in stream.aiter_lines():
                if not line.startswith("data:"):
                    continue
                if not count:
                    firsts.append(time.perf_counter() - started)
                count += 1
                if json.loads(line[5:])["type"] == "run_finished":
                    break
        await client.delete(f"/api/sessions/{created}")
        return count

    limits = httpx.Limits(max_connections=4 * sessions, max_keepalive_connections=4 * sessions)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        await asyncio.gather(*(one(client) for _ in range(5)))  # warm up
        firsts.clear()
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(client) for _ in range(sessions)))
        wall = time.perf_counter() - started
    return {"wall_s": wall, "events": sum(counts), "firsts": firsts}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_round(url: str, model: str, tools_file: str, sessions: int) -> dict:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as cwd:
        server = subprocess.Popen([sys.executable, "-m", "agent", "serve", "--port", str(port), "--base-url", url,
                                   "--model", model, "--backend", "completions", "--tools", "none",
                                   "--tools-module", tools_file, "--max-sessions", str(sessions + 10)],
                                  cwd=cwd, env=env, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(base + "/api/info", timeout=5)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("agent serve did not start")
                    time.sleep(0.2)
            # the clients in a process of their own too, so this one serves only the fake model on both sides
            out = subprocess.run([sys.executable, __file__, "--child-load", base, str(sessions)], env=env,
                                 capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
            server.wait(30)


def direct_round(url: str, model: str, tools_file: str, sessions: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run([sys.executable, __file__, "--child-direct", url, model, tools_file, str(sessions)],
                             cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="each side is timed this often; the median round counts")
    parser.add_argument("--child-direct", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--child-load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load:
        print(json.dumps(asyncio.run(load(args.child_load[0], int(args.child_load[1])))))
        return
    if args.child_direct:
        url, model, tools_file, sessions = args.child_direct
        print(json.dumps(asyncio.run(direct(url, model, tools_file, int(sessions)))))
        return

    from fake_glm_server import FakeGLMServer

    with FakeGLMServer() as fake, tempfile.TemporaryDirectory() as folder:
        fake.script(reply)
        tools_file = str(Path(folder) / "bench_tools.py")
        Path(tools_file).write_text(TOOLS)
        serve_rounds, direct_rounds = [], []
        for _ in range(args.rounds):  # interleaved, so a busy moment of the machine hits both sides
            serve_rounds.append(serve_round(fake.url, fake.model, tools_file, args.sessions))
            direct_rounds.append(direct_round(fake.url, fake.model, tools_file, args.sessions))
            fake.requests.clear()
    serve = sorted(serve_rounds, key=lambda r: r["wall_s"])[len(serve_rounds) // 2]
    base = sorted(direct_rounds, key=lambda r: r["wall_s"])[len(direct_rounds) // 2]
    events = serve["events"]
    overhead_ms = (serve["wall_s"] - base["wall_s"]) / events * 1000
    print(f"serve:  {args.sessions} sessions, {events} events in {serve['wall_s']:.2f} s "
          f"({events / serve['wall_s']:.0f} events/s); first event p50 {statistics.median(serve['firsts']) * 1000:.1f} ms, "
          f"p95 {percentile(serve['firsts'], 0.95) * 1000:.1f} ms")
    print(f"direct: {args.sessions} astream turns, {base['events']} events in {base['wall_s']:.2f} s "
          f"({base['events'] / base['wall_s']:.0f} events/s); first event p50 "
          f"{statistics.median(base['firsts']) * 1000:.1f} ms, p95 {percentile(base['firsts'], 0.95) * 1000:.1f} ms")
    print(f"serve_load: sessions={args.sessions} p50_first_event_ms={statistics.median(serve['firsts']) * 1000:.1f} "
          f"p95_first_event_ms={percentile(serve['firsts'], 0.95) * 1000:.1f} "
          f"events_per_s={events / serve['wall_s']:.0f} direct_events_per_s={base['events'] / base['wall_s']:.0f} "
          f"overhead_ms_per_event={overhead_ms:.3f}")


if __name__ == "__main__":
    main()
