"""Tiny GLM-4 models for tests, built offline in milliseconds: no hub, no downloaded weights.

``build_tokenizer()`` trains a small byte-level BPE tokenizer that carries GLM-4's special tokens, so
prompts rendered by :mod:`agent.protocol.glm4` tokenize the way they do for the real model (special
tokens stay whole, everything else is bytes). ``build_tiny_glm(directory)`` saves a random
``GlmForCausalLM`` (or GLM-4-0414's ``Glm4ForCausalLM``) with that tokenizer through
``save_pretrained``, so tests load it back through the real ``from_pretrained`` path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from agent.builtins import builtin_class
from agent.protocol import glm4
from agent.protocol import glm45 as glm45_tags
from agent.tool import tool

# GLM-4's own special tokens, in its order; the stop tokens among them end generation.
SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>",) + tuple(t for t in glm4.SPECIAL_TOKENS if t != "<|endoftext|>")

# A little of everything GLM-4 prompts contain: the system intro, tool schemas, code, JSON, English.
_CORPUS = [
    glm4.SYSTEM_INTRO,
    *(f"\n## {name}\n\n{builtin_class(name).builtin_prompt}" for name in ("python", "simple_browser", "cogview")),
    ('{"name": "add", "description": "Add two integers.", "parameters": {"type": "object", "properties": '
     '{"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}'),
    "在调用上述函数时，请使用 Json 格式表示调用的参数。",
    "What is 2 plus 3? The answer is 5. What is the weather in Beijing today? It is sunny.",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\nprint(fibonacci(10))",
    'search("latest news", recency_days=7)\nmclick([0, 2, 5])\nopen_url("https://example.com")',
    "A watercolor painting of a cat sitting on a windowsill at sunset, warm light, soft colors.",
    "0123456789 + - * / = ( ) [ ] { } , . : ; ! ? ' \" \n\t",
]


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 640, *,
                    glm45: bool = False) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer with GLM-4's special tokens (ids 0..11, ``<|endoftext|>`` first);
    ``glm45``: also GLM-4.5's tags (``<tool_call>``, ``<arg_key>``, ``<think>``…) as single tokens that
    are not special, as in the real GLM-4.5 tokenizer.

    Any text tokenizes (byte fallback is built in), special tokens are never split, and
    ``decode(..., skip_special_tokens=False)`` gives the text back exactly.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(list(corpus) if corpus is not None else _CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        clean_up_tokenization_spaces=False, model_max_length=131072,
    )
    if glm45:
        fast.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in glm45_tags.ADDED_TOKENS])
    return fast


def stop_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """The ids of GLM-4's stop tokens in this tokenizer (151329, 151336, 151338 in the real one)."""
    return tokenizer.convert_tokens_to_ids(list(glm4.STOP_TOKENS))


Architecture = Literal["glm", "glm4", "glm4_moe"]


def tiny_glm_config(tokenizer: PreTrainedTokenizerFast, *, architecture: Architecture = "glm",
                    hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                    intermediate_size: int = 128, initializer_range: float = 0.2, max_positions: int = 4096,
                    vocab_size: int | None = None):
    """A GLM config shrunk to test size, with the real model's shape of attention (GQA, partial RoPE).

    ``glm`` is glm-4-9b-chat's ``GlmForCausalLM``, ``glm4`` GLM-4-0414's ``Glm4ForCausalLM``, ``glm4_moe``
    the GLM-4.5 family's mixture of experts (``Glm4MoeForCausalLM``: a dense first layer, then routed and
    shared experts).
    """
    from transformers import Glm4Config, Glm4MoeConfig, GlmConfig

    config_cls = {"glm": GlmConfig, "glm4": Glm4Config, "glm4_moe": Glm4MoeConfig}[architecture]
    experts = ({"moe_intermediate_size": intermediate_size // 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
                "n_shared_experts": 1, "first_k_dense_replace": 1} if architecture == "glm4_moe" else {})
    return config_cls(**experts,
        vocab_size=vocab_size or len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=hidden_size // num_heads, max_position_embeddings=max_positions,
        # a wider init than the real 0.02 so a random tiny model's greedy choices are not near-ties
        initializer_range=initializer_range,
        eos_token_id=stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
    )


