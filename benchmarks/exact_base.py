"""The bundled Q4_1 GGUF against the exact base (an F16 GGUF of the dequantised weights adapters
are trained on), side by side in one run: compare arms on both demo banks, and a 30-question probe.

Issue 13 asks which base chat and compare should serve by default. Per base, on the same test
items: `tunelab compare --no-adapter` with zero-shot, jaccard@4 and random@4 arms on the
`sentiment` and `qa` demo banks (accuracy or chrF with 95 % CIs, TTFT, decode tok/s from the
report), and `benchmarks/probe.jsonl`: 30 short factual and instruction questions, answered
greedily; a reply counts as right when one of the accepted answers appears in it as a whole word
(case-insensitive). The exact base is written the way `tunelab adapters export-base` writes it.
Run it on an otherwise idle machine: TTFT and tok/s are timings.

    .venv/bin/python benchmarks/exact_base.py [--limit 40] [--type f16]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.llama_engine import LlamaEngine
from tunelab.engine.sampling import SamplerParams
from tunelab.finetune.base_weights import prepare_base
from tunelab.finetune.export_gguf import export_model
from tunelab.stores.db import connect
from tunelab.stores.model_files import bundled_chat_model

PROBE = Path(__file__).with_name("probe.jsonl")
BANKS = {"sentiment": ["--size", "400"], "qa": ["--size", "400"]}
MAX_TOKENS = {"sentiment": 16, "qa": 48}


def tunelab(home: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tunelab.cli", *args], capture_output=True, text=True, env={**os.environ, "TUNELAB_HOME": str(home)}
    )
    if result.returncode != 0:
        raise SystemExit(f"tunelab {' '.join(args)} failed: {result.stderr.strip()[-500:]}")
    return result.stdout


def right(reply: str, accept: list[str]) -> bool:
    text = reply.lower()
    return any(re.search(rf"(?<!\w){re.escape(a.lower())}(?!\w)", text) for a in accept)


def probe(gguf: Path) -> dict[str, float]:
    questions = [json.loads(line) for line in PROBE.read_text(encoding="utf-8").splitlines() if line.strip()]
    engine = LlamaEngine(gguf, n_ctx=512)
    params = SamplerParams(temperature=0.0, top_k=1, max_tokens=32, seed=0)
    hits, tps, ttft = 0, [], []
    for q in questions:
        reply = engine.chat([ChatMessage("user", q["prompt"])], params)
        text = reply.text()
        hits += right(text, q["accept"])
        if reply.stats.decode_tps:
            tps.append(reply.stats.decode_tps)
        if reply.stats.ttft_ms is not None:
            ttft.append(reply.stats.ttft_ms)
    engine.llama.close()
    return {"right": hits, "n": len(questions), "tps": sum(tps) / len(tps), "ttft_ms": sum(ttft) / len(ttft)}


def compare(home: Path, bank: str, gguf: Path, limit: int) -> list[dict]:
    tunelab(
        home,
        "compare",
        "--bank",
        bank,
        "--no-adapter",
        "--selectors",
        "jaccard,random",
        "--k",
        "4",
        "--limit",
        str(limit),
        "--max-tokens",
        str(MAX_TOKENS[bank]),
        "--model",
        str(gguf),
    )
    newest = max(home.glob("reports/*/report.json"), key=lambda p: int(p.parent.name))
    return json.loads(newest.read_text(encoding="utf-8"))["arms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="test items per bank")
    parser.add_argument("--type", default="f16", choices=("f16", "f32", "bf16"), help="tensor type of the exact base")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tunelab-exact-") as tmp:
        home = Path(tmp)
        for bank, flags in BANKS.items():
            tunelab(home, "bank", "import-demo", bank, *flags)
        conn = connect(home / "tunelab.db")
        quantised = bundled_chat_model()
        assert quantised is not None
        started = time.perf_counter()
        base = prepare_base(conn, home / "models", quantised)
        exact = base.hf_dir / f"base-{opts.type}.gguf"
        export_model(base.hf_dir, base.gguf_path, exact, opts.type)
        conn.close()
        print(
            f"exact base {exact.name} ({exact.stat().st_size / 1e6:.0f} MB) written in {time.perf_counter() - started:.0f} s; "
            f"{quantised.name} is {quantised.stat().st_size / 1e6:.0f} MB"
        )
        bases = {"Q4_1": quantised, opts.type.upper(): exact}
        for label, gguf in bases.items():
            p = probe(gguf)
            print(f"probe {label}: {p['right']}/{p['n']} right, decode {p['tps']:.1f} tok/s, TTFT {p['ttft_ms']:.0f} ms", flush=True)
        for bank in BANKS:
            for label, gguf in bases.items():
                for arm in compare(home, bank, gguf, opts.limit):
                    metric = "accuracy" if "accuracy" in arm["metrics"] and bank == "sentiment" else "chrf"
                    m = arm["metrics"][metric]
                    tps = f"{arm['mean_decode_tps']:.1f}" if arm.get("mean_decode_tps") else "-"
                    print(
                        f"{bank:<9} {label:<5} {arm['arm']:<16} {metric} {m['value'] * 100:5.1f} [{m['low'] * 100:5.1f}, {m['high'] * 100:5.1f}]"
                        f"  TTFT {arm['mean_ttft_ms']:6.0f} ms  decode {tps} tok/s  wall {arm['wall_s']:.0f} s",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
