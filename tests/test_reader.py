"""The page reader: what it keeps, what it drops, and that no page can break it.

Articles are kept whole where class names mislead (``widget``, ``pager``); boilerplate inside an
article goes (related-article teasers, share bars, captions, copyright lines); links keep ids that
``mclick`` opens; tables stay tables. Malformed pages never raise and stay bounded in time: links
and ``<base>`` with bracketed hosts, hundreds of unclosed nested tags, binary garbage, huge pages,
and arbitrary markup (a property test). Bytes are decoded as browsers do: BOM, then the header's
charset, then ``<meta>``, then UTF-8 if it mostly is, then detection.
"""

import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.browser.fetch import FetchResult
from tools.browser.reader import LINK, decode, html_to_document, read
from tools.browser.view import Refs, render_page

PARAGRAPHS = [
    "The committee met on Tuesday to review the harbour plan, which has been delayed twice since spring.",
    "Engineers said the new breakwater would cut storm damage by half, according to the report released today.",
    "Local fishermen welcomed the decision, though several asked for compensation during the construction work.",
    "The council expects the first phase to finish next year, with the total cost estimated at forty million.",
]


def _article(wrapper_class: str, extra: str = "") -> str:
    body = "".join(f"<p>{p}</p>" for p in PARAGRAPHS)
    return (f"<html><head><title>Harbour plan approved</title></head><body>"
            f"<div class='{wrapper_class}'><h1>Harbour plan approved</h1>{body}{extra}</div></body></html>")


def _plain(doc) -> str:
    return LINK.sub(lambda m: m.group(2), doc.text)


def _html(body: str) -> FetchResult:
    return FetchResult(url="https://x.example/a", status=200, content_type="text/html", charset=None, body=body)


# ---------------------------------------------------------------------------------------------------
# What is kept and what is dropped


def test_articles_inside_widget_and_page_builder_classes_are_kept():
    for wrapper in ("widget Blog", "elementor-widget-container", "PageBuilder-pageRow", "sidebar-layout-content"):
        doc = html_to_document(_article(wrapper), "https://x.example/a")
        assert all(p in doc.text for p in PARAGRAPHS), wrapper


def test_an_article_left_out_by_its_class_names_comes_back():
    """Readability's fallback: when filtering by class names leaves almost nothing, search again without it."""
    html = _article("comment-thread social-feed")  # class names that say "not the article"
    assert all(p in html_to_document(html, "https://x.example/a").text for p in PARAGRAPHS)


def test_boilerplate_inside_the_article_goes():
    teasers = "".join(f"<li><h3><a href='/story/{i}'>Another story number {i}</a></h3><p>A teaser sentence that "
                      f"summarises story {i} for readers who might click.</p></li>" for i in range(4))
    extra = (f"<div class='related-posts'><ul>{teasers}</ul></div>"
             "<figure><img src='x.jpg' alt='A harbour'><figcaption>The harbour at dawn. Photo: Agency</figcaption></figure>"
             "<div class='share-tools'><a href='https://social.example/s'>Share this story</a></div>"
             "<p class='copyright'>Copyright 2024 Harbour News Ltd. All rights reserved.</p>"
             "<div class='byline'>By A. Writer, 3 May 2024</div>")
    doc = html_to_document(_article("post-body", extra), "https://x.example/a")
    text = _plain(doc)
    assert all(p in text for p in PARAGRAPHS)
    for boilerplate in ("Another story", "teaser sentence", "harbour at dawn", "A harbour", "Share this",
                        "Copyright 2024", "A. Writer"):
        assert boilerplate not in text, boilerplate
    assert doc.title == "Harbour plan approved" and not text.startswith("#")  # the headline is the title


