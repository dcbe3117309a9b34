"""Isolation tiers: which one works here, and the command that starts a kernel under it.

Tier A, ``bwrap``: bubblewrap with every namespace unshared (no network, own pids, own mounts),
read-only system and Python paths, the session directory at ``/mnt/data``, a private ``/tmp``,
a seccomp filter, rlimits, a clean environment. As root, bwrap runs without a user namespace
(root can mount anything, e.g. a pyenv Python under ``/root``) and the launcher inside drops to a
fresh unprivileged uid; as a normal user it runs with ``--unshare-all`` in a user namespace.

Tier B, ``landlock``: no namespaces; Landlock limits the files the kernel sees and forbids TCP
connections, signals and abstract sockets beyond the sandbox; seccomp allows only Unix, TCP and
route-netlink sockets (no UDP, so no DNS); rlimits and an unprivileged uid (when root) bound
resources, and a supervisor kills every descendant when the kernel goes.

``none``: no OS isolation, only rlimits; chosen only when the policy says so.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .cgroups import cgroup_problem
from .errors import SandboxError, SandboxUnavailableError
from .interpreter import Interpreter, find_interpreter
from .settings import SandboxSettings

LAUNCHER = Path(__file__).with_name("_launch.py")
MIB = 1024 * 1024

# Inside bubblewrap the kernel sees its files at fixed places.
DATA_DIR = "/mnt/data"
RUNTIME_DIR = "/run/kernel"
_INNER_LAUNCHER = "/run/launch.py"
MATPLOTLIB_DIR = ".matplotlib"  # MPLCONFIGDIR, in the kernel's /tmp: where matplotlib looks for its font list

# /etc entries a kernel needs (libraries, time zone, name resolution, TLS, fonts); never all of /etc.
_ETC = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "nsswitch.conf", "hosts",
        "resolv.conf", "host.conf", "gai.conf", "ssl", "ca-certificates", "fonts", "mime.types", "protocols",
        "services"]
_SYSTEM = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"]
# /proc without other processes (their command lines and environments hold secrets): the kernel's
# own /proc/<pid> is added by the launcher, which knows the pid; these are machine-wide, not per process.
_PROC = ["/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/uptime", "/proc/version",
         "/proc/filesystems", "/proc/swaps", "/proc/sys"]
_DEVICES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"]

TIER_NAMES = {"bwrap": "bwrap (bubblewrap namespaces + seccomp)", "landlock": "landlock (Landlock + seccomp, no namespaces)",
              "none": "none (no OS isolation)"}
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`) "
                "and allow user namespaces")


@dataclass(frozen=True)
class KernelDirs:
    """The host directories of one kernel."""

    runtime: Path  # connection file and the ipc sockets
    tmp: Path  # private /tmp (used as such by tier B; tier A mounts a tmpfs)
    workdir: Path  # /mnt/data


@dataclass(frozen=True)
class LaunchPlan:
    """How to start one kernel: the host command, and the ``ip`` of its ipc channels for each side.

    The channels are Unix sockets named ``<ip>-<port>``; an ``ip`` starting with ``@`` names
    abstract sockets, which have no file anyone could find or connect to by path.
    """

    argv: list[str]
    kernel_ip: str  # as the kernel binds its channels
    client_ip: str  # as the host connects to them
    tier: str


def kernel_env(tmp: str, threads: int, python: Interpreter) -> dict[str, str]:
    """The kernel's whole environment: nothing from the host (no API keys)."""
    bindir = os.path.dirname(python.executable)  # a venv's bin: its pip and scripts come first
    return {
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": tmp,
        "TMPDIR": tmp,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "MPLCONFIGDIR": f"{tmp}/{MATPLOTLIB_DIR}",
        "IPYTHONDIR": f"{tmp}/.ipython",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per thread arena otherwise
        # BLAS thread pools reserve address space and count against the process limit.
        "OPENBLAS_NUM_THREADS": str(threads),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }


# ipykernel's own launcher, less its debugger: debugpy costs each kernel 0.15 s of its start and
# 7 MiB, for the Jupyter debugging protocol that the python tool never speaks. Once the kernel is
# set up, a cell may import debugpy as any other package.
_KERNEL_MAIN = """\
import sys
sys.modules["debugpy"] = None
from ipykernel.kernelapp import IPKernelApp
app = IPKernelApp.instance()
app.initialize()
sys.modules.pop("debugpy", None)
app.start()
"""


