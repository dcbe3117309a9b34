"""Are two math answers the same? LaTeX normalised as the MATH benchmark's own checker does, then sympy.

``math_equal("\\frac{1}{2}", "0.5")`` is true, as are ``"\\dfrac12"`` and ``"1/2"``, ``"x=3"`` and ``"3"``,
``"(1, 2)"`` and ``"(1,2)"``, ``"2\\sqrt{2}"`` and ``"\\sqrt{8}"``. Two steps:

1. both sides are normalised (Hendrycks et al.'s ``strip_string``, extended): spaces, ``\\left``/``\\right``,
   ``\\!``, degree signs, ``\\$``, units in ``\\text{...}`` at the end, ``dfrac``/``tfrac``, ``\\frac12``,
   a leading ``x =``; equal strings are equal answers;
2. otherwise each side is turned into a sympy expression (a small LaTeX-to-Python rewrite read by
   ``parse_expr`` with implicit multiplication). Numbers compare with a relative tolerance of 1e-6;
   expressions are equal when ``simplify(a - b) == 0``. Tuples and intervals compare element by element,
   with the same brackets.

Model output is never evaluated as code: only numbers, operators, brackets, single-letter variables
and a fixed list of functions reach ``parse_expr``; anything else is compared as text only.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

REL_TOL = 1e-6
MAX_EXPRESSION_CHARS = 200  # longer answers are compared as text: simplify() can take very long

_FUNCTIONS = {"sqrt", "pi", "oo", "log", "ln", "exp", "sin", "cos", "tan", "cot", "sec", "csc", "asin", "acos",
              "atan", "Abs", "E", "I"}
_SAFE = re.compile(r"[0-9a-zA-Z+\-*/().,\s]*")


def math_equal(prediction: str, expected: str) -> bool:
    """Whether ``prediction`` and ``expected`` are the same mathematical answer (see the module doc)."""
    a, b = normalize(prediction), normalize(expected)
    if a == b:
        return bool(a)
    left, right = _split_tuple(a), _split_tuple(b)
    if left is not None or right is not None:
        if left is None or right is None or left[0] != right[0] or len(left[1]) != len(right[1]):
            return False
        return all(_same_value(x, y) for x, y in zip(left[1], right[1]))
    return _same_value(a, b)


def normalize(text: str) -> str:
    """An answer in a canonical text form (the MATH benchmark's normalisation, extended)."""
    s = str(text).strip()
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = re.sub(r"\\(?:mathrm|textbf|mathbf)\{", r"\\text{", s)
    s = s.replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°", "", s)
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _drop_trailing_units(s)
    s = re.sub(r"\\text\{\s*([^{}]*?)\s*\}", r"\1", s)  # \text{(A)} -> (A)
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s) if s.count("=") == 1 and len(s.split("=")[0].strip()) <= 2 else s
    s = _fix_sqrt(s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    if s == "0.5":
        s = "\\frac{1}{2}"
    s = re.sub(r"(\d),(\d{3})(?!\d)", r"\1\2", s) if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s) else s
    s = s.rstrip(".")
    return s


def _drop_trailing_units(s: str) -> str:
    """``5\\text{ cm}`` → ``5``: a \\text{...} after a number, at the end, is a unit."""
    match = re.search(r"\\text\{\s*[a-zA-Z ]+\}$", s)
    if match and match.start() > 0 and re.search(r"[\d}]\s*$", s[: match.start()]):
        return s[: match.start()].rstrip()
    return s


def _fix_sqrt(s: str) -> str:
    return re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)


def _fix_fracs(s: str) -> str:
    """``\\frac12`` → ``\\frac{1}{2}``, ``\\frac1{b}`` → ``\\frac{1}{b}``."""
    head, *parts = s.split("\\frac")
    out = [head]
    for part in parts:
        if part.startswith("{") or len(part) < 2:
            out.append("\\frac" + part)
        elif part[1] == "{":
            out.append("\\frac{" + part[0] + "}" + part[1:])
        else:
            out.append("\\frac{" + part[0] + "}{" + part[1] + "}" + part[2:])
    return "".join(out)


