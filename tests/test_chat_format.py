"""The chat-format seam: a raw-prompt backend renders and reads through the format it is given."""

import json

from agent import Agent, tool
from agent.messages import ToolCall
from agent.models import RawPromptModel
from agent.models.base import Completion
from agent.protocol.format import ChatFormat, ParsedTurn
from agent.protocol.glm4 import GLM4


class LineFormat(ChatFormat):
    """A toy family: `role: text` lines; a call is `CALL name {json}`."""

    name = "lines"
    stop_reasons = {"\nuser:": "user", "\nresult:": "observation"}
    turn_start = "\nassistant:"

    def render(self, messages, tools=None, add_generation_prompt=True):
        lines = [f"tools: {', '.join(spec.name for spec in tools or [])}"]
        for message in messages:
            text = message.content or " ".join(f"CALL {c.name} {c.body}" for c in message.tool_calls)
            lines.append(f"{'result' if message.role == 'observation' else message.role}: {text}")
        return "\n".join(lines) + (self.turn_start if add_generation_prompt else "")

    def parse(self, text, tool_names, stop_reason=None):
        text = text.strip()
        if text.startswith("CALL "):
            _, name, body = text.split(" ", 2)
            return ParsedTurn(tool_calls=[ToolCall(id="c1", name=name, body=body)])
        return ParsedTurn(content=text)

    def call_body_start(self, segment):
        return None


class Replay(RawPromptModel):
    def __init__(self, completions, chat_format):
        self.completions, self.chat_format, self.prompts = list(completions), chat_format, []

    async def complete(self, prompt, settings, on_token=None, *, tools=None):
        self.prompts.append(prompt)
        return Completion(text=self.completions.pop(0))


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_a_second_format_drives_the_loop():
    model = Replay([' CALL add {"a": 2, "b": 3}', " It is 5."], LineFormat())
    result = Agent(model=model, tools=[add]).run("2+3?")
    assert result.answer == "It is 5." and result.steps[0].observations[0].content == "5"
    assert model.prompts[1] == 'tools: add\nuser: 2+3?\nassistant: CALL add {"a": 2, "b": 3}\nresult: 5\nassistant:'


def test_glm4_is_a_format_like_any_other():
    assert GLM4.turn_start == "<|assistant|>" and GLM4.stop_reasons["<|observation|>"] == "observation"
    assert GLM4.call_body_start('get_weather\n{"city"') == ("get_weather", 12)
    assert GLM4.call_body_start("\nThe answer") is None
    turn = GLM4.parse('get_weather\n{"city": "Oslo"}', ["get_weather"], "observation")
    assert json.loads(turn.tool_calls[0].body) == {"city": "Oslo"}