def kernel_argv(runtime: str, python: Interpreter) -> list[str]:
    """The kernel's command line. ``-I``: the working directory (``/mnt/data``, the code's to fill) is
    not on the import path while the kernel starts, so a planted ``ipykernel`` never runs; it is added
    back once the kernel is up, as a notebook has it, for the user's own modules."""
    return [python.executable, "-I", "-B", "-c", _KERNEL_MAIN, "-f", f"{runtime}/connection.json",
            "--HistoryManager.hist_file=:memory:", "--IPKernelApp.log_level=ERROR",
            "--IPKernelApp.exec_lines=__import__('sys').path.insert(0, '')"]


def rlimits(settings: SandboxSettings) -> dict[str, int]:
    return {
        "AS": settings.memory_mb * MIB,
        "FSIZE": settings.max_file_mb * MIB,
        "NOFILE": settings.max_open_files,
        "CPU": settings.cpu_seconds,
        "CORE": 0,
        "NPROC": settings.max_processes,
    }


# ----------------------------------------------------------------------------------------------
# uids: one fresh unprivileged uid per kernel when running as root


def running_as_root() -> bool:
    return os.geteuid() == 0


UIDS_PER_PROCESS = 256  # live kernels one process may hold at once (each with a uid of its own)
_uid_lock = threading.Lock()
_uids_in_use: set[int] = set()
_uid_next = 0  # round robin: a released uid is reused as late as possible


def _uid_base() -> int:
    # Each process has its own block of uids: pids are below 2**22 (Linux's pid_max limit), so
    # blocks of live processes never overlap, and the range stays within [2**30, 2**31).
    return (1 << 30) + (os.getpid() % (1 << 22)) * UIDS_PER_PROCESS


def allocate_uid() -> int | None:
    """A uid no live kernel uses, or ``None`` when not root (then the kernel keeps ours).

    Distinct per live kernel so that ``RLIMIT_NPROC`` and ``kill(-1)`` are scoped to one kernel: the
    range starts at 2**30, far above real users and subordinate-id ranges. Give it back with
    :func:`release_uid` once nothing runs under it any more (the kernel is killed and swept).
    """
    global _uid_next
    if not running_as_root():
        return None
    base = _uid_base()
    with _uid_lock:
        for step in range(UIDS_PER_PROCESS):
            uid = base + (_uid_next + step) % UIDS_PER_PROCESS
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                _uid_next = (_uid_next + step + 1) % UIDS_PER_PROCESS
                return uid
    raise SandboxError(f"{UIDS_PER_PROCESS} sandboxes are open in this process already: close some first.")


def release_uid(uid: int | None) -> None:
    """Make ``uid`` available again; call only once no process runs under it."""
    if uid is not None:
        with _uid_lock:
            _uids_in_use.discard(uid)


def _unreachable_python(python: Interpreter) -> dict[str, list[str]]:
    """Python directories an unprivileged uid cannot reach, by the topmost directory that blocks it.

    pyenv installs under ``/root`` (mode 0700); tier B then exposes just the installation to the
    kernel (see ``expose_paths`` in the launcher).
    """
    blocked: dict[str, list[str]] = {}
    for path in python.paths:
        for directory in [*reversed(Path(path).parents), Path(path)]:
            if not os.stat(directory).st_mode & 0o001:
                blocked.setdefault(str(directory), []).append(path)
                break
    return blocked


# ----------------------------------------------------------------------------------------------
# launch plans


def _launcher_argv(config: dict) -> list[str]:
    """The launcher on the host, run by the agent's own interpreter (it needs only the standard library)."""
    return [sys.executable, "-I", "-S", str(LAUNCHER), json.dumps(config)]


