"""Policies: the shipped ones load, unknown keys and bad values are refused with the key's name."""

import pytest

from agent.errors import PolicyError
from agent.policy import builtin_policies, load_policy


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
