"""The ASGI app of ``agent serve``: the HTTP API, the OpenAI-compatible facade and the web chat.

Security, in one place: every request needs the token when one is set (``Authorization: Bearer``,
the cookie that opening ``/?token=T`` sets, or ``?token=``); every answer carries a strict
Content-Security-Policy and ``nosniff``; CORS only for origins configured; uploads within the
policy's ``[files]`` limits; downloads only of the artifacts a session was given ids for.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..files import MB, sanitise_name, write_private
from ..loop import Agent
from .openai_facade import chat_completions
from .sessions import Limits, ServeError, SessionManager

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "font-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
INLINE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                ".webp": "image/webp"}  # shown in the page; anything else is downloaded, never rendered


@dataclass(frozen=True)
class ServeSettings:
    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    limits: Limits = Limits()
    info: dict[str, Any] | None = None  # what the side panel shows besides the agent's own (flags given)


def create_app(agent: Agent, settings: ServeSettings = ServeSettings()) -> Starlette:
    """The app for one agent (its model, tools and policy); sessions start when the app does."""
    manager = SessionManager(agent, settings.limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await manager.start()
        try:
            yield
        finally:
            await manager.close()

    async def info(request: Request) -> Response:
        policy = agent.policy
        return JSONResponse({
            "model": agent.model.name, "tools": agent.tools.names, "policy": policy.name,
            "require_approval": policy.tools.require_approval,
            "limits": {"max_sessions": settings.limits.max_sessions, "idle_timeout_s": settings.limits.idle_timeout_s,
                       "max_files": policy.files.max_files, "max_file_mb": policy.files.max_file_mb,
                       "max_total_mb": policy.files.max_total_mb, "max_steps": policy.agent.max_steps},
            **(settings.info or {})})

    async def create_session(request: Request) -> Response:
        session = manager.create()
        return JSONResponse({"id": session.id, "events": f"/api/sessions/{session.id}/events"}, status_code=201)

    async def list_sessions(request: Request) -> Response:
        return JSONResponse({"sessions": len(manager.sessions), "max_sessions": settings.limits.max_sessions})

    async def delete_session(request: Request) -> Response:
        await manager.delete(request.path_params["sid"])
        return Response(status_code=204)

    async def send_message(request: Request) -> Response:
        session = manager.get(request.path_params["sid"])
        manager.check_idle(session)  # before reading an upload that would be refused anyway
        text, files = await _read_message(request, agent, session.upload_dir)
        manager.send(session, text, files)
        return JSONResponse({"accepted": True, "files": [f.name for f in files], "after": len(session.log) - 1},
                            status_code=202)

    async def events(request: Request) -> Response:
        session = manager.get(request.path_params["sid"])
        after = _int(request.headers.get("last-event-id") or request.query_params.get("after") or "-1", "after")

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for record in session.records(after):
                yield {"id": str(record.seq), "event": record.type, "data": record.data}

        return EventSourceResponse(stream(), ping=15, send_timeout=30)

    async def cancel(request: Request) -> Response:
        session = manager.get(request.path_params["sid"])
        return JSONResponse({"cancelled": await manager.cancel(session)})

    async def approve(request: Request) -> Response:
        session = manager.get(request.path_params["sid"])
        body = await _json(request)
        if not isinstance(body.get("approve"), bool):
            raise ServeError(400, 'Send {"approve": true} or {"approve": false}.')
        manager.answer(session, request.path_params["aid"], body["approve"])
        return JSONResponse({"approved": body["approve"]})

    async def list_artifacts(request: Request) -> Response:
        session = manager.get(request.path_params["sid"])
        return JSONResponse({"artifacts": [
            {"id": key, "name": a.path.name, "kind": a.kind, "tool": a.tool,
             "url": f"/api/sessions/{session.id}/artifacts/{key}"} for key, a in session.artifacts.items()]})

    async def download(request: Request) -> Response:
        session = manager.get(request.path_params["sid"])
        artifact = manager.artifact(session, request.path_params["aid"])
        media = INLINE_TYPES.get(artifact.path.suffix.lower())
        return FileResponse(artifact.path, media_type=media or "application/octet-stream",
                            filename=artifact.path.name, content_disposition_type="inline" if media else "attachment",
                            headers={"Content-Security-Policy": "sandbox; default-src 'none'"})

    async def completions(request: Request) -> Response:
        return await chat_completions(request, manager, await _json(request))

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServeError)
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return JSONResponse({"error": {"code": "http_error", "message": str(getattr(exc, "detail", exc))}},
                            status_code=status)

    sid = "/api/sessions/{sid}"
    routes = [
        Route("/", lambda request: FileResponse(STATIC / "index.html")),
        Route("/api/info", info),
        Route("/api/sessions", create_session, methods=["POST"]),
        Route("/api/sessions", list_sessions, methods=["GET"]),
        Route(sid, delete_session, methods=["DELETE"]),
        Route(f"{sid}/messages", send_message, methods=["POST"]),
        Route(f"{sid}/events", events),
        Route(f"{sid}/cancel", cancel, methods=["POST"]),
        Route(f"{sid}/approvals/{{aid}}", approve, methods=["POST"]),
        Route(f"{sid}/artifacts", list_artifacts),
        Route(f"{sid}/artifacts/{{aid}}", download),
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders), Middleware(TokenGate, token=settings.token)]
    if settings.cors_origins:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                        allow_methods=["GET", "POST", "DELETE"],
                                        allow_headers=["Authorization", "Content-Type", "Last-Event-ID"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={ServeError: refused, 404: http_error, 405: http_error})
    app.state.manager = manager
    return app


class TokenGate:
    """Every request carries the token, when one is set: ``Authorization: Bearer T``, the ``agent_token``
    cookie, or ``?token=T``.

    A request authorised by ``?token=`` (the address printed at start) sets the cookie, HttpOnly and
    SameSite=Strict: the page's own scripts, styles, images and downloads then carry it, other sites'
    requests never do, and the token need not stay in any address.
    """

    COOKIE = "agent_token"

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or scope.get("method") == "OPTIONS":
            return await self.app(scope, receive, send)
        request = Request(scope)
        header = request.headers.get("authorization", "")
        offered = {"header": header[7:].strip() if header.lower().startswith("bearer ") else None,
                   "cookie": request.cookies.get(self.COOKIE), "query": request.query_params.get("token")}
        valid = {how for how, given in offered.items()
                 if given is not None and hmac.compare_digest(given.encode(), self.token.encode())}
        if not valid:
            response = JSONResponse({"error": {"code": "unauthorized", "message": "This server needs its token: send "
                                     "Authorization: Bearer TOKEN (or open /?token=TOKEN once)."}}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await response(scope, receive, send)
        if valid != {"query"}:
            return await self.app(scope, receive, send)
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = f"{self.COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict{secure}".encode()

        async def with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie)]
            await send(message)

        await self.app(scope, receive, with_cookie)


class SecurityHeaders:
    """A strict CSP and friends on every answer (pure ASGI, so streamed answers are not buffered)."""

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
               (b"cache-control", b"no-store")]

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in self.HEADERS if k not in present]]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _read_message(request: Request, agent: Agent, folder: Path) -> tuple[str, list[Path]]:
    """The text and the files of a message (JSON ``{"text": ...}`` or multipart ``text`` + ``files``)."""
    limits = agent.policy.files
    if not request.headers.get("content-type", "").startswith("multipart/"):
        body = await _json(request)
        return _text(body.get("text")), []
    length = _int(request.headers.get("content-length") or "0", "Content-Length")
    if length > limits.max_total_mb * MB + MB:  # refused before a byte of it is read
        raise ServeError(413, f"The upload is over the {limits.max_total_mb:g} MB limit ([files] max_total_mb).",
                         "upload_too_large")
    try:
        form = await request.form(max_files=limits.max_files, max_fields=20)
    except Exception as exc:  # starlette: too many files or fields, a malformed body
        status = 413 if "Too many" in str(exc) else 400
        raise ServeError(status, f"The upload was refused: {getattr(exc, 'detail', exc)} "
                                 f"([files] max_files is {limits.max_files}).", "upload_refused") from None
    try:
        uploads = [item for item in form.getlist("files") if not isinstance(item, str)]
        total = 0
        for item in uploads:
            size = item.size or 0
            total += size
            if size > limits.max_file_mb * MB:
                raise ServeError(413, f"{item.filename} is over the {limits.max_file_mb:g} MB limit for one file "
                                      "([files] max_file_mb).", "upload_too_large")
        if total > limits.max_total_mb * MB:
            raise ServeError(413, f"The files are over the {limits.max_total_mb:g} MB limit ([files] max_total_mb).",
                             "upload_too_large")
        text = form.get("text")
        paths = []
        for item in uploads:
            name = sanitise_name(item.filename or "file")
            path = folder / name
            stem, suffix, n = path.stem, path.suffix, 2
            while path.exists():
                path, n = folder / f"{stem} ({n}){suffix}", n + 1
            paths.append(write_private(path, await item.read()))
        return _text(text if isinstance(text, str) else None, allow_empty=bool(paths)), paths
    finally:
        await form.close()


def _text(value: Any, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or not (value.strip() or allow_empty):
        raise ServeError(400, 'The message has no text: send {"text": "..."} (or a multipart field "text").',
                         "empty_message")
    return value.strip() or "(see the files I handed in)"


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ServeError(400, "The request body is not JSON.", "bad_json") from None
    if not isinstance(body, dict):
        raise ServeError(400, "The request body must be a JSON object.", "bad_json")
    return body


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ServeError(400, f"{name} must be an integer, not {value!r}.") from None
