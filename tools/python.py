"""The ``python`` tool of GLM-4 All Tools: a stateful notebook in an OS-enforced sandbox.

GLM-4 sends raw code (maybe in a Markdown fence, also inside a chat API's JSON arguments). Each
agent session gets its own kernel, claimed from a warm pool on its first call and closed when the
session ends; variables and files in ``/mnt/data`` persist across the session's calls, which run one
at a time in the order they were made (several calls in one turn run like consecutive cells). The
observation is what a notebook would show: printed output, the last expression's value, the error's
last lines; figures become run artifacts.

Files: the user's files are copied into ``/mnt/data`` (:meth:`PythonTool.receive_files`), and every
file a cell creates or changes there is kept for the user, as an artifact of ``kind="file"``: copied
to the run's folder, or left where it is when the session works in the user's own folder
(``Agent(workdir=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.doctor import Finding
from agent.errors import FileInputError, ToolError
from agent.files import InputFile, media_type, private_dir
from agent.messages import Artifact
from agent.policy import FileSettings, Policy
from agent.protocol.near_json import strip_fence
from agent.runtime import current_runtime
from agent.tool import Tool, ToolContext, ToolOutput
from sandbox import AsyncSandbox, KernelPool, SandboxError, SandboxSettings, describe_isolation
from sandbox import shutdown as shutdown_sandbox
from sandbox.workdir import FileState, Incoming, changes, copy_in, copy_out, snapshot

MB = 1024 * 1024
TICK_S = 1.0  # how often the progress line says how long the cell has run


@dataclass
class _Session:
    """One agent session's notebook: its sandbox and what its working directory held after the last cell."""

    sandbox: AsyncSandbox
    ready: asyncio.Future[None] | None = None  # started, and the workdir's first snapshot taken
    files: dict[str, FileState] = field(default_factory=dict)
    kept: dict[str, tuple[int, int]] = field(default_factory=dict)  # run id -> (files, bytes) kept for the user

    def keep(self, run_id: str, size: int, limits: FileSettings) -> str | None:
        """Count one more output of ``size`` bytes against the run's limits; why not, when it does not fit."""
        files, spent = self.kept.get(run_id, (0, 0))
        if files >= limits.max_files:
            return f"the run already kept [files] max_files = {limits.max_files} files"
        if spent + size > limits.max_output_mb * MB:
            return f"the run's files would pass [files] max_output_mb = {limits.max_output_mb:g}"
        self.kept[run_id] = (files + 1, spent + size)
        return None


