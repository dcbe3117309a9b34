"""The cogview tool on tiny diffusers pipelines built from configs and loaded by path (no hub, CPU)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from PIL import Image
from tiny_glm import build_tokenizer

from agent.messages import ToolCall
from agent.policy import Policy
from agent.registry import ToolRegistry
from agent.tool import ToolContext
from tools.cogview import CACHE, CogViewError, CogViewTool, PipelineCache
from tools.cogview.pipelines import Cancelled, estimate_weights, locate
from tools.cogview.testing import glm4_tokenizer, save_tiny_cogview4, save_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """A tiny CogView4 (GlmForCausalLM text encoder, GLM-4 tokenizer) and a tiny Stable Diffusion on disk."""
    base = tmp_path_factory.mktemp("pipelines")
    tokenizer = glm4_tokenizer(build_tokenizer())  # adds [gMASK]<sop> and left padding, as CogView4's has
    return {"cogview4": save_tiny_cogview4(base / "tiny-cogview4", tokenizer),
            "sd": save_tiny_stable_diffusion(base / "tiny-sd")}


def policy_for(model: Path | str, **settings) -> Policy:
    settings.setdefault("steps", 2)  # tiny models: a couple of steps is plenty
    return Policy(cogview={"model": str(model), **settings})


class Recorder:
    """Collects ``context.progress`` calls (they come from the worker thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float | None]] = []

    def __call__(self, tool: str, message: str, fraction: float | None) -> None:
        self.calls.append((tool, message, fraction))


def make_context(tmp_path: Path, policy: Policy, progress: Recorder | None = None) -> ToolContext:
    return ToolContext(run_id="t", artifacts_dir=tmp_path / "run", policy=policy, on_progress=progress)


def call(body: str) -> ToolCall:
    return ToolCall(id="c1", name="cogview", body=body)


# --- reading what GLM-4 sends -------------------------------------------------------------------


@pytest.mark.parametrize("body, expected", [
    ("A red fox in fresh snow, watercolor", {"prompt": "A red fox in fresh snow, watercolor"}),
    ("```\nA lighthouse at dawn\n```", {"prompt": "A lighthouse at dawn"}),
    ('"A quiet harbour"', {"prompt": "A quiet harbour"}),
    ('{"prompt": "A cat", "width": 64, "height": 32, "seed": 7}',
     {"prompt": "A cat", "width": 64, "height": 32, "seed": 7}),
    ("{'description': 'A cat', 'seed': 1,}", {"prompt": "A cat", "seed": 1}),
])
def test_parse_body_reads_plain_descriptions_and_json(body, expected):
    assert CogViewTool().parse_body(body) == expected


@pytest.mark.parametrize("body, reason", [
    ("   ", "empty"),
    ('{"width": 512}', 'no "prompt"'),
    ('{"prompt": "A cat", "width": ', "not a valid JSON object"),
])
def test_parse_body_says_what_is_wrong(body, reason):
    with pytest.raises(ValueError, match=reason):
        CogViewTool().parse_body(body)


def test_schema_is_the_glm4_builtin_and_hides_the_context():
    registry = ToolRegistry(["cogview"])
    (spec,) = registry.specs()
    assert spec.builtin == "cogview" and spec.name == "cogview"
    assert spec.parameters["required"] == ["prompt"]
    assert set(spec.parameters["properties"]) == {"prompt", "width", "height", "seed"}


# --- generating ---------------------------------------------------------------------------------


async def test_cogview4_call_saves_png_with_metadata_and_reports_steps(tiny_models, tmp_path):
    policy = policy_for(tiny_models["cogview4"])
    progress = Recorder()
    registry = ToolRegistry([CogViewTool(policy=policy, cache=PipelineCache())], policy=policy)
    observation = await registry.call(call("A watercolor fox under a full moon"),
                                      make_context(tmp_path, policy, progress))

    assert not observation.is_error, observation.content
    assert observation.metadata == "cogview_result"
    (artifact,) = observation.artifacts
    assert artifact.path.parent == tmp_path / "run" and artifact.path.suffix == ".png"
    assert artifact.path.name in observation.content
    with Image.open(artifact.path) as image:
        image.load()
        assert image.format == "PNG" and image.size == (32, 32)  # the tiny model's native size
        assert image.text["prompt"] == "A watercolor fox under a full moon"
        assert image.text["model"] == str(tiny_models["cogview4"])
        assert image.text["seed"].isdigit() and image.text["steps"] == "2"
        assert image.text["guidance_scale"] == "3.5"  # CogView4's default
    messages = [message for _, message, _ in progress.calls]
    assert messages == [f"loading {tiny_models['cogview4']}", "step 1/2", "step 2/2"]
    assert progress.calls[-1] == ("cogview", "step 2/2", 1.0)


