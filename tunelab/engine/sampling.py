"""Sampler settings, validated once and stored with every reply."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tunelab.errors import TunelabError


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
    seed: int = 0
    """Random seed, so a sampled reply can be reproduced."""
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
        if problems:
            raise TunelabError("bad sampler settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SamplerParams":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TunelabError(f"unknown sampler setting(s): {', '.join(unknown)}")
        return cls(**{k: cls._coerce(k, v) for k, v in data.items()})

    @staticmethod
    def _coerce(name: str, value: Any) -> Any:
        """Accept numbers typed as text (settings forms, config files) with a one-line error."""
        kind = {"float": float, "int": int}.get(str(next(f.type for f in fields(SamplerParams) if f.name == name)))
        if kind is None or not isinstance(value, str):
            return value
        try:
            return kind(value.strip())
        except ValueError:
            raise TunelabError(f"sampler setting {name} must be a number (got {value!r})") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
