"""A whole agent run on a local model: transformers generation → parser → a real tool → observation → answer.

The model is a tiny GLM trained inside the test session (a few seconds on CPU) to reproduce GLM-4
trajectories that call ``add``; nothing is scripted once the run starts.
"""

from __future__ import annotations

import pytest
from tiny_glm import add, trained_tiny_glm

from agent import Agent, Policy
from agent.models.transformers import TransformersModel


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    return trained_tiny_glm(tmp_path_factory.getbasetemp())


@pytest.fixture
def policy() -> Policy:
    return Policy(model={"max_new_tokens": 40})


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
def test_two_tool_calls_then_an_answer(trained_dir, policy):
    with Agent(model=TransformersModel(trained_dir), tools=[add], policy=policy) as agent:
        result = agent.run("What is 2 plus 3 plus 4?")

    assert result.status == "answered", result.error
    assert result.answer == "The answer is 9."
    calls = [(call.name, call.body) for step in result.steps for call in step.tool_calls]
    assert calls == [("add", '{"a": 2, "b": 3}'), ("add", '{"a": 5, "b": 4}')]
    observations = [obs.content for step in result.steps for obs in step.observations]
    assert observations == ["5", "9"]  # computed by the real tool, read back by the model

    # KV-cache reuse across the run: every step after the first prefills only the observation turn
    first, second, third = (step.usage for step in result.steps)
    assert first.reused_tokens == 0
    assert second.reused_tokens == first.prompt_tokens + first.completion_tokens - 1
    assert third.reused_tokens == second.prompt_tokens + second.completion_tokens - 1
    assert result.usage.prefilled_tokens == sum(s.usage.prefilled_tokens for s in result.steps)
    assert result.usage.prefilled_tokens < third.prompt_tokens  # less than one full prompt, for three steps


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
def test_stream_shows_the_tokens_the_model_generated(trained_dir, policy):
    with Agent(model=TransformersModel(trained_dir), tools=[add], policy=policy) as agent:
        events = list(agent.stream("What is 10 plus 7?"))

    tokens: dict[int, str] = {}
    for event in events:
        if event.type == "token":
            tokens[event.step] = tokens.get(event.step, "") + event.text
    turns = {event.step: event.turn.raw for event in events if event.type == "model_turn"}
    assert tokens == turns == {1: 'add\n{"a": 10, "b": 7}', 2: "\n10 plus 7 is 17."}
    assert [event.answer for event in events if event.type == "final_answer"] == ["10 plus 7 is 17."]


def test_without_weights_the_default_model_ends_the_run_with_the_clear_error():
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache("THUDM/glm-4-9b-chat-hf", "config.json"), str):
        pytest.skip("the default GLM-4-9B weights are in this machine's cache")
    with Agent(tools=[add]) as agent:  # no model: the local GLM-4-9B default
        result = agent.run("hi")
    assert result.status == "error"
    assert "--model /path/to/glm-4-9b-chat-hf" in result.error and "--base-url" in result.error


@pytest.mark.slow
def test_a_local_run_warns_of_nothing(trained_dir, policy):
    """transformers renamed `past_key_values` to `cache`: a run uses the current name, so nothing is deprecated."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Agent(model=TransformersModel(trained_dir), tools=[add], policy=policy) as agent:
            assert agent.run("What is 2 plus 3 plus 4?").status == "answered"
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                    and "deprecated" in str(w.message)]
    assert not deprecations, deprecations
