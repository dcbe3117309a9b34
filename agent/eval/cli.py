"""``agent eval BENCH``, ``agent eval compare A B`` and ``agent batch TASKS``: the commands, on the runner.

Registered on the ``agent`` app by :func:`register` (from ``agent/cli.py``).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..cli import (ApiKeyOpt, BackendOpt, DebugOpt, FormatOpt, ModelOpt, ModuleOpt, NoStreamOpt, PolicyOpt,
                   RetriesOpt, SystemOpt, ThinkingOpt, TimeoutOpt, ToolsOpt, UsageError, YesOpt, Backend,
                   _builtin_names, _errors, _format_named, _on_off, hide_from_process_list, load_tools_module)
from ..models._http import redact_credentials
from ..policy import Policy, load_policy
from .datasets import BENCHMARKS, DatasetError, Task, dataset_hash, read_tasks, select
from .recipe import Recipe
from .report import compare, compare_markdown, markdown, write_report
from .results import ResultsError
from .runner import Run, run_local
from .scoring import ScorerError, get_scorer

err = Console(stderr=True, soft_wrap=True, highlight=False)
DEFAULT_LOCAL_MODEL = "THUDM/glm-4-9b-chat-hf"

eval_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=(
    "Measure task success on a benchmark (gsm8k, math, math23k, bfcl, or your own jsonl), resumably; "
    "`agent eval compare A.jsonl B.jsonl` compares two runs. docs/eval.md has the protocol."))

BaseUrlsOpt = typer.Option(None, "--base-url", metavar="URL", help="An OpenAI-compatible server, e.g. "
                           "http://localhost:8000/v1; repeat it for several replicas (tasks are spread over them).")
ConcurrencyOpt = typer.Option(8, "--concurrency", "-c", min=1, metavar="N", help="Runs in flight at once (each "
                              "with its own sandbox, from a pool of N warm ones).")
LimitOpt = typer.Option(None, "--limit", min=1, metavar="N", help="Only the first N tasks (after --sample).")
SampleOpt = typer.Option(None, "--sample", min=1, metavar="N", help="A random sample of N tasks (seeded by --seed), "
                         "kept in the dataset's order.")
SeedOpt = typer.Option(0, "--seed", metavar="S", help="Seed of --sample (default 0).")
AttemptsOpt = typer.Option(1, "--attempts", min=1, metavar="K", help="Runs per task; the report gives pass@1..pass@K.")
OutputOpt = typer.Option(None, "--output", "-o", metavar="PATH", help="The results file (JSONL, appended as runs end; "
                         "a rerun resumes it). Default: eval_results/<benchmark>-<model>.jsonl.")
TranscriptsOpt = typer.Option(None, "--transcripts", metavar="DIR", help="One transcript per run in DIR (default: "
                              "<results>.transcripts/ beside the results file).")
NoTranscriptsOpt = typer.Option(False, "--no-transcripts", help="Keep no per-run transcripts.")
RayOpt = typer.Option(None, "--ray", metavar="ADDRESS", help="Run the tasks on a Ray cluster: 'local' starts one "
                      "here, 'auto' joins this machine's, or ray://HOST:10001 (pip install 'glm-agent[ray]').")
TemperatureOpt = typer.Option(None, "--temperature", min=0.0, metavar="T", help="Override the policy's [model] "
                              "temperature (0: greedy, the default).")
MaxStepsOpt = typer.Option(None, "--max-steps", min=1, metavar="N", help="Override the policy's [agent] max_steps.")


def run_benchmark(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(None, "--data", metavar="PATH", help="The dataset: a local file or folder, or "
                                       "hf:OWNER/NAME[:CONFIG]. Default: the benchmark's hub copy (needs `datasets`)."),
    subset: Optional[str] = typer.Option(None, "--subset", metavar="NAME", help="math: math500 (default) or full; "
                                         "bfcl: categories, comma-separated (default: simple,multiple,parallel,"
                                         "parallel_multiple)."),
    scorer: Optional[str] = typer.Option(None, "--scorer", metavar="NAME", help="exact, numeric, math, regex or "
                                         "python:FILE_OR_MODULE:FUNCTION (default: the benchmark's own)."),
    limit: Optional[int] = LimitOpt, sample: Optional[int] = SampleOpt, seed: int = SeedOpt,
    attempts: int = AttemptsOpt, concurrency: int = ConcurrencyOpt, output: Optional[Path] = OutputOpt,
    transcripts: Optional[Path] = TranscriptsOpt, no_transcripts: bool = NoTranscriptsOpt,
    ray: Optional[str] = RayOpt, model: Optional[str] = ModelOpt, base_url: Optional[List[str]] = BaseUrlsOpt,
    api_key: Optional[str] = ApiKeyOpt, backend: Optional[Backend] = BackendOpt, tools: Optional[str] = ToolsOpt,
    tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt, max_steps: Optional[int] = MaxStepsOpt,
    temperature: Optional[float] = TemperatureOpt, system_prompt: Optional[str] = SystemOpt, yes: bool = YesOpt,
    timeout: Optional[float] = TimeoutOpt, max_retries: Optional[int] = RetriesOpt, no_stream: bool = NoStreamOpt,
    chat_format: Optional[str] = FormatOpt, thinking: Optional[str] = ThinkingOpt, debug: bool = DebugOpt,
) -> None:
    name = ctx.info_name or ""
    with _errors(debug), _eval_errors():
        bench = BENCHMARKS[name]
        if subset is not None and bench.subsets and name != "bfcl" and subset not in bench.subsets:
            raise UsageError(f"--subset {subset} is not a subset of {name}: use {' or '.join(bench.subsets)}.")
        if subset is not None and not bench.subsets:
            raise UsageError(f"{name} has no subsets: leave --subset out.")
        chosen = get_scorer(scorer or bench.scorer)
        if name == "bfcl" and chosen.name != "ast":
            raise UsageError("bfcl is scored by BFCL's AST check only: leave --scorer out.")
        if name != "bfcl" and chosen.name == "ast":
            raise UsageError("--scorer ast is BFCL's: it scores calls, and this benchmark scores answers.")
        loaded_policy = _policy(policy, max_steps, temperature, thinking)
        if tools is not None:
            tool_names = _builtin_names(tools, loaded_policy)
        elif bench.tools is not None:
            tool_names = list(bench.tools)
        else:
            tool_names = _builtin_names(None, loaded_policy)
        recipe = _recipe(model, base_url, api_key, backend, chat_format, timeout, max_retries, no_stream,
                         loaded_policy, tool_names, tools_module, system_prompt, yes, single_turn=bench.single_turn)
        effective_subset = subset or bench.default_subset
        everything, source = bench.load(data, effective_subset)
        tasks = select(everything, limit, sample, seed)
        if not tasks:
            raise UsageError(f"The {name} dataset at {source} holds no tasks.")
        header = _header(recipe, "eval", everything, source, attempts, benchmark=name, subset=effective_subset,
                         scorer=chosen.name, tools_modules=tools_module)
        slug = _slug(f"{name}-{effective_subset}" if effective_subset and name == "math" else name)
        output = output or Path("eval_results") / f"{slug}-{_slug(str(header['model']))}.jsonl"
        run = Run(tasks, output, header, attempts, chosen)
        _execute(run, recipe, name, concurrency, ray, transcripts, no_transcripts)


def _policy(policy: str, max_steps: int | None, temperature: float | None, thinking: str | None) -> Policy:
    loaded = load_policy(policy)
    if max_steps is not None:
        loaded = loaded.with_section("agent", max_steps=max_steps)
    if temperature is not None:
        loaded = loaded.with_section("model", temperature=temperature)
    on = _on_off(thinking)
    if on is not None:
        loaded = loaded.with_section("model", thinking=on)
    return loaded


def _recipe(model: str | None, base_urls: list[str] | None, api_key: str | None, backend: Backend | None,
            chat_format: str | None, timeout: float | None, max_retries: int | None, no_stream: bool, policy: Policy,
            tools: list[str], tools_modules: list[str] | None, system_prompt: str | None, yes: bool,
            single_turn: bool = False) -> Recipe:
    if api_key:
        hide_from_process_list(api_key)
    _format_named(chat_format)  # a bad --format is said now
    served: dict[str, Any] = {"timeout": timeout, "max_retries": max_retries, "stream": False if no_stream else None}
    served = {key: value for key, value in served.items() if value is not None}
    if base_urls and not model:
        raise UsageError("--model is required with --base-url: give the name the server serves the model under.")
    if not base_urls and (backend is not None or served):
        raise UsageError("--backend, --timeout, --max-retries and --no-stream only apply to served models: add "
                         "--base-url URL.")
    for module in tools_modules or []:
        load_tools_module(module)  # a bad module is said now, not once per task
    return Recipe(model=model, base_urls=list(base_urls or []), api_key=api_key,
                  backend=backend.value if backend is not None else None, chat_format=chat_format, served=served,
                  policy=policy, tools=tools, tools_modules=[str(Path(m).absolute()) if Path(m).suffix == ".py" else m
                                                             for m in tools_modules or []],
                  system_prompt=system_prompt, approve_all=yes, single_turn=single_turn)


def _header(recipe: Recipe, kind: str, tasks: list[Task], source: str, attempts: int, **fields: Any) -> dict[str, Any]:
    """What the results file says it holds: everything the numbers depend on."""
    from .. import __version__

    module_tools = [tool.name for module in fields.pop("tools_modules", None) or [] for tool in load_tools_module(module)]
    served = bool(recipe.base_urls)
    return {
        "type": "header", "kind": kind, **fields,
        "dataset": source, "dataset_hash": dataset_hash(tasks), "dataset_size": len(tasks),
        "model": recipe.model or DEFAULT_LOCAL_MODEL,
        "backend": (recipe.backend or "chat") if served else "transformers",
        "endpoints": [redact_credentials(url) for url in recipe.base_urls],
        "format": recipe.chat_format or "glm4",
        "policy": {"name": recipe.policy.name, "settings": recipe.policy.model_dump(mode="json")},
        "tools": [*recipe.tools, *module_tools], "system_prompt": recipe.system_prompt, "attempts": attempts,
        "version": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "run"


def _execute(run: Run, recipe: Recipe, label: str, concurrency: int, ray: str | None, transcripts: Path | None,
             no_transcripts: bool, report_chart: bool = True) -> None:
    """Run what the results file lacks (with progress), then write and print the report."""
    from .progress import RunProgress

    if not no_transcripts:
        recipe.transcripts = str((transcripts or Path(f"{run.output.with_suffix('')}.transcripts")).absolute())
    recipe.trajectories = run.trajectories is not None
    progress = RunProgress(err, len(run.keys), run.records(), run.scorer is not None, label)
    interrupted = False
    try:
        with progress:
            if ray is not None:
                from .distributed import run_ray

                run_ray(run, recipe, ray, concurrency, progress.update)
            elif run.pending():
                executor = recipe.executor(lanes=concurrency)
                asyncio.run(run_local(run, executor, concurrency, progress.update))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        run.close()
    records = run.records()
    if interrupted:
        err.print(f"interrupted: {len(records)} of {len(run.keys)} runs are in {escape(str(run.output))}; "
                  "run the same command again to resume.")
        raise typer.Exit(130)
    summary = write_report(run.writer.header, records, run.output, chart_too=report_chart)
    print(markdown(summary), end="")
    err.print(f"results: {escape(str(run.output))}; report: " + ", ".join(escape(p) for p in summary["files"].values()))
    if summary["errors"]:
        err.print(f"error: {summary['errors']} of {summary['runs']} runs ended in an error (counted as wrong); run the "
                  "same command again to retry them.")
        raise typer.Exit(1)


@contextmanager
def _eval_errors() -> Iterator[None]:
    """Dataset, scorer and results-file problems are usage errors (exit 2), said in one line."""
    try:
        yield
    except (DatasetError, ScorerError, ResultsError) as exc:
        raise UsageError(str(exc)) from None


for _name, _bench in BENCHMARKS.items():
    eval_app.command(_name, help=_bench.description + ".")(run_benchmark)


@eval_app.command("compare")
def compare_runs(
    a: Path = typer.Argument(..., metavar="A.jsonl", help="The baseline's results file."),
    b: Path = typer.Argument(..., metavar="B.jsonl", help="The results file compared with it."),
    resamples: int = typer.Option(10_000, "--resamples", min=100, metavar="N", help="Bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", metavar="S", help="Seed of the bootstrap."),
    json_output: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    debug: bool = DebugOpt,
) -> None:
    """Paired comparison of two runs on the tasks both scored: B − A with a bootstrap interval."""
    with _errors(debug):
        for path in (a, b):
            if not path.is_file():
                raise UsageError(f"{path} does not exist.")
        try:
            result = compare(a, b, resamples=resamples, seed=seed)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        if json_output:
            print(json.dumps(result, indent=2))
        else:
            print(compare_markdown(result), end="")
        if not result["tasks"]:
            raise typer.Exit(1)


def batch(
    tasks_file: Path = typer.Argument(..., metavar="TASKS.jsonl", help='Tasks, one JSON object a line: {"id", "task"} '
                                      '(an "answer" is kept but not scored; "system" is the task\'s system message).'),
    output: Path = typer.Option(..., "--output", "-o", metavar="PATH", help="The results file (JSONL, appended as "
                                "runs end; a rerun resumes it)."),
    trajectories: Optional[Path] = typer.Option(None, "--trajectories", metavar="PATH", help="Also write each run's "
                                                "conversation as a training-ready trajectory (GLM-4 chat format)."),
    limit: Optional[int] = LimitOpt, sample: Optional[int] = SampleOpt, seed: int = SeedOpt,
    attempts: int = typer.Option(1, "--attempts", min=1, metavar="K", help="Runs per task."),
    concurrency: int = ConcurrencyOpt, transcripts: Optional[Path] = TranscriptsOpt,
    no_transcripts: bool = NoTranscriptsOpt, ray: Optional[str] = RayOpt, model: Optional[str] = ModelOpt,
    base_url: Optional[List[str]] = BaseUrlsOpt, api_key: Optional[str] = ApiKeyOpt,
    backend: Optional[Backend] = BackendOpt, tools: Optional[str] = ToolsOpt,
    tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt, max_steps: Optional[int] = MaxStepsOpt,
    temperature: Optional[float] = TemperatureOpt, system_prompt: Optional[str] = SystemOpt, yes: bool = YesOpt,
    timeout: Optional[float] = TimeoutOpt, max_retries: Optional[int] = RetriesOpt, no_stream: bool = NoStreamOpt,
    chat_format: Optional[str] = FormatOpt, thinking: Optional[str] = ThinkingOpt, debug: bool = DebugOpt,
) -> None:
    """Run many tasks (no scoring), resumably; optionally export the runs as training trajectories."""
    with _errors(debug), _eval_errors():
        loaded_policy = _policy(policy, max_steps, temperature, thinking)
        recipe = _recipe(model, base_url, api_key, backend, chat_format, timeout, max_retries, no_stream,
                         loaded_policy, _builtin_names(tools, loaded_policy), tools_module, system_prompt, yes)
        everything = read_tasks(str(tasks_file), need_answer=False)
        chosen = select(everything, limit, sample, seed)
        if not chosen:
            raise UsageError(f"{tasks_file} holds no tasks.")
        header = _header(recipe, "batch", everything, str(tasks_file), attempts, benchmark=None, scorer=None,
                         tools_modules=tools_module)
        run = Run(chosen, output, header, attempts, None, trajectories=trajectories)
        _execute(run, recipe, "batch", concurrency, ray, transcripts, no_transcripts, report_chart=False)


def register(app: typer.Typer) -> None:
    """Add ``agent eval ...`` and ``agent batch`` to the ``agent`` app."""
    app.add_typer(eval_app, name="eval")
    app.command("batch")(batch)
