"""One chat turn from prompt to stored reply: the path shared by the CLI and the TUI.

It loads the engine once (llama.cpp keeps its KV cache warm across turns), stores the user's
message before generating and the reply afterwards - also a cancelled one, marked interrupted -
with the provenance needed to reproduce it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.eval.arms import DEFAULT_K
from tunelab.runtime.best_of_n import BestOfRequest, Scorer, check, sample_best
from tunelab.engine.chat_template import ChatMessage
from tunelab.icl.prompt import build_icl_messages
from tunelab.engine.llama_engine import LlamaEngine, Reply
from tunelab.engine.sampling import SamplerParams
from tunelab.icl.selectors import IndexProgress, Selector, check_positive_k, make_selector
from tunelab.errors import TunelabError
from tunelab.stores.banks import BankStore
from tunelab.stores.conversations import ConversationStore, Message, ReplyRecord
from tunelab.stores.files import cached_sha256
from tunelab.stores.models import ModelRegistry
from tunelab.stores.runs import adapter_gguf


@dataclass(frozen=True)
class IclRequest:
    """Answer with examples from `bank` chosen by `selector` (k of them) in the prompt."""

    bank: str
    selector: str = "embedding"
    k: int = DEFAULT_K

    def __post_init__(self) -> None:
        check_positive_k(self.k)  # before any indexing work


@dataclass
class ChatTurn:
    """A reply being generated, and how to store it once done (or interrupted)."""

    conversation_id: int
    reply: Reply
    params: SamplerParams
    service: "ChatService"
    provenance: dict[str, Any] = field(default_factory=dict)

    def save(self) -> Message:
        engine = self.service.engine
        stats = self.reply.stats
        record = ReplyRecord(
            model_path=str(engine.model_path),
            model_sha256=self.service.model_sha256,
            adapter=str(engine.lora_path) if engine.lora_path else None,
            params=self.params.to_dict(),
            seed=self.params.seed,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            ttft_ms=stats.ttft_ms,
            decode_tps=stats.decode_tps,
            total_ms=stats.total_ms,
            finish_reason=stats.finish_reason,
            interrupted=stats.finish_reason == "cancelled",
            dropped_turns=stats.dropped_turns,
            provenance={**self.provenance, **({"adapter_scale": engine.lora_scale} if engine.lora_path else {})},
        )
        return self.service.store.add_reply(self.conversation_id, self.reply.so_far, record)


class ChatService:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.store = ConversationStore(conn)
        self.models = ModelRegistry(conn)
        self._engine: LlamaEngine | None = None
        self.model_sha256 = ""
        self._selectors: dict[tuple[int, str, str], Selector] = {}
        self._scorers: dict[str | None, tuple[str, Scorer]] = {}
        """Reward models loaded for best-of, by the name asked for (loading one takes seconds)."""

    @property
    def engine(self) -> LlamaEngine:
        """The loaded model, loaded on first use (the TUI calls this from a worker)."""
        if self._engine is None:
            self.load(self.settings.model)
        assert self._engine is not None
        return self._engine

    def load(self, model: str, lora_path: Path | None = None) -> LlamaEngine:
        path = self.models.resolve(model)
        self._engine = LlamaEngine(
            path,
            n_ctx=self.settings.n_ctx,
            n_gpu_layers=self.settings.n_gpu_layers,
            n_threads=self.settings.n_threads,
            lora_path=lora_path,
        )
        self.model_sha256 = cached_sha256(self.conn, self._engine.model_path)
        return self._engine

    def use_adapter(self, name: str | None, scale: float = 1.0) -> Path | None:
        """Serve trained adapter `name` (None = the plain base) on the loaded model.

        Refused when the adapter was made for another base. Where llama.cpp can switch adapters
        on a loaded model the base is not reloaded; otherwise the model is loaded again with it.
        """
        from tunelab.engine.llama_engine import adapter_switching_supported
        from tunelab.finetune.export_gguf import check_adapter_fits

        path = adapter_gguf(self.conn, name) if name else None
        if path is not None:
            check_adapter_fits(path, self.models.resolve(self.settings.model))
        if adapter_switching_supported():
            self.engine.set_adapter(path, scale)
        elif scale != 1.0:
            raise TunelabError("this llama-cpp-python cannot scale adapters: use scale 1")
        else:
            self.load(self.settings.model, lora_path=path)
        return path

    def history(self, conversation_id: int) -> list[ChatMessage]:
        conversation = self.store.get(conversation_id)
        messages = [ChatMessage("system", conversation.system_prompt)] if conversation.system_prompt else []
        messages += [ChatMessage(m.role, m.content) for m in self.store.messages(conversation_id)]
        return messages

    def selector(self, icl: IclRequest, progress: IndexProgress | None = None) -> Selector:
        """One selector per (bank, kind) for the session: the embedding index is synced once
        (call this first with `progress` to show the indexing of a new bank)."""
        bank = BankStore(self.conn).get(icl.bank)
        key = (bank.id, bank.created_at, icl.selector)
        if key not in self._selectors:
            self._selectors[key] = make_selector(icl.selector, bank, self.conn, self.settings, progress=progress)
        return self._selectors[key]

    def best_of(self, n: int, params: SamplerParams, reward_model: str | None) -> BestOfRequest:
        """Best-of-`n` scored by `reward_model` (None: the newest for this model), checked before the
        reward model is loaded; each reward model is loaded once per service."""
        check(n, params)
        if reward_model not in self._scorers:
            from tunelab.finetune.feedback_runs import load_reward_model

            self._scorers[reward_model] = load_reward_model(self.settings, self.conn, reward_model,
                                                            self.models.resolve(self.settings.model))
        name, scorer = self._scorers[reward_model]
        return BestOfRequest(n, scorer, name)

    def send(self, conversation_id: int | None, prompt: str, params: SamplerParams, icl: IclRequest | None = None,
             best_of: BestOfRequest | None = None, system: str = "") -> ChatTurn:
        """Store the user's prompt and start the reply (nothing is stored for an empty prompt).

        `conversation_id` None starts a new conversation (with `system` as its system prompt); it is
        stored, with the prompt, only once the prompt was accepted, so a refused first prompt (k
        larger than the bank, a prompt that can never fit) leaves no empty conversation behind.
        With `best_of` the reply is already complete when this returns (all candidates sampled)."""
        if not prompt.strip():
            raise TunelabError("empty prompt: type something to send")
        if conversation_id is None:
            history = [ChatMessage("system", system)] if system else []
            turn = self._start(0, history, prompt, params, icl, best_of)
            turn.conversation_id = self.store.start(prompt.strip().splitlines()[0][:60], system, prompt).id
            return turn
        # raises before storing anything if the prompt can never fit
        turn = self._start(conversation_id, self.history(conversation_id), prompt, params, icl, best_of)
        self.store.add_user(conversation_id, prompt)
        return turn

    def regenerate(self, conversation_id: int, params: SamplerParams, icl: IclRequest | None = None,
                   best_of: BestOfRequest | None = None) -> ChatTurn:
        """Replace the last reply with a new one to the same prompt."""
        messages = self.store.messages(conversation_id)
        if len(messages) < 2 or messages[-1].role != "assistant":
            raise TunelabError("nothing to regenerate: the conversation has no reply yet")
        history = self.history(conversation_id)[:-2]
        # a new seed even when the user fixed one: the same seed would give back the same reply
        turn = self._start(conversation_id, history, messages[-2].content, replace(params, seed=None), icl, best_of)
        self.store.delete_message(messages[-1].id)
        return turn

    def _prepare(self, history: list[ChatMessage], prompt: str, params: SamplerParams, icl: IclRequest | None) -> "PreparedPrompt":
        """The messages to send for `prompt` after `history`: with `icl`, the chosen examples go in
        (and their ids, scores and token cost into the provenance)."""
        if icl is None:
            return PreparedPrompt(history + [ChatMessage("user", prompt)])
        bank = BankStore(self.conn).get(icl.bank)
        chosen = self.selector(icl).select(prompt, icl.k)
        built = build_icl_messages(self.engine, bank, chosen, prompt, params.max_tokens, history)
        return PreparedPrompt(built.messages, {
            "icl": {
                "bank": bank.name, "selector": icl.selector, "k": icl.k, "dropped": built.dropped,
                "example_tokens": built.example_tokens,
                "examples": [{"id": e.id, "score": e.score, "input": e.input, "output": e.output} for e in built.used],
            },
        })

    def _turn(self, conversation_id: int, prepared: "PreparedPrompt", reply: Reply, params: SamplerParams,
             extra: dict[str, Any] | None = None) -> ChatTurn:
        """The turn that stores `reply`; an ICL prompt is kept as sent, since the examples are not in the history."""
        provenance = {**prepared.provenance, **(extra or {})}
        if "icl" in provenance:
            provenance["prompt_messages"] = [m.as_dict() for m in reply.messages]
        return ChatTurn(conversation_id, reply, params, self, provenance)

    def _start(self, conversation_id: int, history: list[ChatMessage], prompt: str, params: SamplerParams,
               icl: IclRequest | None, best_of: BestOfRequest | None) -> ChatTurn:
        params = params.seeded()
        prepared = self._prepare(history, prompt, params, icl)
        if best_of is None:
            return self._turn(conversation_id, prepared, self.engine.chat(prepared.messages, params), params)
        result = sample_best(self.engine, prepared.messages, params, best_of.n, best_of.scorer)
        return self._turn(conversation_id, prepared, result.chosen.reply, replace(params, seed=result.chosen.seed),
                         {"best_of": result.provenance(best_of.reward_model)})


@dataclass
class PreparedPrompt:
    """What is sent to the model for one user prompt, and what to record about how it was built."""

    messages: list[ChatMessage]
    provenance: dict[str, Any] = field(default_factory=dict)
