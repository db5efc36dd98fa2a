"""The example cache: each ICL example's KV computed once, placed into any prompt that shows it.

Dynamic ICL picks other examples for every query, so llama.cpp's reuse of the common token prefix
stops at the system turn and every query pays for k examples (measured: 6.1x the zero-shot time
to first token, benchmarks/icl_ttft.py). Here, as in EPIC (position-independent context caching),
an example's KV is computed once at a canonical position - right after the system turn,
attending to it - and kept as the bytes of one llama.cpp sequence. A query's prompt is then
assembled in a context of three sequences sharing one KV stream (`kv_unified`):

- `PREFIX` holds the system turn, computed when it changes;
- `WORK` gets a copy of it, the turns before the examples, then each example in prompt order:
  its first `recompute` tokens decoded again at their real positions (attending to everything
  before them, which is what repairs the seam between two cached pieces; the first example, when
  it directly follows the system turn, is exact as cached and needs none), and the rest restored
  from the cache into `SCRATCH`, shifted to the real positions (RoPE is re-applied by llama.cpp)
  and copied in; then the query turn is decoded and the reply drawn in `WORK`.

The tokens after the first `recompute` of an example attend to the system turn and the example
itself only, not to the examples before it: an approximation, so this is an opt-in mode and the
exact prompt stays the default. With `recompute` covering every example token the result is the
exact prompt's (a test checks it token for token).

KV depends on the weights: the cache key holds the model file, the adapter and its scale, and the
engine drops the whole cache (and this context) when its adapter changes.
"""

from __future__ import annotations

import ctypes
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp
from llama_cpp import Llama

from tunelab.engine.prompt_segments import PromptSegments
from tunelab.engine.sampling import SamplerParams
from tunelab.engine.sequences import BatchedReply, SequenceContext
from tunelab.errors import TunelabError

CACHE_BYTES = 256 << 20
"""The cache's bound: least recently used examples are dropped beyond it (the bundled model's KV
is ~23 KB a token, so about 100 demo-bank examples of ~110 tokens)."""

PREFIX, WORK, SCRATCH = 0, 1, 2


@dataclass(frozen=True)
class Weights:
    """The weights a context computes KV with: the model file, the adapter and its scale."""

    model: Path
    adapter: Path | None
    scale: float


@dataclass(frozen=True)
class CacheKey:
    """What an example's KV depends on: the weights, the text before it and its own tokens."""

    weights: Weights
    prefix: tuple[int, ...]
    example: tuple[int, ...]


@dataclass
class CacheUse:
    """How one prompt was served from the example cache (stored in the reply's provenance)."""

    cached: bool = False
    """Whether the examples' KV came from the cache; False when the prompt fell back to the exact path."""
    cached_tokens: int = 0
    """Example tokens whose KV was restored rather than computed in this prompt."""
    recomputed_tokens: int = 0
    """Example tokens decoded again at their real positions, all examples together."""
    computed_examples: int = 0
    """Examples not in the cache yet, computed (at the canonical position) for this prompt."""