async def test_size_and_seed_from_json_and_the_second_call_stays_warm(tiny_models, tmp_path):
    policy = policy_for(tiny_models["cogview4"])
    cache = PipelineCache()
    registry = ToolRegistry([CogViewTool(policy=policy, cache=cache)], policy=policy)
    context = make_context(tmp_path, policy)
    body = '{"prompt": "A paper boat on a pond", "width": 64, "height": 32, "seed": 7}'
    first = await registry.call(call(body), context)
    warm = cache.get(policy.cogview)
    second = await registry.call(call(body), context)

    assert cache.loads == 1 and cache.get(policy.cogview) is warm  # loaded once, then reused
    images = []
    for observation in (first, second):
        assert not observation.is_error, observation.content
        with Image.open(observation.artifacts[0].path) as image:
            assert image.size == (64, 32) and image.text["seed"] == "7"
            images.append(image.convert("RGB").tobytes())
    assert images[0] == images[1]  # same prompt and seed, same image


async def test_stable_diffusion_pipeline_with_its_own_rules(tiny_models, tmp_path):
    policy = policy_for(tiny_models["sd"], guidance_scale=4.0)
    tool = CogViewTool(policy=policy, cache=PipelineCache())
    output = await tool.forward("A bowl of ramen, studio photo", width=48, height=40, seed=1,
                                context=make_context(tmp_path, policy))
    with Image.open(output.artifacts[0].path) as image:
        assert image.size == (48, 40)  # multiples of 8 are fine for Stable Diffusion
        assert image.text["guidance_scale"] == "4"  # the policy overrides the family's 7.5
    default = await tool.forward("A bowl of ramen", context=make_context(tmp_path, policy))
    with Image.open(default.artifacts[0].path) as image:
        assert image.size == (64, 64)  # the UNet's sample size times the VAE's scale


async def test_concurrent_first_calls_load_once(tiny_models, tmp_path):
    policy = policy_for(tiny_models["cogview4"])
    cache = PipelineCache()
    tools = [CogViewTool(policy=policy, cache=cache) for _ in range(2)]
    context = make_context(tmp_path, policy)
    outputs = await asyncio.gather(*(tool.forward(f"A kite, number {i}", context=context)
                                     for i, tool in enumerate(tools)))
    assert cache.loads == 1
    assert len({output.artifacts[0].path for output in outputs}) == 2


@pytest.mark.parametrize("args, message", [
    ({"width": 40}, "The width 40 is not a multiple of 32, as CogView4 needs: use 32 or 64."),
    ({"height": 4096}, "The height 4096 is more than the policy allows ([cogview] max_height = 2048)"),
    ({"width": 2048, "height": 2048}, "2048x2048 is 4194304 pixels, more than CogView4 supports (2097152)"),
    ({"seed": -1}, "The seed -1 is out of range"),
])
async def test_sizes_and_seeds_the_model_cannot_use_are_explained(tiny_models, tmp_path, args, message):
    policy = policy_for(tiny_models["cogview4"])
    registry = ToolRegistry([CogViewTool(policy=policy, cache=PipelineCache())], policy=policy)
    observation = await registry.call(ToolCall(id="c", name="cogview", arguments={"prompt": "A cat", **args}),
                                      make_context(tmp_path, policy))
    assert observation.is_error
    assert observation.content.startswith(f"cogview failed: {message}")
    assert not (tmp_path / "run").exists()  # nothing was generated


def test_cancelling_stops_at_the_next_step(tiny_models):
    policy = policy_for(tiny_models["cogview4"], steps=5)
    warm = PipelineCache().get(policy.cogview)
    cancelled = threading.Event()
    done: list[int] = []

    def on_step(step: int, total: int) -> None:
        done.append(step)
        cancelled.set()  # as if the run's wall time ran out during step 1

    with pytest.raises(Cancelled):
        warm.generate("A cat", width=32, height=32, seed=0, steps=5, guidance=3.5, on_step=on_step,
                      cancelled=cancelled)
    assert done == [1]


