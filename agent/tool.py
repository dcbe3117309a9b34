"""Tools: the ``@tool`` decorator, the ``Tool`` base class for tools with state, and what they return.

A tool's schema comes from its signature and its Google-style docstring:

>>> @tool
... def convert(amount: float, currency: str = "EUR") -> str:
...     '''Convert US dollars to another currency.
...
...     Args:
...         amount: amount in US dollars
...         currency: ISO code of the target currency
...     '''
...     return f"{amount * 0.9:.2f} {currency}"
>>> convert.spec.parameters["required"]
['amount']

A tool may take a parameter annotated :class:`ToolContext` (any name): it is filled in by the loop and
left out of the schema. It gives the run's directory, the policy and per-session state.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .errors import ToolDefinitionError
from .files import InputFile, write_private
from .runtime import current_runtime
from .messages import Artifact, Citation, ToolSpec
from .policy import Policy
from .protocol.near_json import parse_json_arguments


@dataclass
class ToolContext:
    """What the loop hands a tool: where to save files, the policy, state that lasts the session.

    ``run_id`` names the current run (one user turn); ``workdir``, when set, is a host folder the
    user wants the tools' files in (``Agent(workdir=...)``). The ``on_*`` hooks are the loop's: a
    tool reports through :meth:`progress`, :meth:`output` and :meth:`notice`.
    """

    run_id: str
    artifacts_dir: Path
    policy: Policy = field(default_factory=Policy)
    state: dict[str, Any] = field(default_factory=dict)
    resources: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    workdir: Path | None = None
    on_progress: Callable[[str, str, float | None], None] | None = None
    on_output: Callable[[str, str, str], None] | None = None
    on_notice: Callable[[str, str], None] | None = None
    pending_notices: list[tuple[str, str]] = field(default_factory=list)

    def progress(self, tool: str, message: str, fraction: float | None = None) -> None:
        """Report progress (e.g. diffusion steps); shown by the CLI, emitted as an event."""
        if self.on_progress is not None:
            self.on_progress(tool, message, fraction)

    def output(self, tool: str, stream: str, text: str) -> None:
        """Pass on output as it comes (a running cell's ``stdout``/``stderr``); safe from any thread."""
        if self.on_output is not None:
            self.on_output(tool, stream, text)

    def notice(self, tool: str, message: str) -> None:
        """Tell the user something once (e.g. which sandbox tier is in force); not part of the conversation.

        Outside a run (a chat's upload), the notice waits for the next run to start.
        """
        if self.on_notice is not None:
            self.on_notice(tool, message)
        else:
            self.pending_notices.append((tool, message))

    def save_artifact(self, data: bytes, *, tool: str, suffix: str = ".png", kind: str = "image",
                      description: str = "") -> Artifact:
        path = write_private(self.artifacts_dir / f"{tool}-{uuid.uuid4().hex[:8]}{suffix}", data)
        return Artifact(path=path, kind=kind, tool=tool, description=description)


async def in_worker_thread(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on a worker thread of the current :class:`~agent.runtime.Runtime`; cancelling
    the await abandons the call (a daemon thread: it never keeps the process from exiting)."""
    return await current_runtime().run_in_thread(fn, *args, **kwargs)


class ToolOutput(BaseModel):
    """A tool's full answer, for tools that need more than a value: GLM-4 metadata, files, citations."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str
    metadata: str = ""
    is_error: bool = False
    artifacts: list[Artifact] = Field(default_factory=list)
    citations: list[Citation] = Field(default_factory=list)


class Tool:
    """Base class of every tool. Subclass it for a tool with state and define ``forward``.

    >>> class Counter(Tool):
    ...     name = "counter"
    ...     description = "Count up and return the total."
    ...     def __init__(self):
    ...         self.total = 0
    ...     def forward(self, step: int = 1) -> int:
    ...         self.total += step
    ...         return self.total

    ``forward`` may be sync (run in a thread) or async. A tool GLM-4 knows natively sets ``builtin``
    (its type in GLM-4's system prompt) and ``builtin_prompt`` (how that prompt describes it), and
    overrides :meth:`parse_body` to read the raw text GLM-4 sends it. A built-in installed under a
    name (see :mod:`agent.builtins`) also declares its policy ``section`` and ``settings_model``.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    builtin: ClassVar[str | None] = None  # GLM-4's native type for this tool; None: a function with a schema
    builtin_prompt: ClassVar[str] = ""  # the text under "## {builtin}" in GLM-4's system prompt
    usage: ClassVar[str] = ""  # what a malformed call is told to send instead (default: the JSON schema)
    section: ClassVar[str | None] = None  # the policy section holding its settings, e.g. "browser"
    settings_model: ClassVar[type[BaseModel] | None] = None  # the model that validates that section
    code: ClassVar[tuple[str, str] | None] = None  # (language, argument): calls shown as highlighted code
    requires_approval: bool = False  # ask before each call even where [tools] require_approval does not name it

    forward: Callable[..., Any]

    @property
    def spec(self) -> ToolSpec:
        spec = self._signature.spec
        if self.builtin:
            if not self.builtin_prompt.strip():
                raise ToolDefinitionError(
                    f"Tool {self.name!r} says GLM-4 knows it natively as {self.builtin!r} but gives no "
                    f"`builtin_prompt` to describe it with: set one, or leave `builtin` unset to offer it as a function.")
            spec = spec.model_copy(update={"builtin": self.builtin, "prompt": self.builtin_prompt})
        return spec

    @property
    def _signature(self) -> "_Signature":
        sig = self.__dict__.get("_cached_signature")
        if sig is None:
            if not self.name:
                raise ToolDefinitionError(f"{type(self).__name__} needs a `name`.")
            sig = _Signature.of(self.forward, self.name, self.description)
            self.__dict__["_cached_signature"] = sig
        return sig

    @property
    def args_model(self) -> type[BaseModel]:
        return self._signature.model

    @classmethod
    def from_schema(cls, spec: dict[str, Any], fn: Callable[..., Any]) -> "Tool":
        """A tool from an OpenAI function spec and a handler of the validated arguments (a dict).

        ``spec`` is ``{"name", "description", "parameters"}`` or ``{"type": "function", "function": {...}}``
        (what other frameworks, MCP servers and BFCL give). The model sees the schema as given;
        arguments are checked against it as JSON Schema, and reach ``fn`` (sync or async) as they
        came: integers stay integers, keys the schema allows are kept. A handler with a second
        parameter gets the call's :class:`ToolContext` there too.

        >>> weather = Tool.from_schema({"name": "weather", "parameters": {"type": "object",
        ...     "properties": {"city": {"type": "string"}}, "required": ["city"]}}, lambda args: "sunny")
        """
        return SchemaTool(spec, fn)

    def validate(self, raw: dict[str, Any]) -> Any:
        """The call's arguments, checked; raises :class:`ArgumentError` naming what is wrong."""
        # A nested pydantic model drops keys it does not declare; its schema says they are not
        # allowed, so a call that has them is told, not silently changed.
        undeclared = [e for e in self._signature.keys_check.iter_errors(raw) if e.validator == "additionalProperties"]
        if undeclared:
            raise ArgumentError(describe_schema_errors(undeclared))
        try:
            return self.args_model.model_validate(raw)
        except ValidationError as exc:
            raise ArgumentError(describe_validation(exc)) from None

    def parse_body(self, body: str) -> dict[str, Any]:
        """Turn the raw text of a GLM-4 call into arguments. Functions take JSON (tolerantly)."""
        return parse_json_arguments(body)

    async def acall(self, args: BaseModel, context: ToolContext) -> Any:
        signature = self._signature
        kwargs = {signature.parameters.get(name, name): getattr(args, name) for name in type(args).model_fields}
        if signature.context_param:
            kwargs[signature.context_param] = context
        if signature.is_async:
            return await self.forward(**kwargs)
        return await in_worker_thread(self.forward, **kwargs)

    def variants(self, builtin_style: str) -> list["Tool"]:
        """The tools this one is shown to a model as, for a family whose built-ins go by ``builtin_style``
        (:attr:`ChatModel.builtin_style <agent.models.base.ChatModel.builtin_style>`): ``"all_tools"``
        (GLM-4 All Tools: ``simple_browser``) or ``"tir"`` (GLM-4.6's tool-integrated reasoning:
        ``browser.search``, ``browser.open``, ``browser.find``). By default, itself.

        A variant works on its tool's state (its session in ``context.state``); the registry starts and
        closes only the tool itself, and the policy names it by the tool's name (``[tools] enabled``,
        ``require_approval``).
        """
        return [self]

    async def receive_files(self, files: list[InputFile], context: ToolContext) -> list[str] | None:
        """Take the user's files for this session; return where the tool's code sees each one, in order.

        The default, ``None``, means this tool takes no files (they are then read into the
        conversation as documents). The ``python`` tool copies them into ``/mnt/data``. A file that
        cannot be taken raises :class:`~agent.errors.FileInputError`.
        """
        return None

    @classmethod
    def doctor(cls, policy: Any) -> list[Any]:
        """``agent doctor``'s checks of what this tool needs from the machine (a list of
        :class:`~agent.doctor.Finding`), for the ``policy`` it would run under; none by default."""
        return []

    async def discover(self) -> None:
        """Learn what :meth:`variants` returns, where that is not known until something starts (an MCP
        server's tools). The registry calls it before a session's first turn (and :meth:`Agent.start`
        does), then shows the tool again; nothing by default."""

    async def start(self) -> None:
        """Get ready ahead of the first call (warm a kernel, say). :meth:`Agent.start` calls it; the
        constructor must start nothing, so that making a tool costs nothing until it is used."""

    async def aclose(self) -> None:
        """Release what the tool holds for the whole process (kernels, pipelines)."""

    def __repr__(self) -> str:
        return f"<Tool {self.name}>"


class FunctionTool(Tool):
    """A tool made from a function by ``@tool``; calling it calls the function."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None, description: str | None = None):
        self.fn = fn
        self.name = name or fn.__name__  # type: ignore[misc]
        self.description = description or ""  # type: ignore[misc]
        self.forward = fn
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


# A name is letters, digits, '_' and '-', or such parts joined by dots (GLM-4.6 was trained with
# `browser.search`; MCP servers namespace their tools so too), at most 64 characters in all.
_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z_][A-Za-z0-9_\-]*)*")
NAME_RULE = "must be letters, digits, '_' or '-' (parts may be joined by '.'; at most 64 characters)"


def is_tool_name(name: str) -> bool:
    """Whether ``name`` can name a tool: ``get_weather``, ``browser.search``."""
    return len(name) <= 64 and _TOOL_NAME.fullmatch(name) is not None


class ArgumentError(ValueError):
    """A call's arguments do not fit the tool's schema; the message names each problem."""


class SchemaTool(Tool):
    """A tool made by :meth:`Tool.from_schema`: a JSON Schema and a handler of the arguments dict."""

    def __init__(self, spec: dict[str, Any], fn: Callable[..., Any]):
        from jsonschema import SchemaError, validators

        function = spec.get("function", spec) if spec.get("type") == "function" else spec
        name, parameters = function.get("name"), function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(name, str) or not is_tool_name(name):
            raise ToolDefinitionError(f"Tool name {name!r} {NAME_RULE}.")
        if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
            raise ToolDefinitionError(f"Tool {name!r}: parameters must be a JSON Schema of an object.")
        validator_class = validators.validator_for(parameters)
        try:
            validator_class.check_schema(parameters)
        except SchemaError as exc:
            raise ToolDefinitionError(f"Tool {name!r}: its parameters are not valid JSON Schema ({exc.message}).") from None
        if not callable(fn):
            raise ToolDefinitionError(f"Tool {name!r}: the handler must be callable, got {type(fn).__name__}.")
        self.name = name  # type: ignore[misc]
        self.description = str(function.get("description") or "")  # type: ignore[misc]
        self._spec = ToolSpec(name=name, description=self.description, parameters=parameters)
        self._validator = validator_class(parameters)
        self._fn = fn
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        self._takes_context = _positional_parameters(fn) >= 2

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    def validate(self, raw: dict[str, Any]) -> dict[str, Any]:
        errors = list(self._validator.iter_errors(raw))
        if errors:
            raise ArgumentError(describe_schema_errors(errors))
        return raw

    async def acall(self, args: Any, context: ToolContext) -> Any:
        given = (args, context) if self._takes_context else (args,)
        if self._is_async:
            return await self._fn(*given)
        return await in_worker_thread(self._fn, *given)


def _positional_parameters(fn: Callable[..., Any]) -> int:
    """How many positional parameters ``fn`` names (``*args`` does not count: such a handler always got one)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: it takes the arguments dict
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)


def describe_schema_errors(errors: list[Any]) -> str:
    """jsonschema's errors as one sentence: where each is and what is wrong (the first five)."""
    errors = sorted(errors, key=lambda e: list(e.absolute_path))
    return "; ".join(f"{_where(e.absolute_path)} {e.message}" for e in errors[:5])


def _where(path: Any) -> str:
    parts = list(path)
    return repr(".".join(str(p) for p in parts)) if parts else "the arguments:"


def describe_validation(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "missing":
            problems.append(f"{field!r} is required")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field!r} is not a parameter")
        else:
            problems.append(f"{field!r} {err['msg'][0].lower()}{err['msg'][1:]} (got {err.get('input')!r})")
    return "; ".join(problems)


def tool(fn: Callable[..., Any] | None = None, *, name: str | None = None,
         description: str | None = None) -> Any:
    """Make a tool of a function (sync or async). Use as ``@tool`` or ``@tool(name="...")``."""
    if fn is None:
        return lambda f: FunctionTool(f, name=name, description=description)
    return FunctionTool(fn, name=name, description=description)


# ---------------------------------------------------------------------------------------------------
# Schemas from signatures


@dataclass
class _Signature:
    spec: ToolSpec
    model: type[BaseModel]
    context_param: str | None
    is_async: bool
    parameters: dict[str, str]  # the model's field -> the function's parameter (they differ for `_name`)
    keys_check: Any  # a jsonschema validator of the schema, for keys no object declares

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str, description: str) -> "_Signature":
        if not is_tool_name(name):
            raise ToolDefinitionError(f"Tool name {name!r} {NAME_RULE}.")
        summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        try:
            hints = get_type_hints(fn, include_extras=True)
        except Exception as exc:  # unresolved forward references
            raise ToolDefinitionError(f"Tool {name!r}: cannot read its type hints ({exc}).") from None
        fields: dict[str, Any] = {}
        parameters: dict[str, str] = {}  # field -> the function's parameter
        context_param = None
        for param in inspect.signature(fn).parameters.values():
            if param.name == "self":
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ToolDefinitionError(f"Tool {name!r}: *args and **kwargs cannot be described to a model.")
            annotation = hints.get(param.name, Any)
            if annotation is ToolContext:
                context_param = param.name
                continue
            default = ... if param.default is param.empty else param.default
            info = Field(default, description=arg_docs.get(param.name))
            field_name = param.name
            if field_name.startswith("_"):  # pydantic reserves these: a field of another name, called by this one
                field_name, info = f"param{field_name}", Field(default, alias=param.name, description=info.description)
            parameters[field_name] = param.name
            fields[field_name] = (annotation, info)
        try:
            model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
            schema = _closed_objects(_clean_schema(model.model_json_schema()))
        except Exception as exc:
            raise ToolDefinitionError(f"Tool {name!r}: its parameters cannot be turned into a schema ({exc}).") from None
        spec = ToolSpec(name=name, description=description or summary, parameters=schema)
        from jsonschema import validators

        return cls(spec=spec, model=model, context_param=context_param, is_async=inspect.iscoroutinefunction(fn),
                   parameters=parameters, keys_check=validators.validator_for(schema)(schema))


