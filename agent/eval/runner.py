"""The runner: many tasks, bounded concurrency, results appended as each run ends, resumable.

``eval`` and ``batch`` share it. A :class:`Run` names the tasks, how many attempts each, the results
file and (for ``eval``) the scorer; :func:`run_local` runs them on this machine with ``concurrency``
runs in flight (asyncio, one chat session and one sandbox per run), :func:`agent.eval.distributed.run_ray`
on a Ray cluster. Either way every finished run is scored and appended to the results file at once, and
runs the file already holds are skipped.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

from .datasets import Task
from .executor import Outcome, TaskExecutor
from .results import Key, ResultsWriter, select_records
from .scoring import Scorer


@dataclass
class Run:
    """What to run and where the results go."""

    tasks: list[Task]
    output: Path
    header: dict[str, Any]
    attempts: int = 1
    scorer: Scorer | None = None  # None: batch (no scoring)
    trajectories: Path | None = None
    writer: ResultsWriter = field(init=False)

    def __post_init__(self) -> None:
        self.writer = ResultsWriter(self.output, self.header)
        self._by_id = {task.id: task for task in self.tasks}
        self._trajectories: IO[str] | None = None

    @property
    def keys(self) -> list[Key]:
        """Every run of the selection: all tasks' first attempts, then all second attempts, and so on."""
        return [(task.id, attempt) for attempt in range(self.attempts) for task in self.tasks]

    def pending(self) -> list[tuple[Task, int]]:
        """The runs still to do; a run that ended in an error before loses its old transcript (it starts afresh)."""
        todo = []
        for key in self.keys:
            if self.writer.done(key):
                continue
            earlier = self.writer.records.get(key)
            if earlier is not None and earlier.get("transcript"):
                Path(earlier["transcript"]).unlink(missing_ok=True)
            todo.append((self._by_id[key[0]], key[1]))
        return todo

    def records(self) -> list[dict[str, Any]]:
        """The latest record of every run of the selection the file holds, in selection order."""
        return select_records(self.writer.records, self.keys)

    def record(self, outcome: Outcome) -> dict[str, Any]:
        """Score an outcome, append it to the results file (and its trajectory), and return the record."""
        task = self._by_id[outcome.id]
        record: dict[str, Any] = {"type": "task", **outcome.model_dump(exclude={"trajectory"})}
        if task.category:
            record["category"] = task.category
        if self.scorer is not None:
            score = self.scorer.score_run(outcome.answer, outcome.calls, task)
            record.update(expected=task.answer, extracted=score.extracted, correct=score.correct, score=score.value,
                          note=score.note or None)
        self.writer.append(record)
        if self.trajectories is not None and outcome.trajectory is not None and outcome.status != "error":
            if self._trajectories is None:
                self.trajectories.parent.mkdir(parents=True, exist_ok=True)
                self._trajectories = open(self.trajectories, "a", encoding="utf-8")
            self._trajectories.write(json.dumps(outcome.trajectory, ensure_ascii=False) + "\n")
            self._trajectories.flush()
        return record

    def close(self) -> None:
        self.writer.close()
        if self._trajectories is not None:
            self._trajectories.close()
            self._trajectories = None


OnRecord = Callable[[dict[str, Any]], None]


async def run_local(run: Run, executor: TaskExecutor, concurrency: int, on_record: OnRecord | None = None) -> None:
    """Run what the results file lacks, ``concurrency`` runs at a time, on this machine."""
    pending = run.pending()
    queue: asyncio.Queue[tuple[Task, int]] = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                task, attempt = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            record = run.record(await executor.run(task, attempt))
            if on_record is not None:
                on_record(record)

    try:
        if not pending:  # all done already: nothing to warm up
            return
        await executor.start()
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(pending))))))
    finally:
        await executor.aclose()
