"""Safe fetching against a real HTTP server on loopback, and the SSRF guard with private networks off."""

import ipaddress
import shutil
import ssl
import subprocess

import httpx
import pytest

from agent.retrying import RetryPolicy
from tools.browser import fetch as fetch_module
from tools.browser.errors import BlockedURLError, FetchError, RobotsDisallowedError
from tools.browser.fetch import AddressGuard, Fetcher, PinnedTransport
from tools.browser.reader import is_readable, read
from tools.browser.settings import BrowserSettings
from tools.browser.testing import LocalSite, Route, make_pdf


@pytest.fixture
def site():
    with LocalSite() as server:
        yield server


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(fetch_module, "BROWSER_RETRIES", RetryPolicy(backoff=0.01, max_backoff=0.01, max_retry_after=0.01))


def local(**overrides) -> BrowserSettings:
    """Settings for the loopback server: private addresses allowed, robots off unless a test wants it."""
    return BrowserSettings(**{"allow_private_network": True, "respect_robots": False, "timeout_s": 5.0, **overrides})


async def fetch(settings: BrowserSettings, url: str, **kwargs):
    fetcher = Fetcher(settings, **kwargs)
    try:
        return await fetcher.fetch(url, accept=is_readable)
    finally:
        await fetcher.aclose()


# ---------------------------------------------------------------------------------------------------
# Fetching


async def test_fetches_a_page(site):
    site.add("/page", "<html><title>Hello</title><body><p>Loopback page.</p></body></html>")
    result = await fetch(local(), site.url("/page"))
    assert result.status == 200 and result.content_type == "text/html" and result.charset == "utf-8"
    assert read(result).title == "Hello"
    assert site.requests[0].headers["User-Agent"].startswith("Mozilla/5.0 (compatible; glm-agent/")


async def test_redirects_are_followed_by_hand_and_relative_ones_resolved(site):
    site.add("/start", status=301, headers={"Location": "/middle"})
    site.add("/middle", status=307, headers={"Location": site.url("/end")})
    site.add("/end", "<p>arrived</p>")
    result = await fetch(local(), site.url("/start"))
    assert result.url == site.url("/end") and b"arrived" in result.body
    assert [r.path for r in site.requests] == ["/start", "/middle", "/end"]


async def test_at_most_five_redirects(site):
    for i in range(7):
        site.add(f"/r{i}", status=302, headers={"Location": f"/r{i + 1}"})
    with pytest.raises(FetchError, match="redirected more than 5 times"):
        await fetch(local(), site.url("/r0"))
    assert site.hits["/r6"] == 0


async def test_a_slow_page_times_out(site):
    site.add("/slow", "late", delay=3.0)
    with pytest.raises(FetchError, match=r"did not finish within 0.5 s"):
        await fetch(local(timeout_s=0.5), site.url("/slow"))
    assert site.hits["/slow"] == 1  # a slow page is not retried


async def test_a_huge_page_is_cut_at_the_size_cap_while_streaming(site):
    sent = []

    def chunks():
        for _ in range(2000):  # 128 MB if it were all read
            sent.append(1)
            yield b"<p>" + b"x" * 65_530 + b"</p>"

    site.add("/huge", chunks=chunks)
    result = await fetch(local(max_page_bytes=200_000), site.url("/huge"))
    assert result.truncated and len(result.body) == 200_000
    assert len(sent) < 2000  # the server was stopped, not drained
    assert "cut at 200,000 bytes" in read(result).notes[0]


async def test_a_pdf(site):
    site.add("/report.pdf", make_pdf([["Revenue grew 7 percent."]], title="Report"), content_type="application/pdf")
    doc = read(await fetch(local(), site.url("/report.pdf")))
    assert doc.kind == "pdf" and "Revenue grew 7 percent." in doc.text


async def test_unreadable_content_types_are_refused_before_download(site):
    site.add("/image.png", b"\x89PNG" + b"\x00" * 1000, content_type="image/png")
    with pytest.raises(FetchError, match="image/png, which the browser cannot read"):
        await fetch(local(), site.url("/image.png"))


async def test_transient_errors_are_retried(site):
    answers = iter([Route("busy", status=503), Route("busy", status=502), Route("<p>finally</p>")])
    site.add("/flaky", handler=lambda request: next(answers))
    result = await fetch(local(retries=2), site.url("/flaky"))
    assert b"finally" in result.body and site.hits["/flaky"] == 3


