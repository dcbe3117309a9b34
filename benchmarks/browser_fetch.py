"""``simple_browser`` performance: concurrent ``mclick`` vs one page at a time, and the page reader.

Part 1 (always): a loopback site serves 8 pages, each answering after 200 ms. Ours is one
``mclick([0..7])`` (pages fetched concurrently); the baseline opens the same 8 results one by one
(``mclick([i])`` eight times). Each side runs in a fresh session (no cache), ``--reps`` times,
interleaved; the medians are compared. Target: ratio >= 4. The same is run again with no delay: what
concurrency gains when the pages answer at once (the ratio then measures our own per-page overhead,
not waiting on the network).

Part 2 (``--readers``): the HTML reader, ours (lxml, tools/browser/extract.py) vs trafilatura
(if importable) vs markdownify of the whole page, on five realistic pages written here with known
content and known boilerplate (news, docs, forum, blog, wiki), plus timing on real HTML pages found
under /usr/share/doc. Scores: content kept (share of the article's key sentences in the output),
boilerplate leaked (share of menu/footer/cookie/comment sentences in it), tables kept as tables,
the article's title kept (as a heading, or for ours as the document's title, which the browser shows as
the page's header), the inline link kept, milliseconds per page. For quality on public labelled data
(181 real pages) see ``benchmarks/reader_quality.py``.

    python benchmarks/browser_fetch.py [--reps 5] [--readers]

Last line: ``browser_fetch: pages=8 delay_ms=200 concurrent_s=... sequential_s=... ratio=... no_delay_ratio=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

PAGES = 8
DELAY_S = 0.2


# ---------------------------------------------------------------------------------------------------
# Part 1: mclick


async def timed_mclick(site, policy, batches: list[list[int]]) -> float:
    from agent.tool import ToolContext
    from tools.browser import BrowserTool

    tool = BrowserTool()
    with tempfile.TemporaryDirectory() as tmp:
        context = ToolContext(run_id="bench", artifacts_dir=Path(tmp), policy=policy)
        await tool.forward("search", query="pages", context=context)  # ids 0..7, not timed
        started = time.perf_counter()
        for ids in batches:
            outputs = await tool.forward("mclick", ids=ids, context=context)
            assert all(not o.is_error for o in outputs), [o.text for o in outputs if o.is_error]
        elapsed = time.perf_counter() - started
        await context.resources.aclose()
    return elapsed


def mclick_medians(reps: int, delay_s: float) -> tuple[float, float]:
    """Median seconds of one concurrent mclick and of the pages opened one by one, interleaved."""
    from agent.policy import Policy
    from tools.browser.settings import BrowserSettings
    from tools.browser.testing import LocalSite, Route

    with LocalSite() as site:
        for i in range(PAGES):
            body = f"<html><title>Page {i}</title><body><article><h1>Page {i}</h1><p>{'Text of the page. ' * 200}</p></article></body></html>"
            site.add(f"/page{i}", body, delay=delay_s)
        site.add("/search", handler=lambda request: Route.json(
            {"results": [{"url": site.url(f"/page{i}"), "title": f"Page {i}"} for i in range(PAGES)]}))
        policy = Policy(browser=BrowserSettings(allow_private_network=True, respect_robots=False,
                                                search_backend="searxng", searxng_url=site.origin))
        ids = list(range(PAGES))
        concurrent, sequential = [], []
        for _ in range(reps):
            concurrent.append(asyncio.run(timed_mclick(site, policy, [ids])))
            sequential.append(asyncio.run(timed_mclick(site, policy, [[i] for i in ids])))
    return statistics.median(concurrent), statistics.median(sequential)


def mclick_part(reps: int) -> None:
    c, s = mclick_medians(reps, DELAY_S)
    c0, s0 = mclick_medians(reps, 0.0)
    for delay, concurrent, sequential in ((DELAY_S, c, s), (0.0, c0, s0)):
        print(f"mclick of {PAGES} pages, each delayed {delay * 1000:.0f} ms, median of {reps}:")
        print(f"  ours (one mclick, concurrent):   {concurrent:.3f} s")
        print(f"  baseline (one page at a time):   {sequential:.3f} s")
    print(f"browser_fetch: pages={PAGES} delay_ms={DELAY_S * 1000:.0f} concurrent_s={c:.3f} sequential_s={s:.3f} "
          f"ratio={s / c:.2f} no_delay_ratio={s0 / c0:.2f} (no delay: {c0:.3f} s vs {s0:.3f} s)")


# ---------------------------------------------------------------------------------------------------
# Part 2: readers

NAV = "".join(f'<li><a href="/section/{i}">Section {name}</a></li>' for i, name in
              enumerate(["World", "Business", "Technology", "Science", "Health", "Sport", "Culture", "Opinion"]))
FOOTER = ('<footer><div class="footer-links"><a href="/about">About us</a> <a href="/careers">Careers at the company</a> '
          '<a href="/privacy">Privacy policy</a> <a href="/terms">Terms of service</a></div>'
          "<p>Copyright 2024 Example Media Group. All rights reserved.</p></footer>")
COOKIE = ('<div id="cookie-banner" class="consent-popup"><p>We use cookies to personalise content and ads.</p>'
          "<button>Accept all cookies</button></div>")
SCRIPTS = ('<script>window.dataLayer=[];function track(){return "analytics tracking code"}</script>'
           '<script type="application/ld+json">{"@type": "NewsArticle", "headline": "json-ld headline"}</script>'
           "<style>.article{font-family:serif}</style>")
BOILERPLATE = ["Section Business", "Careers at the company", "All rights reserved", "We use cookies",
               "Accept all cookies", "analytics tracking code", "json-ld headline", "font-family"]

READER_PAGES = [
    ("news", f"""<!doctype html><html><head><title>Rates held steady | Example News</title>{SCRIPTS}</head><body>
{COOKIE}<header class="masthead"><a href="/">Example News</a><nav><ul>{NAV}</ul></nav></header>
<div class="layout"><main><article>
<h1>Central bank holds rates steady for a third meeting</h1>
<p class="byline">By A. Reporter, 3 May 2024</p>
<p>The central bank kept its policy rate at 4.5 percent on Thursday, citing inflation that remains above target.</p>
<p>Officials said they would watch <a href="https://stats.example.gov/cpi">the consumer price figures</a> closely before any cut.</p>
<div class="newsletter-signup"><p>Sign up for our morning briefing newsletter.</p></div>
<p>Markets had expected the decision, and bond yields barely moved after the announcement.</p>
<table><tr><th>Meeting</th><th>Rate</th></tr><tr><td>March</td><td>4.5%</td></tr><tr><td>May</td><td>4.5%</td></tr></table>
<div class="share-tools"><a href="https://twitter.example/share">Share on X</a> <a href="https://fb.example/share">Share on Facebook</a></div>
</article>
<section class="related-stories"><h2>Related stories</h2><ul><li><a href="/a">Housing market cools in spring</a></li>
<li><a href="/b">What a rate cut would mean for savers</a></li><li><a href="/c">Inflation explained in five charts</a></li></ul></section>
<div id="comments"><h3>Comments</h3><p>Reader42: This is a disgrace, rates should be lower.</p></div>
</main><aside class="sidebar"><h3>Most read</h3><ol><li><a href="/m1">Celebrity chef opens new restaurant</a></li>
<li><a href="/m2">Ten tips for a better garden</a></li></ol></aside></div>{FOOTER}</body></html>""",
     "Central bank holds rates steady for a third meeting",
     ["Central bank holds rates steady for a third meeting", "kept its policy rate at 4.5 percent",
      "the consumer price figures", "bond yields barely moved"],
     BOILERPLATE + ["morning briefing newsletter", "Share on Facebook", "Housing market cools", "Reader42",
                    "Celebrity chef"]),
    ("docs", f"""<!doctype html><html><head><title>Configuring timeouts - httpclient docs</title>{SCRIPTS}</head><body>
