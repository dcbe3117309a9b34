"""The kernel runs the user's Python: real venvs (symlinked and ``--copies``, under /tmp and under home),
a package only the venv has, on every sandbox tier that works here.

The venvs are made with ``python -m venv`` (no system site-packages). Offline, a fresh venv cannot
``pip install ipykernel``, so a ``.pth`` file lends it the test runner's packages, as a second
site directory; the package the test looks for is a wheel pip installs into the venv alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxSettings, SandboxUnavailableError, find_interpreter, tier_problem

ROOT = Path(__file__).resolve().parents[1]
TIERS = [tier for tier in ("bwrap", "landlock") if tier_problem(tier) is None]
pytestmark = pytest.mark.skipif(not TIERS, reason="no OS sandbox tier works here")


def _wheel(directory: Path, name: str, body: str) -> Path:
    """A minimal pure-Python wheel: what pip installs without any build backend."""
    path = directory / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": body,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as whl:
        for member, text in files.items():
            whl.writestr(member, text)
    return path


def make_venv(where: Path, *, copies: bool = False, lend_packages: bool = True) -> Path:
    """A real venv with `only_in_venv` installed by pip; returns its bin/python."""
    args = [sys.executable, "-m", "venv", "--without-pip", *(["--copies"] if copies else []), str(where)]
    subprocess.run(args, check=True, capture_output=True)
    python = where / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    if lend_packages:  # ipykernel and friends, from the test runner's environment; and this project
        lent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)}
        (site / "lent.pth").write_text("\n".join(sorted(lent)) + "\n")
    wheel = _wheel(where.parent, "only_in_venv", f"WHERE = {str(where)!r}\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-index",
                    "--no-deps", str(wheel)], check=True, capture_output=True)
    return python


@pytest.fixture
def home_dir():
    """A folder under the user's home directory (hidden by the sandbox), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=".glm-agent-test-", dir=Path.home()))
    yield path
    shutil.rmtree(path, ignore_errors=True)


CHECK = "import json, sys, only_in_venv\nprint(json.dumps([sys.prefix, only_in_venv.WHERE, sys.path]))"


@pytest.mark.slow
@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("place,copies", [("tmp", False), ("home", True)])
def test_the_kernel_imports_what_only_the_venv_has(tier, place, copies, tmp_path, home_dir):
    venv = (tmp_path if place == "tmp" else home_dir) / "v"
    python = make_venv(venv, copies=copies)
    settings = SandboxSettings(isolation=tier, python=str(python), pool_size=0, preload=[], timeout_s=30)
    with Sandbox(settings) as sandbox:
        assert sandbox.isolation == tier  # asked for explicitly: no fallback
        result = sandbox.execute(CHECK)
    assert result.error is None, result.error
    prefix, where, path = json.loads(result.stdout)
    assert prefix == str(venv) and where == str(venv)
    base_site = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_prefix})["purelib"]
    assert base_site not in path  # the venv's own packages, not the base interpreter's


@pytest.mark.slow
def test_by_default_the_kernel_runs_the_python_the_agent_runs_on(tmp_path):
    """The agent started from a venv: the kernel sees the venv, on the strongest tier, which auto keeps."""
    python = make_venv(tmp_path / "v")
    script = ("import json\nfrom sandbox import Sandbox, SandboxSettings, describe_isolation\n"
              "with Sandbox(SandboxSettings(pool_size=0, preload=[])) as sb:\n"
              f"    r = sb.execute({CHECK!r})\n"
              "    print(json.dumps([sb.isolation, describe_isolation('auto'), r.stdout, str(r.error)]))\n")
    done = subprocess.run([python, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    tier, description, stdout, error = json.loads(done.stdout.strip().splitlines()[-1])
    assert error == "None" and tier == TIERS[0] and description.startswith(tier)
    assert json.loads(stdout)[0] == str(tmp_path / "v")


def test_an_interpreter_without_ipykernel_is_a_clear_error(tmp_path):
    python = make_venv(tmp_path / "bare", lend_packages=False)
    with pytest.raises(SandboxUnavailableError, match=r"has no ipykernel.*-m pip install ipykernel"):
        Sandbox(SandboxSettings(python=str(python), pool_size=0, preload=[]))


def test_a_python_that_is_not_there_is_a_clear_error(tmp_path):
    with pytest.raises(SandboxUnavailableError, match=r"not an executable file.*full path"):
        find_interpreter(str(tmp_path / "nope" / "python"))


def test_the_interpreter_is_described_as_its_environment_names_it(tmp_path):
    python = make_venv(tmp_path / "v")
    found = find_interpreter(str(python))
    assert found.executable == str(python) and found.has_ipykernel
    assert str(tmp_path / "v") in found.paths  # the venv itself, not only the base it links to
    assert os.path.realpath(python) != str(python)  # a symlinked venv stays the venv
