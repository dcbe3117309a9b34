"""``TransformersModel``: GLM-4 running locally on transformers, with its KV cache kept across steps.

An agent's prompt only grows: step N+1's prompt is step N's prompt, plus what the model wrote, plus
the observation. Backends that re-read the whole conversation at every step pay a prefill that grows
with each step (quadratic over a run). This backend keeps the KV cache and the token ids it covers;
at the next step it crops the cache to the longest prefix it shares with the new prompt and hands both
to ``model.generate``, which prefills only the tokens the cache lacks. When the prefix changed (edited
history, another conversation) it falls back to a full prefill, so reuse never changes what the model
sees: greedy output with reuse equals greedy output without it. Decoding, sampling, stop tokens and
streaming are transformers' own; what this module adds to them is the prefix bookkeeping.

>>> model = TransformersModel("/models/glm-4-9b-chat-hf")    # doctest: +SKIP
>>> agent = Agent(model=model, tools=["python"])            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import inspect
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..errors import ModelError, ModelNotFoundError
from ..messages import ToolSpec
from ..policy import ModelSettings
from ..protocol import formats
from ..protocol.format import ChatFormat
from ._tokenizing import PromptTokenizer
from .base import Completion, RawPromptModel, StopReason, TokenCallback, Usage
from .hub import hub_unavailable

if TYPE_CHECKING:  # torch and transformers load only when a local model is used
    import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "THUDM/glm-4-9b-chat-hf"
HOW_TO_GET_WEIGHTS = ("download the weights and pass `--model /path/to/glm-4-9b-chat-hf`, "
                      "or serve GLM-4 with vLLM and use `--base-url`")
_CPU_WARNING_PARAMETERS = 1_000_000_000


class TransformersModel(RawPromptModel):
    """GLM-4 chat models (``GlmForCausalLM``, GLM-4-0414's ``Glm4ForCausalLM``) on transformers.

    Args:
        model_id_or_path: a local directory saved with ``save_pretrained`` or a Hugging Face id
            (already in the local cache, or downloadable).
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``…; the first GPU when there is one.
        dtype: ``torch.bfloat16`` or its name; bf16 on CUDA and float32 on CPU by default.
        load_in_4bit: load 4-bit weights with bitsandbytes (CUDA only; about 6 GB for GLM-4-9B).
        reuse_cache: keep the KV cache across steps (turn off only to measure what it saves).
        trust_remote_code: for checkpoints that ship their own modelling code (the non ``-hf`` ones).

    Weights load on first use (or call :meth:`load`), with transformers' progress bar.
    """

    def __init__(self, model_id_or_path: str | os.PathLike[str] = DEFAULT_MODEL, device: str | None = None,
                 dtype: str | torch.dtype | None = None, *, load_in_4bit: bool = False,
                 reuse_cache: bool = True, trust_remote_code: bool = False, chat_format: ChatFormat | None = None,
                 thinking: bool = True):
        self.model_id = str(model_id_or_path)
        self.requested_device, self.requested_dtype = device, dtype
        self.load_in_4bit = load_in_4bit
        self.reuse_cache = reuse_cache
        self.trust_remote_code = trust_remote_code
        self._source = _locate(self.model_id)  # fails now, not at the first step, when there are no weights
        # The checkpoint says which format it was trained on (GLM-4, or GLM-4.5+ for the MoE family).
        self.chat_format = chat_format or formats.chat_format(_checkpoint_format(self._source), thinking=thinking)
        self.model: Any = None
        self.tokenizer: Any = None
        self._prompt_tokenizer: Any = None  # a PromptTokenizer: tokenizes only what each step added
        self._stop_ids: dict[int, StopReason] = {}
        self._cache: Any = None
        self._cache_name: str | None = None  # "cache" (transformers 5.24+) or "past_key_values"
        self._cached_ids: list[int] = []  # the tokens whose keys and values self._cache holds
        self._lock = threading.Lock()  # one generation at a time: they share the cache

    @property
    def name(self) -> str:
        return f"transformers:{self.model_id}"

    @property
    def device(self) -> torch.device:
        return self.load().device

    # --- loading ----------------------------------------------------------------------------------

    def load(self) -> Any:
        """Load the tokenizer and weights now (the first step does it otherwise); returns the model."""
        with self._lock:
            if self.model is None:
                self._load()
            return self.model

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = torch.device(self.requested_device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = self.requested_dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        options: dict[str, Any] = {"dtype": dtype, "device_map": str(device),
                                   "trust_remote_code": self.trust_remote_code}
        if self.load_in_4bit:
            options["quantization_config"] = _four_bit_config(device, dtype)
        log.info("Loading %s on %s (%s)", self.model_id, device, str(dtype).removeprefix("torch."))
        try:
            tokenizer = AutoTokenizer.from_pretrained(self._source, trust_remote_code=self.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(self._source, **options)
        except OSError as exc:  # missing files, or the hub could not be reached
            raise ModelNotFoundError(f"Could not load the weights of {self.model_id!r} ({_first_line(exc)}): "
                                     f"{HOW_TO_GET_WEIGHTS}.") from None
        model.eval()
        if device.type == "cpu" and model.num_parameters() > _CPU_WARNING_PARAMETERS:
            log.warning("Running a %.0fB-parameter model on CPU: expect seconds per token; use a GPU or "
                        "--base-url for real work.", model.num_parameters() / 1e9)
        self.tokenizer, self.model = tokenizer, model
        self._prompt_tokenizer = PromptTokenizer(tokenizer)
        self._stop_ids = _stop_ids(tokenizer, self.model_id, self.chat_format)
        mismatch = formats.template_mismatch(self.chat_format, tokenizer)
        if mismatch:  # the KV reuse and the model's accuracy both rest on the prompt it was trained on
            log.warning("%s's chat template and the %s format render differently: %s. Pass chat_format= "
                        "(--format) if the checkpoint is of another family.", self.model_id, self.chat_format.label,
                        mismatch)

    # --- generation -------------------------------------------------------------------------------

    async def complete(self, prompt: str, settings: ModelSettings, on_token: TokenCallback | None = None,
                       *, tools: list[ToolSpec] | None = None) -> Completion:
        """Continue a rendered GLM-4 prompt until a stop token; ``tools`` enable constrained calls."""
        loop = asyncio.get_running_loop()
        emit = None
        if on_token is not None:
            # tokens are produced in a worker thread; the callback runs on the event loop's thread
            emit = lambda piece: loop.call_soon_threadsafe(on_token, piece)
        cancelled = threading.Event()
        try:
            return await asyncio.to_thread(self._complete, prompt, settings, tools or [], emit, cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # the thread stops after its current token and leaves the cache consistent
            raise

    def _complete(self, prompt: str, settings: ModelSettings, tools: list[ToolSpec],
                  emit: Callable[[str], Any] | None, cancelled: threading.Event) -> Completion:
        import torch

        self.load()
        prompt_ids = self._prompt_tokenizer(prompt)  # equal to tokenizing the whole prompt, at the cost of the new text
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if not prompt_ids:
            raise ModelError("The prompt is empty: pass a rendered prompt (the model's chat_format.render).")
        if limit and len(prompt_ids) >= limit:
            raise ModelError(f"The conversation is {len(prompt_ids)} tokens, more than the model's context of "
                             f"{limit}: start a new run or lower the output size of tools.")
        max_new_tokens = min(settings.max_new_tokens, limit - len(prompt_ids)) if limit else settings.max_new_tokens
        with self._lock, torch.inference_mode():
            try:
                return self._generate(prompt_ids, max_new_tokens, settings, tools, emit, cancelled)
            except BaseException:
                self.reset_cache()  # a half-written cache must not be reused
                raise

    def _generate(self, prompt_ids: list[int], max_new_tokens: int, settings: ModelSettings, tools: list[ToolSpec],
                  emit: Callable[[str], Any] | None, cancelled: threading.Event) -> Completion:
        """``model.generate`` on top of the cached prefix: it prefills only the tokens the cache lacks."""
        import torch
        from transformers import DynamicCache, StoppingCriteriaList

        from ._generation import Cancelled, TokenStreamer, sampling_arguments

        reused = self._reuse_prefix(prompt_ids)
        if self._cache is None:
            self._cache = DynamicCache(config=self.model.config)
        streamer = None
        if emit is not None:
            streamer = TokenStreamer(IncrementalDecoder(self.tokenizer), emit, skip=set(self._stop_ids))
        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        output = self.model.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
            eos_token_id=list(self._stop_ids), logits_processor=self._logits_processors(settings, tools),
            stopping_criteria=StoppingCriteriaList([Cancelled(cancelled)]), streamer=streamer,
            **sampling_arguments(settings), **{self._cache_argument(): self._cache})
        generated = output[0, len(prompt_ids):].tolist()
        self._cached_ids = prompt_ids + generated[:-1]  # the last token was never fed back
        if self._cache.get_seq_length() != len(self._cached_ids):  # not what this version of generate left
            self.reset_cache()
        stop_reason: StopReason = self._stop_ids.get(generated[-1], "length") if generated else "length"
        body = generated[:-1] if stop_reason != "length" else generated
        text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        usage = Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(generated),
                      prefilled_tokens=len(prompt_ids) - reused, reused_tokens=reused)
        return Completion(text=text, stop_reason=stop_reason, usage=usage)

    def _cache_argument(self) -> str:
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 6.0); older
        # ones know only the old name. Asked of the model once, so no run warns or breaks on either side.
        if self._cache_name is None:
            self._cache_name = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
                else "past_key_values"
        return self._cache_name

    def _reuse_prefix(self, prompt_ids: list[int]) -> int:
        """Crop the cache to the longest prefix it shares with the prompt; returns that length.

        At least one prompt token is always fed again, since the next token's logits come from it.
        """
        if not self.reuse_cache or self._cache is None:
            self.reset_cache()
            return 0
        shared = 0
        for cached, new in zip(self._cached_ids, prompt_ids[:-1]):
            if cached != new:
                break
            shared += 1
        surplus = self._cache.get_seq_length() - shared
        if shared == 0 or not getattr(self._cache, "is_croppable", True):
            self.reset_cache()
            return 0
        if surplus > 0:
            self._cache.crop(-surplus)  # negative: drop that many tokens from the end
        del self._cached_ids[shared:]
        return shared

    def reset_cache(self) -> None:
        """Forget the KV cache; the next step prefills its whole prompt."""
        self._cache, self._cached_ids = None, []

    def _logits_processors(self, settings: ModelSettings, tools: list[ToolSpec]) -> Any:
        from transformers import LogitsProcessorList

        processors = LogitsProcessorList()
        # GLM-4's built-ins take free text; GLM-4.5+ writes every call, built-ins too, as typed pairs
        constrained = tools if self.chat_format.call_syntax == "xml" else [tool for tool in tools if not tool.builtin]
        if settings.constrained_calls and constrained:
            from .constrained import ToolCallConstraint

            processors.append(ToolCallConstraint(self.tokenizer, tools, self.chat_format))
        return processors

    async def aclose(self) -> None:
        """Free the KV cache and the weights (a later step loads them again)."""
        await asyncio.to_thread(self._unload)  # waits for a generation still finishing its token

    def _unload(self) -> None:
        with self._lock:
            on_gpu = self.model is not None and self.model.device.type == "cuda"
            self.reset_cache()
            self.model = self.tokenizer = self._prompt_tokenizer = None
        if on_gpu:
            import torch

            gc.collect()
            torch.cuda.empty_cache()  # give the memory back to other processes, not just to torch's pool


class IncrementalDecoder:
    """Turns token ids into text pieces as they come, holding back bytes of an unfinished character.

    Byte-level tokens may split a character (a Chinese character is three bytes); decoding a sliding
    window and waiting while it ends in U+FFFD emits each character once, whole.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""  # everything emitted so far
        self._prefix = 0  # window start: a few tokens back, so merges at the boundary decode right
        self._read = 0  # tokens already turned into text

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix:self._read])
        after = self._decode(self.ids[self._prefix:])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        piece = after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += piece
        return piece

    def flush(self) -> str:
        """What was held back: the text of the tokens so far that no piece carried yet."""
        rest = self._decode(self.ids)[len(self.text):]
        self.text += rest
        return rest

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _checkpoint_format(source: str) -> str:
    """The chat format of a local folder or a cached hub checkpoint, from its config.json."""
    if Path(source).is_dir():
        return formats.format_of_checkpoint(source)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    return formats.format_of_checkpoint(Path(cached).parent) if isinstance(cached, str) else "glm4"


