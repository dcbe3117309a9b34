"""TransformersModel on tiny GLM-4 models built here: loading, stop tokens, streaming, KV-cache reuse."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
import torch
from tiny_glm import (
    ADD_TRAJECTORIES,
    add,
    build_tiny_glm,
    build_tokenizer,
    stop_token_ids,
    trained_tiny_glm,
    training_examples,
)
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from agent.errors import ModelError, ModelNotFoundError
from agent.messages import Message, ToolCall
from agent.models.base import Usage
from agent.models._tokenizing import PromptTokenizer
from agent.models import transformers as transformers_backend
from agent.models.transformers import IncrementalDecoder, TransformersModel
from agent.policy import ModelSettings
from agent.protocol import glm4
from agent.protocol.formats import chat_format

GREEDY = ModelSettings(max_new_tokens=12)
TRAINED = ModelSettings(max_new_tokens=40)  # room for a whole call or answer of the trained model


@pytest.fixture(scope="session")
def tiny_glm_dir(tmp_path_factory):
    return build_tiny_glm(tmp_path_factory.mktemp("glm"))


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    return trained_tiny_glm(tmp_path_factory.getbasetemp())


def conversation(turns: int) -> list[list[Message]]:
    """The conversations an agent sends at each of ``turns`` steps: each one extends the last."""
    messages = [Message(role="user", content="What is 2 plus 3? Use the tool.")]
    snapshots = [list(messages)]
    for step in range(turns - 1):
        call = ToolCall(id=f"c{step}", name="add", body=json.dumps({"a": step, "b": 3}))
        messages += [Message(role="assistant", tool_calls=[call]),
                     Message(role="observation", content=str(step + 3), tool_call_id=f"c{step}", name="add")]
        snapshots.append(list(messages))
    return snapshots


async def run_steps(model: TransformersModel, snapshots: list[list[Message]]) -> list:
    return [await model.complete(glm4.render_prompt(messages, [add.spec]), GREEDY) for messages in snapshots]


# --- the tiny model and its tokenizer --------------------------------------------------------------


def test_tokenizer_keeps_glm4_special_tokens_whole():
    tokenizer = build_tokenizer()
    prompt = glm4.render_prompt([Message(role="user", content="你好, what is 2+3?")], [add.spec])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:3] == ["[gMASK]", "<sop>", "<|system|>"]
    assert tokens[-1] == "<|assistant|>"
    assert tokenizer.decode(ids, skip_special_tokens=False) == prompt
    assert len(set(stop_token_ids(tokenizer))) == 3


@pytest.mark.parametrize("architecture, class_name", [("glm", "GlmForCausalLM"), ("glm4", "Glm4ForCausalLM")])
async def test_loads_through_from_pretrained_and_generates(tmp_path, architecture, class_name):
    directory = build_tiny_glm(tmp_path / architecture, architecture=architecture)
    model = TransformersModel(directory)
    tokens: list[str] = []
    completion = await model.complete(glm4.render_prompt([Message(role="user", content="hi")]), GREEDY, tokens.append)
    assert type(model.model).__name__ == class_name
    assert model.model.dtype == torch.float32 and model.device.type == "cpu"
    assert completion.stop_reason in ("length", "eos", "user", "observation")
    assert "".join(tokens) == completion.text
    assert completion.usage.prompt_tokens == completion.usage.prefilled_tokens > 0
    assert 0 < completion.usage.completion_tokens <= GREEDY.max_new_tokens


@pytest.mark.parametrize("saved, cpu_computes_bf16, loaded", [
    ("bfloat16", True, torch.bfloat16),   # GLM-4-9B on a CPU with AMX: half the memory, faster
    ("bfloat16", False, torch.float32),   # without bf16 units, bf16 is emulated and much slower
    ("float32", True, torch.float32),     # a float32 checkpoint stays float32
])
async def test_cpu_dtype_follows_the_checkpoint_and_the_cpu(tmp_path, monkeypatch, saved, cpu_computes_bf16, loaded):
    directory = build_tiny_glm(tmp_path / saved, dtype=saved)
    monkeypatch.setattr(transformers_backend, "_cpu_computes_bf16", lambda: cpu_computes_bf16)
    model = TransformersModel(directory, device="cpu")
    completion = await model.complete(glm4.render_prompt([Message(role="user", content="hi")]), GREEDY)
    assert model.model.dtype == loaded
    assert completion.usage.completion_tokens > 0
    assert TransformersModel(directory, device="cpu", dtype="float32").load().dtype == torch.float32  # asked for


async def test_tokens_stream_on_the_event_loop_thread(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir)
    threads = set()
    pieces: list[str] = []

    def on_token(piece: str) -> None:
        threads.add(threading.get_ident())
        pieces.append(piece)

    completion = await model.complete(glm4.render_prompt([Message(role="user", content="hi")]),
                                      ModelSettings(max_new_tokens=8), on_token)
    assert threads == {threading.get_ident()}
    assert "".join(pieces) == completion.text
    assert completion.stop_reason == "length" and completion.usage.completion_tokens == 8


def test_incremental_decoder_never_splits_a_character():
    tokenizer = build_tokenizer()
    text = "你好，世界! 图像描述 cogview"
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(token) for token in tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


class CountingTokenizer:
    """A tokenizer that records the length of each text it is given (the rest is the real one's)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.lengths = tokenizer, []

    def __call__(self, text, **options):
        self.lengths.append(len(text))
        return self.tokenizer(text, **options)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


def growing_prompts(chat_format, steps: int) -> list[str]:
    """The prompts of an agent run: calls, observations (English, Chinese, code) and a final answer."""
    messages = [Message(role="user", content="你好! What is 2 plus 3, then fibonacci(10)? Use the tools.")]
    tools = [add.spec]
    prompts = [chat_format.render(messages, tools)]
    for step in range(steps - 1):
        call = ToolCall(id=f"c{step}", name="add", body=json.dumps({"a": step, "b": 3}))
        observation = f"{step + 3} 结果 def f(n):\n    return n  # {'x' * step}" if step % 2 else str(step + 3)
        messages += [Message(role="assistant", content=f"Adding {step} and 3.", tool_calls=[call]),
                     Message(role="observation", content=observation, tool_call_id=f"c{step}", name="add")]
        prompts.append(chat_format.render(messages, tools))
    messages.append(Message(role="assistant", content="The answer is 5."))
    messages.append(Message(role="user", content="And 40 plus 2?"))
    prompts.append(chat_format.render(messages, tools))
    return prompts


@pytest.mark.parametrize("format_name", ["glm4", "glm45"])
def test_prompt_ids_equal_a_whole_tokenization_at_every_step(format_name):
    whole = build_tokenizer(glm45=format_name == "glm45")
    counting = CountingTokenizer(whole)
    tokenizer = PromptTokenizer(counting)
    prompts = growing_prompts(chat_format(format_name), steps=8)
    for prompt in prompts:
        assert tokenizer(prompt) == whole(prompt, add_special_tokens=False)["input_ids"]
    # after the first prompt (and a one-off check of the seams), each step tokenized only from the end of the
    # previous prompt's last turn header on, not the conversation
    for prompt, previous, length in zip(prompts[1:], prompts, counting.lengths[-len(prompts) + 1:]):
        assert length <= len(prompt) - len(previous) + 40 < len(prompt)


def test_prompt_ids_fall_back_to_a_whole_tokenization_when_the_prefix_changes():
    whole = build_tokenizer()
    tokenizer = PromptTokenizer(whole)
    prompts = growing_prompts(chat_format("glm4"), steps=4)
    edited = prompts[-1].replace("2 plus 3", "7 plus 8")
    no_seam = prompts[-1] + "abc"  # text appended without a special token: BPE may merge across the old end
    for prompt in [*prompts, edited, prompts[-1], no_seam, no_seam + "def 你好", prompts[0]]:
        assert tokenizer(prompt) == whole(prompt, add_special_tokens=False)["input_ids"]


# --- errors ---------------------------------------------------------------------------------------


def test_missing_weights_say_how_to_get_them(tmp_path):
    for missing in ("THUDM/glm-4-not-downloaded-here", str(tmp_path / "nowhere"), str(tmp_path)):
        with pytest.raises(ModelNotFoundError) as info:
            TransformersModel(missing)
        message = str(info.value)
        assert "--model /path/to/glm-4-9b-chat-hf" in message and "--base-url" in message
        assert "\n" not in message


def test_a_tokenizer_without_glm4_stop_tokens_is_refused(tmp_path):
    directory = build_tiny_glm(tmp_path / "glm")
    bare = Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=bare, unk_token="[UNK]").save_pretrained(directory)
    with pytest.raises(ModelError, match="not a GLM-4 chat model"):
        TransformersModel(directory).load()


