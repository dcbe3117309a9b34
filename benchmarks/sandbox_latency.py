"""Sandbox latency: raw, unsandboxed jupyter_client vs our sandboxed kernels, side by side.

    python benchmarks/sandbox_latency.py [--samples 5] [--runs 200] [--tiers bwrap landlock]

Both sides are held to the same tests, and their samples are interleaved (raw, ours, raw, ours...)
so that the machine's noise hits them alike:

- cold start: process start until a ``1+1`` cell has returned its result, no modules preloaded;
- first result, empty pool: a pool made with nothing warm, claimed at once, until ``1+1`` returns,
  with the default preload (raw: its cold start, which preloads nothing);
- refill: after a claim, until the pool has a kernel that answers again, and until that kernel has
  imported the default preload (raw: a cold start plus a cell importing the same modules);
- memory of one kernel with the default preload imported: PSS of its processes (raw: of the kernel);
- a trivial cell, ``1+1``, p50/p95 over ``--runs`` cells; claiming a warm kernel.

Targets (issues 4 and 19): cold start within 1.3x of raw; warm cell within 1.3x of raw; pool claim
under 50 ms; memory and refill lower than the 159 MiB and 1.4 s measured before issue 19.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from functools import partial
from pathlib import Path
from queue import Empty
from typing import Callable

from jupyter_client import KernelManager

from sandbox import Kernel, KernelPool, SandboxSettings, tier_problem

PRELOAD = SandboxSettings().preload  # the default policy's


def spread(samples: list[float], scale: float = 1000.0, unit: str = "ms") -> str:
    """min/median/max of the samples, for people."""
    low, mid, high = (value * scale for value in (min(samples), statistics.median(samples), max(samples)))
    return f"{mid:7.1f} {unit} (min {low:.1f}, max {high:.1f})"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def import_cell(modules: list[str]) -> str:
    """A cell that returns once the modules are imported (it waits for an import another thread is doing)."""
    return f"import {', '.join(modules)}\n1+1"


# ----------------------------------------------------------------------------------------------
# process memory: PSS counts a page shared by n processes as 1/n, so shared libraries are not counted twice


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rfind(b")") + 2:].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def pss_mib(pids: list[int]) -> float:
    total_kib = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            pass
    return total_kib / 1024


# ----------------------------------------------------------------------------------------------
# raw jupyter_client: the textbook way to run a cell (execute, read iopub to idle, read the reply)


class Raw:
    """A plain ``ipykernel`` started by jupyter_client, with the same IPython settings as ours."""

    def __init__(self) -> None:
        self.manager = KernelManager(transport="ipc")
        self.manager.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"])
        self.client = self.manager.blocking_client()
        self.client.start_channels()

    def wait_until_answering(self) -> None:
        """Our kernels' readiness test (``Kernel._wait_ready``), here too: a ``kernel_info`` reply, and
        iopub carrying messages (a new subscriber misses the first ones); asked again at the first sign
        of life on iopub, and every 0.5 s (0.2 s once replied)."""
        msg_id, asked = self.client.kernel_info(), time.monotonic()
        replied = iopub_works = False
        while not (replied and iopub_works):
            came_up = False
            with contextlib.suppress(Empty):
                while True:
                    self.client.get_iopub_msg(timeout=0)
                    came_up, iopub_works = came_up or not iopub_works, True
            with contextlib.suppress(Empty):
                replied |= self.client.get_shell_msg(timeout=0.05)["parent_header"].get("msg_id") == msg_id
            if (came_up and not replied) or time.monotonic() - asked > (0.2 if replied else 0.5):
                msg_id, asked, replied = self.client.kernel_info(), time.monotonic(), False

    def cell(self, code: str = "1+1") -> str | None:
        """Run a cell; returns its result once the kernel is idle and has replied."""
        msg_id, result = self.client.execute(code), None
        while True:
            msg = self.client.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                result = msg["content"]["data"]["text/plain"]
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        while self.client.get_shell_msg(timeout=60)["parent_header"].get("msg_id") != msg_id:
            pass
        return result

    def memory_mib(self) -> float:
        provisioner = self.manager.provisioner
        return pss_mib(tree(provisioner.process.pid))  # type: ignore[union-attr]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def raw_cold_start() -> float:
    start = time.perf_counter()
    raw = Raw()
    raw.wait_until_answering()
    assert raw.cell("1+1") == "2"
    took = time.perf_counter() - start
    raw.close()
    return took


def raw_preloaded() -> tuple[float, float]:
    """A cold start plus the default preload: its time, and the kernel's memory then."""
    start = time.perf_counter()
    raw = Raw()
    raw.wait_until_answering()
    assert raw.cell(import_cell(PRELOAD)) == "2"
    took = time.perf_counter() - start
    memory = raw.memory_mib()
    raw.close()
    return took, memory


