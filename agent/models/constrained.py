"""Constrained tool calls: once a local model has written ``name\\n`` for a function tool, it may only
write JSON that fits that tool's schema, then ``<|observation|>``.

Small models know the GLM-4 call format but often break the JSON (a missing quote, an unknown key, a
string where an integer goes). :class:`ToolCallConstraint` is a transformers ``LogitsProcessor`` that
masks every token which would take the call body out of the tool's JSON Schema. The grammar is
llguidance's (a maintained Rust library, also behind vLLM's and SGLang's structured output): it compiles
the schema once per call and keeps the parser's state from token to token, so a token costs the same
however long the body already is, and the mask covers the whole vocabulary.

Schemas follow JSON Schema as llguidance implements it (types, ``properties``/``required``,
``additionalProperties`` defaulting to allowed, ``items``, ``enum``/``const``, ``anyOf``/``oneOf``,
``$ref``/``$defs``, string lengths and patterns, number bounds); a keyword it does not implement is
ignored rather than refused. Whitespace gaps are capped at 10 characters, so a small model cannot stall
on spaces inside a call.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import llguidance.hf
import torch
from llguidance import LLMatcher, LLTokenizer
from transformers import LogitsProcessor

from ..messages import ToolSpec
from ..protocol.format import ChatFormat
from ..protocol.glm4 import GLM4

log = logging.getLogger(__name__)

# lenient: ignore keywords llguidance does not implement (``format: "uuid"``…) instead of refusing the
# schema; any \\u escape a JSON string may hold; at most 10 characters of whitespace in a row
_JSON_OPTIONS = {"lenient": True, "json_allow_general_unicode_escapes": True,
                 "whitespace_pattern": r"[\x20\x0A\x0D\x09]{0,10}"}
# The body is the JSON value, with the whitespace the call parser strips around it (capped the same way)
_BODY_GRAMMAR = "start: WS? body WS?\nbody: %json {schema}\nWS: /[ \\t\\n\\r]{{1,10}}/\n"
_NAME_SLACK = 16  # bytes of whitespace around a tool's name that the call parser still reads as that name

_TOKENIZERS: weakref.WeakKeyDictionary[Any, LLTokenizer | None] = weakref.WeakKeyDictionary()


def body_grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar of a call body that fits ``schema``."""
    schema = {**schema, "x-guidance": {**schema.get("x-guidance", {}), **_JSON_OPTIONS}}
    return LLMatcher.grammar_from_lark(_BODY_GRAMMAR.format(schema=json.dumps(schema)))


