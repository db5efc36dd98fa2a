"""Continued pre-training: a LoRA trained on the user's raw text (.txt / .md), loss on every token.

The documents are tokenized, joined with an end-of-text token between them and cut into
`max_length` blocks (the tail shorter than a block is dropped, as in HF's `group_texts`), so
every block is full and no compute goes to padding. A share of the blocks is held out, and the
held-out perplexity is computed by one function before and after training: the number that
says the adapter learned the domain rather than memorised its training blocks.

The run is an SFT run in everything else (a `lifecycle.Plan` with method `pretrain`): the same trl
trainer (with `completion_only_loss` off), progress, Ctrl-C checkpoint, resume, GGUF export
and adapter registry. `tunelab train NAME --bank B --on CPT_ADAPTER` then fine-tunes on top.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.finetune.args import SFTArgs
from tunelab.finetune.base_weights import prepare_base
from tunelab.finetune.export_gguf import fit_targets
from tunelab.finetune.lifecycle import HELD_OUT_FILE, ROWS_FILE, Plan, device
from tunelab.finetune.methods.reward import split_pairs
from tunelab.stores.files import write_jsonl
from tunelab.stores.models import ModelRegistry
from tunelab.stores.runs import RunStore

CORPUS_SUFFIXES = (".txt", ".md")
METHOD = "pretrain"
EMBEDDINGS_REFUSED = (
    "--train-embeddings: llama.cpp GGUF LoRA adapters cannot carry full embedding or LM-head weights "
    "(peft modules_to_save), so such an adapter could not be exported or served; train the LoRA layers only"
)
"""Why embeddings / LM head are not trainable here: the exporter refuses those tensors, and an
adapter that cannot be served in chat is no use in tunelab."""
Block = list[int]


def corpus_files(path: Path) -> list[Path]:
    """`path` itself, or every .txt / .md file under it (sorted, so a run is reproducible)."""
    if path.is_file():
        if path.suffix.lower() not in CORPUS_SUFFIXES:
            raise TunelabError(f"{path} is not a .txt or .md file")
        return [path]
    if not path.is_dir():
        raise TunelabError(f"no such file or directory: {path}")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CORPUS_SUFFIXES)
    if not files:
        raise TunelabError(f"no .txt or .md files under {path}")
    return files


def read_documents(path: Path) -> list[str]:
    docs = []
    for file in corpus_files(path):
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TunelabError(f"{file} is not UTF-8 text") from None
        if text.strip():
            docs.append(text)
    if not docs:
        raise TunelabError(f"the corpus {path} has no text")
    return docs


def separator_id(tokenizer: Any) -> int:
    """The end-of-text token put between documents: `<|endoftext|>` where the vocabulary has it
    (an instruct model's eos is usually its end-of-turn token), else the eos token."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    if tokenizer.eos_token_id is None:
        raise TunelabError("the tokenizer has no end-of-text token to put between documents")
    return int(tokenizer.eos_token_id)


def blocks(tokenizer: Any, docs: list[str], max_length: int) -> list[Block]:
    """The documents as one token stream (end-of-text after each), cut into full `max_length` blocks."""
    stream: list[int] = []
    sep = separator_id(tokenizer)
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [sep]
    return [stream[i : i + max_length] for i in range(0, len(stream) - max_length + 1, max_length)]


def perplexity(model: Any, held_out: list[Block], batch_size: int) -> float:
    """exp(mean next-token loss) over every predicted token of the held-out blocks (before and after alike)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(held_out), batch_size):
            ids = torch.tensor(held_out[i : i + batch_size], device=device)
            logits = model(input_ids=ids).logits[:, :-1].float()
            targets = ids[:, 1:]
            nll += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"))
            count += targets.numel()
    model.train(was_training)
    return math.exp(nll / count)


def prepare(
    settings: Settings,
    conn: sqlite3.Connection,
    name: str,
    corpus: Path,
    args: SFTArgs,
    held_out: float = 0.1,
    model: str | None = None,
    hf_dir: Path | None = None,
) -> Any:
    """Read and chunk the corpus, check it makes enough blocks, record the run; nothing is trained yet."""

    docs = read_documents(corpus)
    if not 0 < held_out < 1:
        raise TunelabError(f"--held-out must be in (0, 1) (got {held_out})")
    gguf_path = ModelRegistry(conn).resolve(settings.model if model is None else model)
    base = prepare_base(conn, settings.dirs.models, gguf_path, hf_dir)
    args = fit_targets(args, base.gguf_path, base.hf_dir)
    tokenizer = base.tokenizer()
    all_blocks = blocks(tokenizer, docs, args.max_length)
    if len(all_blocks) < 2:
        n = sum(len(tokenizer(d, add_special_tokens=False)["input_ids"]) + 1 for d in docs)
        raise TunelabError(
            f"the corpus has {n} tokens: fewer than 2 blocks of --max-length {args.max_length} "
            "(one to train on, one held out): add text or lower --max-length"
        )
    train_blocks, eval_blocks = split_pairs(all_blocks, held_out, args.seed)  # the reward model's seeded split
    run_dir = settings.dirs.runs / name
    run_args = {**args.to_dict(), "corpus": str(corpus.resolve()), "held_out": held_out}
    run = RunStore(conn).create(name, base.gguf_path, base.gguf_sha256, base.hf_dir, "", [], run_args, run_dir, device(), method=METHOD)
    write_jsonl(run_dir / ROWS_FILE, train_blocks)
    write_jsonl(run_dir / HELD_OUT_FILE, eval_blocks)
    warnings = (
        [f"the corpus makes only {len(train_blocks)} training block(s) of {args.max_length} tokens: expect little beyond memorising them"]
        if len(train_blocks) < 4
        else []
    )
    return Plan(settings, conn, run, base, args, [{"input_ids": b} for b in train_blocks], warnings, held_out=eval_blocks)
