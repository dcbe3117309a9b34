"""The ``agent`` command: ``agent run TASK``, ``agent chat``, ``agent serve``, ``agent tools``, ``agent doctor``,
``agent mcp serve``, ``agent eval``, ``agent batch``.

Exit codes: 0 answered, 1 error, 2 bad usage (a bad flag, an empty task, a file that cannot be handed
in, a policy or tools module that does not load), 3 budget exhausted with no answer, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import sys
import traceback
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.console import Console
from rich.prompt import Confirm
from rich.table import Table
from rich.text import Text

from .display import EventDisplay, error_line, visible
from .errors import AgentError, FileInputError, PolicyError, ToolDefinitionError
from .events import RunFinished
from .files import collect_files
from .importing import import_module_or_file
from .loop import Agent, ChatSession
from .messages import ToolCall
from .models.base import ChatModel
from .policy import Policy, load_policy, policy_schema, policy_table
from .protocol.format import ChatFormat
from .builtins import builtin_names
from .registry import default_builtins
from .tool import Tool

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="A tool-using agent modelled on GLM-4 All Tools.")
err = Console(stderr=True, soft_wrap=True)

EXIT_ERROR, EXIT_USAGE, EXIT_BUDGET, EXIT_INTERRUPTED = 1, 2, 3, 130
CHAT_HELP = ("/upload PATH  hand in a file or folder (the model is told in your next message)\n"
             "/new          start a fresh conversation (a new kernel)\n"
             "/help         this list\n"
             "/exit, /quit  quit (or Ctrl-D); Ctrl-C stops the current turn only")
CHAT_COMMANDS = ("/upload", "/new", "/help", "/exit", "/quit")


class UsageError(AgentError):
    """The command line asks for something that cannot be (exit code 2)."""


class Backend(str, Enum):
    chat = "chat"
    completions = "completions"


# Options shared by `run` and `chat`.
ModelOpt = typer.Option(None, "--model", "-m", help="Local model id or path; with --base-url, the served model's name.")
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible server, e.g. http://localhost:8000/v1.")
ApiKeyOpt = typer.Option(None, "--api-key", envvar="OPENAI_API_KEY", help="API key (default: $OPENAI_API_KEY).")
BackendOpt = typer.Option(None, "--backend", help="With --base-url: 'chat' (native tool calls, default) or "
                                                  "'completions' (GLM-4 prompt rendered here).")
ToolsOpt = typer.Option(None, "--tools", help=f"Comma-separated built-ins ({','.join(builtin_names())}) or 'none'. "
                                              "Default: those the policy enables.")
ModuleOpt = typer.Option(None, "--tools-module", metavar="MODULE", help="A module or .py file whose @tool functions and Tool "
                                                      "instances are added (repeatable).")
PolicyOpt = typer.Option("default", "--policy", help="default, strict, trusted, or a TOML file.")
McpConfigOpt = typer.Option(None, "--mcp-config", metavar="FILE", help='A desktop MCP client\'s JSON config '
                            '({"mcpServers": {...}}): its servers\' tools join the agent\'s (repeatable).')
MaxStepsOpt = typer.Option(None, "--max-steps", min=1, metavar="N", help="Override the policy's [agent] max_steps.")
TranscriptOpt = typer.Option(None, "--transcript", help="Append the run's events (all but per-token ones) to this "
                                                          "JSONL file, flushed as they happen.")
SystemOpt = typer.Option(None, "--system-prompt", help="Text for the system message.")
YesOpt = typer.Option(False, "--yes", "-y", help="Approve every call of tools the policy marks require_approval.")
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks.")
TimeoutOpt = typer.Option(None, "--timeout", min=0.1, metavar="S", help="With --base-url: the longest the server may "
                          "stay silent (default 30 s on this machine or a private network, 120 s otherwise).")
RetriesOpt = typer.Option(None, "--max-retries", min=0, metavar="N", help="With --base-url: tries after the first on "
                          "connection errors, 429 and 5xx (default 3).")
FormatOpt = typer.Option(None, "--format", metavar="glm4|glm45|glm47", help="The model's chat format: glm4 "
                         "(glm-4-9b-chat, GLM-4-0414), glm45 (GLM-4.5/4.6) or glm47 (GLM-4.7, 4.7-Flash). Default: "
                         "read from a local checkpoint; glm4 for a served model. With --backend chat it says only "
                         "which names the built-ins get (glm45, glm47: browser.search, browser.open, browser.find).")
ThinkingOpt = typer.Option(None, "--thinking", metavar="on|off", help="GLM-4.5+ models: think before answering "
                           "(default on).")
NoStreamOpt = typer.Option(False, "--no-stream", help="With --base-url: ask for whole answers instead of a stream.")
FileOpt = typer.Option(None, "--file", "-f", metavar="PATH", help="A file or folder to hand in (repeatable): copied to /mnt/data for "
                                                  "the python tool, or read as a document without it.")
WorkdirOpt = typer.Option(None, "--workdir", metavar="DIR", help="Use this folder as /mnt/data itself: inputs are read from it and "
                                                   "the files the code writes stay in it.")


@app.command()
def run(
    task: Optional[str] = typer.Argument(None, metavar="TASK", help="What the agent should do; '-' reads it from "
                                                                     "standard input."),
    task_file: Optional[Path] = typer.Option(None, "--task-file", metavar="PATH", help="Read the task from a file."),
    model: Optional[str] = ModelOpt, base_url: Optional[str] = BaseUrlOpt, api_key: Optional[str] = ApiKeyOpt,
    backend: Optional[Backend] = BackendOpt, tools: Optional[str] = ToolsOpt,
    tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt, max_steps: Optional[int] = MaxStepsOpt,
    mcp_config: Optional[List[Path]] = McpConfigOpt,
    json_output: bool = typer.Option(False, "--json", help="Print one JSON event per line; the last is the result."),
    transcript: Optional[Path] = TranscriptOpt, system_prompt: Optional[str] = SystemOpt, yes: bool = YesOpt,
    file: Optional[List[Path]] = FileOpt, workdir: Optional[Path] = WorkdirOpt, timeout: Optional[float] = TimeoutOpt,
    max_retries: Optional[int] = RetriesOpt, no_stream: bool = NoStreamOpt, chat_format: Optional[str] = FormatOpt,
    thinking: Optional[str] = ThinkingOpt, debug: bool = DebugOpt,
) -> None:
    """Run one task and print the answer."""
    with _errors(debug):
        task = _read_task(task, task_file)
        agent = _build_agent(model, base_url, api_key, backend, tools, tools_module, policy, max_steps, transcript,
                             system_prompt, yes, interactive=not json_output, files=file, workdir=workdir,
                             mcp_config=mcp_config, one_session=True,
                             served=_served_options(timeout, max_retries, no_stream), chat_format=chat_format,
                             thinking=_on_off(thinking))
        console = Console()
        display = EventDisplay(console, errors=err, code=_code_hints(agent))
        result = None
        try:
            with contextlib.closing(agent.stream(task, files=file or [])) as events:
                for event in events:
                    if json_output:
                        try:
                            sys.stdout.write(event.model_dump_json() + "\n")
                            sys.stdout.flush()
                        except BrokenPipeError:  # `agent run --json | head -1`: the reader has what it wanted
                            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                            return
                    else:
                        display.show(event)
                    if isinstance(event, RunFinished):
                        result = event.result
        except KeyboardInterrupt:
            display.stop()
            err.print(error_line("interrupted: the run was stopped (Ctrl-C)."))
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            agent.close()
        if result is None or result.status == "error":
            if json_output and result is not None:  # the display already said it otherwise
                err.print(error_line(result.error or "the run failed"))
            raise typer.Exit(EXIT_ERROR)
        if result.status == "budget_exhausted" and not result.answer.strip():
            raise typer.Exit(EXIT_BUDGET)  # 3 only when the budget ran out before any answer


@app.command()
def chat(
    model: Optional[str] = ModelOpt, base_url: Optional[str] = BaseUrlOpt, api_key: Optional[str] = ApiKeyOpt,
    backend: Optional[Backend] = BackendOpt, tools: Optional[str] = ToolsOpt,
    tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt, max_steps: Optional[int] = MaxStepsOpt,
    mcp_config: Optional[List[Path]] = McpConfigOpt,
    transcript: Optional[Path] = TranscriptOpt, system_prompt: Optional[str] = SystemOpt, yes: bool = YesOpt,
    file: Optional[List[Path]] = FileOpt, workdir: Optional[Path] = WorkdirOpt, timeout: Optional[float] = TimeoutOpt,
    max_retries: Optional[int] = RetriesOpt, no_stream: bool = NoStreamOpt, chat_format: Optional[str] = FormatOpt,
    thinking: Optional[str] = ThinkingOpt, debug: bool = DebugOpt,
) -> None:
    """Talk with the agent over several turns.

    /upload PATH hands in a file or folder, /new starts a fresh conversation, /help lists the commands,
    /exit (or /quit, or Ctrl-D) quits; Ctrl-C cancels the current turn only.
    """
    with _errors(debug):
        agent = _build_agent(model, base_url, api_key, backend, tools, tools_module, policy, max_steps, transcript,
                             system_prompt, yes, interactive=True, files=file, workdir=workdir,
                             mcp_config=mcp_config,
                             served=_served_options(timeout, max_retries, no_stream), chat_format=chat_format,
                             thinking=_on_off(thinking))
        console = Console()
        display = EventDisplay(console, errors=err, code=_code_hints(agent))
        session = agent.chat()
        history = _line_editing()
        prompt = "\001\x1b[1m\002you> \001\x1b[0m\002" if console.is_terminal else "you> "
        try:
            console.print(Text(f"glm-agent chat · {visible(agent.model.name)} · tools: "
                               f"{', '.join(agent.tools.names) or 'none'} · /help for commands", style="dim"))
            if file:
                _upload(session, file, console)
            while True:
                try:
                    text = input(prompt).strip()  # readline's: the prompt is its own, so redrawing keeps it
                except EOFError:
                    console.print()
                    break
                except KeyboardInterrupt:  # at the prompt, as in a shell: a fresh prompt, not the end
                    console.print(Text("\n(/exit or Ctrl-D quits)", style="dim"))
                    continue
                if text in ("/exit", "/quit"):
                    break
                command = text.split(" ", 1)[0]
                if re.fullmatch(r"/[A-Za-z]+", command) and command not in CHAT_COMMANDS:
                    err.print(error_line(f"{command} is not a command: /help lists them."))
                    continue
                if text == "/help":
                    console.print(Text(CHAT_HELP, style="dim"))
                elif text == "/new":
                    session.close()
                    session = agent.chat()
                elif text.startswith("/upload"):
                    paths = shlex.split(text[len("/upload"):])
                    if paths:
                        _upload(session, [Path(p) for p in paths], console)
                    else:
                        err.print(error_line("/upload takes a path: /upload data.csv"))
                elif text:
                    try:
                        with contextlib.closing(session.stream(text)) as events:
                            for event in events:
                                display.show(event)
                    except KeyboardInterrupt:  # this turn only: history and kernel stay
                        display.stop()
                        err.print(error_line("interrupted: this turn was cancelled; the conversation goes on."))
        finally:
            _save_history(history)
            session.close()
            agent.close()


def _code_hints(agent: Agent) -> dict[str, tuple[str, str]]:
    return {tool.name: tool.code for tool in agent.tools if tool.code is not None}


def _line_editing() -> Path | None:
    """Line editing and history for ``agent chat`` (arrows, Ctrl-R) where readline exists; the history file.

    History is kept in ``$XDG_STATE_HOME/agent/chat_history`` (``~/.local/state``), readable by
    its owner only, as what people type may be private.
    """
    try:
        import readline
    except ImportError:  # a Python without readline (Windows): plain input
        return None
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    path = state / "agent" / "chat_history"
    readline.set_history_length(1000)
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    return path


def _save_history(path: Path | None) -> None:
    if path is None:
        return
    import readline

    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.touch(mode=0o600)
        readline.write_history_file(path)


def _upload(session: ChatSession, paths: list[Path], console: Console) -> None:
    try:
        for where in session.upload(*paths):
            console.print(Text(f"uploaded: {visible(where)}", style="dim"))
    except FileInputError as exc:
        err.print(error_line(str(exc)))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; any but loopback needs a token."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on."),
    token: Optional[str] = typer.Option(None, "--token", envvar="AGENT_SERVE_TOKEN", help="Require this token on "
                                        "every request (default: none on loopback; generated and printed "
                                        "otherwise)."),
    max_sessions: int = typer.Option(16, "--max-sessions", min=1, metavar="N", help="Sessions held at once."),
    idle_timeout: float = typer.Option(1800.0, "--idle-timeout", min=1.0, metavar="S", help="Close a session "
                                       "idle this long."),
    cors_origin: Optional[List[str]] = typer.Option(None, "--cors-origin", metavar="ORIGIN", help="Allow "
                                                    "cross-origin requests from this origin (repeatable; "
                                                    "default none)."),
    model: Optional[str] = ModelOpt, base_url: Optional[str] = BaseUrlOpt, api_key: Optional[str] = ApiKeyOpt,
    backend: Optional[Backend] = BackendOpt, tools: Optional[str] = ToolsOpt,
    tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt, max_steps: Optional[int] = MaxStepsOpt,
    transcript: Optional[Path] = TranscriptOpt, system_prompt: Optional[str] = SystemOpt, yes: bool = YesOpt,
    timeout: Optional[float] = TimeoutOpt, max_retries: Optional[int] = RetriesOpt, no_stream: bool = NoStreamOpt,
    chat_format: Optional[str] = FormatOpt, thinking: Optional[str] = ThinkingOpt, debug: bool = DebugOpt,
) -> None:
    """Serve the agent over HTTP: a web chat at /, an API under /api, and /v1/chat/completions.

    Tools the policy marks require_approval ask in the page (or by POST to the approval URL), unless --yes.
    """
    with _errors(debug):
        try:
            import uvicorn

            from .serve import Limits, ServeSettings, create_app
        except ImportError as exc:
            raise UsageError(f"agent serve needs the server extra ({exc.name} is missing): "
                             "pip install 'glm-agent[serve]'.") from None
        if token is not None:
            if len(token) < 16:
                raise UsageError("--token is too short to keep anyone out: use 16 characters or more "
                                 "(or leave it out for a generated one).")
            hide_from_process_list(token)
        elif host not in ("127.0.0.1", "localhost", "::1"):
            import secrets

            token = secrets.token_urlsafe(24)
            err.print(f"token (needed on every request, bound to {host}): {token}")
        if api_key:
            hide_from_process_list(api_key)
        loaded = load_policy(policy)
        if max_steps is not None:
            loaded = loaded.with_section("agent", max_steps=max_steps)
        if thinking is not None:
            loaded = loaded.with_section("model", thinking=_on_off(thinking))
        items: list = list(_builtin_names(tools, loaded))
        for module in tools_module or []:
            items += load_tools_module(module)
        agent = Agent(tools=items, policy=loaded, system_prompt=system_prompt,
                      approve=(lambda call: True) if yes else None, transcript=transcript)
        agent.model = build_model(model, base_url, api_key, backend, chat_format=chat_format,
                                  **_served_options(timeout, max_retries, no_stream))
        settings = ServeSettings(token=token, cors_origins=tuple(cors_origin or ()),
                                 limits=Limits(max_sessions=max_sessions, idle_timeout_s=idle_timeout))
        shown = f"http://{'[' + host + ']' if ':' in host else host}:{port}/" + (f"?token={token}" if token else "")
        err.print(f"agent serve: {visible(agent.model.name)} · tools: {', '.join(agent.tools.names) or 'none'} · "
                  f"policy {loaded.name} · {shown}")
        uvicorn.run(create_app(agent, settings), host=host, port=port, log_level="warning")


@app.command("policy")
def show_policy(
    schema: bool = typer.Option(False, "--schema", help="Print the JSON Schema of a policy file instead."),
) -> None:
    """Print the policy reference: every section and key, its default and meaning."""
    if schema:
        print(json.dumps(policy_schema(), indent=2, ensure_ascii=False))
    else:
        print(policy_table())


@app.command("tools")
def list_tools(
    tools: Optional[str] = ToolsOpt, tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt,
    mcp_config: Optional[List[Path]] = McpConfigOpt,
    json_output: bool = typer.Option(False, "--json", help="Print the schemas as JSON."),
    chat_format: Optional[str] = typer.Option(None, "--format", metavar="glm4|glm45|glm47", help="List them as a model "
                                              "of this family is shown them (glm45: the browser as browser.search, "
                                              "browser.open, browser.find). Default: glm4."),
    debug: bool = DebugOpt,
) -> None:
    """List the tools an agent would have, with their schemas (MCP servers are started to list theirs)."""
    with _errors(debug):
        fmt = _format_named(chat_format)
        style = fmt.builtin_style if fmt is not None else "all_tools"
        loaded_policy = with_mcp_configs(load_policy(policy), mcp_config)
        names = _builtin_names(tools, loaded_policy)
        registry_items: list = list(names)
        for module in tools_module or []:
            registry_items += load_tools_module(module)
        from .mcp import mcp_servers
        from .registry import ToolRegistry

        registry = ToolRegistry([*registry_items, *mcp_servers(loaded_policy)], policy=loaded_policy,
                                builtin_style=style)
        specs = _listed(registry)  # the built-ins start nothing; MCP servers start, list and stop
        servers = {spec.name: registry.policy_name(spec.name) for spec in specs
                   if registry.policy_name(spec.name) in loaded_policy.mcp.servers}
        if json_output:
            print(json.dumps([{**spec.model_dump(), **({"mcp_server": servers[spec.name]} if spec.name in servers
                                                       else {})} for spec in specs], indent=2, ensure_ascii=False))
            return
        table = Table("tool", "kind", "description / parameters", show_lines=True)
        for spec in specs:
            if spec.builtin:
                detail = spec.description or f"GLM-4 built-in `{spec.builtin}`"
            else:
                params = ", ".join(f"{name}: {_type_label(schema)}"
                                   for name, schema in spec.parameters.get("properties", {}).items())
                detail = f"{spec.description}\n({params})"
            kind = f"MCP: {servers[spec.name]}" if spec.name in servers else "built-in" if spec.builtin else "function"
            table.add_row(Text(visible(spec.name)), Text(visible(kind)), Text(visible(detail)))
        Console().print(table)


def _type_label(schema: Any) -> str:
    """A parameter's JSON Schema type for people: ``integer``, ``integer|null`` for an optional one, else ``any``."""
    if not isinstance(schema, dict):
        return "any"
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        return "|".join(map(str, kind))
    options = schema.get("anyOf") or schema.get("oneOf")
    return "|".join(_type_label(option) for option in options) if isinstance(options, list) else "any"


