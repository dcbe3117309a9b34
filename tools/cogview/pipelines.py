"""Diffusers pipelines for the ``cogview`` tool: find the weights, load once per process, generate.

Loading a text-to-image model takes seconds to minutes (CogView4-6B is about 32 GB), so a pipeline is
loaded on the first call and kept in :data:`CACHE` for the rest of the process. Each model family has
its own defaults (steps, guidance) and size rules (multiples, pixel limits), in :data:`FAMILIES`.
"""

from __future__ import annotations

import gc
import inspect
import re
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from agent.errors import AgentError
from agent.models.hub import hub_unavailable

from .settings import CogViewSettings


class CogViewError(AgentError):
    """An expected failure of the cogview tool: missing weights, no GPU, a size the model cannot make."""


class Cancelled(Exception):
    """Raised inside a diffusion step when the call was cancelled (the run's wall time ran out)."""


# ---------------------------------------------------------------------------------------------------
# Model families


@dataclass(frozen=True)
class Family:
    """What a family of text-to-image models expects: defaults and size rules."""

    name: str
    steps: int
    guidance: float | None  # None: the pipeline's own default
    multiple: int = 8  # width and height must be multiples of this
    max_pixels: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more keyword arguments for the pipeline call


FAMILIES: dict[str, Family] = {
    # CogView4 and CogView3-Plus: sides divisible by 32, at most 2**21 pixels (model cards).
    "CogView4Pipeline": Family("CogView4", steps=50, guidance=3.5, multiple=32, max_pixels=2**21),
    "CogView3PlusPipeline": Family("CogView3-Plus", steps=50, guidance=7.0, multiple=32, max_pixels=2**21),
    "FluxPipeline": Family("FLUX.1", steps=28, guidance=3.5, multiple=16),
    "StableDiffusion3Pipeline": Family("Stable Diffusion 3", steps=28, guidance=7.0, multiple=16),
    "StableDiffusionXLPipeline": Family("SDXL", steps=30, guidance=5.0),
    "StableDiffusionPipeline": Family("Stable Diffusion", steps=30, guidance=7.5),
}
GENERIC = Family("diffusers", steps=30, guidance=None)
# Distilled models make an image in a few steps and must run without classifier-free guidance.
SCHNELL = Family("FLUX.1-schnell", steps=4, guidance=0.0, multiple=16, extra={"max_sequence_length": 256})


def family_of(pipe: Any, model: str) -> Family:
    name = type(pipe).__name__
    if name == "FluxPipeline" and not getattr(pipe.transformer.config, "guidance_embeds", True):
        return SCHNELL
    family = FAMILIES.get(name, GENERIC)
    if "turbo" in model.lower() and name.startswith("StableDiffusion"):  # sd-turbo, sdxl-turbo
        return Family(f"{family.name} Turbo", steps=1, guidance=0.0, multiple=family.multiple)
    return family


# ---------------------------------------------------------------------------------------------------
# The warm pipeline


