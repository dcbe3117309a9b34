"""The sandbox run by an ordinary user, as most people run it: no uid per kernel, no cgroups.

Run as root, these tests become ``nobody``: a venv made from the system's Python 3 (the same minor
version as ours) borrows our packages through a ``.pth`` file, and a script drives the sandbox from
there and reports what each attack got. Skipped when not root, or without such a Python.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
NOBODY = 65534

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root"),
    pytest.mark.skipif(not SYSTEM_PYTHON.exists() or not shutil.which("runuser"),
                       reason=f"no {SYSTEM_PYTHON} or runuser to run the sandbox as an ordinary user"),
]

SCRIPT = r'''
import json, os, sys
from sandbox import SandboxSettings
from sandbox import Sandbox, describe_isolation, tier_problem

secret = sys.argv[1]
report = {"cgroups": describe_isolation("auto")}
for tier in ("landlock", "bwrap"):
    if tier_problem(tier):
        report[tier] = {"skipped": tier_problem(tier)}
        continue
    settings = SandboxSettings(isolation=tier, pool_size=0, preload=[], timeout_s=20, memory_mb=1024)
    found = {}
    with Sandbox(settings) as victim, Sandbox(settings) as attacker:
        address = victim._kernel._client.iopub_channel.socket.getsockopt_string(32)  # ZMQ_LAST_ENDPOINT
        target = address.removeprefix("ipc://")
        code = ("import socket\ns = socket.socket(socket.AF_UNIX)\n"
                f"t = {target!r}\ns.connect('\\0' + t[1:] if t.startswith('@') else t)\nprint('connected')")
        found["eavesdrop"] = attacker.execute(code).stdout
        found["cmdline"] = attacker.execute(
            f"try: print({secret!r} in open('/proc/{os.getpid()}/cmdline').read())\n"
            "except OSError as e: print(type(e).__name__)").stdout.strip()
        locked = victim.execute("import os\nos.makedirs('locked/in')\nopen('locked/in/f', 'w').write('x')\n"
                                "os.chmod('locked/in', 0)\nos.chmod('locked', 0)\nprint('locked')").stdout
        found["locked"] = locked.strip()
        workdir = victim.workdir
    found["left_behind"] = workdir.exists()
    report[tier] = found
print(json.dumps(report))
'''


@pytest.fixture(scope="module")
def nobody_python():
    """A venv of the system's Python, owned by nobody, seeing our packages and this project.

    Made in /tmp itself: pytest's own temporary folders are root's alone, which nobody cannot pass.
    """
    home = Path(tempfile.mkdtemp(prefix="glm-nobody-"))
    os.chown(home, NOBODY, NOBODY)
    os.chmod(home, 0o700)
    subprocess.run(["runuser", "-u", "nobody", "--", str(SYSTEM_PYTHON), "-m", "venv", "--without-pip",
                    str(home / "venv")], check=True, capture_output=True)
    site = subprocess.run(["runuser", "-u", "nobody", "--", str(home / "venv" / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    lent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(ROOT)}
    (Path(site) / "lent.pth").write_text("\n".join(sorted(lent)) + "\n")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_an_ordinary_users_sessions_stay_apart_and_clean(nobody_python):
    secret = "sk-" + os.urandom(6).hex()
    home = nobody_python
    done = subprocess.run([shutil.which("runuser") or "runuser", "-u", "nobody", "--", str(home / "venv" / "bin" / "python"), "-c", SCRIPT,
                           secret], capture_output=True, text=True, timeout=300, cwd=home,
                          env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert "limits per process only" in report["cgroups"]  # said once, where cgroups cannot be had
    ran = [tier for tier in ("landlock", "bwrap") if "skipped" not in report[tier]]
    if not ran:
        pytest.skip(f"no tier runs as an ordinary user here: {report}")
    for tier in ran:
        found = report[tier]
        assert "connected" not in found["eavesdrop"], (tier, found)  # issue 10.3
        assert found["cmdline"] in ("False", "FileNotFoundError", "PermissionError"), (tier, found)  # 10.4
        assert found["locked"] == "locked" and not found["left_behind"], (tier, found)  # 10.7
