"""glm-agent: a tool-using agent framework modelled on GLM-4 All Tools.

>>> from agent import Agent, tool
>>> from agent.models import ScriptedModel
>>> @tool
... def add(a: int, b: int) -> int:
...     '''Add two integers.'''
...     return a + b
>>> agent = Agent(model=ScriptedModel(['add\\n{"a": 2, "b": 3}', "\\n2 + 3 = 5."]), tools=[add])
>>> agent.run("What is 2+3?").answer
'2 + 3 = 5.'
"""

from .errors import (AgentError, FileInputError, ModelAuthError, ModelConnectionError, ModelError, ModelNotFoundError,
                     PolicyError, ToolDefinitionError, ToolError)
from .events import Event, RunResult, Step
from .loop import Agent, ChatSession
from .messages import Artifact, Citation, Message, Observation, ToolCall, ToolSpec
from .models.base import ChatModel, ModelTurn, RawPromptModel, Usage
from .policy import AgentLimits, FileSettings, ModelSettings, Policy, ToolSettings, load_policy
from .tool import Tool, ToolContext, ToolOutput, tool

__version__ = "0.1.0"

__all__ = [
    "Agent", "ChatSession", "tool", "Tool", "ToolContext", "ToolOutput", "Policy", "load_policy", "RunResult",
    "Step", "Event", "Message", "ToolCall", "ToolSpec", "Observation", "Artifact", "Citation",
    # for authors of tools and backends
    "ChatModel", "RawPromptModel", "ModelTurn", "Usage", "AgentLimits", "ModelSettings", "ToolSettings", "FileSettings",
    "AgentError", "PolicyError", "ToolDefinitionError", "ToolError", "FileInputError", "ModelError",
    "ModelConnectionError", "ModelAuthError", "ModelNotFoundError",
]
