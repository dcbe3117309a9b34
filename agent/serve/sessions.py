"""The server's sessions: one :class:`~agent.loop.ChatSession` each, its event log, approvals and artifacts.

A session is isolated by construction: its own ``ChatSession`` (own kernel, browser history and
``runs_dir/<id>/`` files), its own event log, and artifacts it can hand out only by the ids it gave
them. Sessions are capped in number and closed after an idle time (:class:`SessionManager`).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterable

from ..events import Event, RunFinished, ToolResult
from ..loop import Agent, ChatSession
from ..messages import Artifact, ToolCall


class ServeError(Exception):
    """A request the server refuses: an HTTP status and one sentence saying why."""

    def __init__(self, status: int, message: str, code: str = "bad_request"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 16
    idle_timeout_s: float = 1800.0
    approval_timeout_s: float = 600.0


TRANSIENT = ("token", "tool_stream", "tool_progress")  # pieces of what a later event holds whole
_current: contextvars.ContextVar["ServerSession | None"] = contextvars.ContextVar("serve_session", default=None)


@dataclass
class Record:
    """One entry of a session's log: what the SSE stream sends (``seq`` is its SSE id)."""

    seq: int
    type: str
    data: str  # JSON


@dataclass
class ServerSession:
    id: str
    chat: ChatSession
    created: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    log: list[Record] = field(default_factory=list)
    turn: asyncio.Task | None = None
    approvals: dict[str, asyncio.Future] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    closed: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _compacted: int = 0

    @property
    def busy(self) -> bool:
        return self.turn is not None and not self.turn.done()

    @property
    def upload_dir(self) -> Path:
        return self.chat.agent.runs_dir / self.chat.id / "uploads"

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def add(self, type_: str, payload: dict[str, Any] | str) -> None:
        """Append to the log (a payload, or its JSON) and wake the streams that wait (on the loop's thread)."""
        data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, default=str)
        if type_ == "run_started":
            self._compact()
        self.log.append(Record(len(self.log), type_, data))
        self._changed.set()
        self._changed = asyncio.Event()

    def add_event(self, event: Event) -> None:
        self.add(event.type, event.model_dump_json())  # the same JSON as `agent run --json` prints
        if isinstance(event, ToolResult):
            for artifact in event.observation.artifacts:
                self.add("artifact", {"type": "artifact", **self.register(artifact)})

    def _compact(self) -> None:
        """Earlier turns keep no per-piece events: their ``model_turn`` and ``tool_result`` hold the same text.

        So a long conversation's log grows by its steps, not its tokens; a reader that starts late still gets
        the current turn whole. Numbers stay as they were (a reader resumes after the one it saw last).
        """
        for record in self.log[self._compacted:]:
            if record.type in TRANSIENT:
                record.data = ""
        self._compacted = len(self.log)

    def register(self, artifact: Artifact) -> dict[str, Any]:
        """Give an artifact an id of this session (the only way to download it) and describe it."""
        for key, known in self.artifacts.items():
            if known.path == artifact.path:
                break
        else:
            key = secrets.token_urlsafe(9)
        self.artifacts[key] = artifact
        return {"id": key, "name": artifact.path.name, "kind": artifact.kind, "tool": artifact.tool,
                "url": f"/api/sessions/{self.id}/artifacts/{key}"}

    async def records(self, after: int = -1) -> AsyncIterator[Record]:
        """The log from ``after + 1`` on, then each new entry as it comes, until the session closes."""
        position = max(0, after + 1)
        while not self.closed:
            while position < len(self.log):
                record = self.log[position]
                if record.data:  # an earlier turn's tokens are gone (see _compact)
                    yield record
                position += 1
            changed = self._changed
            if position < len(self.log):
                continue
            await changed.wait()

    def wake(self) -> None:
        self._changed.set()


