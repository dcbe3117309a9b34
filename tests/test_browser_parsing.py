"""simple_browser without the network: reading calls, robots.txt, pages, windows and ids."""

import pytest

from tools.browser.actions import parse_action
from tools.browser.errors import FetchError
from tools.browser.fetch import FetchResult, parse_content_type
from tools.browser.reader import LINK, Document, html_to_document, read
from tools.browser.robots import RobotsRules
from tools.browser.testing import make_pdf
from tools.browser.view import Refs, page_lines, render_page

# ---------------------------------------------------------------------------------------------------
# Calls as GLM-4 writes them


@pytest.mark.parametrize("body, expected", [
    ('search("GLM-4 report", recency_days=7)', {"action": "search", "query": "GLM-4 report", "recency_days": 7}),
    ("search('single quotes', 30)", {"action": "search", "query": "single quotes", "recency_days": 30}),
    ('search(query="kw only")', {"action": "search", "query": "kw only"}),
    ("mclick([0, 2, 5])", {"action": "mclick", "ids": [0, 2, 5]}),
    ("mclick([0, 2, 5,],)", {"action": "mclick", "ids": [0, 2, 5]}),
    ("mclick(1, 3)", {"action": "mclick", "ids": [1, 3]}),
    ("mclick(4)", {"action": "mclick", "ids": [4]}),
    ("mclick(ids=(1, 2))", {"action": "mclick", "ids": [1, 2]}),
    ('open_url("https://example.com/a")', {"action": "open_url", "url": "https://example.com/a"}),
    ('open_url("https://example.com/a", cursor=40)', {"action": "open_url", "url": "https://example.com/a", "cursor": 40}),
    ('```python\nsearch("fenced")\n```', {"action": "search", "query": "fenced"}),
    ('search("trailing text")\nI will read the results next.', {"action": "search", "query": "trailing text"}),
    ('search("a (paren) and \\"quote\\" inside")', {"action": "search", "query": 'a (paren) and "quote" inside'}),
    ('{"action": "mclick", "ids": [1]}', {"action": "mclick", "ids": [1]}),
])
def test_parse_action_reads_what_glm4_writes(body, expected):
    assert parse_action(body) == expected


@pytest.mark.parametrize("body, reason", [
    ("", "empty"),
    ("look it up please", "not a browser call"),
    ("search(weather)", "must be literals"),
    ('mclick(__import__("os").system("id"))', "must be literals"),
    ('search("unclosed"', "no closing parenthesis"),
    ('search(q="x")', "no parameter 'q'"),
    ('search("a", 1, 2)', "at most 2 arguments"),
    ('search("a")\nsearch("b")', "one action per call"),
    ("search(*args)", "*arguments"),
    ('search("x" * 10)', "must be literals"),
])
def test_parse_action_names_the_problem(body, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace("*", r"\*")):
        parse_action(body)


def test_parse_action_refuses_huge_bodies():
    with pytest.raises(ValueError, match="characters long"):
        parse_action('search("' + "x" * 30_000 + '")')


# ---------------------------------------------------------------------------------------------------
# robots.txt


ROBOTS = """
# comments are ignored
User-agent: *
Disallow: /private/
Disallow: /*.pdf$
Disallow: /*?session=
Allow: /private/open-*

User-agent: OtherBot
Disallow: /
"""


@pytest.mark.parametrize("path, allowed", [
    ("/", True),
    ("/article", True),
    ("/private/x", False),
    ("/private/open-data", True),      # the longer Allow wins
    ("/files/report.pdf", False),      # `$` anchors the end
    ("/files/report.pdf?page=2", True),
    ("/deep/list?session=abc", False),  # `*` in the middle
    ("/list?q=1&session=abc", True),
    ("/robots.txt", True),
])
def test_robots_wildcards_and_longest_match(path, allowed):
    assert RobotsRules.parse(ROBOTS, "glm-agent").allows(path) is allowed


def test_robots_group_for_our_agent_replaces_the_star_group():
    text = "User-agent: *\nDisallow: /\n\nUser-agent: glm-agent\nUser-agent: other\nDisallow: /no\n"
    rules = RobotsRules.parse(text, "glm-agent")
    assert rules.allows("/yes") and not rules.allows("/no/page")
    assert not RobotsRules.parse(text, "somebot").allows("/yes")


def test_robots_ties_go_to_allow_and_empty_disallow_allows():
    assert RobotsRules.parse("User-agent: *\nDisallow: /page\nAllow: /page\n", "glm-agent").allows("/page")
    assert RobotsRules.parse("User-agent: *\nDisallow:\n", "glm-agent").allows("/anything")
    assert not RobotsRules(disallow_all=True).allows("/")


# ---------------------------------------------------------------------------------------------------
# Reading pages


