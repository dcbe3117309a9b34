"""Constrained tool calls: once a local model has begun a call, it may only write a body that fits the
tool's schema.

Small models know their family's call format but often break the body (a missing quote, an unknown key,
a string where an integer goes). :class:`ToolCallConstraint` is a transformers ``LogitsProcessor`` that
masks every token which would take the call body out of the tool's JSON Schema, in either of the chat
formats' call syntaxes (``ChatFormat.call_syntax``):

- ``"json"`` (GLM-4): after ``name\\n`` at the start of the turn, JSON that fits a function tool's
  schema, then ``<|observation|>``; built-ins (code, browser calls, image prompts) are free text.
- ``"xml"`` (GLM-4.5+): after ``<tool_call>name`` (ended by a newline or ``<arg_key>``), anywhere in the
  turn and as often as it comes, ``<arg_key>``/``<arg_value>`` pairs, then ``</tool_call>``; built-ins
  too. Keys are the declared properties, each at most once, all required ones before ``</tool_call>``
  (any other key, with any text, unless ``additionalProperties`` is false). A value is text where the
  schema says string (:func:`agent.protocol.glm45.decode_arguments` reads it so): any text, an enum's
  literals, or text within ``minLength``/``maxLength``; anything else is JSON that fits the property's
  schema. After ``</tool_call>`` the model is free again: more text, another call, or the stop token.

The grammar is llguidance's (a maintained Rust library, also behind vLLM's and SGLang's structured
output): it compiles a tool's grammar once per call and keeps the parser's state from token to token,
so a token costs the same however long the turn or the body already is, and the mask covers the whole
vocabulary. Schemas follow JSON Schema as llguidance implements it (types, ``properties``/``required``,
``additionalProperties`` defaulting to allowed, ``items``, ``enum``/``const``, ``anyOf``/``oneOf``,
``$ref``/``$defs``, string lengths and patterns, number bounds); a keyword it does not implement is
ignored rather than refused, and so is a text value's ``pattern`` or ``format`` (the registry's
validation reports those). Whitespace gaps are capped (10 characters inside JSON, 4 between the XML
tags), so a small model cannot stall on spaces inside a call.
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
from ..protocol.glm45 import CALL_CLOSE, CALL_OPEN
from ..protocol.glm45 import is_text  # the very test decode_arguments reads values by

log = logging.getLogger(__name__)

# lenient: ignore keywords llguidance does not implement (``format: "uuid"``…) instead of refusing the
# schema; any \\u escape a JSON string may hold; at most 10 characters of whitespace in a row
_JSON_OPTIONS = {"lenient": True, "json_allow_general_unicode_escapes": True,
                 "whitespace_pattern": r"[\x20\x0A\x0D\x09]{0,10}"}
# The body is the JSON value, with the whitespace the call parser strips around it (capped the same way)
_BODY_GRAMMAR = "start: WS? body WS?\nbody: %json {schema}\nWS: /[ \\t\\n\\r]{{1,10}}/\n"
_NAME_SLACK = 16  # bytes of whitespace around a tool's name that the call parser still reads as that name

_TOKENIZERS: weakref.WeakKeyDictionary[Any, LLTokenizer | None] = weakref.WeakKeyDictionary()

# GLM-4.5+ bodies. The tags the body grammar writes; in a tokenizer that has one as a single token, only
# that token is the tag (llguidance reads every added token as special: a string literal never matches it).
XML_TAGS = ("<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", CALL_CLOSE)
# Text values: any text that does not end the value or the call early for the call parser (it reads a
# value up to the first </arg_value> and splits the turn at every <tool_call> and </tool_call>).
_XML_COMMON = ("TEXT: /(?s:.*)/ & ~/(?s:.*)(<\\/arg_value>|<\\/?tool_call>)(?s:.*)/\n"
               "WS: /[ \\t\\n\\r]{1,4}/\n")  # the gaps between tags: 4.5's newlines, 4.7's nothing, a little slack
# An undeclared key: what read_pairs gives back unchanged (no tag inside, no whitespace around it)
_FREE_KEY = "/[^<>\\s]([^<>\\n]{0,62}[^<>\\s])?/"
# Required keys are enforced, and every declared key may come once, in any order: the pairs rule is one of
# llguidance's parametric rules, whose 64-bit parameter is the set of keys written so far, so this costs
# one rule per key (not one per order or subset of keys). Keys past the 64th are not tracked: they may
# repeat, and a required one among them is left to the registry's validation.
_KEY_BITS = 64
_CALL_OPEN = CALL_OPEN.encode()
_MAX_COUNTED = 1000  # a text length bound above this is left to the validation (a long counter is slow to build)


def body_grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar of a call body that fits ``schema``."""
    schema = {**schema, "x-guidance": {**schema.get("x-guidance", {}), **_JSON_OPTIONS}}
    return LLMatcher.grammar_from_lark(_BODY_GRAMMAR.format(schema=json.dumps(schema)))


