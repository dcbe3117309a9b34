"""Sandbox latency: raw, unsandboxed jupyter_client vs our sandboxed kernels, side by side.

    python benchmarks/sandbox_latency.py [--runs 200] [--tiers bwrap landlock]

Measures, in one run: cold start (process start until the kernel answers), claiming a kernel
from the warm pool, and a trivial cell (``1+1``) p50/p95. Targets (issue 4): warm cell within
1.3x of raw; pool claim under 50 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

from jupyter_client import KernelManager

from sandbox import Kernel, KernelPool, SandboxSettings, tier_problem


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


# ----------------------------------------------------------------------------------------------
# raw jupyter_client: the textbook way to run a cell (execute, read iopub to idle, read the reply)


def raw_cold_start() -> tuple[float, KernelManager, object]:
    start = time.perf_counter()
    manager = KernelManager(transport="ipc")
    # The same IPython settings as our kernels, so that the ratio is the sandbox's cost alone.
    manager.start_kernel(extra_arguments=["--HistoryManager.hist_file=:memory:"])
    client = manager.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return time.perf_counter() - start, manager, client


def raw_cell(client, code: str = "1+1") -> None:
    msg_id = client.execute(code)
    while True:
        msg = client.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    while client.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass


def raw_close(manager: KernelManager, client) -> None:
    client.stop_channels()
    manager.shutdown_kernel(now=True)


# ----------------------------------------------------------------------------------------------
# ours


def our_cold_start(settings: SandboxSettings, tier: str) -> tuple[float, Kernel]:
    kernel = Kernel(settings, tier)
    start = time.perf_counter()
    kernel.start()
    return time.perf_counter() - start, kernel


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


def interleaved_cells(runners: dict[str, object], runs: int, warmup: int = 20) -> dict[str, list[float]]:
    """Time cells round-robin across kernels, so that machine noise hits every one alike."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for i in range(warmup + runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if i >= warmup:
                samples[name].append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="cells per kernel")
    parser.add_argument("--starts", type=int, default=3, help="cold starts per kind (median)")
    parser.add_argument("--claims", type=int, default=5, help="pool claims per tier (median)")
    parser.add_argument("--tiers", nargs="*", default=["bwrap", "landlock"])
    args = parser.parse_args()
    ms = lambda seconds: f"{seconds * 1000:6.1f} ms"  # noqa: E731

    tiers = []
    for tier in args.tiers:
        if tier_problem(tier):
            print(f"sandbox {tier:8}: skipped, cannot run here: {tier_problem(tier)}")
        else:
            tiers.append(tier)
    settings = {tier: SandboxSettings(isolation=tier, pool_size=1, preload=[]) for tier in tiers}

    colds: dict[str, list[float]] = {"raw": [], **{tier: [] for tier in tiers}}
    for _ in range(args.starts):
        cold, manager, client = raw_cold_start()
        colds["raw"].append(cold)
        raw_close(manager, client)
        for tier in tiers:
            cold, kernel = our_cold_start(settings[tier], tier)
            colds[tier].append(cold)
            kernel.close()
    claims = {tier: statistics.median(our_claims(settings[tier], args.claims)) for tier in tiers}

    _, manager, client = raw_cold_start()
    kernels = {tier: our_cold_start(settings[tier], tier)[1] for tier in tiers}
    runners = {"raw": lambda: raw_cell(client), **{tier: (lambda k=k: k.execute("1+1")) for tier, k in kernels.items()}}
    cells = {name: percentiles(samples) for name, samples in interleaved_cells(runners, args.runs).items()}
    raw_close(manager, client)
    for kernel in kernels.values():
        kernel.close()

    raw_cold, (raw_p50, raw_p95) = statistics.median(colds["raw"]), cells["raw"]
    print(f"raw jupyter_client (ipc, no sandbox): cold start {ms(raw_cold)} | 1+1 p50 {ms(raw_p50)}  p95 {ms(raw_p95)}"
          f"   ({args.runs} cells each, interleaved)")
    for tier in tiers:
        cold, (p50, p95) = statistics.median(colds[tier]), cells[tier]
        print(f"sandbox {tier:8}: cold start {ms(cold)} ({cold / raw_cold:.2f}x raw) | "
              f"pool claim {claims[tier] * 1000:.3f} ms (target < 50 ms) | "
              f"1+1 p50 {ms(p50)} ({p50 / raw_p50:.2f}x)  p95 {ms(p95)} ({p95 / raw_p95:.2f}x)  (target p50 <= 1.3x)")

    # One machine-readable line, for the strongest tier that ran (tiers are listed strongest first).
    strongest = next((tier for tier in ("bwrap", "landlock") if tier in tiers), tiers[0] if tiers else None)
    if strongest is None:
        print(f"sandbox_latency: tier=none raw_p50_ms={raw_p50 * 1000:.3f} raw_cold_ms={raw_cold * 1000:.1f}")
        return
    cold, (p50, _) = statistics.median(colds[strongest]), cells[strongest]
    print(f"sandbox_latency: tier={strongest} raw_p50_ms={raw_p50 * 1000:.3f} ours_p50_ms={p50 * 1000:.3f} "
          f"p50_ratio={p50 / raw_p50:.2f} claim_ms={claims[strongest] * 1000:.3f} "
          f"cold_start_ratio={cold / raw_cold:.2f}")


if __name__ == "__main__":
    main()
