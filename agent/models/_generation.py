"""What ``TransformersModel`` hands to transformers' ``generate``: a streamer, a cancellation, sampling.

Imported when a local model generates, since it loads transformers (and torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from ..policy import ModelSettings


class TokenStreamer(BaseStreamer):
    """Passes the text of each generated token to ``emit`` (on the generating thread).

    ``decoder`` turns ids into text pieces (``push(id) -> str``, holding back an unfinished character
    until ``flush()``); ``skip`` are ids never shown (GLM-4's stop tokens). ``generate`` puts the whole
    prompt first: that is skipped too.
    """

    def __init__(self, decoder: Any, emit: Callable[[str], Any], *, skip: set[int]):
        self.decoder, self.emit, self.skip = decoder, emit, skip
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            if token not in self.skip:
                piece = self.decoder.push(token)
                if piece:
                    self.emit(piece)

    def end(self) -> None:
        """Emit what was held back (the generation ended inside a character, or at ``max_new_tokens``)."""
        rest = self.decoder.flush()
        if rest:
            self.emit(rest)


class Cancelled(StoppingCriteria):
    """Stops the generation once ``event`` is set (the task awaiting it was cancelled)."""

    def __init__(self, event: Any):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def sampling_arguments(settings: ModelSettings) -> dict[str, Any]:
    """``generate``'s sampling arguments for the policy's ``[model]`` settings, whatever the checkpoint's
    ``generation_config.json`` says (GLM-4-9B's samples at temperature 0.8; the policy decides here).

    transformers applies its sampling processors after ours, so a constrained call samples among the
    tokens the constraint allows. ``top_k=0`` turns off transformers' default top-k of 50: the policy
    has no top-k.
    """
    if settings.temperature == 0:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
