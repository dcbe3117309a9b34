"""Typed sandbox errors: each message says what went wrong and how to fix it."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class of the sandbox's errors; the message is one sentence for a person."""


class SandboxUnavailableError(SandboxError):
    """The isolation the policy asks for cannot be provided on this machine."""


class KernelStartError(SandboxError):
    """A kernel did not start (the message carries the launcher's last words)."""


class SandboxClosedError(SandboxError):
    """The sandbox was used after it was closed."""
