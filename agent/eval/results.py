"""The results file: JSONL, a header line then one line per task run, appended as each run ends.

The header (``"type": "header"``) records what the numbers are about: the benchmark and scorer, the
dataset's source and hash, the model, backend, endpoints, chat format, policy, tools, system prompt
and the project's version. Each later line (``"type": "task"``) is one run of one task (``id``,
``attempt``), flushed as it is written, so a crash or Ctrl-C loses only the runs in flight.

Running again with the same file resumes: runs already there are skipped, unless they ended in an
error (a server that was down), which are run again; the last line for a run is the one that counts.
A file holding a different benchmark, dataset, scorer or model is refused rather than mixed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Iterable

from ..errors import AgentError

IDENTITY = ("kind", "benchmark", "scorer", "dataset_hash", "model")  # header fields a resumed run must share
RETRIED = ("error", "interrupted")  # runs that ended so are run again by a rerun


class ResultsError(AgentError):
    """A results file that cannot be resumed (another run's, or not a results file)."""


Key = tuple[str, int]


def run_key(record: dict[str, Any]) -> Key:
    return str(record["id"]), int(record.get("attempt", 0))


def read_results(path: str | Path) -> tuple[dict[str, Any] | None, dict[Key, dict[str, Any]]]:
    """The header and the latest record of each run (by ``(id, attempt)``), in file order.

    A line cut short by a crash (the last one, not valid JSON) is ignored.
    """
    header: dict[str, Any] | None = None
    records: dict[Key, dict[str, Any]] = {}
    path = Path(path)
    if not path.exists():
        return None, records
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("type") == "header":
                header = header or record
            elif record.get("type") == "task" and "id" in record:
                key = run_key(record)
                records.pop(key, None)  # a later line for the same run replaces it, in its new place
                records[key] = record
    return header, records


def finished(record: dict[str, Any]) -> bool:
    return record.get("status") not in RETRIED


class ResultsWriter:
    """Appends records to a results file, each flushed at once; checks a resumed file's header first."""

    def __init__(self, path: str | Path, header: dict[str, Any]):
        self.path = Path(path)
        existing, self.records = read_results(self.path)
        if existing is None and self.path.exists() and self.path.stat().st_size > 0:
            raise ResultsError(f"{self.path} exists and is not a results file (no header line): give another "
                               "--output, or move it away.")
        if existing is not None:
            for field in IDENTITY:
                if existing.get(field) != header.get(field):
                    raise ResultsError(
                        f"{self.path} holds a run with {field} = {existing.get(field)!r}, not {header.get(field)!r}: "
                        "give another --output to start a new run (a rerun resumes only the same run).")
        self.header = existing or header
        self._file: IO[str] | None = None
        self._pending = [header] if existing is None else []

    def done(self, key: Key) -> bool:
        record = self.records.get(key)
        return record is not None and finished(record)

    def append(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
            self._file = open(self.path, "a", encoding="utf-8")
            if needs_newline:  # a line cut short by a crash stays on its own line
                self._file.write("\n")
            for pending in self._pending:
                self._write(pending)
            self._pending = []
        self._write(record)
        if record.get("type") == "task":
            key = run_key(record)
            self.records.pop(key, None)
            self.records[key] = record

    def _write(self, record: dict[str, Any]) -> None:
        assert self._file is not None
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self._file.flush()  # on disk for the next run even if this process dies

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def select_records(records: dict[Key, dict[str, Any]], keys: Iterable[Key]) -> list[dict[str, Any]]:
    """The records of the given runs that the file holds, in the order of ``keys``."""
    return [records[key] for key in keys if key in records]
