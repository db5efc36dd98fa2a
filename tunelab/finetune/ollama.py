"""An Ollama model folder for an adapter: its GGUF (or a merged GGUF) and a `Modelfile`.

The Modelfile (Ollama's documented syntax: `FROM`, `ADAPTER`, `TEMPLATE`, `PARAMETER stop`,
`SYSTEM`) must make Ollama prompt the model exactly as tunelab trained and chats with it, or the
adapter answers a prompt it never saw. Ollama templates are Go templates, not the Jinja
template in the GGUF, so the conversion is checked rather than guessed: the model's own template
is rendered (by the same formatter tunelab chats through) on probe conversations, and only a
template whose output is exactly ChatML - with or without a default system prompt, as SmolLM2
has - is converted. Anything else gets no TEMPLATE line and a note saying so (Ollama then uses
its own guess), never a template that looks right and prompts differently.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.engine.chat_template import ChatMessage
from tunelab.errors import TunelabError
from tunelab.stores.files import atomic_file, atomic_write_text

MODELFILE = "Modelfile"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
PROBE = {"system": "PROBE-SYSTEM-7", "user": "PROBE-USER-7", "assistant": "PROBE-ASSISTANT-7", "next": "PROBE-NEXT-7"}


@dataclass(frozen=True)
class OllamaTemplate:
    """The chat template in Ollama's Go-template syntax and the strings that end a reply."""

    template: str
    stops: tuple[str, ...]


@dataclass
class OllamaExport:
    folder: Path
    modelfile: Path
    weights: Path
    """The GGUF the Modelfile points at besides the base: the adapter, or the merged model."""
    model_name: str
    notes: list[str] = field(default_factory=list)

    @property
    def create_command(self) -> str:
        return f"ollama create {self.model_name} -f {self.modelfile}"


def chatml(messages: list[tuple[str, str]], generation_prompt: bool = True) -> str:
    text = "".join(f"{IM_START}{role}\n{content}{IM_END}\n" for role, content in messages)
    return text + (f"{IM_START}assistant\n" if generation_prompt else "")


def go_chatml(default_system: str) -> str:
    """ChatML as an Ollama Go template. Ollama passes the SYSTEM text both as `.System` and as a
    system entry of `.Messages`, so the loop skips system entries and `.System` is written once;
    `default_system` is what the model's own template says when no system prompt is given."""
    fallback = f"{{{{ else }}}}{IM_START}system\n{default_system}{IM_END}\n" if default_system else ""
    return (
        f"{{{{- if .System }}}}{IM_START}system\n{{{{ .System }}}}{IM_END}\n{fallback}{{{{ end }}}}\n"
        f'{{{{- range .Messages }}}}{{{{ if ne .Role "system" }}}}{IM_START}{{{{ .Role }}}}\n'
        f"{{{{ .Content }}}}{IM_END}\n{{{{ end }}}}{{{{ end }}}}{IM_START}assistant\n"
    )


def convert_template(render: Callable[[list[ChatMessage]], str], eos_token: str) -> OllamaTemplate | None:
    """The Ollama form of a chat template, known only through `render(messages) -> prompt` (the
    formatter tunelab chats through, generation prompt included); None when its output is not ChatML."""
    p = PROBE
    turns = [("system", p["system"]), ("user", p["user"]), ("assistant", p["assistant"]), ("user", p["next"])]
    if render([ChatMessage(role, content) for role, content in turns]) != chatml(turns):
        return None
    alone = render([ChatMessage("user", p["user"])])
    tail = chatml([("user", p["user"])])
    default = re.fullmatch(re.escape(f"{IM_START}system\n") + r"(.*)" + re.escape(f"{IM_END}\n" + tail), alone, re.DOTALL)
    if alone != tail and default is None:
        return None
    default_system = default.group(1) if default else ""
    if "{{" in default_system or '"""' in default_system:
        return None  # would need escaping in a Go template inside a Modelfile string
    stops = tuple(dict.fromkeys(s for s in (IM_END, eos_token, IM_START) if s))
    return OllamaTemplate(go_chatml(default_system), stops)


