"""BFCL: the AST check, rule by rule, on fixtures in BFCL's own format; and `agent eval bfcl` end to end."""

from __future__ import annotations

import json

import pytest

from agent.eval.bfcl import ast_check, check_call, standardize, to_tool_schema
from agent.eval.datasets import BENCHMARKS
from fake_glm_server import Reply
from test_eval import agent_cli

AREA = {"name": "calculate_triangle_area", "description": "Area of a triangle.", "parameters": {
    "type": "dict", "required": ["base", "height"], "properties": {
        "base": {"type": "integer", "description": "base"}, "height": {"type": "integer", "description": "height"},
        "unit": {"type": "string", "description": "unit"}}}}
AREA_TRUTH = {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}

RICH = {"name": "plan.trip", "description": "Plan.", "parameters": {
    "type": "dict", "required": ["city", "budget"], "properties": {
        "city": {"type": "string"}, "budget": {"type": "float"}, "days": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}}, "point": {"type": "tuple", "items": {"type": "integer"}},
        "prefs": {"type": "dict", "properties": {"hotel": {"type": "string"}, "stars": {"type": "integer"}}},
        "stops": {"type": "array", "items": {"type": "dict"}}, "flexible": {"type": "boolean"},
        "ref": {"type": "integer"}}}}
RICH_TRUTH = {"plan.trip": {"city": ["New York City", "NYC"], "budget": [1500.0], "days": [3, ""],
                            "tags": [["museums", "food"], ""], "point": [[1, 2], ""],
                            "prefs": [{"hotel": ["Hilton"], "stars": [4, ""]}, ""],
                            "stops": [[{"name": ["A"]}, {"name": ["B"]}], ""], "flexible": [True, ""],
                            "ref": ["my_var", ""]}}


def verdict(call, function=RICH, truth=RICH_TRUTH):
    return check_call(function, call, truth)


def rich(**arguments):
    return {"plan.trip": {"city": "NYC", "budget": 1500.0, **arguments}}


def test_a_right_call_passes_and_strings_are_normalized():
    assert verdict(rich()).valid
    assert verdict({"plan.trip": {"city": "new-york city", "budget": 1500.0}}).valid  # case, spaces, '-' dropped
    assert standardize("April 1, 2024") == standardize("april 1 2024") == "april12024"


def test_function_name():
    wrong = verdict({"plan_trips": {"city": "NYC", "budget": 1500.0}})
    assert not wrong.valid and wrong["error_type"] == "simple_function_checker:wrong_func_name"
    assert verdict({"plan_trip": {"city": "NYC", "budget": 1500.0}}).valid  # '.' may come back as '_'


def test_required_unexpected_and_optional_parameters():
    missing = verdict({"plan.trip": {"city": "NYC"}})
    assert missing["error_type"] == "simple_function_checker:missing_required" and "'budget'" in missing["error"]
    unknown = verdict(rich(hotel="Hilton"))
    assert unknown["error_type"] == "simple_function_checker:unexpected_param"
    not_in_answer = check_call(AREA, {"calculate_triangle_area": {"base": 10, "height": 5, "unit": "cm"}},
                               {"calculate_triangle_area": {"base": [10], "height": [5]}})
    assert not_in_answer["error_type"] == "simple_function_checker:unexpected_param"
    assert check_call(AREA, {"calculate_triangle_area": {"base": 10, "height": 5}}, AREA_TRUTH).valid  # "" allows it
    must = check_call(AREA, {"calculate_triangle_area": {"base": 10, "height": 5}},
                      {"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units"]}})
    assert must["error_type"] == "simple_function_checker:missing_optional"


