"""The built-in benchmarks: where their data comes from, how a row becomes a task, which tools and scorer.

Each benchmark loads from a local path (``--data``) or, when no path is given, from the Hugging Face
hub through the ``datasets`` library (``--data hf:OWNER/NAME[:CONFIG]`` names another hub copy). A
dataset that cannot be had is one :class:`DatasetError` saying where to get it.

| benchmark | tools | scorer | task text |
| --- | --- | --- | --- |
| ``gsm8k`` | python | numeric | the question |
| ``math`` (``--subset math500`` or ``full``) | python | math | the problem |
| ``math23k`` | python | numeric | the problem (Chinese) |
| ``bfcl`` (``--subset`` categories) | the task's functions | BFCL's AST check | the question |
| ``jsonl`` | the policy's | ``--scorer`` (exact by default) | ``task`` |
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import BaseModel, Field

from ..errors import AgentError
from . import bfcl
from .scoring import last_boxed


class DatasetError(AgentError):
    """A dataset that is missing or cannot be read; the message says where to get it."""


class Task(BaseModel):
    """One task: what the agent is asked, and what counts as right."""

    id: str
    task: str
    answer: Any = None
    system: str | None = None  # a system message of the task's own (BFCL questions may carry one)
    functions: list[dict[str, Any]] = Field(default_factory=list)  # BFCL: the functions offered, in BFCL's types
    category: str | None = None  # BFCL category, MATH subject: the report breaks accuracy down by it


@dataclass
class Benchmark:
    name: str
    description: str
    scorer: str  # the default scorer's name (bfcl: "ast")
    tools: list[str] | None  # built-ins the protocol enables; None: the policy's
    load: Callable[[str | None, str | None], tuple[list[Task], str]]  # (data, subset) -> tasks, source
    subsets: tuple[str, ...] = ()
    default_subset: str | None = None
    single_turn: bool = False  # score the first model turn (its calls), as BFCL's AST categories do
    extra: dict[str, Any] = field(default_factory=dict)


def dataset_hash(tasks: Iterable[Task]) -> str:
    """A hash of everything a task is scored on (ids, texts, answers, functions), stable across runs."""
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(json.dumps([task.id, task.task, task.answer, task.system, task.functions], sort_keys=True,
                                 ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return "sha256:" + digest.hexdigest()


def select(tasks: list[Task], limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[Task]:
    """``--sample N`` (a seeded random sample, in the dataset's order), then ``--limit N`` (the first N)."""
    if sample is not None and sample < len(tasks):
        chosen = set(random.Random(seed).sample(range(len(tasks)), sample))
        tasks = [task for index, task in enumerate(tasks) if index in chosen]
    return tasks[:limit] if limit is not None else tasks


# ---------------------------------------------------------------------------------------------------
# Reading files


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file, a JSON list, or a folder of JSON files (the MATH release's layout)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise DatasetError(f"--data {path} is a folder with no .json files in it.")
        return [row for file in files for row in read_rows(file)]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"--data {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"--data {path} cannot be read ({exc}).") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON ({exc}).") from None
        return [row for row in rows if isinstance(row, dict)]
    if stripped.startswith("{") and path.suffix == ".json" and "\n{" not in stripped:
        return [json.loads(text)]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}, line {number}, is not JSON ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise DatasetError(f"{path}, line {number}, is not a JSON object.")
        rows.append(row)
    return rows


def hub_rows(name: str, config: str | None, split: str, how_else: str) -> list[dict[str, Any]]:
    """Rows of a hub dataset through ``datasets``; a :class:`DatasetError` that says ``how_else`` when it cannot be."""
    try:
        import datasets
    except ImportError:
        raise DatasetError(f"No --data given and the `datasets` library is not installed to load {name} from the "
                           f"Hugging Face hub (pip install datasets); {how_else}") from None
    try:
        return [dict(row) for row in datasets.load_dataset(name, config, split=split)]
    except Exception as exc:  # offline, not found, gated: all mean "not from the hub now"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{name} could not be loaded from the Hugging Face hub ({reason}); {how_else}") from None


def _source(data: str | None, default_hub: tuple[str, str | None], split: str, how_else: str
            ) -> tuple[list[dict[str, Any]], str]:
    """Rows from ``--data`` (a path, or ``hf:NAME[:CONFIG]``) or from the benchmark's hub dataset."""
    if data is not None and data.startswith("hf:"):
        hub_name, _, hub_config = data[3:].partition(":")
        return hub_rows(hub_name, hub_config or None, split, how_else), data
    if data is not None:
        return read_rows(Path(data)), str(Path(data))
    name, config = default_hub
    return hub_rows(name, config, split, how_else), f"hf:{name}" + (f":{config}" if config else "")


