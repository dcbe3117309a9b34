"""``agent serve`` in-process: the ASGI app on a real uvicorn server on loopback, and an SSE reader."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any, Callable, Iterator

import httpx
import uvicorn

from agent import Agent
from agent.serve import ServeSettings, create_app


class LiveServer:
    """``create_app(agent, settings)`` served by uvicorn on its own thread; ``url`` is its root."""

    def __init__(self, agent: Agent, settings: ServeSettings = ServeSettings(), host: str = "127.0.0.1"):
        self.app = create_app(agent, settings)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="error", lifespan="on", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self.server.serve(sockets=[self.sock]),), name="serve", daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.app.state.manager.end_streams)  # a browser's open streams end now
        self.server.should_exit = True
        self.thread.join(30)
        self.loop.close()
        self.sock.close()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def read_events(client: httpx.Client, session: str, until: Callable[[dict], bool] = lambda e: False,
                after: int = -1, runs: int = 1, **params: Any) -> list[dict[str, Any]]:
    """The session's SSE events from ``after`` on, up to the ``runs``-th ``run_finished`` or one ``until`` accepts."""
    found: list[dict[str, Any]] = []
    with client.stream("GET", f"/api/sessions/{session}/events", params={"after": after, **params}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[len("data: "):])
                found.append(event)
                runs -= event["type"] == "run_finished"
                if not runs or until(event):
                    return found
    return found


def new_session(client: httpx.Client) -> str:
    response = client.post("/api/sessions")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def serve_app(agent: Agent, **settings: Any) -> Iterator[LiveServer]:
    with LiveServer(agent, ServeSettings(**settings)) as live:
        yield live
