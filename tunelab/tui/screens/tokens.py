"""The token view of a reply (key `t` in chat): its prompt as sent, part by part, with every token boundary visible.

Tokens alternate between two background colours, so where one ends and the next begins shows
even inside a word or a run of CJK characters; a piece made of several tokens (one character
split across them) is one coloured block. Newlines show as ↵ before the line break.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from tunelab.runtime.tokens import Piece, PromptView

STYLES = ("black on #a6d189", "black on #8caaee")


def token_text(pieces: list[Piece]) -> Text:
    """The pieces in alternating colours (see the module docstring)."""
    text = Text()
    for i, piece in enumerate(pieces):
        shown = piece.text.replace("\n", "↵\n").replace("\t", "→")
        text.append(shown, style=STYLES[i % 2])
    return text


class TokensScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,t,q", "dismiss", "Close", id="tokens.close")]

    def __init__(self, view: PromptView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        view = self.view
        totals = " · ".join(f"{kind} {n}" for kind, n in view.totals().items())
        with Vertical(id="tokens-dialog"):
            yield Label(f"reply #{view.message_id}: prompt {view.tokens} tokens ({totals}) · {view.model_path.name}", id="tokens-summary")
            with VerticalScroll(id="tokens-parts"):
                for part in view.parts:
                    yield Label(f"{part.label} · {part.tokens} tokens", classes="tokens-part-title")
                    yield Static(token_text(part.pieces), classes="tokens-part")
                yield Label(f"reply · {sum(len(p.ids) for p in view.reply)} tokens", classes="tokens-part-title")
                yield Static(token_text(view.reply), classes="tokens-part", id="tokens-reply")
            yield Label("Esc closes", classes="hint")
