"""Policies: the shipped ones load, unknown keys and bad values are refused with the key's name."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.errors import PolicyError
from agent.policy import Policy, builtin_policies, load_policy, policy_table


def test_shipped_policies_load():
    assert builtin_policies() == ["default", "strict", "trusted"]
    strict = load_policy("strict")
    assert strict.name == "strict" and strict.sandbox.isolation == "bwrap" and "cogview" not in strict.tools.enabled
    assert load_policy("trusted").browser.allow_private_network is True
    assert load_policy(None).name == "default"


def test_policy_from_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[agent]\nmax_steps = 3\n[sandbox]\nisolation = "none"\n')
    policy = load_policy(path)
    assert policy.name == "mine" and policy.agent.max_steps == 3 and policy.sandbox.isolation == "none"
    assert policy.agent.max_tool_calls == 40  # defaults fill the rest


@pytest.mark.parametrize("text, message", [
    ("[sandbox]\nmemroy_mb = 5\n", "unknown key 'sandbox.memroy_mb'"),
    ("[agnet]\nmax_steps = 5\n", "unknown key 'agnet'"),
    ("[agent]\nmax_steps = 0\n", "'agent.max_steps': Input should be greater than or equal to 1"),
    ('[sandbox]\nisolation = "docker"\n', "'sandbox.isolation'"),
    ("[agent\n", "is not valid TOML"),
])
def test_bad_policy_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unknown_policy_name():
    with pytest.raises(PolicyError, match="Unknown policy 'lenient': use one of default, strict, trusted"):
        load_policy("lenient")
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy("missing/file.toml")


def test_the_readme_policy_reference_is_the_models_own():
    """The README's table is what `agent policy` prints from the models: a key added or changed without
    updating it fails here (copy the output of `agent policy` between the policy-table markers)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    copy = readme.split("<!-- policy-table", 1)[1].split("-->", 1)[1].split("<!-- /policy-table -->", 1)[0]
    assert copy.strip() == policy_table()
    keys = {line.split("`")[1] for line in policy_table().splitlines()[2:]}
    assert {"[sandbox] disk_mb", "[browser] retries", "[files] max_document_chars", "[model] top_p"} <= keys


def test_policy_sections_are_read_only_and_copied_to_change():
    policy = load_policy("default")
    with pytest.raises(ValidationError):
        policy.sandbox.memory_mb = 1  # a tool holding these settings never sees them change
    stricter = policy.with_section("sandbox", memory_mb=1024)
    assert stricter.sandbox.memory_mb == 1024 and policy.sandbox.memory_mb == 2048
    assert Policy(agent={"max_steps": 3}).agent.max_steps == 3
    with pytest.raises(PolicyError, match="'sandbox.memory_mb'"):
        policy.with_section("sandbox", memory_mb=1)  # below the minimum: refused like a policy file

