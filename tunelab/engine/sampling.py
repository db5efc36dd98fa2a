"""Sampler settings, validated once and stored with every reply."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from tunelab.errors import TunelabError
from tunelab.field_types import field_types

SEED_RANGE = 2**31
"""Seeds drawn for a reply are below this (llama.cpp takes a uint32; JSON and SQLite keep it exact)."""


@dataclass
class SamplerParams:
    """How tokens are drawn. The defaults are llama.cpp's; temperature 0 means greedy."""

    temperature: float = 0.7
    """0 = greedy (deterministic); higher = more varied."""
    top_p: float = 0.95
    """Nucleus sampling: keep the smallest set of tokens whose probability adds up to this."""
    top_k: int = 40
    """Keep only the k most likely tokens (0 = no limit)."""
    repeat_penalty: float = 1.1
    """>1 discourages repeating recent tokens."""
    max_tokens: int = 512
    """Reply budget in tokens; also reserved in the context window."""
    seed: int | None = None
    """Random seed; None draws a new one per reply. The seed used is stored with the reply, so
    any sampled reply can be reproduced by fixing it."""
    stop: list[str] = field(default_factory=list)
    """Extra stop strings (the model's end-of-turn token always stops)."""

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if self.top_k < 0:
            problems.append("top_k must be >= 0")
        if self.repeat_penalty <= 0:
            problems.append("repeat_penalty must be > 0")
        if self.max_tokens < 1:
            problems.append("max_tokens must be >= 1")
        if self.seed is not None and not 0 <= self.seed < SEED_RANGE:
            problems.append(f"seed must be in [0, {SEED_RANGE})")
        if problems:
            raise TunelabError("bad sampler settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TunelabError(f"unknown sampler setting(s): {', '.join(unknown)}")
        return cls(**{k: cls._coerce(k, v) for k, v in data.items()})

    @staticmethod
    def _coerce(name: str, value: Any) -> Any:
        """Accept numbers typed as text (settings forms, config files) with a one-line error; a
        blank seed means "random"."""
        kind = field_types(SamplerParams)[name]
        if not isinstance(value, str) or kind.base not in (int, float):
            return value
        try:
            return kind.parse(value)
        except ValueError:
            raise TunelabError(f"sampler setting {name} must be {kind.expected} (got {value!r})") from None

    def seeded(self) -> SamplerParams:
        """These settings with a concrete seed: a fresh random one unless the user fixed it."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(SEED_RANGE))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
