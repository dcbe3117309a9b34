"""HTTP plumbing shared by the served-model backends: one client, retries, clear errors, SSE.

Both :class:`~agent.models.openai.OpenAIChatModel` and :class:`~agent.models.completions.CompletionsModel`
talk to an OpenAI-compatible server (vLLM, SGLang, a hosted API). What they share lives here:

- ``base_url`` handling: ``http://host:8000`` and ``http://host:8000/v1`` mean the same server;
- retries by the project's one :class:`~agent.retrying.RetryPolicy` (connect errors, 429, 5xx, ``Retry-After``);
- HTTP failures turned into one-sentence errors (:class:`ModelAuthError`, :class:`ModelNotFoundError`,
  :class:`ModelConnectionError`, :class:`ModelError`) that say what went wrong and how to fix it;
- reading ``stream=True`` answers as Server-Sent Events (httpx-sse), or as one JSON answer when the
  server does not stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import os
import re
import ssl
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
from httpx_sse import EventSource, SSEError

from ..errors import ModelAuthError, ModelConnectionError, ModelError, ModelNotFoundError
from ..policy import ModelSettings
from ..retrying import RETRYABLE_ERRORS, RETRYABLE_STATUSES, RetryPolicy
from .base import Usage


def normalize_base_url(base_url: str) -> str:
    """The API root requests are made under, without a trailing slash.

    A bare server address gets ``/v1`` (``http://localhost:8000`` → ``http://localhost:8000/v1``); any
    other path is kept as given (hosted APIs use roots such as ``/api/paas/v4``); an endpoint pasted by
    mistake (``…/v1/chat/completions``) is cut back to its root.
    """
    url = base_url.strip()
    if "://" not in url:
        raise ValueError(f"base_url {base_url!r} is not a URL: pass one such as http://localhost:8000/v1.")
    parts = urlsplit(url)
    path = parts.path.rstrip("/")
    for endpoint in ("/chat/completions", "/completions"):
        if path.endswith(endpoint):
            path = path[: -len(endpoint)]
            break
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def redact_credentials(text: str) -> str:
    """``https://user:secret@host/v1`` → ``https://***@host/v1``, wherever a URL appears in ``text``."""
    return _USERINFO.sub("***@", text)


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every client: loading the CA certificates costs ~0.1 s of CPU, and batch runs
    make a client per endpoint (and per event loop)."""
    return httpx.create_ssl_context()


LOCAL_TIMEOUT_S = 30.0  # a server on this machine or the local network: silence this long means trouble
REMOTE_TIMEOUT_S = 120.0  # a hosted API, further away and busier


def default_timeout(base_url: str) -> float:
    """How long a server may stay silent (connect, first byte, between streamed chunks) by default."""
    host = urlsplit(base_url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
        local = address.is_loopback or address.is_private or address.is_link_local
    except ValueError:
        local = host in ("localhost", "host.docker.internal") or host.endswith((".local", ".localhost"))
    return LOCAL_TIMEOUT_S if local else REMOTE_TIMEOUT_S


class ServerClient:
    """An ``httpx.AsyncClient`` for one API root, with retries and clear errors.

    The client is created lazily inside the running event loop and recreated when a later call
    runs on another loop (``asyncio.run`` twice, say), since pooled connections belong to the loop
    that opened them.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float | None = None,
                 connect_timeout: float = 10.0, max_retries: int = 3, backoff: float = 0.5,
                 max_backoff: float = 20.0, max_retry_after: float = 60.0,
                 headers: dict[str, str] | None = None):
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries}.")
        self.retrying = RetryPolicy(retries=max_retries, backoff=backoff, max_backoff=max_backoff,
                                    max_retry_after=max_retry_after)
        self._url = normalize_base_url(base_url)  # with any user:password in it, for httpx alone
        self.base_url = redact_credentials(self._url)  # what messages, events and transcripts show
        timeout = default_timeout(self._url) if timeout is None else timeout
        self.model = model
        self.timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.headers = {"Accept": "application/json", **(headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests swap in a recorder

    # -- lifecycle ---------------------------------------------------------------------------

    def client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client.is_closed or self._loop is not loop:
            # A client left over from a finished loop cannot be closed from this one; dropping it
            # lets its sockets be collected.
            self._client = httpx.AsyncClient(base_url=self._url, headers=self.headers, timeout=self.timeout,
                                             verify=_ssl_context())
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and not client.is_closed and self._loop is asyncio.get_running_loop():
            await client.aclose()

    # -- requests ----------------------------------------------------------------------------

    async def post(self, path: str, payload: dict[str, Any] | bytes) -> dict[str, Any]:
        """POST JSON (a body, or its bytes from :func:`encode_json`) and return the JSON answer, retrying what is
        worth retrying."""
        response = await self._send(path, payload, stream=False)
        try:
            data = response.json()
        except ValueError:
            raise ModelError(f"The server at {self.base_url} answered {path} with something that is not JSON "
                             f"({response.text[:120]!r}); check that --base-url points to an OpenAI-compatible API.") from None
        _raise_for_inline_error(data, self.base_url)
        return data

    async def stream(self, path: str, payload: dict[str, Any] | bytes) -> AsyncIterator[dict[str, Any]]:
        """POST JSON and yield the server-sent events' JSON payloads until ``[DONE]``.

        Only opening the stream is retried: once tokens have been handed to the caller, trying again
        would show them twice.
        """
        response = await self._send(path, payload, stream=True)
        try:
            if response.headers.get("content-type", "").startswith("application/json"):
                await response.aread()  # a server that does not stream: its one answer, read as one event
                answer = response.json()
                _raise_for_inline_error(answer, self.base_url)
                yield as_stream_event(answer)
                return
            async with contextlib.aclosing(iter_sse(response)) as events:
                async for event in events:
                    _raise_for_inline_error(event, self.base_url)
                    yield event
        except SSEError:
            kind = response.headers.get("content-type") or "no content type"
            raise ModelError(f"The server at {self.base_url} answered a streamed request with {kind}, neither "
                             "an event stream nor JSON; pass stream=False if its streaming is not OpenAI-compatible.") from None
        except httpx.TimeoutException:
            raise self._timeout_error() from None
        except httpx.TransportError as exc:
            raise ModelConnectionError(
                f"The connection to {self.base_url} broke in the middle of a streamed answer ({_describe(exc)}); "
                "try again, or pass stream=False.") from None
        finally:
            await response.aclose()

    async def _send(self, path: str, payload: dict[str, Any] | bytes, *, stream: bool) -> httpx.Response:
        """The server's successful answer, after the retries the policy allows; any other answer is an error."""
        content = payload if isinstance(payload, bytes) else encode_json(payload)

        async def attempt() -> httpx.Response:
            client = self.client()  # per attempt: a request is sent once, so it is built again
            request = client.build_request("POST", path.lstrip("/"), content=content, headers=JSON_CONTENT)
            return await client.send(request, stream=stream)

        attempts = self.retrying.attempts
        try:
            response = await self.retrying.call(attempt, sleep=lambda seconds: self._sleep(seconds))
            if response.is_success:
                return response
            await response.aread()
            await response.aclose()
        except RETRYABLE_ERRORS as exc:
            raise ModelConnectionError(
                f"Could not reach the model server at {self.base_url} after {_times(attempts)} "
                f"({_describe(exc)}); check that it is running and that its URL (--base-url) is right.") from None
        except httpx.TimeoutException:
            raise self._timeout_error() from None
        except httpx.TransportError as exc:
            raise ModelConnectionError(
                f"Could not talk to the model server at {self.base_url} ({_describe(exc)}); check --base-url.") from None
        message = error_message(response)
        if response.status_code in RETRYABLE_STATUSES:
            raise ModelConnectionError(
                f"The server at {self.base_url} kept answering {response.status_code} ({message}) after "
                f"{_times(attempts)}; wait until it is less busy or raise max_retries.")
        raise await self._status_error(response, message)

    # -- errors ------------------------------------------------------------------------------

    async def _status_error(self, response: httpx.Response, message: str) -> ModelError:
        status = response.status_code
        if status in (401, 403):
            return ModelAuthError(
                f"The server at {self.base_url} refused the API key ({status}: {message}); "
                "pass the right key with --api-key or the OPENAI_API_KEY environment variable.")
        if status == 404 or (status == 400 and _mentions_missing_model(message)):
            served = await self.served_models()
            if _mentions_missing_model(message) or (served and self.model not in served):
                hint = f"it serves {', '.join(served)}" if served else f"see {self.base_url}/models"
                return ModelNotFoundError(
                    f"The server at {self.base_url} has no model named {self.model!r} ({message}); "
                    f"pass a served model name with --model ({hint}).")
            return ModelNotFoundError(
                f"The server at {self.base_url} has no endpoint {response.request.url.path} (404: {message}); "
                "check --base-url (an OpenAI-compatible root such as http://localhost:8000/v1).")
        return ModelError(f"The server at {self.base_url} rejected the request ({status}: {message}); "
                          "check the model settings and extra_body options sent with it.")

    async def served_models(self) -> list[str]:
        """The model names the server lists at ``/models`` (empty when it does not say)."""
        try:
            response = await self.client().get("models", timeout=5.0)
            return [str(item["id"]) for item in response.json().get("data", [])]
        except Exception:  # only a hint for an error message: never let it hide the real error
            return []

    def _timeout_error(self) -> ModelConnectionError:
        return ModelConnectionError(
            f"The model server at {self.base_url} sent nothing for {self.timeout.read:g} s; check that it is "
            "working, or give it longer with --timeout (timeout= in Python).")


# ---------------------------------------------------------------------------------------------------
# Request bodies

JSON_CONTENT = {"Content-Type": "application/json"}


class Serialized(str):
    """A value of a request body that is JSON text already: :func:`encode_json` writes it as it is."""


def encode_json(body: dict[str, Any]) -> bytes:
    """``body`` as the bytes of a JSON request, written as httpx writes ``json=`` (compact, UTF-8).

    A top-level :class:`Serialized` value goes in as the JSON it holds: a conversation serialized as it
    grew is not serialized again, whole, for every request.
    """
    items = (f"{json_text(key)}:{value if isinstance(value, Serialized) else json_text(value)}"
             for key, value in body.items())
    return f"{{{','.join(items)}}}".encode()


def json_text(value: Any) -> str:
    """``value`` as compact JSON text, as :func:`encode_json` writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------------------------------------------
# Pieces of responses


async def iter_sse(response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
    """Read a ``text/event-stream`` answer: yield each event's JSON ``data``; stop at ``data: [DONE]``.

    httpx-sse applies the event-stream rules (multi-line ``data``, comments as keep-alives, an event ends
    at a blank line, a cut-off last event is dropped); raises ``httpx_sse.SSEError`` for another content type.
    Each network read waits at most the client's read timeout, so silence between events is bounded too.
    """
    async with contextlib.aclosing(EventSource(response).aiter_sse()) as events:
        async for event in events:
            if not event.data:
                continue  # no data: nothing to dispatch (an id or event name alone)
            if event.data.strip() == "[DONE]":
                # Read on to the end of the body: httpx's nested iterators then finish here instead of
                # being finalized later by the event loop (noisy if it stops first).
                async for _ in events:
                    pass
                return
            yield _sse_json(event.data)


def _sse_json(payload: str) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except json.JSONDecodeError:
        raise ModelError(f"The server streamed an event that is not JSON ({payload[:120]!r}); "
                         "pass stream=False if this server's streaming is not OpenAI-compatible.") from None
    if not isinstance(value, dict):
        raise ModelError(f"The server streamed {payload[:120]!r} where a JSON object was expected; "
                         "pass stream=False if this server's streaming is not OpenAI-compatible.")
    return value


def error_message(response: httpx.Response) -> str:
    """The server's own words about an error: OpenAI/vLLM ``{"error": {"message"}}``, FastAPI ``detail``, or text."""
    try:
        data = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:200] or response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if error.get(key):
                    return str(error[key])[:300]
        elif error:
            return str(error)[:300]
    return json.dumps(data)[:200]


def as_stream_event(answer: dict[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) answer in the shape of one streamed event: ``message`` becomes ``delta``."""
    choices = []
    for choice in answer.get("choices") or []:
        message = choice.get("message")
        if isinstance(message, dict):
            calls = [{**call, "index": i} for i, call in enumerate(message.get("tool_calls") or [])]
            choice = {**choice, "delta": {**message, "tool_calls": calls} if calls else message}
        choices.append(choice)
    return {**answer, "choices": choices}


def _raise_for_inline_error(data: Any, base_url: str) -> None:
    """vLLM reports errors that happen after the 200 (e.g. in a stream) as an ``error`` object."""
    if not isinstance(data, dict):
        raise ModelError(f"The server at {base_url} answered {str(data)[:120]!r} where a JSON object was expected; "
                         "check that --base-url points to an OpenAI-compatible API.")
    error = data.get("error")
    if error:
        message = error.get("message", error) if isinstance(error, dict) else error
        raise ModelError(f"The server at {base_url} failed while answering ({message}); "
                         "check the server's log, then try again.")


def _mentions_missing_model(message: str) -> bool:
    text = message.lower()
    return "model" in text and any(words in text for words in ("does not exist", "not found", "not exist", "unknown"))


def _describe(exc: Exception) -> str:
    return redact_credentials(str(exc)) or type(exc).__name__


def usage_from(data: dict[str, Any] | None) -> Usage:
    """Token counts from an OpenAI ``usage`` object; cached prompt tokens (prefix caching) count as reused."""
    if not data:
        return Usage()
    prompt = int(data.get("prompt_tokens") or 0)
    cached = int((data.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=int(data.get("completion_tokens") or 0),
                 prefilled_tokens=prompt - cached, reused_tokens=cached)


# ---------------------------------------------------------------------------------------------------
# What both served backends share


class ServedModel:
    """Constructor, sampling options and lifecycle shared by the served backends.

    Args:
        base_url: the server's OpenAI-compatible root, e.g. ``http://localhost:8000/v1`` (a bare
            ``http://localhost:8000`` gets ``/v1`` added).
        model: the served model's name (vLLM's ``--served-model-name``, or the path it loaded).
        api_key: sent as ``Authorization: Bearer``; defaults to ``OPENAI_API_KEY``, none when unset.
        stream: stream tokens over SSE (``on_token`` then sees them as they come).
        timeout: the longest the server may stay silent, in seconds: before its first byte and
            between streamed chunks (without streaming, the whole answer must come within it).
            Default: 30 s for a server on this machine or a private network, 120 s for others.
            A silent server ends the run with one error that says so; it is not retried.
        max_retries: tries after the first on connect errors, 429 and 5xx.
        backoff: first wait between tries in seconds, doubled each time up to ``max_backoff``;
            a ``Retry-After`` header wins.
        extra_body: server-specific options merged into every request (e.g. ``{"top_k": 20}``,
            ``{"repetition_penalty": 1.05}``); they override the defaults.
        headers: extra HTTP headers.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, stream: bool = True,
                 timeout: float | None = None, connect_timeout: float = 10.0, max_retries: int = 3,
                 backoff: float = 0.5, max_backoff: float = 20.0, extra_body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None):
        self.model = model
        self.stream = stream
        self.extra_body = dict(extra_body or {})
        self._http = ServerClient(base_url, model, api_key, timeout=timeout, connect_timeout=connect_timeout,
                                  max_retries=max_retries, backoff=backoff, max_backoff=max_backoff,
                                  headers=headers)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def name(self) -> str:
        return self.model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, model={self.model!r})"

    def request_body(self, settings: ModelSettings, **fields: Any) -> dict[str, Any]:
        """The JSON body of one request: model, sampling, streaming, the endpoint's ``fields``, ``extra_body``."""
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            **fields,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}  # the usage arrives in a last chunk
        switches = {"enable_thinking": settings.thinking,
                    "clear_thinking": None if settings.preserved_thinking is None else not settings.preserved_thinking}
        if any(value is not None for value in switches.values()):  # vLLM and SGLang hand them to the template
            body["chat_template_kwargs"] = {key: value for key, value in switches.items() if value is not None}
        body.update(self.extra_body)
        return body

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()


def _times(attempts: int) -> str:
    return "1 attempt" if attempts == 1 else f"{attempts} attempts"