<div class="topbar"><nav><ul>{NAV}</ul></nav><form class="search"><input placeholder="Search docs"></form></div>
<div class="wrapper"><div class="sidebar-nav"><ul><li><a href="/docs/intro">Introduction</a></li><li><a href="/docs/install">Installation guide</a></li>
<li><a href="/docs/timeouts">Timeouts</a></li><li><a href="/docs/proxies">Proxies and tunnels</a></li></ul></div>
<div class="content" role="main"><h1>Configuring timeouts</h1>
<p>Every request has four timeouts: connect, read, write and pool. The default for each is five seconds.</p>
<pre><code>client = Client(timeout=Timeout(10.0, connect=2.0))</code></pre>
<p>Set a timeout to <code>None</code> to wait forever, which is rarely what you want in production code.</p>
<table><thead><tr><th>Timeout</th><th>Raised exception</th></tr></thead><tbody>
<tr><td>connect</td><td>ConnectTimeout</td></tr><tr><td>read</td><td>ReadTimeout</td></tr></tbody></table>
<p>See <a href="https://docs.example.org/advanced/pools">connection pools</a> for the pool timeout.</p>
<div class="pagination"><a href="/docs/install">Previous: Installation guide</a> <a href="/docs/proxies">Next: Proxies and tunnels</a></div>
</div></div>{FOOTER}</body></html>""",
     "Configuring timeouts",
     ["Every request has four timeouts", "client = Client(timeout=Timeout(10.0, connect=2.0))",
      "which is rarely what you want in production", "connection pools"],
     BOILERPLATE + ["Search docs", "Previous: Installation guide", "Proxies and tunnels"]),
    ("forum", f"""<!doctype html><html><head><title>Why is my loop slow? - Q&A</title>{SCRIPTS}</head><body>
{COOKIE}<div id="header"><a href="/">QA site</a><nav><ul>{NAV}</ul></nav></div>
<div id="content"><div class="question"><h1>Why is my Python loop so slow?</h1>
<p>I sum ten million integers in a for loop and it takes two seconds. Is there a faster way?</p></div>
<div class="answer accepted"><p>Use the built-in <code>sum</code> over a range, or NumPy for arrays; both run the loop in C.</p>
<pre><code>total = sum(range(10_000_000))</code></pre>
<p>With <a href="https://numpy.example.org/reference/sum">numpy.sum</a> the same work takes about ten milliseconds.</p></div>
<div class="sidebar"><div class="hot-network-questions"><h4>Hot network questions</h4><ul><li><a href="/q/1">How do cats land on their feet?</a></li>
<li><a href="/q/2">Is it rude to reply all?</a></li><li><a href="/q/3">Best pizza topping debate</a></li></ul></div></div></div>
{FOOTER}</body></html>""",
     "Why is my Python loop so slow?",
     ["Why is my Python loop so slow?", "sum ten million integers", "run the loop in C",
      "total = sum(range(10_000_000))", "numpy.sum"],
     BOILERPLATE + ["Hot network questions", "How do cats land", "Best pizza topping"]),
    ("blog", f"""<!doctype html><html><head><title>Baking sourdough at altitude</title>{SCRIPTS}</head><body>
