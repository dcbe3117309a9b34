"""Per-call cost of a tool that lives in an MCP server, next to the same function as a ``@tool``.

The function is ``add(a, b)``. As a ``@tool`` it runs in-process; as an MCP tool it runs in a server
written with the official SDK (``MCPServer``), started over stdio the way a policy's ``[mcp.servers.NAME]``
starts one. Both are called through the agent's registry, as the loop calls tools (arguments checked,
the result turned into an observation), from one event loop, one call after another; the arguments vary
so nothing is cached. For reference the same call is also made with the SDK's own ``Client`` on the same
connection (what MCP itself costs: JSON-RPC over two pipes and the server's work). The calls of the three
ways are interleaved, so a machine busy with other work slows them alike; the median over ``--calls``
calls (after ``--warmup``) is reported. The target is under 5 ms of overhead per call over stdio.

    python benchmarks/mcp_overhead.py [--calls 500] [--warmup 30]

The last line is ``mcp_overhead: tool_ms=X mcp_ms=Y sdk_ms=Z overhead_ms=Y-X ratio=Y/X``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

TARGET_MS = 5.0

SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("bench")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


server.run()
'''


async def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


async def bench(script: Path, calls: int, warmup: int, runs: Path) -> dict[str, list[float]]:
    """Seconds per call of each way. The calls of the three ways are interleaved (a machine busy with other
    work slows them alike), and the SDK's client is the one this project's connection holds (the same server
    process: what differs is only this project's layer)."""
    from agent import Policy, tool
    from agent.mcp.client import MCPTools
    from agent.messages import ToolCall
    from agent.registry import ToolRegistry
    from agent.tool import ToolContext

    server = MCPTools("bench", {"command": sys.executable, "args": [str(script)]})
    registry = ToolRegistry([tool(add), server], policy=Policy(tools={"enabled": []}))
    context = ToolContext(run_id="bench", artifacts_dir=runs, resources=AsyncExitStack())
    times: dict[str, list[float]] = {"tool": [], "mcp": [], "sdk": []}
    try:
        await registry.discover()  # the MCP server starts here and lists its tools
        client = (await server.connection(context)).client
        assert client is not None

        async def through_registry(name: str, i: int) -> None:
            observation = await registry.call(ToolCall(id=f"c{i}", name=name, arguments={"a": i, "b": 2},
                                                       syntax="json"), context)
            if observation.is_error or observation.content != str(i + 2):
                raise RuntimeError(f"unexpected observation: {observation.content!r}")

        async def through_sdk(i: int) -> None:
            result = await client.call_tool("add", {"a": i, "b": 2})
            if result.is_error or result.content[0].text != str(i + 2):
                raise RuntimeError(f"unexpected result: {result}")

        ways = {"tool": lambda i: through_registry("add", i), "mcp": lambda i: through_registry("bench__add", i),
                "sdk": through_sdk}
        for i in range(warmup + calls):
            for way, call in ways.items():
                started = time.perf_counter()
                await call(i)
                if i >= warmup:
                    times[way].append(time.perf_counter() - started)
    finally:
        await context.resources.aclose()
        await registry.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "bench_server.py"
        script.write_text(SERVER)
        times = asyncio.run(bench(script, args.calls, args.warmup, Path(folder) / "runs"))
    tool_ms, mcp_ms, sdk_ms = (statistics.median(times[way]) * 1e3 for way in ("tool", "mcp", "sdk"))
    remote = times["mcp"]
    overhead = mcp_ms - tool_ms
    print(f"{args.calls} calls of add(a, b), median per call:")
    print(f"  @tool, in-process, through the registry:          {tool_ms:8.3f} ms")
    print(f"  MCP tool, server over stdio, through the registry: {mcp_ms:8.3f} ms  "
          f"(p90 {sorted(remote)[int(0.9 * len(remote))] * 1e3:.3f})")
    print(f"  the SDK's Client alone, same server:              {sdk_ms:8.3f} ms  (this project adds "
          f"{mcp_ms - sdk_ms:.3f} ms to MCP)")
    verdict = "within" if overhead < TARGET_MS else "over"
    print(f"overhead {overhead:.3f} ms per call, {verdict} the {TARGET_MS:g} ms target")
    print(f"mcp_overhead: calls={args.calls} transport=stdio tool_ms={tool_ms:.3f} mcp_ms={mcp_ms:.3f} sdk_ms={sdk_ms:.3f} overhead_ms={overhead:.3f} "
          f"ratio={mcp_ms / tool_ms:.1f}")


if __name__ == "__main__":
    main()
