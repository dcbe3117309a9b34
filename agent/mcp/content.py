"""MCP results both ways: a server's ``CallToolResult`` as what the model reads (:func:`tool_output`), and an
observation of this project's tools as a ``CallToolResult`` for an MCP client (:func:`call_result`).

Text stays text. Images (and audio, and binary resources) a server sends are saved as run artifacts, as
the built-ins' images are, and the model reads where; embedded text resources are quoted with their URI;
resource links are named. The other way, the built-ins' images become MCP image content, other files
and the browser's citations become resource links.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from typing import Callable

import mcp_types as types

from ..files import media_type
from ..messages import Observation
from ..tool import ToolContext, ToolOutput

MAX_TEXT = 100_000  # characters of one result the model reads; the rest is cut, with a note
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # larger files are linked, not sent inline


def tool_output(result: types.CallToolResult, context: ToolContext, tool: str,
                redact: Callable[[str], str] = str) -> ToolOutput:
    """What the model reads of ``result``: its text, with each file it carried saved under the run's folder;
    ``is_error`` results are error observations. ``redact`` hides secrets in the text."""
    texts: list[str] = []
    artifacts = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            texts.append(block.text)
        elif isinstance(block, (types.ImageContent, types.AudioContent)):
            label = "image" if isinstance(block, types.ImageContent) else "audio"
            data = _decoded(block.data)
            if data is None:
                texts.append(f"[{label} the server sent is not valid base64; it was left out]")
                continue
            artifact = context.save_artifact(data, tool=tool, suffix=_suffix(block.mime_type), kind=_kind(block.mime_type),
                                             description=f"{label} from {tool}")
            artifacts.append(artifact)
            texts.append(f"[{label}: {artifact.path.name}]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                texts.append(f"[resource {resource.uri}]\n{resource.text}")
                continue
            data = _decoded(resource.blob)
            mime = resource.mime_type or mimetypes.guess_type(resource.uri)[0] or "application/octet-stream"
            if data is None:
                texts.append(f"[resource {resource.uri}: not valid base64; it was left out]")
                continue
            artifact = context.save_artifact(data, tool=tool, suffix=_suffix(mime), kind=_kind(mime),
                                             description=f"{resource.uri} from {tool}")
            artifacts.append(artifact)
            texts.append(f"[resource {resource.uri}: saved as {artifact.path.name}]")
        elif isinstance(block, types.ResourceLink):
            about = f": {block.description}" if block.description else ""
            texts.append(f"[link: {block.name} <{block.uri}>{about}]")
    if not result.content and result.structured_content is not None:
        texts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = redact("\n".join(texts))
    if len(text) > MAX_TEXT:
        text = f"{text[:MAX_TEXT]}\n[… {len(text) - MAX_TEXT} more characters were cut]"
    return ToolOutput(text=text or "(no output)", is_error=result.is_error, artifacts=artifacts)


def call_result(observation: Observation) -> types.CallToolResult:
    """An observation as an MCP client reads it: the text, images inline, other files and citations as links.

    Reads the artifacts' files: call it off the event loop.
    """
    content: list[types.ContentBlock] = [types.TextContent(text=observation.content)]
    for artifact in observation.artifacts:
        mime = media_type(artifact.path.name)
        try:
            size = artifact.path.stat().st_size
        except OSError:
            continue  # gone since the tool wrote it
        if mime.startswith("image/") and size <= MAX_IMAGE_BYTES:
            data = base64.b64encode(artifact.path.read_bytes()).decode("ascii")
            content.append(types.ImageContent(data=data, mime_type=mime))
        else:
            content.append(types.ResourceLink(uri=artifact.path.as_uri(), name=artifact.path.name, mime_type=mime,
                                              size=size, description=artifact.description or None))
    for citation in observation.citations:
        content.append(types.ResourceLink(uri=citation.url, name=citation.title or citation.url,
                                          description=f"【{citation.id}†source】"))
    return types.CallToolResult(content=content, is_error=observation.is_error)


def _decoded(data: str) -> bytes | None:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _suffix(mime: str) -> str:
    return {"image/jpeg": ".jpg"}.get(mime) or mimetypes.guess_extension(mime) or ".bin"


def _kind(mime: str) -> str:
    return "image" if mime.startswith("image/") else "file"
