"""Context distillation on the demo sentiment bank: does a zero-shot LoRA student trained on the
answers of base + embedding@8 reach its teacher's accuracy at zero-shot prompt cost?

Settings, fixed before any result was seen (issue 16):

- bank: `tunelab bank import-demo sentiment` (400 Rotten Tomatoes reviews, test share 0.2,
  split seed 0: 320 train / 80 test);
- teacher: `base+embedding@8` on the bundled model (SmolLM2-135M-Instruct Q4_1), its 8 examples
  drawn from the bank's train split, never the item's own; greedy, 16 tokens; it relabels all 320
  train inputs into bank `sentiment-icl8` (test share 0: the student is scored on the gold test split);
- students: `tunelab train` with the learning curve's settings (issue 17: 1 epoch, lr 5e-4,
  max length 128, batch 4, LoRA r 8, seed 0) for both `student` (on `sentiment-icl8`) and `gold`
  (on `sentiment`, the bank's ordinary LoRA: the same settings on the gold labels; skip with
  `--no-gold`). The curve trained gold LoRAs with exactly these settings at n = 320 (two seeds),
  so its figures stand beside the student's;
- comparison: `tunelab compare --bank sentiment` on all 80 test items with the arms base,
  base+embedding@8 (the teacher), lora:student, lora:gold; greedy, 16 tokens; accuracy with 95%
  bootstrap CIs, McNemar tests, mean prompt tokens, TTFT, and the student's agreement with the
  teacher (95% Wilson) from the report's Distillation section.

Changed on 2026-12-02 before any answer was looked at, for time (on the shared 2-core machine
the distillation ran at a few answers a minute beside the test suite): the students train with
the curve's settings instead of `tunelab train`'s defaults (3 epochs, lr 2e-4, max length 512:
240 steps instead of 80), and the recorded run used `--no-gold`: the curve's n = 320 gold LoRAs
(same settings) are the gold-trained reference, and the student is scored against the gold
labels all the same.

Run it on an otherwise idle machine (TTFT is a timing); a rerun resumes every stage:

    .venv/bin/python benchmarks/distill.py --home /tmp/distill-bench

`--size`, `--distill-limit`, `--test-limit` and `--max-steps` shrink it for a smoke test only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_runs import tunelab

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BANK, DISTILLED, TEACHER = "sentiment", "sentiment-icl8", "base+embedding@8"
STUDENT_SETTINGS = ("--epochs", "1", "--learning-rate", "5e-4", "--max-length", "128", "--seed", "0")
"""The learning curve's LoRA settings (issue 17), so its gold-trained n = 320 points compare directly."""


def timed(label: str, home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = tunelab(home, *args)
    seconds = time.monotonic() - started
    print(f"{label}: {seconds:.0f} s", file=sys.stderr)
    return result, seconds


def has_adapter(home: Path, name: str) -> bool:
    listing = json.loads(tunelab(home, "adapters", "list", "--json").stdout)
    return any(a.get("name") == name for a in listing)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="Data dir (default: a new temp dir); reuse it to resume.")
    parser.add_argument("--size", type=int, default=400, help="Demo bank size (smoke tests only).")
    parser.add_argument("--distill-limit", type=int, default=None, help="Relabel only the first N train inputs (smoke tests only).")
    parser.add_argument("--test-limit", type=int, default=None, help="Compare on the first N test items (smoke tests only).")
    parser.add_argument("--max-steps", type=int, default=None, help="Training steps instead of 3 epochs (smoke tests only).")
    parser.add_argument("--no-gold", action="store_true", help="Skip the LoRA trained on the gold labels.")
    options = parser.parse_args()
    home = options.home or Path(tempfile.mkdtemp(prefix="tunelab-distill-"))
    seconds: dict[str, float] = {}

    banks = json.loads(tunelab(home, "bank", "list", "--json").stdout)
    if not any(b["name"] == BANK for b in banks):
        tunelab(home, "bank", "import-demo", "sentiment", "--size", str(options.size))
    limit = ["--limit", str(options.distill_limit)] if options.distill_limit else []
    _, seconds["distill"] = timed("distill", home, "bank", "distill", DISTILLED, "--teacher", TEACHER, "--from-bank", BANK, *limit)
    steps = ["--max-steps", str(options.max_steps)] if options.max_steps else []
    students = {"student": DISTILLED} | ({} if options.no_gold else {"gold": BANK})
    for name, bank in students.items():
        if not has_adapter(home, name):
            _, seconds[f"train {name}"] = timed(f"train {name}", home, "train", name, "--bank", bank, *STUDENT_SETTINGS, *steps)
    arms = ["base", TEACHER, *(f"lora:{name}" for name in students)]
    test = ["--limit", str(options.test_limit)] if options.test_limit else []
    compared, seconds["compare"] = timed("compare", home, "compare", "--bank", BANK, *[x for arm in arms for x in ("--arm", arm)], *test)
    found = re.search(r"^report: (.+)$", compared.stderr, re.MULTILINE)
    if found is None:
        raise SystemExit("compare printed no report path")
    report = json.loads((Path(found.group(1)) / "report.json").read_text(encoding="utf-8"))

    print(f"\n{len(report['items'])} test items of bank {BANK!r}; data dir {home}\n")
    print("| arm | accuracy [95% CI] | prompt tok | TTFT ms |\n|---|---|---|---|")
    for arm in report["arms"]:
        acc = arm["metrics"]["accuracy"]
        ttft = f"{arm['mean_ttft_ms']:.0f}" if arm["mean_ttft_ms"] is not None else "-"
        print(f"| {arm['arm']} | {acc['value']:.1%} [{acc['low']:.1%}, {acc['high']:.1%}] | {arm['mean_prompt_tokens']:.0f} | {ttft} |")
    for pair in (report.get("distillation") or {}).get("pairs", []):
        agree, gap = pair["agreement"], pair["gap"]
        print(
            f"\n{pair['student']} agrees with {pair['teacher']} on {agree['value']:.1%} [{agree['low']:.1%}, {agree['high']:.1%}] "
            f"of the items; student - teacher accuracy {gap['value'] * 100:+.1f} points "
            f"[{gap['low'] * 100:+.1f}, {gap['high'] * 100:+.1f}], p={pair['gap_p_value']:.3g}"
        )
    print("\nverdict:\n" + "\n".join(f"- {line}" for line in report["verdict"]))
    print("\nwall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
