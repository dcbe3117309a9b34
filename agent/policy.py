"""Policies: what an agent may do, loaded from TOML and validated by pydantic.

A policy is a TOML file with the sections ``[agent]``, ``[model]``, ``[tools]``, ``[sandbox]``,
``[files]``, ``[browser]`` and ``[cogview]``. Unknown keys are errors, so a typo never silently loosens a limit.

>>> policy = load_policy("strict")
>>> policy.sandbox.network
False
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .errors import PolicyError

POLICY_DIR = Path(__file__).parent / "policies"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AgentLimits(_Section):
    max_steps: int = Field(20, ge=1, description="model turns per run")
    max_tool_calls: int = Field(40, ge=0, description="tool calls per run")
    wall_time_s: float = Field(600.0, gt=0, description="wall-clock budget per run")
    max_repeated_calls: int = Field(3, ge=2, description="identical calls in a row before the loop stops them")


class ModelSettings(_Section):
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(1024, ge=1)
    constrained_calls: bool = Field(False, description="constrain tool-call JSON to the tool's schema (local models)")


BUILTIN_TOOLS = ("python", "simple_browser", "cogview")


class ToolSettings(_Section):
    enabled: list[str] = Field(default_factory=lambda: list(BUILTIN_TOOLS))
    require_approval: list[str] = Field(default_factory=list, description="tools that ask before each call")

    @field_validator("enabled")
    @classmethod
    def _known_builtins(cls, names: list[str]) -> list[str]:
        unknown = [name for name in names if name not in BUILTIN_TOOLS]
        if unknown:  # a typo would otherwise leave the agent without the tool, silently
            raise ValueError(f"{unknown[0]!r} is not a built-in tool (choose from {', '.join(BUILTIN_TOOLS)})")
        return names


class SandboxSettings(_Section):
    """The ``python`` tool's kernel sandbox (see ``sandbox/``)."""

    isolation: Literal["auto", "bwrap", "landlock", "none"] = Field(
        "auto", description="auto: the strongest that works; none: no OS isolation (must be explicit)")
    python: str | None = Field(None, description="the kernel's interpreter; by default the one the agent runs on "
                                                 "(its venv's packages included)")
    memory_mb: int = Field(2048, ge=512, description="address-space limit of the kernel (numpy+pandas need ~500)")
    max_processes: int = Field(64, ge=16, description="processes and threads of one kernel")
    max_file_mb: int = Field(256, ge=1, description="largest file the kernel may write")
    max_open_files: int = Field(256, ge=64)
    cpu_seconds: int = Field(300, ge=1, description="CPU budget of one kernel (it is restarted past it)")
    timeout_s: float = Field(60.0, gt=0, description="wall time of one cell before interrupt")
    interrupt_grace_s: float = Field(3.0, gt=0, description="wait after an interrupt before restarting")
    startup_timeout_s: float = Field(60.0, gt=0, description="wall time for a kernel to start")
    output_bytes: int = Field(20_000, ge=256, description="characters of output kept per stream and cell")
    tmp_mb: int = Field(256, ge=16, description="size of the kernel's private /tmp (bubblewrap tier)")
    disk_mb: int = Field(1024, ge=16, description="bytes the kernel's own /mnt/data may hold (as root; not a "
                                                  "--workdir of the user's); they count as memory too")
    max_files: int = Field(10_000, ge=100, description="files and folders the kernel's own /mnt/data may hold (as root)")
    network: bool = False
    pool_size: int = Field(1, ge=0, description="kernels started ahead")
    preload: list[str] = Field(default_factory=lambda: ["numpy", "sympy", "matplotlib.pyplot", "pandas"],
                               description="modules warm pool kernels import ahead")


class FileSettings(_Section):
    """The user's files: what may come in (``--file``, ``files=``, ``upload``) and what a run keeps."""

    max_file_mb: float = Field(100.0, gt=0, description="largest file a user may hand in")
    max_total_mb: float = Field(500.0, gt=0, description="all files handed in at once")
    max_files: int = Field(200, ge=1, description="files handed in at once (a folder counts each file)")
    max_output_mb: float = Field(200.0, ge=0, description="files a run keeps from /mnt/data, in all")
    max_document_chars: int = Field(50_000, ge=1000, description="characters of one document read into the "
                                                                 "conversation; the rest is cut, with a note")


class BrowserSettings(_Section):
    search_backend: Literal["searxng", "duckduckgo", "brave", "tavily", "zhipu"] = "duckduckgo"
    searxng_url: str | None = None
    allow_domains: list[str] = Field(default_factory=list)
    deny_domains: list[str] = Field(default_factory=list)
    allow_private_network: bool = False
    respect_robots: bool = True
    max_page_bytes: int = Field(5_000_000, ge=1024)
    timeout_s: float = Field(15.0, gt=0)
    max_results: int = Field(10, ge=1, le=50)
    search_endpoint: str | None = Field(None, description="another URL for the backend's API (a proxy, a test server)")
    window_chars: int = Field(6000, ge=500, description="characters of a page shown at once; longer pages scroll")
    retries: int = Field(2, ge=0, le=5, description="retries of a fetch or search on connection errors, 429 and 5xx")


class CogViewSettings(_Section):
    model: str = Field("THUDM/CogView4-6B", description="a diffusers text-to-image id or a local pipeline folder")
    max_width: int = Field(2048, ge=64)
    max_height: int = Field(2048, ge=64)
    max_steps: int = Field(50, ge=1, description="caps the denoising steps of every image")
    cpu_offload: bool = Field(False, description="keep weights in RAM and move each part to the GPU when it runs")
    steps: int | None = Field(None, ge=1, description="denoising steps; by default the model family's own")
    guidance_scale: float | None = Field(None, ge=0, description="by default the model family's own")
    width: int | None = Field(None, ge=16, description="default width; by default the model's native size")
    height: int | None = Field(None, ge=16, description="default height; by default the model's native size")
    cpu_max_gb: float = Field(8.0, gt=0, description="largest weights (GB on disk) run on the CPU when there is no GPU")


class Policy(_Section):
    """A whole policy. Build one in code or load it with :func:`load_policy`."""

    name: str = "custom"
    agent: AgentLimits = Field(default_factory=AgentLimits)
    model: ModelSettings = Field(default_factory=ModelSettings)
    tools: ToolSettings = Field(default_factory=ToolSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    browser: BrowserSettings = Field(default_factory=BrowserSettings)
    cogview: CogViewSettings = Field(default_factory=CogViewSettings)


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
        raise PolicyError(f"Policy file {str(path)!r}: {_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    """One sentence per problem, naming the key, e.g. ``unknown key 'sandbox.memroy_mb'``."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key!r}: {err['msg']}")
    return "; ".join(problems) + "."