async def test_persistent_errors_give_up_with_the_status(site):
    site.add("/down", "no", status=503)
    with pytest.raises(FetchError, match="HTTP 503 after 2 attempts"):
        await fetch(local(retries=1), site.url("/down"))
    site.add("/gone", "no", status=404)
    with pytest.raises(FetchError, match="HTTP 404 Not Found") as info:
        await fetch(local(), site.url("/gone"))
    assert info.value.status == 404 and site.hits["/gone"] == 1  # 4xx is not retried


async def test_connection_refused_is_a_clear_error():
    with LocalSite() as gone:
        url = gone.url("/")
    with pytest.raises(FetchError, match="Could not fetch"):
        await fetch(local(retries=0), url)


# ---------------------------------------------------------------------------------------------------
# robots.txt


async def test_robots_txt_is_honoured_and_fetched_once_per_site(site):
    site.add("/robots.txt", "User-agent: *\nDisallow: /private/\nDisallow: /*.pdf$\n", content_type="text/plain")
    site.add("/open", "<p>open</p>")
    site.add("/private/page", "<p>secret</p>")
    site.add("/doc.pdf", make_pdf([["x"]]), content_type="application/pdf")
    fetcher = Fetcher(local(respect_robots=True))
    try:
        assert (await fetcher.fetch(site.url("/open"))).status == 200
        with pytest.raises(RobotsDisallowedError, match="robots.txt does not allow glm-agent to open /private/page"):
            await fetcher.fetch(site.url("/private/page"))
        with pytest.raises(RobotsDisallowedError):
            await fetcher.fetch(site.url("/doc.pdf"))
    finally:
        await fetcher.aclose()
    assert site.hits["/robots.txt"] == 1 and site.hits["/private/page"] == 0 and site.hits["/doc.pdf"] == 0


async def test_missing_robots_allows_and_failing_robots_disallows(site):
    site.add("/page", "<p>ok</p>")
    assert (await fetch(local(respect_robots=True), site.url("/page"))).status == 200  # robots.txt is 404
    site.add("/robots.txt", "down", status=500)
    with pytest.raises(RobotsDisallowedError, match="RFC 9309"):
        await fetch(local(respect_robots=True, retries=0), site.url("/page"))


async def test_robots_can_be_ignored_by_policy(site):
    site.add("/robots.txt", "User-agent: *\nDisallow: /\n", content_type="text/plain")
    site.add("/page", "<p>ok</p>")
    assert (await fetch(local(respect_robots=False), site.url("/page"))).status == 200
    assert site.hits["/robots.txt"] == 0


# ---------------------------------------------------------------------------------------------------
# The SSRF guard (allow_private_network off, the default)


PUBLIC = BrowserSettings(respect_robots=False, timeout_s=5.0, retries=0)


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://2130706433/", "resolves to 127.0.0.1, a loopback address"),  # the integer form of 127.0.0.1
    ("http://0x7f000001/", "resolves to 127.0.0.1"),  # hex
    ("http://127.1/", "resolves to 127.0.0.1"),  # short form
    ("http://[::ffff:127.0.0.1]/", "a loopback IPv4 address inside an IPv6 address"),
    ("http://[::1]:8080/", "::1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://10.0.0.1/", "a private address"),
    ("http://100.64.0.1/", "a carrier-grade NAT address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://0.0.0.0/", "an unspecified address"),
    ("http://localhost/", "resolves to"),
])
async def test_private_addresses_are_refused(url, reason):
    with pytest.raises(BlockedURLError, match=reason.replace("[", r"\[")) as info:
        await fetch(PUBLIC, url)
    assert "allow_private_network = true" in str(info.value)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "gopher://x/", "javascript:alert(1)"])
async def test_only_http_and_https(url):
    with pytest.raises(BlockedURLError, match="only http:// and https://"):
        await fetch(PUBLIC, url)


