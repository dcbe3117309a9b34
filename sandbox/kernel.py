"""One Jupyter kernel under OS isolation: start, execute, interrupt, restart, close.

The client speaks the Jupyter protocol over the ``ipc`` transport (Unix sockets in the kernel's own
runtime directory). While a cell runs, one ``poll`` waits on the kernel's output sockets *and* on a
pidfd of the kernel's process, so a kernel that dies (OOM, SIGKILL, ``os._exit``, CPU limit) is seen
at once, not after a timeout.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import Empty
from typing import Any, Callable, cast

import zmq
from jupyter_client.blocking.client import BlockingKernelClient

from . import isolation
from .cgroups import KernelCgroup, create_cgroup
from .errors import KernelStartError, SandboxClosedError
from .fontcache import copy_font_list, font_list
from .results import CappedText, ExecutionError, ExecutionResult, clean_text, strip_ansi
from .settings import SandboxSettings
from .workdir import cap_folder, lend_tree, remove_tree, return_tree, uncap_folder

OutputHook = Callable[[str, str], None]  # (stream, text), called as a cell prints

CPU_CHECK_S = 0.25  # how often a running cell's cgroup CPU time is read
MAX_IMAGES = 20  # kept per cell
MAX_IMAGE_BYTES = 16 * 1024 * 1024  # one image; a plot is a few hundred KB
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a hostile kernel cannot make us buffer more than this per message
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRELOAD_THREAD = "sandbox-preload"  # the name of the kernel's thread that imports the preload modules

# Run inside the kernel by Kernel.preload, in a namespace of its own. A module that cannot be
# imported is skipped: the user's own import of it says why.
_PRELOAD = f"""
import threading

def preload():
    for name in MODULES:
        try:
            __import__(name)
        except Exception:
            pass

threading.Thread(target=preload, name={PRELOAD_THREAD!r}, daemon=True).start()
"""

# Every kernel process is started from this one long-lived thread: bwrap --die-with-parent and the
# supervisor's PR_SET_PDEATHSIG fire when the *thread* that forked them exits, and a worker thread
# of asyncio or of the pool may exit long before the kernel should.
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-spawn")
_live: weakref.WeakSet[Kernel] = weakref.WeakSet()
_zmq_context: zmq.Context | None = None
_base_dir: Path | None = None
_lock = threading.Lock()


def _context() -> zmq.Context:
    global _zmq_context
    with _lock:
        if _zmq_context is None:
            _zmq_context = zmq.Context()
            _zmq_context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
            _zmq_context.setsockopt(zmq.LINGER, 0)
        return _zmq_context


def base_dir() -> Path:
    """The process's directory for kernels (removed at exit)."""
    global _base_dir
    with _lock:
        if _base_dir is None:
            _base_dir = Path(tempfile.mkdtemp(prefix="glm-sandbox-"))
            os.chmod(_base_dir, 0o711)
        return _base_dir


@atexit.register
def shutdown() -> None:
    """Close every kernel of this process and release the messaging context and the kernels' scratch
    folder (also done at exit). The sandbox stays usable: they are made afresh when needed."""
    global _zmq_context, _base_dir
    for kernel in list(_live):
        kernel.close()
    with _lock:
        context, _zmq_context = _zmq_context, None
        base, _base_dir = _base_dir, None
    if context is not None:
        context.destroy(linger=0)
    if base is not None:
        remove_tree(base)


