"""Reading the almost-JSON that models write for a call's arguments.

Small models wrap arguments in code fences, write Python literals (``'single quotes'``, ``True``,
``None``), leave trailing commas or bare keys, and add text after the object. Every repair here is
made by a scanner that knows where strings are, so the contents of a string are never changed:
``"True"`` stays the string ``"True"`` and ``'it\\'s'`` becomes ``"it's"``.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

_FENCE = re.compile(r"^\s*```[\w-]*\s*\n?(.*?)\n?\s*```", re.S)

MAX_ARGUMENT_DEPTH = 100  # arguments nested deeper are refused (parsing and serialising them recurses)
TOO_DEEP = f"the arguments are nested more than {MAX_ARGUMENT_DEPTH} levels deep"


def strip_fence(text: str) -> str:
    """The inside of a Markdown code fence if the text starts with one, else the text."""
    if not text.lstrip().startswith("```"):
        return text.strip()
    match = _FENCE.match(text)
    return match.group(1) if match else text.strip()


def fence_end(text: str) -> int | None:
    """Index just past the fence that closes the one ``text`` starts with (after blanks), else ``None``."""
    match = _FENCE.match(text)
    return match.end() if match else None


def nesting_depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (counted without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_ARGUMENT_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json_arguments(body: str) -> dict[str, Any]:
    """Parse a JSON object the way a forgiving reader would.

    Accepts code fences, text after the object, single quotes, trailing commas, bare keys and
    Python literals (True/False/None), without changing what any string says. Raises ``ValueError``
    with a short reason when it still is not an object.

    >>> parse_json_arguments("{'flag': 'True', 'on': True,}")
    {'flag': 'True', 'on': True}
    """
    try:
        return _parse_json_arguments(body)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


def _parse_json_arguments(body: str) -> dict[str, Any]:
    text = strip_fence(body)
    if not text:
        return {}
    try:  # the common case: the model wrote clean JSON
        value = json.loads(text)
        if isinstance(value, dict):
            return value
    except json.JSONDecodeError:
        pass
    start = text.find("{")
    if start < 0:
        raise ValueError("expected a JSON object such as {\"name\": value}")
    end = closing_bracket(text, start)
    candidate = text[start:] if end is None else text[start : end + 1]
    for attempt in (candidate, repair(candidate)):
        try:
            value = json.loads(attempt, strict=False)  # strict=False: raw newlines inside strings
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    value = _python_literal(candidate)  # Python escapes JSON lacks, such as '\x01'
    if value is not None:
        return value
    raise ValueError("the arguments are not a valid JSON object")


def _python_literal(text: str) -> dict[str, Any] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) and _is_json(value) else None


def _is_json(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif not (item is None or isinstance(item, (str, int, float, bool))):
            return False
    return True


def closing_bracket(text: str, start: int) -> int | None:
    """Index of the bracket that closes the one at ``start`` (any of ``([{``), skipping quoted strings."""
    depth = 0
    quote = None
    escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


_PYTHON_WORDS = {"True": "true", "False": "false", "None": "null"}
_WORD = re.compile(r"(?:[^\W\d]|\$)[\w$]*")  # a bare word; letters of any script
_TRAILING_COMMA = re.compile(r",\s*[}\]]")
_KEY_FOLLOWS = re.compile(r"\s*:")


def repair(text: str) -> str:
    """Near-JSON made JSON, touching only what lies outside strings.

    Single-quoted strings become double-quoted (their escapes adjusted, their text unchanged),
    ``True``/``False``/``None`` become JSON's words, bare keys get quotes, trailing commas go.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"'":
            i = _copy_string(text, i, out)
        elif ch == "," and _TRAILING_COMMA.match(text, i):
            i += 1
        elif word := _WORD.match(text, i):
            token = word.group()
            if _KEY_FOLLOWS.match(text, word.end()) and _last_solid(out) in "{,":
                out.append(json.dumps(token))
            else:
                out.append(_PYTHON_WORDS.get(token, token))
            i = word.end()
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _last_solid(out: list[str]) -> str:
    """The last character written that is not a blank (``{`` when nothing was)."""
    for piece in reversed(out):
        stripped = piece.rstrip()
        if stripped:
            return stripped[-1]
    return "{"


def _copy_string(text: str, start: int, out: list[str]) -> int:
    """Copy the string opening at ``start`` as a double-quoted JSON string; return the index after it."""
    quote = text[start]
    out.append('"')
    i, n = start + 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            escaped = text[i + 1]
            out.append("'" if escaped == "'" else ch + escaped)  # JSON has no escape for an apostrophe
            i += 2
            continue
        if ch == quote:
            out.append('"')
            return i + 1
        out.append('\\"' if ch == '"' else ch)  # only a single-quoted string can hold a bare "
        i += 1
    return n  # unterminated: left for the JSON reader to refuse
