"""Fetching pages safely: public addresses only, pinned connections, hand-followed redirects, robots.txt.

What a fetch guarantees (with the policy's defaults):

- only ``http`` and ``https`` URLs, within the policy's allow/deny domain lists;
- every address a host resolves to is checked (no loopback, private, link-local, carrier-grade NAT,
  multicast, reserved or unspecified addresses; IPv4 inside IPv6 is unwrapped first), and the
  connection goes to the address that was checked: the resolver runs inside the connection
  itself, so a DNS answer that changes between check and connect (rebinding) cannot slip through;
- redirects are followed by hand, at most five, and each target is checked again;
- the body is streamed and cut at ``max_page_bytes``; each attempt has a deadline; transient
  failures are retried by the project's one policy (:mod:`agent.retrying`), ``[browser] retries`` times;
- robots.txt is honoured for our product token ``glm-agent``.

``allow_private_network = true`` lifts the address checks (for intranets and tests), nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import socket
import ssl
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

import anyio
import httpcore
import httpx
import idna

from agent.retrying import RetryPolicy, is_retryable

from .addresses import blocked_reason, ip_literal
from .errors import BlockedURLError, FetchError, RobotsDisallowedError
from .robots import RobotsRules
from .settings import BrowserSettings

PRODUCT_TOKEN = "glm-agent"  # what robots.txt groups name
USER_AGENT = f"Mozilla/5.0 (compatible; {PRODUCT_TOKEN}/0.1; simple_browser)"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
ROBOTS_MAX_BYTES = 500_000  # RFC 9309 asks crawlers to read at least 500 KiB
# The browser's pacing (its `retries` come from the policy): short waits, since one timeout_s covers a
# whole page, retries included. Searches use it too.
BROWSER_RETRIES = RetryPolicy(retries=2, backoff=0.25, max_backoff=2.0, max_retry_after=5.0)

Resolver = Callable[[str, int], Awaitable[list[str]]]


@dataclass
class FetchResult:
    """A fetched body and what is needed to read it."""

    url: str  # after redirects
    status: int
    content_type: str  # media type only, lower case: "text/html"; "" when the server sent none
    charset: str | None
    body: bytes
    truncated: bool = False  # cut at max_page_bytes


# ---------------------------------------------------------------------------------------------------
# Addresses


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (IPv4 and IPv6), in its order."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_PRIVATE_HINT = "the browser only opens public addresses (set [browser] allow_private_network = true to allow it)"


class AddressGuard:
    """Resolves a host and refuses it when any of its addresses is not public."""

    def __init__(self, allow_private: bool, resolver: Resolver | None = None):
        self.allow_private = allow_private
        self.resolver = resolver or system_resolver

    def check_literal(self, host: str) -> None:
        ip = ip_literal(host)
        if ip is not None and not self.allow_private:
            reason = blocked_reason(ip)
            if reason:
                raise BlockedURLError(f"{ip} is {reason}; {_PRIVATE_HINT}.")

    async def resolve(self, host: str, port: int) -> list[str]:
        literal = ip_literal(host)
        if literal is not None:
            self.check_literal(host)
            return [str(literal)]
        try:
            addresses = await self.resolver(host, port)
        except OSError as exc:
            raise FetchError(f"Could not resolve the host {host!r} ({exc.strerror or exc}).") from None
        if not addresses:
            raise FetchError(f"The host {host!r} has no addresses.")
        if not self.allow_private:
            for address in addresses:
                reason = blocked_reason(ipaddress.ip_address(address.split("%", 1)[0]))
                if reason:
                    raise BlockedURLError(f"{host} resolves to {address}, {reason}; {_PRIVATE_HINT}.")
        return addresses


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses the guard checked, never to a name the OS resolves again."""

    def __init__(self, guard: AddressGuard):
        self._guard = guard
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.AsyncNetworkStream:
        last_error: Exception | None = None
        for address in await self._guard.resolve(host, port):
            try:  # TLS still verifies the certificate against `host`: httpcore passes it as SNI
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.AsyncNetworkStream:
        raise BlockedURLError("Unix sockets cannot be opened by the browser.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections go only to addresses the guard checked.

    httpx's own transport has no public way to take a network backend, so this one hands each request
    to an ``httpcore.AsyncConnectionPool`` built with :class:`_PinnedBackend`, through the public APIs of
    both libraries. The pool still sends the URL's host name as SNI and verifies the certificate
    against it, so TLS checks the name while the socket goes to the checked address.
    """

    def __init__(self, guard: AddressGuard, limits: httpx.Limits = httpx.Limits(),
                 ssl_context: ssl.SSLContext | None = None):
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_PinnedBackend(guard),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core = httpcore.Request(request.method, httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port,
                                                             target=url.raw_path),
                                headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _httpx_errors():
            answer = await self._pool.handle_async_request(core)
        assert isinstance(answer.stream, AsyncIterable)
        return httpx.Response(answer.status, headers=answer.headers, stream=_Body(answer.stream),
                              extensions=answer.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


class _Body(httpx.AsyncByteStream):
    """A response body from httpcore whose errors reach the caller as httpx's."""

    def __init__(self, stream: AsyncIterable[bytes]):
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _httpx_errors():
            await self._stream.aclose()  # type: ignore[attr-defined]  # httpcore's streams have it


# httpcore's errors and the httpx errors callers catch, most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout), (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout), (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException), (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError), (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError), (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError), (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except tuple(core for core, _ in _ERRORS) as exc:
        ours = next(ours for core, ours in _ERRORS if isinstance(exc, core))
        raise ours(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------
# Fetching


@dataclass
class _Redirect:
    location: str
    status: int


class Fetcher:
    """Fetches pages for one browser session under a policy's ``[browser]`` settings.

    >>> fetcher = Fetcher(BrowserSettings())          # doctest: +SKIP
    >>> page = await fetcher.fetch("https://example.com/")  # doctest: +SKIP
    """

    def __init__(self, settings: BrowserSettings, *, resolver: Resolver | None = None,
                 user_agent: str = USER_AGENT, max_connections: int = 20):
        self.settings = settings
        self.guard = AddressGuard(settings.allow_private_network, resolver)
        self.retrying = dataclasses.replace(BROWSER_RETRIES, retries=settings.retries)
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(
            transport=PinnedTransport(self.guard, limits),
            timeout=httpx.Timeout(settings.timeout_s),
            headers={"User-Agent": user_agent, "Accept": "text/html,application/xhtml+xml,application/pdf,text/plain;q=0.9,*/*;q=0.5"},
            follow_redirects=False,
            trust_env=False,  # an environment proxy would resolve names itself, bypassing the guard
        )
        self._robots: dict[str, asyncio.Task[RobotsRules]] = {}

    async def aclose(self) -> None:
        for task in self._robots.values():
            task.cancel()
        await self._client.aclose()

    # -- policy -------------------------------------------------------------------------------------

    def check_url(self, url: str) -> httpx.URL:
        """The parsed URL when the policy lets the browser open it; raises ``BlockedURLError``."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise FetchError(f"{url!r} is not a valid URL ({exc}).") from None
        if parsed.scheme not in ("http", "https"):
            scheme = parsed.scheme or "no scheme"
            raise BlockedURLError(f"{url!r} has {scheme}; the browser opens only http:// and https:// URLs.")
        if not parsed.host:
            raise FetchError(f"{url!r} has no host name.")
        if not self.domain_allowed(parsed.host):
            raise BlockedURLError(f"The policy does not allow the domain {parsed.host} ([browser] allow_domains / deny_domains).")
        self.guard.check_literal(parsed.host)
        return parsed

    def domain_allowed(self, host: str) -> bool:
        """The policy's domain rules, compared in one form: IDNA ASCII (``bücher.example`` is ``xn--bcher-kva.example``)."""
        host = idna_ascii(host)

        def matches(domains: list[str]) -> bool:
            return any(host == d or host.endswith("." + d) for d in map(idna_ascii, domains))

        if matches(self.settings.deny_domains):
            return False
        return not self.settings.allow_domains or matches(self.settings.allow_domains)

    # -- fetching -----------------------------------------------------------------------------------

    async def fetch(self, url: str, *, accept: Callable[[str], bool] | None = None,
                    max_bytes: int | None = None, check_robots: bool = True) -> FetchResult:
        """Fetch ``url``, following redirects; ``accept(media_type)`` refuses a body before it is read.

        One deadline, ``timeout_s``, covers the whole page: robots.txt, every redirect, retries and the body.
        """
        timeout = self.settings.timeout_s
        try:
            return await asyncio.wait_for(self._fetch(url, accept, max_bytes, check_robots), timeout)
        except asyncio.TimeoutError:  # asyncio.TimeoutError is TimeoutError from 3.11
            raise FetchError(f"{url} did not finish within {timeout:g} s (robots.txt, redirects and the page "
                             "together); raise [browser] timeout_s for slow sites.") from None

    async def _fetch(self, url: str, accept: Callable[[str], bool] | None, max_bytes: int | None,
                     check_robots: bool) -> FetchResult:
        current = self.check_url(url)
        for _ in range(MAX_REDIRECTS + 1):
            if check_robots and self.settings.respect_robots:
                await self._check_robots(current)
            result = await self._get(current, accept, max_bytes or self.settings.max_page_bytes)
            if isinstance(result, FetchResult):
                return result
            current = self.check_url(str(current.join(result.location)))
        raise FetchError(f"{url} redirected more than {MAX_REDIRECTS} times.")

    async def _get(self, url: httpx.URL, accept: Callable[[str], bool] | None, max_bytes: int) -> FetchResult | _Redirect:
        try:
            result = await self.retrying.call(lambda: self._get_once(url, accept, max_bytes))
        except httpx.TimeoutException:
            raise FetchError(f"{url} did not answer within {self.settings.timeout_s:g} s.") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"Could not fetch {url}: {type(exc).__name__} {exc}".rstrip() + ".") from None
        if isinstance(result, httpx.Response):  # still a 429 or 5xx when the tries ran out
            raise FetchError(f"{url} answered HTTP {result.status_code} after {self.retrying.attempts} attempts.",
                             status=result.status_code)
        return result

    async def _get_once(self, url: httpx.URL, accept: Callable[[str], bool] | None,
                        max_bytes: int) -> FetchResult | _Redirect | httpx.Response:
        """One try: the page, a redirect, or an answer worth retrying (left to the retry policy)."""
        async with self._client.stream("GET", url) as response:
            status = response.status_code
            if status in REDIRECT_STATUSES and "location" in response.headers:
                return _Redirect(response.headers["location"], status)
            if is_retryable(response):
                return response
            if status >= 400:
                raise FetchError(f"{url} answered HTTP {status} {response.reason_phrase}.".replace(" .", "."), status=status)
            media_type, charset = parse_content_type(response.headers.get("content-type", ""))
            if accept is not None and media_type and not accept(media_type):
                raise FetchError(f"{url} is {media_type}, which the browser cannot read (it reads HTML, text and PDF).")
            body, truncated = await _read_capped(response, max_bytes)
            body, cut = await asyncio.to_thread(decode_body, body, response.headers.get("content-encoding", ""), max_bytes)
            truncated = truncated or cut
            return FetchResult(url=str(response.url), status=status, content_type=media_type, charset=charset,
                               body=body, truncated=truncated)

    # -- robots.txt ---------------------------------------------------------------------------------

    async def _check_robots(self, url: httpx.URL) -> None:
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        task = self._robots.get(origin)
        if task is None:  # one fetch per site, shared by concurrent page fetches
            task = self._robots[origin] = asyncio.ensure_future(self._load_robots(origin))
        rules = await asyncio.shield(task)
        target = url.raw_path.decode("ascii")
        if not rules.allows(target):
            why = " (its robots.txt could not be fetched, which RFC 9309 treats as disallowing all)" if rules.disallow_all else ""
            raise RobotsDisallowedError(
                f"{url.host}'s robots.txt does not allow {PRODUCT_TOKEN} to open {target}{why}; try another source."
            )

    async def _load_robots(self, origin: str) -> RobotsRules:
        try:
            result = await self.fetch(f"{origin}/robots.txt", max_bytes=ROBOTS_MAX_BYTES, check_robots=False)
        except BlockedURLError:
            raise
        except FetchError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return RobotsRules.allow_everything()  # no robots.txt: everything is allowed
            return RobotsRules(disallow_all=True)
        text = result.body.decode(result.charset or "utf-8", errors="replace")
        return RobotsRules.parse(text, PRODUCT_TOKEN)


def idna_ascii(domain: str) -> str:
    """A domain name in the form DNS uses: lower case, IDNA (punycode) labels, no trailing dot."""
    name = domain.strip().rstrip(".").lower()
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return name  # not a valid IDNA name: compared as written


def parse_content_type(value: str) -> tuple[str, str | None]:
    """``("text/html", "gbk")`` from ``"text/html; charset=GBK"``."""
    media_type, *params = value.split(";")
    charset = None
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'").lower() or None
    return media_type.strip().lower(), charset


async def _read_capped(response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """The body as sent (still compressed) up to ``max_bytes``, and whether it was cut there."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            return b"".join(chunks)[:max_bytes], True
    return b"".join(chunks), False


_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_body(body: bytes, content_encoding: str, max_bytes: int) -> tuple[bytes, bool]:
    """Undo each ``Content-Encoding`` layer, last applied first, never producing more than ``max_bytes``.

    Every layer inflates into a bounded buffer (``max_length``), so a body that expands a
    thousandfold per layer (a decompression bomb) costs at most ``max_bytes`` of memory per layer;
    the result is cut at ``max_bytes`` and the second value says so. Run it off the event loop.
    """
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip() and c.strip().lower() != "identity"]
    cut = False
    for coding in reversed(codings):
        if coding not in _CODINGS:
            raise FetchError(f"The page is encoded with {coding!r}, which the browser does not decode.")
        body, layer_cut = _inflate(body, coding, max_bytes)
        cut = cut or layer_cut
    return body, cut


def _inflate(data: bytes, coding: str, max_bytes: int) -> tuple[bytes, bool]:
    wbits = _CODINGS[coding]
    if coding == "deflate" and data[:1] and (data[0] & 0x0F) != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, as some servers send it
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise FetchError(f"The page's {coding} encoding is damaged ({exc}).") from None
    if len(out) > max_bytes:
        return out[:max_bytes], True
    return out, False