def _split_tuple(s: str) -> tuple[str, list[str]] | None:
    """``(1,2)`` → ``("()", ["1", "2"])``; intervals keep their brackets; ``None`` for a single value."""
    if len(s) < 3 or s[0] not in "([" or s[-1] not in ")]":
        return None
    inner = s[1:-1]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    if depth != 0 or not parts:
        return None
    parts.append(inner[start:])
    return s[0] + s[-1], parts


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    x, y = to_sympy(a), to_sympy(b)
    if x is None or y is None:
        return False
    return _sympy_equal(x, y)


def _sympy_equal(x: Any, y: Any) -> bool:
    try:
        if x.is_number and y.is_number:
            fx, fy = complex(x.evalf()), complex(y.evalf())
            return math.isclose(fx.real, fy.real, rel_tol=REL_TOL, abs_tol=1e-9) and \
                math.isclose(fx.imag, fy.imag, rel_tol=REL_TOL, abs_tol=1e-9)
        import sympy

        return bool(sympy.simplify(x - y) == 0)
    except Exception:  # sympy raises many kinds of errors on odd input: not equal
        return False


def to_sympy(text: str) -> Any:
    """A sympy expression for a normalised answer, or ``None`` when it is not one we read safely."""
    if not text or len(text) > MAX_EXPRESSION_CHARS:
        return None
    return _parse(latex_to_python(text))


def latex_to_python(s: str) -> str:
    """A small LaTeX-to-Python rewrite: fractions, roots, powers, products, constants."""
    s = s.replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/").replace("\\pi", " pi ")
    s = s.replace("\\infty", " oo ").replace("\\ln", " log ").replace("\\log", " log ").replace("\\exp", " exp ")
    for name in ("arcsin", "arccos", "arctan"):
        s = s.replace("\\" + name, " a" + name[3:] + " ")
    for name in ("sin", "cos", "tan", "cot", "sec", "csc"):
        s = s.replace("\\" + name, f" {name} ")
    s = _rewrite_commands(s)
    s = s.replace("{", "(").replace("}", ")").replace("^", "**")
    return s


def _rewrite_commands(s: str) -> str:
    """``\\frac{a}{b}`` → ``((a)/(b))``, ``\\sqrt[n]{x}`` → ``((x)**(1/(n)))``, ``\\sqrt{x}`` → ``sqrt(x)``."""
    while True:
        i = s.find("\\frac{")
        j = s.find("\\sqrt")
        if i < 0 and j < 0:
            return s
        if i >= 0 and (j < 0 or i < j):
            num, after = brace_group(s, i + len("\\frac"))
            den, end = brace_group(s, after) if after is not None else (None, None)
            if num is None or den is None or end is None:
                return s
            s = f"{s[:i]}(({num})/({den})){s[end:]}"
        else:
            k = j + len("\\sqrt")
            index = None
            if s[k:k + 1] == "[":
                close = s.find("]", k)
                if close < 0:
                    return s
                index, k = s[k + 1:close], close + 1
            body, end = brace_group(s, k)
            if body is None or end is None:
                return s
            s = f"{s[:j]}(({body})**(1/({index})))" + s[end:] if index else f"{s[:j]}sqrt({body}){s[end:]}"


def brace_group(s: str, start: int) -> tuple[str | None, int | None]:
    """The text inside the ``{...}`` that starts at ``start``, and the index after it."""
    if s[start:start + 1] != "{":
        return None, None
    depth = 0
    for i in range(start, len(s)):
        if s[i] == "{":
            depth += 1
        elif s[i] == "}":
            depth -= 1
            if depth == 0:
                return s[start + 1:i], i + 1
    return None, None


@lru_cache(maxsize=4096)
def _parse(expression: str) -> Any:
    if "\\" in expression or not _SAFE.fullmatch(expression):
        return None
    names = set(re.findall(r"[A-Za-z]+", expression))
    if any(len(name) > 1 and name not in _FUNCTIONS for name in names):
        return None  # only single-letter variables and known functions: nothing else is evaluated
    if "," in expression:
        return None
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    try:
        return parse_expr(expression.replace("ln", "log"), evaluate=True,
                          transformations=(*standard_transformations, implicit_multiplication_application, convert_xor))
    except Exception:  # SyntaxError, TokenError, TypeError...: not an expression we can read
        return None