def _listed(registry: Any) -> list:
    """The specs of a registry's tools, the MCP servers' included (started to learn them, then stopped)."""

    async def discover() -> list:
        try:
            await registry.discover()
            return registry.specs()
        finally:
            await registry.aclose()

    return asyncio.run(discover())


def with_mcp_configs(policy: Policy, paths: list[Path] | None) -> Policy:
    """``policy`` with the servers of each ``--mcp-config`` file added (a file's server replaces the policy's
    server of that name)."""
    if not paths:
        return policy
    from .mcp import load_mcp_config

    servers = dict(policy.mcp.servers)
    for path in paths:
        servers.update(load_mcp_config(path))
    return policy.with_section("mcp", servers=servers)


@app.command()
def doctor(
    policy: str = PolicyOpt,
    json_output: bool = typer.Option(False, "--json", help="Print the findings as JSON."), debug: bool = DebugOpt,
) -> None:
    """Check this machine for the agent: interpreter, sandbox tiers, cgroups, GPU, weights, search. Exit 1 if a check fails."""
    from .doctor import diagnose

    with _errors(debug):
        findings = diagnose(load_policy(policy))
        if json_output:
            print(json.dumps([finding.model_dump() for finding in findings], indent=2, ensure_ascii=False))
        else:
            table = Table(box=None, show_header=False, pad_edge=False)
            styles = {"ok": "green", "warn": "yellow", "fail": "bold red"}
            for finding in findings:
                detail = Text(visible(finding.detail))  # paths and messages from the machine: shown, not obeyed
                if finding.fix:
                    detail.append(f"\nfix: {visible(finding.fix)}", style="cyan")
                table.add_row(Text(finding.status, style=styles[finding.status]), Text(finding.check, style="bold"),
                              detail)
            Console().print(table)
        if any(finding.status == "fail" for finding in findings):
            raise typer.Exit(EXIT_ERROR)


