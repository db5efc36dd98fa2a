"""What every engine offers the layers above: llama.cpp in this process or a remote server.

Chat, ICL, best-of and compare are written against this, so they run unchanged on either."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Protocol

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.reply import Reply
from tunelab.engine.sampling import SamplerParams


class ChatEngine(Protocol):
    n_ctx: int
    lora_path: Path | None
    lora_scale: float

    @property
    def model_name(self) -> str: ...

    def count_tokens(self, messages: list[ChatMessage]) -> int: ...

    def fit(self, messages: list[ChatMessage], max_tokens: int) -> tuple[list[ChatMessage], int]: ...

    def chat(self, messages: list[ChatMessage], params: SamplerParams | None = None) -> Reply: ...

    def answer_together(
        self, conversations: Sequence[list[ChatMessage]], params: Sequence[SamplerParams], parallel: int = 0
    ) -> Generator[tuple[int, Reply], None, None]: ...

    def close(self) -> None: ...
