"""Typed errors. Each carries one sentence for people: what went wrong and how to fix it."""

from __future__ import annotations


class AgentError(Exception):
    """Base class of every error this package raises on purpose."""


class PolicyError(AgentError):
    """A policy file or value is invalid."""


class ToolDefinitionError(AgentError):
    """A tool cannot be registered (bad signature, duplicate name, unknown built-in)."""


class ModelError(AgentError):
    """A model backend failed in a way retrying will not fix."""


class ModelConnectionError(ModelError):
    """The model server could not be reached after retries."""


class ModelAuthError(ModelError):
    """The server refused the API key (401/403)."""


class ModelNotFoundError(ModelError):
    """The server or the local disk does not have the requested model."""


class FileInputError(AgentError):
    """A file handed to the agent cannot be taken: missing, unreadable, not a plain file, or over a limit."""


class ToolError(AgentError):
    """A tool could not do what it was asked (its sandbox cannot start, say); the model reads the message."""
