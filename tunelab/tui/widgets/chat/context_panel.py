"""The right-hand panel of the chat screen: ICL (bank, selector, k), plan-then-answer, the adapter,
best-of-n by a reward model, and how the focused reply was made (its examples, its candidates' scores)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Checkbox, Input, Label, Select, Static

from tunelab.errors import TunelabError
from tunelab.icl.selectors import KINDS
from tunelab.runtime.chat_service import IclRequest
from tunelab.text import one_line

NO_ADAPTER = "(base model)"
NO_BEST_OF = "(off: one reply)"
DEFAULT_BEST_OF = 4


class ContextPanel(VerticalScroll):
    def __init__(self, banks: list[str], adapters: list[str], reward_models: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.banks = banks
        self.adapters = adapters
        self.reward_models = reward_models

    def compose(self) -> ComposeResult:
        yield Label("In-context examples", classes="panel-title")
        yield Checkbox("use examples (ICL)", False, id="icl-on", compact=True)
        yield Select(
            [(b, b) for b in self.banks], prompt="bank", id="icl-bank", compact=True, value=self.banks[0] if self.banks else Select.NULL
        )
        yield Select([(k, k) for k in KINDS], id="icl-selector", compact=True, value=IclRequest("").selector, allow_blank=False)
        with Horizontal(classes="field"):
            yield Label("k", classes="field-label")
            yield Input(str(IclRequest("").k), id="icl-k", compact=True, type="integer")
        yield Label("Intermediate steps", classes="panel-title")
        yield Checkbox("plan, then answer", False, id="plan-on", compact=True)
        yield Label("Adapter", classes="panel-title")
        yield Select(
            [(NO_ADAPTER, NO_ADAPTER), *((a, a) for a in self.adapters)], id="adapter", compact=True, value=NO_ADAPTER, allow_blank=False
        )
        yield Label("Best-of-n (reward model)", classes="panel-title")
        yield Select(
            [(NO_BEST_OF, NO_BEST_OF), *((r, r) for r in self.reward_models)],
            id="best-of-model",
            compact=True,
            value=NO_BEST_OF,
            allow_blank=False,
        )
        with Horizontal(classes="field"):
            yield Label("n", classes="field-label")
            yield Input(str(DEFAULT_BEST_OF), id="best-of-n", compact=True, type="integer")
        yield Label("Examples of the focused reply", classes="panel-title")
        yield Static("(none)", id="icl-examples")
        yield Static("", id="best-of-scores")

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

    def best_of(self) -> tuple[str, int] | None:
        """(reward model, n) when replies should be picked by a reward model; raises for a bad n."""
        model = self.query_one("#best-of-model", Select).value
        if model == NO_BEST_OF:
            return None
        n_text = self.query_one("#best-of-n", Input).value.strip()
        if not n_text.isdigit():
            raise TunelabError(f"best-of n must be a whole number (got {n_text!r})")
        return str(model), int(n_text)

    @property
    def plan(self) -> bool:
        """Whether the next reply is planned and worked step by step before the answer."""
        return self.query_one("#plan-on", Checkbox).value

    @property
    def adapter(self) -> str | None:
        value = self.query_one("#adapter", Select).value
        return None if value == NO_ADAPTER else str(value)

    def show_reply(self, provenance: dict[str, Any]) -> None:
        """How a reply was made: its ICL examples and, for a best-of pick, every candidate's score."""
        self.show_examples(provenance.get("icl"))
        best_of = provenance.get("best_of")
        lines = []
        if best_of:
            lines.append(f"best of {best_of['n']} by {best_of['reward_model']}:")
            for i, c in enumerate(best_of["candidates"]):
                lines.append(f"{'*' if i == best_of['chosen'] else ' '} {c['score']:+.2f} {one_line(c['text'], 28)}")
        self.query_one("#best-of-scores", Static).update("\n".join(lines))

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