def _bwrap_argv(settings: SandboxSettings, dirs: KernelDirs, python: Interpreter, command: list[str],
                font_list: Path | None) -> list[str]:
    bwrap = shutil.which("bwrap") or "/usr/bin/bwrap"
    if running_as_root():
        # As root bwrap needs no user namespace; it mounts what root can reach (pyenv under /root),
        # and the launcher inside drops to the kernel's uid with the two capabilities kept for that.
        argv = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        if not settings.network:
            argv.append("--unshare-net")
    else:
        argv = [bwrap, "--unshare-all", "--unshare-user"]
        if settings.network:
            argv.append("--share-net")
        if "--disable-userns" in _bwrap_help():
            argv.append("--disable-userns")  # no nested namespaces from inside
    argv += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", "sandbox"]
    made = {"/"}

    def mount(option: str, source: str, dest: str) -> None:
        # Parents bwrap creates are 0700 when it runs as root: make them passable for the kernel's uid.
        for parent in reversed(Path(dest).parents):
            if str(parent) not in made:
                made.add(str(parent))
                argv.extend(["--perms", "0755", "--dir", str(parent)])
        argv.extend([option, source, dest])

    for path in _SYSTEM:
        if os.path.islink(path):
            mount("--symlink", os.readlink(path), path)
        elif os.path.isdir(path):
            mount("--ro-bind", path, path)
    for name in _ETC:
        mount("--ro-bind-try", f"/etc/{name}", f"/etc/{name}")
    argv += ["--proc", "/proc", "--dev", "/dev"]
    for tmpfs in ("/tmp", "/dev/shm"):  # private; /dev/shm holds multiprocessing's semaphores
        if "--size" in _bwrap_help():
            argv += ["--size", str(settings.tmp_mb * MIB)]
        argv += ["--perms", "1777", "--tmpfs", tmpfs]
        made.add(tmpfs)
    if font_list is not None:  # shared, read-only; the folder around it stays the kernel's to write in
        argv += ["--perms", "1777", "--dir", f"/tmp/{MATPLOTLIB_DIR}",
                 "--ro-bind", str(font_list), f"/tmp/{MATPLOTLIB_DIR}/{font_list.name}"]
    # After the private /tmp, so that an environment living under /tmp stays visible; a home
    # directory is not mounted at all, so only the environment itself appears there.
    for path in python.paths:
        mount("--ro-bind", os.path.realpath(path), path)
    mount("--bind", str(dirs.workdir), DATA_DIR)
    mount("--bind", str(dirs.runtime), RUNTIME_DIR)
    mount("--ro-bind", str(LAUNCHER), _INNER_LAUNCHER)
    argv += ["--chdir", DATA_DIR,
             "--seccomp", "@SECCOMP_FD@",
             "--", *command]
    return argv


