"""Scoring a final answer against the expected one: what is extracted, and how it is compared.

A :class:`Scorer` takes the run's final answer (the text; for BFCL, the calls) and the task's expected
answer and returns a :class:`Score`: whether it is correct, what was extracted from the answer, and a
short note. The scorers, by name (``--scorer``):

- ``exact``: the whole answer, whitespace at both ends stripped, equals the expected text;
- ``numeric``: the last number in the answer (a ``\\boxed{}`` value, if any, wins; ``1,234`` is 1234;
  ``3/4`` and ``75%`` are read as 0.75) equals the expected number within a relative 1e-6;
- ``math``: the last ``\\boxed{}`` (without one, the last number) is the same mathematical answer as the
  expected one (:func:`agent.eval.mathequiv.math_equal`: LaTeX normalised, then sympy);
- ``regex``: the expected answer is a regular expression found in the answer (``re.search``);
- ``python:FILE_OR_MODULE:FUNCTION``: your function ``(answer, expected)`` (or ``(answer, expected,
  task)``) returns a bool or a score in [0, 1].
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

from ..importing import import_module_or_file
from .mathequiv import brace_group, math_equal

REL_TOL = 1e-6
SCORER_NAMES = ("exact", "numeric", "math", "regex", "python:FILE_OR_MODULE:FUNCTION")

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?\s*%?|-?\.\d+\s*%?")


class ScorerError(ValueError):
    """A scorer that cannot be built (an unknown name, a function that does not import)."""


@dataclass
class Score:
    correct: bool
    value: float  # 1.0 or 0.0 for right and wrong; a python scorer may give partial credit
    extracted: str = ""
    note: str = ""


class Scorer:
    """Compares a final answer with the expected answer. ``name`` is what results files record."""

    name = "exact"

    def score_run(self, answer: str, calls: list[dict[str, Any]], task: Any) -> Score:
        """Score one run of ``task`` (an :class:`~agent.eval.datasets.Task`): its final answer, or its calls."""
        return self.score(answer, task.answer, task.model_dump())

    def score(self, answer: str, expected: Any, task: dict[str, Any] | None = None) -> Score:
        extracted = answer.strip()
        right = extracted == str(expected).strip()
        return Score(right, float(right), extracted)


class NumericScorer(Scorer):
    name = "numeric"

    def score(self, answer: str, expected: Any, task: dict[str, Any] | None = None) -> Score:
        extracted = final_number_text(answer)
        if extracted is None:
            return Score(False, 0.0, "", "no number in the answer")
        gold = parse_number(str(expected))
        if gold is None:
            return Score(False, 0.0, extracted, f"the expected answer {expected!r} is not a number")
        right = numbers_equal(extracted, gold)
        return Score(right, float(right), extracted)


class MathScorer(Scorer):
    name = "math"

    def score(self, answer: str, expected: Any, task: dict[str, Any] | None = None) -> Score:
        extracted = last_boxed(answer)
        if extracted is None:
            extracted = last_number_text(answer)
        if extracted is None:
            return Score(False, 0.0, "", "no \\boxed{} answer and no number")
        right = math_equal(extracted, str(expected))
        return Score(right, float(right), extracted)


class RegexScorer(Scorer):
    name = "regex"

    def score(self, answer: str, expected: Any, task: dict[str, Any] | None = None) -> Score:
        try:
            match = re.search(str(expected), answer)
        except re.error as exc:
            return Score(False, 0.0, "", f"the expected answer is not a valid regular expression ({exc})")
        return Score(match is not None, float(match is not None), match.group(0) if match else "")


class FunctionScorer(Scorer):
    """``python:FILE_OR_MODULE:FUNCTION``: the user's function decides."""

    def __init__(self, spec: str, fn: Callable[..., Any]):
        self.name = spec
        self.fn = fn
        try:
            self._takes_task = len(inspect.signature(fn).parameters) >= 3
        except (TypeError, ValueError):
            self._takes_task = False

    def score(self, answer: str, expected: Any, task: dict[str, Any] | None = None) -> Score:
        try:
            verdict = self.fn(answer, expected, task) if self._takes_task else self.fn(answer, expected)
        except Exception as exc:  # the user's scorer failing on one answer marks that answer, not the run
            return Score(False, 0.0, "", f"the scorer raised {type(exc).__name__}: {exc}")
        value = float(verdict) if isinstance(verdict, (bool, int, float)) else 0.0
        value = min(1.0, max(0.0, value))
        return Score(value >= 1.0, value, answer.strip()[:200])


