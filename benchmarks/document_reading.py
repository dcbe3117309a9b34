"""Documents read as text: our reader (pypdf, python-docx, python-pptx, openpyxl, markdownify) next to
Microsoft's MarkItDown, on MarkItDown's own labelled test documents (``benchmarks/data/documents``).

Each file has phrases the text must contain and phrases it must not. The labels are written in
MarkItDown's Markdown, so every phrase is scored twice: ``exact``, and ``content`` with Markdown
decoration (``#``, ``*``, ``|``, link targets, image syntax) removed from both sides, which is what
a model reading the text gets. A file scores a phrase it must not contain as a miss.

MarkItDown runs in ``benchmarks/.venv-markitdown`` (installed on first use) in a child process.

    python benchmarks/document_reading.py [--reps 3] [--no-markitdown]

Last line: ``document_reading: ours_content=X markitdown_content=Y ours_exact=… markitdown_exact=…
ours_ms=… markitdown_ms=… speed_ratio=…`` (speed_ratio = MarkItDown's time / ours).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from peers import peer_python

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "documents"
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, time
from pathlib import Path
from markitdown import MarkItDown
converter = MarkItDown()
files, reps = json.loads(sys.argv[1]), int(sys.argv[2])
out = {}
for name in files:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        text = converter.convert(str(Path(sys.argv[3]) / name)).markdown
        times.append(time.perf_counter() - started)
    out[name] = {"text": text, "s": min(times)}
print(json.dumps(out))
"""


def content(text: str) -> str:
    text = re.sub(r"\]\([^)]*\)", "]", text)  # link and image targets
    text = re.sub(r"[#*_\[\]|!`>]", " ", text).replace("---", " ")
    return " ".join(text.split())


def score(text: str, vector: dict) -> tuple[int, int, int]:
    """(exact hits, content hits, phrases) over must_include and must_not_include."""
    exact = sum(p in text for p in vector["must_include"]) + sum(p not in text for p in vector["must_not_include"])
    plain = content(text)
    by_content = (sum(content(p) in plain for p in vector["must_include"])
                  + sum(content(p) not in plain for p in vector["must_not_include"]))
    return exact, by_content, len(vector["must_include"]) + len(vector["must_not_include"])


def ours(files: list[str], reps: int) -> dict:
    """Our readers in this process, like MarkItDown in its child: the parsing, compared like with like."""
    from agent.documents import read_unconfined

    out = {}
    for name in files:
        read_unconfined(DATA / name, 10**7)  # imports, as MarkItDown's are done before its timing
        times = []
        for _ in range(reps):
            started = time.perf_counter()
            text = read_unconfined(DATA / name, 10**7)
            times.append(time.perf_counter() - started)
        out[name] = {"text": text, "s": min(times)}
    return out


def confinement_ms(files: list[str]) -> float:
    """What reading them the way the agent does costs: one confined child process for all of them."""
    from agent.documents import read_texts

    started = time.perf_counter()
    read_texts([DATA / name for name in files], 10**7)
    return (time.perf_counter() - started) * 1000


def markitdown(files: list[str], reps: int) -> tuple[dict | None, str]:
    python, why = peer_python(".venv-markitdown", "markitdown[docx,pptx,xlsx,pdf]==0.1.9", "markitdown")
    if python is None:
        return None, why
    done = subprocess.run([str(python), "-c", CHILD, json.dumps(files), str(reps), str(DATA)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(done.stdout), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-markitdown", action="store_true")
    args = parser.parse_args()
    vectors = json.loads((DATA / "vectors.json").read_text())
    files = [v["file"] for v in vectors]
    results = {"ours": ours(files, args.reps)}
    if not args.no_markitdown:
        peer, why = markitdown(files, args.reps)
        if peer is None:
            print(f"markitdown: not run ({why})")
        else:
            results["markitdown"] = peer
    totals = {name: [0, 0, 0, 0.0] for name in results}
    print(f"{'file':22} " + " ".join(f"{name + ' exact/content/n':>28} {'ms':>8}" for name in results))
    for vector in vectors:
        cells = []
        for name, result in results.items():
            exact, plain, n = score(result[vector["file"]]["text"], vector)
            ms = result[vector["file"]]["s"] * 1000
            totals[name] = [totals[name][0] + exact, totals[name][1] + plain, totals[name][2] + n, totals[name][3] + ms]
            cells.append(f"{f'{exact}/{plain}/{n}':>28} {ms:8.1f}")
        print(f"{vector['file']:22} " + " ".join(cells))
    figures = {}
    for name, (exact, plain, n, ms) in totals.items():
        figures[name] = {"exact": exact / n, "content": plain / n, "ms": ms}
    peer = figures.get("markitdown")
    line = (f"document_reading: files={len(files)} ours_content={figures['ours']['content']:.3f} "
            f"markitdown_content={peer['content']:.3f} " if peer else
            f"document_reading: files={len(files)} ours_content={figures['ours']['content']:.3f} "
            "markitdown_content=n/a ")
    line += f"ours_exact={figures['ours']['exact']:.3f} "
    line += f"markitdown_exact={peer['exact']:.3f} " if peer else "markitdown_exact=n/a "
    line += f"ours_ms={figures['ours']['ms']:.1f} "
    line += (f"markitdown_ms={peer['ms']:.1f} speed_ratio={peer['ms'] / figures['ours']['ms']:.2f}" if peer
             else "markitdown_ms=n/a speed_ratio=n/a")
    print(f"as the agent reads them (one confined child process, its start and imports included): "
          f"{confinement_ms(files):.0f} ms for all {len(files)} files")
    print(line)


if __name__ == "__main__":
    main()