mcp_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="MCP: offer this agent's tools to MCP "
                      "clients. (To use an MCP server's tools, declare it in the policy or pass --mcp-config.)")
app.add_typer(mcp_app, name="mcp")


@mcp_app.command("serve")
def mcp_serve(
    tools: Optional[str] = ToolsOpt, tools_module: Optional[List[str]] = ModuleOpt, policy: str = PolicyOpt,
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio."),
    host: str = typer.Option("127.0.0.1", "--host", help="With --http: the address to listen on; anything but "
                             "loopback needs --token."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="With --http: the port (0: a free one)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="AGENT_MCP_TOKEN", help="With --http: the bearer "
                                        "token clients must send (default: $AGENT_MCP_TOKEN)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run calls of tools the policy marks require_approval "
                             "(refused otherwise: nobody can be asked)."),
    runs_dir: Path = typer.Option(Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
                                  / "agent" / "mcp_runs", "--runs-dir", metavar="DIR",
                                  help="Where each session's files (plots, images) are kept."),
    debug: bool = DebugOpt,
) -> None:
    """Serve the tools over MCP: python (a sandboxed notebook per MCP session), simple_browser, cogview and any
    --tools-module tools, under the policy's limits. stdio by default; --http for streamable HTTP."""
    with _errors(debug):
        if token:
            hide_from_process_list(token)
        given_token = token is not None and token != os.environ.get("AGENT_MCP_TOKEN")  # not just the variable
        if not http and (given_token or host != "127.0.0.1" or port != 8765):
            raise UsageError("--host, --port and --token only apply with --http.")
        from .mcp.server import ToolServer, is_loopback

        if http and token is None and not is_loopback(host):
            raise UsageError(f"--host {host} would let other machines run code in the sandbox: give a bearer token "
                             "(--token, or $AGENT_MCP_TOKEN), or keep the default 127.0.0.1.")
        loaded_policy = load_policy(policy)
        items: list = list(_builtin_names(tools, loaded_policy))
        for module in tools_module or []:
            items += load_tools_module(module)
        from .registry import ToolRegistry
        from .runtime import default_runtime

        registry = ToolRegistry(items, policy=loaded_policy)
        server = ToolServer(registry, runs_dir=runs_dir, approve=yes)

        async def serve() -> None:
            try:
                if http:
                    await server.serve_http(host, port, token, on_ready=lambda url: err.print(
                        f"agent mcp: serving {', '.join(registry.names) or 'no tools'} at {url}"))
                else:
                    await server.serve_stdio()
            finally:
                await registry.aclose()

        signal.signal(signal.SIGTERM, _interrupt)  # stopped by its client or a service manager: wind down alike
        try:
            asyncio.run(serve())
        except KeyboardInterrupt:  # how a server is stopped: not an error
            pass
        finally:
            default_runtime().close()  # the kernels still running end with the server


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def hide_from_process_list(secret: str) -> None:
    """Overwrite ``secret`` where ``ps`` and ``/proc/<pid>/cmdline`` read our command line (Linux).

    A key given as ``--api-key`` would otherwise stay readable to every process of the machine, a
    sandbox's kernel included, for as long as the agent runs. Best effort: elsewhere, a no-op.
    """
    needle = secret.encode()
    try:
        fields = Path("/proc/self/stat").read_bytes().rsplit(b")", 1)[1].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48 and 49 of stat)
        with open("/proc/self/mem", "r+b", buffering=0) as memory:
            memory.seek(start)
            args = memory.read(end - start)
            if needle and needle in args:
                memory.seek(start)
                memory.write(args.replace(needle, b"*" * len(needle)))
    except (OSError, ValueError, IndexError):
        pass


