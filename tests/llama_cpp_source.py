"""llama.cpp's own sources, from the llama-cpp-python sdist of the installed version: fetched once
with `pip download` (a registry package, MIT) and kept between test sessions.

The version matters: the converter, the server and the library tunelab loads are one release, so
a GGUF the converter writes is one this llama.cpp reads, and llama-server answers as the library
in this process does.
"""

from __future__ import annotations

import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

from tunelab.engine.builds import read_record
from tunelab.stores.files import atomic_dir, file_lock

TEST_CACHE = Path(os.environ.get("TUNELAB_TEST_CACHE") or Path.home() / ".cache" / "tunelab-tests")
"""Where the sdist, the converter and llama-server are kept between test sessions."""

SERVER_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
    # no network at build time: no prebuilt web UI download, no npm, no curl/OpenSSL
    "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
]  # fmt: skip
"""llama-server alone, statically linked, built the way a user builds it from a release."""


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama_cpp_python")


def sdist(cache: Path = TEST_CACHE) -> Path:
    """The sdist tarball, downloaded once (the caller holds a lock on `cache`'s entry)."""
    version = llama_cpp_version()
    path = cache / f"llama_cpp_python-{version}.tar.gz"
    if not path.is_file():
        command = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps", "--no-binary", ":all:"]
        done = subprocess.run([*command, "-d", str(cache), "-q"], capture_output=True, text=True)
        if done.returncode != 0:  # the only step that needs the network: once per llama-cpp-python version
            pytest.fail(
                f"llama.cpp's sources are not cached in {cache} and `pip download llama-cpp-python=={version}` failed "
                f"({last_line(done.stderr)}): run the tests once online, or set TUNELAB_TEST_CACHE to a folder holding the sdist",
                pytrace=False,
            )
    return path


def last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def extract(tarball: Path, into: Path, wanted: tuple[str, ...] | None = None) -> None:
    """vendor/llama.cpp/ into `into`: all of it, or the parts in `wanted` (a file, or a folder ending in /)."""
    prefix = tarball.name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            rel = member.name.removeprefix(prefix)
            if not member.name.startswith(prefix) or not rel:
                continue
            if wanted is None or any(rel == part or (part.endswith("/") and rel.startswith(part)) for part in wanted):
                member.name = rel
                tar.extract(member, into, filter="data")


def llama_server(cache: Path = TEST_CACHE) -> Path:
    """llama.cpp's `llama-server`, built once with CMake from the sdist's vendored llama.cpp, with
    the CPU flags set-up proved on this machine (so a no-AMX machine gets a no-AMX server).

    About 6 minutes on 2 cores the first time; a process that waits for another's build blocks
    on the lock. A failed build is one line (CMake's last words) and leaves nothing cached."""
    record = read_record()
    build = record.build if record else "native"
    root = cache / f"llama-server-{llama_cpp_version()}-{build}"
    binary = root / "llama-server"
    with file_lock(cache / f"{root.name}.lock"):
        if binary.is_file():
            return binary
        if shutil.which("cmake") is None:
            pytest.fail("llama-server is built from source with CMake, which is not installed", pytrace=False)
        tarball = sdist(cache)
        with tempfile.TemporaryDirectory(prefix="llama-server-src-") as tmp:
            source, out = Path(tmp) / "src", Path(tmp) / "build"
            extract(tarball, source)
            flags = [*SERVER_FLAGS, *shlex.split(record.cmake_args if record else "")]
            steps = [
                ["cmake", "-S", str(source), "-B", str(out), *flags],
                ["cmake", "--build", str(out), "--target", "llama-server", "-j", str(os.cpu_count() or 1)],
            ]
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True)
                if done.returncode != 0:
                    pytest.fail(f"building llama-server failed: {last_line(done.stderr or done.stdout)}", pytrace=False)
            with atomic_dir(root) as tmp_root:
                shutil.copy2(out / "bin" / "llama-server", tmp_root / "llama-server")
    return binary
