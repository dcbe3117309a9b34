"""MCP both ways, on the official SDK (``mcp``).

- As a client (:mod:`agent.mcp.client`): the tools of the MCP servers a policy declares
  (``[mcp.servers.NAME]``, :mod:`agent.mcp.settings`) or a desktop client's JSON config names
  (:func:`load_mcp_config`) join an agent's tools as ``NAME__tool`` (:mod:`agent.mcp.names`).
- As a server (:mod:`agent.mcp.server`): ``agent mcp serve`` offers this project's tools — the sandboxed
  ``python`` with a notebook per MCP session, ``simple_browser``, ``cogview``, your ``@tool`` functions —
  to any MCP client, over stdio or streamable HTTP.

Importing this package imports nothing of the SDK; the SDK loads when a server starts or is served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .names import tool_name
from .settings import MCPServerSettings, MCPSettings, load_mcp_config

if TYPE_CHECKING:
    from ..policy import Policy
    from ..tool import Tool

__all__ = ["MCPServerSettings", "MCPSettings", "MCPTools", "load_mcp_config", "mcp_servers", "tool_name"]


def mcp_servers(policy: "Policy") -> list["Tool"]:
    """An :class:`~agent.mcp.client.MCPTools` for each server ``policy`` declares (none: the SDK stays unloaded)."""
    if not policy.mcp.servers:
        return []
    from .client import MCPTools

    return [MCPTools(name, settings) for name, settings in policy.mcp.servers.items()]


def __getattr__(name: str) -> Any:
    if name == "MCPTools":  # loads the SDK
        from .client import MCPTools

        return MCPTools
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