ARTICLE = """<!doctype html><html><head><title>Council passes budget | City News</title>
<style>body { color: red }</style><script>trackVisitor("never shown")</script></head>
<body>
<header class="site-header"><a href="/">City News</a> <a href="/sport">Sport</a> <a href="/weather">Weather</a></header>
<nav><ul><li><a href="/a">Politics</a></li><li><a href="/b">Business</a></li></ul></nav>
<div class="cookie-consent">We use cookies to improve your experience. <button>Accept all</button></div>
<main>
 <article>
  <h1>Council passes <em>record</em> budget</h1>
  <p>The council approved a budget of 12 million on Monday, its largest so far, after a debate on
     <a href="https://data.example.org/budget-2024">the published figures</a> that lasted six hours.</p>
  <p>Spending on parks_and_recreation rises by a third, the mayor said in a statement to reporters.</p>
  <table><tr><th>Item</th><th>Amount</th></tr><tr><td>Parks</td><td>4M</td></tr><tr><td>Roads</td><td>8M</td></tr></table>
  <pre><code>total = 4 + 8</code></pre>
  <img src="chart.png" alt="Budget chart">
  <div class="share-bar"><a href="https://social.example/share">Share</a> <a href="https://mail.example/">Email</a></div>
  <ul class="tags"><li><a href="/tag/budget">budget</a></li><li><a href="/tag/council">council</a></li></ul>
 </article>
 <div class="comments">Comment by troll: first!</div>
</main>
<aside>Most read: <a href="/x">Something else</a></aside>
<footer>Copyright City News <a href="/privacy">Privacy</a></footer>
<div style="display: none">hidden tracking text</div>
</body></html>"""


def _shown(doc: Document) -> str:
    """The text with links as `text<url>` so tests can see both."""
    return LINK.sub(lambda m: f"{m.group(2)}<{doc.links[int(m.group(1))]}>", doc.text)


def test_html_keeps_the_article_and_drops_boilerplate():
    doc = html_to_document(ARTICLE.encode(), "https://news.example.com/story")
    text = _shown(doc)
    assert doc.title == "Council passes record budget"  # the headline, which matches <title>, is the title
    assert text.startswith("The council approved a budget")  # and is not repeated in the text
    assert "the published figures<https://data.example.org/budget-2024>" in text  # links kept as references
    assert "parks_and_recreation" in text  # no Markdown escaping of underscores
    assert "| Parks | 4M |" in text and "| Item | Amount |" in text  # tables kept
    assert "```\ntotal = 4 + 8\n```" in text
    for boilerplate in ("Budget chart", "trackVisitor", "color: red", "Sport", "Politics", "cookies", "Accept all", "Share",
                        "tag/budget", "troll", "Most read", "Copyright", "hidden tracking"):
        assert boilerplate not in text, boilerplate


def test_link_index_pages_keep_their_links():
    links = "".join(f'<li><a href="/doc/{i}">Document number {i}</a></li>' for i in range(40))
    doc = html_to_document(f"<html><body><h1>Index</h1><ul>{links}</ul></body></html>", "https://x.example/")
    assert len(doc.links) == 40 and "Document number 39" in doc.text


def test_relative_links_resolve_against_base_and_fragments_go():
    html = ('<html><head><base href="https://cdn.example/docs/"></head><body><p>Read '
            '<a href="guide.html#intro">the guide</a>, <a href="#top">top</a> and '
            '<a href="javascript:void(0)">js</a> for the details that matter here.</p></body></html>')
    doc = html_to_document(html, "https://site.example/page")
    assert doc.links == ["https://cdn.example/docs/guide.html"]
    assert "top and js for the details" in LINK.sub(lambda m: m.group(2), doc.text)


@pytest.mark.parametrize("body, header_charset, expected", [
    ("<html><body><p>价格：一百元</p></body></html>".encode("gbk"), "gbk", "价格：一百元"),
    ('<html><head><meta charset="iso-8859-1"></head><body><p>Café crème</p></body></html>'.encode("latin-1"),
     None, "Café crème"),
    ("<html><body><p>Ünïcödé</p></body></html>".encode("utf-8-sig"), None, "Ünïcödé"),
    ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=shift_jis"></head>'
     "<body><p>東京の天気</p></body></html>".encode("shift_jis"), None, "東京の天気"),
])
def test_charsets_from_header_meta_and_bom(body, header_charset, expected):
    doc = read(FetchResult(url="https://x.example/", status=200, content_type="text/html", charset=header_charset, body=body))
    assert expected in doc.text


def test_pdf_text_through_pypdf():
    pdf = make_pdf([["Quarterly revenue rose 12 percent.", "Costs fell."], ["Outlook: stable."]], title="Q3 Report")
    doc = read(FetchResult(url="https://x.example/q3.pdf", status=200, content_type="application/pdf", charset=None, body=pdf))
    assert doc.kind == "pdf" and doc.title == "Q3 Report"
    assert "--- Page 1 ---\nQuarterly revenue rose 12 percent.\nCosts fell." in doc.text
    assert "--- Page 2 ---\nOutlook: stable." in doc.text


