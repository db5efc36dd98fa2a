"""A streaming reply and its stats: what every engine returns, in-process or over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from tunelab.engine.chat_template import ChatMessage
from tunelab.errors import TunelabError

INTERRUPTED = ("cancelled", "error")
"""Finish reasons of a reply that stopped before the model did: stored, marked interrupted."""


@dataclass
class ReplyStats:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    decode_tps: float | None = None
    total_ms: float = 0.0
    finish_reason: str = ""
    """stop (end of turn or a stop string), length (max_tokens or context full), cancelled, error
    (a remote engine failed mid-reply: `error` says how)."""
    dropped_turns: int = 0
    """Oldest messages dropped so the prompt fits the context window."""
    error: str | None = None
    """Why the reply broke off (a server down or a stream cut mid-reply); the text so far is kept."""

    def set_timings(self, start: float, first: float | None, last: float | None, end: float) -> None:
        """Fill the timings from perf_counter stamps: the request, the first and last token, the end.
        Decode speed counts the tokens after the first (the first one's wait is the TTFT)."""
        self.total_ms = (end - start) * 1000
        if first is not None and last is not None and self.completion_tokens > 1 and last > first:
            self.decode_tps = (self.completion_tokens - 1) / (last - first)

    @property
    def interrupted(self) -> bool:
        return self.finish_reason in INTERRUPTED

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Reply:
    """A streaming reply: iterate it for text chunks, or call `text()`; `stats` is filled at the end.

    Closing it early (break, Ctrl-C, `cancel`) keeps the text so far and marks it cancelled.
    """

    _chunks: Iterator[str]
    stats: ReplyStats
    messages: list[ChatMessage]
    parts: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        for chunk in self._chunks:
            self.parts.append(chunk)
            yield chunk

    def text(self) -> str:
        for _ in self:
            pass
        return "".join(self.parts)

    def whole_text(self) -> str:
        """All of the reply, or a one-line error where the engine broke off mid-reply (a remote
        server gone, a stream cut): a stored result or training answer must never be a fragment."""
        text = self.text()
        if self.stats.error:
            raise TunelabError(f"{self.stats.error} (nothing stored for this one; rerun to resume)")
        return text

    def close(self) -> None:
        """Stop generating (from the consuming thread); `stats.finish_reason` becomes "cancelled"."""
        close = getattr(self._chunks, "close", None)
        if close:
            close()

    @property
    def so_far(self) -> str:
        return "".join(self.parts)


class StopStrings:
    """Emit text as it comes, holding back only a tail that could be the start of a stop string."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        self.pending += text
        hits = [i for s in self.stops if (i := self.pending.find(s)) != -1]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        cut = len(self.pending) - self._partial_stop()
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def _partial_stop(self) -> int:
        """Length of the longest tail of `pending` that begins some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
