"""The web chat of ``agent serve`` in a real headless Chromium (selenium and the system's chromium-driver).

Skipped when no chromium is installed (``apt-get install chromium chromium-driver``; CI installs them).
Screenshots go to ``tests/.screenshots/`` (ignored); the README's comes from there.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("sse_starlette")  # the [serve] extra

from agent import Agent, tool  # noqa: E402
from agent.messages import Citation
from agent.models import CompletionsModel
from agent.policy import Policy
from agent.serve import Limits
from agent.tool import ToolOutput
from fake_glm_server import FakeGLMServer
from tiny_glm import add  # a plain @tool: add(a, b)
from serve_fixtures import serve_app

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium and chromium-driver installed")

SHOTS = Path(__file__).parent / ".screenshots"
EVIL = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
URL = "https://glm.example/release-notes"


@tool
def lookup(query: str) -> ToolOutput:
    """Look something up on the web.

    Args:
        query: what to look for
    """
    return ToolOutput(text=f"【0†{EVIL}】 GLM-4 was released in June 2024. {EVIL}", metadata="browser_result",
                      citations=[Citation(id="0", url=URL, title=f"Release notes {EVIL}")])




@pytest.fixture(scope="module")
def glm():
    with FakeGLMServer() as server:
        server.chunk_delay = 0.005  # the answer streams in, as a model's does
        yield server


@pytest.fixture(scope="module")
def live(glm, tmp_path_factory):
    policy = Policy(sandbox=dict(pool_size=1, preload=[], timeout_s=30), tools={"require_approval": ["add"]})
    agent = Agent(model=CompletionsModel(glm.url, glm.model), tools=["python", lookup, add], policy=policy,
                  runs_dir=tmp_path_factory.mktemp("runs"))
    yield from serve_app(agent, limits=Limits(max_sessions=4), token="browser-test-token")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, live):
    browser.set_window_size(1280, 900)
    browser.get(f"{live.url}/?token=browser-test-token")
    wait(browser).until(lambda d: "python" in d.find_element(By.ID, "info").text)  # the side panel is filled
    wait(browser).until(lambda d: d.execute_script("return state.session !== null"))
    return browser


def wait(driver, seconds=60):
    return WebDriverWait(driver, seconds, poll_frequency=0.1)


def ask(driver, text, files=()):
    for path in files:
        driver.find_element(By.ID, "files").send_keys(str(path))
    box = driver.find_element(By.ID, "prompt")
    box.send_keys(text)
    driver.find_element(By.ID, "send").click()


def finished(driver):
    return wait(driver).until(lambda d: d.execute_script("return !state.busy && !!document.querySelector('.answer, "
                                                          ".status')"))


def shot(driver, name):
    SHOTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(SHOTS / name))


def test_a_task_shows_its_steps_the_plot_and_the_answer(page, glm):
    glm.script(["python\n```python\nimport matplotlib.pyplot as plt\nxs = range(10)\n"
                "plt.plot(xs, [x * x for x in xs], marker='o')\nplt.title('squares')\nplt.show()\n"
                "print(sum(x * x for x in xs))\n```",
                "\nThe squares of 0–9 add up to **285**, i.e. $\\sum_{x=0}^{9} x^2 = 285$. The plot shows them.\n\n"
                "| x | x² |\n| --- | --- |\n| 3 | 9 |\n| 9 | **81** |"])
    ask(page, "Plot the squares of 0..9 and add them up")
    finished(page)
    step = page.find_element(By.CSS_SELECTOR, "details.step")
    assert "python" in step.find_element(By.TAG_NAME, "summary").text
    code = step.find_element(By.CSS_SELECTOR, "pre.code")
    assert "plt.plot" in code.text and "```" not in code.text  # GLM-4's fence is no part of the code
    assert code.find_elements(By.CSS_SELECTOR, ".tok-kw")  # highlighted
    assert step.find_element(By.CSS_SELECTOR, "pre.output").text.startswith("285")
    image = step.find_element(By.CSS_SELECTOR, "figure img")
    wait(page).until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100",
                                                image))
    answer = page.find_element(By.CSS_SELECTOR, ".answer")
    assert answer.find_element(By.TAG_NAME, "strong").text == "285"
    assert "∑" in answer.find_element(By.CSS_SELECTOR, ".math").text
    assert [cell.text for cell in answer.find_elements(By.CSS_SELECTOR, "table th, table td")] == [
        "x", "x²", "3", "9", "9", "81"]  # a Markdown table, its cells' inline Markdown rendered
    shot(page, "serve-chat.png")
    page.set_window_size(390, 844)  # a phone: the side panel folds away, the chat fills the screen
    assert page.execute_script("return window.innerWidth") < 720
    wait(page).until(lambda d: d.execute_script("return document.getElementById('panel').getBoundingClientRect()"
                                                ".right <= 0"))
    assert page.find_element(By.ID, "prompt").size["width"] > 200
    shot(page, "serve-chat-phone.png")


def test_citations_link_their_sources_and_injected_html_stays_inert(page, glm):
    glm.script(['lookup\n{"query": "GLM-4 release"}', "\nGLM-4 came out in June 2024【0†source】."])
    ask(page, f"When did GLM-4 come out? {EVIL}")
    finished(page)
    cite = page.find_element(By.CSS_SELECTOR, ".answer a.cite")
    assert cite.text == "[1]" and cite.get_attribute("href") == URL
    source = page.find_element(By.CSS_SELECTOR, ".sources a")
    assert source.get_attribute("href") == URL and "<script>" in source.text  # the title, shown as text
    output = page.find_element(By.CSS_SELECTOR, "pre.output")
    assert "<script>window.pwned = 1</script>" in output.text
    assert page.execute_script("return window.pwned") is None
    assert not page.find_elements(By.CSS_SELECTOR, "#chat script, #chat img[src='x']")
    shot(page, "serve-citations.png")


def test_files_dropped_on_the_page_are_attached(page):
    page.execute_script("""
        const data = new DataTransfer();
        data.items.add(new File(["x,y\\n1,2\\n"], "dropped.csv", {type: "text/csv"}));
        document.dispatchEvent(new DragEvent("dragenter", {dataTransfer: data, bubbles: true}));
        document.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
    """)
    assert page.find_element(By.ID, "attached").text == "dropped.csv"
    assert not page.find_element(By.ID, "drop-hint").is_displayed()
    page.execute_script("state.files = []; showAttached()")


def test_an_upload_is_used_and_the_produced_file_downloads(page, glm, tmp_path):
    data = tmp_path / "scores.csv"
    data.write_text("name,score\nada,3\nbob,4\n")
    glm.script(["python\nimport pandas as pd\ndf = pd.read_csv('/mnt/data/scores.csv')\n"
                "df.assign(double=df.score * 2).to_csv('/mnt/data/doubled.csv', index=False)\nprint(len(df))",
                "\nDone: doubled.csv has the scores doubled."])
    ask(page, "Double the scores", files=[data])
    finished(page)
    assert "scores.csv" in page.find_element(By.CSS_SELECTOR, ".msg.user .files").text
    assert page.find_element(By.CSS_SELECTOR, "pre.output").text.startswith("2")
    link = page.find_element(By.XPATH, "//a[contains(@class, 'artifact-link') and text()='doubled.csv']")
    link.click()
    target = page.downloads / "doubled.csv"
    deadline = time.monotonic() + 30
    while not target.exists():
        assert time.monotonic() < deadline, list(page.downloads.iterdir())
        time.sleep(0.1)
    wait(page).until(lambda d: target.read_text().startswith("name,score,double"))
    assert target.read_text().splitlines()[1:] == ["ada,3,6", "bob,4,8"]


def test_approval_buttons_and_the_stop_button(page, glm):
    glm.script(['add\n{"a": 2, "b": 40}', "\n2 + 40 = 42.", "python\nimport time\ntime.sleep(120)", "\nunused"])
    ask(page, "2 + 40?")
    button = wait(page).until(lambda d: d.find_element(By.CSS_SELECTOR, ".approval button.primary"))
    shot(page, "serve-approval.png")
    button.click()
    finished(page)
    assert page.find_element(By.CSS_SELECTOR, ".answer").text == "2 + 40 = 42."
    ask(page, "Sleep a while")
    wait(page).until(lambda d: d.execute_script("return document.querySelectorAll('details.step').length >= 3"))
    stop = page.find_element(By.ID, "stop")
    assert stop.is_displayed()
    stop.click()
    wait(page).until(lambda d: d.find_elements(By.XPATH, "//div[@class='status' and text()='stopped']"))
    assert page.find_element(By.ID, "send").is_displayed()


def test_new_chat_starts_a_fresh_session_and_ends_the_old_one(page, live, glm):
    glm.script(["\nHello."])
    ask(page, "hi")
    finished(page)
    old = page.execute_script("return state.session")
    page.find_element(By.ID, "new-chat").click()
    wait(page).until(lambda d: d.execute_script("return state.session !== null && state.session !== arguments[0]",
                                                old))
    assert not page.find_elements(By.CSS_SELECTOR, "#chat .msg")
    wait(page, 10).until(lambda d: old not in live.app.state.manager.sessions)