def template_of(gguf_path: Path) -> OllamaTemplate | None:
    """The Ollama template of a GGUF's chat template (only the vocabulary is loaded, not the weights)."""
    from llama_cpp import Llama

    from tunelab.engine.chat_template import ChatTemplate

    chat = ChatTemplate(Llama(str(gguf_path), vocab_only=True, verbose=False))
    return convert_template(chat.render, chat.eos_token)


def quoted(text: str, what: str) -> str:
    """A Modelfile string: triple quotes keep newlines and quotes as they are."""
    if '"""' in text:
        raise TunelabError(f'the {what} contains """, which a Modelfile cannot quote: edit it and export again')
    return f'"""{text}"""'


def modelfile_text(base: Path, adapter: Path | None, template: OllamaTemplate | None, system: str, note: str = "") -> str:
    lines = ["# written by `tunelab adapters export --ollama`", f"FROM {base.resolve()}"]
    if adapter is not None:
        lines.append(f"ADAPTER {adapter.resolve()}")
    if template is not None:
        lines.append(f"TEMPLATE {quoted(template.template, 'chat template')}")
        lines += [f'PARAMETER stop "{stop}"' for stop in template.stops]
    elif note:
        lines.append(f"# {note}")
    if system.strip():
        lines.append(f"SYSTEM {quoted(system, 'bank instruction')}")
    return "\n".join(lines) + "\n"


def ollama_name(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]", "-", name.lower())


def write_export(
    folder: Path, name: str, base: Path, weights: Path, merged: bool, template: OllamaTemplate | None, system: str
) -> OllamaExport:
    """Write `folder/Modelfile` (and copy the adapter GGUF into `folder`); each file is renamed
    into place whole, and nothing else in `folder` is touched."""
    if not merged:
        copied = folder / f"{name}-adapter.gguf"
        with atomic_file(copied) as tmp:
            shutil.copyfile(weights, tmp)
        weights = copied
    notes = (
        []
        if template is not None
        else [
            "the model's chat template is not ChatML, which is all tunelab converts to Ollama's syntax: no TEMPLATE "
            "written (Ollama will guess one; check its prompts before trusting replies)"
        ]
    )
    text = modelfile_text(weights if merged else base, None if merged else weights, template, system, notes[0] if notes else "")
    modelfile = folder / MODELFILE
    atomic_write_text(modelfile, text)
    return OllamaExport(folder, modelfile, weights, ollama_name(name), notes)


def export_ollama(conn: sqlite3.Connection, name: str, folder: Path | None = None, merged_type: str | None = None) -> OllamaExport:
    """Adapter NAME as an Ollama model folder (default: `ollama/` in the adapter's folder): the
    adapter GGUF on its base, or (with `merged_type`) base and adapter merged into one GGUF.
    SYSTEM is the bank's instruction: the system prompt the adapter was trained with."""
    from tunelab.stores.banks import BankStore
    from tunelab.stores.runs import RunStore, adapter_gguf

    store = RunStore(conn)
    adapter = store.adapter(name)
    run = store.get(str(adapter.run_id))
    folder = (folder or Path(adapter.peft_dir) / "ollama").resolve()
    if folder.exists() and not folder.is_dir():
        raise TunelabError(f"{folder} exists and is not a folder: give --ollama a folder")
    base = Path(run.base_gguf)
    if not base.is_file():
        raise TunelabError(f"the base model of adapter {name!r} is missing: {base}")
    banks = BankStore(conn)
    system = banks.get(run.bank).instruction if run.bank and banks.exists(run.bank) else ""
    template = template_of(base)
    folder.mkdir(parents=True, exist_ok=True)
    if merged_type is None:
        return write_export(folder, name, base, adapter_gguf(conn, name), False, template, system)
    from tunelab.finetune.export_gguf import export_model

    out = folder / f"{ollama_name(name)}-{merged_type}.gguf"
    export_model(Path(run.hf_dir), base, out, merged_type, Path(adapter.peft_dir))
    store.set_export(name, merged_type, out)
    return write_export(folder, name, base, out, True, template, system)
