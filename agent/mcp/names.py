"""What an MCP server's tools are called here: ``SERVER__TOOL``.

The server's name (the key of ``[mcp.servers.NAME]`` or of ``mcpServers``), two underscores, then the
tool's own name with every character a GLM-4 function name cannot hold (anything but letters, digits,
``_`` and ``-``) replaced by ``_``:

>>> tool_name("files", "read_file")
'files__read_file'
>>> tool_name("github", "search.issues")
'github__search_issues'

A server's name has no ``__`` and does not end in ``_`` (see :data:`~agent.mcp.settings.SERVER_NAME_RULE`),
so the first ``__`` of a name always ends the server's part: two servers' tools never share a name, and
no built-in (``python``, ``simple_browser``, ``cogview``, ``browser.search``...) has ``__`` in its name.
Where replacing characters would make two tools of one server alike, or a name would pass 64
characters, the tool's part is cut and ends in ``_`` and six hex digits of a hash of its own name, so each
keeps a name of its own.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 64  # agent.tool.is_tool_name's limit, and OpenAI's
SEPARATOR = "__"
_INVALID = re.compile(r"[^A-Za-z0-9_\-]")


def tool_name(server: str, tool: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The name the model calls ``tool`` of ``server`` by; ``taken``: names already given to that server's
    other tools (a name that would repeat one gets a hash of ``tool``)."""
    prefix = f"{server}{SEPARATOR}"
    name = prefix + (_INVALID.sub("_", tool) or "_")
    if len(name) <= MAX_NAME and name not in taken:
        return name
    digest = hashlib.sha1(tool.encode("utf-8")).hexdigest()[:6]
    return f"{name[:MAX_NAME - 7]}_{digest}"