def _locate(model_id: str) -> str:
    """Where the weights are: a local directory, a cached or downloadable hub id; raises when nowhere.

    Looks at the disk and the environment; for an id that is not cached, it only checks (one TCP
    connect) that the hub can be reached, so a machine without network fails in a second with a clear
    message instead of retrying downloads for a minute.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{model_id!r} is a directory without config.json, not a saved model: "
                                     f"{HOW_TO_GET_WEIGHTS}.")
        return str(path)
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:  # a path, not an `org/name` id
        raise ModelNotFoundError(f"There is no model directory at {model_id!r}: {HOW_TO_GET_WEIGHTS}.")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return model_id
    why = hub_unavailable()
    if why:
        raise ModelNotFoundError(f"The weights of {model_id!r} are not on this machine and {why}: "
                                 f"{HOW_TO_GET_WEIGHTS}.")
    return model_id  # from_pretrained downloads it; a failure there raises ModelNotFoundError too


def _stop_ids(tokenizer: Any, model_id: str, chat_format: ChatFormat) -> dict[int, StopReason]:
    """The tokenizer's ids of the format's stop tokens (151329, 151336, 151338 for GLM-4-9B's)."""
    vocabulary = tokenizer.get_vocab()
    missing = [token for token in chat_format.stop_tokens if token not in vocabulary]
    if missing:
        raise ModelError(f"{model_id!r} is not a {chat_format.label} chat model: its tokenizer lacks {', '.join(missing)}; "
                         "use a GLM-4 chat checkpoint such as THUDM/glm-4-9b-chat-hf.")
    return {vocabulary[token]: cast(StopReason, reason) for token, reason in chat_format.stop_reasons.items()}


def _four_bit_config(device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("4-bit loading needs bitsandbytes: pip install 'glm-agent[quantization]'.") from None
    if device.type != "cuda":
        raise ModelError("4-bit loading needs a CUDA GPU: drop load_in_4bit on this machine.")
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
