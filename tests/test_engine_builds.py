"""The engine check and set-up's choice of llama.cpp build (issue 30).

A build that really crashes exists only on some CPUs, so the decision logic is driven by child
processes that really die by SIGSEGV (`os.kill(os.getpid(), SIGSEGV)`), next to the real probe
of the installed build. No wheel is built here: the installer handed to `settle` records what it
was asked for and switches which child the next check runs, as a rebuild would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tunelab.cli import cli
from tunelab.engine import builds, health
from tunelab.engine.builds import BUILDS, BuildFailed, BuildRecord, fallback_plan, settle
from tunelab.engine.health import CheckResult, build_fingerprint, remember_check, run_probe
from tunelab.errors import TunelabError

SEGFAULT = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"]
RAISES = [sys.executable, "-c", "raise RuntimeError('model file is unreadable')"]
DECODES = [sys.executable, "-c", 'print(\'{"detail": "decoded 4 tokens", "system_info": "CPU : AVX2 = 1"}\')']


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Remembered checks in a temporary cache, and a process that has not checked yet."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(health, "_checked", False)
    monkeypatch.setattr(builds, "record_path", lambda: tmp_path / "record.json")
    return tmp_path / "cache"


def test_probe_tells_a_signal_from_an_error_from_a_hang_from_a_decode():
    crashed = run_probe(SEGFAULT)
    assert (crashed.status, crashed.detail) == ("crashed", "SIGSEGV") and crashed.crashed
    failed = run_probe(RAISES)
    assert failed.status == "failed" and failed.detail == "RuntimeError: model file is unreadable"
    hung = run_probe([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    assert hung.status == "hung"
    ok = run_probe(DECODES)
    assert ok.ok and ok.detail == "decoded 4 tokens" and ok.system_info == "CPU : AVX2 = 1"


def test_the_real_probe_decodes_with_the_installed_build(bundled_model, cache):
    result = health.check_engine(bundled_model)
    assert result.ok, result
    assert result.detail.startswith("decoded ") and "CPU" in result.system_info
    assert health.remembered_check(build_fingerprint()) == result  # the next process reads it, no child


def test_plan_drops_amx_only_where_the_cpu_advertises_it():
    assert [b.name for b in fallback_plan(["avx2", "avx512f", "amx_tile", "amx_int8"])] == ["native", "no-amx", "portable"]
    assert [b.name for b in fallback_plan(["avx2", "avx512f"])] == ["native", "portable"]
    assert "-mno-amx-tile" in BUILDS["no-amx"].cmake_args and "GGML_NATIVE=OFF" in BUILDS["portable"].cmake_args


class Machine:
    """The installed build and the child each build's check runs; `install` swaps the build."""

    def __init__(self, children: dict[str, list[str]], unbuildable: tuple[str, ...] = ()) -> None:
        self.children = children
        self.unbuildable = unbuildable
        self.installed = "native"
        self.installs: list[str] = []
        self.said: list[str] = []

    def probe(self) -> CheckResult:
        return run_probe(self.children[self.installed])

    def install(self, build: builds.Build) -> None:
        self.installs.append(build.name)
        if build.name in self.unbuildable:
            raise BuildFailed("cmake: compiler error")
        self.installed = build.name


def test_a_native_build_that_segfaults_is_rebuilt_without_amx_and_checked_again():
    machine = Machine({"native": SEGFAULT, "no-amx": DECODES, "portable": DECODES})
    build, result, reason = settle(fallback_plan(["amx_tile"]), machine.probe, machine.install, machine.said.append)
    assert (build.name, result.ok, machine.installs) == ("no-amx", True, ["no-amx"])  # AMX off only; portable not needed
    assert reason == "native crashed in a test decode (SIGSEGV)"
    (line,) = machine.said
    assert "native build crashed in a test decode (SIGSEGV); rebuilding it as no-amx" in line and "\n" not in line


def test_a_working_native_build_is_kept():
    machine = Machine({"native": DECODES})
    build, result, _ = settle(fallback_plan(["amx_tile"]), machine.probe, machine.install, machine.said.append)
    assert (build.name, result.ok, machine.installs, machine.said) == ("native", True, [], [])


def test_a_build_that_fails_to_compile_leaves_the_venv_alone_and_the_next_is_tried():
    machine = Machine({"native": SEGFAULT, "portable": DECODES}, unbuildable=("no-amx",))
    build, _, reason = settle(fallback_plan(["amx_tile"]), machine.probe, machine.install, machine.said.append)
    assert (build.name, machine.installs) == ("portable", ["no-amx", "portable"])
    assert "the no-amx build failed (cmake: compiler error); the venv keeps the native build" in machine.said[1]
    assert reason.startswith("native crashed")


