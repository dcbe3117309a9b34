"""Files in: checks and refusals before anything is copied, safe names, the note the model reads,
documents read as text; files out: what a cell writes in /mnt/data is kept for the user."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent import Agent
from agent.documents import FILE_TEMPLATE, describe_files, read_document
from agent.errors import FileInputError
from agent.files import collect_files, sanitise_name
from agent.models import ScriptedModel
from agent.policy import FileSettings, Policy
from sandbox.workdir import Incoming, copy_in


def settings(**overrides) -> FileSettings:
    return FileSettings(**overrides)


@pytest.fixture
def data(tmp_path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    return path


# ----------------------------------------------------------------------------------------------
# collecting: names, folders, refusals, limits


def test_a_file_and_a_folder_keep_their_names(tmp_path, data):
    folder = tmp_path / "reports"
    (folder / "2024").mkdir(parents=True)
    (folder / "2024" / "q1.txt").write_text("q1")
    (folder / "notes.md").write_text("# notes")
    files = collect_files([data, folder], settings())
    assert [f.name for f in files] == ["data.csv", "reports/notes.md", "reports/2024/q1.txt"]
    assert files[0].size == 12 and files[0].media_type == "text/csv"
    assert all(f.source.is_absolute() for f in files)


def test_same_names_are_numbered_where_they_land(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "data.csv").write_text(sub)
    files = collect_files([tmp_path / "x" / "data.csv", tmp_path / "y" / "data.csv"], settings())
    (tmp_path / "dest").mkdir()
    assert copy_in(tmp_path / "dest", incoming(files), None) == ["data.csv", "data (2).csv"]
    assert (tmp_path / "dest" / "data (2).csv").read_text() == "y"


def incoming(files):
    return [Incoming(f.source, f.root, f.name, f.size) for f in files]


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(FileInputError, match=r"nope\.csv does not exist"):
        collect_files([tmp_path / "nope.csv"], settings())


def test_symlinks_are_refused_at_the_top_and_inside_folders(tmp_path, data):
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    with pytest.raises(FileInputError, match="symbolic link.*pass the file it points to"):
        collect_files([link], settings())
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "ok.txt").write_text("fine")
    (folder / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(FileInputError, match="passwd is a symbolic link"):
        collect_files([folder], settings())
    (folder / "passwd").unlink()
    (folder / "etc").symlink_to("/etc", target_is_directory=True)  # a folder outside, through a link
    with pytest.raises(FileInputError, match="etc is a symbolic link"):
        collect_files([folder], settings())


def test_devices_and_pipes_are_refused(tmp_path):
    with pytest.raises(FileInputError, match="not a plain file"):
        collect_files(["/dev/null"], settings())
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(FileInputError, match="not a plain file"):
        collect_files([tmp_path], settings())


def test_an_unreadable_file_is_named(tmp_path, data, monkeypatch):
    data.chmod(0)
    if os.geteuid() == 0:  # root reads every file: have the access check answer as it would for a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == data else real_access(path, mode))
    with pytest.raises(FileInputError, match="data.csv cannot be read"):
        collect_files([data], settings())


def test_limits_from_the_policy(tmp_path, data):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 300_000)
    with pytest.raises(FileInputError, match=r"big\.bin is 293\.0 KB, over the 0\.25 MB limit.*max_file_mb"):
        collect_files([big], settings(max_file_mb=0.25))
    with pytest.raises(FileInputError, match=r"over the 0\.2 MB limit.*max_total_mb"):
        collect_files([big, data], settings(max_total_mb=0.2))
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(str(i))
    with pytest.raises(FileInputError, match="More than 3 files.*max_files"):
        collect_files([folder], settings(max_files=3))


def test_a_refusal_comes_before_anything_is_copied(tmp_path, data):
    workdir = tmp_path / "work"
    agent = Agent(model=ScriptedModel(["\nunused"]), tools=[], workdir=workdir)
    with pytest.raises(FileInputError, match="does not exist"):
        agent.run("go", files=[data, tmp_path / "missing.csv"])
    agent.close()
    assert not (workdir / "data.csv").exists()


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_sanitised_names_are_single_safe_components(name):
    safe = sanitise_name(name)
    assert safe and safe not in (".", "..") and not safe.startswith((".", "-"))
    assert not any(ch in safe for ch in '/\\\0:*?"<>|') and all(ch.isprintable() or ch == " " for ch in safe)
    assert len(safe.encode()) <= 255 and sanitise_name(safe) == safe


def test_sanitising_keeps_ordinary_and_non_latin_names():
    assert sanitise_name("Q3 report (final).xlsx") == "Q3 report (final).xlsx"
    assert sanitise_name("销售数据.csv") == "销售数据.csv"
    assert sanitise_name("../../etc/passwd") == "_.._etc_passwd"
    assert sanitise_name("a\x1b[2Jb.txt") == "a_[2Jb.txt"


def test_copies_land_under_their_names(tmp_path, data):
    files = collect_files([data], settings())
    (tmp_path / "dest").mkdir()
    copy_in(tmp_path / "dest", incoming(files), None)
    assert (tmp_path / "dest" / "data.csv").read_text() == data.read_text()


# ----------------------------------------------------------------------------------------------
# what the model is told; document mode


def test_with_a_tool_the_model_gets_a_list_of_the_files(data):
    note = describe_files(collect_files([data], settings()), ["/mnt/data/data.csv"], 1000)
    assert note == "[Files]\n/mnt/data/data.csv (text/csv, 12 B)\n\n\n1 file uploaded."


def make_documents(folder: Path) -> dict[str, str]:
    """Real documents, written by the libraries people write them with; returns a phrase in each."""
    import docx
    import matplotlib
    from openpyxl import Workbook
    from pptx import Presentation

    folder.mkdir()
    document = docx.Document()
    document.add_heading("Quarterly review", level=1)
    document.add_paragraph("Revenue grew by eleven percent.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(1, 0).text, table.cell(1, 1).text = "region", "north", "42"
    document.save(folder / "review.docx")
    deck = Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Roadmap"
    slide.placeholders[1].text = "Ship the sandbox in May"
    deck.save(folder / "roadmap.pptx")
    book = Workbook()
    book.active.append(["item", "price"])
    book.active.append(["tea", 3.5])
    book.save(folder / "prices.xlsx")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"pdf.fonttype": 42}):
        figure = plt.figure()
        figure.text(0.1, 0.5, "The treaty was signed in 1648")
        figure.savefig(folder / "history.pdf")
        plt.close(figure)
    (folder / "page.html").write_text("<html><script>evil()</script><body><h1>Title</h1><p>Body text</p></body></html>")
    (folder / "config.json").write_text('{"alpha": [1, 2]}')
    (folder / "table.csv").write_text("city;people\nParis;2100000\n")
    return {"review.docx": "# Quarterly review", "roadmap.pptx": "Ship the sandbox in May",
            "prices.xlsx": "| tea | 3.5 |", "history.pdf": "The treaty was signed in 1648",
            "page.html": "# Title", "config.json": '"alpha": [', "table.csv": "| Paris | 2100000 |"}


def test_documents_are_read_as_text(tmp_path):
    expected = make_documents(tmp_path / "docs")
    for name, phrase in expected.items():
        text = read_document(tmp_path / "docs" / name, 10_000)
        assert phrase in text, (name, text)
    assert "evil" not in read_document(tmp_path / "docs" / "page.html", 10_000)
    assert "| region |" in read_document(tmp_path / "docs" / "review.docx", 10_000)


def test_long_documents_are_cut_with_a_note(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("x" * 5000)
    text = read_document(path, 1000)
    assert text.startswith("x" * 1000) and "the rest of this document was cut" in text and "max_document_chars" in text


def test_a_damaged_document_says_so(tmp_path):
    path = tmp_path / "broken.docx"
    path.write_bytes(b"not a zip")
    assert "could not be read as a document" in read_document(path, 1000)
    (tmp_path / "blob.bin").write_bytes(b"\0\1\2" * 100)
    assert "binary file" in read_document(tmp_path / "blob.bin", 1000)


def test_without_the_python_tool_documents_go_into_the_users_turn(tmp_path):
    make_documents(tmp_path / "docs")
    seen = []
    model = ScriptedModel(lambda messages, *_: seen.append(messages[-1].content) or "\nRead them.")
    policy = Policy(files={"max_document_chars": 1000})
    agent = Agent(model=model, tools=[], policy=policy)
    result = agent.run("Summarise", files=[tmp_path / "docs" / "review.docx", tmp_path / "docs" / "history.pdf"])
    agent.close()
    assert result.status == "answered"
    turn = seen[0]
    assert turn.startswith(FILE_TEMPLATE.format(name="review.docx", content="# Quarterly review").split("\n#")[0])
    assert "[File Name]\nhistory.pdf\n[File Content]\n" in turn and "1648" in turn
    assert turn.endswith("\n\n\n2 files uploaded.\nSummarise")


# ----------------------------------------------------------------------------------------------
# files out: the python tool keeps what cells write


def python_policy(**files) -> Policy:
    return Policy(sandbox={"pool_size": 1, "preload": [], "timeout_s": 30}, files=files)


def run_cells(agent: Agent, cells: list[str], files=(), task="go"):
    outputs = [f"python\n{cell}" for cell in cells] + ["\nDone."]
    agent.model = ScriptedModel(outputs)
    return agent.run(task, files=files)


@pytest.mark.slow
def test_the_issue_task_reads_data_csv_and_keeps_out_csv(tmp_path, data):
    agent = Agent(tools=["python"], policy=python_policy(), runs_dir=tmp_path / "runs")
    result = run_cells(agent, ["import pandas as pd\ndf = pd.read_csv('/mnt/data/data.csv')\n"
                               "df['sum'] = df.a + df.b\ndf.to_csv('/mnt/data/out.csv', index=False)"], files=[data])
    agent.close()
    assert result.status == "answered", result.error
    files = [a for a in result.artifacts if a.kind == "file"]
    assert [a.path.name for a in files] == ["out.csv"]  # the input is not an output
    assert files[0].path.is_absolute() and files[0].path.parent == tmp_path / "runs" / result.run_id.rsplit("-", 1)[0]
    assert files[0].path.read_text() == "a,b,sum\n1,2,3\n3,4,7\n"


@pytest.mark.slow
def test_changed_files_folders_and_limits(tmp_path, data):
    agent = Agent(tools=["python"], policy=python_policy(max_output_mb=0.01), runs_dir=tmp_path / "runs")
    result = run_cells(agent, [
        "open('/mnt/data/data.csv', 'a').write('5,6\\n')\nimport os\nos.makedirs('/mnt/data/sub', exist_ok=True)\n"
        "open('/mnt/data/sub/x.txt', 'w').write('x')",
        "open('/mnt/data/big.bin', 'wb').write(b'0' * 20000)",
        "import os\nos.symlink('/etc/hostname', '/mnt/data/link')\nos.mkfifo('/mnt/data/pipe')",
    ], files=[data])
    agent.close()
    kept = {a.path.name: a for a in result.artifacts}
    assert set(kept) == {"data.csv", "x.txt"}  # changed input, new file in a folder; not big, link, pipe
    assert kept["data.csv"].path.read_text().endswith("5,6\n") and kept["x.txt"].path.parent.name == "sub"
    big_observation = result.steps[1].observations[0].content
    assert "big.bin" in big_observation and "was not kept" in big_observation and "max_output_mb" in big_observation


@pytest.mark.slow
def test_a_workdir_is_mnt_data_itself(tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "input.txt").write_text("21")
    owner = workdir.stat().st_uid
    agent = Agent(tools=["python"], policy=python_policy(), workdir=workdir, runs_dir=tmp_path / "runs")
    result = run_cells(agent, ["n = int(open('/mnt/data/input.txt').read())\n"
                               "open('/mnt/data/answer.txt', 'w').write(str(2 * n))"])
    agent.close()
    assert (workdir / "answer.txt").read_text() == "42"
    assert [a.path for a in result.artifacts] == [workdir / "answer.txt"]
    assert (workdir / "answer.txt").stat().st_uid == owner  # given back to the folder's owner
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("answer.txt"))


@pytest.mark.slow
def test_a_chat_session_uploads_between_turns(tmp_path, data):
    agent = Agent(tools=["python"], policy=python_policy(), runs_dir=tmp_path / "runs")
    with agent.chat() as session:
        assert session.upload(data)[0].endswith("/data.csv")
        seen = []

        def model(messages, *_):
            seen.append(messages[-1].content)
            return "python\nprint(open('/mnt/data/data.csv').read().count('\\n'))" if len(seen) == 1 else "\n3 lines."

        agent.model = ScriptedModel(model)
        result = session.run("How many lines?")
    agent.close()
    assert "data.csv (text/csv, 12 B)" in seen[0] and seen[0].endswith("1 file uploaded.\nHow many lines?")
    assert result.steps[0].observations[0].content == "3"


def test_real_documents_from_markitdowns_labelled_set():
    """MarkItDown's own test documents and labels (benchmarks/data/documents): input nobody here wrote."""
    import json
    import sys

    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        from document_reading import score
    finally:
        sys.path.remove(str(benchmarks))
    hits = phrases = 0
    for vector in json.loads((benchmarks / "data" / "documents" / "vectors.json").read_text()):
        _, by_content, n = score(read_document(benchmarks / "data" / "documents" / vector["file"], 10**9), vector)
        assert by_content >= n - 1, vector["file"]  # at most one phrase missed in any document
        hits, phrases = hits + by_content, phrases + n
    assert hits / phrases >= 0.95


