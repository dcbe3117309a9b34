"""The chat formats by name, and the one a checkpoint was trained on.

>>> chat_format("glm45").label
'GLM-4.5+'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..messages import Message, ToolCall, ToolSpec
from .format import ChatFormat
from .glm4 import GLM4
from .glm45 import GLM45Format, GLM47Format

NAMES = ("glm4", "glm45", "glm47")
# Architectures (config.json) of the GLM-4.5+ family: MoE models and their lite/vision variants.
_GLM45_MODEL_TYPES = ("glm4_moe", "glm4v_moe")
_GLM47_MODEL_TYPES = ("glm4_moe_lite",)  # GLM-4.7-Flash


def chat_format(name: str, *, thinking: bool = True) -> ChatFormat:
    """``glm4`` (glm-4-9b-chat, GLM-4-0414), ``glm45`` (GLM-4.5, 4.6) or ``glm47`` (GLM-4.7, 4.7-Flash);
    ``thinking`` on or off."""
    if name == "glm4":
        return GLM4
    if name == "glm45":
        return GLM45Format(thinking=thinking)
    if name == "glm47":
        return GLM47Format(thinking=thinking)
    raise ModelError(f"Unknown chat format {name!r}: choose from {', '.join(NAMES)}.")


def format_of_config(config: dict[str, Any], chat_template: str = "") -> str:
    """The format a checkpoint speaks, from its config (and its chat template, which tells GLM-4.7
    from GLM-4.5 on the same architecture): GLM-4.5+ for the MoE family, GLM-4 otherwise."""
    model_type = str(config.get("model_type", ""))
    architectures = " ".join(config.get("architectures") or [])
    if model_type.startswith(_GLM47_MODEL_TYPES) or model_type.startswith(_GLM45_MODEL_TYPES) and (
            "clear_thinking" in chat_template):
        return "glm47"
    if model_type.startswith(_GLM45_MODEL_TYPES) or "Glm4Moe" in architectures:
        return "glm45"
    return "glm4"


def format_of_checkpoint(path: str | Path) -> str:
    """:func:`format_of_config` for a local checkpoint folder (``glm4`` when its config cannot be read)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "glm4"
    return format_of_config(config if isinstance(config, dict) else {}, _chat_template(Path(path)))


def _chat_template(folder: Path) -> str:
    """A checkpoint's chat template as saved: ``chat_template.jinja``, or inside ``tokenizer_config.json``."""
    try:
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    except OSError:
        pass
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return ""
    return template if isinstance(template, str) else json.dumps(template)


def template_mismatch(chat_format: ChatFormat, tokenizer: Any) -> str | None:
    """Where a checkpoint's own chat template renders a sample conversation differently from
    ``chat_format`` (``None``: byte for byte the same, or no template to compare with)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages, tools = _probe()
    inputs = chat_format.template_inputs(messages, tools)
    if not inputs:
        return None
    ours = chat_format.render(messages, tools)
    try:
        theirs = tokenizer.apply_chat_template(**inputs, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a template that does not take this format's conversation at all
        return f"its template does not render a {chat_format.label} conversation ({type(exc).__name__}: {exc})"
    if theirs == ours:
        return None
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    return f"from character {at}, ours has {ours[at:at + 40]!r} where its template has {theirs[at:at + 40]!r}"


def _probe() -> tuple[list[Message], list[ToolSpec]]:
    """A conversation that touches every part of a format: tools, a call with typed arguments, its
    result, an answer with reasoning, a second question."""
    tool = ToolSpec(name="get_weather", description="Weather in a city.", parameters={
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}})
    call = ToolCall(id="probe", name="get_weather", arguments={"city": "Oslo", "days": 2}, syntax="json")
    return [Message(role="user", content="Weather in Oslo?"),
            Message(role="assistant", content="Checking.", reasoning="Need the tool.", tool_calls=[call]),
            Message(role="observation", content="sunny", tool_call_id="probe"),
            Message(role="assistant", content="Sunny.", reasoning="Done."),
            Message(role="user", content="Thanks!")], [tool]
