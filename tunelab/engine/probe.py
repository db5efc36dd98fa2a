"""The child process of the engine check: `python -m tunelab.engine.probe MODEL.gguf`.

It uses llama-cpp-python directly (not LlamaEngine, whose first load asks for this very check)
and runs the kernels a reply runs: a batched prompt prefill, then token-by-token decoding. If the
build's kernels fault, this process dies by a signal and the parent reads that; otherwise it
prints one JSON line with llama.cpp's own account of what it was built with.
"""

from __future__ import annotations

import json
import sys


def main(model: str) -> None:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=model, n_ctx=256, n_gpu_layers=-1, verbose=False)
    prompt = "Write one short sentence about the sea, then stop. " * 3  # a few dozen tokens: a batched prefill
    out = llm.create_completion(prompt, max_tokens=4, temperature=0.0)
    tokens = out["usage"]["completion_tokens"]  # type: ignore[index]
    report = {
        "detail": f"decoded {tokens} tokens",
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