async def test_aclose_gives_the_pipeline_back(tiny_models, tmp_path):
    policy = policy_for(tiny_models["cogview4"])
    tool = CogViewTool(policy=policy)  # the process-wide cache
    await tool.forward("A cat", context=make_context(tmp_path, policy))
    assert str(tiny_models["cogview4"]) in CACHE
    await tool.aclose()
    assert str(tiny_models["cogview4"]) not in CACHE


# --- clear errors ---------------------------------------------------------------------------------


def test_missing_weights_offline_say_what_to_do(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CogViewError) as error:
        PipelineCache().get(policy_for("glm-agent-tests/never-downloaded").cogview)
    assert str(error.value) == (
        "The weights of 'glm-agent-tests/never-downloaded' are not on this machine and cannot be downloaded "
        "(HF_HUB_OFFLINE is set): download them once with `hf download "
        "glm-agent-tests/never-downloaded`, or set `[cogview] model = \"/path/to/pipeline\"` to a local diffusers folder.")


def test_missing_weights_with_the_hub_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(CogViewError, match="http://127.0.0.1:9 cannot be reached"):
        PipelineCache().get(policy_for("glm-agent-tests/never-downloaded").cogview)


def test_local_paths_that_are_not_pipelines(tmp_path):
    with pytest.raises(CogViewError, match="The model folder '/no/such/pipeline' does not exist"):
        locate("/no/such/pipeline")
    with pytest.raises(CogViewError, match="has no model_index.json"):
        locate(str(tmp_path))


def test_large_model_without_gpu_is_refused_with_advice(tiny_models, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    policy = policy_for(tiny_models["cogview4"], cpu_max_gb=1e-6)  # the tiny model counts as large
    with pytest.raises(CogViewError) as error:
        PipelineCache().get(policy.cogview)
    message = str(error.value)
    assert "of weights and this machine has no GPU" in message
    assert "`[cogview] cpu_offload = true`" in message and "`[cogview] cpu_max_gb`" in message


def test_weight_size_counts_one_variant_and_one_format_per_component():
    files = [
        ("model_index.json", 1),
        ("transformer/diffusion_pytorch_model.safetensors", 1000),
        ("transformer/diffusion_pytorch_model.fp16.safetensors", 500),
        ("vae/diffusion_pytorch_model.safetensors", 100),
        ("vae/diffusion_pytorch_model.bin", 100),
        ("text_encoder/model-00001-of-00002.safetensors", 40),
        ("text_encoder/model-00002-of-00002.safetensors", 60),
        ("unet/diffusion_pytorch_model.fp16.bin", 7),
    ]
    assert estimate_weights(files) == 1000 + 100 + 100 + 7


# --- the whole agent ------------------------------------------------------------------------------


def test_agent_run_with_scripted_glm4_calling_cogview(tiny_models, tmp_path):
    from agent import Agent
    from agent.events import ToolProgress
    from agent.models import ScriptedModel

    model = ScriptedModel([
        "cogview\nA cozy wooden cabin in snowy mountains at dusk, warm light in the windows, watercolor style.",
        "\nHere is your painting of a cabin in the snow.",
    ])
    with Agent(model=model, tools=["cogview"], policy=policy_for(tiny_models["cogview4"]),
               runs_dir=tmp_path / "runs") as agent:
        events = list(agent.stream("Paint a cabin in the snow"))
    result = events[-1].result

    assert result.status == "answered" and result.answer == "Here is your painting of a cabin in the snow."
    (artifact,) = result.artifacts
    with Image.open(artifact.path) as image:
        assert image.text["prompt"].startswith("A cozy wooden cabin")
    observation = model.seen[1][-1]  # what GLM-4 read before answering
    assert observation.role == "observation" and observation.metadata == "cogview_result"
    assert artifact.path.name in observation.content
    assert [e.message for e in events if isinstance(e, ToolProgress)][-1] == "step 2/2"
    assert str(tiny_models["cogview4"]) not in CACHE  # closing the agent gave the pipeline back
