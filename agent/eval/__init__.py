"""Task success at scale: ``agent eval`` (benchmarks, scored) and ``agent batch`` (any tasks, trajectories).

The pieces, one job each: :mod:`.datasets` (benchmarks and tasks), :mod:`.scoring` and :mod:`.mathequiv`
(answers), :mod:`.bfcl` (BFCL's functions and AST check), :mod:`.executor` (one task on an agent),
:mod:`.runner` (many, resumably), :mod:`.distributed` (on Ray), :mod:`.results` (the JSONL file),
:mod:`.report` (summary, table, chart, comparisons), :mod:`.cli` (the commands). docs/eval.md has the
protocol of each benchmark.

>>> executor = TaskExecutor([model], ["python"], policy)               # doctest: +SKIP
>>> run = Run(tasks, Path("results.jsonl"), header, scorer=get_scorer("numeric"))
>>> asyncio.run(run_local(run, executor, concurrency=8))
"""

from .datasets import BENCHMARKS, Benchmark, DatasetError, Task, dataset_hash, read_tasks, select
from .executor import Outcome, TaskExecutor
from .recipe import Recipe
from .report import compare, summarize, write_report
from .results import ResultsWriter, read_results
from .runner import Run, run_local
from .scoring import Score, Scorer, get_scorer

__all__ = ["BENCHMARKS", "Benchmark", "DatasetError", "Task", "dataset_hash", "read_tasks", "select", "Outcome",
           "TaskExecutor", "Recipe", "compare", "summarize", "write_report", "ResultsWriter", "read_results", "Run",
           "run_local", "Score", "Scorer", "get_scorer"]