def test_types():
    assert verdict(rich(budget=1500)).valid  # an integer for a float: Python converts it
    as_string = verdict(rich(budget="1500"))
    assert as_string["error_type"] == "type_error:simple"
    float_for_int = verdict(rich(days=3.0))
    assert float_for_int["error_type"] == "type_error:simple"
    bool_for_int = verdict(rich(days=True))
    assert bool_for_int["error_type"] == "type_error:simple"  # a boolean is not an integer
    nested = verdict(rich(tags=["museums", 5]), truth={"plan.trip": {**RICH_TRUTH["plan.trip"],
                                                                      "tags": [["museums", "food"]]}})
    assert nested["error_type"] == "type_error:nested"
    # As in BFCL, an answer that is no list (the optional "") leaves the items' types unchecked: the value is then wrong
    assert verdict(rich(tags=["museums", 5]))["error_type"] == "value_error:list/tuple"
    assert verdict(rich(point=[1, 2])).valid  # a tuple is written as a list
    assert verdict(rich(ref="my_var")).valid  # a variable name where the answers are strings
    assert verdict(rich(flexible=True)).valid
    assert verdict(rich(flexible="true"))["error_type"] == "type_error:simple"


def test_values():
    assert verdict(rich(budget=1600.0))["error_type"] == "value_error:others"
    assert verdict(rich(city="Boston"))["error_type"] == "value_error:string"
    assert verdict(rich(tags=["Museums", "FOOD"])).valid  # strings in lists normalized
    assert verdict(rich(tags=["food", "museums"]))["error_type"] == "value_error:list/tuple"  # order matters
    assert verdict(rich(prefs={"hotel": "hilton"})).valid  # an optional dict key left out
    assert verdict(rich(prefs={"hotel": "Hilton", "pool": True}))["error_type"] == "value_error:dict_key"
    assert verdict(rich(prefs={"hotel": "Marriott"}))["error_type"] == "value_error:dict_value"
    assert verdict(rich(prefs={"stars": 4}))["error_type"] == "value_error:dict_key"  # hotel is not optional
    assert verdict(rich(stops=[{"name": "A"}, {"name": "b"}])).valid
    assert verdict(rich(stops=[{"name": "A"}]))["error_type"] == "value_error:list_dict_count"
    swapped = verdict(rich(stops=[{"name": "B"}, {"name": "A"}]))  # in order; BFCL reports the last answer's error
    assert not swapped.valid and swapped["error_type"] == "value_error:list_dict_count"


def test_categories_count_and_order():
    area = {"calculate_triangle_area": {"base": 10, "height": 5}}
    assert ast_check([AREA], [area], [AREA_TRUTH], "simple").valid
    assert ast_check([AREA], [area, area], [AREA_TRUTH], "simple")["error_type"] == "simple_function_checker:wrong_count"
    assert ast_check([AREA], [], [AREA_TRUTH], "simple")["error_type"] == "simple_function_checker:wrong_count"
    # multiple: the expected function among several, one call
    assert ast_check([RICH, AREA], [area], [AREA_TRUTH], "multiple").valid
    assert not ast_check([RICH, AREA], [rich()], [AREA_TRUTH], "multiple").valid
    # parallel: any order, each expected call matched to a different call
    other = {"calculate_triangle_area": {"base": [7], "height": [2]}}
    second = {"calculate_triangle_area": {"base": 7, "height": 2}}
    assert ast_check([AREA], [second, area], [AREA_TRUTH, other], "parallel").valid
    assert not ast_check([AREA], [area, area], [AREA_TRUTH, other], "parallel").valid
    mixed = ast_check([AREA, RICH], [rich(), area], [AREA_TRUTH, RICH_TRUTH], "parallel_multiple")
    assert mixed.valid
    short = ast_check([AREA], [area], [AREA_TRUTH, other], "parallel")
    assert short["error_type"] == "parallel_function_checker_no_order:wrong_count"


def test_functions_are_shown_to_the_model_as_json_schema():
    schema = to_tool_schema(RICH)
    properties = schema["parameters"]["properties"]
    assert schema["parameters"]["type"] == "object" and properties["budget"]["type"] == "number"
    assert properties["point"]["type"] == "array" and properties["prefs"]["type"] == "object"
    assert properties["stops"]["items"]["type"] == "object"
    assert schema["description"].endswith("Note that the provided function is in Python 3 syntax.")


