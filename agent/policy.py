"""Policies: what an agent may do, loaded from TOML and validated by pydantic.

A policy is a TOML file with the core sections ``[agent]``, ``[model]``, ``[tools]``, ``[files]`` and
``[mcp]`` (MCP servers whose tools the agent gets, ``[mcp.servers.NAME]``), and one section per built-in
tool, validated by the settings model the tool declares (``[sandbox]`` for ``python``, ``[browser]`` for
``simple_browser``, ``[cogview]``). Unknown sections and keys are errors, so a typo never silently
loosens a limit. Policies are read-only: change one with ``model_copy(update=...)`` (``with_section`` for
one section).

>>> policy = load_policy("strict")
>>> policy.sandbox.network
False
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .builtins import builtin_class, builtin_names, policy_sections
from .errors import PolicyError
from .mcp.settings import MCPSettings

POLICY_DIR = Path(__file__).parent / "policies"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentLimits(_Section):
    max_steps: int = Field(20, ge=1, description="model turns per run")
    max_tool_calls: int = Field(40, ge=0, description="tool calls per run")
    wall_time_s: float = Field(600.0, gt=0, description="wall-clock budget per run")
    max_repeated_calls: int = Field(3, ge=2, description="identical calls in a row before the loop stops them")


class ModelSettings(_Section):
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the share of probability sampled from")
    max_new_tokens: int = Field(1024, ge=1, description="tokens the model may write in one turn")
    constrained_calls: bool = Field(False, description="constrain tool-call bodies (JSON or XML) to the tool's "
                                                       "schema (local models)")
    thinking: bool | None = Field(None, description="GLM-4.5+ models: think before answering (unset: the model's "
                                                    "default, on)")
    preserved_thinking: bool | None = Field(None, description="GLM-4.7: keep earlier turns' reasoning in the "
                                                              "history (unset: on, as GLM-4.7 recommends for agents)")


class ToolSettings(_Section):
    enabled: list[str] = Field(default_factory=builtin_names, description="built-ins an agent gets by default")
    require_approval: list[str] = Field(default_factory=list, description="tools that ask before each call")

    @field_validator("enabled")
    @classmethod
    def _known_builtins(cls, names: list[str]) -> list[str]:
        known = builtin_names()
        unknown = [name for name in names if name not in known]
        if unknown:  # a typo would otherwise leave the agent without the tool, silently
            raise ValueError(f"{unknown[0]!r} is not a built-in tool (choose from {', '.join(known)})")
        return names


class FileSettings(_Section):
    """The user's files: what may come in (``--file``, ``files=``, ``upload``) and what a run keeps."""

    max_file_mb: float = Field(100.0, gt=0, description="largest file a user may hand in")
    max_total_mb: float = Field(500.0, gt=0, description="all files handed in at once")
    max_files: int = Field(200, ge=1, description="files handed in at once (a folder counts each file)")
    max_output_mb: float = Field(200.0, ge=0, description="files a run keeps from /mnt/data, in all")
    max_document_chars: int = Field(50_000, ge=1000, description="characters of one document read into the "
                                                                 "conversation; the rest is cut, with a note")


