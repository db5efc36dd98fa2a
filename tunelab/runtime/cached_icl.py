"""An ICL prompt answered with its examples' KV from the engine's example cache: one door for the
chat (`--icl-cache`) and the compare's `~cached` arms, so both record the cache's use alike."""

from __future__ import annotations

from dataclasses import replace

from tunelab.engine.llama_engine import LlamaEngine
from tunelab.engine.protocol import ChatEngine
from tunelab.engine.reply import Reply
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.icl.prompt import PreparedPrompt
from tunelab.stores.provenance import IclUse

REFUSED = "the example cache needs llama.cpp in this process, not a remote engine"


def cache_engine(engine: ChatEngine, what: str) -> LlamaEngine:
    """`engine`, which must keep llama.cpp KV in this process; `what` (an arm, a flag) names the
    request in the one-line refusal."""
    if not isinstance(engine, LlamaEngine):
        raise TunelabError(f"{what}: {REFUSED}")
    return engine


def answer_cached(
    engine: ChatEngine, prepared: PreparedPrompt, recompute: int, params: SamplerParams, what: str
) -> tuple[Reply, IclUse | None]:
    """The reply to `prepared` with its examples from the cache, `recompute` tokens of each decoded
    again, and its ICL record saying how the cache served it (no examples: the plain reply)."""
    icl = prepared.icl
    if icl is None or not icl.examples:
        return engine.chat(prepared.messages, params), icl
    reply, use = cache_engine(engine, what).chat_cached(prepared.messages, len(icl.examples), recompute, params)
    return reply, replace(icl, cached=use.cached, cached_tokens=use.cached_tokens, recomputed_tokens=use.recomputed_tokens)