<div class="site-header"><nav><ul>{NAV}</ul></nav></div>
<div class="post"><h1>Baking sourdough at altitude</h1>
<p>Above 1500 metres water boils at a lower temperature, so dough rises faster and dries out sooner.</p>
<p>I shorten the bulk ferment by a third and add five percent more water than the recipe asks for.</p>
<p>The <a href="https://flour.example.com/high-altitude-chart">flour company's altitude chart</a> was my starting point.</p>
<div class="author-bio"><p>Jane bakes bread and writes about it every Sunday.</p></div>
<div class="social-share"><a href="https://pin.example/s">Pin it</a> <a href="https://mail.example/s">Email this post</a></div></div>
<div class="comment-list"><p>Bob: Tried this in Denver, worked great!</p><p>Ann: What about rye flour?</p></div>
<div class="widget-area"><div class="widget"><h3>Archives</h3><ul><li><a href="/2024/04">April 2024</a></li><li><a href="/2024/03">March 2024</a></li></ul></div></div>
{FOOTER}</body></html>""",
     "Baking sourdough at altitude",
     ["Baking sourdough at altitude", "water boils at a lower temperature", "shorten the bulk ferment by a third",
      "altitude chart"],
     BOILERPLATE + ["Pin it", "Email this post", "Tried this in Denver", "Archives"]),
    ("wiki", f"""<!doctype html><html><head><title>Lake Example - Encyclopedia</title>{SCRIPTS}</head><body>
