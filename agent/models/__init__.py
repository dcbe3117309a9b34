"""Chat model backends behind one protocol (:class:`ChatModel`).

``TransformersModel`` (local GLM-4), ``OpenAIChatModel`` (chat APIs with native tools),
``CompletionsModel`` (raw GLM-4 prompt to a ``/v1/completions`` server such as vLLM or SGLang) and
``ScriptedModel`` (tests). Heavy backends are imported on first use.
"""

from importlib import import_module
from typing import Any

from .base import ChatModel, Completion, GLM4Model, ModelTurn, RawPromptModel, Usage
from .scripted import ScriptedModel

_LAZY = {
    "TransformersModel": ".transformers",
    "OpenAIChatModel": ".openai",
    "CompletionsModel": ".completions",
}

__all__ = ["ChatModel", "RawPromptModel", "GLM4Model", "ModelTurn", "Completion", "Usage", "ScriptedModel", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
