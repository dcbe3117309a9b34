"""``POST /v1/chat/completions``: the agent as a model any OpenAI client can call.

Each request is a fresh session whose history is the request's earlier messages; the last user
message is the task. The answer is the agent's, after a short summary of its tool steps; artifacts
are linked (the session lives on until it is idle, so the links work). ``stream: true`` sends the
summary lines as the steps happen, then the answer, as ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..messages import Message
from .sessions import ServeError, ServerSession, SessionManager


async def chat_completions(request: Request, manager: SessionManager, body: dict[str, Any]) -> Response:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ServeError(400, "messages must be a non-empty list of {role, content} objects.", "bad_messages")
    *history, last = messages
    if last.get("role") != "user":
        raise ServeError(400, "The last message must be the user's: it is the agent's task.", "bad_messages")
    session = manager.create()
    for message in history:
        role = message.get("role")
        if role in ("system", "user", "assistant"):
            session.chat.messages.append(Message(role=role, content=_content(message.get("content"))))
    manager.send(session, _content(last.get("content")))
    base = str(request.base_url).rstrip("/")
    model = body.get("model") or manager.agent.model.name
    created, ident = int(time.time()), f"chatcmpl-{session.id[:16]}"
    if body.get("stream"):
        return EventSourceResponse(_chunks(session, base, model, created, ident), ping=15)
    parts = [text async for text in _pieces(session, base)]
    answer = "".join(parts)
    usage = _usage(session)
    return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": model,
                         "choices": [{"index": 0, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": answer}}],
                         "usage": usage, "session_id": session.id})


async def _chunks(session: ServerSession, base: str, model: str, created: int,
                  ident: str) -> AsyncIterator[dict[str, Any]]:
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    first = {"role": "assistant", "content": ""}
    yield {"data": json.dumps({**head, "choices": [{"index": 0, "delta": first, "finish_reason": None}]})}
    try:
        async for text in _pieces(session, base):
            delta = {"content": text}
            yield {"data": json.dumps({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                                      ensure_ascii=False)}
    except asyncio.CancelledError:  # the client went away: so does its turn
        if session.turn is not None:
            session.turn.cancel()
        raise
    yield {"data": json.dumps({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})}
    yield {"data": "[DONE]"}


async def _pieces(session: ServerSession, base: str) -> AsyncIterator[str]:
    """The text of the reply, as it becomes known: one line per tool step, links, then the answer."""
    async for record in session.records():
        event = json.loads(record.data)
        if record.type == "tool_call":
            call = event["call"]
            body = call.get("body") or json.dumps(call.get("arguments") or {}, ensure_ascii=False)
            yield f"> 🔧 `{call['name']}`: {_short(body)}\n"
        elif record.type == "tool_result":
            observation = event["observation"]
            mark = "⚠️" if observation.get("is_error") else "→"
            yield f"> {mark} {_short(observation.get('content', ''))}\n\n"
        elif record.type == "artifact":
            bang = "!" if event["kind"] == "image" else ""
            yield f"{bang}[{event['name']}]({base}{event['url']})\n\n"
        elif record.type == "approval_request":
            yield f"> ⏸ waiting for approval: POST {base}{event['url']} {{\"approve\": true}}\n\n"
        elif record.type == "final_answer":
            yield event["answer"]
        elif record.type == "error":
            yield f"\n\n(error: {event['message']})"
        elif record.type == "run_finished":
            return


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _usage(session: ServerSession) -> dict[str, int]:
    for record in reversed(session.log):
        if record.type == "run_finished":
            usage = (json.loads(record.data).get("result") or {}).get("usage") or {}
            prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
