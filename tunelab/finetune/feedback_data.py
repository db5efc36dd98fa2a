"""Feedback -> training data in the ecosystem's formats (trl KTO / DPO / reward, LLaMA-Factory).

Prompts stay in conversational form (a list of messages, as the model received them) so trl
applies the same chat template the replies were generated with.

- KTO: every rating is one unpaired example `{"prompt", "completion", "label"}` (👍 = True).
- DPO / reward: `{"prompt", "chosen", "rejected"}` from decisive A/B votes (chat and compare's
  side-by-side) and from 👍 vs 👎 replies to the same prompt. Ties, "both bad" and pairs whose two
  texts are identical carry no preference and are left out (and counted).
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunelab.config import DataDir
from tunelab.errors import TunelabError
from tunelab.finetune.methods import METHODS as TABLE
from tunelab.stores.feedback import FeedbackStore, PreferenceVote
from tunelab.stores.files import atomic_write_text

FORMATS = ("kto", "dpo", "reward", "llamafactory")
METHODS = tuple(m.name for m in TABLE.values() if m.family == "feedback" and not m.against_reward_model)
"""The methods trained on the feedback itself (GRPO / RLOO train on prompts against a reward model)."""
MIN_RATINGS = 8
"""KTO needs a few of each kind: with fewer the desirable/undesirable balance is noise."""
MIN_PAIRS = 4
"""DPO and the reward model: below this nothing can be held out or learned."""

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Pair:
    prompt: Messages
    chosen: str
    rejected: str
    source: str
    """`vote:<id>` or `ratings:<up id>/<down id>`: where the preference came from."""


@dataclass
class FeedbackData:
    """All usable feedback, plus what was left out and why (shown when refusing to train)."""

    unpaired: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def up(self) -> int:
        return sum(1 for row in self.unpaired if row["label"])

    @property
    def down(self) -> int:
        return len(self.unpaired) - self.up


def _vote_prompt(vote: PreferenceVote) -> Messages:
    """Both sides' prompt as sent when they saw the same one; else the shared user prompt.

    Two arms of a comparison may have been shown different ICL examples; the preference is
    about the replies to the user's question, so the pair is trained on that question alone.
    """
    a, b = vote.a_snapshot.get("prompt"), vote.b_snapshot.get("prompt")
    return a if a and a == b else vote.prompt


def collect(conn: sqlite3.Connection) -> FeedbackData:
    """Read ratings and votes into KTO rows and preference pairs."""
    store = FeedbackStore(conn)
    data = FeedbackData()
    skipped: dict[str, int] = defaultdict(int)
    by_prompt: dict[str, dict[str, list[Any]]] = defaultdict(lambda: {"up": [], "down": []})
    for rating in store.ratings():
        snap = rating.snapshot
        data.unpaired.append(
            {"prompt": snap.prompt, "completion": [{"role": "assistant", "content": snap.reply}], "label": rating.rating == "up"}
        )
        by_prompt[json.dumps(snap.prompt, sort_keys=True)][rating.rating].append(rating)

    candidates: list[Pair] = []
    for vote in store.votes():
        if vote.choice not in ("a", "b"):
            skipped["tie or both bad"] += 1
            continue
        chosen, rejected = (vote.a_reply, vote.b_reply) if vote.choice == "a" else (vote.b_reply, vote.a_reply)
        candidates.append(Pair(_vote_prompt(vote), chosen, rejected, f"vote:{vote.id}"))
    for group in by_prompt.values():
        for up in group["up"]:
            for down in group["down"]:
                candidates.append(Pair(up.snapshot.prompt, up.snapshot.reply, down.snapshot.reply, f"ratings:{up.id}/{down.id}"))

    for pair in candidates:
        if pair.chosen.strip() == pair.rejected.strip():
            skipped["identical texts"] += 1
        else:
            data.pairs.append(pair)
    data.skipped = dict(skipped)
    return data


def check_enough(data: FeedbackData, method: str) -> None:
    """Refuse to train on too little feedback, saying exactly what is missing."""
    if method not in METHODS:
        raise TunelabError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if TABLE[method].unpaired:
        if not data.unpaired:
            raise TunelabError(
                f"no ratings yet: rate at least {MIN_RATINGS} replies 👍/👎 (`tunelab rate MESSAGE_ID up|down`, or + / - in chat)"
            )
        if len(data.unpaired) < MIN_RATINGS:
            more = MIN_RATINGS - len(data.unpaired)
            raise TunelabError(f"only {len(data.unpaired)} rating(s): rate {more} more repl{'y' if more == 1 else 'ies'} to train KTO")
        if not data.up or not data.down:
            missing = "👎" if data.up else "👍"
            raise TunelabError(f"all {len(data.unpaired)} ratings are {'👍' if data.up else '👎'}: KTO needs some {missing} too")
        return
    if not data.pairs:
        why = f" ({', '.join(f'{n} {k}' for k, n in data.skipped.items())} left out)" if data.skipped else ""
        hint = " or train KTO on single ratings (--method kto)" if data.unpaired else ""
        raise TunelabError(f"no preference pairs{why}: vote A/B in compare, or rate 👍 and 👎 replies to the same prompt{hint}")
    if len(data.pairs) < MIN_PAIRS:
        more = MIN_PAIRS - len(data.pairs)
        raise TunelabError(f"only {len(data.pairs)} preference pair(s): {more} more needed for {method}")


def kto_rows(data: FeedbackData) -> list[dict[str, Any]]:
    return list(data.unpaired)


def pair_rows(data: FeedbackData) -> list[dict[str, Any]]:
    """DPO and reward-model rows: the same explicit-prompt conversational preference format."""
    return [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in data.pairs
    ]


_SHAREGPT_ROLE = {"user": "human", "assistant": "gpt"}


def llamafactory_rows(data: FeedbackData) -> list[dict[str, Any]]:
    """LLaMA-Factory's sharegpt preference layout (multi-turn history and system prompt kept)."""
    rows = []
    for p in data.pairs:
        system = "\n".join(m["content"] for m in p.prompt if m["role"] == "system")
        row: dict[str, Any] = {
            "conversations": [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in p.prompt if m["role"] != "system"],
            "chosen": {"from": "gpt", "value": p.chosen},
            "rejected": {"from": "gpt", "value": p.rejected},
        }
        if system:
            row["system"] = system
        rows.append(row)
    return rows