async def test_prompts_the_model_cannot_take_are_refused_with_a_reason(tmp_path):
    model = TransformersModel(build_tiny_glm(tmp_path / "short", max_positions=64))
    with pytest.raises(ModelError, match="more than the model's context of 64"):
        await model.complete(glm4.render_prompt([Message(role="user", content="hi " * 100)]), GREEDY)
    with pytest.raises(ModelError, match="prompt is empty"):
        await model.complete("", GREEDY)


async def test_sampling_follows_the_policy_settings(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir, reuse_cache=False)
    prompt = glm4.render_prompt([Message(role="user", content="hi")])
    sampled = ModelSettings(temperature=1.5, top_p=0.9, max_new_tokens=16)
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append((await model.complete(prompt, sampled)).text)
    greedy = (await model.complete(prompt, ModelSettings(max_new_tokens=16))).text
    assert runs[0] == runs[1]  # same seed, same draw
    assert len({runs[0], runs[2], greedy}) > 1  # sampling is not greedy decoding


async def test_the_policy_decides_sampling_not_the_checkpoint(tmp_path):
    """GLM-4-9B's generation_config.json samples (temperature 0.8, top_p 0.8); the policy's temperature 0 is greedy."""
    directory = build_tiny_glm(tmp_path / "glm")
    prompt = glm4.render_prompt([Message(role="user", content="hi")])
    greedy = (await TransformersModel(directory, reuse_cache=False).complete(prompt, ModelSettings(max_new_tokens=16)))
    config = GenerationConfig.from_pretrained(directory)
    config.update(do_sample=True, temperature=0.8, top_p=0.8, top_k=5)
    config.save_pretrained(directory)
    model = TransformersModel(directory, reuse_cache=False)
    for seed in (0, 1):
        torch.manual_seed(seed)
        assert (await model.complete(prompt, ModelSettings(max_new_tokens=16))).text == greedy.text


