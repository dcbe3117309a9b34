"""``CompletionsModel``: a served GLM-4 behind a ``/v1/completions`` endpoint (vLLM, SGLang).

The GLM-4 prompt is rendered here (:mod:`agent.protocol.glm4`), exactly as the official chat template
renders it, and sent as raw text; the completion is parsed here too. The server only continues text,
so every GLM-4 feature works the same as with the local backend (built-in tools, observation
metadata), and engines with prefix caching reuse the conversation's KV cache across steps.

>>> model = CompletionsModel("http://localhost:8000/v1", "glm-4-9b-chat")

Generation stops on GLM-4's stop tokens; vLLM reports which one matched in ``stop_reason``, which
tells a tool call (``<|observation|>``) from an answer (``<|user|>``, ``<|endoftext|>``).
"""

from __future__ import annotations

from typing import Any

from ..policy import ModelSettings
from ..protocol.format import ChatFormat
from ..protocol.glm4 import GLM4
from ._http import ServedModel, usage_from
from ..messages import ToolSpec
from .base import Completion, RawPromptModel, StopReason, TokenCallback

class CompletionsModel(ServedModel, RawPromptModel):
    """GLM-4 served by an OpenAI-compatible completions API; the prompt is rendered here.

    Takes the arguments of :class:`~agent.models._http.ServedModel`: ``base_url``, ``model``,
    ``api_key``, ``stream``, ``timeout``, ``max_retries``, ``backoff``, ``extra_body``…
    Requests carry ``stop_token_ids`` (vLLM) and the same stops as strings (servers that ignore ids),
    ``skip_special_tokens: false`` so the stop strings can match, and ``add_special_tokens: false``
    since the prompt already starts with ``[gMASK]<sop>``. ``chat_format`` is GLM-4's unless given.
    """

    def __init__(self, *args: Any, chat_format: ChatFormat = GLM4, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.chat_format = chat_format

    async def complete(self, prompt: str, settings: ModelSettings, on_token: TokenCallback | None = None,
                       *, tools: list[ToolSpec] | None = None) -> Completion:
        body = self.request_body(
            settings, prompt=prompt, stop_token_ids=list(self.chat_format.stop_token_ids), stop=list(self.chat_format.stop_tokens),
            skip_special_tokens=False, add_special_tokens=False)
        if not self.stream:
            data = await self._http.post("completions", body)
            choice = _first_choice(data)
            return Completion(text=choice.get("text") or "", stop_reason=stop_reason(choice, self.chat_format),
                              usage=usage_from(data.get("usage")))
        pieces: list[str] = []
        last: dict[str, Any] = {}
        usage = None
        async for event in self._http.stream("completions", body):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    pieces.append(choice["text"])
                    if on_token is not None:
                        on_token(choice["text"])
                if choice.get("finish_reason"):
                    last = choice
        text = "".join(pieces)
        return Completion(text=text, stop_reason=stop_reason({**last, "text": text}, self.chat_format) if last else None,
                          usage=usage_from(usage))


def stop_reason(choice: dict[str, Any], chat_format: ChatFormat = GLM4) -> StopReason | None:
    """Why generation ended, from an OpenAI completion choice and vLLM's ``stop_reason``.

    ``length`` when the token budget ran out; otherwise the matched stop (``observation`` means a tool
    call): the server reports the token id (vLLM with stop_token_ids), the string (vLLM with stop
    strings, SGLang's matched_stop) or keeps it in the text; a plain ``stop`` with no match reported
    is the model's end of text.
    """
    finish = choice.get("finish_reason")
    if finish == "length":
        return "length"
    reasons: dict[Any, str] = {**chat_format.stop_reasons,
                               **dict(zip(chat_format.stop_token_ids, chat_format.stop_reasons.values()))}
    matched = choice.get("stop_reason", choice.get("matched_stop"))
    if isinstance(matched, (int, str)) and matched in reasons:
        return reasons[matched]  # type: ignore[return-value]
    text = choice.get("text") or ""
    for token, reason in chat_format.stop_reasons.items():  # servers that keep the stop string in the output
        if text.endswith(token):
            return reason  # type: ignore[return-value]
    return "eos" if finish == "stop" else None


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices") or [{}]
    return choices[0]
