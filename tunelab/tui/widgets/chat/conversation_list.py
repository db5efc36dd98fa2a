"""The sidebar of conversations; it posts `Picked` and leaves loading to the screen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.message import Message as TextualMessage
from textual.widgets import Label, ListItem, ListView

if TYPE_CHECKING:
    from tunelab.stores.conversations import Conversation


class ConversationList(ListView):
    class Picked(TextualMessage):
        def __init__(self, conversation_id: int) -> None:
            super().__init__()
            self.conversation_id = conversation_id

    def show(self, conversations: list[Conversation], current: int | None) -> None:
        self.clear()
        for conv in conversations:
            self.append(ListItem(Label(conv.title, markup=False), name=str(conv.id)))
        ids = [c.id for c in conversations]
        if current in ids:
            self.index = ids.index(current)

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if event.item is not None and event.item.name:
            self.post_message(self.Picked(int(event.item.name)))
