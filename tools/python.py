"""The ``python`` tool of GLM-4 All Tools: a stateful notebook in an OS-enforced sandbox.

GLM-4 sends raw code (maybe in a Markdown fence, also inside a chat API's JSON arguments). Each
agent session gets its own kernel, claimed from a warm pool on its first call and closed when the
session ends; variables and files in ``/mnt/data`` persist across the session's calls, which run one
at a time in the order they were made (several calls in one turn run like consecutive cells). The
observation is what a notebook would show: printed output, the last expression's value, the error's
last lines; figures become run artifacts.
"""

from __future__ import annotations

from agent.policy import Policy
from agent.tool import Tool, ToolContext, ToolOutput, strip_fence
from sandbox import AsyncSandbox, KernelPool


class PythonTool(Tool):
    """Run Python in a sandboxed Jupyter kernel; one kernel per agent session."""

    name = "python"
    builtin = "python"
    description = ("Run Python code in a stateful Jupyter notebook (no network access). Variables persist "
                   "between calls; files saved to /mnt/data persist for the session; figures are returned as images.")

    def __init__(self, policy: Policy | None = None):
        self.policy = policy or Policy()
        self.settings = self.policy.sandbox
        # Kernels start warming now, so that the first call does not wait for one; closing the tool
        # right away (a command that never runs code) kills the kernel being started, at once.
        self._pool: KernelPool | None = KernelPool(self.settings)

    def parse_body(self, body: str) -> dict[str, str]:
        code = strip_fence(body)
        if not code.strip():
            raise ValueError("there is no code: send the Python code itself, optionally in a ```python fence")
        return {"code": code}

    async def forward(self, code: str, context: ToolContext) -> ToolOutput:
        """Run code as the next cell of this session's notebook.

        Args:
            code: Python source to run
        """
        if code.lstrip().startswith("```"):  # fenced code inside JSON arguments (chat APIs)
            code = strip_fence(code)
        if not code.strip():
            raise ValueError("there is no code: send the Python code itself, optionally in a ```python fence")
        sandbox = self._session_sandbox(context)
        result = await sandbox.execute(code)  # after the session's earlier cells, like a notebook
        artifacts = [
            context.save_artifact(png, tool=self.name, description=f"figure {i + 1} of a python cell")
            for i, png in enumerate(result.images)
        ]
        text = result.to_text(limit=self.settings.output_bytes)
        if artifacts:
            shown = "\n".join(f"[image: {artifact.path.name}]" for artifact in artifacts)
            text = shown if text == "(no output)" else f"{text}\n{shown}"
        return ToolOutput(text=text, artifacts=artifacts, is_error=result.error is not None)

    def _session_sandbox(self, context: ToolContext) -> AsyncSandbox:
        """The session's sandbox, made and registered without awaiting anything.

        Two calls in one turn run concurrently: the first one in makes the sandbox and stores it in
        the session's state before either awaits, so both use the same kernel (its start is shared
        and its cells run in order).
        """
        sandbox = context.state.get(self.name)
        if sandbox is None:
            if self._pool is None:
                self._pool = KernelPool(self.settings)
            if not self._pool.ready:
                context.progress(self.name, "starting the Python sandbox", None)
            sandbox = AsyncSandbox(pool=self._pool)
            context.state[self.name] = sandbox
            context.resources.push_async_callback(sandbox.aclose)  # the kernel dies with the session
        return sandbox

    async def aclose(self) -> None:
        """Close the warm kernels (sessions close their own)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()
