"""``agent doctor``: what this machine offers the agent, each finding with its fix.

Checks the kernel's interpreter, the sandbox tiers, cgroups, the GPU, local weights and the search
backend's settings. Nothing is changed and nothing is downloaded; the hub is not contacted.

>>> [f.check for f in diagnose(Policy())]          # doctest: +SKIP
['interpreter', 'sandbox', 'sandbox tier bwrap', 'sandbox tier landlock', 'cgroups', 'gpu', ...]
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel

from .policy import Policy

Status = Literal["ok", "warn", "fail"]
PER_PROCESS_FIX = ("to bound a kernel in all, lower [sandbox] max_processes: memory_mb and cpu_seconds apply "
                   "to each of its processes")


class Finding(BaseModel):
    """One thing checked: ``ok``, ``warn`` (works, with a limit worth knowing) or ``fail`` (a feature will not work)."""

    check: str
    status: Status
    detail: str
    fix: str = ""


def diagnose(policy: Policy) -> list[Finding]:
    """Every check, in the order people read them; a check that crashes is a finding, not an exception."""
    findings: list[Finding] = []
    checks: list[Callable[[Policy], list[Finding]]] = [_interpreter, _sandbox, _cgroups, _gpu, _weights, _search]
    for check in checks:
        try:
            findings += check(policy)
        except Exception as exc:  # the doctor reports; it does not fall over
            findings.append(Finding(check=check.__name__.strip("_"), status="fail",
                                    detail=f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings


def _interpreter(policy: Policy) -> list[Finding]:
    from sandbox import SandboxUnavailableError, find_interpreter

    try:
        python = find_interpreter(policy.sandbox.python)
    except SandboxUnavailableError as exc:
        return [Finding(check="interpreter", status="fail", detail=str(exc),
                        fix="set [sandbox] python to a Python interpreter's full path")]
    where = f"Python {python.version} at {python.executable}"
    if not python.has_ipykernel:
        return [Finding(check="interpreter", status="fail", detail=f"{where} has no ipykernel",
                        fix=f"{python.executable} -m pip install ipykernel")]
    return [Finding(check="interpreter", status="ok",
                    detail=f"{where}; the python tool's kernel sees its packages (read-only)")]


def _sandbox(policy: Policy) -> list[Finding]:
    from sandbox import SandboxUnavailableError, describe_isolation, tier_problem
    from sandbox.isolation import INSTALL_HINT

    settings = policy.sandbox
    try:
        in_force = Finding(check="sandbox", status="ok",
                           detail=f"isolation = {settings.isolation!r}: {describe_isolation(settings.isolation, settings.python)}")
        if settings.isolation == "none":
            in_force = in_force.model_copy(update={"status": "warn", "fix": "set [sandbox] isolation = 'auto'"})
    except SandboxUnavailableError as exc:
        in_force = Finding(check="sandbox", status="fail", detail=str(exc), fix=INSTALL_HINT)
    fixes = {"bwrap": INSTALL_HINT, "landlock": "Linux 6.7 or newer with landlock in the LSM list (lsm= boot option)"}
    tiers = []
    for tier, fix in fixes.items():
        problem = tier_problem(tier, settings.python)
        tiers.append(Finding(check=f"sandbox tier {tier}", status="ok" if problem is None else "warn",
                             detail="works here" if problem is None else problem, fix="" if problem is None else fix))
    return [in_force, *tiers]


def _cgroups(policy: Policy) -> list[Finding]:
    """Whether each kernel gets a cgroup (memory, processes, CPU for all its processes together)."""
    from sandbox.cgroups import cgroup_problem

    problem = cgroup_problem()
    mounts = _cgroup_mounts()
    seen = ", ".join([*(f"v2 at {path}" for path in mounts.get("cgroup2", [])),
                      *([f"v1 {', '.join(sorted(mounts['cgroup']))}"] if "cgroup" in mounts else [])]) or "none mounted"
    if problem is None:
        return [Finding(check="cgroups", status="ok",
                        detail=f"each kernel gets a cgroup: memory_mb, max_processes and cpu_seconds bound all its "
                               f"processes together (cgroups: {seen})")]
    return [Finding(check="cgroups", status="warn",
                    detail=f"no per-kernel cgroup ({problem}); memory_mb and cpu_seconds then apply to each process "
                           f"of a kernel separately (cgroups: {seen})", fix=PER_PROCESS_FIX)]


def _cgroup_mounts() -> dict[str, list[str]]:
    """Mount points of cgroup2, and the controllers of cgroup v1 mounts, from /proc/self/mounts."""
    found: dict[str, list[str]] = {}
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup2":
            found.setdefault("cgroup2", []).append(fields[1])
        elif len(fields) >= 4 and fields[2] == "cgroup":
            found.setdefault("cgroup", []).append(os.path.basename(fields[1]))
    return found


def _gpu(policy: Policy) -> list[Finding]:
    if importlib.util.find_spec("torch") is None:
        return [Finding(check="gpu", status="warn", detail="PyTorch is not installed: no local model, no cogview",
                        fix="pip install torch")]
    import torch

    if not torch.cuda.is_available():
        return [Finding(check="gpu", status="warn",
                        detail=f"no CUDA GPU (torch {torch.__version__}): a local 9B model runs on the CPU, slowly",
                        fix="serve the model elsewhere and use --base-url, or run on a machine with a GPU")]
    names = [f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
             for i in range(torch.cuda.device_count())]
    return [Finding(check="gpu", status="ok", detail=", ".join(names))]


def _weights(policy: Policy) -> list[Finding]:
    from .models.transformers import DEFAULT_MODEL

    findings = []
    for check, model, hint in (("local model weights", DEFAULT_MODEL, "or pass --model /path, or --base-url"),
                               ("cogview weights", policy.cogview.model, "or set [cogview] model to a local folder")):
        if Path(model).expanduser().is_dir():
            findings.append(Finding(check=check, status="ok", detail=f"{model} is a local folder"))
            continue
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(model, "model_index.json" if check.startswith("cog")
                                                       else "config.json"), str)
        except Exception:  # not an id the hub would take
            cached = False
        findings.append(Finding(check=check, status="ok" if cached else "warn",
                                detail=f"{model} is {'in' if cached else 'not in'} the Hugging Face cache",
                                fix="" if cached else f"{_hub_cli()} download {model} ({hint})"))
    return findings


def _hub_cli() -> str:
    """The Hugging Face command this machine has: ``hf`` (huggingface_hub 1.0+) or the older ``huggingface-cli``."""
    return "hf" if shutil.which("hf") or not shutil.which("huggingface-cli") else "huggingface-cli"


def _search(policy: Policy) -> list[Finding]:
    from tools.browser.search import API_KEY_ENV

    settings = policy.browser
    name = settings.search_backend
    if name in API_KEY_ENV:
        variables = API_KEY_ENV[name]
        if not any(os.environ.get(var) for var in variables):
            return [Finding(check="search", status="fail", detail=f"search_backend = {name!r} but {variables[0]} is not set",
                            fix=f"export {variables[0]}=..., or set [browser] search_backend to another backend")]
        return [Finding(check="search", status="ok", detail=f"{name}, key from {variables[0]}")]
    if name == "searxng" and not settings.searxng_url:
        return [Finding(check="search", status="fail", detail="search_backend = 'searxng' without searxng_url",
                        fix="set [browser] searxng_url = 'http://your-searxng:8080'")]
    if name == "duckduckgo":
        return [Finding(check="search", status="warn", detail="duckduckgo: no key needed, but it rate-limits and may "
                        "answer with a CAPTCHA", fix="for steady use, run SearXNG or set a Brave or Tavily key")]
    return [Finding(check="search", status="ok", detail=f"{name} at {settings.searxng_url}")]
