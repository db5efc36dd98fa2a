"""The HF weights a LoRA is trained on, paired with the GGUF that llama.cpp serves it on.

Training and inference must see the same weights and the same token ids, or an adapter learns
one model and is served on another. The default pair is the chat GGUF and its dequantisation by
transformers, cached once as safetensors (later loads take under a second instead of ~20 s of
dequantising); a user's own HF checkpoint can be paired with its GGUF instead. Either way the
pair is checked before any training: architecture and size from the two configs, and token ids
from both tokenizers on sample texts.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.engine.chat_template import gguf_template
from tunelab.errors import TunelabError
from tunelab.stores.files import atomic_dir, cached_sha256, file_lock
from tunelab.stores.model_files import check_gguf, gguf_fields

CACHE_MARKER = "tunelab-base.json"
"""Written last into a cache dir: names the GGUF it came from (its presence means complete)."""

HF_TO_GGUF_ARCH = {"mistral": "llama", "gemma3_text": "gemma3"}
"""HF `model_type` values whose GGUF architecture has another name (the rest are identical)."""

SAMPLE_TEXTS = (
    "Hello, world! How are you today?",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # squares\n\n\tindented\ttabs",
    "Prices: 3.14, 1,000,000 and 42% — naïve café résumé.",
    "日本語のテキストと中文文本 with emoji 🙂 and  double  spaces.",
    "  leading spaces, trailing newline\n",
)
"""Texts where tokenizers tend to differ: special tokens, code, digits, accents, CJK, whitespace."""

LOGITS_TEXT = "The capital of France is Paris. Water boils at 100 degrees, and the sky is"
"""The sentence both halves of an `--hf-dir` pair are run on (plain text: any model can read it)."""
LOGITS_MIN_CORRELATION = 0.98
"""Measured 2026-12-02 (tests/test_hf_pair.py): the bundled weights vs their Q4_1 GGUF 0.999; the same
config and tokenizer with a random LoRA merged in 0.867. A fine-tune of the same base may stay above
this bound: the check catches other weights, not a small tune."""


@dataclass(frozen=True)
class BaseWeights:
    """A checked pair: the GGUF served by llama.cpp and the HF checkpoint trained on."""

    gguf_path: Path
    hf_dir: Path
    gguf_sha256: str
    architecture: str
    """GGUF `general.architecture` (e.g. "llama"): picks the tensor name map and q/k permutation."""
    chat_template: str = ""
    """The template llama.cpp serves the GGUF with (its own or tunelab's one fallback): training renders prompts with it too."""

    def tokenizer(self) -> Any:
        """The HF tokenizer, formatting chats exactly as llama.cpp will when the adapter is served."""
        return load_tokenizer(self.hf_dir, self.chat_template)


def load_tokenizer(hf_dir: Path, chat_template: str | None = None) -> Any:
    """`AutoTokenizer` of `hf_dir` with the serving `chat_template` in place of its own.

    A base model's GGUF often has no template (llama.cpp then uses the fallback), and a user's HF
    checkpoint may carry another one than its GGUF: training with either would teach a prompt
    format the adapter is never served with (or fail: "tokenizer.chat_template is not set")."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF's key-values but the vocabulary arrays (read once per file version: see `gguf_fields`)."""
    return gguf_fields(path)[0]


GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}
"""llama.cpp scales Gemma's queries by 1/sqrt(n_embd / n_head) for the 27B models (known by layer count), else by 1/sqrt(head_dim)."""


def config_fixes(config: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """Config values transformers' GGUF loader leaves at a class default although llama.cpp runs the file with others.

    Found by tests/test_architectures.py: it ignores `attention.key_length` for Qwen3 (head_dim
    stays 128) and never sets Gemma's `query_pre_attn_scalar` (stays 256) or Gemma 2's soft-caps;
    each default fits some released checkpoints and silently breaks the rest (Gemma 2 27B: 144)."""
    arch = str(meta.get("general.architecture", ""))

    def key(name: str) -> Any:  # GGUF metadata values are untyped; a missing key gives None
        return meta.get(f"{arch}.{name}")

    wanted: dict[str, Any] = {}
    if key("attention.key_length") is not None and hasattr(config, "head_dim"):
        wanted["head_dim"] = int(key("attention.key_length"))
    if arch in GEMMA_27B_LAYERS and hasattr(config, "query_pre_attn_scalar"):
        n_embd, n_head = int(key("embedding_length")), int(key("attention.head_count"))
        big = int(key("block_count")) == GEMMA_27B_LAYERS[arch]
        wanted["query_pre_attn_scalar"] = n_embd // n_head if big else int(key("attention.key_length") or n_embd // n_head)
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):
        if key(name) is not None and hasattr(config, name):
            wanted[name] = float(key(name))
    return {k: v for k, v in wanted.items() if getattr(config, k) != v}