@dataclass
class WarmPipeline:
    """A loaded pipeline and what the tool needs to call it."""

    model: str
    pipe: Any
    family: Family
    device: str
    load_s: float
    # Diffusers pipelines keep per-call state (the scheduler's timesteps): one image at a time.
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def multiple(self) -> int:
        denoiser = getattr(self.pipe, "transformer", None) or getattr(self.pipe, "unet", None)
        patch = getattr(getattr(denoiser, "config", None), "patch_size", None) or 1
        return max(self.family.multiple, int(getattr(self.pipe, "vae_scale_factor", 8)) * int(patch))

    @property
    def native_size(self) -> int:
        """The side the model was trained at (what the pipeline uses when no size is given)."""
        scale = int(getattr(self.pipe, "vae_scale_factor", 8))
        sample = getattr(self.pipe, "default_sample_size", None)
        if not isinstance(sample, int):
            denoiser = getattr(self.pipe, "transformer", None) or getattr(self.pipe, "unet", None)
            sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
        return sample * scale if isinstance(sample, int) else 1024

    def size(self, width: int | None, height: int | None, settings: CogViewSettings) -> tuple[int, int]:
        """The size to generate: what was asked, else the policy's default, else the model's native size."""
        native = self._fit(self.native_size, min(settings.max_width, settings.max_height))
        width = width if width is not None else settings.width or native
        height = height if height is not None else settings.height or native
        for side, value, limit in (("width", width, settings.max_width), ("height", height, settings.max_height)):
            if value < self.multiple:
                raise CogViewError(f"The {side} {value} is too small: {self.family.name} needs at least {self.multiple} pixels.")
            if value > limit:
                raise CogViewError(f"The {side} {value} is more than the policy allows ([cogview] max_{side} = {limit}): "
                                   f"ask for at most {self._fit(limit, limit)}.")
            if value % self.multiple:
                lower, upper = value - value % self.multiple, value - value % self.multiple + self.multiple
                raise CogViewError(f"The {side} {value} is not a multiple of {self.multiple}, as {self.family.name} "
                                   f"needs: use {lower} or {upper}.")
        if self.family.max_pixels and width * height > self.family.max_pixels:
            raise CogViewError(f"{width}x{height} is {width * height} pixels, more than {self.family.name} supports "
                               f"({self.family.max_pixels}): ask for a smaller image, e.g. 1024x1024.")
        return width, height

    def _fit(self, side: int, limit: int) -> int:
        side = min(side, limit)
        return max(self.multiple, side - side % self.multiple)

    def call_settings(self, settings: CogViewSettings) -> tuple[int, float | None]:
        """Denoising steps and guidance: the policy's if set, else the family's; steps capped by the policy."""
        steps = min(settings.steps or self.family.steps, settings.max_steps)
        guidance = settings.guidance_scale if settings.guidance_scale is not None else self.family.guidance
        return steps, guidance

    def generate(self, prompt: str, *, width: int, height: int, seed: int, steps: int, guidance: float | None,
                 on_step: Callable[[int, int], None] | None = None,
                 cancelled: threading.Event | None = None) -> Any:
        """One PIL image. ``on_step(done, total)`` after each denoising step; stops at the next step once
        ``cancelled`` is set."""
        import torch

        kwargs: dict[str, Any] = {"prompt": prompt, "width": width, "height": height,
                                  "num_inference_steps": steps, **self.family.extra}
        if guidance is not None:
            kwargs["guidance_scale"] = guidance
        # A CPU generator gives the same image for the same seed on any device.
        kwargs["generator"] = torch.Generator("cpu").manual_seed(seed)
        if "callback_on_step_end" in inspect.signature(self.pipe.__call__).parameters:
            def step_end(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                if on_step is not None:
                    on_step(index + 1, getattr(pipe, "num_timesteps", None) or steps)
                return tensors

            kwargs["callback_on_step_end"] = step_end
        with self.lock:
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            try:
                with torch.inference_mode():
                    return self.pipe(**kwargs).images[0]
            except torch.cuda.OutOfMemoryError:
                raise CogViewError(
                    f"The GPU ran out of memory for a {width}x{height} image with {self.model}: ask for a smaller "
                    "image, or set `[cogview] cpu_offload = true`.") from None


# ---------------------------------------------------------------------------------------------------
# Finding the weights


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")


def locate(model: str) -> Path | str:
    """The local folder of ``model`` (a path, or a Hugging Face id already in the cache), else the id to download."""
    path = Path(model).expanduser()
    if path.exists() or not _HUB_ID.fullmatch(model):
        if not path.is_dir():
            raise CogViewError(f"The model folder {model!r} does not exist: set `[cogview] model` to a diffusers "
                               "pipeline folder or a Hugging Face id such as \"THUDM/CogView4-6B\".")
        if not (path / "model_index.json").is_file():
            raise CogViewError(f"{model!r} is not a diffusers pipeline folder (it has no model_index.json): "
                               "point `[cogview] model` at a folder saved with `save_pretrained`.")
        return path
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except LocalEntryNotFoundError:
        why = hub_unavailable()
        if why:
            raise missing_weights(model, why) from None
        return model


def missing_weights(model: str, why: str) -> CogViewError:
    return CogViewError(f"The weights of {model!r} are not on this machine and cannot be downloaded ({why}): "
                        f"download them once with `hf download {model}`, or set `[cogview] model = "
                        "\"/path/to/pipeline\"` to a local diffusers folder.")


_VARIANT = re.compile(r"\.(fp16|bf16|fp32|non_ema|ema_only)\.(safetensors|bin)$")


def estimate_weights(files: Iterable[tuple[str, int]]) -> int:
    """Bytes a pipeline loads, from (relative path, size) pairs: one format and one variant per component."""
    folders: dict[PurePosixPath, list[tuple[str, int]]] = {}
    for name, size in files:
        folders.setdefault(PurePosixPath(name).parent, []).append((PurePosixPath(name).name, size))
    total = 0
    for entries in folders.values():
        for suffix in (".safetensors", ".bin"):
            weights = [(n, s) for n, s in entries if n.endswith(suffix)]
            if weights:
                plain = [(n, s) for n, s in weights if not _VARIANT.search(n)] or weights
                total += sum(s for _, s in plain)
                break
    return total


def weights_bytes(source: Path | str) -> int | None:
    """Size of a pipeline's weights: from disk for a folder, from the Hub's file list for an id (None if unknown)."""
    if isinstance(source, Path):
        return estimate_weights((p.relative_to(source).as_posix(), p.stat().st_size)
                                for p in source.rglob("*") if p.is_file())
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(source, files_metadata=True)
        return estimate_weights((s.rfilename, s.size or 0) for s in info.siblings or [])
    except Exception:  # no network or no such repo: loading will say so
        return None


# ---------------------------------------------------------------------------------------------------
# Loading


def load(settings: CogViewSettings, on_status: Callable[[str], None] | None = None) -> WarmPipeline:
    """Load the policy's model: bf16 on CUDA (or offloaded to the CPU between parts), float32 on the CPU."""
    import torch

    model = settings.model
    source = locate(model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        size = weights_bytes(source)
        if size is not None and size > settings.cpu_max_gb * 1e9:
            raise CogViewError(
                f"{model!r} has about {size / 1e9:.0f} GB of weights and this machine has no GPU, which would take "
                "hours: run on a CUDA GPU (with `[cogview] cpu_offload = true` if it has less memory than that), "
                "choose a smaller model such as `[cogview] model = \"stabilityai/sd-turbo\"`, or raise "
                "`[cogview] cpu_max_gb` to run it on the CPU anyway.")
    if on_status is not None:
        on_status(f"loading {model}")
    started = time.perf_counter()
    pipe = _from_pretrained(model, source, torch.bfloat16 if device == "cuda" else torch.float32)
    if "prompt" not in inspect.signature(pipe.__call__).parameters:
        raise CogViewError(f"{model!r} is a {type(pipe).__name__}, which does not make images from text: "
                           "set `[cogview] model` to a text-to-image pipeline.")
    pipe.set_progress_bar_config(disable=True)  # progress goes to the agent's events instead
    if device == "cuda":
        try:
            if settings.cpu_offload:
                pipe.enable_model_cpu_offload()
            else:
                pipe.to("cuda")
        except torch.cuda.OutOfMemoryError:
            raise CogViewError(f"{model!r} does not fit in the GPU's memory: set `[cogview] cpu_offload = true` "
                               "or choose a smaller model.") from None
    return WarmPipeline(model=model, pipe=pipe, family=family_of(pipe, model), device=device,
                        load_s=time.perf_counter() - started)


def _from_pretrained(model: str, source: Path | str, dtype: Any) -> Any:
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older ones know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            try:  # the text-to-image pipeline of the family, even for a folder saved from img2img
                return AutoPipelineForText2Image.from_pretrained(source, torch_dtype=dtype)
            except ValueError:  # a pipeline class AutoPipeline does not map: load what model_index.json names
                return DiffusionPipeline.from_pretrained(source, torch_dtype=dtype)
    except (OSError, ConnectionError) as exc:
        if isinstance(source, str):  # a download that failed
            raise missing_weights(model, "the Hugging Face Hub cannot be reached") from exc
        raise CogViewError(f"Could not load the pipeline in {str(source)!r} ({exc}): check that the folder is "
                           "complete, or set `[cogview] model` to another one.") from exc


class PipelineCache:
    """Pipelines loaded once per process, by model and placement; concurrent first calls load once."""

    def __init__(self) -> None:
        self._warm: dict[tuple[str, bool], WarmPipeline] = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times a pipeline was loaded (tests and benchmarks check it)

    def get(self, settings: CogViewSettings, on_status: Callable[[str], None] | None = None) -> WarmPipeline:
        key = (settings.model, settings.cpu_offload)
        warm = self._warm.get(key)
        if warm is None:
            with self._lock:
                warm = self._warm.get(key)
                if warm is None:
                    warm = load(settings, on_status)
                    self._warm[key] = warm
                    self.loads += 1
        return warm

    def __contains__(self, model: str) -> bool:
        return any(key[0] == model for key in self._warm)

    def release(self, model: str | None = None) -> None:
        """Drop the pipelines of ``model`` (all when None) and give their GPU memory back."""
        with self._lock:
            for key in [k for k in self._warm if model is None or k[0] == model]:
                del self._warm[key]
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


CACHE = PipelineCache()
