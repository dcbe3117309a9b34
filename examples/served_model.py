"""A GLM-4 served by vLLM or SGLang, with the async API.

Serve the model (on a GPU machine):

    vllm serve THUDM/glm-4-9b-chat-hf --served-model-name glm-4-9b-chat --enable-prefix-caching

then:

    python examples/served_model.py http://localhost:8000/v1 glm-4-9b-chat

``CompletionsModel`` sends the exact GLM-4 prompt rendered here (the server's prefix cache reuses it
across steps); ``--chat`` uses the server's chat API with native tool calls instead.
"""

import asyncio
import sys

from agent import Agent, tool
from agent.models import CompletionsModel, OpenAIChatModel


@tool
def population(city: str) -> int:
    """Population of a city, in people.

    Args:
        city: the city's English name
    """
    return {"beijing": 21_893_095, "shanghai": 24_870_895}.get(city.lower(), 0)


async def main(base_url: str, model_name: str, use_chat_api: bool) -> None:
    model = (OpenAIChatModel if use_chat_api else CompletionsModel)(base_url, model_name)
    async with Agent(model=model, tools=[population]) as agent:
        async for event in agent.astream("How many more people live in Shanghai than in Beijing?"):
            if event.type == "token":
                print(event.text, end="", flush=True)
            elif event.type == "tool_result":
                print(f"\n[{event.observation.tool}] {event.observation.content}")
            elif event.type == "run_finished":
                if event.result.status == "error":
                    sys.exit(f"\nerror: {event.result.error}")
                print(f"\n=> {event.result.answer}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python examples/served_model.py BASE_URL MODEL_NAME [--chat]")
    asyncio.run(main(sys.argv[1], sys.argv[2], "--chat" in sys.argv[3:]))
