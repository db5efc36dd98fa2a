"""How a reply was made: one record for chat replies, compare items, arena columns and best-of picks.

Stored as JSON next to every reply (messages, comparison results, ratings and votes copy it), so
any reply can be traced to its weights and reproduced: the model file and its hash, the adapter
and its scale, the sampler and the seed actually used, and - for an ICL prompt - the bank, the
selector, k, the examples chosen with their scores, what they cost in tokens, and the messages as
sent; for a remote engine, the server's URL and model id; for a decomposition arm (plan, extract)
every intermediate call before the answer. Every path writes the same fields (absent parts are None), so readers never branch on where
a reply came from.

`from_dict` also reads the two shapes written before this record existed (chat's nested `icl`
without the model fields, compare's flat `example_ids`/`example_scores`); migration m0011 rewrote
stored rows with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExampleUse:
    """One bank example put in the prompt, with the selector's score for it."""

    id: Any
    score: float
    input: str = ""
    output: str = ""


@dataclass(frozen=True)
class IclUse:
    """The in-context examples of one prompt: where they came from and what they cost."""

    bank: str
    selector: str
    k: int
    examples: tuple[ExampleUse, ...] = ()
    """Best first, as chosen; the prompt shows them least relevant first."""
    dropped: int = 0
    """Chosen examples left out because they did not fit the context window."""
    example_tokens: int = 0
    """Prompt tokens the examples cost (the prompt with them minus the prompt without)."""
    selection_ms: float = 0.0
    cached: bool = False
    """Whether the examples' KV came from the engine's example cache (placed, not computed in this
    prompt); False for the exact prompt, also when a cached arm fell back to it."""
    cached_tokens: int = 0
    """Example tokens whose KV was restored from the cache."""
    recomputed_tokens: int = 0
    """Example tokens decoded again in place, this prompt's total over its examples (the first
    `recompute` tokens of each)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IclUse:
        examples = tuple(
            ExampleUse(e.get("id"), float(e.get("score") or 0.0), e.get("input", ""), e.get("output", "")) for e in data.get("examples", [])
        )
        return cls(
            data.get("bank", ""),
            data.get("selector", ""),
            int(data.get("k") or len(examples)),
            examples,
            int(data.get("dropped") or 0),
            int(data.get("example_tokens") or 0),
            float(data.get("selection_ms") or 0.0),
            bool(data.get("cached") or False),
            int(data.get("cached_tokens") or 0),
            int(data.get("recomputed_tokens") or 0),
        )


@dataclass(frozen=True)
class StepUse:
    """One intermediate call of a decomposed reply (a plan, a plan step, a chunk's notes): kept
    whole, so a wrong final answer can be traced to the step that went astray, and its cost counted."""

    kind: str
    """plan, repair, step, extract."""
    messages: list[dict[str, str]]
    """The messages as sent."""
    output: str
    prompt_tokens: int
    completion_tokens: int
    total_ms: float
    finish_reason: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepUse:
        return cls(**data)


@dataclass(frozen=True)
class Provenance:
    model_path: str
    model_sha256: str
    params: dict[str, Any] = field(default_factory=dict)
    """The sampler settings, `seed` being the one actually used."""
    seed: int | None = None
    adapter: str | None = None
    adapter_sha256: str | None = None
    adapter_scale: float | None = None
    icl: IclUse | None = None
    prompt_messages: list[dict[str, str]] | None = None
    """The messages as sent, kept where they are not the conversation's own (ICL examples, arena)."""
    arm: str | None = None
    """The compare/arena arm name; None for a chat reply."""
    best_of: dict[str, Any] | None = None
    """Best-of-n: the reward model, n, every candidate's seed and score, which one was picked."""
    engine_url: str | None = None
    """The OpenAI-compatible server that answered; None for llama.cpp in this process."""
    server_model: str | None = None
    """The model id the server answered with (an adapter's own id on vLLM-style servers)."""
    steps: tuple[StepUse, ...] = ()
    """Decomposition arms: the calls made before the final one, in order (empty for one-call replies)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def example_ids(self) -> list[Any]:
        return [e.id for e in self.icl.examples] if self.icl else []

    @classmethod
    def from_dict(cls, data: dict[str, Any], **columns: Any) -> Provenance:
        """Read a stored record of any shape; `columns` fill fields old rows kept in table columns
        (a chat message's model_path, seed, ...)."""
        data = {**{k: v for k, v in columns.items() if v is not None}, **{k: v for k, v in data.items() if v is not None}}
        icl = data.get("icl")
        if icl is None and data.get("selector"):  # compare's flat shape before m0011
            icl = {
                "bank": data.get("bank", ""),
                "selector": data["selector"],
                "k": data.get("k"),
                "dropped": data.get("dropped_examples"),
                "selection_ms": data.get("selection_ms"),
                "examples": [{"id": i, "score": s} for i, s in zip(data.get("example_ids", []), data.get("example_scores", []))],
            }
        params = data.get("params") or {}
        return cls(
            model_path=data.get("model_path") or "",
            model_sha256=data.get("model_sha256") or "",
            params=params,
            seed=data.get("seed", params.get("seed")),
            adapter=data.get("adapter"),
            adapter_sha256=data.get("adapter_sha256"),
            adapter_scale=data.get("adapter_scale", 1.0 if data.get("adapter") else None),
            icl=IclUse.from_dict(icl) if isinstance(icl, dict) else None,
            prompt_messages=data.get("prompt_messages"),
            arm=data.get("arm"),
            best_of=data.get("best_of"),
            engine_url=data.get("engine_url"),
            server_model=data.get("server_model"),
            steps=tuple(StepUse.from_dict(step) for step in data.get("steps") or ()),
        )