def _clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Drop pydantic's generated titles: they cost prompt tokens and tell a model nothing."""

    def clean(node: Any, in_properties: bool = False) -> Any:
        if isinstance(node, dict):
            return {
                key: clean(value, in_properties=(key in ("properties", "$defs") and not in_properties))
                for key, value in node.items()
                if in_properties or key != "title"
            }
        if isinstance(node, list):
            return [clean(item) for item in node]
        return node

    cleaned = clean(schema)
    cleaned.setdefault("properties", {})
    return cleaned


def _closed_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """Say ``additionalProperties: false`` on every object with declared fields that does not say otherwise.

    pydantic leaves it out for models that ignore unknown keys, and JSON Schema's default is to
    allow them: the model (and the constrained decoder) would think an extra key is kept.
    """
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its summary and per-argument descriptions."""
    summary_lines: list[str] = []
    args: dict[str, str] = {}
    section = None
    current = None
    args_indent = 0
    for raw in doc.splitlines():
        line = raw.strip()
        header = _SECTION.match(line)
        if header and not raw.startswith((" ", "\t")):
            section = header.group(1)
            current = None
            continue
        if section is None:
            summary_lines.append(line)
        elif section in ("Args", "Arguments", "Parameters") and line:
            match = _ARG_LINE.match(line)
            indent = len(raw) - len(raw.lstrip())
            if match and (current is None or indent <= args_indent):
                current = match.group(1).lstrip("*")
                args_indent = indent
                args[current] = match.group(2).strip()
            elif current is not None:
                args[current] = f"{args[current]} {line}".strip()
    summary = "\n".join(summary_lines).strip()
    return re.sub(r"\n{3,}", "\n\n", summary), args


def to_png_bytes(value: Any) -> bytes | None:
    """PNG bytes of a value that is an image (PNG bytes or a PIL image), else ``None``."""
    if isinstance(value, (bytes, bytearray)) and bytes(value[:8]) == b"\x89PNG\r\n\x1a\n":
        return bytes(value)
    if type(value).__module__.startswith("PIL.") and hasattr(value, "save"):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    return None