def dequantise(gguf_path: Path, out_dir: Path) -> None:
    """Write the GGUF's weights as an fp32 safetensors checkpoint with its tokenizer into `out_dir`."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        for name, value in config_fixes(config.get_text_config(), gguf_metadata(gguf_path)).items():
            setattr(config.get_text_config(), name, value)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, config=config)
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise TunelabError(
            f"transformers cannot read {gguf_path.name} ({exc}); pair the GGUF with its HF checkpoint instead (--hf-dir)"
        ) from None
    # The loaded model is plain fp32 already; without this, save_pretrained writes a quantisation
    # config that makes every later load try to "dequantise" again.
    model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module.__setattr__ is typed for Tensor | Module only
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def check_pair(hf_dir: Path, gguf_path: Path, logits: bool = False) -> str:
    """Refuse an HF checkpoint and a GGUF that are not the same model; returns the architecture.

    Configs and token ids catch another model; `logits` also runs both on `LOGITS_TEXT`, which
    catches other weights behind the same config and tokenizer (a base vs its instruct tune, a
    fine-tune's GGUF beside the original checkpoint). Our own dequantisation skips it: it is
    those weights by construction."""
    from transformers import AutoConfig, AutoTokenizer

    meta = gguf_metadata(gguf_path)
    arch = str(meta.get("general.architecture", ""))
    config = AutoConfig.from_pretrained(hf_dir)
    hf_arch = HF_TO_GGUF_ARCH.get(config.model_type, config.model_type)
    problems = []
    if hf_arch != arch:
        problems.append(f"architecture {config.model_type!r} vs GGUF {arch!r}")
    text_config = config.get_text_config()
    for key, attr in (("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size")):
        gguf_value, hf_value = meta.get(f"{arch}.{key}"), getattr(text_config, attr, None)
        if gguf_value is not None and hf_value is not None and int(gguf_value) != int(hf_value):
            problems.append(f"{attr} {hf_value} vs GGUF {key} {gguf_value}")
    if not problems:
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        problems += token_mismatches(tokenizer, gguf_path)
    if logits and not problems and (corr := logits_correlation(hf_dir, gguf_path)) < LOGITS_MIN_CORRELATION:
        problems.append(
            f"their next-token logits disagree (correlation {corr:.3f} < {LOGITS_MIN_CORRELATION} on a test sentence): other weights"
        )
    if problems:
        raise TunelabError(f"{hf_dir} and {gguf_path.name} are not the same model: " + "; ".join(problems))
    return arch


def logits_correlation(hf_dir: Path, gguf_path: Path, text: str = LOGITS_TEXT) -> float:
    """Pearson correlation of llama.cpp's and transformers' logits on every position of `text`."""
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM

    llama = Llama(model_path=str(gguf_path), n_ctx=64, logits_all=True, n_threads=2, verbose=False)
    try:
        ids = llama.tokenize(text.encode("utf-8"), add_bos=True, special=False)
        llama.eval(ids)
        cpp = np.array(llama.scores[: len(ids)], dtype=np.float32)
    finally:
        llama.close()
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, use_safetensors=True)
    with torch.no_grad():
        hf = model(torch.tensor([ids])).logits[0].float().numpy()
    n_vocab = min(cpp.shape[1], hf.shape[1])  # HF may pad its vocabulary
    return float(np.corrcoef(cpp[:, :n_vocab].ravel(), hf[:, :n_vocab].ravel())[0, 1])


def token_mismatches(tokenizer: Any, gguf_path: Path) -> list[str]:
    """Sample texts on which the HF tokenizer and llama.cpp's give different token ids."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    try:
        found = []
        for text in SAMPLE_TEXTS:
            hf_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            cpp_ids = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if list(hf_ids) != list(cpp_ids):
                found.append(f"token ids differ on {text[:24]!r}…")
        return found
    finally:
        llama.close()


def stale_cache(hf_dir: Path, gguf_path: Path) -> bool:
    """A dequantisation written before `config_fixes` existed, with a config llama.cpp does not run: write it again."""
    from transformers import AutoConfig

    return bool(config_fixes(AutoConfig.from_pretrained(hf_dir).get_text_config(), gguf_metadata(gguf_path)))


def is_cache_of(hf_dir: Path, sha: str) -> bool:
    """Whether `hf_dir` is tunelab's own dequantisation of the GGUF with this sha256 (then its weights are that GGUF's)."""
    marker = hf_dir / CACHE_MARKER
    try:
        return marker.is_file() and json.loads(marker.read_text(encoding="utf-8")).get("sha256") == sha
    except (OSError, ValueError):
        return False


def prepare_base(conn: sqlite3.Connection, models_dir: Path, gguf_path: Path, hf_dir: Path | None = None) -> BaseWeights:
    """The checked training pair for `gguf_path`: the user's `hf_dir`, else the cached dequantisation.

    The cache lives in `models_dir/<first 16 hex of the GGUF's sha256>`, written atomically, so a
    killed first run leaves nothing that looks usable, and under a lock, so two first runs at once
    dequantise once (the second waits, then reuses it).
    """
    gguf_path = check_gguf(Path(gguf_path)).resolve()
    sha = cached_sha256(conn, gguf_path)
    user_dir = hf_dir is not None and not is_cache_of(Path(hf_dir), sha)
    if hf_dir is None:
        hf_dir = models_dir / sha[:16]
        if not (hf_dir / CACHE_MARKER).is_file() or stale_cache(hf_dir, gguf_path):
            with file_lock(models_dir / f"{sha[:16]}.lock"):  # two first runs at once: one writes, the other waits
                if not (hf_dir / CACHE_MARKER).is_file() or stale_cache(hf_dir, gguf_path):
                    with atomic_dir(hf_dir) as tmp:
                        dequantise(gguf_path, tmp)
                        (tmp / CACHE_MARKER).write_text(json.dumps({"gguf": str(gguf_path), "sha256": sha}), encoding="utf-8")
    elif not (Path(hf_dir) / "config.json").is_file():
        raise TunelabError(f"not an HF model dir (no config.json): {hf_dir}")
    arch = check_pair(Path(hf_dir), gguf_path, logits=user_dir)
    return BaseWeights(gguf_path, Path(hf_dir).resolve(), sha, arch, gguf_template(gguf_path))