def test_when_every_build_crashes_set_up_refuses_in_one_line():
    machine = Machine({"native": SEGFAULT, "no-amx": SEGFAULT, "portable": SEGFAULT})
    with pytest.raises(TunelabError) as refused:
        settle(fallback_plan(["amx_tile"]), machine.probe, machine.install, machine.said.append)
    message = str(refused.value)
    assert "\n" not in message and "set-up is not done" in message
    assert "native: SIGSEGV, no-amx: SIGSEGV, portable: SIGSEGV" in message


def test_a_python_error_in_the_check_is_not_taken_for_a_bad_build():
    machine = Machine({"native": RAISES})
    with pytest.raises(TunelabError, match="not a fault of the build, so nothing was rebuilt"):
        settle(fallback_plan(["amx_tile"]), machine.probe, machine.install, machine.said.append)
    assert machine.installs == []


def test_a_forced_build_that_crashes_is_refused_not_swapped(monkeypatch, cache):
    monkeypatch.setenv("TUNELAB_LLAMA_BUILD", "native")
    monkeypatch.setattr(builds, "check_engine", lambda: run_probe(SEGFAULT))
    with pytest.raises(TunelabError, match=r"crashed in every build tried \(native: SIGSEGV\)"):
        builds.set_up(lambda line: None)
    assert builds.read_record() is None  # nothing recorded as working
    monkeypatch.setenv("TUNELAB_LLAMA_BUILD", "fast")
    with pytest.raises(TunelabError, match="unknown TUNELAB_LLAMA_BUILD 'fast': use one of native, no-amx, portable, cuda"):
        builds.set_up(lambda line: None)


def test_set_up_records_the_build_and_does_not_check_a_proven_one_again(monkeypatch, cache):
    monkeypatch.delenv("TUNELAB_LLAMA_BUILD", raising=False)
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    monkeypatch.setattr(builds, "check_engine", lambda: run_probe(DECODES))
    record, checked = builds.set_up(lambda line: None)
    assert checked and (record.build, record.check, record.fingerprint) == ("native", "ok", build_fingerprint())
    assert json.loads(builds.record_path().read_text())["system_info"] == "CPU : AVX2 = 1"
    monkeypatch.setattr(builds, "check_engine", lambda: pytest.fail("a proven, unchanged build is checked again"))
    again, checked = builds.set_up(lambda line: None)
    assert (again, checked) == (record, False)


def crash_remembered() -> None:
    remember_check(build_fingerprint(), CheckResult("crashed", "SIGSEGV"))


def test_the_cli_refuses_a_crashing_build_in_one_line_instead_of_dying(cache):
    crash_remembered()
    result = CliRunner().invoke(cli, ["chat", "--max-tokens", "4", "Hi"])
    assert result.exit_code == 1
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: llama.cpp crashes on this machine (SIGSEGV in a test decode)")
    assert "scripts/setup.sh" in line and "CMAKE_ARGS=" in line and "--no-cache-dir" in line


async def test_the_tui_says_the_build_crashes_and_keeps_running(settings, conn, cache):
    from tunelab.tui.app import TunelabApp

    crash_remembered()
    app = TunelabApp(settings, conn)
    async with app.run_test(size=(110, 32)) as pilot:
        for key in "Hi":
            await pilot.press(key)
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert any("llama.cpp crashes on this machine (SIGSEGV" in str(n.message) for n in app._notifications)
        assert app.is_running


def test_doctor_names_the_build_and_runs_the_check(cache):
    builds.write_record(BuildRecord("no-amx", BUILDS["no-amx"].cmake_args, "0", build_fingerprint(), "ok", "native crashed (SIGSEGV)"))
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "llama.cpp build          no-amx: -march=native without AMX (set-up," in result.output
    assert "engine check             ok (decoded " in result.output


def test_doctor_shows_a_crash_with_its_fix_and_exits_1(monkeypatch, cache):
    from tunelab.cli import doctor

    monkeypatch.setattr(doctor, "check_engine", lambda: run_probe(SEGFAULT))
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert "engine check             CRASHED (SIGSEGV in a test decode in a child process)" in result.output
    fix = next(line for line in result.output.splitlines() if line.startswith("fix"))
    assert "pip install --force-reinstall --no-deps --no-cache-dir" in fix
