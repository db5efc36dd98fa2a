"""Which llama.cpp build this venv runs, and set-up's choice of one that works here.

`scripts/setup.sh` runs `python -m tunelab.engine.builds` after installing. It proves the
installed build with a child decode (engine/health.py); if the child dies by a signal it rebuilds
llama-cpp-python (same version) without what most likely failed and checks again:

    native (-march=native: every instruction set the CPU advertises; pip's default)
      -> no-amx   (only where the CPU advertises AMX: ggml's AMX kernels fault on some VMs)
      -> portable (GGML_NATIVE=OFF: AVX2/FMA/F16C, no AVX-512, no AMX)

AMX stays on wherever the native build works. `TUNELAB_LLAMA_BUILD=native|no-amx|portable|cuda`
forces one build and `CMAKE_ARGS` passes any other through ("custom"); a forced build that
crashes is refused in one line, never swapped for another behind the user's back.

Rebuilt wheels are built with `--no-cache-dir` (pip's cache keys a wheel by version, not by
CMAKE_ARGS, so it would hand back the crashing one) into tunelab's own cache, one folder per
build, version and CPU; a wheel that fails to build never touches the venv. The outcome is
recorded in the venv (`tunelab-llama-build.json`) for `tunelab doctor`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunelab.engine.health import (
    CheckResult,
    build_fingerprint,
    check_engine,
    checks_dir,
    cpu_features,
    cpu_model,
    llama_version,
)
from tunelab.errors import TunelabError
from tunelab.stores.files import atomic_write_text

NO_AMX = r"-mno-amx-tile\ -mno-amx-int8\ -mno-amx-bf16"
"""Backslash-escaped spaces: scikit-build-core splits CMAKE_ARGS like a shell, and this exact
form was shown to build a library without AMX kernels on the VM where native crashed."""


@dataclass(frozen=True)
class Build:
    name: str
    cmake_args: str
    what: str
    """What it compiles in, as set-up and doctor say it."""


BUILDS = {
    build.name: build
    for build in (
        Build("native", "", "every instruction set this CPU advertises (-march=native)"),
        Build("no-amx", f"-DCMAKE_C_FLAGS={NO_AMX} -DCMAKE_CXX_FLAGS={NO_AMX}", "-march=native without AMX"),
        Build("portable", "-DGGML_NATIVE=OFF", "AVX2/FMA/F16C only (no AVX-512, no AMX)"),
        Build("cuda", "-DGGML_CUDA=on", "CUDA (NVIDIA GPU) with a native CPU part"),
    )
}


def fallback_plan(features: list[str]) -> list[Build]:
    """The builds to try in order when nothing is forced: the first is what pip builds."""
    names = ["native", "no-amx", "portable"] if "amx_tile" in features else ["native", "portable"]
    return [BUILDS[name] for name in names]


def next_build_after_crash() -> Build:
    """The build to try when the installed one crashes (the fix doctor and the engine print)."""
    record = read_record()
    plan = fallback_plan(cpu_features())
    names = [build.name for build in plan]
    installed = record.build if record and record.fingerprint == build_fingerprint() and record.build in names else "native"
    return plan[min(names.index(installed) + 1, len(plan) - 1)]


@dataclass
class BuildRecord:
    """What set-up installed and what the check showed: `tunelab doctor` prints it."""

    build: str
    cmake_args: str
    version: str
    fingerprint: str
    check: str
    reason: str
    cpu: str = field(default_factory=cpu_model)
    cpu_features: list[str] = field(default_factory=cpu_features)
    system_info: str = ""
    checked_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S"))


def record_path() -> Path:
    return Path(sys.prefix) / "tunelab-llama-build.json"


def read_record(path: Path | None = None) -> BuildRecord | None:
    try:
        return BuildRecord(**json.loads((path or record_path()).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def write_record(record: BuildRecord, path: Path | None = None) -> None:
    atomic_write_text(path or record_path(), json.dumps(asdict(record), indent=2) + "\n")


class BuildFailed(Exception):
    """A wheel did not build or install; the venv still holds the build it had."""


def settle(
    plan: list[Build],
    probe: Callable[[], CheckResult],
    install: Callable[[Build], None],
    say: Callable[[str], None],
) -> tuple[Build, CheckResult, str]:
    """Check the installed build (`plan[0]`); while a check dies by a signal, install the next
    build of `plan` and check that. Returns the build that works, its check and why it was
    chosen; raises a one-line TunelabError when none does, or when the failure is not the
    build's (a Python error in the child: rebuilding would not help)."""
    build, result = plan[0], probe()
    reason = "the installed build decoded in a child process"
    crashed = {}
    for following in plan[1:]:
        if not result.crashed:
            break
        crashed[build.name] = result.detail
        say(
            f"tunelab setup: llama.cpp's {build.name} build crashed in a test decode ({result.detail}); "
            f"rebuilding it as {following.name} ({following.what})"
        )
        try:
            install(following)
        except BuildFailed as exc:
            say(f"tunelab setup: the {following.name} build failed ({exc}); the venv keeps the {build.name} build")
            continue
        build, result = following, probe()
        reason = f"{' and '.join(crashed)} crashed in a test decode ({', '.join(crashed.values())})"
    if result.crashed:
        crashed[build.name] = result.detail
        tried = ", ".join(f"{name}: {detail}" for name, detail in crashed.items())
        raise TunelabError(
            f"llama.cpp crashed in every build tried ({tried}); the venv keeps the {build.name} build "
            "and set-up is not done: please report `tunelab doctor`'s output"
        )
    if not result.ok:
        raise TunelabError(f"the engine check {result.describe()}: not a fault of the build, so nothing was rebuilt")
    return build, result, reason


