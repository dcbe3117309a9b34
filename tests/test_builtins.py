"""Built-ins are found by name through an entry-point group: a new one needs no edit of the core.

The test installs a fourth built-in the way a third-party package would (a folder outside `agent/`
with a `.dist-info` declaring the entry point) and checks that its policy section is validated by its
settings model, GLM-4 sees it in its own words, its calls run, and the CLI lists it.
"""

import os
import subprocess
import sys
import textwrap

import pytest

from agent import Agent, Tool
from agent.builtins import builtin_names, rediscover
from agent.errors import PolicyError, ToolDefinitionError
from agent.models import ScriptedModel
from agent.policy import load_policy
from agent.protocol.glm4 import render_prompt
from agent.registry import ToolRegistry

SHELL_PACKAGE = '''
from pydantic import BaseModel, ConfigDict

from agent import Tool


class ShellSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    greeting: str = "hi"


class ShellTool(Tool):
    name = "shell"
    builtin = "shell"
    builtin_prompt = "Send a line of text to `shell`; it answers with a greeting."
    usage = "Send one line of text."
    section, settings_model = "shell", ShellSettings
    description = "Greets."

    def __init__(self, policy=None):
        self.settings = policy.shell

    @classmethod
    def doctor(cls, policy):
        from agent.doctor import Finding

        return [Finding(check="shell greeting", status="ok", detail=f"greets with {policy.shell.greeting!r}")]

    def parse_body(self, body):
        return {"text": body.strip()}

    def forward(self, text: str) -> str:
        return f"{self.settings.greeting} {text}"
'''


@pytest.fixture
def shell_installed(tmp_path, monkeypatch):
    """A package that adds the built-in ``shell``, installed on the import path."""
    site = tmp_path / "site"
    (site / "shelltool").mkdir(parents=True)
    (site / "shelltool" / "__init__.py").write_text(SHELL_PACKAGE)
    info = site / "shelltool-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shelltool\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[glm_agent.tools]\nshell = shelltool:ShellTool\n")
    monkeypatch.syspath_prepend(str(site))
    rediscover()
    yield site
    monkeypatch.undo()
    sys.modules.pop("shelltool", None)
    rediscover()


def test_a_fourth_builtin_from_a_package_outside_the_core(shell_installed, tmp_path):
    assert "shell" in builtin_names() and {"python", "simple_browser", "cogview"} <= set(builtin_names())
    path = tmp_path / "policy.toml"
    path.write_text('[tools]\nenabled = ["shell"]\n\n[shell]\ngreeting = "hello"\n')
    policy = load_policy(path)
    assert policy.shell.greeting == "hello" and policy.sandbox.memory_mb == 2048  # the others keep defaults

    model = ScriptedModel(["shell\nworld", "\nDone."])
    with Agent(model=model, tools=["shell"], policy=policy) as agent:
        result = agent.run("greet the world")
    assert result.steps[0].observations[0].content == "hello world"
    prompt = render_prompt(model.seen[0], agent.tools.specs())
    assert "\n## shell\n\nSend a line of text to `shell`; it answers with a greeting." in prompt

    from agent.doctor import diagnose

    found = {finding.check: finding for finding in diagnose(policy)}  # its own check, beside the core's
    assert found["shell greeting"].detail == "greets with 'hello'" and "gpu" in found and "interpreter" in found

    path.write_text("[shell]\ngreting = 'hello'\n")
    with pytest.raises(PolicyError, match="unknown key 'shell.greting'"):
        load_policy(path)


def test_the_cli_lists_an_installed_builtin(shell_installed, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shell_installed), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "shell.toml").write_text('[tools]\nenabled = ["shell"]\n')  # installed is not enabled
    listed = subprocess.run([sys.executable, "-m", "agent", "tools", "--policy", "shell.toml"], capture_output=True,
                            text=True, timeout=120, env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "shell" in listed.stdout and "built-in" in listed.stdout
    helped = subprocess.run([sys.executable, "-m", "agent", "run", "--help"], capture_output=True, text=True,
                            timeout=120, env={**env, "COLUMNS": "200"}, cwd=tmp_path)
    assert "shell" in helped.stdout


def test_a_native_type_without_its_prompt_text_is_a_clear_error():
    class Shell(Tool):
        name = "shell"
        builtin = "shell"

        def forward(self, line: str) -> str:
            return line

    with pytest.raises(ToolDefinitionError, match="natively as 'shell' but gives no `builtin_prompt`"):
        ToolRegistry([Shell()])


def test_an_unknown_builtin_name_is_a_clear_error():
    with pytest.raises(ToolDefinitionError, match="Unknown built-in tool 'shel': choose from cogview, python, simple_browser"):
        ToolRegistry(["shel"])


def test_the_sandbox_stands_alone():
    """`sandbox` imports nothing from `agent`: it runs with `agent` made unimportable."""
    script = textwrap.dedent("""
        import sys
        sys.modules["agent"] = None  # any import of agent now fails
        import sandbox
        from sandbox import Sandbox, SandboxSettings, KernelPool, describe_isolation
        assert SandboxSettings(memory_mb=4096).memory_mb == 4096
        assert not [name for name in sys.modules if name.startswith("agent.")] and sys.modules["agent"] is None
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("shadow", ["tools.py", "sandbox/__init__.py"])
def test_a_users_file_that_hides_a_package_is_named(tmp_path, shadow):
    (tmp_path / shadow).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / shadow).write_text("x = 1\n")
    script = "from agent import Agent\nAgent(tools=['python'])\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert "ToolDefinitionError" in last and str(tmp_path / shadow.split("/")[0]) in last and "Rename it" in last

