"""Read the calls GLM-4 sends to ``simple_browser``: ``search(...)``, ``mclick(...)``, ``open_url(...)``.

The body is parsed with :mod:`ast` and only literals are accepted (never ``eval``): a string query,
integer ids, a URL. Tolerant of what models write around a call: code fences, single quotes,
keyword or positional arguments, trailing commas, ``mclick(1, 2)`` for ``mclick([1, 2])``, and
text after the call. A body that is a JSON object (what chat-API models send) is read as JSON.

>>> parse_action('search("GLM-4 report", recency_days=7)')
{'action': 'search', 'query': 'GLM-4 report', 'recency_days': 7}
>>> parse_action("mclick([0, 2, 5])")
{'action': 'mclick', 'ids': [0, 2, 5]}
"""

from __future__ import annotations

import ast
import re
from typing import Any

from agent.protocol.near_json import closing_bracket, parse_json_arguments, strip_fence

# The parameters of each action, in positional order.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "search": ("query", "recency_days"),
    "mclick": ("ids",),
    "open_url": ("url", "cursor"),
}
EXAMPLES = 'search("query", recency_days=7), mclick([0, 2]) or open_url("https://...")'
MAX_BODY_CHARS = 20_000  # far more than any real call; keeps ast away from pathological input

_CALL_START = re.compile(r"\b(search|mclick|open_url)\s*\(")


def parse_action(body: str) -> dict[str, Any]:
    """The arguments of one browser call; raises ``ValueError`` naming the problem."""
    text = strip_fence(body)
    if not text:
        raise ValueError(f"the call is empty; send one call such as {EXAMPLES}")
    if len(text) > MAX_BODY_CHARS:
        raise ValueError(f"the call is {len(text)} characters long; send one short call such as {EXAMPLES}")
    if text.startswith("{"):
        return parse_json_arguments(text)
    match = _CALL_START.search(text)
    if match is None:
        raise ValueError(f"{_excerpt(text)!r} is not a browser call; send one call such as {EXAMPLES}")
    end = closing_bracket(text, match.end() - 1)
    if end is None:
        raise ValueError(f"{_excerpt(text[match.start():])!r} has no closing parenthesis")
    source = text[match.start() : end + 1]
    if _CALL_START.search(text, end + 1):
        raise ValueError("send one action per call; this message holds more than one")
    return _arguments(match.group(1), source)


def _arguments(action: str, source: str) -> dict[str, Any]:
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise ValueError(f"{_excerpt(source)!r} is not a valid call: quote strings and separate arguments with commas") from None
    call = tree.body
    assert isinstance(call, ast.Call)  # the source starts with `name(` and ends at its parenthesis
    names = PARAMETERS[action]
    positional = [_literal(action, node) for node in call.args]
    if action == "mclick" and positional and all(isinstance(v, int) for v in positional) and len(positional) > 1:
        positional = [positional]  # mclick(1, 2, 3) means mclick([1, 2, 3])
    if len(positional) > len(names):
        raise ValueError(f"{action}() takes at most {len(names)} arguments ({', '.join(names)}), got {len(positional)}")
    args: dict[str, Any] = {"action": action, **dict(zip(names, positional))}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise ValueError(f"{action}() does not take **arguments")
        if keyword.arg not in names:
            raise ValueError(f"{action}() has no parameter {keyword.arg!r}; it takes {', '.join(names)}")
        if keyword.arg in args:
            raise ValueError(f"{action}() got {keyword.arg!r} twice")
        args[keyword.arg] = _literal(action, keyword.value)
    if action == "mclick" and isinstance(args.get("ids"), (int, tuple)):
        ids = args["ids"]
        args["ids"] = [ids] if isinstance(ids, int) else list(ids)
    return args


def _literal(action: str, node: ast.expr) -> Any:
    if isinstance(node, ast.Starred):
        raise ValueError(f"{action}() does not take *arguments")
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(
            f"{action}() arguments must be literals (a quoted string, a number, a list of numbers), "
            f"not {_excerpt(ast.unparse(node))!r}"
        ) from None


def _excerpt(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
