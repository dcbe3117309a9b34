"""``agent doctor``: what this machine offers the agent, each finding with its fix.

Checks the GPU and the local model's weights, and asks each installed built-in for its own checks
(``Tool.doctor``: the python tool's interpreter, sandbox tiers and cgroups, cogview's weights, the
browser's search backend). Nothing is changed and nothing is downloaded; the hub is not contacted.

>>> [f.check for f in diagnose(Policy())]          # doctest: +SKIP
['gpu', 'local model weights', 'interpreter', 'sandbox', 'sandbox tier bwrap', 'sandbox tier landlock', ...]
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel

from .builtins import builtin_class, builtin_names
from .errors import ToolDefinitionError
from .policy import Policy

Status = Literal["ok", "warn", "fail"]


class Finding(BaseModel):
    """One thing checked: ``ok``, ``warn`` (works, with a limit worth knowing) or ``fail`` (a feature will not work)."""

    check: str
    status: Status
    detail: str
    fix: str = ""


def diagnose(policy: Policy) -> list[Finding]:
    """Every check, in the order people read them; a check that crashes is a finding, not an exception."""
    findings: list[Finding] = []
    checks: list[Callable[[Policy], list[Finding]]] = [_gpu, _weights, *_builtin_checks(policy)]
    for check in checks:
        try:
            findings += check(policy)
        except Exception as exc:  # the doctor reports; it does not fall over
            name = getattr(check, "__qualname__", "a built-in's check").split(".")[0].strip("_")
            findings.append(Finding(check=name, status="fail",
                                    detail=f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings


def _builtin_checks(policy: Policy) -> list[Callable[[Policy], list[Finding]]]:
    """Each installed built-in's own checks (``Tool.doctor``), the enabled ones first, in their order."""
    names = [*policy.tools.enabled, *(name for name in builtin_names() if name not in policy.tools.enabled)]
    checks: list[Callable[[Policy], list[Finding]]] = []
    for name in names:
        try:
            checks.append(builtin_class(name).doctor)
        except ToolDefinitionError as exc:
            checks.append(functools.partial(_broken, name, str(exc)))
    return checks


def _broken(name: str, why: str, policy: Policy) -> list[Finding]:
    return [Finding(check=name, status="fail", detail=why, fix="reinstall the package that provides it, or remove it")]


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

    return [weights_finding("local model weights", DEFAULT_MODEL, "config.json", "or pass --model /path, or --base-url")]


def weights_finding(check: str, model: str, marker: str, hint: str) -> Finding:
    """Whether ``model`` (a folder or a hub id, recognised by its ``marker`` file) is on this machine."""
    if Path(model).expanduser().is_dir():
        return Finding(check=check, status="ok", detail=f"{model} is a local folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(model, marker), str)
    except Exception:  # not an id the hub would take
        cached = False
    return Finding(check=check, status="ok" if cached else "warn",
                   detail=f"{model} is {'in' if cached else 'not in'} the Hugging Face cache",
                   fix="" if cached else f"{_hub_cli()} download {model} ({hint})")


def _hub_cli() -> str:
    """The Hugging Face command this machine has: ``hf`` (huggingface_hub 1.0+) or the older ``huggingface-cli``."""
    return "hf" if shutil.which("hf") or not shutil.which("huggingface-cli") else "huggingface-cli"