# --- KV-cache reuse -------------------------------------------------------------------------------


async def test_greedy_output_with_reuse_equals_output_without(tiny_glm_dir):
    snapshots = conversation(turns=5)
    reused = await run_steps(TransformersModel(tiny_glm_dir), snapshots)
    full = await run_steps(TransformersModel(tiny_glm_dir, reuse_cache=False), snapshots)

    assert [c.text for c in reused] == [c.text for c in full]
    assert all(c.usage.reused_tokens == 0 for c in full)
    prompts = [c.usage.prompt_tokens for c in reused]
    for previous, completion in zip(prompts, reused[1:]):
        # the previous prompt is always reused; only the new turn (and what the model got wrong) is prefilled
        assert completion.usage.reused_tokens >= previous
        assert completion.usage.prefilled_tokens == completion.usage.prompt_tokens - completion.usage.reused_tokens
    total = sum((c.usage for c in reused), Usage())
    baseline = sum((c.usage for c in full), Usage())
    assert total.prefilled_tokens < baseline.prefilled_tokens / 2


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_each_token_is_prefilled_once_when_the_model_wrote_the_history(trained_dir):
    """With the conversation the model itself wrote, step N+1 prefills only the observation."""
    model = TransformersModel(trained_dir)
    examples = training_examples(ADD_TRAJECTORIES[1:2], [add])  # 3 steps: two calls, then the answer
    completions = [await model.complete(prompt, TRAINED) for prompt, _ in examples]
    assert [c.stop_reason for c in completions] == ["observation", "observation", "user"]
    assert [c.text + "<|observation|>" for c in completions[:2]] == [t for _, t in examples[:2]]
    for (prompt, target), completion, following in zip(examples, completions, completions[1:]):
        # reused: the prompt and every generated token but the stop token, which was never fed back
        assert following.usage.reused_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens - 1
    total = sum((c.usage for c in completions), Usage())
    assert total.prefilled_tokens + sum(c.usage.completion_tokens - 1 for c in completions[:-1]) == \
        completions[-1].usage.prompt_tokens


