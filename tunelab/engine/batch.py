"""Several prompts answered together: one llama.cpp context, one sequence per prompt.

A grid (compare, curve, distillation, best-of) asks the same model many independent questions.
Answered one at a time, each decode step multiplies the weights by one token's activations (a
matrix-vector product, bound by memory); answered together, one step serves every sequence
(a matrix-matrix product), which is where batching pays on a CPU and much more on a GPU.

The batch runs in a context of its own on the engine's loaded model (the weights are shared,
not loaded twice) with one KV stream per sequence (`kv_unified` off), so each sequence attends
to its own tokens only, as it would alone. The prompts' common prefix (system prompt, the
instruction) is computed once and copied to the other sequences. Each sequence draws its tokens
with the same sampler chain llama-cpp-python builds for a single reply, from its own seed.
"""

from __future__ import annotations

import ctypes
import time
from collections import deque
from collections.abc import Generator, Sequence

import llama_cpp
from llama_cpp import Llama

from tunelab.engine.sampling import SamplerParams
from tunelab.engine.sequences import BatchedReply, RunningReply, SequenceContext
from tunelab.errors import TunelabError

CTX_ROUNDING = 256
"""A sequence's context is rounded up to this, so similar batches reuse one context."""

KV_MEMORY_SHARE = 0.25
"""At most this share of the free memory goes to one batch's KV cache."""

MAX_PARALLEL = 8
"""The default ceiling on sequences per batch, each slot holding a context of KV (measured on a
2-core CPU, bundled model: decode throughput 1.65x at 8 sequences, 1.96x at 16)."""


def kv_bytes_per_token(llama: Llama) -> int:
    """KV cache bytes one token takes in every layer (F16 keys and values)."""
    model = llama._model.model
    n_layer = llama_cpp.llama_model_n_layer(model)
    n_head = max(1, llama_cpp.llama_model_n_head(model))
    n_head_kv = llama_cpp.llama_model_n_head_kv(model)
    head_dim = llama_cpp.llama_model_n_embd(model) // n_head
    return 2 * 2 * n_layer * n_head_kv * head_dim


def free_memory_bytes() -> int:
    """Memory available to this process now (MemAvailable on Linux; 4 GiB assumed elsewhere)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def sequence_context(prompt_lengths: Sequence[int], max_tokens: int, n_ctx: int) -> int:
    """The context one sequence needs: its longest prompt plus the reply, rounded up, at most n_ctx."""
    need = max(prompt_lengths) + max_tokens
    return min(n_ctx, -(-need // CTX_ROUNDING) * CTX_ROUNDING)


def parallel_for(llama: Llama, n_ctx_seq: int, requested: int = 0) -> int:
    """Sequences per batch: `requested` if given (> 0), else as many as fit a quarter of the free
    memory (at most MAX_PARALLEL)."""
    if requested < 0:
        raise TunelabError(f"--parallel must be >= 0 (got {requested})")
    if requested:
        return requested
    fits = int(free_memory_bytes() * KV_MEMORY_SHARE) // max(1, n_ctx_seq * kv_bytes_per_token(llama))
    return max(1, min(MAX_PARALLEL, fits))


def common_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one of its own (its logits are sampled)."""
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


class SequenceBatch(SequenceContext):
    """A llama.cpp context with `n_slots` sequences on `llama`'s model (with the engine's current
    adapter), answering a queue of prompts: when a reply ends, the next prompt takes its slot
    (continuous batching), so one long reply does not hold the others back."""

    def __init__(self, llama: Llama, n_slots: int, n_ctx_seq: int, adapter: ctypes._Pointer[ctypes.c_void_p] | None, scale: float) -> None:
        # the last sequence holds the prompts' common prefix; one stream per sequence: each attends to its own tokens only
        super().__init__(llama, n_slots + 1, (n_slots + 1) * n_ctx_seq, False, adapter, scale)
        self.n_slots = n_slots
        self.n_ctx_seq = n_ctx_seq
        self.prefix_seq = n_slots

    def _start(self, index: int, slot: int, prompt: Sequence[int], params: SamplerParams, shared: int) -> tuple[RunningReply, int]:
        """Put prompt `index` in `slot` (the common prefix copied in, the rest computed); the
        running reply and the row its first token is drawn from."""
        llama_cpp.llama_memory_seq_rm(self.memory, slot, -1, -1)
        if shared:
            llama_cpp.llama_memory_seq_cp(self.memory, self.prefix_seq, slot, -1, -1)
        running = self.start_reply(index, slot, len(prompt), params, self.n_ctx_seq - len(prompt), time.perf_counter())
        return running, self.prefill(slot, prompt[shared:], shared)

    def answer(self, prompts: Sequence[Sequence[int]], params: Sequence[SamplerParams]) -> Generator[tuple[int, BatchedReply], None, None]:
        """(index, reply) for every prompt, as each reply ends; closing the iterator stops the rest."""
        llama_cpp.llama_memory_clear(self.memory, True)
        # A prefix computed apart moves a logit by a rounding error: enough to flip a sampled token
        # (measured: 1 of 4 best-of candidates changed), never a greedy one in the tests. Sampled
        # prompts are computed whole, as `LlamaEngine.chat` computes them, so a seed reproduces its reply.
        greedy = all(p.temperature == 0 for p in params)
        shared = common_prefix(prompts) if len(prompts) > 1 and greedy else 0
        if shared:
            self.prefill(self.prefix_seq, prompts[0][:shared], 0)
        waiting = deque(range(len(prompts)))
        running: dict[int, RunningReply] = {}
        step: list[tuple[int, int, int, bool]] = []  # the next decode: one token per running slot

        def draw(reply: RunningReply, row: int) -> BatchedReply | None:
            """Sample `reply`'s next token; queue it, or free the slot and return the finished reply."""
            token = reply.sampler.sample(self.ctx, row)
            if reply.take(token):
                del running[reply.slot]
                return reply.finish()
            step.append((token, reply.position, reply.slot, True))
            reply.position += 1
            return None

        try:
            while waiting or running:
                # every row of the last decode is drawn before a new prompt's prefill replaces the logits
                decoded, step = step, []
                for row, (_, _, slot, _) in enumerate(decoded):
                    reply = running[slot]
                    if (done := draw(reply, row)) is not None:
                        yield reply.index, done
                for slot in range(self.n_slots):
                    while slot not in running and waiting:
                        index = waiting.popleft()
                        reply, row = self._start(index, slot, prompts[index], params[index], shared)
                        running[slot] = reply
                        if (done := draw(reply, row)) is not None:
                            yield index, done
                if step:
                    self.decode(step)
        finally:
            for reply in running.values():
                reply.sampler.close()
