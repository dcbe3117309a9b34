"""Runs spread over a Ray cluster (``--ray ADDRESS``; ``pip install 'glm-agent[ray]'``).

Each of ``concurrency`` Ray actors builds its own executor from the pickled :class:`~agent.eval.recipe.Recipe`
— the agent loop and its sandbox run on the worker, the model stays behind its vLLM/SGLang endpoints
(actor *i* talks to endpoint *i* mod the number of endpoints, keeping a task's steps on one server's
prefix cache) — and runs one task at a time. The driver hands each actor its next task as the last
one ends, scores the outcome and appends it to the same resumable results file as a local run.

``ADDRESS`` is ``local`` (start a Ray instance on this machine), ``auto`` (the cluster this machine
belongs to) or a cluster address (``ray://head:10001``, ``head:6379``). Workers need this package
installed (and a ``--tools-module`` file at the same path); transcripts are written by the workers,
so on a cluster of several machines give ``--transcripts`` a folder they share.
"""

from __future__ import annotations

from typing import Any

from ..errors import AgentError
from .datasets import Task
from .recipe import Recipe
from .runner import OnRecord, Run


class RayUnavailableError(AgentError):
    """``--ray`` without Ray installed, or a cluster that cannot be reached."""


class TaskActor:
    """One worker slot: an executor built once (warm kernel, open connections), one task at a time."""

    def __init__(self, recipe: Recipe, endpoint: int):
        self.recipe = recipe
        self.endpoint = endpoint
        self.executor: Any = None

    async def run(self, task: dict[str, Any], attempt: int) -> dict[str, Any]:
        if self.executor is None:
            self.executor = self.recipe.executor(lanes=1, endpoint=self.endpoint)
            await self.executor.start()
        outcome = await self.executor.run(Task.model_validate(task), attempt)
        return outcome.model_dump()

    async def close(self) -> None:
        if self.executor is not None:
            await self.executor.aclose()
            self.executor = None


def connect(address: str) -> Any:
    """Import Ray and join (or, for ``local``, start) the cluster."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("--ray needs Ray: pip install 'glm-agent[ray]' (or pip install ray).") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        except Exception as exc:  # ConnectionError, a bad address...: one line
            raise RayUnavailableError(f"Could not join the Ray cluster at {address!r}: {exc}") from None
    return ray


def run_ray(run: Run, recipe: Recipe, address: str, concurrency: int, on_record: OnRecord | None = None) -> None:
    """Run what the results file lacks on a Ray cluster, ``concurrency`` tasks at a time."""
    from .executor import Outcome

    pending = run.pending()
    if not pending:
        return
    ray = connect(address)
    actor_class = ray.remote(TaskActor).options(num_cpus=0, scheduling_strategy="SPREAD")
    endpoints = max(1, len(recipe.base_urls))
    actors = [actor_class.remote(recipe, slot % endpoints) for slot in range(min(concurrency, len(pending)))]
    queue = list(reversed(pending))
    in_flight: dict[Any, tuple[Any, Task, int]] = {}

    def submit(actor: Any) -> None:
        if queue:
            task, attempt = queue.pop()
            in_flight[actor.run.remote(task.model_dump(), attempt)] = (actor, task, attempt)

    try:
        for actor in actors:
            submit(actor)
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                actor, task, attempt = in_flight.pop(ref)
                try:
                    outcome = Outcome.model_validate(ray.get(ref))
                except Exception as exc:  # the worker died (out of memory, a lost node): this run is retried next time
                    outcome = Outcome(id=task.id, attempt=attempt, status="error",
                                      error=f"the Ray worker failed: {type(exc).__name__}: {str(exc)[:200]}")
                    if isinstance(exc, ray.exceptions.RayActorError):
                        actor = None
                record = run.record(outcome)
                if on_record is not None:
                    on_record(record)
                if actor is not None:
                    submit(actor)
    finally:
        closing = [actor.close.remote() for actor in actors]
        try:
            ray.get(closing, timeout=60)
        except Exception:  # a worker already gone: nothing of it to close
            pass
        for actor in actors:
            ray.kill(actor)
