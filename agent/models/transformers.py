"""``TransformersModel``: GLM-4 running locally on transformers, with its KV cache kept across steps.

An agent's prompt only grows: step N+1's prompt is step N's prompt, plus what the model wrote, plus
the observation. Backends that re-read the whole conversation at every step pay a prefill that grows
with each step (quadratic over a run). This backend keeps, for each conversation it serves (up to
``cached_sessions`` of them), the KV cache and the token ids it covers; at the next step it crops the
cache to the longest prefix it shares with the new prompt, so only the tokens the cache lacks are
prefilled. When the prefix changed (edited history, another conversation) it falls back to a full
prefill, so reuse never changes what the model sees: greedy output with reuse equals greedy output
without it.

Decoding is :class:`~agent.models._decoding.BatchDecoder`'s: the steps of several conversations at
once (agents in a web UI, an eval run) decode together, one forward pass giving each its next token,
instead of taking turns; a step that starts while others decode joins them at the next token.

>>> model = TransformersModel("/models/glm-4-9b-chat-hf")    # doctest: +SKIP
>>> agent = Agent(model=model, tools=["python"])            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import importlib.util
import inspect
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
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

    from ._decoding import BatchDecoder, Generation

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
        dtype: ``torch.bfloat16`` or its name. By default bf16 on CUDA; on CPU bf16 for a checkpoint saved
            in bf16 (GLM-4-9B) where the CPU computes bf16 natively (AMX or AVX-512 BF16), else float32.
        load_in_4bit: load 4-bit weights with bitsandbytes (CUDA only; about 6 GB for GLM-4-9B).
        reuse_cache: keep the KV cache across steps (turn off only to measure what it saves).
        cached_sessions: how many conversations keep their KV cache between steps (the least recently
            used one loses it first); with more at once, the others prefill their whole prompt.
        compiled: a step decoding alone runs on a static KV cache with a ``torch.compile``'d forward pass
            (CUDA graphs on a GPU); the default is on CUDA only (on CPU compiling takes longer than it saves).
        trust_remote_code: for checkpoints that ship their own modelling code (the non ``-hf`` ones).

    Weights load on first use (or call :meth:`load`), with transformers' progress bar.
    """

    def __init__(self, model_id_or_path: str | os.PathLike[str] = DEFAULT_MODEL, device: str | None = None,
                 dtype: str | torch.dtype | None = None, *, load_in_4bit: bool = False,
                 reuse_cache: bool = True, cached_sessions: int = 8, compiled: bool | None = None,
                 trust_remote_code: bool = False, chat_format: ChatFormat | None = None, thinking: bool = True):
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
        self._stop_ids: dict[int, StopReason] = {}
        self._cache_name: str | None = None  # "cache" (transformers 5.24+) or "past_key_values"
        self._decoder: BatchDecoder | None = None  # runs the forward passes of every step, batched
        self.cached_sessions = cached_sessions
        self.compiled = compiled
        self._sessions: list[_Session] = []  # the conversations with a cache, the least recently used first
        self._sessions_released = threading.Condition()  # guards _sessions; notified when a step ends
        self._lock = threading.Lock()  # loading and unloading

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
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        device = torch.device(self.requested_device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            config = AutoConfig.from_pretrained(self._source, trust_remote_code=self.trust_remote_code)
            dtype = self.requested_dtype or (torch.bfloat16 if device.type == "cuda" else _cpu_dtype(config))
            dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
            options: dict[str, Any] = {"config": config, "dtype": dtype, "device_map": str(device),
                                       "trust_remote_code": self.trust_remote_code}
            if self.load_in_4bit:
                options["quantization_config"] = _four_bit_config(device, dtype)
            log.info("Loading %s on %s (%s)", self.model_id, device, str(dtype).removeprefix("torch."))
            tokenizer = AutoTokenizer.from_pretrained(self._source, trust_remote_code=self.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(self._source, **options)
        except OSError as exc:  # missing files, or the hub could not be reached
            raise ModelNotFoundError(f"Could not load the weights of {self.model_id!r} ({_first_line(exc)}): "
                                     f"{HOW_TO_GET_WEIGHTS}.") from None
        model.eval()
        if device.type == "cpu" and model.num_parameters() > _CPU_WARNING_PARAMETERS:
            log.warning("Running a %.0fB-parameter model on CPU: expect seconds per token; use a GPU or "
                        "--base-url for real work.", model.num_parameters() / 1e9)
        from ._decoding import BatchDecoder

        self.tokenizer, self.model = tokenizer, model
        static_forward = None
        if self.compiled if self.compiled is not None else device.type == "cuda":
            # transformers' own compiled call, as generate uses with a static cache (mode "reduce-overhead")
            static_forward = functools.partial(self._forward, call=model.get_compiled_call(None))
        self._decoder = BatchDecoder(self._forward, model.config, static_forward)
        self._stop_ids = _stop_ids(tokenizer, self.model_id, self.chat_format)
        if static_forward is not None:
            self._check_compiled(device)
        mismatch = formats.template_mismatch(self.chat_format, tokenizer)
        if mismatch:  # the KV reuse and the model's accuracy both rest on the prompt it was trained on
            log.warning("%s's chat template and the %s format render differently: %s. Pass chat_format= "
                        "(--format) if the checkpoint is of another family.", self.model_id, self.chat_format.label,
                        mismatch)

    def _check_compiled(self, device: torch.device) -> None:
        """Compile the decode step now, with a two-token probe (loading is slow anyway, and a first step
        should not pay it); where compiling fails on this machine, decode without it instead of failing."""
        from transformers import DynamicCache, LogitsProcessorList

        from ._decoding import Generation

        assert self._decoder is not None
        log.info("Compiling the decode step for %s (once per load)", device)
        probe = Generation([self.tokenizer.convert_tokens_to_ids(self.chat_format.stop_tokens[0])],
                           DynamicCache(config=self.model.config), 0, max_new_tokens=2, stop_ids=(),
                           processors=LogitsProcessorList())
        try:
            self._decoder.submit(probe).result()
        except Exception as exc:
            log.warning("Compiled decoding failed on %s (%s): decoding without it (compiled=False hides this).",
                        device, _first_line(exc))
            self._decoder.static_forward = None

    # --- generation -------------------------------------------------------------------------------

    async def complete(self, prompt: str, settings: ModelSettings, on_token: TokenCallback | None = None,
                       *, tools: list[ToolSpec] | None = None) -> Completion:
        """Continue a rendered GLM-4 prompt until a stop token; ``tools`` enable constrained calls."""
        cancelled = threading.Event()
        preparing = asyncio.ensure_future(asyncio.to_thread(self._prepare, prompt, settings, tools or [], cancelled))
        try:
            generation = await asyncio.shield(preparing)
        except asyncio.CancelledError:  # the thread still prepares it: then it is dropped, its cache given back
            cancelled.set()
            preparing.add_done_callback(_abandon)
            raise
        decoder = self._decoder
        assert decoder is not None  # _prepare loaded the model
        pieces = None
        if on_token is not None:
            loop, pieces = asyncio.get_running_loop(), IncrementalDecoder(self.tokenizer)
            # ids come from the decoder's thread; they are turned into text, and shown, on the event loop's
            generation.on_token = functools.partial(self._post, loop, pieces, on_token)
        try:
            # the result is set after the last token was posted: every piece has been shown when this returns
            await asyncio.wrap_future(decoder.submit(generation))
        except asyncio.CancelledError:
            cancelled.set()  # the decoder stops it after its current token; the others go on
            raise
        if pieces is not None and on_token is not None:
            rest = pieces.flush()  # what was held back: the generation ended inside a character, or at the limit
            if rest:
                on_token(rest)
        return self._completion(generation)

    def _post(self, loop: asyncio.AbstractEventLoop, pieces: IncrementalDecoder, on_token: TokenCallback,
              token: int) -> None:
        """Hand a token to the event loop (from the decoder's thread): a loop already closed gets nothing."""
        with contextlib.suppress(RuntimeError):  # closed after its step was cancelled: no one is listening
            loop.call_soon_threadsafe(self._show, token, pieces, on_token)

    def _show(self, token: int, pieces: IncrementalDecoder, on_token: TokenCallback) -> None:
        if token not in self._stop_ids:
            piece = pieces.push(token)
            if piece:
                on_token(piece)

    def _prepare(self, prompt: str, settings: ModelSettings, tools: list[ToolSpec],
                 cancelled: threading.Event) -> Generation:
        """The generation of one step, on its conversation's cache (in a worker thread: it tokenizes)."""
        from ._decoding import Generation, sampling_processors

        self.load()
        session, prompt_ids = self._check_out(prompt, cancelled)
        try:
            limit = getattr(self.model.config, "max_position_embeddings", None)
            if not prompt_ids:
                raise ModelError("The prompt is empty: pass a rendered prompt (the model's chat_format.render).")
            if limit and len(prompt_ids) >= limit:
                raise ModelError(f"The conversation is {len(prompt_ids)} tokens, more than the model's context of "
                                 f"{limit}: start a new run or lower the output size of tools.")
            reused = self._reuse_prefix(session, prompt_ids)
            processors = self._logits_processors(settings, tools)
            processors.extend(sampling_processors(settings))
            generation = Generation(
                prompt_ids, session.cache, reused, stop_ids=self._stop_ids, sample=settings.temperature != 0,
                cancelled=cancelled,
                max_new_tokens=min(settings.max_new_tokens, limit - len(prompt_ids)) if limit else settings.max_new_tokens,
                processors=processors)
        except BaseException:
            self._check_in(session, None)
            raise
        generation.result.add_done_callback(lambda _: self._check_in(session, generation))
        return generation

    def _completion(self, generation: Generation) -> Completion:
        generated, prompt_tokens, reused = generation.generated, len(generation.prompt_ids), generation.reused
        stop_reason: StopReason = self._stop_ids.get(generated[-1], "length") if generated else "length"
        body = generated[:-1] if stop_reason != "length" else generated
        text = self.tokenizer.decode(body, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(generated),
                      prefilled_tokens=prompt_tokens - reused, reused_tokens=reused)
        return Completion(text=text, stop_reason=stop_reason, usage=usage)

    def _forward(self, input_ids: torch.Tensor, cache: Any, position_ids: torch.Tensor | None,
                 attention_mask: torch.Tensor | None, call: Callable[..., Any] | None = None) -> torch.Tensor:
        """One forward pass for the decoder (``call``: the compiled model): the logits of each row's last position."""
        device = self.model.device
        options: dict[str, Any] = {self._cache_argument(): cache}
        if position_ids is not None:
            options["position_ids"] = position_ids.to(device)
        if attention_mask is not None:
            options["attention_mask"] = attention_mask.to(device)
        output = (call or self.model)(input_ids=input_ids.to(device), use_cache=True, logits_to_keep=1, **options)
        return output.logits[:, -1, :]

    def _cache_argument(self) -> str:
        # transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 6.0); older
        # ones know only the old name. Asked of the model once, so no run warns or breaks on either side.
        if self._cache_name is None:
            self._cache_name = "cache" if "cache" in inspect.signature(self.model.forward).parameters \
                else "past_key_values"
        return self._cache_name

    # --- conversations and their caches -----------------------------------------------------------

    def _check_out(self, prompt: str, cancelled: threading.Event) -> tuple[_Session, list[int]]:
        """The conversation ``prompt`` continues (its cache now in this step's hands) and the prompt's ids.

        A conversation is recognised by its text: the step's prompt starts with its last prompt. A prompt
        that continues none (a new run, edited history) starts a conversation, with a copy of the longest
        prefix it shares with a cached one (another run's system prompt and tools, say).
        """
        with self._sessions_released:
            grown = [session for session in self._sessions if self.reuse_cache and prompt.startswith(session.text)]
            session = max(grown, key=lambda session: len(session.text), default=None)
            if session is not None and session.stopping():
                # its last step was cancelled: the decoder lets go of the cache after the current token
                stopping = session
                self._sessions_released.wait_for(lambda: not stopping.busy)
                session = session if session in self._sessions else None
            if session is not None and session.busy:  # the same prompt, twice at once: the second starts afresh
                session = None
            if session is not None:
                session.busy, session.text, session.cancelled = True, prompt, cancelled
        if session is not None:
            return session, session.tokenizer(prompt)
        session = _Session(PromptTokenizer(self.tokenizer), text=prompt, busy=True, cancelled=cancelled)
        prompt_ids = session.tokenizer(prompt)
        with self._sessions_released:
            if self.reuse_cache:
                self._sessions.append(session)
            shared = {other: shared_prefix(other.ids, prompt_ids) for other in self._sessions
                      if not other.busy and other.cache is not None}
            start = max(shared, key=lambda other: shared[other], default=None)
            length = shared[start] if start is not None else 0
            # tensors in a cache are never written in place (cropping slices, a step concatenates): these stay
            prefix = [(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in start.cache.layers] \
                if start is not None and length else None
        if prefix is not None:
            from transformers import DynamicCache

            session.cache = DynamicCache(ddp_cache_data=prefix, config=self.model.config)  # a copy: theirs stays
            session.ids = prompt_ids[:length]
        return session, prompt_ids

    def _reuse_prefix(self, session: _Session, prompt_ids: list[int]) -> int:
        """Crop the session's cache to the longest prefix it shares with the prompt; returns that length.

        At least one prompt token is always fed again, since the next token's logits come from it.
        """
        from transformers import DynamicCache

        shared = min(shared_prefix(session.ids, prompt_ids), len(prompt_ids) - 1) if self.reuse_cache else 0
        if shared == 0 or session.cache is None or not getattr(session.cache, "is_croppable", True):
            session.cache, session.ids = DynamicCache(config=self.model.config), []
            return 0
        surplus = session.cache.get_seq_length() - shared
        if surplus > 0:
            session.cache.crop(-surplus)  # negative: drop that many tokens from the end
        del session.ids[shared:]
        return shared

    def _check_in(self, session: _Session, generation: Generation | None) -> None:
        """Give the conversation back its cache after a step (on the decoder's thread): the keys and values
        of the prompt and of every generated token but the last, which was never fed back."""
        with self._sessions_released:
            session.busy = False
            self._sessions_released.notify_all()
            kept = _cached_ids(generation) if generation is not None else None
            if generation is None or kept is None:
                if session in self._sessions:
                    self._sessions.remove(session)
                return
            session.ids, session.cache = kept, generation.cache
            if session in self._sessions:  # the most recently used last; beyond the limit, the oldest go
                self._sessions.remove(session)
                self._sessions.append(session)
            idle = [other for other in self._sessions if not other.busy]
            for other in idle[:max(0, len(self._sessions) - self.cached_sessions)]:
                self._sessions.remove(other)

    def reset_cache(self) -> None:
        """Forget the KV caches; the next step of every conversation prefills its whole prompt."""
        with self._sessions_released:
            self._sessions = [session for session in self._sessions if session.busy]

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
        """Free the KV caches and the weights (a later step loads them again)."""
        await asyncio.to_thread(self._unload)  # waits for the generations still decoding

    def _unload(self) -> None:
        with self._lock:
            on_gpu = self.model is not None and self.model.device.type == "cuda"
            if self._decoder is not None:
                self._decoder.close()
            self.reset_cache()
            self.model = self.tokenizer = self._decoder = None
        if on_gpu:
            import torch

            gc.collect()
            torch.cuda.empty_cache()  # give the memory back to other processes, not just to torch's pool


@dataclass(eq=False)
class _Session:
    """A conversation this model has seen: its last prompt, that prompt's tokenizer, and a KV cache."""

    tokenizer: PromptTokenizer  # tokenizes only what each step added
    text: str = ""  # the last prompt
    ids: list[int] = field(default_factory=list)  # the tokens whose keys and values `cache` holds
    cache: Any = None
    busy: bool = False  # a step of it is being prepared or decoded
    cancelled: threading.Event | None = None  # set when that step is cancelled

    def stopping(self) -> bool:
        """Whether its step was cancelled and only waits for the decoder (or the tokenizing) to let go."""
        return self.busy and self.cancelled is not None and self.cancelled.is_set()


def _cached_ids(generation: Generation) -> list[int] | None:
    """The ids whose keys and values a finished generation's cache holds; None when it is not to be reused."""
    if generation.result.cancelled():  # cancelled before its turn came: the cache is as _reuse_prefix left it
        kept = generation.prompt_ids[:generation.reused]
    elif generation.result.exception() is not None:
        return None  # failed: a half-written cache must not be reused
    else:
        kept = generation.prompt_ids + generation.generated[:-1]
    cache = generation.cache
    return kept if cache is not None and cache.get_seq_length() == len(kept) else None


def _abandon(preparing: asyncio.Future[Generation]) -> None:
    """Cancel a generation prepared for a step that was cancelled meanwhile (its conversation gets its cache back)."""
    if not preparing.cancelled() and preparing.exception() is None:
        preparing.result().result.cancel()


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


def shared_prefix(cached: list[int], new: list[int]) -> int:
    """How many ids ``cached`` and ``new`` share from the start; list slices compare in C, not per id here."""
    length = min(len(cached), len(new))
    if cached[:length] == new[:length]:  # the usual step: the new prompt extends the cached ids
        return length
    low, high = 0, length  # cached[:low] == new[:low], and the ids differ before high
    while high - low > 64:  # halve the range with slice comparisons, then walk the last few ids
        middle = (low + high) // 2
        if cached[low:middle] == new[low:middle]:
            low = middle
        else:
            high = middle
    while low < high and cached[low] == new[low]:
        low += 1
    return low


def _checkpoint_format(source: str) -> str:
    """The chat format of a local folder or a cached hub checkpoint, from its config.json."""
    if Path(source).is_dir():
        return formats.format_of_checkpoint(source)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    return formats.format_of_checkpoint(Path(cached).parent) if isinstance(cached, str) else "glm4"


def _cpu_dtype(config: Any) -> torch.dtype:
    """bf16 for a bf16 checkpoint on a CPU with bf16 matrix units, else float32.

    Measured on a random 1.3B GLM (README, *Local GLM-4*): with AMX, bf16 decodes 1.4x as fast as float32
    (3.3x with 8 sessions) and prefills 4.8x as fast, in half the memory; without such units (oneDNN held
    to AVX2) bf16 prefills 7x slower than float32. A float32 checkpoint (the tests' tiny models) stays so.
    """
    import torch

    saved = getattr(config, "dtype", None)  # what the checkpoint was saved in (a dtype, or its name)
    bf16 = saved in (torch.bfloat16, "bfloat16")
    return torch.bfloat16 if bf16 and _cpu_computes_bf16() else torch.float32


def _cpu_computes_bf16() -> bool:
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, hence looked up with a default
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


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
