"""What a run measured: the summary (JSON), a Markdown table, a PNG chart, and paired comparisons.

Accuracy is the mean score over all runs of all tasks (with ``--attempts k``, this is the unbiased
pass@1); ``pass@j`` for j up to k uses the unbiased estimator 1 - C(n-c, j) / C(n, j) per task (n runs,
c right), averaged over tasks. A run that ended in an error counts as wrong and is counted in ``errors``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from .results import read_results

HEADER_FIELDS = ("benchmark", "subset", "scorer", "model", "backend", "endpoints", "format", "policy", "tools",
                 "system_prompt", "dataset", "dataset_hash", "attempts", "version")


def pass_at(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one task with ``n`` runs, ``c`` of them right (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _by_task(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[str(record["id"])].append(record)
    return grouped


def summarize(header: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers of a run over ``records`` (one per task run), with what the header says it was."""
    grouped = _by_task(records)
    runs = len(records)
    scored = [r for r in records if r.get("score") is not None]
    summary: dict[str, Any] = {field: header.get(field) for field in HEADER_FIELDS if field in header}
    summary.update(tasks=len(grouped), runs=runs, errors=sum(r.get("status") == "error" for r in records))
    if grouped:  # a rerun may have asked for more attempts than the header's first run did
        summary["attempts"] = max(len(v) for v in grouped.values())
    if scored:
        summary["accuracy"] = sum(float(r["score"]) for r in scored) / len(scored)
        summary["correct"] = sum(bool(r.get("correct")) for r in scored)
        summary["scored"] = len(scored)
        most = max(len(v) for v in grouped.values())
        summary["pass_at_k"] = {
            str(k): sum(pass_at(len(v), sum(bool(r.get("correct")) for r in v), k) for v in grouped.values()
                        if len(v) >= k) / max(1, sum(len(v) >= k for v in grouped.values()))
            for k in range(1, most + 1)}
    summary["mean_steps"] = _mean(r.get("steps", 0) for r in records)
    summary["mean_tool_calls"] = _mean(r.get("tool_calls", 0) for r in records)
    prompt = sum(int(r.get("prompt_tokens", 0)) for r in records)
    completion = sum(int(r.get("completion_tokens", 0)) for r in records)
    summary["tokens"] = {"prompt": prompt, "completion": completion, "total": prompt + completion,
                         "mean_per_run": (prompt + completion) / runs if runs else 0.0}
    summary["mean_seconds"] = _mean(r.get("seconds", 0.0) for r in records)
    categories: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in scored:
        if record.get("category"):
            categories[str(record["category"])].append(record)
    if len(categories) > 1:
        summary["categories"] = {name: {"runs": len(rs), "accuracy": sum(float(r["score"]) for r in rs) / len(rs)}
                                 for name, rs in sorted(categories.items())}
    return summary


def _mean(values: Any) -> float:
    items = [float(v) for v in values]
    return sum(items) / len(items) if items else 0.0


def markdown(summary: dict[str, Any]) -> str:
    """The summary as a Markdown table (and one per category, when there are several)."""
    policy = summary.get("policy") or {}
    name = policy.get("name", "") if isinstance(policy, dict) else str(policy)
    rows = [("benchmark", summary.get("benchmark") or "batch"), ("model", summary.get("model")),
            ("backend", summary.get("backend")), ("policy", name), ("tools", ", ".join(summary.get("tools") or [])
                                                                    or "none"),
            ("dataset", f"{summary.get('dataset')} ({str(summary.get('dataset_hash', ''))[:19]})"),
            ("tasks", summary["tasks"]), ("runs", summary["runs"])]
    if "accuracy" in summary:
        rows.append(("accuracy", f"{100 * summary['accuracy']:.2f}% ({summary['correct']}/{summary['scored']})"))
        for k, value in summary.get("pass_at_k", {}).items():
            if k != "1":
                rows.append((f"pass@{k}", f"{100 * value:.2f}%"))
    rows += [("errors", summary["errors"]), ("steps per run", f"{summary['mean_steps']:.2f}"),
             ("tool calls per run", f"{summary['mean_tool_calls']:.2f}"),
             ("tokens per run", f"{summary['tokens']['mean_per_run']:.0f}"),
             ("seconds per run", f"{summary['mean_seconds']:.2f}"), ("version", summary.get("version"))]
    lines = ["| | |", "| --- | --- |", *(f"| {key} | {value} |" for key, value in rows)]
    if summary.get("categories"):
        lines += ["", "| category | runs | accuracy |", "| --- | --- | --- |"]
        lines += [f"| {name} | {c['runs']} | {100 * c['accuracy']:.2f}% |" for name, c in summary["categories"].items()]
    return "\n".join(lines) + "\n"