# ----------------------------------------------------------------------------------------------
# ours


def our_cold_start(settings: SandboxSettings, tier: str) -> float:
    kernel = Kernel(settings, tier)
    start = time.perf_counter()
    kernel.start()
    assert kernel.execute("1+1").result == "2"
    took = time.perf_counter() - start
    kernel.close()
    return took


def our_first_result(settings: SandboxSettings) -> float:
    """An empty pool, claimed at once: until the first ``1+1`` returns."""
    start = time.perf_counter()
    with KernelPool(settings, size=1) as pool:
        kernel = pool.claim()
        assert kernel.execute("1+1").result == "2"
        took = time.perf_counter() - start
        kernel.close()
    return took


def our_refill(settings: SandboxSettings) -> tuple[float, float, float]:
    """Claim from a warm pool; until it has a kernel that answers again, until that kernel has its
    preload imported, and that kernel's memory then (PSS of its processes)."""
    with KernelPool(settings, size=1) as pool:
        pool.claim().close()  # the first kernel: warm the pool's caches as a long-lived pool has them
        while not pool.ready:
            time.sleep(0.005)
        # As between sessions, the warm kernel has finished its own preload (a peek into the pool).
        pool._ready[0].execute(import_cell(settings.preload))
        start = time.perf_counter()
        first = pool.claim()
        while not pool.ready:
            time.sleep(0.005)
        answering = time.perf_counter() - start
        kernel = pool.claim()
        assert kernel.execute(import_cell(settings.preload)).result == "2"
        preloaded = time.perf_counter() - start
        time.sleep(0.2)  # let the preload finish tidying up
        assert kernel._proc is not None
        memory = pss_mib(tree(kernel._proc.pid))
        kernel.close()
        first.close()
    return answering, preloaded, memory


def our_claims(settings: SandboxSettings, claims: int) -> list[float]:
    samples = []
    with KernelPool(settings, size=1) as pool:
        for _ in range(claims):
            while not pool.ready:  # let the pool warm a kernel, as it does between sessions
                time.sleep(0.05)
            start = time.perf_counter()
            kernel = pool.claim()
            samples.append(time.perf_counter() - start)
            kernel.close()
    return samples