@pytest.mark.slow
def test_a_run_never_raises_on_what_the_code_leaves_in_mnt_data(tmp_path):
    """Issue 10.7: a 1200-level tree once made close() raise RecursionError out of agent.run()."""
    from sandbox.kernel import base_dir

    before = set(base_dir().iterdir())
    agent = Agent(tools=["python"], policy=python_policy(), runs_dir=tmp_path / "runs")
    result = run_cells(agent, ["import os\np = '/mnt/data' if os.path.isdir('/mnt/data') else os.getcwd()\n"
                               "for _ in range(1200):\n    p += '/d'\n    os.mkdir(p)\n"
                               "os.makedirs('locked/in')\nos.chmod('locked/in', 0)\nos.chmod('locked', 0)"])
    agent.close()
    assert result.status == "answered", result.error
    assert set(base_dir().iterdir()) <= before  # the session's kernel folder (and /mnt/data) is gone


@pytest.mark.slow
def test_figures_count_against_the_runs_output_limits(tmp_path):
    """Issue 10.6: images are kept per run within [files] max_files and max_output_mb too."""
    agent = Agent(tools=["python"], policy=python_policy(max_files=3), runs_dir=tmp_path / "runs")
    result = run_cells(agent, ["import matplotlib.pyplot as plt\nfor i in range(5):\n"
                               "    plt.figure(figsize=(1, 1)); plt.plot([i]); plt.show()"])
    agent.close()
    assert [a.kind for a in result.artifacts] == ["image"] * 3
    assert result.steps[0].observations[0].content.count("was not kept for the user") == 2


