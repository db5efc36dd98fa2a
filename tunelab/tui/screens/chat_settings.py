"""The system prompt and sampler settings of the current conversation."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from tunelab.engine.sampling import SamplerParams

NUMERIC = [f.name for f in fields(SamplerParams) if f.name != "stop"]


class ChatSettingsScreen(ModalScreen[dict[str, Any] | None]):
    """Returns {"system_prompt": str, "params": {...}} or None; validation is SamplerParams' job."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
        Binding("ctrl+s", "save", "Save", id="settings.save"),
    ]

    def __init__(self, system_prompt: str, params: SamplerParams) -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.params = params

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="settings-dialog"):
            yield Label("System prompt")
            yield TextArea(self.system_prompt, id="system-prompt")
            for name in NUMERIC:
                with Horizontal(classes="field"):
                    yield Label(name.replace("_", " "), classes="field-label")
                    value = getattr(self.params, name)
                    yield Input(
                        "" if value is None else str(value),
                        placeholder="random per reply" if name == "seed" else "",
                        id=f"param-{name}",
                        compact=True,
                    )
            with Horizontal(classes="field"):
                yield Label("stop strings (comma-separated)", classes="field-label")
                yield Input(", ".join(self.params.stop), id="param-stop", compact=True)
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.action_save()

    def action_save(self) -> None:
        values: dict[str, Any] = {name: self.query_one(f"#param-{name}", Input).value for name in NUMERIC}
        stop = self.query_one("#param-stop", Input).value
        values["stop"] = [s.strip() for s in stop.split(",") if s.strip()]
        self.dismiss({"system_prompt": self.query_one("#system-prompt", TextArea).text, "params": values})

    def action_cancel(self) -> None:
        self.dismiss(None)
