"""Conversations as records: list, search, open, rename, delete, export, and the settings a
conversation keeps. `tunelab history` and the chat screen both go through here; `ChatService`
adds the turns (send, regenerate, rate) on top.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tunelab.engine.sampling import SamplerParams
from tunelab.stores.conversations import Conversation, ConversationStore, Message, SearchHit
from tunelab.stores.export import conversation_json, conversation_markdown
from tunelab.stores.files import atomic_write_text


class ConversationService:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.store = ConversationStore(conn)

    def conversations(self) -> list[Conversation]:
        """Newest first."""
        return self.store.list()

    def with_message_counts(self, limit: int | None = None) -> list[tuple[Conversation, int]]:
        """The newest `limit` conversations (all for None or 0), each with its number of messages."""
        return [(conv, len(self.store.messages(conv.id))) for conv in self.store.list()[: limit or None]]

    def matching(self, text: str) -> list[Conversation]:
        """The conversation-list filter: title or any message contains the words (blank: all)."""
        return self.store.matching(text)

    def search(self, text: str, limit: int | None = None) -> list[SearchHit]:
        return self.store.search(text, limit)

    def conversation(self, conversation_id: int) -> Conversation:
        return self.store.get(conversation_id)

    def messages(self, conversation_id: int) -> list[Message]:
        return self.store.messages(conversation_id)

    def message(self, message_id: int) -> Message:
        return self.store.message(message_id)

    def rename(self, conversation_id: int, title: str) -> None:
        self.store.update(conversation_id, title=title)

    def delete(self, conversation_id: int) -> None:
        """Delete a conversation and its messages."""
        self.store.delete(conversation_id)

    def params(self, conversation_id: int | None) -> SamplerParams:
        """The sampler a conversation keeps (the defaults for a new one)."""
        return SamplerParams.from_dict(self.store.get(conversation_id).params if conversation_id is not None else {})

    def save_settings(self, conversation_id: int | None, system_prompt: str, params: SamplerParams) -> int:
        """Keep `system_prompt` and `params` with the conversation, creating it when there is none yet; its id."""
        if conversation_id is None:
            conversation_id = self.store.create(system_prompt=system_prompt).id
        self.store.update(conversation_id, system_prompt=system_prompt, params=params.to_dict())
        return conversation_id

    def as_json(self, conversation_id: int) -> dict[str, Any]:
        """The conversation with every message's provenance."""
        return conversation_json(self.store, conversation_id)

    def as_markdown(self, conversation_id: int) -> str:
        return conversation_markdown(self.store, conversation_id)

    def export(self, conversation_id: int | None, fmt: str, path: Path | None = None) -> str:
        """One conversation as `fmt` ("md" or "json"), or (None) every conversation as JSON; written
        whole or not at all to `path` when given. Returns the text."""
        if conversation_id is None:
            text = json.dumps([self.as_json(c.id) for c in self.store.list()], indent=2, ensure_ascii=False)
        elif fmt == "json":
            text = json.dumps(self.as_json(conversation_id), indent=2, ensure_ascii=False)
        else:
            text = self.as_markdown(conversation_id)
        if path is not None:
            atomic_write_text(path, text)
        return text