def llamafactory_dataset_info(file_name: str, name: str = "tunelab_feedback") -> dict[str, Any]:
    """The `dataset_info.json` entry LLaMA-Factory needs to load `llamafactory_rows`."""
    return {
        name: {
            "file_name": file_name,
            "formatting": "sharegpt",
            "ranking": True,
            "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected", "system": "system"},
        }
    }


def rows_for(data: FeedbackData, fmt: str) -> list[dict[str, Any]]:
    if fmt not in FORMATS:
        raise TunelabError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "kto":
        rows = kto_rows(data)
    elif fmt == "llamafactory":
        rows = llamafactory_rows(data)
    else:
        rows = pair_rows(data)
    if not rows:
        raise TunelabError(
            "nothing to export: " + ("no ratings yet" if fmt == "kto" else "no preference pairs (A/B votes or 👍 vs 👎 on the same prompt)")
        )
    return rows


def export_path(home: Path, fmt: str) -> Path:
    """Where the TUI exports to: `exports/feedback-<format>-<UTC time>.jsonl` under the data dir."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return DataDir(home).exports / f"feedback-{fmt}-{stamp}.jsonl"


def export(conn: sqlite3.Connection, fmt: str, path: Path) -> int:
    """Write the feedback as JSONL in `fmt` (atomically); for LLaMA-Factory also its dataset_info.json."""
    rows = rows_for(collect(conn), fmt)
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if fmt == "llamafactory":
        info = path.parent / "dataset_info.json"
        atomic_write_text(info, json.dumps(llamafactory_dataset_info(path.name), indent=2) + "\n")
    return len(rows)
