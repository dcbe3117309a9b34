"""A cgroup per kernel: memory and processes bounded for the kernel *and everything it starts*.

rlimits count per process: eight children of a 512 MB kernel could use 4 GB, two busy children spend
a CPU budget twice. A cgroup counts them together. Each kernel gets one (cgroup v2, or the v1
``memory``, ``pids`` and ``cpuacct`` hierarchies), created under this process's own cgroup, joined
by the launcher before it starts the sandbox, and removed when the kernel is gone:

- memory: ``memory_mb`` for all its processes, tmpfs files and memfds together (swap included);
- pids: ``max_processes`` processes and threads in all;
- CPU: the host reads the cgroup's CPU time while cells run and stops the kernel once all its
  processes together spent ``cpu_seconds``.

Creating cgroups needs root, or a cgroup v2 subtree delegated to this user; :func:`cgroup_problem`
says why they cannot be used here (the tier description, ``agent doctor`` and the README say so).
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

_V1_CONTROLLERS = ("memory", "pids", "cpuacct")


@dataclass
class KernelCgroup:
    """The cgroup (v2: one folder; v1: one per controller) of one kernel."""

    folders: dict[str, Path]  # controller ("memory", "pids", "cpuacct", or "unified") -> its folder

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes its pid to, to join (its children follow)."""
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    def cpu_seconds(self) -> float:
        """CPU time spent by every process that ever ran in the cgroup."""
        try:
            if "unified" in self.folders:
                for line in (self.folders["unified"] / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return 0.0
            return int((self.folders["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return 0.0

    def remove(self) -> None:
        """Delete the cgroup once its processes are gone (retried briefly: exits are asynchronous)."""
        for folder in self.folders.values():
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)


def create_cgroup(memory_mb: int, max_processes: int) -> KernelCgroup | None:
    """A new cgroup with these limits, or ``None`` when cgroups cannot be used here."""
    if cgroup_problem() is not None:
        return None
    name = f"glm-kernel-{os.getpid()}-{secrets.token_hex(4)}"
    layout = _layout()
    folders = {controller: base / name for controller, base in layout.items()}
    try:
        for folder in folders.values():
            folder.mkdir()
        limit = str(memory_mb * 2**20)
        if "unified" in folders:
            _write(folders["unified"] / "memory.max", limit)
            _write(folders["unified"] / "memory.swap.max", "0", required=False)
            _write(folders["unified"] / "pids.max", str(max_processes))
        else:
            _write(folders["memory"] / "memory.limit_in_bytes", limit)
            _write(folders["memory"] / "memory.memsw.limit_in_bytes", limit, required=False)  # no swap on top
            _write(folders["pids"] / "pids.max", str(max_processes))
    except OSError:
        KernelCgroup(folders).remove()
        return None
    return KernelCgroup(folders)


@functools.cache
def cgroup_problem() -> str | None:
    """Why per-kernel cgroups cannot be used on this machine (``None``: they can). Checked once."""
    layout = _layout()
    if not layout:
        return "no cgroup v2 hierarchy with the memory, pids and cpu controllers, nor cgroup v1 memory, pids and cpuacct"
    probe = next(iter(layout.values())) / f"glm-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as exc:
        return (f"this process may not create cgroups under {probe.parent} ({exc.strerror}): run as root, or in a "
                "delegated cgroup v2 subtree (systemd-run --user --scope -p Delegate=yes)")
    probe.rmdir()
    return None


def _layout() -> dict[str, Path]:
    """Where this process's kernels' cgroups go: {"unified": folder} (v2) or one folder per v1 controller."""
    own = _own_cgroups()
    mounts = _mounts()
    v2 = mounts.get("cgroup2")
    if v2 is not None and "" in own:
        folder = v2 / own[""].lstrip("/")
        enabled = _read(folder / "cgroup.subtree_control").split()
        if {"memory", "pids", "cpu"} <= set(enabled) or _enable_controllers(folder):
            return {"unified": folder}
    if all(controller in mounts for controller in _V1_CONTROLLERS):
        return {c: mounts[c] / own.get(c, "/").lstrip("/") for c in _V1_CONTROLLERS}
    return {}


def _enable_controllers(folder: Path) -> bool:
    """Turn on memory, pids and cpu for ``folder``'s children (v2); fails when ``folder`` holds processes."""
    if not {"memory", "pids", "cpu"} <= set(_read(folder / "cgroup.controllers").split()):
        return False
    try:
        _write(folder / "cgroup.subtree_control", "+memory +pids +cpu")
        return True
    except OSError:
        return False


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and under "" its v2 path."""
    found: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def _mounts() -> dict[str, Path]:
    """Mount points: "cgroup2", and each v1 controller mounted on its own or with others."""
    found: dict[str, Path] = {}
    for line in _read(Path("/proc/self/mounts")).splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        if fields[2] == "cgroup2":
            found.setdefault("cgroup2", Path(fields[1]))
        elif fields[2] == "cgroup":
            for option in fields[3].split(","):
                if option in _V1_CONTROLLERS:
                    found.setdefault(option, Path(fields[1]))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str, required: bool = True) -> None:
    try:
        path.write_text(value)
    except OSError:
        if required:
            raise

