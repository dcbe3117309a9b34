"""Peer libraries for side-by-side benchmarks, each in a venv of its own under ``benchmarks/``.

A peer is installed the first time a benchmark needs it (from the package index, never torch unless
the peer itself asks) and runs in a child process with that venv's python, so its dependencies
never mix with ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peer_python(venv: str, requirement: str, module: str) -> tuple[Path | None, str]:
    """The python of ``benchmarks/<venv>`` with ``module`` importable (or several: ``"a, b"``), installing
    ``requirement`` (one or more, space-separated) if missing.

    Returns ``(python, "")``, or ``(None, why)`` when it cannot be had (no network, a failed build).
    """
    root = HERE / venv
    python = root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    probe = [str(python), "-c", f"import {module}"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python, ""
    print(f"{module}: installing {requirement} into benchmarks/{venv} (one time) ...", flush=True)
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True, text=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirement.split()],
                       check=True, capture_output=True, text=True, timeout=900)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        return None, f"install failed ({' | '.join(tail) or exc})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"install failed ({exc})"
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return None, f"installed, but `import {module}` fails in the venv"
    return python, ""
