"""``PromptTokenizer``: token ids of a growing prompt, tokenizing only the text added since the last step.

An agent's prompt only grows, and re-tokenizing all of it at every step costs time that grows with the
conversation. Cutting the new prompt where the old one ended is not safe: BPE may merge the last bytes
of the old text with the first of the new, so ``ids(a) + ids(b)`` need not equal ``ids(a + b)``. A
special token is a safe seam: fast tokenizers split the text on their added tokens before anything else
and tokenize the pieces between them separately, so the ids of a text that starts at a special token
do not depend on what came before it. GLM prompts have one at every turn (``<|user|>``,
``<|assistant|>``, ``<|observation|>``), so each step keeps the ids up to the last such token of the
previous prompt and tokenizes only from there on. The ids always equal a whole tokenization: when the
prompt no longer starts with the kept text (edited history), or the tokenizer fails a check that
tokenizing from a seam gives the same ids (made once, on the first prompt), it tokenizes the whole prompt.
"""

from __future__ import annotations

import bisect
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class PromptTokenizer:
    """``tokenizer(prompt, add_special_tokens=False)["input_ids"]``, computed from the last seam on."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        # Special tokens that eat no whitespace before them: a cut at their start leaves the text before intact.
        self._seam_tokens: dict[int, str] = {
            token_id: token.content for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items()
            if token.special and not token.lstrip
        }
        # offsets (to find the seams) come from fast tokenizers only; the seam check has not run yet
        self._incremental = bool(getattr(tokenizer, "is_fast", False) and self._seam_tokens)
        self._checked = False
        self._text = ""  # the last prompt
        self._ids: list[int] = []  # its ids
        self._seams: list[int] = []  # character offsets in self._text where a seam token starts, ascending
        self._seam_index: list[int] = []  # the index in self._ids of the token at each seam
        self._lock = threading.Lock()

    def __call__(self, prompt: str) -> list[int]:
        with self._lock:
            if not self._incremental:
                return self._whole(prompt)
            seam = self._last_shared_seam(prompt)
            if seam is None:
                ids = self._tokenize_from(prompt, 0, 0, 0)
                if not self._checked and self._seams:
                    self._checked = True
                    self._incremental = self._seams_agree(prompt)
                    if not self._incremental:
                        log.debug("%s: tokenizing from a special token gives other ids; prompts are tokenized "
                                  "whole", type(self.tokenizer).__name__)
                return ids
            return self._tokenize_from(prompt, self._seams[seam], self._seam_index[seam], seam)

    def reset(self) -> None:
        with self._lock:
            self._text, self._ids, self._seams, self._seam_index = "", [], [], []

    def _whole(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _last_shared_seam(self, prompt: str) -> int | None:
        """The index of the last seam before which ``prompt`` and the previous prompt agree, if any."""
        if prompt.startswith(self._text):  # the usual step: the prompt grew
            low = bisect.bisect_right(self._seams, len(self._text))
        else:  # agreeing up to a seam implies agreeing up to every earlier one, so a binary search finds it
            low, high = 0, len(self._seams)  # seams[:low] agree, seams[high:] do not
            while low < high:
                middle = (low + high) // 2
                if prompt.startswith(self._text[:self._seams[middle]]):
                    low = middle + 1
                else:
                    high = middle
        # a seam at offset 0 saves nothing; the one kept must leave text before it
        return low - 1 if low > 0 and self._seams[low - 1] > 0 else None

    def _tokenize_from(self, prompt: str, start: int, kept: int, kept_seams: int) -> list[int]:
        """Keeps the first ``kept`` ids (those of ``prompt[:start]``) and tokenizes ``prompt[start:]``."""
        encoding = self.tokenizer(prompt[start:], add_special_tokens=False, return_offsets_mapping=True)
        tail: list[int] = list(encoding["input_ids"])
        del self._seams[kept_seams:], self._seam_index[kept_seams:], self._ids[kept:]
        for index, (token_id, (begin, _)) in enumerate(zip(tail, encoding["offset_mapping"])):
            content = self._seam_tokens.get(token_id)
            # the offsets are characters of the text given; checked, so a tokenizer counting bytes is no risk
            if content is not None and prompt.startswith(content, start + begin):
                self._seams.append(start + begin)
                self._seam_index.append(kept + index)
        self._text = prompt
        self._ids += tail
        return list(self._ids)  # a copy: the caller may keep or change it

    def _seams_agree(self, prompt: str) -> bool:
        """Whether tokenizing from the last seams of ``prompt`` gives the ids of its whole tokenization."""
        for offset, index in zip(self._seams[-3:], self._seam_index[-3:]):
            if self._whole(prompt[offset:]) != self._ids[index:]:
                return False
        return True

