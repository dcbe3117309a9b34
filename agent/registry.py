"""The tool registry: resolves tool names, validates arguments, runs calls, turns results into observations.

Nothing a tool does escapes as an exception: a bad body, invalid arguments, an unknown tool or a tool
that raises all become error observations that say what went wrong and what shape was expected, so
the model can try again.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import numbers
import threading
from typing import Any, Callable, Iterable

from pydantic import BaseModel

from .builtins import builtin_class
from .errors import AgentError, ToolDefinitionError
from .files import InputFile
from .messages import Observation, ObservationPart, ToolCall, ToolSpec
from .policy import Policy
from .protocol.glm45 import decode_arguments
from .protocol.near_json import MAX_ARGUMENT_DEPTH, TOO_DEEP, nesting_depth, parse_json_arguments, strip_fence
from .tool import ArgumentError, FunctionTool, Tool, ToolContext, ToolOutput, to_png_bytes


def default_builtins(policy: Policy) -> list[str]:
    """The built-ins an agent gets when it names none: those the policy enables."""
    return list(policy.tools.enabled)


def load_builtin(name: str, policy: Policy) -> Tool:
    """The built-in installed under ``name`` (see :mod:`agent.builtins`), made for ``policy``."""
    cls = builtin_class(name)
    if name not in policy.tools.enabled:
        raise ToolDefinitionError(
            f"The policy {policy.name!r} does not enable the {name!r} tool: add it to [tools] enabled.")
    make: Callable[..., Tool] = cls  # built-ins are made with the policy (Tool's own constructor takes none)
    return make(policy=policy)


class ToolRegistry:
    """The tools of one agent, by name, as a model of one family is shown them.

    ``builtin_style`` is the model's (:attr:`ChatModel.builtin_style
    <agent.models.base.ChatModel.builtin_style>`): each tool is shown as its :meth:`Tool.variants` for it,
    so under ``"tir"`` the one ``simple_browser`` is shown as ``browser.search``, ``browser.open`` and
    ``browser.find``. :attr:`names`, :meth:`specs`, :meth:`call` and iteration are about the tools as shown;
    the policy names tools as they were added (:meth:`policy_name`).
    """

    def __init__(self, tools: Iterable[str | Tool | Callable[..., Any]] = (), policy: Policy | None = None,
                 builtin_style: str = "all_tools"):
        self.policy = policy or Policy()
        self._style = builtin_style
        self._tools: dict[str, Tool] = {}  # as added, by the names the policy knows them by
        self._shown: dict[str, Tool] = {}  # as the model is shown them, by the names it calls them by
        self._owner: dict[str, str] = {}  # a shown name -> the name of the tool it is a variant of
        try:
            for item in tools:
                self.add(item)
        except BaseException:
            self.close_now()  # tools already made may hold processes (warm kernels): freed before reporting
            raise

    def add(self, item: str | Tool | Callable[..., Any]) -> Tool:
        if isinstance(item, str):
            new = load_builtin(item, self.policy)
        elif isinstance(item, Tool):
            new = item
        elif inspect.isclass(item) and issubclass(item, Tool):
            new = item()
        elif callable(item):
            new = FunctionTool(item)
        else:
            raise ToolDefinitionError(f"Cannot use {item!r} as a tool: pass a built-in name, a @tool function or a Tool.")
        new.spec  # validates the signature now, not at the first call
        if new.name in self._tools:
            raise ToolDefinitionError(f"Two tools are named {new.name!r}: rename one with @tool(name=...).")
        shown, owner = dict(self._shown), dict(self._owner)
        _show(new, self._style, shown, owner)
        self._tools[new.name] = new
        self._shown, self._owner = shown, owner
        return new

    @property
    def builtin_style(self) -> str:
        return self._style

    @builtin_style.setter
    def builtin_style(self, style: str) -> None:
        """Show the tools as a model of another family knows them (the agent's model changed); nothing
        changes if two names would clash."""
        if style == self._style:
            return
        previous = self._style
        self._style = style
        try:
            self._show_again()
        except ToolDefinitionError:
            self._style = previous
            raise

    def requires_approval(self, name: str) -> bool:
        """Whether a call to the tool shown as ``name`` asks first: ``[tools] require_approval`` names it or its
        tool (``simple_browser`` covers ``browser.open``, an MCP server's name all its tools), or it says so."""
        listed = self.policy.tools.require_approval
        tool = self._shown.get(name)
        return name in listed or self.policy_name(name) in listed or bool(tool is not None and tool.requires_approval)

    def policy_name(self, name: str) -> str:
        """The name the policy knows the tool shown as ``name`` by: its own, or for a variant the name of
        its tool (``browser.open`` → ``simple_browser``); an unknown name as it is."""
        return self._owner.get(name, name)

    def __contains__(self, name: str) -> bool:
        return name in self._shown or name in self._tools

    def __iter__(self):
        return iter(self._shown.values())

    def __len__(self) -> int:
        return len(self._shown)

    @property
    def names(self) -> list[str]:
        return list(self._shown)

    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self._shown.values()]

    async def call(self, call: ToolCall, context: ToolContext) -> Observation:
        """Run one call and return its observation; never raises for the tool's or the model's faults."""
        tool = self._shown.get(call.name)
        if tool is None:
            return error_observation(call, f"There is no tool named {call.name!r}. Available tools: {', '.join(self.names) or 'none'}.")
        try:
            raw = call.arguments if call.arguments is not None else _read_body(tool, call)
            if nesting_depth(raw) > MAX_ARGUMENT_DEPTH:
                raise ValueError(TOO_DEEP)
        except RecursionError:
            return error_observation(call, f"Could not read the call to {tool.name!r}: {TOO_DEEP}. {expected_shape(tool)}")
        except ValueError as exc:
            return error_observation(call, f"Could not read the call to {tool.name!r}: {exc}. {expected_shape(tool)}")
        try:
            args = tool.validate(raw)
        except ArgumentError as exc:
            return error_observation(call, f"Invalid arguments for {tool.name!r}: {exc}. {expected_shape(tool)}")
        try:
            value = await tool.acall(args, context)
        except AgentError as exc:
            return error_observation(call, f"{tool.name} failed: {exc}")
        except Exception as exc:  # the tool's own bug or failure: the model sees it and the run goes on
            return error_observation(call, f"{tool.name} raised {type(exc).__name__}: {exc}")
        return to_observation(call, value, context)

    async def receive_files(self, files: list[InputFile], context: ToolContext) -> list[str] | None:
        """Hand the user's files to the first tool that takes them; where its code sees each, or ``None``."""
        for tool in self._tools.values():
            seen_as = await tool.receive_files(files, context)
            if seen_as is not None:
                return seen_as
        return None

    def close_now(self) -> None:
        """Close every tool from synchronous code, also where an event loop already runs (on a thread of its own)."""
        closer = threading.Thread(target=asyncio.run, args=(self.aclose(),))
        closer.start()
        closer.join()

    async def start(self) -> None:
        for tool in self._tools.values():
            await tool.start()
        self._show_again()

    async def discover(self) -> None:
        """Let each tool learn what it is shown as (an MCP server's tools), then show them so."""
        for tool in self._tools.values():
            await tool.discover()
        self._show_again()

    def _show_again(self) -> None:
        """Recompute what the model is shown, after tools learnt their variants; a name two tools would share
        is an error, and nothing changes."""
        shown: dict[str, Tool] = {}
        owner: dict[str, str] = {}
        for tool in self._tools.values():
            _show(tool, self._style, shown, owner)
        self._shown, self._owner = shown, owner

    async def aclose(self) -> None:
        for tool in self._tools.values():
            await tool.aclose()


def _show(tool: Tool, style: str, shown: dict[str, Tool], owner: dict[str, str]) -> None:
    """Add what a model whose built-ins go by ``style`` is shown of ``tool`` to ``shown`` (by name) and
    ``owner`` (each shown name's tool); a name already there is an error."""
    for variant in tool.variants(style):
        variant.spec  # a variant's schema is checked when it is made, as a tool's is
        if variant.name in shown:
            renamed = sorted({owner[variant.name], tool.name} - {variant.name})  # tools shown under other names
            how = f" (one is how {' and '.join(map(repr, renamed))} is shown to this model)" if renamed else ""
            raise ToolDefinitionError(f"Two tools are named {variant.name!r}{how}: rename one with @tool(name=...).")
        shown[variant.name], owner[variant.name] = variant, tool.name


def _read_body(tool: Tool, call: ToolCall) -> dict[str, Any]:
    if call.syntax == "json" and tool.builtin:
        # Chat APIs send JSON arguments; some pass GLM-4's raw body (code, a browser call) through
        # instead. Only a whole JSON object naming the tool's own parameters counts as arguments:
        # code such as `d = {"a": 1}` must stay code.
        try:
            value = json.loads(strip_fence(call.body))
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict) and set(value) <= set(tool.spec.parameters.get("properties", {})):
            return value
        return tool.parse_body(call.body)
    if call.syntax == "json":
        return parse_json_arguments(call.body)
    if call.syntax == "xml":  # GLM-4.5+: typed by the schema here, where the schema is known
        return decode_arguments(call.body, tool.spec.parameters)
    return tool.parse_body(call.body)


def expected_shape(tool: Tool) -> str:
    """What a malformed call is told to send instead: the tool's own hint, or its JSON schema."""
    return tool.usage or f"Expected JSON arguments matching {json.dumps(tool.spec.parameters, ensure_ascii=False)}"


def error_observation(call: ToolCall, text: str) -> Observation:
    """The observation of a call that failed or was refused: the model reads ``text`` and goes on."""
    return Observation(call_id=call.id, tool=call.name, content=text, is_error=True)


def to_observation(call: ToolCall, value: Any, context: ToolContext) -> Observation:
    """Turn what a tool returned into what the model reads: text, JSON, or a saved image."""
    if isinstance(value, Observation):
        return value.model_copy(update={"call_id": call.id, "tool": call.name})
    if isinstance(value, ToolOutput):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, ToolOutput) for v in value):
        return Observation(
            call_id=call.id, tool=call.name, content="\n\n".join(v.text for v in value),
            metadata=value[0].metadata, is_error=all(v.is_error for v in value),
            artifacts=[a for v in value for a in v.artifacts], citations=[c for v in value for c in v.citations],
            parts=[ObservationPart(metadata=v.metadata, content=v.text) for v in value] if len(value) > 1 else [],
        )
    png = to_png_bytes(value)
    if png is not None:
        artifact = context.save_artifact(png, tool=call.name)
        return Observation(call_id=call.id, tool=call.name, content=f"Image saved to {artifact.path.name}.",
                           artifacts=[artifact])
    if value is None or value == "":  # GLM-4's template drops empty turns: say something
        text = "Done (no output)."
    elif isinstance(value, str):
        text = value
    elif isinstance(value, (bool, numbers.Number)):
        text = json.dumps(value) if isinstance(value, bool) else str(value)
    elif isinstance(value, BaseModel):
        text = value.model_dump_json()
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=_json_default)
        except (TypeError, ValueError):
            text = str(value)
    return Observation(call_id=call.id, tool=call.name, content=text)


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)