def _build_agent(model: str | None, base_url: str | None, api_key: str | None, backend: Backend | None,
                 tools: str | None, tools_module: list[str] | None, policy: str, max_steps: int | None,
                 transcript: Path | None, system_prompt: str | None, yes: bool, interactive: bool,
                 files: list[Path] | None = None, workdir: Path | None = None,
                 served: dict | None = None, chat_format: str | None = None, thinking: bool | None = None,
                 mcp_config: list[Path] | None = None, one_session: bool = False) -> Agent:
    if api_key:
        hide_from_process_list(api_key)
    loaded_policy = with_mcp_configs(load_policy(policy), mcp_config)
    if max_steps is not None:
        loaded_policy = loaded_policy.with_section("agent", max_steps=max_steps)
    if thinking is not None:
        loaded_policy = loaded_policy.with_section("model", thinking=thinking)
    if one_session:  # no next session to warm a kernel for
        loaded_policy = loaded_policy.with_section("sandbox", pool_refill=False)
    collect_files(files or [], loaded_policy.files)  # a bad path is reported now, before a model loads
    if workdir is not None and workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir} is not a folder: give a folder (it is created if missing).")
    items: list = list(_builtin_names(tools, loaded_policy))
    for module in tools_module or []:
        items += load_tools_module(module)
    approve = (lambda call: True) if yes else (_ask_approval if interactive and sys.stdin.isatty() else None)
    asks_first = loaded_policy.tools.require_approval
    if approve is None and asks_first:  # nobody can be asked: say so now, not only in refused calls
        err.print(f"note: the policy asks before each call to {', '.join(asks_first)}; with no terminal to ask on, "
                  "those calls are refused (--yes approves them).", markup=False, highlight=False)
    agent = Agent(tools=items, policy=loaded_policy, system_prompt=system_prompt, approve=approve,
                  transcript=transcript, workdir=workdir)
    try:  # the model last: a mistake in the flags above should not wait for weights to load
        agent.start()  # kernels warm while the model loads; MCP servers start (one that cannot is said now)
        agent.model = build_model(model, base_url, api_key, backend, chat_format=chat_format, **(served or {}))
    except BaseException:
        agent.close()
        raise
    return agent


