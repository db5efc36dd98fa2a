"""What the model actually sees: text as llama.cpp tokens, and a stored reply's prompt split into its parts.

The tokenizer is llama.cpp's, of the GGUF that serves the chat, so the counts are the ones the
context window and the ICL budget are measured in. Byte-level BPE vocabularies (SmolLM2's
among them) often split one Chinese or Japanese character over two or three tokens: a token
whose bytes are not whole UTF-8 on their own is merged with the following ones until they
decode, so a view shows whole characters (with the ids that make them), never mojibake.
Bytes that never complete (text cut mid-character) are shown as `\\x..` escapes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.engine.chat_template import ChatMessage, ChatTemplate
from tunelab.errors import TunelabError
from tunelab.stores.conversations import ConversationStore, Message
from tunelab.stores.feedback import prompt_as_sent

if TYPE_CHECKING:
    from tunelab.engine.llama_engine import LlamaEngine


@dataclass(frozen=True)
class Piece:
    """One or more tokens that together are whole characters (one id unless a character was split)."""

    ids: tuple[int, ...]
    text: str


@dataclass
class PromptPart:
    """A stretch of the rendered prompt: one message (an ICL example's two turns together) or the template's tail."""

    label: str
    """system, example <id>, history, query, or template (the reply header the template adds)."""
    pieces: list[Piece]

    @property
    def tokens(self) -> int:
        return sum(len(p.ids) for p in self.pieces)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)


@dataclass
class PromptView:
    """A stored reply's prompt as sent, part by part, and the reply's own tokens."""

    message_id: int
    model_path: Path
    parts: list[PromptPart]
    reply: list[Piece] = field(default_factory=list)
    stored_tokens: int | None = None
    """The prompt token count recorded with the reply (differs when shown with another model)."""

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.parts)

    def totals(self) -> dict[str, int]:
        """Tokens per kind of part (all examples together), in prompt order."""
        totals: dict[str, int] = {}
        for part in self.parts:
            kind = part.label.split()[0]
            totals[kind] = totals.get(kind, 0) + part.tokens
        return totals


def token_bytes(llama: Any, token: int) -> bytes:
    """The bytes of one token as llama.cpp renders it (special tokens as their text)."""
    return bytes(llama.detokenize([token], special=True))


def pieces(llama: Any, ids: list[int]) -> list[Piece]:
    """Tokens grouped into whole-character pieces (see the module docstring)."""
    out: list[Piece] = []
    pending: list[int] = []
    buffer = b""
    for token in ids:
        pending.append(token)
        buffer += token_bytes(llama, token)
        try:
            text = buffer.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason != "unexpected end of data":  # invalid bytes, not an unfinished character
                out.append(Piece(tuple(pending), buffer.decode("utf-8", "backslashreplace")))
                pending, buffer = [], b""
            continue
        out.append(Piece(tuple(pending), text))
        pending, buffer = [], b""
    if pending:
        out.append(Piece(tuple(pending), buffer.decode("utf-8", "backslashreplace")))
    return out


def tokenize(llama: Any, text: str) -> list[int]:
    """`text` as chat sends a message's content: no BOS, special-token text parsed as special tokens."""
    return list(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def text_pieces(llama: Any, text: str) -> list[Piece]:
    return pieces(llama, tokenize(llama, text))


def part_labels(messages: list[dict[str, str]], provenance: dict[str, Any]) -> list[tuple[str, int]]:
    """(label, number of messages) for the prompt's parts: an ICL example's user/assistant turns are one part."""
    examples = {(e["input"], e["output"]): e["id"] for e in (provenance.get("icl") or {}).get("examples", [])}
    labels: list[tuple[str, int]] = []
    i = 0
    while i < len(messages):
        m = messages[i]
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        if m["role"] == "system":
            labels.append(("system", 1))
        elif i == len(messages) - 1 and m["role"] == "user":
            labels.append(("query", 1))
        elif m["role"] == "user" and nxt and nxt["role"] == "assistant" and (m["content"], nxt["content"]) in examples:
            labels.append((f"example {examples[m['content'], nxt['content']]}", 2))
            i += 1
        else:
            labels.append(("history", 1))
        i += 1
    return labels


def split_prompt(llama: Any, template: ChatTemplate, messages: list[dict[str, str]], labels: list[tuple[str, int]]) -> list[PromptPart]:
    """The tokens of the rendered prompt, each given to the part whose rendered text it starts in.

    Part boundaries are where the rendering of the first n messages ends (the template renders
    message by message, so that is a prefix of the whole prompt); what follows the last message
    is the template's reply header. The tokens are those of the whole prompt, exactly as sent.
    """
    chat = [ChatMessage(m["role"], m["content"]) for m in messages]
    rendered = template.render(chat)
    bounds: list[int] = []
    count = 0
    for _, n in labels:
        count += n
        prefix = template.render(chat[:count], add_generation_prompt=False)
        end = len(prefix.encode("utf-8")) if rendered.startswith(prefix) else (bounds[-1] if bounds else 0)
        bounds.append(end)
    ids = template.tokens(chat)
    parts = [PromptPart(label, []) for label, _ in labels] + [PromptPart("template", [])]
    offset = 0
    for piece in pieces(llama, ids):
        index = next((i for i, end in enumerate(bounds) if offset < end), len(bounds))
        parts[index].pieces.append(piece)
        offset += sum(len(token_bytes(llama, token)) for token in piece.ids)
    return [p for p in parts if p.pieces]


def prompt_view(conn: sqlite3.Connection, engine: LlamaEngine, message_id: int) -> PromptView:
    """The prompt stored reply `message_id` was generated from, split into system, examples, history, query."""
    store = ConversationStore(conn)
    message: Message = store.message(message_id)
    if message.role != "assistant":
        raise TunelabError(f"message {message_id} is a {message.role} message: give the id of a reply (see `tunelab history show`)")
    messages = prompt_as_sent(store, message)
    parts = split_prompt(engine.llama, engine.template, messages, part_labels(messages, message.provenance))
    return PromptView(message_id, engine.model_path, parts, text_pieces(engine.llama, message.content), message.prompt_tokens)
