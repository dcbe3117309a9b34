"""BFCL (Berkeley Function Calling Leaderboard): its functions as tools, and its AST check of the calls.

Scored categories: ``simple`` (one function, one call), ``multiple`` (several functions, one call),
``parallel`` (one function, several calls) and ``parallel_multiple`` (several functions, several calls).
The model's first turn is scored and nothing is executed, as in BFCL's AST categories.

The check follows BFCL's own AST checker (Python) rule for rule:

- the number of calls equals the number expected (parallel: matched in any order, each expected call
  to a different model call);
- the function name is the expected one (a name with ``.`` may come back with ``_``, as OpenAI-style
  servers rewrite it);
- every required parameter is present; no parameter is unknown to the function or absent from the
  possible answer; an optional parameter left out must be allowed to be (``""`` among its answers);
- types are the function's: ``integer``, ``float`` (an integer is accepted), ``string``, ``boolean``,
  ``array``/``tuple`` (with the items' type checked one level deep), ``dict``; ``any`` is a string. A
  value of the possible answers' own type, where that differs from the declared type, is a variable name;
- values are among the possible answers; strings (and strings in lists and dicts) compare after
  dropping spaces and ``,./-_*^`` and lowering case, single quotes read as double; dicts key by key,
  lists of dicts in order.
"""

from __future__ import annotations

import re
from typing import Any

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")

_PYTHON_TYPES: dict[str, type] = {"string": str, "integer": int, "float": float, "boolean": bool, "array": list,
                                  "tuple": list, "dict": dict, "any": str}
_NESTED = ("array", "tuple")
# BFCL's types as JSON Schema, for the model's view of the functions (what BFCL does for OpenAI-style models).
_JSON_SCHEMA_TYPES = {"integer": "integer", "number": "number", "float": "number", "string": "string",
                      "boolean": "boolean", "bool": "boolean", "array": "array", "list": "array", "dict": "object",
                      "object": "object", "tuple": "array", "any": "string"}
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."


class Verdict(dict):
    """``{"valid": bool, "error": str, "error_type": str}``, BFCL's shape (a dict, so it serialises as is)."""

    @property
    def valid(self) -> bool:
        return bool(self["valid"])


def _ok() -> Verdict:
    return Verdict(valid=True, error="", error_type="")


def _fail(error_type: str, error: str) -> Verdict:
    return Verdict(valid=False, error=error, error_type=error_type)


# ---------------------------------------------------------------------------------------------------
# The model's view of the functions


