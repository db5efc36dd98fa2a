"""The right-hand panel of the chat screen: ICL (bank, selector, k), the adapter, and the
examples the focused reply was given."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Select, Static

from tunelab.engine.chat_service import IclRequest
from tunelab.engine.selectors import KINDS
from tunelab.errors import TunelabError
from tunelab.text import one_line

NO_ADAPTER = "(base model)"


class ContextPanel(VerticalScroll):
    def __init__(self, banks: list[str], adapters: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.banks = banks
        self.adapters = adapters

    def compose(self) -> ComposeResult:
        yield Label("In-context examples", classes="panel-title")
        yield Checkbox("use examples (ICL)", False, id="icl-on", compact=True)
        yield Select([(b, b) for b in self.banks], prompt="bank", id="icl-bank", compact=True,
                     value=self.banks[0] if self.banks else Select.NULL)
        yield Select([(k, k) for k in KINDS], id="icl-selector", compact=True, value=IclRequest("").selector, allow_blank=False)
        with Horizontal(classes="field"):
            yield Label("k", classes="field-label")
            yield Input(str(IclRequest("").k), id="icl-k", compact=True, type="integer")
        yield Label("Adapter", classes="panel-title")
        yield Select([(NO_ADAPTER, NO_ADAPTER), *((a, a) for a in self.adapters)], id="adapter", compact=True,
                     value=NO_ADAPTER, allow_blank=False)
        yield Label("Examples of the focused reply", classes="panel-title")
        yield Static("(none)", id="icl-examples")

    def request(self) -> IclRequest | None:
        """What the next reply should use; raises a one-line error for an incomplete setting."""
        if not self.query_one("#icl-on", Checkbox).value:
            return None
        bank = self.query_one("#icl-bank", Select).value
        if bank is Select.NULL:
            raise TunelabError("ICL is on but no bank is chosen (import one: `tunelab bank import-demo sentiment`)")
        k_text = self.query_one("#icl-k", Input).value.strip()
        if not k_text.lstrip("-").isdigit():
            raise TunelabError(f"k must be a whole number (got {k_text!r})")
        return IclRequest(str(bank), str(self.query_one("#icl-selector", Select).value), int(k_text))

    @property
    def adapter(self) -> str | None:
        value = self.query_one("#adapter", Select).value
        return None if value == NO_ADAPTER else str(value)

    def show_examples(self, icl: dict[str, Any] | None) -> None:
        """List the examples (rank, score, input → output) recorded with a reply."""
        if not icl:
            text = "(no examples: zero-shot reply)"
        else:
            lines = [f"{icl['bank']} · {icl['selector']} · k {icl['k']} · +{icl['example_tokens']} tokens"]
            if icl.get("dropped"):
                lines.append(f"{icl['dropped']} dropped to fit the context")
            for rank, e in enumerate(icl["examples"], start=1):
                lines.append(f"{rank}. #{e['id']} ({e['score']:.2f}) {one_line(e['input'], 60)} → {one_line(e['output'], 24)}")
            text = "\n".join(lines)
        self.query_one("#icl-examples", Static).update(text)