class ToolCallConstraint(LogitsProcessor):
    """Masks tokens that would break the JSON body of a call to a function tool.

    Active only inside a call: where the chat format says a call's body starts (GLM-4: after ``name\\n``)
    in the current assistant turn (the tokens after the format's ``turn_start``, ``<|assistant|>``, which
    may start in the prompt), when ``name`` is a function tool; built-ins such as ``python`` take free
    text and are left alone, and so are answers. When the JSON is complete, only the call's stop token
    (``<|observation|>``) remains allowed. The processor reads each token
    once and keeps its state between steps: use one per generation.
    """

    def __init__(self, tokenizer: Any, tools: list[ToolSpec], chat_format: ChatFormat = GLM4):
        self.chat_format = chat_format
        self.assistant_id = tokenizer.convert_tokens_to_ids(chat_format.turn_start)
        call_end = next(token for token, reason in chat_format.stop_reasons.items() if reason == "observation")
        self.call_end_id = tokenizer.convert_tokens_to_ids(call_end)
        self._tokenizer = _llguidance_tokenizer(tokenizer, self.call_end_id)
        self.grammars = {tool.name: body_grammar(tool.parameters) for tool in tools if not tool.builtin}
        self._longest_name = max((len(name.encode()) for name in self.grammars), default=0) + _NAME_SLACK
        self._turns: dict[int, _Turn] = {}  # per batch row
        self.constrained_tokens = 0  # how many tokens the constraint chose (for tests and benchmarks)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(scores.shape[0]):
            matcher = self._follow(row, input_ids[row])
            if matcher is None:
                continue
            self.constrained_tokens += 1
            blocked = self._blocked(matcher, scores.shape[1]).to(scores.device)
            scores[row] = scores[row].masked_fill(blocked, float("-inf"))
        return scores

    def _follow(self, row: int, ids: torch.Tensor) -> LLMatcher | None:
        """Read the row's new tokens; the call's matcher when the row is inside a call to a function tool."""
        turn = self._turns.get(row)
        if turn is None or turn.read > len(ids) or turn.read and int(ids[turn.read - 1]) != turn.last:
            starts = (ids == self.assistant_id).nonzero()  # another sequence: its last turn is all that counts
            read = int(starts[-1]) + 1 if len(starts) else 0
            turn = self._turns[row] = _Turn(read=read, last=int(ids[read - 1]) if read else -1)
        for token in ids[turn.read:].tolist():
            self._read(turn, token)
            turn.last = token
        turn.read = len(ids)
        return turn.matcher

    def _read(self, turn: _Turn, token: int) -> None:
        if token == self.assistant_id:
            turn.header, turn.matcher, turn.free = [], None, False
        elif turn.matcher is not None:
            turn.matcher.consume_token(token)  # a token the grammar refuses (written in the prompt) ends the call
        elif not turn.free:
            turn.header.append(token)
            self._start_call(turn)

    def _start_call(self, turn: _Turn) -> None:
        """Once the turn's first line is complete: a matcher if it names a function tool, else leave the turn be."""
        tokenizer = self._tokenizer
        if tokenizer is None:  # one the grammar cannot read: nothing is constrained
            turn.free = True
            return
        header = tokenizer.decode_bytes(turn.header)
        call = self.chat_format.call_body_start(header.decode("utf-8", "replace"))
        if call is None:
            turn.free = len(header) > self._longest_name  # too long to start a call: an answer or code
            return
        tool, start = call
        body = header.decode("utf-8", "replace")[start:].encode()
        turn.free = tool not in self.grammars
        if turn.free:
            return
        matcher = LLMatcher(tokenizer, self.grammars[tool], log_level=0)
        if matcher.is_error():  # the schema itself (unsatisfiable, a dangling $ref): say so, leave the call be
            log.warning("This call to %r is not constrained: its schema does not compile (%s)", tool,
                        matcher.get_error().splitlines()[0])
            turn.free = True
            return
        matcher.consume_tokens(tokenizer.tokenize_bytes(body))  # what the newline's token carried
        turn.matcher = matcher

    def _blocked(self, matcher: LLMatcher, vocabulary: int) -> torch.Tensor:
        blocked = torch.ones(vocabulary, dtype=torch.bool)
        if matcher.is_error():  # the body went wrong before the constraint could act (in the prompt)
            blocked[self.call_end_id] = False  # end the call: the parser reports the problem to the model
            return blocked
        allowed = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
        known = min(vocabulary, allowed.numel())  # the model's vocabulary may be padded past the tokenizer's
        blocked[:known] = allowed[:known] == 0
        return blocked


@dataclass
class _Turn:
    """Where one row stands in its current assistant turn."""

    read: int  # tokens of the row already read
    last: int = -1  # the last of them (a different one means another sequence)
    header: list[int] = field(default_factory=list)  # the turn's tokens up to its first newline
    matcher: LLMatcher | None = None  # inside a call to a function tool
    free: bool = False  # an answer or a built-in tool's call: left alone


def _llguidance_tokenizer(tokenizer: Any, call_end_id: int) -> LLTokenizer | None:
    """llguidance's view of a transformers tokenizer (about a second for a 151k vocabulary: made once);
    None for a tokenizer it cannot read."""
    if tokenizer not in _TOKENIZERS:
        try:
            # `eos` is what a complete body may end with: the call's stop token
            _TOKENIZERS[tokenizer] = llguidance.hf.from_tokenizer(tokenizer, eos_token=call_end_id)
        except ValueError as exc:  # only fast (Rust) tokenizers: not the remote code of non `-hf` checkpoints
            log.warning("Tool calls are not constrained: the grammar cannot read this tokenizer (%s); "
                        "use a checkpoint with a fast tokenizer such as THUDM/glm-4-9b-chat-hf.", exc)
            _TOKENIZERS[tokenizer] = None
    return _TOKENIZERS[tokenizer]
