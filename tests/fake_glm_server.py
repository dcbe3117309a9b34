"""A fake served GLM-4: a real HTTP server on loopback that speaks vLLM's OpenAI-compatible API.

It answers ``POST /v1/chat/completions`` (native ``tool_calls``, as vLLM's GLM-4 tool parser
returns them), ``POST /v1/completions`` (raw GLM-4 prompt in, completion out, with vLLM's
``stop_reason``: the matched stop token id or string) and ``GET /v1/models``; both POST endpoints
stream over SSE when asked. Replies are scripted; failures can be injected; every request is
recorded so tests can assert what was sent.

>>> with FakeGLMServer() as server:
...     server.script(['add\\n{"a": 2, "b": 3}', "\\nThe answer is 5."])
...     model = CompletionsModel(server.url, server.model)

A script item is one of:

- a ``str``: a raw GLM-4 completion, as :class:`~agent.models.ScriptedModel` takes them:
  ``'add\\n{"a": 2}'`` is a call (the server stops on ``<|observation|>``; the chat endpoint
  returns it as ``tool_calls``), ``"\\nThe answer."`` an answer (stops on ``<|user|>``);
- a :class:`Reply` for exact control (chat content and calls, stop reason, usage);
- a :class:`Fail` (an HTTP error status, with ``Retry-After`` if given) or :class:`Drop`
  (the connection closes without an answer); each uses up one request;
- a function ``(RecordedRequest) -> item`` deciding from what was sent.

Requests with a model name the server does not serve get vLLM's 404; with ``api_key`` set,
requests without ``Authorization: Bearer <api_key>`` get 401.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Union

import pytest

GLM4_STOPS = {"observation": (151338, "<|observation|>"), "user": (151336, "<|user|>"),
              "eos": (151329, "<|endoftext|>")}


@dataclass
class Reply:
    """An exact reply.

    For ``/v1/completions``: ``text`` and the stop it ended on (``"observation"``, ``"user"``,
    ``"eos"``, ``"length"``), or ``stop_reason`` to report verbatim (e.g. ``"<|observation|>"``).
    For ``/v1/chat/completions``: ``content`` and ``tool_calls`` as ``(name, arguments)`` pairs
    (arguments: a JSON string, sent as is, or a dict).
    """

    text: str = ""
    stop: str | None = None
    stop_reason: Any = "derive"
    content: str | None = None
    reasoning: str | None = None  # sent as reasoning_content, as vLLM's and SGLang's reasoning parsers do
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


@dataclass
class Fail:
    """Answer one request with an HTTP error (``retry_after`` becomes a ``Retry-After`` header)."""

    status: int
    message: str | None = None
    retry_after: str | float | None = None


@dataclass
class Drop:
    """Close the connection without answering one request."""


ScriptItem = Union[str, Reply, Fail, Drop, Callable[["RecordedRequest"], Any]]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, None for GET
    raw: bytes = b""  # the body's bytes, as sent

    @property
    def prompt(self) -> str:
        return self.body.get("prompt", "")


class FakeGLMServer:
    """A served GLM-4 on ``127.0.0.1``; ``url`` ends in ``/v1``. Use as a context manager."""

    def __init__(self, model: str = "glm-4-9b-chat", api_key: str | None = None, chunk_chars: int = 7):
        self.model = model
        self.models = [model]
        self.api_key = api_key
        self.chunk_chars = chunk_chars  # streamed tool-call arguments arrive in pieces this long
        self.chunk_delay = 0.0  # seconds between streamed events (a model that takes its time)
        self.requests: list[RecordedRequest] = []
        self._script: list[ScriptItem] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeGLMServer":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-glm4", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeGLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- scripting ---------------------------------------------------------------------------

    def script(self, items: list[ScriptItem] | Callable[[RecordedRequest], Any]) -> None:
        """Set the replies, in order (or a function answering every request)."""
        with self._lock:
            self._script = items if callable(items) else list(items)

    @property
    def posts(self) -> list[RecordedRequest]:
        """The POST requests received (what the backends sent), in order."""
        return [r for r in self.requests if r.method == "POST"]

    def _next(self, request: RecordedRequest) -> ScriptItem | None:
        with self._lock:
            if callable(self._script):
                return self._script(request)
            return self._script.pop(0) if self._script else None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients hanging up is normal
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: without this, each answer waits ~40 ms
    fake: FakeGLMServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._record(None)
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.fake.models]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError:
            return self._json(400, _error("request body is not JSON", "BadRequestError", 400))
        request = self._record(body, raw)
        endpoint = self.path.rstrip("/")
        if endpoint not in ("/v1/chat/completions", "/v1/completions"):
            return self._json(404, {"detail": "Not Found"})
        if self.fake.api_key and self.headers.get("Authorization") != f"Bearer {self.fake.api_key}":
            return self._json(401, {"error": "Unauthorized"})  # vLLM's answer to a wrong --api-key
        if body.get("model") not in self.fake.models:
            return self._json(404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", 404))
        item = self.fake._next(request)
        if isinstance(item, Drop):
            self.close_connection = True
            return
        if isinstance(item, Fail):
            headers = {"Retry-After": str(item.retry_after)} if item.retry_after is not None else {}
            message = item.message or f"injected failure {item.status}"
            return self._json(item.status, _error(message, _kind(item.status), item.status), headers)
        if item is None:
            return self._json(400, _error(f"fake GLM-4 server: no scripted reply left for request "
                                          f"{len(self.fake.posts)}; add more with server.script([...])",
                                          "BadRequestError", 400))
        reply = item if isinstance(item, Reply) else Reply(text=item)
        if endpoint == "/v1/completions":
            self._completions(body, reply)
        else:
            self._chat(body, reply)

    # -- /v1/completions ---------------------------------------------------------------------

    def _completions(self, body: dict[str, Any], reply: Reply) -> None:
        text = reply.text
        last_segment = text.split("<|assistant|>")[-1]  # a thought may come before the call
        stop = reply.stop or ("observation" if _is_call(last_segment) else "user")
        finish, stop_reason = "stop", reply.stop_reason
        if stop == "length":
            finish, stop_reason = "length", None if stop_reason == "derive" else stop_reason
        elif stop_reason == "derive":
            token_id, token = GLM4_STOPS[stop]
            if token_id in (body.get("stop_token_ids") or []):
                stop_reason = token_id
            elif token in (body.get("stop") or []):
                stop_reason = token
            else:  # nothing asked the server to stop here: the token shows, generation ends at EOS
                stop_reason, text = None, text + token
        usage = reply.usage or _usage(len(str(body.get("prompt", ""))), text)
        if not body.get("stream"):
            return self._json(200, {
                "id": "cmpl-fake", "object": "text_completion", "model": body["model"],
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish,
                             "stop_reason": stop_reason}],
                "usage": usage})
        events = [{"choices": [{"index": 0, "text": piece, "finish_reason": None, "stop_reason": None}]}
                  for piece in _pieces(text)]
        events.append({"choices": [{"index": 0, "text": "", "finish_reason": finish, "stop_reason": stop_reason}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"choices": [], "usage": usage})
        self._sse([{"id": "cmpl-fake", "object": "text_completion", "model": body["model"], **e} for e in events])

    # -- /v1/chat/completions ----------------------------------------------------------------

    def _chat(self, body: dict[str, Any], reply: Reply) -> None:
        if reply.content is None and not reply.tool_calls:
            content, calls = _as_chat(reply.text)  # what vLLM's GLM-4 tool parser makes of the text
        else:
            content, calls = reply.content or "", reply.tool_calls
        calls = [{"id": f"chatcmpl-tool-{index}", "type": "function",
                  "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                 for index, (name, args) in enumerate(calls)]
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        prompt_chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
        usage = reply.usage or _usage(prompt_chars, content + "".join(c["function"]["arguments"] for c in calls))
        base = {"id": "chatcmpl-fake", "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": content or None}
            if reply.reasoning:
                message["reasoning_content"] = reply.reasoning
            if calls:
                message["tool_calls"] = calls
            return self._json(200, {**base, "object": "chat.completion", "usage": usage,
                                    "choices": [{"index": 0, "message": message, "finish_reason": finish}]})
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"reasoning_content": piece} for piece in _pieces(reply.reasoning or "")]
        deltas += [{"content": piece} for piece in _pieces(content)]
        size = self.fake.chunk_chars
        for index, call in enumerate(calls):
            arguments = call["function"]["arguments"]
            deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"], "arguments": ""}}]})
            deltas += [{"tool_calls": [{"index": index, "function": {"arguments": arguments[i:i + size]}}]}
                       for i in range(0, len(arguments), size)]
        events = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({"choices": [], "usage": usage})
        self._sse([{**base, "object": "chat.completion.chunk", **e} for e in events])

    # -- plumbing ----------------------------------------------------------------------------

    def _record(self, body: Any, raw: bytes = b"") -> RecordedRequest:
        request = RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, raw)
        with self.fake._lock:
            self.fake.requests.append(request)
        return request

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in [json.dumps(e, ensure_ascii=False) for e in events] + ["[DONE]"]:
            time.sleep(self.fake.chunk_delay)
            self._chunk(f"data: {event}\n\n".encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _is_call(text: str) -> bool:
    """GLM-4 writes a call as ``name\\nbody``: a non-empty first line."""
    return bool(text.partition("\n")[0].strip()) and "\n" in text


def _as_chat(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a GLM-4 completion into chat content and calls, as a server-side tool parser does."""
    content: list[str] = []
    calls: list[tuple[str, str]] = []
    for segment in text.split("<|assistant|>"):
        name, _, body = segment.partition("\n")
        if name.strip() and _is_call(segment):
            calls.append((name.strip(), body.strip()))
        elif segment.strip():
            content.append(body if not name.strip() else segment)
    return "\n".join(c.strip() for c in content), calls


def _pieces(text: str) -> Iterator[str]:
    """Word-sized stream pieces, whitespace kept."""
    piece = ""
    for ch in text:
        piece += ch
        if ch.isspace():
            yield piece
            piece = ""
    if piece:
        yield piece


def _usage(prompt_chars: int, completion: str) -> dict[str, int]:
    prompt, completion_tokens = max(1, prompt_chars // 4), max(1, len(completion.split()))
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens, "total_tokens": prompt + completion_tokens}


def _kind(status: int) -> str:
    """vLLM-style error type for a status: 503 → ServiceUnavailableError."""
    try:
        return HTTPStatus(status).phrase.replace(" ", "") + "Error"
    except ValueError:
        return "Error"


def _error(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


@pytest.fixture
def fake_server() -> Iterator[FakeGLMServer]:
    """A started :class:`FakeGLMServer` serving ``glm-4-9b-chat``; stopped after the test."""
    with FakeGLMServer() as server:
        yield server