async def test_a_hostname_resolving_to_a_private_address_is_refused():
    calls = []

    async def resolver(host, port):
        calls.append(host)
        return {"intranet.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "192.168.1.5"]}[host]

    with pytest.raises(BlockedURLError, match="intranet.example resolves to 10.1.2.3, a private address"):
        await fetch(PUBLIC, "http://intranet.example/admin", resolver=resolver)
    with pytest.raises(BlockedURLError, match="mixed.example resolves to 192.168.1.5"):  # every address is checked
        await fetch(PUBLIC, "http://mixed.example/", resolver=resolver)
    assert calls == ["intranet.example", "mixed.example"]


@pytest.fixture
def loopback_counts_as_public(monkeypatch):
    """Let the test server on 127.0.0.1 play a public site; every other address is judged as usual."""
    real = fetch_module.blocked_reason
    monkeypatch.setattr(fetch_module, "blocked_reason",
                        lambda ip: None if ip == ipaddress.ip_address("127.0.0.1") else real(ip))


async def test_a_redirect_to_loopback_is_refused(site, loopback_counts_as_public):
    site.add("/innocent", status=302, headers={"Location": f"http://127.0.0.2:{site.port}/admin"})
    site.add("/admin", "<p>internal</p>")
    with pytest.raises(BlockedURLError, match="127.0.0.2 is a loopback address"):
        await fetch(PUBLIC, site.url("/innocent"))
    assert site.hits["/innocent"] == 1 and site.hits["/admin"] == 0


async def test_connections_go_to_the_checked_address(site, loopback_counts_as_public):
    """The name is resolved once per connection by our resolver, and that address is the one used.

    ``rebinding.example`` does not exist in DNS, so reaching the server proves the connection used the
    address we checked; when the answer changes to a private one, the next connection is refused.
    """
    site.add("/page", "<p>pinned</p>")
    answers = iter([["127.0.0.1"], ["10.0.0.8"]])
    calls = []

    async def rebinding(host, port):
        calls.append((host, port))
        return next(answers)

    fetcher = Fetcher(PUBLIC, resolver=rebinding)
    url = f"http://rebinding.example:{site.port}/page"
    try:
        assert (await fetcher.fetch(url)).body == b"<p>pinned</p>"
        assert site.requests[-1].headers["Host"] == f"rebinding.example:{site.port}"
        with pytest.raises(BlockedURLError, match="resolves to 10.0.0.8"):
            await fetcher.fetch(url)  # HTTP/1.0 server: a new connection, so a new (checked) answer
    finally:
        await fetcher.aclose()
    assert calls == [("rebinding.example", site.port)] * 2 and site.hits["/page"] == 1


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A test CA, and server certificates it signed for pinned.example and for other.example."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=glm-agent test CA")
    for name in ("pinned.example", "other.example"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (folder / f"{name}.ext").write_text(  # what strict verification (Python 3.13+) asks of a server certificate
            f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\nauthorityKeyIdentifier=keyid,issuer\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return folder


@pytest.mark.parametrize("served, error", [("pinned.example", None), ("other.example", "Hostname mismatch")])
async def test_tls_checks_the_host_name_on_the_pinned_connection(certificates, loopback_counts_as_public, served, error):
    """The socket goes to the checked address, yet TLS sends the URL's name (SNI) and verifies the certificate
    against it: a server holding a valid certificate for another name is refused."""
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificates / f"{served}.pem", certificates / f"{served}.key")
    names = []
    server_tls.sni_callback = lambda _socket, name, _context: names.append(name)

    async def resolver(host, port):
        return ["127.0.0.1"]

    transport = PinnedTransport(AddressGuard(allow_private=False, resolver=resolver),
                                ssl_context=ssl.create_default_context(cafile=str(certificates / "ca.pem")))
    with LocalSite(ssl_context=server_tls) as site:
        site.add("/page", "<p>over TLS</p>")
        async with httpx.AsyncClient(transport=transport) as client:
            if error is None:
                assert (await client.get(f"https://pinned.example:{site.port}/page")).text == "<p>over TLS</p>"
            else:
                with pytest.raises(httpx.ConnectError, match=error):
                    await client.get(f"https://pinned.example:{site.port}/page")
    assert names == ["pinned.example"]


async def test_allow_and_deny_domains(site):
    async def resolver(host, port):
        return ["127.0.0.1"]

    settings = local(allow_domains=["docs.example"], deny_domains=["secret.docs.example"])
    site.add("/", "<p>ok</p>")
    assert (await fetch(settings, f"http://api.docs.example:{site.port}/", resolver=resolver)).status == 200
    with pytest.raises(BlockedURLError, match="does not allow the domain secret.docs.example"):
        await fetch(settings, f"http://secret.docs.example:{site.port}/", resolver=resolver)
    with pytest.raises(BlockedURLError, match="does not allow the domain other.example"):
        await fetch(settings, f"http://other.example:{site.port}/", resolver=resolver)
    site.add("/hop", status=302, headers={"Location": f"http://other.example:{site.port}/"})
    with pytest.raises(BlockedURLError, match="other.example"):  # redirects are checked too
        await fetch(settings, f"http://docs.example:{site.port}/hop", resolver=resolver)


# ---------------------------------------------------------------------------------------------------
# Issue 10.12 and 10.9: one deadline per page; decompression bombs


async def test_one_deadline_covers_robots_redirects_and_body(site):
    """timeout_s once applied per hop and per robots.txt fetch: one open took 27 s with timeout_s = 5."""
    import time

    site.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain", delay=1.2)
    for hop in range(4):
        site.add(f"/hop{hop}", status=302, headers={"Location": f"/hop{hop + 1}"}, delay=1.2)
    site.add("/hop4", "<p>end</p>", delay=1.2)
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"did not finish within 2 s"):
        await fetch(local(timeout_s=2.0, respect_robots=True), site.url("/hop0"))
    assert time.monotonic() - started < 4.5  # each step alone is within the limit; all together are not


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, compresslevel=9)


