"""Conversations as Markdown (to read or share) and JSON (with every provenance field)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tunelab.stores.conversations import ConversationStore


def conversation_json(store: ConversationStore, conversation_id: int) -> dict[str, Any]:
    conv = store.get(conversation_id)
    return {**asdict(conv), "messages": [m.to_dict() for m in store.messages(conversation_id)]}


def conversation_markdown(store: ConversationStore, conversation_id: int) -> str:
    conv = store.get(conversation_id)
    lines = [f"# {conv.title}", ""]
    if conv.system_prompt:
        lines += [f"> system: {conv.system_prompt}", ""]
    for m in store.messages(conversation_id):
        lines.append(f"## {m.role}")
        lines.append("")
        lines.append(m.content)
        if m.role == "assistant":
            note = " (interrupted)" if m.interrupted else ""
            model = m.model_path.rsplit("/", 1)[-1] if m.model_path else "?"
            lines += ["", f"*{model} · {m.completion_tokens} tokens · {m.finish_reason}{note}*"]
        lines.append("")
    return "\n".join(lines)
