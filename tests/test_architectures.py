"""The architecture matrix: every common architecture through tunelab's own path, checked by logits.

For each of llama, mistral, qwen2, qwen3, gemma2, gemma3 (text) and phi3: a tiny random
checkpoint (hidden 64, every weight random, norms and biases too) is converted to an F32 GGUF by
llama.cpp's own `convert_hf_to_gguf.py` (from the sdist of the installed llama-cpp-python), then
treated exactly like a user's `--model FILE`: `prepare_base` has transformers dequantise it, a
LoRA trains a few real trl steps on a tiny bank with the architecture's default targets, the
adapter is exported to GGUF, and llama.cpp loads base + adapter. On that F32 base we compare

- base: llama.cpp vs transformers on the GGUF's weights (and those vs the original checkpoint),
- adapter: llama.cpp + the trained GGUF LoRA vs transformers + peft, and the same for a random
  LoRA on every linear layer (the trained one touches attention only; MLPs and fused modules
  need a check too),
- merged: `export_model` of base + random LoRA vs the merged HF model,

each as max |Δlogit| relative to the HF logit range, < BOUND, with identical argmax. F32 on both
sides leaves float-summation noise only (~1e-6 measured); a missed permutation, +1 or bias is
of the order of the logits themselves. Each test prints its row of docs/benchmarks.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from finetune_support import (  # noqa: F401
    ARCHS,
    SENTENCE,
    TinyArch,
    base_pair,
    cpp_logits,
    hf_logits,
    llama_cpp_converter,
    random_adapter,
    relative_error,
    tiny_model,
)

from tunelab.finetune import export_gguf
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.base_weights import prepare_base
from tunelab.finetune.methods import sft

BOUND = 1e-3
"""max |Δlogit| / logit range allowed between llama.cpp and transformers on the same F32 weights."""
ALL_LINEAR = {"phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}
"""Every linear layer of each architecture's blocks (the default: the llama family's seven)."""
DEFAULT_ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
BANK = [
    ("What colour is the sky?", "Blue."),
    ("What do bees make?", "Honey."),
    ("Where do fish live?", "In water."),
    ("What do cows drink?", "Water."),
]


@pytest.fixture(scope="session")
def tiny_gguf(base_pair, tmp_path_factory: pytest.TempPathFactory):
    """name -> (HF checkpoint, its F32 GGUF by llama.cpp's converter), built once per session."""
    converter = llama_cpp_converter()
    made: dict[str, tuple[Path, Path]] = {}

    def make(name: str) -> tuple[Path, Path]:
        if name not in made:
            arch = next(a for a in ARCHS if a.name == name)
            root = tmp_path_factory.mktemp(f"tiny-{name}")
            source = tiny_model(arch, base_pair.hf_dir, root / "hf", seed=ARCHS.index(arch), qwen2_vocab=converter.qwen2_vocab)
            made[name] = source, converter.convert(source, root / f"tiny-{name}-f32.gguf")
        return made[name]

    return make


def bank_rows() -> list[dict]:
    return [{"prompt": sft.prompt_messages("Answer briefly.", q), "completion": [{"role": "assistant", "content": a}]} for q, a in BANK]


def compare(name: str, cpp: np.ndarray, hf: np.ndarray) -> dict[str, float]:
    """The figures of one comparison: max abs diff, relative to the HF logit range, argmax agreement."""
    return {
        f"{name}_abs": float(np.abs(cpp - hf).max()),
        f"{name}_rel": relative_error(cpp, hf),
        f"{name}_argmax": float((cpp.argmax(-1) == hf.argmax(-1)).mean()),
    }


# slow, not heavy: the models are tiny (hidden 64), most of a row is one-threaded conversion and loading
@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: a.name)
def test_architecture_round_trip_matches_transformers(arch: TinyArch, tiny_gguf, settings, conn, tmp_path: Path) -> None:
    import time

    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        seconds[stage] = round(time.perf_counter() - started - sum(seconds.values()), 1)

    source, gguf = tiny_gguf(arch.name)
    lap("convert")

    base = prepare_base(conn, settings.dirs.models, gguf)  # what `tunelab train --model FILE` does first
    lap("prepare_base")
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(base.hf_dir)(SENTENCE)["input_ids"]
    hf_base = hf_logits(base.hf_dir, ids)
    figures = {**compare("base", cpp_logits(gguf, ids), hf_base), **compare("source", hf_base, hf_logits(source, ids))}
    lap("base")

    plan = sft.plan_for(
        settings,
        conn,
        f"tiny-{arch.name}",
        "tiny",
        list(range(len(BANK))),
        bank_rows(),
        SFTArgs(max_steps=4, learning_rate=3e-2, lora_r=4, lora_alpha=8, lora_dropout=0.0, batch_size=2, max_length=160, save_steps=100),
        model=str(gguf),
    )
    lap("plan")
    result = sft.train(plan)
    lap("train")
    assert result.adapter is not None
    trained = Path(result.adapter.peft_dir)
    hf_trained = hf_logits(base.hf_dir, ids, trained)
    figures |= compare("trained", cpp_logits(gguf, ids, Path(result.adapter.gguf_path)), hf_trained)
    figures["trained_moves"] = float(np.abs(hf_trained - hf_base).max())
    lap("trained")

    targets = ALL_LINEAR.get(base.architecture, DEFAULT_ALL_LINEAR)
    peft_dir = random_adapter(base.hf_dir, tmp_path / "random-peft", targets)
    hf_random = hf_logits(base.hf_dir, ids, peft_dir)
    lora = export_gguf.export_adapter(peft_dir, gguf, tmp_path / "random.gguf")
    figures |= compare("random", cpp_logits(gguf, ids, lora), hf_random)
    merged = export_gguf.export_model(base.hf_dir, gguf, tmp_path / "merged-f32.gguf", "f32", peft_dir)
    figures |= compare("merged", cpp_logits(merged, ids), hf_random)
    lap("random+merged")

    verdict = all(figures[f"{c}_rel"] < BOUND and figures[f"{c}_argmax"] == 1.0 for c in ("base", "source", "trained", "random", "merged"))
    print(
        f"\n| {arch.name} | {base.architecture} | {plan.args.target_modules and ','.join(plan.args.target_modules)} "
        f"| {figures['base_abs']:.1e} | {figures['trained_abs']:.1e} (moves {figures['trained_moves']:.2f}) "
        f"| {figures['random_abs']:.1e} | {figures['merged_abs']:.1e} | {'pass' if verdict else 'FAIL'} |"
    )
    print({k: round(v, 8) for k, v in figures.items()}, "seconds:", seconds)
    range_ = float(hf_base.max() - hf_base.min())
    assert figures["trained_moves"] > 100 * BOUND * range_, "the trained adapter barely moves logits: the check would prove nothing"
    for check in ("source", "base", "trained", "random", "merged"):
        assert figures[f"{check}_rel"] < BOUND, f"{check}: {figures}"
        assert figures[f"{check}_argmax"] == 1.0, f"{check}: {figures}"


@pytest.mark.slow  # it needs the matrix built (tiny_gguf)
def test_targets_the_model_lacks_are_refused_before_training(tiny_gguf, settings, conn) -> None:
    """Phi-3 has no q_proj (it is fused into qkv_proj): named explicitly, the run is refused in one line, nothing recorded."""
    from tunelab.errors import TunelabError
    from tunelab.stores.runs import RunStore

    _, gguf = tiny_gguf("phi3")
    with pytest.raises(TunelabError, match=r"phi3 model has no module\(s\) named q_proj.*qkv_proj") as refused:
        sft.plan_for(settings, conn, "no-q", "tiny", [0, 1], bank_rows()[:2], SFTArgs(target_modules=("q_proj", "v_proj")), model=str(gguf))
    assert "\n" not in str(refused.value)
    assert RunStore(conn).list() == []
    plan = sft.plan_for(settings, conn, "default-targets", "tiny", [0, 1], bank_rows()[:2], SFTArgs(), model=str(gguf))
    assert plan.args.target_modules == ("qkv_proj", "o_proj")  # the generic default means Phi-3's fused projections
    assert plan.run.args["target_modules"] == ["qkv_proj", "o_proj"]