@pytest.mark.parametrize("layers", [["gzip"], ["gzip", "gzip"], ["deflate", "gzip"]])
async def test_a_decompression_bomb_is_cut_at_the_page_limit(site, layers):
    """`Content-Encoding: gzip, gzip` on a 5 KB body once took 6.2 GB and blocked the loop for 11-17 s."""
    import time
    import tracemalloc
    import zlib

    body = b"\0" * (200 * 2**20)  # 200 MB of zeros; each layer shrinks it a thousandfold
    for coding in layers:
        body = _gzip(body) if coding == "gzip" else zlib.compress(body, 9)
    site.add("/bomb", body, content_type="text/plain", headers={"Content-Encoding": ", ".join(layers)})
    tracemalloc.start()
    started = time.monotonic()
    result = await fetch(local(max_page_bytes=1_000_000), site.url("/bomb"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.truncated and len(result.body) == 1_000_000
    assert peak < 64 * 2**20  # decoded incrementally: never the whole body in memory
    assert time.monotonic() - started < 10


def _children() -> set[int]:
    import os

    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat", "rb").read()
            except OSError:
                continue
            if stat[stat.rfind(b")") + 2:].split()[1].decode() == me:
                found.add(int(entry))
    return found


def test_a_pdf_made_to_burn_cpu_is_stopped_at_its_deadline(monkeypatch):
    """Issue 10.11: a 13 KB PDF once took ~49 s of CPU in a reader thread that outlived the run."""
    import time

    from tools.browser import reader as reader_module
    from tools.browser.fetch import FetchResult
    from tools.browser.testing import make_slow_pdf

    monkeypatch.setattr(reader_module, "PDF_DEADLINE_S", 3.0)
    before = _children()
    started = time.monotonic()
    body = make_slow_pdf()
    with pytest.raises(FetchError, match=r"not a readable PDF \(it took longer than 3 s, so it was stopped\)"):
        read(FetchResult(url="http://x/slow.pdf", status=200, content_type="application/pdf", charset=None, body=body))
    assert time.monotonic() - started < 15
    assert _children() <= before  # the parser is gone, not left running


def test_a_slow_pdf_handed_in_as_a_document_is_stopped_too(monkeypatch, tmp_path):
    import time

    from agent import documents
    from tools.browser.testing import make_slow_pdf

    monkeypatch.setattr(documents, "DOCUMENT_DEADLINE_S", 3.0)
    (tmp_path / "slow.pdf").write_bytes(make_slow_pdf())
    started = time.monotonic()
    text = documents.read_document(tmp_path / "slow.pdf", 10**8)  # all 300 pages, if it could
    assert "could not be read as a document: it took longer than 3 s" in text
    assert time.monotonic() - started < 15
