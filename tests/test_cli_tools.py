"""`agent run` with the built-in tools, against a served GLM-4 on loopback, as a user sees it."""

from pathlib import Path

import pytest

from test_cli import agent_cli
from tools.browser.testing import LocalSite, Route

pytestmark = pytest.mark.slow


def test_default_tools_with_a_tools_module(fake_server, mytools_path):
    """The issue's command, word for word: the policy's built-ins plus the module's tools."""
    fake_server.script(['add\n{"a": 2, "b": 3}', "\nThe answer is 5."])
    proc = agent_cli("run", "What is 2+3?", "--base-url", fake_server.url, "--model", fake_server.model,
                     "--tools-module", str(mytools_path))
    assert proc.returncode == 0, proc.stderr
    assert "The answer is 5." in proc.stdout
    sent = {tool["function"]["name"] for tool in fake_server.posts[0].body["tools"]}
    assert sent == {"python", "simple_browser", "cogview", "add"}


def test_python_output_and_plot_are_shown(fake_server, tmp_path):
    code = ("```python\nimport matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\n"
            "plt.show()\nprint('sum is', sum([1, 4, 9]))\n```")
    fake_server.script([f"python\n{code}", "\nThe sum is 14; the plot is above."])
    proc = agent_cli("run", "Plot squares and sum them", "--base-url", fake_server.url, "--model",
                     fake_server.model, "--backend", "completions", "--tools", "python")
    assert proc.returncode == 0, proc.stderr
    assert "sum is 14" in proc.stdout and "The sum is 14" in proc.stdout
    saved = [line.split("saved image:", 1)[1].strip() for line in proc.stdout.splitlines() if "saved image:" in line]
    assert saved, proc.stdout
    png = Path(saved[0].strip("│ ").strip())
    if not png.is_absolute():
        png = tmp_path / png
    assert png.read_bytes().startswith(b"\x89PNG")
    # the observation the model read says so too, in GLM-4 format
    assert "<|observation|>" in fake_server.posts[1].prompt and "sum is 14" in fake_server.posts[1].prompt


def test_browser_answer_prints_its_sources(fake_server, tmp_path):
    with LocalSite() as site:
        site.add("/tea", "<html><head><title>Tea facts</title></head><body><article><h1>Tea facts</h1>"
                         "<p>Green tea is not oxidised.</p></article></body></html>")
        site.add("/search", handler=lambda request: Route.json({"results": [
            {"url": site.url("/tea"), "title": "Tea facts", "content": "Green tea"}]}))
        policy = tmp_path / "local.toml"
        policy.write_text(f'[browser]\nsearch_backend = "searxng"\nsearxng_url = "{site.origin}"\n'
                          "allow_private_network = true\nrespect_robots = false\n")
        fake_server.script(['simple_browser\nsearch("green tea")', "simple_browser\nmclick([0])",
                            "\nGreen tea is not oxidised【0†source】."])
        proc = agent_cli("run", "Is green tea oxidised?", "--base-url", fake_server.url, "--model",
                         fake_server.model, "--backend", "completions", "--tools", "simple_browser",
                         "--policy", str(policy))
    assert proc.returncode == 0, proc.stderr
    sources = proc.stdout[proc.stdout.index("Sources"):]
    assert "[0] Tea facts" in sources and site.url("/tea") in sources


def test_cogview_prints_the_image_path(fake_server, tmp_path):
    from tools.cogview.testing import save_tiny_stable_diffusion

    pipeline = save_tiny_stable_diffusion(tmp_path / "tiny-sd")
    policy = tmp_path / "draw.toml"
    policy.write_text(f'[cogview]\nmodel = "{pipeline}"\nsteps = 2\n')
    fake_server.script(['cogview\n{"prompt": "A red kite over green hills", "width": 64, "height": 64, "seed": 7}',
                        "\nHere is your kite."])
    proc = agent_cli("run", "Draw a kite", "--base-url", fake_server.url, "--model", fake_server.model,
                     "--backend", "completions", "--tools", "cogview", "--policy", str(policy))
    assert proc.returncode == 0, proc.stderr
    saved = [line.split("saved image:", 1)[1].strip(" │") for line in proc.stdout.splitlines() if "saved image:" in line]
    assert saved and "Here is your kite." in proc.stdout
    png = Path(saved[0].strip())
    png = png if png.is_absolute() else tmp_path / png
    assert png.exists() and png.suffix == ".png"


@pytest.fixture
def mytools_path(tmp_path):
    from test_cli import MYTOOLS

    path = tmp_path / "mytools.py"
    path.write_text(MYTOOLS)
    return path
