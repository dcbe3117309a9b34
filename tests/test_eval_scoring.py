"""Answer extraction and scoring: numbers, \\boxed{} and math equivalence, regex, exact, a user's function."""

from __future__ import annotations

import json
import sys

import pytest

from agent.eval.datasets import DatasetError, Task, dataset_hash, read_rows, select
from agent.eval.mathequiv import math_equal, normalize
from agent.eval.report import compare, pass_at, summarize
from agent.eval.scoring import (ScorerError, final_number_text, get_scorer, last_boxed, last_number_text,
                                parse_number)


@pytest.mark.parametrize("text, number", [
    ("She makes 9 * 2 = $18 every day.", "18"),
    ("The total is 1,234 apples, not 12.", "12"),
    ("So the answer is -3.5", "-3.5"),
    ("About 3/4 of them", "3/4"),
    ("It grew by 75%.", "75%"),
    ("nothing here", None),
])
def test_the_last_number_is_read_as_written(text, number):
    assert last_number_text(text) == number


def test_a_boxed_value_wins_over_later_numbers():
    assert last_boxed(r"so \boxed{\frac{1}{2}} (checked in 3 steps)") == r"\frac{1}{2}"
    assert last_boxed(r"\boxed{1} then \boxed{{2}+1}") == "{2}+1"
    assert last_boxed("no box") is None
    assert final_number_text(r"The answer is \boxed{42}, computed in 7 steps.") == "42"


@pytest.mark.parametrize("text, value", [("1,234", 1234.0), ("(3/4)", 0.75), ("75%", 0.75), ("$18.00", 18.0),
                                         ("−2", -2.0), ("abc", None), ("1/0", None)])
def test_numbers_parse_with_commas_fractions_and_percents(text, value):
    assert parse_number(text) == value


def test_numeric_scorer_uses_a_relative_tolerance():
    numeric = get_scorer("numeric")
    assert numeric.score("The answer is 18.", "18").correct
    assert numeric.score("The answer is 18.0000001.", "18").correct
    assert not numeric.score("The answer is 10001.", "10000").correct  # 1e-4 off: wrong
    assert numeric.score("0.3333333", "(1/3)").correct
    assert numeric.score("It is 75%.", "75").correct and numeric.score("It is 75%.", "0.75").correct
    nothing = numeric.score("I do not know.", "5")
    assert not nothing.correct and nothing.note == "no number in the answer"


@pytest.mark.parametrize("prediction, expected", [
    (r"\frac{1}{2}", "0.5"), (r"\dfrac12", r"\frac{1}{2}"), ("1/2", r"\frac12"), ("x = 3", "3"),
    ("(1, 2)", "(1,2)"), (r"2\sqrt{2}", r"\sqrt{8}"), (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"10\%", "10"), (r"5\text{ cm}", "5"), (r"90^\circ", "90"), ("1,000", "1000"), (r"\text{(A)}", "(A)"),
    ("x^2+2x+1", "(x+1)^2"), (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}"), (r"[1, \infty)", r"[1,\infty)"),
])
def test_math_equivalent_answers(prediction, expected):
    assert math_equal(prediction, expected), (normalize(prediction), normalize(expected))


@pytest.mark.parametrize("prediction, expected", [
    ("3", "4"), ("(1, 2)", "[1, 2]"), ("(1,2)", "(1,2,3)"), ("x^2", "x^3"), ("", "0"), (r"\frac{1}{3}", "0.33"),
    ("__import__('os')", "0"),
])
def test_math_different_answers(prediction, expected):
    assert not math_equal(prediction, expected)


def test_math_scorer_reads_the_last_boxed_answer():
    math = get_scorer("math")
    assert math.score(r"Thus $\boxed{\dfrac{3}{4}}$.", "0.75").correct
    assert math.score("No box, but the result is 12", "12").correct
    assert not math.score(r"\boxed{2}", "3").correct


