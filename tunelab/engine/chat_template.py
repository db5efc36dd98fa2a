"""Turn chat messages into prompt tokens with the model's own chat template.

We render the template ourselves (rather than calling create_chat_completion) so that we know
the exact prompt token count before generating: that is what context management, ICL token
budgets and the stored provenance need.

A GGUF's template is code from whoever made the file. llama-cpp-python renders it in jinja2's
immutable sandbox, which raises `SecurityError` on any reach for Python internals
(`''.__class__.__mro__`, `cycler.__init__.__globals__`...); the template is tried once when the
model loads, so such a file is refused with one line before any prompt is sent.

A GGUF without a template (old conversions, base models such as Gemma 3 270M) gets ONE fallback,
ChatML, with the model's BOS text in front when llama.cpp would add BOS to a plain prompt (Gemma
is lost without it; Qwen-style models add none). Training uses the same string: `gguf_template`
is what fine-tuning puts on the HF tokenizer, so an adapter learns the prompt format it is served
with.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from jinja2.exceptions import SecurityError, TemplateError
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_types import ChatCompletionRequestMessage

from tunelab.engine import llama_logs  # noqa: F401  (llama.cpp warnings off the terminal)
from tunelab.errors import TunelabError

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""The fallback for GGUFs that carry no template (see `fallback_template`)."""


def fallback_template(bos_text: str) -> str:
    """ChatML, after the BOS text when the model wants BOS (a Jinja string literal, so both
    llama.cpp's and transformers' renderers write exactly these characters)."""
    if not bos_text:
        return CHATML_TEMPLATE
    return "{{ " + json.dumps(bos_text, ensure_ascii=False) + " }}" + CHATML_TEMPLATE


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class ChatTemplate:
    def __init__(self, llama: Llama) -> None:
        self.llama = llama
        model = llama._model
        eos_id, bos_id = model.token_eos(), model.token_bos()
        self.eos_token = model.token_get_text(eos_id) if eos_id != -1 else ""
        self.bos_token = model.token_get_text(bos_id) if bos_id != -1 else ""
        self.template = llama.metadata.get("tokenizer.chat_template") or fallback_template(self.bos_token if model.add_bos_token() else "")
        self.formatter = Jinja2ChatFormatter(template=self.template, eos_token=self.eos_token, bos_token=self.bos_token)
        self.prefix_formatter = Jinja2ChatFormatter(
            template=self.template, eos_token=self.eos_token, bos_token=self.bos_token, add_generation_prompt=False
        )
        """Renders messages without the reply header: where each message ends in a prompt (the token view)."""
        # a sandbox escape is refused here, at load; a template that rejects this conversation
        # (e.g. raise_exception) says so when used
        with contextlib.suppress(TemplateError):
            self.render([ChatMessage("user", "hi")])

    def render(self, messages: list[ChatMessage], add_generation_prompt: bool = True) -> str:
        formatter = self.formatter if add_generation_prompt else self.prefix_formatter
        try:
            # the formatter types messages by role (TypedDicts with literal roles); it only hands them to the template
            request = cast("list[ChatCompletionRequestMessage]", [m.as_dict() for m in messages])
            return formatter(messages=request).prompt
        except SecurityError as exc:
            raise TunelabError(
                f"refused the chat template of {Path(self.llama.model_path).name}: it tries to reach "
                f"Python internals ({exc}); use a GGUF with a plain chat template"
            ) from None

    def tokens(self, messages: list[ChatMessage]) -> list[int]:
        return self.tokenize(self.render(messages))

    def tokenize(self, text: str) -> list[int]:
        """Tokens of rendered template text (a whole prompt or a piece of one)."""
        # The template writes BOS itself where the model wants it (added_special), so don't add another.
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []


def gguf_template(gguf_path: Path) -> str:
    """The template llama.cpp serves `gguf_path` with (its own, or the fallback), read from the vocabulary only."""
    llama = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        return ChatTemplate(llama).template
    finally:
        llama.close()
