"""Several conversations on one TransformersModel decode together: the same greedy outputs as one at a
time and as ``model.generate``, streaming, stop tokens, cancellation and constrained calls per
conversation, and each conversation's own KV cache across its steps."""

from __future__ import annotations

import asyncio

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_glm import ADD_TRAJECTORIES, add, build_tiny_glm, trained_tiny_glm, training_examples

from agent.messages import Message
from agent.models.transformers import TransformersModel, shared_prefix
from agent.policy import ModelSettings
from agent.protocol import glm4


@pytest.fixture(scope="module")
def tiny_glm_dir(tmp_path_factory):
    return build_tiny_glm(tmp_path_factory.mktemp("glm"))


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    return trained_tiny_glm(tmp_path_factory.getbasetemp())


def prompt(words: int, topic: str = "hello") -> str:
    return glm4.render_prompt([Message(role="user", content=" ".join([topic] * words))])


async def one_at_a_time(directory, prompts: list[str], limits: list[int], **options) -> list:
    model = TransformersModel(directory, reuse_cache=False)
    return [await model.complete(text, ModelSettings(max_new_tokens=limit), **options)
            for text, limit in zip(prompts, limits)]


async def test_greedy_outputs_equal_model_generate_and_one_at_a_time(tiny_glm_dir):
    """Prompts of different lengths and token limits, joining the batch at different moments."""
    prompts = [prompt(3), prompt(40, "world"), prompt(12, "tools"), prompt(1, "hi")]
    limits = [60, 25, 45, 8]
    model = TransformersModel(tiny_glm_dir)
    streamed: list[list[str]] = [[] for _ in prompts]
    first_token = [asyncio.Event() for _ in prompts]

    async def session(index: int):
        if index:  # each one starts while the one before it is decoding
            await first_token[index - 1].wait()
        on_token = lambda piece: (streamed[index].append(piece), first_token[index].set())
        return await model.complete(prompts[index], ModelSettings(max_new_tokens=limits[index]), on_token)

    batched = await asyncio.gather(*(session(index) for index in range(len(prompts))))
    alone = await one_at_a_time(tiny_glm_dir, prompts, limits)

    assert [c.text for c in batched] == [c.text for c in alone]
    assert [c.stop_reason for c in batched] == [c.stop_reason for c in alone]
    assert ["".join(pieces) for pieces in streamed] == [c.text for c in batched]
    assert all(c.usage.completion_tokens <= limit for c, limit in zip(batched, limits))
    # ... and what transformers' own generate writes, with the same stop tokens
    weights, tokenizer = model.model, model.tokenizer
    for text, limit, completion in zip(prompts, limits, batched):
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        output = weights.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=limit, do_sample=False,
                                  eos_token_id=list(model._stop_ids))[0, ids.shape[1]:].tolist()
        if output[-1] in model._stop_ids:
            output = output[:-1]
        assert tokenizer.decode(output, skip_special_tokens=False) == completion.text


async def test_a_late_session_does_not_wait_for_a_long_generation(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir)
    long_prompt, short_prompt = prompt(5), prompt(7, "late")
    (reference,) = await one_at_a_time(tiny_glm_dir, [long_prompt], [300])
    assert reference.stop_reason == "length"  # this prompt makes the random model write all 300 tokens
    early_started = asyncio.Event()
    early_tokens: list[str] = []
    early = asyncio.create_task(model.complete(
        long_prompt, ModelSettings(max_new_tokens=300), lambda piece: (early_tokens.append(piece), early_started.set())))
    await early_started.wait()
    late_first = asyncio.get_running_loop().create_future()

    def on_late_token(piece: str) -> None:
        if not late_first.done():
            late_first.set_result(early.done())

    late = await model.complete(short_prompt, ModelSettings(max_new_tokens=5), on_late_token)
    assert await late_first is False  # its first token came while the early one was still decoding
    assert not early.done()
    assert (await early).text == reference.text
    assert late.text == (await one_at_a_time(tiny_glm_dir, [short_prompt], [5]))[0].text


async def test_cancelling_one_session_leaves_the_others_undisturbed(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir)
    prompts, limits = [prompt(4), prompt(9, "cancel me"), prompt(2, "other")], [80, 3000, 80]
    started = asyncio.Event()
    tasks = [asyncio.create_task(model.complete(text, ModelSettings(max_new_tokens=limit),
                                                (lambda _: started.set()) if index == 1 else None))
             for index, (text, limit) in enumerate(zip(prompts, limits))]
    await started.wait()
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    kept = [await tasks[0], await tasks[2]]
    alone = await one_at_a_time(tiny_glm_dir, [prompts[0], prompts[2]], [80, 80])
    assert [c.text for c in kept] == [c.text for c in alone]
    after = await model.complete(prompts[1], ModelSettings(max_new_tokens=10))  # the cancelled one's cache is whole
    assert after.usage.reused_tokens > 0
    assert after.text == (await one_at_a_time(tiny_glm_dir, [prompts[1]], [10]))[0].text


async def test_each_session_keeps_its_own_cache_when_steps_interleave(tiny_glm_dir):
    """Two conversations whose steps run at once: every step of each reuses that conversation's last prompt."""
    model = TransformersModel(tiny_glm_dir)
    settings = ModelSettings(max_new_tokens=6)

    async def conversation(topic: str) -> list:
        messages = [Message(role="user", content=f"Tell me about {topic}. " * 3)]
        completions = []
        for step in range(4):
            completion = await model.complete(glm4.render_prompt(messages), settings)
            completions.append(completion)
            messages += [Message(role="assistant", content=f"Step {step} on {topic}."),
                         Message(role="user", content=f"More about {topic}, part {step}.")]
        return completions

    runs = await asyncio.gather(conversation("browsers"), conversation("sandboxes"))
    for completions in runs:
        for previous, completion in zip(completions, completions[1:]):
            assert completion.usage.reused_tokens >= previous.usage.prompt_tokens - 1
            assert completion.usage.prefilled_tokens < completion.usage.prompt_tokens / 2