def build_tiny_glm(directory: str | Path, *, architecture: Architecture = "glm", seed: int = 0,
                   tokenizer: PreTrainedTokenizerFast | None = None, dtype: str = "float32",
                   **config_overrides) -> Path:
    """Save a random tiny GLM (``GlmForCausalLM``; ``architecture="glm4"``: ``Glm4ForCausalLM``;
    ``"glm4_moe"``: GLM-4.5's ``Glm4MoeForCausalLM``) and its tokenizer under ``directory``; returns the
    directory, ready for ``from_pretrained``.

    ``config_overrides`` (``hidden_size``, ``num_layers``…) also build bigger random GLMs for benchmarks.
    """
    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    tokenizer = tokenizer or build_tokenizer(glm45=architecture == "glm4_moe")
    config = tiny_glm_config(tokenizer, architecture=architecture, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# --- a tiny GLM trained in seconds to reproduce GLM-4-format trajectories ---------------------------


def training_examples(trajectories: Iterable[tuple[str, list[str]]], tools: list) -> list[tuple[str, str]]:
    """(prompt, target) pairs: each scripted completion after the exact prompt the agent loop renders.

    A trajectory is a task and the raw GLM-4 completions the model should write, step by step
    (``'add\\n{"a": 2, "b": 3}'`` is a call, ``"\\n5."`` an answer). Running them through the real
    ``Agent`` with a ``ScriptedModel`` makes the tools produce the observations the trained model
    will later see. Each target ends with its stop token: ``<|observation|>`` after a call,
    ``<|user|>`` after an answer.
    """
    from agent import Agent
    from agent.models import ScriptedModel

    examples = []
    for task, outputs in trajectories:
        scripted = ScriptedModel(outputs)
        with Agent(model=scripted, tools=tools) as agent:
            result = agent.run(task)
            specs = agent.tools.specs()
        assert result.status == "answered", result.error
        for seen, output in zip(scripted.seen, outputs):
            stop = glm4.implied_stop(output, [s.name for s in specs])
            examples.append((glm4.render_prompt(seen, specs), output + ("<|observation|>" if stop == "observation"
                                                                         else "<|user|>")))
    return examples


def train_tiny_glm(directory: str | Path, examples: list[tuple[str, str]], *, steps: int = 80,
                   learning_rate: float = 1e-2, seed: int = 0, **config_overrides) -> Path:
    """Train a tiny ``GlmForCausalLM`` on (prompt, target) pairs, loss on the targets only; save it.

    About 80 full-batch steps memorise a handful of trajectories in a few seconds on two CPU cores.
    """
    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    tokenizer = build_tokenizer(_CORPUS + [prompt + target for prompt, target in examples],
                                glm45=config_overrides.get("architecture") == "glm4_moe")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_glm_config(tokenizer, **config_overrides))
    rows = []
    for prompt, target in examples:
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(target, add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


# What the trained tiny model learns: calls to `add`, observations, answers; one- and two-step runs.
ADD_TRAJECTORIES: list[tuple[str, list[str]]] = [
    ("What is 2 plus 3?", ['add\n{"a": 2, "b": 3}', "\n2 plus 3 is 5."]),
    ("What is 2 plus 3 plus 4?", ['add\n{"a": 2, "b": 3}', 'add\n{"a": 5, "b": 4}', "\nThe answer is 9."]),
    ("What is 10 plus 7?", ['add\n{"a": 10, "b": 7}', "\n10 plus 7 is 17."]),
    ("Say hello.", ["\nHello!"]),
]

_trained: dict[Path, Path] = {}


def glm47_examples(trajectories: Iterable[tuple[str, list[str]]], tools: list) -> list[tuple[str, str]]:
    """:func:`training_examples` for GLM-4.7: each completion (written after the prompt's opening
    ``<think>``) after the exact prompt the agent renders for it, ended by its stop token."""
    from agent import Agent
    from agent.models import RawPromptModel
    from agent.models.base import Completion
    from agent.protocol.glm45 import CALL_OPEN, GLM47

    class Replay(RawPromptModel):
        chat_format = GLM47

        def __init__(self, outputs: list[str]):
            self.outputs, self.examples = list(outputs), []

        async def complete(self, prompt, settings, on_token=None, *, tools=None):
            output = self.outputs.pop(0)
            stop = "observation" if CALL_OPEN in output else "user"
            self.examples.append((prompt, output + ("<|observation|>" if stop == "observation" else "<|user|>")))
            return Completion(text=output, stop_reason=stop)

    examples = []
    for task, outputs in trajectories:
        model = Replay(outputs)
        with Agent(model=model, tools=tools) as agent:
            result = agent.run(task)
        assert result.status == "answered", result.error
        examples += model.examples
    return examples


def _add_call(a: int, b: int) -> str:
    return f"<tool_call>add<arg_key>a</arg_key><arg_value>{a}</arg_value><arg_key>b</arg_key><arg_value>{b}</arg_value></tool_call>"


# The same tasks as GLM-4.7 would write them: reasoning first, XML calls, answers after an empty think.
ADD_TRAJECTORIES_GLM47: list[tuple[str, list[str]]] = [
    ("What is 2 plus 3?", ["Use add.</think>" + _add_call(2, 3), "Got 5.</think>2 plus 3 is 5."]),
    ("What is 2 plus 3 plus 4?", ["First 2+3.</think>" + _add_call(2, 3), "Then 5+4.</think>" + _add_call(5, 4),
                                  "Got 9.</think>The answer is 9."]),
    ("What is 10 plus 7?", ["Use add.</think>" + _add_call(10, 7), "Got 17.</think>10 plus 7 is 17."]),
    ("Say hello.", ["No tool needed.</think>Hello!"]),
]


def trained_tiny_glm47(base: Path) -> Path:
    """A tiny GLM-4.5-architecture (MoE) model trained on :data:`ADD_TRAJECTORIES_GLM47`, saved with a
    GLM-4.7 chat template so it is read as GLM-4.7 by itself; trained once per process under ``base``."""
    key = base / "trained-glm47"
    if key not in _trained:
        from transformers import AutoTokenizer

        directory = train_tiny_glm(key, glm47_examples(ADD_TRAJECTORIES_GLM47, [add]), architecture="glm4_moe")
        tokenizer = AutoTokenizer.from_pretrained(directory)
        tokenizer.chat_template = (Path(__file__).parent / "glm47_template.jinja").read_text(encoding="utf-8")
        tokenizer.save_pretrained(directory)
        _trained[key] = directory
    return _trained[key]


def trained_tiny_glm(base: Path) -> Path:
    """The tiny GLM trained on :data:`ADD_TRAJECTORIES`, trained once per process under ``base``."""
    if base not in _trained:
        _trained[base] = train_tiny_glm(base / "trained-glm", training_examples(ADD_TRAJECTORIES, [add]))
    return _trained[base]