def _served_options(timeout: float | None, max_retries: int | None, no_stream: bool) -> dict:
    """The flags that only a served model takes, as its keyword arguments (only those given)."""
    options: dict = {"timeout": timeout, "max_retries": max_retries, "stream": False if no_stream else None}
    return {name: value for name, value in options.items() if value is not None}


def build_model(model: str | None, base_url: str | None, api_key: str | None,
                backend: Backend | None = None, *, chat_format: str | None = None, **served: Any) -> ChatModel:
    """The backend the CLI flags describe: served (chat or completions) with --base-url, else local.

    ``served``: ``timeout``, ``max_retries``, ``stream`` for a served model (usage error without one).
    ``chat_format``: the raw-prompt backends' format; for a chat server, which applies its own template,
    the family it serves (the names the built-ins get).
    """
    from . import models
    from .protocol.formats import chat_format as format_named

    fmt = _format_named(chat_format)
    if base_url:
        if not model:
            raise UsageError("--model is required with --base-url: give the name the server serves the model under.")
        if backend == Backend.completions:
            return models.CompletionsModel(base_url, model, api_key=api_key, chat_format=fmt or format_named("glm4"),
                                           **served)
        return models.OpenAIChatModel(base_url, model, api_key=api_key, chat_format=fmt, **served)
    if backend is not None or served:
        flags = "--backend" if backend is not None else "--timeout, --max-retries and --no-stream"
        verb = "applies" if backend is not None else "apply"
        raise UsageError(f"{flags} only {verb} to served models: add --base-url URL.")
    options: dict[str, Any] = {"chat_format": fmt} if fmt is not None else {}
    local = models.TransformersModel(model, **options) if model else models.TransformersModel(**options)
    local.load()  # now, with its progress bar, rather than in the middle of the first step
    return local