class ExampleCache:
    """Example KV bytes by `CacheKey`, least recently used dropped beyond `max_bytes`."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Hashable]:
        """The keys, least recently used first."""
        return iter(list(self._entries))

    def get(self, key: Hashable) -> bytes | None:
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
        return data

    def put(self, key: Hashable, data: bytes) -> None:
        old = self._entries.pop(key, None)
        self.nbytes += len(data) - (len(old) if old is not None else 0)
        self._entries[key] = data
        while self.nbytes > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= len(dropped)

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0


class ExampleContext(SequenceContext):
    """The three-sequence context that assembles prompts from cached examples (see the module doc)."""

    def __init__(self, llama: Llama, adapter: ctypes._Pointer[ctypes.c_void_p] | None, weights: Weights) -> None:
        # WORK holds a whole prompt and its reply; SCRATCH one example besides it
        super().__init__(llama, 3, 2 * llama.n_ctx(), True, adapter, weights.scale)
        self.weights = weights
        self.n_ctx_seq = llama.n_ctx()
        self.prefix: tuple[int, ...] | None = None

    @property
    def can_shift(self) -> bool:
        """Whether this model's KV can be moved to other positions (RoPE models; not M-RoPE ones)."""
        return bool(llama_cpp.llama_memory_can_shift(self.memory))

    def _use_prefix(self, prefix: tuple[int, ...]) -> None:
        if prefix != self.prefix:
            llama_cpp.llama_memory_clear(self.memory, True)
            self.prefill(PREFIX, prefix, 0)
            self.prefix = prefix

    def _example_kv(self, tokens: tuple[int, ...], key: CacheKey, cache: ExampleCache, use: CacheUse) -> bytes:
        """The example's KV cells (without the prefix's) at the canonical position, computed on a miss."""
        data = cache.get(key)
        if data is not None:
            return data
        start = len(key.prefix)
        llama_cpp.llama_memory_seq_rm(self.memory, SCRATCH, -1, -1)
        llama_cpp.llama_memory_seq_cp(self.memory, PREFIX, SCRATCH, -1, -1)
        self.prefill(SCRATCH, tokens, start)
        llama_cpp.llama_memory_seq_rm(self.memory, SCRATCH, 0, start)
        size = llama_cpp.llama_state_seq_get_size(self.ctx.ctx, SCRATCH)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(self.ctx.ctx, buffer, size, SCRATCH)
        llama_cpp.llama_memory_seq_rm(self.memory, SCRATCH, -1, -1)
        if not written:
            raise TunelabError("llama.cpp could not save an example's KV")
        data = bytes(buffer)[:written]
        cache.put(key, data)
        use.computed_examples += 1
        return data

    def _place(self, tokens: tuple[int, ...], at: int, key: CacheKey, cache: ExampleCache, recompute: int, use: CacheUse) -> None:
        """Put the example in WORK at position `at`: its first `recompute` tokens decoded there, the
        rest restored from the cache, shifted from the canonical position. An example at the
        canonical position itself (the first, with no turns before it) has the exact prompt's KV
        already: nothing of it is recomputed."""
        redo = 0 if at == len(key.prefix) else min(recompute, len(tokens))
        data = self._example_kv(tokens, key, cache, use) if redo < len(tokens) else b""
        self.prefill(WORK, tokens[:redo], at)  # WORK must grow by consecutive positions: the decoded part first
        use.recomputed_tokens += redo
        if not data:
            return
        canonical = len(key.prefix)
        buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if llama_cpp.llama_state_seq_set_data(self.ctx.ctx, buffer, len(data), SCRATCH) != len(data):
            raise TunelabError("llama.cpp could not restore an example's KV")
        llama_cpp.llama_memory_seq_rm(self.memory, SCRATCH, canonical, canonical + redo)
        llama_cpp.llama_memory_seq_add(self.memory, SCRATCH, -1, -1, at - canonical)
        llama_cpp.llama_memory_seq_cp(self.memory, SCRATCH, WORK, -1, -1)
        llama_cpp.llama_memory_seq_rm(self.memory, SCRATCH, -1, -1)
        use.cached_tokens += len(tokens) - redo

    def answer(self, segments: PromptSegments, params: SamplerParams, recompute: int, cache: ExampleCache) -> tuple[BatchedReply, CacheUse]:
        """The reply to the prompt `segments` with examples from `cache`, and how the cache served it."""
        start = time.perf_counter()
        use = CacheUse(cached=True)
        self._use_prefix(segments.prefix)
        llama_cpp.llama_memory_seq_rm(self.memory, WORK, -1, -1)
        llama_cpp.llama_memory_seq_cp(self.memory, PREFIX, WORK, -1, -1)
        at = len(segments.prefix)
        self.prefill(WORK, segments.head, at)
        at += len(segments.head)
        for example in segments.examples:
            self._place(example, at, CacheKey(self.weights, segments.prefix, example), cache, recompute, use)
            at += len(example)
        row = self.prefill(WORK, segments.tail, at)
        n_prompt = at + len(segments.tail)
        reply = self.start_reply(0, WORK, n_prompt, params, self.n_ctx_seq - n_prompt, start)
        try:
            while not reply.take(token := reply.sampler.sample(self.ctx, row)):
                self.decode([(token, reply.position, WORK, True)])
                reply.position += 1
                row = 0
        except BaseException:
            reply.sampler.close()
            raise
        return reply.finish(), use
