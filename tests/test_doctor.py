"""`agent doctor` and the tier report: what is in force, why a stronger tier is not, and each fix."""

from __future__ import annotations

import json

import pytest

from agent.doctor import diagnose
from agent.policy import Policy
from sandbox import describe_isolation, isolation
from test_cli import agent_cli


def test_a_fallback_says_why_the_stronger_tier_is_not_used(monkeypatch):
    monkeypatch.setattr(isolation, "tier_problem",
                        lambda tier, python=None: "bwrap: No permissions to create new namespace" if tier == "bwrap" else None)
    text = describe_isolation("auto")
    assert text.startswith("landlock") and "No permissions to create new namespace" in text
    assert "apt-get install bubblewrap" in text
    assert describe_isolation("none").startswith("none") and "isolation = 'none'" in describe_isolation("none")


def test_every_area_is_checked_and_each_problem_has_a_fix():
    findings = diagnose(Policy())
    checks = [finding.check for finding in findings]
    for area in ("interpreter", "sandbox", "sandbox tier bwrap", "sandbox tier landlock", "cgroups", "gpu",
                 "local model weights", "cogview weights", "search"):
        assert area in checks
    assert all(finding.fix for finding in findings if finding.status != "ok")


def test_a_missing_search_key_and_a_bad_interpreter_fail_with_their_fixes(monkeypatch, tmp_path):
    monkeypatch.delenv("TAVILY_API_KEY", raising=False)
    policy = Policy(browser={"search_backend": "tavily"}, sandbox={"python": str(tmp_path / "no-python")})
    found = {finding.check: finding for finding in diagnose(policy)}
    assert found["search"].status == "fail" and "TAVILY_API_KEY" in found["search"].fix
    assert found["interpreter"].status == "fail" and "full path" in found["interpreter"].fix


@pytest.mark.slow
def test_the_command_prints_findings_and_fails_when_one_fails(tmp_path):
    (tmp_path / "p.toml").write_text(f'[sandbox]\npython = "{tmp_path / "none"}"\n')
    proc = agent_cli("doctor", "--json", "--policy", str(tmp_path / "p.toml"))
    assert proc.returncode == 1, proc.stderr
    findings = {f["check"]: f for f in json.loads(proc.stdout)}
    assert findings["interpreter"]["status"] == "fail"
    good = agent_cli("doctor")
    assert "interpreter" in good.stdout and "sandbox" in good.stdout and "Traceback" not in good.stderr