async def test_edited_history_falls_back_to_the_shared_prefix(tiny_glm_dir):
    model, fresh = TransformersModel(tiny_glm_dir), TransformersModel(tiny_glm_dir, reuse_cache=False)
    first = conversation(turns=3)[-1]
    edited = [Message(role="user", content="What is 7 plus 1? Use the tool.")] + first[1:]
    await model.complete(glm4.render_prompt(first, [add.spec]), GREEDY)
    prompt = glm4.render_prompt(edited, [add.spec])
    completion = await model.complete(prompt, GREEDY)
    expected = await fresh.complete(prompt, GREEDY)

    assert completion.text == expected.text
    ids = lambda text: model.tokenizer(text, add_special_tokens=False)["input_ids"]
    old, new = ids(glm4.render_prompt(first, [add.spec])), ids(prompt)
    shared = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
    assert completion.usage.reused_tokens == shared
    assert completion.usage.prefilled_tokens == len(new) - shared

    other = await model.complete("<|user|>\nno shared prefix", GREEDY)
    assert other.usage.reused_tokens == 0


async def test_cancelling_a_generation_leaves_the_model_usable(tiny_glm_dir):
    model = TransformersModel(tiny_glm_dir)
    prompt = glm4.render_prompt([Message(role="user", content="hi")])
    started = asyncio.Event()
    task = asyncio.create_task(model.complete(prompt, ModelSettings(max_new_tokens=3000), lambda _: started.set()))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await model.complete(prompt, GREEDY)  # waits for the worker thread to let go of the cache
    expected = await TransformersModel(tiny_glm_dir, reuse_cache=False).complete(prompt, GREEDY)
    assert after.text == expected.text
    assert after.usage.reused_tokens > 0


# --- stop tokens on the trained model ---------------------------------------------------------------


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_stop_reasons_and_raw_text_of_calls_and_answers(trained_dir):
    model = TransformersModel(trained_dir)
    (call_prompt, call_target), (answer_prompt, answer_target) = training_examples(ADD_TRAJECTORIES[:1], [add])
    call = await model.complete(call_prompt, TRAINED)
    answer = await model.complete(answer_prompt, TRAINED)
    assert (call.text, call.stop_reason) == ('add\n{"a": 2, "b": 3}', "observation")
    assert (answer.text, answer.stop_reason) == ("\n2 plus 3 is 5.", "user")
    assert call_target == call.text + "<|observation|>" and answer_target == answer.text + "<|user|>"


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_generate_parses_the_call(trained_dir):
    model = TransformersModel(trained_dir)
    turn = await model.generate([Message(role="user", content="What is 10 plus 7?")], [add.spec], TRAINED)
    assert [(c.name, c.body) for c in turn.tool_calls] == [("add", '{"a": 10, "b": 7}')]
    assert turn.stop_reason == "observation" and turn.raw == 'add\n{"a": 10, "b": 7}'


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
async def test_aclose_frees_the_weights_and_a_later_step_reloads(trained_dir):
    model = TransformersModel(trained_dir)
    prompt, _ = training_examples(ADD_TRAJECTORIES[3:], [add])[0]
    first = await model.complete(prompt, TRAINED)
    await model.aclose()
    assert model.model is None
    again = await model.complete(prompt, TRAINED)
    assert again.text == first.text == "\nHello!" and again.usage.reused_tokens == 0


@pytest.mark.slow  # trains the tiny GLM (seconds) when it is the first to need it
def test_trained_model_is_a_real_glm(trained_dir):
    assert type(AutoModelForCausalLM.from_pretrained(trained_dir)).__name__ == "GlmForCausalLM"
