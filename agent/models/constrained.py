"""Constrained tool calls: once a local model has written ``name\\n`` for a function tool, it may only
write JSON that fits that tool's schema, then ``<|observation|>``.

Small models know the GLM-4 call format but often break the JSON (a missing quote, an unknown key, a
string where an integer goes). :class:`ToolCallConstraint` is a transformers ``LogitsProcessor`` that
masks every token which would make the call body stop being a prefix of a schema-valid JSON object.
It checks candidates best-first and stops once it has found valid ones among the top ``top_k``, so a
151k vocabulary costs a few dozen checks per token, not 151k (greedy decoding stays exact; sampling
draws among the valid tokens of the top ``top_k``).

Supported schema keywords (what pydantic emits for tool signatures): ``type`` (also lists),
``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``, ``const``, ``anyOf``/``oneOf``,
``maxLength`` and local ``$ref``. Anything else is accepted as any JSON value. Number literals are capped at
24 characters and whitespace gaps at 10, so a small model cannot run away inside a call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import torch
from transformers import LogitsProcessor

from ..messages import ToolSpec

Status = Literal["invalid", "partial", "complete"]

_END = -1  # "the text ended inside this value, and everything so far was valid"
_MAX_WHITESPACE = 10  # per gap: lets the model format JSON, not stall on endless spaces
_WHITESPACE = " \t\n\r"
_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
_NUMBER_PREFIX = re.compile(r"-?((0|[1-9]\d*)(\.\d*)?([eE][+-]?\d*)?)?")
_INTEGER = re.compile(r"-?(0|[1-9]\d*)")
_INTEGER_PREFIX = re.compile(r"-?(0|[1-9]\d*)?")
_NUMBER_CHARS = set("+-0123456789.eE")
# A double has at most 17 significant digits (RFC 8259's interoperable range); a longer literal is a
# small model running away until max_new_tokens cuts the call in half.
_MAX_NUMBER_CHARS = 24
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{0,4}|.?)")


class JsonSchemaPrefix:
    """Tells whether a text is a prefix of a JSON document that fits a schema.

    >>> check = JsonSchemaPrefix({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]})
    >>> check('{"a": 1'), check('{"a": 1}'), check('{"b"'), check('{"a": "x"')
    ('partial', 'complete', 'invalid', 'invalid')
    """

    def __init__(self, schema: dict[str, Any]):
        self.root = schema

    def __call__(self, text: str) -> Status:
        start = self._whitespace(text, 0)
        if start is None:
            return "invalid"
        partial = False
        for end in self._value(self.root, text, start):
            if end == _END:
                partial = True
            else:
                rest = self._whitespace(text, end)
                if rest == len(text):
                    return "complete"
        return "partial" if partial else "invalid"

    # --- grammar: each rule yields where the value may end, or _END when the text ran out inside it ---

    def _value(self, schema: Any, text: str, i: int) -> Iterator[int]:
        schema = self._resolve(schema)
        if i == len(text):
            yield _END
            return
        if "const" in schema:
            yield from self._literal([json.dumps(schema["const"], ensure_ascii=False)], text, i)
            return
        if "enum" in schema:
            yield from self._literal([json.dumps(v, ensure_ascii=False) for v in schema["enum"]], text, i)
            return
        alternatives = schema.get("anyOf") or schema.get("oneOf")
        if alternatives:
            for alternative in alternatives:
                yield from self._value(alternative, text, i)
            return
        types = schema.get("type")
        if types is None:
            types = ["object", "array", "string", "number", "boolean", "null"]
        for kind in [types] if isinstance(types, str) else types:
            yield from self._typed(kind, schema, text, i)

    def _typed(self, kind: str, schema: dict[str, Any], text: str, i: int) -> Iterator[int]:
        if kind == "object":
            yield from self._object(schema, text, i)
        elif kind == "array":
            yield from self._array(schema, text, i)
        elif kind == "string":
            longest = schema.get("maxLength")
            for end in self._string(text, i):
                written = text[i + 1: (len(text) if end == _END else end - 1)]
                if longest is None or _string_length(written) <= longest:
                    yield end
        elif kind in ("number", "integer"):
            yield from self._number(kind == "integer", text, i)
        elif kind == "boolean":
            yield from self._literal(["true", "false"], text, i)
        elif kind == "null":
            yield from self._literal(["null"], text, i)

    def _object(self, schema: dict[str, Any], text: str, i: int) -> Iterator[int]:
        if text[i] != "{":
            return
        j = self._whitespace(text, i + 1)
        if j is None:
            return
        if j == len(text):
            yield _END
        elif text[j] == "}":
            if not schema.get("required"):
                yield j + 1
        else:
            yield from self._members(schema, text, j, frozenset())

    def _members(self, schema: dict[str, Any], text: str, i: int, seen: frozenset[str]) -> Iterator[int]:
        for key, j in self._key(schema, text, i, seen):
            if j == _END:
                yield _END
                continue
            j = self._whitespace(text, j)
            if j is None or j < len(text) and text[j] != ":":
                continue
            j = j if j == len(text) else self._whitespace(text, j + 1)
            if j is None:
                continue
            for k in self._value(self._property(schema, key), text, j):
                k = self._whitespace(text, k) if k != _END else k
                if k is None:
                    continue
                if k in (_END, len(text)):
                    yield _END
                elif text[k] == ",":
                    if not self._keys_left(schema, seen | {key}):
                        continue  # a comma with no key left to write could never be completed
                    after = self._whitespace(text, k + 1)
                    if after == len(text):
                        yield _END
                    elif after is not None:
                        yield from self._members(schema, text, after, seen | {key})
                elif text[k] == "}" and set(schema.get("required", ())) <= seen | {key}:
                    yield k + 1

    def _key(self, schema: dict[str, Any], text: str, i: int, seen: frozenset[str]) -> Iterator[tuple[str, int]]:
        """Keys the schema allows here: declared properties not used yet (any key when it allows extras)."""
        properties = schema.get("properties") or {}
        extra = _allows_extra(schema)
        for end in self._string(text, i):
            if end == _END:
                written = text[i:]
                if extra or any(json.dumps(name, ensure_ascii=False).startswith(written)
                                for name in properties if name not in seen):
                    yield "", _END
                continue
            key = json.loads(text[i:end])
            if key not in seen and (key in properties or extra):
                yield key, end

    @staticmethod
    def _keys_left(schema: dict[str, Any], seen: frozenset[str]) -> bool:
        return _allows_extra(schema) or any(k not in seen for k in schema.get("properties") or {})

    def _property(self, schema: dict[str, Any], key: str) -> Any:
        properties = schema.get("properties") or {}
        if key in properties:
            return properties[key]
        extra = schema.get("additionalProperties", True)
        return extra if isinstance(extra, dict) else {}

    def _array(self, schema: dict[str, Any], text: str, i: int) -> Iterator[int]:
        if text[i] != "[":
            return
        items = schema.get("items", {})
        j = self._whitespace(text, i + 1)
        if j is None:
            return
        if j == len(text):
            yield _END
        elif text[j] == "]":
            yield j + 1
        else:
            yield from self._elements(items, text, j)

    def _elements(self, items: Any, text: str, i: int) -> Iterator[int]:
        for k in self._value(items, text, i):
            k = self._whitespace(text, k) if k != _END else k
            if k is None:
                continue
            if k in (_END, len(text)):
                yield _END
            elif text[k] == ",":
                after = self._whitespace(text, k + 1)
                if after == len(text):
                    yield _END
                elif after is not None:
                    yield from self._elements(items, text, after)
            elif text[k] == "]":
                yield k + 1

    @staticmethod
    def _string(text: str, i: int) -> Iterator[int]:
        if text[i] != '"':
            return
        j = i + 1
        while j < len(text):
            char = text[j]
            if char == '"':
                yield j + 1
                return
            if char == "\\":
                escape = text[j + 1: j + 2]
                if escape == "u":
                    digits = text[j + 2: j + 6]
                    if not all(c in "0123456789abcdefABCDEF" for c in digits):
                        return
                    j += 2 + len(digits)
                    continue
                if escape and escape not in '"\\/bfnrt':
                    return
                j += 2
                continue
            if ord(char) < 0x20:  # raw control characters (a newline) are not allowed inside JSON strings
                return
            j += 1
        yield _END

    @staticmethod
    def _number(integer: bool, text: str, i: int) -> Iterator[int]:
        j = i
        while j < len(text) and text[j] in _NUMBER_CHARS:
            j += 1
        written = text[i:j]
        if not written or len(written) > _MAX_NUMBER_CHARS:
            return
        if j == len(text):
            if (_INTEGER_PREFIX if integer else _NUMBER_PREFIX).fullmatch(written):
                yield _END
        elif (_INTEGER if integer else _NUMBER).fullmatch(written):
            yield j

    @staticmethod
    def _literal(options: list[str], text: str, i: int) -> Iterator[int]:
        rest = text[i:]
        for option in options:
            if rest.startswith(option):
                yield i + len(option)
            elif option.startswith(rest):
                yield _END

    @staticmethod
    def _whitespace(text: str, i: int) -> int | None:
        j = i
        while j < len(text) and text[j] in _WHITESPACE:
            j += 1
        return j if j - i <= _MAX_WHITESPACE else None

    def _resolve(self, schema: Any) -> dict[str, Any]:
        """Follow a local ``$ref`` (pydantic puts nested models under ``$defs``)."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            node: Any = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            schema, seen = node, seen + 1
        return schema if isinstance(schema, dict) else {}