def to_tool_schema(function: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function as an OpenAI function spec: its types as JSON Schema, BFCL's Python hint added."""
    return {"name": function["name"], "description": str(function.get("description", "")) + PYTHON_HINT,
            "parameters": _schema(function.get("parameters") or {"type": "dict", "properties": {}})}


def _schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            out[key] = _JSON_SCHEMA_TYPES.get(value, "string")
        elif key in ("properties",) and isinstance(value, dict):
            out[key] = {name: _schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            out[key] = _schema(value)
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and isinstance(node.get("properties"), dict):
        out["properties"] = {}
    return out


# ---------------------------------------------------------------------------------------------------
# The check


def ast_check(functions: list[dict[str, Any]], calls: list[dict[str, Any]], ground_truth: list[dict[str, Any]],
              category: str) -> Verdict:
    """Check the model's calls (``[{name: {arg: value}}]``) against BFCL's possible answers.

    ``functions``: the task's function descriptions (BFCL's own types); ``ground_truth``: one
    ``{name: {param: [acceptable values]}}`` per expected call; ``category``: one of :data:`CATEGORIES`.
    """
    if len(calls) != len(ground_truth):
        return _fail(f"{_checker(category)}:wrong_count",
                     f"Wrong number of functions: {len(calls)} called, {len(ground_truth)} expected.")
    if "parallel" in category:
        return _parallel(functions, calls, ground_truth)
    expected_name = next(iter(ground_truth[0]))
    description = _find(functions, expected_name) if "multiple" in category else functions[0]
    return check_call(description, calls[0], ground_truth[0])


def _checker(category: str) -> str:
    if "parallel" in category:
        return "parallel_function_checker_no_order"
    return "multiple_function_checker" if "multiple" in category else "simple_function_checker"


def _parallel(functions: list[dict[str, Any]], calls: list[dict[str, Any]],
              ground_truth: list[dict[str, Any]]) -> Verdict:
    matched: set[int] = set()
    for index, expected in enumerate(ground_truth):
        description = _find(functions, next(iter(expected)))
        errors = []
        for position, call in enumerate(calls):
            if position in matched:
                continue
            verdict = check_call(description, call, expected)
            if verdict.valid:
                matched.add(position)
                break
            errors.append(f"call {position}: {verdict['error']}")
        else:
            return _fail("parallel_function_checker_no_order:cannot_find_match",
                         f"No call matches expected call {index} ({next(iter(expected))}): " + "; ".join(errors))
    return _ok()


def _find(functions: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for function in functions:
        if function["name"] == name:
            return function
    return {"name": name, "parameters": {"properties": {}, "required": []}}


def check_call(description: dict[str, Any], call: dict[str, Any], expected: dict[str, Any]) -> Verdict:
    """One call against one expected call (BFCL's ``simple_function_checker``)."""
    name = description["name"]
    answers: dict[str, list[Any]] = next(iter(expected.values()))
    arguments = _arguments_for(name, call)
    if arguments is None:
        return _fail("simple_function_checker:wrong_func_name",
                     f"Function name {name!r} not found in model output ({', '.join(call) or 'no call'}).")
    parameters = description.get("parameters") or {}
    properties: dict[str, Any] = parameters.get("properties") or {}
    for param in parameters.get("required") or []:
        if param not in arguments:
            return _fail("simple_function_checker:missing_required", f"Missing required parameter: {param!r}.")
    for param, value in arguments.items():
        if param not in properties or param not in answers:
            return _fail("simple_function_checker:unexpected_param", f"Unexpected parameter: {param!r}.")
        verdict = _check_value(param, value, properties[param], answers[param])
        if not verdict.valid:
            return verdict
    for param, acceptable in answers.items():
        if param not in arguments and "" not in acceptable:
            return _fail("simple_function_checker:missing_optional",
                         f"Optional parameter {param!r} not provided and not marked as optional.")
    return _ok()


def _arguments_for(name: str, call: dict[str, Any]) -> dict[str, Any] | None:
    if name in call:
        return call[name] or {}
    if "." in name and re.sub(r"\.", "_", name) in call:
        return call[re.sub(r"\.", "_", name)] or {}
    return None


def _check_value(param: str, value: Any, detail: dict[str, Any], acceptable: list[Any]) -> Verdict:
    declared = str(detail.get("type", "any"))
    expected_type = _PYTHON_TYPES.get(declared, str)
    nested_type = _PYTHON_TYPES.get(str((detail.get("items") or {}).get("type", "any")), str) \
        if declared in _NESTED else None
    if declared == "tuple" and isinstance(value, tuple):
        value = list(value)
    if declared == "float" and type(value) is int:  # Python converts int to float: accepted
        value = float(value)
    verdict, is_variable = _check_type(param, value, acceptable, declared, expected_type, nested_type)
    if not verdict.valid:
        return verdict
    if not is_variable:
        if expected_type is dict:
            return _dict_check(param, value, acceptable)
        if expected_type is list and nested_type is dict:
            return _list_of_dicts_check(param, value, acceptable)
        if expected_type is str:
            return _string_check(param, value, acceptable)
        if expected_type is list:
            return _list_check(param, value, acceptable)
    if value not in acceptable:
        return _fail("value_error:others", f"Invalid value for parameter {param!r}: {value!r}. "
                                           f"Expected one of {acceptable}.")
    return _ok()


def _answer_type(acceptable: list[Any]) -> type | None:
    """The type of the possible answers (``""`` marks an optional parameter and says nothing)."""
    for answer in acceptable:
        if answer != "":
            return type(answer)
    return None


def _check_type(param: str, value: Any, acceptable: list[Any], declared: str, expected_type: type,
                nested_type: type | None) -> tuple[Verdict, bool]:
    """BFCL's type check: the value's type (one level into lists), or a variable name written as the
    possible answers' own type. Returns the verdict and whether the value is such a variable."""
    answer_type = _answer_type(acceptable)
    is_variable = answer_type is not None and answer_type is not expected_type
    items: Any = value
    if type(value) is expected_type:
        if nested_type is None:
            return _ok(), is_variable
        for answer in acceptable:  # as BFCL: an answer that is no list (an optional "") does not constrain items
            if not isinstance(answer, list) or all(
                    _check_type(param, item, answer, nested_type.__name__, nested_type, None)[0].valid for item in items):
                return _ok(), is_variable
        return _fail("type_error:nested", f"Nested type checking failed for parameter {param!r}: expected "
                                          f"{declared} of {nested_type.__name__}, got {value!r}."), False
    if answer_type is not None and type(value) is answer_type:
        return _ok(), True
    return _fail("type_error:simple", f"Incorrect type for parameter {param!r}: expected {declared}, got "
                                      f"{type(value).__name__} ({value!r})."), False


def standardize(text: str) -> str:
    """BFCL's string normalisation: no spaces or ``,./-_*^``, lower case, single quotes as double."""
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


def _standardized(values: list[Any]) -> list[Any]:
    return [standardize(v) if isinstance(v, str) else v for v in values]


def _string_check(param: str, value: str, acceptable: list[Any]) -> Verdict:
    if standardize(value) not in [standardize(a) for a in acceptable if isinstance(a, str)]:
        return _fail("value_error:string", f"Invalid value for parameter {param!r}: {value!r}. "
                                           f"Expected one of {acceptable}. Case insensitive.")
    return _ok()


def _list_check(param: str, value: list[Any], acceptable: list[Any]) -> Verdict:
    options = [_standardized(list(a)) if isinstance(a, (list, str)) else a for a in acceptable]  # "" reads as []
    if _standardized(list(value)) not in options:
        return _fail("value_error:list/tuple", f"Invalid value for parameter {param!r}: {value!r}. "
                                               f"Expected one of {acceptable}.")
    return _ok()


def _dict_check(param: str, value: dict[str, Any], acceptable: list[Any]) -> Verdict:
    verdict = _fail("dict_checker:unclear", f"Invalid value for parameter {param!r}: {value!r}.")
    for answer in acceptable:
        if answer == "" or not isinstance(answer, dict):
            continue
        verdict = _one_dict(value, answer)
        if verdict.valid:
            return verdict
    return verdict


def _one_dict(value: dict[str, Any], answer: dict[str, list[Any]]) -> Verdict:
    for key, item in value.items():
        if key not in answer:
            return _fail("value_error:dict_key", f"Unexpected dict key parameter: {key!r}.")
        options = _standardized(list(answer[key]))
        if (standardize(item) if isinstance(item, str) else item) not in options:
            return _fail("value_error:dict_value", f"Invalid value for parameter {key!r}: {item!r}. "
                                                   f"Expected one of {options}.")
    for key, options in answer.items():
        if key not in value and "" not in options:
            return _fail("value_error:dict_key", f"Missing dict key parameter: {key!r}.")
    return _ok()


def _list_of_dicts_check(param: str, value: list[Any], acceptable: list[Any]) -> Verdict:
    verdict = _fail("list_dict_checker:unclear", f"Invalid value for parameter {param!r}: {value!r}.")
    for answer in acceptable:
        if not isinstance(answer, list) or len(answer) != len(value):
            verdict = _fail("value_error:list_dict_count", "Wrong number of dictionaries in the list.")
            continue
        results = [_one_dict(item, expected) if isinstance(item, dict) else
                   _fail("type_error:nested", f"{item!r} is not a dict") for item, expected in zip(value, answer)]
        failed = [r for r in results if not r.valid]
        if not failed:
            return _ok()
        verdict = failed[0]
    return verdict