def write_bfcl(folder, version="v3"):
    """A BFCL data folder: two simple and one parallel task, with their possible answers."""
    (folder / "possible_answer").mkdir(parents=True)
    simple = [{"id": "simple_0", "question": [[{"role": "user", "content": "Area of a triangle, base 10, height 5?"}]],
               "function": [AREA]},
              {"id": "simple_1", "question": [[{"role": "user", "content": "Area with base 7 and height 2?"}]],
               "function": [AREA]}]
    simple_truth = [{"id": "simple_0", "ground_truth": [AREA_TRUTH]},
                    {"id": "simple_1", "ground_truth": [{"calculate_triangle_area": {"base": [7], "height": [2]}}]}]
    parallel = [{"id": "parallel_0", "question": [[{"role": "user", "content": "Areas: 10 by 5 and 7 by 2."}]],
                 "function": [AREA]}]
    parallel_truth = [{"id": "parallel_0", "ground_truth": [
        AREA_TRUTH, {"calculate_triangle_area": {"base": [7], "height": [2]}}]}]
    name = "simple_python" if version == "v4" else "simple"
    for where, rows in [(f"BFCL_{version}_{name}.json", simple), (f"BFCL_{version}_parallel.json", parallel),
                        (f"possible_answer/BFCL_{version}_{name}.json", simple_truth),
                        (f"possible_answer/BFCL_{version}_parallel.json", parallel_truth)]:
        (folder / where).write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.mark.parametrize("version", ["v3", "v4"])
def test_bfcl_loads_from_a_data_folder(tmp_path, version):
    write_bfcl(tmp_path, version)
    tasks, source = BENCHMARKS["bfcl"].load(str(tmp_path), "simple,parallel")
    assert [t.id for t in tasks] == ["simple_0", "simple_1", "parallel_0"]
    assert tasks[0].task == "Area of a triangle, base 10, height 5?" and tasks[0].functions == [AREA]
    assert tasks[2].category == "parallel" and len(tasks[2].answer) == 2


@pytest.mark.parametrize("backend", ["chat", "completions"])
def test_eval_bfcl_scores_the_first_turn_without_running_the_calls(fake_server, tmp_path, backend):
    write_bfcl(tmp_path / "bfcl")

    def reply(request):
        text = request.prompt or json.dumps(request.body["messages"])
        if "base 10, height 5" in text:  # right
            return 'calculate_triangle_area\n{"base": 10, "height": 5}'
        if "base 7 and height 2" in text:  # a string for an integer: wrong
            return Reply(tool_calls=[("calculate_triangle_area", {"base": "7", "height": 2})],
                         text='calculate_triangle_area\n{"base": "7", "height": 2}')
        return Reply(tool_calls=[("calculate_triangle_area", {"base": 7, "height": 2}),
                                 ("calculate_triangle_area", {"base": 10, "height": 5, "unit": "units"})],
                     text='calculate_triangle_area\n{"base": 7, "height": 2}<|assistant|>calculate_triangle_area\n'
                          '{"base": 10, "height": 5, "unit": "units"}')

    fake_server.script(reply)
    results = tmp_path / "bfcl.jsonl"
    proc = agent_cli("eval", "bfcl", "--data", str(tmp_path / "bfcl"), "--subset", "simple,parallel",
                     "--base-url", fake_server.url, "--model", fake_server.model, "--backend", backend,
                     "-o", str(results), "--no-transcripts", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(fake_server.posts) == 3  # one model turn per task: the calls are scored, not run
    records = {r["id"]: r for r in map(json.loads, results.read_text().splitlines()[1:])}
    assert [records[i]["correct"] for i in ("simple_0", "simple_1", "parallel_0")] == [True, False, True]
    assert records["simple_1"]["note"].startswith("type_error:simple")
    assert records["simple_0"]["status"] == "stopped" and records["simple_0"]["steps"] == 1
    summary = json.loads((tmp_path / "bfcl.summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(2 / 3) and summary["tools"] == []
    assert summary["categories"] == {"parallel": {"runs": 1, "accuracy": 1.0}, "simple": {"runs": 2, "accuracy": 0.5}}
    sent = fake_server.posts[0]
    if backend == "completions":  # the functions are in GLM-4's system prompt, as JSON Schema
        assert '"name": "calculate_triangle_area"' in sent.prompt and '"type": "integer"' in sent.prompt
    else:
        assert sent.body["tools"][0]["function"]["parameters"]["type"] == "object"