def _string_length(raw: str) -> int:
    """Characters of a JSON string's raw text: an escape sequence counts as the one character it means."""
    return len(_ESCAPE.sub("_", raw))


class ToolCallConstraint(LogitsProcessor):
    """Masks tokens that would break the JSON body of a call to a function tool.

    Active only inside a call: after ``name\\n`` in the current assistant segment (the tokens after the
    last ``<|assistant|>``, which may start in the prompt), where ``name`` is a function tool; built-ins
    such as ``python`` take free text and are left alone. When the JSON is complete, only
    ``<|observation|>`` (the call's stop token) remains allowed.
    """

    def __init__(self, tokenizer: Any, tools: list[ToolSpec], top_k: int = 32):
        self.tokenizer = tokenizer
        self.top_k = top_k
        self.schemas = {tool.name: JsonSchemaPrefix(tool.parameters) for tool in tools if not tool.builtin}
        self.assistant_id = tokenizer.convert_tokens_to_ids("<|assistant|>")
        self.call_end_id = tokenizer.convert_tokens_to_ids("<|observation|>")
        self.special_ids = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        self.constrained_tokens = 0  # how many tokens the constraint chose among (for tests and benchmarks)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row in range(scores.shape[0]):
            starts = (input_ids[row] == self.assistant_id).nonzero()
            segment = input_ids[row, int(starts[-1]) + 1:].tolist() if len(starts) else input_ids[row].tolist()
            call = self._call(segment)
            if call is None:
                continue
            schema, body_start = call
            self.constrained_tokens += 1
            allowed = self._allowed(scores[row], segment, schema, body_start)
            mask = torch.full_like(scores[row], float("-inf"))
            mask[allowed] = 0.0
            scores[row] = scores[row] + mask
        return scores

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _call(self, segment: list[int]) -> tuple[JsonSchemaPrefix, int] | None:
        """The tool's schema and where its body starts in the segment's text, when inside a function call."""
        name, newline, _ = self._decode(segment).partition("\n")
        schema = self.schemas.get(name.strip())
        if not newline or schema is None:
            return None
        return schema, len(name) + 1

    def _allowed(self, scores: torch.Tensor, segment: list[int], schema: JsonSchemaPrefix,
                 body_start: int) -> list[int]:
        """Valid tokens among the best ``top_k``; if none, keep looking down the ranking until one is."""
        order = torch.argsort(scores, descending=True)
        allowed: list[int] = []
        for chunk_start in range(0, order.shape[0], self.top_k):
            for token in order[chunk_start: chunk_start + self.top_k].tolist():
                if self._fits(token, segment, schema, body_start):
                    allowed.append(token)
            if allowed:
                return allowed
        return [self.call_end_id]

    def _fits(self, token: int, segment: list[int], schema: JsonSchemaPrefix, body_start: int) -> bool:
        if token == self.call_end_id:
            return schema(self._decode(segment)[body_start:]) == "complete"
        if token in self.special_ids:
            return False
        body = self._decode(segment + [token])[body_start:]
        if body.endswith("\ufffd"):
            # The token ends inside a multi-byte character: only a string can take it, so check the
            # text as if the character were complete.
            return schema(body.rstrip("\ufffd") + "é") != "invalid"
        return schema(body) != "invalid"


def _allows_extra(schema: dict[str, Any]) -> bool:
    """Whether an object schema takes keys it does not declare: as JSON Schema says, yes unless its
    ``additionalProperties`` is ``false`` (``@tool``'s schemas say so; schemas given as is may not)."""
    return schema.get("additionalProperties", True) is not False