# ----------------------------------------------------------------------------------------------
# What the code left in /mnt/data, and a user's folder, against the files handed in


@pytest.mark.slow
def test_links_pipes_and_folders_planted_at_the_uploads_names_are_never_followed(tmp_path, data):
    victim = tmp_path / "victim"
    victim.mkdir(mode=0o700)
    (victim / "secret.txt").write_text("host secret")
    (victim / "secret.txt").chmod(0o600)
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "a.txt").write_text("a")
    agent = Agent(tools=["python"], policy=python_policy(), runs_dir=tmp_path / "runs")
    with agent.chat() as session:
        agent.model = ScriptedModel([
            "python\nimport os\n"
            f"os.symlink({str(victim / 'secret.txt')!r}, '/mnt/data/data.csv')\n"
            f"os.symlink({str(victim)!r}, '/mnt/data/rep')\nos.mkfifo('/mnt/data/notes.txt')",
            "\nplanted"])
        session.run("plant")
        (tmp_path / "notes.txt").write_text("mine")
        started = time.monotonic()
        shown = session.upload(data, tmp_path / "rep", tmp_path / "notes.txt")
        assert time.monotonic() - started < 10  # the pipe was not opened
    agent.close()
    assert [Path(p).name for p in shown] == ["data (2).csv", "a.txt", "notes (2).txt"]
    assert "rep (2)" in shown[1]
    assert (victim / "secret.txt").read_text() == "host secret"
    assert (victim / "secret.txt").stat().st_uid == os.getuid() and victim.stat().st_uid == os.getuid()
    assert sorted(p.name for p in victim.iterdir()) == ["secret.txt"]