def xml_body_grammar(schema: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    """The llguidance grammar of a GLM-4.5+ call body (what follows the tool's name, up to and with
    ``</tool_call>``) whose arguments fit ``schema``. ``tags`` spells each of :data:`XML_TAGS` in the
    grammar: ``<arg_key>`` for a single token, ``"<arg_key>"`` for text (the default)."""
    tag = {name: json.dumps(name) for name in XML_TAGS} | (tags or {})
    declared = schema.get("properties")
    declared = declared if isinstance(declared, dict) else {}
    properties = {key: value for key, value in declared.items() if value is not False}  # false: never written
    required = [key for key in dict.fromkeys(schema.get("required") or []) if key in properties]
    keys = required + [key for key in properties if key not in required]  # the required keys' bits come first
    shared: dict[str, Any] = {name: schema[name] for name in ("$defs", "definitions") if name in schema}  # $ref targets
    rules: list[str] = []
    end = tag[CALL_CLOSE]
    if end.startswith('"'):  # as text, the tag may end inside a token ("l>\n"): the call is over where it ends
        end += " /(?s:.*)/"
    if required:
        end += f" %if is_ones([0:{min(len(required), _KEY_BITS)}])"
    choices = [end]
    for index, key in enumerate(keys):
        rules.append(f"key{index}: {tag['<arg_key>']} {_literal(key)} {tag['</arg_key>']} WS? {tag['<arg_value>']} "
                     + _xml_value(f"value{index}", properties[key], shared, tag, rules))
        tracked = index < _KEY_BITS
        choices.append(f"key{index} WS? pairs::set_bit({index}) %if bit_clear({index})" if tracked
                       else f"key{index} WS? pairs::_")
    extra = schema.get("additionalProperties", True)
    if extra is not False:
        # read_pairs reads an undeclared key's value as JSON where it can: with a schema for such values,
        # they are JSON; without one, any text
        value = (_json_value("value_free", extra, shared, tag, rules) if isinstance(extra, dict)
                 else _text_value("value_free", {}, tag, rules))
        others = f" & ~({' | '.join(_literal(key) for key in declared)})" if declared else ""  # typed above
        rules.append(f"FREE_KEY: {_FREE_KEY}{others}")
        rules.append(f"key_free: {tag['<arg_key>']} FREE_KEY {tag['</arg_key>']} WS? {tag['<arg_value>']} {value}")
        choices.append("key_free WS? pairs::_")
    lark = "start: WS? pairs::0x0\npairs::_: " + "\n    | ".join(choices) + "\n" + "\n".join(rules) + "\n" + _XML_COMMON
    return LLMatcher.grammar_from_lark(lark)


def _xml_value(name: str, schema: Any, shared: dict[str, Any], tag: dict[str, str], rules: list[str]) -> str:
    """A property's value and the ``</arg_value>`` after it: text where the call parser reads text, else JSON."""
    if isinstance(schema, dict) and is_text(schema):
        literals = _text_literals(schema)
        if literals:
            return f"({' | '.join(_literal(text) for text in literals)}) {tag['</arg_value>']}"
        return _text_value(name, schema, tag, rules)
    return _json_value(name, schema, shared, tag, rules)


def _json_value(name: str, schema: Any, shared: dict[str, Any], tag: dict[str, str], rules: list[str]) -> str:
    schema = schema if isinstance(schema, dict) else {} if schema is True else {"not": {}}
    schema = {**schema, **shared, "x-guidance": {**schema.get("x-guidance", {}), **_JSON_OPTIONS}}
    rules.append(f"{name}: %json {json.dumps(schema)}")
    return f"{name} {tag['</arg_value>']}"


def _text_value(name: str, schema: dict[str, Any], tag: dict[str, str], rules: list[str]) -> str:
    text = "TEXT"
    low, high = _text_bounds(schema)
    if low or high is not None:
        text = f"{name.upper()}_TEXT"
        rules.append(f"{text}: TEXT & /(?s:.{{{low},{'' if high is None else high}}})/")
    if tag["</arg_value>"].startswith('"'):  # the tag is text: the value ends at its first </arg_value>
        rules.append(f'{name}[suffix={tag["</arg_value>"]}]: {text}')
        return name
    return f"{text} {tag['</arg_value>']}"  # the tag is a token no text can contain


def _text_literals(schema: dict[str, Any]) -> list[str]:
    """The only texts a text-typed schema allows (an enum, a const, a union of them); empty: any text."""
    if isinstance(schema.get("const"), str):
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return [option for option in schema["enum"] if isinstance(option, str)]
    options = [option for option in schema.get("anyOf") or schema.get("oneOf") or []
               if isinstance(option, dict) and option.get("type") != "null"]
    literals = [_text_literals(option) for option in options]
    return [text for texts in literals for text in texts] if literals and all(literals) else []


def _text_bounds(schema: dict[str, Any]) -> tuple[int, int | None]:
    """``minLength``/``maxLength`` of a text-typed schema (or of its one non-null ``anyOf`` option)."""
    options = [option for option in schema.get("anyOf") or schema.get("oneOf") or []
               if isinstance(option, dict) and option.get("type") != "null"]
    if len(options) == 1:
        schema = options[0]
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    low = low if isinstance(low, int) and 0 < low <= _MAX_COUNTED else 0
    high = high if isinstance(high, int) and low <= high <= _MAX_COUNTED else None
    return low, high


def _literal(text: str) -> str:
    """A lark string literal (llguidance reads JSON's escapes)."""
    return json.dumps(text, ensure_ascii=False)


class ToolCallConstraint(LogitsProcessor):
    """Masks tokens that would take a tool call's body out of the tool's schema.

    Active only inside a call of the current assistant turn (the tokens after the format's
    ``turn_start``, ``<|assistant|>``, which may start in the prompt), from where the chat format says
    its body starts (:meth:`ChatFormat.call_body_start`):

    - JSON calls (GLM-4): after ``name\\n`` at the turn's start, when ``name`` is a function tool; built-ins
      such as ``python`` take free text and are left alone, and so are answers. When the JSON is complete,
      only the call's stop token (``<|observation|>``) remains allowed.
    - XML calls (GLM-4.5+): after each ``<tool_call>name`` in the turn (thinking, text and earlier calls
      may come first) whose ``name`` is a tool, built-ins included, up to its ``</tool_call>``; then the
      model is free until the next ``<tool_call>``. A ``<tool_call>`` inside ``<think>`` is held to the
      schema too: the call parser reads one there as a call when the ``</think>`` never comes. The tags
      are matched as the tokenizer writes them: as single tokens where it has them (GLM-4.5's does), as
      text otherwise.

    The processor reads each token once and keeps its state between steps (outside a call, only the last
    few bytes, to find a ``<tool_call>`` cut across tokens): use one per generation.
    """

    def __init__(self, tokenizer: Any, tools: list[ToolSpec], chat_format: ChatFormat = GLM4):
        self.chat_format = chat_format
        self.assistant_id = tokenizer.convert_tokens_to_ids(chat_format.turn_start)
        call_end = next(token for token, reason in chat_format.stop_reasons.items() if reason == "observation")
        self.call_end_id = tokenizer.convert_tokens_to_ids(call_end)
        self._tokenizer = _llguidance_tokenizer(tokenizer, self.call_end_id)
        self.xml = chat_format.call_syntax == "xml"
        if not self.xml:
            self.grammars = {tool.name: body_grammar(tool.parameters) for tool in tools if not tool.builtin}
        elif self._tokenizer is None:
            self.grammars = {}  # nothing to read the turn with: nothing is constrained
        else:
            tags = _tag_spellings(self._tokenizer)
            self.grammars = {tool.name: xml_body_grammar(tool.parameters, tags) for tool in tools}
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
        """Read the row's new tokens; the call's matcher when the row is inside the body of a constrained call."""
        turn = self._turns.get(row)
        # Per token, only the tokens since the last call (and the last one read, to see that the row is the
        # same sequence) leave the tensor: one copy to the host of a few ids, however long the prompt is.
        new = ids[turn.read - 1:].tolist() if turn is not None and 0 < turn.read <= len(ids) else None
        if turn is None or new is None or new[0] != turn.last:
            # the first call, or another sequence: the whole row is searched, once, for its last turn's start
            starts = (ids == self.assistant_id).nonzero()
            read = int(starts[-1]) + 1 if len(starts) else 0
            turn = self._turns[row] = _Turn(read=read, last=int(ids[read - 1]) if read else -1)
            new = ids[read - 1:].tolist() if read else [turn.last, *ids.tolist()]
        for token in new[1:]:
            self._read(turn, token)
            turn.last = token
        turn.read = len(ids)
        return turn.matcher

    def _read(self, turn: _Turn, token: int) -> None:
        if token == self.assistant_id:
            turn.header, turn.matcher, turn.free, turn.text, turn.opened = [], None, False, b"", False
        elif turn.matcher is not None:
            turn.matcher.consume_token(token)  # a token the grammar refuses (written in the prompt) ends the call
            if self.xml and (turn.matcher.is_stopped() or turn.matcher.is_accepting()):  # </tool_call> is written
                turn.matcher = None
                self._scan(turn, token)  # what the token carried past it may begin the next <tool_call>
        elif self.xml:
            if self.grammars:
                self._scan(turn, token)
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
        matcher = self._matcher(tokenizer, tool)
        if matcher is None:
            turn.free = True
            return
        matcher.consume_tokens(tokenizer.tokenize_bytes(body))  # what the newline's token carried
        turn.matcher = matcher

    def _scan(self, turn: _Turn, token: int) -> None:
        """XML, outside a call's body: find the next ``<tool_call>``, then its name's end."""
        assert self._tokenizer is not None  # no grammars without it
        text = turn.text + self._tokenizer.decode_bytes([token])
        opened = text.rfind(_CALL_OPEN)  # as text: the call parser splits the turn there, however it was written
        if opened >= 0:
            turn.opened, text = True, text[opened + len(_CALL_OPEN):]
        turn.text = text
        if turn.opened:
            self._open_call(turn)
        else:
            turn.text = text[-(len(_CALL_OPEN) - 1):]  # enough to find a <tool_call> cut across tokens

    def _open_call(self, turn: _Turn) -> None:
        """After ``<tool_call>``: once the name is complete, a matcher for the call's body if it names a tool."""
        tokenizer = self._tokenizer
        assert tokenizer is not None
        segment = CALL_OPEN + turn.text.decode("utf-8", "surrogateescape")  # one character per stray byte
        call = self.chat_format.call_body_start(segment)
        if call is None:
            if CALL_CLOSE in segment or len(turn.text) > self._longest_name:  # closed without arguments, or prose
                turn.opened, turn.text = False, turn.text[-(len(_CALL_OPEN) - 1):]
            return
        tool, start = call
        turn.opened, turn.text = False, b""
        if tool not in self.grammars:  # not a tool: the registry says so; left alone up to the next <tool_call>
            return
        matcher = self._matcher(tokenizer, tool)
        if matcher is None:
            return
        # what the name's last token carried past it: a newline, or the <arg_key> token (which tokenizes back to itself)
        matcher.consume_tokens(tokenizer.tokenize_bytes(segment[start:].encode("utf-8", "surrogateescape")))
        if not matcher.is_stopped():
            turn.matcher = matcher

    def _matcher(self, tokenizer: LLTokenizer, tool: str) -> LLMatcher | None:
        matcher = LLMatcher(tokenizer, self.grammars[tool], log_level=0)
        if matcher.is_error():  # the schema itself (unsatisfiable, a dangling $ref): say so, leave the call be
            log.warning("This call to %r is not constrained: its schema does not compile (%s)", tool,
                        matcher.get_error().splitlines()[0])
            return None
        return matcher

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
    header: list[int] = field(default_factory=list)  # JSON: the turn's tokens up to its first newline
    matcher: LLMatcher | None = None  # inside a call's body
    free: bool = False  # JSON: an answer or a built-in tool's call: left alone
    # XML, outside a body: after <tool_call>, the text since it (the name so far); before, the last few bytes
    text: bytes = b""
    opened: bool = False  # XML: after <tool_call>, before the name is complete


def _tag_spellings(tokenizer: LLTokenizer) -> dict[str, str]:
    """How the XML grammar writes each tag for ``tokenizer``: a reference to its token where it is one
    (special to llguidance, which reads every added token as special), else its text."""
    spellings = {}
    for tag in XML_TAGS:
        ids = tokenizer.tokenize_bytes(tag.encode())
        spellings[tag] = tag if len(ids) == 1 and tokenizer.is_special_token(ids[0]) else json.dumps(tag)
    return spellings


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