class AstScorer(Scorer):
    """BFCL: the first turn's calls against the possible answers (:func:`agent.eval.bfcl.ast_check`)."""

    name = "ast"

    def score_run(self, answer: str, calls: list[dict[str, Any]], task: Any) -> Score:
        from .bfcl import ast_check

        verdict = ast_check(task.functions, calls, task.answer, task.category or "simple")
        shown = json.dumps(calls, ensure_ascii=False, default=str)[:300]
        return Score(verdict.valid, float(verdict.valid), shown, verdict["error_type"] + (": " + verdict["error"]
                                                                                           if verdict["error"] else ""))

    def score(self, answer: str, expected: Any, task: dict[str, Any] | None = None) -> Score:
        raise ScorerError("The ast scorer scores BFCL tasks' calls, not final answers.")


_SCORERS: dict[str, type[Scorer]] = {"exact": Scorer, "numeric": NumericScorer, "math": MathScorer,
                                     "regex": RegexScorer, "ast": AstScorer}


def get_scorer(name: str) -> Scorer:
    """The scorer ``--scorer NAME`` names (see the module doc)."""
    if name in _SCORERS:
        return _SCORERS[name]()
    if name.startswith("python:"):
        return FunctionScorer(name, _import_function(name))
    raise ScorerError(f"Unknown scorer {name!r}: use one of {', '.join(SCORER_NAMES)}.")


def _import_function(spec: str) -> Callable[..., Any]:
    where, _, function = spec[len("python:"):].rpartition(":")
    if not where or not function:
        raise ScorerError(f"--scorer {spec!r}: write python:FILE_OR_MODULE:FUNCTION, e.g. python:my_scorer.py:score.")
    try:
        module = import_module_or_file(where, prefix="_agent_scorer_")
    except FileNotFoundError:
        raise ScorerError(f"--scorer {spec!r}: {where} does not exist.") from None
    except Exception as exc:
        raise ScorerError(f"--scorer {spec!r}: {where} does not import ({type(exc).__name__}: {exc}).") from None
    fn = getattr(module, function, None)
    if not callable(fn):
        raise ScorerError(f"--scorer {spec!r}: {where} has no function {function!r}.")
    return fn


# ---------------------------------------------------------------------------------------------------
# Extraction


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; ``None`` without one."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        rest = text[start + len("\\boxed"):].strip()  # \boxed 5
        return rest.split()[0].rstrip(".$") if rest else None
    body, _ = brace_group(text, brace)
    return body.strip() if body is not None else None


def last_number_text(text: str) -> str | None:
    """The last number written in ``text`` (``-1,234.5``, ``3/4``, ``75%``), as written; ``None`` if none."""
    found = _NUMBER.findall(text.replace("−", "-"))
    return found[-1].strip() if found else None


def final_number_text(answer: str) -> str | None:
    """What the numeric scorer reads: the last number of the last ``\\boxed{}`` if there is one, else of the answer."""
    boxed = last_boxed(answer)
    if boxed is not None:
        number = last_number_text(boxed)
        if number is not None:
            return number
    return last_number_text(answer)


def parse_number(text: str) -> float | None:
    """``"1,234"`` → 1234.0, ``"(3/4)"`` → 0.75, ``"75%"`` → 0.75, ``"$18.00"`` → 18.0; ``None`` if not a number."""
    s = text.strip().replace(",", "").replace("$", "").replace(" ", "").replace("−", "-")
    if s.startswith("(") and s.endswith(")"):
        s = s[1:-1]
    percent = s.endswith("%")
    s = s.rstrip("%")
    try:
        value = float(Fraction(s)) if "/" in s else float(s)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def numbers_equal(extracted: str, gold: float) -> bool:
    """Whether a number as written equals ``gold`` within a relative 1e-6; ``75%`` matches both 0.75 and 75."""
    value = parse_number(extracted)
    if value is None:
        return False
    candidates = [value, value * 100] if extracted.rstrip().endswith("%") else [value]
    return any(math.isclose(v, gold, rel_tol=REL_TOL, abs_tol=1e-9) for v in candidates)
