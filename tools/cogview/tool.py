"""The ``cogview`` tool: GLM-4 describes an image in English, a local diffusers pipeline draws it."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import threading
from typing import Any, ClassVar

from agent.doctor import Finding, weights_finding
from agent.policy import Policy
from agent.protocol.near_json import parse_json_arguments, strip_fence
from agent.runtime import current_runtime
from agent.tool import Tool, ToolContext, ToolOutput

from .pipelines import CACHE, CogViewError, PipelineCache
from .settings import CogViewSettings

MAX_SEED = 2**32 - 1


class CogViewTool(Tool):
    """Text-to-image on diffusers (CogView4-6B by default), loaded on the first call and kept warm.

    Each image is saved as a PNG under the run's directory, with its prompt, seed and model in the
    PNG's text metadata; the model reads a ``cogview_result`` observation.
    """

    name: ClassVar[str] = "cogview"
    builtin: ClassVar[str | None] = "cogview"
    builtin_prompt = (
        "如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。你需要向 `cogview` 发送图像描述，规则：\n"
        "- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n"
        "- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n"
        "- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n"
        "- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。"
    )  # glm-4-9b-chat's own words, from its chat template
    usage = "Send an English description of the image."
    section, settings_model = "cogview", CogViewSettings
    description: ClassVar[str] = "Generate an image from a detailed English description."

    def __init__(self, policy: Policy | None = None, cache: PipelineCache | None = None):
        self.policy = policy
        self.cache = cache or CACHE  # process-wide, so every agent in the process shares warm pipelines
        self._models: set[str] = set()  # what this tool loaded or used, for unload()

    @classmethod
    def doctor(cls, policy: Policy) -> list[Finding]:
        return [weights_finding("cogview weights", policy.cogview.model, "model_index.json",
                                "or set [cogview] model to a local folder")]

    def parse_body(self, body: str) -> dict[str, Any]:
        """GLM-4 sends a plain English description; JSON ``{"prompt": ..., "width": ..., "seed": ...}`` also works."""
        text = strip_fence(body).strip()
        if text.startswith("{"):
            args = parse_json_arguments(text)
            if "prompt" not in args and "description" in args:
                args["prompt"] = args.pop("description")
            if "prompt" not in args:
                raise ValueError('the JSON has no "prompt": send {"prompt": "an English description", '
                                 '"width": 1024, "height": 1024, "seed": 7} or just the description')
            return args
        if text.startswith('"') and text.endswith('"'):  # a quoted description
            try:
                text = str(json.loads(text)).strip()
            except json.JSONDecodeError:
                text = text.strip('"').strip()
        if not text:
            raise ValueError("the image description is empty")
        return {"prompt": text}

    async def forward(self, prompt: str, width: int | None = None, height: int | None = None,
                      seed: int | None = None, *, context: ToolContext) -> ToolOutput:
        """Generate an image from a detailed English description.

        Args:
            prompt: what the image shows, in English, in detail (about 100 words)
            width: width in pixels; by default the model's native size
            height: height in pixels; by default the model's native size
            seed: random seed; the same prompt and seed give the same image
        """
        settings = (self.policy or context.policy).cogview
        prompt = prompt.strip()
        if not prompt:
            raise CogViewError("The image description is empty: describe the image in English.")
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        elif not 0 <= seed <= MAX_SEED:
            raise CogViewError(f"The seed {seed} is out of range: use a whole number from 0 to {MAX_SEED}.")
        cancelled = threading.Event()
        try:  # diffusion blocks for seconds to minutes: run it in a thread, stop it when the call is cancelled
            return await asyncio.to_thread(self._generate, prompt, width, height, seed, settings, context, cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _generate(self, prompt: str, width: int | None, height: int | None, seed: int,
                  settings: CogViewSettings, context: ToolContext, cancelled: threading.Event) -> ToolOutput:
        self._models.add(settings.model)
        current_runtime().on_close(self.cache.release)  # warm pipelines go when the runtime closes
        warm = self.cache.get(settings, on_status=lambda message: context.progress(self.name, message, None))
        width, height = warm.size(width, height, settings)
        steps, guidance = warm.call_settings(settings)
        image = warm.generate(
            prompt, width=width, height=height, seed=seed, steps=steps, guidance=guidance, cancelled=cancelled,
            on_step=lambda done, total: context.progress(self.name, f"step {done}/{total}", done / total))
        metadata = {"prompt": prompt, "seed": str(seed), "model": settings.model, "steps": str(steps),
                    "guidance_scale": "" if guidance is None else f"{guidance:g}", "software": "glm-agent cogview"}
        artifact = context.save_artifact(png_bytes(image, metadata), tool=self.name, description=prompt)
        return ToolOutput(
            text=(f"CogView generated the image and showed it to the user ({width}x{height}, seed {seed}, "
                  f"file {artifact.path.name})."),
            metadata="cogview_result", artifacts=[artifact])

    def unload(self) -> None:
        """Free the memory of the models this tool used; the next call loads again."""
        for model in self._models:
            self.cache.release(model)
        self._models.clear()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.unload)


def png_bytes(image: Any, text: dict[str, str]) -> bytes:
    """A PIL image as PNG bytes, with ``text`` as its tEXt/iTXt chunks (non-Latin prompts become iTXt)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
