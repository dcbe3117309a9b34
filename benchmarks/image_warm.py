"""Warm pipelines for ``cogview``: the first call loads the model, later calls only generate.

Tiny part (always; on the CPU, or bf16 on CUDA where there is one): a tiny CogView4 pipeline saved to a temporary folder and loaded by path through
the tool's real code. Ours is one tool whose pipeline stays warm; the baseline is what a tool without
the cache pays on every call (load, then generate). After the first call (which also pays imports and
is shown apart), warm and reloading calls are interleaved, ``--reps`` of each, in the same process, so
both are timed after the same imports. The summary's ratio is reload ÷ warm: how much slower each call
is when the pipeline is loaded for it, i.e. what the cache saves per call on this tiny pipeline (for
the real model loading takes minutes and generating seconds, so the saving is far larger there).

GPU part (``--gpu``, needs CUDA): seconds per 1024x1024 image with a random-weight pipeline of
CogView4-6B's shape in bf16 (its 6B transformer and VAE; a 2-layer text encoder of the real width),
50 steps with classifier-free guidance as CogView4 runs by default. Compute does not depend on the
weights' values. Ours (``WarmPipeline.generate``: step callbacks, cancellation check, lock) is timed
next to a bare ``pipe(...)`` call.

    python benchmarks/image_warm.py [--reps 5] [--steps 4] [--gpu] [--gpu-steps 50] [--gpu-reps 1]

Last lines: ``image_warm: ... warm_s=... reload_s=... reload_over_warm=... first_s=... loads=1`` and, with ``--gpu``,
``image_warm_gpu: s_per_image=... bare_s_per_image=... ratio=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def timed_call(tool, context, prompt: str) -> float:
    started = time.perf_counter()
    asyncio.run(tool.forward(prompt, seed=0, context=context))
    return time.perf_counter() - started


def cpu_part(reps: int, steps: int) -> None:
    from agent.policy import Policy
    from agent.tool import ToolContext
    from tools.cogview import CogViewTool, PipelineCache
    from tools.cogview.testing import save_tiny_cogview4

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_cogview4(Path(tmp) / "tiny-cogview4")
        policy = Policy(cogview={"model": str(folder), "steps": steps})
        context = ToolContext(run_id="bench", artifacts_dir=Path(tmp) / "run", policy=policy)

        cache = PipelineCache()
        ours = CogViewTool(policy=policy, cache=cache)
        first = timed_call(ours, context, "A lighthouse at dawn")
        warm, reloads = [], []
        for _ in range(reps):  # interleaved; the baseline: a fresh cache, so every call loads the pipeline again
            warm.append(timed_call(ours, context, "A lighthouse at dawn"))
            reloads.append(timed_call(CogViewTool(policy=policy, cache=PipelineCache()), context,
                                      "A lighthouse at dawn"))
        second, reload = statistics.median(warm), statistics.median(reloads)

    device = cache.get(policy.cogview).device
    print(f"image_warm: tiny CogView4 on {device}, 32x32, {steps} steps, median of {reps}")
    print(f"  first call (loads the pipeline)          {first:8.3f} s")
    print(f"  later calls, warm pipeline (ours)        {second:8.3f} s   pipeline loads: {cache.loads}")
    print(f"  every call loads the pipeline (baseline) {reload:8.3f} s   {reload / second:.1f}x slower than warm")
    print(f"image_warm: device={device} size=32 steps={steps} reps={reps} warm_s={second:.3f} reload_s={reload:.3f} "
          f"reload_over_warm={reload / second:.1f} (what loading per call costs; like with like, after imports) "
          f"first_s={first:.3f} (includes imports) loads={cache.loads}")
    if cache.loads != 1:
        raise SystemExit("the warm calls reloaded the pipeline")


def gpu_part(steps: int, reps: int, size: int) -> None:
    import torch

    from tools.cogview.pipelines import FAMILIES, WarmPipeline
    from tools.cogview.testing import random_cogview4

    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs a CUDA device")
    started = time.perf_counter()
    pipe = random_cogview4("cuda", torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    params = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"image_warm_gpu: {torch.cuda.get_device_name(0)}, random CogView4-6B shape "
          f"({params / 1e9:.2f}B transformer params, bf16), built in {time.perf_counter() - started:.0f} s")
    warm = WarmPipeline(model="random-cogview4-6b", pipe=pipe, family=FAMILIES["CogView4Pipeline"], device="cuda",
                        load_s=0.0)
    prompt = "A vibrant cherry red sports car under the gleaming sun, polished and flawless, on a coastal road."
    kwargs = dict(width=size, height=size, seed=0, steps=steps, guidance=3.5)

    def clock(fn) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    warm.generate(prompt, **{**kwargs, "steps": 2})  # kernels, allocator and autotuning warm-up
    torch.cuda.reset_peak_memory_stats()
    bare = [clock(lambda: pipe(prompt=prompt, width=size, height=size, num_inference_steps=steps, guidance_scale=3.5,
                               generator=torch.Generator("cpu").manual_seed(0))) for _ in range(reps)]
    ours = [clock(lambda: warm.generate(prompt, on_step=lambda done, total: None, **kwargs)) for _ in range(reps)]
    s_ours, s_bare = statistics.median(ours), statistics.median(bare)
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"  {size}x{size}, {steps} steps, guidance 3.5: ours {s_ours:.2f} s/image ({s_ours / steps * 1000:.0f} ms/step), "
          f"bare pipe() {s_bare:.2f} s/image; peak GPU memory {peak:.1f} GiB")
    print(f"image_warm_gpu: s_per_image={s_ours:.2f} bare_s_per_image={s_bare:.2f} ratio={s_ours / s_bare:.3f} "
          f"peak_gib={peak:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--gpu", action="store_true", help="also time 1024x1024 images on a CUDA GPU")
    parser.add_argument("--gpu-only", action="store_true", help="skip the CPU part")
    parser.add_argument("--gpu-steps", type=int, default=50)
    parser.add_argument("--gpu-reps", type=int, default=1)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    if not args.gpu_only:
        cpu_part(args.reps, args.steps)
    if args.gpu or args.gpu_only:
        gpu_part(args.gpu_steps, args.gpu_reps, args.size)


if __name__ == "__main__":
    main()
