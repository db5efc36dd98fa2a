"""Does the task need intermediate steps? Zero-shot vs plan-then-execute vs chunked extraction on
long documents, with quality and cost side by side.

Settings, fixed before any result was seen (issue 28):

- bank: `tunelab bank import-demo longdoc` (60 generated documents of about 700 words, about
  1,000 tokens, each with the asked vault's code and two other vaults' codes planted at random
  places, the question last; test share 0.2, seed 0: 12 test items);
- arms: `base` (the whole document at once), `base+plan` (a numbered plan of at most 4 steps,
  each step run with the earlier results, then the answer), `base+extract` (notes taken from
  chunks of at most 512 tokens, each read with the question, then the answer from the notes);
  the bundled model (SmolLM2-135M-Instruct), n_ctx 4096, greedy, 16 answer tokens (8 until a
  3-item smoke run showed the model's replies cut off after "The code of the ... vault is", before
  the code: changed before any full run);
- reported per arm: exact-match accuracy (the first line of the reply is the code) and chrF
  (the report's primary metric here: the codes are all different) with 95% bootstrap CIs, model calls per item, prompt + reply tokens per item over all calls, wall seconds.

Run it on an otherwise idle machine (wall time is a timing); a rerun with the same --home resumes:

    .venv/bin/python benchmarks/decompose.py --home /tmp/decompose-bench

`--limit` compares only the first N test items (smoke tests only).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

from cli_runs import tunelab

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

BANK = "longdoc"
ARMS = ("base", "base+plan", "base+extract")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="Data dir (default: a new temp dir); reuse it to resume.")
    parser.add_argument("--limit", type=int, default=None, help="Compare on the first N test items (smoke tests only).")
    options = parser.parse_args()
    home = options.home or Path(tempfile.mkdtemp(prefix="tunelab-decompose-"))

    if not any(b["name"] == BANK for b in json.loads(tunelab(home, "bank", "list", "--json").stdout)):
        tunelab(home, "bank", "import-demo", "longdoc")
    arms = [x for arm in ARMS for x in ("--arm", arm)]
    limit = ["--limit", str(options.limit)] if options.limit else []
    compared = tunelab(home, "compare", "--bank", BANK, *arms, "--n-ctx", "4096", "--max-tokens", "16", *limit)
    found = re.search(r"^report: (.+)$", compared.stderr, re.MULTILINE)
    if found is None:
        raise SystemExit("compare printed no report path")
    report = json.loads((Path(found.group(1)) / "report.json").read_text(encoding="utf-8"))

    print(f"\n{len(report['items'])} test items of bank {BANK!r}; data dir {home}\n")
    print("| arm | accuracy [95% CI] | chrF [95% CI] | calls / item | tokens / item (all calls) | wall s |\n|---|---|---|---|---|---|")
    for arm in report["arms"]:
        acc, chrf = arm["metrics"]["accuracy"], arm["metrics"]["chrf"]
        print(
            f"| {arm['arm']} | {acc['value']:.1%} [{acc['low']:.1%}, {acc['high']:.1%}] "
            f"| {chrf['value'] * 100:.1f} [{chrf['low'] * 100:.1f}, {chrf['high'] * 100:.1f}] | {arm['mean_calls']:.1f} "
            f"| {arm['mean_all_tokens']:.0f} | {arm['wall_s']:.1f} |"
        )
    print("\nverdict:\n" + "\n".join(f"- {line}" for line in report["verdict"]))


if __name__ == "__main__":
    main()