def _field(row: dict[str, Any], names: tuple[str, ...], where: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise DatasetError(f"{where}: a row has none of the fields {', '.join(names)} (fields: {', '.join(row)}).")


# ---------------------------------------------------------------------------------------------------
# The benchmarks

GSM8K_HOW = ("pass --data PATH to the test split as JSONL with `question` and `answer` (grade_school_math/data/"
             "test.jsonl of github.com/openai/grade-school-math).")


def load_gsm8k(data: str | None, subset: str | None) -> tuple[list[Task], str]:
    rows, source = _source(data, ("openai/gsm8k", "main"), "test", GSM8K_HOW)
    tasks = []
    for index, row in enumerate(rows):
        answer = str(_field(row, ("answer",), "gsm8k"))
        final = answer.rsplit("####", 1)[-1].strip().replace(",", "")
        tasks.append(Task(id=str(row.get("id", f"gsm8k-{index}")), task=str(_field(row, ("question",), "gsm8k")),
                          answer=final))
    return tasks, source


MATH_HOW = ("pass --data PATH to MATH-500 (test.jsonl of huggingface.co/datasets/HuggingFaceH4/MATH-500: problem, "
            "answer) or the MATH test set (the release's test/ folder, or JSONL with problem and solution).")
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")


def load_math(data: str | None, subset: str | None) -> tuple[list[Task], str]:
    if data is None and subset == "full":
        rows = [row for subject in MATH_SUBJECTS
                for row in hub_rows("EleutherAI/hendrycks_math", subject, "test", MATH_HOW)]
        source = "hf:EleutherAI/hendrycks_math"
    else:
        rows, source = _source(data, ("HuggingFaceH4/MATH-500", None), "test", MATH_HOW)
    tasks = []
    for index, row in enumerate(rows):
        answer = row.get("answer")
        if answer is None:  # the full release keeps the answer boxed in the solution
            answer = last_boxed(str(_field(row, ("solution",), "math")))
        if answer is None:
            raise DatasetError(f"math: row {index} has no `answer` and no \\boxed{{}} answer in its `solution`.")
        subject = row.get("subject") or row.get("type")
        tasks.append(Task(id=str(row.get("unique_id", f"math-{index}")), task=str(_field(row, ("problem",), "math")),
                          answer=str(answer), category=str(subject) if subject else None))
    return tasks, source


MATH23K_HOW = ("Math23K has no canonical copy on the Hugging Face hub: pass --data PATH to its test split (JSON or "
               "JSONL with `original_text` and `ans`, as released with Wang et al., 2017, \"Deep Neural Solver for "
               "Math Word Problems\"), or --data hf:OWNER/NAME for a hub copy.")


def load_math23k(data: str | None, subset: str | None) -> tuple[list[Task], str]:
    if data is None:
        raise DatasetError("No --data given for math23k. " + MATH23K_HOW)
    rows, source = _source(data, ("", None), "test", MATH23K_HOW)
    tasks = [Task(id=str(row.get("id", f"math23k-{index}")),
                  task=str(_field(row, ("original_text", "text", "question", "problem"), "math23k")),
                  answer=str(_field(row, ("ans", "answer"), "math23k")))
             for index, row in enumerate(rows)]
    return tasks, source


BFCL_REPO = "gorilla-llm/Berkeley-Function-Calling-Leaderboard"
BFCL_HOW = ("pass --data DIR holding BFCL's BFCL_v3_<category>.json (or BFCL_v4_*) files and their possible_answer/ "
            "folder (berkeley-function-call-leaderboard/bfcl_eval/data of github.com/ShishirPatil/gorilla).")
_BFCL_FILES = {"simple": ("simple_python", "simple")}


def _bfcl_file(folder: Path, category: str) -> Path | None:
    for version in ("v4", "v3"):
        for name in _BFCL_FILES.get(category, (category,)):
            path = folder / f"BFCL_{version}_{name}.json"
            if path.is_file():
                return path
    return None


def _bfcl_download(category: str) -> tuple[Path, Path]:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise DatasetError("No --data given and huggingface_hub is not installed to fetch BFCL; " + BFCL_HOW) from None
    name = f"BFCL_v3_{category}.json"
    try:
        question = hf_hub_download(BFCL_REPO, name, repo_type="dataset")
        answer = hf_hub_download(BFCL_REPO, f"possible_answer/{name}", repo_type="dataset")
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{BFCL_REPO} could not be fetched from the Hugging Face hub ({reason}); {BFCL_HOW}") from None
    return Path(question), Path(answer)


def load_bfcl(data: str | None, subset: str | None) -> tuple[list[Task], str]:
    categories = [c.strip() for c in (subset or ",".join(bfcl.CATEGORIES)).split(",") if c.strip()]
    unknown = [c for c in categories if c not in bfcl.CATEGORIES]
    if unknown:
        raise DatasetError(f"bfcl has no category {unknown[0]!r}: choose from {', '.join(bfcl.CATEGORIES)}.")
    tasks = []
    for category in categories:
        if data is None:
            questions, answers = _bfcl_download(category)
        else:
            folder = Path(data)
            if not folder.is_dir():
                raise DatasetError(f"--data {data} is not a folder; " + BFCL_HOW)
            found = _bfcl_file(folder, category)
            if found is None:
                raise DatasetError(f"--data {data} has no BFCL file for {category!r}; " + BFCL_HOW)
            questions, answers = found, folder / "possible_answer" / found.name
            if not answers.is_file():
                raise DatasetError(f"--data {data} has {found.name} but no possible_answer/{found.name}; " + BFCL_HOW)
        truth = {str(row["id"]): row.get("ground_truth") for row in read_rows(answers)}
        for row in read_rows(questions):
            tasks.append(_bfcl_task(row, truth, category))
    return tasks, data if data is not None else f"hf:{BFCL_REPO}"


def _bfcl_task(row: dict[str, Any], truth: dict[str, Any], category: str) -> Task:
    task_id = str(row["id"])
    if task_id not in truth:
        raise DatasetError(f"bfcl: {task_id} has no possible answer.")
    turns = row.get("question") or []
    messages = turns[0] if turns and isinstance(turns[0], list) else turns
    system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system") or None
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    functions = row.get("function") or []
    if isinstance(functions, dict):
        functions = [functions]
    return Task(id=task_id, task=user, answer=truth[task_id], system=system, functions=functions, category=category)


def load_jsonl(data: str | None, subset: str | None) -> tuple[list[Task], str]:
    if data is None:
        raise DatasetError('jsonl needs --data PATH: a JSONL file of {"id", "task", "answer"} objects.')
    return read_tasks(data), data


def read_tasks(data: str, need_answer: bool = True) -> list[Task]:
    """Tasks of a JSONL file of ``{"id", "task", "answer"}`` (``answer`` only when ``need_answer``)."""
    rows = read_rows(Path(data))
    tasks, seen = [], set()
    for number, row in enumerate(rows, 1):
        if not isinstance(row.get("task"), str) or not row["task"].strip():
            raise DatasetError(f"{data}, task {number}: `task` must be a non-empty string.")
        if need_answer and "answer" not in row:
            raise DatasetError(f"{data}, task {number}: no `answer` to score against.")
        task_id = str(row.get("id", number))
        if task_id in seen:
            raise DatasetError(f"{data}: two tasks have the id {task_id!r}; ids must be unique (results are kept by id).")
        seen.add(task_id)
        tasks.append(Task(id=task_id, task=row["task"], answer=row.get("answer"), system=row.get("system"),
                          category=row.get("category")))
    return tasks


BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("gsm8k", "GSM8K test (1,319 grade-school word problems), python interpreter", "numeric",
                       ["python"], load_gsm8k),
    "math": Benchmark("math", "MATH: MATH-500 (--subset math500, the default) or the 5,000-problem test set "
                              "(--subset full), python interpreter", "math", ["python"], load_math,
                      subsets=("math500", "full"), default_subset="math500"),
    "math23k": Benchmark("math23k", "Math23K test (Chinese math word problems), python interpreter", "numeric",
                         ["python"], load_math23k),
    "bfcl": Benchmark("bfcl", "BFCL simple, multiple, parallel and parallel_multiple, scored by BFCL's AST check",
                      "ast", [], load_bfcl, subsets=bfcl.CATEGORIES, single_turn=True),
    "jsonl": Benchmark("jsonl", "your own tasks: JSONL of {id, task, answer}", "exact", None, load_jsonl),
}