def interleave(sides: dict[str, Callable[[], object]], samples: int) -> dict[str, list]:
    """Run each side ``samples`` times, round-robin, so that machine noise hits every side alike."""
    results: dict[str, list] = {name: [] for name in sides}
    for _ in range(samples):
        for name, run in sides.items():
            results[name].append(run())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=5, help="samples of each start measurement, per side")
    parser.add_argument("--runs", type=int, default=200, help="1+1 cells per kernel")
    parser.add_argument("--claims", type=int, default=5, help="pool claims per tier")
    parser.add_argument("--tiers", nargs="*", default=["bwrap", "landlock"])
    args = parser.parse_args()

    tiers = []
    for tier in args.tiers:
        if tier_problem(tier):
            print(f"sandbox {tier:8}: skipped, cannot run here: {tier_problem(tier)}")
        else:
            tiers.append(tier)
    bare = {tier: SandboxSettings(isolation=tier, preload=[]) for tier in tiers}
    preloading = {tier: SandboxSettings(isolation=tier) for tier in tiers}  # the default preload
    print(f"{args.samples} samples per side, interleaved; default preload {PRELOAD}; load average "
          f"{os.getloadavg()[0]:.2f}; median (min, max)")

    colds = interleave({"raw": raw_cold_start, **{tier: partial(our_cold_start, bare[tier], tier) for tier in tiers}},
                       args.samples)
    firsts = interleave({tier: partial(our_first_result, preloading[tier]) for tier in tiers}, args.samples)
    refills = interleave({"raw": raw_preloaded, **{tier: partial(our_refill, preloading[tier]) for tier in tiers}},
                         args.samples)
    claims = {tier: our_claims(bare[tier], args.claims) for tier in tiers}

    raw = Raw()
    raw.wait_until_answering()
    kernels = {tier: Kernel(bare[tier], tier).start() for tier in tiers}
    cell_sides: dict[str, Callable[[], object]] = {
        "raw": raw.cell, **{tier: partial(kernel.execute, "1+1") for tier, kernel in kernels.items()}}
    warmup = interleave(cell_sides, 20)  # noqa: F841 (discarded)
    cells = {name: percentiles(samples) for name, samples in
             interleave({name: _timed(run) for name, run in cell_sides.items()}, args.runs).items()}
    raw.close()
    for kernel in kernels.values():
        kernel.close()

    raw_cold = statistics.median(colds["raw"])
    raw_pre, raw_mem = [r[0] for r in refills["raw"]], [r[1] for r in refills["raw"]]
    raw_p50, raw_p95 = cells["raw"]
    print(f"raw jupyter_client (ipc, no sandbox): cold start to 1+1 {spread(colds['raw'])} | cold start + preload "
          f"{spread(raw_pre)}, {statistics.median(raw_mem):.0f} MiB PSS | 1+1 p50 {raw_p50 * 1000:.2f} ms  "
          f"p95 {raw_p95 * 1000:.2f} ms")
    summary = {}
    for tier in tiers:
        cold = statistics.median(colds[tier])
        answering = [r[0] for r in refills[tier]]
        preloaded = [r[1] for r in refills[tier]]
        memory = [r[2] for r in refills[tier]]
        p50, p95 = cells[tier]
        first = statistics.median(firsts[tier])
        print(f"sandbox {tier:8}: cold start to 1+1 {spread(colds[tier])} ({cold / raw_cold:.2f}x raw, target <= 1.3x)\n"
              f"  first 1+1 from an empty pool, default preload {spread(firsts[tier])} ({first / raw_cold:.2f}x raw "
              f"cold start)\n"
              f"  refill: answering again {spread(answering)}, preload imported {spread(preloaded)} "
              f"({statistics.median(preloaded) / statistics.median(raw_pre):.2f}x raw cold start + preload)\n"
              f"  memory of a preloaded kernel {spread(memory, 1, 'MiB')} PSS "
              f"({statistics.median(memory) / statistics.median(raw_mem):.2f}x raw)\n"
              f"  pool claim {statistics.median(claims[tier]) * 1000:.3f} ms (target < 50 ms) | 1+1 p50 "
              f"{p50 * 1000:.2f} ms ({p50 / raw_p50:.2f}x)  p95 {p95 * 1000:.2f} ms ({p95 / raw_p95:.2f}x)")
        summary[tier] = (f"cold_start_ratio={cold / raw_cold:.2f} first_result_ms={first * 1000:.0f} "
                         f"refill_ms={statistics.median(answering) * 1000:.0f} "
                         f"refill_preloaded_ms={statistics.median(preloaded) * 1000:.0f} "
                         f"kernel_mib={statistics.median(memory):.0f} p50_ratio={p50 / raw_p50:.2f} "
                         f"claim_ms={statistics.median(claims[tier]) * 1000:.3f}")

    # One machine-readable line, for the strongest tier that ran (tiers are listed strongest first).
    params = f"samples={args.samples} runs={args.runs} preload={len(PRELOAD)}"
    strongest = next((tier for tier in ("bwrap", "landlock") if tier in tiers), None)
    if strongest is None:
        print(f"sandbox_latency: tier=none {params} raw_cold_ms={raw_cold * 1000:.0f}")
        return
    print(f"sandbox_latency: tier={strongest} {params} raw_cold_ms={raw_cold * 1000:.0f} {summary[strongest]}")


def _timed(run: Callable[[], object]) -> Callable[[], float]:
    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start
    return timed


if __name__ == "__main__":
    main()
