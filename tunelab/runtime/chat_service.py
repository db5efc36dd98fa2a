"""One chat turn from prompt to stored reply: the path shared by the CLI and the TUI.

It loads the engine once (llama.cpp keeps its KV cache warm across turns), stores the user's
message before generating and the reply afterwards - also a cancelled one, marked interrupted -
with the provenance needed to reproduce it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.protocol import ChatEngine
from tunelab.engine.reply import Reply
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import DEFAULT_K
from tunelab.icl.prompt import PreparedPrompt, prepare_icl
from tunelab.icl.selectors import IndexProgress, Selector, check_positive_k
from tunelab.runtime.best_of_n import BestOfRequest, check, sample_best
from tunelab.runtime.cached_icl import answer_cached
from tunelab.runtime.conversations import ConversationService
from tunelab.runtime.decompose import Worked, decompose
from tunelab.runtime.provenance import provenance_for
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.tokens import PromptView, prompt_view
from tunelab.stores.banks import BankStore
from tunelab.stores.conversations import Message, ReplyRecord
from tunelab.stores.feedback import FeedbackStore
from tunelab.stores.provenance import Provenance
from tunelab.stores.runs import RunStore, reward_models


@dataclass(frozen=True)
class IclRequest:
    """Answer with examples from `bank` chosen by `selector` (k of them) in the prompt."""

    bank: str
    selector: str = "embedding"
    k: int = DEFAULT_K
    cached: bool = False
    """The examples' KV from the engine's example cache (`--icl-cache`): faster, approximate."""

    def __post_init__(self) -> None:
        check_positive_k(self.k)  # before any indexing work


@dataclass
class ChatTurn:
    """A reply being generated, and how to store it once done (or interrupted)."""

    conversation_id: int
    reply: Reply
    params: SamplerParams
    service: ChatService
    provenance: Provenance

    def save(self) -> Message:
        stats = self.reply.stats
        record = ReplyRecord(
            model_path=self.provenance.model_path,
            model_sha256=self.provenance.model_sha256,
            adapter=self.provenance.adapter,
            params=self.params.to_dict(),
            seed=self.params.seed,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            ttft_ms=stats.ttft_ms,
            decode_tps=stats.decode_tps,
            total_ms=stats.total_ms,
            finish_reason=stats.finish_reason,
            interrupted=stats.interrupted,
            dropped_turns=stats.dropped_turns,
            provenance=self.provenance.to_dict(),
        )
        return self.service.store.add_reply(self.conversation_id, self.reply.so_far, record)


class ChatService(ConversationService):
    """Chat on the process's runtime: its engine, adapters, selectors and reward models, over the
    conversations it stores the turns in."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime.conn)
        self.runtime = runtime
        self.feedback = FeedbackStore(runtime.conn)
        self.adapter: str | None = None
        self.adapter_scale = 1.0

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def conn(self) -> sqlite3.Connection:
        return self.runtime.conn

    @property
    def engine(self) -> ChatEngine:
        """The engine serving the chosen adapter (the base model loads on first use)."""
        return self.runtime.engine_for(self.adapter, self.adapter_scale)

    def use_adapter(self, name: str | None, scale: float = 1.0) -> Path | None:
        """Serve trained adapter `name` (None = the plain base) from the next reply on; refused
        (before anything changes) when it was made for another base. Returns its GGUF file."""
        self.runtime.engine_for(name, scale)
        self.adapter, self.adapter_scale = name, scale
        return self.runtime.adapter_path(name) if name else None

    def switch_model(self, model: str) -> bool:
        """Serve `model` (loaded now, once); True when that meant a reload. The adapter goes off:
        one trained for the old base would not fit the new one."""
        reloaded = self.runtime.switch_model(model)
        if reloaded:
            self.adapter, self.adapter_scale = None, 1.0
        return reloaded

    def context_choices(self) -> tuple[list[str], list[str], list[str]]:
        """What the context panel offers: bank names, adapter names, reward-model names."""
        return BankStore(self.conn).names(), [a.name for a in RunStore(self.conn).adapters()], [r.name for r in reward_models(self.conn)]

    def rating_of(self, message_id: int) -> str | None:
        stored = self.feedback.for_message(message_id)
        return stored.rating if stored else None

    def rate(self, message_id: int, rating: str | None) -> None:
        """Rate stored reply `message_id` up / down (None removes the rating)."""
        self.feedback.rate_message(message_id, rating)

    def prompt_view(self, message_id: int) -> PromptView:
        """The prompt stored reply `message_id` was generated from, split into the chat model's tokens
        (the first use loads the model)."""
        return prompt_view(self.conn, self.runtime.llama, message_id)

    def history(self, conversation_id: int) -> list[ChatMessage]:
        conversation = self.store.get(conversation_id)
        messages = [ChatMessage("system", conversation.system_prompt)] if conversation.system_prompt else []
        messages += [ChatMessage(m.role, m.content) for m in self.store.messages(conversation_id)]
        return messages

    def selector(self, icl: IclRequest, progress: IndexProgress | None = None) -> Selector:
        """The runtime's selector for `icl` (call this first with `progress` to show the indexing of a new bank)."""
        return self.runtime.selector(self.runtime.bank(icl.bank), icl.selector, progress=progress)

    def best_of(self, n: int, params: SamplerParams, reward_model: str | None) -> BestOfRequest:
        """Best-of-`n` scored by `reward_model` (None: the newest for this model), checked before the
        reward model is loaded; each reward model is loaded once per process."""
        check(n, params)
        name, scorer = self.runtime.reward_model(reward_model)
        return BestOfRequest(n, scorer, name)

    def send(
        self,
        conversation_id: int | None,
        prompt: str,
        params: SamplerParams,
        icl: IclRequest | None = None,
        best_of: BestOfRequest | None = None,
        system: str = "",
        plan: bool = False,
    ) -> ChatTurn:
        """Store the user's prompt and start the reply (nothing is stored for an empty prompt).
        With `plan` the model first writes a numbered plan and works it step by step (each call
        kept in the provenance's `steps`), then answers with that work above the prompt.

        `conversation_id` None starts a new conversation (with `system` as its system prompt); it is
        stored, with the prompt, only once the prompt was accepted, so a refused first prompt (k
        larger than the bank, a prompt that can never fit) leaves no empty conversation behind.
        With `best_of` the reply is already complete when this returns (all candidates sampled)."""
        if not prompt.strip():
            raise TunelabError("empty prompt: type something to send")
        if conversation_id is None:
            history = [ChatMessage("system", system)] if system else []
            turn = self._start(0, history, prompt, params, icl, best_of, plan)
            turn.conversation_id = self.store.start(prompt.strip().splitlines()[0][:60], system, prompt).id
            return turn
        # raises before storing anything if the prompt can never fit
        turn = self._start(conversation_id, self.history(conversation_id), prompt, params, icl, best_of, plan)
        self.store.add_user(conversation_id, prompt)
        return turn

    def start(
        self,
        conversation_id: int | None,
        prompt: str,
        params: SamplerParams,
        icl: IclRequest | None = None,
        best_of: BestOfRequest | None = None,
        system: str | None = None,
        plan: bool = False,
        adapter: str | None = None,
        adapter_scale: float = 1.0,
        on_index: IndexProgress | None = None,
    ) -> ChatTurn:
        """`send` with its setting up, as one command does it: serve `adapter`, build the bank's
        selector (`on_index` hears the indexing of a new bank), replace the conversation's system
        prompt when `system` is given - each refused before the prompt is stored."""
        if adapter:
            self.use_adapter(adapter, adapter_scale)
        if icl is not None:
            self.selector(icl, on_index)
        if conversation_id is not None and system is not None:
            self.store.update(conversation_id, system_prompt=system)
        return self.send(conversation_id, prompt, params, icl, best_of, system=system or "", plan=plan)

    def regenerate(
        self,
        conversation_id: int,
        params: SamplerParams,
        icl: IclRequest | None = None,
        best_of: BestOfRequest | None = None,
        plan: bool = False,
    ) -> ChatTurn:
        """Replace the last reply with a new one to the same prompt."""
        messages = self.store.messages(conversation_id)
        if len(messages) < 2 or messages[-1].role != "assistant":
            raise TunelabError("nothing to regenerate: the conversation has no reply yet")
        history = self.history(conversation_id)[:-2]
        # a new seed even when the user fixed one: the same seed would give back the same reply
        turn = self._start(conversation_id, history, messages[-2].content, replace(params, seed=None), icl, best_of, plan)
        self.store.delete_message(messages[-1].id)
        return turn

    def _prepare(
        self, history: list[ChatMessage], prompt: str, params: SamplerParams, icl: IclRequest | None, shown: str | None = None
    ) -> PreparedPrompt:
        """The messages to send for `prompt` after `history`: with `icl`, the chosen examples go in.
        `shown`: the user turn when it is not the prompt itself (a plan's work above it)."""
        if icl is None:
            return PreparedPrompt(history + [ChatMessage("user", shown if shown is not None else prompt)])
        return prepare_icl(
            self.engine, self.runtime.bank(icl.bank), self.selector(icl), icl.selector, icl.k, prompt, params.max_tokens, history, shown
        )

    def _start(
        self,
        conversation_id: int,
        history: list[ChatMessage],
        prompt: str,
        params: SamplerParams,
        icl: IclRequest | None,
        best_of: BestOfRequest | None,
        plan: bool = False,
    ) -> ChatTurn:
        params = params.seeded()
        worked = Worked(prompt)
        if plan:  # the instruction the plan serves: the conversation's system prompt, else the bank's
            system = history[0].content if history and history[0].role == "system" else ""
            instruction = system or (self.runtime.bank(icl.bank).instruction if icl else "")
            worked = decompose(self.engine, "plan", instruction, prompt, params)
        prepared = self._prepare(history, prompt, params, icl, worked.query if plan else None)
        best: dict[str, Any] | None = None
        if icl is not None and icl.cached:
            if best_of is not None:
                raise TunelabError("--icl-cache answers once: not with --best-of")
            reply, icl_use = answer_cached(self.engine, prepared, self.runtime.settings.icl_cache_recompute, params, "--icl-cache")
            prepared = replace(prepared, icl=icl_use)
        elif best_of is None:
            reply = self.engine.chat(prepared.messages, params)
        else:
            result = sample_best(self.engine, prepared.messages, params, best_of.n, best_of.scorer, self.settings.parallel)
            reply, params, best = result.chosen.reply, replace(params, seed=result.chosen.seed), result.provenance(best_of.reward_model)
        # an ICL or planned prompt is kept as sent: its examples and work are not in the conversation's history
        sent = [m.as_dict() for m in reply.messages] if prepared.icl or plan else None
        return ChatTurn(
            conversation_id,
            reply,
            params,
            self,
            provenance_for(self.runtime, self.adapter, self.adapter_scale, params, prepared.icl, sent, best_of=best, steps=worked.steps),
        )