class Kernel:
    """A sandboxed IPython kernel with its working directory, restarted after crashes and hangs.

    ``execute``, ``start`` and ``restart`` run one at a time (a notebook runs cells in order);
    ``interrupt`` and ``close`` may be called from another thread at any moment, also while the
    kernel is starting: ``close`` then kills it instead of waiting.
    """

    def __init__(self, settings: SandboxSettings, tier: str, workdir: Path | None = None):
        self.settings = settings
        self.tier = tier
        self.uid = isolation.allocate_uid() if tier != "none" else None
        try:
            self._dir = Path(tempfile.mkdtemp(prefix="k-", dir=base_dir()))
            self._owns_workdir = workdir is None
            self._lent: dict[Path, tuple[int, int]] = {}  # a user's folder: owners to give back on close
            if workdir is not None:
                workdir = Path(workdir).resolve()
                workdir.mkdir(parents=True, exist_ok=True)
                if self.uid is not None:  # lend it, and the files in it, to the kernel's uid; given back on close
                    self._lent = lend_tree(workdir, self.uid)
            self.dirs = isolation.make_dirs(self._dir, self.uid, workdir)
            # Its own /mnt/data (never a folder of the user's) gets a size and a file count.
            self._capped = self._owns_workdir and tier != "none" and cap_folder(
                self.dirs.workdir, settings.disk_mb, settings.max_files, self.uid)
        except BaseException:
            isolation.release_uid(self.uid)  # nothing ever ran under it
            raise
        self._proc: subprocess.Popen | None = None
        self._cgroup: KernelCgroup | None = None
        self._cpu_spent = False  # the kernel was stopped for its cgroup's CPU budget
        self._stop_by: float | None = None  # stop() was asked: the running cell has until then
        self._reaped = False  # the process is gone and its uid swept
        self._pidfd: int | None = None
        self._client: BlockingKernelClient | None = None
        self._control_lock = threading.Lock()
        self._run_lock = threading.RLock()  # held while starting and while a cell runs
        self._life_lock = threading.Lock()  # orders spawning against closing
        self._closed = False
        self.restarts = 0
        _live.add(self)

    # ------------------------------------------------------------------------------------------
    # lifecycle

    @property
    def workdir(self) -> Path:
        """Host path of the kernel's ``/mnt/data``."""
        return self.dirs.workdir

    @property
    def file_owner(self) -> int | None:
        """The uid files put into the workdir should belong to (``None``: ours, no change needed)."""
        return self.uid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Kernel:
        """Start the kernel process and wait until it answers (cold start)."""
        with self._run_lock:
            try:
                fonts = font_list(self.tier, self.settings)  # built once per interpreter: outside the lock close() takes
                with self._life_lock:  # a concurrent close either sees the process or stops its spawning
                    if self._closed:
                        raise SandboxClosedError("This sandbox is closed: create a new one.")
                    self._spawn(fonts)
                self._wait_ready(time.monotonic() + self.settings.startup_timeout_s)
            except BaseException:
                self._stop_process()
                raise
        return self

    def _spawn(self, fonts: Path | None) -> None:
        key = secrets.token_hex(32)
        runtime = self.dirs.runtime
        for stale in runtime.iterdir():  # whatever the last kernel (or the code in it) left there
            remove_tree(stale)
        info = {"transport": "ipc", "signature_scheme": "hmac-sha256", "key": key, "kernel_name": "python3",
                "shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}
        # A cgroup per kernel process (a restart gets a fresh one, and a fresh CPU budget).
        self._cgroup = create_cgroup(self.settings.memory_mb, self.settings.max_processes) if self.tier != "none" else None
        if fonts is not None and self.tier != "bwrap":  # bubblewrap mounts the shared one instead
            copy_font_list(fonts, self.dirs.tmp / isolation.MATPLOTLIB_DIR, self.uid)
        plan = isolation.plan_launch(self.tier, self.settings, self.dirs, self.uid,
                                     cgroup=self._cgroup.procs_files if self._cgroup else None, font_list=fonts)
        connection = runtime / "connection.json"
        connection.write_text(json.dumps({**info, "ip": plan.kernel_ip}))
        os.chmod(connection, 0o600)
        if self.uid is not None:
            os.chown(connection, self.uid, self.uid)
        log_path = self._dir / "launch.log"
        with open(log_path, "wb") as log:
            self._proc = _spawner.submit(
                subprocess.Popen, plan.argv, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log, start_new_session=True, close_fds=True,
            ).result()
        self._reaped = False
        self._pidfd = _pidfd_open(self._proc.pid)
        client = BlockingKernelClient(context=_context())
        client.load_connection_info(cast(Any, {**info, "ip": plan.client_ip}))
        client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=True)
        self._client = client

    def _wait_ready(self, deadline: float) -> None:
        """Wait for a kernel_info reply and for iopub to carry messages (a new subscriber misses early ones)."""
        client = self._require_client()
        replied = iopub_works = False
        msg_id = client.kernel_info()
        last_request = time.monotonic()
        while not (replied and iopub_works):
            if time.monotonic() > deadline:
                raise KernelStartError(f"The kernel did not start within {self.settings.startup_timeout_s:g} s"
                                       f"{self._log_tail()}; raise [sandbox] startup_timeout_s if the machine is slow.")
            if self._closed:
                raise SandboxClosedError("The sandbox was closed while its kernel was starting.")
            if not self.alive:
                raise KernelStartError(f"The kernel exited while starting ({self._exit_description()})"
                                       f"{self._log_tail()}.")
            events = self._poll(0.05)
            if client.shell_channel.socket in events:
                replied |= any(m["parent_header"].get("msg_id") == msg_id for m in _drain(client.shell_channel))
            came_up = False
            if client.iopub_channel.socket in events:
                came_up = bool(_drain(client.iopub_channel)) and not iopub_works
                iopub_works |= came_up
            # Ask again: its busy/idle status shows whether iopub is connected yet. A request sent
            # while the kernel was starting may never be answered, so the first sign of life on
            # iopub (its "starting" status) is a cue to ask at once rather than after a pause.
            if (came_up and not replied) or time.monotonic() - last_request > (0.2 if replied else 0.5):
                msg_id, last_request = client.kernel_info(), time.monotonic()
                replied = False

    def restart(self) -> None:
        """Kill the kernel (and everything it started) and start a fresh one; variables are lost."""
        with self._run_lock:
            self._stop_process()
            self.restarts += 1
            self.start()

    def close(self) -> None:
        """Kill the kernel and its descendants and delete its directories. Idempotent.

        A kernel still starting, or a cell running, in another thread is not waited for: its process
        is killed, and that thread sees the death and gives up within moments.
        """
        with self._life_lock:
            if self._closed:
                return
            self._closed = True
        self._kill_process()  # a cell running (or a start waiting) in another thread sees the death
        running = not self._run_lock.acquire(timeout=self.settings.interrupt_grace_s)
        try:
            self._stop_process()
        finally:
            if not running:
                self._run_lock.release()
        if self._lent and self.uid is not None:
            return_tree(self.dirs.workdir, self._lent, self.uid)
        if self._capped:
            uncap_folder(self.dirs.workdir)
        remove_tree(self._dir)  # runtime, tmp, log; and the workdir when it is ours
        _live.discard(self)
        isolation.release_uid(self.uid)  # killed and swept: nothing runs under it any more

    def _stop_process(self) -> None:
        self._kill_process()
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._client is not None:
            self._client.stop_channels()
            self._client = None
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _kill_process(self) -> None:
        proc = self._proc
        if proc is None or self._reaped:
            return
        if proc.poll() is None:
            if self.tier == "landlock":
                _signal(proc.pid, signal.SIGTERM)  # the supervisor kills every descendant, then exits
                try:
                    proc.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    pass
            # Tier A: killing bwrap kills its pid namespace's init, and with it every process inside.
            _signal(-proc.pid, signal.SIGKILL)
        proc.wait()
        self._reaped = True
        if self.uid is not None:
            isolation.sweep_uid(self.uid)  # belt and braces: nothing may outlive the session

    # ------------------------------------------------------------------------------------------
    # execution

    def execute(self, code: str, timeout: float | None = None,
                on_output: OutputHook | None = None) -> ExecutionResult:
        """Run ``code`` as a notebook cell and collect what it shows.

        Past ``timeout`` (default: the policy's) the kernel is interrupted; if it does not stop
        within the grace period it is restarted. A kernel that dies is restarted too; the result
        says so in ``restarted`` and ``error``. ``on_output(stream, text)`` is called with printed
        output as it arrives (``stream`` is ``"stdout"`` or ``"stderr"``).
        """
        if self._closed:
            raise SandboxClosedError("This sandbox is closed: create a new one.")
        with self._run_lock:
            if not self.alive:
                self.restart()
                return self._execute(code, timeout, restarted=True, on_output=on_output)
            return self._execute(code, timeout, restarted=False, on_output=on_output)

    def _execute(self, code: str, timeout: float | None, restarted: bool, silent: bool = False,
                 on_output: OutputHook | None = None) -> ExecutionResult:
        client = self._require_client()
        timeout = self.settings.timeout_s if timeout is None else timeout
        cell = _Cell(self.settings.output_bytes, on_output)
        self._stop_by = None
        msg_id = client.execute(code, silent=silent, store_history=not silent, allow_stdin=False, stop_on_error=True)
        outcome = self._collect(msg_id, cell, time.monotonic() + timeout)
        if outcome == "timeout" and self._stop_by is not None:  # stop() was asked, and the grace is over
            self.restart()
            return cell.result(restarted=True, error=ExecutionError(
                ename="KeyboardInterrupt",
                evalue=(f"The cell was interrupted and did not stop within {self.settings.interrupt_grace_s:g} s, "
                        "so the kernel was restarted: variables are lost; files in /mnt/data are kept."),
            ))
        if outcome == "timeout":
            cell.timed_out = True
            self.interrupt()
            outcome = self._collect(msg_id, cell, time.monotonic() + self.settings.interrupt_grace_s)
            if outcome == "timeout":
                self.restart()
                return cell.result(restarted=True, error=ExecutionError(
                    ename="TimeoutError",
                    evalue=(f"The cell ran longer than {timeout:g} s and did not stop when interrupted, so the "
                            "kernel was restarted: variables are lost; files in /mnt/data are kept."),
                ))
        if outcome == "died":
            if self._closed:
                raise SandboxClosedError("The sandbox was closed while the cell was running.")
            why = self._exit_description()
            self.restart()
            return cell.result(restarted=True, error=ExecutionError(
                ename="KernelDied",
                evalue=(f"The Python kernel died ({why}) and was restarted: variables are lost; "
                        "files in /mnt/data are kept."),
            ))
        return cell.result(restarted=restarted)

    def _collect(self, msg_id: str, cell: _Cell, deadline: float) -> str:
        """Read the cell's messages until it is done ("done"), time runs out, or the kernel dies."""
        client = self._require_client()
        iopub, shell = client.iopub_channel, client.shell_channel
        while not (cell.idle and cell.replied):
            if self._stop_by is not None:
                deadline = min(deadline, self._stop_by)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            if self._over_cpu_budget():
                return "died"
            # With a cgroup, wake up now and then to read its CPU time (children spend it too).
            events = self._poll(min(remaining, CPU_CHECK_S) if self._cgroup is not None else remaining)
            if iopub.socket in events:
                for msg in _drain(iopub):
                    if msg["parent_header"].get("msg_id") == msg_id:
                        cell.handle(msg)
            if shell.socket in events:
                for msg in _drain(shell):
                    if msg["parent_header"].get("msg_id") == msg_id:
                        cell.replied = True
            if self._pidfd_ready(events) and not (cell.idle and cell.replied):
                return "died"
        return "done"

    def _over_cpu_budget(self) -> bool:
        """Whether the kernel's processes together spent ``cpu_seconds``; if so the kernel is killed now."""
        if self._cgroup is None or self._cgroup.cpu_seconds() <= self.settings.cpu_seconds:
            return False
        self._cpu_spent = True
        self._kill_process()
        return True

    def stop(self) -> None:
        """Interrupt the running cell, and restart the kernel if it has not stopped within ``interrupt_grace_s``.

        For a caller that gave up on the cell (Ctrl-C): the next cell never waits longer than the grace,
        even for code that ignores interrupts. Safe from another thread.
        """
        self._stop_by = time.monotonic() + self.settings.interrupt_grace_s
        self.interrupt()

    def interrupt(self) -> None:
        """Ask the kernel to stop the running cell (``interrupt_request`` on the control channel)."""
        client = self._client
        if client is None:
            return
        with self._control_lock:
            for _ in _drain(client.control_channel):
                pass  # replies to earlier interrupts
            client.control_channel.send(client.session.msg("interrupt_request", content={}))

    def preload(self, modules: list[str]) -> None:
        """Start importing modules in a thread of the kernel (warm pool), without binding names in the
        user's namespace. Returns at once: cells run meanwhile, and one that imports a module being
        preloaded waits for that import (Python's import lock), then finds it done."""
        if modules:
            with self._run_lock:
                code = f"exec({_PRELOAD!r}, {{'__name__': '_sandbox_preload', 'MODULES': {modules!r}}})"
                self._execute(code, self.settings.startup_timeout_s, restarted=False, silent=True)

    # ------------------------------------------------------------------------------------------
    # helpers

    def _require_client(self) -> BlockingKernelClient:
        if self._client is None:
            raise SandboxClosedError("This sandbox is closed: create a new one.")
        return self._client

    def _poll(self, timeout_s: float) -> dict[Any, int]:
        client = self._require_client()
        poller = zmq.Poller()
        poller.register(client.iopub_channel.socket, zmq.POLLIN)
        poller.register(client.shell_channel.socket, zmq.POLLIN)
        if self._pidfd is not None:
            poller.register(self._pidfd, zmq.POLLIN)
        return dict(poller.poll(max(int(timeout_s * 1000), 0) if self._pidfd is not None else min(int(timeout_s * 1000), 100)))

    def _pidfd_ready(self, events: dict[Any, int]) -> bool:
        if self._pidfd is not None:
            return self._pidfd in events
        return not self.alive

    def _exit_description(self) -> str:
        if self._cpu_spent:
            self._cpu_spent = False
            return (f"its CPU budget of {self.settings.cpu_seconds} s ran out, counting every process it started "
                    "([sandbox] cpu_seconds)")
        proc = self._proc
        code = proc.wait() if proc is not None else None
        if code is None:
            return "unknown cause"
        # The launcher reports a kernel killed by signal N as 128 + N, like a shell.
        signum = -code if code < 0 else code - 128 if code > 128 else None
        if signum:
            try:
                name = signal.Signals(signum).name
            except ValueError:
                name = f"signal {signum}"
            hint = {"SIGKILL": "killed: out of memory, or the CPU budget ran out",
                    "SIGXCPU": f"its CPU budget of {self.settings.cpu_seconds} s ran out"}.get(name, name)
            return f"{name}: {hint}" if hint != name else name
        return f"exit code {code}"

    def _log_tail(self) -> str:
        try:
            lines = (self._dir / "launch.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f": {' / '.join(lines[-3:])}" if lines else ""

    def __repr__(self) -> str:
        return f"<Kernel {self.tier} {'alive' if self.alive else 'stopped'} {self.workdir}>"


class _Cell:
    """What one cell has shown so far."""

    def __init__(self, limit: int, on_output: OutputHook | None = None):
        self.on_output = on_output
        self.stdout = CappedText(limit)
        self.stderr = CappedText(limit)
        self.result_text: str | None = None
        self.images: list[bytes] = []
        self.images_dropped: dict[str, int] = {}  # why -> how many
        self.error: ExecutionError | None = None
        self.idle = False
        self.replied = False
        self.timed_out = False

    def handle(self, msg: dict) -> None:
        kind, content = msg["header"].get("msg_type"), msg.get("content") or {}
        if kind == "stream":
            stream, text = "stderr" if content.get("name") == "stderr" else "stdout", clean_text(content.get("text", ""))
            (self.stderr if stream == "stderr" else self.stdout).add(text)
            if self.on_output is not None:
                self.on_output(stream, text)
        elif kind in ("execute_result", "display_data", "update_display_data"):
            data = content.get("data") or {}
            png = data.get("image/png")
            if isinstance(png, str):
                self._add_image(png)
            elif kind == "execute_result":
                self.result_text = clean_text(data.get("text/plain", ""))
            elif "text/plain" in data:
                self.stdout.add(clean_text(data["text/plain"]) + "\n")
        elif kind == "error":
            self.error = ExecutionError(
                ename=clean_text(content.get("ename", "Error")), evalue=clean_text(content.get("evalue", "")),
                traceback=[line for item in content.get("traceback") or []
                           for line in strip_ansi(clean_text(item)).splitlines()],
            )
        elif kind == "status" and content.get("execution_state") == "idle":
            self.idle = True

    def _add_image(self, encoded: str) -> None:
        """Keep a PNG the cell displayed: a real one (signature and header chunk), small, within the cell's count."""
        if len(self.images) >= MAX_IMAGES:
            return self._drop(f"over {MAX_IMAGES} per cell")
        if len(encoded) * 3 // 4 > MAX_IMAGE_BYTES:  # judged before decoding it
            return self._drop(f"too large (over {MAX_IMAGE_BYTES // 2**20} MB)")
        try:
            png = base64.b64decode(encoded, validate=True)
        except ValueError:
            png = b""
        if not (png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"):
            return self._drop("not a PNG")
        self.images.append(png)

    def _drop(self, why: str) -> None:
        self.images_dropped[why] = self.images_dropped.get(why, 0) + 1

    def result(self, restarted: bool, error: ExecutionError | None = None) -> ExecutionResult:
        stdout = self.stdout.text()
        if self.images_dropped:
            reasons = ", ".join(f"{count} {why}" for why, count in self.images_dropped.items())
            stdout += f"\n[images not kept: {reasons}]"
        return ExecutionResult(stdout=stdout, stderr=self.stderr.text(), result=self.result_text,
                               images=self.images, error=error or self.error, timed_out=self.timed_out,
                               restarted=restarted)


def _drain(channel: Any) -> list[dict]:
    """Every message ready on a channel, without waiting."""
    messages = []
    while True:
        try:
            messages.append(channel.get_msg(timeout=0))
        except Empty:
            return messages
        except (ValueError, KeyError, TypeError):  # a malformed or badly signed message: skip it
            continue


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # old kernels: fall back to polling the process
        return None


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass

