"""``BatchDecoder``: the generations of several conversations on one local model advance together.

Decoding one token of a 9B model reads all of its weights; reading them once for eight conversations
costs little more than reading them for one. The decoder is a thread that owns the forward passes:
a generation handed to it is prefilled on its own (on the KV cache its conversation already has),
then joins the batch, and every forward pass after that gives each generation in the batch its next
token. A generation that arrives while others are decoding waits one forward pass, not for their ends;
one that stops (a stop token, its token limit, a cancellation) leaves at once, with its own cache.

The batch's caches are the generations' caches left-padded to a common length, with an attention mask
that hides the padding and each row's own positions; it is rebuilt only when a generation joins or
leaves, and grows into room reserved ahead. A batch of one is that generation's cache itself, fed
exactly as ``model.generate`` feeds it. Tokens are chosen as ``generate`` chooses them (the logits
processors in order, then the argmax or a draw). A row's logits differ from its logits alone only by
rounding (padding, other matrix shapes), so in float32 greedy outputs are the same batched or not (the
tests check it); in bf16 a near-tie may go the other way, as with a prefill in pieces.

Imported when a local model generates, since it loads torch and transformers.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import DynamicCache, LogitsProcessorList, StaticCache, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.cache_utils import DynamicLayer

from ..policy import ModelSettings

MAX_BATCH = 32  # generations decoded together; more wait for a place (bounds the memory of one forward pass)
STATIC_SIZES = 512  # a static cache holds a multiple of this many tokens: one compiled graph per size used


@dataclass(eq=False)
class Generation:
    """One completion to decode: its prompt, the cache it continues, and the tokens it has written.

    ``cache`` holds the keys and values of ``prompt_ids[:reused]`` (an empty cache when nothing is
    reused); when the generation ends it holds those of every token fed: the prompt and all generated
    tokens but the last. ``on_token`` gets each generated id on the decoder's thread (stop tokens too).
    """

    prompt_ids: list[int]
    cache: Any
    reused: int
    max_new_tokens: int
    stop_ids: Collection[int]
    processors: LogitsProcessorList  # applied to the scores in order, as generate applies them
    sample: bool = False
    on_token: Callable[[int], Any] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: concurrent.futures.Future[list[int]] = field(default_factory=concurrent.futures.Future)
    generated: list[int] = field(default_factory=list)
    _ids: torch.Tensor | None = None  # prompt and generated ids as one row, for processors that read it

    def add(self, token: int) -> None:
        self.generated.append(token)
        if self._ids is not None:
            self._ids[0, len(self.prompt_ids) + len(self.generated) - 1] = token
        if self.on_token is not None:
            self.on_token(token)

    @property
    def done(self) -> bool:
        return (len(self.generated) >= self.max_new_tokens or self.cancelled.is_set()
                or (bool(self.generated) and self.generated[-1] in self.stop_ids))

    def row_ids(self) -> torch.LongTensor:
        """The ids so far as a ``(1, length)`` tensor: filled once, then a token per step (not the whole row)."""
        if self._ids is None:
            self._ids = torch.empty((1, len(self.prompt_ids) + self.max_new_tokens), dtype=torch.long)
            self._ids[0, :len(self.prompt_ids)] = torch.tensor(self.prompt_ids)
            self._ids[0, len(self.prompt_ids):len(self.prompt_ids) + len(self.generated)] = torch.tensor(
                self.generated, dtype=torch.long)
        return cast(torch.LongTensor, self._ids[:, :len(self.prompt_ids) + len(self.generated)])


class BatchDecoder:
    """Decodes the generations handed to :meth:`submit`, together, on a thread of its own.

    ``forward(input_ids, cache, position_ids, attention_mask)`` runs the model and returns the logits of
    each row's last position. With ``static_forward`` (the same, compiled: ``torch.compile`` and CUDA
    graphs need fixed shapes and addresses), a generation decoding alone does so on a ``StaticCache``
    (its prefix copied in; its cache copied out when it ends or another joins). The thread starts with
    the first generation and ends at :meth:`close`.
    """

    def __init__(self, forward: Callable[..., torch.Tensor], config: Any,
                 static_forward: Callable[..., torch.Tensor] | None = None):
        self.forward, self.config, self.static_forward = forward, config, static_forward
        # one static cache per size, reused: CUDA graphs replay on the tensors they were recorded with
        self._static_caches: dict[int, StaticCache] = {}
        self._incoming: queue.SimpleQueue[Generation | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, generation: Generation) -> concurrent.futures.Future[list[int]]:
        """Decode ``generation``; the future gives its generated ids (with the stop token, if any)."""
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="batch-decoder", daemon=True)
                self._thread.start()
        self._incoming.put(generation)
        return generation.result

    def close(self) -> None:
        """Finish the generations under way, then stop the thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._incoming.put(None)
            thread.join()

    def _run(self) -> None:
        batch: _Batch | None = None
        closing = False
        with torch.inference_mode():
            while not closing or batch is not None:
                room = MAX_BATCH - (len(batch.rows) if batch is not None else 0)
                newcomers, closing = self._take(block=batch is None, room=room, closing=closing)
                ready = [generation for generation in newcomers if self._prefill(generation)]
                try:
                    if ready:
                        batch = _Batch.join(batch, ready, self.config,
                                            static=self._static_cache if self.static_forward is not None else None)
                    if batch is not None:
                        batch = self._step(batch)
                except BaseException as exc:  # out of memory copying caches, say: those steps fail, not the thread
                    for generation in (batch.rows if batch is not None else []) + ready:
                        if not generation.result.done():
                            generation.result.set_exception(exc)
                    batch = None

    def _static_cache(self, size: int) -> StaticCache:
        """The static cache of ``size`` positions, emptied (only one generation at a time decodes on it)."""
        cache = self._static_caches.get(size)
        if cache is None:
            cache = self._static_caches[size] = StaticCache(config=self.config, max_cache_len=size)
        else:
            cache.reset()
        return cache

    def _take(self, *, block: bool, room: int, closing: bool) -> tuple[list[Generation], bool]:
        """Up to ``room`` generations handed over since the last step (waits for one when ``block``) and
        whether :meth:`close` was called."""
        taken: list[Generation] = []
        while len(taken) < room:
            try:
                item = self._incoming.get(block=block and not taken and not closing)
            except queue.Empty:
                break
            if item is None:
                closing = True
            elif item.result.set_running_or_notify_cancel():  # False: its step was cancelled while it waited
                taken.append(item)
        return taken, closing

    def _prefill(self, generation: Generation) -> bool:
        """Feed the prompt tokens the cache lacks and choose the first token; whether it goes on decoding."""
        try:
            new = torch.tensor([generation.prompt_ids[generation.reused:]])
            logits = self.forward(new, generation.cache, None, None)
            generation.add(self._choose([generation], logits)[0])
        except BaseException as exc:
            generation.result.set_exception(exc)
            return False
        if generation.done:
            generation.result.set_result(generation.generated)
            return False
        return True

    def _step(self, batch: _Batch) -> _Batch | None:
        """One forward pass: each row's next token; rows that are done leave with their caches."""
        try:
            logits = (self.static_forward if batch.static and self.static_forward else self.forward)(*batch.inputs())
            for generation, token in zip(batch.rows, self._choose(batch.rows, logits)):
                generation.add(token)
        except BaseException as exc:
            for generation in batch.rows:
                generation.result.set_exception(exc)
            return None
        finished = [index for index, generation in enumerate(batch.rows) if generation.done]
        if not finished:
            return batch
        for index in finished:
            generation = batch.rows[index]
            generation.cache = batch.cache_of(index)
            generation.result.set_result(generation.generated)
        return batch.without(finished)

    @staticmethod
    def _choose(rows: list[Generation], logits: torch.Tensor) -> list[int]:
        """Each row's next token from its logits, as ``generate`` chooses: processors, then argmax or a draw."""
        scores = logits.float()
        for index, generation in enumerate(rows):
            if generation.processors:
                scores[index:index + 1] = generation.processors(generation.row_ids(), scores[index:index + 1])
        tokens = scores.argmax(-1)
        for index, generation in enumerate(rows):
            if generation.sample:
                probabilities = torch.nn.functional.softmax(scores[index], dim=-1)
                tokens[index] = torch.multinomial(probabilities, num_samples=1)[0]
        return tokens.tolist()


class _Batch:
    """The generations being decoded and their caches as one: rows left-padded to a common length."""

    def __init__(self, rows: list[Generation], cache: Any, padding: list[int], config: Any):
        self.rows, self.cache, self.padding, self.config = rows, cache, padding, config
        self.static = isinstance(cache, StaticCache)
        self.mask: torch.Tensor | None = None  # 1 where a row has a token, 0 on its padding; None: no padding
        if any(padding):
            width = cache.get_seq_length()
            columns = torch.arange(width)
            self.mask = (columns[None, :] >= torch.tensor(padding)[:, None]).long()

    @classmethod
    def join(cls, batch: _Batch | None, newcomers: list[Generation], config: Any,
             static: Callable[[int], StaticCache] | None = None) -> _Batch:
        """``batch`` with ``newcomers`` (prefilled) added: a new batch; the newcomers' caches are copied in.

        ``static(size)``: a static cache of that many positions, for a generation decoding alone.
        """
        if batch is None and len(newcomers) == 1:  # decoding alone: its own cache, fed as generate feeds it
            (generation,) = newcomers
            if static is not None:
                return cls(newcomers, _static_copy(generation, static), [0], config)
            return cls(newcomers, generation.cache, [0], config)
        if batch is not None and batch.static:  # a static cache holds one row: the batch goes dynamic
            batch = cls(batch.rows, batch.cache_of(0), [0], config)
        parts = ([(batch.cache, batch.padding)] if batch is not None else []) + \
            [(generation.cache, [0]) for generation in newcomers]
        width = max(cache.get_seq_length() for cache, _ in parts)
        padding = [pad + width - cache.get_seq_length() for cache, pads in parts for pad in pads]
        layers = []
        for index in range(len(parts[0][0].layers)):
            keys = [_pad_left(cache.layers[index].keys, width) for cache, _ in parts]
            values = [_pad_left(cache.layers[index].values, width) for cache, _ in parts]
            layers.append((torch.cat(keys), torch.cat(values)))
        rows = (batch.rows if batch is not None else []) + newcomers
        for generation in rows:
            generation.cache = None  # copied into the batch; a row's own cache is cut out of it when it ends
        return cls(rows, _growing_cache(layers, config), padding, config)

    def inputs(self) -> tuple[torch.Tensor, Any, torch.Tensor, torch.Tensor | None]:
        """The forward pass's input ids, cache, position ids and attention mask for each row's last token."""
        device = self.cache.layers[0].keys.device
        tokens = torch.tensor([[generation.generated[-1]] for generation in self.rows], device=device)
        width = self.width()
        positions = torch.tensor([[width - pad] for pad in self.padding], device=device)
        if self.mask is None:
            return tokens, self.cache, positions, None
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        return tokens, self.cache, positions, self.mask.to(device)

    def width(self) -> int:
        """The positions the cache holds (padding included): a static cache's are the ones written."""
        return int(self.cache.layers[0].cumulative_length) if self.static else self.cache.get_seq_length()

    def cache_of(self, index: int) -> Any:
        """Row ``index``'s cache, on its own (its padding dropped): a dynamic cache."""
        if len(self.rows) == 1 and not self.padding[0] and not self.static:
            return self.cache
        pad, end = self.padding[index], self.width()
        return DynamicCache(ddp_cache_data=[(layer.keys[index:index + 1, :, pad:end],
                                             layer.values[index:index + 1, :, pad:end])
                                            for layer in self.cache.layers], config=self.config)

    def without(self, indices: list[int]) -> _Batch | None:
        """The batch less the rows at ``indices``, its padding trimmed to what the other rows need."""
        kept = [index for index in range(len(self.rows)) if index not in indices]
        if not kept:
            return None
        trim = min(self.padding[index] for index in kept)
        select = torch.tensor(kept, device=self.cache.layers[0].keys.device)
        layers = [(layer.keys.index_select(0, select)[:, :, trim:], layer.values.index_select(0, select)[:, :, trim:])
                  for layer in self.cache.layers]
        return _Batch([self.rows[index] for index in kept], _growing_cache(layers, self.config),
                      [self.padding[index] - trim for index in kept], self.config)


class _GrowingLayer(DynamicLayer):
    """A batch's cache layer: each step's keys and values are written into room reserved ahead (doubled
    when full), instead of concatenated onto a copy of the whole layer as ``DynamicLayer`` does at every
    step, a copy of every row's cache that costs more than the step's attention reads."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.lazy_initialization(keys, values)
        self._keys, self._values = _with_room(keys, keys.shape[2]), _with_room(values, values.shape[2])
        self.keys, self.values = self._keys[:, :, :keys.shape[2]], self._values[:, :, :values.shape[2]]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = cast(torch.Tensor, self.keys), cast(torch.Tensor, self.values)
        start, end = keys.shape[2], keys.shape[2] + key_states.shape[2]
        if end > self._keys.shape[2]:
            self._keys, self._values = _with_room(keys, end), _with_room(values, end)
        # past `start`: no view handed out before covers it
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values


def _with_room(tensor: torch.Tensor, needed: int) -> torch.Tensor:
    """A tensor of ``needed`` positions or more (room for as many again, at least 64) starting with ``tensor``'s."""
    room = tensor.new_empty((*tensor.shape[:2], max(2 * needed, needed + 64), tensor.shape[3]))
    room[:, :, :tensor.shape[2]] = tensor
    return room


def _growing_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], config: Any) -> DynamicCache:
    cache = DynamicCache(config=config)
    cache.layers = [_GrowingLayer(keys, values) for keys, values in layers]
    return cache


def _static_copy(generation: Generation, static_cache: Callable[[int], StaticCache]) -> StaticCache:
    """A static cache with room for all of ``generation``'s tokens (a multiple of :data:`STATIC_SIZES`),
    holding the keys and values of its cache."""
    needed = generation.cache.get_seq_length() + generation.max_new_tokens - len(generation.generated)
    static = static_cache(-(-needed // STATIC_SIZES) * STATIC_SIZES)
    for index, source in enumerate(generation.cache.layers):
        static.update(source.keys, source.values, index)  # allocates the layer's tensors and copies the prefix in
    return static


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` (batch, heads, length, dim) with zeros before its positions, to ``width`` positions."""
    missing = width - tensor.shape[2]
    return torch.nn.functional.pad(tensor, (0, 0, missing, 0)) if missing else tensor


def sampling_processors(settings: ModelSettings) -> LogitsProcessorList:
    """The warpers ``generate`` would apply for the policy's ``[model]`` settings (none: greedy decoding),
    whatever the checkpoint's ``generation_config.json`` says (GLM-4-9B's samples at temperature 0.8).

    They come after ours, so a constrained call samples among the tokens the constraint allows. The
    policy has no top-k (``generate`` would add a top-k of 50).
    """
    warpers = LogitsProcessorList()
    if settings.temperature == 0:
        return warpers
    if settings.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_p < 1.0:
        warpers.append(TopPLogitsWarper(settings.top_p))
    return warpers