def plan_launch(tier: str, settings: SandboxSettings, dirs: KernelDirs, uid: int | None,
                command: list[str] | None = None, cgroup: list[str] | None = None,
                font_list: Path | None = None) -> LaunchPlan:
    """The host command that starts a kernel (or ``command``, for probes) under ``tier``.

    ``cgroup``: the ``cgroup.procs`` files the launcher joins before it starts the sandbox.
    ``font_list``: matplotlib's shared font list, mounted read-only in the bubblewrap tier's
    ``MPLCONFIGDIR`` (the other tiers get a copy: see :func:`sandbox.fontcache.copy_font_list`).
    """
    python = find_interpreter(settings.python)
    if command is None:
        python.require_ipykernel()
    gid = uid
    threads = min(4, os.cpu_count() or 1)
    limits = rlimits(settings)
    if tier == "bwrap":
        inner = {"mode": "inner", "rlimits": limits, "env": kernel_env("/tmp", threads, python),
                 "argv": command or kernel_argv(RUNTIME_DIR, python), "uid": uid, "gid": gid}
        wrapped = [python.executable, "-I", "-S", _INNER_LAUNCHER, json.dumps(inner)]
        # Inside bubblewrap the netns already cuts IPv4/IPv6; the filter still refuses the socket
        # families a netns does not isolate (vsock and the like).
        outer = {"mode": "outer", "argv": _bwrap_argv(settings, dirs, python, wrapped, font_list), "deny_network": False, "env": {},
                 "cgroup": cgroup or []}
        # The kernel's own mount namespace shows it only its runtime folder: path sockets are private.
        return LaunchPlan(_launcher_argv(outer), f"{RUNTIME_DIR}/ipc", f"{dirs.runtime}/ipc", tier)
    if tier == "landlock":
        if uid is None:
            # Not root: RLIMIT_NPROC counts all of our user's processes, so allow what runs now plus the budget.
            limits["NPROC"] = _processes_of(os.getuid()) + settings.max_processes
        config = {
            "mode": "landlock", "argv": command or kernel_argv(str(dirs.runtime), python), "cgroup": cgroup or [],
            "env": kernel_env(str(dirs.tmp), threads, python), "cwd": str(dirs.workdir), "rlimits": limits,
            "uid": uid, "gid": gid, "expose": _unreachable_python(python) if uid is not None else {},
            "deny_network": not settings.network,
            "landlock": {
                "read": [*_SYSTEM, *python.paths, *(f"/etc/{n}" for n in _ETC), *_PROC,
                         "/sys/devices/system/cpu"],
                "write": [str(dirs.workdir), str(dirs.runtime), str(dirs.tmp)],
                "devices": _DEVICES,
            },
        }
        # Without a mount namespace, a path socket is reachable by any process of the same uid (every
        # kernel of a normal user). Abstract sockets are not, once Landlock (ABI 6) scopes them: a
        # sandboxed process cannot connect to one created outside its own domain; the host can.
        ip = f"@glm-kernel-{secrets.token_hex(16)}" if landlock_abi() >= 6 else f"{dirs.runtime}/ipc"
        return LaunchPlan(_launcher_argv(config), ip, ip, tier)
    if tier == "none":
        limits.pop("NPROC")  # would count every process of our user
        config = {"mode": "none", "argv": command or kernel_argv(str(dirs.runtime), python),
                  "env": kernel_env(str(dirs.tmp), threads, python), "cwd": str(dirs.workdir), "rlimits": limits}
        return LaunchPlan(_launcher_argv(config), f"{dirs.runtime}/ipc", f"{dirs.runtime}/ipc", tier)
    raise ValueError(f"unknown isolation tier {tier!r}")


