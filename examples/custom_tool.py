"""Custom tools: a ``@tool`` function and a class-based tool with state.

Use them from the command line:

    agent run "Convert 120 dollars to yen" --tools none --tools-module examples/custom_tool.py \\
        --base-url http://localhost:8000/v1 --model glm-4-9b-chat

or run this file to try them with a scripted model (no model server needed):

    python examples/custom_tool.py
"""

from typing import Literal

from agent import Agent, Tool, tool
from agent.models import ScriptedModel

RATES = {"EUR": 0.92, "JPY": 151.3, "GBP": 0.79}


@tool
def convert(amount: float, currency: Literal["EUR", "JPY", "GBP"] = "EUR") -> str:
    """Convert US dollars to another currency.

    Args:
        amount: amount in US dollars
        currency: ISO code of the target currency
    """
    return f"{amount * RATES[currency]:.2f} {currency}"


class Notebook(Tool):
    """A tool with state: notes that last as long as the agent."""

    name = "notebook"
    description = "Write a note, or read all notes back."

    def __init__(self) -> None:
        self.notes: list[str] = []

    def forward(self, action: Literal["write", "read"], text: str = "") -> list[str] | str:
        """Use the notebook.

        Args:
            action: 'write' adds `text` as a note; 'read' returns every note
            text: the note to write
        """
        if action == "write":
            self.notes.append(text)
            count = len(self.notes)
            return f"Noted ({count} note{'' if count == 1 else 's'} so far)."
        return self.notes


notebook = Notebook()

if __name__ == "__main__":
    # A scripted model plays GLM-4, so you can see your tools run without a model server.
    model = ScriptedModel([
        'convert\n{"amount": 120, "currency": "JPY"}',
        'notebook\n{"action": "write", "text": "120 USD = 18156.00 JPY"}',
        "\n120 US dollars are 18,156 yen; I wrote that down.",
    ])
    result = Agent(model=model, tools=[convert, notebook]).run("Convert 120 dollars to yen and note it.")
    for step in result.steps:
        for call, observation in zip(step.tool_calls, step.observations):
            print(f"{call.name}({call.body}) -> {observation.content}")
    print("answer:", result.answer)
