"""What is compared: an arm = (LoRA adapter, another model, or the plain base) x (example selector
and k, or zero-shot) x (answered at once, or through intermediate steps).

Arms have a short, stable name ("base", "base+jaccard@4", "lora:sst+embedding@4",
"model:gemma3-270m", "base+jaccard@4+plan", "base+embedding@4~cached") that is stored with every result, so a rerun with the same arms finds and
reuses what was already generated. A `model:` arm runs another GGUF (a registered name or a path):
a teacher beside its students in one grid.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tunelab.errors import TunelabError
from tunelab.icl.selectors import KINDS as SELECTOR_KINDS

DEFAULT_K = 4
BASE = "base"
ADAPTER_PREFIX = "lora:"
MODEL_PREFIX = "model:"
CACHED = "~cached"
"""After k: the examples' KV comes from the engine's example cache (`engine.example_cache`)."""
STEPS = ("plan", "extract")
"""Decompositions (`runtime.decompose`): `plan` writes a numbered plan and works through it before
answering; `extract` reads a long input chunk by chunk into notes and answers from the notes."""


@dataclass(frozen=True, order=True)
class Arm:
    adapter: str | None = None
    """Registered adapter name, or None for the base model."""
    selector: str | None = None
    """Example selector kind, or None for zero-shot."""
    k: int = 0
    """Examples per prompt (0 when zero-shot)."""
    model: str | None = None
    """Another model (registered name or GGUF path) instead of the runtime's base; None for the base."""
    steps: str | None = None
    """A decomposition from `STEPS` run before the final answer, or None to answer at once."""
    cached: bool = False
    """The examples' KV from the example cache, placed and partly recomputed (an approximation of
    the exact prompt, with llama.cpp in this process only)."""

    def __post_init__(self) -> None:
        problems = []
        if self.selector is not None and self.selector not in SELECTOR_KINDS:
            problems.append(
                f"unknown selector {self.selector!r} (choose from {', '.join(SELECTOR_KINDS)}; steps come last: +{', +'.join(STEPS)})"
            )
        if self.selector is not None and self.k < 1:
            problems.append(f"k must be >= 1 with a selector (got {self.k})")
        if self.selector is None and self.k != 0:
            problems.append("k needs a selector")
        if self.adapter is not None and (not self.adapter or "+" in self.adapter):
            problems.append(f"bad adapter name {self.adapter!r}")
        if self.model is not None and (not self.model or "+" in self.model):
            problems.append(f"bad model name {self.model!r}")
        if self.model is not None and self.adapter is not None:
            problems.append("an arm runs an adapter on the base or another model, not both")
        if self.steps is not None and self.steps not in STEPS:
            problems.append(f"unknown steps {self.steps!r} (choose from {', '.join(STEPS)})")
        if self.cached and self.selector is None:
            problems.append("~cached needs examples (a selector and k)")
        if self.cached and self.steps is not None:
            problems.append("~cached answers at once: no +plan or +extract")
        if problems:
            raise TunelabError("bad arm: " + "; ".join(problems))

    @property
    def name(self) -> str:
        model = f"{ADAPTER_PREFIX}{self.adapter}" if self.adapter else f"{MODEL_PREFIX}{self.model}" if self.model else BASE
        icl = f"{model}+{self.selector}@{self.k}{CACHED if self.cached else ''}" if self.selector else model
        return f"{icl}+{self.steps}" if self.steps else icl

    @property
    def is_icl(self) -> bool:
        return self.selector is not None

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, name: str) -> Arm:
        """The inverse of `name`: "base", "base+mmr@2", "lora:NAME", "lora:NAME+random@4", "model:NAME+jaccard@8",
        any of them followed by "+plan" or "+extract"; "~cached" after an ICL arm's k."""
        head, _, icl = name.strip().partition("+")
        steps = None
        if icl.rpartition("+")[2] in STEPS:
            icl, _, steps = icl.rpartition("+")
        adapter = model = None
        if head.startswith(ADAPTER_PREFIX):
            adapter = head[len(ADAPTER_PREFIX) :]
        elif head.startswith(MODEL_PREFIX):
            model = head[len(MODEL_PREFIX) :]
        elif head != BASE:
            raise TunelabError(f"bad arm {name!r}: start with 'base', 'lora:<adapter>' or 'model:<model>'")
        if not icl:
            return cls(adapter, model=model, steps=steps)
        cached = icl.endswith(CACHED)
        kind, _, k = icl.removesuffix(CACHED).partition("@")
        try:
            return cls(adapter, kind, int(k) if k else DEFAULT_K, model, steps, cached)
        except ValueError:
            raise TunelabError(f"bad arm {name!r}: k after '@' must be a number") from None


def parse_selectors(text: str | Sequence[str] | None) -> list[str]:
    """`random,jaccard,embedding` -> a checked, de-duplicated list in the given order."""
    if text is None:
        return []
    parts = text.split(",") if isinstance(text, str) else list(text)
    kinds = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    unknown = [k for k in kinds if k not in SELECTOR_KINDS]
    if unknown:
        raise TunelabError(f"unknown selector(s) {', '.join(unknown)} (choose from {', '.join(SELECTOR_KINDS)})")
    return kinds


def standard_grid(selectors: Sequence[str], k: int = DEFAULT_K, adapters: Sequence[str] = ()) -> list[Arm]:
    """The 2x2 grid generalised: (base, each adapter) x (zero-shot, each selector at k)."""
    if selectors and k < 1:
        raise TunelabError(f"--k must be >= 1 (got {k})")
    arms = []
    for adapter in [None, *adapters]:
        arms.append(Arm(adapter))
        arms.extend(Arm(adapter, kind, k) for kind in selectors)
    return arms


def blind_order(arms: Sequence[Arm], rng: random.Random, size: int = 2) -> list[Arm]:
    """Pick `size` distinct arms in random left-to-right order, so a blind voter can't guess by position."""
    if len(arms) < size:
        raise TunelabError(f"blind mode needs at least {size} arms (got {len(arms)})")
    return rng.sample(list(arms), size)