def test_pdf_sent_as_octet_stream_is_sniffed():
    pdf = make_pdf([["Sniffed by its bytes."]])
    doc = read(FetchResult(url="https://x.example/file", status=200, content_type="application/octet-stream", charset=None, body=pdf))
    assert "Sniffed by its bytes." in doc.text


def test_broken_and_cut_pdfs_say_so():
    bad = FetchResult(url="https://x.example/b.pdf", status=200, content_type="application/pdf", charset=None, body=b"%PDF-1.4 junk")
    with pytest.raises(FetchError, match="not a readable PDF"):
        read(bad)
    cut = FetchResult(url="https://x.example/c.pdf", status=200, content_type="application/pdf", charset=None,
                      body=make_pdf([["x"]])[:200], truncated=True)
    with pytest.raises(FetchError, match="larger than the policy's max_page_bytes"):
        read(cut)


def test_other_content_types_are_refused_clearly():
    image = FetchResult(url="https://x.example/a.png", status=200, content_type="image/png", charset=None, body=b"\x89PNG")
    with pytest.raises(FetchError, match="image/png, which the browser cannot read"):
        read(image)
    blob = FetchResult(url="https://x.example/blob", status=200, content_type="application/octet-stream", charset=None, body=b"\x00\x01")
    with pytest.raises(FetchError, match="cannot read"):
        read(blob)


def test_content_type_header_parsing():
    assert parse_content_type('text/HTML; Charset="GBK"') == ("text/html", "gbk")
    assert parse_content_type("") == ("", None)


# ---------------------------------------------------------------------------------------------------
# Windows and ids


def _long_doc(paragraphs: int = 50) -> Document:
    html = "<html><head><title>Long read</title></head><body><main>" + "".join(
        f'<p>Paragraph {i}: {"lorem ipsum " * 20}<a href="https://other.example/ref{i}">ref {i}</a></p>'
        for i in range(paragraphs)) + "</main></body></html>"
    return html_to_document(html, "https://long.example/read")


def test_short_pages_show_whole_without_line_numbers():
    doc = html_to_document("<html><title>Short</title><body><p>Just one line.</p></body></html>", "https://s.example/")
    refs = Refs()
    view = render_page(doc, refs.add(doc.url), refs, cursor=0, window_chars=6000, quote=False)
    assert view.text == " # 【0†Short†s.example】\nURL: https://s.example/\n\nJust one line.\nVisible: 0% - 100%"


def test_long_pages_scroll_by_numbered_lines():
    doc = _long_doc()
    refs = Refs()
    page = refs.add(doc.url)
    first = render_page(doc, page, refs, cursor=0, window_chars=1500, quote=False)
    assert "L0: Paragraph 0:" in first.text and "L50" not in first.text
    last_line = first.text.splitlines()[-1]
    assert last_line.startswith("Visible: lines 0-") and 'call open_url("https://long.example/read", cursor=' in last_line
    cursor = int(last_line.rsplit("cursor=", 1)[1].rstrip(")."))
    second = render_page(doc, page, refs, cursor=cursor, window_chars=1500, quote=False)
    assert second.text.count(f"L{cursor}: ") == 1 and f"L{cursor - 1}: " not in second.text
    end = render_page(doc, page, refs, cursor=len(page_lines(doc)) - 1, window_chars=1500, quote=False)
    assert end.text.endswith("This is the end of the page.")
    with pytest.raises(ValueError, match="outside the page"):
        render_page(doc, page, refs, cursor=10_000, window_chars=1500, quote=False)


def test_links_get_session_ids_only_when_shown():
    doc = _long_doc()
    refs = Refs()
    page = refs.add(doc.url)
    view = render_page(doc, page, refs, cursor=0, window_chars=1000, quote=True)
    shown_links = [c for c in view.citations if c.id != "0"]
    assert shown_links and len(shown_links) < len(doc.links)  # only the visible window's links
    first = shown_links[0]
    assert first.url == "https://other.example/ref0" and f"【{first.id}†ref 0†other.example】" in view.text
    again = render_page(doc, page, refs, cursor=0, window_chars=1000, quote=True)
    assert again.citations == view.citations  # the same link keeps its id


def test_wrapping_never_splits_a_link():
    label = "a very long link label " * 30
    html = f'<html><body><p>{"word " * 100}<a href="https://x.example/l">{label}</a>{" tail" * 100}</p></body></html>'
    doc = html_to_document(html, "https://x.example/")
    lines = page_lines(doc)
    assert len(lines) > 2
    assert sum(1 for line in lines if LINK.search(line)) == 1


def test_refs_are_one_per_url():
    refs = Refs()
    a = refs.add("https://a.example/", "A")
    assert refs.add("https://a.example", "again").id == a.id  # same page, same id
    assert refs.add("https://a.example/#section").id == a.id
    assert refs.add("https://b.example/").id == a.id + 1
    assert refs.get(a.id).title == "A" and refs.get(99) is None