def test_clashing_sanitised_names_and_long_names_all_land(tmp_path):
    folder = tmp_path / "rep"
    (folder / "a_b").mkdir(parents=True)
    (folder / "a_b" / "x").write_text("x")
    (folder / "a:b").write_text("file")
    long_a, long_b = "a" * 250 + ":.txt", "a" * 250 + "_.txt"
    (folder / long_a).write_text("1")
    (folder / long_b).write_text("2")
    files = collect_files([folder], settings())
    (tmp_path / "dest").mkdir()
    names = copy_in(tmp_path / "dest", incoming(files), None)
    assert len(names) == 4 and len(set(names)) == 4
    assert all(len(part.encode()) <= 255 for name in names for part in name.split("/"))


def test_a_folder_swapped_for_a_link_after_the_check_is_not_followed(tmp_path):
    folder = tmp_path / "rep"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "passwd").write_text("harmless")
    files = collect_files([folder], settings())
    (folder / "sub" / "passwd").unlink()
    (folder / "sub").rmdir()
    (folder / "sub").symlink_to("/etc", target_is_directory=True)  # the race, made deterministic
    (tmp_path / "dest").mkdir()
    with pytest.raises(OSError):
        copy_in(tmp_path / "dest", incoming(files), None)
    copied = [p for p in (tmp_path / "dest").rglob("*") if p.is_file()]
    assert all("root:" not in p.read_text() for p in copied)


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="lending a folder to a sandbox uid happens as root")
def test_a_workdir_keeps_its_owners_and_hard_links_stay_out_of_reach(tmp_path):
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "mine.txt").write_text("mine")
    os.chown(workdir / "mine.txt", 1234, 1234)
    (workdir / "private.txt").write_text("root only")
    (workdir / "private.txt").chmod(0o600)
    outside = tmp_path / "outside.conf"
    outside.write_text("host config\n")
    os.link(outside, workdir / "linked.conf")
    (workdir / "results.csv").write_text("the user's")
    agent = Agent(tools=["python"], policy=python_policy(), workdir=workdir, runs_dir=tmp_path / "runs")
    (tmp_path / "upload").mkdir()
    (tmp_path / "upload" / "results.csv").write_text("handed in")
    result = run_cells(agent, ["try:\n    open('/mnt/data/linked.conf', 'a').write('pwned\\n')\n"
                               "except OSError as e:\n    print(type(e).__name__)"],
                       files=[tmp_path / "upload" / "results.csv"])
    agent.close()
    assert result.status == "answered", result.error
    assert outside.read_text() == "host config\n" and outside.stat().st_uid == 0
    assert (workdir / "mine.txt").stat().st_uid == 1234 and (workdir / "private.txt").stat().st_uid == 0
    assert (workdir / "results.csv").read_text() == "the user's"  # not overwritten by the upload
    assert (workdir / "results (2).csv").read_text() == "handed in"


def test_a_damaged_document_in_a_batch_leaves_the_others_readable(tmp_path):
    from agent.documents import read_texts

    (tmp_path / "good.md").write_text("# Good")
    (tmp_path / "broken.docx").write_bytes(b"not a zip")
    good, broken = read_texts([tmp_path / "good.md", tmp_path / "broken.docx"], 1000)
    assert good == "# Good" and broken.startswith("(this file could not be read as a document: ")
