"""`benchmarks/gpu_check.py --dry-run`: the GPU check's own code at tiny sizes on the CPU, so it still
runs the day a GPU is lent. Every section must finish without an error and report numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from finetune_support import base_pair  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("build", "decode", "sft", "preference", "embedding", "compare")


@pytest.mark.heavy
@pytest.mark.slow
def test_dry_run_writes_json_and_markdown_with_figures_for_every_section(tmp_path: Path, base_pair) -> None:
    """On the session's dequantised base (`--hf-dir`), as a user with one at hand would: the check's own
    dequantisation is prepare_base's, which the fine-tuning tests cover."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out), "--hf-dir", str(base_pair.hf_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]

    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert report["dry_run"] is True
    assert tuple(report["sections"]) == SECTIONS
    for name, section in report["sections"].items():
        assert section["error"] is None, f"{name}: {section['error']}"
        numbers = [v for v in section["figures"].values() if isinstance(v, int | float) and not isinstance(v, bool)]
        assert numbers, f"{name} reported no numbers: {section['figures']}"
    assert report["sections"]["build"]["notes"] == ["dry run: the build is skipped"]
    decode = report["sections"]["decode"]
    if not decode["figures"]["gpu_offload"]:
        assert any("CPU vs CPU" in note for note in decode["notes"])
    assert report["sections"]["sft"]["figures"]["tunelab_tok_s"] > 0
    assert report["sections"]["compare"]["figures"]["items"] > 0

    text = (out / "gpu_check.md").read_text(encoding="utf-8")
    for section in report["sections"].values():
        assert f"## {section['title']}" in text
    assert "Failed" not in text