class SessionManager:
    """Creates, finds, expires and closes the sessions of one :class:`Agent`."""

    def __init__(self, agent: Agent, limits: Limits = Limits()):
        self.agent = agent
        self.limits = limits
        self.sessions: dict[str, ServerSession] = {}
        self._reaper: asyncio.Task | None = None
        if agent.approve is None:  # tools the policy marks require_approval ask the session's user
            agent.approve = self.approve

    async def start(self) -> None:
        await self.agent.astart()
        self._reaper = asyncio.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session_id in list(self.sessions):
            await self.delete(session_id)
        await self.agent.aclose()

    def end_streams(self) -> None:
        """End every open event stream (the server is going down: it need not wait for them)."""
        for session in self.sessions.values():
            session.closed = True
            session.wake()

    def create(self) -> ServerSession:
        if len(self.sessions) >= self.limits.max_sessions:
            raise ServeError(429, f"The server holds its maximum of {self.limits.max_sessions} sessions: delete one "
                                  "(DELETE /api/sessions/ID) or wait for an idle one to expire.", "too_many_sessions")
        session = ServerSession(id=secrets.token_urlsafe(16), chat=self.agent.chat())
        self.sessions[session.id] = session
        return session

    def get(self, session_id: str) -> ServerSession:
        session = self.sessions.get(session_id)
        if session is None:
            raise ServeError(404, f"No session {session_id!r}: it was deleted, expired, or never existed.",
                             "no_such_session")
        session.touch()
        return session

    async def delete(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is None:
            raise ServeError(404, f"No session {session_id!r}.", "no_such_session")
        if session.busy:
            assert session.turn is not None
            session.turn.cancel()
            await asyncio.gather(session.turn, return_exceptions=True)
        session.closed = True
        session.wake()
        await session.chat.aclose()
        await asyncio.to_thread(shutil.rmtree, self.agent.runs_dir / session.chat.id, True)

    def send(self, session: ServerSession, text: str, files: Iterable[Path] = ()) -> None:
        """Start a turn; its events go to the session's log."""
        self.check_idle(session)
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()

        def on_event(event: Event) -> None:
            if threading.get_ident() == loop_thread:
                session.add_event(event)
            else:  # tokens and cell output may come from worker threads
                loop.call_soon_threadsafe(session.add_event, event)

        async def turn() -> None:
            _current.set(session)
            try:
                await session.chat.arun(text, files=list(files), on_event=on_event)
            except asyncio.CancelledError:
                pass  # the run recorded its interruption (run_finished, status "interrupted")
            except Exception as exc:  # a file refused on upload, and the like: said in the stream
                session.add("error", {"type": "error", "run_id": "", "message": str(exc)})
                session.add("run_finished", {"type": "run_finished", "run_id": "", "result": None})
            finally:
                for future in session.approvals.values():
                    future.cancel()
                session.approvals.clear()
                session.touch()

        session.touch()
        session.turn = asyncio.create_task(turn())

    @staticmethod
    def check_idle(session: ServerSession) -> None:
        if session.busy:
            raise ServeError(409, "This session is still answering: wait for run_finished, or cancel the turn "
                                  "(POST .../cancel).", "turn_in_progress")

    async def cancel(self, session: ServerSession) -> bool:
        if not session.busy:
            return False
        assert session.turn is not None
        session.turn.cancel()
        await asyncio.gather(session.turn, return_exceptions=True)
        return True

    async def approve(self, call: ToolCall) -> bool:
        """The agent's approver: asks the user of the session the call belongs to, and waits."""
        session = _current.get()
        if session is None:
            return False
        key = secrets.token_urlsafe(9)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        session.approvals[key] = future
        session.add("approval_request", {"type": "approval_request", "id": key, "call": call.model_dump(mode="json"),
                                         "url": f"/api/sessions/{session.id}/approvals/{key}"})
        try:
            verdict = await asyncio.wait_for(future, self.limits.approval_timeout_s)
        except asyncio.TimeoutError:
            verdict = False
        finally:
            session.approvals.pop(key, None)
        session.add("approval_answered", {"type": "approval_answered", "id": key, "approved": verdict})
        return verdict

    def answer(self, session: ServerSession, key: str, approved: bool) -> None:
        future = session.approvals.get(key)
        if future is None or future.done():
            raise ServeError(404, f"No pending approval {key!r} in this session.", "no_such_approval")
        future.set_result(approved)

    def artifact(self, session: ServerSession, key: str) -> Artifact:
        artifact = session.artifacts.get(key)
        if artifact is None or not artifact.path.is_file():
            raise ServeError(404, f"This session has no artifact {key!r}.", "no_such_artifact")
        return artifact

    async def _reap(self) -> None:
        every = max(0.05, min(30.0, self.limits.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.busy and now - session.last_used > self.limits.idle_timeout_s:
                    await self.delete(session.id)

    @staticmethod
    def finished(record: Record) -> bool:
        return record.type == RunFinished.model_fields["type"].default
