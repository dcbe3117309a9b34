"""``ScriptedModel``: a model that says what you wrote. For tests and for testing your own tools.

>>> model = ScriptedModel(["python\\nprint(1 + 1)", "\\nThe answer is 2."])

Each output is a GLM-4 completion (``name\\nbody`` is a call, as if GLM-4 had stopped on
``<|observation|>``; ``\\ntext`` an answer), a :class:`ModelTurn`, or the output is a function
``(messages, tools) -> str | ModelTurn``. With ``chat_format=`` another family's completions are read
in its format, and the model knows the built-ins by that family's names (:attr:`builtin_style`):

>>> from agent.protocol.glm45 import GLM45
>>> model = ScriptedModel(["<tool_call>browser.search\\n<arg_key>query</arg_key>\\n<arg_value>GLM-4.6</arg_value>\\n"
...                        "</tool_call>", "Found it."], chat_format=GLM45)

:meth:`ScriptedModel.from_transcript` replays a recorded run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, Union

from ..errors import ModelError
from ..messages import Message, ToolSpec
from ..policy import ModelSettings
from ..protocol.format import ChatFormat
from ..protocol.glm4 import GLM4
from .base import ChatModel, Completion, ModelTurn, TokenCallback, Usage, turn_from_completion

Script = Union[str, ModelTurn]


class ScriptedModel(ChatModel):
    def __init__(self, outputs: Sequence[Script] | Callable[[list[Message], list[ToolSpec]], Script], *,
                 chat_format: ChatFormat = GLM4):
        self._outputs = outputs if callable(outputs) else list(outputs)
        self.chat_format = chat_format  # how text outputs are read
        self.calls = 0
        self.seen: list[list[Message]] = []  # the conversation at each call, for assertions in tests

    @classmethod
    def from_transcript(cls, path: str | Path, *, chat_format: ChatFormat = GLM4) -> "ScriptedModel":
        """Replay the model turns a transcript recorded (its ``model_turn`` events, in order); ``chat_format``:
        the recorded model's, so the tools keep the names it called them by."""
        from ..transcript import read_transcript  # transcripts know events, which know models: import late

        return cls([event.turn for event in read_transcript(path) if event.type == "model_turn"],
                   chat_format=chat_format)

    async def generate(self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings,
                       on_token: TokenCallback | None = None) -> ModelTurn:
        self.seen.append(list(messages))
        if callable(self._outputs):
            output = self._outputs(messages, tools)
        elif self.calls < len(self._outputs):
            output = self._outputs[self.calls]
        else:
            raise ModelError(f"ScriptedModel ran out of outputs after {len(self._outputs)} turns.")
        self.calls += 1
        if isinstance(output, ModelTurn):
            turn = output.model_copy(deep=True)
            text = turn.raw or turn.content
        else:
            text = output
            usage = Usage(completion_tokens=len(text.split()))
            stop = self.chat_format.implied_stop(text, [spec.name for spec in tools])
            turn = turn_from_completion(Completion(text=text, stop_reason=stop, usage=usage), tools, self.chat_format)
        if on_token is not None and text:
            on_token(text)  # one piece: a script has no token boundaries worth faking
        return turn

    @property
    def builtin_style(self) -> str:
        return self.chat_format.builtin_style