def wheel_cache() -> Path:
    return checks_dir().parent / "llama-wheels"


def cpu_key() -> str:
    """Native wheels are only good on the CPU they were compiled for."""
    return hashlib.sha256(f"{cpu_model()}|{' '.join(cpu_features())}".encode()).hexdigest()[:12]


def wheel_for(build: Build, version: str, say: Callable[[str], None]) -> Path:
    """This build's wheel from tunelab's cache, built (from the sdist, no pip cache) if missing."""
    folder = wheel_cache() / f"{build.name}-{version}-{cpu_key()}"
    if wheels := sorted(folder.glob("*.whl")):
        return wheels[-1]
    say(f"tunelab setup: building llama-cpp-python {version} as {build.name} (CMAKE_ARGS={build.cmake_args or '(none)'})")
    env = {**os.environ, "CMAKE_ARGS": build.cmake_args, "FORCE_CMAKE": "1"}
    with tempfile.TemporaryDirectory(prefix="tunelab-wheel-") as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps", "--no-cache-dir",
             "--no-binary", "llama-cpp-python", f"llama-cpp-python=={version}", "-w", tmp],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        built = sorted(Path(tmp).glob("llama_cpp_python-*.whl"))
        if done.returncode != 0 or not built:
            raise BuildFailed((done.stderr.strip().splitlines() or ["pip wheel failed"])[-1])
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / (built[0].name + ".part")
        shutil.copy2(built[0], partial)
        os.replace(partial, folder / built[0].name)  # a wheel in the cache is always whole
    return folder / built[0].name


def install_build(build: Build, version: str, say: Callable[[str], None]) -> None:
    wheel = wheel_for(build, version, say)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--force-reinstall", "--no-deps", str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise BuildFailed((done.stderr.strip().splitlines() or ["pip install failed"])[-1])


def requested_build() -> Build | None:
    """The build the user forces: TUNELAB_LLAMA_BUILD by name, or CMAKE_ARGS passed through."""
    name = os.environ.get("TUNELAB_LLAMA_BUILD", "").strip()
    if name:
        if name not in BUILDS:
            raise TunelabError(f"unknown TUNELAB_LLAMA_BUILD {name!r}: use one of {', '.join(BUILDS)}")
        return BUILDS[name]
    if args := os.environ.get("CMAKE_ARGS", "").strip():
        return Build("custom", args, f"CMAKE_ARGS={args}")
    return None


def set_up(say: Callable[[str], None]) -> tuple[BuildRecord, bool]:
    """Set-up's step: make sure the venv's llama.cpp decodes on this machine, and record it.
    Also says whether a check ran (False: this build was proven before and is unchanged)."""
    version = llama_version()
    if not version:
        raise TunelabError("llama-cpp-python is not installed in this venv")
    record, fingerprint, forced = read_record(), build_fingerprint(), requested_build()
    current = record if record and record.fingerprint == fingerprint else None
    if current and current.check == "ok" and (forced is None or (forced.name, forced.cmake_args) == (current.build, current.cmake_args)):
        return current, False  # proven before, unchanged since: nothing to do

    def install(build: Build) -> None:
        install_build(build, version, say)

    if forced is not None:
        installed = (current.build, current.cmake_args) if current else ("native", "")  # unrecorded: pip's default
        if installed != (forced.name, forced.cmake_args):
            try:
                install(forced)
            except BuildFailed as exc:
                raise TunelabError(f"the {forced.name} build of llama-cpp-python failed: {exc}") from None
        plan = [forced]
    else:
        plan = fallback_plan(cpu_features())
        names = [build.name for build in plan]
        start = names.index(current.build) if current and current.build in names else 0
        plan = plan[start:]
    build, result, reason = settle(plan, check_engine, install, say)
    if forced is not None:
        reason = f"forced by {'TUNELAB_LLAMA_BUILD' if forced.name in BUILDS else 'CMAKE_ARGS'}"
    done = BuildRecord(build.name, build.cmake_args, version, build_fingerprint(), "ok", reason, system_info=result.system_info)
    write_record(done)
    return done, True


def main() -> None:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        record, checked = set_up(say)
    except TunelabError as exc:
        say(f"tunelab setup: {exc}")
        raise SystemExit(1) from None
    if checked:
        say(f"tunelab setup: llama.cpp {record.version} decodes here as the {record.build} build ({record.reason})")


if __name__ == "__main__":
    main()