<div id="mw-head"><nav><ul>{NAV}</ul></nav></div><div id="mw-panel" class="menu"><ul><li><a href="/random">Random article</a></li>
<li><a href="/donate">Donate to the encyclopedia</a></li></ul></div>
<div id="bodyContent" class="mw-body-content"><h1>Lake Example</h1>
<table class="infobox"><tr><th>Area</th><td>52 km2</td></tr><tr><th>Max depth</th><td>87 m</td></tr></table>
<p>Lake Example is a glacial lake in the northern highlands, formed about twelve thousand years ago.</p>
<p>Its outflow feeds the <a href="https://wiki.example.org/wiki/Example_River">Example River</a>, which reaches the sea after 140 km.</p>
<h2>Ecology</h2><p>The lake is home to a rare species of char that spawns only in its deepest basin.</p>
<div class="navbox"><a href="/l1">Lake One</a> <a href="/l2">Lake Two</a> <a href="/l3">Lake Three</a> <a href="/l4">Lake Four</a></div>
</div>{FOOTER}</body></html>""",
     "Lake Example",
     ["Lake Example is a glacial lake", "formed about twelve thousand years ago", "Example River",
      "rare species of char", "87 m"],
     BOILERPLATE + ["Random article", "Donate to the encyclopedia", "Lake Three"]),
]


def _norm(text: str) -> str:
    return " ".join(text.replace("\\", "").split())


def reader_ours(html: str, url: str) -> tuple[str, list[str]]:
    from tools.browser.reader import LINK, html_to_document

    doc = html_to_document(html, url)
    text = LINK.sub(lambda m: f"[{m.group(2)}]({doc.links[int(m.group(1))]})", doc.text)
    return f"# {doc.title}\n\n{text}", doc.links  # the title as the browser shows it: the page's header


def reader_markdownify_whole(html: str, url: str) -> tuple[str, list[str]]:
    from markdownify import markdownify

    return markdownify(html, heading_style="ATX"), []


def reader_trafilatura(html: str, url: str) -> tuple[str, list[str]]:
    import trafilatura

    text = trafilatura.extract(html, url=url, output_format="markdown", include_links=True, include_tables=True,
                               include_formatting=True, include_comments=False, favor_recall=True) or ""
    return text, []


def readers_part(reps: int) -> None:
    readers = {"markdownify whole page": reader_markdownify_whole, "ours (lxml extractor)": reader_ours}
    try:
        import trafilatura  # noqa: F401

        readers["trafilatura 2.x"] = reader_trafilatura
    except ImportError:
        print("(trafilatura is not installed: pip install trafilatura lxml_html_clean to compare with it)")
    real_pages = [p for p in sorted(Path("/usr/share/doc").glob("**/*.html")) if p.stat().st_size > 20_000][:10]
    print(f"\nReaders on {len(READER_PAGES)} labelled pages, timing also on {len(real_pages)} real pages from /usr/share/doc:")
    print(f"  {'reader':26} {'content kept':>12} {'boilerplate':>12} {'title':>6} {'tables':>7} {'links':>6} "
          f"{'ms/page':>8} {'ms/real':>8}")
    for name, reader in readers.items():
        reader(READER_PAGES[0][1], "https://warm.example.com/")  # imports and set-up, outside the timing
        kept = leaked = must_total = boiler_total = tables = links = headings = 0
        elapsed = 0.0
        for label, html, heading, must, boiler in READER_PAGES:
            url = f"https://{label}.example.com/page"
            started = time.perf_counter()
            for _ in range(reps):
                text, _ = reader(html, url)
            elapsed += (time.perf_counter() - started) / reps
            flat = _norm(text)
            kept += sum(_norm(s) in flat for s in must)
            leaked += sum(_norm(s) in flat for s in boiler)
            must_total, boiler_total = must_total + len(must), boiler_total + len(boiler)
            headings += any(line.lstrip("#").strip() == heading for line in text.splitlines() if line.startswith("#"))
            tables += "| --- |" in text or "|---|" in text.replace(" ", "")
            links += "](https://" in text and ".example" in text.split("](https://", 1)[1][:60]
        real_ms = 0.0
        for path in real_pages:
            html = path.read_text(errors="replace")
            started = time.perf_counter()
            reader(html, "https://local.example/" + path.name)
            real_ms += (time.perf_counter() - started) * 1000
        n = len(READER_PAGES)
        print(f"  {name:26} {kept / must_total:>12.0%} {leaked / boiler_total:>12.0%} {headings:>4}/{n} "
              f"{tables:>5}/{n} {links:>4}/{n} "
              f"{1000 * elapsed / len(READER_PAGES):>8.1f} {real_ms / max(1, len(real_pages)):>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--readers", action="store_true", help="also compare HTML readers")
    args = parser.parse_args()
    if args.readers:
        readers_part(args.reps)
        print()
    mclick_part(args.reps)


if __name__ == "__main__":
    main()
