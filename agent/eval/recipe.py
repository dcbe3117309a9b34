"""How to build a :class:`~agent.eval.executor.TaskExecutor`, as plain data that travels to Ray workers.

The CLI flags become a :class:`Recipe`; the local runner builds one executor from it, a Ray worker
builds its own (with one endpoint of the list, its own warm kernel) from the same pickled recipe.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..models.base import ChatModel
from ..policy import Policy
from .executor import TaskExecutor

CONNECTIONS_PER_CLIENT = 8


class Recipe(BaseModel):
    """Everything a task's agent is made of, except the task."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: str | None = None
    base_urls: list[str] = Field(default_factory=list)  # several: tasks are spread over them (least busy first)
    api_key: str | None = None
    backend: str | None = None  # "chat" or "completions" (served models)
    chat_format: str | None = None
    served: dict[str, Any] = Field(default_factory=dict)  # timeout, max_retries, stream
    policy: Policy = Field(default_factory=Policy)
    tools: list[str] = Field(default_factory=list)  # built-in names
    tools_modules: list[str] = Field(default_factory=list)  # --tools-module: imported where the executor is built
    system_prompt: str | None = None
    approve_all: bool = False
    single_turn: bool = False
    runs_dir: str = "agent_runs"
    transcripts: str | None = None
    trajectories: bool = False

    def build_models(self, endpoint: int | None = None, lanes: int = 1) -> list[ChatModel]:
        """The served models tasks are spread over (only ``endpoint``'s when given); the local model without
        ``base_urls``.

        An endpoint gets one client per :data:`CONNECTIONS_PER_CLIENT` tasks in flight: httpx's pool
        looks at each of its connections for every request, so 32 connections in one client cost
        each request about twice the CPU that four clients of eight do.
        """
        from ..cli import Backend, build_model

        backend = Backend(self.backend) if self.backend else None
        if not self.base_urls:
            return [build_model(self.model, None, self.api_key, backend, chat_format=self.chat_format, **self.served)]
        urls = self.base_urls if endpoint is None else [self.base_urls[endpoint % len(self.base_urls)]]
        clients = max(1, math.ceil(lanes / (len(urls) * CONNECTIONS_PER_CLIENT)))
        return [build_model(self.model, url, self.api_key, backend, chat_format=self.chat_format, **self.served)
                for _ in range(clients) for url in urls]

    def executor(self, *, lanes: int, endpoint: int | None = None) -> TaskExecutor:
        """An executor for ``lanes`` tasks at once: one warm sandbox each (see :class:`TaskExecutor`)."""
        from ..cli import load_tools_module

        policy = self.policy
        if "python" in self.tools:  # each lane's python tool keeps one kernel warm: N lanes, N warm sandboxes
            policy = policy.with_section("sandbox", pool_size=1)
        tools: list[Any] = list(self.tools)
        for module in self.tools_modules:
            tools += load_tools_module(module)
        approve = (lambda call: True) if self.approve_all else None
        return TaskExecutor(self.build_models(endpoint, lanes), tools, policy, system_prompt=self.system_prompt,
                            approve=approve, runs_dir=Path(self.runs_dir), transcripts=self.transcripts,
                            trajectories=self.trajectories, single_turn=self.single_turn, lanes=lanes)