async def test_sessions_beyond_the_cached_number_prefill_again(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir, cached_sessions=2)
    prompts = [prompt(5, topic) for topic in ("one", "two", "three")]
    for text in prompts:
        await model.complete(text, ModelSettings(max_new_tokens=2))
    latest = await model.complete(prompts[2] + "<|user|>\nmore", ModelSettings(max_new_tokens=2))
    oldest = await model.complete(prompts[0] + "<|user|>\nmore", ModelSettings(max_new_tokens=2))
    assert latest.usage.reused_tokens >= len(model.tokenizer(prompts[2], add_special_tokens=False)["input_ids"])
    # "one", the least recently used, lost its cache: only the header all three share is reused
    assert 0 < oldest.usage.reused_tokens < len(model.tokenizer(prompts[0], add_special_tokens=False)["input_ids"]) - 3


def test_shared_prefix_matches_a_walk_over_the_ids():
    cached = list(range(1000))
    for new in (cached, cached[:10], cached + [5], cached[:700] + [1, 2], [7] + cached, [], cached[:64] + [0] * 100):
        walked = next((i for i, (a, b) in enumerate(zip(cached, new)) if a != b), min(len(cached), len(new)))
        assert shared_prefix(cached, new) == walked


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.integers(0, 3), max_size=400), keep=st.integers(0, 400),
       tail=st.lists(st.integers(0, 3), max_size=200))
def test_shared_prefix_equals_the_walk_on_any_ids(ids, keep, tail):
    """Few distinct ids, long lists: prefixes that differ just before, at and after the halving's boundaries."""
    new = ids[:keep] + tail
    walked = next((i for i, (a, b) in enumerate(zip(ids, new)) if a != b), min(len(ids), len(new)))
    assert shared_prefix(ids, new) == walked == shared_prefix(new, ids)


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_constrained_calls_and_stop_tokens_in_a_batch(trained_dir):
    examples = training_examples(ADD_TRAJECTORIES, [add])
    prompts = [text for text, _ in examples]
    limits = [40] * len(prompts)
    model = TransformersModel(trained_dir)
    batched = await asyncio.gather(*(model.complete(text, ModelSettings(max_new_tokens=40), tools=[add.spec])
                                     for text in prompts))
    alone = await one_at_a_time(trained_dir, prompts, limits, tools=[add.spec])
    assert [(c.text, c.stop_reason) for c in batched] == [(c.text, c.stop_reason) for c in alone]
    assert {c.stop_reason for c in batched} == {"observation", "user"}
    assert [c.text + ("<|observation|>" if c.stop_reason == "observation" else "<|user|>") for c in batched] == \
        [target for _, target in examples]


@pytest.mark.slow  # compiles the tiny model's forward pass (about a minute on CPU)
async def test_the_compiled_static_cache_path_writes_what_the_dynamic_one_does(tiny_glm_dir):
    """Alone, a step decodes on a static cache with a compiled forward pass; when another joins, both go on
    in the dynamic batch; KV reuse across steps still holds."""
    model = TransformersModel(tiny_glm_dir, compiled=True)
    first, second = prompt(6), prompt(3, "joins")
    settings = ModelSettings(max_new_tokens=40)
    alone = await model.complete(first, settings)  # compiles
    started = asyncio.Event()
    long = asyncio.create_task(model.complete(first + alone.text + "<|user|>\nagain", ModelSettings(max_new_tokens=300),
                                              lambda _: started.set()))
    await started.wait()
    joined = await model.complete(second, ModelSettings(max_new_tokens=10))
    continued = await long
    expected = await one_at_a_time(tiny_glm_dir, [first, first + alone.text + "<|user|>\nagain", second], [40, 300, 10])
    assert [alone.text, continued.text, joined.text] == [c.text for c in expected]
    assert continued.usage.reused_tokens >= alone.usage.prompt_tokens


async def test_a_step_cancelled_while_it_is_prepared_gives_its_cache_back(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir)
    first = await model.complete(prompt(8), ModelSettings(max_new_tokens=4))
    follow_up = prompt(8) + first.text + "<|user|>\nmore"
    task = asyncio.create_task(model.complete(follow_up, ModelSettings(max_new_tokens=4)))
    await asyncio.sleep(0)  # it is in the worker thread, tokenizing
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    again = await model.complete(follow_up, ModelSettings(max_new_tokens=4))
    assert again.usage.reused_tokens >= first.usage.prompt_tokens


async def test_a_compiled_path_that_fails_to_compile_falls_back_to_plain_decoding(tiny_glm_dir, monkeypatch, caplog):
    """Compiling is checked when the model loads: where it fails (no compiler, an unsupported GPU), steps
    decode without it, with one warning, instead of every step failing."""
    from transformers import PreTrainedModel

    def no_compiler(*args, **kwargs):
        raise RuntimeError("torch._inductor: no C++ compiler found")

    monkeypatch.setattr(PreTrainedModel, "get_compiled_call", lambda self, config: no_compiler)
    model = TransformersModel(tiny_glm_dir, compiled=True)
    text = prompt(6)
    completion = await model.complete(text, ModelSettings(max_new_tokens=12))
    assert "Compiled decoding failed" in caplog.text and "no C++ compiler" in caplog.text
    assert model._decoder.static_forward is None
    (expected,) = await one_at_a_time(tiny_glm_dir, [text], [12])
    assert completion.text == expected.text