class PythonTool(Tool):
    """Run Python in a sandboxed Jupyter kernel; one kernel per agent session."""

    name = "python"
    builtin = "python"
    builtin_prompt = (
        "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n"
        "`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n"
        "`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。"
    )  # glm-4-9b-chat's own words, from its chat template
    usage = "Send Python code as the whole message."
    section, settings_model = "sandbox", SandboxSettings
    code = ("python", "code")
    description = ("Run Python code in a stateful Jupyter notebook (no network access). Variables persist "
                   "between calls; files saved to /mnt/data persist for the session; figures are returned as images.")

    def __init__(self, policy: Policy | None = None):
        self.policy = policy or Policy()
        self.settings = self.policy.sandbox
        self._pool: KernelPool | None = None  # warm kernels, from start() or the first call

    def parse_body(self, body: str) -> dict[str, str]:
        code = strip_fence(body)
        if not code.strip():
            raise ValueError("there is no code: send the Python code itself, optionally in a ```python fence")
        return {"code": code}

    @classmethod
    def doctor(cls, policy: Policy) -> list[Finding]:
        return [*_interpreter(policy), *_sandbox(policy), *_cgroups(policy)]

    async def start(self) -> None:
        """Start warming kernels now, so that the first call does not wait for one (closing the tool
        right away kills a kernel still starting, at once)."""
        if self._pool is None:
            self._pool = self._new_pool()

    def _new_pool(self) -> KernelPool:
        current_runtime().on_close(shutdown_sandbox)  # the process's kernels end with the runtime
        return KernelPool(self.settings)

    async def forward(self, code: str, context: ToolContext) -> ToolOutput:
        """Run code as the next cell of this session's notebook.

        Args:
            code: Python source to run
        """
        if code.lstrip().startswith("```"):  # fenced code inside JSON arguments (chat APIs)
            code = strip_fence(code)
        if not code.strip():
            raise ValueError("there is no code: send the Python code itself, optionally in a ```python fence")
        try:
            session = await self._session(context)
        except SandboxError as exc:  # the sandbox speaks for itself; the agent reports it as this tool's failure
            raise ToolError(str(exc)) from None
        ticker = asyncio.ensure_future(self._tick(context))
        try:  # after the session's earlier cells, like a notebook; output is passed on as it comes
            result = await session.sandbox.execute(code, on_output=lambda stream, text: context.output(
                self.name, stream, text))
        except asyncio.CancelledError:
            context.progress(self.name, "interrupted")
            raise
        finally:
            ticker.cancel()
        if result.timed_out:
            context.progress(self.name, "interrupted: the cell ran past its time limit")
        artifacts, not_kept = [], []
        for i, png in enumerate(result.images):
            refused = session.keep(context.run_id, len(png), self.policy.files)
            if refused:
                not_kept.append(f"[figure {i + 1} was not kept for the user: {refused}]")
            else:
                artifacts.append(context.save_artifact(png, tool=self.name,
                                                       description=f"figure {i + 1} of a python cell"))
        files, files_not_kept = await asyncio.to_thread(self._keep_outputs, session, context)
        not_kept += files_not_kept
        text = result.to_text(limit=self.settings.output_bytes)
        shown = [f"[image: {artifact.path.name}]" for artifact in artifacts] + not_kept
        if shown:
            text = "\n".join(shown) if text == "(no output)" else "\n".join([text, *shown])
        return ToolOutput(text=text, artifacts=artifacts + files, is_error=result.error is not None)

    async def receive_files(self, files: list[InputFile], context: ToolContext) -> list[str]:
        """Copy the user's files into this session's ``/mnt/data``; returns where the code sees each.

        ``/mnt/data`` is the code's to shape: nothing it left there (a link, a pipe, a file) is
        followed or overwritten (see :func:`sandbox.workdir.copy_in`).
        """
        session = await self._session(context)
        sandbox = session.sandbox
        incoming = [Incoming(file.source, file.root, file.name, file.size) for file in files]
        try:
            names = await asyncio.to_thread(copy_in, sandbox.workdir, incoming, sandbox.file_owner)
        except OSError as exc:
            raise FileInputError(f"The files could not be copied into the sandbox ({exc.strerror or exc}); "
                                 "nothing of them is counted as handed in.") from None
        finally:
            session.files = await asyncio.to_thread(snapshot, sandbox.workdir)  # inputs are not outputs
        return [f"{sandbox.data_dir}/{name}" for name in names]

    async def _session(self, context: ToolContext) -> _Session:
        """The session's notebook, started (or claimed warm) on first use.

        Every caller waits on one shared preparation, and callers resume in the order they came,
        so two cells of one turn still reach the kernel in call order.
        """
        session = self._session_of(context)
        if session.ready is None:
            session.ready = asyncio.ensure_future(self._prepare(session, context))
            # If every caller is cancelled (Ctrl-C while the kernel starts), its outcome is still retrieved.
            session.ready.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(session.ready)
        return session

    async def _prepare(self, session: _Session, context: ToolContext) -> None:
        try:
            if context.workdir is not None or self._pool is None or not self._pool.ready:
                context.progress(self.name, "starting the Python sandbox")
            await session.sandbox.start()
            if context.workdir is not None:  # files already in the user's folder are inputs, not outputs
                session.files = await asyncio.to_thread(snapshot, session.sandbox.workdir)
        except BaseException:
            session.ready = None  # the next call tries again
            raise
        if not context.state.get("python_tier_told"):  # once a session; the tier probes ran already
            context.state["python_tier_told"] = True
            context.notice(self.name, f"python sandbox: {describe_isolation(self.settings.isolation, self.settings.python)}")

    def _session_of(self, context: ToolContext) -> _Session:
        """The session's notebook, made and registered without awaiting anything.

        Two calls in one turn run concurrently: the first one in makes the sandbox and stores it in
        the session's state before either awaits, so both use the same kernel (its start is shared
        and its cells run in order).
        """
        session = context.state.get(self.name)
        if session is None:
            if context.workdir is not None:  # the user's folder is /mnt/data: a kernel of its own
                current_runtime().on_close(shutdown_sandbox)
                sandbox = AsyncSandbox(self.settings, workdir=context.workdir)
            else:
                if self._pool is None:
                    self._pool = self._new_pool()
                sandbox = AsyncSandbox(pool=self._pool)
            session = context.state[self.name] = _Session(sandbox)
            context.resources.push_async_callback(sandbox.aclose)  # the kernel dies with the session
        return session

    def _keep_outputs(self, session: _Session, context: ToolContext) -> tuple[list[Artifact], list[str]]:
        """Files the cell created or changed, kept for the user within the run's ``[files]`` limits.

        Returns their artifacts and, for the model, a line for each file that was not kept.
        """
        workdir = session.sandbox.workdir
        limits = self.policy.files
        scan_limit = limits.max_files * 10
        now = snapshot(workdir, limit=scan_limit)
        changed = changes(session.files, now)
        session.files = now
        kept, not_kept = [], []
        if len(now) >= scan_limit:  # more than the run could keep anyway: said, rather than dropped in silence
            not_kept.append(f"[/mnt/data holds more than {scan_limit} files; only the first {scan_limit} found were "
                            "considered for keeping]")
        for file in changed:
            where = f"{session.sandbox.data_dir}/{file.name}"
            refused = session.keep(context.run_id, file.size, limits)
            if refused:
                not_kept.append(f"[{where} ({file.size / MB:.1f} MB) was not kept for the user: {refused}]")
                continue
            if context.workdir is not None:  # already in the user's folder
                path = workdir / file.name
            else:
                path = context.artifacts_dir / file.name
                try:
                    private_dir(path.parent)
                    copy_out(workdir, file.name, path, file.size)
                except OSError:
                    continue  # replaced by a link or a pipe since the scan, or gone: nothing to keep
            kind = "image" if media_type(file.name).startswith("image/") else "file"
            kept.append(Artifact(path=path, kind=kind, tool=self.name, description=f"{where}, written by a cell"))
        return kept, not_kept

    async def _tick(self, context: ToolContext) -> None:
        started = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(TICK_S)
                context.progress(self.name, f"running for {time.monotonic() - started:.0f} s")

    async def aclose(self) -> None:
        """Close the warm kernels (sessions close their own)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()


# ---------------------------------------------------------------------------------------------------
# agent doctor: the interpreter, the sandbox tiers and cgroups

PER_PROCESS_FIX = ("to bound a kernel in all, lower [sandbox] max_processes: memory_mb and cpu_seconds apply "
                   "to each of its processes")


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