def test_portal_menus_and_link_lists_around_the_article_go():
    words = ["首页", "新闻", "体育", "娱乐", "财经", "科技", "汽车", "房产", "教育", "旅游"]
    menu = " | ".join(f"<a href='/c/{i}'>{word}</a>" for i, word in enumerate(words))
    zh = ["记者从市政府获悉，今年全市将新建二十所学校，预计新增学位三万个，以缓解城区入学压力。",
          "据介绍，新建学校将优先布局在人口密集的新区，同时对现有校舍进行改造，提升办学条件。"]
    related = "".join(f"<li><a href='/n/{i}'>相关新闻标题第{i}条关于教育的报道</a></li>" for i in range(6))
    html = (f"<html><head><title>我市今年新建二十所学校_新闻中心_某某网</title></head><body><div class='top'>{menu}</div>"
            f"<div class='channel'>{menu}</div><div class='w1000'><div class='left'><h1>我市今年新建二十所学校</h1>"
            f"<div class='text'>{''.join(f'<p>{p}</p>' for p in zh)}</div><div class='xgxw'><h3>相关新闻</h3>"
            f"<ul>{related}</ul></div></div></div><div class='bottom'>{menu}</div></body></html>")
    doc = html_to_document(html, "https://news.example.cn/a")
    assert doc.text == "\n\n".join(zh) and doc.title == "我市今年新建二十所学校"
    menu = "".join(f"<li><a href='/r/{i}'>{word}</a></li>" for i, word in enumerate(
        ["Startseite", "Politik", "Wirtschaft", "Sport", "Kultur", "Wissen", "Reise", "Auto", "Digital"]))
    de = ["Der Stadtrat hat am Dienstag einen neuen Haushalt beschlossen, der mehr Geld für Schulen vorsieht.",
          "Nach Angaben der Verwaltung sollen in den kommenden zwei Jahren zwölf Gebäude saniert werden."]
    html = (f"<html><body><div id='kopf'><ul class='hauptmenue'>{menu}</ul></div><div class='rubriken'><ul>{menu}"
            f"</ul></div><div id='inhalt'>{''.join(f'<p>{p}</p>' for p in de)}</div><div id='fuss'><ul>{menu}</ul>"
            "</div></body></html>")
    assert html_to_document(html, "https://tageblatt.example.de/a").text == "\n\n".join(de)


def test_links_keep_ids_that_mclick_opens_and_words_stay_apart():
    html = ("<html><body><main><p>Read <a href='https://docs.example.org/guide'>the docs</a>, "
            "<a href='/faq'>(the FAQ)</a>and the <a href='https://docs.example.org/guide#part'>guide</a> "
            "before the meeting on Tuesday, which starts at nine in the main hall of the old building.</p>"
            "</main></body></html>")
    doc = html_to_document(html, "https://site.example/news/1")
    assert doc.links == ["https://docs.example.org/guide", "https://site.example/faq"]  # one id per page
    assert "Read the docs, (the FAQ)and the guide before" in _plain(doc)  # the page's own spacing
    refs = Refs()
    view = render_page(doc, refs.add(doc.url), refs, cursor=0, window_chars=6000, quote=False)
    assert "Read 【1†the docs†docs.example.org】, 【2†(the FAQ)】and the 【1†guide†docs.example.org】" in view.text
    assert {c.id: c.url for c in view.citations}["2"] == "https://site.example/faq"
    assert refs.get(1).url == "https://docs.example.org/guide"  # what mclick([1]) opens


def test_tables_stay_markdown_tables_and_layout_tables_become_text():
    data = ("<table><thead><tr><th>City</th><th>Rain (mm)</th></tr></thead><tbody>"
            "<tr><td>Oslo</td><td>763</td></tr><tr><td>Bergen</td><td>2 250 | wet</td></tr></tbody></table>")
    layout = f"<table><tr><td><p>{PARAGRAPHS[2]}</p><table><tr><td>nested</td></tr></table></td></tr></table>"
    doc = html_to_document(_article("content", data + layout), "https://x.example/a")
    assert "| City | Rain (mm) |\n| --- | --- |\n| Oslo | 763 |\n| Bergen | 2 250 \\| wet |" in doc.text
    assert f"\n\n{PARAGRAPHS[2]}\n\n" in doc.text  # a layout table's cell is not a table row


def test_headings_lists_and_code_are_markdown():
    html = _article("entry-content", "<h2>Next steps</h2><ol><li>Survey the seabed</li><li>Order stone<ul>"
                    "<li>granite</li></ul></li></ol><pre><code>cost = 40_000_000</code></pre>"
                    "<blockquote><p>We waited long enough.</p><p>Build it.</p></blockquote>")
    text = html_to_document(html, "https://x.example/a").text
    assert "## Next steps\n\n1. Survey the seabed\n2. Order stone\n  - granite\n\n```\ncost = 40_000_000\n```" in text
    assert text.endswith("> We waited long enough.\n>\n> Build it.")