def test_exact_regex_and_function_scorers(tmp_path):
    assert get_scorer("exact").score("  Paris \n", "Paris").correct
    assert not get_scorer("exact").score("paris", "Paris").correct
    regex = get_scorer("regex").score("The capital is Paris, France.", r"\bParis\b")
    assert regex.correct and regex.extracted == "Paris"
    assert "not a valid regular expression" in get_scorer("regex").score("x", "(").note
    scorer_file = tmp_path / "my_scorer.py"
    scorer_file.write_text("def half(answer, expected):\n    return 0.5 if expected in answer else 0\n"
                           "def with_task(answer, expected, task):\n    return task['id'] == 'a'\n"
                           "def broken(answer, expected):\n    raise RuntimeError('boom')\n")
    half = get_scorer(f"python:{scorer_file}:half").score("yes", "y")
    assert half.value == 0.5 and not half.correct
    assert get_scorer(f"python:{scorer_file}:with_task").score("", "", {"id": "a"}).correct
    broken = get_scorer(f"python:{scorer_file}:broken").score("", "")
    assert not broken.correct and "RuntimeError: boom" in broken.note
    with pytest.raises(ScorerError, match="Unknown scorer 'fuzzy'"):
        get_scorer("fuzzy")
    with pytest.raises(ScorerError, match="has no function 'nope'"):
        get_scorer(f"python:{scorer_file}:nope")
    with pytest.raises(ScorerError, match="does not exist"):
        get_scorer("python:missing.py:f")


def test_selection_and_dataset_hash():
    tasks = [Task(id=str(i), task=f"t{i}", answer=i) for i in range(10)]
    assert [t.id for t in select(tasks, limit=3)] == ["0", "1", "2"]
    sample = select(tasks, sample=4, seed=1)
    assert len(sample) == 4 and sample == select(tasks, sample=4, seed=1)  # seeded, and in the dataset's order
    assert [int(t.id) for t in sample] == sorted(int(t.id) for t in sample)
    assert select(tasks, sample=4, seed=2) != sample
    assert dataset_hash(tasks) == dataset_hash(list(tasks)) != dataset_hash(tasks[:-1])


