"""The page reader on public labelled data: ours next to trafilatura, readability-lxml and bs4's get_text.

The data is the ScrapingHub article-extraction benchmark (181 news and blog pages with the article body
as ground truth; ``../shared/data/article-extraction``, or ``--data``). Scoring is that benchmark's:
the multiset of 4-gram shingles of ``\\w+`` tokens, per page tp / fp / fn normalised to sum to one,
precision and recall averaged over pages, F1 from the two means.

Every reader gets the same text (the page's bytes decoded the way a browser does, by our decoder) and
the page's URL; what is timed is the reading alone, as process CPU time, one page at a time with the
readers interleaved so that a busy machine slows them alike; ms/page is the median over pages. Our
reader is scored on what the model reads: the Markdown text with each link as its label (the id and
host that the browser adds when it shows a link are not page text). Its title is shown to the model as
the page's header, apart from the text; the row "title line included" scores it as part of the text.

Comparators are read in this process when they can be imported (``pip install trafilatura
readability-lxml``); each that cannot is named and skipped. trafilatura runs as its library default, as
benchmark suites run it (``include_comments=False``), with ``favor_precision``, and with Markdown, links
and tables (links then scored by their labels, like ours); ``trafilatura_f1`` in the last line is the best
of those. The pages are also split into two halves by their id (first byte even or odd) so a figure
tuned on one can be checked on the other.

    python benchmarks/reader_quality.py [--data DIR] [--reps 1]

Last line: ``reader_quality: f1=X trafilatura_f1=Y ratio=X/Y ms_per_page=Z`` (ours; ratio = X / Y).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "article-extraction"
TOKEN = re.compile(r"\w+")
MARKDOWN_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")

Reader = Callable[[str, str], str]


# ---------------------------------------------------------------------------------------------------
# The metric


def shingles(text: str, n: int = 4) -> Counter:
    tokens = TOKEN.findall(text)
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def page_score(truth: str, prediction: str) -> tuple[float, float, float]:
    """tp, fp, fn of one page, normalised to sum to one."""
    expected, found = shingles(truth), shingles(prediction)
    tp = fp = fn = 0
    for key in expected.keys() | found.keys():
        want, got = expected.get(key, 0), found.get(key, 0)
        tp += min(want, got)
        fp += max(0, got - want)
        fn += max(0, want - got)
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def precision_recall_f1(pairs: list[tuple[str, str]]) -> tuple[float, float, float]:
    precisions, recalls = [], []
    for truth, prediction in pairs:
        tp, fp, fn = page_score(truth, prediction)
        if tp + fp > 0:
            precisions.append(tp / (tp + fp))
        if tp + fn > 0:
            recalls.append(tp / (tp + fn))
    precision = sum(precisions) / len(precisions) if precisions else 0.0
    recall = sum(recalls) / len(recalls) if recalls else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


# ---------------------------------------------------------------------------------------------------
# Readers


def ours() -> dict[str, Reader]:
    from tools.browser.reader import LINK, html_to_document

    def text_only(html: str, url: str) -> str:
        doc = html_to_document(html, url)
        return LINK.sub(lambda m: m.group(2), doc.text)

    def with_title(html: str, url: str) -> str:
        doc = html_to_document(html, url)
        return f"# {doc.title}\n\n" + LINK.sub(lambda m: m.group(2), doc.text)

    return {"ours": text_only, "ours, title line included": with_title}


def comparators() -> tuple[dict[str, Reader], list[str]]:
    readers: dict[str, Reader] = {}
    missing = []
    try:
        import trafilatura

        version = getattr(trafilatura, "__version__", "")
        readers[f"trafilatura {version} default"] = lambda html, url: trafilatura.extract(html, url=url) or ""
        readers[f"trafilatura {version} no comments"] = (
            lambda html, url: trafilatura.extract(html, url=url, include_comments=False) or "")
        readers[f"trafilatura {version} favor_precision"] = (
            lambda html, url: trafilatura.extract(html, url=url, include_comments=False, favor_precision=True) or "")
        readers[f"trafilatura {version} markdown+links+tables"] = lambda html, url: MARKDOWN_LINK.sub(
            r"\1", trafilatura.extract(html, url=url, output_format="markdown", include_links=True,
                                       include_tables=True, include_comments=False) or "")
    except ImportError:
        missing.append("trafilatura")
    try:
        import lxml.html
        from readability import Document as Readability

        def readability(html: str, url: str) -> str:
            summary = Readability(html, url=url).summary(html_partial=True)
            return lxml.html.fromstring(summary).text_content() if summary.strip() else ""

        readers["readability-lxml"] = readability
    except ImportError:
        missing.append("readability-lxml")
    from bs4 import BeautifulSoup

    readers["bs4 get_text"] = lambda html, url: BeautifulSoup(html, "html.parser").get_text("\n")
    return readers, missing


# ---------------------------------------------------------------------------------------------------


def load(data: Path) -> list[tuple[str, str, str, str]]:
    """(id, url, decoded page, article body) for each page."""
    from tools.browser.reader import decode

    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    pages = []
    for page_id, item in sorted(truth.items()):
        raw = gzip.decompress((data / "html" / f"{page_id}.html.gz").read_bytes())
        pages.append((page_id, item["url"], decode(raw, None, html=True), item["articleBody"]))
    return pages


def run(readers: dict[str, Reader], pages: list[tuple[str, str, str, str]], reps: int) -> tuple[dict, dict]:
    outputs: dict[str, list[str]] = {name: [] for name in readers}
    times: dict[str, list[float]] = {name: [] for name in readers}
    for name, reader in readers.items():  # imports and first-call set-up, outside the timing
        reader(pages[0][2], pages[0][1])
    names = list(readers)
    for number, (_, url, html, _) in enumerate(pages):
        for name in names[number % len(names):] + names[:number % len(names)]:  # rotate who goes first
            best = float("inf")
            for _ in range(reps):
                started = time.process_time()
                text = readers[name](html, url)
                best = min(best, time.process_time() - started)
            outputs[name].append(text)
            times[name].append(best * 1000)
    return outputs, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the benchmark's folder (ground-truth.json, html/)")
    parser.add_argument("--reps", type=int, default=1, help="time each page this many times, keep the fastest")
    args = parser.parse_args()
    if not (args.data / "ground-truth.json").exists():
        sys.exit(f"reader_quality: no benchmark data at {args.data} (pass --data)")
    pages = load(args.data)
    readers = ours()
    others, missing = comparators()
    readers.update(others)
    if missing:
        print(f"not importable, so not compared: {', '.join(missing)} (pip install {' '.join(missing)})")
    outputs, times = run(readers, pages, args.reps)
    halves = [[i for i, page in enumerate(pages) if int(page[0][:2], 16) % 2 == parity] for parity in (0, 1)]
    print(f"ScrapingHub article-extraction benchmark, {len(pages)} pages "
          f"(halves by id: A {len(halves[0])}, B {len(halves[1])} pages)\n")
    print(f"{'reader':42} {'precision':>9} {'recall':>7} {'F1':>6}  {'F1 A':>6} {'F1 B':>6}  {'CPU ms/page':>11}")
    f1s = {}
    for name in readers:
        texts = outputs[name]
        precision, recall, f1 = precision_recall_f1([(page[3], text) for page, text in zip(pages, texts)])
        by_half = [precision_recall_f1([(pages[i][3], texts[i]) for i in half])[2] for half in halves]
        f1s[name] = f1
        print(f"{name:42} {precision:9.3f} {recall:7.3f} {f1:6.3f}  {by_half[0]:6.3f} {by_half[1]:6.3f}  "
              f"{statistics.median(times[name]):11.1f}")
    default = next((name for name in readers if name.endswith(" default")), None)
    if default is not None:
        ratio = statistics.median(times["ours"]) / statistics.median(times[default])
        print(f"\nCPU per page, ours / {default}: {ratio:.2f} (median of per-page times, same run, interleaved)")
    trafilatura = [f1 for name, f1 in f1s.items() if name.startswith("trafilatura")]
    best = max(trafilatura) if trafilatura else None
    line = f"reader_quality: pages={len(pages)} f1={f1s['ours']:.3f} "
    line += f"trafilatura_f1={best:.3f} ratio={f1s['ours'] / best:.3f} " if best else "trafilatura_f1=n/a ratio=n/a "
    print(line + f"ms_per_page={statistics.median(times['ours']):.1f}")


if __name__ == "__main__":
    main()