# ---------------------------------------------------------------------------------------------------
# Pages that used to break the reader


def test_bad_link_urls_lose_their_link_not_the_page():
    html = ("<html><body><p>See <a href='https://[YOUR-DOMAIN]/api'>the API</a>, <a href='http://x.example:99999/'>"
            "a bad port</a>, <a href='http://[::1'>half a host</a> and <a href='/ok'>this one</a> for details.</p>"
            "</body></html>")
    doc = html_to_document(html, "https://x.example/page")
    assert _plain(doc) == "See the API, a bad port, half a host and this one for details."
    assert doc.links == ["https://x.example/ok"]


def test_a_base_with_a_bracketed_host_is_ignored():
    html = ("<html><head><base href='https://[YOUR-DOMAIN]/api/'></head><body><p>Read "
            "<a href='guide.html'>the guide</a> first.</p></body></html>")
    doc = html_to_document(html, "https://x.example/docs/")
    assert _plain(doc) == "Read the guide first." and doc.links == ["https://x.example/docs/guide.html"]


def test_hundreds_of_unclosed_nested_tags_are_read_to_the_end():
    for tag in ("font", "p", "div", "span", "b", "li", "table", "blockquote"):
        html = "<html><body>" + f"<{tag}>word " * 400 + "THE-END</body></html>"
        doc = read(_html(html.encode()))
        assert "THE-END" in doc.text and doc.text.count("word") == 400, tag


def test_binary_garbage_and_empty_bodies_do_not_raise():
    rng = random.Random(7)
    for size in (0, 1, 100, 100_000):
        doc = read(_html(bytes(rng.randrange(256) for _ in range(size))))
        assert isinstance(doc.text, str) and not doc.links
        assert size < 100 or (doc.text == "" and "not text" in doc.notes[0])  # not pages of mojibake
    assert read(_html(b"\x00" * 5000)).text == ""


def test_huge_pages_are_read_in_bounded_time():
    rows = "".join(f"<tr><td>{i}</td><td>{i * 7} kg</td><td>{i % 13} m</td></tr>" for i in range(20_000))
    paragraphs = "".join(f"<p>{PARAGRAPHS[i % 4]} <a href='/p/{i}'>more</a></p>" for i in range(15_000))
    page = f"<html><body><main>{paragraphs}<table>{rows}</table></main></body></html>".encode()
    assert len(page) > 2_500_000
    started = time.process_time()
    doc = read(_html(page))
    assert time.process_time() - started < 30  # about 2 s on a laptop core: the bound is generous on purpose
    assert doc.text.count(PARAGRAPHS[3]) == 3750 and "| 19999 | 139993 kg | 5 m |" in doc.text


TAGS = ["p", "div", "a", "table", "tr", "td", "th", "ul", "ol", "li", "pre", "code", "h1", "h2", "span", "br",
        "blockquote", "script", "style", "base", "font", "b", "article", "main", "header", "nav", "img", "iframe"]
ATTRIBUTES = st.sampled_from(["", " href='https://[x]/'", " href='/a b'", " href='#top'", " href='javascript:x'",
                              " href='http://h:999999/'", " class='widget'", " class='related share'", " hidden",
                              " style='display:none'", " role='navigation'", " href=\"//[::1\"", " href='mailto:a@b'",
                              " href='../../x'", " alt='x'", " charset='x'"])
PIECES = st.one_of(
    st.builds(lambda tag, attrs: f"<{tag}{attrs}>", st.sampled_from(TAGS), ATTRIBUTES),
    st.sampled_from(TAGS).map(lambda tag: f"</{tag}>"),
    st.text(max_size=30),
    st.sampled_from(["<!--", "-->", "<![CDATA[", "&amp;", "&#0;", "&#xD800;", "<", ">", "\ue000", "\ue001",
                     "\ue002", "\ue003", "【", "†", "<?xml?>", "<!doctype html>"]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=60), st.sampled_from([None, "utf-8", "latin-1", "gbk", "nonsense"]))