def sweep_uid(uid: int) -> None:
    """As root: SIGKILL whatever still runs as a kernel's uid (children that escaped with setsid)."""
    subprocess.run(_launcher_argv({"mode": "sweep", "uid": uid, "gid": uid}), env={}, timeout=10,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _processes_of(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                pass
    return count


@functools.cache
def _bwrap_help() -> str:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return ""
    try:
        return subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# ----------------------------------------------------------------------------------------------
# probes: does a tier really work here? (run once per process, ~0.1 s each)


def make_dirs(base: Path, uid: int | None, workdir: Path | None = None) -> KernelDirs:
    """Create a kernel's directories under ``base``, owned by the kernel's uid."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o711)  # the kernel's uid may pass through, not list
    dirs = KernelDirs(runtime=base / "runtime", tmp=base / "tmp", workdir=workdir or base / "data")
    for path in (dirs.runtime, dirs.tmp, dirs.workdir):
        path.mkdir(parents=True, exist_ok=True)
        if uid is not None:
            os.chown(path, uid, uid)
    for path in (dirs.runtime, dirs.tmp) if workdir else (dirs.runtime, dirs.tmp, dirs.workdir):
        os.chmod(path, 0o700)
    return dirs


@contextlib.contextmanager
def run_once(tier: str, python: str | None, command: Callable[[str], list[str]],
             timeout: float = 30) -> Iterator[tuple[subprocess.CompletedProcess, Path]]:
    """Run a one-off command with the kernel's interpreter under ``tier`` (a fresh uid, no cgroup).

    ``command(data)`` is given the folder the command sees as its data folder; yields the finished
    process and that folder's host path, deleted afterwards.
    """
    uid = allocate_uid()
    try:
        with tempfile.TemporaryDirectory(prefix="glm-sandbox-once-") as tmp:
            dirs = make_dirs(Path(tmp), uid)
            data = DATA_DIR if tier == "bwrap" else str(dirs.workdir)
            try:
                plan = plan_launch(tier, SandboxSettings(python=python), dirs, uid, command=command(data))
                done = subprocess.run(plan.argv, env={}, capture_output=True, text=True, timeout=timeout,
                                      stdin=subprocess.DEVNULL)
            finally:
                if uid is not None:
                    sweep_uid(uid)
            yield done, dirs.workdir
    finally:
        release_uid(uid)  # swept above (nothing ran under it if the launch never happened)


def _probe(tier: str, python: str | None) -> str | None:
    """Run the kernel's interpreter under the tier; ``None`` if it worked and saw its installation, else why not."""
    if tier == "bwrap" and not shutil.which("bwrap"):
        return "bubblewrap (bwrap) is not installed"
    if tier == "landlock":
        abi = landlock_abi()
        if abi < 4:
            return (f"this Linux kernel's Landlock ABI is {abi}; version 4 (Linux 6.7+, landlock in the LSM list) "
                    "is needed to cut the network")
        if os.uname().machine not in ("x86_64", "aarch64"):
            return f"the seccomp filter is not written for {os.uname().machine}"
    try:
        interpreter = find_interpreter(python)
    except SandboxUnavailableError as exc:
        return str(exc)
    root = running_as_root()

    def check(data: str) -> list[str]:
        code = (f"import os\nassert os.getuid() != 0 or {not root}, 'still root'\n"
                f"for p in {list(interpreter.paths)!r}:\n    assert os.access(p, os.R_OK), p + ' is hidden'\n"
                f"open({data + '/ok'!r}, 'w').write('1')")
        return [interpreter.executable, "-S", "-c", code]

    try:
        with run_once(tier, python, check) as (done, workdir):
            if done.returncode != 0 or not (workdir / "ok").exists():
                return (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    except SandboxUnavailableError as exc:
        return str(exc)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.cache
def landlock_abi() -> int:
    """The Landlock ABI version of the running Linux kernel (0: none). Asked once per process."""
    done = subprocess.run(_launcher_argv({"mode": "probe"}), capture_output=True, text=True, env={}, timeout=10)
    try:
        return int(done.stdout.strip())
    except ValueError:
        return 0


@functools.cache
def tier_problem(tier: str, python: str | None = None) -> str | None:
    """Why ``tier`` cannot run the kernel's interpreter here (``None`` when it can). Cached for the process."""
    return None if tier == "none" else _probe(tier, python)


def resolve_isolation(requested: str, python: str | None = None) -> str:
    """The tier to use for the policy's ``isolation`` value, or a clear refusal."""
    if requested == "none":
        return "none"
    if requested == "landlock":
        problem = tier_problem("landlock", python)
        if problem:
            raise SandboxUnavailableError(f"The policy asks for isolation = 'landlock', which cannot run here: {problem}.")
        return "landlock"
    bwrap_problem = tier_problem("bwrap", python)
    if bwrap_problem is None:
        return "bwrap"
    if requested == "bwrap":
        raise SandboxUnavailableError(
            f"The policy asks for isolation = 'bwrap', but bubblewrap cannot run here ({bwrap_problem}): "
            f"{INSTALL_HINT}, or choose isolation = 'auto'.")
    landlock_problem = tier_problem("landlock", python)
    if landlock_problem is None:
        return "landlock"
    raise SandboxUnavailableError(
        f"No OS sandbox works here (bubblewrap: {bwrap_problem}; Landlock: {landlock_problem}): {INSTALL_HINT}, "
        "or set isolation = \"none\" in the policy's [sandbox] section to run code without isolation.")


def describe_isolation(requested: str, python: str | None = None) -> str:
    """One line for people: the tier in force and, when it is not the strongest, why.

    >>> describe_isolation("auto")                 # doctest: +SKIP
    'landlock (Landlock + seccomp), because bubblewrap cannot run here: bwrap: No permissions to create new namespace'
    """
    tier = resolve_isolation(requested, python)
    name = TIER_NAMES[tier]
    if tier == "none":
        return f"{name}: the policy turns OS isolation off (isolation = 'none')"
    problem = cgroup_problem()
    limits = ("; memory, processes and CPU bounded per kernel (cgroup)" if problem is None else
              f"; limits per process only, no per-kernel cgroup ({problem})")
    if tier == "bwrap":
        return name + limits
    if requested == "landlock":
        return f"{name}, as the policy asks{limits}"
    return (f"{name}, because bubblewrap cannot run here ({tier_problem('bwrap', python)}): {INSTALL_HINT} for the "
            f"stronger tier{limits}")