def test_rows_from_jsonl_json_and_folders(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n\n{"x": 2}\n')
    (tmp_path / "b.json").write_text('[{"x": 3}, {"x": 4}]')
    folder = tmp_path / "test" / "algebra"
    folder.mkdir(parents=True)
    (folder / "1.json").write_text('{"problem": "p", "solution": "\\\\boxed{1}"}')
    assert [r["x"] for r in read_rows(tmp_path / "a.jsonl")] == [1, 2]
    assert [r["x"] for r in read_rows(tmp_path / "b.json")] == [3, 4]
    assert read_rows(tmp_path / "test") == [{"problem": "p", "solution": "\\boxed{1}"}]
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\nnot json\n')
    with pytest.raises(DatasetError, match="line 2, is not JSON"):
        read_rows(tmp_path / "bad.jsonl")
    with pytest.raises(DatasetError, match="does not exist"):
        read_rows(tmp_path / "none.jsonl")


def test_pass_at_k_and_summary():
    assert pass_at(2, 1, 1) == 0.5 and pass_at(2, 1, 2) == 1.0 and pass_at(3, 0, 2) == 0.0
    records = [{"id": "a", "attempt": 0, "correct": True, "score": 1.0, "steps": 2, "tool_calls": 1},
               {"id": "a", "attempt": 1, "correct": False, "score": 0.0, "steps": 2, "tool_calls": 1},
               {"id": "b", "attempt": 0, "correct": False, "score": 0.0, "steps": 1, "tool_calls": 0,
                "status": "error"},
               {"id": "b", "attempt": 1, "correct": False, "score": 0.0, "steps": 1, "tool_calls": 0}]
    summary = summarize({"benchmark": "x", "model": "m"}, records)
    assert summary["accuracy"] == 0.25 and summary["pass_at_k"] == {"1": 0.25, "2": 0.5}
    assert summary["tasks"] == 2 and summary["runs"] == 4 and summary["errors"] == 1
    assert summary["mean_steps"] == 1.5 and summary["benchmark"] == "x"


def write_results(path, scores):
    import json

    lines = [{"type": "header", "kind": "eval"}]
    lines += [{"type": "task", "id": str(i), "attempt": 0, "score": s, "correct": s == 1} for i, s in enumerate(scores)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_compare_is_paired_with_a_bootstrap_interval(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_results(a, [1, 0, 0, 1, 0, 0, 1, 0, 0, 0] * 5)
    write_results(b, [1, 1, 0, 1, 1, 0, 1, 1, 0, 0] * 5)
    result = compare(a, b, resamples=2000, seed=3)
    assert result["tasks"] == 50 and result["accuracy_a"] == 0.3 and result["accuracy_b"] == 0.6
    assert result["difference"] == pytest.approx(0.3) and result["b_better"] == 15 and result["a_better"] == 0
    assert 0 < result["ci_low"] < 0.3 < result["ci_high"] <= 0.5
    assert compare(a, b, resamples=2000, seed=3) == result  # seeded: the same interval every time
    same = compare(a, a, resamples=500)
    assert same["difference"] == same["ci_low"] == same["ci_high"] == 0


def test_benchmark_loaders_read_their_own_formats(tmp_path):
    from agent.eval.datasets import BENCHMARKS

    math500 = tmp_path / "math500.jsonl"
    math500.write_text(json.dumps({"problem": "1+1?", "solution": "...", "answer": "2", "subject": "Algebra",
                                   "level": 1, "unique_id": "test/algebra/1.json"}) + "\n")
    (tasks, source) = BENCHMARKS["math"].load(str(math500), "math500")
    assert tasks[0].id == "test/algebra/1.json" and tasks[0].answer == "2" and tasks[0].category == "Algebra"
    release = tmp_path / "MATH" / "test" / "geometry"
    release.mkdir(parents=True)
    (release / "7.json").write_text(json.dumps({"problem": "Area?", "level": "Level 2", "type": "Geometry",
                                                "solution": r"So it is $\boxed{\frac{1}{2}}$."}))
    (tasks, _) = BENCHMARKS["math"].load(str(tmp_path / "MATH" / "test"), "full")
    assert tasks[0].answer == r"\frac{1}{2}" and tasks[0].category == "Geometry"
    math23k = tmp_path / "math23k.json"
    math23k.write_text(json.dumps([{"id": "1", "original_text": "甲有5个苹果，乙有3个，一共几个？", "ans": "8"}]))
    (tasks, _) = BENCHMARKS["math23k"].load(str(math23k), None)
    assert tasks[0].task.startswith("甲有5个苹果") and tasks[0].answer == "8"
    gsm8k = tmp_path / "gsm8k.jsonl"
    gsm8k.write_text(json.dumps({"question": "q?", "answer": "so 1,000 + 234\n#### 1,234"}) + "\n")
    (tasks, source) = BENCHMARKS["gsm8k"].load(str(gsm8k), None)
    assert tasks[0].id == "gsm8k-0" and tasks[0].answer == "1234" and source == str(gsm8k)
    with pytest.raises(DatasetError, match="has none of the fields question"):
        BENCHMARKS["gsm8k"].load(str(math500), None)


def test_without_data_the_hub_copy_is_loaded_through_datasets(monkeypatch):
    import types

    from agent.eval.datasets import BENCHMARKS

    asked = []

    def load_dataset(name, config, split):
        asked.append((name, config, split))
        if name == "openai/gsm8k":
            return [{"question": "q?", "answer": "#### 7"}]
        raise ConnectionError("the hub is not reachable")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    tasks, source = BENCHMARKS["gsm8k"].load(None, None)
    assert asked == [("openai/gsm8k", "main", "test")] and source == "hf:openai/gsm8k:main"
    assert tasks[0].answer == "7"
    with pytest.raises(DatasetError, match=r"HuggingFaceH4/MATH-500 could not be loaded .*the hub is not reachable.*"
                                           r"pass --data PATH to MATH-500"):
        BENCHMARKS["math"].load(None, "math500")
    with pytest.raises(DatasetError):
        BENCHMARKS["math"].load(None, "full")
    assert asked[-1] == ("EleutherAI/hendrycks_math", "algebra", "test")