def test_no_markup_breaks_the_reader(pieces, charset):
    markup = "".join(pieces)
    for body in (markup.encode("utf-8", "surrogatepass"), markup.encode("utf-16")):
        doc = read(FetchResult(url="https://x.example/p", status=200, content_type="text/html", charset=charset, body=body))
        for match in LINK.finditer(doc.text):
            assert doc.links[int(match.group(1))].startswith(("http://", "https://"))
        assert not any(c in LINK.sub("", doc.text) for c in "\ue000\ue001\ue002\ue003")
        assert not [note for note in doc.notes if "could not be read" in note]  # no bug hidden by the safety net
        refs = Refs()
        render_page(doc, refs.add(doc.url), refs, cursor=0, window_chars=2000, quote=True)  # the view copes too


# ---------------------------------------------------------------------------------------------------
# Decoding


def test_a_bom_wins_over_the_header_and_the_header_over_meta():
    bom = b"\xef\xbb\xbf<html><body><p>Zo\xc3\xab</p></body></html>"
    assert decode(bom, "iso-8859-1", html=True).endswith("<p>Zoë</p></body></html>")
    meta = '<meta charset="utf-8"><p>Café</p>'.encode("cp1252")
    assert "Café" in decode(meta, "windows-1252", html=True)
    assert "Caf\ufffd" in decode(meta, None, html=True)  # without a header, meta decides (and it is wrong here)


def test_meta_and_xml_declarations_are_read():
    assert "Привет" in decode('<meta charset="windows-1251"><p>Привет</p>'.encode("cp1251"), None, html=True)
    http_equiv = '<meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS"><p>東京～</p>'
    assert "東京～" in decode(http_equiv.encode("cp932"), None, html=True)  # Shift_JIS read as browsers do: cp932
    assert "naïve" in decode('<?xml version="1.0" encoding="ISO-8859-1"?><p>naïve</p>'.encode("latin-1"), None, html=True)
    for utf16 in ("utf-16-le", "utf-16-be"):  # no BOM, no header: told by the zero bytes
        assert decode("<html><p>Grüße aus Köln</p></html>".encode(utf16), None, html=True).endswith("Köln</p></html>")
    utf16_meta = '<meta charset="utf-16"><p>Grüße</p>'.encode()
    assert "Grüße" in decode(utf16_meta, None, html=True)  # a page that says UTF-16 in ASCII is not UTF-16


def test_utf8_with_a_few_bad_bytes_stays_utf8():
    good = ("Müller und Söhne liefern Käse nach Zürich. Größe, Maß und Gewicht sind geprüft. " * 20).encode()
    damaged = good[:300] + b"\xff" + good[300:900] + b"\x96" + good[900:] + "ü".encode()[:1]  # cut mid-character
    text = decode(damaged, None, html=True)
    assert text.count("Müller") == 20 and text.count("\ufffd") == 3
    doc = read(_html(b"<html><body><p>" + damaged + b"</p></body></html>"))
    assert "Zürich" in doc.text


def test_undeclared_single_byte_pages_are_detected():
    latin = ("<html><body><p>Les élèves français étudient à l'école, où ça déborde de vie. " * 10
             + "</p></body></html>").encode("cp1252")
    assert "élèves français" in decode(latin, None, html=True)
    gbk = ("<html><body><p>" + "今天的天气很好，我们去公园散步。" * 20 + "</p></body></html>").encode("gbk")
    assert "今天的天气很好" in decode(gbk, None, html=True)
    cyrillic = "<p>Привет, как дела? Сегодня хорошая погода.</p>" * 5
    assert decode(cyrillic.encode("cp1251"), None, html=True) == cyrillic
    polish = "<p>Zażółć gęślą jaźń, w Łodzi pada śnieg i wieje wiatr.</p>" * 5
    assert decode(polish.encode("cp1250"), None, html=True) == polish
    assert decode("<p>Café</p>".encode("cp1252"), None, html=True) == "<p>Café</p>"  # one accent: Windows-1252


def test_unknown_labels_fall_through_to_the_next_rule():
    assert decode("<p>Zoë</p>".encode(), "x-no-such-charset", html=True) == "<p>Zoë</p>"
    assert decode('<meta charset="bogus"><p>Zoë</p>'.encode(), None, html=True).endswith("<p>Zoë</p>")