def _format_named(name: str | None) -> ChatFormat | None:
    """The chat format ``--format`` names (``None`` without the flag)."""
    from .protocol import formats

    if name is None:
        return None
    if name not in formats.NAMES:
        raise UsageError(f"--format {name} is not a chat format: use {' or '.join(formats.NAMES)}.")
    return formats.chat_format(name)


def _on_off(value: str | None) -> bool | None:
    if value is None:
        return None
    if value not in ("on", "off"):
        raise UsageError(f"--thinking takes on or off, not {value!r}.")
    return value == "on"


def _builtin_names(tools: str | None, policy: Policy) -> list[str]:
    """The built-ins ``--tools`` names; without the flag, those the policy enables."""
    if tools is None:
        return default_builtins(policy)
    names = [name.strip() for name in tools.split(",") if name.strip() and name.strip() != "none"]
    known = builtin_names()
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"Unknown built-in tool {unknown[0]!r} in --tools: choose from {', '.join(known)}.")
    return names


def load_tools_module(spec: str) -> list[Tool]:
    """Every tool defined at the top level of a module name or a ``.py`` file."""
    try:
        module = import_module_or_file(spec, prefix="_agent_tools_")
    except FileNotFoundError:
        raise UsageError(f"Tools module {spec!r} does not exist.") from None
    except AgentError:
        raise
    except Exception as exc:
        raise ToolDefinitionError(f"Could not import tools module {spec!r}: {type(exc).__name__}: {exc}") from None
    found = [value for value in vars(module).values() if isinstance(value, Tool)]
    if not found:
        raise ToolDefinitionError(f"Tools module {spec!r} defines no @tool functions or Tool objects.")
    return found


