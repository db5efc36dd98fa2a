"""A llama.cpp context of several KV sequences on an already loaded model, and one reply drawn in it.

Shared by the batch (`engine.batch`: one sequence per prompt) and the example cache
(`engine.example_cache`: a prefix, a work and a scratch sequence). The context is made on the
engine's `llama._model`, so the weights are shared rather than loaded twice; it gets the engine's
adapter at its scale, and it is dropped with the engine's KV whenever the adapter changes.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import llama_cpp
from llama_cpp import Llama
from llama_cpp import _internals as internals

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.reply import Reply, ReplyStats
from tunelab.engine.sampling import SamplerParams
from tunelab.engine.token_text import TokenText
from tunelab.errors import TunelabError


@dataclass
class BatchedReply:
    """One prompt's finished reply: its text and the same stats a streamed reply carries."""

    text: str
    stats: ReplyStats = field(default_factory=ReplyStats)

    def as_reply(self, messages: list[ChatMessage]) -> Reply:
        """The finished text as the `Reply` every engine returns (one chunk, nothing left to stream)."""
        return Reply(iter([self.text] if self.text else []), self.stats, messages)


@dataclass
class RunningReply:
    """A reply being drawn in one sequence of a context, by the streamed reply's rules."""

    index: int
    slot: int
    sampler: internals.LlamaSampler
    text: TokenText
    room: int
    position: int
    stats: ReplyStats
    start: float
    parts: list[str] = field(default_factory=list)
    first: float | None = None
    last: float | None = None

    def take(self, token: int) -> bool:
        """Take one sampled token into the reply (by the streamed reply's rules); whether it is complete."""
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
            self.stats.ttft_ms = (self.first - self.start) * 1000
        text, done = self.text.take(token, self.stats, self.room)
        self.parts.append(text)
        return done

    def finish(self) -> BatchedReply:
        self.sampler.close()
        self.stats.set_timings(self.start, self.first, self.last, time.perf_counter())
        return BatchedReply("".join(self.parts) + self.text.tail(), self.stats)


class SequenceContext:
    """A llama.cpp context with `n_seq` sequences and `n_ctx` cells on `llama`'s model, with `adapter`
    at `scale`. `kv_unified` off gives each sequence a KV stream of its own; on, the sequences share
    one stream, so cells can be copied between them (a shared prefix, a placed example)."""

    def __init__(
        self, llama: Llama, n_seq: int, n_ctx: int, kv_unified: bool, adapter: ctypes._Pointer[ctypes.c_void_p] | None, scale: float
    ) -> None:
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_seq_max = n_seq
        params.n_ctx = n_ctx
        params.kv_unified = kv_unified
        self.llama = llama
        self.n_batch = int(params.n_batch)
        self.batch = None
        try:
            self.ctx = internals.LlamaContext(model=llama._model, params=params, verbose=False)
        except ValueError as exc:
            raise TunelabError(f"llama.cpp could not make a context of {n_ctx} tokens for {n_seq} sequences: {exc}") from None
        n = 1 if adapter else 0
        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*([adapter] if adapter else []))
        scales = (ctypes.c_float * n)(*([scale] if adapter else []))
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.memory = llama_cpp.llama_get_memory(self.ctx.ctx)
        if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, adapters, n, scales):
            self.close()
            raise TunelabError("llama.cpp could not apply the adapter to a context of several sequences")

    def close(self) -> None:
        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants logits) entries: at most n_batch."""
        batch = self.batch
        assert batch is not None
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        status = llama_cpp.llama_decode(self.ctx.ctx, batch)
        if status != 0:
            raise TunelabError(f"llama.cpp could not decode the batch (status {status})")

    def prefill(self, seq: int, tokens: Sequence[int], start: int) -> int:
        """Decode `tokens` at positions from `start` in sequence `seq` alone; the row of the last
        one's logits. A ubatch mixing sequences groups the attention's rows differently, and
        measured, that changed greedy replies: each prompt is computed as it would be alone."""
        row = 0
        for at in range(0, len(tokens), self.n_batch):
            chunk = tokens[at : at + self.n_batch]
            self.decode([(t, start + at + i, seq, at + i == len(tokens) - 1) for i, t in enumerate(chunk)])
            row = len(chunk) - 1
        return row

    def start_reply(self, index: int, slot: int, prompt_tokens: int, params: SamplerParams, room: int, start: float) -> RunningReply:
        """A reply to prompt `index` (of `prompt_tokens`, already decoded in sequence `slot`), drawn
        with the sampler chain llama-cpp-python builds for a single reply, seeded from `params`;
        `room`: the tokens left in the sequence's context, `start`: when the request began."""
        assert params.seed is not None
        self.llama.set_seed(params.seed)  # _init_sampler seeds its dist sampler from the Llama
        sampler = self.llama._init_sampler(
            top_k=params.top_k, top_p=params.top_p, temp=params.temperature, repeat_penalty=params.repeat_penalty
        )
        return RunningReply(
            index=index,
            slot=slot,
            sampler=sampler,
            text=TokenText(self.llama, params.stop),
            room=min(params.max_tokens, room),
            position=prompt_tokens,
            stats=ReplyStats(prompt_tokens=prompt_tokens),
            start=start,
        )