class Policy(BaseModel):
    """A whole policy. Build one in code or load it with :func:`load_policy`.

    Each built-in's section is an attribute too (``policy.sandbox``, ``policy.browser``), holding that
    tool's settings model, with its defaults when the policy does not mention it.

    >>> Policy(sandbox={"memory_mb": 4096}).sandbox.memory_mb
    4096
    """

    model_config = ConfigDict(extra="allow", frozen=True)  # extra: the built-ins' sections, checked below

    name: str = "custom"
    agent: AgentLimits = Field(default_factory=AgentLimits)
    model: ModelSettings = Field(default_factory=ModelSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    mcp: MCPSettings = Field(default_factory=MCPSettings)

    if TYPE_CHECKING:  # each built-in's section, by its name: checked at runtime, not by mypy
        def __getattr__(self, name: str) -> Any: ...

    @model_validator(mode="before")
    @classmethod
    def _tool_sections(cls, data: Any) -> Any:
        """Validate each built-in's section with its settings model; refuse sections no tool declares."""
        if not isinstance(data, dict):
            return data
        sections = policy_sections()
        unknown = [key for key in data if key not in cls.model_fields and key not in sections]
        if unknown:
            for name in builtin_names():
                builtin_class(name)  # a built-in that does not load says why (its section would look unknown)
            raise PolicyError(f"unknown key {unknown[0]!r}: no such section (sections: "
                              f"{', '.join([*[k for k in cls.model_fields if k != 'name'], *sections])}).")
        data = dict(data)
        problems = []
        for section, model in sections.items():
            value = data.get(section, {})
            if isinstance(value, model):
                continue
            try:
                data[section] = model.model_validate(value)
            except ValidationError as exc:
                problems.append(_describe(exc, prefix=section))
        if problems:
            raise PolicyError("; ".join(problems) + ".")
        return data

    def section(self, name: str) -> BaseModel:
        """A built-in's settings by section name (``"sandbox"``), as :attr:`policy.sandbox` gives them."""
        value = (self.__pydantic_extra__ or {}).get(name)
        if value is None:
            raise PolicyError(f"The policy has no section [{name}]: no installed built-in declares it.")
        return value

    def with_section(self, name: str, **changes: Any) -> "Policy":
        """A copy with some keys of one section changed: ``policy.with_section("sandbox", memory_mb=4096)``."""
        current = getattr(self, name) if name in type(self).model_fields else self.section(name)
        try:
            changed = type(current).model_validate({**current.model_dump(), **changes})
        except ValidationError as exc:
            raise PolicyError(_describe(exc, prefix=name) + ".") from None
        return self.model_copy(update={name: changed})


def builtin_policies() -> list[str]:
    return sorted(p.stem for p in POLICY_DIR.glob("*.toml"))


def load_policy(policy: str | Path | Policy | None = None) -> Policy:
    """Load a policy by name (``default``, ``strict``, ``trusted``), TOML path, or pass one through."""
    if policy is None:
        policy = "default"
    if isinstance(policy, Policy):
        return policy
    path = Path(policy)
    if not path.suffix and not path.exists():
        path = POLICY_DIR / f"{policy}.toml"
        if not path.exists():
            raise PolicyError(
                f"Unknown policy {str(policy)!r}: use one of {', '.join(builtin_policies())} or a path to a TOML file."
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"Policy file {str(path)!r} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"Policy file {str(path)!r} is not valid TOML: {exc}.") from None
    data.setdefault("name", path.stem)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"Policy file {str(path)!r}: {_describe(exc)}.") from None
    except PolicyError as exc:
        raise PolicyError(f"Policy file {str(path)!r}: {exc}") from None


def _describe(exc: ValidationError, prefix: str = "") -> str:
    """One phrase per problem, naming the key, e.g. ``unknown key 'sandbox.memroy_mb'``."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in ([prefix] if prefix else []) + list(err["loc"]))
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        elif err["type"] == "value_error":  # a validator's own sentence, without pydantic's "Value error, "
            problems.append(f"{key!r}: {err['ctx']['error']}")
        else:
            problems.append(f"{key!r}: {err['msg']}")
    return "; ".join(problems)


def _all_sections() -> dict[str, type[BaseModel]]:
    """Every section a policy may have and the model that validates it: the core ones, then the built-ins'."""
    sections = {name: field.annotation for name, field in Policy.model_fields.items()
                if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)}
    return {**sections, **policy_sections()}


def policy_schema() -> dict[str, Any]:
    """The JSON Schema of a policy file (``agent policy --schema``), the installed built-ins' sections included."""
    properties: dict[str, Any] = {"name": {"type": "string"}}
    properties.update({name: model.model_json_schema() for name, model in _all_sections().items()})
    return {"title": "glm-agent policy", "type": "object", "properties": properties, "additionalProperties": False}


def policy_table() -> str:
    """The policy reference as a Markdown table, from the models themselves (``agent policy`` prints it;
    the README holds a copy that a test keeps equal)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for section, model in _all_sections().items():
        rows += _rows(section, model)
    return "\n".join(rows)


def _rows(section: str, model: type[BaseModel]) -> list[str]:
    """A section's rows; a key holding named tables of their own (``[mcp.servers.NAME]``) gets theirs after it."""
    rows, nested = [], []
    for key, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = ("all installed" if (section, key) == ("tools", "enabled") else
                 "unset" if default is None else f"`{json.dumps(default, ensure_ascii=False)}`")
        rows.append(f"| `[{section}] {key}` | {shown} | {field.description or ''} |")
        value_type = get_args(field.annotation)[1] if get_origin(field.annotation) is dict else None
        if isinstance(value_type, type) and issubclass(value_type, BaseModel):
            nested += _rows(f"{section}.{key}.NAME", value_type)
    return rows + nested
