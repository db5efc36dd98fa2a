"""The one inference engine: a llama.cpp model kept loaded, streaming replies with their stats.

The `Llama` instance lives as long as the engine, so llama.cpp reuses the KV cache of the
common prompt prefix from one greedy reply to the next (system prompt, ICL examples); a sampled
reply is computed from an empty cache, so that its stored seed reproduces it exactly.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import cast

import llama_cpp
from llama_cpp import Llama

from tunelab.engine.batch import SequenceBatch, parallel_for, sequence_context
from tunelab.engine.chat_template import ChatMessage, ChatTemplate
from tunelab.engine.context import fit_history, prompt_budget
from tunelab.engine.example_cache import CacheUse, ExampleCache, ExampleContext, Weights
from tunelab.engine.health import ensure_engine_runs
from tunelab.engine.prompt_segments import segment
from tunelab.engine.reply import Reply, ReplyStats
from tunelab.engine.sampling import SamplerParams
from tunelab.engine.token_text import TokenText
from tunelab.errors import TunelabError
from tunelab.stores.model_files import check_gguf, check_gguf_complete


def gpu_offload_supported() -> bool:
    return bool(llama_cpp.llama_supports_gpu_offload())


def adapter_switching_supported() -> bool:
    """Whether this llama-cpp-python can attach, scale and detach LoRAs on a loaded model."""
    return hasattr(llama_cpp, "llama_adapter_lora_init") and hasattr(llama_cpp, "llama_set_adapters_lora")


class LlamaEngine:
    def __init__(
        self,
        model_path: Path,
        n_ctx: int = 4096,
        n_gpu_layers: int = -1,
        n_threads: int = 0,
        lora_path: Path | None = None,
    ) -> None:
        self.model_path = check_gguf(Path(model_path)).resolve()
        self.n_gpu_layers = n_gpu_layers if gpu_offload_supported() else 0
        self.lora_path: Path | None = None
        self.lora_scale = 1.0
        self._adapters: dict[Path, ctypes._Pointer[ctypes.c_void_p]] = {}
        self._lock = threading.Lock()
        self._batch: SequenceBatch | None = None
        self._examples: ExampleContext | None = None
        self.example_cache = ExampleCache()
        """ICL examples' KV for `chat_cached`, under the current adapter only."""
        # With the low-level adapter API the base loads once (memory-mapped) and adapters are
        # attached to it; without it, llama-cpp-python can only bake one adapter in at load time.
        baked = lora_path if lora_path and not adapter_switching_supported() else None
        if baked:
            check_gguf_complete(check_gguf(Path(baked)))  # a truncated adapter must never reach llama.cpp
        ensure_engine_runs(self.model_path)  # a build that dies by a signal is refused in one line first
        try:
            self.llama = Llama(
                model_path=str(self.model_path),
                n_ctx=n_ctx,
                n_gpu_layers=self.n_gpu_layers,
                n_threads=n_threads or os.cpu_count() or 1,  # llama.cpp's own default is half the cores
                lora_path=str(baked) if baked else None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            check_gguf_complete(self.model_path)
            raise TunelabError(f"llama.cpp could not load {self.model_path}: {exc}") from None
        self.lora_path = baked
        self.template = ChatTemplate(self.llama)
        if lora_path and not baked:
            self.set_adapter(lora_path)
        self.n_ctx = self.llama.n_ctx()

    def close(self) -> None:
        """Free the model and its contexts now (a model switch must not hold two copies)."""
        self._drop_side_kv()
        self.llama.close()

    def set_adapter(self, path: Path | None, scale: float = 1.0) -> None:
        """Serve the GGUF LoRA at `path` with `scale` (None = the plain base), without reloading the base.

        Each adapter file is loaded once and kept; the KV cache is dropped because the cached
        prompt was computed with the previous weights.
        """
        if not adapter_switching_supported():
            raise TunelabError("this llama-cpp-python cannot switch adapters on a loaded model: start a new session with --adapter")
        path = Path(path).resolve() if path else None
        with self._lock:
            adapter = None
            if path is not None:
                adapter = self._adapters.get(path)
                if adapter is None:
                    check_gguf_complete(check_gguf(path))  # a truncated adapter must never reach llama.cpp
                    # declared as returning c_void_p, but its restype is POINTER(c_void_p) (NULL when it fails)
                    adapter = cast(
                        "ctypes._Pointer[ctypes.c_void_p]",
                        llama_cpp.llama_adapter_lora_init(self.llama._model.model, str(path).encode("utf-8")),
                    )
                    if not adapter:
                        raise TunelabError(f"llama.cpp could not load adapter {path} for {self.model_name} (made for another base?)")
                    self._adapters[path] = adapter
            n = 0 if adapter is None else 1
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * n)(*([adapter] if adapter else []))
            scales = (ctypes.c_float * n)(*([scale] if adapter else []))
            if llama_cpp.llama_set_adapters_lora(self.llama._ctx.ctx, adapters, n, scales):
                raise TunelabError(f"llama.cpp could not apply adapter {path}")
            self.llama.reset()
            self._drop_side_kv()  # cached KV never outlives the weights it was computed with
            self.lora_path, self.lora_scale = path, scale

    @property
    def model_name(self) -> str:
        return self.model_path.name

    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return len(self.template.tokens(messages))

    def fit(self, messages: list[ChatMessage], max_tokens: int) -> tuple[list[ChatMessage], int]:
        """The messages that fit the context with `max_tokens` left for the reply."""
        return fit_history(messages, prompt_budget(self.n_ctx, max_tokens), self.count_tokens)

    def chat(self, messages: list[ChatMessage], params: SamplerParams | None = None) -> Reply:
        """Stream a reply to `messages` (oldest turns dropped if they don't fit)."""
        params = (params or SamplerParams()).seeded()
        if not messages or not messages[-1].content.strip():
            raise TunelabError("empty prompt: type something to send")
        fitted, dropped = self.fit(messages, params.max_tokens)
        stats = ReplyStats(dropped_turns=dropped)
        tokens = self.template.tokens(fitted)
        stats.prompt_tokens = len(tokens)
        return Reply(self._stream(tokens, params, stats), stats, fitted)

    def answer_together(
        self, conversations: Sequence[list[ChatMessage]], params: Sequence[SamplerParams], parallel: int = 0
    ) -> Generator[tuple[int, Reply], None, None]:
        """(index, finished reply) for each conversation as its reply ends, `parallel` decoded
        together (0: as many as the memory allows). Each reply is what `chat` would have
        streamed, token for token; only the timings differ (a reply waits for the others' steps).
        Closing the iterator stops the rest."""
        if len(conversations) != len(params):
            raise ValueError("one SamplerParams per conversation")
        seeded = [p.seeded() for p in params]
        fitted = [self.fit(messages, p.max_tokens) for messages, p in zip(conversations, seeded)]
        prompts = [self.template.tokens(messages) for messages, _ in fitted]
        n_ctx_seq = sequence_context([len(p) for p in prompts], max(p.max_tokens for p in seeded), self.n_ctx)
        slots = min(len(prompts), parallel_for(self.llama, n_ctx_seq, parallel))
        with self._lock:
            answers = self._batch_context(slots, n_ctx_seq).answer(prompts, seeded)
            try:
                for index, done in answers:
                    messages, dropped = fitted[index]
                    done.stats.dropped_turns = dropped
                    yield index, done.as_reply(messages)
            finally:
                answers.close()

    def _batch_context(self, n_slots: int, n_ctx_seq: int) -> SequenceBatch:
        """The multi-sequence context, kept while it is big enough (making one allocates its KV)."""
        current = self._batch
        if current is not None and current.n_slots >= n_slots and current.n_ctx_seq >= n_ctx_seq:
            return current
        self._drop_batch_context()
        self._batch = SequenceBatch(self.llama, n_slots, n_ctx_seq, self._current_adapter(), self.lora_scale)
        return self._batch

    def _current_adapter(self) -> ctypes._Pointer[ctypes.c_void_p] | None:
        """The loaded LoRA the engine serves now (None: the plain base), for a side context to apply."""
        return self._adapters.get(self.lora_path) if self.lora_path else None

    def _drop_batch_context(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None

    def _drop_side_kv(self) -> None:
        """Drop every KV computed apart from the main context: the batch's, the example cache's."""
        self._drop_batch_context()
        if self._examples is not None:
            self._examples.close()
            self._examples = None
        self.example_cache.clear()

    def chat_cached(
        self, messages: list[ChatMessage], n_examples: int, recompute: int, params: SamplerParams | None = None
    ) -> tuple[Reply, CacheUse]:
        """Reply to `messages`, whose last `n_examples` user/assistant pairs before the query are ICL
        examples, with the examples' KV from the example cache (`engine.example_cache`), the first
        `recompute` tokens of each decoded again in place. An approximation of `chat` (equal to it
        when `recompute` covers the examples); it falls back to `chat` (`CacheUse.cached` False) when
        the template does not split at the examples, turns had to be dropped, or the model's KV
        cannot be shifted. The reply comes whole, not streamed."""
        params = (params or SamplerParams()).seeded()
        if recompute < 0:
            raise TunelabError(f"recompute must be >= 0 (got {recompute})")
        if not messages or not messages[-1].content.strip():
            raise TunelabError("empty prompt: type something to send")
        fitted, dropped = self.fit(messages, params.max_tokens)
        segments = segment(self.template, fitted, n_examples) if not dropped else None
        answered = None
        with self._lock:
            if segments is not None and (context := self._example_context()).can_shift:
                answered = context.answer(segments, params, recompute, self.example_cache)
        if answered is None:
            return self.chat(messages, params), CacheUse()
        done, use = answered
        return done.as_reply(fitted), use

    def _example_context(self) -> ExampleContext:
        if self._examples is None:
            self._examples = ExampleContext(self.llama, self._current_adapter(), Weights(self.model_path, self.lora_path, self.lora_scale))
        return self._examples

    def _stream(self, tokens: list[int], params: SamplerParams, stats: ReplyStats) -> Iterator[str]:
        llama = self.llama
        reply_text = TokenText(llama, params.stop)
        room = min(params.max_tokens, self.n_ctx - len(tokens))
        start = time.perf_counter()
        first = last = None
        stats.finish_reason = "cancelled"
        with self._lock:
            if params.temperature > 0:
                # Logits depend slightly on how the KV cache was filled (one batch, token by token,
                # trimmed back): measured, the same prompt and seed gave another reply after a
                # previous turn. A sampled reply starts from an empty cache so its seed reproduces
                # it; greedy replies (compare) keep reusing the common prefix.
                llama.reset()
            assert params.seed is not None  # seeded() above drew one
            llama.set_seed(params.seed)
            generator = llama.generate(
                tokens,
                top_k=params.top_k,
                top_p=params.top_p,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
            )
            try:
                for token in generator:
                    last = time.perf_counter()
                    if first is None:
                        first = last
                        stats.ttft_ms = (first - start) * 1000
                    text, done = reply_text.take(token, stats, room)
                    if text:
                        yield text
                    if done:
                        break
                tail = reply_text.tail()
                if tail:
                    yield tail
            finally:
                generator.close()
                stats.set_timings(start, first, last, time.perf_counter())