def chart(records: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    """A PNG of the run: accuracy as the tasks came in, and steps and tokens per task (right and wrong)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.6), dpi=100)
    axes = figure.subplots(1, 3)
    scores = [float(r.get("score") or 0.0) for r in records]
    running = [sum(scores[: i + 1]) / (i + 1) for i in range(len(scores))]
    axes[0].plot(range(1, len(scores) + 1), [100 * a for a in running], color="#1f77b4", linewidth=2)
    axes[0].set(title="accuracy so far", xlabel="runs", ylabel="%", ylim=(-3, 103))
    colours = ["#2ca02c" if r.get("correct") else "#d62728" for r in records]
    positions = list(range(len(records)))
    axes[1].bar(positions, [r.get("steps", 0) for r in records], color=colours, width=0.8)
    axes[1].set(title="steps per run (green: right)", xlabel="run", ylabel="steps")
    tokens = [int(r.get("prompt_tokens", 0)) + int(r.get("completion_tokens", 0)) for r in records]
    axes[2].bar(positions, tokens, color=colours, width=0.8)
    axes[2].set(title="tokens per run", xlabel="run", ylabel="tokens")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def write_report(header: dict[str, Any], records: list[dict[str, Any]], results_path: Path,
                 chart_too: bool = True) -> dict[str, Any]:
    """``<results>.summary.json``, ``<results>.summary.md`` and (``chart_too``) ``<results>.png`` beside the results."""
    summary = summarize(header, records)
    stem = results_path.with_suffix("")
    files = {"json": Path(f"{stem}.summary.json"), "markdown": Path(f"{stem}.summary.md")}
    if chart_too:
        files["chart"] = Path(f"{stem}.png")
    summary["files"] = {kind: str(path) for kind, path in files.items()}
    files["json"].write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    files["markdown"].write_text(markdown(summary), encoding="utf-8")
    if chart_too:
        chart(records, files["chart"], f"{summary.get('benchmark') or 'batch'} · {summary.get('model')}")
    return summary


# ---------------------------------------------------------------------------------------------------
# Comparing two runs


def task_scores(path: str | Path) -> dict[str, float]:
    """Each task's mean score over its runs in a results file."""
    header, records = read_results(path)
    if header is None:
        raise FileNotFoundError(f"{path} is not a results file (no header line).")
    totals: dict[str, list[float]] = defaultdict(list)
    for record in records.values():
        if record.get("score") is not None:
            totals[str(record["id"])].append(float(record["score"]))
    return {task: sum(values) / len(values) for task, values in totals.items()}


def compare(a: str | Path, b: str | Path, *, resamples: int = 10_000, seed: int = 0,
            confidence: float = 0.95) -> dict[str, Any]:
    """B minus A on the tasks both scored: the mean paired difference and its bootstrap interval.

    Tasks are resampled with replacement ``resamples`` times (seeded); the interval holds the middle
    ``confidence`` of the resampled mean differences (percentile bootstrap).
    """
    import numpy as np

    left, right = task_scores(a), task_scores(b)
    common = sorted(set(left) & set(right))
    out: dict[str, Any] = {"a": str(a), "b": str(b), "tasks": len(common), "only_a": len(set(left) - set(right)),
                           "only_b": len(set(right) - set(left)), "resamples": resamples, "seed": seed,
                           "confidence": confidence}
    if not common:
        return out
    xs = np.array([left[t] for t in common])
    ys = np.array([right[t] for t in common])
    diff = ys - xs
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(diff), size=(resamples, len(diff)))
    means = diff[samples].mean(axis=1)
    tail = (1 - confidence) / 2
    out.update(accuracy_a=float(xs.mean()), accuracy_b=float(ys.mean()), difference=float(diff.mean()),
               ci_low=float(np.quantile(means, tail)), ci_high=float(np.quantile(means, 1 - tail)),
               b_better=int((diff > 0).sum()), a_better=int((diff < 0).sum()), same=int((diff == 0).sum()))
    return out


def compare_markdown(result: dict[str, Any]) -> str:
    if not result["tasks"]:
        return f"No task is scored in both {result['a']} and {result['b']}.\n"
    level = f"{100 * result['confidence']:.0f}%"
    lines = ["| | |", "| --- | --- |",
             f"| A | {result['a']} |", f"| B | {result['b']} |",
             f"| tasks in both | {result['tasks']} (only in A: {result['only_a']}, only in B: {result['only_b']}) |",
             f"| accuracy A | {100 * result['accuracy_a']:.2f}% |", f"| accuracy B | {100 * result['accuracy_b']:.2f}% |",
             f"| B − A | {100 * result['difference']:+.2f} points |",
             f"| {level} bootstrap interval | [{100 * result['ci_low']:+.2f}, {100 * result['ci_high']:+.2f}] points "
             f"({result['resamples']} resamples) |",
             f"| tasks B did better / worse / same | {result['b_better']} / {result['a_better']} / {result['same']} |"]
    return "\n".join(lines) + "\n"