def _read_task(task: str | None, task_file: Path | None) -> str:
    """The task from the argument, ``-`` (standard input) or ``--task-file``; an empty one is a usage error."""
    if task_file is not None:
        if task is not None:
            raise UsageError("Give the task either as an argument or with --task-file, not both.")
        try:
            task = task_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--task-file {task_file} cannot be read ({exc.strerror}).") from None
    elif task == "-":
        task = sys.stdin.read()
    if not task or not task.strip():
        raise UsageError("The task is empty: say what the agent should do (an argument, '-' for standard input, "
                         "or --task-file PATH).")
    return task.strip()


def approval_prompt(call: ToolCall) -> Text:
    """The question before a call runs: every byte of it, control characters spelled out, nothing cut."""
    body = call.body if call.body else json.dumps(call.arguments, ensure_ascii=False)
    return Text.assemble("Run ", (visible(call.name), "cyan"), " with:\n", visible(body), "\n?")


def _ask_approval(call: ToolCall) -> bool:
    return Confirm.ask(approval_prompt(call), console=err)


@contextmanager
def _errors(debug: bool) -> Iterator[None]:
    """One clear line on stderr instead of a traceback (unless --debug)."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except (UsageError, FileInputError, PolicyError, ToolDefinitionError) as exc:  # what the user typed or named
        err.print(error_line(str(exc)))
        raise typer.Exit(EXIT_USAGE) from None
    except AgentError as exc:
        if debug:
            traceback.print_exc()
        err.print(error_line(str(exc)))
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        err.print(error_line("interrupted (Ctrl-C)."))
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if debug:
            traceback.print_exc()
        err.print(error_line(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"))
        raise typer.Exit(EXIT_ERROR) from None


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"glm-agent {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """A tool-using agent modelled on GLM-4 All Tools."""


def main() -> None:
    from .eval.cli import register  # `agent eval` and `agent batch`, built on the options above

    register(app)
    app()
